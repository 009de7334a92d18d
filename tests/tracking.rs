//! Completion tracking: what `send().await` waits for, and the exact handler snapshot.

mod common;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{timeout, within, Gate};
use futures::FutureExt;
use pipedream_rs::{DeliveryMode, Relay, RelayReceiver};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long a send must stay pending to count as "waiting".
const STAYS_PENDING: Duration = Duration::from_millis(100);

fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// The values one handler processed, in order.
type Seen = Arc<Mutex<Vec<u32>>>;

/// Registers handler number `n` on `rx`: a sink, a tap or an async sink, in turn, that
/// records every value it processes.
fn register_recorder(rx: &RelayReceiver, n: usize) -> Seen {
    let seen = Seen::default();
    let s = seen.clone();
    match n % 3 {
        0 => rx.sink::<u32>(move |v| s.lock().unwrap().push(*v)),
        1 => {
            rx.tap::<u32>(move |v| s.lock().unwrap().push(*v));
        }
        _ => rx.sink_async::<u32>(move |v: Arc<u32>| {
            let s = s.clone();
            async move { s.lock().unwrap().push(*v) }
        }),
    }
    seen
}

on_every_runtime! {
    // ----- completion ------------------------------------------------------------------

    async fn send_returns_only_after_every_tracked_handler_has_finished() {
        let (tx, rx) = Relay::channel();
        let (sink_done, tap_done, async_tap_done) = (flag(), flag(), flag());
        let done = sink_done.clone();
        rx.sink_async::<u32>(move |_| {
            let done = done.clone();
            async move {
                common::sleep(Duration::from_millis(50)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
        let done = tap_done.clone();
        rx.tap::<u32>(move |_| {
            std::thread::sleep(Duration::from_millis(20));
            done.store(true, Ordering::SeqCst);
        });
        let done = async_tap_done.clone();
        rx.tap_async::<u32>(move |_| {
            let done = done.clone();
            async move {
                common::sleep(Duration::from_millis(30)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
        let _untracked = rx.subscribe::<u32>(); // never read, never waited for

        within(WAIT, "a tracked send", tx.send(7u32)).await.unwrap();
        assert!(sink_done.load(Ordering::SeqCst), "async sink had not finished");
        assert!(tap_done.load(Ordering::SeqCst), "sync tap had not finished");
        assert!(async_tap_done.load(Ordering::SeqCst), "async tap had not finished");
    }

    async fn send_returns_at_once_when_no_tracked_handler_takes_the_type() {
        let (tx, rx) = Relay::builder()
            .delivery_mode(DeliveryMode::Lossless)
            .build()
            .unwrap();
        // Nothing at all subscribed.
        assert!(matches!(tx.send(0u32).now_or_never(), Some(Ok(_))));
        // An untracked subscriber that never reads (its queue has room), and a tracked
        // handler of another type.
        let idle = rx.subscribe::<u32>();
        rx.sink::<u8>(|_| ());
        for i in 1..=3u32 {
            assert!(
                matches!(tx.send(i).now_or_never(), Some(Ok(_))),
                "send {i} did not complete on its first poll"
            );
        }
        assert_eq!(idle.len(), 3);
    }

    async fn send_does_not_wait_for_handlers_of_other_types() {
        let (tx, rx) = Relay::channel();
        let gate = Gate::new();
        let g = gate.clone();
        rx.sink_async::<u8>(move |_| {
            let g = g.clone();
            async move { g.wait().await }
        });
        let ints = Arc::new(AtomicUsize::new(0));
        let n = ints.clone();
        rx.sink::<i32>(move |_| {
            n.fetch_add(1, Ordering::SeqCst);
        });

        let mut blocked = pin!(tx.send(1u8));
        assert!(timeout(STAYS_PENDING, blocked.as_mut()).await.is_none());
        // The u8 sink is stuck; i32 sends are not held up by it.
        for i in 0..3 {
            within(WAIT, "an i32 send while the u8 sink is blocked", tx.send(i)).await.unwrap();
        }
        assert_eq!(ints.load(Ordering::SeqCst), 3);
        assert!(timeout(STAYS_PENDING, blocked.as_mut()).await.is_none());

        gate.open();
        within(WAIT, "the u8 send once its sink finished", blocked).await.unwrap();
    }

    // ----- exact snapshot --------------------------------------------------------------

    async fn handler_registered_before_send_is_always_delivered_to_and_waited_for() {
        // No `ready()`, no sleep: registration is complete when `sink` returns.
        for i in 0..1_000u32 {
            let (tx, rx) = Relay::channel();
            let seen = register_recorder(&rx, i as usize);
            within(WAIT, "send right after registering", tx.send(i)).await.unwrap();
            assert_eq!(*seen.lock().unwrap(), [i], "iteration {i}");
        }
    }

    async fn handler_registered_after_send_is_called_is_neither_delivered_to_nor_waited_for() {
        let (tx, rx) = Relay::channel();
        let first = tx.send(1u32); // called: the snapshot is taken now, not at the first poll
        let seen = register_recorder(&rx, 0);
        let mut sub = rx.subscribe::<u32>();
        within(WAIT, "a send with nobody in its snapshot", first).await.unwrap();
        within(WAIT, "the next send", tx.send(2u32)).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [2]);
        assert_eq!(*sub.try_recv().unwrap(), 2);
    }

    async fn a_handler_registered_on_a_tracked_child_after_the_send_is_called_is_not_delivered_to() {
        for i in 0..200 {
            let (tx, rx) = Relay::channel();
            let child = rx.filter::<u32>(|_| true);
            let grandchild = child.only::<u32>();
            let send = tx.send(1u32); // the snapshot, through both derived relays, is now
            let (late, late_grand) = (flag(), flag());
            let (l, g) = (late.clone(), late_grand.clone());
            child.sink::<u32>(move |_| l.store(true, Ordering::SeqCst));
            grandchild.sink::<u32>(move |_| g.store(true, Ordering::SeqCst));
            let receipt = within(WAIT, "the send", send).await.unwrap();
            assert_eq!(receipt.handled, 1, "iteration {i}: only the filter is tracked here");
            // Neither late handler was waited for or given the message; a later send reaches
            // both, and waits for both.
            assert!(!late.load(Ordering::SeqCst), "iteration {i}: child handler ran");
            assert!(!late_grand.load(Ordering::SeqCst), "iteration {i}: grandchild handler ran");
            within(WAIT, "a later send", tx.send(2u32)).await.unwrap();
            assert!(late.load(Ordering::SeqCst) && late_grand.load(Ordering::SeqCst), "iteration {i}");
        }
    }

    async fn a_handler_on_a_tracked_child_registered_before_the_call_is_waited_for_even_if_dropped_first() {
        let (tx, rx) = Relay::channel();
        let child = rx.filter::<u32>(|_| true);
        let grandchild = child.only::<u32>();
        let processed = Arc::new(AtomicUsize::new(0));
        let p = processed.clone();
        grandchild.sink::<u32>(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
        });
        let mut tracked = child.subscribe_tracked::<u32>();
        let send = tx.send(1u32);
        // The tracked subscription on the child was in the snapshot: dropping it now fails
        // the send with HandlerGone instead of quietly leaving it out.
        drop(tracked.try_recv());
        drop(tracked);
        let err = within(WAIT, "the send", send).await.unwrap_err();
        assert!(err.errors()[0].downcast_ref::<pipedream_rs::HandlerGone>().is_some(), "{err}");
        // The grandchild's sink was in the snapshot too, and ran before the send returned.
        assert_eq!(processed.load(Ordering::SeqCst), 1);
    }

    async fn a_hundred_thousand_subscribers_of_one_type_register_and_leave_in_seconds() {
        // Every registration used to rebuild the type's whole list under the lock a send
        // takes (quadratic: 1,022 s for 100,000). The bound is loose for slow debug builds
        // and shared machines; the benchmark gives the real figure.
        const N: usize = 100_000;
        let started = std::time::Instant::now();
        let (tx, rx) = Relay::channel();
        let subs: Vec<_> = (0..N).map(|_| rx.subscribe::<u64>()).collect();
        assert_eq!(rx.stats_for::<u64>().unwrap().subscribers, N);
        let receipt = within(WAIT, "a send to all of them", tx.send(7u64)).await.unwrap();
        assert_eq!(receipt.queued, N);
        // Leave in an order that moves subscribers around inside the list.
        let (odd, even): (Vec<_>, Vec<_>) = subs.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
        drop(odd);
        assert_eq!(within(WAIT, "a send to half", tx.send(8u64)).await.unwrap().queued, N / 2);
        drop(even);
        assert_eq!(rx.stats().subscribers, 0);
        let took = started.elapsed();
        println!("{N} subscribers registered, sent to and dropped in {took:?}");
        assert!(took < Duration::from_secs(60), "{took:?}");
    }

    async fn registration_racing_a_send_is_either_fully_in_or_fully_out() {
        // Each iteration is checked against the order of its own events: a registration
        // that returned before the send was called must be in the snapshot, one that began
        // after it must be out, and an overlap may go either way but never half.
        let (mut included, mut excluded) = (0, 0);
        for i in 0..1_000usize {
            let (tx, rx) = Relay::channel();
            let (registered, send_called) = (flag(), flag());
            let (r, c, reg_rx) = (registered.clone(), send_called.clone(), rx.clone());
            let registrar = common::spawn(async move {
                let began_after_send = c.load(Ordering::SeqCst);
                let seen = register_recorder(&reg_rx, i);
                r.store(true, Ordering::SeqCst);
                (seen, began_after_send)
            });

            // Vary the head start the registrar gets, to hit both sides of the race.
            for _ in 0..(i % 100) * 100 {
                std::hint::spin_loop();
            }
            let registered_before_send = registered.load(Ordering::SeqCst);
            let send = tx.send(1u32); // the snapshot is taken here
            send_called.store(true, Ordering::SeqCst);
            within(WAIT, "a send racing a registration", send).await.unwrap();
            let (seen, began_after_send) = within(WAIT, "the registrar", registrar).await;
            // In the snapshot: the send waited for it. Out: it never gets the message.
            let at_return = seen.lock().unwrap().clone();
            match at_return.as_slice() {
                [1] => {
                    assert!(!began_after_send, "iteration {i}: registered after the send, yet in it");
                    included += 1;
                }
                [] => {
                    assert!(!registered_before_send, "iteration {i}: registered, not waited for");
                    excluded += 1;
                }
                other => panic!("iteration {i}: handler saw {other:?}"),
            }
            // Later messages are delivered behind it; the first never shows up late.
            within(WAIT, "a send after registration", tx.send(2u32)).await.unwrap();
            let mut expected = at_return;
            expected.push(2);
            assert_eq!(*seen.lock().unwrap(), expected, "iteration {i}");
        }
        println!("registration raced a send 1,000 times: {included} in, {excluded} out");
    }

    async fn handlers_registered_while_sends_run_see_exactly_the_messages_sent_after_them() {
        const SENDS: u32 = 1_000;
        const HANDLERS_PER_REGISTRAR: usize = 25;
        let (tx, rx) = Relay::channel();
        // Sends called so far, and sends returned so far.
        let called = Arc::new(AtomicUsize::new(0));
        let returned = Arc::new(AtomicUsize::new(0));
        // Each registered handler: (sends returned before `sink` was called, sends called
        // before it returned, what it processed).
        let handlers = Arc::new(Mutex::new(Vec::<(usize, usize, Seen)>::new()));

        let registrars: Vec<_> = (0..2)
            .map(|r| {
                let (rx, called, returned, handlers) =
                    (rx.clone(), called.clone(), returned.clone(), handlers.clone());
                common::spawn(async move {
                    for n in 0..HANDLERS_PER_REGISTRAR {
                        common::sleep(Duration::from_micros(300)).await;
                        let before = returned.load(Ordering::SeqCst);
                        let seen = register_recorder(&rx, r + 2 * n);
                        let after = called.load(Ordering::SeqCst);
                        handlers.lock().unwrap().push((before, after, seen));
                    }
                })
            })
            .collect();

        within(WAIT, "sends while handlers register", async {
            for i in 0..SENDS {
                called.store(i as usize + 1, Ordering::SeqCst);
                tx.send(i).await.unwrap();
                returned.store(i as usize + 1, Ordering::SeqCst);
                // Every handler whose registration finished before this send was called
                // has processed this message by the time the send returns.
                for (_, after, seen) in handlers.lock().unwrap().iter() {
                    if *after <= i as usize {
                        let last = seen.lock().unwrap().last().copied();
                        assert_eq!(last, Some(i), "send {i} returned early");
                    }
                }
            }
        })
        .await;
        for registrar in registrars {
            within(WAIT, "a registrar", registrar).await;
        }

        let handlers = handlers.lock().unwrap();
        assert_eq!(handlers.len(), 2 * HANDLERS_PER_REGISTRAR);
        for (before, after, seen) in handlers.iter() {
            let seen = seen.lock().unwrap();
            let first = seen.first().map_or(SENDS as usize, |&v| v as usize);
            assert!(
                *before <= first && first <= *after,
                "first message {first} outside [{before}, {after}]"
            );
            let expected: Vec<u32> = (first as u32..SENDS).collect();
            assert_eq!(*seen, expected, "a handler missed or repeated a message");
        }
    }
}
