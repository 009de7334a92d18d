//! The pipedream-rs benchmark suite (issue 5): every workload, every peer, one binary.
//!
//! ```text
//! CARGO_TARGET_DIR=… cargo bench --features tokio --bench relay            # full run (~5–10 min)
//! PIPEDREAM_BENCH_QUICK=1 cargo bench --features tokio --bench relay      # CI smoke run (seconds)
//! cargo bench --features tokio --bench relay -- w1 w3                      # only some workloads
//! ```
//!
//! Custom timing loops (`std::time::Instant`), no harness: each case is run `reps` times,
//! interleaved with its peers (rep 1 of every system, then rep 2, …) so that noise from a
//! shared machine lands on every system alike. Raw samples go to a TSV file
//! (`docs/performance-data.tsv` by default for a full run; `PIPEDREAM_BENCH_OUT` or
//! `--out PATH` to choose; a quick run writes none unless asked) which
//! `tools/bench-report` turns into `docs/performance.md`.
//!
//! Runtimes: "smol" is smol's global executor with `SMOL_THREADS=2`; "tokio" is a
//! multi-thread runtime with 2 workers. In both, the producer itself is a spawned task,
//! so every workload runs on exactly two executor threads (the main thread only waits).
//! crossbeam-channel has no async API: its producer is a plain thread and each consumer
//! has a thread; it is measured in each runtime's pass, side by side with the others.
//!
//! Layout: this file holds what every workload shares (the counting allocator, the
//! message types, the runtimes, the sample collector) and `main`; each workload has its
//! own module, named for it (`w1.rs` fan-out, `w2.rs` routing, `w3.rs` tracked round
//! trips, `w4.rs` memory, `w5.rs` transformations, `w6.rs` scaling, `w7.rs` delivery
//! policies and request/response, `w8.rs` the NATS bridge (feature `nats`), `w9.rs` the Redis bridge (feature `redis`), `profile.rs` the
//! profiling entry points), and the peers of a workload live in its `peers` module
//! (`w1/peers.rs`, …), apart from pipedream's side.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Borrow;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pipedream_rs::{DeliveryMode, Relay, RelayBuilder, RelayReceiver, RelaySender, SmolSpawner};

// ------------------------------------------------------------------------------------
// Counting allocator (W4). Counts only while `COUNTING` is on, so the timing workloads
// pay one uncontended relaxed load per allocation and nothing else.
// ------------------------------------------------------------------------------------

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Heap bytes allocated (and not freed) while `f` ran; what `f` returns is kept alive
/// until after the count and handed back.
fn heap_delta<R>(f: impl FnOnce() -> R) -> (R, isize) {
    LIVE_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let r = f();
    COUNTING.store(false, Ordering::SeqCst);
    (r, LIVE_BYTES.load(Ordering::SeqCst))
}

// ------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------

/// The 32-byte payload of every workload.
#[derive(Clone, Copy, Debug, Default)]
struct Msg32 {
    a: u64,
    b: u64,
    c: u64,
    d: u64,
}

impl Msg32 {
    fn new(i: u64) -> Self {
        Msg32 {
            a: i,
            b: i ^ 0x5555,
            c: i.rotate_left(7),
            d: !i,
        }
    }
}

/// The per-message work of every consumer: read the whole message, fold it in.
#[inline]
fn mix(m: &Msg32) -> u64 {
    m.a ^ m.b ^ m.c ^ m.d
}

#[inline]
fn work(acc: u64, m: &Msg32) -> u64 {
    acc.wrapping_add(mix(m))
}

/// Distinct message types for routing (W2, W6): `Typed<0>`, `Typed<1>`, …
#[derive(Clone, Copy, Debug)]
struct Typed<const K: usize>(Msg32);

/// The peers' single channel type for W2: one enum, every subscriber discards the rest.
#[derive(Clone, Copy, Debug)]
enum Ev {
    A(Msg32),
    B(Msg32),
    C(Msg32),
    D(Msg32),
}

impl Ev {
    fn new(kind: usize, m: Msg32) -> Self {
        match kind {
            0 => Ev::A(m),
            1 => Ev::B(m),
            2 => Ev::C(m),
            _ => Ev::D(m),
        }
    }
    /// `Some(payload)` if this subscriber (`kind`) wants it.
    #[inline]
    fn wanted(&self, kind: usize) -> Option<&Msg32> {
        match (self, kind) {
            (Ev::A(m), 0) | (Ev::B(m), 1) | (Ev::C(m), 2) | (Ev::D(m), 3) => Some(m),
            _ => None,
        }
    }
}

/// Calls `$body` with `$k` bound as a const generic for the runtime value `$n` (< 64).
macro_rules! with_kind {
    ($n:expr, |$k:ident| $body:expr) => {
        with_kind!(@arms $n, $k, $body, [
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30
            31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57
            58 59 60 61 62 63
        ])
    };
    (@arms $n:expr, $k:ident, $body:expr, [$($lit:literal)*]) => {
        match $n {
            $( $lit => { const $k: usize = $lit; $body } )*
            other => panic!("kind {other} out of range"),
        }
    };
}

// ------------------------------------------------------------------------------------
// Runtimes
// ------------------------------------------------------------------------------------

type Join<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A named measurement: runs the case once, returns the timed span.
type Case<'a> = (&'a str, Box<dyn Fn() -> Duration + 'a>);

/// A handle to the runtime a case runs on; cheap to clone into tasks.
#[derive(Clone)]
enum Rt {
    Smol,
    Tokio(tokio::runtime::Handle),
}

impl Rt {
    fn spawn<F>(&self, f: F) -> Join<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self {
            Rt::Smol => Box::pin(smol::spawn(f)),
            Rt::Tokio(h) => {
                let j = h.spawn(f);
                Box::pin(async move { j.await.expect("task panicked") })
            }
        }
    }

    /// A relay builder whose tasks run on this runtime.
    fn relay(&self) -> RelayBuilder {
        match self {
            Rt::Smol => Relay::builder().spawner(SmolSpawner),
            Rt::Tokio(h) => tokio_builder(h.clone()),
        }
    }
}

#[cfg(feature = "tokio")]
fn tokio_builder(h: tokio::runtime::Handle) -> RelayBuilder {
    Relay::builder().spawner(pipedream_rs::TokioSpawner::new(h))
}

/// Without the `tokio` feature: the same thing `TokioSpawner` does, as a closure.
#[cfg(not(feature = "tokio"))]
fn tokio_builder(h: tokio::runtime::Handle) -> RelayBuilder {
    Relay::builder().spawner(move |t: pipedream_rs::BoxFuture| drop(h.spawn(t)))
}

struct Runtime {
    name: &'static str,
    rt: Rt,
    tokio: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    fn smol() -> Self {
        Runtime {
            name: "smol",
            rt: Rt::Smol,
            tokio: None,
        }
    }

    fn tokio() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("tokio runtime");
        Runtime {
            name: "tokio",
            rt: Rt::Tokio(rt.handle().clone()),
            tokio: Some(rt),
        }
    }

    /// Runs `f` as a task on the runtime's workers and waits for it on this thread.
    fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.tokio {
            None => smol::block_on(smol::spawn(f)),
            Some(rt) => rt.block_on(rt.spawn(f)).expect("task panicked"),
        }
    }
}

/// Awaits every consumer; each must have received `expected` messages.
async fn join_all(handles: Vec<Join<(usize, u64)>>, expected: usize) {
    for h in handles {
        let (got, acc) = h.await;
        assert_eq!(got, expected, "a consumer missed messages");
        black_box(acc);
    }
}

fn join_threads(handles: Vec<std::thread::JoinHandle<(usize, u64)>>, expected: usize) {
    for h in handles {
        let (got, acc) = h.join().expect("consumer thread panicked");
        assert_eq!(got, expected, "a consumer missed messages");
        black_box(acc);
    }
}

// ------------------------------------------------------------------------------------
// Results
// ------------------------------------------------------------------------------------

struct Row {
    workload: &'static str,
    runtime: String,
    system: String,
    param: String,
    unit: &'static str,
    values: Vec<f64>,
}

struct Bench {
    quick: bool,
    reps: usize,
    filters: Vec<String>,
    rows: Vec<Row>,
    meta: Vec<(String, String)>,
    started: Instant,
}

impl Bench {
    fn wants(&self, workload: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| f.eq_ignore_ascii_case(workload))
    }

    /// Adds one sample to a row (made on first use).
    fn add(
        &mut self,
        workload: &'static str,
        runtime: &str,
        system: &str,
        param: &str,
        unit: &'static str,
        v: f64,
    ) {
        if let Some(r) = self.rows.iter_mut().find(|r| {
            r.workload == workload && r.runtime == runtime && r.system == system && r.param == param
        }) {
            r.values.push(v);
            return;
        }
        self.rows.push(Row {
            workload,
            runtime: runtime.to_string(),
            system: system.to_string(),
            param: param.to_string(),
            unit,
            values: vec![v],
        });
    }

    /// Prints the rows of one workload/runtime as `median [min–max]`.
    fn print(&self, workload: &str, runtime: &str) {
        for r in self
            .rows
            .iter()
            .filter(|r| r.workload == workload && r.runtime == runtime)
        {
            let (med, lo, hi) = summary(&r.values);
            eprintln!(
                "  {workload:<4} {runtime:<6} {:<34} {:<10} {med:>12.2} [{lo:.2} – {hi:.2}] {}",
                r.system, r.param, r.unit
            );
        }
    }

    fn write(&self, path: &str) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let mut s = String::new();
        for (k, v) in &self.meta {
            let _ = writeln!(s, "#meta\t{k}\t{v}");
        }
        for r in &self.rows {
            let vals: Vec<String> = r.values.iter().map(|v| format!("{v:.3}")).collect();
            let _ = writeln!(
                s,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.workload,
                r.runtime,
                r.system,
                r.param,
                r.unit,
                vals.join(",")
            );
        }
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(path, s)
    }
}

fn summary(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (med, s[0], s[s.len() - 1])
}

fn ns_per(d: Duration, count: usize) -> f64 {
    d.as_nanos() as f64 / count as f64
}

/// Sends a `Typed::<kind>` — a macro, not an `async fn`, so that the send future is
/// awaited in place (an extra async layer would copy the 600-byte send future once more
/// per message, a cost of the benchmark, not of the relay).
macro_rules! send_typed {
    ($tx:expr, $kind:expr, $m:expr) => {
        with_kind!($kind, |K| $tx.send(Typed::<K>($m)).await.expect("send"))
    };
}

mod profile;
mod w1;
mod w2;
mod w3;
mod w4;
mod w5;
mod w6;
mod w7;
/// The bridged message of W8 and W9: 32 bytes, as W1's.
#[cfg(any(feature = "nats", feature = "redis"))]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Wire32 {
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) c: u64,
    pub(crate) d: u64,
}

#[cfg(any(feature = "nats", feature = "redis"))]
impl Wire32 {
    pub(crate) fn new(i: u64) -> Self {
        Wire32 {
            a: i,
            b: i ^ 0x5555,
            c: i.rotate_left(7),
            d: !i,
        }
    }
}

/// A message engine's server for W8 and W9: a child process on a free port of
/// 127.0.0.1 (`program`, then `port_args` followed by the port, then `rest`), killed on
/// drop; `url` is `{scheme}://127.0.0.1:{port}`. `None` if it cannot start or listen.
#[cfg(any(feature = "nats", feature = "redis"))]
pub(crate) struct ServerChild {
    child: std::process::Child,
    pub(crate) url: String,
}

#[cfg(any(feature = "nats", feature = "redis"))]
impl ServerChild {
    pub(crate) fn start(
        program: &str,
        port_args: &[&str],
        rest: &[&str],
        scheme: &str,
    ) -> Option<ServerChild> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new(program)
            .args(port_args)
            .arg(port.to_string())
            .args(rest)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = ServerChild {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[cfg(any(feature = "nats", feature = "redis"))]
impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// W8T and W9's timed part: `m` messages sent on `a_tx` (one bridged relay), read by a
/// subscriber of `b_rx` (the other); from the first send to the last receive.
#[cfg(any(feature = "nats", feature = "redis"))]
pub(crate) async fn bridged_run(a_tx: &RelaySender, b_rx: &RelayReceiver, m: usize) -> Duration {
    let mut sub = b_rx.subscribe::<Wire32>();
    let last = (m - 1) as u64;
    let reader = tokio::spawn(async move {
        let mut acc = 0u64;
        while let Some(v) = sub.recv().await {
            acc = acc.wrapping_add(v.b);
            if v.a == last {
                break;
            }
        }
        acc
    });
    let t = Instant::now();
    for i in 0..m {
        a_tx.send(Wire32::new(i as u64)).await.expect("send");
    }
    black_box(reader.await.expect("reader"));
    t.elapsed()
}

#[cfg(feature = "nats")]
mod w8;
#[cfg(feature = "redis")]
mod w9;

use profile::*;
use w1::*;
use w2::*;
use w3::*;
use w4::*;
use w5::*;
use w6::*;
use w7::*;
#[cfg(feature = "nats")]
use w8::*;
#[cfg(feature = "redis")]
use w9::*;

// ------------------------------------------------------------------------------------
// main
// ------------------------------------------------------------------------------------

fn cmd_output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    // Two executor threads for smol's global executor, set before its first use.
    if std::env::var_os("SMOL_THREADS").is_none() {
        std::env::set_var("SMOL_THREADS", "2");
    }
    let mut quick = std::env::var("PIPEDREAM_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let mut out = std::env::var("PIPEDREAM_BENCH_OUT").ok();
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = args.next(),
            "--bench" => {}
            s if s.starts_with("--") => {} // other harness flags cargo may pass
            s => filters.push(s.to_string()),
        }
    }
    let out = out.or_else(|| (!quick).then(|| "docs/performance-data.tsv".to_string()));

    // Sizes: the issue's, or tiny ones for CI.
    let (reps, m_w1, iters_w3, subs_w4, queued_w4, m_w5, deliveries_w6) = if quick {
        (1, 2_048, 500, 100, 1_000, 500, 32_768)
    } else {
        (5, 200_000, 20_000, 1_000, 10_000, 20_000, 3_200_000)
    };

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mut b = Bench {
        quick,
        reps,
        filters,
        rows: Vec::new(),
        meta: vec![
            ("quick".into(), quick.to_string()),
            ("reps".into(), reps.to_string()),
            ("messages".into(), m_w1.to_string()),
            ("w3_sends".into(), iters_w3.to_string()),
            ("w4_subscribers".into(), subs_w4.to_string()),
            ("w4_queued".into(), queued_w4.to_string()),
            ("w5_messages".into(), m_w5.to_string()),
            ("w6_deliveries".into(), deliveries_w6.to_string()),
            (
                "nproc".into(),
                std::thread::available_parallelism()
                    .map_or(0, |n| n.get())
                    .to_string(),
            ),
            ("cpu".into(), cpu),
            ("rustc".into(), cmd_output("rustc", &["--version"])),
            (
                "git".into(),
                cmd_output("git", &["rev-parse", "--short", "HEAD"]),
            ),
            (
                "date".into(),
                cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            ),
            ("tokio_feature".into(), cfg!(feature = "tokio").to_string()),
        ],
        started: Instant::now(),
    };
    eprintln!(
        "pipedream-rs benches: {} mode, {reps} rep(s), {m_w1} messages",
        if b.quick { "QUICK" } else { "full" }
    );

    if b.filters.first().is_some_and(|f| f == "profile") {
        run_profile(&b.filters[1..], m_w1.min(51_200));
        return;
    }
    // Memory first, before any runtime thread exists.
    if b.wants("w4") {
        run_w4(&mut b, subs_w4, queued_w4);
    }
    if b.wants("w6") {
        run_w6_micro(&mut b, m_w1);
    }
    for runtime in [Runtime::smol(), Runtime::tokio()] {
        if b.wants("w1") {
            run_w1(&mut b, &runtime, m_w1);
        }
        if b.wants("w2") {
            run_w2(&mut b, &runtime, m_w1);
        }
        if b.wants("w3") {
            run_w3(&mut b, &runtime, iters_w3);
        }
        if b.wants("w5") {
            run_w5(&mut b, &runtime, m_w5);
        }
        if b.wants("w6") {
            run_w6(&mut b, &runtime, m_w1, deliveries_w6);
        }
        if b.wants("w7") {
            run_w7(&mut b, &runtime, m_w1, iters_w3);
        }
    }

    #[cfg(feature = "nats")]
    if b.wants("w8") {
        let (m, iters) = if quick { (500, 100) } else { (20_000, 2_000) };
        run_w8(&mut b, m, iters);
    }

    #[cfg(feature = "redis")]
    if b.wants("w9") {
        let m = if quick { 500 } else { 20_000 };
        run_w9(&mut b, m);
    }

    let total = b.started.elapsed();
    b.meta
        .push(("duration_s".into(), format!("{:.0}", total.as_secs_f64())));
    eprintln!("done in {total:.1?}");
    if let Some(path) = out {
        b.write(&path).expect("write results");
        eprintln!("results written to {path}");
    }
}
