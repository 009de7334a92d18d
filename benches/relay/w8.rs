//! W8: the NATS bridge against the raw `async-nats` client doing the same work, over one
//! `nats-server` on 127.0.0.1 that this workload starts (and skips, saying why, without).
//! Feature `nats`: `cargo bench --features tokio,nats --bench relay -- w8`.
//!
//! - **W8T throughput**: `m` messages of 32 bytes from one relay, exported, imported by a
//!   second relay (its own connection) and read by a subscriber there; ns per message
//!   from the first send to the last receive. The peer publishes the same postcard
//!   payloads with one client and reads them with a second, decoding each.
//! - **W8R round trip**: sequential tracked sends (`export_tracked` → `import_tracked` →
//!   a `sink`) against the raw request/reply the bridge rides on (a responder that
//!   decodes the request and answers). Percentiles per round trip.
//!
//! Both run on one tokio runtime with 2 workers (I/O enabled), the bridge's relays too.

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

use pipedream_rs::bridge::nats::NatsBridge;

pub(crate) const PD_BRIDGE: &str = "pipedream NATS bridge";
pub(crate) const PD_BRIDGE_TRACKED: &str = "pipedream NATS bridge, tracked send";

/// Relays `a` and `b`, each with a bridge of its own to the server at `url`: `a`'s
/// sender, `b`'s sender (held so that `b` stays open) and receiver, then the two bridges.
async fn two_bridged(
    url: &str,
) -> (
    RelaySender,
    RelaySender,
    RelayReceiver,
    NatsBridge,
    NatsBridge,
) {
    let (a_tx, a_rx) = Relay::builder().build().expect("relay");
    let (b_tx, b_rx) = Relay::builder().build().expect("relay");
    let a = NatsBridge::connect(url, &a_rx).await.expect("connect");
    let b = NatsBridge::connect(url, &b_rx).await.expect("connect");
    (a_tx, b_tx, b_rx, a, b)
}

/// W8T, bridged: relay `a` exports, relay `b` imports, a subscriber on `b` reads `m`.
pub(crate) async fn w8_pd_throughput(url: String, m: usize) -> Duration {
    let (a_tx, _b_tx, b_rx, a, b) = two_bridged(&url).await;
    a.export::<Wire32>("bench.w8t").expect("export");
    b.import::<Wire32>("bench.w8t").await.expect("import");
    let el = bridged_run(&a_tx, &b_rx, m).await;
    assert_eq!(
        a.stats().dropped + b.stats().failed_in,
        0,
        "the bridge lost messages"
    );
    el
}

/// W8R, bridged: sequential tracked sends answered by a sink on the other relay.
pub(crate) async fn w8_pd_round_trips(url: String, iters: usize) -> Vec<u64> {
    let (a_tx, _b_tx, b_rx, a, b) = two_bridged(&url).await;
    b_rx.sink::<Wire32>(|v: &Wire32| {
        black_box(v.a);
        Ok::<(), std::convert::Infallible>(())
    });
    b.import_tracked::<Wire32>("bench.w8r")
        .await
        .expect("import");
    a.export_tracked::<Wire32>("bench.w8r").expect("export");
    for i in 0..iters / 10 {
        a_tx.send(Wire32::new(i as u64)).await.expect("warm-up");
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        a_tx.send(Wire32::new(i as u64))
            .await
            .expect("tracked send");
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples
}

pub(crate) fn run_w8(b: &mut Bench, m: usize, iters: usize) {
    let Some(server) = ServerChild::start("nats-server", &["-a", "127.0.0.1", "-p"], &[], "nats")
    else {
        eprintln!("W8 skipped: no nats-server to start (apt-get install -y nats-server)");
        return;
    };
    eprintln!("W8 NATS bridge on tokio ({m} messages, {iters} round trips)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let run =
        |f: Pin<Box<dyn Future<Output = Duration> + Send>>| rt.block_on(rt.spawn(f)).expect("task");
    for _ in 0..b.reps {
        let el = run(Box::pin(w8_pd_throughput(server.url.clone(), m)));
        b.add(
            "W8T",
            "tokio",
            PD_BRIDGE,
            "throughput",
            "ns/message",
            ns_per(el, m),
        );
        let el = run(Box::pin(w8_raw_throughput(server.url.clone(), m)));
        b.add(
            "W8T",
            "tokio",
            RAW_NATS,
            "throughput",
            "ns/message",
            ns_per(el, m),
        );
        let runs: [(&str, Vec<u64>); 2] = [
            (
                PD_BRIDGE_TRACKED,
                rt.block_on(rt.spawn(w8_pd_round_trips(server.url.clone(), iters)))
                    .expect("task"),
            ),
            (
                RAW_NATS_REQUEST,
                rt.block_on(rt.spawn(w8_raw_round_trips(server.url.clone(), iters)))
                    .expect("task"),
            ),
        ];
        for (name, samples) in runs {
            for (p, v) in percentiles(samples) {
                b.add("W8R", "tokio", name, p, "ns", v);
            }
        }
    }
    b.print("W8T", "tokio");
    b.print("W8R", "tokio");
}
