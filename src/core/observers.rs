//! [`Observers`]: who can still see a relay's messages — its receiver handles and its
//! subscribers. A derived relay nobody can observe any more has no reason to be fed: its
//! forwarder ends (SEMANTICS.md §9).

use event_listener::Event;

use crate::core::sync::{AtomicUsize, Ordering};
use crate::core::wait::wait_until;

/// The receiver handles of one relay, and the event that announces a change in who
/// observes it.
///
/// Invariant: `handles` counts the live `RelayReceiver`s of the relay (each clone adds one,
/// each drop takes one away). Once it is zero it stays zero: a new handle can only be made
/// from an existing one. `changed` is notified (all) when it reaches zero and when the
/// relay's last subscriber leaves, so a waiter re-checks both.
#[derive(Default)]
pub(crate) struct Observers {
    handles: AtomicUsize,
    /// The forwarder of a derived relay waits on it (see [`Observers::wait_unobserved`]).
    changed: Event,
}

impl Observers {
    pub(crate) fn handle_added(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handle_dropped(&self) {
        // AcqRel: a waiter that reads zero sees everything done through the last handle.
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify(usize::MAX);
        }
    }

    /// The relay lost its last subscriber (its waiter checks again).
    pub(crate) fn subscribers_gone(&self) {
        self.changed.notify(usize::MAX);
    }

    /// Whether nothing observes the relay now (and so ever again, see the invariant).
    pub(crate) fn unobserved(&self, subscribers: impl Fn() -> usize) -> bool {
        self.handles.load(Ordering::Acquire) == 0 && subscribers() == 0
    }

    /// Resolves once no receiver handle is left and `subscribers()` is zero: nothing can
    /// observe the relay again. Check, listen, re-check, await on `changed`.
    pub(crate) async fn wait_unobserved(&self, subscribers: impl Fn() -> usize) {
        wait_until(&self.changed, || self.unobserved(&subscribers)).await;
    }
}
