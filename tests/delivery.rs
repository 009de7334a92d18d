//! Delivery: typed fan-out and routing by type, broadcast mode (drop and report), and
//! lossless mode (back-pressure).

mod common;

use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{lossless, timeout, within};
use futures::StreamExt;
use pipedream_rs::{
    DeliveryMode, Dropped, HandlerKind, QueueFull, Relay, RelayError, RelaySender, SendError,
    Subscription, TryRecvError, Unrouted,
};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long a send must stay pending to count as "waiting".
const STAYS_PENDING: Duration = Duration::from_millis(100);

on_every_runtime! {
    // ----- receipts and unrouted messages ------------------------------------------------

    async fn a_receipt_counts_queued_handled_and_missed_in_broadcast_mode() {
        let (tx, rx) = Relay::channel_with_size(1);
        let _stalled = rx.subscribe::<u32>(); // never reads
        let mut reading = rx.subscribe::<u32>();
        rx.sink::<u32>(|_| ());
        let first = tx.send(1u32).await.unwrap();
        assert_eq!((first.queued, first.handled, first.missed), (3, 1, 0));
        assert_eq!(*within(WAIT, "the first message", reading.recv()).await.unwrap(), 1);
        let second = tx.send(2u32).await.unwrap();
        // The stalled queue is full: that subscriber missed it, the others got it.
        assert_eq!((second.queued, second.handled, second.missed), (2, 1, 1));
        assert_eq!(second.msg_id, first.msg_id + 1);
        assert!(!second.is_unrouted());
    }

    async fn a_lossless_receipt_counts_every_subscriber_queued() {
        let (tx, rx) = lossless(4);
        let _a = rx.subscribe::<u8>();
        let _all = rx.subscribe_all();
        rx.tap::<u8>(|_| ());
        let receipt = tx.send(7u8).await.unwrap();
        assert_eq!((receipt.queued, receipt.handled, receipt.missed), (3, 1, 0));
    }

    async fn a_message_nobody_subscribes_to_is_ok_counted_and_reported_with_its_type() {
        let (tx, rx) = Relay::channel();
        let mut unrouted = rx.subscribe::<Unrouted>();
        let _names = rx.subscribe::<String>();
        let _ids = rx.subscribe::<u64>();
        // The two classic slips: a &str for a String, an i32 literal for a u64.
        let a = tx.send("ada").await.unwrap();
        let b = tx.send(5).await.unwrap();
        assert!(a.is_unrouted() && b.is_unrouted(), "{a:?} {b:?}");
        assert_eq!((a.queued, a.handled, a.missed), (0, 0, 0));
        let first = within(WAIT, "the first Unrouted event", unrouted.recv()).await.unwrap();
        let second = within(WAIT, "the second Unrouted event", unrouted.recv()).await.unwrap();
        assert_eq!((first.relay_id, first.msg_id, first.type_name), (tx.id(), a.msg_id, "&str"));
        assert_eq!((second.msg_id, second.type_name), (b.msg_id, "i32"));
        let stats = rx.stats();
        assert_eq!(stats.unrouted, 2);
        // The properly typed sends are routed, and not counted.
        assert!(!tx.send(String::from("ada")).await.unwrap().is_unrouted());
        assert!(!tx.send(5u64).await.unwrap().is_unrouted());
        assert_eq!(rx.stats().unrouted, 2);
    }

    async fn reject_unrouted_fails_the_send_hands_the_value_back_and_still_reports_it() {
        let (tx, rx) = Relay::builder().reject_unrouted(true).build().unwrap();
        let mut unrouted = rx.subscribe::<Unrouted>();
        let _ids = rx.subscribe::<u64>();
        assert_eq!(tx.send(5).await, Err(SendError::Unrouted { type_name: "i32" }));
        let back = tx.send_or_return(String::from("kept")).err().unwrap().into_inner();
        assert_eq!(back, "kept");
        assert!(tx.send(5u64).await.is_ok());
        assert_eq!(rx.stats().unrouted, 2);
        let event = within(WAIT, "the Unrouted event", unrouted.recv()).await.unwrap();
        assert_eq!(event.type_name, "i32");
        // A wildcard subscriber routes every type.
        let _all = rx.subscribe_all();
        assert!(tx.send(5).await.is_ok());
    }

    async fn no_unrouted_report_is_made_about_the_relays_own_events() {
        let (tx, rx) = Relay::channel_with_size(1);
        // Only an `Unrouted` subscriber: the reports about reports must not loop.
        let mut unrouted = rx.subscribe::<Unrouted>();
        let _stalled = rx.subscribe::<u8>();
        tx.send(1u8).await.unwrap();
        tx.send(2u8).await.unwrap(); // a Dropped event nobody subscribes to: not made
        tx.send(3u16).await.unwrap(); // unrouted: reported once
        let event = within(WAIT, "the Unrouted event", unrouted.recv()).await.unwrap();
        assert_eq!(event.type_name, "u16");
        assert_eq!(unrouted.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(rx.stats().unrouted, 1);
    }

    async fn a_forwarder_passing_into_an_unwatched_child_is_never_refused() {
        let (tx, rx) = Relay::builder()
            .reject_unrouted(true)
            .delivery_mode(DeliveryMode::Broadcast)
            .build()
            .unwrap();
        let child = rx.filter::<u8>(|_| true); // nobody subscribes to the child
        let receipt = tx.send(1u8).await.unwrap(); // the filter itself receives it
        assert_eq!((receipt.queued, receipt.handled), (1, 1));
        assert_eq!(child.stats().unrouted, 1);
    }

    async fn per_type_figures_count_each_type_apart() {
        let (tx, rx) = Relay::channel_with_size(1);
        let mut ints = rx.subscribe::<u32>();
        let _stalled = rx.subscribe::<u32>(); // never reads: its second u32 is dropped
        rx.sink::<String>(|_| ());
        tx.send(1u32).await.unwrap();
        assert_eq!(ints.len(), 1);
        assert!(!ints.is_empty());
        ints.try_recv().unwrap();
        tx.send(2u32).await.unwrap();
        tx.send(String::from("a")).await.unwrap();
        let u32s = rx.stats_for::<u32>().unwrap();
        assert_eq!(
            (u32s.type_name, u32s.sent, u32s.delivered, u32s.dropped, u32s.unrouted),
            ("u32", 2, 3, 1, 0)
        );
        assert_eq!((u32s.subscribers, u32s.tracked_handlers), (2, 0));
        let strings = rx.stats_for::<String>().unwrap();
        assert_eq!((strings.sent, strings.subscribers, strings.tracked_handlers), (1, 1, 1));
        assert!(rx.stats_for::<u8>().is_none());
        // The relay's figures are the sums over its types.
        let all = rx.stats();
        assert_eq!((all.sent, all.delivered, all.dropped, all.subscribers), (3, 4, 1, 3));
    }

    // ----- typed fan-out and routing ---------------------------------------------------

    async fn every_string_subscriber_gets_every_string_and_the_i32_subscriber_only_i32s() {
        let (tx, rx) = Relay::channel();
        let strings: Vec<_> = (0..3).map(|_| rx.subscribe::<String>()).collect();
        let ints = rx.subscribe::<i32>();
        for i in 0..5 {
            tx.send(format!("s{i}")).await.unwrap();
            tx.send(i).await.unwrap();
        }
        drop(tx);

        let expected: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        for sub in strings {
            let got: Vec<String> =
                within(WAIT, "draining a String subscriber", sub.map(|s| (*s).clone()).collect())
                    .await;
            assert_eq!(got, expected);
        }
        let got: Vec<i32> =
            within(WAIT, "draining the i32 subscriber", ints.map(|n| *n).collect()).await;
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    async fn string_handler_is_never_handed_an_i32() {
        let (tx, rx) = Relay::channel();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s = seen.clone();
        rx.sink::<String>(move |text| s.lock().unwrap().push(text.clone()));
        let idle_strings = rx.subscribe::<String>();
        let mut ints = rx.subscribe::<i32>();

        for i in 0..100 {
            tx.send(i).await.unwrap();
        }
        // One copy per i32: only the i32 subscriber's queue ever received them.
        let stats = rx.stats();
        assert_eq!((stats.sent, stats.delivered, stats.dropped), (100, 100, 0));
        assert_eq!((idle_strings.len(), idle_strings.dropped()), (0, 0));
        assert_eq!(ints.len(), 100);

        // The sink handles its messages in order, so if an i32 had reached it, it would
        // show up before this String. The String is the first thing it ever sees.
        tx.send(String::from("first")).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), ["first"]);
        assert_eq!(rx.stats().delivered, 102); // the sink and the idle String subscriber
        assert_eq!(*ints.recv().await.unwrap(), 0);
    }

    async fn wildcard_subscriber_gets_every_type_in_send_order() {
        let (tx, rx) = Relay::channel();
        let mut all = rx.subscribe_all();
        tx.send(1u8).await.unwrap();
        tx.send(String::from("two")).await.unwrap();
        tx.send(3i64).await.unwrap();
        let mut got = Vec::new();
        while let Ok(env) = all.try_recv() {
            got.push((env.msg_id(), env.type_name(), env.origin()));
        }
        assert_eq!(
            got,
            [(1, "u8", tx.id()), (2, "alloc::string::String", tx.id()), (3, "i64", tx.id())]
        );
    }

    // ----- broadcast mode --------------------------------------------------------------

    async fn broadcast_send_never_waits_for_a_stalled_subscriber_which_misses_and_reports_each() {
        const SENT: u32 = 20;
        let (tx, rx) = Relay::channel_with_size(4);
        let mut stalled = rx.subscribe::<u32>(); // reads nothing until the end
        let mut fast = rx.subscribe::<u32>();
        let mut drops = rx.subscribe::<Dropped>();
        let mut all = rx.subscribe_all(); // learns each u32's message id

        let mut ids = Vec::new();
        let mut events = Vec::new();
        within(WAIT, "broadcast sends past a full queue", async {
            for i in 0..SENT {
                tx.send(i).await.unwrap();
                assert_eq!(*fast.recv().await.unwrap(), i);
                while let Ok(env) = all.try_recv() {
                    if env.is::<u32>() {
                        ids.push(env.msg_id());
                    }
                }
                while let Ok(dropped) = drops.try_recv() {
                    events.push((*dropped).clone());
                }
            }
        })
        .await;

        // The stalled queue kept the first four; each of the other 16 is a counted miss.
        let missed = u64::from(SENT - 4);
        assert_eq!(stalled.dropped(), missed);
        assert_eq!(rx.stats().dropped, missed);
        assert_eq!(fast.dropped(), 0);
        let expected: Vec<_> = ids[4..]
            .iter()
            .map(|&msg_id| (tx.id(), msg_id, "u32", stalled.id()))
            .collect();
        let got: Vec<_> = events
            .iter()
            .map(|d| (d.relay_id, d.msg_id, d.type_name, d.subscriber_id))
            .collect();
        assert_eq!(got, expected);
        for i in 0..4 {
            assert_eq!(*stalled.try_recv().unwrap(), i);
        }
        assert_eq!(stalled.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    async fn capacity_stays_exact_while_room_comes_back_in_batches() {
        // Capacity 1,024: the subscriber hands room back 16 taken messages at a time
        // (capacity / 64); a sender that finds the queue full takes back what is held.
        const CAP: u32 = 1_024;
        const HELD: u32 = 15; // one short of a batch
        let (tx, rx) = Relay::channel_with_size(CAP as usize);
        let mut sub = rx.subscribe::<u32>();
        let mut sent = 0u32;
        let mut fill = |until: u32| {
            let tx = &tx;
            let from = sent;
            sent = until;
            async move {
                for i in from..until {
                    tx.send(i).await.unwrap();
                }
            }
        };
        within(WAIT, "filling the queue", fill(CAP)).await;
        assert_eq!(sub.dropped(), 0);

        // Mid-batch: 15 messages taken, their room not yet handed back. Exactly 15 more
        // fit, and the next one is the first refused.
        for i in 0..HELD {
            assert_eq!(*sub.try_recv().unwrap(), i);
        }
        within(WAIT, "sends into the held-back room", fill(CAP + HELD)).await;
        assert_eq!(sub.dropped(), 0);
        within(WAIT, "a send into a really full queue", fill(CAP + HELD + 1)).await;
        assert_eq!(sub.dropped(), 1);
        assert_eq!(sub.len(), CAP as usize);

        let mut got = Vec::new();
        while let Ok(v) = sub.try_recv() {
            got.push(*v);
        }
        let expected: Vec<u32> = (HELD..CAP + HELD).collect();
        assert_eq!(got, expected);
        within(WAIT, "refilling the drained queue", fill(2 * CAP + HELD + 1)).await;
        assert_eq!(sub.dropped(), 1);
        assert_eq!(sub.len(), CAP as usize);
        assert_eq!(rx.stats().dropped, 1);
    }

    async fn a_consumer_sending_back_into_its_own_full_lossless_queue_never_waits_for_itself() {
        // Room comes back 2 taken messages at a time at capacity 128. A task that takes one
        // message and sends one to the same full queue must find the room it just freed,
        // not wait for a batch that only it could complete.
        let (tx, rx) = lossless(128);
        let mut sub = rx.subscribe::<u32>();
        send_all(&tx, 0..128).await;
        within(WAIT, "take one, send one, 300 times", async {
            for _ in 0..300 {
                let n = *sub.recv().await.unwrap();
                tx.send(n + 1_000).await.unwrap();
            }
        })
        .await;
        // Nothing lost or reordered: the queue holds what a plain FIFO would.
        let mut model: std::collections::VecDeque<u32> = (0..128).collect();
        for _ in 0..300 {
            let n = model.pop_front().unwrap();
            model.push_back(n + 1_000);
        }
        assert_eq!(take_queued(&mut sub), Vec::from(model));
    }

    async fn a_sender_already_waiting_gets_the_room_of_a_single_take() {
        // Room comes back 2 taken messages at a time at capacity 128. A sender already
        // waiting on the full queue must get the room of the very next message taken, even
        // when the consumer takes no more for now. A consumer whose next step waits for
        // that send (a request answered through another channel, say) would otherwise
        // deadlock with it over one held-back slot.
        let (tx, rx) = lossless(128);
        let mut sub = rx.subscribe::<u32>();
        send_all(&tx, 0..128).await;
        // The first poll reaches the queue's lossless wait, which registers the sender as
        // waiting before it returns `Pending`. (The loom model
        // `loom_a_waiting_sender_gets_the_room_of_one_take` checks the queue itself, without
        // relying on how a send is polled.)
        let mut waiting = Box::pin(tx.send(128u32));
        assert!(futures::poll!(waiting.as_mut()).is_pending(), "the queue is full");
        assert_eq!(*sub.try_recv().unwrap(), 0);
        within(WAIT, "the waiting send, after one take", waiting).await.unwrap();
        assert_eq!(take_queued(&mut sub), (1..=128).collect::<Vec<u32>>());
    }

    async fn broadcast_send_fails_with_queue_full_when_a_tracked_handlers_queue_is_full() {
        let (tx, rx) = Relay::channel_with_size(4);
        let mut handler = rx.subscribe_tracked::<u32>();
        let mut drops = rx.subscribe::<Dropped>();
        let mut errors = rx.subscribe::<RelayError>();

        // Four sends queue their message and wait for the handler, which completes none yet.
        let mut waiting: Vec<_> = (1..=4u32).map(|i| Box::pin(tx.send(i))).collect();
        for send in &mut waiting {
            assert!(futures::poll!(send.as_mut()).is_pending());
        }
        // The fifth does not fit: dropped for the handler, and the send is told.
        let err = within(WAIT, "send into a full tracked queue", tx.send(5u32))
            .await
            .unwrap_err();
        let SendError::Downstream(e) = err else { panic!("expected Downstream, got {err:?}") };
        assert_eq!(
            (e.kind, e.type_name, e.msg_id, e.relay_id),
            (HandlerKind::Tracked, "u32", 5, tx.id())
        );
        assert!(e.downcast_ref::<QueueFull>().is_some(), "{e}");
        let dropped = drops.try_recv().unwrap();
        assert_eq!((dropped.msg_id, dropped.subscriber_id), (5, handler.id()));
        assert_eq!(errors.try_recv().unwrap().msg_id, 5);
        assert_eq!(rx.stats().dropped, 1);

        // The queued four are still handled and their senders released; 5 never arrives.
        for i in 1..=4 {
            let msg = within(WAIT, "tracked recv", handler.recv()).await.unwrap();
            assert_eq!(*msg, i);
            msg.complete();
        }
        for send in waiting {
            within(WAIT, "a queued send after completion", send).await.unwrap();
        }
        assert_eq!(handler.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    // ----- lossless mode ---------------------------------------------------------------

    async fn lossless_delivers_every_message_in_order_to_every_subscriber_despite_a_slow_one() {
        const N: u32 = 10_000;
        let (tx, rx) = lossless(4);
        let mut slow = rx.subscribe::<u32>();
        let mut fast = rx.subscribe::<u32>();
        let handled = Arc::new(Mutex::new(Vec::with_capacity(N as usize)));
        let h = handled.clone();
        rx.sink::<u32>(move |n| h.lock().unwrap().push(*n));

        let slow_reader = common::spawn(async move {
            let mut got = Vec::with_capacity(N as usize);
            while let Some(n) = slow.recv().await {
                got.push(*n);
                if got.len() % 500 == 0 {
                    common::sleep(Duration::from_millis(2)).await;
                }
            }
            got
        });
        let fast_reader = common::spawn(async move {
            let mut got = Vec::with_capacity(N as usize);
            while let Some(n) = fast.recv().await {
                got.push(*n);
            }
            got
        });

        within(WAIT, "10,000 lossless sends", async {
            for i in 0..N {
                tx.send(i).await.unwrap();
            }
        })
        .await;
        let stats = rx.stats();
        drop(tx);

        let expected: Vec<u32> = (0..N).collect();
        assert_eq!(within(WAIT, "slow reader", slow_reader).await, expected);
        assert_eq!(within(WAIT, "fast reader", fast_reader).await, expected);
        assert_eq!(*handled.lock().unwrap(), expected);
        assert_eq!((stats.sent, stats.delivered, stats.dropped), (N as u64, 3 * N as u64, 0));
    }

    async fn lossless_send_waits_while_queue_full() {
        let (tx, rx) = lossless(4);
        let mut sub = rx.subscribe::<u32>();
        for i in 1..=4u32 {
            within(WAIT, "a send while there is room", tx.send(i)).await.unwrap();
        }
        let mut fifth = pin!(tx.send(5u32));
        assert!(
            timeout(STAYS_PENDING, fifth.as_mut()).await.is_none(),
            "a lossless send must wait while a queue is full"
        );
        assert_eq!(sub.len(), 4);

        assert_eq!(*within(WAIT, "recv", sub.recv()).await.unwrap(), 1);
        within(WAIT, "the waiting send, once the subscriber read one", fifth).await.unwrap();
        for i in 2..=5 {
            assert_eq!(*sub.try_recv().unwrap(), i);
        }
        assert_eq!((sub.dropped(), rx.stats().dropped), (0, 0));
    }

    async fn lossless_send_waits_for_the_full_queue_even_when_others_have_room() {
        let (tx, rx) = lossless(2);
        let mut roomy = rx.subscribe::<u32>();
        let mut full = rx.subscribe::<u32>();
        for i in 1..=2u32 {
            within(WAIT, "a send while there is room", tx.send(i)).await.unwrap();
        }
        assert_eq!(*roomy.recv().await.unwrap(), 1);
        assert_eq!(*roomy.recv().await.unwrap(), 2);

        let mut third = pin!(tx.send(3u32));
        assert!(timeout(STAYS_PENDING, third.as_mut()).await.is_none());
        assert_eq!(*full.recv().await.unwrap(), 1);
        within(WAIT, "the waiting send", third).await.unwrap();
        assert_eq!(*roomy.try_recv().unwrap(), 3);
        assert_eq!((*full.try_recv().unwrap(), *full.try_recv().unwrap()), (2, 3));
    }

    async fn lossless_send_waiting_for_room_is_released_when_that_subscriber_goes_away() {
        let (tx, rx) = lossless(2);
        let full = rx.subscribe::<u32>();
        let mut reader = rx.subscribe::<u32>();
        for i in 1..=2u32 {
            within(WAIT, "a send while there is room", tx.send(i)).await.unwrap();
        }
        assert_eq!((*reader.recv().await.unwrap(), *reader.recv().await.unwrap()), (1, 2));
        let mut third = pin!(tx.send(3u32));
        assert!(timeout(STAYS_PENDING, third.as_mut()).await.is_none());

        drop(full);
        within(WAIT, "the send waiting on a dropped subscriber", third).await.unwrap();
        assert_eq!(*reader.try_recv().unwrap(), 3);
        assert_eq!(rx.stats().subscribers, 1);
    }

    async fn handler_processes_one_message_at_a_time_under_concurrent_sends() {
        let (tx, rx) = lossless(8);
        let running = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (r, o) = (running.clone(), order.clone());
        rx.sink_async::<u32>(move |n: Arc<u32>| {
            let (r, o) = (r.clone(), o.clone());
            async move {
                assert_eq!(r.fetch_add(1, Ordering::SeqCst), 0, "two messages at once");
                common::sleep(Duration::from_micros(200)).await;
                o.lock().unwrap().push(*n);
                r.fetch_sub(1, Ordering::SeqCst);
            }
        });
        // Concurrent senders: the handler still takes the messages one by one.
        let sends = futures::future::join_all((0..50u32).map(|i| tx.send(i)));
        for result in within(WAIT, "50 concurrent sends", sends).await {
            result.unwrap();
        }
        let mut got = order.lock().unwrap().clone();
        assert_eq!(got.len(), 50);
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }
}

/// Sends each of `values` in turn, bounded.
async fn send_all(tx: &RelaySender, values: std::ops::Range<u32>) {
    within(WAIT, "sending", async {
        for i in values {
            tx.send(i).await.unwrap();
        }
    })
    .await;
}

/// Takes what is queued now, without waiting.
fn take_queued(sub: &mut Subscription<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    while let Ok(v) = sub.try_recv() {
        got.push(*v);
    }
    got
}
