//! [`Tracker`]: how a `send` learns that every tracked handler has processed its message.

use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

use crate::core::sync::{AtomicUsize, Mutex, Ordering};
use crate::core::wait::poll_until;
use crate::core::Plan;
use crate::relay::config::ErrorMode;
use crate::relay::error::{RelayError, SendError};

/// The tracked subscribers of a watched send, and those that settled it (see `Tracker`).
struct Watch {
    targets: Vec<u64>,
    settled: std::sync::Mutex<Vec<u64>>,
}

/// Completion state of one tracked message.
///
/// Who settles is recorded only for a send first polled inside one of the relay's own
/// tasks (`watch`), where the deadlock check may need to know whom it still waits for.
///
/// Invariants:
/// - `remaining` starts at the number of tracked handlers in the send's snapshot and is
///   decremented exactly once per handler (by the handler, by its drop guard, or by the
///   sender when the message could not be queued for it). It reaches zero exactly once.
/// - `errors` only grows, and only before the decrement that records the failure, so a
///   sender that sees `remaining == 0` sees every error.
///
/// Who waits: the sending task, on `done`, with the eventcount pattern (check, listen,
/// re-check, await). The 0.1 tracker checked, then listened: a completion landing between
/// the two was lost and the send hung. Here the listener exists before the re-check.
pub(crate) struct Tracker {
    /// Handlers that still owe a completion. Written by handlers; read by the sender.
    remaining: AtomicUsize,
    /// Notified (all listeners) when `remaining` reaches zero.
    done: Event,
    /// Failures so far; in `FirstWins` mode only the first is kept.
    errors: Mutex<Vec<RelayError>>,
    mode: ErrorMode,
    /// The tracked targets and who of them has settled, once `watch` is called (before
    /// the first push). Read by the deadlock check (`core/deadlock.rs`).
    watch: std::sync::OnceLock<Watch>,
    /// What the tracked forwarders among the send's targets pass the message on to,
    /// snapshotted at the call (see [`Plan`]). Each forwarder takes its own when it
    /// receives the message, so no derived relay's subscribers are held longer.
    plans: Mutex<Vec<Plan>>,
}

impl Tracker {
    pub(crate) fn new(expected: usize, mode: ErrorMode, plans: Vec<Plan>) -> Self {
        Tracker {
            remaining: AtomicUsize::new(expected),
            done: Event::new(),
            errors: Mutex::new(Vec::new()),
            mode,
            watch: std::sync::OnceLock::new(),
            plans: Mutex::new(plans),
        }
    }

    /// From now on, record which of `targets` (the tracked subscribers' ids) settle.
    /// Called once, before the message is pushed to any of them.
    pub(crate) fn watch(&self, targets: Vec<u64>) {
        let _ = self.watch.set(Watch {
            targets,
            settled: std::sync::Mutex::new(Vec::new()),
        });
    }

    /// The tracked subscribers that have not settled this message yet (none if it is not
    /// watched, or done).
    pub(crate) fn unsettled(&self) -> Vec<u64> {
        let Some(watch) = self.watch.get().filter(|_| !self.is_done()) else {
            return Vec::new();
        };
        let settled = watch.settled.lock().unwrap_or_else(|e| e.into_inner());
        watch
            .targets
            .iter()
            .copied()
            .filter(|id| !settled.contains(id))
            .collect()
    }

    fn settled_by(&self, by: u64) {
        if let Some(watch) = self.watch.get() {
            watch
                .settled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(by);
        }
    }

    /// Hands forwarder `forwarder` its plans (one per relay it passes messages on to).
    pub(crate) fn take_plans(&self, forwarder: u64) -> Vec<Plan> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if plans.is_empty() {
            return Vec::new();
        }
        let (mine, others) = std::mem::take(&mut *plans)
            .into_iter()
            .partition(|p| p.forwarder == forwarder);
        *plans = others;
        mine
    }

    /// Handler `by` (a subscriber id) finished this message successfully.
    pub(crate) fn complete(&self, by: u64) {
        self.settled_by(by);
        self.count_down();
    }

    fn count_down(&self) {
        // AcqRel: the sender's Acquire load of zero must see every error pushed before.
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify(usize::MAX);
        }
    }

    /// Handler `by` failed this message.
    pub(crate) fn fail(&self, by: u64, error: RelayError) {
        self.fail_many(by, [error]);
    }

    /// Handler `by` failed this message with several errors (a forwarder passing on its
    /// child relay's failures): still one completion.
    pub(crate) fn fail_many(&self, by: u64, new: impl IntoIterator<Item = RelayError>) {
        {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            for error in new {
                if errors.is_empty() || self.mode == ErrorMode::Aggregate {
                    errors.push(error);
                }
            }
        }
        self.settled_by(by);
        self.count_down();
    }

    fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Waits until every handler has completed, then gives the verdict (the tests' and
    /// loom models' form of [`poll_wait`](Self::poll_wait)).
    #[cfg(test)]
    pub(crate) async fn wait(&self) -> Result<(), SendError> {
        let mut listener = None;
        std::future::poll_fn(|cx| self.poll_wait(&mut listener, cx)).await
    }

    /// Waits, in the send future, until every handler has completed, then gives the
    /// verdict. `listener` is the future's slot for the listener between polls; it listens
    /// before the re-check, so a completion between the two is not lost.
    pub(crate) fn poll_wait(
        &self,
        listener: &mut Option<EventListener>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        match poll_until(&self.done, listener, cx, || self.is_done()) {
            Poll::Ready(()) => Poll::Ready(self.verdict()),
            Poll::Pending => Poll::Pending,
        }
    }

    fn verdict(&self) -> Result<(), SendError> {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() {
            return Ok(());
        }
        Err(match self.mode {
            ErrorMode::FirstWins => SendError::Downstream(errors.swap_remove(0)),
            ErrorMode::Aggregate => SendError::Aggregate(std::mem::take(&mut *errors)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::error::{HandlerKind, PanicError};
    use std::sync::Arc;

    fn err(n: u64) -> RelayError {
        RelayError {
            msg_id: n,
            relay_id: 0,
            kind: HandlerKind::Sink,
            type_name: "t",
            error: Arc::new(PanicError {
                message: n.to_string(),
            }),
        }
    }

    #[test]
    fn completes_once_all_handlers_report() {
        let t = Arc::new(Tracker::new(2, ErrorMode::FirstWins, Vec::new()));
        t.complete(0);
        assert!(!t.is_done());
        t.complete(0);
        assert!(futures::executor::block_on(t.wait()).is_ok());
    }

    #[test]
    fn first_wins_keeps_the_first_error() {
        let t = Tracker::new(2, ErrorMode::FirstWins, Vec::new());
        t.fail(0, err(1));
        t.fail(0, err(2));
        match futures::executor::block_on(t.wait()) {
            Err(SendError::Downstream(e)) => assert_eq!(e.msg_id, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn aggregate_keeps_every_error() {
        let t = Tracker::new(3, ErrorMode::Aggregate, Vec::new());
        t.fail(0, err(1));
        t.complete(0);
        t.fail(0, err(2));
        match futures::executor::block_on(t.wait()) {
            Err(SendError::Aggregate(v)) => {
                assert_eq!(v.iter().map(|e| e.msg_id).collect::<Vec<_>>(), [1, 2])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_from_another_thread_wakes_the_waiter() {
        for _ in 0..if cfg!(miri) { 20 } else { 2_000 } {
            let t = Arc::new(Tracker::new(1, ErrorMode::FirstWins, Vec::new()));
            let t2 = t.clone();
            let h = std::thread::spawn(move || t2.complete(0));
            assert!(futures::executor::block_on(t.wait()).is_ok());
            h.join().unwrap();
        }
    }
}
