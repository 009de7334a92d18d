//! Delivery policies per type and per subscriber: drop-oldest, latest (conflation), and
//! lossless and broadcast side by side on one relay.

mod common;

use std::pin::pin;
use std::time::Duration;

use common::{within, Gate};
use futures::FutureExt;
use pipedream_rs::{
    BuildError, DeliveryMode, Dropped, HandlerKind, QueueFull, Relay, RelayError, SendError,
    SubscribeOptions, MAX_CHANNEL_SIZE,
};

/// The panic an evicted message's `Drop` raises on purpose (kept out of the test output).
const INTENDED_DROP: &str = "intended panic in an evicted message's Drop (policies test)";

/// Panics when its last copy is dropped, if asked to.
struct Fragile(bool);

impl Drop for Fragile {
    fn drop(&mut self) {
        if self.0 {
            panic!("{INTENDED_DROP}");
        }
    }
}

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

on_every_runtime! {
    async fn a_drop_oldest_queue_keeps_exactly_the_newest_capacity_messages_and_reports_the_rest() {
        let (tx, rx) = Relay::channel();
        let mut dropped = rx.subscribe::<Dropped>();
        let opts = SubscribeOptions::new().capacity(4).mode(DeliveryMode::DropOldest);
        let mut recent = rx.subscribe_with::<u32>(opts).unwrap();
        let mut ids = Vec::new();
        for n in 1..=10u32 {
            let receipt = within(WAIT, "a drop-oldest send", tx.send(n)).await.unwrap();
            // The new message is always queued; the one it evicts is reported below.
            assert_eq!((receipt.queued, receipt.missed), (1, 0));
            ids.push(receipt.msg_id);
        }
        let mut kept = Vec::new();
        while let Ok(n) = recent.try_recv() {
            kept.push(*n);
        }
        assert_eq!(kept, [7, 8, 9, 10]);
        assert_eq!(recent.dropped(), 6);
        let mut reported = Vec::new();
        while let Ok(d) = dropped.try_recv() {
            assert_eq!(d.subscriber_id, recent.id());
            assert_eq!(d.type_name, "u32");
            reported.push(d.msg_id);
        }
        assert_eq!(reported, ids[..6]);
        let stats = rx.stats_for::<u32>().unwrap();
        assert_eq!((stats.sent, stats.delivered, stats.dropped), (10, 10, 6));
        assert_eq!(rx.stats().dropped, 6);
    }

    async fn a_latest_subscriber_that_falls_behind_sees_only_the_most_recent_value() {
        let (tx, rx) = Relay::builder()
            .delivery_mode(DeliveryMode::Lossless)
            .mode_for::<u64>(DeliveryMode::Latest)
            .build()
            .unwrap();
        let mut latest = rx.subscribe::<u64>();
        // A slow consumer: it reads one value, then sleeps while many are sent.
        let reader = common::spawn(async move {
            let mut seen = Vec::new();
            while let Some(v) = latest.recv().await {
                seen.push(*v);
                common::sleep(Duration::from_millis(2)).await;
            }
            (seen, latest.dropped())
        });
        for n in 0..2_000u64 {
            // Never waits for the slow reader, though the relay is lossless.
            within(WAIT, "a conflated send", tx.send(n)).await.unwrap();
            if n % 256 == 0 {
                common::yield_now().await;
            }
        }
        drop(tx);
        let (seen, dropped) = within(WAIT, "the reader's end", reader).await;
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order: {seen:?}");
        assert_eq!(seen.last(), Some(&1_999), "the most recent value is never lost");
        assert!(seen.len() < 2_000, "a reader this slow cannot have seen every value");
        assert_eq!(seen.len() as u64 + dropped, 2_000, "each value seen or reported dropped");
    }

    async fn lossless_commands_and_conflated_readings_share_one_relay() {
        let (tx, rx) = Relay::builder()
            .channel_size(2)
            .delivery_mode(DeliveryMode::Lossless)
            .mode_for::<f64>(DeliveryMode::Latest)
            .build()
            .unwrap();
        let mut commands = rx.subscribe::<u32>();
        let mut readings = rx.subscribe::<f64>();
        for c in 1..=2u32 {
            within(WAIT, "a command with room", tx.send(c)).await.unwrap();
        }
        // The command queue is full: the next command waits for room...
        let mut third = pin!(tx.send(3u32));
        assert!((&mut third).now_or_never().is_none(), "a full lossless queue must wait");
        // ...while readings never wait.
        for r in [20.5, 20.7, 21.0] {
            within(WAIT, "a reading", tx.send(r)).await.unwrap();
        }
        assert_eq!(*readings.try_recv().unwrap(), 21.0);
        assert_eq!(readings.dropped(), 2);
        assert_eq!(*within(WAIT, "a command", commands.recv()).await.unwrap(), 1);
        within(WAIT, "the third command, once there is room", third).await.unwrap();
        assert_eq!(*within(WAIT, "a command", commands.recv()).await.unwrap(), 2);
        assert_eq!(*within(WAIT, "a command", commands.recv()).await.unwrap(), 3);
        assert_eq!(commands.dropped(), 0);
    }

    async fn a_subscription_s_own_mode_and_capacity_win_over_its_type_s_and_relay_s() {
        let (tx, rx) = Relay::builder()
            .channel_size(8)
            .mode_for::<u8>(DeliveryMode::Latest)
            .build()
            .unwrap();
        let mut by_type = rx.subscribe::<u8>();
        let opts = SubscribeOptions::new().capacity(3).mode(DeliveryMode::Broadcast);
        let mut own = rx.subscribe_with::<u8>(opts).unwrap();
        for n in 1..=5u8 {
            tx.send(n).await.unwrap();
        }
        // The type's mode: one message, the latest.
        assert_eq!(*by_type.try_recv().unwrap(), 5);
        assert!(by_type.try_recv().is_err());
        // Its own: broadcast with room for three, so the first three stay, the rest missed.
        let kept: Vec<u8> = std::iter::from_fn(|| own.try_recv().ok().map(|n| *n)).collect();
        assert_eq!(kept, [1, 2, 3]);
        assert_eq!((by_type.dropped(), own.dropped()), (4, 2));
    }

    async fn a_latest_queue_of_events_keeps_the_newest_event() {
        let (tx, rx) = Relay::builder().channel_size(1).build().unwrap();
        let mut last_drop = rx
            .subscribe_with::<Dropped>(SubscribeOptions::new().mode(DeliveryMode::Latest))
            .unwrap();
        let _full = rx.subscribe::<u8>(); // never read: every send after the first misses
        let mut missed = Vec::new();
        for n in 0..5u8 {
            let receipt = tx.send(n).await.unwrap();
            if receipt.missed == 1 {
                missed.push(receipt.msg_id);
            }
        }
        assert_eq!(missed.len(), 4);
        // Events never wait, but a latest queue still makes room for the newest one.
        assert_eq!(last_drop.try_recv().unwrap().msg_id, *missed.last().unwrap());
        assert_eq!(last_drop.dropped(), 3);
    }

    async fn a_panic_in_the_drop_of_an_evicted_message_is_caught_and_reported() {
        common::quiet_intended_panics(INTENDED_DROP);
        let (tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let mut latest = rx
            .subscribe_with::<Fragile>(SubscribeOptions::new().mode(DeliveryMode::Latest))
            .unwrap();
        // The queue holds the only copy of the first message; the second evicts it.
        let first = tx.send(Fragile(true)).await.unwrap();
        tx.send(Fragile(false)).await.unwrap();
        let e = within(WAIT, "the report of the panicking drop", errors.recv()).await.unwrap();
        assert!(e.is_panic() && e.error.to_string().contains("while dropping"), "{e}");
        assert_eq!((e.kind, e.msg_id), (HandlerKind::Subscription, first.msg_id));
        assert!(!latest.try_recv().unwrap().0, "the newest message is the one kept");
        assert_eq!(latest.dropped(), 1);
    }

    async fn bad_subscription_options_are_refused_with_a_clear_error() {
        let (_tx, rx) = Relay::channel();
        let zero = rx.subscribe_with::<u8>(SubscribeOptions::new().capacity(0));
        assert_eq!(zero.unwrap_err(), BuildError::ZeroChannelSize);
        let huge = rx.subscribe_with::<u8>(SubscribeOptions::new().capacity(usize::MAX));
        assert_eq!(
            huge.unwrap_err(),
            BuildError::ChannelSizeTooLarge { size: usize::MAX, max: MAX_CHANNEL_SIZE }
        );
        // A latest queue ignores the capacity it was given: it holds one message.
        let opts = SubscribeOptions::new().capacity(100).mode(DeliveryMode::Latest);
        assert!(rx.subscribe_with::<u8>(opts).is_ok());
    }

    async fn a_tracked_send_evicted_from_a_drop_oldest_handler_fails_with_queue_full() {
        let (tx, rx) = Relay::builder()
            .channel_size(1)
            .mode_for::<u8>(DeliveryMode::DropOldest)
            .build()
            .unwrap();
        let gate = Gate::new();
        let g = gate.clone();
        let (started_tx, started) = async_channel::unbounded::<u8>();
        rx.sink_async::<u8>(move |n| {
            let (g, started_tx, n) = (g.clone(), started_tx.clone(), *n);
            async move {
                let _ = started_tx.send(n).await;
                g.wait().await
            }
        });
        // 1 is taken by the handler, which then waits at the gate; 2 is queued.
        let mut first = pin!(tx.send(1u8));
        assert!((&mut first).now_or_never().is_none());
        assert_eq!(within(WAIT, "the handler took 1", started.recv()).await, Ok(1));
        let mut second = pin!(tx.send(2u8));
        assert!((&mut second).now_or_never().is_none());
        // 3 evicts 2: 2's send fails, saying its message did not fit.
        let mut third = pin!(tx.send(3u8));
        assert!((&mut third).now_or_never().is_none());
        match within(WAIT, "the evicted send", second).await {
            Err(SendError::Downstream(e)) => assert!(e.downcast_ref::<QueueFull>().is_some(), "{e}"),
            other => panic!("expected QueueFull, got {other:?}"),
        }
        gate.open();
        within(WAIT, "the first send", first).await.unwrap();
        within(WAIT, "the third send", third).await.unwrap();
        assert_eq!(rx.stats().dropped, 1);
    }
}
