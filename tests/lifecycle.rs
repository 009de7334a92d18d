//! Lifecycle: closing and draining, `closed()`, weak senders, dropped tracked
//! subscriptions, cancelled sends, and `send_any`'s type check.

mod common;

use std::any::{Any, TypeId};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{handler_gone, lossless, timeout, within, Gate};
use futures::FutureExt;
use pipedream_rs::{HandlerKind, Relay, RelayReceiver, SendError, TryRecvError};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long a future must stay pending to count as "waiting".
const STAYS_PENDING: Duration = Duration::from_millis(100);

/// A `u32` sink that waits for the gate before recording each message it processes.
fn gated_recording_sink(rx: &RelayReceiver) -> (Gate, Arc<Mutex<Vec<u32>>>) {
    let gate = Gate::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (g, s) = (gate.clone(), seen.clone());
    rx.sink_async::<u32>(move |n: Arc<u32>| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            g.wait().await;
            s.lock().unwrap().push(*n);
        }
    });
    (gate, seen)
}

on_every_runtime! {
    async fn a_send_refused_as_closed_stays_refused_when_polled_again() {
        let (tx, _rx) = Relay::channel();
        tx.close();
        let mut send = pin!(tx.send(1u8));
        assert_eq!(send.as_mut().now_or_never(), Some(Err(SendError::Closed)));
        // Polling a finished future again is a caller's mistake, but it must not turn a
        // refused send into Ok.
        assert_eq!(send.as_mut().now_or_never(), Some(Err(SendError::Closed)));
    }

    async fn a_channel_size_above_the_maximum_is_refused_not_clamped() {
        use pipedream_rs::{BuildError, MAX_CHANNEL_SIZE};
        let err = Relay::builder().channel_size(MAX_CHANNEL_SIZE + 1).build().unwrap_err();
        assert_eq!(
            err,
            BuildError::ChannelSizeTooLarge { size: MAX_CHANNEL_SIZE + 1, max: MAX_CHANNEL_SIZE }
        );
        assert!(Relay::builder().channel_size(MAX_CHANNEL_SIZE).build().is_ok());
    }

    // ----- close and drain -------------------------------------------------------------

    async fn dropping_the_sender_lets_subscribers_drain_then_end() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u32>();
        let mut all = rx.subscribe_all();
        for i in 1..=3u32 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        assert!(rx.is_closed());
        for i in 1..=3 {
            assert_eq!(*within(WAIT, "draining", sub.recv()).await.unwrap(), i);
            let env = within(WAIT, "draining", all.recv()).await.unwrap();
            assert_eq!(*env.downcast::<u32>().unwrap(), i);
        }
        assert!(within(WAIT, "end of stream", sub.recv()).await.is_none());
        assert!(within(WAIT, "end of stream", all.recv()).await.is_none());
        assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Closed);
        assert_eq!(rx.stats().subscribers, 0);
    }

    async fn handlers_process_what_was_queued_before_close_then_their_tasks_end() {
        let (tx, rx) = Relay::channel();
        let (gate, seen) = gated_recording_sink(&rx);
        // Queue three messages for the blocked sink, abandoning the waits, then close.
        for i in 1..=3u32 {
            assert!(tx.send(i).now_or_never().is_none());
        }
        tx.close();
        assert!(matches!(tx.send(4u32).await, Err(SendError::Closed)));
        gate.open();
        common::wait_until(WAIT, "the sink task to finish", || rx.stats().live_tasks == 0).await;
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
    }

    async fn closed_resolves_when_the_sender_is_dropped() {
        let (tx, rx) = Relay::channel();
        let mut closed = pin!(rx.closed());
        let mut also_closed = pin!(rx.clone().closed());
        assert!(timeout(STAYS_PENDING, closed.as_mut()).await.is_none());
        drop(tx);
        within(WAIT, "closed()", closed).await;
        within(WAIT, "a second closed()", also_closed.as_mut()).await;
        // Already closed: resolves on the first poll.
        assert!(rx.closed().now_or_never().is_some());
    }

    async fn closed_resolves_on_close_even_while_the_sender_lives() {
        let (tx, rx) = Relay::channel();
        let closed = rx.closed();
        tx.close();
        tx.close(); // idempotent
        within(WAIT, "closed()", closed).await;
        assert!(tx.is_closed() && rx.is_closed());
    }

    async fn send_on_a_closed_relay_fails_with_closed_and_delivers_nothing() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u8>();
        let weak = tx.weak();
        tx.close();
        assert!(matches!(tx.send(1u8).await, Err(SendError::Closed)));
        assert!(matches!(weak.send(2u8).await, Err(SendError::Closed)));
        let erased = tx.send_any(Arc::new(3u8), TypeId::of::<u8>()).await;
        assert!(matches!(erased, Err(SendError::Closed)));
        assert!(within(WAIT, "end of stream", sub.recv()).await.is_none());
        assert_eq!(rx.stats().sent, 0);
    }

    async fn send_or_return_hands_the_unsent_value_back_on_a_closed_relay() {
        /// Not `Clone`: what comes back must be the very value that was sent.
        #[derive(Debug, PartialEq)]
        struct Order(Vec<u32>);

        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<Order>();
        let weak = tx.weak();

        // Open: the send is prepared at the call and delivers when awaited, even if the
        // relay closes in between (its snapshot was taken).
        let sending = tx.send_or_return(Order(vec![1])).expect("relay open");
        let weak_sending = weak.send_or_return(Order(vec![2])).expect("relay open");
        tx.close();
        within(WAIT, "sends prepared before the close", sending).await.unwrap();
        within(WAIT, "weak send prepared before the close", weak_sending).await.unwrap();

        // Closed: the value comes back, nothing is counted as sent.
        let back = tx.send_or_return(Order(vec![3, 4])).err().expect("closed");
        assert_eq!(back.to_string(), "the relay is closed; the value was not sent");
        assert_eq!(back.into_inner(), Order(vec![3, 4]));
        let back = weak.send_or_return(Order(vec![5])).err().expect("closed");
        assert_eq!(back.0, Order(vec![5]));
        assert_eq!(rx.stats().sent, 2);
        drop(tx);
        let back = weak.send_or_return(Order(vec![6])).err().expect("gone");
        assert_eq!(back.into_inner(), Order(vec![6]));

        assert_eq!(*within(WAIT, "first", sub.recv()).await.unwrap(), Order(vec![1]));
        assert_eq!(*within(WAIT, "second", sub.recv()).await.unwrap(), Order(vec![2]));
        assert!(within(WAIT, "end of stream", sub.recv()).await.is_none());
    }

    async fn weak_sender_sends_while_the_relay_lives_and_fails_with_closed_after() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u8>();
        let weak = tx.weak();
        let weak2 = weak.clone();
        weak.send(1u8).await.unwrap();
        assert!(!weak.is_closed());
        assert_eq!(weak.id(), tx.id());
        // A weak sender does not keep the relay open.
        drop(tx);
        assert!(weak.is_closed());
        assert!(matches!(weak.send(2u8).await, Err(SendError::Closed)));
        assert!(matches!(weak2.send(3u8).await, Err(SendError::Closed)));
        assert_eq!(*sub.recv().await.unwrap(), 1);
        assert!(within(WAIT, "end of stream", sub.recv()).await.is_none());
    }

    async fn subscribing_to_a_closed_relay_yields_none_at_once() {
        // Closed, with the sender still alive.
        let (tx, rx) = Relay::channel();
        tx.close();
        assert!(matches!(rx.subscribe::<u8>().recv().now_or_never(), Some(None)));
        assert!(matches!(rx.subscribe_all().recv().now_or_never(), Some(None)));
        assert!(matches!(rx.subscribe_tracked::<u8>().recv().now_or_never(), Some(None)));
        // Closed, with the sender gone.
        drop(tx);
        assert!(matches!(rx.subscribe::<u8>().recv().now_or_never(), Some(None)));
        assert!(matches!(rx.subscribe_all().recv().now_or_never(), Some(None)));
        assert!(matches!(rx.subscribe_tracked::<u8>().recv().now_or_never(), Some(None)));
        assert_eq!(rx.subscribe::<u8>().try_recv().unwrap_err(), TryRecvError::Closed);
        // A handler registered on a closed relay ends at once instead of idling forever.
        rx.sink::<u8>(|_| ());
        common::wait_until(WAIT, "the handler task to end", || rx.stats().live_tasks == 0).await;
        assert_eq!(rx.stats().subscribers, 0);
    }

    // ----- a tracked subscription that goes away ---------------------------------------

    async fn dropping_a_tracked_subscription_fails_its_pending_messages_instead_of_hanging() {
        let (tx, rx) = Relay::channel();
        let mut tracked = rx.subscribe_tracked::<u32>();
        let mut waiting: Vec<_> = (1..=3u32).map(|i| Box::pin(tx.send(i))).collect();
        for send in &mut waiting {
            assert!(futures::poll!(send.as_mut()).is_pending());
        }
        // Complete the first; hold the second without settling it; leave the third queued.
        within(WAIT, "recv 1", tracked.recv()).await.unwrap().complete();
        let held = within(WAIT, "recv 2", tracked.recv()).await.unwrap();
        assert_eq!(*held, 2);
        drop(tracked);

        let mut waiting = waiting.into_iter();
        let (first, mut second, third) =
            (waiting.next().unwrap(), waiting.next().unwrap(), waiting.next().unwrap());
        within(WAIT, "the completed message's send", first).await.unwrap();
        handler_gone(within(WAIT, "the queued message's send", third).await, HandlerKind::Tracked);
        // Message 2 is held, not settled: its send still waits, until the holder lets go.
        assert!(timeout(STAYS_PENDING, second.as_mut()).await.is_none());
        drop(held);
        handler_gone(within(WAIT, "the held message's send", second).await, HandlerKind::Tracked);

        // No handler any more: a new send has nobody to wait for.
        assert!(matches!(tx.send(4u32).now_or_never(), Some(Ok(_))));
        assert_eq!(rx.stats().tracked_handlers, 0);
    }

    async fn dropping_an_unsettled_tracked_message_fails_its_send_with_handler_gone() {
        let (tx, rx) = Relay::channel();
        let mut tracked = rx.subscribe_tracked::<u32>();
        let (sent, ()) = futures::join!(tx.send(1u32), async {
            let msg = tracked.recv().await.unwrap();
            assert!(msg.is_tracked());
            drop(msg);
        });
        handler_gone(sent, HandlerKind::Tracked);
        // The subscription itself keeps working.
        let (sent, ()) = futures::join!(tx.send(2u32), async {
            tracked.recv().await.unwrap().complete();
        });
        sent.unwrap();
    }

    // ----- cancelled sends -------------------------------------------------------------

    async fn dropping_a_send_part_way_blocks_no_later_send() {
        let (tx, rx) = Relay::channel();
        let (gate, seen) = gated_recording_sink(&rx);
        // Poll a send a few times while its handler is blocked, then drop it.
        let mut abandoned = Box::pin(tx.send(1u32));
        for _ in 0..3 {
            assert!(futures::poll!(abandoned.as_mut()).is_pending());
        }
        drop(abandoned);
        assert!(tx.send(2u32).now_or_never().is_none()); // dropped by now_or_never

        gate.open();
        within(WAIT, "a send after two abandoned ones", tx.send(3u32)).await.unwrap();
        // The handler still processed what it was given, in order.
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        within(WAIT, "another send", tx.send(4u32)).await.unwrap();
    }

    async fn a_send_dropped_before_its_first_poll_delivers_nothing() {
        let (tx, rx) = Relay::channel();
        let mut sub = rx.subscribe::<u32>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rx.sink::<u32>(move |n| s.lock().unwrap().push(*n));
        drop(tx.send(1u32));
        within(WAIT, "a later send", tx.send(2u32)).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [2]);
        assert_eq!(*sub.try_recv().unwrap(), 2);
        assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    async fn dropping_a_lossless_send_waiting_for_room_blocks_no_later_send() {
        let (tx, rx) = lossless(4);
        let mut sub = rx.subscribe::<u32>();
        for i in 1..=4u32 {
            within(WAIT, "a send while there is room", tx.send(i)).await.unwrap();
        }
        // The queue is full: this send waits for room. Poll it, then give up on it.
        let mut abandoned = Box::pin(tx.send(5u32));
        for _ in 0..3 {
            assert!(futures::poll!(abandoned.as_mut()).is_pending());
        }
        drop(abandoned);
        assert!(tx.send(6u32).now_or_never().is_none());

        // One read makes room for exactly one more: the abandoned sends took none.
        assert_eq!(*sub.recv().await.unwrap(), 1);
        within(WAIT, "a send once there is room", tx.send(7u32)).await.unwrap();
        let mut over = pin!(tx.send(8u32));
        assert!(timeout(STAYS_PENDING, over.as_mut()).await.is_none(), "capacity grew");
        for expected in [2, 3, 4, 7] {
            assert_eq!(*sub.recv().await.unwrap(), expected);
        }
        within(WAIT, "the waiting send once the queue drained", over).await.unwrap();
        assert_eq!(*sub.recv().await.unwrap(), 8);
        // And the queue has its full capacity back.
        for i in 9..=12u32 {
            within(WAIT, "a send while there is room", tx.send(i)).await.unwrap();
        }
        assert_eq!(sub.len(), 4);
    }

    async fn a_cancelled_lossless_send_passes_its_wake_up_to_the_next_waiting_send() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u32>();
        within(WAIT, "a send while there is room", tx.send(1u32)).await.unwrap();
        // Two sends wait for the one slot, first `a`, then `b`.
        let mut a = Box::pin(tx.send(2u32));
        let mut b = Box::pin(tx.send(3u32));
        assert!(futures::poll!(a.as_mut()).is_pending());
        assert!(futures::poll!(b.as_mut()).is_pending());
        // One slot frees up and `a`, first in line, is woken; `a` is dropped before it
        // takes the slot. `b` must get it rather than wait for a second slot.
        assert_eq!(*sub.recv().await.unwrap(), 1);
        drop(a);
        within(WAIT, "the send behind a cancelled one", b).await.unwrap();
        assert_eq!(*sub.recv().await.unwrap(), 3);
    }

    async fn closing_while_a_lossless_send_waits_for_room_lets_it_finish_delivering() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u32>();
        within(WAIT, "a send while there is room", tx.send(1u32)).await.unwrap();
        let mut waiting = Box::pin(tx.send(2u32));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        tx.close();
        // The subscriber drains, which makes room for the send already under way; then
        // the stream ends.
        assert_eq!(*within(WAIT, "recv", sub.recv()).await.unwrap(), 1);
        within(WAIT, "the send under way at close", waiting).await.unwrap();
        assert_eq!(*within(WAIT, "recv", sub.recv()).await.unwrap(), 2);
        assert!(within(WAIT, "end of stream", sub.recv()).await.is_none());
        assert!(matches!(tx.send(3u32).await, Err(SendError::Closed)));
    }

    // ----- send_any ----------------------------------------------------------------------

    async fn send_any_with_a_mismatched_type_id_fails_and_delivers_nothing() {
        let (tx, rx) = Relay::channel();
        let mut as_u64 = rx.subscribe::<u64>();
        let mut as_u32 = rx.subscribe::<u32>();
        let value: Arc<dyn Any + Send + Sync> = Arc::new(9u64);
        let wrong = tx.send_any(value.clone(), TypeId::of::<u32>()).await;
        assert!(matches!(wrong, Err(SendError::TypeMismatch)));
        let wrong = tx.weak().send_any(value.clone(), TypeId::of::<u32>()).await;
        assert!(matches!(wrong, Err(SendError::TypeMismatch)));
        assert_eq!(rx.stats().sent, 0);
        assert_eq!(as_u32.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(as_u64.try_recv().unwrap_err(), TryRecvError::Empty);

        tx.send_any(value, TypeId::of::<u64>()).await.unwrap();
        assert_eq!(*as_u64.try_recv().unwrap(), 9);
    }
}
