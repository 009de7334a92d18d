//! The subscriber registry: who receives a message of a given type.
//!
//! Indexed by `TypeId`: a message is offered only to subscribers of its own type plus the
//! wildcard subscribers (`subscribe_all`, and forwarders that look at every type). A
//! `String` handler is never woken for an `i32`.
//!
//! For each type the registry keeps a ready-made [`Targets`] list behind an `Arc`,
//! rebuilt whenever a subscriber of that type (or a wildcard one) comes or goes. A send
//! takes the lock only to clone that `Arc`: this snapshot is what makes registration exact
//! (a subscriber registered before `send` is called is in the snapshot; one registered
//! after is not), and the snapshot's tracked count is the count the send waits for.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_SUBSCRIBER_ID: AtomicU64 = AtomicU64::new(1);

use crate::core::queue::QueueTx;
use crate::relay::envelope::TypeName;

/// Every queue one message goes to, and how many of them are tracked.
pub(crate) struct Targets {
    pub(crate) slots: Box<[QueueTx]>,
    /// Number of tracked slots: the completions a tracked send waits for.
    pub(crate) tracked: usize,
}

impl Targets {
    fn build(own: &[QueueTx], wildcard: &[QueueTx]) -> Arc<Self> {
        let slots: Box<[QueueTx]> = own.iter().chain(wildcard).cloned().collect();
        let tracked = slots.iter().filter(|s| s.state.tracked.is_some()).count();
        Arc::new(Targets { slots, tracked })
    }
}

struct Route {
    type_name: TypeName,
    own: Vec<QueueTx>,
    /// `own` followed by every wildcard queue.
    targets: Arc<Targets>,
}

/// Registry state, behind the relay's mutex.
///
/// Invariants: `closed` never goes back to false; once closed, the registry is empty and
/// refuses new subscribers. Every route's `targets` equals its `own` plus `wildcard`.
#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) closed: bool,
    routes: HashMap<TypeId, Route, BuildHasherDefault<TypeIdHasher>>,
    wildcard: Vec<QueueTx>,
    /// Targets of a type nobody subscribed to by type: the wildcard queues alone.
    wildcard_targets: Option<Arc<Targets>>,
    subscribers: usize,
    tracked: usize,
}

impl Registry {
    /// A subscriber id, unique in the process (deadlock detection compares ids across
    /// relays).
    pub(crate) fn next_id(&mut self) -> u64 {
        NEXT_SUBSCRIBER_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// The queues a message of `type_id` goes to.
    pub(crate) fn targets(&mut self, type_id: TypeId) -> Arc<Targets> {
        if let Some(route) = self.routes.get(&type_id) {
            return route.targets.clone();
        }
        let wildcard = &self.wildcard;
        self.wildcard_targets
            .get_or_insert_with(|| Targets::build(&[], wildcard))
            .clone()
    }

    pub(crate) fn type_name(&self, type_id: TypeId) -> Option<TypeName> {
        self.routes.get(&type_id).map(|r| r.type_name)
    }

    /// Adds a subscriber: of one type, or of every type when `ty` is `None`.
    pub(crate) fn add(&mut self, ty: Option<(TypeId, TypeName)>, tx: QueueTx) {
        self.subscribers += 1;
        self.tracked += usize::from(tx.state.tracked.is_some());
        match ty {
            Some((type_id, type_name)) => {
                let route = self.routes.entry(type_id).or_insert_with(|| Route {
                    type_name,
                    own: Vec::new(),
                    targets: Targets::build(&[], &[]),
                });
                route.own.push(tx);
                route.targets = Targets::build(&route.own, &self.wildcard);
            }
            None => {
                self.wildcard.push(tx);
                self.rebuild_all();
            }
        }
    }

    /// Removes subscriber `id` (registered for `ty`); `false` if it was not there.
    pub(crate) fn remove(&mut self, ty: Option<TypeId>, id: u64) -> bool {
        let removed = match ty {
            Some(type_id) => {
                let Some(route) = self.routes.get_mut(&type_id) else {
                    return false;
                };
                let Some(pos) = route.own.iter().position(|s| s.state.id == id) else {
                    return false;
                };
                let tx = route.own.swap_remove(pos);
                if route.own.is_empty() {
                    self.routes.remove(&type_id);
                } else {
                    route.targets = Targets::build(&route.own, &self.wildcard);
                }
                tx
            }
            None => {
                let Some(pos) = self.wildcard.iter().position(|s| s.state.id == id) else {
                    return false;
                };
                let tx = self.wildcard.swap_remove(pos);
                self.rebuild_all();
                tx
            }
        };
        self.subscribers -= 1;
        self.tracked -= usize::from(removed.state.tracked.is_some());
        true
    }

    fn rebuild_all(&mut self) {
        self.wildcard_targets = None;
        for route in self.routes.values_mut() {
            route.targets = Targets::build(&route.own, &self.wildcard);
        }
    }

    /// Closes the registry and hands back every queue sender, to be closed by the caller
    /// outside the lock.
    pub(crate) fn close(&mut self) -> Vec<QueueTx> {
        self.closed = true;
        self.subscribers = 0;
        self.tracked = 0;
        self.wildcard_targets = None;
        let mut all: Vec<QueueTx> = std::mem::take(&mut self.wildcard);
        for (_, route) in self.routes.drain() {
            all.extend(route.own);
        }
        all
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers
    }

    pub(crate) fn tracked(&self) -> usize {
        self.tracked
    }
}

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
