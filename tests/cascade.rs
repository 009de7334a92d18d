//! Cascade close: a derived relay closes after its parent closes and its forwarder has
//! drained; a derived relay of a closed relay is born closed; a forwarder that panics
//! reports it and closes its child, so nobody waits forever.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{downstream, drain, sleep, wait_until, within};
use pipedream_rs::{
    HandlerGone, HandlerKind, PanicError, Relay, RelayError, RelayReceiver, TryRecvError,
};

const BOUND: Duration = Duration::from_secs(10);

/// A forwarder's panic as the parent sees it.
fn assert_forwarder_panic(e: &RelayError, parent: &RelayReceiver, msg_id: u64, message: &str) {
    assert_eq!(e.kind, HandlerKind::Forwarder);
    assert!(e.is_panic(), "{e}");
    assert_eq!(
        e.relay_id,
        parent.id(),
        "reported on the parent, where the forwarder reads"
    );
    assert_eq!(e.msg_id, msg_id);
    assert_eq!(e.type_name, "u32");
    assert_eq!(e.downcast_ref::<PanicError>().unwrap().message, message);
}

// ----- cascade close ---------------------------------------------------------------------

on_every_runtime! {
    async fn a_derived_relay_nobody_can_observe_stops_being_fed() {
        // A long-lived relay that derives a short-lived child per request: the forwarders
        // must not pile up (they used to live as long as the parent).
        const CYCLES: usize = if cfg!(debug_assertions) { 20_000 } else { 100_000 };
        let (tx, rx) = Relay::channel();
        for i in 0..CYCLES {
            let child = if i % 2 == 0 {
                rx.filter::<u32>(|_| true) // tracked: the parent's sends wait for it
            } else {
                rx.map::<u32, u64>(|n| u64::from(*n)) // a tracking boundary
            };
            let mut sub = child.subscribe::<u32>();
            if i % 1_000 == 0 {
                // Now and then the child is used before it is dropped.
                within(BOUND, "a send through a child", tx.send(1u32)).await.unwrap();
                if i % 2 == 0 {
                    assert_eq!(*within(BOUND, "the child's copy", sub.recv()).await.unwrap(), 1);
                }
            }
            drop(sub);
            drop(child);
            if i % 5_000 == 4_999 {
                wait_until(BOUND, "the dropped children's forwarders end", || {
                    let s = rx.stats();
                    s.live_tasks == 0 && s.subscribers == 0
                })
                .await;
            }
        }
        wait_until(BOUND, "every forwarder ended", || {
            let s = rx.stats();
            s.live_tasks == 0 && s.subscribers == 0 && s.tracked_handlers == 0
        })
        .await;
        // Nobody was waiting in vain, and none of it counts as lost.
        assert_eq!(rx.stats().handlers_lost, 0);
        assert!(within(BOUND, "a send after it all", tx.send(2u32)).await.unwrap().is_unrouted());
    }

    async fn a_tracked_send_to_a_forwarder_ending_for_lack_of_observers_completes() {
        let (tx, rx) = Relay::channel();
        for _ in 0..200 {
            let child = rx.only::<u32>();
            let send = tx.send(7u32); // the forwarder is in this send's snapshot
            drop(child); // ...and ends, as nothing observes its child now
            // Ok, whichever came first: the forwarder took the message (and nobody observes
            // the child), or it had ended and completed what it still held. Never
            // HandlerGone: nothing that could see the message went away.
            let receipt = within(BOUND, "the send", send).await;
            assert!(receipt.is_ok(), "{receipt:?}");
        }
        wait_until(BOUND, "the forwarders end", || rx.stats().live_tasks == 0).await;
        assert_eq!(rx.stats().handlers_lost, 0);
    }

    async fn a_tracked_handler_of_the_snapshot_gone_with_its_unobserved_child_is_handler_gone() {
        // The send's snapshot holds the child's tracked subscription; it goes, and with it
        // the last observer, so the forwarder ends before the send reaches it. A handler
        // of the snapshot went away: HandlerGone, as for any subscriber (SEMANTICS §9).
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|_| true);
        let tracked = child.subscribe_tracked::<u32>();
        drop(child);
        let send = tx.send(7u32);
        drop(tracked);
        wait_until(BOUND, "the forwarder ends", || rx.stats().subscribers == 0).await;
        common::handler_gone(within(BOUND, "the send", send).await, HandlerKind::Forwarder);
    }

    async fn a_busy_forwarder_notices_at_once_that_nobody_observes_its_child() {
        // 5,000 sends queued for the forwarder at once: it must not forward them all
        // before it looks whether anyone can see its child.
        let (tx, rx) = Relay::channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let child = rx.filter::<u32>(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            true
        });
        drop(child);
        let sends = futures::future::join_all((0..5_000u32).map(|n| tx.send(n)));
        for receipt in within(BOUND, "5,000 sends", sends).await {
            receipt.unwrap();
        }
        assert!(calls.load(Ordering::SeqCst) <= 1, "{} messages forwarded", calls.load(Ordering::SeqCst));
    }

    async fn dropping_the_root_closes_a_chain_of_eight_filters_after_each_drains() {
        let (tx, rx) = Relay::channel();
        let mut levels = vec![rx.clone()];
        for _ in 0..8 {
            let next = levels.last().unwrap().filter::<u32>(|_| true);
            levels.push(next);
        }
        let mut subs: Vec<_> = levels.iter().map(|r| r.subscribe::<u32>()).collect();
        for n in 0..10u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        for (depth, sub) in subs.iter_mut().enumerate() {
            assert_eq!(drain(sub).await, (0..10).collect::<Vec<_>>(), "level {depth}");
        }
        for level in &levels {
            within(BOUND, "level closed", level.closed()).await;
            assert!(level.is_closed());
        }
    }

    async fn dropping_the_root_closes_a_tree_of_derived_relays_after_each_drains() {
        let (tx, rx) = Relay::channel();
        let evens = rx.filter::<u32>(|n| n % 2 == 0);
        let fours = evens.filter::<u32>(|n| n % 4 == 0);
        let tens = evens.map::<u32, u64>(|n| u64::from(*n) * 10);
        let shifted = rx.map::<u32, u64>(|n| u64::from(*n) + 100);
        let thirds = shifted.filter::<u64>(|n| n % 3 == 0);
        let fives = shifted.batch::<u64>(5).unwrap();
        let (numbers, others) = rx.split::<u32>();
        let texts = rx.exclude::<u32>();
        let parsed = texts.filter_map::<String, u32>(|s| s.parse().ok());

        let mut on_root = rx.subscribe::<u32>();
        let mut on_evens = evens.subscribe::<u32>();
        let mut on_fours = fours.subscribe::<u32>();
        let mut on_tens = tens.subscribe::<u64>();
        let mut on_shifted = shifted.subscribe::<u64>();
        let mut on_thirds = thirds.subscribe::<u64>();
        let mut on_fives = fives.subscribe::<Vec<u64>>();
        let mut on_numbers = numbers.subscribe::<u32>();
        let mut on_others = others.subscribe::<String>();
        let mut on_texts = texts.subscribe::<String>();
        let mut on_parsed = parsed.subscribe::<u32>();

        for n in 0..12u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
            if n % 5 == 0 {
                within(BOUND, "send text", tx.send(format!("{}", n * 7))).await.unwrap();
            }
        }
        within(BOUND, "send text", tx.send(String::from("x"))).await.unwrap();
        drop(tx);

        let all: Vec<u32> = (0..12).collect();
        let texts_sent: Vec<String> = ["0", "35", "70", "x"].map(String::from).to_vec();
        assert_eq!(drain(&mut on_root).await, all);
        assert_eq!(drain(&mut on_evens).await, [0, 2, 4, 6, 8, 10]);
        assert_eq!(drain(&mut on_fours).await, [0, 4, 8]);
        assert_eq!(drain(&mut on_tens).await, [0, 20, 40, 60, 80, 100]);
        assert_eq!(drain(&mut on_shifted).await, (100..112).collect::<Vec<u64>>());
        assert_eq!(drain(&mut on_thirds).await, [102, 105, 108, 111]);
        assert_eq!(
            drain(&mut on_fives).await,
            [vec![100, 101, 102, 103, 104], vec![105, 106, 107, 108, 109], vec![110, 111]]
        );
        assert_eq!(drain(&mut on_numbers).await, all);
        assert_eq!(drain(&mut on_others).await, texts_sent);
        assert_eq!(drain(&mut on_texts).await, texts_sent);
        assert_eq!(drain(&mut on_parsed).await, [0, 35, 70]);

        let relays = [
            &rx, &evens, &fours, &tens, &shifted, &thirds, &fives, &numbers, &others, &texts,
            &parsed,
        ];
        for relay in relays {
            within(BOUND, "relay closed", relay.closed()).await;
        }
    }

    async fn a_boundary_child_receives_everything_sent_before_the_root_closed_then_none() {
        let (tx, rx) = Relay::channel();
        let mut mapped = rx.map::<u32, u32>(|n| n + 1).subscribe::<u32>();
        let mut kept = rx
            .filter_map::<u32, u32>(|n| (n % 3 == 0).then_some(*n))
            .subscribe::<u32>();
        for n in 0..1_000u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx); // the forwarders may still hold most of the messages
        assert_eq!(drain(&mut mapped).await, (1..=1_000).collect::<Vec<_>>());
        assert_eq!(drain(&mut kept).await, (0..1_000).step_by(3).collect::<Vec<_>>());
    }

    async fn close_timeline_is_root_then_child_then_grandchild() {
        let (tx, root) = Relay::channel();
        let child = root.map::<u32, u32>(|n| *n);
        let grandchild = child.filter::<u32>(|_| true);
        let mut on_grandchild = grandchild.subscribe::<u32>();
        for n in 0..100u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }

        // One task, polling the three `closed()` futures in order (root first): the log is
        // in the order they resolved, and each entry says whether the relay above it was
        // already closed at that moment.
        let log = Arc::new(Mutex::new(Vec::new()));
        let watch = |name: &'static str, relay: &RelayReceiver, above: Option<&RelayReceiver>| {
            let (closed, above, log) = (relay.closed(), above.cloned(), log.clone());
            async move {
                closed.await;
                let above_closed = above.is_none_or(|a| a.is_closed());
                log.lock().unwrap().push((name, above_closed));
            }
        };
        let watching = futures::future::join3(
            watch("root", &root, None),
            watch("child", &child, Some(&root)),
            watch("grandchild", &grandchild, Some(&child)),
        );
        let closing = async {
            drop(tx);
        };
        within(BOUND, "all three closed", futures::future::join(watching, closing)).await;
        assert_eq!(
            *log.lock().unwrap(),
            [("root", true), ("child", true), ("grandchild", true)]
        );
        assert_eq!(drain(&mut on_grandchild).await, (0..100).collect::<Vec<_>>());
    }

    async fn derived_relays_of_a_closed_relay_are_closed_at_once() {
        let (tx, rx) = Relay::channel();
        tx.close();
        let (matched, rest) = rx.split::<u32>();
        let children = [
            ("filter", rx.filter::<u32>(|_| true)),
            ("only", rx.only::<u32>()),
            ("exclude", rx.exclude::<u32>()),
            ("split (matched)", matched),
            ("split (rest)", rest),
            ("map", rx.map::<u32, u32>(|n| *n)),
            ("filter_map", rx.filter_map::<u32, u32>(|n| Some(*n))),
            ("batch", rx.batch::<u32>(2).unwrap()),
            ("batch_of", rx.batch_of::<u32, 2>()),
            ("batch_shared", rx.batch_shared::<u32>(2).unwrap()),
        ];
        for (op, child) in &children {
            assert!(child.is_closed(), "{op} of a closed relay");
            let ended = child.subscribe::<u32>().try_recv().unwrap_err();
            assert_eq!(ended, TryRecvError::Closed, "{op}");
            assert!(child.filter::<u32>(|_| true).is_closed(), "a child of {op}");
        }
        wait_until(BOUND, "no forwarder left running", || rx.stats().live_tasks == 0).await;
    }

    async fn derived_relays_of_a_dropped_relay_are_closed_at_once() {
        let (tx, rx) = Relay::channel();
        drop(tx);
        assert!(rx.filter::<u32>(|_| true).is_closed());
        assert!(rx.map::<u32, u32>(|n| *n).is_closed());
        assert!(rx.batch::<u32>(3).unwrap().is_closed());
        let (matched, rest) = rx.split::<u32>();
        assert!(matched.is_closed() && rest.is_closed());
    }

    async fn a_merge_of_closed_relays_is_closed_at_once() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        a_tx.close();
        drop(b_tx);
        let merged = a.merge([b]);
        assert!(merged.is_closed(), "every input was closed when merge was called");
    }


    async fn a_child_of_an_open_relay_stays_open_while_its_parent_is() {
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|_| true);
        let mapped = rx.map::<u32, u32>(|n| *n);
        sleep(Duration::from_millis(50)).await;
        assert!(!child.is_closed() && !mapped.is_closed());
        drop(tx);
        within(BOUND, "filter child closes", child.closed()).await;
        within(BOUND, "map child closes", mapped.closed()).await;
    }
}

// ----- forwarder panics ------------------------------------------------------------------

on_every_runtime! {
    async fn a_panicking_filter_fails_the_send_reports_it_and_closes_the_child() {
        let (tx, rx) = Relay::channel();
        let mut parent_errors = rx.subscribe::<RelayError>();
        let child = rx.filter::<u32>(|n| if *n == 13 { panic!("unlucky 13") } else { true });
        let mut on_child = child.subscribe::<u32>();

        within(BOUND, "send 1", tx.send(1u32)).await.unwrap();
        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_forwarder_panic(&e, &rx, 2, "unlucky 13");
        let event = within(BOUND, "RelayError on the parent", parent_errors.recv()).await.unwrap();
        assert_forwarder_panic(&event, &rx, 2, "unlucky 13");

        assert_eq!(drain(&mut on_child).await, [1]);
        within(BOUND, "child closed", child.closed()).await;
        assert!(!tx.is_closed(), "the parent stays open");
        wait_until(BOUND, "the forwarder ended", || rx.stats().live_tasks == 0).await;
        assert_eq!(rx.stats().tracked_handlers, 0);
        within(BOUND, "later sends do not wait for it", tx.send(14u32)).await.unwrap();
    }

    async fn messages_queued_behind_a_filter_panic_fail_with_handler_gone() {
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|n| if *n == 13 { panic!("unlucky 13") } else { true });
        // Hold the forwarder on message 1 until 13 and 14 are queued behind it.
        let (open, gate) = async_channel::bounded::<()>(1);
        child.sink_async::<u32>(move |_| {
            let gate = gate.clone();
            async move {
                let _ = gate.recv().await;
            }
        });
        let (r1, r13, r14, ()) = within(
            BOUND,
            "three sends",
            futures::future::join4(tx.send(1u32), tx.send(13u32), tx.send(14u32), async {
                drop(open); // polled after the three sends queued their messages
            }),
        )
        .await;
        r1.unwrap();
        assert_forwarder_panic(&downstream(r13), &rx, 2, "unlucky 13");
        let gone = downstream(r14);
        assert_eq!((gone.kind, gone.relay_id, gone.msg_id), (HandlerKind::Forwarder, rx.id(), 3));
        assert!(gone.downcast_ref::<HandlerGone>().is_some(), "{gone}");
        within(BOUND, "child closed", child.closed()).await;
    }

    async fn a_panicking_map_reports_on_the_parent_and_closes_the_child() {
        let (tx, rx) = Relay::channel();
        let mut parent_errors = rx.subscribe::<RelayError>();
        let child = rx.map::<u32, u32>(|n| if *n == 13 { panic!("unlucky 13") } else { n * 2 });
        let mut on_child = child.subscribe::<u32>();

        within(BOUND, "send 1", tx.send(1u32)).await.unwrap();
        within(BOUND, "send 13: a boundary, so Ok", tx.send(13u32)).await.unwrap();
        let event = within(BOUND, "RelayError on the parent", parent_errors.recv()).await.unwrap();
        assert_forwarder_panic(&event, &rx, 2, "unlucky 13");
        within(BOUND, "send 2", tx.send(2u32)).await.unwrap();
        assert_eq!(drain(&mut on_child).await, [2], "nothing after the panic");
        within(BOUND, "child closed", child.closed()).await;
        assert!(!tx.is_closed());
    }

    async fn a_panicking_filter_map_reports_on_the_parent_and_closes_the_child() {
        let (tx, rx) = Relay::channel();
        let mut parent_errors = rx.subscribe::<RelayError>();
        let child = rx.filter_map::<u32, u32>(|n| match n {
            13 => panic!("unlucky 13"),
            n if n % 2 == 0 => Some(*n),
            _ => None,
        });
        let mut on_child = child.subscribe::<u32>();

        for n in [2u32, 3, 13] {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        let event = within(BOUND, "RelayError on the parent", parent_errors.recv()).await.unwrap();
        assert_forwarder_panic(&event, &rx, 3, "unlucky 13");
        assert_eq!(drain(&mut on_child).await, [2]);
        within(BOUND, "child closed", child.closed()).await;
    }

    async fn a_panicking_clone_in_batch_reports_on_the_parent_and_closes_the_child() {
        #[derive(Debug, PartialEq)]
        struct Fragile(u32);
        impl Clone for Fragile {
            fn clone(&self) -> Self {
                assert_ne!(self.0, 13, "cannot clone 13");
                Fragile(self.0)
            }
        }
        let (tx, rx) = Relay::channel();
        let mut parent_errors = rx.subscribe::<RelayError>();
        let _holder = rx.subscribe::<Fragile>(); // keeps each value shared: batch must clone
        let child = rx.batch::<Fragile>(2).unwrap();
        let mut on_child = child.subscribe::<Vec<Fragile>>();
        for n in [1u32, 2, 13, 4] {
            within(BOUND, "send", tx.send(Fragile(n))).await.unwrap();
        }
        let event = within(BOUND, "RelayError on the parent", parent_errors.recv()).await.unwrap();
        assert_eq!(
            (event.kind, event.relay_id, event.msg_id),
            (HandlerKind::Forwarder, rx.id(), 3)
        );
        assert!(event.is_panic());
        assert_eq!(drain(&mut on_child).await, [vec![Fragile(1), Fragile(2)]]);
    }

    async fn a_panicked_forwarders_child_wakes_a_waiting_subscriber() {
        let (tx, rx) = Relay::channel();
        let child = rx.map::<u32, u32>(|_| panic!("always"));
        let mut on_child = child.subscribe::<u32>();
        let waiting = on_child.recv(); // already waiting when the panic happens
        let sending = async {
            tx.send(1u32).await.unwrap();
        };
        let both = futures::future::join(waiting, sending);
        let (got, ()) = within(BOUND, "waiting subscriber woken", both).await;
        assert!(got.is_none());
    }
}
