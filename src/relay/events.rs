//! [`Dropped`]: the event that makes message loss observable.

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
