use super::{BoxFuture, Spawner};
use tokio::runtime::Handle;

/// Runs tasks on a tokio runtime, through a [`Handle`] it holds.
///
/// Because it keeps the handle, it works when called from outside the runtime's context
/// (from a plain thread, or from another executor).
///
/// # Examples
///
/// ```
/// use pipedream_rs::{Relay, TokioSpawner};
/// let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
/// // Built outside the runtime: give the spawner the runtime's handle.
/// let (tx, rx) = Relay::builder()
///     .spawner(TokioSpawner::new(rt.handle().clone()))
///     .build()
///     .unwrap();
/// rx.sink::<u8>(|_| ());
/// futures::executor::block_on(tx.send(1u8)).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    /// A spawner on the runtime `handle` belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let spawner = pipedream_rs::TokioSpawner::new(rt.handle().clone());
    /// # drop(spawner);
    /// ```
    pub fn new(handle: Handle) -> Self {
        TokioSpawner { handle }
    }

    /// A spawner on the runtime the caller is running in, or `None` outside any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(pipedream_rs::TokioSpawner::try_current().is_none());
    /// ```
    pub fn try_current() -> Option<Self> {
        Handle::try_current().ok().map(Self::new)
    }
}

impl Spawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture) {
        drop(self.handle.spawn(task));
    }
}
