//! Quick start: one relay, several message types, tracked handlers, observable loss.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It uses the default runtime feature (`smol`) and exits by itself. In order, it shows:
//!
//! 1. typed subscriptions: two message types on one relay, each subscriber sees only its own;
//! 2. a tracked `sink`: `send().await` returns once the sink has run, and the sink's `Err`
//!    comes back to the sender as `SendError::Downstream`;
//! 3. the same failure published on the relay as a `RelayError` event;
//! 4. loss made visible: in the default broadcast mode a subscriber that does not read
//!    misses messages once its queue is full, and each miss is a `Dropped` event and a
//!    counter in `stats()`;
//! 5. closing: subscriptions drain what is queued, then end.

use std::error::Error;

use pipedream_rs::{Dropped, Relay, RelayError, SendError};

/// A reading from a sensor.
#[derive(Debug)]
struct Temperature {
    sensor: &'static str,
    celsius: f32,
}

/// An order to pack.
#[derive(Debug)]
struct Order {
    id: u32,
    items: u32,
}

/// What the packing sink returns for an order it cannot pack.
#[derive(Debug, thiserror::Error)]
#[error("order {0} has no items")]
struct EmptyOrder(u32);

fn main() -> Result<(), Box<dyn Error>> {
    smol::block_on(async {
        typed_subscriptions().await?;
        handler_errors().await?;
        dropped_messages().await?;
        Ok(())
    })
}

/// 1 and 5: routing by type, and the end of a subscription.
async fn typed_subscriptions() -> Result<(), Box<dyn Error>> {
    println!("== 1. typed subscriptions ==");
    let (tx, rx) = Relay::channel();
    let mut temperatures = rx.subscribe::<Temperature>();
    let mut notes = rx.subscribe::<String>();

    tx.send(Temperature {
        sensor: "kitchen",
        celsius: 21.5,
    })
    .await?;
    tx.send(String::from("front door opened")).await?;
    tx.send(Temperature {
        sensor: "garage",
        celsius: 4.0,
    })
    .await?;

    // Plain subscriptions are untracked: `send` did not wait for them to read, but the
    // messages were queued before it returned.
    println!(
        "three sends returned; queued: {} for the Temperature subscriber, {} for the String one",
        temperatures.len(),
        notes.len()
    );
    while let Ok(t) = temperatures.try_recv() {
        println!(
            "Temperature subscriber got {} at {:.1} °C",
            t.sensor, t.celsius
        );
    }
    while let Ok(note) = notes.try_recv() {
        println!("String subscriber got {note:?} (it never saw a Temperature)");
    }

    // Dropping the sender closes the relay: each subscription yields what is still queued,
    // then `None`.
    tx.send(String::from("last note before closing")).await?;
    drop(tx);
    println!("sender dropped; the String subscriber drains:");
    while let Some(note) = notes.recv().await {
        println!("  still queued: {note:?}");
    }
    println!("  then recv() returned None: the relay is closed");
    Ok(())
}

/// 2 and 3: a tracked handler's error, on both paths.
async fn handler_errors() -> Result<(), Box<dyn Error>> {
    println!("\n== 2. a tracked sink, and its errors ==");
    let (tx, rx) = Relay::channel();
    // Subscribe to failures before sending: a subscription sees what is sent after it exists.
    let mut failures = rx.subscribe::<RelayError>();
    rx.sink::<Order>(|order| {
        if order.items == 0 {
            return Err(EmptyOrder(order.id));
        }
        println!("sink packed order {} ({} items)", order.id, order.items);
        Ok(())
    });

    tx.send(Order { id: 1, items: 3 }).await?;
    println!("send(order 1) returned Ok after the sink had processed it");

    match tx.send(Order { id: 2, items: 0 }).await {
        Err(SendError::Downstream(e)) => {
            println!("send(order 2) returned SendError::Downstream:");
            println!(
                "  kind {}, message {}, error: {}",
                e.kind, e.msg_id, e.error
            );
        }
        other => println!("unexpected result for order 2: {other:?}"),
    }

    println!("\n== 3. the same failure as a RelayError event ==");
    if let Some(event) = failures.recv().await {
        println!("RelayError event on the relay: {event}");
        println!(
            "  (same message id {}: every failure travels both ways)",
            event.msg_id
        );
    }
    Ok(())
}

/// 4: what broadcast mode does with a subscriber that falls behind.
async fn dropped_messages() -> Result<(), Box<dyn Error>> {
    println!("\n== 4. a full queue: Dropped events and stats() ==");
    // Queues of 4 messages per subscriber (the default is 65,536).
    let (tx, rx) = Relay::channel_with_size(4);
    let mut drops = rx.subscribe::<Dropped>();
    let stalled = rx.subscribe::<u64>(); // never reads

    for n in 1..=6u64 {
        tx.send(n).await?; // broadcast: never waits for room, so every send is Ok
    }
    println!("six sends of u64 all returned Ok, though the stalled queue has room for 4");
    while let Ok(d) = drops.try_recv() {
        println!(
            "Dropped: message {} ({}) missed by subscriber {}",
            d.msg_id, d.type_name, d.subscriber_id
        );
    }
    println!(
        "stalled subscriber {}: {} queued, {} missed",
        stalled.id(),
        stalled.len(),
        stalled.dropped()
    );

    let stats = rx.stats();
    println!(
        "stats: sent {}, delivered {}, dropped {}, subscribers {}",
        stats.sent, stats.delivered, stats.dropped, stats.subscribers
    );
    println!(
        "  (sent and delivered include the 2 Dropped events: they are messages on this relay,"
    );
    println!("   which is also why the missed sends carry ids 5 and 7: the first event took 6)");
    println!("  with DeliveryMode::Lossless the 5th send would instead wait for room");
    Ok(())
}
