//! w6

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

pub(crate) fn run_w6(b: &mut Bench, r: &Runtime, m: usize, deliveries: usize) {
    eprintln!("W6 scaling on {}", r.name);
    let ns = [1usize, 4, 16, 64, 256, 1024];
    let kinds = [1usize, 2, 4, 8, 16, 32, 64];
    for _ in 0..b.reps {
        for &n in &ns {
            // Up to 16 subscribers, W1's message count; beyond, a constant number of
            // deliveries (so 1,024 subscribers get fewer messages each).
            let msgs = if n <= 16 { m } else { (deliveries / n).max(64) };
            let p = format!("N={n}");
            let el = r.run(w1_pd(r.rt.clone(), n, msgs));
            b.add(
                "W6S",
                r.name,
                PD_SUB,
                &p,
                "ns/delivery",
                ns_per(el, n * msgs),
            );
            let el = r.run(w1_async_ch(r.rt.clone(), n, msgs));
            b.add(
                "W6S",
                r.name,
                ASYNC_CH,
                &p,
                "ns/delivery",
                ns_per(el, n * msgs),
            );
        }
        for &k in &kinds {
            let p = format!("types={k}");
            let el = r.run(pd_routing(r.rt.clone(), k, m));
            b.add(
                "W6T",
                r.name,
                "pipedream, one subscriber per type, tasks",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w6_async_ch_routed(r.rt.clone(), k, m));
            b.add(
                "W6T",
                r.name,
                "async-channel per type, routed by hand, tasks",
                &p,
                "ns/message",
                ns_per(el, m),
            );
        }
    }
    b.print("W6S", r.name);
    b.print("W6T", r.name);
}

/// Routing alone, no executor threads: one thread sends `batch` messages round-robin over
/// `kinds` types (one subscriber each), then drains every subscriber with `try_recv`.
pub(crate) fn routing_micro(kinds: usize, m: usize) -> Duration {
    let (tx, rx) = Relay::builder()
        .spawner(SmolSpawner)
        .delivery_mode(DeliveryMode::Lossless)
        .build()
        .expect("relay");
    let mut subs: Vec<Box<dyn FnMut() -> usize>> = (0..kinds)
        .map(|k| {
            with_kind!(k, |K| {
                let mut sub = rx.subscribe::<Typed<K>>();
                Box::new(move || {
                    let mut n = 0usize;
                    while let Ok(v) = sub.try_recv() {
                        black_box(v.0.a);
                        n += 1;
                    }
                    n
                }) as Box<dyn FnMut() -> usize>
            })
        })
        .collect();
    let batch = 256;
    let m = m / batch * batch;
    let t = Instant::now();
    futures::executor::block_on(async {
        let mut got = 0;
        for start in (0..m).step_by(batch) {
            for i in start..start + batch {
                send_typed!(tx, i % kinds, Msg32::new(i as u64));
            }
            for s in subs.iter_mut() {
                got += s();
            }
        }
        assert_eq!(got, m);
    });
    t.elapsed()
}

pub(crate) fn run_w6_micro(b: &mut Bench, m: usize) {
    eprintln!("W6 routing micro-benchmark (one thread, no executor)");
    for _ in 0..b.reps {
        for k in [1usize, 2, 4, 8, 16, 32, 64] {
            let el = routing_micro(k, m);
            b.add(
                "W6T",
                "one thread",
                "pipedream send + try_recv, one subscriber per type",
                &format!("types={k}"),
                "ns/message",
                ns_per(el, m / 256 * 256),
            );
            let el = async_ch_micro(k, m);
            b.add(
                "W6T",
                "one thread",
                "async-channel send + try_recv, one channel per type",
                &format!("types={k}"),
                "ns/message",
                ns_per(el, m / 256 * 256),
            );
        }
    }
    b.print("W6T", "one thread");
}
