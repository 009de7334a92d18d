//! W2: heterogeneous routing — 4 types round-robin, 4 subscribers wanting one type each

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

pub(crate) const KINDS_W2: usize = 4;

pub(crate) fn pd_typed_consumer<const K: usize>(
    rt: &Rt,
    rx: &RelayReceiver,
    expected: usize,
) -> Join<(usize, u64)> {
    let mut sub = rx.subscribe::<Typed<K>>();
    rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < expected {
            match sub.recv().await {
                Some(v) => {
                    acc = work(acc, &v.0);
                    got += 1;
                }
                None => break,
            }
        }
        (got, acc)
    })
}

/// This crate: `kinds` message types round-robin, one typed subscriber per type.
pub(crate) async fn pd_routing(rt: Rt, kinds: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let per = m / kinds;
    let handles: Vec<_> = (0..kinds)
        .map(|k| with_kind!(k, |K| pd_typed_consumer::<K>(&rt, &rx, per)))
        .collect();
    let t = Instant::now();
    for i in 0..per * kinds {
        send_typed!(tx, i % kinds, Msg32::new(i as u64));
    }
    join_all(handles, per).await;
    t.elapsed()
}

pub(crate) const W2_ROUTED: &str = "async-channel, routed by hand (floor, not a peer)";
pub(crate) const W2_ROUTED_ARC: &str =
    "async-channel per type, one Arc per message (floor, not a peer)";

pub(crate) fn run_w2(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W2 routing on {} ({m} messages, 4 types)", r.name);
    for _ in 0..b.reps {
        let cases: [Case; 8] = [
            (
                "pipedream (typed subscribe)",
                Box::new(|| r.run(pd_routing(r.rt.clone(), KINDS_W2, m))),
            ),
            (
                "tokio::sync::broadcast (enum)",
                Box::new(|| r.run(w2_tokio_bc(r.rt.clone(), m))),
            ),
            (
                "async-broadcast (enum)",
                Box::new(|| r.run(w2_async_bc(r.rt.clone(), m))),
            ),
            (
                "flume (enum, channel per subscriber)",
                Box::new(|| r.run(w2_flume(r.rt.clone(), m))),
            ),
            (
                "async-channel (enum, channel per subscriber)",
                Box::new(|| r.run(w2_async_ch(r.rt.clone(), m))),
            ),
            (
                "crossbeam-channel (enum, threads)",
                Box::new(|| w2_crossbeam(m)),
            ),
            (
                W2_ROUTED,
                Box::new(|| r.run(w2_async_ch_routed(r.rt.clone(), m))),
            ),
            (
                W2_ROUTED_ARC,
                Box::new(|| r.run(w2_async_ch_routed_arc(r.rt.clone(), m))),
            ),
        ];
        for (name, f) in cases.iter() {
            let el = f();
            b.add("W2", r.name, name, "4 types", "ns/message", ns_per(el, m));
        }
    }
    b.print("W2", r.name);
}
