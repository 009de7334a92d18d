//! Room reserved ahead of a message: [`Permit`], what `RelaySender::reserve` gives.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::core::reserve::Reserved;
use crate::core::Core;
use crate::relay::receipt::Receipt;

/// Room for one message of `T`, reserved in every queue that would make a `send` wait:
/// [`send`](Self::send) then delivers synchronously and cannot fail for lack of room.
///
/// What [`RelaySender::reserve`](crate::RelaySender::reserve) resolves to. The snapshot of
/// `T`'s subscribers is the one taken when `reserve` was called (the message id too), and
/// a slot is held in each of their [`Lossless`](crate::DeliveryMode::Lossless) queues
/// until the permit is used or dropped; dropping it gives every slot back, so a permit
/// never strands room. Queues of the other modes hold nothing: they never wait, so the
/// message is pushed to them at `send`, missing or evicting as any send does there.
///
/// A permit delivers untracked, as [`try_send`](crate::RelaySender::try_send) does:
/// tracked handlers process the message, but nobody waits for them and their failures
/// are published as [`RelayError`](crate::RelayError) events. A permit keeps its relay's
/// core alive: used after the relay was closed, it still delivers, as a send already in
/// flight at the close does.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{DeliveryMode, Relay};
/// let (tx, rx) = Relay::builder().delivery_mode(DeliveryMode::Lossless).build().unwrap();
/// let mut sub = rx.subscribe::<String>();
/// let permit = tx.reserve::<String>().await.unwrap(); // waits here, if anywhere
/// let receipt = permit.send(String::from("made after the room was there"));
/// assert_eq!(receipt.queued, 1);
/// assert_eq!(*sub.recv().await.unwrap(), "made after the room was there");
/// # });
/// ```
#[must_use = "a permit holds room in its subscribers' queues until it is used or dropped"]
pub struct Permit<T> {
    core: Arc<Core>,
    reserved: Reserved,
    _type: PhantomData<fn(T)>,
}

impl<T: Any + Send + Sync> Permit<T> {
    pub(crate) fn new(core: Arc<Core>, reserved: Reserved) -> Self {
        Permit {
            core,
            reserved,
            _type: PhantomData,
        }
    }

    /// Delivers `value` into the reserved room, now: never waits, never fails for room.
    /// The receipt says where it went (`handled` is always 0: see the type's docs).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// let receipt = tx.reserve::<u8>().await.unwrap().send(7);
    /// assert_eq!((receipt.queued, receipt.handled), (1, 0));
    /// assert_eq!(*sub.try_recv().unwrap(), 7);
    /// # });
    /// ```
    pub fn send(self, value: T) -> Receipt {
        let Permit { core, reserved, .. } = self;
        core.send_reserved(reserved, Arc::new(value))
    }

    /// The message id the message sent with this permit will have (taken at `reserve`;
    /// a permit dropped unused leaves a gap in the ids).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let _sub = rx.subscribe::<u8>();
    /// let permit = tx.reserve::<u8>().await.unwrap();
    /// let id = permit.msg_id();
    /// assert_eq!(permit.send(1).msg_id, id);
    /// # });
    /// ```
    pub fn msg_id(&self) -> u64 {
        self.reserved.msg_id()
    }
}

impl<T> std::fmt::Debug for Permit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("type", &std::any::type_name::<T>())
            .field("relay_id", &self.core.id)
            .field("msg_id", &self.reserved.msg_id())
            .finish()
    }
}
