//! W3: tracked round trip latency

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

/// The percentiles, the mean, and the share of round trips slower than 5 µs (those that
/// had to wake a parked executor thread).
pub(crate) fn percentiles(mut ns: Vec<u64>) -> [(&'static str, f64); 6] {
    ns.sort_unstable();
    let at = |q: f64| ns[((q * ns.len() as f64) as usize).min(ns.len() - 1)] as f64;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    let slow = 100.0 * ns.iter().filter(|&&v| v > 5_000).count() as f64 / ns.len() as f64;
    [
        ("p50", at(0.50)),
        ("p95", at(0.95)),
        ("p99", at(0.99)),
        ("p99.9", at(0.999)),
        ("mean", mean),
        ("> 5 µs (%)", slow),
    ]
}

/// `send().await` on a relay with one `sink`: one sample per send.
pub(crate) async fn w3_pd(rt: Rt, iters: usize) -> Vec<u64> {
    let (tx, rx) = lossless(&rt, pipedream_rs::DEFAULT_CHANNEL_SIZE);
    let accs = pd_sinks(&rx, 1);
    rx.ready().await;
    for i in 0..iters / 10 {
        tx.send(Msg32::new(i as u64)).await.expect("send"); // warm-up
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        tx.send(Msg32::new(i as u64)).await.expect("send");
        samples.push(t.elapsed().as_nanos() as u64);
    }
    black_box(accs[0].load(Ordering::Relaxed));
    samples
}

pub(crate) fn run_w3(b: &mut Bench, r: &Runtime, iters: usize) {
    eprintln!("W3 round trip on {} ({iters} sequential sends)", r.name);
    for _ in 0..b.reps {
        for (name, samples) in [
            ("pipedream send + sink", r.run(w3_pd(r.rt.clone(), iters))),
            (
                "async-channel send + ack channel",
                r.run(w3_async_ch(r.rt.clone(), iters)),
            ),
        ] {
            for (p, v) in percentiles(samples) {
                b.add("W3", r.name, name, p, "ns", v);
            }
        }
    }
    b.print("W3", r.name);
}
