//! W9: the Redis bridge against the raw `redis` client doing the same work, over one
//! `redis-server` on 127.0.0.1 that this workload starts (and skips, saying why,
//! without). Feature `redis`: `cargo bench --features tokio,redis --bench relay -- w9`.
//!
//! - **W9P pub/sub throughput**: `m` messages of 32 bytes from one relay, exported,
//!   imported by a second relay (its own connection) and read by a subscriber there; ns
//!   per message from the first send to the last receive. The peer publishes the same
//!   postcard payloads in pipelines of 64 (as the bridge's export does) from one
//!   connection and decodes them from a subscription on a second.
//! - **W9S stream throughput**: the same through a stream and a consumer group
//!   (`export_stream` → `import_stream`, acknowledged after the relay's handlers); the
//!   peer appends in pipelines of 64 and reads with `XREADGROUP COUNT 64`, acknowledging
//!   each batch with one `XACK`.
//!
//! Both run on one tokio runtime with 2 workers (I/O enabled), the bridge's relays too.
//! The Redis bridge has no tracked (request/reply) mode, so W9 has no round trip.

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

use pipedream_rs::bridge::redis::RedisBridge;

pub(crate) const PD_REDIS: &str = "pipedream Redis bridge, pub/sub";
pub(crate) const PD_REDIS_STREAM: &str = "pipedream Redis bridge, stream + group";

/// W9P / W9S, bridged: relay `a` exports, relay `b` imports, a subscriber on `b` reads `m`.
pub(crate) async fn w9_pd_throughput(url: String, m: usize, stream: bool) -> Duration {
    let (a_tx, a_rx) = Relay::builder().build().expect("relay");
    let (_b_tx, b_rx) = Relay::builder().build().expect("relay");
    let a = RedisBridge::connect(url.as_str(), &a_rx)
        .await
        .expect("connect");
    let b = RedisBridge::connect(url.as_str(), &b_rx)
        .await
        .expect("connect");
    if stream {
        a.export_stream::<Wire32>("bench.w9s").expect("export");
        b.import_stream::<Wire32>("bench.w9s", "bench")
            .await
            .expect("import");
    } else {
        a.export::<Wire32>("bench.w9p").expect("export");
        b.import::<Wire32>("bench.w9p").await.expect("import");
    }
    let el = bridged_run(&a_tx, &b_rx, m).await;
    assert_eq!(
        a.stats().dropped + b.stats().failed_in,
        0,
        "the bridge lost messages"
    );
    el
}

pub(crate) fn run_w9(b: &mut Bench, m: usize) {
    let Some(server) = ServerChild::start(
        "redis-server",
        &["--bind", "127.0.0.1", "--port"],
        &["--save", "", "--appendonly", "no"], // nothing persisted
        "redis",
    ) else {
        eprintln!("W9 skipped: no redis-server to start (apt-get install -y redis-server)");
        return;
    };
    eprintln!("W9 Redis bridge on tokio ({m} messages)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let run =
        |f: Pin<Box<dyn Future<Output = Duration> + Send>>| rt.block_on(rt.spawn(f)).expect("task");
    for _ in 0..b.reps {
        for (workload, stream, pd, raw) in [
            ("W9P", false, PD_REDIS, RAW_REDIS),
            ("W9S", true, PD_REDIS_STREAM, RAW_REDIS_STREAM),
        ] {
            let el = run(Box::pin(w9_pd_throughput(server.url.clone(), m, stream)));
            b.add(
                workload,
                "tokio",
                pd,
                "throughput",
                "ns/message",
                ns_per(el, m),
            );
            let el = if stream {
                run(Box::pin(w9_raw_stream(server.url.clone(), m)))
            } else {
                run(Box::pin(w9_raw_pubsub(server.url.clone(), m)))
            };
            b.add(
                workload,
                "tokio",
                raw,
                "throughput",
                "ns/message",
                ns_per(el, m),
            );
        }
    }
    b.print("W9P", "tokio");
    b.print("W9S", "tokio");
}
