//! [`SendSink`]: a relay as a [`futures::Sink`], for `stream.forward(..)` and
//! `SinkExt::send`.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Sink;

use crate::relay::error::SendError;
use crate::relay::receipt::Receipt;
use crate::relay::sender::WeakSender;

type InFlight = Pin<Box<dyn Future<Output = Result<Receipt, SendError>> + Send>>;

/// A [`futures::Sink`] of `T` into a relay, from
/// [`RelaySender::as_sink`](crate::RelaySender::as_sink) or
/// [`WeakSender::as_sink`](crate::WeakSender::as_sink).
///
/// Each item is one `send`, made in `start_send` (its snapshot is taken there), and the
/// sink holds **one send in flight**:
///
/// - `poll_ready` finishes the previous send first, so back-pressure is the relay's own:
///   in lossless mode the next item waits for room, and with tracked handlers for them to
///   have processed the previous item;
/// - `poll_flush` finishes the send in flight; `poll_close` flushes (it does not close the
///   relay: the sink holds it weakly, like a [`WeakSender`]);
/// - an error of a send (a handler's failure, `Closed`) is returned by the next
///   `poll_ready`, `poll_flush` or `poll_close`, as `Sink`s do, and the item it concerns is
///   not sent again. `stream.forward(sink)` therefore stops at the first failed item.
///
/// Receipts are not kept: use [`send`](crate::RelaySender::send) when you need them. Each
/// item costs one allocation for its boxed send.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use futures::{stream, SinkExt, StreamExt};
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// rx.sink::<u32>(|n| if *n == 2 { Err("two") } else { Ok(()) });
/// let result = stream::iter([1u32, 2, 3]).map(Ok).forward(tx.as_sink()).await;
/// assert!(result.is_err()); // the handler's failure on 2 stopped the forward
/// # });
/// ```
#[must_use = "a sink sends nothing until items are fed into it"]
pub struct SendSink<T> {
    sender: WeakSender,
    in_flight: Option<InFlight>,
    _type: PhantomData<fn(T)>,
}

impl<T> SendSink<T> {
    pub(crate) fn new(sender: WeakSender) -> Self {
        SendSink {
            sender,
            in_flight: None,
            _type: PhantomData,
        }
    }

    /// Drives the send in flight, if any, to its end.
    fn finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        let Some(send) = self.in_flight.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = std::task::ready!(send.as_mut().poll(cx));
        self.in_flight = None;
        Poll::Ready(result.map(|_| ()))
    }
}

impl<T: Any + Send + Sync> Sink<T> for SendSink<T> {
    type Error = SendError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().finish(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), SendError> {
        let this = self.get_mut();
        let next = this.sender.send(item); // the snapshot is taken now
        this.in_flight = Some(match this.in_flight.take() {
            None => Box::pin(next),
            // `start_send` without `poll_ready` first (a caller's mistake): nothing is
            // dropped, the sends go in order, and the first error is the one returned.
            Some(previous) => Box::pin(async move {
                let first = previous.await;
                let second = next.await;
                first.and(second)
            }),
        });
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().finish(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendError>> {
        self.get_mut().finish(cx)
    }
}

impl<T> std::fmt::Debug for SendSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSink")
            .field("relay", &self.sender.id())
            .field("in_flight", &self.in_flight.is_some())
            .finish()
    }
}
