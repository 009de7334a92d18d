//! Tracked handlers (`sink`, `tap`) and `within` tasks: running user code on the relay's
//! spawner, with errors and panics turned into [`RelayError`]s.

use std::any::Any;
use std::error::Error as StdError;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures::FutureExt;

use crate::core::deadlock::InHandler;
use crate::core::tasks::Tasks;
use crate::core::Core;
use crate::relay::config::{Config, PanicMode};
use crate::relay::error::{BoxError, HandlerKind, PanicError, RelayError};
use crate::relay::task_handle::TaskHandle;
use crate::relay::tracked_subscription::TrackedSubscription;

/// What a handler may return: `()` (always succeeds) or `Result<(), E>` for any error type.
///
/// # Examples
///
/// ```
/// use pipedream_rs::HandlerResult;
/// assert!(().into_result().is_ok());
/// let failed: Result<(), std::io::Error> = Err(std::io::Error::other("disk full"));
/// assert_eq!(failed.into_result().unwrap_err().to_string(), "disk full");
/// ```
pub trait HandlerResult: Send + 'static {
    /// `Ok(())`, or the error as a shareable [`BoxError`].
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: StdError + Send + Sync + 'static> HandlerResult for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(|e| Arc::new(e) as BoxError)
    }
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
    Fut: Future<Output = Result<(), BoxError>> + Send,
{
    let unstarted = Unstarted(Some(TrackedSubscription::<T>::new(core, kind)));
    let panic_mode = config.panic_mode;
    tasks.spawn(&*config.spawner, async move {
        let mut sub = unstarted.start();
        let id = sub.id();
        while let Some(msg) = sub.recv().await {
            let value = msg.value().clone();
            // `process` is called inside the caught future, so a sync handler's panic is
            // caught too, not only an async one's. `InHandler` names this handler to any
            // tracked send it makes (deadlock detection).
            let work = InHandler::new(id, msg.blocked(), async { process(value).await });
            let outcome = AssertUnwindSafe(work).catch_unwind().await;
            match outcome {
                Ok(Ok(())) => msg.complete(),
                Ok(Err(error)) => msg.fail_with(error),
                Err(payload) => {
                    msg.fail_with(Arc::new(PanicError::from_payload(&*payload)));
                    if panic_mode == PanicMode::Propagate {
                        std::panic::resume_unwind(payload);
                    }
                }
            }
        }
    });
}

/// A handler's subscription until its task first runs. If the spawner drops the task
/// unpolled, the subscription stays registered with a closed queue, so every send to this
/// handler fails with `HandlerGone` instead of succeeding with nobody handling it.
struct Unstarted<T: Any + Send + Sync>(Option<TrackedSubscription<T>>);

impl<T: Any + Send + Sync> Unstarted<T> {
    fn start(mut self) -> TrackedSubscription<T> {
        self.0.take().expect("started once")
    }
}

impl<T: Any + Send + Sync> Drop for Unstarted<T> {
    fn drop(&mut self) {
        if let Some(sub) = &mut self.0 {
            sub.keep_registered();
        }
    }
}

/// Runs `f()` as a task; its failure (error or panic) is published as a `RelayError` event
/// and handed to the returned [`TaskHandle`].
pub(crate) fn start_within<F, Fut>(
    core: &Weak<Core>,
    relay_id: u64,
    config: &Config,
    tasks: &Arc<Tasks>,
    f: F,
) -> TaskHandle
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerResult,
{
    let (done, handle) = TaskHandle::new(relay_id);
    let core = core.clone();
    let panic_mode = config.panic_mode;
    tasks.spawn(&*config.spawner, async move {
        let outcome = AssertUnwindSafe(async move { f().await.into_result() })
            .catch_unwind()
            .await;
        let (result, payload) = match outcome {
            Ok(result) => (result, None),
            Err(payload) => (
                Err(Arc::new(PanicError::from_payload(&*payload)) as BoxError),
                Some(payload),
            ),
        };
        let result = result.map_err(|error| {
            let error = RelayError {
                msg_id: 0,
                relay_id,
                kind: HandlerKind::Within,
                type_name: "within",
                error,
            };
            if let Some(core) = core.upgrade() {
                core.report(None, error.clone());
            }
            error
        });
        let _ = done.send(result);
        if let (Some(payload), PanicMode::Propagate) = (payload, panic_mode) {
            std::panic::resume_unwind(payload);
        }
    });
    handle
}
