//! The idle barrier: whether a family of relays (a relay and every relay derived from
//! it, transitively) holds no message in any queue and is working on none.
//!
//! # Counting without a shared counter
//!
//! Each queue keeps two monotonic counts. `pushed` is raised by a sender *before* a
//! message becomes visible in the queue, on the cache line of `state` the sender has just
//! written to reserve room. `done` is raised once the message is done with, on the
//! receiver's own line (next to `owed`): when a plain or tracked subscription takes it,
//! when a queue is drained at its end, when a drop-oldest push evicts it, and, for the
//! relay's own handler and forwarder tasks, only when the task comes back for its next
//! message (or finds the queue empty) — so a handler running, or a forwarder passing a
//! message on into a derived relay (whose `pushed` is raised first), keeps its queue busy.
//! A failed push raises `done` too, so `done <= pushed` always, and a queue is idle
//! exactly when the two are equal. The hot path pays one read-modify-write on a line each
//! side already writes; nothing is shared by all the queues of a family.
//!
//! # Seeing a quiescent point
//!
//! `wait_idle` reads every queue's `(done, pushed)` (in that order: an equal pair means
//! the queue was idle when `done` was read), twice. If every pair is equal and the two
//! collections are identical (same queues, same counts), no count moved in between: every
//! event that happened before a read of the first collection is visible to the second
//! (the counts only grow, so a change cannot hide), and a message passed on from one
//! queue to another raises the second's `pushed` before the first's `done`. So there was
//! a moment between the two collections when every queue was idle at once: a real
//! quiescent point, whatever sends run concurrently. Queues come from the family's table
//! (`track` at registration, `untrack` when the receiver ends), not from the registries:
//! a closed relay's registry is empty while its handlers may still finish their last
//! message.
//!
//! A waiter that finds the family busy sleeps on `idle`, after *arming* every queue it
//! read (a `fetch_or` of a flag into the queue's `done` word). The receiver's raise of
//! `done` is a read-modify-write of that same word, so either it sees the flag and, if
//! the queue is now idle, wakes the waiters, or the waiter's read, which follows its
//! arming, sees the raise. One word's modification order does it: the hot path pays no
//! fence, and an unarmed queue nothing at all.
//!
//! The close of a relay is work too: once no sender is left, a queue read by one of the
//! relay's own tasks counts its end as pushed until the task ends (it may still pass on
//! what it holds: a batch forwarder's last, partial batch). So `idle()` after a close
//! waits for every handler and forwarder of the closed relays to finish.
//!
//! What is not seen: a send that has not pushed yet (not yet polled, or waiting for room
//! in a full lossless queue), a `within` task, a message a subscription's owner took and
//! still holds, a batch forwarder's partial batch waiting for more messages while its
//! relay is open, and relays connected with `forward` or `merge` (families of their own). A waiter sees a quiescent
//! point only if it catches one: under a stream of sends that never pauses, it waits for
//! the pause.

use std::collections::HashMap;
use std::sync::Mutex;

use event_listener::Event;

use crate::core::queue::QueueState;
use crate::core::sync::{AtomicUsize, Ordering};

/// One queue's counts, as a collection reads them: its subscriber id, `done`, `pushed`.
pub(crate) type Counts = (u64, u64, u64);

/// A family of relays: the queues of its relays, and the waiters of its idle barrier.
///
/// Invariant: `queues` holds every queue of the family whose receiver has not yet ended
/// (registered or not: a closed relay's registry is empty while its handlers may still be
/// finishing their last message), by subscriber id, weakly; `waiters` counts the
/// `wait_idle` futures registered to be woken.
#[derive(Default)]
pub(crate) struct Flow {
    queues: Mutex<HashMap<u64, QueueRef>>,
    waiters: AtomicUsize,
    /// Notified (all) when a queue of the family becomes idle while someone waits.
    idle: Event,
}

/// A queue as the family holds it: weakly (its receiver takes it out when it ends). loom
/// builds have no weak references; their models give `wait_idle_over` their queues.
#[cfg(not(loom))]
type QueueRef = std::sync::Weak<QueueState>;
#[cfg(loom)]
type QueueRef = ();

/// Deregisters a waiter, also when its future is dropped.
struct Waiting<'a>(&'a Flow);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Flow {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<u64, QueueRef>> {
        // Only plain inserts and removals happen under it: a poisoned map is consistent.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new queue of the family (before any message can reach it).
    pub(crate) fn track(&self, queue: &crate::core::sync::Arc<QueueState>) {
        #[cfg(not(loom))]
        self.queues()
            .insert(queue.id, crate::core::sync::Arc::downgrade(queue));
        #[cfg(loom)]
        let _ = queue;
        self.poke(); // a waiter that saw the family change looks again
    }

    /// Queue `id`'s receiver has ended: it is idle for good (every push to it fails, and
    /// counts itself done).
    pub(crate) fn untrack(&self, id: u64) {
        self.queues().remove(&id);
        self.poke(); // a waiter that saw the family change looks again
    }

    /// A queue of the family armed by a waiter just became idle: wake the waiters, if
    /// any still wait (the flag outlives its waiter).
    #[inline]
    pub(crate) fn poke(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.idle.notify(usize::MAX);
        }
    }

    /// Every queue of the family (those whose receiver has not ended).
    fn live(&self, out: &mut Vec<crate::core::sync::Arc<QueueState>>) {
        #[cfg(not(loom))]
        out.extend(self.queues().values().filter_map(|q| q.upgrade()));
        #[cfg(loom)]
        let _ = out;
    }

    /// Resolves at a quiescent point of the family (see the module docs).
    pub(crate) async fn wait_idle(&self) {
        self.wait_idle_over(|out| self.live(out)).await
    }

    /// `wait_idle` over the queues `queues` gives (the loom models give their own).
    pub(crate) async fn wait_idle_over(
        &self,
        queues: impl Fn(&mut Vec<crate::core::sync::Arc<QueueState>>),
    ) {
        // `false` if some queue is busy, or if none is but the two collections differ (a
        // message came and went in between, or a queue was added or removed). With `arm`,
        // sleeping on either is safe: a raise of `done` on a queue armed here sees the
        // flag and wakes us when it leaves the queue idle, and `track`/`untrack` wake us
        // after a change of membership. (A loop here instead would spin under churn.)
        let quiescent = |arm: bool| {
            let mut live = Vec::new();
            queues(&mut live);
            let mut first: Vec<Counts> = live
                .iter()
                .map(|q| {
                    if arm {
                        q.arm();
                    }
                    q.counts()
                })
                .collect();
            if first.iter().any(|&(_, done, pushed)| done != pushed) {
                return false;
            }
            let mut second: Vec<Counts> = Vec::with_capacity(first.len());
            live.clear();
            queues(&mut live);
            second.extend(live.iter().map(|q| q.counts()));
            first.sort_unstable_by_key(|&(id, _, _)| id);
            second.sort_unstable_by_key(|&(id, _, _)| id);
            first == second
        };
        if quiescent(false) {
            return;
        }
        // Registered before arming: a receiver that sees a queue armed sees the count.
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(self);
        loop {
            let listener = self.idle.listen();
            if quiescent(true) {
                return;
            }
            listener.await;
        }
    }
}
