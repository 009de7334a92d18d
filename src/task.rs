//! Tasks the relay starts on its spawner: counting them, the readiness barrier, and
//! [`TaskHandle`] for awaiting one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::Event;
use futures::channel::oneshot;

use crate::error::{HandlerGone, HandlerKind, RelayError};
use crate::spawner::Spawner;
use crate::sync::{AtomicUsize, Ordering};
use crate::wait::wait_until;

/// Task counters of one relay.
///
/// Invariants: `unstarted <= live`; each spawned task increments both once, and its
/// [`TaskGuard`] decrements `unstarted` once (when first polled, or when dropped unpolled)
/// and `live` once (when dropped).
#[derive(Default)]
pub(crate) struct Tasks {
    live: AtomicUsize,
    unstarted: AtomicUsize,
    /// Notified (all) whenever `unstarted` reaches zero. `ready()` waits on it.
    started: Event,
}

impl Tasks {
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn spawn<F>(self: &Arc<Self>, spawner: &dyn Spawner, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.live.fetch_add(1, Ordering::AcqRel);
        self.unstarted.fetch_add(1, Ordering::AcqRel);
        let mut guard = TaskGuard {
            tasks: self.clone(),
            started: false,
        };
        spawner.spawn(Box::pin(async move {
            guard.start();
            task.await;
            drop(guard);
        }));
    }

    fn mark_started(&self) {
        if self.unstarted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.started.notify(usize::MAX);
        }
    }

    fn all_started(&self) -> bool {
        self.unstarted.load(Ordering::Acquire) == 0
    }

    /// Resolves once no task started from this relay is waiting for its first poll.
    pub(crate) async fn ready(&self) {
        wait_until(&self.started, || self.all_started()).await;
    }
}

/// Lives inside a spawned task; keeps the counters true however the task ends
/// (finished, panicked, or dropped by its executor without being polled).
struct TaskGuard {
    tasks: Arc<Tasks>,
    started: bool,
}

impl TaskGuard {
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.tasks.mark_started();
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.start();
        self.tasks.live.fetch_sub(1, Ordering::AcqRel);
    }
}

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
