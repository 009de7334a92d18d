//! Monitoring a relay: Dropped events, RelayError events and stats().
//!
//! Run: `cargo run --example monitoring`
//!
//! Nothing is lost silently: in the default Broadcast mode a subscriber whose queue is
//! full misses the message, and the miss is counted and published as a `Dropped` event.
//! Handler failures are published as `RelayError` events. Both are ordinary types you
//! subscribe to.

use pipedream_rs::{Dropped, Relay, RelayError};

#[derive(Debug, thiserror::Error)]
#[error("rejected {0}")]
struct Rejected(u32);

fn main() {
    smol::block_on(async {
        let (tx, rx) = Relay::channel_with_size(8);
        let mut drops = rx.subscribe::<Dropped>();
        let mut errors = rx.subscribe::<RelayError>();

        let slow = rx.subscribe::<u32>(); // never reads: its queue fills after 8
        let mut fast = rx.subscribe::<u32>();
        rx.tap::<u32>(|n| {
            if n % 10 == 0 {
                Err(Rejected(*n))
            } else {
                Ok(())
            }
        });

        // The monitors read as they go: their own queues hold 8 events too, and an event
        // that does not fit is counted, not reported again.
        let mut failed_sends = 0;
        let mut reported = Vec::new();
        let mut failures = Vec::new();
        for n in 1..=20u32 {
            if tx.send(n).await.is_err() {
                failed_sends += 1;
            }
            fast.recv().await.expect("the fast subscriber keeps up");
            reported.extend(std::iter::from_fn(|| drops.try_recv().ok()));
            failures.extend(std::iter::from_fn(|| errors.try_recv().ok()));
        }

        let stats = rx.stats();
        println!(
            "stats: sent {} (20 u32s plus {} events) delivered {} dropped {} \
             subscribers {} tracked handlers {} tasks {}",
            stats.sent,
            stats.sent - 20,
            stats.delivered,
            stats.dropped,
            stats.subscribers,
            stats.tracked_handlers,
            stats.live_tasks
        );
        println!("the slow subscriber missed {} messages", slow.dropped());
        for d in reported.iter().take(3) {
            println!(
                "Dropped: message {} ({}) for subscriber {}",
                d.msg_id, d.type_name, d.subscriber_id
            );
        }
        println!("{} Dropped events in all", reported.len());
        println!("{failed_sends} sends failed; their RelayError events:");
        for e in &failures {
            println!("  {e}");
        }
    });
}
