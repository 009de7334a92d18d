//! Errors: what a sender, a builder or a handler can be told went wrong.
//!
//! Every error here is `Clone`, so one handler failure can travel both ways of the
//! dual path (back to the tracked sender, and as a [`RelayError`] event on the relay).
//!
//! Chains follow the convention of `std::error::Error`: each `Display` says what failed
//! at its own layer, and [`source`](std::error::Error::source) gives the next layer, so
//! a chain printer (`anyhow`'s `{:#}`, `eyre`, a loop over `source()`) shows every layer
//! once: `a handler failed` → `sink for Order failed on message 3 (relay 1)` → the
//! handler's own error.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::core::deadlock::WouldDeadlock;

/// A handler's error, type-erased and shared: `Arc<dyn Error + Send + Sync>`.
///
/// An `Arc` rather than a `Box` so that one failure can be returned to the sender *and*
/// published as a [`RelayError`] event, and so that every error type here is `Clone`.
/// A handler never builds one itself: it returns any error type (see
/// [`HandlerResult`](crate::HandlerResult)) and the relay wraps it.
///
/// # Examples
///
/// ```
/// use pipedream_rs::SharedError;
/// use std::sync::Arc;
/// let e: SharedError = Arc::new(std::io::Error::other("disk full"));
/// let copy = e.clone(); // the same error, shared
/// assert_eq!(copy.to_string(), "disk full");
/// ```
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// Which kind of handler or task produced a [`RelayError`].
///
/// # Examples
///
/// ```
/// use pipedream_rs::HandlerKind;
/// assert_eq!(HandlerKind::Sink.to_string(), "sink");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandlerKind {
    /// A terminal handler registered with `sink` / `sink_async`.
    Sink,
    /// A pass-through handler registered with `tap` / `tap_async`.
    Tap,
    /// A task started with `within`.
    Within,
    /// A message taken from a `subscribe_tracked` subscription.
    Tracked,
    /// The forwarder of a derived relay or a `forward` connection.
    Forwarder,
    /// A plain subscription's queue: a message evicted from it (drop-oldest) whose
    /// `Drop` panicked.
    Subscription,
    /// A bridge to a message engine (feature `nats`): a message it could not carry, or a
    /// remote side's failure (see `pipedream_rs::bridge`).
    Bridge,
}

impl fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandlerKind::Sink => "sink",
            HandlerKind::Tap => "tap",
            HandlerKind::Within => "within",
            HandlerKind::Tracked => "tracked subscription",
            HandlerKind::Forwarder => "forwarder",
            HandlerKind::Subscription => "subscription",
            HandlerKind::Bridge => "bridge",
        })
    }
}

/// A handler failed (returned `Err` or panicked) while processing a message.
///
/// It reaches the tracked sender (inside [`SendError::Downstream`] or
/// [`SendError::Aggregate`]) *and* is published on the relay as an ordinary event, so
/// `rx.subscribe::<RelayError>()` sees every failure exactly once.
///
/// Its `Display` names the handler and the message; the handler's own error is its
/// [`source`](std::error::Error::source). Two `RelayError`s are equal when they report the
/// same failure: the same fields and the very same underlying error (the copy returned to
/// the sender equals the published event).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, SendError};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("negative input")]
/// struct Negative;
///
/// let (tx, rx) = Relay::channel();
/// rx.sink::<i32>(|n| if *n < 0 { Err(Negative) } else { Ok(()) });
/// match tx.send(-1).await {
///     Err(SendError::Downstream(e)) => {
///         assert_eq!(e.to_string(), format!("sink for i32 failed on message 1 (relay {})", tx.id()));
///         assert_eq!(e.error.to_string(), "negative input"); // also `e.source()`
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # });
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} for {type_name} failed on message {msg_id} (relay {relay_id})")]
#[non_exhaustive]
pub struct RelayError {
    /// The id of the message being processed (see [`Envelope::msg_id`](crate::Envelope::msg_id));
    /// `0` for a failure not tied to one message (a `within` task).
    pub msg_id: u64,
    /// The id of the relay the handler is registered on.
    pub relay_id: u64,
    /// What kind of handler failed.
    pub kind: HandlerKind,
    /// The message type the handler was registered for (`std::any::type_name`).
    pub type_name: &'static str,
    /// The underlying error: the handler's own error, a [`PanicError`], or a
    /// [`HandlerGone`] / [`QueueFull`] when the handler never processed the message.
    #[source]
    pub error: SharedError,
}

impl PartialEq for RelayError {
    fn eq(&self, other: &Self) -> bool {
        self.msg_id == other.msg_id
            && self.relay_id == other.relay_id
            && self.kind == other.kind
            && self.type_name == other.type_name
            && Arc::ptr_eq(&self.error, &other.error)
    }
}

impl RelayError {
    /// `true` if the handler panicked (the error is a [`PanicError`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.sink::<i32>(|n| if *n < 0 { panic!("negative") });
    /// let err = tx.send(-1).await.unwrap_err();
    /// assert!(err.errors()[0].is_panic());
    /// # });
    /// ```
    pub fn is_panic(&self) -> bool {
        self.error.downcast_ref::<PanicError>().is_some()
    }

    /// The underlying error as a concrete type, if it is one.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::PanicError;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.tap::<i32>(|n| if *n > 0 { panic!("boom") });
    /// let err = tx.send(1).await.unwrap_err();
    /// assert_eq!(err.errors()[0].downcast_ref::<PanicError>().unwrap().message, "boom");
    /// # });
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref::<E>()
    }
}

/// A handler panicked; the panic was caught and turned into this error
/// (under [`PanicMode::CatchAndEmit`](crate::PanicMode::CatchAndEmit), the default).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::PanicError;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// rx.sink::<u8>(|n| if *n > 0 { panic!("unlucky") });
/// let err = tx.send(13u8).await.unwrap_err();
/// let panic = err.errors()[0].downcast_ref::<PanicError>().unwrap();
/// assert_eq!(panic.to_string(), "handler panicked: unlucky");
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler panicked: {message}")]
#[non_exhaustive]
pub struct PanicError {
    /// The panic payload, when it was a string; a placeholder otherwise.
    pub message: String,
}

impl PanicError {
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "<non-string panic payload>".to_owned()
        };
        PanicError { message }
    }

    /// A panic in the `Drop` of a message, after its handler had settled it.
    pub(crate) fn dropping(payload: &(dyn std::any::Any + Send)) -> Self {
        let PanicError { message } = Self::from_payload(payload);
        PanicError {
            message: format!("while dropping the message: {message}"),
        }
    }
}

/// A tracked handler went away (its subscription or task was dropped, or the spawner
/// never ran its task) before it processed the message.
///
/// # Examples
///
/// ```
/// use pipedream_rs::HandlerGone;
/// assert!(HandlerGone.to_string().contains("dropped"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the handler was dropped before it processed the message")]
pub struct HandlerGone;

/// Why [`RelaySender::try_send`](crate::RelaySender::try_send) did not send; the value
/// comes back in every case, so nothing is lost.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{DeliveryMode, Relay, TrySendError};
/// let (tx, rx) = Relay::builder()
///     .channel_size(1)
///     .delivery_mode(DeliveryMode::Lossless)
///     .build()
///     .unwrap();
/// let _sub = rx.subscribe::<u8>();
/// assert!(tx.try_send(1u8).is_ok());
/// let full = tx.try_send(2u8).unwrap_err();
/// assert_eq!(full, TrySendError::Full(2));
/// assert_eq!(full.into_inner(), 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// Lossless mode, and a subscriber's queue is full: the message was delivered to
    /// nobody (a `send` would wait for room).
    #[error("a subscriber's queue is full")]
    Full(T),
    /// The relay is closed.
    #[error("the relay is closed")]
    Closed(T),
    /// Nobody subscribes to the type, and the relay was built with
    /// [`reject_unrouted`](crate::RelayBuilder::reject_unrouted).
    #[error("no subscriber for `{}`", std::any::type_name::<T>())]
    Unrouted(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::TrySendError;
    /// assert_eq!(TrySendError::Closed("x").into_inner(), "x");
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(v) | TrySendError::Closed(v) | TrySendError::Unrouted(v) => v,
        }
    }
}

/// Shows the variant, not the value (which need not be `Debug`).
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrySendError::Full(_) => "Full(..)",
            TrySendError::Closed(_) => "Closed(..)",
            TrySendError::Unrouted(_) => "Unrouted(..)",
        })
    }
}

/// Why a [`send_all`](crate::RelaySender::send_all) stopped, and how far it got: the
/// messages before `sent` were sent as single sends would have been (their receipts
/// summed in `receipt`); the message at `sent` failed with `error`; those after it were
/// not sent. A batch refused at the call (closed relay, `reject_unrouted`) has `sent == 0`.
///
/// `Display` says where the batch stopped; [`source`](std::error::Error::source) is the
/// [`SendError`].
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::SendError;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// rx.sink::<u32>(|n| if *n == 3 { Err("three") } else { Ok(()) });
/// let stopped = tx.send_all(1..=5u32).await.unwrap_err();
/// assert_eq!(stopped.sent, 2); // 1 and 2 were handled; 3 failed; 4 and 5 never sent
/// assert!(matches!(stopped.error, SendError::Downstream(_)));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("a batch send stopped after {sent} message(s)")]
#[non_exhaustive]
pub struct SendAllError {
    /// Messages sent before the one that failed.
    pub sent: usize,
    /// What those messages did.
    pub receipt: crate::BatchReceipt,
    /// Why the next one failed.
    #[source]
    pub error: SendError,
}

impl SendAllError {
    pub(crate) fn new(sent: usize, receipt: crate::BatchReceipt, error: SendError) -> Self {
        SendAllError {
            sent,
            receipt,
            error,
        }
    }
}

/// The task was stopped with [`TaskHandle::abort`](crate::TaskHandle::abort): the error
/// its handle resolves to. An abort is asked for, so it is not a failure of the relay's:
/// no `RelayError` event is published and no counter moves.
///
/// # Examples
///
/// ```
/// use pipedream_rs::TaskAborted;
/// assert_eq!(TaskAborted.to_string(), "the task was aborted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the task was aborted")]
pub struct TaskAborted;

/// In [`DeliveryMode::Broadcast`](crate::DeliveryMode::Broadcast), a tracked handler's queue
/// was full, so the message was dropped for it (and reported as a [`Dropped`](crate::Dropped)
/// event). The send is told, because the handler did not process the message.
///
/// # Examples
///
/// ```
/// use pipedream_rs::QueueFull;
/// assert!(QueueFull.to_string().contains("queue was full"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the handler's queue was full, so the message was dropped for it (broadcast mode)")]
pub struct QueueFull;

/// The value of a [`send_or_return`](crate::RelaySender::send_or_return) made on a closed
/// relay, handed back unsent.
///
/// `send` drops the value of a send it refuses ([`SendError::Closed`]); use
/// `send_or_return` when the value must not be lost, for example to send it elsewhere or
/// to persist it.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{Relay, Unsent};
/// let (tx, _rx) = Relay::channel();
/// tx.close();
/// let Err(unsent) = tx.send_or_return(String::from("keep me")) else { panic!() };
/// assert_eq!(unsent.to_string(), "the relay is closed; the value was not sent");
/// assert_eq!(unsent.into_inner(), "keep me");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Unsent<T>(pub T);

impl<T> Unsent<T> {
    /// The value that was not sent.
    ///
    /// # Examples
    ///
    /// ```
    /// let unsent = pipedream_rs::Unsent(5u8);
    /// assert_eq!(unsent.into_inner(), 5);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

// Not derived: `Debug` and `Error` hold for every `T`, not only `T: Debug`.
impl<T> fmt::Debug for Unsent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsent").finish_non_exhaustive()
    }
}

impl<T> fmt::Display for Unsent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the relay is closed; the value was not sent")
    }
}

impl<T> StdError for Unsent<T> {}

/// Why [`RelaySender::send`](crate::RelaySender::send) failed.
///
/// `Display` says which way the send failed; for a handler failure the
/// [`RelayError`] is the [`source`](std::error::Error::source), and the handler's own error
/// is the source of that. `SendError` is `PartialEq`, so a test can write
/// `assert_eq!(result, Err(SendError::Closed))`.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, SendError};
/// let (tx, _rx) = Relay::channel();
/// tx.close();
/// assert_eq!(tx.send(1u8).await, Err(SendError::Closed));
/// # });
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SendError {
    /// The relay is closed: its sender was closed or dropped. Nothing was delivered.
    Closed,
    /// A tracked handler failed ([`ErrorMode::FirstWins`](crate::ErrorMode::FirstWins)):
    /// the first failure of this message.
    Downstream(RelayError),
    /// One or more tracked handlers failed
    /// ([`ErrorMode::Aggregate`](crate::ErrorMode::Aggregate)): every failure of this
    /// message, in the order they happened. The relay never makes an empty one; `source()`
    /// is the first failure.
    Aggregate(Vec<RelayError>),
    /// [`RelaySender::send_any`](crate::RelaySender::send_any) was given a `TypeId` that
    /// is not the type of the value. Nothing was delivered.
    TypeMismatch,
    /// The message would reach no subscriber, and the relay was built with
    /// [`RelayBuilder::reject_unrouted`](crate::RelayBuilder::reject_unrouted). Nothing was
    /// delivered; it is still counted and published as an [`Unrouted`](crate::Unrouted)
    /// event. `type_name` is the message's type, as `std::any::type_name` gives it.
    Unrouted {
        /// The message's type.
        type_name: &'static str,
    },
    /// A tracked send made by one of the relay's own handlers or forwarders stopped
    /// waiting: the handlers it waited for were waiting, in turn, for the task that made
    /// it (see [`WouldDeadlock`]). The message was queued and is still processed; its
    /// outcome is not reported to this sender.
    WouldDeadlock(WouldDeadlock),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("sending on a closed relay"),
            SendError::Downstream(_) => f.write_str("a handler failed"),
            SendError::Aggregate(v) if v.len() == 1 => f.write_str("1 handler failed"),
            SendError::Aggregate(v) => write!(f, "{} handlers failed", v.len()),
            SendError::TypeMismatch => {
                f.write_str("send_any: the TypeId given does not match the value's type")
            }
            SendError::WouldDeadlock(_) => {
                f.write_str("the send stopped waiting: waiting would have deadlocked")
            }
            SendError::Unrouted { type_name } => write!(
                f,
                "no subscriber for {type_name}: the message reached nobody (check the type sent)"
            ),
        }
    }
}

impl StdError for SendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SendError::WouldDeadlock(cycle) => Some(cycle),
            _ => self
                .errors()
                .first()
                .map(|e| e as &(dyn StdError + 'static)),
        }
    }
}

impl PartialEq for SendError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SendError::Closed, SendError::Closed) => true,
            (SendError::Downstream(a), SendError::Downstream(b)) => a == b,
            (SendError::Aggregate(a), SendError::Aggregate(b)) => a == b,
            (SendError::TypeMismatch, SendError::TypeMismatch) => true,
            (SendError::Unrouted { type_name: a }, SendError::Unrouted { type_name: b }) => a == b,
            (SendError::WouldDeadlock(a), SendError::WouldDeadlock(b)) => a == b,
            _ => false,
        }
    }
}

impl SendError {
    /// Every handler error this send carries (empty for `Closed`, `TypeMismatch` and
    /// `Unrouted`).
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::SendError;
    /// assert!(SendError::Closed.errors().is_empty());
    /// ```
    pub fn errors(&self) -> &[RelayError] {
        match self {
            SendError::Downstream(e) => std::slice::from_ref(e),
            SendError::Aggregate(v) => v,
            _ => &[],
        }
    }
}

/// Why [`RelayBuilder::build`](crate::RelayBuilder::build) refused to build a relay.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{BuildError, Relay};
/// let err = Relay::builder().channel_size(0).build().unwrap_err();
/// assert_eq!(err, BuildError::ZeroChannelSize);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A channel size of zero would drop (or block) every message.
    #[error("channel size must be at least 1")]
    ZeroChannelSize,
    /// A channel size above [`MAX_CHANNEL_SIZE`](crate::MAX_CHANNEL_SIZE): a queue counts
    /// its messages in 40 bits.
    #[error("channel size {size} is above the largest, {max}")]
    ChannelSizeTooLarge {
        /// The size asked for.
        size: usize,
        /// The largest size a relay accepts.
        max: usize,
    },
    /// A retention (`RelayBuilder::retain`) above [`MAX_CHANNEL_SIZE`](crate::MAX_CHANNEL_SIZE).
    #[error("retention of {size} messages of `{type_name}` is above the largest, {max}")]
    RetentionTooLarge {
        /// The retained type.
        type_name: &'static str,
        /// The number of messages asked for.
        size: usize,
        /// The largest retention a relay accepts.
        max: usize,
    },
    /// No spawner was given and none could be chosen: the crate was built with no runtime
    /// feature.
    #[error(
        "no spawner: enable a runtime feature (`smol`, `tokio` or `async-std`), or pass one \
         with `Relay::builder().spawner(..)`"
    )]
    NoSpawner,
}
