//! [`TrackedSubscription<T>`]: a subscription that every `send` of a `T` waits for, and
//! [`Tracked<T>`], the message it hands out, which must be completed.
//!
//! This is what `sink` and `tap` are built on; use it directly when you need to drive the
//! loop yourself. The contract:
//!
//! - every `send` of a `T` made while the subscription exists waits until the message is
//!   completed here ([`Tracked::complete`] or [`Tracked::fail`]);
//! - a [`Tracked`] dropped without either *fails* the message with
//!   [`HandlerGone`](crate::HandlerGone) — the sender is told, never left waiting;
//! - dropping the subscription fails every message still queued in it the same way;
//! - failures take the dual path: back to the sender, and as a `RelayError` event.
//!
//! Do not await a tracked `send` of the same relay while holding a `Tracked`: that send
//! waits for this subscription, which is waiting for you.

use std::any::{Any, TypeId};
use std::error::Error as StdError;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use crate::core::Core;
use crate::envelope::Envelope;
use crate::error::{BoxError, HandlerKind, RelayError};
use crate::subscription::{map_try, Attached, TryRecvError};
use crate::tracker::Tracker;

/// A tracked subscription to messages of type `T`.
///
/// Made by [`RelayReceiver::subscribe_tracked`](crate::RelayReceiver::subscribe_tracked);
/// see the [module docs](self) for the completion contract.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::Relay;
/// let (tx, rx) = Relay::channel();
/// let mut sub = rx.subscribe_tracked::<u32>();
/// let send = tx.send(5u32); // waits for `sub` to complete the message
/// let handle = async {
///     let msg = sub.recv().await.unwrap();
///     assert_eq!(*msg, 5);
///     msg.complete();
/// };
/// let (sent, ()) = futures::join!(send, handle);
/// assert!(sent.is_ok());
/// # });
/// ```
pub struct TrackedSubscription<T> {
    attached: Attached,
    kind: HandlerKind,
    _type: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> TrackedSubscription<T> {
    pub(crate) fn new(core: &Weak<Core>, kind: HandlerKind) -> Self {
        TrackedSubscription {
            attached: Attached::new(
                core,
                Some((TypeId::of::<T>(), std::any::type_name::<T>())),
                Some(kind),
            ),
            kind,
            _type: PhantomData,
        }
    }

    /// The next message, or `None` once the relay is closed and this queue is drained.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no message is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// drop(tx);
    /// assert!(sub.recv().await.is_none());
    /// # });
    /// ```
    pub async fn recv(&mut self) -> Option<Tracked<T>> {
        loop {
            let item = self.attached.queue.recv().await?;
            if let Some(msg) = self.wrap(item) {
                return Some(msg);
            }
        }
    }

    /// The next message if one is queued now.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`](crate::Subscription::try_recv).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe_tracked::<u8>().try_recv().is_err());
    /// ```
    pub fn try_recv(&mut self) -> Result<Tracked<T>, TryRecvError> {
        loop {
            let item = self.attached.queue.try_recv().map_err(map_try)?;
            if let Some(msg) = self.wrap(item) {
                return Ok(msg);
            }
        }
    }

    fn wrap(&self, item: crate::envelope::Queued) -> Option<Tracked<T>> {
        let value = item.envelope.value.clone().downcast::<T>().ok()?;
        Some(Tracked {
            value,
            envelope: item.envelope,
            tracker: item.tracker,
            core: self.attached.core.clone(),
            relay_id: self.attached.relay_id,
            kind: self.kind,
        })
    }

    /// This subscriber's id within its relay.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe_tracked::<u8>().id() > 0);
    /// ```
    pub fn id(&self) -> u64 {
        self.attached.id()
    }
}

impl<T> std::fmt::Debug for TrackedSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedSubscription")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.attached.id())
            .finish()
    }
}

/// A message from a [`TrackedSubscription`] that its sender is waiting on.
///
/// Dereferences to `T`. Finish it with [`complete`](Self::complete) or
/// [`fail`](Self::fail); dropping it does `fail` with [`HandlerGone`](crate::HandlerGone).
/// Messages that arrive as internal events (or on untracked sends) carry no tracker;
/// completing them does nothing.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{HandlerGone, Relay, SendError};
/// let (tx, rx) = Relay::channel();
/// let mut sub = rx.subscribe_tracked::<u8>();
/// let handle = async { drop(sub.recv().await.unwrap()) }; // dropped, not completed
/// let (sent, ()) = futures::join!(tx.send(1u8), handle);
/// match sent {
///     Err(SendError::Downstream(e)) => assert!(e.downcast_ref::<HandlerGone>().is_some()),
///     other => panic!("{other:?}"),
/// }
/// # });
/// ```
pub struct Tracked<T> {
    value: Arc<T>,
    envelope: Envelope,
    tracker: Option<Arc<Tracker>>,
    core: Weak<Core>,
    relay_id: u64,
    kind: HandlerKind,
}

impl<T> Tracked<T> {
    /// The message, shared.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// let (_, ()) = futures::join!(tx.send(1u8), async {
    ///     let msg = sub.recv().await.unwrap();
    ///     assert_eq!(**msg.value(), 1);
    ///     msg.complete();
    /// });
    /// # });
    /// ```
    pub fn value(&self) -> &Arc<T> {
        &self.value
    }

    /// The message's envelope (id, origin, type).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// let (_, ()) = futures::join!(tx.send(1u8), async {
    ///     let msg = sub.recv().await.unwrap();
    ///     assert_eq!(msg.envelope().msg_id(), 1);
    ///     msg.complete();
    /// });
    /// # });
    /// ```
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// `true` if a sender is waiting for this message.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// let (_, ()) = futures::join!(tx.send(1u8), async {
    ///     let msg = sub.recv().await.unwrap();
    ///     assert!(msg.is_tracked());
    ///     msg.complete();
    /// });
    /// # });
    /// ```
    pub fn is_tracked(&self) -> bool {
        self.tracker.is_some()
    }

    /// The message was processed successfully.
    ///
    /// # Examples
    ///
    /// See [`TrackedSubscription`].
    pub fn complete(mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.complete();
        }
    }

    /// The message failed: `error` reaches the sender and is published as a
    /// [`RelayError`] event.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::{Relay, SendError};
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("rejected")]
    /// struct Rejected;
    /// let (tx, rx) = Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// let (sent, ()) = futures::join!(tx.send(1u8), async {
    ///     sub.recv().await.unwrap().fail(Rejected);
    /// });
    /// assert!(matches!(sent, Err(SendError::Downstream(_))));
    /// # });
    /// ```
    pub fn fail<E: StdError + Send + Sync + 'static>(mut self, error: E) {
        self.report_failure(Arc::new(error));
    }

    pub(crate) fn fail_with(mut self, error: BoxError) {
        self.report_failure(error);
    }

    /// The dual path for this message; leaves no tracker behind, so `Drop` does nothing more.
    fn report_failure(&mut self, error: BoxError) {
        let tracker = self.tracker.take();
        let relay_error = RelayError {
            msg_id: self.envelope.msg_id,
            relay_id: self.relay_id,
            kind: self.kind,
            type_name: self.envelope.type_name,
            error,
        };
        match self.core.upgrade() {
            Some(core) => core.report(tracker.as_deref(), relay_error),
            // Nobody is waiting if the relay is gone (in-flight sends keep it alive), but
            // complete the tracker anyway so the invariant holds.
            None => {
                if let Some(tracker) = tracker {
                    tracker.fail(relay_error);
                }
            }
        }
    }
}

impl<T> Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        if self.tracker.is_some() {
            self.report_failure(Arc::new(crate::error::HandlerGone));
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("value", &self.value)
            .field("msg_id", &self.envelope.msg_id)
            .field("tracked", &self.tracker.is_some())
            .finish()
    }
}
