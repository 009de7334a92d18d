use super::{BoxFuture, Spawner};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// first time it is needed and never stopped. Should that thread ever end (it only
    /// could by a panic outside any task: tokio catches the tasks'), the next call starts
    /// a new one instead of handing out a dead runtime. `None` if none could be started.
    /// (A task spawned while a dying runtime shuts down, before its thread is marked
    /// ended, is dropped by tokio and reported lost, like any task a spawner refuses.)
    pub(crate) fn own_runtime() -> Option<Self> {
        /// The runtime's handle, and whether its thread still runs it.
        static OWN: std::sync::Mutex<Option<(Handle, Arc<AtomicBool>)>> =
            std::sync::Mutex::new(None);
        let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((handle, alive)) = own.as_ref() {
            if alive.load(Ordering::Acquire) {
                return Some(TokioSpawner {
                    handle: handle.clone(),
                    own: true,
                });
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let handle = runtime.handle().clone();
        let alive = Arc::new(AtomicBool::new(true));
        let gone = Gone(alive.clone());
        std::thread::Builder::new()
            .name("pipedream-tokio".into())
            .spawn(move || {
                // Declared first, so dropped last: after the runtime has shut down, when
                // the thread ends, however it ends.
                let _gone = gone;
                let runtime = runtime;
                runtime.block_on(std::future::pending::<()>())
            })
            .ok()?;
        *own = Some((handle.clone(), alive));
        Some(TokioSpawner { handle, own: true })
    }
}

/// Marks pipedream's own runtime thread as ended when dropped.
struct Gone(Arc<AtomicBool>);

impl Drop for Gone {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Spawner for TokioSpawner {
    fn spawn(&self, task: BoxFuture) {
        if self.own {
            // pipedream's own runtime is looked up at each spawn, so a relay built before
            // its thread ever ended spawns onto the replacement, not a dead handle.
            match Self::own_runtime() {
                Some(own) => drop(own.handle.spawn(task)),
                None => drop(task), // reported as lost, like any refused task
            }
        } else {
            drop(self.handle.spawn(task));
        }
    }

    fn name(&self) -> &'static str {
        if self.own {
            "tokio (pipedream-tokio thread)"
        } else {
            "tokio"
        }
    }
}
