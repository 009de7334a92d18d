//! Forwarders: the tasks behind derived relays and connections.
//!
//! A forwarder reads from an [`Inbox`] on its source relay and sends into a target relay.
//! Every derived relay (`filter`, `map`, `batch`, `split`, …) is a new relay, with the
//! parent's configuration, whose only sender is held by its forwarder task:
//!
//! - the child closes when the forwarder ends, which is when the parent has closed *and*
//!   the forwarder has drained what was queued for it (cascade close);
//! - a forwarder that panics (in a user predicate, mapping or `Clone`) reports a
//!   [`RelayError`](crate::RelayError) of kind `Forwarder` on the parent, fails the message
//!   it was handling (if tracked), and ends, which closes the child — nobody hangs.
//!   Messages still queued for it are failed with [`HandlerGone`](crate::HandlerGone).
//!
//! Tracked forwarders (`filter`, `only`, `exclude`, `split`) settle each parent message
//! with the outcome of passing it on: at once for a message they do not forward; for one
//! they forward, when the child's tracked handlers are done, with their errors.
//! Untracked forwarders (`map`, `filter_map`, `batch`, `forward`, `merge`) are tracking
//! boundaries: the parent's sends do not wait for them.

pub(crate) mod connect;
pub(crate) mod derived;

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::core::inbox::Inbox;
use crate::core::inbox::{Completion, Reporter};
use crate::core::lost::{Guarded, Identity};
use crate::relay::config::{Config, PanicMode};
use crate::relay::error::HandlerKind;
use crate::relay::error::{PanicError, SharedError};
use crate::relay::receiver::RelayReceiver;
use crate::relay::sender::RelaySender;
use crate::relay::Relay;
use futures::FutureExt;

/// The next message for the forwarder of derived relays `children`, or `None` once its
/// source is closed and drained, or once none of `children` can be observed any more (no
/// receiver handle, no subscriber: nothing it passes on could ever be seen). Then its inbox
/// ends quietly: what is still queued for it, or reaches it later, completes instead of
/// failing, and the forwarder ends, which closes the children (SEMANTICS.md §9).
pub(crate) async fn next_for(inbox: &mut Inbox, children: &[RelaySender]) -> Option<Completion> {
    // Checked first, without waiting: a forwarder whose inbox is never empty would
    // otherwise never look (the select below polls the inbox first).
    if children.iter().all(|child| child.core.is_unobserved()) {
        inbox.end_quietly();
        return None;
    }
    let unobserved = async {
        for child in children {
            child.core.wait_unobserved().await;
        }
    };
    let next = {
        let unobserved = std::pin::pin!(unobserved);
        let recv = std::pin::pin!(inbox.recv());
        match futures::future::select(recv, unobserved).await {
            futures::future::Either::Left((next, _)) => return next,
            futures::future::Either::Right(((), _)) => None,
        }
    };
    inbox.end_quietly();
    next
}

/// Runs user code for a forwarder, catching a panic.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(f))
}

/// Settles (or just drops) a forwarder's copy of a message with `settle`, catching a panic
/// in the value's `Drop` if this copy was the last: the forwarder goes on, and the panic
/// is published as a `RelayError` (its sender, if any, already has its verdict); under
/// `PanicMode::Propagate` it is raised again after that.
pub(crate) fn settle_quietly(msg: Completion, settle: impl FnOnce(Completion)) {
    let reporter = msg.reporter();
    if let Err(payload) = guarded(|| settle(msg)) {
        reporter.report_drop_panic(payload);
    }
}

/// Sends a value the forwarder made (`filter_map`'s output, a batch) into its child.
/// Where no subscriber takes it (unrouted, missed, gone), the send lets go of the only
/// copy: a panic in the value's `Drop` is caught there and published on the parent as a
/// `RelayError` about `reporter`'s message ("while dropping the message"), as
/// [`settle_quietly`] does, and the forwarder goes on (under `PanicMode::Propagate` the
/// panic is raised again after that). Pass the send as an `async` block that makes it,
/// so a value refused at once (a closed child) is dropped inside the guard too. (Once
/// the value is queued anywhere the send holds no copy of it: see `Core::push_from`.)
pub(crate) async fn send_made<F: Future>(send: F, reporter: Reporter) {
    if let Err(payload) = AssertUnwindSafe(send).catch_unwind().await {
        reporter.report_drop_panic(payload);
    }
}

/// A forwarder's user code panicked while it held `msg`: report it on the parent (and to
/// the message's sender, if tracked), then re-raise under `PanicMode::Propagate`.
/// The caller ends the forwarder afterwards, which closes the child.
pub(crate) fn forwarder_panicked(msg: Completion, payload: Box<dyn Any + Send>, mode: PanicMode) {
    msg.fail(Arc::new(PanicError::from_payload(&*payload)) as SharedError);
    if mode == PanicMode::Propagate {
        std::panic::resume_unwind(payload);
    }
}

impl RelayReceiver {
    /// A new relay with this one's configuration. If this relay is already closed, the
    /// child is returned closed (and `None`: no forwarder is needed).
    pub(crate) fn child(&self) -> (Option<RelaySender>, RelayReceiver) {
        // In the parent's family: the parent's `idle()` covers the child.
        let (tx, rx) = Relay::in_family(self.config.clone(), self.flow.clone());
        if self.is_closed() {
            tx.close();
            return (None, rx);
        }
        (Some(tx), rx)
    }

    /// Starts a forwarder task on this relay's spawner (counted in its `live_tasks`),
    /// reported as lost ([`forwarder_identity`](Self::forwarder_identity)) if it ends
    /// before this relay does.
    pub(crate) fn spawn_forwarder(
        &self,
        who: Identity,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks
            .spawn(&*self.config.spawner.here(), Guarded::new(who, task));
    }

    /// Who the forwarder reading `inbox` (on this relay) is, for its report if lost.
    pub(crate) fn forwarder_identity(&self, inbox: &Inbox) -> Identity {
        Identity {
            core: self.core.clone(),
            subscriber_id: inbox.id(),
            kind: HandlerKind::Forwarder,
            type_name: inbox.type_name(),
            abort: None,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}
