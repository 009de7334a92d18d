mod common;

use pipedream_rs::{Relay, SendError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("bad {0}")]
struct Bad(i32);

on_every_runtime! {
    async fn smoke_typed_sink_and_errors() {
        let (tx, rx) = Relay::channel();
        let mut s = rx.subscribe::<String>();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        rx.sink::<i32, _, _>(move |n| { c.fetch_add(1, Ordering::SeqCst); if *n < 0 { Err(Bad(*n)) } else { Ok(()) } });
        tx.send(String::from("x")).await.unwrap();
        tx.send(1i32).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(matches!(tx.send(-1i32).await, Err(SendError::Downstream(_))));
        rx.sink::<u8, _, ()>(|_| panic!("boom"));
        let e = tx.send(1u8).await.unwrap_err();
        assert!(e.errors()[0].is_panic());
        assert_eq!(s.recv().await.unwrap().as_str(), "x");
        drop(tx);
        assert!(s.recv().await.is_none());
    }
}
