//! Property tests: random programs, run on every enabled runtime, checked against a model.
//!
//! A program is a relay configuration (delivery mode, error mode, a queue size of 1..=8)
//! and a list of operations: subscribe, sink (succeeds / fails / panics / is slow), tap
//! (succeeds / fails), filter, map, batch, drop a subscription, send one typed value,
//! send a concurrent burst of mixed types, close. Every value carries a unique sequence
//! number and a byte `x` that decides what each handler does with it, so the model knows,
//! for every send, which tracked handlers see it and which of them fail.
//!
//! Checked on every run:
//! - every send returns (bounded), `Closed` exactly after a close, otherwise `Ok` exactly
//!   when no tracked handler of that message failed; the errors returned are the
//!   `RelayError` events published for that message (same relay, message id, kind, text)
//!   and, in `Aggregate` mode, all of them; when it returns, every tracked handler of the
//!   message has run;
//! - relays behind the tracking boundary (`filter` chains from the root are tracked; below
//!   a `map`/`batch` they are not): every value a subscriber or handler sees is one the
//!   model allows there, with the right (mapped) value, once, in send order, in batches of
//!   the right size; lossless: nothing sent after it registered is missing;
//! - tracked side, lossless: every subscriber got exactly the messages of its type sent
//!   while it existed, in send order (concurrent sends of one burst in any order);
//!   broadcast: received + `Subscription::dropped()` == sent, per subscriber;
//! - every `RelayError` event is accounted for: received + dropped == the failures the
//!   handlers' own logs imply, on every relay;
//! - after close, every subscription ends with `None`; after everything is dropped, every
//!   relay's internals are freed and its tasks ended (`stats()` all zero).
//!
//! `PROPTEST_CASES` (default 64) cases per runtime. Failures shrink to a minimal program
//! and are kept in `proptest-regressions/properties.txt`, replayed first on every run.

mod common;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{join_all, select, Either};
use pipedream_rs::{
    DeliveryMode, ErrorMode, HandlerKind, PanicError, Relay, RelayError, RelayReceiver, RelayStats,
    SendError, Subscription,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

use common::{failure_of, quiet_intended_panics, within, yield_now, Failure, Gate, Ty};

/// Bound on every await inside a program.
const BOUND: Duration = Duration::from_secs(10);
const INTENDED: &str = "intended panic (properties test)";
/// At most this many derived relays per program.
const MAX_DERIVED: usize = 6;

// ----- message types ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Val {
    seq: u32,
    x: u8,
}

trait Msg: Any + Send + Sync + Clone + std::fmt::Debug {
    fn make(v: Val) -> Self;
    fn val(&self) -> Val;
}

macro_rules! msg_types {
    ($($name:ident),*) => {$(
        #[derive(Clone, Debug)]
        struct $name(Val);
        impl Msg for $name {
            fn make(v: Val) -> Self { $name(v) }
            fn val(&self) -> Val { self.0 }
        }
    )*};
}
msg_types!(A, B, C);

fn type_name(ty: Ty) -> &'static str {
    with_ty!(ty, T => std::any::type_name::<T>())
}

// ----- what handlers and derived relays do with a value --------------------------------

#[derive(Debug, thiserror::Error)]
#[error("refused x={0}")]
struct Refused(u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SinkKind {
    Ok,
    /// Fails when `x % m == 0`.
    Err(u8),
    /// Panics when `x % m == 1`.
    Panic(u8),
    /// Succeeds after yielding (and now and then sleeping 1 ms).
    Slow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HKind {
    Sink(SinkKind),
    /// Fails when `x % m == m - 1`.
    Tap(Option<u8>),
}

/// `Some(is_panic)` if a handler of this kind fails on `x`.
fn fails(kind: HKind, x: u8) -> Option<bool> {
    match kind {
        HKind::Sink(SinkKind::Err(m)) if x % m == 0 => Some(false),
        HKind::Sink(SinkKind::Panic(m)) if x % m == 1 => Some(true),
        HKind::Tap(Some(m)) if x % m == m - 1 => Some(false),
        _ => None,
    }
}

fn handler_kind(kind: HKind) -> HandlerKind {
    match kind {
        HKind::Sink(_) => HandlerKind::Sink,
        HKind::Tap(_) => HandlerKind::Tap,
    }
}

fn run_handler(kind: HKind, x: u8) -> Result<(), Refused> {
    match fails(kind, x) {
        Some(true) => panic!("{INTENDED}"),
        Some(false) => Err(Refused(x)),
        None => Ok(()),
    }
}

fn passes(x: u8, m: u8, r: u8) -> bool {
    x % m != r
}

fn mapped(x: u8) -> u8 {
    x.wrapping_mul(7).wrapping_add(3)
}

async fn slow(x: u8) {
    for _ in 0..x % 4 {
        yield_now().await;
    }
    if x % 16 == 0 {
        common::sleep(Duration::from_millis(1)).await;
    }
}

type Log = Arc<Mutex<Vec<Val>>>;

fn add_handler<T: Msg>(rx: &RelayReceiver, kind: HKind, log: Log) {
    match kind {
        HKind::Sink(SinkKind::Slow) => rx.sink_async::<T>(move |m: Arc<T>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(m.val());
                slow(m.val().x).await;
            }
        }),
        HKind::Sink(_) => rx.sink::<T>(move |m: &T| {
            log.lock().unwrap().push(m.val());
            run_handler(kind, m.val().x)
        }),
        HKind::Tap(_) => {
            rx.tap::<T>(move |m: &T| {
                log.lock().unwrap().push(m.val());
                run_handler(kind, m.val().x)
            });
        }
    }
}

// ----- programs -----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Subscribe {
        node: usize,
        ty: Ty,
    },
    Sink {
        node: usize,
        ty: Ty,
        kind: SinkKind,
    },
    Tap {
        node: usize,
        ty: Ty,
        fail: Option<u8>,
    },
    Filter {
        node: usize,
        ty: Ty,
        m: u8,
        r: u8,
    },
    Map {
        node: usize,
        from: Ty,
        to: Ty,
    },
    Batch {
        node: usize,
        ty: Ty,
        n: usize,
    },
    /// Drops the i-th live subscription (modulo their number).
    DropHandle(usize),
    Send(Ty, u8),
    /// Concurrent sends (clamped to the queue size in broadcast mode, so a tracked
    /// handler's queue never overflows: that would fail the send with `QueueFull`).
    Burst(Vec<(Ty, u8)>),
    Close,
}

#[derive(Clone, Debug)]
struct Program {
    mode: DeliveryMode,
    errors: ErrorMode,
    size: usize,
    ops: Vec<Op>,
}

fn ty() -> impl Strategy<Value = Ty> {
    prop_oneof![Just(Ty::A), Just(Ty::B), Just(Ty::C)]
}

fn sink_kind() -> impl Strategy<Value = SinkKind> {
    prop_oneof![
        Just(SinkKind::Ok),
        (2u8..=4).prop_map(SinkKind::Err),
        (2u8..=4).prop_map(SinkKind::Panic),
        Just(SinkKind::Slow),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let node = || 0usize..8;
    prop_oneof![
        4 => (node(), ty()).prop_map(|(node, ty)| Op::Subscribe { node, ty }),
        4 => (node(), ty(), sink_kind()).prop_map(|(node, ty, kind)| Op::Sink { node, ty, kind }),
        3 => (node(), ty(), proptest::option::of(2u8..=4))
            .prop_map(|(node, ty, fail)| Op::Tap { node, ty, fail }),
        2 => (node(), ty(), 2u8..=3, 0u8..3)
            .prop_map(|(node, ty, m, r)| Op::Filter { node, ty, m, r: r % m }),
        2 => (node(), ty(), ty()).prop_map(|(node, from, to)| Op::Map { node, from, to }),
        2 => (node(), ty(), 1usize..=3).prop_map(|(node, ty, n)| Op::Batch { node, ty, n }),
        1 => (0usize..8).prop_map(Op::DropHandle),
        12 => (ty(), any::<u8>()).prop_map(|(t, x)| Op::Send(t, x)),
        4 => proptest::collection::vec((ty(), any::<u8>()), 2..=4).prop_map(Op::Burst),
        1 => Just(Op::Close),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    (
        prop_oneof![Just(DeliveryMode::Broadcast), Just(DeliveryMode::Lossless)],
        prop_oneof![Just(ErrorMode::FirstWins), Just(ErrorMode::Aggregate)],
        1usize..=8,
        proptest::collection::vec(op(), 0..40),
    )
        .prop_map(|(mode, errors, size, ops)| Program {
            mode,
            errors,
            size,
            ops,
        })
}

// ----- the world a program builds, and its model --------------------------------------

#[derive(Clone, Copy, Debug)]
enum NodeKind {
    Root,
    Filter { ty: Ty, m: u8, r: u8 },
    Map { from: Ty, to: Ty },
    Batch { ty: Ty, n: usize },
}

struct Node {
    rx: RelayReceiver,
    parent: Option<usize>,
    kind: NodeKind,
    /// Root, or a filter chain from the root: tracked by the root's sends.
    tracked: bool,
    errors: Option<Subscription<RelayError>>,
    /// Every `RelayError` event received from this relay.
    events: Vec<RelayError>,
    /// `errors.dropped()` when last read.
    events_dropped: u64,
}

/// What a subscription's task collected. Plain subscriptions give one-element items.
struct Drained {
    items: Vec<Vec<Val>>,
    dropped: u64,
    /// It saw the end (`None`), rather than being stopped.
    ended: bool,
}

type DrainTask = Pin<Box<dyn Future<Output = Drained> + Send>>;

struct Sub {
    node: usize,
    ty: Ty,
    created: usize,
    batch: Option<usize>,
    stop: Gate,
    task: Option<DrainTask>,
    /// The op that dropped it (`usize::MAX` if it lived to the end) and what it got.
    done: Option<(usize, Drained)>,
}

struct Handler {
    node: usize,
    ty: Ty,
    kind: HKind,
    created: usize,
    log: Log,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u32,
    op: usize,
    ty: Ty,
    x: u8,
    closed: bool,
}

struct World {
    mode: DeliveryMode,
    errors: ErrorMode,
    size: usize,
    nodes: Vec<Node>,
    subs: Vec<Sub>,
    handlers: Vec<Handler>,
    sends: Vec<Sent>,
    closed: bool,
    next_seq: u32,
}

/// Spawns a task that reads `sub` until it ends or `stop` opens (then takes what is
/// queued, without waiting, and drops it).
fn start_drain<T: Any + Send + Sync>(
    mut sub: Subscription<T>,
    stop: Gate,
    vals: fn(&T) -> Vec<Val>,
) -> DrainTask {
    Box::pin(common::spawn(async move {
        let mut items = Vec::new();
        loop {
            let next = {
                let recv = pin!(sub.recv());
                let stopped = pin!(stop.wait());
                match select(recv, stopped).await {
                    Either::Left((m, _)) => Some(m),
                    Either::Right(_) => None,
                }
            };
            match next {
                Some(Some(m)) => items.push(vals(&m)),
                Some(None) => {
                    return Drained {
                        items,
                        dropped: sub.dropped(),
                        ended: true,
                    }
                }
                None => {
                    while let Ok(m) = sub.try_recv() {
                        items.push(vals(&m));
                    }
                    return Drained {
                        items,
                        dropped: sub.dropped(),
                        ended: false,
                    };
                }
            }
        }
    }))
}

/// Everything a published or returned error says, to compare the two.
fn full(e: &RelayError) -> (u64, u64, String) {
    (e.relay_id, e.msg_id, e.to_string())
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// `small` is a sub-multiset of `big`.
fn is_submultiset<T: Ord + Clone + std::fmt::Debug>(small: &[T], big: &[T]) -> bool {
    let mut big = big.to_vec();
    for s in small {
        match big.iter().position(|b| b == s) {
            Some(i) => {
                big.swap_remove(i);
            }
            None => return false,
        }
    }
    true
}

impl World {
    fn add_node(&mut self, rx: RelayReceiver, parent: Option<usize>, kind: NodeKind) {
        let tracked = match (kind, parent) {
            (NodeKind::Root, _) => true,
            (NodeKind::Filter { .. }, Some(p)) => self.nodes[p].tracked,
            _ => false,
        };
        let errors = Some(rx.subscribe::<RelayError>());
        self.nodes.push(Node {
            rx,
            parent,
            kind,
            tracked,
            errors,
            events: Vec::new(),
            events_dropped: 0,
        });
    }

    /// The type and value a root send of `(ty, x)` has when it reaches `node`, if it does.
    fn arrive(&self, node: usize, ty: Ty, x: u8) -> Option<(Ty, u8)> {
        let n = &self.nodes[node];
        let up = match n.parent {
            None => return Some((ty, x)),
            Some(p) => self.arrive(p, ty, x)?,
        };
        match n.kind {
            NodeKind::Root => Some(up),
            NodeKind::Filter { ty, m, r } => (up.0 == ty && passes(up.1, m, r)).then_some(up),
            NodeKind::Map { from, to } => (up.0 == from).then_some((to, mapped(up.1))),
            NodeKind::Batch { ty, .. } => (up.0 == ty).then_some(up),
        }
    }

    /// Sends that reach `node` as a `ty`, with their value there and their op.
    fn stream(&self, node: usize, ty: Ty) -> Vec<(Sent, u8)> {
        self.sends
            .iter()
            .filter(|s| !s.closed)
            .filter_map(|s| match self.arrive(node, s.ty, s.x) {
                Some((t, x)) if t == ty => Some((*s, x)),
                _ => None,
            })
            .collect()
    }

    /// The type an op may use on `node`: the node's own, or (root) the op's.
    fn carried(&self, node: usize, wanted: Ty) -> Option<Ty> {
        match self.nodes[node].kind {
            NodeKind::Root => Some(wanted),
            NodeKind::Filter { ty, .. } => Some(ty),
            NodeKind::Map { to, .. } => Some(to),
            NodeKind::Batch { .. } => None,
        }
    }

    /// Takes every event queued on every relay. Events outside a send group are only
    /// expected behind the tracking boundary.
    fn drain_events(&mut self, at: usize, in_group: bool) -> (Vec<RelayError>, u64) {
        let mut tracked_new = Vec::new();
        let mut tracked_dropped = 0;
        for n in &mut self.nodes {
            let Some(errors) = n.errors.as_mut() else {
                continue;
            };
            let mut new = Vec::new();
            while let Ok(e) = errors.try_recv() {
                new.push((*e).clone());
            }
            let dropped = errors.dropped() - n.events_dropped;
            n.events_dropped = errors.dropped();
            if n.tracked {
                assert!(
                    in_group || (new.is_empty() && dropped == 0),
                    "op {at}: RelayError events on a tracked relay outside any send: {new:?}"
                );
                tracked_new.extend(new.iter().cloned());
                tracked_dropped += dropped;
            }
            for e in &new {
                assert_eq!(
                    e.relay_id,
                    n.rx.id(),
                    "op {at}: event of another relay: {e}"
                );
            }
            n.events.extend(new);
        }
        (tracked_new, tracked_dropped)
    }

    async fn send_group(&mut self, tx: &pipedream_rs::RelaySender, at: usize, items: &[(Ty, u8)]) {
        let sends: Vec<Sent> = items
            .iter()
            .map(|&(ty, x)| {
                self.next_seq += 1;
                Sent {
                    seq: self.next_seq,
                    op: at,
                    ty,
                    x,
                    closed: self.closed,
                }
            })
            .collect();
        type SendFut<'a> =
            Pin<Box<dyn Future<Output = Result<pipedream_rs::Receipt, SendError>> + 'a>>;
        let futs: Vec<SendFut<'_>> = sends
            .iter()
            .map(|s| {
                let v = Val { seq: s.seq, x: s.x };
                with_ty!(s.ty, T => Box::pin(tx.send(T::make(v))) as SendFut<'_>)
            })
            .collect();
        let results = within(BOUND, &format!("op {at}: sends {items:?}"), join_all(futs)).await;
        self.sends.extend(sends.iter().copied());

        // What the model expects of each send: the tracked handlers it reaches, and which
        // of them fail.
        let mut all_expected: Vec<Failure> = Vec::new();
        let mut all_returned: Vec<RelayError> = Vec::new();
        for (s, result) in sends.iter().zip(&results) {
            let what = format!("op {at}: send {s:?}");
            if s.closed {
                assert!(
                    matches!(result, Err(SendError::Closed)),
                    "{what}: {result:?}"
                );
                continue;
            }
            let mut expected: Vec<Failure> = Vec::new();
            for h in &self.handlers {
                let node = &self.nodes[h.node];
                if !node.tracked || h.created >= at {
                    continue;
                }
                let Some((t, x)) = self.arrive(h.node, s.ty, s.x) else {
                    continue;
                };
                if t != h.ty {
                    continue;
                }
                let seen = h.log.lock().unwrap().iter().any(|v| v.seq == s.seq);
                assert!(
                    seen,
                    "{what}: returned before {:?} on relay {} ran",
                    h.kind, h.node
                );
                if let Some(panic) = fails(h.kind, x) {
                    expected.push((node.rx.id(), handler_kind(h.kind).to_string(), panic));
                }
            }
            let returned: Vec<RelayError> = match (result, self.errors) {
                (Ok(_), _) if expected.is_empty() => Vec::new(),
                (Err(SendError::Downstream(e)), ErrorMode::FirstWins) if !expected.is_empty() => {
                    assert!(
                        expected.contains(&failure_of(e)),
                        "{what}: {e} not in {expected:?}"
                    );
                    vec![e.clone()]
                }
                (Err(SendError::Aggregate(v)), ErrorMode::Aggregate) if !expected.is_empty() => {
                    assert_eq!(
                        sorted(v.iter().map(failure_of).collect()),
                        sorted(expected.clone()),
                        "{what}: aggregate errors"
                    );
                    v.clone()
                }
                (other, mode) => {
                    panic!("{what}: got {other:?} in {mode:?}, expected failures {expected:?}")
                }
            };
            for e in &returned {
                assert_eq!(e.type_name, type_name(s.ty), "{what}: {e}");
                assert!(
                    e.downcast_ref::<Refused>().is_some()
                        || e.downcast_ref::<PanicError>().is_some(),
                    "{what}: unexpected error {e}"
                );
            }
            all_expected.extend(expected);
            all_returned.extend(returned);
        }

        // The dual path: what was returned was published, on the handler's relay, once
        // per failure (a full event queue drops, and counts, the excess).
        let (events, dropped) = self.drain_events(at, true);
        let what = format!("op {at}: events of sends {sends:?}");
        assert_eq!(
            events.len() as u64 + dropped,
            all_expected.len() as u64,
            "{what}: events {events:?}, {dropped} dropped, expected {all_expected:?}"
        );
        let published: Vec<Failure> = events.iter().map(failure_of).collect();
        assert!(
            is_submultiset(&published, &all_expected),
            "{what}: published {published:?}, expected {all_expected:?}"
        );
        let events_full: Vec<_> = events.iter().map(full).collect();
        let returned_full: Vec<_> = all_returned.iter().map(full).collect();
        if dropped == 0 {
            assert!(
                is_submultiset(&returned_full, &events_full),
                "{what}: returned {returned_full:?} not all published {events_full:?}"
            );
            if self.errors == ErrorMode::Aggregate {
                assert_eq!(sorted(returned_full), sorted(events_full), "{what}");
            }
        } else if self.errors == ErrorMode::Aggregate {
            assert!(is_submultiset(&events_full, &returned_full), "{what}");
        }
    }
}

/// Checks `got` (items of one subscriber or handler on `node`) against the model.
///
/// Always: each value is one the model lets reach `node` as a `ty` (with its value there),
/// seen once, in send order (the sends of one burst in any order), in batches of `batch`
/// (the last may be short). `exact`: the node is tracked by the root, so the model knows
/// exactly what was sent while the subscriber existed, ops `(created, end)`: lossless, it
/// got all of it; broadcast, `got + dropped` is all of it. Not exact, lossless and alive
/// to the end: it got at least everything sent after it registered.
#[allow(clippy::too_many_arguments)]
fn check_stream(
    w: &World,
    what: &str,
    node: usize,
    ty: Ty,
    created: usize,
    end: usize,
    batch: Option<usize>,
    got: &[Vec<Val>],
    dropped: Option<u64>,
) {
    let possible: HashMap<u32, (u8, usize)> = w
        .stream(node, ty)
        .into_iter()
        .map(|(s, x)| (s.seq, (x, s.op)))
        .collect();
    let mut seen = HashSet::new();
    let mut last_op = 0;
    for (i, item) in got.iter().enumerate() {
        match batch {
            Some(n) if i + 1 < got.len() => assert_eq!(item.len(), n, "{what}: batch {i}: {got:?}"),
            Some(n) => assert!((1..=n).contains(&item.len()), "{what}: last batch {got:?}"),
            None => assert_eq!(item.len(), 1),
        }
        for v in item {
            let Some(&(x, op)) = possible.get(&v.seq) else {
                panic!("{what}: got {v:?}, which cannot reach it; got {got:?}")
            };
            assert_eq!(v.x, x, "{what}: wrong value for {v:?}");
            assert!(seen.insert(v.seq), "{what}: {v:?} twice: {got:?}");
            assert!(op >= last_op, "{what}: out of send order: {got:?}");
            last_op = op;
        }
    }
    let sent_since = |s: &Sent| s.op > created && s.op < end;
    let exact = w.nodes[node].tracked;
    if exact {
        let expected: Vec<u32> = w
            .stream(node, ty)
            .iter()
            .filter(|(s, _)| sent_since(s))
            .map(|(s, _)| s.seq)
            .collect();
        match (w.mode, dropped) {
            (DeliveryMode::Lossless, _) | (_, None) => assert_eq!(
                seen.len(),
                expected.len(),
                "{what}: got {got:?}, expected seqs {expected:?}"
            ),
            (_, Some(d)) => assert_eq!(
                seen.len() as u64 + d,
                expected.len() as u64,
                "{what}: got {got:?} + {d} dropped, expected seqs {expected:?}"
            ),
        }
        assert!(
            seen.iter().all(|s| expected.contains(s)),
            "{what}: got {got:?}, expected seqs {expected:?}"
        );
    } else if w.mode == DeliveryMode::Lossless && end == usize::MAX {
        for (s, _) in w.stream(node, ty).iter().filter(|(s, _)| sent_since(s)) {
            assert!(
                seen.contains(&s.seq),
                "{what}: lossless, missing {s:?}: {got:?}"
            );
        }
    }
}

async fn execute(p: Program) {
    let (tx, rx) = Relay::builder()
        .channel_size(p.size)
        .delivery_mode(p.mode)
        .error_mode(p.errors)
        .build()
        .unwrap();
    let mut w = World {
        mode: p.mode,
        errors: p.errors,
        size: p.size,
        nodes: Vec::new(),
        subs: Vec::new(),
        handlers: Vec::new(),
        sends: Vec::new(),
        closed: false,
        next_seq: 0,
    };
    w.add_node(rx, None, NodeKind::Root);

    for (i, op) in p.ops.iter().enumerate() {
        let at = i + 1;
        match op.clone() {
            Op::Subscribe { node, ty } => {
                let node = node % w.nodes.len();
                let stop = Gate::new();
                let rx = &w.nodes[node].rx;
                let (ty, batch, task) = match w.nodes[node].kind {
                    NodeKind::Batch { ty, n } => with_ty!(ty, T => {
                        let sub = rx.subscribe::<Vec<T>>();
                        (ty, Some(n), start_drain(sub, stop.clone(), |v: &Vec<T>| v.iter().map(Msg::val).collect()))
                    }),
                    _ => {
                        let ty = w.carried(node, ty).unwrap();
                        with_ty!(ty, T => {
                            let sub = rx.subscribe::<T>();
                            (ty, None, start_drain(sub, stop.clone(), |v: &T| vec![v.val()]))
                        })
                    }
                };
                w.subs.push(Sub {
                    node,
                    ty,
                    created: at,
                    batch,
                    stop,
                    task: Some(task),
                    done: None,
                });
            }
            Op::Sink { node, ty, kind } => add(&mut w, at, node, ty, HKind::Sink(kind)),
            Op::Tap { node, ty, fail } => add(&mut w, at, node, ty, HKind::Tap(fail)),
            Op::Filter { node, ty, m, r } => {
                let node = node % w.nodes.len();
                if w.nodes.len() <= MAX_DERIVED {
                    if let Some(ty) = w.carried(node, ty) {
                        let child = with_ty!(ty, T => w.nodes[node].rx.filter::<T>(move |v: &T| passes(v.val().x, m, r)));
                        w.add_node(child, Some(node), NodeKind::Filter { ty, m, r });
                    }
                }
            }
            Op::Map { node, from, to } => {
                let node = node % w.nodes.len();
                if w.nodes.len() <= MAX_DERIVED {
                    if let Some(from) = w.carried(node, from) {
                        let parent = &w.nodes[node].rx;
                        let child = with_ty!(from, F => with_ty!(to, U => parent.map::<F, U>(|v: &F| {
                            let v = v.val();
                            U::make(Val { seq: v.seq, x: mapped(v.x) })
                        })));
                        w.add_node(child, Some(node), NodeKind::Map { from, to });
                    }
                }
            }
            Op::Batch { node, ty, n } => {
                let node = node % w.nodes.len();
                if w.nodes.len() <= MAX_DERIVED {
                    if let Some(ty) = w.carried(node, ty) {
                        let child = with_ty!(ty, T => w.nodes[node].rx.batch::<T>(n).unwrap());
                        w.add_node(child, Some(node), NodeKind::Batch { ty, n });
                    }
                }
            }
            Op::DropHandle(i) => {
                let live: Vec<usize> = (0..w.subs.len())
                    .filter(|&j| w.subs[j].task.is_some())
                    .collect();
                if !live.is_empty() {
                    let j = live[i % live.len()];
                    let sub = &mut w.subs[j];
                    sub.stop.open();
                    let task = sub.task.take().unwrap();
                    let drained =
                        within(BOUND, &format!("op {at}: stopping subscription {j}"), task).await;
                    sub.done = Some((at, drained));
                }
            }
            Op::Send(ty, x) => w.send_group(&tx, at, &[(ty, x)]).await,
            Op::Burst(mut items) => {
                if p.mode == DeliveryMode::Broadcast {
                    items.truncate(w.size);
                }
                w.send_group(&tx, at, &items).await;
            }
            Op::Close => {
                tx.close();
                w.closed = true;
            }
        }
        w.drain_events(at, false);
    }

    // ----- the end: close, drain, check, drop, and see everything freed ----------------
    // Before the close, if the program did not close the relay itself (a closed relay is
    // freed, and its counters with it): each relay's
    // failure counters come to what its handlers' logs imply, errors and panics apart.
    let implied = |w: &World, k: usize| {
        let mut counts = (0u64, 0u64);
        for h in w.handlers.iter().filter(|h| h.node == k) {
            for v in h.log.lock().unwrap().iter() {
                if let Some(panic) = fails(h.kind, v.x) {
                    counts.0 += 1;
                    counts.1 += u64::from(panic);
                }
            }
        }
        counts
    };
    for k in (0..w.nodes.len()).filter(|_| !w.closed) {
        let stats = || w.nodes[k].rx.stats();
        let counted = || (stats().failures, stats().panics);
        common::wait_until(BOUND, &format!("relay {k}: failures counted"), || {
            counted() == implied(&w, k)
        })
        .await;
    }
    drop(tx);
    w.closed = true;
    for (j, sub) in w.subs.iter_mut().enumerate() {
        if let Some(task) = sub.task.take() {
            let drained = within(BOUND, &format!("subscription {j} ends after close"), task).await;
            assert!(drained.ended, "subscription {j} did not see the end");
            sub.done = Some((usize::MAX, drained));
        }
    }
    for (k, n) in w.nodes.iter_mut().enumerate() {
        let errors = n.errors.as_mut().unwrap();
        while let Some(e) = within(
            BOUND,
            &format!("RelayError events of relay {k} end"),
            errors.recv(),
        )
        .await
        {
            assert_eq!(e.relay_id, n.rx.id());
            n.events.push((*e).clone());
        }
        n.events_dropped = errors.dropped();
    }

    for (j, sub) in w.subs.iter().enumerate() {
        let (end, d) = sub.done.as_ref().unwrap();
        let what = format!(
            "subscription {j} (relay {}, {:?}, from op {})",
            sub.node, sub.ty, sub.created
        );
        let dropped = (w.mode == DeliveryMode::Broadcast).then_some(d.dropped);
        if w.mode == DeliveryMode::Lossless {
            assert_eq!(d.dropped, 0, "{what}: lossless dropped");
        }
        check_stream(
            &w,
            &what,
            sub.node,
            sub.ty,
            sub.created,
            *end,
            sub.batch,
            &d.items,
            dropped,
        );
    }
    for (j, h) in w.handlers.iter().enumerate() {
        let what = format!(
            "handler {j} ({:?} on relay {}, {:?}, from op {})",
            h.kind, h.node, h.ty, h.created
        );
        let log: Vec<Vec<Val>> = h.log.lock().unwrap().iter().map(|v| vec![*v]).collect();
        check_stream(
            &w,
            &what,
            h.node,
            h.ty,
            h.created,
            usize::MAX,
            None,
            &log,
            None,
        );
    }
    for (k, n) in w.nodes.iter().enumerate() {
        let failures: usize = w
            .handlers
            .iter()
            .filter(|h| h.node == k)
            .map(|h| {
                h.log
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|v| fails(h.kind, v.x).is_some())
                    .count()
            })
            .sum();
        assert_eq!(
            n.events.len() as u64 + n.events_dropped,
            failures as u64,
            "relay {k}: events {:?} + {} dropped, handlers' logs imply {failures} failures",
            n.events,
            n.events_dropped
        );
        for e in &n.events {
            assert!(
                matches!(e.kind, HandlerKind::Sink | HandlerKind::Tap)
                    && (e.downcast_ref::<Refused>().is_some()
                        || e.downcast_ref::<PanicError>().is_some()),
                "relay {k}: unexpected event {e}"
            );
        }
    }

    // Nothing left alive.
    let receivers: Vec<RelayReceiver> = w.nodes.iter().map(|n| n.rx.clone()).collect();
    drop(w);
    common::wait_until(BOUND, "every relay freed and its tasks ended", || {
        receivers
            .iter()
            .all(|rx| rx.stats() == RelayStats::default())
    })
    .await;
}

fn add(w: &mut World, at: usize, node: usize, ty: Ty, kind: HKind) {
    let node = node % w.nodes.len();
    let Some(ty) = w.carried(node, ty) else {
        return;
    };
    let log = Log::default();
    with_ty!(ty, T => add_handler::<T>(&w.nodes[node].rx, kind, log.clone()));
    w.handlers.push(Handler {
        node,
        ty,
        kind,
        created: at,
        log,
    });
}

// ----- running the cases ------------------------------------------------------------------

fn run_cases(runtime: &str, run: impl Fn(Program)) {
    // Handler panics are part of the programs: keep them out of the test output.
    quiet_intended_panics(INTENDED);
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let config = Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&program(), |p| {
        run(p);
        Ok(())
    }) {
        panic!("{runtime}: {e}");
    }
}

#[cfg(feature = "smol")]
#[test]
fn random_programs_keep_the_invariants_on_smol() {
    run_cases("smol", |p| common::run_smol(execute(p)));
}

#[cfg(feature = "tokio")]
#[test]
fn random_programs_keep_the_invariants_on_tokio() {
    run_cases("tokio", |p| common::run_tokio(execute(p)));
}

#[cfg(feature = "async-std")]
#[test]
fn random_programs_keep_the_invariants_on_async_std() {
    run_cases("async-std", |p| common::run_async_std(execute(p)));
}
