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
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use pipedream_rs::{
    BoxFuture, DeliveryMode, HandlerGone, HandlerKind, Receipt, Relay, RelayError, RelayReceiver,
    RelaySender, SendError, Spawner, Subscription,
};

/// Every test body must finish within this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `body` on smol. Relays built here use smol's global executor unless the `tokio`
/// feature is on too: then pipedream's own tokio runtime (SEMANTICS.md §10), which is why
/// `.ci/run` also runs every test with each runtime feature alone.
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

/// Spawns `fut` as a task of the runtime the caller is running on (tokio, async-std or smol,
/// whichever context is current) and returns a future of its output. If the task panics, the
/// returned future panics too.
pub fn spawn<F>(fut: F) -> impl Future<Output = F::Output> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    let task = async move {
        let _ = tx.send(fut.await);
    };
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        drop(handle.spawn(task));
    } else if async_std::task::try_current().is_some() {
        drop(async_std::task::spawn(task));
    } else {
        smol::spawn(task).detach();
    }
    async move { rx.await.expect("a spawned test task panicked") }
}

/// Polls `cond` every millisecond until it holds, failing the test with `what` after `dur`.
pub async fn wait_until(dur: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(dur, what, async {
        while !cond() {
            sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// A one-shot gate: every `wait` blocks until `open` is called, then returns at once.
#[derive(Clone, Debug)]
pub struct Gate {
    tx: async_channel::Sender<()>,
    rx: async_channel::Receiver<()>,
}

impl Gate {
    pub fn new() -> Self {
        let (tx, rx) = async_channel::bounded(1);
        Gate { tx, rx }
    }

    pub fn open(&self) {
        self.tx.close();
    }

    pub fn is_open(&self) -> bool {
        self.tx.is_closed()
    }

    pub async fn wait(&self) {
        // Nothing is ever sent: `recv` returns (with an error) exactly when the gate opens.
        let _ = self.rx.recv().await;
    }
}

/// Receives until the end, bounded.
pub async fn drain<T: std::any::Any + Send + Sync + Clone>(sub: &mut Subscription<T>) -> Vec<T> {
    /// Long enough for any subscription to end; only reached when something hangs.
    const BOUND: Duration = Duration::from_secs(10);
    within(BOUND, "subscription drained to its end", async {
        let mut got = Vec::new();
        while let Some(v) = sub.recv().await {
            got.push((*v).clone());
        }
        got
    })
    .await
}

/// The one error of a send that failed downstream; any other result fails the test.
pub fn downstream(result: Result<Receipt, SendError>) -> RelayError {
    match result {
        Err(SendError::Downstream(e)) => e,
        other => panic!("expected SendError::Downstream, got {other:?}"),
    }
}

/// Asserts that a send failed with `HandlerGone` from a handler of this `kind`.
pub fn handler_gone(result: Result<Receipt, SendError>, kind: HandlerKind) {
    match result {
        Err(SendError::Downstream(e)) => {
            assert!(e.downcast_ref::<HandlerGone>().is_some(), "{e}");
            assert_eq!(e.kind, kind, "{e}");
        }
        other => panic!("expected HandlerGone, got {other:?}"),
    }
}

/// A lossless relay with queues of `size`.
pub fn lossless(size: usize) -> (RelaySender, RelayReceiver) {
    Relay::builder()
        .channel_size(size)
        .delivery_mode(DeliveryMode::Lossless)
        .build()
        .unwrap()
}

/// (relay id, handler kind, is panic): what a model knows of one failure.
pub type Failure = (u64, String, bool);

/// What a model knows of the failure `e` reports.
pub fn failure_of(e: &RelayError) -> Failure {
    (e.relay_id, e.kind.to_string(), e.is_panic())
}

/// Panics a test binary provokes on purpose (whose message contains `intended`) stay out
/// of the test output. The first call in a binary installs the hook; later calls do nothing.
pub fn quiet_intended_panics(intended: &'static str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains(intended) {
                previous(info);
            }
        }));
    });
}

/// A task body that panics with `message`.
pub async fn explode(message: &str) {
    panic!("{message}");
}

/// Returns `Pending` once, after asking to be woken, then `Ready`: lets other tasks
/// interleave. (futures-lite's, through smol; it needs no runtime.)
pub fn yield_now() -> impl Future<Output = ()> {
    smol::future::yield_now()
}

/// A spawner that holds every task it is given, running none, until `drop_all` throws
/// them away.
#[derive(Clone, Default)]
pub struct DroppingLater(Arc<Mutex<Vec<BoxFuture>>>);

impl Spawner for DroppingLater {
    fn spawn(&self, task: BoxFuture) {
        self.0.lock().unwrap().push(task);
    }
}

impl DroppingLater {
    pub fn drop_all(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap());
        drop(tasks);
    }
}

// ----- three message types, chosen at run time (properties.rs, soak.rs) ---------------------

/// Which of a test's three message types, `A`, `B` or `C`, a random program uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    A,
    B,
    C,
}

/// Runs `$body` with `$T` the Rust type of `$ty`: the types `A`, `B` and `C` in scope where
/// the macro is used (each test file defines its own).
#[macro_export]
macro_rules! with_ty {
    ($ty:expr, $T:ident => $body:expr) => {
        match $ty {
            common::Ty::A => {
                type $T = A;
                $body
            }
            common::Ty::B => {
                type $T = B;
                $body
            }
            common::Ty::C => {
                type $T = C;
                $body
            }
        }
    };
}

/// A server binary for the bridge tests (`$var`, else `name`), or `None` with the
/// reason printed, so a plain `cargo test` without it stays green; with
/// `PIPEDREAM_REQUIRE_SERVERS` set (by `.ci/run`) a missing binary fails the test.
pub fn server_binary(var: &str, name: &str) -> Option<String> {
    let binary = std::env::var(var).unwrap_or_else(|_| name.to_owned());
    let found = std::process::Command::new(&binary)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if found {
        return Some(binary);
    }
    let reason = format!("{binary} not found (apt-get install -y {name})");
    if std::env::var_os("PIPEDREAM_REQUIRE_SERVERS").is_some() {
        panic!("PIPEDREAM_REQUIRE_SERVERS is set, but {reason}");
    }
    eprintln!("skipped: {reason}");
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long a bridge test waits for one step.
pub const STEP: Duration = Duration::from_secs(10);

/// Polls `check` until it holds, failing with `what` after [`STEP`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + STEP;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// The next `RelayError` of kind `Bridge` whose error is a `BridgeError`.
#[cfg(any(feature = "nats", feature = "redis"))]
pub async fn next_bridge_error(
    errors: &mut Subscription<RelayError>,
) -> pipedream_rs::bridge::BridgeError {
    loop {
        let error = within(STEP, "a bridge error", errors.recv()).await.unwrap();
        if error.kind != HandlerKind::Bridge {
            continue;
        }
        if let Some(e) = error
            .error
            .downcast_ref::<pipedream_rs::bridge::BridgeError>()
        {
            return e.clone();
        }
    }
}

/// A bridge frame as SEMANTICS.md §17 documents it, built by hand.
pub fn frame(origin: u64, msg_id: u64, name: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"PD\x01\x00".to_vec();
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&msg_id.to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(payload);
    out
}
