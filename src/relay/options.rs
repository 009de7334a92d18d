//! Options one subscription chooses for its own queue: its capacity and its delivery mode.

use crate::relay::config::DeliveryMode;
use crate::relay::error::BuildError;
use crate::relay::MAX_CHANNEL_SIZE;

/// How one subscription's queue behaves, in place of the defaults of its type
/// ([`RelayBuilder::mode_for`](crate::RelayBuilder::mode_for)) and of its relay
/// ([`RelayBuilder::delivery_mode`](crate::RelayBuilder::delivery_mode),
/// [`RelayBuilder::channel_size`](crate::RelayBuilder::channel_size)). What is not set
/// keeps its default. Used with [`RelayReceiver::subscribe_with`](crate::RelayReceiver::subscribe_with).
///
/// A [`DeliveryMode::Latest`] queue holds one message whatever the capacity.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{DeliveryMode, Relay, SubscribeOptions};
/// let (tx, rx) = Relay::channel();
/// // This one subscriber keeps the newest 2 messages; the others follow the relay.
/// let opts = SubscribeOptions::new().capacity(2).mode(DeliveryMode::DropOldest);
/// let mut recent = rx.subscribe_with::<u32>(opts).unwrap();
/// for n in 1..=5u32 {
///     tx.send(n).await.unwrap();
/// }
/// assert_eq!(*recent.recv().await.unwrap(), 4);
/// assert_eq!(*recent.recv().await.unwrap(), 5);
/// assert_eq!(recent.dropped(), 3);
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use = "options do nothing until passed to subscribe_with"]
pub struct SubscribeOptions {
    pub(crate) capacity: Option<usize>,
    pub(crate) mode: Option<DeliveryMode>,
}

impl SubscribeOptions {
    /// Nothing chosen: the queue gets its type's and relay's defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pipedream_rs::SubscribeOptions::new();
    /// assert_eq!(opts, pipedream_rs::SubscribeOptions::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue's capacity, in messages (from 1 to [`MAX_CHANNEL_SIZE`]; checked by
    /// `subscribe_with`).
    ///
    /// # Examples
    ///
    /// ```
    /// let opts = pipedream_rs::SubscribeOptions::new().capacity(16);
    /// # drop(opts);
    /// ```
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = Some(messages);
        self
    }

    /// The queue's delivery mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{DeliveryMode, SubscribeOptions};
    /// let opts = SubscribeOptions::new().mode(DeliveryMode::Latest);
    /// # drop(opts);
    /// ```
    pub fn mode(mut self, mode: DeliveryMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Refuses a capacity a relay's builder would refuse.
    pub(crate) fn check(self) -> Result<Self, BuildError> {
        match self.capacity {
            Some(0) => Err(BuildError::ZeroChannelSize),
            Some(size) if size > MAX_CHANNEL_SIZE => Err(BuildError::ChannelSizeTooLarge {
                size,
                max: MAX_CHANNEL_SIZE,
            }),
            _ => Ok(self),
        }
    }
}
