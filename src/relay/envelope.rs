//! [`Envelope`]: one message on its way through a relay, with its type erased.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use crate::core::tracker::Tracker;

/// One message as the relay carries it: the value behind an `Arc`, its type, its id and
/// the relay it entered first.
///
/// `subscribe_all` yields envelopes; typed subscriptions unwrap them for you.
/// Cloning an envelope is cheap (one reference-count increment).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::Relay;
/// let (tx, rx) = Relay::channel();
/// let mut all = rx.subscribe_all();
/// tx.send(5u32).await.unwrap();
/// let env = all.recv().await.unwrap();
/// assert_eq!(env.type_name(), "u32");
/// assert_eq!(env.origin(), tx.id());
/// assert_eq!(*env.downcast::<u32>().unwrap(), 5);
/// # });
/// ```
// Layout: 40 bytes, copied into every queue slot. The value's `TypeId` comes from its
// `dyn Any` vtable and the type's name from a function pointer, rather than 16 bytes each
// inline.
#[derive(Clone)]
pub struct Envelope {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) type_name: TypeName,
    pub(crate) msg_id: u64,
    pub(crate) origin: u64,
    /// Its `pipedream.send` span (feature `tracing`; zero-sized without it).
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) trace: crate::core::trace::SendSpan,
}

/// How an envelope names its type: `std::any::type_name::<T>` (or [`erased_name`]),
/// called only when the name is needed (errors, events, `Envelope::type_name`).
pub(crate) type TypeName = fn() -> &'static str;

/// The name of a type sent with `send_any` that no subscriber registered.
pub(crate) fn erased_name() -> &'static str {
    "<type-erased>"
}

impl Envelope {
    /// The message id, unique within the relay it was sent on (starting at 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send("a").await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().msg_id(), 1);
    /// # });
    /// ```
    pub fn msg_id(&self) -> u64 {
        self.msg_id
    }

    /// The id of the relay this message was first sent on (see
    /// [`RelaySender::id`](crate::RelaySender::id)); forwarding keeps it, which is how echo
    /// is prevented. A message a bridge brought in from a message engine (feature `nats`)
    /// has the relay's id with the top bit set (`bridge::IMPORTED`).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1i64).await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().origin(), tx.id());
    /// # });
    /// ```
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// The message's `pipedream.send` span (feature `tracing`): enter it, or instrument
    /// your own processing with it, to hang that work below the send, as the relay's own
    /// handlers do. A disabled span when no subscriber was interested as it was sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use tracing::Instrument;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// let env = all.recv().await.unwrap();
    /// async { /* this work is a child of the send */ }.instrument(env.span()).await;
    /// # });
    /// ```
    #[cfg(feature = "tracing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn span(&self) -> tracing::Span {
        self.trace.span()
    }

    /// The `TypeId` of the value.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::any::TypeId;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().type_id(), TypeId::of::<u8>());
    /// # });
    /// ```
    pub fn type_id(&self) -> TypeId {
        // `(*value)`: the value's own type, not the `Arc`'s.
        (*self.value).type_id()
    }

    /// The type's name, as `std::any::type_name` gives it (`"<type-erased>"` for a value
    /// sent with `send_any` whose type no subscriber had registered).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(String::from("x")).await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().type_name(), "alloc::string::String");
    /// # });
    /// ```
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// `true` if the value is a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// let env = all.recv().await.unwrap();
    /// assert!(env.is::<u8>() && !env.is::<u16>());
    /// # });
    /// ```
    pub fn is<T: Any>(&self) -> bool {
        self.value.is::<T>()
    }

    /// The value as an `Arc<T>`, if it is a `T`.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(3u8).await.unwrap();
    /// let env = all.recv().await.unwrap();
    /// assert!(env.downcast::<u16>().is_none());
    /// assert_eq!(*env.downcast::<u8>().unwrap(), 3);
    /// # });
    /// ```
    pub fn downcast<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.value.clone().downcast::<T>().ok()
    }

    /// The type-erased value itself.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(3u8).await.unwrap();
    /// let env = all.recv().await.unwrap();
    /// assert_eq!(env.value().downcast_ref::<u8>(), Some(&3));
    /// # });
    /// ```
    pub fn value(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.value
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("msg_id", &self.msg_id)
            .field("origin", &self.origin)
            .field("type_name", &self.type_name())
            .finish_non_exhaustive()
    }
}

/// What a subscriber's queue holds: the envelope, and — for a tracked subscriber of a
/// tracked send — the tracker it must complete exactly once.
pub(crate) struct Queued {
    pub(crate) envelope: Envelope,
    pub(crate) tracker: Option<Arc<Tracker>>,
}
