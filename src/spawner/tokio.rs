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
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub struct TokioSpawner {
    handle: Handle,
    /// The runtime is pipedream's own (see `own_runtime`).
    own: bool,
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
        TokioSpawner { handle, own: false }
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

impl TokioSpawner {
    /// pipedream's own runtime, for tasks registered outside any runtime when the `tokio`
    /// feature is on (SEMANTICS.md §10): one current-thread runtime for the process, with
    /// every driver tokio was built with, on a thread named `pipedream-tokio`, started the
    /// first time it is needed and never stopped. `None` if it could not be started.
    pub(crate) fn own_runtime() -> Option<Self> {
        static OWN: std::sync::OnceLock<Option<Handle>> = std::sync::OnceLock::new();
        let handle = OWN.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("pipedream-tokio".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        });
        handle
            .clone()
            .map(|handle| TokioSpawner { handle, own: true })
    }
}

impl Spawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture) {
        drop(self.handle.spawn(task));
    }

    fn name(&self) -> &'static str {
        if self.own {
            "tokio (pipedream-tokio thread)"
        } else {
            "tokio"
        }
    }
}
