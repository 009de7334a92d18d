//! The sending side of a relay: [`RelaySender`] (owns the relay) and [`WeakSender`].

use std::any::{Any, TypeId};
use std::future::Future;
use std::sync::{Arc, Weak};

use crate::core::delivery::Delivery;
use crate::core::{Core, From, Outgoing};
use crate::relay::error::{SendError, TrySendError, Unsent};
use crate::relay::receipt::Receipt;
use crate::relay::send_sink::SendSink;

/// The owning, sending half of a relay.
///
/// There is exactly one per relay, so it is not `Clone`: dropping it, or calling
/// [`close`](Self::close), closes the relay. For more senders (one per task, say), use
/// [`weak`](Self::weak): `WeakSender`s are `Clone` and send the same way, without keeping
/// the relay open.
///
/// # What `send(..).await` means
///
/// - `Ok(receipt)`: the message was handed to every subscriber of its type registered before
///   the call (in [`DeliveryMode::Lossless`](crate::DeliveryMode::Lossless): queued for each
///   of them; in `Broadcast`: queued, or dropped-and-reported for each full queue), **and**
///   every tracked handler (`sink`, `tap`, tracked subscriptions) of that type has processed
///   it without error.
/// - `Err(SendError::Downstream(e))` / `Err(SendError::Aggregate(v))`: a tracked handler
///   failed (returned `Err`, panicked, was dropped, or missed the message on a full queue).
/// - `Err(SendError::Closed)`: the relay was closed; nothing was delivered.
///
/// The snapshot of who receives the message is taken when `send` is *called*, not when
/// the future is first polled: a subscriber registered before the call is included, one
/// registered after is not.
///
/// # Cancel safety
///
/// Dropping a `send` future part-way is safe: nothing leaks and later sends are not
/// blocked. The message may have reached some subscribers and not others; handlers that
/// got it still process it. A future dropped before its first poll delivers nothing.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::Relay;
/// let (tx, rx) = Relay::channel();
/// let mut numbers = rx.subscribe::<i32>();
/// tx.send(1i32).await?;
/// assert_eq!(*numbers.recv().await.unwrap(), 1);
/// # Ok::<(), pipedream_rs::SendError>(())
/// # }).unwrap();
/// ```
///
/// Not `Clone` (there is one owner per relay); [`weak`](Self::weak) is what you want:
///
/// ```compile_fail
/// let (tx, _rx) = pipedream_rs::Relay::channel();
/// let second = tx.clone(); // error: no method named `clone` found for `RelaySender`
/// ```
///
/// ```
/// let (tx, _rx) = pipedream_rs::Relay::channel();
/// let second = tx.weak();
/// let third = second.clone();
/// # drop((second, third));
/// ```
pub struct RelaySender {
    pub(crate) core: Arc<Core>,
}

impl RelaySender {
    /// Sends `value` to every subscriber of its type and waits for the tracked handlers
    /// (see the type docs for exactly what the result means).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] on a closed relay; [`SendError::Downstream`] or
    /// [`SendError::Aggregate`] when a tracked handler failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.sink::<String>(|s| println!("got {s}"));
    /// tx.send(String::from("hi")).await.unwrap(); // returns after the sink ran
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> impl Future<Output = Result<Receipt, SendError>> + Send + '_ {
        // The snapshot is taken now, at the call (see "exact snapshot" in SEMANTICS.md).
        Delivery::new(&*self.core, self.core.prepare_value(value, From::User))
    }

    /// Reserves room for one message of `T` in every subscriber queue that would make a
    /// `send` wait ([`Lossless`](crate::DeliveryMode::Lossless) ones), waiting for it as a
    /// lossless send waits; then [`Permit::send`](crate::Permit::send) delivers
    /// synchronously and infallibly. The cancel-safe send: the value is only made (and
    /// given up) once the room is there, and dropping this future, or the permit, gives
    /// all the room back. The snapshot of `T`'s subscribers is taken now, at the call.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the relay is closed; [`SendError::Unrouted`] when nobody
    /// subscribes to `T` and the relay was built with
    /// [`reject_unrouted`](crate::RelayBuilder::reject_unrouted).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use futures::FutureExt;
    /// use pipedream_rs::Relay;
    /// let (tx, rx) = Relay::builder()
    ///     .channel_size(1)
    ///     .delivery_mode(pipedream_rs::DeliveryMode::Lossless)
    ///     .build()
    ///     .unwrap();
    /// let mut sub = rx.subscribe::<u8>();
    /// tx.reserve::<u8>().await.unwrap().send(1); // the queue is full now
    /// assert!(tx.reserve::<u8>().now_or_never().is_none()); // waits; dropped: nothing held
    /// assert_eq!(*sub.recv().await.unwrap(), 1);
    /// tx.reserve::<u8>().await.unwrap().send(2); // room again
    /// assert_eq!(*sub.recv().await.unwrap(), 2);
    /// # });
    /// ```
    #[must_use = "a reservation takes no room until it is awaited"]
    pub fn reserve<T: Any + Send + Sync>(
        &self,
    ) -> impl Future<Output = Result<crate::Permit<T>, SendError>> + Send + 'static {
        reserve(Some(self.core.clone()))
    }

    /// Asks the responders of `Q` ([`RelayReceiver::respond`](crate::RelayReceiver::respond))
    /// and resolves to the reply of the first to finish. The request is a tracked send of
    /// a [`Request<Q, R>`](crate::Request): its snapshot is taken at the call, and it
    /// resolves once every responder has run. Only the message types are named:
    /// `tx.request::<Query, Reply>(q)`.
    ///
    /// Cancel safe as a send is: dropped before it resolves, the request may still reach
    /// responders, whose replies are then discarded.
    ///
    /// # Errors
    ///
    /// [`RequestError::NoResponder`](crate::RequestError::NoResponder) if nobody responds
    /// to `Q` with `R`; [`RequestError::Failed`](crate::RequestError::Failed) if every
    /// responder failed or panicked; [`RequestError::Closed`](crate::RequestError::Closed);
    /// [`RequestError::Send`](crate::RequestError::Send) for any other send error.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.respond::<u64, bool>(|n| n % 2 == 0);
    /// assert_eq!(tx.request::<u64, bool>(10).await, Ok(true));
    /// # });
    /// ```
    #[must_use = "a request is sent only when awaited"]
    pub fn request<Q, R>(
        &self,
        query: Q,
    ) -> impl Future<Output = Result<R, crate::RequestError>> + Send + 'static
    where
        Q: Any + Send + Sync,
        R: Any + Send,
    {
        let (send, replies) = start_request::<Q, R>(Some(self.core.clone()), query);
        crate::relay::request::ask_first::<Q, R>(send, replies)
    }

    /// As [`request`](Self::request), collecting the reply of every responder, in the
    /// order they finished.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), except that
    /// [`RequestError::Failed`](crate::RequestError::Failed) is returned if *any*
    /// responder failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.respond::<u8, u8>(|n| n + 1);
    /// rx.respond::<u8, u8>(|n| n + 2);
    /// let mut replies = tx.request_all::<u8, u8>(1).await.unwrap();
    /// replies.sort();
    /// assert_eq!(replies, [2, 3]);
    /// # });
    /// ```
    #[must_use = "a request is sent only when awaited"]
    pub fn request_all<Q, R>(
        &self,
        query: Q,
    ) -> impl Future<Output = Result<Vec<R>, crate::RequestError>> + Send + 'static
    where
        Q: Any + Send + Sync,
        R: Any + Send,
    {
        let (send, replies) = start_request::<Q, R>(Some(self.core.clone()), query);
        crate::relay::request::ask::<Q, R>(send, replies, false)
    }

    /// Sends `value` now, without waiting for anything: not for room, not for handlers.
    ///
    /// The message is delivered at once to the subscribers of its type, as a `send` would,
    /// except that nobody waits for the tracked handlers: they process it, and their
    /// failures are published as [`RelayError`](crate::RelayError) events (as behind
    /// `map`), but the receipt counts no `handled`. In [`Lossless`](crate::DeliveryMode)
    /// mode, where a `send` would wait for room, it is all or nothing: if any subscriber's
    /// queue is full the message goes to nobody and comes back in
    /// [`TrySendError::Full`](crate::TrySendError::Full). In broadcast mode a full queue
    /// misses it, as for any send (`receipt.missed`).
    ///
    /// # Errors
    ///
    /// [`TrySendError`], with the value: `Full` (lossless, a queue full), `Closed`,
    /// `Unrouted` (with `reject_unrouted`).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// let receipt = tx.try_send(5u8).unwrap();
    /// assert_eq!(receipt.queued, 1);
    /// assert_eq!(*sub.try_recv().unwrap(), 5);
    /// ```
    pub fn try_send<T: Any + Send + Sync>(&self, value: T) -> Result<Receipt, TrySendError<T>> {
        self.core.try_send_value(value)
    }

    /// Sends every value of `values`, in order, as one batch: one snapshot (taken at the
    /// call, as for [`send`](Self::send)) for all of them, and for each subscriber's queue
    /// one reservation and one wake-up for the whole run that fits. Each message keeps the
    /// semantics of a single send: its own id, every subscriber of the snapshot gets it
    /// in batch order, lossless queues wait for room, broadcast ones miss and report.
    ///
    /// When the type has tracked handlers, the batch is sent one message at a time (each
    /// a `send`, with its own snapshot, awaited before the next) and stops at the first
    /// failure. See SEMANTICS.md §2, "Sending in batches".
    ///
    /// # Errors
    ///
    /// [`SendAllError`](crate::SendAllError): how many messages were sent, what they did,
    /// and the [`SendError`] of the one that failed. Refused at the call (closed,
    /// `reject_unrouted`): `sent == 0`, and nothing was delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u32>();
    /// let receipt = tx.send_all(0..64u32).await.unwrap();
    /// assert_eq!(receipt.messages, 64);
    /// let mut got = Vec::new();
    /// assert_eq!(sub.try_recv_many(&mut got, 100), 64);
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_all<T: Any + Send + Sync>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> impl Future<Output = Result<crate::BatchReceipt, crate::SendAllError>> + Send + 'static
    {
        crate::core::batch::send_all(self.core.clone(), values.into_iter().collect())
    }

    /// A [`futures::Sink`] of `T` into this relay: `stream.forward(tx.as_sink())` sends a
    /// stream's items one after the other. See [`SendSink`] for its flushing and
    /// back-pressure rules.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use futures::{stream, StreamExt};
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// stream::iter([1u8, 2, 3]).map(Ok).forward(tx.as_sink()).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 1);
    /// # });
    /// ```
    #[must_use = "a sink sends nothing until items are fed into it"]
    #[doc(alias = "sink")]
    #[doc(alias = "into_sink")]
    pub fn as_sink<T: Any + Send + Sync>(&self) -> SendSink<T> {
        SendSink::new(self.weak())
    }

    /// As [`send`](Self::send), but a relay that is already closed hands the value back
    /// instead of dropping it.
    ///
    /// The check is the send's own snapshot, taken now, at the call: `Ok` means the
    /// message will be delivered when the returned future is awaited, exactly as a `send`
    /// made now. Awaiting it gives what `send` gives, except that `SendError::Closed`
    /// cannot occur.
    ///
    /// # Errors
    ///
    /// [`Unsent`] holding `value` if the relay is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<String>();
    /// let sending = tx.send_or_return(String::from("a")).expect("open");
    /// sending.await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), "a");
    ///
    /// tx.close();
    /// let back = tx.send_or_return(String::from("b")).err().unwrap().into_inner();
    /// assert_eq!(back, "b"); // not lost: resend it elsewhere, store it, ...
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_or_return<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> Result<impl Future<Output = Result<Receipt, SendError>> + Send + '_, Unsent<T>> {
        match self.core.prepare_or_return(value, From::User) {
            Ok(outgoing) => Ok(Delivery::new(&*self.core, Ok(outgoing))),
            Err((_, value)) => Err(Unsent(value)),
        }
    }

    /// Sends a type-erased value. `type_id` must be the value's own type id.
    ///
    /// # Errors
    ///
    /// [`SendError::TypeMismatch`] if `type_id` is not the value's type (nothing is sent);
    /// otherwise as [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::any::{Any, TypeId};
    /// use std::sync::Arc;
    /// use pipedream_rs::{Relay, SendError};
    /// let (tx, rx) = Relay::channel();
    /// let mut sub = rx.subscribe::<u64>();
    /// let value: Arc<dyn Any + Send + Sync> = Arc::new(9u64);
    /// tx.send_any(value.clone(), TypeId::of::<u64>()).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 9);
    /// let wrong = tx.send_any(value, TypeId::of::<u32>()).await;
    /// assert!(matches!(wrong, Err(SendError::TypeMismatch)));
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_any(
        &self,
        value: Arc<dyn Any + Send + Sync>,
        type_id: TypeId,
    ) -> impl Future<Output = Result<Receipt, SendError>> + Send + '_ {
        Delivery::new(&*self.core, prepare_any(&self.core, value, type_id))
    }

    /// A sender that does not keep the relay open.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// let weak = tx.weak();
    /// weak.send(1u8).await.unwrap();
    /// drop(tx);
    /// assert!(weak.send(2u8).await.is_err());
    /// # });
    /// ```
    ///
    /// A weak sender dropped at once did nothing, so not keeping it is a warning
    /// (`#[must_use]`; an error here, where the example denies it):
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// tx.weak(); // error: unused return value of `weak` that must be used
    /// ```
    #[must_use = "a WeakSender does nothing until it sends"]
    #[doc(alias = "clone")]
    pub fn weak(&self) -> WeakSender {
        WeakSender {
            core: Arc::downgrade(&self.core),
            id: self.core.id,
        }
    }

    /// Closes the relay (as dropping the sender does). Idempotent.
    ///
    /// New sends fail with [`SendError::Closed`]; sends already under way finish; every
    /// subscription drains what was queued, then ends; [`RelayReceiver::closed`] resolves.
    ///
    /// [`RelayReceiver::closed`]: crate::RelayReceiver::closed
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// tx.close();
    /// assert!(tx.is_closed() && rx.is_closed());
    /// ```
    pub fn close(&self) {
        self.core.close();
    }

    /// `true` once the relay is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// assert!(!tx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// The number of tracked handlers registered now (all types).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.sink::<u8>(|_| ());
    /// assert_eq!(tx.handler_count(), 1);
    /// ```
    pub fn handler_count(&self) -> usize {
        self.core.handler_count()
    }

    /// This relay's id (unique in the process); envelopes sent here carry it as their
    /// [`origin`](crate::Envelope::origin).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _) = pipedream_rs::Relay::channel();
    /// let (b, _) = pipedream_rs::Relay::channel();
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.core.id
    }
}

impl Drop for RelaySender {
    fn drop(&mut self) {
        self.core.close();
    }
}

impl std::fmt::Debug for RelaySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySender")
            .field("id", &self.core.id)
            .field("closed", &self.core.is_closed())
            .finish()
    }
}

/// A sender that never keeps the relay open. `Clone`.
///
/// Once the [`RelaySender`] is dropped or closed, every send fails with
/// [`SendError::Closed`].
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let mut sub = rx.subscribe::<&str>();
/// let weak = tx.weak();
/// weak.clone().send("from a weak sender").await.unwrap();
/// assert_eq!(*sub.recv().await.unwrap(), "from a weak sender");
/// # });
/// ```
#[derive(Clone)]
pub struct WeakSender {
    core: Weak<Core>,
    id: u64,
}

/// A request's send on `core` (`None`: the relay is gone), prepared now: the snapshot is
/// taken at the call, as for any send; and the requester's handle on the replies.
fn start_request<Q, R>(
    core: Option<Arc<Core>>,
    query: Q,
) -> (
    Delivery<'static, Arc<Core>>,
    crate::relay::request::Replies<R>,
)
where
    Q: Any + Send + Sync,
    R: Any + Send,
{
    let (request, replies) = crate::Request::new(query);
    let send = match core {
        Some(core) => {
            let prepared = core.prepare_value(request, From::User);
            Delivery::new(core, prepared)
        }
        None => Delivery::failed(SendError::Closed),
    };
    (send, replies)
}

/// `reserve` on `core` (`None`: the relay is gone): the snapshot now, the room when
/// awaited.
fn reserve<T: Any + Send + Sync>(
    core: Option<Arc<Core>>,
) -> impl Future<Output = Result<crate::Permit<T>, SendError>> + Send + 'static {
    let start = core
        .ok_or(SendError::Closed)
        .and_then(|core| core.reservation::<T>().map(|reserved| (core, reserved)));
    async move {
        let (core, mut reserved) = start?;
        reserved.take_room(&core).await;
        Ok(crate::Permit::new(core, reserved))
    }
}

impl WeakSender {
    /// As [`RelaySender::send`].
    ///
    /// # Errors
    ///
    /// As [`RelaySender::send`]; [`SendError::Closed`] once the relay is closed or gone.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// let weak = tx.weak();
    /// tx.close();
    /// assert!(matches!(weak.send(1u8).await, Err(pipedream_rs::SendError::Closed)));
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> impl Future<Output = Result<Receipt, SendError>> + Send + 'static {
        match self.core.upgrade() {
            Some(core) => {
                let prepared = core.prepare_value(value, From::User);
                Delivery::new(core, prepared)
            }
            None => Delivery::failed(SendError::Closed),
        }
    }

    /// As [`RelaySender::request`]; `Closed` also once the relay is gone. The way a
    /// handler asks another responder (a handler holds a `WeakSender`).
    ///
    /// # Errors
    ///
    /// As [`RelaySender::request`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.respond::<u8, u16>(|n| u16::from(*n) * 100);
    /// let weak = tx.weak();
    /// assert_eq!(weak.request::<u8, u16>(3).await, Ok(300));
    /// drop(tx);
    /// assert_eq!(weak.request::<u8, u16>(3).await, Err(pipedream_rs::RequestError::Closed));
    /// # });
    /// ```
    #[must_use = "a request is sent only when awaited"]
    pub fn request<Q, R>(
        &self,
        query: Q,
    ) -> impl Future<Output = Result<R, crate::RequestError>> + Send + 'static
    where
        Q: Any + Send + Sync,
        R: Any + Send,
    {
        let (send, replies) = start_request::<Q, R>(self.core.upgrade(), query);
        crate::relay::request::ask_first::<Q, R>(send, replies)
    }

    /// As [`RelaySender::reserve`]; `Closed` also once the relay is gone.
    ///
    /// # Errors
    ///
    /// As [`RelaySender::reserve`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// let weak = tx.weak();
    /// weak.reserve::<u8>().await.unwrap().send(3);
    /// assert_eq!(*sub.recv().await.unwrap(), 3);
    /// drop(tx);
    /// assert!(weak.reserve::<u8>().await.is_err());
    /// # });
    /// ```
    #[must_use = "a reservation takes no room until it is awaited"]
    pub fn reserve<T: Any + Send + Sync>(
        &self,
    ) -> impl Future<Output = Result<crate::Permit<T>, SendError>> + Send + 'static {
        reserve(self.core.upgrade())
    }

    /// As [`RelaySender::try_send`]; `Closed` also once the relay is gone.
    ///
    /// # Errors
    ///
    /// As [`RelaySender::try_send`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::TrySendError;
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// let weak = tx.weak();
    /// drop(tx);
    /// assert_eq!(weak.try_send(1u8).unwrap_err(), TrySendError::Closed(1));
    /// ```
    pub fn try_send<T: Any + Send + Sync>(&self, value: T) -> Result<Receipt, TrySendError<T>> {
        match self.core.upgrade() {
            Some(core) => core.try_send_value(value),
            None => Err(TrySendError::Closed(value)),
        }
    }

    /// As [`RelaySender::send_all`]; refused with `Closed` if the relay is gone.
    ///
    /// # Errors
    ///
    /// As [`RelaySender::send_all`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let _sub = rx.subscribe::<u8>();
    /// let receipt = tx.weak().send_all([1u8, 2]).await.unwrap();
    /// assert_eq!(receipt.queued, 2);
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_all<T: Any + Send + Sync>(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> impl Future<Output = Result<crate::BatchReceipt, crate::SendAllError>> + Send + 'static
    {
        let values: Vec<T> = values.into_iter().collect();
        let core = self.core.upgrade();
        async move {
            match core {
                Some(core) => crate::core::batch::send_all(core, values).await,
                None => Err(crate::SendAllError::new(
                    0,
                    crate::BatchReceipt::default(),
                    SendError::Closed,
                )),
            }
        }
    }

    /// As [`RelaySender::as_sink`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use futures::SinkExt;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// let mut sink = tx.weak().as_sink::<u8>();
    /// sink.send(4).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 4);
    /// # });
    /// ```
    #[must_use = "a sink sends nothing until items are fed into it"]
    pub fn as_sink<T: Any + Send + Sync>(&self) -> SendSink<T> {
        SendSink::new(self.clone())
    }

    /// As [`RelaySender::send_or_return`]; the value also comes back if the relay is gone.
    ///
    /// # Errors
    ///
    /// [`Unsent`] holding `value` if the relay is closed or gone.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// let weak = tx.weak();
    /// drop(tx);
    /// assert_eq!(weak.send_or_return(7u32).err().unwrap().into_inner(), 7);
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_or_return<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> Result<impl Future<Output = Result<Receipt, SendError>> + Send + 'static, Unsent<T>> {
        let Some(core) = self.core.upgrade() else {
            return Err(Unsent(value));
        };
        match core.prepare_or_return(value, From::User) {
            Ok(outgoing) => Ok(Delivery::new(core, Ok(outgoing))),
            Err((_, value)) => Err(Unsent(value)),
        }
    }

    /// As [`RelaySender::send_any`].
    ///
    /// # Errors
    ///
    /// As [`RelaySender::send_any`].
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::any::TypeId;
    /// use std::sync::Arc;
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// tx.weak().send_any(Arc::new(1u8), TypeId::of::<u8>()).await.unwrap();
    /// # });
    /// ```
    #[must_use = "a send delivers nothing until it is awaited (or polled)"]
    pub fn send_any(
        &self,
        value: Arc<dyn Any + Send + Sync>,
        type_id: TypeId,
    ) -> impl Future<Output = Result<Receipt, SendError>> + Send + 'static {
        match self.core.upgrade() {
            Some(core) => {
                let prepared = prepare_any(&core, value, type_id);
                Delivery::new(core, prepared)
            }
            None => Delivery::failed(SendError::Closed),
        }
    }

    /// `true` once the relay is closed (or gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// let weak = tx.weak();
    /// drop(tx);
    /// assert!(weak.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.core.upgrade().is_none_or(|c| c.is_closed())
    }

    /// The relay's id.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, _rx) = pipedream_rs::Relay::channel();
    /// assert_eq!(tx.weak().id(), tx.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl WeakSender {
    pub(crate) fn upgrade_core(&self) -> Option<Arc<Core>> {
        self.core.upgrade()
    }
}

impl std::fmt::Debug for WeakSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakSender").field("id", &self.id).finish()
    }
}

fn prepare_any(
    core: &Core,
    value: Arc<dyn Any + Send + Sync>,
    type_id: TypeId,
) -> Result<Outgoing, SendError> {
    // `(*value).type_id()`, not `value.type_id()`: the latter is the Arc's own type.
    if (*value).type_id() != type_id {
        return Err(SendError::TypeMismatch);
    }
    core.prepare(value, type_id, None, From::User, true)
}
