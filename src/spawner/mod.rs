//! The [`Spawner`] trait: how the relay starts its handler and forwarder tasks.
//!
//! pipedream-rs never picks an executor behind your back: every task it starts goes
//! through a `Spawner`. The runtime features each provide one ([`SmolSpawner`],
//! [`TokioSpawner`], [`AsyncStdSpawner`]); any other executor works through the trait,
//! or through a plain closure (`Fn(BoxFuture)` implements `Spawner`).
//!
//! # Which spawner runs a task
//!
//! Decided for each task when it is registered (`sink`, `tap`, `within`, a derived relay's
//! forwarder, `merge`), first match wins:
//!
//! | | the relay was built with | the task is registered | its spawner |
//! |---|---|---|---|
//! | 1 | [`RelayBuilder::spawner`](crate::RelayBuilder::spawner) | anywhere | the one given (derived relays too) |
//! | 2 | no spawner | inside a tokio runtime (feature `tokio`) | that runtime |
//! | 3 | no spawner | inside an async-std task (feature `async-std`) | async-std |
//! | 4 | no spawner, inside a tokio runtime or async-std task | outside any runtime | the runtime it was built in |
//! | 5 | no spawner, outside any runtime, feature `tokio` | outside any runtime | pipedream's own tokio runtime (a thread named `pipedream-tokio`) |
//! | 6 | same, no `tokio`, feature `smol` | outside any runtime | smol's global executor |
//! | 7 | same, only `async-std` | outside any runtime | async-std's global executor |
//! | 8 | no spawner, no runtime feature | — | none: [`RelayBuilder::build`](crate::RelayBuilder::build) returns [`BuildError::NoSpawner`](crate::BuildError::NoSpawner) |
//!
//! So a handler registered from tokio code runs on that tokio runtime whatever else is
//! enabled, and with the `tokio` feature on, no task lands on an executor tokio code
//! cannot run on: smol and async-std code runs on any executor, tokio code only inside a
//! tokio runtime. The relay's `Debug` output names its fallback spawner.
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

    /// A short name for the executor, shown by the relays' `Debug` output (and, with the
    /// `tracing` feature, on their tasks' spans). `"custom"` unless overridden.
    ///
    /// # Examples
    ///
    /// ```
    /// use pipedream_rs::{BoxFuture, Spawner};
    /// struct Mine;
    /// impl Spawner for Mine {
    ///     fn spawn(&self, task: BoxFuture) { drop(task) }
    ///     fn name(&self) -> &'static str { "mine" }
    /// }
    /// assert_eq!(Mine.name(), "mine");
    /// assert_eq!((|t: BoxFuture| drop(t)).name(), "custom");
    /// ```
    fn name(&self) -> &'static str {
        "custom"
    }
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

pub(crate) mod choice;
