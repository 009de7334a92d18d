//! [`Inbox`]: the receiving end every handler and forwarder is built on, and
//! [`Completion`], one received message that must be settled exactly once.

use std::any::{Any, TypeId};
use std::sync::{Arc, Weak};

use crate::core::tracker::Tracker;
use crate::core::Core;
use crate::relay::envelope::{Envelope, Queued};
use crate::relay::error::{HandlerGone, HandlerKind, RelayError, SendError, SharedError};
use crate::relay::receipt::Receipt;
use crate::relay::subscription::{map_try, Attached, TryRecvError};

/// The receiving end every handler and forwarder is built on: a registered queue (typed
/// or wildcard, tracked or not) that hands out [`Completion`]s.
pub(crate) struct Inbox {
    attached: Attached,
    kind: HandlerKind,
    type_name: Option<crate::relay::envelope::TypeName>,
}

impl Inbox {
    /// Registers now. `ty: None` receives every type; `tracked` decides whether sends wait.
    pub(crate) fn new(
        core: &Weak<Core>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        kind: HandlerKind,
        tracked: bool,
    ) -> Self {
        let mut attached = Attached::new(core, ty, tracked.then_some(kind));
        // A handler's or forwarder's task works on a message until it asks for the next.
        attached.queue.count_until_next();
        Inbox {
            attached,
            kind,
            type_name: ty.map(|(_, name)| name),
        }
    }

    /// The inbox of a tracked forwarder that passes messages on to the relays `links`:
    /// a tracked send snapshots those relays too (see `Core::snapshot`).
    pub(crate) fn forwarder(
        core: &Weak<Core>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        links: Box<[crate::core::Link]>,
    ) -> Self {
        let mut attached = Attached::linked(core, ty, Some(HandlerKind::Forwarder), links);
        attached.queue.count_until_next();
        Inbox {
            attached,
            kind: HandlerKind::Forwarder,
            type_name: ty.map(|(_, name)| name),
        }
    }

    /// A tracked inbox of `T` that its owner reads (a user's tracked subscription): a
    /// message taken is done with when it is taken, not when the next is asked for (the
    /// owner may hold several), and it is not a task's inbox (see `core/flow.rs`).
    pub(crate) fn held<T: Any>(core: &Weak<Core>, kind: HandlerKind) -> Self {
        let ty = Some((TypeId::of::<T>(), std::any::type_name::<T> as _));
        Inbox {
            attached: Attached::new(core, ty, Some(kind)),
            kind,
            type_name: ty.map(|(_, name)| name),
        }
    }

    pub(crate) fn typed<T: Any>(core: &Weak<Core>, kind: HandlerKind, tracked: bool) -> Self {
        Self::new(
            core,
            Some((TypeId::of::<T>(), std::any::type_name::<T>)),
            kind,
            tracked,
        )
    }

    pub(crate) async fn recv(&mut self) -> Option<Completion> {
        let item = self.attached.queue.recv().await?;
        Some(self.wrap(item))
    }

    /// The next message, or `None` at the end (see `QueueRx::poll_recv`).
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Completion>> {
        self.attached
            .queue
            .poll_recv(cx)
            .map(|item| item.map(|item| self.wrap(item)))
    }

    /// A `recv` future was dropped while it waited (see `QueueRx::abandon_wait`).
    pub(crate) fn abandon_wait(&mut self) {
        self.attached.queue.abandon_wait();
    }

    /// The relay is closed, or gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.attached.is_closed()
    }

    /// A receive has returned the end (see `QueueRx::has_finished`).
    pub(crate) fn has_finished(&self) -> bool {
        self.attached.queue.has_finished()
    }

    pub(crate) fn try_recv(&mut self) -> Result<Completion, TryRecvError> {
        let item = self.attached.queue.try_recv().map_err(map_try)?;
        Ok(self.wrap(item))
    }

    fn wrap(&self, item: Queued) -> Completion {
        Completion {
            subscriber: self.attached.id(),
            msg_id: item.envelope.msg_id,
            type_name: item.envelope.type_name(),
            envelope: Some(item.envelope),
            tracker: item.tracker,
            core: self.attached.core.clone(),
            relay_id: self.attached.relay_id,
            kind: self.kind,
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.attached.id()
    }

    /// The relay it is registered on.
    pub(crate) fn relay_id(&self) -> u64 {
        self.attached.relay_id
    }

    /// The type it receives (`"*"` for every type).
    pub(crate) fn type_name(&self) -> &'static str {
        self.type_name.map_or("*", |name| name())
    }

    /// See [`QueueRx::release_when_idle`](crate::core::queue::QueueRx::release_when_idle).
    pub(crate) fn release_when_idle(&mut self) {
        self.attached.queue.release_when_idle();
    }

    /// See [`QueueRx::end_quietly`](crate::core::queue::QueueRx::end_quietly).
    pub(crate) fn end_quietly(&mut self) {
        self.attached.queue.end_quietly();
    }

    pub(crate) fn is_wildcard(&self) -> bool {
        self.attached.ty.is_none()
    }
}

/// One received message that its handler must settle exactly once.
///
/// Invariant: the tracker (if any) is taken by the first of `complete`, `fail*` or `Drop`,
/// so it is completed exactly once; `Drop` without settling fails it with [`HandlerGone`].
/// The envelope can be taken out (to let go of the value's `Arc`) while the message stays
/// reportable: `msg_id` and `type_name` are kept for errors.
pub(crate) struct Completion {
    /// The subscriber (inbox) that received it.
    subscriber: u64,
    envelope: Option<Envelope>,
    pub(crate) msg_id: u64,
    type_name: &'static str,
    tracker: Option<Arc<Tracker>>,
    core: Weak<Core>,
    relay_id: u64,
    kind: HandlerKind,
}

impl Completion {
    pub(crate) fn is_tracked(&self) -> bool {
        self.tracker.is_some()
    }

    pub(crate) fn envelope(&self) -> &Envelope {
        self.envelope
            .as_ref()
            .expect("the envelope is only taken by its last user")
    }

    /// Takes the envelope, so this message no longer holds the value's `Arc`.
    pub(crate) fn take_envelope(&mut self) -> Envelope {
        self.envelope.take().expect("the envelope is taken once")
    }

    /// How the send of this message planned for this forwarder to pass it on (one plan per
    /// relay it passes messages on to; none for an untracked message). Taken once.
    pub(crate) fn take_plans(&self) -> Vec<crate::core::Plan> {
        match &self.tracker {
            Some(tracker) => tracker.take_plans(self.subscriber),
            None => Vec::new(),
        }
    }

    pub(crate) fn complete(mut self) {
        if let Some(tracker) = self.tracker.take() {
            tracker.complete(self.subscriber);
        }
    }

    /// This handler failed: the dual path (back to the sender, and a `RelayError` event
    /// on this handler's relay).
    pub(crate) fn fail(mut self, error: SharedError) {
        self.report_failure(error);
    }

    /// Settles with the outcome of passing the message on to a child relay: the child's
    /// handler errors go back to this message's sender as they are (they were already
    /// published on the child relay, where those handlers live).
    pub(crate) fn settle_forwarded(mut self, outcome: Result<Receipt, SendError>) {
        let errors = match outcome {
            Ok(_) => return self.complete(),
            Err(SendError::Downstream(e)) => vec![e],
            Err(SendError::Aggregate(v)) => v,
            Err(_) => return self.report_failure(Arc::new(HandlerGone)),
        };
        if let Some(tracker) = self.tracker.take() {
            tracker.fail_many(self.subscriber, errors);
        }
    }

    /// What can still report a failure about this message once it is settled (and gone).
    pub(crate) fn reporter(&self) -> Reporter {
        Reporter {
            core: self.core.clone(),
            msg_id: self.msg_id,
            relay_id: self.relay_id,
            kind: self.kind,
            type_name: self.type_name,
        }
    }

    pub(crate) fn relay_error(&self, error: SharedError) -> RelayError {
        RelayError {
            msg_id: self.msg_id,
            relay_id: self.relay_id,
            kind: self.kind,
            type_name: self.type_name,
            error,
        }
    }

    fn report_failure(&mut self, error: SharedError) {
        let tracker = self.tracker.take();
        let relay_error = self.relay_error(error);
        let by = self.subscriber;
        match self.core.upgrade() {
            Some(core) => core.report(tracker.as_deref().map(|t| (t, by)), relay_error),
            // Nobody is waiting if the relay is gone (in-flight sends keep it alive), but
            // complete the tracker anyway so the invariant holds.
            None => {
                if let Some(tracker) = tracker {
                    tracker.fail(by, relay_error);
                }
            }
        }
    }
}

/// Publishes a failure about a message that has already been settled: no sender waits
/// for it any more, so the failure only takes the event path (`RelayError`).
///
/// It holds only the message's identity (no error is made until one is reported), so a
/// handler can keep one for every message it runs without allocating.
pub(crate) struct Reporter {
    core: Weak<Core>,
    msg_id: u64,
    relay_id: u64,
    kind: HandlerKind,
    type_name: &'static str,
}

impl Reporter {
    /// A panic in the `Drop` of a message a forwarder let go of: published ("while
    /// dropping the message"), then, under `PanicMode::Propagate`, raised again in the
    /// forwarder's task (which then ends, as after any propagated panic).
    pub(crate) fn report_drop_panic(self, payload: Box<dyn Any + Send>) {
        let propagate = self.core.upgrade().is_some_and(|core| {
            core.config.panic_mode == crate::relay::config::PanicMode::Propagate
        });
        self.report(Arc::new(crate::relay::error::PanicError::dropping(
            &*payload,
        )));
        if propagate {
            std::panic::resume_unwind(payload);
        }
    }

    pub(crate) fn report(self, error: SharedError) {
        if let Some(core) = self.core.upgrade() {
            core.report(
                None,
                RelayError {
                    msg_id: self.msg_id,
                    relay_id: self.relay_id,
                    kind: self.kind,
                    type_name: self.type_name,
                    error,
                },
            );
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.tracker.is_some() {
            self.report_failure(Arc::new(HandlerGone));
        }
    }
}
