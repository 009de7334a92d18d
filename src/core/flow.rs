//! The idle barrier's count: how many messages a family of relays (a relay and every
//! relay derived from it, transitively) holds in its queues or is processing now.
//!
//! # The count
//!
//! `busy` is raised by one *before* a message becomes visible in any queue of the family
//! (a push), and lowered by one *after* the message is done with: when a plain or
//! tracked subscription takes it, when a queue is drained at its end, when a drop-oldest
//! push evicts it, and, for the relay's own handler and forwarder tasks, only when the
//! task comes back for its next message (or ends) — so a handler running, or a forwarder
//! passing a message on into a derived relay of the family (whose push raises the count
//! first), keeps it up. So `busy == 0` is a moment when no queue of the family holds a
//! message and no handler or forwarder of it is working on one: a real quiescent point,
//! whatever sends run concurrently. `idle()` waits for such a moment with the eventcount
//! pattern: check, listen, check again, wait; the lowering that reaches zero notifies.
//!
//! What the count does not see: a send that has not pushed yet (waiting for its first
//! poll, or for room in a full lossless queue — then that queue is not empty anyway), a
//! `within` task, a message a subscription's owner took and still holds, a batch
//! forwarder's partial batch waiting for more messages, and relays connected with
//! `forward` or `merge` (separate families).

use event_listener::Event;

use crate::core::sync::{AtomicUsize, Ordering};

/// The top bit of `Flow::busy`: someone waits in `wait_idle` (set by the waiter after it
/// listens, cleared by the lowering that finds the count at zero with it set). The count
/// is the other bits. One word, so both sides learn of each other from the
/// read-modify-writes they make anyway, and a lowering to zero notifies (which takes
/// event-listener's lock) only when someone waits, as `PARKED` spares a queue's senders.
const WAITING: usize = 1 << (usize::BITS - 1);

/// Invariant: the count (`busy & !WAITING`) is the number of messages in the family's
/// channels plus the messages a handler or forwarder task of the family has taken and not
/// yet come back from (see the module docs). It never wraps: every lowering follows its
/// raising. `crossings` counts the lowerings to zero that found a waiter.
#[derive(Default)]
pub(crate) struct Flow {
    busy: AtomicUsize,
    crossings: AtomicUsize,
    /// Notified (all) when the count reaches zero while someone waits.
    idle: Event,
}

impl Flow {
    /// A message is about to become visible in a queue.
    #[inline]
    pub(crate) fn raise(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// `n` messages are done with.
    #[inline]
    pub(crate) fn lower(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.busy.fetch_sub(n, Ordering::AcqRel);
        if before == WAITING | n {
            // Zero, and someone waits: a quiescent point. Counted before the wake-up, so
            // a woken waiter that finds the count up again still knows one happened.
            self.crossings.fetch_add(1, Ordering::AcqRel);
            // Take the flag down only if nothing changed since (a raise, or a new waiter
            // raising it again after a raise, keeps it up for the next crossing).
            let _ = self
                .busy
                .compare_exchange(WAITING, 0, Ordering::AcqRel, Ordering::Acquire);
            self.idle.notify(usize::MAX);
        }
    }

    /// Whether the family is quiescent now.
    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) & !WAITING == 0
    }

    /// Resolves at a moment, after the call, when the family is quiescent: seen here, or
    /// seen by the lowering that reached zero while this waited (so a steady stream of
    /// sends cannot starve it past quiescent points it slept through). Eventcount: check,
    /// listen, announce the wait (a read-modify-write that also reads the count), wait.
    pub(crate) async fn wait_idle(&self) {
        let start = self.crossings.load(Ordering::Acquire);
        loop {
            if self.is_idle() {
                return;
            }
            let listener = self.idle.listen();
            let before = self.busy.fetch_or(WAITING, Ordering::AcqRel);
            if before & !WAITING == 0 || self.crossings.load(Ordering::Acquire) != start {
                return;
            }
            listener.await;
            if self.crossings.load(Ordering::Acquire) != start {
                return;
            }
        }
    }
}
