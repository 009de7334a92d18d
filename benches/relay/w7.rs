//! W7: what no peer has in one place — per-queue delivery policies and request/response,
//! each against its closest single-purpose peer.
//!
//! - **W7D drop-oldest**: one producer sends `m` messages as fast as it can to one
//!   consumer whose queue of 1,024 keeps the newest (`DeliveryMode::DropOldest`); the
//!   peer is async-broadcast in overflow mode, which does the same. ns per message sent,
//!   and the share the consumer saw.
//! - **W7L latest**: the same with a conflating consumer (`DeliveryMode::Latest`, a queue
//!   of one); the peer is `tokio::sync::watch`. ns per message sent.
//! - **W7R request/response**: sequential `request` round trips to one responder; the
//!   peer is the hand-written pattern, an async-channel of `(query, oneshot sender)` to a
//!   responder task. Percentiles per round trip.

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

pub(crate) const PD_DROP_OLDEST: &str = "pipedream DropOldest subscriber";
pub(crate) const PD_LATEST: &str = "pipedream Latest subscriber";
pub(crate) const PD_REQUEST: &str = "pipedream request + respond";
pub(crate) const POLICY_CAPACITY: usize = 1024;

/// One producer, one consumer under `mode`: the time to send `m` messages and the count
/// the consumer saw (it reads until it sees the last).
pub(crate) async fn w7_pd_policy(rt: Rt, mode: DeliveryMode, m: usize) -> (Duration, usize) {
    let (tx, rx) = rt
        .relay()
        .mode_for::<Msg32>(mode)
        .channel_size(POLICY_CAPACITY)
        .build()
        .expect("relay");
    let mut sub = rx.subscribe::<Msg32>();
    let last = (m - 1) as u64;
    let consumer = rt.spawn(async move {
        let (mut got, mut acc) = (0usize, 0u64);
        while let Some(v) = sub.recv().await {
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
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    let el = t.elapsed();
    let got = consumer.await;
    (el, got)
}

/// Sequential round trips: `request::<Msg32, u64>` answered by one `respond`.
pub(crate) async fn w7_pd_request(rt: Rt, iters: usize) -> Vec<u64> {
    let (tx, rx) = rt.relay().build().expect("relay");
    rx.respond::<Msg32, u64>(mix);
    rx.ready().await;
    for i in 0..iters / 10 {
        black_box(
            tx.request::<Msg32, u64>(Msg32::new(i as u64))
                .await
                .expect("reply"),
        );
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        black_box(
            tx.request::<Msg32, u64>(Msg32::new(i as u64))
                .await
                .expect("reply"),
        );
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples
}

pub(crate) fn run_w7(b: &mut Bench, r: &Runtime, m: usize, iters: usize) {
    eprintln!(
        "W7 policies and request/response on {} ({m} messages, {iters} requests)",
        r.name
    );
    for _ in 0..b.reps {
        let policy_cases: [(&str, &str, DeliveryMode); 2] = [
            ("W7D", PD_DROP_OLDEST, DeliveryMode::DropOldest),
            ("W7L", PD_LATEST, DeliveryMode::Latest),
        ];
        for (workload, name, mode) in policy_cases {
            let (el, got) = r.run(w7_pd_policy(r.rt.clone(), mode, m));
            b.add(workload, r.name, name, "time", "ns/message", ns_per(el, m));
            b.add(
                workload,
                r.name,
                name,
                "seen",
                "%",
                100.0 * got as f64 / m as f64,
            );
        }
        let (el, got) = r.run(w7_async_bc_overflow(r.rt.clone(), m));
        b.add(
            "W7D",
            r.name,
            ASYNC_BC_OVERFLOW,
            "time",
            "ns/message",
            ns_per(el, m),
        );
        b.add(
            "W7D",
            r.name,
            ASYNC_BC_OVERFLOW,
            "seen",
            "%",
            100.0 * got as f64 / m as f64,
        );
        let (el, got) = r.run(w7_tokio_watch(r.rt.clone(), m));
        b.add(
            "W7L",
            r.name,
            TOKIO_WATCH,
            "time",
            "ns/message",
            ns_per(el, m),
        );
        b.add(
            "W7L",
            r.name,
            TOKIO_WATCH,
            "seen",
            "%",
            100.0 * got as f64 / m as f64,
        );
        for (name, samples) in [
            (PD_REQUEST, r.run(w7_pd_request(r.rt.clone(), iters))),
            (ONESHOT_RT, r.run(w7_oneshot(r.rt.clone(), iters))),
        ] {
            for (p, v) in percentiles(samples) {
                b.add("W7R", r.name, name, p, "ns", v);
            }
        }
    }
    b.print("W7D", r.name);
    b.print("W7L", r.name);
    b.print("W7R", r.name);
}
