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

// ------------------------------------------------------------------------------------
// W1: fan-out
// ------------------------------------------------------------------------------------

const PD_SUB: &str = "pipedream subscribe";
const PD_SINK: &str = "pipedream sink (sequential send)";
const PD_SINK_WIN: &str = "pipedream sink (64 sends in flight)";
const TOKIO_BC: &str = "tokio::sync::broadcast";
const ASYNC_BC: &str = "async-broadcast";
const FLUME: &str = "flume (channel per subscriber)";
const ASYNC_CH: &str = "async-channel (channel per subscriber)";
const CROSSBEAM: &str = "crossbeam-channel (threads)";
const ASYNC_CH_ARC: &str = "async-channel per subscriber, one Arc per message (floor, not a peer)";

fn lossless(rt: &Rt, capacity: usize) -> (RelaySender, RelayReceiver) {
    rt.relay()
        .delivery_mode(DeliveryMode::Lossless)
        .channel_size(capacity.max(1))
        .build()
        .expect("relay")
}

fn pd_consumer(rt: &Rt, rx: &RelayReceiver, m: usize) -> Join<(usize, u64)> {
    let mut sub = rx.subscribe::<Msg32>();
    rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < m {
            match sub.recv().await {
                Some(v) => {
                    acc = work(acc, &v);
                    got += 1;
                }
                None => break,
            }
        }
        (got, acc)
    })
}

/// This crate, untracked `subscribe`, lossless, queues big enough never to wait.
async fn w1_pd(rt: Rt, n: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let handles: Vec<_> = (0..n).map(|_| pd_consumer(&rt, &rx, m)).collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

fn pd_sinks(rx: &RelayReceiver, n: usize) -> Vec<Arc<AtomicU64>> {
    (0..n)
        .map(|_| {
            let acc = Arc::new(AtomicU64::new(0));
            let a = acc.clone();
            rx.sink::<Msg32>(move |v| {
                a.fetch_add(mix(v), Ordering::Relaxed);
            });
            acc
        })
        .collect()
}

fn check_sinks(accs: &[Arc<AtomicU64>], m: usize) {
    let want = (0..m as u64).fold(0u64, |acc, i| work(acc, &Msg32::new(i)));
    for a in accs {
        assert_eq!(a.load(Ordering::Relaxed), want, "a sink missed messages");
    }
}

/// This crate, tracked `sink`s: `send().await` returns once every sink processed it.
/// `window` = 1: the plain `for … { tx.send(m).await? }` loop; otherwise that many sends
/// are kept in flight (`buffered`).
async fn w1_pd_sink(rt: Rt, n: usize, m: usize, window: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let accs = pd_sinks(&rx, n);
    rx.ready().await;
    let t = Instant::now();
    if window <= 1 {
        for i in 0..m {
            tx.send(Msg32::new(i as u64)).await.expect("send");
        }
    } else {
        futures::stream::iter(0..m)
            .map(|i| tx.send(Msg32::new(i as u64)))
            .buffered(window)
            .for_each(|r| {
                r.expect("send");
                futures::future::ready(())
            })
            .await;
    }
    let el = t.elapsed();
    check_sinks(&accs, m);
    el
}

async fn w1_tokio_bc(rt: Rt, n: usize, m: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Msg32>(m.max(2));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = tx.subscribe();
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().await.expect("tokio broadcast lagged or closed");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

async fn w1_async_bc(rt: Rt, n: usize, m: usize) -> Duration {
    let (mut tx, rx0) = async_broadcast::broadcast::<Msg32>(m.max(1));
    tx.set_overflow(false);
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = rx0.new_receiver();
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv_direct().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    drop(rx0);
    let t = Instant::now();
    for i in 0..m {
        tx.broadcast_direct(Msg32::new(i as u64))
            .await
            .expect("send");
    }
    join_all(handles, m).await;
    t.elapsed()
}

async fn w1_flume(rt: Rt, n: usize, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = flume::unbounded::<Msg32>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv_async().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = Msg32::new(i as u64);
        for tx in &txs {
            tx.send_async(v).await.expect("send");
        }
    }
    join_all(handles, m).await;
    t.elapsed()
}

async fn w1_async_ch(rt: Rt, n: usize, m: usize) -> Duration {
    w1_async_ch_of(rt, n, m, |v| v).await
}

/// The floor of a relay that hands every subscriber the same value without `Clone`:
/// async-channel per subscriber carrying an `Arc` made once per message, as this crate's
/// `recv` returns. Not a peer: it shows how much of the gap to [`w1_async_ch`] is the
/// allocation, the shared refcount and the consumer-side free.
async fn w1_async_ch_arc(rt: Rt, n: usize, m: usize) -> Duration {
    w1_async_ch_of(rt, n, m, Arc::new).await
}

/// async-channel per subscriber carrying `make(message)`, cloned into each channel.
async fn w1_async_ch_of<M>(rt: Rt, n: usize, m: usize, make: fn(Msg32) -> M) -> Duration
where
    M: Borrow<Msg32> + Clone + Send + 'static,
{
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = async_channel::unbounded::<M>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().await.expect("recv");
                    acc = work(acc, v.borrow());
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = make(Msg32::new(i as u64));
        for tx in &txs {
            tx.send(v.clone()).await.expect("send");
        }
    }
    join_all(handles, m).await;
    t.elapsed()
}

fn w1_crossbeam(n: usize, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::unbounded::<Msg32>();
            txs.push(tx);
            std::thread::spawn(move || {
                let (mut got, mut acc) = (0, 0);
                while got < m {
                    let v = rx.recv().expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let v = Msg32::new(i as u64);
        for tx in &txs {
            tx.send(v).expect("send");
        }
    }
    join_threads(handles, m);
    t.elapsed()
}

/// This crate in broadcast mode, one untracked subscriber that keeps up.
/// Returns (time, messages the subscriber received).
async fn w1_pd_broadcast(rt: Rt, capacity: usize, m: usize) -> (Duration, usize) {
    let (tx, rx) = rt
        .relay()
        .delivery_mode(DeliveryMode::Broadcast)
        .channel_size(capacity)
        .build()
        .expect("relay");
    let mut sub = rx.subscribe::<Msg32>();
    let h = rt.spawn(async move {
        let (mut got, mut acc) = (0usize, 0);
        while let Some(v) = sub.recv().await {
            acc = work(acc, &v);
            got += 1;
        }
        black_box(acc);
        (got, sub.dropped())
    });
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    drop(tx); // the subscriber drains what is queued, then sees the end
    let (got, dropped) = h.await;
    assert_eq!(got as u64 + dropped, m as u64, "received + dropped != sent");
    (t.elapsed(), got)
}

fn run_w1(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W1 fan-out on {} ({m} messages, {} reps)", r.name, b.reps);
    for rep in 0..b.reps {
        for &n in &[1usize, 4, 16] {
            let p = format!("N={n}");
            let d = n * m;
            let cases: [Case; 9] = [
                (PD_SUB, Box::new(|| r.run(w1_pd(r.rt.clone(), n, m)))),
                (
                    PD_SINK,
                    Box::new(|| r.run(w1_pd_sink(r.rt.clone(), n, m, 1))),
                ),
                (
                    PD_SINK_WIN,
                    Box::new(|| r.run(w1_pd_sink(r.rt.clone(), n, m, 64))),
                ),
                (
                    TOKIO_BC,
                    Box::new(|| r.run(w1_tokio_bc(r.rt.clone(), n, m))),
                ),
                (
                    ASYNC_BC,
                    Box::new(|| r.run(w1_async_bc(r.rt.clone(), n, m))),
                ),
                (FLUME, Box::new(|| r.run(w1_flume(r.rt.clone(), n, m)))),
                (
                    ASYNC_CH,
                    Box::new(|| r.run(w1_async_ch(r.rt.clone(), n, m))),
                ),
                (CROSSBEAM, Box::new(|| w1_crossbeam(n, m))),
                (
                    ASYNC_CH_ARC,
                    Box::new(|| r.run(w1_async_ch_arc(r.rt.clone(), n, m))),
                ),
            ];
            for (name, f) in cases.iter() {
                let el = f();
                b.add("W1", r.name, name, &p, "ns/delivery", ns_per(el, d));
            }
        }
        for &cap in &[pipedream_rs::DEFAULT_CHANNEL_SIZE, 1024] {
            let (el, got) = r.run(w1_pd_broadcast(r.rt.clone(), cap, m));
            let sys = format!("pipedream broadcast mode, capacity {cap}");
            b.add(
                "W1B",
                r.name,
                &sys,
                "delivered",
                "%",
                100.0 * got as f64 / m as f64,
            );
            b.add("W1B", r.name, &sys, "time", "ns/message", ns_per(el, m));
        }
        eprintln!("  rep {} done ({:.0?})", rep + 1, b.started.elapsed());
    }
    b.print("W1", r.name);
    b.print("W1B", r.name);
}

// ------------------------------------------------------------------------------------
// W2: heterogeneous routing — 4 types round-robin, 4 subscribers wanting one type each
// ------------------------------------------------------------------------------------

const KINDS_W2: usize = 4;

fn pd_typed_consumer<const K: usize>(
    rt: &Rt,
    rx: &RelayReceiver,
    expected: usize,
) -> Join<(usize, u64)> {
    let mut sub = rx.subscribe::<Typed<K>>();
    rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < expected {
            match sub.recv().await {
                Some(v) => {
                    acc = work(acc, &v.0);
                    got += 1;
                }
                None => break,
            }
        }
        (got, acc)
    })
}

/// Sends a `Typed::<kind>` — a macro, not an `async fn`, so that the send future is
/// awaited in place (an extra async layer would copy the 600-byte send future once more
/// per message, a cost of the benchmark, not of the relay).
macro_rules! send_typed {
    ($tx:expr, $kind:expr, $m:expr) => {
        with_kind!($kind, |K| $tx.send(Typed::<K>($m)).await.expect("send"))
    };
}

/// This crate: `kinds` message types round-robin, one typed subscriber per type.
async fn pd_routing(rt: Rt, kinds: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let per = m / kinds;
    let handles: Vec<_> = (0..kinds)
        .map(|k| with_kind!(k, |K| pd_typed_consumer::<K>(&rt, &rx, per)))
        .collect();
    let t = Instant::now();
    for i in 0..per * kinds {
        send_typed!(tx, i % kinds, Msg32::new(i as u64));
    }
    join_all(handles, per).await;
    t.elapsed()
}

/// A consumer of the enum: reads everything, keeps what it wants.
/// Returns (messages kept, acc); it stops after `total` messages.
macro_rules! enum_consumer {
    ($kind:expr, $total:expr, $recv:expr) => {{
        let (mut seen, mut kept, mut acc) = (0usize, 0usize, 0u64);
        while seen < $total {
            let ev: Ev = $recv;
            seen += 1;
            if let Some(v) = ev.wanted($kind) {
                acc = work(acc, v);
                kept += 1;
            }
        }
        (kept, acc)
    }};
}

async fn w2_tokio_bc(rt: Rt, m: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Ev>(m.max(2));
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let mut rx = tx.subscribe();
            rt.spawn(async move { enum_consumer!(k, m, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        tx.send(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .expect("send");
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

async fn w2_async_bc(rt: Rt, m: usize) -> Duration {
    let (mut tx, rx0) = async_broadcast::broadcast::<Ev>(m.max(1));
    tx.set_overflow(false);
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let mut rx = rx0.new_receiver();
            rt.spawn(async move { enum_consumer!(k, m, rx.recv_direct().await.expect("recv")) })
        })
        .collect();
    drop(rx0);
    let t = Instant::now();
    for i in 0..m {
        tx.broadcast_direct(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .await
            .expect("send");
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

async fn w2_flume(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = flume::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, m, rx.recv_async().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send_async(ev).await.expect("send");
        }
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

async fn w2_async_ch(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = async_channel::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, m, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send(ev).await.expect("send");
        }
    }
    join_all(handles, m / KINDS_W2).await;
    t.elapsed()
}

/// Not a target: the producer routes by hand (one async-channel per type). This is the
/// floor a type-routing relay is measured against; the enum peers are what a generic
/// bus without routing costs.
async fn w2_async_ch_routed(rt: Rt, m: usize) -> Duration {
    let mut txs = Vec::new();
    let per = m / KINDS_W2;
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = async_channel::unbounded::<Ev>();
            txs.push(tx);
            rt.spawn(async move { enum_consumer!(k, per, rx.recv().await.expect("recv")) })
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        txs[i % KINDS_W2]
            .send(Ev::new(i % KINDS_W2, Msg32::new(i as u64)))
            .await
            .expect("send");
    }
    join_all(handles, per).await;
    t.elapsed()
}

fn w2_crossbeam(m: usize) -> Duration {
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..KINDS_W2)
        .map(|k| {
            let (tx, rx) = crossbeam_channel::unbounded::<Ev>();
            txs.push(tx);
            std::thread::spawn(move || enum_consumer!(k, m, rx.recv().expect("recv")))
        })
        .collect();
    let t = Instant::now();
    for i in 0..m {
        let ev = Ev::new(i % KINDS_W2, Msg32::new(i as u64));
        for tx in &txs {
            tx.send(ev).expect("send");
        }
    }
    join_threads(handles, m / KINDS_W2);
    t.elapsed()
}

const W2_ROUTED: &str = "async-channel, routed by hand (floor, not a peer)";

fn run_w2(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W2 routing on {} ({m} messages, 4 types)", r.name);
    for _ in 0..b.reps {
        let cases: [Case; 7] = [
            (
                "pipedream (typed subscribe)",
                Box::new(|| r.run(pd_routing(r.rt.clone(), KINDS_W2, m))),
            ),
            (
                "tokio::sync::broadcast (enum)",
                Box::new(|| r.run(w2_tokio_bc(r.rt.clone(), m))),
            ),
            (
                "async-broadcast (enum)",
                Box::new(|| r.run(w2_async_bc(r.rt.clone(), m))),
            ),
            (
                "flume (enum, channel per subscriber)",
                Box::new(|| r.run(w2_flume(r.rt.clone(), m))),
            ),
            (
                "async-channel (enum, channel per subscriber)",
                Box::new(|| r.run(w2_async_ch(r.rt.clone(), m))),
            ),
            (
                "crossbeam-channel (enum, threads)",
                Box::new(|| w2_crossbeam(m)),
            ),
            (
                W2_ROUTED,
                Box::new(|| r.run(w2_async_ch_routed(r.rt.clone(), m))),
            ),
        ];
        for (name, f) in cases.iter() {
            let el = f();
            b.add("W2", r.name, name, "4 types", "ns/message", ns_per(el, m));
        }
    }
    b.print("W2", r.name);
}

// ------------------------------------------------------------------------------------
// W3: tracked round trip latency
// ------------------------------------------------------------------------------------

/// The percentiles, the mean, and the share of round trips slower than 5 µs (those that
/// had to wake a parked executor thread).
fn percentiles(mut ns: Vec<u64>) -> [(&'static str, f64); 6] {
    ns.sort_unstable();
    let at = |q: f64| ns[((q * ns.len() as f64) as usize).min(ns.len() - 1)] as f64;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    let slow = 100.0 * ns.iter().filter(|&&v| v > 5_000).count() as f64 / ns.len() as f64;
    [
        ("p50", at(0.50)),
        ("p95", at(0.95)),
        ("p99", at(0.99)),
        ("p99.9", at(0.999)),
        ("mean", mean),
        ("> 5 µs (%)", slow),
    ]
}

/// `send().await` on a relay with one `sink`: one sample per send.
async fn w3_pd(rt: Rt, iters: usize) -> Vec<u64> {
    let (tx, rx) = lossless(&rt, pipedream_rs::DEFAULT_CHANNEL_SIZE);
    let accs = pd_sinks(&rx, 1);
    rx.ready().await;
    for i in 0..iters / 10 {
        tx.send(Msg32::new(i as u64)).await.expect("send"); // warm-up
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        tx.send(Msg32::new(i as u64)).await.expect("send");
        samples.push(t.elapsed().as_nanos() as u64);
    }
    black_box(accs[0].load(Ordering::Relaxed));
    samples
}

/// async-channel send, the consumer does the same work and acks on a second channel.
async fn w3_async_ch(rt: Rt, iters: usize) -> Vec<u64> {
    let (tx, rx) = async_channel::unbounded::<Msg32>();
    let (ack_tx, ack_rx) = async_channel::unbounded::<()>();
    let h = rt.spawn(async move {
        let acc = AtomicU64::new(0);
        while let Ok(v) = rx.recv().await {
            acc.fetch_add(mix(&v), Ordering::Relaxed);
            if ack_tx.send(()).await.is_err() {
                break;
            }
        }
        black_box(acc.load(Ordering::Relaxed));
    });
    let round_trip = |i: usize| {
        let tx = &tx;
        let ack_rx = &ack_rx;
        async move {
            tx.send(Msg32::new(i as u64)).await.expect("send");
            ack_rx.recv().await.expect("ack");
        }
    };
    for i in 0..iters / 10 {
        round_trip(i).await;
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        round_trip(i).await;
        samples.push(t.elapsed().as_nanos() as u64);
    }
    drop(tx);
    h.await;
    samples
}

fn run_w3(b: &mut Bench, r: &Runtime, iters: usize) {
    eprintln!("W3 round trip on {} ({iters} sequential sends)", r.name);
    for _ in 0..b.reps {
        for (name, samples) in [
            ("pipedream send + sink", r.run(w3_pd(r.rt.clone(), iters))),
            (
                "async-channel send + ack channel",
                r.run(w3_async_ch(r.rt.clone(), iters)),
            ),
        ] {
            for (p, v) in percentiles(samples) {
                b.add("W3", r.name, name, p, "ns", v);
            }
        }
    }
    b.print("W3", r.name);
}

// ------------------------------------------------------------------------------------
// W4: memory
// ------------------------------------------------------------------------------------

fn relay_with(capacity: usize) -> (RelaySender, RelayReceiver) {
    Relay::builder()
        .spawner(SmolSpawner)
        .channel_size(capacity)
        .build()
        .expect("relay")
}

/// Heap bytes per idle subscriber: `count` subscribers made by `make`, kept alive.
fn per_item<T>(count: usize, mut make: impl FnMut() -> T) -> f64 {
    let mut keep = Vec::with_capacity(count); // allocated before counting starts
    let ((), bytes) = heap_delta(|| {
        for _ in 0..count {
            keep.push(make());
        }
    });
    drop(keep);
    bytes as f64 / count as f64
}

/// Heap bytes per queued message: `queued` messages pushed with `push` (nobody reads).
fn per_queued(queued: usize, mut push: impl FnMut(u64)) -> f64 {
    let ((), bytes) = heap_delta(|| {
        for i in 0..queued {
            push(i as u64);
        }
    });
    bytes as f64 / queued as f64
}

fn run_w4(b: &mut Bench, subs: usize, queued: usize) {
    eprintln!("W4 memory ({subs} idle subscribers, {queued} queued messages)");
    let big = pipedream_rs::DEFAULT_CHANNEL_SIZE;
    // Bounded(65,536) rings preallocate ~2.6 MB each: measure fewer of them.
    let few = subs.min(16);
    for _ in 0..b.reps.min(3) {
        let mut idle: Vec<(String, f64)> = Vec::new();
        for cap in [big, 1024] {
            let (tx, rx) = relay_with(cap);
            idle.push((
                format!("pipedream subscribe, capacity {cap}"),
                per_item(subs, || rx.subscribe::<Msg32>()),
            ));
            drop((tx, rx));
        }
        idle.push((
            "async-channel bounded(65536)".into(),
            per_item(few, || async_channel::bounded::<Msg32>(big)),
        ));
        idle.push((
            "async-channel bounded(1024)".into(),
            per_item(subs, || async_channel::bounded::<Msg32>(1024)),
        ));
        idle.push((
            "async-channel unbounded".into(),
            per_item(subs, async_channel::unbounded::<Msg32>),
        ));
        idle.push((
            "flume bounded(65536)".into(),
            per_item(subs, || flume::bounded::<Msg32>(big)),
        ));
        idle.push((
            "flume unbounded".into(),
            per_item(subs, flume::unbounded::<Msg32>),
        ));
        {
            let ((tx, _rx0), ring) = heap_delta(|| tokio::sync::broadcast::channel::<Msg32>(big));
            idle.push((
                "tokio::sync::broadcast(65536): the shared ring".into(),
                ring as f64,
            ));
            idle.push((
                "tokio::sync::broadcast(65536): per receiver".into(),
                per_item(subs, || tx.subscribe()),
            ));
        }
        for (name, v) in idle {
            b.add("W4", "-", &name, "idle subscriber", "bytes", v);
        }

        let mut q: Vec<(String, f64)> = Vec::new();
        for subs_now in [1usize, 4] {
            let (tx, rx) = relay_with(big);
            let keep: Vec<_> = (0..subs_now).map(|_| rx.subscribe::<Msg32>()).collect();
            let per = per_queued(queued, |i| {
                futures::executor::block_on(tx.send(Msg32::new(i))).expect("send");
            });
            assert_eq!(keep[0].len(), queued);
            q.push((
                format!("pipedream, {subs_now} subscriber(s), per message"),
                per,
            ));
            drop((keep, tx, rx));
        }
        {
            let (tx, rx) = async_channel::unbounded::<Msg32>();
            q.push((
                "async-channel unbounded".into(),
                per_queued(queued, |i| tx.try_send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = async_channel::bounded::<Msg32>(big);
            q.push((
                "async-channel bounded(65536) (ring preallocated)".into(),
                per_queued(queued, |i| tx.try_send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = flume::unbounded::<Msg32>();
            q.push((
                "flume unbounded".into(),
                per_queued(queued, |i| tx.send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = flume::bounded::<Msg32>(big);
            q.push((
                "flume bounded(65536)".into(),
                per_queued(queued, |i| tx.send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
        }
        for (name, v) in q {
            b.add("W4", "-", &name, "queued message", "bytes", v);
        }
    }
    b.add(
        "W4",
        "-",
        "size_of::<Subscription<Msg32>>() (inline, not heap)",
        "handle",
        "bytes",
        std::mem::size_of::<pipedream_rs::Subscription<Msg32>>() as f64,
    );
    b.print("W4", "-");
}

// ------------------------------------------------------------------------------------
// W5: transformation overhead — filter/map chains, batch(100)
// ------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Stage {
    /// `filter` (tracked: each send waits for every filter decision down the chain).
    Filter,
    /// `map` (a tracking boundary: sends do not wait).
    Map,
}

/// A chain of `depth` transformations of `kind`, one untracked subscriber at its end.
async fn w5_pd_chain(rt: Rt, kind: Stage, depth: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let mut end = rx.clone();
    for _ in 0..depth {
        end = match kind {
            Stage::Filter => end.filter::<Msg32>(|v| v.a != u64::MAX),
            Stage::Map => end.map::<Msg32, Msg32>(|v| Msg32 { c: v.c ^ 1, ..*v }),
        };
    }
    let h = pd_consumer(&rt, &end, m);
    rx.ready().await;
    end.ready().await;
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    t.elapsed()
}

/// `batch(size)`, one subscriber of the `Vec<Msg32>` batches.
async fn w5_pd_batch(rt: Rt, size: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let batches = rx.batch::<Msg32>(size).expect("batch size");
    let mut sub = batches.subscribe::<Vec<Msg32>>();
    let h = rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < m {
            match sub.recv().await {
                Some(b) => {
                    for v in b.iter() {
                        acc = work(acc, v);
                    }
                    got += b.len();
                }
                None => break,
            }
        }
        (got, acc)
    });
    rx.ready().await;
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    t.elapsed()
}

/// The hand-written equivalent: a task per stage between unbounded async-channels.
/// `batch` = 0: each stage maps; otherwise one stage collects `batch` items per Vec.
async fn w5_async_ch_chain(rt: Rt, depth: usize, batch: usize, m: usize) -> Duration {
    let (tx0, mut rx) = async_channel::unbounded::<Msg32>();
    let mut stages = Vec::new();
    for _ in 0..depth {
        let (tx, next) = async_channel::unbounded::<Msg32>();
        let input = std::mem::replace(&mut rx, next);
        stages.push(rt.spawn(async move {
            while let Ok(v) = input.recv().await {
                if tx.send(Msg32 { c: v.c ^ 1, ..v }).await.is_err() {
                    break;
                }
            }
        }));
    }
    let h = if batch == 0 {
        rt.spawn(async move {
            let (mut got, mut acc) = (0, 0);
            while got < m {
                let v = rx.recv().await.expect("recv");
                acc = work(acc, &v);
                got += 1;
            }
            (got, acc)
        })
    } else {
        let (btx, brx) = async_channel::unbounded::<Vec<Msg32>>();
        stages.push(rt.spawn(async move {
            let mut cur = Vec::with_capacity(batch);
            while let Ok(v) = rx.recv().await {
                cur.push(v);
                if cur.len() == batch {
                    let full = std::mem::replace(&mut cur, Vec::with_capacity(batch));
                    if btx.send(full).await.is_err() {
                        break;
                    }
                }
            }
        }));
        rt.spawn(async move {
            let (mut got, mut acc) = (0, 0);
            while got < m {
                let b = brx.recv().await.expect("recv");
                for v in &b {
                    acc = work(acc, v);
                }
                got += b.len();
            }
            (got, acc)
        })
    };
    let t = Instant::now();
    for i in 0..m {
        tx0.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    let el = t.elapsed();
    drop(tx0);
    for s in stages {
        s.await;
    }
    el
}

fn run_w5(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W5 transformations on {} ({m} messages)", r.name);
    for _ in 0..b.reps {
        let el = r.run(w1_pd(r.rt.clone(), 1, m));
        b.add(
            "W5",
            r.name,
            "pipedream subscribe (no transformation)",
            "depth=0",
            "ns/message",
            ns_per(el, m),
        );
        for depth in [1usize, 2, 4, 8] {
            let p = format!("depth={depth}");
            let el = r.run(w5_pd_chain(r.rt.clone(), Stage::Filter, depth, m));
            b.add(
                "W5",
                r.name,
                "pipedream filter chain (tracked)",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w5_pd_chain(r.rt.clone(), Stage::Map, depth, m));
            b.add(
                "W5",
                r.name,
                "pipedream map chain",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w5_async_ch_chain(r.rt.clone(), depth, 0, m));
            b.add(
                "W5",
                r.name,
                "async-channel task chain (map)",
                &p,
                "ns/message",
                ns_per(el, m),
            );
        }
        let el = r.run(w5_pd_batch(r.rt.clone(), 100, m));
        b.add(
            "W5",
            r.name,
            "pipedream batch(100)",
            "batch=100",
            "ns/message",
            ns_per(el, m),
        );
        let el = r.run(w5_async_ch_chain(r.rt.clone(), 0, 100, m));
        b.add(
            "W5",
            r.name,
            "async-channel batching task",
            "batch=100",
            "ns/message",
            ns_per(el, m),
        );
    }
    b.print("W5", r.name);
}

// ------------------------------------------------------------------------------------
// W6: scaling in subscribers and in types
// ------------------------------------------------------------------------------------

/// The peer of the W6 types row: one async-channel per "type", the producer routes by
/// hand, a task per channel — the same task layout as `pd_routing`, without the relay.
async fn w6_async_ch_routed(rt: Rt, kinds: usize, m: usize) -> Duration {
    let per = m / kinds;
    let mut txs = Vec::new();
    let handles: Vec<_> = (0..kinds)
        .map(|_| {
            let (tx, rx) = async_channel::unbounded::<Msg32>();
            txs.push(tx);
            rt.spawn(async move {
                let (mut got, mut acc) = (0, 0);
                while got < per {
                    let v = rx.recv().await.expect("recv");
                    acc = work(acc, &v);
                    got += 1;
                }
                (got, acc)
            })
        })
        .collect();
    let t = Instant::now();
    for i in 0..per * kinds {
        txs[i % kinds]
            .send(Msg32::new(i as u64))
            .await
            .expect("send");
    }
    join_all(handles, per).await;
    t.elapsed()
}

fn run_w6(b: &mut Bench, r: &Runtime, m: usize, deliveries: usize) {
    eprintln!("W6 scaling on {}", r.name);
    let ns = [1usize, 4, 16, 64, 256, 1024];
    let kinds = [1usize, 2, 4, 8, 16, 32, 64];
    for _ in 0..b.reps {
        for &n in &ns {
            // Up to 16 subscribers, W1's message count; beyond, a constant number of
            // deliveries (so 1,024 subscribers get fewer messages each).
            let msgs = if n <= 16 { m } else { (deliveries / n).max(64) };
            let p = format!("N={n}");
            let el = r.run(w1_pd(r.rt.clone(), n, msgs));
            b.add(
                "W6S",
                r.name,
                PD_SUB,
                &p,
                "ns/delivery",
                ns_per(el, n * msgs),
            );
            let el = r.run(w1_async_ch(r.rt.clone(), n, msgs));
            b.add(
                "W6S",
                r.name,
                ASYNC_CH,
                &p,
                "ns/delivery",
                ns_per(el, n * msgs),
            );
        }
        for &k in &kinds {
            let p = format!("types={k}");
            let el = r.run(pd_routing(r.rt.clone(), k, m));
            b.add(
                "W6T",
                r.name,
                "pipedream, one subscriber per type, tasks",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w6_async_ch_routed(r.rt.clone(), k, m));
            b.add(
                "W6T",
                r.name,
                "async-channel per type, routed by hand, tasks",
                &p,
                "ns/message",
                ns_per(el, m),
            );
        }
    }
    b.print("W6S", r.name);
    b.print("W6T", r.name);
}

/// Routing alone, no executor threads: one thread sends `batch` messages round-robin over
/// `kinds` types (one subscriber each), then drains every subscriber with `try_recv`.
fn routing_micro(kinds: usize, m: usize) -> Duration {
    let (tx, rx) = Relay::builder()
        .spawner(SmolSpawner)
        .delivery_mode(DeliveryMode::Lossless)
        .build()
        .expect("relay");
    let mut subs: Vec<Box<dyn FnMut() -> usize>> = (0..kinds)
        .map(|k| {
            with_kind!(k, |K| {
                let mut sub = rx.subscribe::<Typed<K>>();
                Box::new(move || {
                    let mut n = 0usize;
                    while let Ok(v) = sub.try_recv() {
                        black_box(v.0.a);
                        n += 1;
                    }
                    n
                }) as Box<dyn FnMut() -> usize>
            })
        })
        .collect();
    let batch = 256;
    let m = m / batch * batch;
    let t = Instant::now();
    futures::executor::block_on(async {
        let mut got = 0;
        for start in (0..m).step_by(batch) {
            for i in start..start + batch {
                send_typed!(tx, i % kinds, Msg32::new(i as u64));
            }
            for s in subs.iter_mut() {
                got += s();
            }
        }
        assert_eq!(got, m);
    });
    t.elapsed()
}

/// The same loop on one async-channel per type: the floor of `routing_micro`.
fn async_ch_micro(kinds: usize, m: usize) -> Duration {
    let chans: Vec<_> = (0..kinds)
        .map(|_| async_channel::unbounded::<Msg32>())
        .collect();
    let batch = 256;
    let m = m / batch * batch;
    let t = Instant::now();
    futures::executor::block_on(async {
        let mut got = 0;
        for start in (0..m).step_by(batch) {
            for i in start..start + batch {
                chans[i % kinds]
                    .0
                    .send(Msg32::new(i as u64))
                    .await
                    .expect("send");
            }
            for (_, rx) in &chans {
                while let Ok(v) = rx.try_recv() {
                    black_box(v.a);
                    got += 1;
                }
            }
        }
        assert_eq!(got, m);
    });
    t.elapsed()
}

/// `-- profile [what]`: one case alone, for `valgrind --tool=callgrind`.
///
/// - `route` (default): the single-threaded send + try_recv loops (pipedream, async-channel);
/// - `fanout N M`: W1 untracked with N subscribers and M messages, on smol;
/// - `fanout-ac N M`: the same on one async-channel per subscriber;
/// - `sink M` / `ack M`: M tracked round trips (one sink) / async-channel send + ack.
fn run_profile(what: &[String], m: usize) {
    let arg =
        |i: usize, default: usize| what.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let r = Runtime::smol();
    match what.first().map(String::as_str).unwrap_or("route") {
        "route" => {
            let pd = routing_micro(1, m);
            let ac = async_ch_micro(1, m);
            eprintln!(
                "profile: pipedream {:.1} ns/message, async-channel {:.1} ns/message",
                ns_per(pd, m),
                ns_per(ac, m)
            );
        }
        "fanout" => {
            let (n, m) = (arg(1, 1), arg(2, m));
            let el = r.run(w1_pd(r.rt.clone(), n, m));
            eprintln!(
                "profile: pipedream fan-out {:.1} ns/delivery",
                ns_per(el, n * m)
            );
        }
        "fanout-ac" => {
            let (n, m) = (arg(1, 1), arg(2, m));
            let el = r.run(w1_async_ch(r.rt.clone(), n, m));
            eprintln!(
                "profile: async-channel fan-out {:.1} ns/delivery",
                ns_per(el, n * m)
            );
        }
        "sink" => {
            let m = arg(1, 20_000);
            let el = r.run(w1_pd_sink(r.rt.clone(), 1, m, 1));
            eprintln!("profile: sink round trip {:.1} ns", ns_per(el, m));
        }
        "ack" => {
            let m = arg(1, 20_000);
            let s = r.run(w3_async_ch(r.rt.clone(), m));
            eprintln!("profile: async-channel send + ack, {} samples", s.len());
        }
        other => panic!("unknown profile case {other}"),
    }
}

fn run_w6_micro(b: &mut Bench, m: usize) {
    eprintln!("W6 routing micro-benchmark (one thread, no executor)");
    for _ in 0..b.reps {
        for k in [1usize, 2, 4, 8, 16, 32, 64] {
            let el = routing_micro(k, m);
            b.add(
                "W6T",
                "one thread",
                "pipedream send + try_recv, one subscriber per type",
                &format!("types={k}"),
                "ns/message",
                ns_per(el, m / 256 * 256),
            );
            let el = async_ch_micro(k, m);
            b.add(
                "W6T",
                "one thread",
                "async-channel send + try_recv, one channel per type",
                &format!("types={k}"),
                "ns/message",
                ns_per(el, m / 256 * 256),
            );
        }
    }
    b.print("W6T", "one thread");
}

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
