//! W1: fan-out

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

pub(crate) const PD_SUB: &str = "pipedream subscribe";
pub(crate) const PD_SINK: &str = "pipedream sink (sequential send)";
pub(crate) const PD_SINK_WIN: &str = "pipedream sink (64 sends in flight)";
pub(crate) const TOKIO_BC: &str = "tokio::sync::broadcast";
pub(crate) const ASYNC_BC: &str = "async-broadcast";
pub(crate) const FLUME: &str = "flume (channel per subscriber)";
pub(crate) const ASYNC_CH: &str = "async-channel (channel per subscriber)";
pub(crate) const CROSSBEAM: &str = "crossbeam-channel (threads)";
pub(crate) const ASYNC_CH_ARC: &str =
    "async-channel per subscriber, one Arc per message (floor, not a peer)";

pub(crate) fn lossless(rt: &Rt, capacity: usize) -> (RelaySender, RelayReceiver) {
    rt.relay()
        .delivery_mode(DeliveryMode::Lossless)
        .channel_size(capacity.max(1))
        .build()
        .expect("relay")
}

pub(crate) fn pd_consumer(rt: &Rt, rx: &RelayReceiver, m: usize) -> Join<(usize, u64)> {
    let mut sub = rx.subscribe::<Msg32>();
    rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < m {
            match sub.recv().await {
                Some(v) => {
                    acc = work(acc, &v);
                    got += 1;
                }
                None => break,
            }
        }
        (got, acc)
    })
}

/// This crate, untracked `subscribe`, lossless, queues big enough never to wait.
pub(crate) async fn w1_pd(rt: Rt, n: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let handles: Vec<_> = (0..n).map(|_| pd_consumer(&rt, &rx, m)).collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) const PD_BATCH: &str = "pipedream send_all / recv_many (batches of 64)";
pub(crate) const BATCH: usize = 64;

/// This crate in batches: `send_all` of 64 messages, each consumer `recv_many` of up to
/// 64; lossless, queues big enough never to wait (as `w1_pd`).
pub(crate) async fn w1_pd_batch(rt: Rt, n: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut sub = rx.subscribe::<Msg32>();
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                let mut buf = Vec::with_capacity(BATCH);
                while got < m {
                    if sub.recv_many(&mut buf, BATCH).await == 0 {
                        break;
                    }
                    for v in buf.drain(..) {
                        acc = work(acc, &v);
                        got += 1;
                    }
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    let mut next = 0;
    while next < m {
        let end = (next + BATCH).min(m);
        tx.send_all((next..end).map(|i| Msg32::new(i as u64)))
            .await
            .expect("send_all");
        next = end;
    }
    join_all(handles, m).await;
    t.elapsed()
}

pub(crate) fn pd_sinks(rx: &RelayReceiver, n: usize) -> Vec<Arc<AtomicU64>> {
    (0..n)
        .map(|_| {
            let acc = Arc::new(AtomicU64::new(0));
            let a = acc.clone();
            rx.sink::<Msg32>(move |v| {
                a.fetch_add(mix(v), Ordering::Relaxed);
            });
            acc
        })
        .collect()
}

pub(crate) fn check_sinks(accs: &[Arc<AtomicU64>], m: usize) {
    let want = (0..m as u64).fold(0u64, |acc, i| work(acc, &Msg32::new(i)));
    for a in accs {
        assert_eq!(a.load(Ordering::Relaxed), want, "a sink missed messages");
    }
}

/// This crate, tracked `sink`s: `send().await` returns once every sink processed it.
/// `window` = 1: the plain `for … { tx.send(m).await? }` loop; otherwise that many sends
/// are kept in flight (`buffered`).
pub(crate) async fn w1_pd_sink(rt: Rt, n: usize, m: usize, window: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let accs = pd_sinks(&rx, n);
    rx.ready().await;
    let t = Instant::now();
    if window <= 1 {
        for i in 0..m {
            tx.send(Msg32::new(i as u64)).await.expect("send");
        }
    } else {
        futures::stream::iter(0..m)
            .map(|i| tx.send(Msg32::new(i as u64)))
            .buffered(window)
            .for_each(|r| {
                r.expect("send");
                futures::future::ready(())
            })
            .await;
    }
    let el = t.elapsed();
    check_sinks(&accs, m);
    el
}

/// This crate in broadcast mode, one untracked subscriber that keeps up.
/// Returns (time, messages the subscriber received).
pub(crate) async fn w1_pd_broadcast(rt: Rt, capacity: usize, m: usize) -> (Duration, usize) {
    let (tx, rx) = rt
        .relay()
        .delivery_mode(DeliveryMode::Broadcast)
        .channel_size(capacity)
        .build()
        .expect("relay");
    let mut sub = rx.subscribe::<Msg32>();
    let h = rt.spawn(async move {
        let (mut got, mut acc) = (0usize, 0);
        while let Some(v) = sub.recv().await {
            acc = work(acc, &v);
            got += 1;
        }
        black_box(acc);
        (got, sub.dropped())
    });
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    drop(tx); // the subscriber drains what is queued, then sees the end
    let (got, dropped) = h.await;
    assert_eq!(got as u64 + dropped, m as u64, "received + dropped != sent");
    (t.elapsed(), got)
}

pub(crate) fn run_w1(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W1 fan-out on {} ({m} messages, {} reps)", r.name, b.reps);
    for rep in 0..b.reps {
        for &n in &[1usize, 4, 16] {
            let p = format!("N={n}");
            let d = n * m;
            let cases: [Case; 10] = [
                (PD_SUB, Box::new(|| r.run(w1_pd(r.rt.clone(), n, m)))),
                (
                    PD_BATCH,
                    Box::new(|| r.run(w1_pd_batch(r.rt.clone(), n, m))),
                ),
                (
                    PD_SINK,
                    Box::new(|| r.run(w1_pd_sink(r.rt.clone(), n, m, 1))),
                ),
                (
                    PD_SINK_WIN,
                    Box::new(|| r.run(w1_pd_sink(r.rt.clone(), n, m, 64))),
                ),
                (
                    TOKIO_BC,
                    Box::new(|| r.run(w1_tokio_bc(r.rt.clone(), n, m))),
                ),
                (
                    ASYNC_BC,
                    Box::new(|| r.run(w1_async_bc(r.rt.clone(), n, m))),
                ),
                (FLUME, Box::new(|| r.run(w1_flume(r.rt.clone(), n, m)))),
                (
                    ASYNC_CH,
                    Box::new(|| r.run(w1_async_ch(r.rt.clone(), n, m))),
                ),
                (CROSSBEAM, Box::new(|| w1_crossbeam(n, m))),
                (
                    ASYNC_CH_ARC,
                    Box::new(|| r.run(w1_async_ch_arc(r.rt.clone(), n, m))),
                ),
            ];
            for (name, f) in cases.iter() {
                let el = f();
                b.add("W1", r.name, name, &p, "ns/delivery", ns_per(el, d));
            }
        }
        for &cap in &[pipedream_rs::DEFAULT_CHANNEL_SIZE, 1024] {
            let (el, got) = r.run(w1_pd_broadcast(r.rt.clone(), cap, m));
            let sys = format!("pipedream broadcast mode, capacity {cap}");
            b.add(
                "W1B",
                r.name,
                &sys,
                "delivered",
                "%",
                100.0 * got as f64 / m as f64,
            );
            b.add("W1B", r.name, &sys, "time", "ns/message", ns_per(el, m));
        }
        eprintln!("  rep {} done ({:.0?})", rep + 1, b.started.elapsed());
    }
    b.print("W1", r.name);
    b.print("W1B", r.name);
}
