//! [`Tasks`]: counting the tasks a relay starts on its spawner, and the readiness barrier.

use std::future::Future;
use std::sync::Arc;

use event_listener::Event;

use crate::core::sync::{AtomicUsize, Ordering};
use crate::core::wait::wait_until;
use crate::spawner::Spawner;

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
        let task = crate::core::trace::on_spawner(spawner.name(), task);
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
