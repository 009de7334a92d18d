//! [`Choice`]: which spawner runs each of a relay's tasks (SEMANTICS.md §10).
//!
//! The rule, first match wins:
//!
//! 1. the spawner given to the builder, for every task of the relay and of the relays
//!    derived from it;
//! 2. the runtime of the code that registers the task (`sink`, `tap`, `within`, deriving,
//!    `merge`): inside a tokio runtime, that runtime (feature `tokio`); inside an
//!    async-std task, async-std (feature `async-std`);
//! 3. the relay's fallback, fixed when it was built: the runtime of the code that built it
//!    (as in 2), else pipedream's own tokio runtime (feature `tokio`), else smol's global
//!    executor (feature `smol`), else async-std's (feature `async-std`), else none
//!    (`BuildError::NoSpawner`).
//!
//! Why the tokio feature outranks smol outside any runtime: code written for smol or
//! async-std runs on any executor (their timers and I/O have their own reactor thread),
//! but tokio code needs a tokio runtime around it (`tokio::time::sleep` panics without
//! one). So enabling `tokio` never leaves a handler on an executor it cannot run on.

use std::sync::Arc;

use super::Spawner;

/// The spawners a relay chooses from.
///
/// Invariant: when `given`, `fallback` is the builder's spawner and every task uses it;
/// otherwise `fallback` was chosen by rule 3 when the relay was built, and each task
/// prefers the runtime around its registration (rule 2). Derived relays copy it.
#[derive(Clone)]
pub(crate) struct Choice {
    fallback: Arc<dyn Spawner>,
    given: bool,
}

impl Choice {
    /// The builder's spawner: used for everything.
    pub(crate) fn given(spawner: Arc<dyn Spawner>) -> Self {
        Choice {
            fallback: spawner,
            given: true,
        }
    }

    /// Rules 2 and 3 for a relay built now; `None` if no runtime feature applies.
    pub(crate) fn by_rule() -> Option<Self> {
        let fallback = in_context().or_else(outside_any_runtime)?;
        Some(Choice {
            fallback,
            given: false,
        })
    }

    /// The spawner for a task registered now, from the calling context.
    pub(crate) fn here(&self) -> Arc<dyn Spawner> {
        if self.given {
            return self.fallback.clone();
        }
        in_context().unwrap_or_else(|| self.fallback.clone())
    }

    /// How `Debug` shows it.
    pub(crate) fn describe(&self) -> String {
        if self.given {
            format!("{} (given)", self.fallback.name())
        } else {
            format!(
                "{} unless registered inside another runtime",
                self.fallback.name()
            )
        }
    }
}

/// Rule 2: the runtime the caller runs in, if it is one a feature knows.
fn in_context() -> Option<Arc<dyn Spawner>> {
    #[cfg(feature = "tokio")]
    if let Some(s) = super::TokioSpawner::try_current() {
        return Some(Arc::new(s));
    }
    #[cfg(feature = "async-std")]
    if ::async_std::task::try_current().is_some() {
        return Some(Arc::new(super::AsyncStdSpawner));
    }
    None
}

/// The end of rule 3: no runtime around the caller.
fn outside_any_runtime() -> Option<Arc<dyn Spawner>> {
    #[cfg(feature = "tokio")]
    if let Some(s) = super::tokio::TokioSpawner::own_runtime() {
        return Some(Arc::new(s));
    }
    #[cfg(feature = "smol")]
    return Some(Arc::new(super::SmolSpawner));
    #[cfg(all(feature = "async-std", not(feature = "smol")))]
    return Some(Arc::new(super::AsyncStdSpawner));
    #[allow(unreachable_code)]
    None
}
