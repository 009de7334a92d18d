//! The core with no async runtime at all: `futures::executor::block_on` on the test thread
//! and a spawner that runs each task on its own OS thread. These tests are the ones Miri
//! runs (see docs/testing.md), so loop counts shrink under `cfg(miri)`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::executor::block_on;
use pipedream_rs::{
    BoxFuture, DeliveryMode, Dropped, ErrorMode, Relay, RelayBuilder, RelayError, SendError,
};

fn thread_spawner(task: BoxFuture) {
    std::thread::spawn(move || block_on(task));
}

fn builder() -> RelayBuilder {
    Relay::builder().spawner(thread_spawner)
}

const N: u32 = if cfg!(miri) { 20 } else { 2_000 };

#[derive(Debug, thiserror::Error)]
#[error("odd {0}")]
struct Odd(u32);

#[test]
fn typed_routing_envelopes_and_counters_without_a_runtime() {
    let (tx, rx) = builder().build().unwrap();
    let mut words = rx.subscribe::<String>();
    let mut numbers = rx.subscribe::<u32>();
    let mut all = rx.subscribe_all();
    block_on(async {
        tx.send(String::from("a")).await.unwrap();
        tx.send(7u32).await.unwrap();
    });
    assert_eq!(words.try_recv().unwrap().as_str(), "a");
    assert!(words.try_recv().is_err());
    assert_eq!(*numbers.try_recv().unwrap(), 7);
    let first = all.try_recv().unwrap();
    assert_eq!(
        (first.msg_id(), first.type_name()),
        (1, "alloc::string::String")
    );
    assert_eq!(*all.try_recv().unwrap().downcast::<u32>().unwrap(), 7);
    let stats = rx.stats();
    assert_eq!((stats.sent, stats.delivered, stats.subscribers), (2, 4, 3));
}

#[test]
fn tracked_sink_errors_come_back_without_a_runtime() {
    let (tx, rx) = builder().error_mode(ErrorMode::Aggregate).build().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    rx.sink::<u32>(move |n| {
        s.fetch_add(1, Ordering::SeqCst);
        if n % 2 == 1 {
            Err(Odd(*n))
        } else {
            Ok(())
        }
    });
    rx.tap::<u32>(|n| if n % 2 == 1 { Err(Odd(*n)) } else { Ok(()) });
    let mut events = rx.subscribe::<RelayError>();
    block_on(async {
        for n in 0..N {
            let result = tx.send(n).await;
            match (n % 2, result) {
                (0, Ok(_)) => {}
                (1, Err(SendError::Aggregate(errors))) => assert_eq!(errors.len(), 2),
                (_, other) => panic!("message {n}: {other:?}"),
            }
        }
    });
    assert_eq!(seen.load(Ordering::SeqCst), N as usize);
    let mut published = 0;
    while events.try_recv().is_ok() {
        published += 1;
    }
    assert_eq!(published, N as usize); // two failures per odd message, N/2 odd messages
}

#[test]
fn lossless_back_pressure_without_a_runtime() {
    let (tx, rx) = builder()
        .channel_size(2)
        .delivery_mode(DeliveryMode::Lossless)
        .build()
        .unwrap();
    let mut sub = rx.subscribe::<u32>();
    let consumer = std::thread::spawn(move || {
        block_on(async {
            let mut got = Vec::new();
            while let Some(n) = sub.recv().await {
                got.push(*n);
            }
            got
        })
    });
    block_on(async {
        for n in 0..N {
            tx.send(n).await.unwrap();
        }
    });
    drop(tx);
    assert_eq!(consumer.join().unwrap(), (0..N).collect::<Vec<_>>());
}

#[test]
fn broadcast_drops_are_counted_and_reported_without_a_runtime() {
    let (tx, rx) = builder().channel_size(2).build().unwrap();
    let stalled = rx.subscribe::<u32>();
    let mut drops = rx.subscribe::<Dropped>();
    block_on(async {
        for n in 0..4u32 {
            tx.send(n).await.unwrap();
        }
    });
    // Two fit; the third and fourth are missed. The Dropped events fit their own queue.
    assert_eq!(stalled.dropped(), 2);
    assert_eq!(rx.stats().dropped, 2);
    let ids: Vec<u64> = std::iter::from_fn(|| drops.try_recv().ok())
        .map(|d| d.msg_id)
        .collect();
    // Events take ids from the same counter: message 3 missed, event 4, message 5 missed.
    assert_eq!(ids, [3, 5]);
}

#[test]
fn derived_relays_and_cascade_close_without_a_runtime() {
    let (tx, rx) = builder().build().unwrap();
    let evens = rx.filter::<u32>(|n| n % 2 == 0);
    let texts = evens.map::<u32, String>(|n| format!("#{n}"));
    let mut sub = texts.subscribe::<String>();
    block_on(async {
        for n in 0..6u32 {
            tx.send(n).await.unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(s) = sub.recv().await {
            got.push(s.as_str().to_owned());
        }
        assert_eq!(got, ["#0", "#2", "#4"]);
        texts.closed().await;
    });
    assert!(evens.is_closed() && texts.is_closed());
}

#[test]
fn dropped_tracked_subscription_fails_its_queue_without_a_runtime() {
    let (tx, rx) = builder().build().unwrap();
    let sub = rx.subscribe_tracked::<u8>();
    let sender = std::thread::spawn(move || block_on(tx.send(1u8)));
    // Wait until the message is queued, then drop the subscription holding it.
    while rx.stats().delivered == 0 {
        std::thread::yield_now();
    }
    drop(sub);
    let err = sender.join().unwrap().unwrap_err();
    assert!(err.errors()[0]
        .downcast_ref::<pipedream_rs::HandlerGone>()
        .is_some());
}
