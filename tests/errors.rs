//! Errors and panics: the dual path (back to the sender, and as a `RelayError` event),
//! `ErrorMode::Aggregate`, and `PanicMode::Propagate`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{downstream, explode, quiet_intended_panics, within};
use pipedream_rs::{
    EnvelopeSubscription, ErrorMode, HandlerKind, PanicError, PanicMode, Relay, RelayError,
    SendError, Subscription,
};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("rejected {0}")]
struct Rejected(i64);

/// The message id the relay gave the last message of type `T` that `all` has seen.
fn last_id_of<T: std::any::Any>(all: &mut EnvelopeSubscription) -> u64 {
    let mut id = None;
    while let Ok(env) = all.try_recv() {
        if env.is::<T>() {
            id = Some(env.msg_id());
        }
    }
    id.expect("no message of that type was sent")
}

/// Every `RelayError` event queued now (they are published before the send returns).
fn published(events: &mut Subscription<RelayError>) -> Vec<RelayError> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push((*e).clone());
    }
    out
}

fn panic_message(e: &RelayError) -> &str {
    assert!(e.is_panic(), "not a panic: {e}");
    &e.downcast_ref::<PanicError>().unwrap().message
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// The panic a message's `Drop` raises on purpose (kept out of the test output).
const INTENDED_DROP: &str = "intended panic in a message's Drop (errors test)";

/// Panics when its last copy is dropped, if asked to.
struct Fragile(bool);

impl Drop for Fragile {
    fn drop(&mut self) {
        if self.0 {
            panic!("{INTENDED_DROP}");
        }
    }
}

on_every_runtime! {
    async fn a_handler_gone_after_a_propagated_panic_is_reported_lost_and_leaves() {
        quiet_intended_panics(INTENDED_DROP);
        let (tx, rx) = Relay::builder().panic_mode(PanicMode::Propagate).build().unwrap();
        let mut lost = rx.subscribe::<pipedream_rs::HandlerLost>();
        rx.sink::<u8>(|_| -> () { panic!("{INTENDED_DROP}") });
        let err = within(WAIT, "the panicking send", tx.send(1u8)).await.unwrap_err();
        assert!(err.errors()[0].is_panic(), "{err}");
        let report = within(WAIT, "the loss report", lost.recv()).await.unwrap();
        assert_eq!(
            (report.kind, report.type_name, report.reason),
            (HandlerKind::Sink, "u8", pipedream_rs::LossReason::Panicked)
        );
        // Gone from the registry: the next send reaches nobody, and says so.
        assert!(within(WAIT, "a later send", tx.send(2u8)).await.unwrap().is_unrouted());
        assert_eq!((rx.stats().handlers_lost, rx.stats().tracked_handlers), (1, 0));
    }

    async fn a_panic_in_the_drop_of_the_last_copy_does_not_end_the_handler() {
        quiet_intended_panics(INTENDED_DROP);
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        rx.sink::<Fragile>(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        });
        // Many times over: the sink runs on another worker and may finish before the send
        // returns. Once the message is queued the send holds no copy of it, so the sink's
        // copy is always the last, whatever the timing: its drop panics inside the
        // relay's guard, never in this task.
        const ROUNDS: usize = 200;
        for round in 1..=ROUNDS {
            let receipt = tx.send(Fragile(true)).await.unwrap();
            assert_eq!(receipt.handled, 1);
            assert_eq!(seen.load(Ordering::SeqCst), round);
            let e = within(WAIT, "the event of the panicking drop", events.recv()).await.unwrap();
            assert!(e.is_panic() && e.error.to_string().contains("while dropping"), "{e}");
            assert_eq!(e.kind, HandlerKind::Sink);
        }
        // The handler is still there: the next message is processed.
        tx.send(Fragile(false)).await.unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), ROUNDS + 1);
        assert_eq!(rx.stats().tracked_handlers, 1);
    }

    async fn a_panic_in_the_drop_of_a_value_a_forwarder_made_and_nobody_took_is_reported() {
        quiet_intended_panics(INTENDED_DROP);
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let child = rx.filter_map::<u8, Fragile>(|n| Some(Fragile(*n == 1)));
        // Observed (so fed), but nobody there takes a `Fragile`: the forwarder's send lets
        // go of the only copy.
        let _observer = child.subscribe::<u16>();
        tx.send(1u8).await.unwrap();
        let e = within(WAIT, "the event of the panicking drop", events.recv()).await.unwrap();
        assert!(e.is_panic() && e.error.to_string().contains("while dropping"), "{e}");
        assert_eq!(e.kind, HandlerKind::Forwarder);
        // The forwarder goes on: the next value reaches the child (unrouted there too).
        tx.send(2u8).await.unwrap();
        within(WAIT, "the second value on the child", async {
            while child.stats().unrouted < 2 {
                common::yield_now().await;
            }
        })
        .await;
        assert_eq!(child.stats().panics, 0);
        assert!(!child.is_closed());
    }

    async fn a_panic_in_the_drop_of_a_copy_a_forward_held_last_does_not_end_the_forward() {
        quiet_intended_panics(INTENDED_DROP);
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let mut events = a.subscribe::<RelayError>();
        let seen = counter();
        let s = seen.clone();
        b.sink::<Fragile>(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        });
        let forwarding = a.forward_detached(&b_tx.weak());
        // The forward holds its copy until `b`'s sink is done: then it is the last.
        a_tx.send(Fragile(true)).await.unwrap();
        let e = within(WAIT, "the event of the panicking drop", events.recv()).await.unwrap();
        assert!(e.is_panic() && e.error.to_string().contains("while dropping"), "{e}");
        assert_eq!(e.kind, HandlerKind::Forwarder);
        // The forward goes on.
        a_tx.send(Fragile(false)).await.unwrap();
        within(WAIT, "the second message on b", async {
            while seen.load(Ordering::SeqCst) < 2 {
                common::yield_now().await;
            }
        })
        .await;
        assert!(!forwarding.is_finished());
        drop(a_tx);
        within(WAIT, "the forward's end", forwarding).await.unwrap();
    }

    // ----- handler errors --------------------------------------------------------------

    async fn handlers_may_fail_with_any_common_error_type() {
        let (tx, rx) = Relay::channel();
        rx.sink::<u8>(|_| Err::<(), _>(String::from("a String")));
        rx.sink::<u16>(|_| Err::<(), _>("a &str"));
        rx.sink::<u32>(|_| Err::<(), Box<dyn std::error::Error + Send + Sync>>("boxed".into()));
        rx.sink::<u64>(|_| Err::<(), _>(anyhow::anyhow!("from anyhow")));
        rx.sink_async::<i8>(|_| async { Err::<(), _>(anyhow::anyhow!("async anyhow")) });
        let texts = [
            tx.send(1u8).await,
            tx.send(1u16).await,
            tx.send(1u32).await,
            tx.send(1u64).await,
            tx.send(1i8).await,
        ]
        .map(|r| r.unwrap_err().errors()[0].error.to_string());
        assert_eq!(texts, ["a String", "a &str", "boxed", "from anyhow", "async anyhow"]);
    }

    async fn an_error_chain_shows_each_layer_once() {
        let (tx, rx) = Relay::channel();
        rx.tap::<u8>(|n| Err(Rejected(i64::from(*n))));
        let err = tx.send(4u8).await.unwrap_err();
        let mut chain = Vec::new();
        let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(e) = layer {
            chain.push(e.to_string());
            layer = e.source();
        }
        assert_eq!(
            chain,
            [
                "a handler failed".to_string(),
                format!("tap for u8 failed on message 1 (relay {})", tx.id()),
                "rejected 4".to_string(),
            ]
        );
        // The copy returned to the sender equals the one a test would compare it with.
        assert_eq!(err, SendError::Downstream(err.errors()[0].clone()));
    }

    async fn handler_error_comes_back_as_downstream_and_is_published_exactly_once() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let mut all = rx.subscribe_all();
        rx.sink::<i64>(|n| if *n < 0 { Err(Rejected(*n)) } else { Ok(()) });

        tx.send(1i64).await.unwrap();
        let e = downstream(tx.send(-7i64).await);
        let id = last_id_of::<i64>(&mut all);
        assert_eq!(
            (e.kind, e.type_name, e.msg_id, e.relay_id),
            (HandlerKind::Sink, "i64", id, tx.id())
        );
        assert_eq!(e.downcast_ref::<Rejected>(), Some(&Rejected(-7)));
        assert!(!e.is_panic());
        assert_eq!(e.to_string(), format!("sink for i64 failed on message {id} (relay {})", tx.id()));
        assert_eq!(e.error.to_string(), "rejected -7");

        let events_seen = published(&mut events);
        assert_eq!(events_seen.len(), 1, "{events_seen:?}");
        let event = &events_seen[0];
        assert_eq!(
            (event.kind, event.type_name, event.msg_id, event.relay_id),
            (e.kind, e.type_name, e.msg_id, e.relay_id)
        );
        assert!(Arc::ptr_eq(&event.error, &e.error), "the event carries the same error");

        // The handler keeps serving; the next send is unaffected.
        tx.send(2i64).await.unwrap();
        assert!(published(&mut events).is_empty());
    }

    async fn each_kind_of_handler_reports_its_own_kind_and_type() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        rx.sink::<u8>(|n| Err(Rejected(i64::from(*n))));
        rx.tap::<u16>(|n| Err(Rejected(i64::from(*n))));
        rx.sink_async::<u32>(|n: Arc<u32>| async move { Err(Rejected(i64::from(*n))) });
        rx.tap_async::<u64>(|n: Arc<u64>| async move { Err(Rejected(*n as i64)) });
        let mut tracked = rx.subscribe_tracked::<i8>();

        let cases = [
            (downstream(tx.send(1u8).await), HandlerKind::Sink, "u8", 1),
            (downstream(tx.send(2u16).await), HandlerKind::Tap, "u16", 2),
            (downstream(tx.send(3u32).await), HandlerKind::Sink, "u32", 3),
            (downstream(tx.send(4u64).await), HandlerKind::Tap, "u64", 4),
        ];
        for (e, kind, type_name, value) in &cases {
            assert_eq!((e.kind, e.type_name), (*kind, *type_name));
            assert_eq!(e.downcast_ref::<Rejected>(), Some(&Rejected(*value)));
        }
        let (sent, ()) = futures::join!(tx.send(5i8), async {
            tracked.recv().await.unwrap().fail(Rejected(5));
        });
        let e = downstream(sent);
        assert_eq!((e.kind, e.type_name), (HandlerKind::Tracked, "i8"));
        assert_eq!(e.downcast_ref::<Rejected>(), Some(&Rejected(5)));

        let kinds: Vec<_> = published(&mut events).iter().map(|e| (e.kind, e.type_name)).collect();
        assert_eq!(
            kinds,
            [
                (HandlerKind::Sink, "u8"),
                (HandlerKind::Tap, "u16"),
                (HandlerKind::Sink, "u32"),
                (HandlerKind::Tap, "u64"),
                (HandlerKind::Tracked, "i8"),
            ]
        );
    }

    async fn first_wins_returns_one_error_but_publishes_every_failure() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        rx.sink::<i64>(|_| Err(Rejected(1)));
        rx.tap::<i64>(|_| Err(Rejected(2)));

        let e = downstream(tx.send(0i64).await);
        let code = e.downcast_ref::<Rejected>().unwrap().0;
        assert!(code == 1 || code == 2);
        let mut codes: Vec<_> = published(&mut events)
            .iter()
            .map(|e| e.downcast_ref::<Rejected>().unwrap().0)
            .collect();
        codes.sort_unstable();
        assert_eq!(codes, [1, 2]);
    }

    async fn aggregate_returns_every_failing_handlers_error() {
        let (tx, rx) = Relay::builder().error_mode(ErrorMode::Aggregate).build().unwrap();
        let mut events = rx.subscribe::<RelayError>();
        let mut all = rx.subscribe_all();
        // Three handlers fail on odd numbers; a fourth always succeeds.
        let odd = |n: i64, code: i64| if n % 2 == 1 { Err(Rejected(code)) } else { Ok(()) };
        rx.sink::<i64>(move |n| odd(*n, 1));
        rx.tap::<i64>(move |n| odd(*n, 2));
        rx.sink_async::<i64>(move |n: Arc<i64>| async move { odd(*n, 3) });
        let fine = counter();
        let f = fine.clone();
        rx.sink::<i64>(move |_| {
            f.fetch_add(1, Ordering::SeqCst);
        });

        let err = tx.send(1i64).await.unwrap_err();
        let id = last_id_of::<i64>(&mut all);
        let SendError::Aggregate(errors) = &err else { panic!("expected Aggregate, got {err:?}") };
        assert_eq!(err.errors().len(), 3);
        let mut got: Vec<_> = errors
            .iter()
            .map(|e| (e.downcast_ref::<Rejected>().unwrap().0, e.kind, e.msg_id, e.type_name))
            .collect();
        got.sort_unstable_by_key(|g| g.0);
        assert_eq!(
            got,
            [
                (1, HandlerKind::Sink, id, "i64"),
                (2, HandlerKind::Tap, id, "i64"),
                (3, HandlerKind::Sink, id, "i64"),
            ]
        );
        assert_eq!(published(&mut events).len(), 3);
        assert_eq!(fine.load(Ordering::SeqCst), 1);

        // The next send is unaffected.
        tx.send(2i64).await.unwrap();
        assert_eq!(fine.load(Ordering::SeqCst), 2);
        assert!(published(&mut events).is_empty());
    }

    // ----- panics ----------------------------------------------------------------------

    async fn panics_in_sync_and_async_handlers_are_caught_reported_and_the_handler_keeps_serving() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let calls = counter();
        let c = calls.clone();
        rx.sink::<u8>(move |n| {
            c.fetch_add(1, Ordering::SeqCst);
            if *n == 13 {
                panic!("sink hates {n}");
            }
        });
        let c = calls.clone();
        rx.tap::<u16>(move |n| {
            c.fetch_add(1, Ordering::SeqCst);
            if *n == 13 {
                panic!("tap panicked");
            }
        });
        let c = calls.clone();
        rx.sink_async::<u32>(move |n: Arc<u32>| {
            let c = c.clone();
            async move {
                common::sleep(Duration::from_millis(1)).await;
                c.fetch_add(1, Ordering::SeqCst);
                if *n == 13 {
                    panic!("async sink hates {n}");
                }
            }
        });
        let c = calls.clone();
        rx.tap_async::<u64>(move |n: Arc<u64>| {
            c.fetch_add(1, Ordering::SeqCst);
            // Panics while making the future, before any `.await`.
            if *n == 13 {
                panic!("async tap panicked early");
            }
            async {}
        });

        let cases = [
            (downstream(tx.send(13u8).await), HandlerKind::Sink, "u8", "sink hates 13"),
            (downstream(tx.send(13u16).await), HandlerKind::Tap, "u16", "tap panicked"),
            (downstream(tx.send(13u32).await), HandlerKind::Sink, "u32", "async sink hates 13"),
            (
                downstream(tx.send(13u64).await),
                HandlerKind::Tap,
                "u64",
                "async tap panicked early",
            ),
        ];
        let events_seen = published(&mut events);
        assert_eq!(events_seen.len(), 4);
        for ((e, kind, type_name, message), event) in cases.iter().zip(&events_seen) {
            assert_eq!((e.kind, e.type_name, panic_message(e)), (*kind, *type_name, *message));
            let id = e.msg_id;
            assert_eq!(
                e.to_string(),
                format!("{kind} for {type_name} failed on message {id} (relay {})", e.relay_id)
            );
            assert_eq!(e.error.to_string(), format!("handler panicked: {message}"));
            assert_eq!((event.kind, event.msg_id, panic_message(event)), (*kind, id, *message));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        // Every handler is still there and serving.
        tx.send(1u8).await.unwrap();
        tx.send(1u16).await.unwrap();
        tx.send(1u32).await.unwrap();
        tx.send(1u64).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        assert_eq!(rx.stats().tracked_handlers, 4);
        assert!(published(&mut events).is_empty());
    }

    async fn a_panic_with_a_non_string_payload_is_still_reported() {
        let (tx, rx) = Relay::channel();
        rx.sink::<u8>(|_| -> () { std::panic::panic_any(42u32) });
        let e = downstream(tx.send(1u8).await);
        assert_eq!(panic_message(&e), "<non-string panic payload>");
    }

    async fn a_failing_handler_of_relay_errors_does_not_feed_back_into_itself() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let calls = counter();
        let c = calls.clone();
        rx.sink::<RelayError>(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Err(Rejected(0))
        });
        rx.sink::<u8>(|_| Err(Rejected(1)));
        downstream(tx.send(1u8).await);
        // The u8 failure is published once; the RelayError sink's own failure is not.
        common::wait_until(WAIT, "the RelayError sink", || calls.load(Ordering::SeqCst) == 1).await;
        common::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let seen = published(&mut events);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].type_name, "u8");
    }

    async fn a_failure_behind_map_that_nobody_subscribes_to_is_still_counted() {
        // The parent's send is Ok by design (map is a tracking boundary) and nobody
        // subscribes to the child's RelayError: the child's counters still show it.
        let (tx, rx) = Relay::channel();
        let child = rx.map::<u32, u64>(|n| u64::from(*n));
        let handled = counter();
        let h = handled.clone();
        child.sink::<u64>(move |n| {
            h.fetch_add(1, Ordering::SeqCst);
            if *n == 1 {
                return Err(Rejected(1));
            }
            if *n == 2 {
                panic!("intended: a sink behind map panics");
            }
            Ok(())
        });
        quiet_intended_panics("intended: a sink behind map panics");
        for n in 0..3u32 {
            within(WAIT, "a send into map", tx.send(n)).await.unwrap();
        }
        common::wait_until(WAIT, "the child's failures counted", || child.stats().failures == 2).await;
        assert_eq!((child.stats().panics, rx.stats().failures), (1, 0));
        assert_eq!(handled.load(Ordering::SeqCst), 3);
    }

    async fn a_failing_within_task_whose_handle_was_dropped_is_still_counted() {
        let (_tx, rx) = Relay::channel();
        drop(rx.within(|| async { Err::<(), _>(Rejected(3)) }));
        common::wait_until(WAIT, "the within failure counted", || rx.stats().failures == 1).await;
        assert_eq!(rx.stats().panics, 0);
    }

    async fn panic_in_within_is_caught_and_reported_as_a_within_error() {
        let (tx, rx) = Relay::channel();
        let mut events = rx.subscribe::<RelayError>();
        let task = rx.within(|| explode("within went wrong"));
        let e = within(WAIT, "a panicking within task", task).await.unwrap_err();
        assert_eq!((e.kind, e.msg_id, e.relay_id), (HandlerKind::Within, 0, tx.id()));
        assert_eq!(panic_message(&e), "within went wrong");
        let events_seen = published(&mut events);
        assert_eq!(events_seen.len(), 1);
        let event = &events_seen[0];
        assert_eq!((event.kind, panic_message(event)), (HandlerKind::Within, "within went wrong"));

        // An `Err` from a within task takes the same path.
        let task = rx.within(|| async { Err::<(), _>(Rejected(9)) });
        let e = within(WAIT, "a failing within task", task).await.unwrap_err();
        assert_eq!(e.kind, HandlerKind::Within);
        assert_eq!(e.downcast_ref::<Rejected>(), Some(&Rejected(9)));
        assert_eq!(published(&mut events).len(), 1);

        // The relay is unaffected.
        let mut sub = rx.subscribe::<u8>();
        tx.send(1u8).await.unwrap();
        assert_eq!(*sub.recv().await.unwrap(), 1);
    }

    async fn propagate_mode_fails_the_send_then_the_panicking_handler_is_gone() {
        let (tx, rx) = Relay::builder().panic_mode(PanicMode::Propagate).build().unwrap();
        let mut events = rx.subscribe::<RelayError>();
        let calls = counter();
        let c = calls.clone();
        rx.sink::<u32>(move |n| {
            c.fetch_add(1, Ordering::SeqCst);
            if *n == 13 {
                panic!("propagated");
            }
        });
        tx.send(1u32).await.unwrap();

        // The sender is failed, not left hanging.
        let e = downstream(within(WAIT, "the send whose handler panics", tx.send(13u32)).await);
        assert_eq!((e.kind, panic_message(&e)), (HandlerKind::Sink, "propagated"));
        assert_eq!(published(&mut events).len(), 1);

        // The panic ended the handler's task: the handler is gone, later sends have no one
        // to wait for and nobody processes them.
        common::wait_until(WAIT, "the panicked handler to go away", || {
            let stats = rx.stats();
            stats.tracked_handlers == 0 && stats.live_tasks == 0
        })
        .await;
        within(WAIT, "a send after the handler is gone", tx.send(2u32)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    async fn propagate_mode_still_resolves_a_panicking_within_handle() {
        let (_tx, rx) = Relay::builder().panic_mode(PanicMode::Propagate).build().unwrap();
        let task = rx.within(|| explode("within, propagated"));
        let e = within(WAIT, "the handle of a panicking within task", task).await.unwrap_err();
        assert_eq!(panic_message(&e), "within, propagated");
    }
}

#[test]
fn an_empty_aggregate_displays_without_panicking() {
    // The relay never builds one, but the variant is public.
    assert_eq!(
        SendError::Aggregate(Vec::new()).to_string(),
        "0 handlers failed"
    );
    assert!(std::error::Error::source(&SendError::Aggregate(Vec::new())).is_none());
    assert!(SendError::Closed.errors().is_empty());
}
