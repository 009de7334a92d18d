//! The synchronisation primitives the crate's shared state uses: std's, or loom's in a
//! `--cfg loom` build, so the loom models in `core/loom_models.rs` explore every interleaving
//! of the real code (the pattern tokio and concurrent-queue use).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};
