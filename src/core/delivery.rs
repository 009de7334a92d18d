//! [`Delivery`]: the future every send returns. It queues the message for each target,
//! then waits for the tracked handlers.
//!
//! It is hand-written rather than an `async fn` so that it stays small, about the size
//! of the prepared message. A send future is moved at least once, into the caller's
//! own future, and the `async fn` version was 488 bytes; copying it cost about a tenth of
//! an untracked send. The common path runs in the first poll, without waiting:
//!
//! 1. push the message to every target queue that has room (`Core::push_ready`);
//! 2. if a queue was more than half full, yield once: broadcast never waits for room, and
//!    a producer that never yields could starve a consumer on its own worker;
//! 3. if the send is tracked, wait for its tracker.
//!
//! Only a lossless send that meets a full queue takes the cold path: the rest of step 1
//! runs in a boxed `async` future (`Core::deliver_rest`) that waits for room, and then
//! steps 2 and 3 follow as on the common path.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;

use crate::core::deadlock::{On, Waiting, WouldDeadlock};
use crate::core::tracker::Tracker;
use crate::core::{Core, From, Outgoing, Plan, Pushed, Tally};
use crate::relay::envelope::Envelope;
use crate::relay::error::SendError;
use crate::relay::receipt::Receipt;

/// The boxed remainder of a delivery that had to wait for room; it ends where the first
/// poll's push ends: the tally so far, and the tracker to wait on.
type Rest<'a> = Pin<Box<dyn Future<Output = (Tally, Option<Arc<Tracker>>)> + Send + 'a>>;

/// The future returned by every send. `C` is how it holds the relay: `&Core` for a
/// `RelaySender` (which outlives the borrow), `Arc<Core>` for a `WeakSender`.
///
/// Invariant: each state is entered at most once, in declaration order (`Failed`, `Rest`
/// and `Done`/`Finished`/`Unwound` are terminal paths); `Start` is left at the first poll, so a future
/// dropped before its first poll delivered nothing and counted nothing. A finished
/// delivery polled again answers with the same result (a caller bug `Future` allows; it
/// must not turn a refused send into `Ok`).
pub(crate) struct Delivery<'a, C> {
    state: State<'a, C>,
}

enum State<'a, C> {
    /// Prepared at the call (snapshot taken); nothing delivered yet.
    Start(C, Outgoing),
    /// The send failed at the call (closed relay, mismatched type).
    Failed(SendError),
    /// A lossless send met a full queue: the rest of the pushing, boxed.
    Rest(C, Rest<'a>),
    /// Pushed; a queue was crowded, so give the scheduler one turn before waiting.
    Yield(C, Receipt, Option<Arc<Tracker>>),
    /// Pushed; waiting for the tracked handlers (and registered as a wait of the task that
    /// polls it, if it is one of the relay's own: see `core/deadlock.rs`).
    Wait(
        C,
        Receipt,
        Arc<Tracker>,
        Option<EventListener>,
        Option<Waiting>,
    ),
    /// Finished with this receipt, the common end (kept for a poll after completion;
    /// apart from `Finished` so that the fast path stores and copies 40 bytes, nothing
    /// with a destructor).
    Done(Receipt),
    /// Finished, with this result (kept for a poll after completion).
    Finished(Result<Receipt, SendError>),
    /// A poll unwound from inside the push (a panicking `Drop` under
    /// `PanicMode::Propagate`): answers `Closed` from now on.
    Unwound,
}

impl<'a, C> Delivery<'a, C>
where
    C: Deref<Target = Core> + Clone + Send + Sync + 'a,
{
    /// A send prepared at the call (`Ok`), or refused there (`Err`).
    pub(crate) fn new(core: C, prepared: Result<Outgoing, SendError>) -> Self {
        let state = match prepared {
            Ok(outgoing) => State::Start(core, outgoing),
            Err(e) => State::Failed(e),
        };
        Delivery { state }
    }
}

impl<'a> Delivery<'a, &'a Core> {
    /// Sends a typed value (prepare now, deliver when polled).
    pub(crate) fn value<T: Any + Send + Sync>(core: &'a Core, value: T, from: From) -> Self {
        Delivery::new(core, core.prepare_value(value, from))
    }

    /// Sends a message a tracked forwarder passes on, to the targets its parent's send
    /// snapshotted for this relay (`plan`).
    pub(crate) fn planned(core: &'a Core, envelope: &Envelope, plan: Plan) -> Self {
        Delivery::new(core, core.prepare_planned(envelope, plan))
    }

    /// Sends a message received elsewhere (a parent or a forwarding source) into `core`:
    /// same value, type and origin, a new message id here. With `wait == false` nobody
    /// waits for this relay's tracked handlers (they still process it).
    pub(crate) fn forwarded(core: &'a Core, envelope: &Envelope, wait: bool) -> Self {
        let outgoing = core.prepare(
            envelope.value.clone(),
            envelope.type_id(),
            Some(envelope.type_name),
            From::Relay(envelope.origin),
            wait,
        );
        Delivery::new(core, outgoing)
    }
}

impl<C> Delivery<'_, C> {
    /// A send refused before it had a relay to go to.
    pub(crate) fn failed(error: SendError) -> Self {
        Delivery {
            state: State::Failed(error),
        }
    }
}

// Nothing is pinned in place: every state is moved freely.
impl<C> Unpin for Delivery<'_, C> {}

impl<'a, C> Future for Delivery<'a, C>
where
    C: Deref<Target = Core> + Clone + Send + Sync + 'a,
{
    type Output = Result<Receipt, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.get_mut().state;
        if let State::Start(..) = state {
            // The common path, apart from the loop so that it moves as little as it can:
            // an untracked send whose queues all had room ends in this first poll.
            if let State::Start(core, outgoing) = std::mem::replace(state, State::Unwound) {
                match core.push_ready(outgoing) {
                    Pushed::Done {
                        tally,
                        tracker: None,
                    } if !tally.crowded => {
                        *state = State::Done(tally.receipt);
                        return Poll::Ready(Ok(tally.receipt));
                    }
                    other => *state = started(core, other),
                }
            }
        }
        loop {
            // Each arm takes the state by value and puts back what is still pending, so a
            // finished delivery (or one whose poll unwound) is left `Finished`.
            let next = match std::mem::replace(state, State::Unwound) {
                // Left before the loop; kept whole all the same.
                State::Start(core, outgoing) => {
                    let pushed = core.push_ready(outgoing);
                    started(core, pushed)
                }
                State::Failed(error) => State::Finished(Err(error)),
                State::Rest(core, mut rest) => match rest.as_mut().poll(cx) {
                    Poll::Ready((tally, tracker)) => pushed(core, tally, tracker),
                    Poll::Pending => {
                        *state = State::Rest(core, rest);
                        return Poll::Pending;
                    }
                },
                State::Yield(core, receipt, tracker) => {
                    // Broadcast never waits for room, but a producer that never yields can
                    // starve a consumer on the same worker until its queue overflows. Once
                    // a queue is half full, give the scheduler one turn.
                    cx.waker().wake_by_ref();
                    *state = match tracker {
                        Some(tracker) => State::Wait(core, receipt, tracker, None, None),
                        None => State::Done(receipt),
                    };
                    return Poll::Pending;
                }
                State::Wait(core, receipt, tracker, mut listener, mut waiting) => {
                    match tracker.poll_wait(&mut listener, cx) {
                        Poll::Ready(verdict) => State::Finished(verdict.map(|()| receipt)),
                        Poll::Pending => match waiting.as_ref().and_then(Waiting::broken) {
                            // On a cycle of waits: stop waiting. The message stays queued
                            // for its handlers, who process it when they get to it.
                            Some(cycle) => {
                                core.deadlock_broken();
                                State::Finished(Err(SendError::WouldDeadlock(WouldDeadlock::new(
                                    receipt.msg_id,
                                    cycle,
                                ))))
                            }
                            None => {
                                // A wait of the relay's task polling it (if any): the
                                // deadlock check sees it, and may break it and wake us.
                                let on = || On::Handlers(tracker.clone());
                                Waiting::refresh(&mut waiting, on, cx);
                                *state = State::Wait(core, receipt, tracker, listener, waiting);
                                return Poll::Pending;
                            }
                        },
                    }
                }
                State::Done(receipt) => {
                    *state = State::Done(receipt);
                    return Poll::Ready(Ok(receipt));
                }
                State::Finished(result) => {
                    *state = State::Finished(result.clone());
                    return Poll::Ready(result);
                }
                State::Unwound => return Poll::Ready(Err(SendError::Closed)),
            };
            *state = next;
        }
    }
}

/// What follows the first poll's push: the boxed rest of a blocked lossless send, or what
/// follows the pushing.
fn started<'a, C>(core: C, pushed: Pushed) -> State<'a, C>
where
    C: Deref<Target = Core> + Clone + Send + Sync + 'a,
{
    match pushed {
        Pushed::Done { tally, tracker } => self::pushed(core, tally, tracker),
        Pushed::Blocked(blocked) => {
            let pushing = core.clone();
            State::Rest(
                core,
                Box::pin(async move { pushing.deliver_rest(blocked).await }),
            )
        }
    }
}

/// What follows the pushing: yield once if a queue is crowded, then wait for the tracker
/// if there is one, else finish.
fn pushed<'a, C>(core: C, tally: Tally, tracker: Option<Arc<Tracker>>) -> State<'a, C> {
    match (tally.crowded, tracker) {
        (true, tracker) => State::Yield(core, tally.receipt, tracker),
        (false, Some(tracker)) => State::Wait(core, tally.receipt, tracker, None, None),
        (false, None) => State::Done(tally.receipt),
    }
}

impl<C> fmt::Debug for Delivery<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start(..) => "start",
            State::Failed(_) => "failed",
            State::Rest(..) => "waiting for room",
            State::Yield(..) => "yielding",
            State::Wait(..) => "waiting for handlers",
            State::Done(_) | State::Finished(_) => "finished",
            State::Unwound => "unwound",
        };
        f.debug_struct("Delivery").field("state", &state).finish()
    }
}
