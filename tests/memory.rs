//! Memory: a subscriber's queue costs what it holds, not what it could hold.
//!
//! A counting global allocator tracks, per thread, the bytes allocated and not yet freed.
//! Each test measures work done on its own thread, so tests running in parallel (and the
//! harness) do not disturb the numbers. Run with `--nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use futures::executor::block_on;
use pipedream_rs::{BoxFuture, Relay, RelayReceiver, RelaySender, DEFAULT_CHANNEL_SIZE};

struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = NET.try_with(|n| n.set(n.get() + bytes));
}

// SAFETY: every call is forwarded unchanged to `System`; we only count.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn net_bytes() -> isize {
    NET.with(Cell::get)
}

const SUBSCRIBERS: usize = 1_000;

/// A relay that needs no runtime: nothing here spawns a task.
fn relay(capacity: usize) -> (RelaySender, RelayReceiver) {
    Relay::builder()
        .channel_size(capacity)
        .spawner(|task: BoxFuture| drop(task))
        .build()
        .unwrap()
}

/// Bytes per idle subscriber: `SUBSCRIBERS` typed subscriptions on a fresh relay.
fn bytes_per_idle_subscriber(capacity: usize) -> f64 {
    let (_tx, rx) = relay(capacity);
    let mut subs = Vec::with_capacity(SUBSCRIBERS); // the handles' own storage is not counted
    let before = net_bytes();
    for _ in 0..SUBSCRIBERS {
        subs.push(rx.subscribe::<u64>());
    }
    let grown = net_bytes() - before;
    grown as f64 / SUBSCRIBERS as f64
}

#[test]
fn idle_subscribers_at_the_default_capacity_cost_under_1_kib_each() {
    assert_eq!(DEFAULT_CHANNEL_SIZE, 65_536);
    let at_default = bytes_per_idle_subscriber(DEFAULT_CHANNEL_SIZE);
    let at_one = bytes_per_idle_subscriber(1);
    println!(
        "idle subscriber: {at_default:.0} bytes at capacity {DEFAULT_CHANNEL_SIZE}, \
         {at_one:.0} bytes at capacity 1 (mean of {SUBSCRIBERS})"
    );
    assert!(at_default > 0.0);
    assert!(
        at_default < 1024.0,
        "{at_default:.0} bytes per idle subscriber"
    );
    // The capacity is a number, not an allocation.
    assert!(
        (at_default - at_one).abs() < 8.0,
        "{at_default:.0} vs {at_one:.0}"
    );
}

/// Bytes per subscriber that has received messages and drained its queue: `SUBSCRIBERS`
/// subscriptions on a fresh relay (no warm-up: everything the subscribers caused counts),
/// each sent `messages` messages that it reads with `drain` until it finds its queue empty.
fn bytes_per_subscriber_after_use(
    messages: u64,
    drain: fn(&mut pipedream_rs::Subscription<u64>) -> u64,
) -> f64 {
    let (tx, rx) = relay(DEFAULT_CHANNEL_SIZE);
    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    let before = net_bytes();
    for _ in 0..SUBSCRIBERS {
        subs.push(rx.subscribe::<u64>());
    }
    for i in 0..messages {
        block_on(tx.send(i)).unwrap();
    }
    for sub in &mut subs {
        assert_eq!(drain(sub), messages);
    }
    let grown = net_bytes() - before;
    grown as f64 / SUBSCRIBERS as f64
}

/// Reads with `try_recv` until it reports `Empty`.
fn drain_with_try_recv(sub: &mut pipedream_rs::Subscription<u64>) -> u64 {
    let mut n = 0;
    while sub.try_recv().is_ok() {
        n += 1;
    }
    n
}

/// Reads with `recv`, polled once at a time, until it would wait.
fn drain_with_recv(sub: &mut pipedream_rs::Subscription<u64>) -> u64 {
    use futures::FutureExt;
    let mut n = 0;
    while sub.recv().now_or_never().is_some() {
        n += 1;
    }
    n
}

/// Reads with `try_recv_many` runs of 64 until a run comes back short (which empties the
/// queue): the messages themselves are dropped at once.
fn drain_with_try_recv_many(sub: &mut pipedream_rs::Subscription<u64>) -> u64 {
    let mut n = 0;
    loop {
        let mut buf = Vec::new();
        let took = sub.try_recv_many(&mut buf, 64);
        n += took as u64;
        if took < 64 {
            return n;
        }
    }
}

#[test]
fn a_subscriber_that_received_and_drained_costs_under_1_kib_again() {
    for (messages, how, drain) in [
        (1, "try_recv", drain_with_try_recv as fn(&mut _) -> u64),
        (1, "recv", drain_with_recv),
        (100, "try_recv", drain_with_try_recv),
        (100, "recv", drain_with_recv),
        (1, "try_recv_many", drain_with_try_recv_many),
        (100, "try_recv_many", drain_with_try_recv_many),
    ] {
        let bytes = bytes_per_subscriber_after_use(messages, drain);
        println!(
            "subscriber after {messages} message(s) read with {how} and drained: {bytes:.0} bytes \
             (mean of {SUBSCRIBERS})"
        );
        assert!(
            bytes < 1024.0,
            "{bytes:.0} bytes per drained subscriber ({messages} message(s), {how})"
        );
    }
}

#[test]
fn queue_memory_grows_with_what_is_queued_and_shrinks_as_it_is_read() {
    const QUEUED: usize = 10_000;
    let (tx, rx) = relay(DEFAULT_CHANNEL_SIZE);
    let mut sub = rx.subscribe::<u64>();
    // Warm up: one message through, so the relay's one-off structures exist.
    block_on(tx.send(0u64)).unwrap();
    assert_eq!(sub.try_recv().map(|n| *n), Ok(0));

    let idle = net_bytes();
    for i in 0..QUEUED as u64 {
        block_on(tx.send(i)).unwrap();
    }
    let full = net_bytes();
    assert_eq!(sub.len(), QUEUED);
    let per_message = (full - idle) as f64 / QUEUED as f64;

    for i in 0..QUEUED as u64 {
        assert_eq!(sub.try_recv().map(|n| *n), Ok(i));
    }
    let drained = net_bytes();
    println!(
        "queued: {per_message:.0} bytes per queued u64 message ({QUEUED} queued: +{} bytes); \
         after reading them all: {:+} bytes from idle",
        full - idle,
        drained - idle
    );
    // Each queued message costs its own slot and value, nothing proportional to capacity.
    assert!(
        per_message > 8.0,
        "{per_message:.0} bytes per queued message"
    );
    assert!(
        per_message < 256.0,
        "{per_message:.0} bytes per queued message"
    );
    // Reading gives the memory back: a drained queue lets go of its channel too.
    assert!(
        drained - idle < 256,
        "{} bytes still held after draining",
        drained - idle
    );
}

#[test]
fn dropped_subscribers_give_their_memory_back() {
    let (tx, rx) = relay(DEFAULT_CHANNEL_SIZE);
    // Warm up the one-off structures: the registry's route for the type, and this
    // thread's arc-swap debt node (taken at a thread's first use of a queue's channel
    // slot and kept for the thread's life; it is allocated only when no node a finished
    // thread gave back is free, so without this the figure depended on other tests).
    let mut warm = rx.subscribe::<u64>();
    block_on(tx.send(0u64)).unwrap();
    assert_eq!(warm.try_recv().map(|v| *v), Ok(0));
    drop(warm);
    // Three measured rounds, judged by the smallest: a cost per subscriber that is not
    // given back shows in every round, while a one-off allocation made meanwhile by
    // something else (one of 1,148 B was seen now and then, cause unknown: another thread
    // of the test binary, or a lazily grown structure) shows in one round only.
    let rounds: Vec<isize> = (0..3)
        .map(|_| {
            let before = net_bytes();
            let subs: Vec<_> = (0..SUBSCRIBERS).map(|_| rx.subscribe::<u64>()).collect();
            drop(subs);
            net_bytes() - before
        })
        .collect();
    println!("{SUBSCRIBERS} subscribers made and dropped, three rounds: {rounds:?} bytes");
    let least = rounds.iter().copied().min().unwrap_or(isize::MAX);
    assert!(
        least < 1024,
        "{least} bytes still held after the best round"
    );
    assert_eq!(rx.stats().subscribers, 0);
}

/// A send future is moved into its caller's future, so its size is copied on every send;
/// it stays near the size of the prepared message (an `async fn` version was 488 bytes).
#[test]
fn send_futures_stay_small() {
    let (tx, _rx) = relay(8);
    let weak = tx.weak();
    let sizes = [
        std::mem::size_of_val(&tx.send([0u64; 4])),
        std::mem::size_of_val(&weak.send([0u64; 4])),
        std::mem::size_of_val(&tx.send_any(std::sync::Arc::new(1u8), std::any::TypeId::of::<u8>())),
    ];
    println!("send future sizes (send, weak send, send_any): {sizes:?} bytes");
    assert!(sizes.iter().all(|&s| s <= 128), "{sizes:?}");
}

/// Runs every task it is given on the calling thread, when `run_until_stalled` is called,
/// so the counting allocator (per thread) sees all of the relay's allocations.
#[derive(Clone, Default)]
struct SameThread(std::sync::Arc<std::sync::Mutex<Vec<BoxFuture>>>);

impl SameThread {
    fn spawner(&self) -> impl Fn(BoxFuture) + Send + Sync + 'static {
        let queue = self.0.clone();
        move |task| queue.lock().unwrap().push(task)
    }

    /// Polls every task until none makes progress; finished tasks are dropped.
    fn run_until_stalled(&self) {
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            let tasks = std::mem::take(&mut *self.0.lock().unwrap());
            if tasks.is_empty() {
                return;
            }
            let before = tasks.len();
            let mut pending = Vec::new();
            for mut task in tasks {
                if task.as_mut().poll(&mut cx).is_pending() {
                    pending.push(task);
                }
            }
            let stalled = pending.len() == before && self.0.lock().unwrap().is_empty();
            self.0.lock().unwrap().extend(pending);
            if stalled {
                return;
            }
        }
    }
}

#[test]
fn deriving_and_dropping_children_leaves_memory_flat() {
    // 11.11: a forwarder used to live as long as its parent, even with nobody holding its
    // child: a relay that derives a child per request grew without bound.
    const CYCLES: usize = 100_000;
    let executor = SameThread::default();
    let (tx, rx) = Relay::builder()
        .spawner(executor.spawner())
        .build()
        .unwrap();
    let cycle = |i: usize| {
        let child = if i % 2 == 0 {
            rx.filter::<u32>(|_| true)
        } else {
            rx.map::<u32, u64>(|n| u64::from(*n))
        };
        let sub = child.subscribe::<u32>();
        executor.run_until_stalled();
        drop(sub);
        drop(child);
        executor.run_until_stalled(); // the forwarder sees its child unobserved and ends
    };
    for i in 0..1_000 {
        cycle(i); // warm up: the parent's entries and the executor's queue exist
    }
    let before = net_bytes();
    for i in 0..CYCLES {
        cycle(i);
    }
    let grown = net_bytes() - before;
    let stats = rx.stats();
    println!("{CYCLES} children derived and dropped: {grown:+} bytes; {stats:?}");
    assert_eq!((stats.live_tasks, stats.subscribers), (0, 0));
    assert!(
        grown < 64 * 1024,
        "{grown} bytes kept after {CYCLES} derive-and-drop cycles"
    );
    drop(tx);
}

/// Retention is bounded by what it keeps: after the ring is full, sending more retained
/// messages holds no more memory (each evicted value is freed), and what it holds is the
/// kept messages and the ring, measured here.
#[test]
fn retention_memory_is_bounded_by_the_messages_it_keeps() {
    const KEEP: usize = 100;
    let spawner = |_task: BoxFuture| {};
    let (tx, _rx) = Relay::builder()
        .spawner(spawner)
        .retain::<u64>(KEEP)
        .build()
        .unwrap();
    let start = net_bytes();
    for n in 0..KEEP as u64 {
        block_on(tx.send(n)).unwrap();
    }
    let full = net_bytes();
    for n in 0..10_000u64 {
        block_on(tx.send(n)).unwrap();
    }
    let after = net_bytes();
    println!(
        "retaining {KEEP} u64: {} bytes held; 10,000 more sends: {:+} bytes",
        full - start,
        after - full
    );
    assert!(
        after - full < 1024,
        "retention grew by {} bytes",
        after - full
    );
    assert!(
        (full - start) < (KEEP as isize) * 128,
        "{} bytes for {KEEP} retained u64",
        full - start
    );
}
