//! Batch sends (`send_all`): one snapshot and, per queue, one reservation for the run that
//! fits, with the semantics of single sends for each message (SEMANTICS.md §2).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{lossless, within};
use futures::FutureExt;
use pipedream_rs::{Dropped, Relay, SendError, Unrouted};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

on_every_runtime! {
    /// Every subscriber of the snapshot (typed and wildcard) gets every message of the
    /// batch, in batch order; the ids are consecutive; the receipt sums the deliveries.
    async fn a_batch_reaches_every_subscriber_in_order_with_consecutive_ids() {
        let (tx, rx) = Relay::channel();
        let (mut a, mut b) = (rx.subscribe::<u32>(), rx.subscribe::<u32>());
        let mut all = rx.subscribe_all();
        let receipt = within(WAIT, "send_all", tx.send_all(0..1_000u32)).await.unwrap();
        assert_eq!((receipt.messages, receipt.queued, receipt.missed), (1_000, 3_000, 0));
        let mut got = Vec::new();
        assert_eq!(a.try_recv_many(&mut got, 2_000), 1_000);
        assert_eq!(b.try_recv_many(&mut got, 2_000), 1_000);
        let want: Vec<u32> = (0..1_000).chain(0..1_000).collect();
        assert_eq!(got.iter().map(|n| **n).collect::<Vec<_>>(), want);
        let ids: Vec<u64> = std::iter::from_fn(|| all.try_recv().ok().map(|e| e.msg_id())).collect();
        let first = receipt.first_msg_id;
        assert_eq!(ids, (first..first + 1_000).collect::<Vec<_>>());
        assert_eq!(rx.stats().sent, 1_000);
        assert_eq!(rx.stats().delivered, 3_000);
    }

    /// Lossless, queue of 4, a batch of 200 and a slow reader: the batch waits for room
    /// and loses nothing, in order; the queue never holds more than its capacity.
    async fn a_lossless_batch_waits_for_room_and_loses_nothing() {
        let (tx, rx) = lossless(4);
        let mut sub = rx.subscribe::<u32>();
        let reader = common::spawn(async move {
            let (mut got, mut most) = (Vec::new(), 0);
            loop {
                most = most.max(sub.len());
                match sub.recv().await {
                    Some(n) => got.push(*n),
                    None => return (got, most),
                }
                if got.len() % 16 == 0 {
                    common::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let receipt = within(WAIT, "the batch", tx.send_all(0..200u32)).await.unwrap();
        assert_eq!(receipt.queued, 200);
        drop(tx);
        let (got, most) = within(WAIT, "the reader", reader).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert!(most <= 4, "the queue held {most} messages, over its capacity of 4");
    }

    /// Broadcast, queues of 16, nobody reading: the queue keeps the batch's first 16, and
    /// each of the other 14 is missed, counted and reported, as single sends would be.
    async fn a_broadcast_batch_over_a_full_queue_misses_and_reports_each() {
        let (tx, rx) = Relay::builder().channel_size(16).build().unwrap();
        let mut dropped = rx.subscribe::<Dropped>();
        let mut sub = rx.subscribe::<u32>();
        let receipt = within(WAIT, "send_all", tx.send_all(0..30u32)).await.unwrap();
        assert_eq!((receipt.queued, receipt.missed), (16, 14));
        let mut got = Vec::new();
        assert_eq!(sub.try_recv_many(&mut got, 64), 16);
        assert_eq!(got.iter().map(|n| **n).collect::<Vec<_>>(), (0..16).collect::<Vec<_>>());
        let mut reports = Vec::new();
        assert_eq!(dropped.try_recv_many(&mut reports, 64), 14);
        let missed_ids: Vec<u64> = reports.iter().map(|d| d.msg_id).collect();
        let first = receipt.first_msg_id;
        assert_eq!(missed_ids, (first + 16..first + 30).collect::<Vec<_>>());
        assert_eq!((sub.dropped(), rx.stats().dropped), (14, 14));
    }

    /// With a tracked handler the batch goes one message at a time and stops at the
    /// first failure: what was sent before it is reported, nothing after it is sent.
    async fn a_tracked_batch_stops_at_the_first_failure_and_says_how_far_it_got() {
        let (tx, rx) = Relay::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let seen = seen.clone();
            rx.sink::<u32>(move |n| {
                seen.lock().unwrap().push(*n);
                if *n == 3 { Err("three") } else { Ok(()) }
            });
        }
        let stopped = within(WAIT, "send_all", tx.send_all(1..=5u32)).await.unwrap_err();
        assert_eq!(stopped.sent, 2);
        assert_eq!((stopped.receipt.messages, stopped.receipt.handled), (2, 2));
        match &stopped.error {
            SendError::Downstream(e) => assert_eq!(e.error.to_string(), "three"),
            other => panic!("expected the handler's error, got {other:?}"),
        }
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        let chain = std::error::Error::source(&stopped).map(ToString::to_string);
        assert_eq!(chain, Some(stopped.error.to_string()));
    }

    /// Refused at the call: on a closed or gone relay, and with `reject_unrouted` when
    /// nobody subscribes (each message still counted and reported as unrouted).
    async fn a_refused_batch_delivers_nothing_and_says_why() {
        let (tx, rx) = Relay::builder().reject_unrouted(true).build().unwrap();
        let mut unrouted = rx.subscribe::<Unrouted>();
        let stopped = within(WAIT, "send_all", tx.send_all([1u8, 2, 3])).await.unwrap_err();
        assert_eq!(stopped.sent, 0);
        assert_eq!(stopped.error, SendError::Unrouted { type_name: "u8" });
        let mut reports = Vec::new();
        assert_eq!(unrouted.try_recv_many(&mut reports, 8), 3);
        assert_eq!(rx.stats().unrouted, 3);
        let weak = tx.weak();
        tx.close();
        let closed = within(WAIT, "send_all", weak.send_all([1u8])).await.unwrap_err();
        assert_eq!((closed.sent, closed.error), (0, SendError::Closed));
        drop(tx);
        drop(rx);
        drop(unrouted);
        let gone = within(WAIT, "send_all", weak.send_all([1u8])).await.unwrap_err();
        assert_eq!(gone.error, SendError::Closed);
    }

    /// Nobody subscribed (default): `Ok`, each message counted and reported unrouted. An
    /// empty batch does nothing at all.
    async fn an_unrouted_batch_is_ok_and_reported_and_an_empty_one_does_nothing() {
        let (tx, rx) = Relay::channel();
        let mut unrouted = rx.subscribe::<Unrouted>();
        let receipt = within(WAIT, "send_all", tx.send_all([1u16, 2])).await.unwrap();
        assert_eq!((receipt.messages, receipt.queued), (2, 0));
        let mut reports = Vec::new();
        assert_eq!(unrouted.try_recv_many(&mut reports, 8), 2);
        assert!(reports.iter().all(|u| u.type_name == "u16"));
        let sent = rx.stats().sent;
        let empty = within(WAIT, "send_all", tx.send_all(Vec::<u16>::new())).await.unwrap();
        assert_eq!(empty.messages, 0);
        assert_eq!(rx.stats().sent, sent);
    }

    /// The snapshot is taken at the call: a subscriber made after `send_all` was called,
    /// before it is polled, gets none of the batch.
    async fn a_batch_snapshot_is_taken_at_the_call() {
        let (tx, rx) = Relay::channel();
        let early = rx.subscribe::<u32>();
        let batch = tx.send_all(0..10u32);
        let mut late = rx.subscribe::<u32>();
        within(WAIT, "send_all", batch).await.unwrap();
        assert_eq!(early.len(), 10);
        assert!(late.try_recv().is_err(), "registered after the call");
    }

    /// A lossless batch dropped while it waits for room: what it queued stays queued and
    /// counted, the rest is not sent, and the capacity is exact afterwards.
    async fn a_cancelled_lossless_batch_leaves_the_capacity_exact() {
        let (tx, rx) = lossless(2);
        let mut sub = rx.subscribe::<u32>();
        assert!(tx.send_all(0..10u32).now_or_never().is_none(), "it waits for room");
        assert_eq!(sub.len(), 2);
        assert_eq!(rx.stats().delivered, 2);
        let mut got = Vec::new();
        assert_eq!(sub.try_recv_many(&mut got, 8), 2);
        assert_eq!(got.iter().map(|n| **n).collect::<Vec<_>>(), [0, 1]);
        // Room for exactly two again.
        assert!(tx.try_send(10u32).is_ok() && tx.try_send(11u32).is_ok());
        assert!(tx.try_send(12u32).is_err());
    }

    /// A reader that takes from two of the batch's lossless queues in lockstep (one from
    /// `a`, then one from `b`) is never starved: what does not fit goes message by
    /// message to every queue, as single sends would, not queue by queue.
    async fn a_reader_of_two_queues_in_lockstep_is_not_starved_by_a_batch() {
        let (tx, rx) = lossless(4);
        let (mut a, mut b) = (rx.subscribe::<u32>(), rx.subscribe::<u32>());
        let reader = common::spawn(async move {
            let mut pairs = Vec::new();
            for _ in 0..50 {
                let x = a.recv().await.map(|n| *n);
                let y = b.recv().await.map(|n| *n);
                pairs.push((x, y));
            }
            pairs
        });
        let receipt = within(WAIT, "the batch", tx.send_all(0..50u32)).await.unwrap();
        assert_eq!(receipt.queued, 100);
        let pairs = within(WAIT, "the lockstep reader", reader).await;
        let want: Vec<_> = (0..50).map(|n| (Some(n), Some(n))).collect();
        assert_eq!(pairs, want);
    }

    /// With tracked handlers, the first message's snapshot is taken at the call: a
    /// subscriber made after the call, before the first poll, does not get it.
    async fn a_tracked_batch_takes_its_first_snapshot_at_the_call() {
        let (tx, rx) = Relay::channel();
        rx.sink::<u32>(|_| ());
        let batch = tx.send_all([7u32]);
        let mut late = rx.subscribe::<u32>();
        let receipt = within(WAIT, "send_all", batch).await.unwrap();
        assert_eq!((receipt.messages, receipt.handled), (1, 1));
        assert!(late.try_recv().is_err(), "registered after the call");
    }

    /// Two batches sent at once into one lossless queue, read as they come: every message
    /// arrives once, and each batch's messages keep their order.
    async fn concurrent_batches_each_keep_their_order() {
        let (tx, rx) = lossless(8);
        let mut sub = rx.subscribe::<(u8, u32)>();
        let (w1, w2) = (tx.weak(), tx.weak());
        let one = common::spawn(async move { w1.send_all((0..500u32).map(|n| (1u8, n))).await.map(|r| r.queued) });
        let two = common::spawn(async move { w2.send_all((0..500u32).map(|n| (2u8, n))).await.map(|r| r.queued) });
        let mut got = Vec::new();
        while got.len() < 1_000 {
            within(WAIT, "the batches", sub.recv_many(&mut got, 64)).await;
        }
        assert_eq!(within(WAIT, "batch one", one).await, Ok(500));
        assert_eq!(within(WAIT, "batch two", two).await, Ok(500));
        for source in [1u8, 2] {
            let seq: Vec<u32> = got.iter().filter(|m| m.0 == source).map(|m| m.1).collect();
            assert_eq!(seq, (0..500).collect::<Vec<_>>(), "batch {source} out of order");
        }
    }
}
