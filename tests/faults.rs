//! Fault injection: things going away or misbehaving at the worst moment.
//!
//! - a lossless `send` future dropped after 1..=5 polls, at each await point of the send
//!   path (waiting for room in a full queue, waiting for a tracked sink's queue, waiting
//!   for the tracker), leaves no reservation, waiter or completion behind;
//! - a tracked subscription dropped with messages queued (or a sender waiting for room in
//!   it) fails them with `HandlerGone`;
//! - a handler that does not return while the relay is closed: the send waiting on it
//!   stays pending until the handler returns, then gets its verdict; dropping that send
//!   leaks nothing;
//! - spawners that drop their tasks; a `within` task that panics after the relay closed;
//! - 10,000 handlers registered and dropped while sends run;
//! - the deadlock guard (`WouldDeadlock`): a handler waiting for itself, directly and
//!   through tracked forwarders, and two handlers waiting for each other are detected, the
//!   message still processed; a spawned send, a send polled once and dropped, and a wait
//!   given up earlier are not false alarms; lossless cycles of forwards and of a handler
//!   sending back into its full parent never hang and lose nothing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    explode, handler_gone, lossless, quiet_intended_panics, timeout, wait_until, within,
    DroppingLater, Gate,
};
use futures::future::join_all;
use pipedream_rs::{
    BoxFuture, DeliveryMode, ErrorMode, HandlerGone, HandlerKind, HandlerLost, LossReason,
    PanicError, Relay, RelayError, RelayReceiver, RelayStats, SendError, WouldDeadlock,
};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long something that must stay pending is watched (it cannot fail a correct relay).
const STAYS_PENDING: Duration = Duration::from_millis(50);
const INTENDED: &str = "intended panic (faults test)";

#[derive(Debug, thiserror::Error)]
#[error("refused {0}")]
struct Refused(u32);

/// Every relay freed: closed, no live task, its internals gone (`stats()` reads zeros
/// only then).
async fn freed(what: &str, relays: &[&RelayReceiver]) {
    wait_until(WAIT, what, || {
        relays
            .iter()
            .all(|rx| rx.is_closed() && rx.stats() == RelayStats::default())
    })
    .await;
}

on_every_runtime! {
    // ----- cancelled sends ---------------------------------------------------------------

    async fn a_lossless_send_dropped_at_every_await_point_leaks_nothing() {
        const CAP: usize = 2;
        let (tx, rx) = Relay::builder()
            .channel_size(CAP)
            .delivery_mode(DeliveryMode::Lossless)
            .build()
            .unwrap();
        // Slot order is registration order: the untracked queue we fill, then the sink.
        let mut full = rx.subscribe::<u32>();
        let (permit_tx, permit_rx) = async_channel::unbounded::<()>();
        let processed = Arc::new(AtomicUsize::new(0));
        let p = processed.clone();
        rx.sink_async::<u32>(move |_| {
            let (permits, p) = (permit_rx.clone(), p.clone());
            async move {
                let _ = permits.recv().await; // one permit per message; all once closed
                p.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut taken = 0usize; // messages read from `full`
        let mut outcomes = [0usize; 2]; // [pending when dropped, finished]

        for k in 1..=5usize {
            for pattern in 0..4usize {
                // Fill `full` to capacity with sends that are abandoned after one poll
                // (each queues its message there, then waits for the sink).
                let mut rounds = 0;
                while full.len() < CAP {
                    let mut filler = Box::pin(tx.send(0u32));
                    let _ = futures::poll!(filler.as_mut());
                    rounds += 1;
                    assert!(rounds <= CAP, "a poll with room did not queue the message");
                }
                let mut send = Box::pin(tx.send(k as u32));
                let mut finished = false;
                for i in 0..k {
                    if futures::poll!(send.as_mut()).is_ready() {
                        finished = true;
                        break;
                    }
                    // Let the send move on to its next await point, or not.
                    match (pattern + i) % 4 {
                        0 => {}
                        1 => {
                            if full.try_recv().is_ok() {
                                taken += 1;
                            }
                        }
                        2 => permit_tx.try_send(()).unwrap(),
                        _ => {
                            if full.try_recv().is_ok() {
                                taken += 1;
                            }
                            permit_tx.try_send(()).unwrap();
                        }
                    }
                }
                outcomes[usize::from(finished)] += 1;
                drop(send);
            }
        }
        assert!(outcomes[0] > 0, "no send was dropped part-way: {outcomes:?}");

        // Let everything through; later sends work, and the queue holds exactly CAP.
        permit_tx.close();
        while full.try_recv().is_ok() {
            taken += 1;
        }
        within(WAIT, "a send after the abandoned ones", tx.send(100u32)).await.unwrap();
        while full.try_recv().is_ok() {
            taken += 1;
        }
        assert_eq!(full.len(), 0);
        let mut pending = Vec::new();
        for i in 0..CAP {
            let mut send = Box::pin(tx.send(200 + i as u32));
            match futures::poll!(send.as_mut()) {
                std::task::Poll::Ready(result) => drop(result.unwrap()),
                std::task::Poll::Pending => pending.push(send),
            }
            assert_eq!(full.len(), i + 1, "an empty queue of {CAP} refused message {i}");
        }
        let mut over = Box::pin(tx.send(300u32));
        assert!(futures::poll!(over.as_mut()).is_pending(), "a full lossless queue took more");
        assert_eq!(full.len(), CAP, "a full lossless queue took more than its capacity");
        assert_eq!(*full.recv().await.unwrap(), 200);
        taken += 1;
        pending.push(over);
        for result in within(WAIT, "the sends after the queue drained", join_all(pending)).await {
            result.unwrap();
        }
        while full.try_recv().is_ok() {
            taken += 1;
        }

        let stats = rx.stats();
        assert_eq!((stats.subscribers, stats.tracked_handlers), (2, 1));
        assert!(taken > 0 && processed.load(Ordering::SeqCst) > 0);
        drop(tx);
        assert!(within(WAIT, "end of stream", full.recv()).await.is_none());
        drop(full);
        freed("the relay", &[&rx]).await;
    }

}

on_every_runtime! {
    async fn copies_queued_by_a_cancelled_lossless_send_count_as_delivered() {
        let (tx, rx) = Relay::builder()
            .channel_size(1)
            .delivery_mode(DeliveryMode::Lossless)
            .build()
            .unwrap();
        let mut first = rx.subscribe::<u32>();
        let second = rx.subscribe::<u32>();
        within(WAIT, "a send with room", tx.send(0u32)).await.unwrap(); // 2 copies
        assert_eq!(*first.recv().await.unwrap(), 0);
        let mut send = Box::pin(tx.send(1u32));
        assert!(futures::poll!(send.as_mut()).is_pending()); // queued for `first`, waits for `second`
        drop(send);
        assert_eq!(first.len(), 1, "the cancelled send queued a copy for `first`");
        assert_eq!(second.len(), 1);
        assert_eq!(rx.stats().delivered, 3, "2 copies of message 0 + 1 of message 1");
    }
}

on_every_runtime! {
    // ----- dropped tracked subscriptions -------------------------------------------------------

    async fn a_tracked_subscription_dropped_with_messages_queued_fails_them_with_handler_gone() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe_tracked::<u32>();
        let mut events = rx.subscribe::<RelayError>();
        let sends: Vec<_> = (0..4u32)
            .map(|i| {
                let w = tx.weak();
                common::spawn(async move { w.send(i).await })
            })
            .collect();
        wait_until(WAIT, "four messages queued", || rx.stats().delivered == 4).await;
        let held = within(WAIT, "take one", sub.recv()).await.unwrap();
        assert!(held.is_tracked());
        held.complete();
        let unsettled = within(WAIT, "take another", sub.recv()).await.unwrap();
        drop(sub); // two still queued, one held
        drop(unsettled);
        let mut ok = 0;
        for send in sends {
            match within(WAIT, "a send of a dropped subscription", send).await {
                Ok(_) => ok += 1,
                other => handler_gone(other, HandlerKind::Tracked),
            }
        }
        assert_eq!(ok, 1);
        let mut gone = 0;
        while let Ok(e) = events.try_recv() {
            assert!(e.downcast_ref::<HandlerGone>().is_some(), "{e}");
            gone += 1;
        }
        assert_eq!(gone, 3, "each failure is published once");
        assert_eq!(rx.stats().tracked_handlers, 0);
        within(WAIT, "a send with no handler left", tx.send(9u32)).await.unwrap();
        drop((tx, events));
        freed("the relay", &[&rx]).await;
    }

    async fn a_lossless_sender_waiting_for_room_in_a_dropped_tracked_subscription_gets_handler_gone() {
        let (tx, rx) = Relay::builder()
            .channel_size(1)
            .delivery_mode(DeliveryMode::Lossless)
            .build()
            .unwrap();
        let sub = rx.subscribe_tracked::<u32>();
        let first = {
            let w = tx.weak();
            common::spawn(async move { w.send(1u32).await })
        };
        wait_until(WAIT, "the first message queued", || rx.stats().delivered == 1).await;
        let mut second = Box::pin(tx.send(2u32));
        assert!(futures::poll!(second.as_mut()).is_pending()); // waits for room
        drop(sub);
        handler_gone(within(WAIT, "the queued message", first).await, HandlerKind::Tracked);
        handler_gone(within(WAIT, "the waiting sender", second).await, HandlerKind::Tracked);
        within(WAIT, "a later send", tx.send(3u32)).await.unwrap();
        drop(tx);
        freed("the relay", &[&rx]).await;
    }

    // ----- a handler that does not return across the close --------------------------------------

    /// Decision recorded here: closing the relay does not interrupt a send already past
    /// its snapshot. It stays pending for as long as the handler works on its message and
    /// then returns that handler's verdict (here an error, which is returned but not
    /// published: no events on a closed relay).
    async fn a_send_waiting_on_a_handler_stays_pending_across_close_until_the_handler_returns() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let (started, release) = (Gate::new(), Gate::new());
        let (s, r) = (started.clone(), release.clone());
        rx.sink_async::<u32>(move |n| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.open();
                r.wait().await;
                Err(Refused(*n))
            }
        });
        let send = {
            let w = tx.weak();
            common::spawn(async move { w.send(7u32).await })
        };
        within(WAIT, "the handler starts", started.wait()).await;
        tx.close();
        assert!(rx.is_closed());
        assert!(matches!(tx.send(8u32).await, Err(SendError::Closed)));
        let mut send = Box::pin(send);
        assert!(timeout(STAYS_PENDING, send.as_mut()).await.is_none(), "the close ended the send");
        release.open();
        match within(WAIT, "the send after its handler returned", send).await {
            Err(SendError::Downstream(e)) => assert!(e.downcast_ref::<Refused>().is_some(), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(within(WAIT, "events end", events.recv()).await.is_none(), "published after close");
        drop(tx);
        freed("the relay", &[&rx]).await;
    }

    async fn dropping_a_send_that_waits_on_a_stuck_handler_after_close_leaks_nothing() {
        let (tx, rx) = Relay::channel();
        let canary = Arc::new(());
        let (started, release) = (Gate::new(), Gate::new());
        let (s, r) = (started.clone(), release.clone());
        rx.sink_async::<Arc<()>>(move |_| {
            let (s, r) = (s.clone(), r.clone());
            async move {
                s.open();
                r.wait().await;
            }
        });
        let mut send = Box::pin(tx.send(canary.clone()));
        assert!(futures::poll!(send.as_mut()).is_pending());
        within(WAIT, "the handler starts", started.wait()).await;
        tx.close();
        assert!(futures::poll!(send.as_mut()).is_pending());
        drop(send);
        drop(tx);
        // The relay's internals are gone; only the stuck handler's task is left.
        wait_until(WAIT, "internals freed", || {
            let mut stats = rx.stats();
            let live = std::mem::take(&mut stats.live_tasks);
            live == 1 && stats == RelayStats::default()
        })
        .await;
        release.open();
        freed("the relay", &[&rx]).await;
        wait_until(WAIT, "the message freed", || Arc::strong_count(&canary) == 1).await;
    }

    // ----- spawners that drop their tasks -----------------------------------------------------

    async fn a_panicking_drop_among_a_lost_handlers_messages_leaves_no_sender_waiting() {
        const INTENDED: &str = "intended: a queued message panics as it is dropped";
        quiet_intended_panics(INTENDED);
        struct Fragile(bool);
        impl Drop for Fragile {
            fn drop(&mut self) {
                if self.0 {
                    panic!("{INTENDED}");
                }
            }
        }
        let spawner = DroppingLater::default();
        let (tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
        let mut errors = rx.subscribe::<RelayError>();
        rx.sink::<Fragile>(|_| ());
        let mut first = Box::pin(tx.send(Fragile(true)));
        let mut second = Box::pin(tx.send(Fragile(false)));
        assert!(futures::poll!(first.as_mut()).is_pending());
        assert!(futures::poll!(second.as_mut()).is_pending());
        // The task goes with both queued; the first one's value panics as it is dropped.
        spawner.drop_all();
        handler_gone(within(WAIT, "the first send", first).await, HandlerKind::Sink);
        handler_gone(within(WAIT, "the second send", second).await, HandlerKind::Sink);
        let mut panics = Vec::new();
        while let Ok(e) = errors.try_recv() {
            if let Some(p) = e.downcast_ref::<PanicError>() {
                panics.push(p.message.clone());
            }
        }
        assert_eq!(panics, [format!("while dropping the message: {INTENDED}")]);
    }

    async fn a_spawner_dropping_tasks_later_fails_the_sends_waiting_on_them_and_reports_the_loss() {
        let spawner = DroppingLater::default();
        let (tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
        let mut lost = rx.subscribe::<HandlerLost>();
        rx.sink::<u32>(|_| ());
        let evens = rx.filter::<u64>(|n| n % 2 == 0);
        let handle = rx.within(|| async {});
        let mut ready = Box::pin(rx.ready());
        let mut to_sink = Box::pin(tx.send(1u32));
        let mut to_filter = Box::pin(tx.send(2u64));
        assert!(timeout(STAYS_PENDING, to_sink.as_mut()).await.is_none());
        assert!(futures::poll!(to_filter.as_mut()).is_pending());
        assert!(futures::poll!(ready.as_mut()).is_pending());
        spawner.drop_all();
        handler_gone(within(WAIT, "send to the dropped sink", to_sink).await, HandlerKind::Sink);
        handler_gone(within(WAIT, "send to the dropped filter", to_filter).await, HandlerKind::Forwarder);
        within(WAIT, "ready()", ready).await;
        within(WAIT, "the filtered relay closes", evens.closed()).await;
        let e = within(WAIT, "the dropped within task", handle).await.unwrap_err();
        assert!(e.downcast_ref::<HandlerGone>().is_some(), "{e}");
        assert_eq!(rx.stats().live_tasks, 0);
        // Each handler and forwarder that never ran is reported once, and is gone: later
        // sends reach nobody, and say so.
        let mut reports = Vec::new();
        for _ in 0..2 {
            let report = within(WAIT, "a HandlerLost report", lost.recv()).await.unwrap();
            reports.push((report.kind, report.type_name, report.reason));
        }
        reports.sort_by_key(|r| r.1);
        assert_eq!(
            reports,
            [
                (HandlerKind::Sink, "u32", LossReason::NeverStarted),
                (HandlerKind::Forwarder, "u64", LossReason::NeverStarted),
            ]
        );
        assert_eq!((rx.stats().handlers_lost, rx.stats().tracked_handlers), (2, 0));
        assert!(within(WAIT, "a later send", tx.send(3u32)).await.unwrap().is_unrouted());
        assert!(within(WAIT, "a later send", tx.send(4u64)).await.unwrap().is_unrouted());
        assert_eq!(lost.try_recv().unwrap_err(), pipedream_rs::TryRecvError::Empty);
        drop((tx, lost));
        freed("every relay", &[&rx, &evens]).await;
    }

    /// A sink whose task the spawner refused is reported lost and leaves the registry: a
    /// send of its type is never `Ok` *as if handled* — it reaches nobody, and its receipt
    /// and the `Unrouted` count say so. Derived relays whose forwarder was refused close;
    /// nothing hangs.
    async fn a_spawner_dropping_every_task_reports_each_handler_lost_and_hangs_nothing() {
        let (tx, rx) = Relay::builder()
            .spawner(|task: BoxFuture| drop(task))
            .build()
            .unwrap();
        rx.sink::<u32>(|_| ());
        let doubled = rx.map::<u32, u64>(|n| u64::from(*n) * 2);
        let evens = rx.filter::<u32>(|n| n % 2 == 0);
        let handle = rx.within(|| async {});
        within(WAIT, "ready()", rx.ready()).await;
        for n in 0..3u32 {
            let receipt = within(WAIT, "a send to a sink that never ran", tx.send(n)).await.unwrap();
            assert!(receipt.is_unrouted() && receipt.handled == 0, "{receipt:?}");
        }
        within(WAIT, "the mapped relay closes", doubled.closed()).await;
        within(WAIT, "the filtered relay closes", evens.closed()).await;
        let e = within(WAIT, "the within handle", handle).await.unwrap_err();
        assert!(e.downcast_ref::<HandlerGone>().is_some(), "{e}");
        let stats = rx.stats();
        assert_eq!(
            (stats.live_tasks, stats.tracked_handlers, stats.handlers_lost, stats.unrouted),
            (0, 0, 3, 3)
        );
        drop(tx);
        freed("every relay", &[&rx, &doubled, &evens]).await;
    }

    // ----- a within task that panics after the close ------------------------------------------

    async fn a_within_task_panicking_after_the_close_returns_the_panic_and_hangs_nothing() {
        quiet_intended_panics(INTENDED);
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let release = Gate::new();
        let r = release.clone();
        let handle = rx.within(move || async move {
            r.wait().await;
            explode(&format!("{INTENDED}: late")).await;
        });
        drop(tx);
        release.open();
        let e = within(WAIT, "the within handle", handle).await.unwrap_err();
        assert!(e.is_panic(), "{e}");
        assert_eq!(e.kind, HandlerKind::Within);
        assert!(e.error.to_string().contains("late"), "{e}");
        assert!(within(WAIT, "events end", events.recv()).await.is_none(), "published after close");
        drop(events);
        freed("the relay", &[&rx]).await;
    }

    // ----- handler churn ---------------------------------------------------------------------

    async fn ten_thousand_handlers_registered_and_dropped_while_sends_run() {
        const TRACKED_SUBS: usize = 5_000; // on one long-lived relay, 50 alive at a time
        const SHORT_LIVED: usize = 1_000; // relays with 5 handlers each
        let (tx, rx) = Relay::channel();
        let stop = Gate::new();
        // What the churned subscriptions refused, and each send's verdict: checked against
        // each other at the end, so sends that ignored the churn could not pass.
        let refused = Arc::new(Mutex::new(std::collections::HashSet::<u32>::new()));
        let sender = {
            let (w, stop) = (tx.weak(), stop.clone());
            common::spawn(async move {
                let mut verdicts = Vec::new(); // (n, None if Ok, Some(refused value) if Refused)
                let mut n = 0u32;
                while !stop.is_open() {
                    n += 1;
                    match within(WAIT, "a send during the churn", w.send(n)).await {
                        Ok(_) => verdicts.push((n, Ok(()))),
                        Err(SendError::Downstream(e)) => {
                            let named = e.downcast_ref::<Refused>().map(|r| r.0);
                            assert!(named.is_some() || e.downcast_ref::<HandlerGone>().is_some(), "{e}");
                            verdicts.push((n, Err(named)));
                        }
                        Err(other) => panic!("{other:?}"),
                    }
                    if n % 8 == 0 {
                        common::sleep(Duration::from_micros(50)).await; // let the churn in
                    }
                }
                verdicts
            })
        };
        let short_lived_done = common::spawn(async {
            let processed = Arc::new(AtomicUsize::new(0));
            for i in 0..SHORT_LIVED as u32 {
                let (tx2, rx2) = Relay::channel();
                for _ in 0..2 {
                    let p = processed.clone();
                    rx2.sink::<u32>(move |_| {
                        p.fetch_add(1, Ordering::Relaxed);
                    });
                }
                rx2.tap::<u32>(|n| if n % 3 == 0 { Err(Refused(*n)) } else { Ok(()) });
                let odd = rx2.filter::<u32>(|n| n % 2 == 1);
                odd.sink::<u32>(|_| ());
                odd.tap::<u32>(|_| ());
                for n in [i, i + 1] {
                    let result = within(WAIT, "a send on a short-lived relay", tx2.send(n)).await;
                    assert_eq!(result.is_err(), n % 3 == 0, "{n}: {result:?}");
                }
            }
            processed.load(Ordering::Relaxed)
        });
        let mut settled = 0usize;
        for wave in 0..TRACKED_SUBS / 50 {
            let drivers: Vec<_> = (0..50usize)
                .map(|j| {
                    let mut sub = rx.subscribe_tracked::<u32>();
                    let refused = refused.clone();
                    common::spawn(async move {
                        // Settle up to 3 messages (complete, fail or abandon), then go away
                        // with whatever is still queued.
                        let mut done = 0;
                        for step in 0..(wave + j) % 4 {
                            let Some(msg) = within(WAIT, "a churn message", sub.recv()).await else {
                                break;
                            };
                            match (wave + j + step) % 3 {
                                0 => msg.complete(),
                                1 => {
                                    let n = **msg.value();
                                    refused.lock().unwrap().insert(n);
                                    msg.fail(Refused(n));
                                }
                                _ => drop(msg),
                            }
                            done += 1;
                        }
                        done
                    })
                })
                .collect();
            for d in within(WAIT, "a wave of tracked subscriptions", join_all(drivers)).await {
                settled += d;
            }
        }
        let processed = within(Duration::from_secs(25), "the short-lived relays", short_lived_done).await;
        assert_eq!(processed, SHORT_LIVED * 4);
        stop.open();
        let verdicts = within(WAIT, "the sender stops", sender).await;
        let refused = refused.lock().unwrap().clone();
        assert!(settled > 0 && !refused.is_empty(), "settled {settled}, refused {}", refused.len());
        for (n, verdict) in &verdicts {
            match verdict {
                // A send a subscription refused cannot come back Ok...
                Ok(()) => assert!(!refused.contains(n), "send {n} was refused, yet Ok"),
                // ...and a refusal names the send it came from.
                Err(Some(m)) => assert!(m == n && refused.contains(n), "send {n} got Refused({m})"),
                Err(None) => {} // HandlerGone: a subscription went with it queued
            }
        }
        let answered = verdicts.iter().filter(|(n, _)| refused.contains(n)).count();
        assert_eq!(answered, refused.len(), "every refusal reached its sender");
        let stats = rx.stats();
        assert_eq!((stats.subscribers, stats.tracked_handlers), (0, 0));
        drop(tx);
        freed("the relay", &[&rx]).await;
    }

    // ----- the deadlock guard --------------------------------------------------------------------

    async fn a_sink_awaiting_a_send_to_itself_stops_waiting_and_still_processes_the_message() {
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let (verdicts, seen) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (v, s) = (verdicts.clone(), seen.clone());
        rx.sink_async::<u32>(move |n| {
            let (w, v, s) = (w.clone(), v.clone(), s.clone());
            async move {
                s.lock().unwrap().push(*n);
                if *n == 0 {
                    let verdict = w.send(1u32).await;
                    v.lock().unwrap().push(verdict);
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        let verdict = verdicts.lock().unwrap().pop().unwrap();
        match verdict {
            Err(SendError::WouldDeadlock(WouldDeadlock { cycle, .. })) => assert_eq!(cycle.len(), 1),
            other => panic!("expected WouldDeadlock, got {other:?}"),
        }
        // The message was queued, not thrown away: the sink processes it next.
        wait_until(WAIT, "message 1 processed", || seen.lock().unwrap().len() == 2).await;
        assert_eq!(*seen.lock().unwrap(), [0, 1]);
        assert_eq!(rx.stats().deadlocks_broken, 1);
    }

    async fn a_tap_awaiting_a_send_through_two_filters_stops_waiting() {
        let (tx, rx) = Relay::builder().error_mode(ErrorMode::Aggregate).build().unwrap();
        let w = tx.weak();
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let v = verdicts.clone();
        let grandchild = rx.filter::<u32>(|_| true).filter::<u32>(|n| *n < 10);
        grandchild.tap_async::<u32>(move |n| {
            let (w, v) = (w.clone(), v.clone());
            async move {
                if *n == 0 {
                    let verdict = w.send(1u32).await;
                    v.lock().unwrap().push(verdict);
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        let verdict = verdicts.lock().unwrap().pop().unwrap();
        // Tap, then the two filters' forwarders: a cycle of three.
        assert!(
            matches!(&verdict, Err(SendError::WouldDeadlock(d)) if d.cycle.len() == 3),
            "{verdict:?}"
        );
        // The relay still works afterwards.
        within(WAIT, "a later send", tx.send(5u32)).await.unwrap();
    }

    async fn a_child_sink_awaiting_a_send_to_its_parent_through_a_filter_stops_waiting() {
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let v = verdicts.clone();
        let child = rx.filter::<u32>(|_| true);
        child.sink_async::<u32>(move |n| {
            let (w, v) = (w.clone(), v.clone());
            async move {
                if *n == 0 {
                    let verdict = w.send(1u32).await;
                    v.lock().unwrap().push(verdict);
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        let verdict = verdicts.lock().unwrap().pop().unwrap();
        assert!(matches!(verdict, Err(SendError::WouldDeadlock(_))), "{verdict:?}");
    }

    async fn a_self_send_awaited_among_many_in_futures_unordered_still_stops_waiting() {
        // The wait is broken through the waiting future's own waker: a combinator that gives
        // each of its futures a waker of its own must see it (a wake of the task alone made
        // this spin forever).
        use futures::stream::{FuturesUnordered, StreamExt};
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let v = verdicts.clone();
        rx.sink_async::<u32>(move |n| {
            let (w, v) = (w.clone(), v.clone());
            async move {
                if *n == 0 {
                    let mut sends: FuturesUnordered<_> = (1..=40u32).map(|k| w.send(k)).collect();
                    while let Some(result) = sends.next().await {
                        v.lock().unwrap().push(result);
                    }
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        let verdicts = std::mem::take(&mut *verdicts.lock().unwrap());
        assert_eq!(verdicts.len(), 40);
        assert!(
            verdicts.iter().all(|r| matches!(r, Err(SendError::WouldDeadlock(_)))),
            "{verdicts:?}"
        );
    }

    async fn a_send_polled_in_a_handler_then_handed_to_another_task_moves_its_wait() {
        // Polled once inside the sink (its wait registered there), then handed to another
        // task, which awaits it: the wait moves to that task at its first poll (it is not
        // one of the relay's, so it is no node), and the send completes normally once the
        // sink is free. (Until that first poll the wait still counts as the sink's:
        // SEMANTICS.md §14.)
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let (results, seen) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (r, s) = (results.clone(), seen.clone());
        rx.sink_async::<u32>(move |n| {
            let (w, r, s) = (w.clone(), r.clone(), s.clone());
            async move {
                s.lock().unwrap().push(*n);
                if *n == 0 {
                    let mut send = Box::pin(w.send(1u32));
                    assert!(futures::poll!(send.as_mut()).is_pending());
                    drop(common::spawn(async move {
                        let result = send.await;
                        r.lock().unwrap().push(result.is_ok());
                    }));
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        wait_until(WAIT, "the moved send", || !results.lock().unwrap().is_empty()).await;
        assert_eq!(*results.lock().unwrap(), [true]);
        assert_eq!(*seen.lock().unwrap(), [0, 1]);
        assert_eq!(rx.stats().deadlocks_broken, 0);
    }

    async fn a_send_a_handler_spawns_and_does_not_await_is_not_a_deadlock() {
        // The send's waiter is the spawned task, not the handler: nothing waits in a cycle.
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let (seen, spawned) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (s, sp) = (seen.clone(), spawned.clone());
        rx.sink::<u32>(move |n| {
            s.lock().unwrap().push(*n);
            if *n == 0 {
                let (w, sp) = (w.clone(), sp.clone());
                drop(common::spawn(async move {
                    let result = w.send(1u32).await;
                    sp.lock().unwrap().push(result.is_ok());
                }));
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        wait_until(WAIT, "the spawned send", || !spawned.lock().unwrap().is_empty()).await;
        assert_eq!(*spawned.lock().unwrap(), [true]);
        assert_eq!(*seen.lock().unwrap(), [0, 1]);
        assert_eq!(rx.stats().deadlocks_broken, 0);
    }

    async fn a_send_a_handler_polls_once_and_drops_is_not_a_deadlock_and_is_delivered() {
        use futures::FutureExt;
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let (seen, polled) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (s, p) = (seen.clone(), polled.clone());
        rx.sink_async::<u32>(move |n| {
            let (w, s, p) = (w.clone(), s.clone(), p.clone());
            async move {
                s.lock().unwrap().push(*n);
                if *n == 0 {
                    // Polled once (it queues the message), then given up: nobody waits.
                    let once = w.send(1u32).now_or_never();
                    p.lock().unwrap().push(once.map(|r| r.is_ok()));
                }
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        assert_eq!(*polled.lock().unwrap(), [None], "still pending after one poll");
        wait_until(WAIT, "message 1 processed", || seen.lock().unwrap().len() == 2).await;
        assert_eq!(*seen.lock().unwrap(), [0, 1]);
        assert_eq!(rx.stats().deadlocks_broken, 0);
    }

    async fn a_handler_that_gave_up_waiting_is_not_seen_as_waiting_later() {
        // H1 (u32) waits 20 ms for a u64 send that H2 (u64), held up, cannot process yet,
        // and gives up. Later H2, processing that message, awaits a u32 send to H1, which is
        // idle by then: it must simply succeed.
        let (tx, rx) = Relay::channel();
        let (w1, w2) = (tx.weak(), tx.weak());
        let hold = Gate::new();
        let h2_result = Arc::new(Mutex::new(Vec::new()));
        let timed_out = Arc::new(AtomicUsize::new(0));
        let t = timed_out.clone();
        rx.sink_async::<u32>(move |n| {
            let (w1, t) = (w1.clone(), t.clone());
            async move {
                if *n == 0 && timeout(Duration::from_millis(20), w1.send(0u64)).await.is_none() {
                    t.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let (hold2, r) = (hold.clone(), h2_result.clone());
        rx.sink_async::<u64>(move |n| {
            let (w2, hold, r) = (w2.clone(), hold2.clone(), r.clone());
            async move {
                if *n == 0 {
                    hold.wait().await;
                    let result = w2.send(1u32).await;
                    r.lock().unwrap().push(result);
                }
            }
        });
        within(WAIT, "H1's message", tx.send(0u32)).await.unwrap();
        assert_eq!(timed_out.load(Ordering::SeqCst), 1);
        common::sleep(Duration::from_millis(200)).await;
        hold.open();
        wait_until(WAIT, "H2's send", || !h2_result.lock().unwrap().is_empty()).await;
        let result = h2_result.lock().unwrap().pop().unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(rx.stats().deadlocks_broken, 0);
    }

    async fn two_handlers_awaiting_sends_to_each_other_are_detected_and_both_finish() {
        // H1 (u32) awaits a u64 send while H2 (u64) awaits a u32 send: each message is
        // queued behind the one the other handler is busy with. Both are made to be busy
        // at the same time before they send.
        let (tx, rx) = Relay::channel();
        let both_busy = Arc::new(AtomicUsize::new(0));
        let go = Gate::new();
        let results = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        macro_rules! handler {
            ($T:ty, $Other:ty) => {{
                let (w, busy, go, results, seen) =
                    (tx.weak(), both_busy.clone(), go.clone(), results.clone(), seen.clone());
                rx.sink_async::<$T>(move |n| {
                    let (w, busy, go, results, seen) =
                        (w.clone(), busy.clone(), go.clone(), results.clone(), seen.clone());
                    async move {
                        seen.lock().unwrap().push((std::any::type_name::<$T>(), *n as u64));
                        if *n == 0 {
                            if busy.fetch_add(1, Ordering::SeqCst) == 1 {
                                go.open();
                            }
                            go.wait().await;
                            let result = w.send(1 as $Other).await;
                            results.lock().unwrap().push(result);
                        }
                    }
                });
            }};
        }
        handler!(u32, u64);
        handler!(u64, u32);
        let (a, b) = futures::join!(tx.send(0u32), tx.send(0u64));
        a.unwrap();
        b.unwrap();
        let results = std::mem::take(&mut *results.lock().unwrap());
        let deadlocks = results
            .iter()
            .filter(|r| matches!(r, Err(SendError::WouldDeadlock(_))))
            .count();
        assert_eq!((results.len(), deadlocks), (2, 1), "{results:?}");
        assert!(results.iter().any(|r| r.is_ok()), "{results:?}");
        // Broken once: the second handler to run does not break the same cycle again.
        assert_eq!(rx.stats().deadlocks_broken, 1);
        wait_until(WAIT, "all four messages processed", || seen.lock().unwrap().len() == 4).await;
    }

    async fn lossless_forwards_both_ways_with_small_queues_never_hang_and_lose_nothing() {
        const N: u32 = 300;
        let (a_tx, a) = lossless(4);
        let (b_tx, b) = lossless(4);
        let (on_a, on_b) = (a.subscribe::<u32>(), b.subscribe::<u32>());
        let ab = a.forward_detached(&b_tx);
        let ba = b.forward_detached(&a_tx);
        let reader = |mut sub: pipedream_rs::Subscription<u32>| {
            common::spawn(async move {
                let mut got = Vec::new();
                while got.len() < 2 * N as usize {
                    got.push(*sub.recv().await.unwrap());
                }
                got
            })
        };
        let readers = futures::future::join(reader(on_a), reader(on_b));
        let (wa, wb) = (a_tx.weak(), b_tx.weak());
        let senders = futures::future::join(
            common::spawn(async move {
                for n in 0..N {
                    wa.send(n).await.unwrap();
                }
            }),
            common::spawn(async move {
                for n in N..2 * N {
                    wb.send(n).await.unwrap();
                }
            }),
        );
        within(WAIT, "both senders (a lossless cycle of forwards)", senders).await;
        let (mut got_a, mut got_b) = within(WAIT, "both readers", readers).await;
        got_a.sort();
        got_b.sort();
        let all: Vec<u32> = (0..2 * N).collect();
        // Each relay gets its own messages and the other's, once each (no echo).
        assert_eq!((got_a, got_b), (all.clone(), all));
        drop((a_tx, b_tx));
        let (ab, ba) = within(WAIT, "the forwards end", futures::future::join(ab, ba)).await;
        assert!(ab.is_ok() && ba.is_ok(), "{ab:?} {ba:?}");
    }

    async fn a_sink_behind_map_awaiting_sends_into_its_full_lossless_parent_never_hangs() {
        // The map's forwarder waits for the child's sink; the sink waits for room in the
        // forwarder's inbox (queue of 1): a cycle of waits, broken by letting the sink's
        // message in over the capacity.
        let (tx, rx) = lossless(1);
        let w = tx.weak();
        let child = rx.map::<u32, u64>(|n| u64::from(*n));
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        child.sink_async::<u64>(move |n| {
            let (w, d) = (w.clone(), d.clone());
            async move {
                if *n == 0 {
                    w.send(10u32).await.unwrap();
                    w.send(11u32).await.unwrap();
                }
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        wait_until(WAIT, "all three processed by the sink", || done.load(Ordering::SeqCst) == 3).await;
        assert!(rx.stats().deadlocks_broken >= 1, "{:?}", rx.stats());
    }

    async fn a_sink_awaiting_a_send_across_a_tracking_boundary_is_not_a_deadlock() {
        // Behind `map` the parent's send does not wait for the child's sink, so the sink
        // may await a send to the parent: no WouldDeadlock, and nothing hangs.
        let (tx, rx) = Relay::channel();
        let w = tx.weak();
        let results = Arc::new(Mutex::new(Vec::new()));
        let r = results.clone();
        let child = rx.map::<u32, u64>(|n| u64::from(*n));
        child.sink_async::<u64>(move |n| {
            let (w, r) = (w.clone(), r.clone());
            async move {
                if *n == 0 {
                    let result = w.send(1u32).await;
                    r.lock().unwrap().push(result.is_ok());
                }
            }
        });
        let mut ones = rx.subscribe::<u32>();
        within(WAIT, "the outer send", tx.send(0u32)).await.unwrap();
        // The inner send starts before the outer one has returned: they overlap, so `ones`
        // may see them in either order.
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(*within(WAIT, "both messages", ones.recv()).await.unwrap());
        }
        got.sort();
        assert_eq!(got, [0, 1]);
        wait_until(WAIT, "the inner send returns", || !results.lock().unwrap().is_empty()).await;
        assert_eq!(*results.lock().unwrap(), [true]);
    }
}
