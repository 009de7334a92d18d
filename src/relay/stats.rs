//! [`RelayStats`]: counters of one relay.

/// A snapshot of a relay's counters, from
/// [`RelayReceiver::stats`](crate::RelayReceiver::stats).
///
/// Counters are read one at a time, so under concurrent sends they are each exact but
/// not taken at one instant. Internal events (`Dropped`, `RelayError`) count too.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let _a = rx.subscribe::<u8>();
/// tx.send(1u8).await.unwrap();
/// let s = rx.stats();
/// assert_eq!((s.sent, s.delivered, s.dropped, s.subscribers), (1, 1, 0, 1));
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages sent on this relay (each counted once, however many subscribers).
    pub sent: u64,
    /// Message copies queued for subscribers.
    pub delivered: u64,
    /// Message copies a subscriber missed because its queue was full.
    pub dropped: u64,
    /// Messages that reached no subscriber at all (see [`Unrouted`](crate::Unrouted)).
    pub unrouted: u64,
    /// Subscribers registered now (typed, wildcard and tracked).
    pub subscribers: usize,
    /// Tracked handlers registered now (`sink`, `tap`, `subscribe_tracked`, forwarders).
    pub tracked_handlers: usize,
    /// Tasks started from this relay that have not finished.
    pub live_tasks: usize,
}
