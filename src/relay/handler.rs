//! Tracked handlers (`sink`, `tap`) and `within` tasks: running user code on the relay's
//! spawner, with errors and panics turned into [`RelayError`]s.

use std::any::Any;
use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures::future::{AbortHandle, AbortRegistration, Abortable, Aborted};
use futures::FutureExt;

use crate::core::deadlock::{InNode, Node};
use crate::core::lost::{Guarded, Identity};
use crate::core::tasks::Tasks;
use crate::core::trace::Work;
use crate::core::Core;
use crate::relay::config::{Config, PanicMode};
use crate::relay::error::{HandlerKind, PanicError, SharedError, TaskAborted};
use crate::relay::task_handle::{task_error, TaskEnd, TaskHandle};
use crate::relay::tracked_subscription::TrackedSubscription;

/// What a handler may return: `()` (it always succeeds) or `Result<(), E>`.
///
/// `E` is any error that converts into `Box<dyn Error + Send + Sync>`: every
/// `std::error::Error + Send + Sync` type, `Box<dyn Error + Send + Sync>` itself,
/// `anyhow::Error`, `String` and `&'static str`. The error reaches the sender as the
/// [`source`](std::error::Error::source) of a [`RelayError`](crate::RelayError).
///
/// # Examples
///
/// ```
/// use pipedream_rs::HandlerResult;
/// assert!(().into_result().is_ok());
/// let failed: Result<(), std::io::Error> = Err(std::io::Error::other("disk full"));
/// assert_eq!(failed.into_result().unwrap_err().to_string(), "disk full");
/// let text: Result<(), String> = Err(String::from("no such user"));
/// assert_eq!(text.into_result().unwrap_err().to_string(), "no such user");
/// ```
pub trait HandlerResult: Send + 'static {
    /// `Ok(())`, or the error as a [`SharedError`].
    fn into_result(self) -> Result<(), SharedError>;
}

impl HandlerResult for () {
    fn into_result(self) -> Result<(), SharedError> {
        Ok(())
    }
}

impl<E> HandlerResult for Result<(), E>
where
    E: Into<Box<dyn StdError + Send + Sync + 'static>> + Send + 'static,
{
    fn into_result(self) -> Result<(), SharedError> {
        self.map_err(|e| SharedError::from(e.into()))
    }
}

/// A synchronous handler for messages of type `T`: any `FnMut(&T) -> R` closure where `R`
/// is a [`HandlerResult`] (`()` or `Result<(), E>`).
///
/// You never implement this trait: every such closure has it. It exists so that
/// [`sink`](crate::RelayReceiver::sink) and [`tap`](crate::RelayReceiver::tap) name only the
/// message type (`rx.sink::<Order>(|order| ..)`) and the compiler still infers the closure's
/// argument and return types.
///
/// The closure is `FnMut`: a handler processes one message at a time, on one task, so it
/// may keep state without a `Mutex`. It must be `Send` (its task may move between threads)
/// but not `Sync`: nothing ever calls it from two threads at once.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let mut seen = 0u32; // plain state: the handler is FnMut
/// rx.sink::<u32>(move |n| {
///     seen += n;
///     if seen > 10 { Err(format!("total {seen} is over 10")) } else { Ok(()) }
/// });
/// assert!(tx.send(4u32).await.is_ok());
/// assert!(tx.send(9u32).await.is_err()); // 13 > 10
/// # });
/// ```
///
/// A handler may capture a value that is `Send` but not `Sync`, such as a
/// [`Cell`](std::cell::Cell):
///
/// ```
/// # futures::executor::block_on(async {
/// use std::cell::Cell;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let calls = Cell::new(0u32); // Send, not Sync
/// rx.sink::<u8>(move |_| {
///     calls.set(calls.get() + 1);
///     if calls.get() > 1 { Err("only one message is expected") } else { Ok(()) }
/// });
/// assert!(tx.send(1u8).await.is_ok());
/// assert!(tx.send(2u8).await.is_err());
/// # });
/// ```
pub trait Handler<T>: FnMut(&T) -> <Self as Handler<T>>::Output + Send + 'static {
    /// What the closure returns.
    type Output: HandlerResult;
}

impl<T, R, F> Handler<T> for F
where
    F: FnMut(&T) -> R + Send + 'static,
    R: HandlerResult,
{
    type Output = R;
}

/// An asynchronous handler for messages of type `T`: any `FnMut(Arc<T>) -> Fut` closure
/// whose future is `Send + 'static` and resolves to a [`HandlerResult`].
///
/// As with [`Handler`], you never implement it; it lets
/// [`sink_async`](crate::RelayReceiver::sink_async) name only the message type. The closure
/// is called once per message and its future is awaited before the next message is taken,
/// so one message is processed at a time; the closure may keep state (`FnMut`), and it
/// needs `Send` but not `Sync`.
///
/// Why not `Sync`: the closure is owned by its handler's one task and called for one
/// message at a time, never from two threads at once; the task may move between threads
/// between messages, which is what `Send` is for. The future must be `Send` too (it is
/// polled on that task), but it is owned, never shared, so it need not be `Sync` either.
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// rx.sink_async::<String>(|line: Arc<String>| async move {
///     if line.is_empty() { Err("empty line") } else { Ok(()) }
/// });
/// assert!(tx.send(String::from("hello")).await.is_ok());
/// assert!(tx.send(String::new()).await.is_err());
/// # });
/// ```
///
/// State without a `Mutex`: the closure owns it and updates it when it is called. The
/// future it returns is `'static`, so it cannot borrow that state; the closure moves what
/// the future needs into it (here, the running total):
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let mut total = 0u32; // plain state: the closure is FnMut
/// rx.sink_async::<u32>(move |n: Arc<u32>| {
///     total += *n;
///     let so_far = total;
///     async move {
///         if so_far > 10 { Err(format!("total {so_far} is over 10")) } else { Ok(()) }
///     }
/// });
/// assert!(tx.send(4u32).await.is_ok());
/// assert!(tx.send(9u32).await.is_err()); // 13 > 10
/// # });
/// ```
///
/// A non-`Sync` capture is accepted, for the reason above. A
/// [`RefCell`](std::cell::RefCell) is `Send` but not `Sync`:
///
/// ```
/// # futures::executor::block_on(async {
/// use std::cell::RefCell;
/// use std::collections::HashSet;
/// use std::sync::Arc;
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let seen = RefCell::new(HashSet::new()); // Send, not Sync
/// rx.sink_async::<String>(move |id: Arc<String>| {
///     let fresh = seen.borrow_mut().insert(id.to_string());
///     async move { if fresh { Ok(()) } else { Err(format!("duplicate {id}")) } }
/// });
/// assert!(tx.send(String::from("a-1")).await.is_ok());
/// assert!(tx.send(String::from("a-1")).await.is_err());
/// # });
/// ```
pub trait AsyncHandler<T>:
    FnMut(Arc<T>) -> <Self as AsyncHandler<T>>::Future + Send + 'static
{
    /// The future the closure returns.
    type Future: Future<Output = <Self as AsyncHandler<T>>::Output> + Send + 'static;
    /// What the future resolves to.
    type Output: HandlerResult;
}

impl<T, Fut, F> AsyncHandler<T> for F
where
    F: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    type Future = Fut;
    type Output = Fut::Output;
}

/// Registers a tracked subscription for `T` now (so every later send waits for it), then
/// starts the task that feeds it to `process`, one message at a time, in order.
pub(crate) fn start_handler<T, P, Fut>(
    core: &Weak<Core>,
    config: &Config,
    tasks: &Arc<Tasks>,
    kind: HandlerKind,
    mut process: P,
) where
    T: Any + Send + Sync,
    P: FnMut(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), SharedError>> + Send,
{
    let mut sub = TrackedSubscription::<T>::new(core, kind);
    let panic_mode = config.panic_mode;
    // Reported as lost if the task ends before the relay does (its runtime shuts down, the
    // spawner drops it, a propagated panic); its registration goes with it.
    let who = Identity {
        core: core.clone(),
        subscriber_id: sub.id(),
        kind,
        type_name: std::any::type_name::<T>(),
        abort: None,
    };
    let relay_id = core.upgrade().map_or(0, |core| core.id);
    let task = async move {
        let node = Node::handler(sub.id());
        while let Some(msg) = sub.recv().await {
            let value = msg.value().clone();
            // `process` is called inside the caught future, so a sync handler's panic is
            // caught too, not only an async one's. `InNode` names this handler to the sends
            // it makes (deadlock detection, `core/deadlock.rs`); `Work` is its span.
            let span = Work::of(kind, relay_id, sub.id(), msg.envelope());
            let work = span.run(InNode::new(node.clone(), async { process(value).await }));
            let outcome = AssertUnwindSafe(work).catch_unwind().await;
            let mut panicked = None;
            // Settling drops the handler's copy of the message, and with it, if it was the
            // last one, the value: a `Drop` that panics must not end the handler. The
            // sender has its verdict by then; the panic is published as a `RelayError`.
            let reporter = msg.reporter();
            let settled = span.enter(|| {
                std::panic::catch_unwind(AssertUnwindSafe(|| match outcome {
                    Ok(Ok(())) => msg.complete(),
                    Ok(Err(error)) => msg.fail_with(error),
                    Err(payload) => {
                        msg.fail_with(Arc::new(PanicError::from_payload(&*payload)));
                        panicked = Some(payload);
                    }
                }))
            });
            if let Err(payload) = settled {
                reporter.report(Arc::new(PanicError::dropping(&*payload)));
                panicked.get_or_insert(payload);
            }
            if let (Some(payload), PanicMode::Propagate) = (panicked, panic_mode) {
                std::panic::resume_unwind(payload);
            }
        }
    };
    tasks.spawn(&*config.spawner.here(), Guarded::new(who, task));
}

/// Runs `f()` as a task; its failure (error or panic) is published as a `RelayError` event
/// and handed to the returned [`TaskHandle`]. `abort` is the pair the handle stops it with.
pub(crate) fn start_within<F, Fut>(
    core: &Weak<Core>,
    relay_id: u64,
    config: &Config,
    tasks: &Arc<Tasks>,
    abort: (AbortHandle, AbortRegistration),
    f: F,
) -> TaskHandle
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    let (end, handle) = TaskHandle::new(relay_id, abort);
    let core = core.clone();
    let panic_mode = config.panic_mode;
    tasks.spawn(&*config.spawner.here(), async move {
        let TaskEnd {
            registration,
            outcome: handed,
        } = end;
        let work = AssertUnwindSafe(async move { f().await.into_result() }).catch_unwind();
        let outcome = match Abortable::new(work, registration).await {
            Ok(outcome) => outcome,
            Err(Aborted) => {
                // Asked for: the handle's result, and nothing else.
                handed.send(Err(task_error(relay_id, Arc::new(TaskAborted))));
                return;
            }
        };
        let (result, payload) = match outcome {
            Ok(result) => (result, None),
            Err(payload) => (
                Err(Arc::new(PanicError::from_payload(&*payload)) as SharedError),
                Some(payload),
            ),
        };
        let result = result.map_err(|error| {
            let error = task_error(relay_id, error);
            if let Some(core) = core.upgrade() {
                core.report(None, error.clone());
            }
            error
        });
        handed.send(result);
        if let (Some(payload), PanicMode::Propagate) = (payload, panic_mode) {
            std::panic::resume_unwind(payload);
        }
    });
    handle
}
