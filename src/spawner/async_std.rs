use super::{BoxFuture, Spawner};

/// Runs tasks on async-std's global executor (`async_std::task::spawn`).
///
/// async-std is discontinued upstream; it stays supported for existing applications.
/// New code should prefer smol (the default feature).
///
/// # Examples
///
/// ```
/// use pipedream_rs::{AsyncStdSpawner, Relay};
/// let (tx, rx) = Relay::builder().spawner(AsyncStdSpawner).build().unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
pub struct AsyncStdSpawner;

impl Spawner for AsyncStdSpawner {
    fn spawn(&self, task: BoxFuture) {
        // The JoinHandle is dropped: async-std detaches the task.
        drop(async_std::task::spawn(task));
    }

    fn name(&self) -> &'static str {
        "async-std"
    }
}
