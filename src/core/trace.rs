//! Tracing (feature `tracing`): the spans a message's journey opens, and a log line for
//! every loss and failure. Without the feature every item here is empty or a no-op, so
//! the hot path carries nothing for it (SEMANTICS.md §16).
//!
//! Spans, all at `INFO` with target `pipedream_rs`:
//!
//! - `pipedream.send` — opened when the send is first polled, as a child of the span
//!   current there (so `tx.send(v).instrument(span)` works as well as a send inside an
//!   instrumented block); fields `relay_id`, `msg_id`, `type_name`. Every copy of the message carries it
//!   (in its [`Envelope`]), so it closes when the last copy is let go of.
//! - `pipedream.sink`, `pipedream.tap`, `pipedream.forward` — one per message a handler
//!   or forwarder processes, a child of that message's `pipedream.send`, entered while
//!   it works; fields `relay_id`, `subscriber_id`, `msg_id`, `type_name`, `kind`,
//!   `spawner` (the name of the spawner running the task, `"caller"` for a `forward`
//!   future that the caller awaits itself).
//!
//! A forwarder's sends into its child relay are made inside its `pipedream.forward`
//! span, so their own `pipedream.send` spans hang below it: one request's trace shows
//! every handler its messages reached, through derived relays and forwards.
//!
//! When no subscriber is interested, `pipedream.send` is not even allocated: the message
//! carries `None`, and a disabled span costs one check of tracing's global level.

#[cfg(feature = "tracing")]
use std::sync::Arc;

use crate::relay::envelope::{Envelope, TypeName};
use crate::relay::error::{HandlerKind, RelayError};
use crate::relay::events::{Dropped, HandlerLost};

/// The `pipedream.send` span of one message, shared by all its copies (`None` when
/// nobody listens). Zero-sized without the feature.
#[derive(Clone, Default)]
pub(crate) struct SendSpan(#[cfg(feature = "tracing")] Option<Arc<tracing::Span>>);

impl SendSpan {
    /// The span of a send starting now, a child of the current span.
    #[inline]
    pub(crate) fn open(relay_id: u64, msg_id: u64, type_name: TypeName) -> SendSpan {
        #[cfg(feature = "tracing")]
        {
            let span = tracing::info_span!(
                target: "pipedream_rs",
                "pipedream.send",
                relay_id,
                msg_id,
                type_name = type_name()
            );
            if span.is_disabled() {
                SendSpan(None)
            } else {
                SendSpan(Some(Arc::new(span)))
            }
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (relay_id, msg_id, type_name);
            SendSpan()
        }
    }
}

#[cfg(feature = "tracing")]
impl SendSpan {
    /// The span itself (disabled when nobody listened).
    pub(crate) fn span(&self) -> tracing::Span {
        self.0
            .as_deref()
            .cloned()
            .unwrap_or_else(tracing::Span::none)
    }
}

/// The span of one handler's or forwarder's work on one message. Zero-sized without the
/// feature.
pub(crate) struct Work(#[cfg(feature = "tracing")] tracing::Span);

impl Work {
    /// The work of handler `subscriber_id` of relay `relay_id` (of `kind`) on `envelope`.
    #[inline]
    pub(crate) fn of(
        kind: HandlerKind,
        relay_id: u64,
        subscriber_id: u64,
        envelope: &Envelope,
    ) -> Work {
        #[cfg(feature = "tracing")]
        {
            let parent = envelope.trace.0.as_ref().and_then(|span| span.id());
            let spawner = spawner_here();
            let (msg_id, type_name) = (envelope.msg_id, envelope.type_name);
            macro_rules! work {
                ($name:literal) => {
                    tracing::info_span!(
                        target: "pipedream_rs",
                        parent: parent,
                        $name,
                        relay_id,
                        subscriber_id,
                        msg_id,
                        type_name = type_name(),
                        kind = %kind,
                        spawner
                    )
                };
            }
            Work(match kind {
                HandlerKind::Tap => work!("pipedream.tap"),
                HandlerKind::Forwarder => work!("pipedream.forward"),
                _ => work!("pipedream.sink"),
            })
        }
        #[cfg(not(feature = "tracing"))]
        {
            let _ = (kind, relay_id, subscriber_id, envelope);
            Work()
        }
    }

    /// Runs `fut` inside this span.
    #[cfg(feature = "tracing")]
    pub(crate) fn run<F: std::future::Future>(
        &self,
        fut: F,
    ) -> tracing::instrument::Instrumented<F> {
        tracing::Instrument::instrument(fut, self.0.clone())
    }

    /// Runs `fut` (no span without the feature).
    #[cfg(not(feature = "tracing"))]
    #[inline(always)]
    pub(crate) fn run<F: std::future::Future>(&self, fut: F) -> F {
        fut
    }

    /// Runs `f` inside this span.
    #[inline]
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tracing")]
        let _entered = self.0.enter();
        f()
    }
}

// ----- which spawner a task runs on, for its spans ----------------------------------------

#[cfg(feature = "tracing")]
thread_local! {
    /// The name of the spawner running the relay task being polled on this thread.
    static SPAWNER: std::cell::Cell<&'static str> = const { std::cell::Cell::new("caller") };
}

#[cfg(feature = "tracing")]
fn spawner_here() -> &'static str {
    SPAWNER.with(std::cell::Cell::get)
}

#[cfg(feature = "tracing")]
pin_project_lite::pin_project! {
    /// A relay task, naming its spawner to the spans made while it is polled.
    pub(crate) struct OnSpawner<F> {
        #[pin]
        task: F,
        name: &'static str,
    }
}

#[cfg(feature = "tracing")]
impl<F: std::future::Future> std::future::Future for OnSpawner<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        struct Restore(&'static str);
        impl Drop for Restore {
            fn drop(&mut self) {
                SPAWNER.with(|s| s.set(self.0));
            }
        }
        let _restore = Restore(SPAWNER.with(|s| s.replace(this.name)));
        this.task.poll(cx)
    }
}

/// `task`, marked as running on the spawner named `name` (unchanged without the feature).
#[cfg(feature = "tracing")]
pub(crate) fn on_spawner<F>(name: &'static str, task: F) -> OnSpawner<F> {
    OnSpawner { task, name }
}

/// `task`, marked as running on the spawner named `name` (unchanged without the feature).
#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) fn on_spawner<F>(name: &'static str, task: F) -> F {
    let _ = name;
    task
}

// ----- the log: every loss and failure ----------------------------------------------------

/// A handler, forwarder or `within` task failed (`ERROR` for a panic, `WARN` otherwise).
#[inline]
pub(crate) fn failure(error: &RelayError) {
    #[cfg(feature = "tracing")]
    {
        let RelayError {
            msg_id,
            relay_id,
            kind,
            type_name,
            ..
        } = error;
        let cause = &error.error;
        if error.is_panic() {
            tracing::error!(target: "pipedream_rs", relay_id, msg_id, type_name, %kind, error = %cause, "handler panicked");
        } else {
            tracing::warn!(target: "pipedream_rs", relay_id, msg_id, type_name, %kind, error = %cause, "handler failed");
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = error;
}

/// A subscriber missed a message: its queue was full (broadcast mode). `WARN`.
#[inline]
pub(crate) fn dropped(dropped: &Dropped) {
    #[cfg(feature = "tracing")]
    {
        let Dropped {
            relay_id,
            msg_id,
            type_name,
            subscriber_id,
        } = dropped;
        tracing::warn!(target: "pipedream_rs", relay_id, msg_id, type_name, subscriber_id, "message dropped: the subscriber's queue is full");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = dropped;
}

/// A message reached no subscriber: `WARN` the first time for its type on its relay
/// (the `&str`-for-`String` mistake shows at once), `DEBUG` after that.
#[inline]
pub(crate) fn unrouted(relay_id: u64, msg_id: u64, type_name: &'static str, first: bool) {
    #[cfg(feature = "tracing")]
    if first {
        tracing::warn!(target: "pipedream_rs", relay_id, msg_id, type_name, "message reached no subscriber (further ones of this type are logged at DEBUG)");
    } else {
        tracing::debug!(target: "pipedream_rs", relay_id, msg_id, type_name, "message reached no subscriber");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (relay_id, msg_id, type_name, first);
}

/// A handler or forwarder task went while its relay was open. `ERROR`.
#[inline]
pub(crate) fn lost(lost: &HandlerLost) {
    #[cfg(feature = "tracing")]
    {
        let HandlerLost {
            relay_id,
            subscriber_id,
            kind,
            type_name,
            reason,
        } = lost;
        tracing::error!(target: "pipedream_rs", relay_id, subscriber_id, %kind, type_name, ?reason, "handler task lost");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = lost;
}

/// A wait on a cycle of waits was broken. `WARN`.
#[inline]
pub(crate) fn deadlock_broken(relay_id: u64) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "pipedream_rs", relay_id, "a cycle of waits was broken (see WouldDeadlock)");
    #[cfg(not(feature = "tracing"))]
    let _ = relay_id;
}
