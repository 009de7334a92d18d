//! The events a relay publishes about itself: [`Dropped`] (a subscriber missed a message),
//! [`Unrouted`] (a message reached nobody). [`RelayError`](crate::RelayError), a failure, is
//! the third.

/// A subscriber missed a message because its queue was full
/// ([`DeliveryMode::Broadcast`](crate::DeliveryMode::Broadcast) only).
///
/// Published on the same relay, once per missed message per subscriber; subscribe to it
/// like any other type. The loss is also counted in
/// [`RelayStats::dropped`](crate::RelayStats::dropped) and in the subscriber's own
/// [`Subscription::dropped`](crate::Subscription::dropped).
///
/// `Dropped` and [`RelayError`](crate::RelayError) events are never waited for and never
/// tracked; when one of them does not fit a queue it is counted but not reported again.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Dropped, Relay};
/// let (tx, rx) = Relay::channel_with_size(1);
/// let mut drops = rx.subscribe::<Dropped>();
/// let _stalled = rx.subscribe::<u32>(); // never reads
/// tx.send(1u32).await.unwrap(); // fits
/// tx.send(2u32).await.unwrap(); // does not: dropped for that subscriber
/// let d = drops.recv().await.unwrap();
/// assert_eq!((d.msg_id, d.type_name), (2, "u32"));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The relay whose subscriber missed the message.
    pub relay_id: u64,
    /// The id of the missed message.
    pub msg_id: u64,
    /// The missed message's type.
    pub type_name: &'static str,
    /// Which subscriber missed it (see [`Subscription::id`](crate::Subscription::id)).
    pub subscriber_id: u64,
}

/// A message reached no subscriber: nobody subscribed to its type, and there is no wildcard
/// subscriber (`subscribe_all`, `exclude`, `split`, `forward`, `merge`).
///
/// Published on the relay it was sent on, counted in
/// [`RelayStats::unrouted`](crate::RelayStats::unrouted), and visible to the sender as a
/// [`Receipt`](crate::Receipt) with nothing queued. It names the type exactly as
/// `std::any::type_name` does, which is how the common mistakes show: a `&str` sent where
/// `String` is subscribed, or an integer literal that defaulted to `i32` where `u64` is
/// subscribed. With [`RelayBuilder::reject_unrouted`](crate::RelayBuilder::reject_unrouted)
/// such a send fails with [`SendError::Unrouted`](crate::SendError::Unrouted) instead (and is
/// still counted and published).
///
/// No `Unrouted` is published for the relay's own events (`Dropped`, `RelayError`,
/// `Unrouted`): an event nobody listens to is simply not made, so reporting cannot loop.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, Unrouted};
/// let (tx, rx) = Relay::channel();
/// let mut unrouted = rx.subscribe::<Unrouted>();
/// let _names = rx.subscribe::<String>();
/// tx.send("ada").await.unwrap(); // a &str, not a String
/// let report = unrouted.recv().await.unwrap();
/// assert_eq!(report.type_name, "&str");
/// assert_eq!(rx.stats().unrouted, 1);
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unrouted {
    /// The relay the message was sent on.
    pub relay_id: u64,
    /// The message's id.
    pub msg_id: u64,
    /// The message's type (`std::any::type_name`).
    pub type_name: &'static str,
}

/// A handler or forwarder task of this relay ended while the relay was still open: its
/// runtime shut down, its spawner dropped it (before or after it first ran), or it
/// panicked under [`PanicMode::Propagate`](crate::PanicMode::Propagate).
///
/// Reported once, when the task goes, and counted in
/// [`RelayStats::handlers_lost`](crate::RelayStats::handlers_lost). The task's registration
/// is removed with it: sends already under way that reached it fail with
/// [`HandlerGone`](crate::HandlerGone) (tracked), later sends no longer include it, so their
/// [`Receipt`](crate::Receipt)s count one handler fewer (and a type left with no subscriber
/// is reported as [`Unrouted`](crate::Unrouted)). A forwarder's derived relay closes.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{BoxFuture, HandlerLost, LossReason, Relay};
/// // A spawner that throws every task away, as a runtime shutting down does.
/// let (tx, rx) = Relay::builder().spawner(|task: BoxFuture| drop(task)).build().unwrap();
/// let mut lost = rx.subscribe::<HandlerLost>();
/// rx.sink::<u32>(|_| ());
/// let report = lost.recv().await.unwrap();
/// assert_eq!((report.type_name, report.reason), ("u32", LossReason::NeverStarted));
/// assert_eq!(rx.stats().handlers_lost, 1);
/// assert!(tx.send(1u32).await.unwrap().is_unrouted()); // nobody handles u32 any more
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerLost {
    /// The relay the handler was registered on.
    pub relay_id: u64,
    /// Its subscriber id.
    pub subscriber_id: u64,
    /// Which kind of task it was.
    pub kind: crate::HandlerKind,
    /// The message type it handled (`"*"` for a forwarder that takes every type).
    pub type_name: &'static str,
    /// How it ended.
    pub reason: LossReason,
}

/// How a handler or forwarder task ended early (see [`HandlerLost`]).
///
/// # Examples
///
/// ```
/// use pipedream_rs::LossReason;
/// assert_ne!(LossReason::NeverStarted, LossReason::Dropped);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossReason {
    /// Its executor dropped it before it first ran (a spawner that refuses work, a runtime
    /// that shut down before it got to it).
    NeverStarted,
    /// Its executor dropped it while it was running or waiting (a runtime shut down).
    Dropped,
    /// It panicked under [`PanicMode::Propagate`](crate::PanicMode::Propagate); the panic
    /// was reported first.
    Panicked,
}
