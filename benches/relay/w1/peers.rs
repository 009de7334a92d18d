//! The peers of W1: the same workload on other channels and buses.

use super::*;

pub(crate) async fn w1_tokio_bc(rt: Rt, n: usize, m: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Msg32>(m.max(2));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = tx.subscribe();
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().await.expect("tokio broadcast lagged or closed");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) async fn w1_async_bc(rt: Rt, n: usize, m: usize) -> Duration {
    let (mut tx, rx0) = async_broadcast::broadcast::<Msg32>(m.max(1));
    tx.set_overflow(false);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = rx0.new_receiver();
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv_direct().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    drop(rx0);
    let t = Instant::now();
    for i in 0..m {
        tx.broadcast_direct(Msg32::new(i as u64))
            .await
            .expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) async fn w1_flume(rt: Rt, n: usize, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = flume::unbounded::<Msg32>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv_async().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = Msg32::new(i as u64);
        for tx in &txs {
            tx.send_async(v).await.expect("send");
        }
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) async fn w1_async_ch(rt: Rt, n: usize, m: usize) -> Duration {
    w1_async_ch_of(rt, n, m, |v| v).await
}

/// The floor of a relay that hands every subscriber the same value without `Clone`:
/// async-channel per subscriber carrying an `Arc` made once per message, as this crate's
/// `recv` returns. Not a peer: it shows how much of the gap to [`w1_async_ch`] is the
/// allocation, the shared refcount and the consumer-side free.
pub(crate) async fn w1_async_ch_arc(rt: Rt, n: usize, m: usize) -> Duration {
    w1_async_ch_of(rt, n, m, Arc::new).await
}

/// async-channel per subscriber carrying `make(message)`, cloned into each channel.
pub(crate) async fn w1_async_ch_of<M>(rt: Rt, n: usize, m: usize, make: fn(Msg32) -> M) -> Duration
where
    M: Borrow<Msg32> + Clone + Send + 'static,
{
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = async_channel::unbounded::<M>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().await.expect("recv");
                    acc = work(acc, v.borrow());
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = make(Msg32::new(i as u64));
        for tx in &txs {
            tx.send(v.clone()).await.expect("send");
        }
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) fn w1_crossbeam(n: usize, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::unbounded::<Msg32>();
            txs.push(tx);
            std::thread::spawn(move || {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = Msg32::new(i as u64);
        for tx in &txs {
            tx.send(v).expect("send");
        }
    }
    join_threads(handles, m);
    t.elapsed()
}
