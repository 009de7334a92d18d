//! Deadlock detection for the one anti-pattern tracking makes easy: a tracked handler
//! that awaits a tracked `send` which (directly, or through tracked forwarders) waits
//! for that same handler. Handlers process one message at a time, so such a send could
//! never finish.
//!
//! How: while a handler (or tracked forwarder) is polled, a thread-local names it and the
//! handlers already blocked on the message it is processing. A tracked send made in that
//! scope records the chain `blocked + [this handler]` in its tracker. When the send path
//! is about to hand a tracked message to a handler that is in its tracker's chain, it
//! fails that delivery with [`WouldDeadlock`] instead of queueing it; the error takes the
//! usual dual path, so the blocked handler's `send` returns it.
//!
//! Not detected: sends made from a task the handler spawned and then awaits, from
//! `within` tasks, or from a `subscribe_tracked` loop you drive yourself (no scope is set
//! there) — see SEMANTICS.md.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A tracked handler awaited a tracked send that waits for the handler itself.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, WouldDeadlock};
/// let (tx, rx) = Relay::channel();
/// let echo = tx.weak();
/// rx.sink_async::<u32>(move |n| {
///     let echo = echo.clone();
///     async move {
///         if *n < 1 {
///             // Sends a u32 to this very sink and waits for it: detected, not hung.
///             let err = echo.send(*n + 1).await.unwrap_err();
///             assert!(err.errors()[0].downcast_ref::<WouldDeadlock>().is_some());
///         }
///     }
/// });
/// tx.send(0u32).await.unwrap();
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "deadlock avoided: a handler awaited a tracked send that waits for that same handler \
     (send without awaiting, spawn the send, or use an untracked relay)"
)]
pub struct WouldDeadlock;

/// The handler being polled on this thread, and who is blocked on its current message.
struct Scope {
    handler: u64,
    blocked: Option<Arc<[u64]>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// The wait chain for a tracked send made now: empty outside any handler.
pub(crate) fn chain_for_send() -> Option<Arc<[u64]>> {
    CURRENT.with(|current| {
        let current = current.borrow();
        let scope = current.as_ref()?;
        let mut chain: Vec<u64> = scope.blocked.as_deref().unwrap_or(&[]).to_vec();
        chain.push(scope.handler);
        Some(chain.into())
    })
}

pin_project_lite::pin_project! {
    /// Polls `fut` with `handler` named as the current handler on this thread.
    pub(crate) struct InHandler<F> {
        #[pin]
        fut: F,
        handler: u64,
        blocked: Option<Arc<[u64]>>,
    }
}

impl<F> InHandler<F> {
    pub(crate) fn new(handler: u64, blocked: Option<Arc<[u64]>>, fut: F) -> Self {
        InHandler {
            fut,
            handler,
            blocked,
        }
    }
}

impl<F: Future> Future for InHandler<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let scope = Scope {
            handler: *this.handler,
            blocked: this.blocked.clone(),
        };
        // Restores the outer scope on return *and* on unwind (handler panics are caught
        // further out).
        struct Restore(Option<Scope>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = outer);
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(scope)));
        this.fut.poll(cx)
    }
}
