use super::{BoxFuture, Spawner};

/// Runs tasks on smol's global executor (`smol::spawn(..).detach()`).
///
/// smol's global executor drives itself on its own threads, so this spawner works from
/// any thread, inside or outside `smol::block_on`.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{Relay, SmolSpawner};
/// let (tx, rx) = Relay::builder().spawner(SmolSpawner).build().unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
pub struct SmolSpawner;

impl Spawner for SmolSpawner {
    fn spawn(&self, task: BoxFuture) {
        smol::spawn(task).detach();
    }

    fn name(&self) -> &'static str {
        "smol"
    }
}
