//! Deadlock detection: a wait-for graph of the relay's own tasks, checked when one of them
//! suspends.
//!
//! A handler processes one message at a time, so a handler that awaits a tracked send
//! which (directly, or through other handlers and forwarders) waits for that same handler
//! would wait forever. So would two forwarders in lossless mode each waiting for room in
//! the other's full queue. Such waits are detected *while they happen*, from who is
//! actually waiting on whom, and broken; nothing is decided from where a send was called.
//!
//! # The graph
//!
//! - A **node** is a task of the relay's own that drains a queue: a `sink`/`tap` handler,
//!   the forwarder of a derived relay, a `forward` or `merge` loop. Its id is its
//!   subscriber id. While its work is polled, a thread-local names it ([`InNode`]).
//! - A send polled inside a node and about to wait registers a **wait** of that node
//!   ([`Waiting`]): on the tracked handlers that have not settled its message yet (its
//!   tracker records who settles, from the send's first poll on), or, for a lossless send
//!   waiting for room, on the subscriber that drains the full queue. The wait is
//!   withdrawn when the send finishes, or is dropped — a send given up on (a timeout,
//!   `select!`, `now_or_never`) waits for nothing any more.
//! - A node is **suspended** while its task has returned `Pending` with waits registered.
//!
//! When a node suspends, a depth-first search follows its waits through the suspended
//! nodes. Reaching the node itself is a cycle: every task on it is suspended, each waiting
//! for the next, and none can proceed. One wait on the cycle is broken, and its task woken:
//!
//! - if the cycle holds a wait for room, that one: the message is queued over the
//!   capacity, by one, so lossless delivery stays lossless and the cycle moves on;
//! - otherwise the wait for handlers of a *handler* on the cycle (the one that closed it,
//!   if it is a handler): its send returns [`SendError::WouldDeadlock`]. The message is
//!   already queued for those handlers and is still processed when they get to it; only
//!   its outcome is not reported to this sender (a failure is still published as a
//!   `RelayError` event). A forwarder's wait is never the one broken: a forwarder only
//!   passes on its parent's message, and stopping there would report a failure to a
//!   sender that is not on the cycle. (Every cycle of waits for handlers has a handler on
//!   it: derived relays form trees.)
//!
//! Either is counted in `RelayStats::deadlocks_broken`.
//!
//! Edges are exact for waits for handlers: a handler that settled the message is no edge,
//! and the set only shrinks. A wait for room is an edge for as long as its sender has not
//! got its room: a slot freed by the node that drains the queue can be taken first by a
//! sender that is not a node, and the cycle then closes again while every node on it is
//! already suspended, with no suspension left to check it. Counting that edge until the
//! room is really taken means the check sees the cycle when its last node suspends; the
//! price, in the rare case where a woken sender had not run yet, is one message over the
//! capacity where waiting a moment more would have done (never a false error: a wait for
//! handlers is broken only on a cycle with no wait for room in it).
//!
//! Not seen: waits on anything but a relay's sends (a channel of your own, a lock), and
//! tasks that are not the relay's (a loop of yours over `subscribe_tracked`, a `within`
//! task, a task a handler spawns): they are not nodes.
//!
//! [`SendError::WouldDeadlock`]: crate::SendError::WouldDeadlock

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use crate::core::queue::QueueState;
use crate::core::tracker::Tracker;

/// A tracked send stopped waiting because waiting would never end: the handlers it waits
/// for are themselves waiting, directly or through others, for the task that made it.
///
/// Returned as [`SendError::WouldDeadlock`](crate::SendError::WouldDeadlock). The message was
/// delivered (queued) and will still be processed; what this send gives up is learning its
/// outcome.
///
/// # Examples
///
/// A sink that awaits a send of its own type waits for itself:
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::{Relay, SendError};
/// let (tx, rx) = Relay::channel();
/// let again = tx.weak();
/// rx.sink_async::<u32>(move |n| {
///     let again = again.clone();
///     async move {
///         if *n == 0 {
///             // Queued behind the message this sink is processing, so never processed
///             // while it waits: detected, and the wait is given up.
///             match again.send(1u32).await {
///                 Err(SendError::WouldDeadlock(_)) => {}
///                 other => panic!("{other:?}"),
///             }
///         }
///     }
/// });
/// tx.send(0u32).await.unwrap();
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "deadlock avoided: stopped waiting for message {msg_id}, whose handlers wait, in turn, \
     for the task that sent it (subscribers {cycle:?}); the message stays queued and is \
     still processed"
)]
#[non_exhaustive]
pub struct WouldDeadlock {
    /// The message this send stopped waiting for.
    pub msg_id: u64,
    /// The cycle of waits, as subscriber ids: the sending task first, then each task it
    /// waited for, in turn, up to one that waits for the first.
    pub cycle: Vec<u64>,
}

impl WouldDeadlock {
    pub(crate) fn new(msg_id: u64, cycle: Vec<u64>) -> Self {
        WouldDeadlock { msg_id, cycle }
    }
}

/// One of the relay's own tasks that drains a queue (see the module docs).
pub(crate) struct Node {
    pub(crate) id: u64,
    /// A handler (`sink`, `tap`), whose own sends may be told to stop waiting; `false` for
    /// a forwarder, which only passes its parent's messages on.
    handler: bool,
    /// The waits of sends polled in this task that are still waiting.
    waits: Mutex<Vec<Arc<Wait>>>,
    /// `waits.len()`, so a poll that returns `Pending` with none (the common case: a
    /// handler waiting for its next message) takes no lock.
    count: std::sync::atomic::AtomicUsize,
    /// In [`SUSPENDED`]. Written under that lock; read without it as a hint.
    suspended: AtomicBool,
}

impl Node {
    /// The node of a `sink`/`tap` handler with subscriber id `id`.
    pub(crate) fn handler(id: u64) -> Arc<Node> {
        Self::new(id, true)
    }

    /// The node of a forwarder (derived relay, `forward`, `merge`) with subscriber id `id`.
    pub(crate) fn forwarder(id: u64) -> Arc<Node> {
        Self::new(id, false)
    }

    fn new(id: u64, handler: bool) -> Arc<Node> {
        Arc::new(Node {
            id,
            handler,
            waits: Mutex::new(Vec::new()),
            count: std::sync::atomic::AtomicUsize::new(0),
            suspended: AtomicBool::new(false),
        })
    }

    fn waits(&self) -> MutexGuard<'_, Vec<Arc<Wait>>> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a waiting send waits on.
pub(crate) enum On {
    /// The tracked handlers that have not settled this message yet.
    Handlers(Arc<Tracker>),
    /// Room in this (full) lossless queue: its subscriber, which drains it.
    Room(crate::core::sync::Arc<QueueState>),
}

/// One wait of a node.
pub(crate) struct Wait {
    on: On,
    /// Set by the check that found this wait on a cycle: the send must stop waiting.
    broken: AtomicBool,
    /// The cycle found, for the error.
    cycle: Mutex<Vec<u64>>,
    /// Wakes the waiting task, for a check run by another task (a wait for room).
    waker: Mutex<Option<std::task::Waker>>,
}

impl Wait {
    /// The nodes this wait waits for now (none once it is satisfied; see the module docs
    /// for why a wait for room counts until the room is taken).
    fn waits_for(&self) -> Vec<u64> {
        if self.broken.load(Ordering::Acquire) {
            return Vec::new(); // about to end: no longer an edge (no second break)
        }
        match &self.on {
            On::Handlers(tracker) => tracker.unsettled(),
            On::Room(queue) => vec![queue.id],
        }
    }

    fn is_room(&self) -> bool {
        matches!(self.on, On::Room(_))
    }

    /// Breaks this wait, naming the cycle it is on. Returns the waker of the future that
    /// waits (recorded at its last `Pending`), to be woken once every lock is released:
    /// the waiting future's own waker, not its task's (a combinator such as
    /// `FuturesUnordered` would ignore a wake of the task).
    fn break_on(&self, cycle: Vec<u64>) -> Option<std::task::Waker> {
        *self.cycle.lock().unwrap_or_else(|e| e.into_inner()) = cycle;
        self.broken.store(true, Ordering::Release);
        self.waker.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Nodes whose task is suspended with waits registered, by id.
static SUSPENDED: Mutex<BTreeMap<u64, Arc<Node>>> = Mutex::new(BTreeMap::new());

fn suspended() -> MutexGuard<'static, BTreeMap<u64, Arc<Node>>> {
    SUSPENDED.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The node whose work this thread is polling now.
    static CURRENT: RefCell<Option<Arc<Node>>> = const { RefCell::new(None) };
}

/// `true` while a node's work is polled on this thread: a send first polled now has its
/// tracker record who settles it.
pub(crate) fn in_node() -> bool {
    CURRENT.with(|current| current.borrow().is_some())
}

/// A send's wait, registered with the node polling it; withdrawn when dropped.
pub(crate) struct Waiting {
    node: Arc<Node>,
    wait: Arc<Wait>,
}

impl Waiting {
    fn register_with(node: Arc<Node>, on: On) -> Waiting {
        let wait = Arc::new(Wait {
            on,
            broken: AtomicBool::new(false),
            cycle: Mutex::new(Vec::new()),
            waker: Mutex::new(None),
        });
        let mut waits = node.waits();
        waits.push(wait.clone());
        node.count.store(waits.len(), Ordering::Release);
        drop(waits);
        Waiting { node, wait }
    }

    /// At each `Pending` of a waiting send: keep `slot` registered with the node polling
    /// it now (none outside the relay's tasks), moving it if the send was handed to another
    /// task since, and record the waker to wake if the check breaks the wait.
    pub(crate) fn refresh(slot: &mut Option<Waiting>, on: impl FnOnce() -> On, cx: &Context<'_>) {
        let current = CURRENT.with(|current| current.borrow().clone());
        let here = match (slot.as_ref(), &current) {
            (Some(waiting), Some(node)) => Arc::ptr_eq(&waiting.node, node),
            (None, None) => true,
            _ => false,
        };
        if !here {
            *slot = current.map(|node| Waiting::register_with(node, on()));
        }
        if let Some(waiting) = slot {
            let mut waker = waiting.wait.waker.lock().unwrap_or_else(|e| e.into_inner());
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
    }

    /// The check found this wait on a cycle: `Some(cycle)`, and the send must stop
    /// waiting — if it is polled by the node it was registered with. A send polled inside
    /// one task and then handed to another (or to code outside the relay's tasks) left a
    /// stale wait behind, until this poll; a break found through that wait is no reason
    /// to stop, and `refresh` registers it afresh where it is now.
    pub(crate) fn broken(&self) -> Option<Vec<u64>> {
        let here = CURRENT.with(|current| {
            current
                .borrow()
                .as_ref()
                .is_some_and(|node| Arc::ptr_eq(node, &self.node))
        });
        if !here {
            return None;
        }
        self.wait.broken.load(Ordering::Acquire).then(|| {
            self.wait
                .cycle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let removed = {
            let mut waits = self.node.waits();
            let at = waits.iter().position(|w| Arc::ptr_eq(w, &self.wait));
            let removed = at.map(|at| waits.swap_remove(at));
            self.node.count.store(waits.len(), Ordering::Release);
            removed
        };
        drop(removed); // outside the lock (see `Trash`)
    }
}

/// What the graph's walk let go of, dropped once its locks are released: the last copy
/// of a wait can own a send's tracker, and with it queue senders and user values whose
/// drops wake tasks or run user code (which could come back for the same locks).
#[derive(Default)]
struct Trash {
    waits: Vec<Arc<Wait>>,
    nodes: Vec<Arc<Node>>,
}

impl Trash {
    fn path(&mut self, path: Vec<(Arc<Node>, Arc<Wait>)>) {
        for (node, wait) in path {
            self.nodes.push(node);
            self.waits.push(wait);
        }
    }
}

pin_project_lite::pin_project! {
    /// Polls `fut` as the work of `node`: sends polled inside register their waits with it,
    /// and when it suspends with waits, the graph is checked for a cycle through it.
    pub(crate) struct InNode<F> {
        #[pin]
        fut: F,
        node: Arc<Node>,
    }

    impl<F> PinnedDrop for InNode<F> {
        fn drop(this: Pin<&mut Self>) {
            resume(this.project().node);
        }
    }
}

impl<F> InNode<F> {
    pub(crate) fn new(node: Arc<Node>, fut: F) -> Self {
        InNode { fut, node }
    }
}

impl<F: Future> Future for InNode<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        resume(this.node);
        // Restores the outer node on return *and* on unwind (handler panics are caught
        // further out).
        struct Restore(Option<Arc<Node>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = outer);
            }
        }
        let polled = {
            let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(this.node.clone())));
            this.fut.poll(cx)
        };
        if polled.is_pending() && this.node.count.load(Ordering::Acquire) > 0 {
            suspend(this.node);
        }
        polled
    }
}

/// The node runs again (or its work is dropped): it is no longer suspended.
fn resume(node: &Arc<Node>) {
    if node.suspended.load(Ordering::Acquire) {
        let removed = {
            let mut graph = suspended();
            let removed = graph.remove(&node.id);
            node.suspended.store(false, Ordering::Release);
            removed
        };
        drop(removed); // outside the lock (see `Trash`)
    }
}

/// `node` suspends with waits registered: record it, then look for a cycle through it,
/// and break a wait on it (see the module docs for which). The woken future is woken after
/// the graph's lock is released.
fn suspend(node: &Arc<Node>) {
    let mut trash = Trash::default();
    let waker = {
        let mut graph = suspended();
        trash.nodes.extend(graph.insert(node.id, node.clone()));
        node.suspended.store(true, Ordering::Release);
        find_and_break(&graph, node, &mut trash)
    };
    drop(trash);
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn find_and_break(
    graph: &BTreeMap<u64, Arc<Node>>,
    node: &Arc<Node>,
    trash: &mut Trash,
) -> Option<std::task::Waker> {
    let waits: Vec<Arc<Wait>> = node.waits().clone();
    let found = find_cycle(graph, node, &waits, trash);
    trash.waits.extend(waits);
    found
}

fn find_cycle(
    graph: &BTreeMap<u64, Arc<Node>>,
    node: &Arc<Node>,
    waits: &[Arc<Wait>],
    trash: &mut Trash,
) -> Option<std::task::Waker> {
    for wait in waits {
        for next in wait.waits_for() {
            // Cheap first: a cycle must go on through a suspended node (or this one).
            if next != node.id && !graph.contains_key(&next) {
                continue;
            }
            let mut path = vec![(node.clone(), wait.clone())];
            let mut seen = BTreeSet::new();
            if !reaches(graph, node.id, next, &mut path, &mut seen, trash) {
                trash.path(path);
                continue;
            }
            let cycle: Vec<u64> = path.iter().map(|(n, _)| n.id).collect();
            let room = path.iter().find(|(_, w)| w.is_room());
            let handler = || {
                // This node's own wait if it is a handler, else the first handler's.
                path.iter()
                    .find(|(n, _)| n.id == node.id && n.handler)
                    .or_else(|| path.iter().find(|(n, _)| n.handler))
            };
            let waker = room
                .or_else(handler)
                .and_then(|(_, chosen)| chosen.break_on(cycle));
            trash.path(path);
            return waker;
        }
    }
    None
}

/// Depth-first search: does `from`, through suspended nodes' live waits, reach `target`?
/// `path` ends with the nodes walked and the wait taken from each, for the choice of the
/// wait to break and the error.
fn reaches(
    graph: &BTreeMap<u64, Arc<Node>>,
    target: u64,
    from: u64,
    path: &mut Vec<(Arc<Node>, Arc<Wait>)>,
    seen: &mut BTreeSet<u64>,
    trash: &mut Trash,
) -> bool {
    if from == target {
        return true;
    }
    if !seen.insert(from) {
        return false;
    }
    let Some(node) = graph.get(&from) else {
        return false; // not suspended: it can still make progress
    };
    let waits: Vec<Arc<Wait>> = node.waits().clone();
    let mut found = false;
    'search: for wait in &waits {
        for next in wait.waits_for() {
            path.push((node.clone(), wait.clone()));
            if reaches(graph, target, next, path, seen, trash) {
                found = true;
                break 'search;
            }
            trash.path(path.pop().into_iter().collect());
        }
    }
    trash.waits.extend(waits);
    found
}
