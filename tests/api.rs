//! The ecosystem-facing API (issue 13): `recv()` futures in `select!`, fused streams,
//! `is_closed`, `TrackedSubscription` as a stream, `try_send`, the `Sink` adapter, and
//! `TaskHandle::abort` / `is_finished` / `detach`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{lossless, sleep, wait_until, within, Gate};
use futures::future::FusedFuture;
use futures::stream::FusedStream;
use futures::{select, SinkExt, StreamExt};
use pipedream_rs::{
    DeliveryMode, HandlerLost, Relay, RelayError, SendError, TaskAborted, TrySendError,
};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

on_every_runtime! {
    /// `recv()` goes into `select!` as it is (no pinning, no `.fuse()`), and the branch
    /// that loses gives up its wait without taking a message: every message is received
    /// exactly once, by the branch of its type.
    async fn recv_futures_race_in_select_without_losing_a_message() {
        let (tx, rx) = Relay::channel();
        let (mut words, mut numbers) = (rx.subscribe::<String>(), rx.subscribe::<u32>());
        let producer = common::spawn(async move {
            for n in 0..200u32 {
                if n % 3 == 0 {
                    tx.send(format!("w{n}")).await.unwrap();
                } else {
                    tx.send(n).await.unwrap();
                }
                if n % 16 == 0 {
                    sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let (mut got_words, mut got_numbers) = (Vec::new(), Vec::new());
        within(WAIT, "select loop to the end of both subscriptions", async {
            let (mut words_done, mut numbers_done) = (false, false);
            while !(words_done && numbers_done) {
                select! {
                    w = words.recv() => match w {
                        Some(w) => got_words.push((*w).clone()),
                        None => words_done = true,
                    },
                    n = numbers.recv() => match n {
                        Some(n) => got_numbers.push(*n),
                        None => numbers_done = true,
                    },
                    complete => break,
                }
            }
        })
        .await;
        producer.await;
        let want_words: Vec<String> = (0..200).filter(|n| n % 3 == 0).map(|n| format!("w{n}")).collect();
        let want_numbers: Vec<u32> = (0..200).filter(|n| n % 3 != 0).collect();
        assert_eq!(got_words, want_words);
        assert_eq!(got_numbers, want_numbers);
    }

    /// A `recv()` future dropped while it waits leaves the message that arrives next for
    /// the following `recv()`, and a completed one reports itself terminated.
    async fn a_dropped_recv_future_loses_nothing_and_a_done_one_is_terminated() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u8>();
        {
            let waiting = sub.recv();
            assert!(!waiting.is_terminated());
            // Polled once (it waits), then dropped.
            let mut waiting = waiting;
            assert!(futures::poll!(&mut waiting).is_pending());
        }
        tx.send(9u8).await.unwrap();
        let mut next = sub.recv();
        assert_eq!(*within(WAIT, "the message after a dropped recv", &mut next).await.unwrap(), 9);
        assert!(next.is_terminated());
    }

    /// `Subscription` is a `FusedStream`: not terminated while the relay is open (even if
    /// empty) or messages are queued; terminated once closed and drained. `is_closed` says
    /// closed as soon as the relay is, queued messages or not.
    async fn a_subscription_is_fused_and_knows_when_its_relay_is_closed() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u8>();
        let mut all = rx.subscribe_all();
        assert!(!sub.is_terminated() && !sub.is_closed());
        assert!(!all.is_terminated() && !all.is_closed());
        tx.send(1u8).await.unwrap();
        drop(tx);
        assert!(sub.is_closed() && all.is_closed(), "closed, with a message still queued");
        assert!(!sub.is_terminated(), "a queued message is still to come");
        assert_eq!(within(WAIT, "the queued message", sub.next()).await.as_deref(), Some(&1));
        assert!(!sub.is_terminated(), "drained, but its None is still to be returned");
        assert_eq!(within(WAIT, "the end", sub.next()).await, None);
        assert!(sub.is_terminated());
        assert!(within(WAIT, "the queued envelope", all.next()).await.is_some());
        assert!(within(WAIT, "the end of all", all.next()).await.is_none());
        assert!(all.is_terminated());
    }

    /// `select_next_some` over fused subscriptions ends through `complete` once both are
    /// closed and drained, with every message seen.
    async fn select_next_some_over_subscriptions_reaches_complete() {
        let (tx, rx) = Relay::channel();
        let (mut a, mut b) = (rx.subscribe::<u8>(), rx.subscribe::<u16>());
        for n in 0..10u8 {
            tx.send(n).await.unwrap();
            tx.send(u16::from(n) * 100).await.unwrap();
        }
        drop(tx);
        let mut total = 0u32;
        within(WAIT, "select_next_some to complete", async {
            loop {
                select! {
                    x = a.select_next_some() => total += u32::from(*x),
                    y = b.select_next_some() => total += u32::from(*y),
                    complete => break,
                }
            }
        })
        .await;
        assert_eq!(total, 45 + 4500);
    }

    /// A `select!` loop over `next()` sees each stream's `None` (a fused subscription is
    /// terminated only after returning it), so its `None` arms, not `complete`, end it.
    async fn a_select_loop_over_streams_sees_each_end() {
        let (tx, rx) = Relay::channel();
        let (mut a, mut b) = (rx.subscribe::<u8>(), rx.subscribe::<u16>());
        tx.send(1u8).await.unwrap();
        tx.send(2u16).await.unwrap();
        drop(tx);
        let (mut a_ended, mut b_ended, mut got) = (false, false, 0u32);
        within(WAIT, "the select loop", async {
            while !(a_ended && b_ended) {
                select! {
                    x = a.next() => match x {
                        Some(x) => got += u32::from(*x),
                        None => a_ended = true,
                    },
                    y = b.next() => match y {
                        Some(y) => got += u32::from(*y),
                        None => b_ended = true,
                    },
                    complete => panic!("reached complete before both None arms ran"),
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    /// `recv_many` takes what is queued, up to `max`, in order, waiting only when nothing
    /// is; with concurrent sends every message is taken exactly once; `0` is the end.
    async fn recv_many_takes_runs_in_order_and_reports_the_end() {
        let (tx, rx) = lossless(16);
        let mut sub = rx.subscribe::<u32>();
        let producer = common::spawn(async move {
            for n in 0..1_000u32 {
                tx.send(n).await.unwrap();
            }
        });
        let mut buf = Vec::new();
        let mut runs = 0;
        loop {
            let before = buf.len();
            let took = within(WAIT, "recv_many", sub.recv_many(&mut buf, 7)).await;
            assert_eq!(took, buf.len() - before);
            assert!(took <= 7, "took {took}, more than max");
            if took == 0 {
                break;
            }
            runs += 1;
        }
        within(WAIT, "the producer", producer).await;
        let got: Vec<u32> = buf.iter().map(|n| **n).collect();
        assert_eq!(got, (0..1_000).collect::<Vec<_>>());
        assert!(runs >= 1_000 / 7, "{runs} runs for 1,000 messages with max 7");
        let mut empty = Vec::new();
        assert_eq!(sub.recv_many(&mut empty, 0).await, 0);
    }

    /// A batch that takes the last messages of a closed relay does not report the end for
    /// them: the stream is terminated only once a receive has returned it.
    async fn a_batch_that_drains_a_closed_relay_leaves_the_end_to_the_next_receive() {
        let (tx, rx) = Relay::channel();
        let (mut a, mut b) = (rx.subscribe::<u8>(), rx.subscribe::<u8>());
        tx.send(1u8).await.unwrap();
        tx.send(2u8).await.unwrap();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(within(WAIT, "recv_many", a.recv_many(&mut buf, 8)).await, 2);
        assert!(!a.is_terminated(), "recv_many returned messages, not the end");
        assert_eq!(within(WAIT, "the end", a.next()).await, None);
        assert!(a.is_terminated());
        assert_eq!(b.try_recv_many(&mut buf, 8), 2);
        assert!(!b.is_terminated(), "try_recv_many returned messages, not the end");
        assert_eq!(b.try_recv_many(&mut buf, 8), 0);
        assert!(!b.is_terminated(), "try_recv_many never reports the end");
        assert_eq!(within(WAIT, "the end", b.recv_many(&mut buf, 8)).await, 0);
        assert!(b.is_terminated());
    }

    /// A `recv_many` dropped while it waits takes nothing; `try_recv_many` never waits.
    async fn a_dropped_recv_many_loses_nothing() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u8>();
        let mut buf = Vec::new();
        {
            let mut waiting = sub.recv_many(&mut buf, 4);
            assert!(futures::poll!(&mut waiting).is_pending());
        }
        assert!(buf.is_empty());
        assert_eq!(sub.try_recv_many(&mut buf, 4), 0);
        for n in 0..3u8 {
            tx.send(n).await.unwrap();
        }
        assert_eq!(sub.try_recv_many(&mut buf, 2), 2);
        assert_eq!(sub.len(), 1, "a run of max leaves the rest queued");
        assert_eq!(within(WAIT, "the third", sub.recv_many(&mut buf, 4)).await, 1);
        let got: Vec<u8> = buf.iter().map(|n| **n).collect();
        assert_eq!(got, [0, 1, 2]);
    }

    /// A `TrackedSubscription` is a stream of `Tracked<T>`: completing each item is what
    /// lets the sender's `send` return, and it is fused and knows when it is closed.
    async fn a_tracked_subscription_is_a_stream() {
        let (tx, rx) = Relay::channel();
        let jobs = rx.subscribe_tracked::<u32>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let worker = {
            let seen = seen.clone();
            common::spawn(async move {
                let mut jobs = jobs;
                assert!(!jobs.is_closed());
                while let Some(job) = jobs.next().await {
                    seen.lock().unwrap().push(**job.value());
                    job.complete();
                }
                assert!(jobs.is_closed() && jobs.is_terminated());
            })
        };
        for n in 0..20u32 {
            let receipt = within(WAIT, "a tracked send", tx.send(n)).await.unwrap();
            assert_eq!(receipt.handled, 1, "the stream's item was completed before send returned");
            assert_eq!(seen.lock().unwrap().last(), Some(&n));
        }
        drop(tx);
        within(WAIT, "the worker's stream to end", worker).await;
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    /// Lossless `try_send` is all or nothing: with one of two queues full it delivers to
    /// neither and hands the value back; the slot it took in the other queue is given
    /// back, so that queue still takes exactly its capacity.
    async fn lossless_try_send_is_all_or_nothing() {
        let (tx, rx) = lossless(2);
        let mut roomy = rx.subscribe::<u32>();
        let mut full = rx.subscribe::<u32>();
        assert_eq!(tx.try_send(1u32).unwrap().queued, 2);
        assert_eq!(tx.try_send(2u32).unwrap().queued, 2);
        assert_eq!(roomy.try_recv().map(|v| *v), Ok(1));
        assert_eq!(roomy.try_recv().map(|v| *v), Ok(2));
        // `roomy` has room for 2, `full` none.
        let refused = tx.try_send(3u32).unwrap_err();
        assert_eq!(refused, TrySendError::Full(3));
        assert_eq!(refused.into_inner(), 3);
        assert!(roomy.is_empty(), "all or nothing: the roomy queue got nothing");
        assert_eq!(full.len(), 2);
        // Room in `full` for one: now it goes to both.
        assert_eq!(*full.try_recv().unwrap(), 1);
        assert_eq!(tx.try_send(4u32).unwrap().queued, 2);
        assert!(matches!(tx.try_send(5u32), Err(TrySendError::Full(5))));
        // The refused sends gave `roomy`'s slots back: it holds exactly one message (4)
        // and takes one more, then is full.
        assert_eq!(roomy.len(), 1);
        assert_eq!(*full.try_recv().unwrap(), 2);
        assert_eq!(tx.try_send(6u32).unwrap().queued, 2);
        assert!(matches!(tx.try_send(7u32), Err(TrySendError::Full(7))));
        assert_eq!(roomy.len(), 2);
        let got: Vec<u32> = std::iter::from_fn(|| roomy.try_recv().ok().map(|v| *v)).collect();
        assert_eq!(got, [4, 6]);
        assert_eq!(rx.stats().sent, 4, "refused sends are not counted as sent");
    }

    /// A lossless `try_send` refused as `Full` never waits, even while a `send` of the
    /// same relay waits for that room; and the waiting `send` still gets in once there is
    /// room.
    async fn try_send_never_waits_beside_a_waiting_send() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u8>();
        tx.try_send(1u8).unwrap();
        let weak = tx.weak();
        let waiting = common::spawn(async move { weak.send(2u8).await.map(|r| r.queued) });
        sleep(Duration::from_millis(20)).await;
        assert!(matches!(tx.try_send(3u8), Err(TrySendError::Full(3))));
        assert_eq!(*within(WAIT, "the first message", sub.recv()).await.unwrap(), 1);
        assert_eq!(within(WAIT, "the waiting send", waiting).await, Ok(1));
        assert_eq!(*within(WAIT, "the waiting send's message", sub.recv()).await.unwrap(), 2);
    }

    /// In broadcast mode a full queue misses a `try_send` as it misses any send: the
    /// receipt says so and a `Dropped` event reports it; the other subscriber gets it.
    async fn broadcast_try_send_misses_on_a_full_queue_and_reports_it() {
        let (tx, rx) = Relay::builder().channel_size(1).build().unwrap();
        let mut dropped = rx.subscribe::<pipedream_rs::Dropped>();
        let mut slow = rx.subscribe::<u8>();
        let mut quick = rx.subscribe::<u8>();
        tx.try_send(1u8).unwrap();
        assert_eq!(*quick.try_recv().unwrap(), 1);
        let receipt = tx.try_send(2u8).unwrap();
        assert_eq!((receipt.queued, receipt.missed), (1, 1));
        assert_eq!(*quick.try_recv().unwrap(), 2);
        assert_eq!(*slow.try_recv().unwrap(), 1);
        assert_eq!(slow.dropped(), 1);
        let event = within(WAIT, "the Dropped event", dropped.recv()).await.unwrap();
        assert_eq!(event.subscriber_id, slow.id());
    }

    /// `try_send` on a closed relay and, with `reject_unrouted`, of a type nobody takes
    /// hands the value back with the reason.
    async fn try_send_says_closed_and_unrouted() {
        let (tx, rx) = Relay::builder().reject_unrouted(true).build().unwrap();
        assert!(matches!(tx.try_send(String::from("nobody")), Err(TrySendError::Unrouted(s)) if s == "nobody"));
        let weak = tx.weak();
        drop(tx);
        assert!(matches!(weak.try_send(1u8), Err(TrySendError::Closed(1))));
        drop(rx);
        assert!(matches!(weak.try_send(2u8), Err(TrySendError::Closed(2))));
    }

    /// A tracked handler gets a `try_send`'s message, but nobody waits for it: the receipt
    /// counts none handled, and its failure is published as a `RelayError` and counted.
    async fn try_send_reaches_tracked_handlers_without_waiting_for_them() {
        let (tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let gate = Gate::new();
        let ran = Arc::new(AtomicUsize::new(0));
        {
            let (gate, ran) = (gate.clone(), ran.clone());
            rx.sink_async::<u8>(move |n| {
                let (gate, ran) = (gate.clone(), ran.clone());
                async move {
                    gate.wait().await;
                    ran.fetch_add(1, Ordering::SeqCst);
                    if *n == 2 { Err("two refused") } else { Ok(()) }
                }
            });
        }
        let first = tx.try_send(1u8).unwrap();
        assert_eq!((first.queued, first.handled), (1, 0), "returned while the handler is held");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        tx.try_send(2u8).unwrap();
        gate.open();
        let e = within(WAIT, "the handler's failure as an event", errors.recv()).await.unwrap();
        assert_eq!(e.error.to_string(), "two refused");
        wait_until(WAIT, "both messages handled", || ran.load(Ordering::SeqCst) == 2).await;
        assert_eq!(rx.stats().failures, 1);
    }

    /// `stream.forward(tx.as_sink())` sends every item, in order, through a lossless
    /// queue of one with a slow reader: back-pressure, not loss.
    async fn a_stream_forwards_into_the_sink_adapter_with_back_pressure() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u32>();
        let reader = common::spawn(async move {
            let mut got = Vec::new();
            while let Some(n) = sub.recv().await {
                got.push(*n);
                if *n % 50 == 0 {
                    sleep(Duration::from_millis(2)).await;
                }
            }
            got
        });
        let items = futures::stream::iter(0..500u32).map(Ok);
        within(WAIT, "the forward into the sink", items.forward(tx.as_sink())).await.unwrap();
        drop(tx);
        let got = within(WAIT, "the reader", reader).await;
        assert_eq!(got, (0..500).collect::<Vec<_>>());
    }

    /// A failed item's error comes back from the sink at the next call, and
    /// `forward` stops there: nothing after the failed item is sent.
    async fn the_sink_adapter_stops_at_the_first_failed_item() {
        let (tx, rx) = Relay::channel();
        let handled = Arc::new(Mutex::new(Vec::new()));
        {
            let handled = handled.clone();
            rx.sink::<u32>(move |n| {
                handled.lock().unwrap().push(*n);
                if *n == 3 { Err("three") } else { Ok(()) }
            });
        }
        let items = futures::stream::iter(1..=6u32).map(Ok);
        let result = within(WAIT, "the forward", items.forward(tx.as_sink())).await;
        match result {
            Err(SendError::Downstream(e)) => assert_eq!(e.error.to_string(), "three"),
            other => panic!("expected the handler's error, got {other:?}"),
        }
        assert_eq!(*handled.lock().unwrap(), [1, 2, 3]);
        // `SinkExt::send` sends and flushes: its error is the item's own.
        let mut sink = tx.as_sink::<u32>();
        assert!(within(WAIT, "sink.send", sink.send(3)).await.is_err());
        assert!(within(WAIT, "sink.send", sink.send(4)).await.is_ok());
        drop(tx);
        assert_eq!(within(WAIT, "sink.send on a closed relay", sink.send(5)).await, Err(SendError::Closed));
    }

    /// `abort` stops a waiting task: its handle says `TaskAborted`, `is_finished` turns
    /// true, and it is no failure (no event, no counter).
    async fn an_aborted_task_ends_with_task_aborted_and_no_failure() {
        let (_tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let handle = rx.within(std::future::pending::<()>);
        sleep(Duration::from_millis(10)).await;
        assert!(!handle.is_finished(), "a pending task is not finished");
        handle.abort();
        wait_until(WAIT, "the aborted task to finish", || handle.is_finished()).await;
        let e = within(WAIT, "the handle", handle).await.unwrap_err();
        assert!(e.downcast_ref::<TaskAborted>().is_some(), "{e}");
        assert!(errors.try_recv().is_err(), "an abort publishes no RelayError");
        assert_eq!(rx.stats().failures, 0);
    }

    /// A task that finished keeps its result through a later `abort`; a detached
    /// task still runs to its end and its failure is still published.
    async fn abort_after_the_end_keeps_the_result_and_detach_keeps_reporting() {
        let (_tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let done = rx.within(|| async {});
        wait_until(WAIT, "the task to finish", || done.is_finished()).await;
        done.abort();
        assert!(within(WAIT, "the finished task's handle", done).await.is_ok());
        let gate = Gate::new();
        let held = gate.clone();
        rx.within(move || async move {
            held.wait().await;
            Err::<(), _>("detached failure")
        })
        .detach();
        gate.open();
        let e = within(WAIT, "the detached task's failure", errors.recv()).await.unwrap();
        assert_eq!(e.error.to_string(), "detached failure");
    }

    /// Aborting a `forward_detached` ends the forward without reporting it lost, and
    /// lets go of its subscription: the source's later messages no longer reach the
    /// target.
    async fn an_aborted_detached_forward_is_not_reported_lost() {
        let (a_tx, a_rx) = Relay::channel();
        let (b_tx, b_rx) = Relay::channel();
        let mut lost = a_rx.subscribe::<HandlerLost>();
        let mut at_b = b_rx.subscribe::<u8>();
        let forward = a_rx.forward_detached(&b_tx);
        a_tx.send(1u8).await.unwrap();
        assert_eq!(*within(WAIT, "the forwarded message", at_b.recv()).await.unwrap(), 1);
        let subscribers = a_rx.stats().subscribers;
        forward.abort();
        let e = within(WAIT, "the aborted forward", forward).await.unwrap_err();
        assert!(e.downcast_ref::<TaskAborted>().is_some(), "{e}");
        wait_until(WAIT, "the forward's subscription to go", || {
            a_rx.stats().subscribers == subscribers - 1
        })
        .await;
        a_tx.send(2u8).await.unwrap();
        sleep(Duration::from_millis(20)).await;
        assert!(at_b.try_recv().is_err(), "nothing is forwarded after the abort");
        assert!(lost.try_recv().is_err(), "an abort is not a lost handler");
        assert_eq!(a_rx.stats().handlers_lost, 0);
        drop(b_tx);
    }
}

/// A task its executor drops unfinished: its handle is not terminated until it has
/// said so (`HandlerGone`), so `select!` still polls it, and `is_finished` holds once
/// the task is gone. (Runtime-free: the spawner holds the task, then drops it.)
#[test]
fn a_handle_whose_task_was_dropped_says_so_before_it_terminates() {
    use common::DroppingLater;
    use pipedream_rs::HandlerGone;
    let spawner = DroppingLater::default();
    let (_tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
    let mut handle = rx.within(|| async {});
    assert!(!handle.is_finished() && !handle.is_terminated());
    spawner.drop_all();
    assert!(handle.is_finished(), "the task's future is gone");
    assert!(!handle.is_terminated(), "its outcome is not yet handed out");
    let outcome = futures::executor::block_on(within(WAIT, "the dropped task's handle", async {
        select! {
            outcome = handle => Some(outcome),
            complete => None,
        }
    }));
    let e = outcome.expect("select! polled the handle").unwrap_err();
    assert!(e.downcast_ref::<HandlerGone>().is_some(), "{e}");
    assert!(handle.is_terminated());
}

/// What `futures::select!` needs of a `recv()` future, checked at compile time.
#[test]
fn recv_futures_are_unpin_fused_and_send() {
    fn unpin_fused_send<F: Unpin + FusedFuture + Send>(_: &F) {}
    let (_tx, rx) = Relay::channel();
    let mut sub = rx.subscribe::<u8>();
    unpin_fused_send(&sub.recv());
    let mut all = rx.subscribe_all();
    unpin_fused_send(&all.recv());
    let mut tracked = rx.subscribe_tracked::<u8>();
    unpin_fused_send(&tracked.recv());
    let _ = DeliveryMode::Lossless;
}
