//! The peers of w6: the same workload on other channels and buses.

use super::*;

// ------------------------------------------------------------------------------------
// W6: scaling in subscribers and in types
// ------------------------------------------------------------------------------------

/// The peer of the W6 types row: one async-channel per "type", the producer routes by
/// hand, a task per channel — the same task layout as `pd_routing`, without the relay.
pub(crate) async fn w6_async_ch_routed(rt: Rt, kinds: usize, m: usize) -> Duration {
    let per = m / kinds;
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..kinds)
        .map(|_| {
            let (tx, rx) = async_channel::unbounded::<Msg32>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < per {
                    let v = rx.recv().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..per * kinds {
        txs[i % kinds]
            .send(Msg32::new(i as u64))
            .await
            .expect("send");
    }
    join_all(handles, per).await;
    t.elapsed()
}

/// The same loop on one async-channel per type: the floor of `routing_micro`.
pub(crate) fn async_ch_micro(kinds: usize, m: usize) -> Duration {
    let chans: Vec<_> = (0..kinds)
        .map(|_| async_channel::unbounded::<Msg32>())
        .collect();
    let batch = 256;
    let m = m / batch * batch;
    let t = Instant::now();
    futures::executor::block_on(async {
        let mut got = 0;
        for start in (0..m).step_by(batch) {
            for i in start..start + batch {
                chans[i % kinds]
                    .0
                    .send(Msg32::new(i as u64))
                    .await
                    .expect("send");
            }
            for (_, rx) in &chans {
                while let Ok(v) = rx.try_recv() {
                    black_box(v.a);
                    got += 1;
                }
            }
        }
        assert_eq!(got, m);
    });
    t.elapsed()
}
