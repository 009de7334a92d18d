//! The futures `recv()` returns: [`Recv`] (of a [`Subscription`]), [`RecvEnvelope`] (of
//! an [`EnvelopeSubscription`]) and [`RecvTracked`] (of a [`TrackedSubscription`]).
//!
//! Each is `Unpin` and a [`FusedFuture`], so it goes straight into `futures::select!`
//! without `pin_mut!` or `.fuse()`, and each is cancel safe: a message is taken only in
//! the poll that returns it, and one dropped while waiting gives up its wait (no listener
//! left behind, and an idle queue lets go of its channel as after any wait).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::FusedFuture;

use crate::relay::envelope::Envelope;
use crate::relay::subscription::{EnvelopeSubscription, Subscription};
use crate::relay::tracked_subscription::{Tracked, TrackedSubscription};

/// What a subscription's `recv()` future needs from it (besides `give_up`, an inherent
/// method of each, called when a waiting `recv()` future is dropped).
pub(crate) trait Receive {
    type Item;
    /// The next item, or `None` at the end; registers `cx` to be woken otherwise.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>>;
}

/// Polls `sub` for the future `state`, keeping its flags.
fn poll_recv<S: Receive>(
    sub: &mut S,
    state: &mut (bool, bool),
    cx: &mut Context<'_>,
) -> Poll<Option<S::Item>> {
    let (pending, done) = state;
    if *done {
        return Poll::Pending; // a fused future polled after completion never resolves again
    }
    let polled = sub.poll_item(cx);
    *pending = polled.is_pending();
    *done = polled.is_ready();
    polled
}

macro_rules! recv_future {
    ($(#[$doc:meta])* $name:ident<$lt:lifetime $(, $t:ident)?>: $sub:ty => $item:ty) => {
        $(#[$doc])*
        #[must_use = "futures do nothing unless polled: `.await` it or use it in `select!`"]
        pub struct $name<$lt $(, $t)?> {
            sub: &$lt mut $sub,
            /// (the last poll returned `Pending`, it returned `Ready`)
            state: (bool, bool),
        }

        impl<$lt $(, $t)?> $name<$lt $(, $t)?> {
            pub(crate) fn new(sub: &$lt mut $sub) -> Self {
                $name { sub, state: (false, false) }
            }
        }

        impl<$($t: Any + Send + Sync)?> Future for $name<'_ $(, $t)?> {
            type Output = Option<$item>;

            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = &mut *self;
                poll_recv(this.sub, &mut this.state, cx)
            }
        }

        impl<$($t: Any + Send + Sync)?> FusedFuture for $name<'_ $(, $t)?> {
            fn is_terminated(&self) -> bool {
                self.state.1
            }
        }

        impl<$($t)?> Drop for $name<'_ $(, $t)?> {
            fn drop(&mut self) {
                if self.state.0 {
                    self.sub.give_up();
                }
            }
        }

        impl<$($t)?> std::fmt::Debug for $name<'_ $(, $t)?> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("terminated", &self.state.1)
                    .finish_non_exhaustive()
            }
        }
    };
}

recv_future! {
    /// The future of [`Subscription::recv`]: the next message, or `None` once the relay is
    /// closed and this queue is drained. `Unpin`, fused and cancel safe (see the module
    /// docs), so it goes straight into `futures::select!`.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use futures::select;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let (mut words, mut numbers) = (rx.subscribe::<&str>(), rx.subscribe::<u32>());
    /// tx.send(7u32).await.unwrap();
    /// select! {
    ///     w = words.recv() => panic!("no word was sent: {w:?}"),
    ///     n = numbers.recv() => assert_eq!(*n.unwrap(), 7),
    /// }
    /// # });
    /// ```
    Recv<'a, T>: Subscription<T> => Arc<T>
}

recv_future! {
    /// The future of [`EnvelopeSubscription::recv`]: as [`Recv`], for every type.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// let next: pipedream_rs::RecvEnvelope<'_> = all.recv();
    /// assert!(next.await.unwrap().is::<u8>());
    /// # });
    /// ```
    RecvEnvelope<'a>: EnvelopeSubscription => Envelope
}

recv_future! {
    /// The future of [`TrackedSubscription::recv`]: as [`Recv`], for tracked messages.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut jobs = rx.subscribe_tracked::<u8>();
    /// let send = tx.send(1u8);
    /// let work = async { jobs.recv().await.unwrap().complete() };
    /// let (sent, ()) = futures::join!(send, work);
    /// assert_eq!(sent.unwrap().handled, 1);
    /// # });
    /// ```
    RecvTracked<'a, T>: TrackedSubscription<T> => Tracked<T>
}

/// The future of [`Subscription::recv_many`]: how many messages it appended to the
/// buffer (`0` at the end, or for `max == 0`). `Unpin`, fused and cancel safe, as [`Recv`].
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let mut sub = rx.subscribe::<u8>();
/// tx.send(3u8).await.unwrap();
/// let mut buf = Vec::new();
/// let many: pipedream_rs::RecvMany<'_, u8> = sub.recv_many(&mut buf, 8);
/// assert_eq!(many.await, 1);
/// # });
/// ```
#[must_use = "futures do nothing unless polled: `.await` it or use it in `select!`"]
pub struct RecvMany<'a, T> {
    sub: &'a mut Subscription<T>,
    buf: &'a mut Vec<Arc<T>>,
    max: usize,
    /// (the last poll returned `Pending`, it returned `Ready`)
    state: (bool, bool),
}

impl<'a, T> RecvMany<'a, T> {
    pub(crate) fn new(sub: &'a mut Subscription<T>, buf: &'a mut Vec<Arc<T>>, max: usize) -> Self {
        RecvMany {
            sub,
            buf,
            max,
            state: (false, false),
        }
    }
}

impl<T: Any + Send + Sync> Future for RecvMany<'_, T> {
    type Output = usize;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = &mut *self;
        if this.max == 0 {
            this.state = (false, true);
            return Poll::Ready(0);
        }
        match poll_recv(this.sub, &mut this.state, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(0),
            Poll::Ready(Some(first)) => {
                this.buf.push(first);
                // The rest of the run, without reporting the end (that is the next
                // call's to return) and without letting go of the channel.
                Poll::Ready(1 + this.sub.take_queued(this.buf, this.max - 1))
            }
        }
    }
}

impl<T: Any + Send + Sync> FusedFuture for RecvMany<'_, T> {
    fn is_terminated(&self) -> bool {
        self.state.1
    }
}

impl<T> Drop for RecvMany<'_, T> {
    fn drop(&mut self) {
        if self.state.0 {
            self.sub.give_up();
        }
    }
}

impl<T> std::fmt::Debug for RecvMany<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvMany")
            .field("max", &self.max)
            .field("terminated", &self.state.1)
            .finish_non_exhaustive()
    }
}
