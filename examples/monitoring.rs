//! Monitoring a relay: every message's fate and every failure, observable.
//!
//! Run: `cargo run --example monitoring --features tracing`
//!
//! - **Receipts**: each `send` says how many subscribers the message was queued for,
//!   how many tracked handlers processed it, and how many missed it.
//! - **Unrouted messages**: a message nobody subscribes to is counted, published as an
//!   `Unrouted` event naming its type, and logged (here, the `&str` sent where a `String`
//!   handler waits).
//! - **Dropped messages**: in broadcast mode a full queue misses the message; the miss is
//!   counted and published as a `Dropped` event.
//! - **Failures**: handler errors and panics are returned to the sender, published as
//!   `RelayError` events and counted, even behind `map`, where no sender waits.
//! - **Vanished handlers**: a handler whose task is lost (here its spawner throws it away,
//!   as a runtime shutting down would) is reported as `HandlerLost`, and later receipts
//!   show it is gone.
//! - **tracing**: a `pipedream.send` span below the caller's span for each send, a
//!   `pipedream.sink`/`tap`/`forward` span below it for each handler's work, and a log
//!   line for each loss and failure, printed here by `tracing-subscriber`'s fmt layer.

use pipedream_rs::{BoxFuture, Dropped, HandlerLost, Relay, RelayError, Unrouted};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
#[error("rejected {0}")]
struct Rejected(u32);

fn main() {
    // Spans are shown as the context of each log line.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    smol::block_on(async {
        let (tx, rx) = Relay::channel_with_size(4);
        let mut unrouted = rx.subscribe::<Unrouted>();
        let mut drops = rx.subscribe::<Dropped>();
        let mut errors = rx.subscribe::<RelayError>();

        // Receipts.
        rx.sink::<String>(|s| tracing::info!(%s, "the String sink got it"));
        let _slow = rx.subscribe::<u32>(); // never reads: its queue fills after 4
        rx.tap::<u32>(|n| {
            if n % 5 == 0 {
                Err(Rejected(*n))
            } else {
                Ok(())
            }
        });
        let request = tracing::info_span!("request", id = 42);
        let receipt = tx
            .send(String::from("hello"))
            .instrument(request)
            .await
            .unwrap();
        println!(
            "receipt: queued for {}, handled by {}",
            receipt.queued, receipt.handled
        );

        // Unrouted: a `&str` is not a `String`.
        let receipt = tx.send("hello").await.unwrap();
        let report = unrouted.recv().await.unwrap();
        println!(
            "unrouted: is_unrouted() = {}; event names the type: {}",
            receipt.is_unrouted(),
            report.type_name
        );

        // Dropped, and a failure returned to the sender.
        for n in 1..=6u32 {
            match tx.send(n).await {
                Ok(r) if r.missed > 0 => println!("send {n}: missed by {} subscriber(s)", r.missed),
                Ok(_) => {}
                Err(e) => println!("send {n} failed: {e}"),
            }
        }
        while let Ok(d) = drops.try_recv() {
            println!(
                "Dropped: message {} for subscriber {}",
                d.msg_id, d.subscriber_id
            );
        }
        while let Ok(e) = errors.try_recv() {
            println!("RelayError: {e}");
        }

        // A failure behind `map`: the sender is not waiting, the child's counters and
        // the log still show it.
        let doubled = rx.map::<u32, u64>(|n| u64::from(*n) * 2);
        doubled.sink::<u64>(|n| if *n == 14 { Err("fourteen") } else { Ok(()) });
        tx.send(7u32).await.unwrap();
        while doubled.stats().failures == 0 {
            smol::Timer::after(std::time::Duration::from_millis(1)).await;
        }

        // A vanished handler.
        let (lost_tx, lost_rx) = Relay::builder()
            .spawner(|task: BoxFuture| drop(task))
            .build()
            .unwrap();
        let mut lost = lost_rx.subscribe::<HandlerLost>();
        lost_rx.sink::<u8>(|_| ());
        let report = lost.recv().await.unwrap();
        println!(
            "HandlerLost: the {} handler of {} ({:?})",
            report.kind, report.type_name, report.reason
        );
        let receipt = lost_tx.send(1u8).await.unwrap();
        println!(
            "a later send: handled by {}, unrouted: {}",
            receipt.handled,
            receipt.is_unrouted()
        );

        let s = rx.stats();
        println!(
            "stats: sent {} delivered {} dropped {} unrouted {} failures {} (panics {}) lost {}",
            s.sent, s.delivered, s.dropped, s.unrouted, s.failures, s.panics, s.handlers_lost
        );
        println!("behind map: failures {}", doubled.stats().failures);
    });
}
