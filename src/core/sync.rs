//! The synchronisation primitives the crate's shared state uses: std's, or loom's in a
//! `--cfg loom` build, so the loom models in `loom_models.rs` explore every interleaving
//! of the real code (the pattern tokio and concurrent-queue use).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// A shared slot holding an optional `Arc<T>` that many threads read and a few replace:
/// `arc-swap`'s lock-free `ArcSwapOption`, or a loom mutex in loom builds (arc-swap's own
/// atomics and thread-local debt lists are invisible to loom).
///
/// Readers get a short-lived guard without touching the `Arc`'s reference count; the
/// writer that replaces a value waits for nothing and never blocks a reader.
pub(crate) struct Slot<T> {
    #[cfg(not(loom))]
    inner: arc_swap::ArcSwapOption<T>,
    #[cfg(loom)]
    inner: Mutex<Option<Arc<T>>>,
}

impl<T> Slot<T> {
    pub(crate) fn empty() -> Self {
        Slot {
            #[cfg(not(loom))]
            inner: arc_swap::ArcSwapOption::empty(),
            #[cfg(loom)]
            inner: Mutex::new(None),
        }
    }

    /// Runs `f` on the value now, without touching its reference count (arc-swap's
    /// guard). The value may be replaced while `f` runs: `f` sees the one it loaded, as a
    /// reader holding a stale guard does. In loom builds the value is cloned under the
    /// mutex and `f` runs after it is released, so loom explores that interleaving too.
    pub(crate) fn with<R>(&self, f: impl FnOnce(Option<&Arc<T>>) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.inner.load().as_ref());
        #[cfg(loom)]
        {
            let value = self.inner.lock().unwrap().clone();
            f(value.as_ref())
        }
    }

    /// A clone of the value now.
    pub(crate) fn get(&self) -> Option<Arc<T>> {
        self.with(|value| value.cloned())
    }

    /// Replaces the value, handing back the one it held.
    pub(crate) fn swap(&self, value: Option<Arc<T>>) -> Option<Arc<T>> {
        #[cfg(not(loom))]
        return self.inner.swap(value);
        #[cfg(loom)]
        return std::mem::replace(&mut *self.inner.lock().unwrap(), value);
    }
}
