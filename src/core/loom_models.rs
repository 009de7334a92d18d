//! loom models of the waits whose lost wake-up would hang a `send` or a receiver: the
//! completion tracker, the readiness barrier, the lossless capacity wait (per message,
//! batched, a waiter let in by one take, a cancelled waiting push), and the receiver's own
//! wait with the channel it lets go of when idle (a push waking a parked receiver, a
//! channel retired while a sender holds it, the end of the queue, a close racing a push, a
//! batch's run of pushes with one wake-up), a drop-oldest eviction racing the receiver
//! (a take, and a parking receiver that lets go of its channel), and the idle barrier.
//! Run with
//! `RUSTFLAGS="--cfg loom" cargo test --lib --release --no-default-features loom_`
//! (see docs/testing.md). Each model keeps to ≤ 3 threads and a few operations.

use std::sync::Arc;

use loom::future::block_on;
use loom::thread;

use crate::core::queue::{QueueRx, QueueTx};
use crate::core::tasks::Tasks;
use crate::core::tracker::Tracker;
use crate::relay::config::ErrorMode;
use crate::relay::error::{HandlerKind, PanicError, RelayError, SendError};

/// `loom::model`, printing how many interleavings it explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    RUNS.store(0, std::sync::atomic::Ordering::SeqCst);
    loom::model(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        f();
    });
    println!(
        "loom: {name}: {} interleavings",
        RUNS.load(std::sync::atomic::Ordering::SeqCst)
    );
}

fn error() -> RelayError {
    RelayError {
        msg_id: 1,
        relay_id: 1,
        kind: HandlerKind::Sink,
        type_name: "t",
        error: Arc::new(PanicError {
            message: "x".into(),
        }),
    }
}

/// The 0.1 bug: a completion landing between the waiter's check and its listen was lost.
/// Here two handlers complete (one fails) while the sender waits: in every interleaving
/// the wait returns, exactly once, with the failure.
#[test]
fn loom_tracker_wait_sees_every_completion() {
    model("tracker first-wins", || {
        let tracker = Arc::new(Tracker::new(2, ErrorMode::FirstWins, Vec::new()));
        let a = tracker.clone();
        let b = tracker.clone();
        let ta = thread::spawn(move || a.complete(1));
        let tb = thread::spawn(move || b.fail(2, error()));
        let verdict = block_on(tracker.wait());
        assert!(matches!(verdict, Err(SendError::Downstream(_))));
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

/// Aggregate mode: both failures are seen, whichever order they land in.
#[test]
fn loom_tracker_aggregate_keeps_both_errors() {
    model("tracker aggregate", || {
        let tracker = Arc::new(Tracker::new(2, ErrorMode::Aggregate, Vec::new()));
        let a = tracker.clone();
        let t = thread::spawn(move || a.fail(1, error()));
        tracker.fail(2, error());
        match block_on(tracker.wait()) {
            Err(SendError::Aggregate(v)) => assert_eq!(v.len(), 2),
            other => panic!("{other:?}"),
        }
        t.join().unwrap();
    });
}

/// A waiter on the readiness barrier is released when the last task starts (here: when
/// its executor drops it unpolled, which must count as started too). Releasing many
/// waiters at once is event-listener's `notify(usize::MAX)`, tested at runtime with 50.
#[test]
fn loom_ready_releases_every_waiter() {
    model("ready barrier", || {
        let tasks = Arc::new(Tasks::default());
        let captured = Arc::new(std::sync::Mutex::new(None));
        let slot = captured.clone();
        tasks.spawn(
            &move |task: crate::spawner::BoxFuture| *slot.lock().unwrap() = Some(task),
            async {},
        );
        let task = captured.lock().unwrap().take().unwrap();
        let starter = thread::spawn(move || drop(task));
        block_on(tasks.ready());
        starter.join().unwrap();
        assert_eq!(tasks.live(), 0);
    });
}

/// Lossless capacity wait: with room for one message, a sender pushing two while the
/// receiver takes them never misses the wake-up that frees the slot.
#[test]
fn loom_lossless_push_waits_for_room_and_wakes() {
    model("lossless capacity wait", || {
        let (tx, mut rx) = crate::core::queue::queue(1, 1, None, Box::default());
        let producer = thread::spawn(move || {
            for n in 0..2u64 {
                block_on(tx.push(item(n))).ok().expect("receiver alive");
            }
            tx
        });
        let first = block_on(rx.recv()).unwrap();
        let second = block_on(rx.recv()).unwrap();
        assert_eq!((first.envelope.msg_id, second.envelope.msg_id), (0, 1));
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// Batched credit: with room for two, given back two at a time, a sender pushing three
/// while the receiver takes three is never left waiting. The room comes back by the
/// receiver's full batch, by the receiver before it waits on an empty queue, or by the
/// sender taking back held-back room when it finds the queue full. Each unit of held-back
/// room is moved out exactly once, whoever moves it.
#[test]
fn loom_batched_credit_wakes_the_waiting_sender() {
    model("batched credit", || {
        let (tx, mut rx) = crate::core::queue::queue_with_credit_batch(2, 2, 1, None);
        let producer = thread::spawn(move || {
            for n in 0..3u64 {
                block_on(tx.push(item(n))).ok().expect("receiver alive");
            }
            tx
        });
        for n in 0..3u64 {
            assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, n);
        }
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// A sender already waiting on a full queue gets the room of a single take, although the
/// batch (two) is not complete and the receiver takes nothing more until the send is done.
/// Either the receiver's per-message add sees the waiter and gives the slot back at once,
/// or the sender registered later and takes the slot back itself. Mutating `taken` to
/// ignore waiters makes loom report a deadlock.
#[test]
fn loom_a_waiting_sender_gets_the_room_of_one_take() {
    model("room of one take", || {
        one_take_from_a_full_queue(|tx| {
            block_on(tx.push(item(2))).ok().expect("receiver alive");
        });
    });
}

/// A lossless push cancelled while it waits (polled once, then dropped), then a fresh push,
/// while the receiver takes one message: the cancelled sender leaves no waiter behind and
/// no room lost, and the fresh push gets the slot.
#[test]
fn loom_a_cancelled_waiting_push_leaves_the_counts_exact() {
    model("cancelled waiting push", || {
        one_take_from_a_full_queue(|tx| {
            // `now_or_never` polls once and drops the future if it is still waiting.
            if futures::FutureExt::now_or_never(tx.push(item(2))).is_none() {
                block_on(tx.push(item(3))).ok().expect("receiver alive");
            }
        });
    });
}

/// The receiver finds its queue empty, parks (retiring its channel) and waits, while a
/// sender pushes: in every interleaving the push wakes it, whether the sender reserved
/// before the receiver parked (then the receiver sees `len > 0` and looks again) or after
/// (then the sender clears `PARKED` and notifies).
#[test]
fn loom_a_push_wakes_a_parked_receiver() {
    model("push wakes a parked receiver", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        let producer = thread::spawn(move || {
            tx.try_push(item(7)).ok().expect("room");
            tx
        });
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 7);
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// A batch's run: two slots reserved at once, two pushes, one wake-up at the end, while
/// the receiver parks: in every interleaving it is woken and gets both, in order, and the
/// counts end exact.
#[test]
fn loom_a_batch_run_with_one_wake_up_wakes_a_parked_receiver() {
    model("batch run wakes a parked receiver", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        rx.release_when_idle();
        let producer = thread::spawn(move || {
            assert_eq!(tx.reserve_up_to(2), Some(2));
            let run = [item(0).envelope, item(1).envelope];
            assert_eq!(tx.push_reserved_many(&run), 2);
            tx
        });
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 0);
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 1);
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// A sender's wake-up for message 0 may run late, after the receiver has taken message 0
/// and parked again for message 1: it then takes `PARKED` down for a wait it does not
/// belong to. The receiver listens before it raises the flag, so that late wake-up still
/// finds its listener, and message 1 is never missed. (With the flag raised before the
/// listener existed, loom finds the receiver asleep with message 1 queued.)
#[test]
fn loom_a_late_wake_up_for_an_earlier_message_loses_no_later_one() {
    model("late wake-up", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        rx.release_when_idle();
        let producer = thread::spawn(move || {
            tx.try_push(item(0)).ok().expect("room");
            tx.try_push(item(1)).ok().expect("room");
            tx
        });
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 0);
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 1);
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// The receiver takes message 0, then retires its channel when it finds the queue empty,
/// while a sender pushes message 1 through a channel it may have loaded before the
/// retirement. The message lands in the old channel before its close (kept as leftover),
/// or the push finds it closed and goes to a new one: never lost, never twice.
#[test]
fn loom_a_channel_retired_while_a_sender_holds_it_loses_nothing() {
    model("retire against a push", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        tx.try_push(item(0)).ok().expect("room");
        let producer = thread::spawn(move || {
            tx.try_push(item(1)).ok().expect("room");
            tx
        });
        assert_eq!(rx.try_recv().ok().expect("queued").envelope.msg_id, 0);
        // Message 1 now, or (the queue found empty: its channel retired) later.
        let second = match rx.try_recv() {
            Ok(item) => item,
            Err(_) => block_on(rx.recv()).expect("message 1 arrives"),
        };
        assert_eq!(second.envelope.msg_id, 1);
        assert!(rx.try_recv().is_err(), "delivered twice");
        check_and_drop(producer.join().unwrap(), rx);
    });
}

/// A parked receiver sees the end when the last sender handle goes, after every message
/// pushed through it.
#[test]
fn loom_the_last_sender_ends_a_parked_receiver() {
    model("end of the queue", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        let producer = thread::spawn(move || {
            tx.try_push(item(3)).ok().expect("room");
            drop(tx);
        });
        assert_eq!(block_on(rx.recv()).unwrap().envelope.msg_id, 3);
        assert!(block_on(rx.recv()).is_none());
        producer.join().unwrap();
        drop(rx);
    });
}

/// The receiver goes away while a sender pushes: the push either fails (the message is
/// handed back) or lands before the close and is drained by `close_and_drain`. Exactly
/// one of the two, and no room is left reserved.
#[test]
fn loom_a_close_racing_a_push_hands_the_message_to_exactly_one_side() {
    model("close against a push", || {
        let (tx, mut rx) = crate::core::queue::queue(4, 1, None, Box::default());
        let producer = thread::spawn(move || {
            let refused = tx.try_push(item(5)).is_err();
            (tx, refused)
        });
        let drained = rx.close_and_drain().len();
        let (tx, refused) = producer.join().unwrap();
        assert_eq!(drained + usize::from(refused), 1);
        let (len, waiters, _, _) = rx.state.accounting();
        assert_eq!((len, waiters), (0, 0));
        drop(tx);
        drop(rx);
    });
}

/// Room for two, given back two at a time, messages 0 and 1 queued. `send` runs on a
/// second thread while the receiver takes message 0 and nothing more; after the join,
/// two messages are queued and the counts are exact.
fn one_take_from_a_full_queue(send: fn(&QueueTx)) {
    let (tx, mut rx) = crate::core::queue::queue_with_credit_batch(2, 2, 1, None);
    for n in 0..2u64 {
        block_on(tx.push(item(n))).ok().expect("room for two");
    }
    let producer = thread::spawn(move || {
        send(&tx);
        tx
    });
    assert_eq!(rx.try_recv().ok().expect("queued").envelope.msg_id, 0);
    let tx = producer.join().unwrap();
    assert_eq!(rx.len(), 2);
    check_and_drop(tx, rx);
}

/// Drop-oldest on a full queue of one: a sender evicts to push message 1 while the
/// receiver takes message 0. Each message is taken by exactly one side (received, or
/// evicted and handed back), message 1 is never lost, and the room counts stay exact.
#[test]
fn loom_an_eviction_racing_the_receiver_hands_each_message_to_one_side() {
    model("evict against a take", || {
        let (tx, mut rx) = crate::core::queue::queue_for(
            crate::DeliveryMode::Latest,
            1,
            1,
            None,
            Box::default(),
            Arc::default(),
        );
        tx.try_push(item(0)).ok().expect("room");
        let producer = thread::spawn(move || {
            let (pushed, evicted) = tx.push_now(item(1));
            assert!(pushed.is_ok(), "the receiver is here");
            let evicted = evicted.map(|old| old.envelope.msg_id);
            (tx, evicted)
        });
        let first = rx.try_recv().ok().map(|item| item.envelope.msg_id);
        let (tx, evicted) = producer.join().unwrap();
        let mut received: Vec<u64> = first.into_iter().collect();
        while let Ok(item) = rx.try_recv() {
            received.push(item.envelope.msg_id);
        }
        let mut all = received.clone();
        all.extend(evicted);
        all.sort_unstable();
        assert_eq!(all, [0, 1], "received {received:?}, evicted {evicted:?}");
        assert_eq!(
            received.last(),
            Some(&1),
            "the newest message is never lost"
        );
        check_and_drop(tx, rx);
    });
}

/// Drop-oldest against a subscription that lets go of its channel when idle and parks:
/// a sender evicts to push message 1, then goes away; the receiver reads to the end.
/// Whatever the interleaving (a retire between the eviction and the push included), each
/// message is received or evicted, exactly once, message 1 is received, and the parked
/// receiver is woken for it.
#[test]
fn loom_an_eviction_against_a_parking_receiver_loses_no_wake_up() {
    model("evict against a parking receiver", || {
        let (tx, mut rx) = crate::core::queue::queue_for(
            crate::DeliveryMode::Latest,
            1,
            1,
            None,
            Box::default(),
            Arc::default(),
        );
        rx.release_when_idle();
        tx.try_push(item(0)).ok().expect("room");
        let producer = thread::spawn(move || {
            let (pushed, evicted) = tx.push_now(item(1));
            assert!(pushed.is_ok(), "the receiver is here");
            let evicted = evicted.map(|old| old.envelope.msg_id);
            drop(tx);
            evicted
        });
        let mut received = Vec::new();
        while let Some(item) = block_on(rx.recv()) {
            received.push(item.envelope.msg_id);
        }
        let evicted = producer.join().unwrap();
        let mut all = received.clone();
        all.extend(evicted);
        all.sort_unstable();
        assert_eq!(all, [0, 1], "received {received:?}, evicted {evicted:?}");
        assert_eq!(received.last(), Some(&1));
        drop(rx);
    });
}

/// The idle barrier (`core/flow.rs`): a message is pushed, then `wait_idle` is awaited,
/// while a handler-like receiver (its message counted until it comes back for the next)
/// takes it, works on it, and comes back. In every interleaving the wait returns only
/// after the work is done, and it does return (the lowering to zero wakes it).
#[test]
fn loom_idle_resolves_only_after_the_work_and_always_wakes() {
    model("idle barrier", || {
        use crate::core::sync::{AtomicBool, Ordering};
        let (flow, tx, mut rx) = task_queue();
        let worked = Arc::new(AtomicBool::new(false));
        let w = worked.clone();
        let handler = thread::spawn(move || {
            let item = block_on(rx.recv()).expect("the message");
            w.store(true, Ordering::SeqCst); // the work
            drop(item);
            assert!(rx.try_recv().is_err(), "one message only"); // comes back: done
            rx
        });
        tx.try_push(item(0)).ok().expect("room");
        let state = tx.state.clone();
        block_on(flow.wait_idle_over(|out| out.push(state.clone())));
        assert!(
            worked.load(Ordering::SeqCst),
            "idle before the work was done"
        );
        let rx = handler.join().unwrap();
        let (_, done, pushed) = tx.state.counts();
        assert_eq!(done, pushed, "the counts are exact after the join");
        check_and_drop(tx, rx);
    });
}

/// The close is work for a relay task: a handler that took its one message and went
/// back to wait reads idle, but once the last sender is gone it still has its end to act
/// on (a batch forwarder's last batch). A waiter that starts after the close resolves only
/// after that final work, whichever way the handler's wake-up and the waiter interleave.
#[test]
fn loom_idle_after_a_close_waits_for_the_task_to_end() {
    model("idle at the close", || {
        use crate::core::sync::{AtomicBool, Ordering};
        let (flow, tx, mut rx) = task_queue();
        tx.try_push(item(0)).ok().expect("room");
        let state = tx.state.clone();
        let flushed = Arc::new(AtomicBool::new(false));
        // The family's table, as `Flow` keeps it: membership under a lock.
        let alive = Arc::new(crate::core::sync::Mutex::new(true));
        let (f, a, fl) = (flushed.clone(), alive.clone(), flow.clone());
        let handler = thread::spawn(move || {
            drop(block_on(rx.recv()).expect("the message"));
            assert!(block_on(rx.recv()).is_none(), "then the end");
            f.store(true, Ordering::SeqCst); // the last batch, passed on
                                             // The receiver ends (what its drop does: leave the family, wake the waiters).
            *a.lock().unwrap() = false;
            fl.untrack(1);
            rx
        });
        drop(tx); // the close
        block_on(flow.wait_idle_over(|out| {
            if *alive.lock().unwrap() {
                out.push(state.clone());
            }
        }));
        assert!(
            flushed.load(Ordering::SeqCst),
            "idle before the task acted on its end"
        );
        let rx = handler.join().unwrap();
        assert_accounting(&rx);
        drop(rx);
    });
}

/// A queue of 4 (subscriber id 1) read the way a handler task reads its inbox (a
/// message counted until the task comes back for the next), in a family of its own.
fn task_queue() -> (Arc<crate::core::flow::Flow>, QueueTx, QueueRx) {
    let flow: Arc<crate::core::flow::Flow> = Arc::default();
    let (tx, mut rx) = crate::core::queue::queue_for(
        crate::DeliveryMode::Broadcast,
        4,
        1,
        None,
        Box::default(),
        flow.clone(),
    );
    rx.count_until_next();
    (flow, tx, rx)
}

/// After the join: checks the counts ([`assert_accounting`]), then drops both halves here,
/// in the main thread (async-channel drops its channel through std's `Arc`, which loom
/// would misreport from inside a model thread).
fn check_and_drop(tx: QueueTx, rx: QueueRx) {
    assert_accounting(&rx);
    drop(tx);
    drop(rx);
}

/// Once every thread is joined: no waiter is left registered in either word, and the
/// length counts exactly the messages in the channel plus the room still held back. Room
/// given back twice, or lost, breaks the equality.
fn assert_accounting(rx: &QueueRx) {
    let (len, waiters, owed, owed_waiters) = rx.state.accounting();
    assert_eq!((waiters, owed_waiters), (0, 0), "a waiter left registered");
    assert_eq!(len, rx.len() as u64 + owed, "len != queued + held back");
}

fn item(n: u64) -> crate::relay::envelope::Queued {
    crate::relay::envelope::Queued {
        envelope: crate::relay::envelope::Envelope {
            value: Arc::new(n),
            type_name: std::any::type_name::<u64>,
            msg_id: n,
            origin: 1,
            trace: Default::default(),
        },
        tracker: None,
    }
}
