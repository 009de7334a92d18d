//! [`RelayStats`]: counters of one relay.

/// A snapshot of a relay's counters, from
/// [`RelayReceiver::stats`](crate::RelayReceiver::stats).
///
/// Counters are read one at a time, so under concurrent sends they are each exact but
/// not taken at one instant. Internal events (`Dropped`, `RelayError`, `Unrouted`, `HandlerLost`) count too.
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
    /// Waits of this relay's sends that were on a cycle of waits and were broken (see
    /// [`WouldDeadlock`](crate::WouldDeadlock)): a tracked send that stopped waiting, or a
    /// lossless send let in over a queue's capacity.
    pub deadlocks_broken: u64,
    /// Handler and forwarder tasks that ended while the relay was open (see
    /// [`HandlerLost`](crate::HandlerLost)).
    pub handlers_lost: u64,
    /// Failures of this relay's handlers, forwarders and `within` tasks: every error
    /// returned, panic caught, and tracked message that no handler could take
    /// ([`HandlerGone`](crate::HandlerGone), [`QueueFull`](crate::QueueFull)). Each is the
    /// error of one [`RelayError`](crate::RelayError), published as an event (unless it
    /// was about an internal event) and, when tracked, returned to its sender.
    pub failures: u64,
    /// The failures that were caught panics ([`PanicError`](crate::PanicError)).
    pub panics: u64,
    /// Subscribers registered now (typed, wildcard and tracked).
    pub subscribers: usize,
    /// Tracked handlers registered now (`sink`, `tap`, `subscribe_tracked`, forwarders).
    pub tracked_handlers: usize,
    /// Tasks started from this relay that have not finished.
    pub live_tasks: usize,
}

/// One message type's figures on one relay, from
/// [`RelayReceiver::stats_for`](crate::RelayReceiver::stats_for).
///
/// The counters count messages *of this type*: `sent` (each once), `delivered` (copies
/// queued for subscribers), `dropped` (copies missed for a full queue), `unrouted` (sends
/// that reached no subscriber). `subscribers` and `tracked_handlers` are those registered
/// for this type now; wildcard subscribers (`subscribe_all`, `exclude`, `split`, `forward`,
/// `merge`) are counted in [`RelayStats`] only.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let _a = rx.subscribe::<u8>();
/// tx.send(1u8).await.unwrap();
/// tx.send(2u16).await.unwrap(); // nobody subscribes to u16
/// let u8s = rx.stats_for::<u8>().unwrap();
/// assert_eq!((u8s.sent, u8s.delivered, u8s.subscribers), (1, 1, 1));
/// assert_eq!(rx.stats_for::<u16>().unwrap().unrouted, 1);
/// assert!(rx.stats_for::<u32>().is_none()); // never sent nor subscribed to
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypeStats {
    /// The type's name (`std::any::type_name`).
    pub type_name: &'static str,
    /// Messages of this type sent on this relay.
    pub sent: u64,
    /// Copies of them queued for subscribers.
    pub delivered: u64,
    /// Copies a subscriber missed because its queue was full.
    pub dropped: u64,
    /// Messages of this type that reached no subscriber.
    pub unrouted: u64,
    /// Subscribers registered for this type now (not counting wildcard ones).
    pub subscribers: usize,
    /// Tracked handlers registered for this type now (not counting wildcard ones).
    pub tracked_handlers: usize,
}
