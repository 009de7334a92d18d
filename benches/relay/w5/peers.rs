//! The peers of W5: the same workload on other channels and buses.

use super::*;

/// The hand-written equivalent: a task per stage between unbounded async-channels.
/// `batch` = 0: each stage maps; otherwise one stage collects `batch` items per Vec.
pub(crate) async fn w5_async_ch_chain(rt: Rt, depth: usize, batch: usize, m: usize) -> Duration {
    let (tx0, mut rx) = async_channel::unbounded::<Msg32>();
    let mut stages = Vec::new();
    for _ in 0..depth {
        let (tx, next) = async_channel::unbounded::<Msg32>();
        let input = std::mem::replace(&mut rx, next);
        stages.push(rt.spawn(async move {
            while let Ok(v) = input.recv().await {
                if tx.send(Msg32 { c: v.c ^ 1, ..v }).await.is_err() {
                    break;
                }
            }
        }));
    }
    let h = if batch == 0 {
        rt.spawn(async move {
            let (mut got, mut acc) = (0, 0);
            while got < m {
                let v = rx.recv().await.expect("recv");
                acc = work(acc, &v);
                got += 1;
            }
            (got, acc)
        })
    } else {
        let (btx, brx) = async_channel::unbounded::<Vec<Msg32>>();
        stages.push(rt.spawn(async move {
            let mut cur = Vec::with_capacity(batch);
            while let Ok(v) = rx.recv().await {
                cur.push(v);
                if cur.len() == batch {
                    let full = std::mem::replace(&mut cur, Vec::with_capacity(batch));
                    if btx.send(full).await.is_err() {
                        break;
                    }
                }
            }
        }));
        rt.spawn(async move {
            let (mut got, mut acc) = (0, 0);
            while got < m {
                let b = brx.recv().await.expect("recv");
                for v in &b {
                    acc = work(acc, v);
                }
                got += b.len();
            }
            (got, acc)
        })
    };
    let t = Instant::now();
    for i in 0..m {
        tx0.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    let el = t.elapsed();
    drop(tx0);
    for s in stages {
        s.await;
    }
    el
}
