//! [`Relay`], the entry point, and [`RelayBuilder`], its configuration.

pub(crate) mod config;
pub(crate) mod envelope;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod handler;
pub(crate) mod options;
pub(crate) mod permit;
pub(crate) mod receipt;
pub(crate) mod receiver;
pub(crate) mod recv;
pub(crate) mod request;
pub(crate) mod send_sink;
pub(crate) mod sender;
pub(crate) mod stats;
pub(crate) mod subscription;
pub(crate) mod task_handle;
pub(crate) mod tracked_subscription;

use std::sync::Arc;

use crate::core::Core;
use crate::relay::config::{Config, DeliveryMode, ErrorMode, PanicMode};
use crate::relay::error::BuildError;
use crate::relay::receiver::RelayReceiver;
use crate::relay::sender::RelaySender;
use crate::spawner::choice::Choice;
use crate::spawner::Spawner;

/// The largest per-subscriber queue size, 2^40 − 2^20 − 1 messages: a queue counts what it
/// holds in 40 bits, with room kept above the capacity for the messages a broken cycle of
/// waits lets in over it (SEMANTICS.md §14). [`RelayBuilder::build`] refuses a larger one
/// with [`BuildError::ChannelSizeTooLarge`].
///
/// # Examples
///
/// ```
/// use pipedream_rs::{BuildError, Relay, MAX_CHANNEL_SIZE};
/// assert_eq!(MAX_CHANNEL_SIZE, (1 << 40) - (1 << 20) - 1);
/// # #[cfg(target_pointer_width = "64")]
/// assert!(matches!(
///     Relay::builder().channel_size(MAX_CHANNEL_SIZE + 1).build(),
///     Err(BuildError::ChannelSizeTooLarge { .. })
/// ));
/// ```
pub const MAX_CHANNEL_SIZE: usize = (crate::core::queue::LEN_MASK - (1 << 20)) as usize;

/// The default per-subscriber queue size: 65,536 messages. Memory follows what is queued,
/// not this number.
pub const DEFAULT_CHANNEL_SIZE: usize = 65_536;

/// Creates relays. A relay is a pair: the [`RelaySender`] that owns it and a
/// [`RelayReceiver`] to subscribe with.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::Relay;
/// let (tx, rx) = Relay::channel();
/// let mut sub = rx.subscribe::<&str>();
/// tx.send("hello").await.unwrap();
/// assert_eq!(*sub.recv().await.unwrap(), "hello");
/// # });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Relay;

impl Relay {
    /// A relay with the default configuration: queues of [`DEFAULT_CHANNEL_SIZE`],
    /// [`DeliveryMode::Broadcast`], [`ErrorMode::FirstWins`], [`PanicMode::CatchAndEmit`],
    /// and the default spawner (see [`spawner`](crate::spawner)).
    ///
    /// # Panics
    ///
    /// If no spawner can be chosen (the crate was built with no runtime feature). Use
    /// [`Relay::builder`] with [`RelayBuilder::spawner`] to get an error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// # drop((tx, rx));
    /// ```
    pub fn channel() -> (RelaySender, RelayReceiver) {
        Self::builder().build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`channel`](Self::channel), with queues of `size` messages per subscriber.
    ///
    /// # Panics
    ///
    /// If `size` is zero ("channel size must be at least 1") or above [`MAX_CHANNEL_SIZE`],
    /// or as [`channel`](Self::channel). [`Relay::builder`] returns the error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel_with_size(4096);
    /// # drop((tx, rx));
    /// ```
    pub fn channel_with_size(size: usize) -> (RelaySender, RelayReceiver) {
        Self::builder()
            .channel_size(size)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A builder for every setting.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{DeliveryMode, ErrorMode, PanicMode, Relay};
    /// let (tx, rx) = Relay::builder()
    ///     .channel_size(1024)
    ///     .delivery_mode(DeliveryMode::Lossless)
    ///     .error_mode(ErrorMode::Aggregate)
    ///     .panic_mode(PanicMode::CatchAndEmit)
    ///     .build()
    ///     .unwrap();
    /// # drop((tx, rx));
    /// ```
    pub fn builder() -> RelayBuilder {
        RelayBuilder::default()
    }

    pub(crate) fn from_config(config: Config) -> (RelaySender, RelayReceiver) {
        Self::in_family(config, Default::default())
    }

    /// A relay whose idle count is `flow`'s (a derived relay shares its parent's).
    pub(crate) fn in_family(
        config: Config,
        flow: Arc<crate::core::flow::Flow>,
    ) -> (RelaySender, RelayReceiver) {
        let core = Core::in_family(config, flow);
        let rx = RelayReceiver::new(&core);
        (RelaySender { core }, rx)
    }
}

/// Configures and builds a relay. See [`Relay::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct RelayBuilder {
    channel_size: usize,
    delivery_mode: DeliveryMode,
    type_modes: Vec<(std::any::TypeId, DeliveryMode)>,
    retain: Vec<(std::any::TypeId, usize, &'static str)>,
    error_mode: ErrorMode,
    panic_mode: PanicMode,
    reject_unrouted: bool,
    spawner: Option<Arc<dyn Spawner>>,
}

impl Default for RelayBuilder {
    fn default() -> Self {
        RelayBuilder {
            channel_size: DEFAULT_CHANNEL_SIZE,
            delivery_mode: DeliveryMode::default(),
            type_modes: Vec::new(),
            retain: Vec::new(),
            error_mode: ErrorMode::default(),
            panic_mode: PanicMode::default(),
            reject_unrouted: false,
            spawner: None,
        }
    }
}

impl RelayBuilder {
    /// Queue size per subscriber, in messages (default [`DEFAULT_CHANNEL_SIZE`]). Zero, and
    /// anything above [`MAX_CHANNEL_SIZE`], are refused by [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let built = pipedream_rs::Relay::builder().channel_size(8).build();
    /// assert!(built.is_ok());
    /// ```
    pub fn channel_size(mut self, size: usize) -> Self {
        self.channel_size = size;
        self
    }

    /// What `send` does when a queue is full (default [`DeliveryMode::Broadcast`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{DeliveryMode, Relay};
    /// let built = Relay::builder().delivery_mode(DeliveryMode::Lossless).build();
    /// assert!(built.is_ok());
    /// ```
    pub fn delivery_mode(mut self, mode: DeliveryMode) -> Self {
        self.delivery_mode = mode;
        self
    }

    /// The delivery mode of every queue for messages of `T` (its subscriptions, handlers
    /// and forwarders), in place of the relay's [`delivery_mode`](Self::delivery_mode).
    /// A subscription can still choose its own ([`SubscribeOptions`](crate::SubscribeOptions)).
    /// Set twice, the last one counts. Derived relays inherit it. Queues that take every
    /// type (`subscribe_all`, wildcard forwarders) follow the relay's mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::{DeliveryMode, Relay};
    /// // Commands are lossless; readings are conflated: a slow reader sees the latest.
    /// let (tx, rx) = Relay::builder()
    ///     .delivery_mode(DeliveryMode::Lossless)
    ///     .mode_for::<f64>(DeliveryMode::Latest)
    ///     .build()
    ///     .unwrap();
    /// let mut readings = rx.subscribe::<f64>();
    /// for r in [20.5, 20.7, 21.0] {
    ///     tx.send(r).await.unwrap(); // never waits for the slow reader
    /// }
    /// assert_eq!(*readings.recv().await.unwrap(), 21.0);
    /// assert_eq!(readings.dropped(), 2);
    /// # });
    /// ```
    pub fn mode_for<T: std::any::Any>(mut self, mode: DeliveryMode) -> Self {
        let ty = std::any::TypeId::of::<T>();
        self.type_modes.retain(|(id, _)| *id != ty);
        self.type_modes.push((ty, mode));
        self
    }

    /// Keeps the last `messages` messages of `T` for late subscribers: every queue of `T`
    /// registered later (subscriptions, handlers, the forwarders of `filter`, `only`,
    /// `map`, `batch` and the like derived later; not wildcard ones: `subscribe_all`,
    /// `exclude`, `split`) first receives them, in order, then the live ones, with nothing missed or doubled
    /// at the seam. `retain::<T>(1)` gives a current value, like a watch channel, readable
    /// without subscribing with [`RelayReceiver::latest`](crate::RelayReceiver::latest).
    /// Zero keeps nothing (the default); set twice, the last one counts. Derived relays
    /// inherit it. A message is retained when its delivery starts (a send dropped before
    /// its first poll is not), and what the ring holds is bounded by `messages` values of
    /// `T` plus about 60 bytes each. The relay's own event types (`Dropped`, `RelayError`,
    /// `Unrouted`, `HandlerLost`) are published, not sent: retaining them keeps nothing.
    /// See SEMANTICS.md §2 "Replay".
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) refuses more than [`MAX_CHANNEL_SIZE`] messages with
    /// [`BuildError::RetentionTooLarge`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::Relay;
    /// let (tx, rx) = Relay::builder().retain::<u32>(2).build().unwrap();
    /// for n in 1..=3u32 {
    ///     tx.send(n).await.unwrap(); // nobody subscribes yet
    /// }
    /// let mut late = rx.subscribe::<u32>();
    /// assert_eq!(*late.recv().await.unwrap(), 2); // the last two, then the live ones
    /// assert_eq!(*late.recv().await.unwrap(), 3);
    /// tx.send(4u32).await.unwrap();
    /// assert_eq!(*late.recv().await.unwrap(), 4);
    /// assert_eq!(rx.latest::<u32>().as_deref(), Some(&4));
    /// # });
    /// ```
    pub fn retain<T: std::any::Any>(mut self, messages: usize) -> Self {
        let ty = std::any::TypeId::of::<T>();
        self.retain.retain(|(id, _, _)| *id != ty);
        if messages > 0 {
            self.retain.push((ty, messages, std::any::type_name::<T>()));
        }
        self
    }

    /// How many handler errors a failed send reports (default [`ErrorMode::FirstWins`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{ErrorMode, Relay};
    /// let built = Relay::builder().error_mode(ErrorMode::Aggregate).build();
    /// assert!(built.is_ok());
    /// ```
    pub fn error_mode(mut self, mode: ErrorMode) -> Self {
        self.error_mode = mode;
        self
    }

    /// What happens when a handler panics (default [`PanicMode::CatchAndEmit`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{PanicMode, Relay};
    /// let built = Relay::builder().panic_mode(PanicMode::Propagate).build();
    /// assert!(built.is_ok());
    /// ```
    pub fn panic_mode(mut self, mode: PanicMode) -> Self {
        self.panic_mode = mode;
        self
    }

    /// Make a send that would reach no subscriber fail with
    /// [`SendError::Unrouted`](crate::SendError::Unrouted) instead of returning `Ok` with an
    /// empty [`Receipt`](crate::Receipt) (default `false`), as `tokio::sync::broadcast` fails
    /// a send with no receivers. Either way the message is counted in
    /// [`RelayStats::unrouted`](crate::RelayStats::unrouted) and published as an
    /// [`Unrouted`](crate::Unrouted) event. Derived relays inherit it.
    ///
    /// The check is part of the send's snapshot, taken when `send` is called: a message
    /// refused this way was delivered to no one, and
    /// [`send_or_return`](crate::RelaySender::send_or_return) hands its value back.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::{Relay, SendError};
    /// let (tx, rx) = Relay::builder().reject_unrouted(true).build().unwrap();
    /// let _sub = rx.subscribe::<u64>();
    /// assert!(tx.send(5u64).await.is_ok());
    /// assert_eq!(tx.send(5).await, Err(SendError::Unrouted { type_name: "i32" }));
    /// # });
    /// ```
    pub fn reject_unrouted(mut self, reject: bool) -> Self {
        self.reject_unrouted = reject;
        self
    }

    /// The spawner for this relay's tasks (and its derived relays'). Without it, the
    /// default rule of the [`spawner`](crate::spawner) module applies.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{BoxFuture, Relay};
    /// let pool = futures::executor::ThreadPool::new().unwrap();
    /// let built = Relay::builder().spawner(move |t: BoxFuture| pool.spawn_ok(t)).build();
    /// assert!(built.is_ok());
    /// ```
    pub fn spawner<S: Spawner>(mut self, spawner: S) -> Self {
        self.spawner = Some(Arc::new(spawner));
        self
    }

    /// Builds the relay.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroChannelSize`] for a channel size of zero;
    /// [`BuildError::ChannelSizeTooLarge`] for one above [`MAX_CHANNEL_SIZE`];
    /// [`BuildError::NoSpawner`] when no spawner was given and none can be chosen.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{BuildError, Relay};
    /// assert_eq!(Relay::builder().channel_size(0).build().unwrap_err(), BuildError::ZeroChannelSize);
    /// ```
    pub fn build(self) -> Result<(RelaySender, RelayReceiver), BuildError> {
        if self.channel_size == 0 {
            return Err(BuildError::ZeroChannelSize);
        }
        if self.channel_size > MAX_CHANNEL_SIZE {
            return Err(BuildError::ChannelSizeTooLarge {
                size: self.channel_size,
                max: MAX_CHANNEL_SIZE,
            });
        }
        if let Some(&(_, size, type_name)) = self.retain.iter().find(|r| r.1 > MAX_CHANNEL_SIZE) {
            return Err(BuildError::RetentionTooLarge {
                type_name,
                size,
                max: MAX_CHANNEL_SIZE,
            });
        }
        let spawner = match self.spawner {
            Some(s) => Choice::given(s),
            None => Choice::by_rule().ok_or(BuildError::NoSpawner)?,
        };
        Ok(Relay::from_config(Config {
            channel_size: self.channel_size,
            delivery_mode: self.delivery_mode,
            type_modes: self.type_modes.into(),
            retain: self.retain.iter().map(|&(id, n, _)| (id, n)).collect(),
            error_mode: self.error_mode,
            panic_mode: self.panic_mode,
            reject_unrouted: self.reject_unrouted,
            spawner,
        }))
    }
}

impl std::fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("channel_size", &self.channel_size)
            .field("delivery_mode", &self.delivery_mode)
            .field("error_mode", &self.error_mode)
            .field("panic_mode", &self.panic_mode)
            .field("reject_unrouted", &self.reject_unrouted)
            .field("spawner", &self.spawner.as_ref().map(|s| s.name()))
            .finish()
    }
}
