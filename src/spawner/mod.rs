//! The [`Spawner`] trait: how the relay starts its handler and forwarder tasks.
//!
//! pipedream-rs never picks an executor behind your back: every task it starts goes
//! through a `Spawner`. The runtime features each provide one ([`SmolSpawner`],
//! [`TokioSpawner`], [`AsyncStdSpawner`]); any other executor works through the trait,
//! or through a plain closure (`Fn(BoxFuture)` implements `Spawner`).
//!
//! # Which spawner a relay uses
//!
//! [`RelayBuilder::spawner`](crate::RelayBuilder::spawner) wins when it is given. Otherwise,
//! when the relay is built, the first of these that applies is taken:
//!
//! 1. feature `tokio`, and the relay is built inside a tokio runtime: that runtime;
//! 2. feature `async-std`, and the relay is built inside an async-std task: async-std;
//! 3. feature `smol` (the default): smol's global executor;
//! 4. feature `async-std`: async-std's global executor;
//! 5. otherwise there is none: [`RelayBuilder::build`](crate::RelayBuilder::build) returns
//!    [`BuildError::NoSpawner`](crate::BuildError::NoSpawner) (and
//!    [`Relay::channel`](crate::Relay::channel) panics saying so).
//!
//! Features only add candidates, so enabling a second runtime never changes the choice for
//! code that already runs inside the first. Derived relays use their parent's spawner.
//!
//! # A spawner that refuses work
//!
//! A spawner may drop the future instead of running it. Nothing hangs: the task's tracked
//! subscription goes with it, so every send waiting on that handler fails with
//! [`HandlerGone`](crate::HandlerGone), and [`ready`](crate::RelayReceiver::ready) counts the
//! task as finished.

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what a [`Spawner`] is handed.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts a detached `'static + Send` task on some executor.
///
/// The trait is object-safe; relays keep an `Arc<dyn Spawner>`. A closure
/// `Fn(BoxFuture) + Send + Sync + 'static` is a spawner too.
///
/// # Examples
///
/// A spawner on `futures`' thread pool:
///
/// ```
/// use futures::executor::ThreadPool;
/// use pipedream_rs::{BoxFuture, Relay};
///
/// let pool = ThreadPool::new().unwrap();
/// let (tx, rx) = Relay::builder()
///     .spawner(move |task: BoxFuture| pool.spawn_ok(task))
///     .build()
///     .unwrap();
/// rx.sink::<u32>(|n| assert_eq!(*n, 7));
/// futures::executor::block_on(tx.send(7u32)).unwrap();
/// ```
pub trait Spawner: Send + Sync + 'static {
    /// Runs `task` to completion in the background, or drops it if it cannot.
    fn spawn(&self, task: BoxFuture);
}

impl<F> Spawner for F
where
    F: Fn(BoxFuture) + Send + Sync + 'static,
{
    fn spawn(&self, task: BoxFuture) {
        self(task)
    }
}

#[cfg(feature = "smol")]
mod smol;
#[cfg(feature = "smol")]
pub use self::smol::SmolSpawner;

#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tokio")]
pub use self::tokio::TokioSpawner;

#[cfg(feature = "async-std")]
mod async_std;
#[cfg(feature = "async-std")]
pub use self::async_std::AsyncStdSpawner;

/// The spawner a relay uses when the builder was not given one (see the module docs).
pub(crate) fn default_spawner() -> Option<std::sync::Arc<dyn Spawner>> {
    #[cfg(feature = "tokio")]
    if let Some(s) = TokioSpawner::try_current() {
        return Some(std::sync::Arc::new(s));
    }
    #[cfg(feature = "async-std")]
    if ::async_std::task::try_current().is_some() {
        return Some(std::sync::Arc::new(AsyncStdSpawner));
    }
    #[cfg(feature = "smol")]
    return Some(std::sync::Arc::new(SmolSpawner));
    #[cfg(all(feature = "async-std", not(feature = "smol")))]
    return Some(std::sync::Arc::new(AsyncStdSpawner));
    #[allow(unreachable_code)]
    None
}
