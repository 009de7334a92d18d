//! Replay for late subscribers (`RelayBuilder::retain`), `latest()`, and the seam between
//! replayed and live messages under concurrent sends and subscribes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::within;
use pipedream_rs::{BuildError, Relay, MAX_CHANNEL_SIZE};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(20);

on_every_runtime! {
    async fn a_late_subscriber_gets_the_last_n_in_order_then_the_live_ones() {
        let (tx, rx) = Relay::builder().retain::<u32>(3).build().unwrap();
        for n in 1..=5u32 {
            let receipt = tx.send(n).await.unwrap();
            assert!(!receipt.is_unrouted(), "a retained message is kept, not unrouted");
        }
        assert_eq!(rx.stats().unrouted, 0);
        let mut late = rx.subscribe::<u32>();
        tx.send(6u32).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(*within(WAIT, "replayed or live", late.recv()).await.unwrap());
        }
        assert_eq!(got, [3, 4, 5, 6]);
        assert!(late.try_recv().is_err(), "nothing doubled");
        // Another type is not retained: a late subscriber of it starts with the live ones.
        tx.send(1u8).await.unwrap();
        let mut bytes = rx.subscribe::<u8>();
        assert!(bytes.try_recv().is_err());
    }

    async fn a_retention_of_one_is_a_current_value() {
        let (tx, rx) = Relay::builder().retain::<String>(1).build().unwrap();
        assert!(rx.latest::<String>().is_none());
        for s in ["booting", "ready"] {
            tx.send(String::from(s)).await.unwrap();
        }
        assert_eq!(rx.latest::<String>().as_deref().map(String::as_str), Some("ready"));
        let mut view = rx.subscribe::<String>();
        assert_eq!(*within(WAIT, "the current value", view.recv()).await.unwrap(), "ready");
        assert!(rx.latest::<u64>().is_none(), "not retained");
    }

    async fn a_handler_registered_late_processes_the_retained_messages_first() {
        let (tx, rx) = Relay::builder().retain::<u64>(2).build().unwrap();
        for n in 1..=3u64 {
            tx.send(n).await.unwrap();
        }
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        rx.sink::<u64>(move |n| s.lock().unwrap().push(*n));
        // Tracked: returns once the handler processed it, and the replay came first.
        tx.send(4u64).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [2, 3, 4]);
    }

    async fn nothing_is_missed_or_doubled_at_the_seam_under_concurrent_sends_and_subscribes() {
        const SENDS: u64 = 10_000;
        const SUBSCRIBERS: usize = 64;
        let (tx, rx) = Relay::builder().retain::<u64>(4).build().unwrap();
        let sender = common::spawn(async move {
            for n in 0..SENDS {
                tx.send(n).await.unwrap();
                if n % 64 == 0 {
                    common::yield_now().await;
                }
            }
            // Dropping `tx` closes the relay: every subscriber drains and ends.
        });
        let checked = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for i in 0..SUBSCRIBERS {
            let mut sub = rx.subscribe::<u64>();
            let checked = checked.clone();
            readers.push(common::spawn(async move {
                let mut got = Vec::new();
                while let Some(n) = sub.recv().await {
                    got.push(*n);
                }
                if let Some(&first) = got.first() {
                    let expected: Vec<u64> = (first..SENDS).collect();
                    assert_eq!(got, expected, "subscriber {i}: a gap or a double at the seam");
                    checked.fetch_add(1, Ordering::SeqCst);
                }
            }));
            // Subscribe at points spread over the run.
            for _ in 0..(i % 7) {
                common::yield_now().await;
            }
        }
        within(WAIT, "the sender", sender).await;
        for reader in readers {
            within(WAIT, "a reader", reader).await;
        }
        assert!(checked.load(Ordering::SeqCst) > 0, "no subscriber saw anything");
    }

    async fn ten_thousand_subscribes_racing_sends_each_see_a_seamless_start() {
        // 10,000 subscribes, each racing a sender that never stops: each new subscriber
        // takes its replay (the last 4 retained) and the live messages after it, and the
        // first 8 it sees must be consecutive: nothing missed or doubled at its seam.
        const SUBSCRIBES: usize = 10_000;
        const SEEN: usize = 8;
        let (tx, rx) = Relay::builder().retain::<u64>(4).build().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let sender = common::spawn(async move {
            let mut n = 0u64;
            while !halt.load(Ordering::SeqCst) {
                tx.send(n).await.unwrap();
                n += 1;
                if n % 8 == 0 {
                    common::yield_now().await;
                }
            }
            n
        });
        // Nothing to race before the first message is sent.
        common::wait_until(WAIT, "the first sends", || rx.latest::<u64>().is_some()).await;
        for i in 0..SUBSCRIBES {
            let mut sub = rx.subscribe::<u64>();
            let mut got = Vec::with_capacity(SEEN);
            while got.len() < SEEN {
                got.push(*within(WAIT, "the next message", sub.recv()).await.unwrap());
            }
            let expected: Vec<u64> = (got[0]..got[0] + SEEN as u64).collect();
            assert_eq!(got, expected, "subscribe {i}: a gap or a double at the seam");
        }
        stop.store(true, Ordering::SeqCst);
        let sent = within(WAIT, "the sender", sender).await;
        assert!(sent >= SEEN as u64);
    }

    async fn a_lossless_late_joiner_full_of_its_replay_still_gets_the_message() {
        const CAP: usize = 4;
        let (tx, rx) = Relay::builder()
            .channel_size(CAP)
            .delivery_mode(pipedream_rs::DeliveryMode::Lossless)
            .retain::<u32>(CAP)
            .build()
            .unwrap();
        for n in 0..CAP as u32 {
            tx.send(n).await.unwrap();
        }
        // The call takes the snapshot (without the subscriber below); the subscriber's
        // replay fills its queue; the send's commit must still reach it.
        let pending = tx.send(99u32);
        let mut late = rx.subscribe::<u32>();
        let receipt = within(WAIT, "the commit", pending).await.unwrap();
        assert_eq!((receipt.queued, receipt.missed), (1, 0), "{receipt:?}");
        let mut got = Vec::new();
        while let Ok(n) = late.try_recv() {
            got.push(*n);
        }
        assert_eq!(got, [0, 1, 2, 3, 99]);
    }

    async fn a_retention_above_the_largest_is_refused() {
        let built = Relay::builder().retain::<u8>(MAX_CHANNEL_SIZE + 1).build();
        assert_eq!(
            built.unwrap_err(),
            BuildError::RetentionTooLarge {
                type_name: "u8",
                size: MAX_CHANNEL_SIZE + 1,
                max: MAX_CHANNEL_SIZE,
            }
        );
        // Zero keeps nothing: a plain relay.
        let (tx, rx) = Relay::builder().retain::<u8>(0).build().unwrap();
        assert!(tx.send(1u8).await.unwrap().is_unrouted());
        assert!(rx.latest::<u8>().is_none());
    }
}
