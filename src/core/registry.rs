//! The subscriber registry: who receives a message of a given type.
//!
//! Indexed by `TypeId`: a message is offered only to subscribers of its own type plus the
//! wildcard subscribers (`subscribe_all`, and forwarders that look at every type). A
//! `String` handler is never woken for an `i32`.
//!
//! # Two sides
//!
//! - The **book** (`Book`, behind its own mutex) is what registration, unregistration
//!   and close change: per type, the subscribers in a persistent vector ([`PVec`]), plus the
//!   wildcard list and where each subscriber sits. Sends never take this lock.
//! - The **published** map holds, per type, a ready-made [`Targets`] behind an `Arc`. A
//!   send takes this lock only to clone that `Arc` (the *snapshot*). A registration builds
//!   the new `Targets` under the book's lock (O(log n): the persistent vectors copy only a
//!   path), then swaps it in under the published lock: one map insert, so a send never
//!   waits behind a registration for longer than that.
//!
//! The snapshot is what makes registration exact: a subscriber whose registration returned
//! before `send` is called is in it; one registered after is not. The snapshot's tracked
//! count is the count the send waits for.
//!
//! Every type that was ever sent or subscribed to keeps its entry (with its counters), so
//! per-type figures survive subscribers coming and going.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::core::pvec::PVec;
use crate::core::queue::QueueTx;
use crate::core::sync::{Mutex, MutexGuard};
use crate::relay::envelope::TypeName;
use crate::relay::stats::TypeStats;

static NEXT_SUBSCRIBER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A subscriber id, unique in the process (deadlock detection follows ids across relays).
pub(crate) fn next_subscriber_id() -> u64 {
    NEXT_SUBSCRIBER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The counters of one message type on one relay. Written by senders (relaxed: each is
/// exact, they are not read at one instant).
#[derive(Default)]
pub(crate) struct TypeCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) unrouted: AtomicU64,
}

impl TypeCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Every queue one message of a type goes to: the type's own subscribers, then the wildcard
/// ones. Immutable once published; a send holds it for as long as it delivers.
pub(crate) struct Targets {
    own: PVec<QueueTx>,
    wildcard: PVec<QueueTx>,
    /// Number of tracked subscribers among them: the completions a tracked send waits for.
    pub(crate) tracked: usize,
    /// Some of the tracked ones are forwarders into derived relays, whose own subscribers
    /// a tracked send snapshots too (see `Core::snapshot`).
    pub(crate) chained: bool,
    /// The type's name, as registered (`None` for a type only ever sent with `send_any`).
    pub(crate) type_name: Option<TypeName>,
    pub(crate) counters: Arc<TypeCounters>,
}

impl Targets {
    pub(crate) fn len(&self) -> usize {
        self.own.len() + self.wildcard.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets from `i` to the end of the leaf that holds it: the push loop walks the
    /// list a run at a time (see [`PVec`]).
    pub(crate) fn run_from(&self, i: usize) -> &[QueueTx] {
        let own = self.own.len();
        if i < own {
            self.own.run_from(i)
        } else {
            self.wildcard.run_from(i - own)
        }
    }

    /// The targets subscribed to this type itself (not the wildcard ones).
    pub(crate) fn own_iter(&self) -> impl Iterator<Item = &QueueTx> {
        self.own.iter()
    }

    /// Every target, in delivery order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &QueueTx> {
        self.own.iter().chain(self.wildcard.iter())
    }
}

/// One type's entry in the book.
struct Route {
    type_name: Option<TypeName>,
    own: PVec<QueueTx>,
    tracked: usize,
    chained: usize,
    counters: Arc<TypeCounters>,
}

/// The writer's side (see the module docs).
///
/// Invariants: `closed` never goes back to false; once closed, the book is empty and
/// refuses new subscribers. `where_is` names, for every registered subscriber, its list
/// (its type, or `None` for the wildcard list) and its index there. `subscribers` and
/// `tracked` count what the lists hold.
#[derive(Default)]
struct Book {
    closed: bool,
    routes: HashMap<TypeId, Route, BuildHasherDefault<TypeIdHasher>>,
    wildcard: PVec<QueueTx>,
    wildcard_tracked: usize,
    wildcard_chained: usize,
    where_is: HashMap<u64, (Option<TypeId>, usize)>,
    subscribers: usize,
    tracked: usize,
}

impl Book {
    fn route(&mut self, type_id: TypeId, type_name: Option<TypeName>) -> &mut Route {
        let route = self.routes.entry(type_id).or_insert_with(|| Route {
            type_name,
            own: PVec::default(),
            tracked: 0,
            chained: 0,
            counters: Arc::default(),
        });
        route.type_name = route.type_name.or(type_name);
        route
    }

    fn targets_of(&self, route: &Route) -> Arc<Targets> {
        Arc::new(Targets {
            own: route.own.clone(),
            wildcard: self.wildcard.clone(),
            tracked: route.tracked + self.wildcard_tracked,
            chained: route.chained + self.wildcard_chained > 0,
            type_name: route.type_name,
            counters: route.counters.clone(),
        })
    }
}

/// What sends read (see the module docs).
#[derive(Default)]
struct Published {
    closed: bool,
    routes: HashMap<TypeId, Arc<Targets>, BuildHasherDefault<TypeIdHasher>>,
}

/// The registry of one relay. Lock order: `book`, then `published`.
#[derive(Default)]
pub(crate) struct Registry {
    book: Mutex<Book>,
    published: Mutex<Published>,
    /// The book's tracked count, stored under its lock after every change, so it can be
    /// read without the lock (`handler_count`, `wait_for_handlers`) and is never older
    /// than the last registration that returned.
    handlers: AtomicUsize,
    /// Set once, under the book's lock, when the registry closes: `is_closed` without a lock.
    closed: AtomicBool,
    /// Subscribers that can receive the relay's own events (of an event type, or of every
    /// type), kept under the book's lock: an event with none is not published at all,
    /// without a look at the routes (`Core::emit`, which a drop-oldest queue calls per
    /// eviction).
    listeners: AtomicUsize,
}

/// The relay is closed: nothing is registered, nothing is sent.
pub(crate) struct Closed;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks, so a poisoned one is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// The snapshot for a message of `type_id`: the queues it goes to, now. A type never
    /// seen before gets its entry (and its counters) here, once.
    pub(crate) fn targets(
        &self,
        type_id: TypeId,
        type_name: Option<TypeName>,
    ) -> Result<Arc<Targets>, Closed> {
        {
            let published = lock(&self.published);
            if published.closed {
                return Err(Closed);
            }
            if let Some(targets) = published.routes.get(&type_id) {
                return Ok(targets.clone());
            }
        }
        // First message of this type: make its entry (with its counters), once. The book's
        // lock orders this insert with every registration's.
        let mut book = lock(&self.book);
        if book.closed {
            return Err(Closed);
        }
        book.route(type_id, type_name);
        let targets = book.targets_of(&book.routes[&type_id]);
        lock(&self.published)
            .routes
            .insert(type_id, targets.clone());
        Ok(targets)
    }

    /// The counters of a type already routed (even once the relay is closed).
    pub(crate) fn counters_of(&self, type_id: TypeId) -> Option<Arc<TypeCounters>> {
        let published = lock(&self.published);
        published
            .routes
            .get(&type_id)
            .map(|targets| targets.counters.clone())
    }

    /// Adds a subscriber: of one type, or of every type when `ty` is `None`. Hands the
    /// queue back if the relay is closed (to be dropped outside the lock).
    pub(crate) fn add(
        &self,
        ty: Option<(TypeId, TypeName)>,
        tx: QueueTx,
    ) -> Result<usize, (Closed, QueueTx)> {
        let mut book = lock(&self.book);
        if book.closed {
            return Err((Closed, tx));
        }
        let id = tx.state.id;
        if ty.is_none_or(|(type_id, _)| crate::core::is_internal_event(type_id)) {
            self.listeners.fetch_add(1, Ordering::Relaxed);
        }
        let tracked = usize::from(tx.state.tracked.is_some());
        let chained = usize::from(tx.state.chains());
        book.subscribers += 1;
        book.tracked += tracked;
        match ty {
            Some((type_id, type_name)) => {
                let route = book.route(type_id, Some(type_name));
                let at = route.own.len();
                route.own.push(tx);
                route.tracked += tracked;
                route.chained += chained;
                book.where_is.insert(id, (Some(type_id), at));
            }
            None => {
                let at = book.wildcard.len();
                book.wildcard.push(tx);
                book.wildcard_tracked += tracked;
                book.wildcard_chained += chained;
                book.where_is.insert(id, (None, at));
            }
        }
        self.publish(book, ty.map(|(type_id, _)| type_id));
        Ok(tracked)
    }

    /// Removes subscriber `id`; `Some(was tracked)` if it was registered.
    pub(crate) fn remove(&self, id: u64) -> Option<bool> {
        let mut book = lock(&self.book);
        let (ty, at) = book.where_is.remove(&id)?;
        if book.where_is.capacity() > 16 && book.where_is.len() < book.where_is.capacity() / 4 {
            // Give memory back once most subscribers are gone (amortised O(1) per removal).
            book.where_is.shrink_to_fit();
        }
        let (removed, moved) = match ty {
            Some(type_id) => {
                let route = book
                    .routes
                    .get_mut(&type_id)
                    .expect("where_is names a route");
                let removed = route.own.swap_remove(at);
                let moved = route.own.run_from(at).first().map(|tx| tx.state.id);
                route.tracked -= usize::from(removed.state.tracked.is_some());
                route.chained -= usize::from(removed.state.chains());
                (removed, moved)
            }
            None => {
                let removed = book.wildcard.swap_remove(at);
                let moved = book.wildcard.run_from(at).first().map(|tx| tx.state.id);
                book.wildcard_tracked -= usize::from(removed.state.tracked.is_some());
                book.wildcard_chained -= usize::from(removed.state.chains());
                (removed, moved)
            }
        };
        // The subscriber that was last now sits where the removed one was.
        if let Some(moved) = moved.filter(|&m| m != id) {
            book.where_is.insert(moved, (ty, at));
        }
        let tracked = removed.state.tracked.is_some();
        if ty.is_none_or(crate::core::is_internal_event) {
            self.listeners.fetch_sub(1, Ordering::Relaxed);
        }
        book.subscribers -= 1;
        book.tracked -= usize::from(tracked);
        self.publish(book, ty);
        drop(removed);
        Some(tracked)
    }

    /// Publishes the book's new state for type `ty` (every type when `None`: the wildcard
    /// list changed, and every type's targets include it), then the new tracked count.
    /// Still under the book's lock, so publications happen in the order of the changes.
    /// The `published` lock is taken for one insert at a time: a send, which reads only its
    /// own type, never waits for more than that. Old lists are dropped outside both locks.
    fn publish(&self, book: MutexGuard<'_, Book>, ty: Option<TypeId>) {
        let mut old = Vec::new();
        let mut insert = |type_id: TypeId, targets: Arc<Targets>| {
            old.extend(lock(&self.published).routes.insert(type_id, targets));
        };
        match ty {
            Some(type_id) => insert(type_id, book.targets_of(&book.routes[&type_id])),
            None => {
                for (&type_id, route) in &book.routes {
                    insert(type_id, book.targets_of(route));
                }
            }
        }
        // Only now: a `wait_for_handlers` released by this count must find the handler in
        // the targets of any send it makes next.
        self.handlers.store(book.tracked, Ordering::Release);
        drop(book);
        drop(old);
    }

    /// Closes the registry. Hands back everything it held, to be dropped by the caller
    /// outside the lock (dropping the last copy of a queue's sender wakes its receiver).
    pub(crate) fn close(&self) -> Option<Closing> {
        let mut book = lock(&self.book);
        if book.closed {
            return None;
        }
        book.closed = true;
        let routes = {
            let mut published = lock(&self.published);
            published.closed = true;
            std::mem::take(&mut published.routes)
        };
        self.closed.store(true, Ordering::Release);
        let wildcard = std::mem::take(&mut book.wildcard);
        let lists: Vec<PVec<QueueTx>> = book
            .routes
            .values_mut()
            .map(|route| {
                route.tracked = 0;
                route.chained = 0;
                std::mem::take(&mut route.own)
            })
            .chain(std::iter::once(wildcard))
            .collect();
        book.where_is.clear();
        book.subscribers = 0;
        book.tracked = 0;
        self.handlers.store(0, Ordering::Release);
        book.wildcard_tracked = 0;
        book.wildcard_chained = 0;
        Some(Closing(routes, lists))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether any subscriber can receive the relay's own events now (see `listeners`).
    /// Read without the lock: an event published by a send that raced the subscription of
    /// its only listener may be missed by it, as a message sent before a subscription is.
    pub(crate) fn has_listeners(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn handlers(&self) -> usize {
        self.handlers.load(Ordering::Acquire)
    }

    pub(crate) fn subscribers(&self) -> usize {
        lock(&self.book).subscribers
    }

    pub(crate) fn tracked(&self) -> usize {
        lock(&self.book).tracked
    }

    /// The counters of every type, summed.
    pub(crate) fn totals(&self) -> [u64; 4] {
        let book = lock(&self.book);
        let mut sum = [0; 4];
        for route in book.routes.values() {
            let c = &route.counters;
            sum[0] += c.sent.load(Ordering::Relaxed);
            sum[1] += c.delivered.load(Ordering::Relaxed);
            sum[2] += c.dropped.load(Ordering::Relaxed);
            sum[3] += c.unrouted.load(Ordering::Relaxed);
        }
        sum
    }

    /// One type's figures, if it was ever sent or subscribed to.
    pub(crate) fn type_stats(&self, type_id: TypeId) -> Option<TypeStats> {
        let book = lock(&self.book);
        let route = book.routes.get(&type_id)?;
        let c = &route.counters;
        Some(TypeStats {
            type_name: route.type_name.map_or("<type-erased>", |name| name()),
            sent: c.sent.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            unrouted: c.unrouted.load(Ordering::Relaxed),
            subscribers: route.own.len(),
            tracked_handlers: route.tracked,
        })
    }

    /// Every subscriber queue registered now (for `idle` and tests).
    #[allow(dead_code)]
    pub(crate) fn for_each_queue(&self, mut f: impl FnMut(&QueueTx)) {
        let book = lock(&self.book);
        for route in book.routes.values() {
            route.own.iter().for_each(&mut f);
        }
        book.wildcard.iter().for_each(&mut f);
    }
}

/// What a close hands back, for the caller to drop outside the registry's locks.
#[allow(dead_code)] // held only to be dropped
pub(crate) struct Closing(
    HashMap<TypeId, Arc<Targets>, BuildHasherDefault<TypeIdHasher>>,
    Vec<PVec<QueueTx>>,
);

/// `TypeId`s are already well-distributed hashes: use the bits std gives us instead of
/// running SipHash over them on every send.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Fallback if a future std hashes TypeId as bytes: FNV-1a.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}
