//! Soak: random concurrent topologies with faults, round after round, on every enabled
//! runtime; memory must return to its baseline.
//!
//! Each round builds a random topology from a seeded xorshift generator: a root relay
//! (random delivery mode, error mode and queue size), tracked handlers on it (succeeding,
//! failing, panicking or slow, depending on the value), tracked `filter` children with
//! their own handlers, a `map` child and a `batch` child behind the tracking boundary,
//! untracked subscribers read by tasks, and 2–4 sender tasks sending random values of
//! three types concurrently; in half the rounds the relay is closed mid-flight.
//!
//! Checked: every send completes within a bound; its result is `Closed` only once the
//! relay was closed (and then for every later send of that sender), otherwise `Ok`
//! exactly when no tracked handler of that value fails, with the failing handlers'
//! relays and kinds (all of them in `Aggregate` mode); every subscription ends after the
//! close; once everything is dropped every relay is freed and its tasks ended; and the
//! bytes live (a counting global allocator, this binary only) after each round do not
//! grow beyond a small slack over the warm-up round's figure.
//!
//! Operations (sends) per run: `PIPEDREAM_SOAK` (default 20,000), shared between the
//! enabled runtimes. The seed is printed; `PIPEDREAM_SEED=<n>` replays it. Run with
//! `--nocapture` to see the memory figures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{failure_of, quiet_intended_panics, timeout, wait_until, within, Ty};
use pipedream_rs::{
    DeliveryMode, ErrorMode, HandlerKind, PanicError, Relay, RelayError, RelayReceiver, RelayStats,
    SendError, Subscription, WeakSender,
};

// ----- counting allocator ---------------------------------------------------------------

struct Counting;

/// Bytes allocated and not yet freed, by every thread of this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The soak tests measure process-wide memory: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Rounds measured after the warm-up round.
const ROUNDS: usize = 6;
/// How far live bytes after a round may stand above the warm-up round's figure.
const SLACK: isize = 16 * 1024;
/// Bound on every await (a send, a subscription's end, a relay being freed).
const BOUND: Duration = Duration::from_secs(10);
const INTENDED: &str = "intended panic (soak test)";

// ----- a seeded generator -------------------------------------------------------------------

/// xorshift64*.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

fn seed() -> u64 {
    std::env::var("PIPEDREAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn operations_per_runtime() -> usize {
    let total: usize = std::env::var("PIPEDREAM_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runtimes = usize::from(cfg!(feature = "smol"))
        + usize::from(cfg!(feature = "tokio"))
        + usize::from(cfg!(feature = "async-std"));
    total / runtimes.max(1)
}

// ----- messages and handlers ------------------------------------------------------------------

#[derive(Clone, Debug)]
struct A(u8);
#[derive(Clone, Debug)]
struct B(u8);
#[derive(Clone, Debug)]
struct C(u8);

trait Msg: Any + Send + Sync + Clone {
    fn make(x: u8) -> Self;
    fn x(&self) -> u8;
}

macro_rules! msg {
    ($($t:ident),*) => {$(
        impl Msg for $t {
            fn make(x: u8) -> Self { $t(x) }
            fn x(&self) -> u8 { self.0 }
        }
    )*};
}
msg!(A, B, C);

fn random_ty(rng: &mut Rng) -> Ty {
    [Ty::A, Ty::B, Ty::C][rng.below(3) as usize]
}

#[derive(Debug, thiserror::Error)]
#[error("refused {0}")]
struct Refused(u8);

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    /// Fails when `x % m == 0`.
    Fail(u8),
    /// Panics when `x % m == 1`.
    Panic(u8),
    /// Yields a few times first.
    Slow,
}

fn random_behaviour(rng: &mut Rng) -> Behaviour {
    let m = rng.range(2, 5) as u8;
    match rng.below(4) {
        0 => Behaviour::Ok,
        1 => Behaviour::Fail(m),
        2 => Behaviour::Panic(m),
        _ => Behaviour::Slow,
    }
}

/// `Some(is_panic)` when a handler of this behaviour fails on `x`.
fn fails(b: Behaviour, x: u8) -> Option<bool> {
    match b {
        Behaviour::Fail(m) if x % m == 0 => Some(false),
        Behaviour::Panic(m) if x % m == 1 => Some(true),
        _ => None,
    }
}

async fn behave(b: Behaviour, x: u8) -> Result<(), Refused> {
    match fails(b, x) {
        Some(true) => panic!("{INTENDED}"),
        Some(false) => Err(Refused(x)),
        None => {
            if let Behaviour::Slow = b {
                for _ in 0..x % 3 {
                    futures::pending!(); // wakes itself below
                }
            }
            Ok(())
        }
    }
}

/// A tracked handler the model knows: where it is, what it takes, what it does.
#[derive(Clone, Copy, Debug)]
struct Spec {
    relay: u64,
    ty: Ty,
    kind: HandlerKind,
    behaviour: Behaviour,
    /// Only messages with `x % m != r` reach it (behind a filter), if any.
    filter: Option<(u8, u8)>,
}

fn add_handler(rx: &RelayReceiver, ty: Ty, tap: bool, behaviour: Behaviour) {
    with_ty!(ty, T => {
        let f = move |m: Arc<T>| Yielding(Box::pin(behave(behaviour, m.x())));
        if tap {
            rx.tap_async::<T>(f);
        } else {
            rx.sink_async::<T>(f);
        }
    })
}

/// Runs the inner future, waking itself whenever it is pending (`behave` yields with
/// `pending!`, which does not arrange a wake-up).
struct Yielding<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Yielding<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let poll = self.0.as_mut().poll(cx);
        if poll.is_pending() {
            cx.waker().wake_by_ref();
        }
        poll
    }
}

/// What the model expects of a send of `(ty, x)`: (relay, kind, is panic) per failure.
fn expected_failures(specs: &[Spec], ty: Ty, x: u8) -> Vec<(u64, String, bool)> {
    let mut out: Vec<_> = specs
        .iter()
        .filter(|s| s.ty == ty && s.filter.is_none_or(|(m, r)| x % m != r))
        .filter_map(|s| fails(s.behaviour, x).map(|p| (s.relay, s.kind.to_string(), p)))
        .collect();
    out.sort();
    out
}

// ----- one round --------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    closed: usize,
}

/// Reads a subscription to its end; returns how many messages it got.
fn drain<T: Any + Send + Sync>(mut sub: Subscription<T>) -> BoxFuture<usize> {
    Box::pin(common::spawn(async move {
        let mut n = 0;
        // Unbounded here (a quiet type may see nothing for a long run); the round bounds
        // the wait for its end after the close.
        while sub.recv().await.is_some() {
            n += 1;
        }
        n
    }))
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

async fn round(seed: u64, sends: usize) -> Tally {
    let mut rng = Rng::new(seed);
    let mode = if rng.chance(1, 2) {
        DeliveryMode::Lossless
    } else {
        DeliveryMode::Broadcast
    };
    let errors = if rng.chance(1, 2) {
        ErrorMode::Aggregate
    } else {
        ErrorMode::FirstWins
    };
    let senders = rng.range(2, 4) as usize;
    // Broadcast: a tracked handler's queue never holds more than one message per sender,
    // so a queue of at least 4 never drops a tracked message (no QueueFull here).
    let size = match mode {
        DeliveryMode::Broadcast => rng.range(4, 64),
        DeliveryMode::Lossless => rng.range(1, 16),
        other => unreachable!("the soak draws broadcast or lossless, not {other:?}"),
    } as usize;
    let (tx, rx) = Relay::builder()
        .channel_size(size)
        .delivery_mode(mode)
        .error_mode(errors)
        .build()
        .unwrap();
    let mut relays = vec![rx.clone()];
    let mut drains = Vec::new();
    let mut specs = Vec::new();

    for _ in 0..rng.range(1, 4) {
        let (ty, tap, behaviour) = (
            random_ty(&mut rng),
            rng.chance(1, 3),
            random_behaviour(&mut rng),
        );
        add_handler(&rx, ty, tap, behaviour);
        let kind = if tap {
            HandlerKind::Tap
        } else {
            HandlerKind::Sink
        };
        specs.push(Spec {
            relay: rx.id(),
            ty,
            kind,
            behaviour,
            filter: None,
        });
    }
    for _ in 0..rng.below(3) {
        let (m, r) = (rng.range(2, 3) as u8, rng.below(2) as u8);
        let child = rx.filter::<A>(move |a| a.0 % m != r);
        for _ in 0..rng.range(0, 2) {
            let (tap, behaviour) = (rng.chance(1, 3), random_behaviour(&mut rng));
            add_handler(&child, Ty::A, tap, behaviour);
            let kind = if tap {
                HandlerKind::Tap
            } else {
                HandlerKind::Sink
            };
            specs.push(Spec {
                relay: child.id(),
                ty: Ty::A,
                kind,
                behaviour,
                filter: Some((m, r)),
            });
        }
        if rng.chance(1, 2) {
            drains.push(drain(child.subscribe::<A>()));
        }
        relays.push(child);
    }
    if rng.chance(2, 3) {
        // Behind the tracking boundary: its handlers' errors stay there.
        let mapped = rx.map::<B, C>(|b| C(b.0.wrapping_add(1)));
        add_handler(&mapped, Ty::C, false, random_behaviour(&mut rng));
        drains.push(drain(mapped.subscribe::<C>()));
        drains.push(drain(mapped.subscribe::<RelayError>()));
        relays.push(mapped);
    }
    if rng.chance(1, 2) {
        let batched = rx.batch::<C>(rng.range(1, 5) as usize).unwrap();
        drains.push(drain(batched.subscribe::<Vec<C>>()));
        relays.push(batched);
    }
    for _ in 0..rng.below(3) {
        let sub = with_ty!(random_ty(&mut rng), T => drain(rx.subscribe::<T>()));
        drains.push(sub);
    }
    drains.push(drain(rx.subscribe::<RelayError>()));

    let specs = Arc::new(specs);
    // `closing` is set just before the close, `closed` just after it returns.
    let closing = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..senders)
        .map(|i| {
            let weak: WeakSender = tx.weak();
            let (specs, closing, closed, started) = (
                specs.clone(),
                closing.clone(),
                closed.clone(),
                started.clone(),
            );
            let mut rng = Rng::new(rng.next());
            let quota = sends / senders + usize::from(i < sends % senders);
            common::spawn(async move {
                let mut tally = Tally::default();
                for _ in 0..quota {
                    let (ty, x) = (random_ty(&mut rng), rng.below(256) as u8);
                    started.fetch_add(1, Ordering::Relaxed);
                    // Once the close has returned, every send made afterwards is refused.
                    let closed_before = closed.load(Ordering::SeqCst);
                    let send: BoxFuture<Result<pipedream_rs::Receipt, SendError>> =
                        with_ty!(ty, T => Box::pin(weak.send(T::make(x))));
                    let result = within(BOUND, "a send", send).await;
                    let expected = expected_failures(&specs, ty, x);
                    let what = format!("seed {seed}: send {ty:?}({x}), expected {expected:?}");
                    match &result {
                        Err(SendError::Closed) => {
                            assert!(
                                closing.load(Ordering::SeqCst),
                                "{what}: Closed before the close"
                            );
                            tally.closed += 1;
                            continue;
                        }
                        _ if tally.closed > 0 => panic!("{what}: {result:?} after a Closed"),
                        _ if closed_before => panic!("{what}: {result:?} after the close"),
                        Ok(_) => {
                            assert!(expected.is_empty(), "{what}: Ok");
                            tally.ok += 1;
                        }
                        Err(SendError::Downstream(e)) if errors == ErrorMode::FirstWins => {
                            assert!(expected.contains(&failure_of(e)), "{what}: {e}");
                            tally.failed += 1;
                        }
                        Err(SendError::Aggregate(v)) if errors == ErrorMode::Aggregate => {
                            let mut got: Vec<_> = v.iter().map(failure_of).collect();
                            got.sort();
                            assert_eq!(got, expected, "{what}");
                            tally.failed += 1;
                        }
                        Err(other) => panic!("{what}: {other:?}"),
                    }
                    if let Err(e) = &result {
                        for e in e.errors() {
                            assert!(
                                e.downcast_ref::<Refused>().is_some()
                                    || e.downcast_ref::<PanicError>().is_some(),
                                "{what}: {e}"
                            );
                        }
                    }
                }
                tally
            })
        })
        .collect();

    // Close mid-flight in half the rounds.
    if rng.chance(1, 2) {
        let at = rng.below(sends as u64 + 1) as usize;
        // Bounded by progress: the count of sends started must move at least every BOUND.
        let mut last = (0, std::time::Instant::now());
        loop {
            let now = started.load(Ordering::Relaxed);
            if now >= at {
                break;
            }
            if now != last.0 {
                last = (now, std::time::Instant::now());
            }
            assert!(
                last.1.elapsed() < BOUND,
                "seed {seed}: the senders stopped at {now}"
            );
            common::sleep(Duration::from_millis(1)).await;
        }
        closing.store(true, Ordering::SeqCst);
        tx.close();
        closed.store(true, Ordering::SeqCst);
    }
    let mut tally = Tally::default();
    for t in futures::future::join_all(tasks).await {
        tally.ok += t.ok;
        tally.failed += t.failed;
        tally.closed += t.closed;
    }
    assert_eq!(tally.ok + tally.failed + tally.closed, sends, "seed {seed}");
    drop(tx);
    within(
        BOUND,
        &format!("seed {seed}: every subscription ends after the close"),
        futures::future::join_all(drains),
    )
    .await;
    drop(specs);
    wait_until(
        BOUND,
        &format!("seed {seed}: every relay freed, every task ended"),
        || relays.iter().all(|r| r.stats() == RelayStats::default()),
    )
    .await;
    tally
}

/// Live bytes once the runtime has settled (the smallest of a few readings, a few ms apart:
/// a finished task may free its own memory just after it reported its result).
async fn settled_live_bytes() -> isize {
    let mut least = isize::MAX;
    for _ in 0..5 {
        common::sleep(Duration::from_millis(5)).await;
        least = least.min(LIVE.load(Ordering::SeqCst));
    }
    least
}

async fn soak(runtime: &'static str) {
    let seed = seed();
    let total = operations_per_runtime();
    let per_round = (total / (ROUNDS + 1)).max(1);
    eprintln!("soak on {runtime}: seed {seed} (PIPEDREAM_SEED={seed} replays it), {total} sends");
    let mut rng = Rng::new(seed);
    let mut figures = Vec::new();
    let mut tally = Tally::default();
    for r in 0..=ROUNDS {
        let t = round(rng.next(), per_round).await;
        tally.ok += t.ok;
        tally.failed += t.failed;
        tally.closed += t.closed;
        figures.push(settled_live_bytes().await);
        let _ = r;
    }
    let baseline = figures[0];
    let growth: Vec<isize> = figures.iter().map(|f| f - baseline).collect();
    println!(
        "soak on {runtime}: seed {seed}, {} sends ({} ok, {} failed, {} closed) in {} rounds of {per_round}; \
         live bytes after the warm-up round {baseline}, then {:+?} relative",
        (ROUNDS + 1) * per_round,
        tally.ok,
        tally.failed,
        tally.closed,
        ROUNDS + 1,
        &growth[1..],
    );
    for (r, g) in growth.iter().enumerate().skip(1) {
        assert!(
            *g <= SLACK,
            "seed {seed}: round {r} left {g} bytes more live than the warm-up round \
             (figures {figures:?})"
        );
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    quiet_intended_panics(INTENDED);
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The whole soak is bounded too: 30 s, plus 5 ms per operation for long runs (every
/// await inside has its own bound as well).
async fn bounded(runtime: &'static str) {
    let limit =
        Duration::from_secs(30) + Duration::from_millis(5) * operations_per_runtime() as u32;
    if timeout(limit, soak(runtime)).await.is_none() {
        panic!("soak on {runtime} timed out after {limit:?}");
    }
}

// One runtime at a time (memory is measured process-wide).
#[cfg(feature = "smol")]
#[test]
fn random_concurrent_topologies_on_smol() {
    let _serial = serial();
    smol::block_on(bounded("smol"));
}

#[cfg(feature = "tokio")]
#[test]
fn random_concurrent_topologies_on_tokio() {
    let _serial = serial();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bounded("tokio"));
}

#[cfg(feature = "async-std")]
#[test]
fn random_concurrent_topologies_on_async_std() {
    let _serial = serial();
    async_std::task::block_on(bounded("async-std"));
}
