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

use std::any::Any;
use std::error::Error as StdError;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::stream::FusedStream;
use futures::Stream;

use crate::core::inbox::{Completion, Inbox};
use crate::core::Core;
use crate::relay::envelope::Envelope;
use crate::relay::error::{HandlerKind, SharedError};
use crate::relay::recv::{Receive, RecvTracked};
use crate::relay::subscription::TryRecvError;

/// A tracked subscription to messages of type `T`.
///
/// Made by [`RelayReceiver::subscribe_tracked`](crate::RelayReceiver::subscribe_tracked);
/// see the `tracked` section of SEMANTICS.md and [`Tracked`] for the completion contract.
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
#[must_use = "a tracked subscription is waited for by every send of its type: hold it and call recv()"]
pub struct TrackedSubscription<T> {
    inbox: Inbox,
    _type: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> TrackedSubscription<T> {
    pub(crate) fn new(core: &Weak<Core>, kind: HandlerKind) -> Self {
        let inbox = if kind == HandlerKind::Tracked {
            // A user's own subscription (not a sink's or tap's): idle, it holds no channel;
            // and a message its owner took is done with as far as `idle()` goes (the
            // owner may hold several at once), so it is not a task's inbox.
            let mut inbox = Inbox::held::<T>(core, kind);
            inbox.release_when_idle();
            inbox
        } else {
            Inbox::typed::<T>(core, kind, true)
        };
        TrackedSubscription {
            inbox,
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
    #[doc(alias = "next")]
    pub fn recv(&mut self) -> RecvTracked<'_, T> {
        RecvTracked::new(self)
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
            if let Some(msg) = Tracked::new(self.inbox.try_recv()?) {
                return Ok(msg);
            }
        }
    }

    /// This subscriber's id, unique in the process.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe_tracked::<u8>().id() > 0);
    /// ```
    pub fn id(&self) -> u64 {
        self.inbox.id()
    }

    /// `true` once the relay is closed (or gone); see
    /// [`Subscription::is_closed`](crate::Subscription::is_closed).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let jobs = rx.subscribe_tracked::<u8>();
    /// drop(tx);
    /// assert!(jobs.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }
}

impl<T> TrackedSubscription<T> {
    pub(crate) fn give_up(&mut self) {
        self.inbox.abandon_wait();
    }
}

impl<T: Any + Send + Sync> Receive for TrackedSubscription<T> {
    type Item = Tracked<T>;

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Tracked<T>>> {
        loop {
            match self.inbox.poll_recv(cx) {
                Poll::Ready(Some(msg)) => {
                    if let Some(msg) = Tracked::new(msg) {
                        return Poll::Ready(Some(msg));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A tracked subscription is a `Stream` of the messages [`recv`](TrackedSubscription::recv)
/// returns; each must still be completed or failed (or dropped, which fails it).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::StreamExt;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let jobs = rx.subscribe_tracked::<u8>();
/// let worker = jobs.for_each(|job| async move { job.complete() });
/// let sends = async {
///     tx.send(1u8).await.unwrap();
///     drop(tx);
/// };
/// futures::join!(worker, sends);
/// # });
/// ```
impl<T: Any + Send + Sync> Stream for TrackedSubscription<T> {
    type Item = Tracked<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Tracked<T>>> {
        self.poll_item(cx)
    }
}

/// Terminated once it has returned its end (`None`), as a [`Subscription`](crate::Subscription)'s.
impl<T: Any + Send + Sync> FusedStream for TrackedSubscription<T> {
    fn is_terminated(&self) -> bool {
        self.inbox.has_finished()
    }
}

impl<T> std::fmt::Debug for TrackedSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedSubscription")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.inbox.id())
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
#[must_use = "dropping a Tracked fails its message with HandlerGone: call complete() or fail()"]
pub struct Tracked<T> {
    value: Arc<T>,
    completion: Completion,
}

impl<T: Any + Send + Sync> Tracked<T> {
    /// `None` only if the value is not a `T`, which routing by `TypeId` rules out.
    pub(crate) fn new(completion: Completion) -> Option<Self> {
        let value = completion.envelope().value.clone().downcast::<T>().ok()?;
        Some(Tracked { value, completion })
    }
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
        self.completion.envelope()
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
        self.completion.is_tracked()
    }

    /// The message was processed successfully.
    ///
    /// # Examples
    ///
    /// See [`TrackedSubscription`].
    pub fn complete(self) {
        self.completion.complete();
    }

    /// The message failed: `error` reaches the sender and is published as a
    /// [`RelayError`](crate::RelayError) event.
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
    pub fn fail<E: StdError + Send + Sync + 'static>(self, error: E) {
        self.completion.fail(Arc::new(error));
    }

    pub(crate) fn fail_with(self, error: SharedError) {
        self.completion.fail(error);
    }

    pub(crate) fn reporter(&self) -> crate::core::inbox::Reporter {
        self.completion.reporter()
    }
}

impl<T> Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("value", &self.value)
            .field("msg_id", &self.completion.msg_id)
            .field("tracked", &self.completion.is_tracked())
            .finish()
    }
}
