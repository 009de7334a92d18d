//! [`Guarded`]: a handler or forwarder task that reports itself lost ([`HandlerLost`]) if
//! it ends before its relay.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

use crate::core::Core;
use crate::relay::error::HandlerKind;
use crate::relay::events::{HandlerLost, LossReason};

/// Who a task is, for its [`HandlerLost`] report.
pub(crate) struct Identity {
    pub(crate) core: Weak<Core>,
    pub(crate) subscriber_id: u64,
    pub(crate) kind: HandlerKind,
    pub(crate) type_name: &'static str,
    /// For a task its handle can abort (`forward_detached`): ending after an abort is
    /// what was asked for, not a loss.
    pub(crate) abort: Option<futures::future::AbortHandle>,
}

impl Identity {
    fn report(&self, reason: LossReason) {
        if self.abort.as_ref().is_some_and(|abort| abort.is_aborted()) {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            core.handler_lost(HandlerLost {
                relay_id: core.id,
                subscriber_id: self.subscriber_id,
                kind: self.kind,
                type_name: self.type_name,
                reason,
            });
        }
    }
}

pin_project_lite::pin_project! {
    /// A task's future, with its report if it ends early.
    ///
    /// Invariant: exactly one of these happens, once: the future completes (its normal
    /// end: nothing is reported), or the report is made — when this is dropped with the
    /// future unfinished (before its first poll: `NeverStarted`; after: `Dropped`), or when
    /// the future panics (`Panicked`, then the panic goes on). The future, with the
    /// subscription it owns, is always dropped *before* the report, so by the time anyone
    /// sees the report the task's registration is gone. The verdict is taken before the
    /// future is dropped, so a `Drop` that panics (user state in the task) changes neither
    /// whether nor how the task is reported; that panic goes on afterwards, as a task's
    /// own panic would (unless the thread is already unwinding).
    pub(crate) struct Guarded<F> {
        #[pin]
        fut: Option<F>,
        who: Option<Identity>,
        started: bool,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let reason = if *this.started {
                LossReason::Dropped
            } else {
                LossReason::NeverStarted
            };
            finish(this.fut, this.who.take().map(|who| (who, reason)));
        }
    }
}

impl<F> Guarded<F> {
    pub(crate) fn new(who: Identity, fut: F) -> Self {
        Guarded {
            fut: Some(fut),
            who: Some(who),
            started: false,
        }
    }
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        *this.started = true;
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(())) => {
                this.who.take(); // its normal end
                finish(this.fut, None);
                Poll::Ready(())
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                // A panic the task lets through (`PanicMode::Propagate`, reported as a
                // `RelayError` already): leave the registry, report, then go on unwinding.
                let who = this.who.take().map(|who| (who, LossReason::Panicked));
                finish(this.fut, who);
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// Drops the task's future, then makes its report (if any). A panic from the drop is
/// raised again after the report, unless the thread is already unwinding.
fn finish<F>(mut fut: Pin<&mut Option<F>>, report: Option<(Identity, LossReason)>) {
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| fut.set(None)));
    if let Some((who, reason)) = report {
        who.report(reason);
    }
    if let Err(payload) = dropped {
        if !std::thread::panicking() {
            std::panic::resume_unwind(payload);
        }
    }
}
