//! The peers of W3: the same workload on other channels and buses.

use super::*;

/// async-channel send, the consumer does the same work and acks on a second channel.
pub(crate) async fn w3_async_ch(rt: Rt, iters: usize) -> Vec<u64> {
    let (tx, rx) = async_channel::unbounded::<Msg32>();
    let (ack_tx, ack_rx) = async_channel::unbounded::<()>();
    let h = rt.spawn(async move {
        let acc = AtomicU64::new(0);
        while let Ok(v) = rx.recv().await {
            acc.fetch_add(mix(&v), Ordering::Relaxed);
            if ack_tx.send(()).await.is_err() {
                break;
            }
        }
        black_box(acc.load(Ordering::Relaxed));
    });
    let round_trip = |i: usize| {
        let tx = &tx;
        let ack_rx = &ack_rx;
        async move {
            tx.send(Msg32::new(i as u64)).await.expect("send");
            ack_rx.recv().await.expect("ack");
        }
    };
    for i in 0..iters / 10 {
        round_trip(i).await;
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        round_trip(i).await;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    drop(tx);
    h.await;
    samples
}
