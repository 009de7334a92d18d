//! The peers of W2: the same workload on other channels and buses.

use super::*;

/// A consumer of the enum: reads everything, keeps what it wants.
/// Returns (messages kept, acc); it stops after `total` messages.
macro_rules! enum_consumer {
    ($kind:expr, $total:expr, $recv:expr) => {{
        let (mut seen, mut kept, mut acc) = (0usize, 0usize, 0u64);
        while seen < $total {
            let ev: Ev = $recv;
            seen += 1;
            if let Some(v) = ev.wanted($kind) {
                acc = work(acc, v);
                kept += 1;
            }
        }
        (kept, acc)
    }};
}

pub(crate) async fn w2_tokio_bc(rt: Rt, m: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Ev>(m.max(2));
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let mut rx = tx.subscribe();
            rt.spawn(async move { enum_consumer!(k, m, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .expect("send");
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

pub(crate) async fn w2_async_bc(rt: Rt, m: usize) -> Duration {
    let (mut tx, rx0) = async_broadcast::broadcast::<Ev>(m.max(1));
    tx.set_overflow(false);
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let mut rx = rx0.new_receiver();
            rt.spawn(async move { enum_consumer!(k, m, rx.recv_direct().await.expect("recv")) })
        })
        .collect();
    drop(rx0);
    let t = Instant::now();
    for i in 0..m {
        tx.broadcast_direct(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .await
            .expect("send");
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

pub(crate) async fn w2_flume(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = flume::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, m, rx.recv_async().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send_async(ev).await.expect("send");
        }
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

pub(crate) async fn w2_async_ch(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = async_channel::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, m, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send(ev).await.expect("send");
        }
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

/// Not a target: the producer routes by hand (one async-channel per type). This is the
/// floor a type-routing relay is measured against; the enum peers are what a generic
/// bus without routing costs.
pub(crate) async fn w2_async_ch_routed(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let per = m / KINDS_W2;
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = async_channel::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, per, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        txs[i % KINDS_W2]
            .send(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .await
            .expect("send");
    }
    join_all(handles, per).await;
    t.elapsed()
}

/// The floor of this design on W2: routed by hand as [`w2_async_ch_routed`], but each
/// message travels as an `Arc` made once per message, as this crate's `recv` hands out.
/// Not a peer: the allocation, the shared refcount and the consumer-side free are what a
/// relay of `Arc<T>` cannot avoid.
pub(crate) async fn w2_async_ch_routed_arc(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let per = m / KINDS_W2;
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = async_channel::unbounded::<Arc<Ev>>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, per, *rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        txs[i % KINDS_W2]
            .send(Arc::new(Ev::new(i % KINDS_W2, Msg32::new(i as u64))))
            .await
            .expect("send");
    }
    join_all(handles, per).await;
    t.elapsed()
}

pub(crate) fn w2_crossbeam(m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = crossbeam_channel::unbounded::<Ev>();
            txs.push(tx);
            std::thread::spawn(move || enum_consumer!(k, m, rx.recv().expect("recv")))
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send(ev).expect("send");
        }
    }
    join_threads(handles, m / KINDS_W2);
    t.elapsed()
}
