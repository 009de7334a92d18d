//! The peers of W7: async-broadcast's overflow mode, tokio's watch channel, and the
//! hand-written request/response pattern.

use super::*;

pub(crate) const ASYNC_BC_OVERFLOW: &str = "async-broadcast overflow mode";
pub(crate) const TOKIO_WATCH: &str = "tokio watch";
pub(crate) const ONESHOT_RT: &str = "async-channel of (query, oneshot)";

/// async-broadcast with `set_overflow(true)`: a full channel drops its oldest message.
pub(crate) async fn w7_async_bc_overflow(rt: Rt, m: usize) -> (Duration, usize) {
    let (mut tx, mut rx) = async_broadcast::broadcast::<Msg32>(POLICY_CAPACITY);
    tx.set_overflow(true);
    let last = (m - 1) as u64;
    let consumer = rt.spawn(async move {
        let (mut got, mut acc) = (0usize, 0u64);
        loop {
            match rx.recv().await {
                Ok(v) => {
                    acc = work(acc, &v);
                    got += 1;
                    if v.a == last {
                        break;
                    }
                }
                Err(async_broadcast::RecvError::Overflowed(_)) => {}
                Err(async_broadcast::RecvError::Closed) => break,
            }
        }
        black_box(acc);
        got
    });
    let t = Instant::now();
    for i in 0..m {
        tx.broadcast_direct(Msg32::new(i as u64))
            .await
            .expect("send");
    }
    let el = t.elapsed();
    let got = consumer.await;
    (el, got)
}

/// `tokio::sync::watch`: the receiver sees the latest value.
pub(crate) async fn w7_tokio_watch(rt: Rt, m: usize) -> (Duration, usize) {
    let (tx, mut rx) = tokio::sync::watch::channel(Msg32::new(u64::MAX));
    let last = (m - 1) as u64;
    let consumer = rt.spawn(async move {
        let (mut got, mut acc) = (0usize, 0u64);
        while rx.changed().await.is_ok() {
            let v = *rx.borrow_and_update();
            acc = work(acc, &v);
            got += 1;
            if v.a == last {
                break;
            }
        }
        black_box(acc);
        got
    });
    let t = Instant::now();
    for i in 0..m {
        // Never waits and never yields: the consumer runs on the other worker.
        tx.send(Msg32::new(i as u64)).expect("send");
    }
    let el = t.elapsed();
    let got = consumer.await;
    (el, got)
}

/// The hand-written request/response: an async-channel of `(query, oneshot sender)` to a
/// responder task.
pub(crate) async fn w7_oneshot(rt: Rt, iters: usize) -> Vec<u64> {
    type Ask = (Msg32, futures::channel::oneshot::Sender<u64>);
    let (tx, rx) = async_channel::unbounded::<Ask>();
    let responder = rt.spawn(async move {
        while let Ok((q, reply)) = rx.recv().await {
            let _ = reply.send(mix(&q));
        }
    });
    let ask = |i: usize| {
        let tx = &tx;
        async move {
            let (reply, answer) = futures::channel::oneshot::channel();
            tx.send((Msg32::new(i as u64), reply)).await.expect("send");
            answer.await.expect("reply")
        }
    };
    for i in 0..iters / 10 {
        black_box(ask(i).await);
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        black_box(ask(i).await);
        samples.push(t.elapsed().as_nanos() as u64);
    }
    drop(tx);
    responder.await;
    samples
}
