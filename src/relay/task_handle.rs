//! [`TaskHandle`]: awaiting, aborting or detaching a task started with `within` or
//! `forward_detached`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::future::{AbortHandle, AbortRegistration};

use crate::relay::error::{HandlerGone, HandlerKind, RelayError, SharedError};

pin_project_lite::pin_project! {
    /// A handle to a task started with
    /// [`RelayReceiver::within`](crate::RelayReceiver::within) or
    /// [`forward_detached`](crate::RelayReceiver::forward_detached): await it for the
    /// task's result, [`abort`](Self::abort) it, or [`detach`](Self::detach) it.
    ///
    /// Resolves to `Ok(())` when the task finished, or to the [`RelayError`] it ended with:
    /// its `Err`, its panic, [`HandlerGone`] if the spawner dropped it, or
    /// [`TaskAborted`](crate::TaskAborted) after an abort. Awaiting works on any executor.
    /// Dropping the handle does not stop the task (as with tokio's `JoinHandle`); say
    /// so with [`detach`](Self::detach).
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
    ///
    /// A handle dropped at once leaves the task running unobserved, so not keeping it is a
    /// warning (`#[must_use]`; an error here, where the example denies it);
    /// `.detach()` says it is meant:
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// rx.within(|| async { /* work */ }); // error: unused `TaskHandle` that must be used
    /// ```
    #[derive(Debug)]
    #[must_use = "dropping a TaskHandle lets the task run on unobserved; call .detach() to say so"]
    pub struct TaskHandle {
        #[pin]
        done: oneshot::Receiver<Result<(), RelayError>>,
        relay_id: u64,
        abort: AbortHandle,
        finished: Arc<AtomicBool>,
        // `poll` returned `Ready` (the oneshot's own flag turns true when the task is
        // dropped, before `poll` has turned that into `HandlerGone`).
        terminated: bool,
    }
}

/// The task's side of a [`TaskHandle`]: how it learns it was aborted, and its
/// [`Outcome`].
pub(crate) struct TaskEnd {
    pub(crate) registration: AbortRegistration,
    pub(crate) outcome: Outcome,
}

/// Where the task's result goes. Dropped (the result sent or not) it marks the handle
/// finished, in that order: a handle that reads `is_finished()` has its result ready, or
/// the sender is gone and its poll says `HandlerGone` at once.
pub(crate) struct Outcome {
    done: Option<oneshot::Sender<Result<(), RelayError>>>,
    finished: Arc<AtomicBool>,
}

impl Outcome {
    /// Hands the task's result to its handle (if the handle is still there).
    pub(crate) fn send(mut self, result: Result<(), RelayError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        drop(self.done.take()); // the result, or the sender's end, first
        self.finished.store(true, Ordering::Release);
    }
}

impl TaskHandle {
    /// A handle for a task of relay `relay_id` that `abort` (from `AbortHandle::new_pair`)
    /// stops, and the task's side of it.
    pub(crate) fn new(relay_id: u64, abort: (AbortHandle, AbortRegistration)) -> (TaskEnd, Self) {
        let (tx, done) = oneshot::channel();
        let finished = Arc::new(AtomicBool::new(false));
        let (abort, registration) = abort;
        let end = TaskEnd {
            registration,
            outcome: Outcome {
                done: Some(tx),
                finished: finished.clone(),
            },
        };
        let handle = TaskHandle {
            done,
            relay_id,
            abort,
            finished,
            terminated: false,
        };
        (end, handle)
    }

    /// Stops the task: it is dropped at its next `.await` (at once if it is waiting), and
    /// this handle resolves to a [`RelayError`] whose error is
    /// [`TaskAborted`](crate::TaskAborted). A task that already finished keeps its result.
    /// An abort is not a failure: no `RelayError` event is published. For
    /// `forward_detached`, the forward ends and lets go of its subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::TaskAborted;
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let handle = rx.within(|| std::future::pending::<()>());
    /// handle.abort();
    /// let e = handle.await.unwrap_err();
    /// assert!(e.downcast_ref::<TaskAborted>().is_some());
    /// # });
    /// ```
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// `true` once the task is over: it finished, failed, was aborted, or its executor
    /// dropped it. The result is then ready, so awaiting the handle does not wait, and a
    /// handle that has resolved always reads `true`. (With `PanicMode::Propagate` the
    /// task may still be unwinding its panic when this turns true.)
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let handle = rx.within(|| async {});
    /// while !handle.is_finished() {
    ///     std::thread::yield_now();
    /// }
    /// assert!(handle.await.is_ok());
    /// # });
    /// ```
    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Lets the task run on without anyone awaiting it (what dropping the handle does,
    /// said explicitly). Its failure, if any, is still published as a `RelayError`.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// rx.within(|| async { /* runs on its own */ }).detach();
    /// ```
    pub fn detach(self) {}

    /// The relay the task belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let handle = rx.within(|| async {});
    /// assert_eq!(handle.relay_id(), tx.id());
    /// # handle.detach();
    /// ```
    pub fn relay_id(&self) -> u64 {
        self.relay_id
    }
}

/// The error of a task of relay `relay_id` (kind `Within`).
pub(crate) fn task_error(relay_id: u64, error: SharedError) -> RelayError {
    RelayError {
        msg_id: 0,
        relay_id,
        kind: HandlerKind::Within,
        type_name: "within",
        error,
    }
}

impl Future for TaskHandle {
    type Output = Result<(), RelayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if *this.terminated {
            return Poll::Pending; // fused: resolved once, never again
        }
        let relay_id = *this.relay_id;
        let result = std::task::ready!(this.done.poll(cx))
            // The sender dropped without a result: the executor dropped the task.
            .unwrap_or_else(|_| Err(task_error(relay_id, Arc::new(HandlerGone))));
        *this.terminated = true;
        // A handle that resolved reads finished, whichever side got there first.
        this.finished.store(true, Ordering::Release);
        Poll::Ready(result)
    }
}

impl futures::future::FusedFuture for TaskHandle {
    fn is_terminated(&self) -> bool {
        self.terminated
    }
}
