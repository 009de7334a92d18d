//! profile

use super::*;

/// `-- profile [what]`: one case alone, for `valgrind --tool=callgrind`.
///
/// - `route` (default): the single-threaded send + try_recv loops (pipedream, async-channel);
/// - `fanout N M`: W1 untracked with N subscribers and M messages, on smol;
/// - `fanout-ac N M`: the same on one async-channel per subscriber;
/// - `sink M` / `ack M`: M tracked round trips (one sink) / async-channel send + ack.
pub(crate) fn run_profile(what: &[String], m: usize) {
    let arg =
        |i: usize, default: usize| what.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let r = Runtime::smol();
    match what.first().map(String::as_str).unwrap_or("route") {
        "route" => {
            let pd = routing_micro(1, m);
            let ac = async_ch_micro(1, m);
            eprintln!(
                "profile: pipedream {:.1} ns/message, async-channel {:.1} ns/message",
                ns_per(pd, m),
                ns_per(ac, m)
            );
        }
        "fanout" => {
            let (n, m) = (arg(1, 1), arg(2, m));
            let el = r.run(w1_pd(r.rt.clone(), n, m));
            eprintln!(
                "profile: pipedream fan-out {:.1} ns/delivery",
                ns_per(el, n * m)
            );
        }
        "fanout-ac" => {
            let (n, m) = (arg(1, 1), arg(2, m));
            let el = r.run(w1_async_ch(r.rt.clone(), n, m));
            eprintln!(
                "profile: async-channel fan-out {:.1} ns/delivery",
                ns_per(el, n * m)
            );
        }
        "sink" => {
            let m = arg(1, 20_000);
            let el = r.run(w1_pd_sink(r.rt.clone(), 1, m, 1));
            eprintln!("profile: sink round trip {:.1} ns", ns_per(el, m));
        }
        "ack" => {
            let m = arg(1, 20_000);
            let s = r.run(w3_async_ch(r.rt.clone(), m));
            eprintln!("profile: async-channel send + ack, {} samples", s.len());
        }
        other => panic!("unknown profile case {other}"),
    }
}
