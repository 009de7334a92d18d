//! Untracked subscriptions: [`Subscription<T>`] (one type) and [`EnvelopeSubscription`]
//! (every type), and the attachment to a relay that every subscription shares.
//!
//! # Delivery
//!
//! Each subscription has its own queue of `channel_size` messages. What happens when it
//! is full depends on the relay's [`DeliveryMode`](crate::DeliveryMode):
//! - `Broadcast` (default): the message is dropped *for this subscription*, counted in
//!   [`Subscription::dropped`] and the relay's stats, and reported as a
//!   [`Dropped`](crate::Dropped) event. Other subscribers are not affected.
//! - `Lossless`: the sender waits until this subscription has room (back-pressure).
//!
//! An untracked subscription is never waited for: `send` returns without knowing whether
//! it has read the message. Use `sink`/`tap` (or `subscribe_tracked`) for that.
//!
//! # End of stream
//!
//! When the relay closes, a subscription still yields every message queued before the
//! close, then `None`. A subscription made on a closed relay yields `None` at once.

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::stream::FusedStream;
use futures::Stream;

use crate::core::queue::QueueRx;
use crate::core::Core;
use crate::relay::envelope::{Envelope, Queued};
use crate::relay::error::{HandlerKind, PanicError, RelayError};
use crate::relay::options::SubscribeOptions;
use crate::relay::recv::{Receive, Recv, RecvEnvelope, RecvMany};

/// Why [`Subscription::try_recv`] returned no message.
///
/// `#[non_exhaustive]`: a later version may add a reason, so a `match` on it outside this
/// crate needs a wildcard arm.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{Relay, TryRecvError};
/// let (tx, rx) = Relay::channel();
/// let mut sub = rx.subscribe::<u8>();
/// assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
/// drop(tx);
/// assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued now; more may come.
    #[error("no message is queued")]
    Empty,
    /// The relay is closed and everything queued has been received.
    #[error("the relay is closed and the queue is drained")]
    Closed,
}

/// A registered queue and what it needs to leave cleanly.
///
/// On drop it unregisters (no later send snapshots it), closes its queue, and fails every
/// tracked message still queued with [`HandlerGone`](crate::HandlerGone), so no sender
/// waits for a subscriber that is gone.
pub(crate) struct Attached {
    pub(crate) core: Weak<Core>,
    pub(crate) relay_id: u64,
    pub(crate) ty: Option<TypeId>,
    pub(crate) queue: QueueRx,
}

impl Attached {
    pub(crate) fn new(
        core: &Weak<Core>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        tracked: Option<crate::HandlerKind>,
    ) -> Self {
        Self::linked(core, ty, tracked, Box::default())
    }

    /// As [`new`](Self::new), for a tracked forwarder passing messages on to `links`.
    pub(crate) fn linked(
        core: &Weak<Core>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        tracked: Option<crate::HandlerKind>,
        links: Box<[crate::core::Link]>,
    ) -> Self {
        Self::with_options(core, ty, tracked, links, SubscribeOptions::default())
    }

    /// As [`linked`](Self::linked), with the queue's own capacity and mode.
    pub(crate) fn with_options(
        core: &Weak<Core>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        tracked: Option<crate::HandlerKind>,
        links: Box<[crate::core::Link]>,
        options: SubscribeOptions,
    ) -> Self {
        let (queue, relay_id) = match core.upgrade() {
            Some(c) => (c.register(ty, tracked, links, options), c.id),
            None => {
                // The relay is gone: a queue whose only sender is already dropped.
                let (_, rx) = crate::core::queue::queue(1, 0, tracked, links);
                (rx, 0)
            }
        };
        Attached {
            core: core.clone(),
            relay_id,
            ty: ty.map(|(id, _)| id),
            queue,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.queue.state.id
    }

    /// The relay is closed, or gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.core.upgrade().is_none_or(|core| core.is_closed())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let core = self.core.upgrade();
        if let Some(core) = &core {
            core.unregister(self.queue.state.id);
        }
        let mut left = self.queue.close_and_drain();
        // Every tracker first (with the relay gone, nobody can be waiting: in-flight
        // sends hold it alive), the values after, so a value whose `Drop` panics cannot
        // leave the senders of the ones behind it waiting.
        if let Some(core) = &core {
            for item in &mut left {
                core.settle_gone(item, &self.queue.state);
            }
        }
        let mut raised = None;
        for item in left {
            let (msg_id, type_name) = (item.envelope.msg_id, item.envelope.type_name());
            let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| drop(item))) else {
                continue;
            };
            match &core {
                // A relay's own task: the panic is reported, the task's end goes on.
                Some(core) if !self.queue.releases_when_idle() => core.report(
                    None,
                    RelayError {
                        msg_id,
                        relay_id: core.id,
                        kind: self.queue.state.tracked.unwrap_or(HandlerKind::Forwarder),
                        type_name,
                        error: Arc::new(PanicError::dropping(&*payload)),
                    },
                ),
                // A subscription the user drops: their value's panic is theirs, raised
                // once everything is dropped, as a `Vec`'s drop would.
                _ => {
                    raised.get_or_insert(payload);
                }
            }
        }
        if let Some(payload) = raised {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

fn downcast<T: Any + Send + Sync>(item: Queued) -> Option<Arc<T>> {
    // Routing by TypeId guarantees the type; `send_any` checks it before sending.
    item.envelope.value.downcast::<T>().ok()
}

/// An untracked subscription to messages of type `T`.
///
/// Made by [`RelayReceiver::subscribe`](crate::RelayReceiver::subscribe). Receives every
/// `T` sent after it was made (subject to the delivery mode, see the module docs), as an
/// `Arc<T>` shared with the other subscribers. Also a [`Stream`].
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::StreamExt;
/// use pipedream_rs::Relay;
///
/// let (tx, rx) = Relay::channel();
/// let mut words = rx.subscribe::<String>();
/// tx.send(String::from("hello")).await.unwrap();
/// tx.send(42i32).await.unwrap(); // not a String: never reaches `words`
/// drop(tx);
/// assert_eq!(words.next().await.as_deref().map(String::as_str), Some("hello"));
/// assert_eq!(words.next().await, None);
/// # });
/// ```
///
/// A subscription dropped at once receives nothing, so not keeping it is a warning
/// (`#[must_use]`; an error here, where the example denies it):
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let (_tx, rx) = pipedream_rs::Relay::channel();
/// rx.subscribe::<u8>(); // error: unused `Subscription` that must be used
/// ```
#[must_use = "a subscription only receives while it is kept: hold it and call recv()"]
pub struct Subscription<T> {
    attached: Attached,
    _type: PhantomData<fn() -> T>,
}

impl<T: Any + Send + Sync> Subscription<T> {
    pub(crate) fn new(core: &Weak<Core>) -> Self {
        Self::with_options(core, SubscribeOptions::default())
    }

    pub(crate) fn with_options(core: &Weak<Core>, options: SubscribeOptions) -> Self {
        let mut attached = Attached::with_options(
            core,
            Some((TypeId::of::<T>(), std::any::type_name::<T>)),
            None,
            Box::default(),
            options,
        );
        attached.queue.release_when_idle();
        Subscription {
            attached,
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
    /// let mut sub = rx.subscribe::<u8>();
    /// tx.send(7u8).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 7);
    /// # });
    /// ```
    #[doc(alias = "next")]
    pub fn recv(&mut self) -> Recv<'_, T> {
        Recv::new(self)
    }

    /// The next message if one is queued now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued, [`TryRecvError::Closed`] if the relay
    /// is closed and everything was received.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// tx.send(7u8).await.unwrap();
    /// assert_eq!(*sub.try_recv().unwrap(), 7);
    /// assert!(sub.try_recv().is_err());
    /// # });
    /// ```
    pub fn try_recv(&mut self) -> Result<Arc<T>, TryRecvError> {
        loop {
            let item = self.attached.queue.try_recv().map_err(map_try)?;
            if let Some(value) = downcast(item) {
                return Ok(value);
            }
        }
    }

    /// Waits for at least one message, then takes up to `max` that are queued, appending
    /// them to `buf` in order; resolves to how many it took. `0` means the end (the relay
    /// closed and the queue drained), or `max == 0`. The batched form of
    /// [`recv`](Self::recv): one wait and one poll for a run of messages.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as `recv`: messages are taken only in the poll that returns them.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u32>();
    /// for n in 0..5u32 {
    ///     tx.send(n).await.unwrap();
    /// }
    /// let mut buf = Vec::new();
    /// assert_eq!(sub.recv_many(&mut buf, 3).await, 3);
    /// assert_eq!(sub.recv_many(&mut buf, 3).await, 2);
    /// let got: Vec<u32> = buf.iter().map(|n| **n).collect();
    /// assert_eq!(got, [0, 1, 2, 3, 4]);
    /// drop(tx);
    /// assert_eq!(sub.recv_many(&mut buf, 3).await, 0); // the end
    /// # });
    /// ```
    pub fn recv_many<'a>(&'a mut self, buf: &'a mut Vec<Arc<T>>, max: usize) -> RecvMany<'a, T> {
        RecvMany::new(self, buf, max)
    }

    /// Takes up to `max` messages queued now, appending them to `buf`; how many it took
    /// (`0` if none is queued, or at the end: [`recv_many`](Self::recv_many) or
    /// [`try_recv`](Self::try_recv) tell the two apart). Never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// tx.send(1u8).await.unwrap();
    /// tx.send(2u8).await.unwrap();
    /// let mut buf = Vec::new();
    /// assert_eq!(sub.try_recv_many(&mut buf, 64), 2);
    /// assert_eq!(sub.try_recv_many(&mut buf, 64), 0);
    /// # });
    /// ```
    pub fn try_recv_many(&mut self, buf: &mut Vec<Arc<T>>, max: usize) -> usize {
        let took = self.take_queued(buf, max);
        if took < max {
            // It emptied the queue: give back the held-back room and let go of the
            // channel, as `try_recv` finding nothing does (an idle subscriber holds none).
            self.attached.queue.settle_idle();
        }
        took
    }

    /// Appends up to `max` messages queued now to `buf`. The end is not reported here
    /// (the caller's next receive returns it, and only then is the stream terminated),
    /// and the channel is kept.
    pub(crate) fn take_queued(&mut self, buf: &mut Vec<Arc<T>>, max: usize) -> usize {
        let mut took = 0;
        while took < max {
            let Some(item) = self.attached.queue.take_queued() else {
                break;
            };
            if let Some(value) = downcast(item) {
                buf.push(value);
                took += 1;
            }
        }
        took
    }

    /// This subscriber's id, unique in the process (as in [`Dropped::subscriber_id`](crate::Dropped)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let (a, b) = (rx.subscribe::<u8>(), rx.subscribe::<u8>());
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.attached.id()
    }

    /// How many messages this subscription missed because its queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel_with_size(1);
    /// let sub = rx.subscribe::<u8>();
    /// tx.send(1u8).await.unwrap();
    /// tx.send(2u8).await.unwrap();
    /// assert_eq!(sub.dropped(), 1);
    /// # });
    /// ```
    pub fn dropped(&self) -> u64 {
        self.attached.queue.state.dropped()
    }

    /// Messages queued for this subscription now.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let sub = rx.subscribe::<u8>();
    /// tx.send(1u8).await.unwrap();
    /// assert_eq!(sub.len(), 1);
    /// # });
    /// ```
    pub fn len(&self) -> usize {
        self.attached.queue.len()
    }

    /// `true` when nothing is queued for this subscription now.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe::<u8>().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` once the relay is closed (or gone): nothing new will arrive, though messages
    /// queued before the close are still received.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let sub = rx.subscribe::<u8>();
    /// assert!(!sub.is_closed());
    /// drop(tx);
    /// assert!(sub.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.attached.is_closed()
    }
}

impl<T> Subscription<T> {
    pub(crate) fn give_up(&mut self) {
        self.attached.queue.abandon_wait();
    }
}

impl<T: Any + Send + Sync> Receive for Subscription<T> {
    type Item = Arc<T>;

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        loop {
            match self.attached.queue.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    if let Some(value) = downcast(item) {
                        return Poll::Ready(Some(value));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A subscription is a `Stream` of the same messages [`recv`](Subscription::recv)
/// returns, with the same cancel safety.
impl<T: Any + Send + Sync> Stream for Subscription<T> {
    type Item = Arc<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        self.poll_item(cx)
    }
}

/// Terminated once it has returned its end (`None`): the relay closed and the queue
/// drained. So a `select!` loop sees the `None` before `complete`.
impl<T: Any + Send + Sync> FusedStream for Subscription<T> {
    fn is_terminated(&self) -> bool {
        self.attached.queue.has_finished()
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.attached.id())
            .finish()
    }
}

/// An untracked subscription to every message, whatever its type, as [`Envelope`]s.
///
/// Made by [`RelayReceiver::subscribe_all`](crate::RelayReceiver::subscribe_all).
/// Internal events (`Dropped`, `RelayError`) are messages too, so it sees them as well.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let mut all = rx.subscribe_all();
/// tx.send(1u8).await.unwrap();
/// tx.send("two").await.unwrap();
/// assert!(all.recv().await.unwrap().is::<u8>());
/// assert!(all.recv().await.unwrap().is::<&str>());
/// # });
/// ```
#[must_use = "a subscription only receives while it is kept: hold it and call recv()"]
pub struct EnvelopeSubscription {
    attached: Attached,
}

impl EnvelopeSubscription {
    pub(crate) fn new(core: &Weak<Core>) -> Self {
        let mut attached = Attached::new(core, None, None);
        attached.queue.release_when_idle();
        EnvelopeSubscription { attached }
    }

    /// An untracked subscription to `T` only, as envelopes (a bridge's export, which
    /// needs each message's origin).
    #[cfg(any(feature = "nats", feature = "redis"))]
    pub(crate) fn typed<T: Any + Send + Sync>(core: &Weak<Core>) -> Self {
        let ty = Some((TypeId::of::<T>(), std::any::type_name::<T> as _));
        let mut attached = Attached::new(core, ty, None);
        attached.queue.release_when_idle();
        EnvelopeSubscription { attached }
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
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().msg_id(), 1);
    /// # });
    /// ```
    #[doc(alias = "next")]
    pub fn recv(&mut self) -> RecvEnvelope<'_> {
        RecvEnvelope::new(self)
    }

    /// The next message if one is queued now.
    ///
    /// # Errors
    ///
    /// As [`Subscription::try_recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe_all().try_recv().is_err());
    /// ```
    pub fn try_recv(&mut self) -> Result<Envelope, TryRecvError> {
        self.attached
            .queue
            .try_recv()
            .map(|item| item.envelope)
            .map_err(map_try)
    }

    /// This subscriber's id, unique in the process.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(rx.subscribe_all().id() > 0);
    /// ```
    pub fn id(&self) -> u64 {
        self.attached.id()
    }

    /// How many messages this subscription missed because its queue was full.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// assert_eq!(rx.subscribe_all().dropped(), 0);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.attached.queue.state.dropped()
    }

    /// `true` once the relay is closed (or gone); see [`Subscription::is_closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let all = rx.subscribe_all();
    /// tx.close();
    /// assert!(all.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.attached.is_closed()
    }

    pub(crate) fn give_up(&mut self) {
        self.attached.queue.abandon_wait();
    }
}

impl Receive for EnvelopeSubscription {
    type Item = Envelope;

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        self.attached
            .queue
            .poll_recv(cx)
            .map(|item| item.map(|i| i.envelope))
    }
}

impl Stream for EnvelopeSubscription {
    type Item = Envelope;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        self.poll_item(cx)
    }
}

/// Terminated once it has returned its end (`None`), as [`Subscription`]'s.
impl FusedStream for EnvelopeSubscription {
    fn is_terminated(&self) -> bool {
        self.attached.queue.has_finished()
    }
}

impl std::fmt::Debug for EnvelopeSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeSubscription")
            .field("id", &self.attached.id())
            .finish()
    }
}

/// The queue's "nothing now" (`false`) or "ended" (`true`) as a [`TryRecvError`].
pub(crate) fn map_try(ended: bool) -> TryRecvError {
    if ended {
        TryRecvError::Closed
    } else {
        TryRecvError::Empty
    }
}
