//! Graceful shutdown: stop producing, let every subscriber drain, then finish.
//!
//! Run: `cargo run --example graceful_shutdown`
//!
//! Closing the sender (or dropping it) stops new sends at once. Everything already queued
//! is still delivered: subscriptions yield it and then `None`, handlers process it, and
//! derived relays pass it on before they close in turn. `closed()` tells when the close
//! has happened; awaiting each consumer tells when it has drained.

use pipedream_rs::{DeliveryMode, Relay, SendError};
use std::time::Duration;

fn main() {
    smol::block_on(async {
        let (tx, rx) = Relay::builder()
            .delivery_mode(DeliveryMode::Lossless) // nothing may be lost on the way down
            .channel_size(64)
            .build()
            .expect("valid configuration");

        // A slow consumer, run as a task we can await.
        let mut jobs = rx.subscribe::<u32>();
        let worker = rx.within(move || async move {
            let mut done = 0;
            while let Some(job) = jobs.recv().await {
                smol::Timer::after(Duration::from_millis(1)).await;
                done += *job;
            }
            println!("worker drained everything: total {done}");
        });

        // A derived relay: closes after its forwarder has passed on what it had.
        let audit = rx.map::<u32, String>(|n| format!("job {n}"));
        let mut audit_log = audit.subscribe::<String>();
        let auditor = rx.within(move || async move {
            let mut lines = 0;
            while audit_log.recv().await.is_some() {
                lines += 1;
            }
            println!("auditor drained {lines} lines");
        });

        for n in 1..=100u32 {
            tx.send(n).await.expect("open");
        }

        // Shut down: no new sends from here on.
        let closed = rx.closed();
        tx.close();
        closed.await;
        assert!(matches!(tx.send(0u32).await, Err(SendError::Closed)));
        println!("relay closed; waiting for consumers to drain");

        worker.await.expect("worker finished");
        auditor.await.expect("auditor finished");
        audit.closed().await;
        println!("shutdown complete");
    });
}
