//! Derived relays and connections: the tracking table (SEMANTICS.md, brief decision 6) row
//! by row, routing of `split` / `exclude`, echo prevention, fan-in and fan-out, and the
//! barriers under concurrent topology changes.
//!
//! | operation                       | the parent's `send` waits for     | its errors reach it |
//! |---------------------------------|-----------------------------------|---------------------|
//! | `filter` `only` `exclude` `split` | the decision and child's handlers | yes                 |
//! | `map` `filter_map` `batch`      | nothing: a new tracking boundary  | no (child only)     |
//! | `forward(target)`, `merge`      | nothing: an independent target    | no                  |

mod common;

use std::any::Any;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{downstream, sleep, timeout, wait_until, within, yield_now};
use pipedream_rs::{
    BoxFuture, DeliveryMode, Dropped, Envelope, ErrorMode, HandlerKind, Relay, RelayError,
    RelayReceiver, RelaySender, SendError, TryRecvError,
};

/// Bound for anything that must happen.
const BOUND: Duration = Duration::from_secs(10);
/// How long something that must not happen is given to happen anyway.
const BRIEFLY: Duration = Duration::from_millis(100);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad {0}")]
struct Bad(u32);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad text {0}")]
struct BadText(String);

/// A door handlers wait at until the test opens it (drops the [`Key`]).
#[derive(Clone)]
struct Gate(async_channel::Receiver<()>);
struct Key(async_channel::Sender<()>);

fn gate() -> (Key, Gate) {
    let (tx, rx) = async_channel::bounded(1);
    (Key(tx), Gate(rx))
}

impl Gate {
    async fn wait(&self) {
        let _ = self.0.recv().await;
    }
}

impl Key {
    fn open(self) {
        drop(self.0);
    }
}

/// A tracked sink for `T` on `rx` that announces each message on the returned channel,
/// then waits at `gate`.
fn gated_sink<T: Any + Send + Sync + Clone>(
    rx: &RelayReceiver,
    gate: &Gate,
) -> async_channel::Receiver<T> {
    let (entered_tx, entered) = async_channel::unbounded();
    let gate = gate.clone();
    rx.sink_async::<T>(move |msg: Arc<T>| {
        let (gate, entered_tx) = (gate.clone(), entered_tx.clone());
        async move {
            let _ = entered_tx.send((*msg).clone()).await;
            gate.wait().await;
        }
    });
    entered
}

/// A tracked sink for `T` on `rx` that sleeps a little, then records the message: if the
/// record is there when a send returns, the send waited for the sink.
fn slow_recording_sink<T: Any + Send + Sync + Clone>(rx: &RelayReceiver) -> Arc<Mutex<Vec<T>>> {
    let record = Arc::new(Mutex::new(Vec::new()));
    let r = record.clone();
    rx.sink_async::<T>(move |msg: Arc<T>| {
        let r = r.clone();
        async move {
            sleep(Duration::from_millis(10)).await;
            r.lock().unwrap().push((*msg).clone());
        }
    });
    record
}

/// A tracked sink for `u32` on `rx` that fails on 13.
fn sink_failing_on_13(rx: &RelayReceiver) {
    rx.sink::<u32>(|n| if *n == 13 { Err(Bad(*n)) } else { Ok(()) });
}

fn recorded<T: Clone>(record: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
    record.lock().unwrap().clone()
}

/// Checks the error a tracked parent got back from a child relay's failing sink.
fn assert_child_sink_error(e: &RelayError, child: &RelayReceiver, bad: u32) {
    assert_eq!(e.relay_id, child.id(), "the error names the child relay");
    assert_eq!(e.kind, HandlerKind::Sink);
    assert_eq!(e.type_name, "u32");
    assert_eq!(e.downcast_ref::<Bad>(), Some(&Bad(bad)));
}

// ----- tracked forwarders: filter, only, exclude, split ----------------------------------

on_every_runtime! {
    async fn filter_send_waits_for_the_decision_and_the_childs_tracked_handler() {
        let (tx, rx) = Relay::channel();
        let decided = Arc::new(Mutex::new(Vec::new()));
        let d = decided.clone();
        let big = rx.filter::<u32>(move |n| {
            d.lock().unwrap().push(*n);
            *n > 10
        });
        let handled = slow_recording_sink::<u32>(&big);
        let mut expected_handled = Vec::new();
        for n in [5u32, 20, 7, 30, 11] {
            within(BOUND, "tracked send through a filter", tx.send(n)).await.unwrap();
            assert_eq!(decided.lock().unwrap().last(), Some(&n), "decided before send returned");
            if n > 10 {
                expected_handled.push(n);
            }
            assert_eq!(recorded(&handled), expected_handled, "child sink ran before send returned");
        }
    }

    async fn filter_returns_the_childs_handler_error_named_by_the_child() {
        let (tx, rx) = Relay::channel();
        let mut parent_errors = rx.subscribe::<RelayError>();
        let child = rx.filter::<u32>(|n| *n > 10);
        let mut child_errors = child.subscribe::<RelayError>();
        sink_failing_on_13(&child);

        within(BOUND, "send 11", tx.send(11u32)).await.unwrap();
        within(BOUND, "send 1", tx.send(1u32)).await.unwrap();
        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_child_sink_error(&e, &child, 13);
        assert_eq!(e.msg_id, 2, "the child's own message id: 11 was its first message");

        // Published once, on the child where the sink lives; not repeated on the parent.
        let event = within(BOUND, "child RelayError event", child_errors.recv()).await.unwrap();
        assert_eq!((event.relay_id, event.msg_id), (child.id(), 2));
        assert_eq!(parent_errors.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(child_errors.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    async fn filter_does_not_wait_for_a_child_that_never_sees_the_message() {
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|n| *n >= 100);
        let (key, gate) = gate();
        let entered = gated_sink::<u32>(&child, &gate);

        // Filtered out: completes although the child's sink would block it forever.
        within(BOUND, "filtered-out send", tx.send(1u32)).await.unwrap();

        // Passed on: waits for the blocked sink.
        let mut passing = pin!(tx.send(100u32));
        let early = timeout(BRIEFLY, passing.as_mut()).await;
        assert!(early.is_none(), "the send waits for the child sink");
        assert_eq!(within(BOUND, "child sink got 100", entered.recv()).await.unwrap(), 100);
        key.open();
        within(BOUND, "send after the gate opened", passing).await.unwrap();
        assert!(entered.try_recv().is_err(), "the filtered-out 1 never reached the child");
    }

    async fn only_send_waits_for_the_childs_tracked_handler_and_returns_its_error() {
        let (tx, rx) = Relay::channel();
        let child = rx.only::<u32>();
        let handled = slow_recording_sink::<u32>(&child);
        sink_failing_on_13(&child);
        let (key, gate) = gate();
        let _entered = gated_sink::<String>(&child, &gate); // would block any String

        within(BOUND, "send 4", tx.send(4u32)).await.unwrap();
        assert_eq!(recorded(&handled), [4]);
        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_child_sink_error(&e, &child, 13);
        // Other types never reach `only::<u32>`: the blocked String sink is not waited for.
        within(BOUND, "send a String", tx.send(String::from("x"))).await.unwrap();
        key.open();
    }

    async fn exclude_send_waits_for_the_childs_tracked_handler_and_returns_its_error() {
        let (tx, rx) = Relay::channel();
        let child = rx.exclude::<u8>();
        let handled = slow_recording_sink::<u32>(&child);
        sink_failing_on_13(&child);
        let (key, gate) = gate();
        let _entered = gated_sink::<u8>(&child, &gate); // would block any u8

        within(BOUND, "send 4", tx.send(4u32)).await.unwrap();
        assert_eq!(recorded(&handled), [4]);
        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_child_sink_error(&e, &child, 13);
        // The excluded type completes at once: the child's blocked u8 sink never sees it.
        within(BOUND, "send an excluded u8", tx.send(1u8)).await.unwrap();
        key.open();
    }

    async fn split_send_waits_for_either_childs_handler_and_returns_its_error() {
        let (tx, rx) = Relay::channel();
        let (numbers, rest) = rx.split::<u32>();
        let numbers_handled = slow_recording_sink::<u32>(&numbers);
        sink_failing_on_13(&numbers);
        let rest_handled = slow_recording_sink::<String>(&rest);
        rest.sink::<String>(|s| {
            if s == "bad" { Err(BadText(s.clone())) } else { Ok(()) }
        });

        within(BOUND, "send 4", tx.send(4u32)).await.unwrap();
        assert_eq!(recorded(&numbers_handled), [4]);
        within(BOUND, "send text", tx.send(String::from("ok"))).await.unwrap();
        assert_eq!(recorded(&rest_handled), ["ok"]);

        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_child_sink_error(&e, &numbers, 13);
        let e = downstream(within(BOUND, "send bad", tx.send(String::from("bad"))).await);
        assert_eq!(e.relay_id, rest.id());
        assert_eq!(e.downcast_ref::<BadText>(), Some(&BadText("bad".into())));
    }

    async fn tracking_passes_through_a_chain_of_tracked_forwarders() {
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|n| *n > 1);
        let grandchild = child.exclude::<u8>();
        let great = grandchild.only::<u32>();
        let handled = slow_recording_sink::<u32>(&great);
        sink_failing_on_13(&great);

        within(BOUND, "send 5", tx.send(5u32)).await.unwrap();
        assert_eq!(recorded(&handled), [5]);
        let e = downstream(within(BOUND, "send 13", tx.send(13u32)).await);
        assert_child_sink_error(&e, &great, 13);
    }

    async fn aggregate_mode_returns_every_child_error_through_a_filter() {
        let (tx, rx) = Relay::builder().error_mode(ErrorMode::Aggregate).build().unwrap();
        let child = rx.filter::<u32>(|_| true);
        child.sink::<u32>(|n| Err(Bad(*n)));
        child.sink::<u32>(|n| Err(Bad(*n + 1)));
        match within(BOUND, "send 7", tx.send(7u32)).await {
            Err(SendError::Aggregate(errors)) => {
                assert_eq!(errors.len(), 2);
                assert!(errors.iter().all(|e| e.relay_id == child.id()));
                let mut bad: Vec<u32> =
                    errors.iter().map(|e| e.downcast_ref::<Bad>().unwrap().0).collect();
                bad.sort();
                assert_eq!(bad, [7, 8]);
            }
            other => panic!("expected SendError::Aggregate, got {other:?}"),
        }
    }
}

// ----- tracking boundaries: map, filter_map, batch ---------------------------------------

/// The parent's send of a `u32` completes while the child's sink (for `C`) is blocked.
async fn parent_send_does_not_wait_for_the_boundary_child<C: Any + Send + Sync + Clone>(
    make: impl Fn(&RelayReceiver) -> RelayReceiver,
) {
    let (tx, rx) = Relay::channel();
    let child = make(&rx);
    let (key, gate) = gate();
    let entered = gated_sink::<C>(&child, &gate);
    within(BOUND, "first send past the boundary", tx.send(1u32))
        .await
        .unwrap();
    within(BOUND, "child sink got the first message", entered.recv())
        .await
        .unwrap();
    // The child's sink is now certainly blocked; the parent still does not wait.
    within(BOUND, "second send past the boundary", tx.send(2u32))
        .await
        .unwrap();
    assert!(
        entered.try_recv().is_err(),
        "the blocked sink took nothing else"
    );
    key.open();
    within(BOUND, "child sink got the second message", entered.recv())
        .await
        .unwrap();
}

/// The child's sink errors reach `RelayError` subscribers on the child, not the parent's
/// sender nor the parent's `RelayError` subscribers.
async fn boundary_child_errors_stay_on_the_child<C: Any + Send + Sync>(
    make: impl Fn(&RelayReceiver) -> RelayReceiver,
) {
    let (tx, rx) = Relay::channel();
    let mut parent_errors = rx.subscribe::<RelayError>();
    let child = make(&rx);
    let mut child_errors = child.subscribe::<RelayError>();
    child.sink::<C>(|_| Err(Bad(0)));

    within(BOUND, "send past the boundary", tx.send(7u32))
        .await
        .unwrap();
    let e = within(BOUND, "the child's RelayError", child_errors.recv())
        .await
        .unwrap();
    assert_eq!(e.relay_id, child.id());
    assert_eq!(e.kind, HandlerKind::Sink);
    assert_eq!(e.type_name, std::any::type_name::<C>());
    assert_eq!(e.downcast_ref::<Bad>(), Some(&Bad(0)));
    sleep(BRIEFLY).await;
    assert_eq!(parent_errors.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(child_errors.try_recv().unwrap_err(), TryRecvError::Empty);
}

on_every_runtime! {
    async fn map_send_does_not_wait_for_the_childs_handlers() {
        parent_send_does_not_wait_for_the_boundary_child::<u64>(|rx| {
            rx.map::<u32, u64>(|n| u64::from(*n))
        })
        .await;
    }

    async fn map_child_handler_errors_stay_on_the_child() {
        boundary_child_errors_stay_on_the_child::<u64>(|rx| {
            rx.map::<u32, u64>(|n| u64::from(*n))
        })
        .await;
    }

    async fn filter_map_send_does_not_wait_for_the_childs_handlers() {
        parent_send_does_not_wait_for_the_boundary_child::<String>(|rx| {
            rx.filter_map::<u32, String>(|n| Some(n.to_string()))
        })
        .await;
    }

    async fn filter_map_child_handler_errors_stay_on_the_child() {
        boundary_child_errors_stay_on_the_child::<String>(|rx| {
            rx.filter_map::<u32, String>(|n| Some(n.to_string()))
        })
        .await;
    }

    async fn batch_send_does_not_wait_for_the_childs_handlers() {
        parent_send_does_not_wait_for_the_boundary_child::<Vec<u32>>(|rx| {
            rx.batch::<u32>(1).unwrap()
        })
        .await;
    }

    async fn batch_child_handler_errors_stay_on_the_child() {
        boundary_child_errors_stay_on_the_child::<Vec<u32>>(|rx| rx.batch::<u32>(1).unwrap())
            .await;
    }

    async fn a_boundary_stops_tracking_for_tracked_forwarders_below_it() {
        let (tx, rx) = Relay::channel();
        let mapped = rx.map::<u32, u32>(|n| *n);
        let filtered = mapped.filter::<u32>(|_| true);
        let mut errors = filtered.subscribe::<RelayError>();
        sink_failing_on_13(&filtered);
        within(BOUND, "send 13", tx.send(13u32)).await.unwrap();
        let e = within(BOUND, "grandchild RelayError", errors.recv()).await.unwrap();
        assert_eq!(e.relay_id, filtered.id());
    }
}

// ----- forward and merge: independent targets --------------------------------------------

on_every_runtime! {
    async fn forward_target_handlers_are_not_waited_for_nor_their_errors_returned() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let mut b_errors = b.subscribe::<RelayError>();
        sink_failing_on_13(&b);
        let (key, gate) = gate();
        let entered = gated_sink::<u32>(&b, &gate);
        let forwarding = a.forward_detached(&b_tx);

        within(BOUND, "send 13 on the source", a_tx.send(13u32)).await.unwrap();
        assert_eq!(within(BOUND, "target sink got 13", entered.recv()).await.unwrap(), 13);
        within(BOUND, "send while the target is blocked", a_tx.send(14u32)).await.unwrap();
        let e = within(BOUND, "target RelayError", b_errors.recv()).await.unwrap();
        assert_eq!((e.relay_id, e.downcast_ref::<Bad>()), (b.id(), Some(&Bad(13))));
        key.open();
        assert_eq!(within(BOUND, "target sink got 14", entered.recv()).await.unwrap(), 14);
        drop(a_tx);
        within(BOUND, "forward ends with its source", forwarding).await.unwrap();
    }

    async fn merge_target_handlers_are_not_waited_for_nor_their_errors_returned() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let merged = Relay::merge([a, b]);
        let mut merged_errors = merged.subscribe::<RelayError>();
        sink_failing_on_13(&merged);
        let (key, gate) = gate();
        let entered = gated_sink::<u32>(&merged, &gate);

        within(BOUND, "send 13 on an input", a_tx.send(13u32)).await.unwrap();
        assert_eq!(within(BOUND, "merged sink got 13", entered.recv()).await.unwrap(), 13);
        within(BOUND, "send while merged is blocked", b_tx.send(14u32)).await.unwrap();
        let e = within(BOUND, "merged RelayError", merged_errors.recv()).await.unwrap();
        assert_eq!((e.relay_id, e.downcast_ref::<Bad>()), (merged.id(), Some(&Bad(13))));
        key.open();
        assert_eq!(within(BOUND, "merged sink got 14", entered.recv()).await.unwrap(), 14);
    }

    async fn forward_from_a_closed_source_ends_at_once() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, _b) = Relay::channel();
        a_tx.close();
        let mut forwarding = pin!(a.forward(&b_tx));
        assert!(futures::poll!(forwarding.as_mut()).is_ready());
        within(BOUND, "detached forward from a closed source", a.forward_detached(&b_tx))
            .await
            .unwrap();
        drop(a_tx);
        // A source that is gone entirely behaves the same.
        let mut forwarding = pin!(a.forward(&b_tx));
        assert!(futures::poll!(forwarding.as_mut()).is_ready());
    }

    async fn forward_into_a_closed_target_ends_at_once() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, _b) = Relay::channel();
        let target = b_tx.weak();
        b_tx.close();
        let mut forwarding = pin!(a.forward(&target));
        assert!(futures::poll!(forwarding.as_mut()).is_ready());
        within(BOUND, "send on the source", a_tx.send(1u32)).await.unwrap();
    }

    async fn forward_ends_when_its_target_closes() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let mut on_b = b.subscribe::<u32>();
        let forwarding = a.forward_detached(&b_tx);
        within(BOUND, "send 1", a_tx.send(1u32)).await.unwrap();
        assert_eq!(*within(BOUND, "forwarded 1", on_b.recv()).await.unwrap(), 1);

        drop(b_tx);
        within(BOUND, "forward ends when the target closes", forwarding).await.unwrap();
        assert!(!a_tx.is_closed(), "the source stays open");
        assert_eq!(a.stats().subscribers, 0, "the forward unregistered from the source");
        within(BOUND, "the source still sends", a_tx.send(2u32)).await.unwrap();
        assert!(within(BOUND, "b ended", on_b.recv()).await.is_none());
    }
}

// ----- routing of split and exclude ------------------------------------------------------

/// Sends `u32`, `&str`, `String`, `u64` in turn, checking after each where it went.
async fn split_routing(
    tx: &pipedream_rs::RelaySender,
    first: &mut pipedream_rs::EnvelopeSubscription,
    second: &mut pipedream_rs::EnvelopeSubscription,
) {
    within(BOUND, "send u32", tx.send(1u32)).await.unwrap();
    let env = first.try_recv().expect("the u32 went to the first child");
    assert_eq!(*env.downcast::<u32>().unwrap(), 1);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);

    within(BOUND, "send &str", tx.send("two")).await.unwrap();
    within(BOUND, "send String", tx.send(String::from("three")))
        .await
        .unwrap();
    within(BOUND, "send u64", tx.send(4u64)).await.unwrap();
    within(BOUND, "send u32", tx.send(5u32)).await.unwrap();
    assert_eq!(
        *second.try_recv().unwrap().downcast::<&str>().unwrap(),
        "two"
    );
    assert_eq!(
        second
            .try_recv()
            .unwrap()
            .downcast::<String>()
            .unwrap()
            .as_str(),
        "three"
    );
    assert_eq!(*second.try_recv().unwrap().downcast::<u64>().unwrap(), 4);
    assert_eq!(*first.try_recv().unwrap().downcast::<u32>().unwrap(), 5);
    assert_eq!(first.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(second.try_recv().unwrap_err(), TryRecvError::Empty);
}

/// A child made by `make` (a wildcard tracked forwarder) passes on ordinary messages but
/// not the parent's `Dropped` and `RelayError` events.
async fn internal_events_are_not_passed_on(make: impl Fn(&RelayReceiver) -> RelayReceiver) {
    // Queues of 2: one stalled subscriber overflows on the third u16 (a `Dropped`); every
    // send waits for the forwarder, so its own queue never holds more than an event and
    // one message.
    let (tx, rx) = Relay::channel_with_size(2);
    let mut parent_drops = rx.subscribe::<Dropped>();
    let mut parent_errors = rx.subscribe::<RelayError>();
    let _stalled = rx.subscribe::<u16>();
    rx.sink::<i32>(|n| Err(Bad(n.unsigned_abs())));
    let child = make(&rx);
    let mut on_child = child.subscribe_all();

    let mut got: Vec<&'static str> = Vec::new();
    for n in 0..3u16 {
        within(BOUND, "send u16", tx.send(n)).await.unwrap();
        got.push(
            within(BOUND, "u16 on the child", on_child.recv())
                .await
                .unwrap()
                .type_name(),
        );
    }
    downstream(within(BOUND, "send failing i32", tx.send(-1i32)).await);
    got.push(
        within(BOUND, "i32 on the child", on_child.recv())
            .await
            .unwrap()
            .type_name(),
    );
    assert_eq!(got, ["u16", "u16", "u16", "i32"]);

    // The events did happen on the parent ...
    assert_eq!(
        within(BOUND, "parent Dropped", parent_drops.recv())
            .await
            .unwrap()
            .type_name,
        "u16"
    );
    assert_eq!(
        within(BOUND, "parent RelayError", parent_errors.recv())
            .await
            .unwrap()
            .type_name,
        "i32"
    );
    // ... and the child, which ends with its parent, never saw them.
    drop(tx);
    let rest: Vec<Envelope> = within(BOUND, "child drained", async {
        let mut rest = Vec::new();
        while let Some(env) = on_child.recv().await {
            rest.push(env);
        }
        rest
    })
    .await;
    assert!(rest.is_empty(), "child got {rest:?}");
}

on_every_runtime! {
    async fn split_sends_t_to_the_first_child_and_everything_else_to_the_second() {
        let (tx, rx) = Relay::channel();
        let (numbers, rest) = rx.split::<u32>();
        let (mut first, mut second) = (numbers.subscribe_all(), rest.subscribe_all());
        split_routing(&tx, &mut first, &mut second).await;
    }

    async fn exclude_passes_on_every_other_type() {
        let (tx, rx) = Relay::channel();
        let mut on_child = rx.exclude::<u32>().subscribe_all();
        within(BOUND, "send u32", tx.send(1u32)).await.unwrap();
        within(BOUND, "send &str", tx.send("two")).await.unwrap();
        within(BOUND, "send u64", tx.send(3u64)).await.unwrap();
        assert_eq!(*on_child.try_recv().unwrap().downcast::<&str>().unwrap(), "two");
        assert_eq!(*on_child.try_recv().unwrap().downcast::<u64>().unwrap(), 3);
        assert_eq!(on_child.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    async fn exclude_does_not_pass_on_dropped_or_relay_error_events() {
        internal_events_are_not_passed_on(|rx| rx.exclude::<u8>()).await;
    }

    async fn split_does_not_pass_on_dropped_or_relay_error_events() {
        internal_events_are_not_passed_on(|rx| rx.split::<u8>().1).await;
    }

    async fn only_and_filter_pass_on_only_their_type() {
        let (tx, rx) = Relay::channel();
        let mut only = rx.only::<u32>().subscribe_all();
        let mut filtered = rx.filter::<u32>(|_| true).subscribe_all();
        within(BOUND, "send &str", tx.send("no")).await.unwrap();
        within(BOUND, "send u32", tx.send(1u32)).await.unwrap();
        assert!(only.try_recv().unwrap().is::<u32>());
        assert!(filtered.try_recv().unwrap().is::<u32>());
        assert_eq!(only.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(filtered.try_recv().unwrap_err(), TryRecvError::Empty);
    }
}

// ----- echo prevention -------------------------------------------------------------------

async fn recv_n(sub: &mut pipedream_rs::Subscription<u32>, n: usize, what: &str) -> Vec<u32> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(*within(BOUND, what, sub.recv()).await.expect("a message"));
    }
    got.sort();
    got
}

/// Forwarding both ways between two relays made by `relay`: no echo.
async fn both_ways_in(relay: fn() -> (RelaySender, RelayReceiver)) {
    let (a_tx, a) = relay();
    let (b_tx, b) = relay();
    let (mut on_a, mut on_b) = (a.subscribe::<u32>(), b.subscribe::<u32>());
    let a_to_b = a.forward_detached(&b_tx);
    let b_to_a = b.forward_detached(&a_tx);

    within(BOUND, "send on a", a_tx.send(1u32)).await.unwrap();
    within(BOUND, "send on b", b_tx.send(2u32)).await.unwrap();
    assert_eq!(recv_n(&mut on_a, 2, "a's messages").await, [1, 2]);
    assert_eq!(recv_n(&mut on_b, 2, "b's messages").await, [1, 2]);

    sleep(BRIEFLY).await;
    assert_eq!(on_a.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(on_b.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!((a.stats().sent, b.stats().sent), (2, 2));
    sleep(BRIEFLY).await;
    assert_eq!((a.stats().sent, b.stats().sent), (2, 2), "nothing circles");

    drop((a_tx, b_tx));
    within(BOUND, "a -> b ends", a_to_b).await.unwrap();
    within(BOUND, "b -> a ends", b_to_a).await.unwrap();
}

/// A forwarding triangle of relays made by `relay`: no echo.
async fn triangle_in(relay: fn() -> (RelaySender, RelayReceiver)) {
    let (a_tx, a) = relay();
    let (b_tx, b) = relay();
    let (c_tx, c) = relay();
    let mut subs = [
        a.subscribe::<u32>(),
        b.subscribe::<u32>(),
        c.subscribe::<u32>(),
    ];
    let forwards = [
        a.forward_detached(&b_tx),
        b.forward_detached(&c_tx),
        c.forward_detached(&a_tx),
    ];
    within(BOUND, "send on a", a_tx.send(1u32)).await.unwrap();
    within(BOUND, "send on b", b_tx.send(2u32)).await.unwrap();
    within(BOUND, "send on c", c_tx.send(3u32)).await.unwrap();
    for sub in &mut subs {
        assert_eq!(recv_n(sub, 3, "three messages").await, [1, 2, 3]);
    }
    sleep(BRIEFLY).await;
    for sub in &mut subs {
        assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    }
    let sent = || [a.stats().sent, b.stats().sent, c.stats().sent];
    assert_eq!(sent(), [3, 3, 3]);
    sleep(BRIEFLY).await;
    assert_eq!(sent(), [3, 3, 3], "nothing circles");

    drop((a_tx, b_tx, c_tx));
    for f in forwards {
        within(BOUND, "forward ends", f).await.unwrap();
    }
}

on_every_runtime! {
    async fn forwarding_both_ways_delivers_once_to_each_side_then_goes_quiet() {
        both_ways_in(Relay::channel).await;
    }

    async fn forwarding_both_ways_in_lossless_mode_delivers_once_to_each_side_then_goes_quiet() {
        both_ways_in(|| common::lossless(4)).await;
    }

    async fn a_forwarding_triangle_delivers_once_to_each_relay_then_goes_quiet() {
        triangle_in(Relay::channel).await;
    }

    async fn a_forwarding_triangle_in_lossless_mode_delivers_once_to_each_relay_then_goes_quiet() {
        triangle_in(|| common::lossless(4)).await;
    }

    async fn forwarded_messages_carry_no_tracker_of_the_source() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let a_handled = slow_recording_sink::<u32>(&a);
        let (key, gate) = gate();
        let b_entered = gated_sink::<u32>(&b, &gate);
        let _forwarding = a.forward_detached(&b_tx);

        within(BOUND, "send 1 on a", a_tx.send(1u32)).await.unwrap();
        assert_eq!(within(BOUND, "b's sink got 1", b_entered.recv()).await.unwrap(), 1);
        // b's tracked sink is blocked on 1; a's sends wait only for a's own sink.
        within(BOUND, "send 2 on a", a_tx.send(2u32)).await.unwrap();
        assert_eq!(recorded(&a_handled), [1, 2]);
        key.open();
        assert_eq!(within(BOUND, "b's sink got 2", b_entered.recv()).await.unwrap(), 2);
    }

    async fn a_targets_tracked_sink_does_not_complete_the_sources_message() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let (key, gate) = gate();
        let a_entered = gated_sink::<u32>(&a, &gate);
        let b_handled = Arc::new(AtomicUsize::new(0));
        let h = b_handled.clone();
        b.sink::<u32>(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        let _forwarding = a.forward_detached(&b_tx);

        let mut send = pin!(a_tx.send(1u32));
        assert!(timeout(BRIEFLY, send.as_mut()).await.is_none());
        within(BOUND, "a's sink got 1", a_entered.recv()).await.unwrap();
        wait_until(BOUND, "b's sink handled 1", || b_handled.load(Ordering::SeqCst) == 1).await;
        // b's tracked sink completed the same value; a's send still waits for a's sink.
        assert!(timeout(BRIEFLY, send.as_mut()).await.is_none(), "b completed a's message");
        key.open();
        within(BOUND, "a's send after its sink finished", send).await.unwrap();
        assert_eq!(b_handled.load(Ordering::SeqCst), 1);
    }
}

// ----- fan-in and fan-out ----------------------------------------------------------------

const PER_SENDER: u32 = 1_000;

on_every_runtime! {
    async fn merge_of_three_lossless_relays_under_concurrent_senders_delivers_each_message_once() {
        let lossless = || {
            Relay::builder()
                .delivery_mode(DeliveryMode::Lossless)
                .channel_size(64)
                .build()
                .unwrap()
        };
        let inputs = [lossless(), lossless(), lossless()];
        let merged = Relay::merge(inputs.iter().map(|(_, rx)| rx.clone()));
        let mut sub = merged.subscribe::<u32>();
        let senders: Vec<_> = inputs
            .into_iter()
            .zip(0u32..)
            .map(|((tx, rx), k)| {
                rx.within(move || async move {
                    for i in 0..PER_SENDER {
                        tx.send(k * PER_SENDER + i).await.expect("lossless send");
                    }
                    // `tx` drops here: this input closes.
                })
            })
            .collect();

        let mut got = Vec::new();
        while let Some(n) = within(BOUND, "merged message or end", sub.recv()).await {
            got.push(*n);
        }
        for sender in senders {
            within(BOUND, "sender finished", sender).await.unwrap();
        }
        for k in 0..3 {
            let from_k: Vec<u32> =
                got.iter().copied().filter(|n| n / PER_SENDER == k).collect();
            let expected: Vec<u32> = (k * PER_SENDER..(k + 1) * PER_SENDER).collect();
            assert_eq!(from_k, expected, "input {k}: every message once, in order");
        }
        assert_eq!(got.len(), 3 * PER_SENDER as usize);
        assert_eq!(merged.stats().dropped, 0);
        assert!(merged.is_closed());
    }

    async fn a_merged_relay_closes_once_all_its_inputs_have_closed() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let (c_tx, c) = Relay::channel();
        let merged = a.merge([b, c]);
        let mut sub = merged.subscribe::<u32>();
        drop(a_tx);
        drop(b_tx);
        within(BOUND, "send on the last input", c_tx.send(3u32)).await.unwrap();
        assert_eq!(*within(BOUND, "merged 3", sub.recv()).await.unwrap(), 3);
        sleep(BRIEFLY).await;
        assert!(!merged.is_closed(), "one input is still open");
        drop(c_tx);
        within(BOUND, "merged closes", merged.closed()).await;
        assert!(within(BOUND, "merged ends", sub.recv()).await.is_none());
    }

    async fn a_merge_of_no_inputs_is_closed_at_once() {
        let merged = Relay::merge(Vec::new());
        assert!(merged.is_closed());
        assert!(merged.subscribe::<u32>().recv().await.is_none());
    }

    async fn fan_out_to_16_filters_tracks_every_child() {
        let (tx, rx) = Relay::channel();
        let records: Vec<_> = (0..16u32)
            .map(|i| {
                let child = rx.filter::<u32>(move |n| *n >= i);
                let record = Arc::new(Mutex::new(Vec::new()));
                let r = record.clone();
                child.sink::<u32>(move |n| r.lock().unwrap().push(*n));
                record
            })
            .collect();
        for n in 0..100u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        // Tracked all the way: every child handled every message before its send returned.
        for (i, record) in (0u32..).zip(&records) {
            assert_eq!(recorded(record), (i..100).collect::<Vec<_>>(), "child {i}");
        }
    }

    async fn fan_out_to_16_maps_delivers_to_every_child() {
        let (tx, rx) = Relay::channel();
        let mut subs: Vec<_> = (0..16u64)
            .map(|i| rx.map::<u32, u64>(move |n| u64::from(*n) * 16 + i).subscribe::<u64>())
            .collect();
        for n in 0..100u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        for (i, sub) in (0u64..).zip(&mut subs) {
            let mut got = Vec::new();
            while let Some(v) = within(BOUND, "mapped message or end", sub.recv()).await {
                got.push(*v);
            }
            assert_eq!(got, (0..100).map(|n| n * 16 + i).collect::<Vec<_>>(), "child {i}");
        }
    }
}

// ----- barriers under concurrent topology changes ----------------------------------------

/// A spawner that holds every task until [`Deferred::release`], then runs them (and
/// every later one) on `runner`'s spawner: the runtime the test is on.
struct Deferred {
    held: Mutex<Option<Vec<BoxFuture>>>,
    runner: RelayReceiver,
}

impl Deferred {
    fn new(runner: RelayReceiver) -> Arc<Self> {
        Arc::new(Deferred {
            held: Mutex::new(Some(Vec::new())),
            runner,
        })
    }

    fn spawner(self: &Arc<Self>) -> impl Fn(BoxFuture) + Send + Sync + 'static {
        let this = self.clone();
        move |task: BoxFuture| {
            let mut held = this.held.lock().unwrap();
            match held.as_mut() {
                Some(held) => held.push(task),
                None => {
                    drop(held);
                    drop(this.runner.within(move || task)); // detached
                }
            }
        }
    }

    fn release(&self) -> usize {
        let held = self.held.lock().unwrap().take().unwrap_or_default();
        let n = held.len();
        for task in held {
            drop(self.runner.within(move || task)); // detached
        }
        n
    }
}

on_every_runtime! {
    async fn concurrent_senders_racing_filter_creation_never_hang() {
        const SENDERS: u32 = 50;
        const EACH: u32 = 20;
        let (tx, rx) = Relay::channel();
        let total = Arc::new(AtomicUsize::new(0));
        let t = total.clone();
        rx.filter::<u32>(|_| true).sink::<u32>(move |_| {
            t.fetch_add(1, Ordering::SeqCst);
        });

        // Even sends counted just before they are called and just after they return: a
        // child gets every even send called after it was made, and none that returned
        // before it began (the snapshot is taken at the call).
        let (even_called, even_returned) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let (weak, called, returned) = (tx.weak(), even_called.clone(), even_returned.clone());
                rx.within(move || async move {
                    for i in 0..EACH {
                        let n = s * EACH + i;
                        if n % 2 == 0 {
                            called.fetch_add(1, Ordering::SeqCst);
                        }
                        weak.send(n).await.expect("send");
                        if n % 2 == 0 {
                            returned.fetch_add(1, Ordering::SeqCst);
                        }
                        yield_now().await;
                    }
                })
            })
            .collect();
        let created = Arc::new(Mutex::new(Vec::new()));
        let creators: Vec<_> = (0..5)
            .map(|_| {
                let (parent, created) = (rx.clone(), created.clone());
                let (called, returned) = (even_called.clone(), even_returned.clone());
                rx.within(move || async move {
                    for _ in 0..10 {
                        let returned_before = returned.load(Ordering::SeqCst);
                        let child = parent.filter::<u32>(|n| n % 2 == 0);
                        let count = Arc::new(AtomicUsize::new(0));
                        let c = count.clone();
                        child.sink::<u32>(move |_| {
                            c.fetch_add(1, Ordering::SeqCst);
                        });
                        let called_after = called.load(Ordering::SeqCst);
                        created.lock().unwrap().push((child, count, returned_before, called_after));
                        yield_now().await;
                    }
                })
            })
            .collect();

        for handle in senders.into_iter().chain(creators) {
            within(BOUND, "sender or creator finished", handle).await.unwrap();
        }
        assert_eq!(total.load(Ordering::SeqCst), (SENDERS * EACH) as usize);
        within(BOUND, "ready after the race", rx.ready()).await;
        let created = std::mem::take(&mut *created.lock().unwrap());
        assert_eq!(created.len(), 50);
        let evens = (SENDERS * EACH / 2) as usize;
        for (i, (_, count, returned_before, called_after)) in created.iter().enumerate() {
            let got = count.load(Ordering::SeqCst);
            assert!(
                evens - called_after <= got && got <= evens - returned_before,
                "child {i}: {got} messages, expected {}..={}",
                evens - called_after,
                evens - returned_before
            );
        }
        drop(tx);
        for (child, ..) in &created {
            within(BOUND, "created child closes", child.closed()).await;
        }
    }

    async fn ready_releases_50_waiters_once_deferred_forwarders_and_handlers_start() {
        let (_runner_tx, runner) = Relay::channel();
        let deferred = Deferred::new(runner);
        let (tx, rx) = Relay::builder().spawner(deferred.spawner()).build().unwrap();
        let child = rx.filter::<u32>(|_| true); // its forwarder is a task of `rx`
        let handled = Arc::new(AtomicUsize::new(0));
        let h = handled.clone();
        child.sink::<u32>(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });

        let released = Arc::new(AtomicUsize::new(0));
        let waiters = futures::future::join_all((0..50).map(|i| {
            let relay = if i % 2 == 0 { rx.clone() } else { child.clone() };
            let released = released.clone();
            async move {
                relay.ready().await;
                released.fetch_add(1, Ordering::SeqCst);
            }
        }));
        let mut waiters = pin!(waiters);
        assert!(timeout(BRIEFLY, waiters.as_mut()).await.is_none(), "no task has started");
        assert_eq!(released.load(Ordering::SeqCst), 0);

        assert_eq!(deferred.release(), 2, "the filter's forwarder and the child's sink");
        within(BOUND, "all 50 waiters released", waiters).await;
        assert_eq!(released.load(Ordering::SeqCst), 50);
        within(BOUND, "send through the started tasks", tx.send(1u32)).await.unwrap();
        assert_eq!(handled.load(Ordering::SeqCst), 1);
    }
}
