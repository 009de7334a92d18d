//! [`TaskHandle`]: awaiting a task started with `within` or `forward_detached`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::oneshot;

use crate::relay::error::{HandlerGone, HandlerKind, RelayError};

pin_project_lite::pin_project! {
    /// Awaits the end of a task started with
    /// [`RelayReceiver::within`](crate::RelayReceiver::within), on any executor.
    ///
    /// Resolves to `Ok(())` when the task finished, or to the [`RelayError`] it failed with
    /// (its `Err`, its panic, or [`HandlerGone`] if the spawner dropped it). Dropping the
    /// handle does not stop the task.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let handle = rx.within(|| async { /* work */ });
    /// assert!(handle.await.is_ok());
    /// # });
    /// ```
    #[derive(Debug)]
    pub struct TaskHandle {
        #[pin]
        done: oneshot::Receiver<Result<(), RelayError>>,
        relay_id: u64,
    }
}

impl TaskHandle {
    pub(crate) fn new(relay_id: u64) -> (oneshot::Sender<Result<(), RelayError>>, Self) {
        let (tx, done) = oneshot::channel();
        (tx, TaskHandle { done, relay_id })
    }
}

impl Future for TaskHandle {
    type Output = Result<(), RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let relay_id = *this.relay_id;
        this.done.poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(RelayError {
                    msg_id: 0,
                    relay_id,
                    kind: HandlerKind::Within,
                    type_name: "within",
                    error: Arc::new(HandlerGone),
                })
            })
        })
    }
}
