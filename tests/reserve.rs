//! Reservations: `reserve` takes room in every lossless queue, a `Permit` delivers into it
//! synchronously, and a cancelled reservation or a dropped permit gives all of it back.

mod common;

use std::pin::pin;
use std::time::Duration;

use common::{lossless, within};
use futures::FutureExt;
use pipedream_rs::{DeliveryMode, SendError, SubscribeOptions, TrySendError};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);

on_every_runtime! {
    async fn a_permit_delivers_synchronously_into_the_room_it_reserved() {
        let (tx, rx) = lossless(2);
        let mut a = rx.subscribe::<String>();
        let mut b = rx.subscribe::<String>();
        let permit = within(WAIT, "room in both queues", tx.reserve::<String>()).await.unwrap();
        // The room is held: only one more message fits in each queue.
        tx.try_send(String::from("other")).unwrap();
        assert!(matches!(tx.try_send(String::from("x")), Err(TrySendError::Full(_))));
        let id = permit.msg_id();
        let receipt = permit.send(String::from("reserved"));
        assert_eq!((receipt.msg_id, receipt.queued, receipt.handled), (id, 2, 0));
        for sub in [&mut a, &mut b] {
            // The permit's message id came first, so it was reserved first, but queues are
            // in push order: the other message was pushed before the permit was used.
            assert_eq!(*sub.try_recv().unwrap(), "other");
            assert_eq!(*sub.try_recv().unwrap(), "reserved");
        }
    }

    async fn a_cancelled_reservation_gives_back_all_the_room_it_took() {
        let (tx, rx) = lossless(1);
        let mut a = rx.subscribe::<u8>();
        let mut b = rx.subscribe::<u8>();
        // Both queues hold 1; a reads it, so only b (reserved after a) is full.
        tx.try_send(1u8).unwrap();
        assert_eq!(*within(WAIT, "1 for a", a.recv()).await.unwrap(), 1);
        // Now a is empty and b holds 1: a reservation takes a's slot and waits on b.
        let mut reserving = Box::pin(tx.reserve::<u8>());
        assert!((&mut reserving).now_or_never().is_none(), "b is full: it must wait");
        // Cancelled (the future itself dropped): a's slot must be back, so a can take
        // exactly one message again.
        drop(reserving);
        assert_eq!(*within(WAIT, "1 for b", b.recv()).await.unwrap(), 1);
        tx.try_send(2u8).expect("a's slot was given back");
        assert!(matches!(tx.try_send(3u8), Err(TrySendError::Full(3))), "capacity stays exact");
        assert_eq!(*a.try_recv().unwrap(), 2);
        assert_eq!(*b.try_recv().unwrap(), 2);
    }

    async fn a_dropped_permit_gives_its_room_back() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u8>();
        let permit = within(WAIT, "room", tx.reserve::<u8>()).await.unwrap();
        assert!(matches!(tx.try_send(1u8), Err(TrySendError::Full(1))), "the permit holds it");
        drop(permit);
        tx.try_send(2u8).expect("room given back");
        assert_eq!(*sub.try_recv().unwrap(), 2);
        assert!(sub.try_recv().is_err());
    }

    async fn a_reservation_waits_for_room_and_resolves_when_it_comes() {
        let (tx, rx) = lossless(1);
        let mut sub = rx.subscribe::<u8>();
        tx.try_send(1u8).unwrap();
        let mut reserving = pin!(tx.reserve::<u8>());
        assert!((&mut reserving).now_or_never().is_none());
        assert_eq!(*sub.recv().await.unwrap(), 1);
        let permit = within(WAIT, "the room freed by the read", reserving).await.unwrap();
        permit.send(2);
        assert_eq!(*within(WAIT, "2", sub.recv()).await.unwrap(), 2);
    }

    async fn queues_that_never_wait_take_a_permit_s_message_as_any_send() {
        let (tx, rx) = lossless(1);
        let mut commands = rx.subscribe::<u32>();
        let mut latest = rx
            .subscribe_with::<u32>(SubscribeOptions::new().mode(DeliveryMode::Latest))
            .unwrap();
        tx.try_send(1u32).unwrap();
        // The lossless queue is full; the conflated one never holds anything up.
        let mut reserving = pin!(tx.reserve::<u32>());
        assert!((&mut reserving).now_or_never().is_none());
        assert_eq!(*commands.recv().await.unwrap(), 1);
        let receipt = within(WAIT, "room", reserving).await.unwrap().send(2);
        assert_eq!(receipt.queued, 2);
        assert_eq!(*latest.try_recv().unwrap(), 2);
        assert_eq!(latest.dropped(), 1);
        assert_eq!(*commands.try_recv().unwrap(), 2);
    }

    async fn a_closed_relay_refuses_a_reservation_and_a_live_permit_still_delivers() {
        let (tx, rx) = lossless(4);
        let mut sub = rx.subscribe::<u8>();
        let permit = within(WAIT, "room", tx.reserve::<u8>()).await.unwrap();
        let weak = tx.weak();
        tx.close();
        assert_eq!(within(WAIT, "refused", weak.reserve::<u8>()).await.unwrap_err(), SendError::Closed);
        // Like a send in flight at the close: delivered, then the subscription ends.
        assert_eq!(permit.send(9).queued, 1);
        assert_eq!(*within(WAIT, "9", sub.recv()).await.unwrap(), 9);
        assert!(within(WAIT, "the end", sub.recv()).await.is_none());
    }
}
