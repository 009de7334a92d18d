//! The one test helper: run an async test body on every runtime whose feature is enabled,
//! bounded by a timeout so a hang fails fast.
//!
//! ```ignore
//! on_every_runtime! {
//!     async fn subscribers_get_their_type() { /* body */ }
//! }
//! ```
//! expands to a module `subscribers_get_their_type` with tests `smol`, `tokio` (multi-thread,
//! 2 workers) and `async_std`, each behind its feature.
#![allow(dead_code, unused_macros)]

use std::future::Future;
use std::time::Duration;

/// Every test body must finish within this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `body` on smol (the relay uses smol's global executor).
#[cfg(feature = "smol")]
pub fn run_smol<F: Future<Output = ()>>(body: F) {
    smol::block_on(async {
        if timeout(TEST_TIMEOUT, body).await.is_none() {
            panic!("test timed out after {TEST_TIMEOUT:?} (smol)");
        }
    })
}

/// Runs `body` inside a 2-worker tokio runtime (the relay picks tokio from the context).
#[cfg(feature = "tokio")]
pub fn run_tokio<F: Future<Output = ()>>(body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
            panic!("test timed out after {TEST_TIMEOUT:?} (tokio)");
        }
    })
}

/// Runs `body` in an async-std task (the relay picks async-std from the context).
#[cfg(feature = "async-std")]
pub fn run_async_std<F: Future<Output = ()>>(body: F) {
    async_std::task::block_on(async {
        if async_std::future::timeout(TEST_TIMEOUT, body)
            .await
            .is_err()
        {
            panic!("test timed out after {TEST_TIMEOUT:?} (async-std)");
        }
    })
}

/// `Some(output)` if `fut` finishes within `dur`, `None` otherwise. Works on any runtime
/// (the timer runs on async-io's own thread).
pub async fn timeout<F: Future>(dur: Duration, fut: F) -> Option<F::Output> {
    use futures::future::{select, Either};
    let fut = std::pin::pin!(fut);
    let timer = async_io::Timer::after(dur);
    match select(fut, timer).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `dur`.
pub async fn within<F: Future>(dur: Duration, what: &str, fut: F) -> F::Output {
    match timeout(dur, fut).await {
        Some(out) => out,
        None => panic!("timed out after {dur:?}: {what}"),
    }
}

/// Sleeps on any runtime.
pub async fn sleep(dur: Duration) {
    async_io::Timer::after(dur).await;
}

/// Defines each `async fn name() { .. }` as a test on every enabled runtime.
#[macro_export]
macro_rules! on_every_runtime {
    ($( $(#[$meta:meta])* async fn $name:ident() $body:block )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body() $body

            #[cfg(feature = "smol")]
            #[test]
            fn smol() {
                $crate::common::run_smol(body())
            }

            #[cfg(feature = "tokio")]
            #[test]
            fn tokio() {
                $crate::common::run_tokio(body())
            }

            #[cfg(feature = "async-std")]
            #[test]
            fn async_std() {
                $crate::common::run_async_std(body())
            }
        }
    )*};
}
