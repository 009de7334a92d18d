//! [`Receipt`]: what a successful send did, so `Ok` never hides a message that reached
//! nobody; [`BatchReceipt`], the same for a batch (`send_all`).

/// What one successful [`send`](crate::RelaySender::send) did with its message.
///
/// `Ok(receipt)` always means what the delivery mode promises (see
/// [`DeliveryMode`](crate::DeliveryMode)); the receipt says *to whom*:
///
/// - [`queued`](Self::queued): subscribers the message was queued for (typed, wildcard,
///   handlers and forwarders alike). In [`Lossless`](crate::DeliveryMode::Lossless) mode
///   this is every subscriber in the send's snapshot that still existed when its turn
///   came.
/// - [`handled`](Self::handled): tracked handlers (`sink`, `tap`, `subscribe_tracked`, and
///   the forwarders of `filter`, `only`, `exclude`, `split`) that processed it without
///   error. On `Ok`, that is every tracked handler it was queued for.
/// - [`missed`](Self::missed): untracked subscribers that did not get it because their queue
///   was full ([`Broadcast`](crate::DeliveryMode::Broadcast) mode; each is also counted and
///   reported as a [`Dropped`](crate::Dropped) event). A tracked handler that misses a
///   message fails the send instead.
///
/// A message with `queued == 0` and `missed == 0`, of a type not
/// [`retained`](Self::retained), reached no subscriber at all: it was *unrouted* ([`is_unrouted`](Self::is_unrouted)). That is `Ok` by default, counted in
/// [`RelayStats::unrouted`](crate::RelayStats::unrouted) and reported as an
/// [`Unrouted`](crate::Unrouted) event; [`RelayBuilder::reject_unrouted`](crate::RelayBuilder::reject_unrouted)
/// makes it an error instead.
///
/// `tx.send(v).await?` keeps working where only success matters: the receipt is simply
/// not used.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let _texts = rx.subscribe::<String>();
/// rx.sink::<String>(|_| ());
///
/// let receipt = tx.send(String::from("hello")).await?;
/// assert_eq!((receipt.queued, receipt.handled, receipt.missed), (2, 1, 0));
///
/// // "hello" is a &str, not a String: nobody subscribed to it.
/// let receipt = tx.send("hello").await?;
/// assert!(receipt.is_unrouted());
/// # Ok::<(), pipedream_rs::SendError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Receipt {
    /// The message's id on the relay it was sent on (see
    /// [`Envelope::msg_id`](crate::Envelope::msg_id)).
    pub msg_id: u64,
    /// Subscribers the message was queued for.
    pub queued: usize,
    /// Tracked handlers that processed the message without error.
    pub handled: usize,
    /// Untracked subscribers that missed the message because their queue was full.
    pub missed: usize,
    /// The message's type is retained ([`RelayBuilder::retain`](crate::RelayBuilder::retain)):
    /// it was kept for late subscribers, so even with nobody to deliver to it is not
    /// unrouted.
    pub retained: bool,
}

impl Receipt {
    /// `true` if the message reached no subscriber: none of its type, and no wildcard one.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// assert!(tx.send(5i32).await.unwrap().is_unrouted());
    /// # });
    /// ```
    pub fn is_unrouted(&self) -> bool {
        self.queued == 0 && self.missed == 0 && !self.retained
    }
}

/// What a [`send_all`](crate::RelaySender::send_all) did with its messages: the sums of
/// what each message's [`Receipt`] would say.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let (_a, _b) = (rx.subscribe::<u32>(), rx.subscribe::<u32>());
/// let receipt = tx.send_all([1u32, 2, 3]).await.unwrap();
/// assert_eq!((receipt.messages, receipt.queued, receipt.missed), (3, 6, 0));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BatchReceipt {
    /// The id of the batch's first message. On the fast path (no tracked handler of the
    /// type) the batch's ids are consecutive from it; sent one by one they are increasing.
    pub first_msg_id: u64,
    /// Messages sent.
    pub messages: usize,
    /// Deliveries: for each message, the subscribers it was queued for, summed.
    pub queued: usize,
    /// Tracked handlers that processed a message without error, summed over messages.
    pub handled: usize,
    /// Untracked subscribers that missed a message for a full queue, summed.
    pub missed: usize,
}
