mod common;

use pipedream_rs::{Relay, SendError};

#[derive(Debug, thiserror::Error)]
#[error("bad")]
struct Bad;

on_every_runtime! {
    async fn smoke_filter_tracks_child_errors_and_map_is_boundary() {
        let (tx, rx) = Relay::channel();
        let f = rx.filter::<i32, _>(|n| *n > 0);
        f.sink::<i32, _, _>(|n| if *n == 13 { Err(Bad) } else { Ok(()) });
        tx.send(1i32).await.unwrap();
        tx.send(-1i32).await.unwrap();
        assert!(matches!(tx.send(13i32).await, Err(SendError::Downstream(_))));
        let m = rx.map::<i32, String, _>(|n| n.to_string());
        m.sink::<String, _, _>(|_| Err(Bad));
        tx.send(2i32).await.unwrap();
        let p = rx.map::<i32, i32, _>(|n| if *n == 99 { panic!("unlucky") } else { *n });
        let mut ps = p.subscribe::<i32>();
        tx.send(3i32).await.unwrap();
        tx.send(99i32).await.unwrap();
        assert_eq!(*ps.recv().await.unwrap(), 3);
        assert!(ps.recv().await.is_none());
    }
    async fn smoke_echo_and_chain_close() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let ha = a.forward_detached(&b_tx);
        let hb = b.forward_detached(&a_tx);
        let mut on_a = a.subscribe::<u8>();
        let mut on_b = b.subscribe::<u8>();
        a_tx.send(1u8).await.unwrap();
        assert_eq!(*on_b.recv().await.unwrap(), 1);
        assert_eq!(*on_a.recv().await.unwrap(), 1);
        common::sleep(std::time::Duration::from_millis(50)).await;
        assert!(on_a.try_recv().is_err());
        assert!(on_b.try_recv().is_err());
        drop(a_tx); drop(b_tx);
        ha.await.unwrap(); hb.await.unwrap();
        let (tx, rx) = Relay::channel();
        let mut last = rx.clone();
        for _ in 0..8 { last = last.filter::<u8, _>(|_| true); }
        let mut s = last.subscribe::<u8>();
        tx.send(5u8).await.unwrap();
        drop(tx);
        assert_eq!(*s.recv().await.unwrap(), 5);
        assert!(s.recv().await.is_none());
        last.closed().await;
    }
}
