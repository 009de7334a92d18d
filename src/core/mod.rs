//! [`Core`]: the shared state of one relay and the send path.
//!
//! The send path, top to bottom. When `send` is called (`Core::snapshot`, synchronous):
//! 1. take the snapshot: the registry's published `Arc<Targets>` for the message's type,
//!    cloned under a lock held for nothing else (`registry.rs`);
//! 2. if any target is tracked, allocate one [`Tracker`]; if some of them are forwarders
//!    into derived relays, snapshot those relays' targets too, into the tracker's
//!    [`Plan`]s, so the whole tracked chain is decided at the call;
//! 3. wrap the value in its `Arc` (with the tracker, the only allocations besides the
//!    queues' own).
//!
//! When the returned `Delivery` (`core/delivery.rs`) is first polled (`Core::push_ready`):
//! 4. push the envelope to each target queue with room, without waiting. A full queue is
//!    a counted, reported miss in broadcast mode; in lossless mode it hands the rest of
//!    the delivery to `Core::deliver_rest`, a boxed future that waits for room;
//! 5. yield once if a queue is more than half full, then wait on the tracker, if any.

pub(crate) mod batch;
pub(crate) mod deadlock;
pub(crate) mod delivery;
pub(crate) mod flow;
pub(crate) mod inbox;
#[cfg(all(test, loom))]
mod loom_models;
pub(crate) mod lost;
pub(crate) mod observers;
pub(crate) mod pvec;
pub(crate) mod queue;
pub(crate) mod registry;
pub(crate) mod reserve;
pub(crate) mod retention;
pub(crate) mod sync;
pub(crate) mod tasks;
pub(crate) mod trace;
pub(crate) mod tracker;
pub(crate) mod wait;

use std::any::{Any, TypeId};
use std::sync::Arc;

use event_listener::Event;

use crate::core::queue::{queue_for, PushError, QueueRx, QueueState, QueueTx};
use crate::core::registry::{next_subscriber_id, Registry, Targets, TypeCounters};
use crate::core::sync::{AtomicU64, Ordering};
use crate::core::tasks::Tasks;
use crate::core::trace::SendSpan;
use crate::core::tracker::Tracker;
use crate::core::wait::wait_until;
use crate::relay::config::{Config, DeliveryMode};
use crate::relay::envelope::{erased_name, Envelope, Queued, TypeName};
use crate::relay::error::{
    HandlerGone, HandlerKind, QueueFull, RelayError, SendError, SharedError, TrySendError,
};
use crate::relay::events::{Dropped, HandlerLost, Unrouted};
use crate::relay::options::SubscribeOptions;
use crate::relay::receipt::Receipt;
use crate::relay::stats::{RelayStats, TypeStats};

// Process-wide ids stay on std atomics (loom's are not `const`).
/// A send that has taken its snapshot and is ready to deliver.
pub(crate) struct Outgoing {
    envelope: Envelope,
    targets: Arc<Targets>,
    tracker: Option<Arc<Tracker>>,
}

/// The slots a `try_send` or a permit has taken and not yet used, one flag per target in
/// `targets`' order: every slot still held when it is dropped is given back, so an early
/// return, a cancelled wait or a panic part-way never strands room (the capacity
/// property stays exact).
struct Reservations {
    targets: Arc<Targets>,
    held: Vec<bool>,
}

impl Drop for Reservations {
    fn drop(&mut self) {
        for (slot, held) in self.targets.iter().zip(&self.held) {
            if *held {
                slot.unreserve();
            }
        }
    }
}

/// What a tracked forwarder among a send's targets will pass the message on to: the
/// derived relay's targets for the message's type, snapshotted when the send was called,
/// with the plans of that relay's own tracked forwarders. So a handler registered on a
/// derived relay after the parent's `send` was called is neither delivered to nor waited
/// for, as on the parent itself (SEMANTICS.md §3).
pub(crate) struct Plan {
    /// The forwarder's subscriber id on the parent.
    pub(crate) forwarder: u64,
    /// The derived relay's id.
    pub(crate) relay: u64,
    pub(crate) targets: Arc<Targets>,
    pub(crate) plans: Vec<Plan>,
}

/// Where a tracked forwarder passes messages on to: a derived relay, and which types it
/// can pass there (so a send does not snapshot a relay that will never get its type).
pub(crate) struct Link {
    pub(crate) relay: std::sync::Weak<Core>,
    pub(crate) takes: Takes,
}

/// Which message types a [`Link`] can carry.
#[derive(Clone, Copy)]
pub(crate) enum Takes {
    /// Any type the forwarder receives (`filter`, `only`: their inbox is of one type).
    Any,
    /// Only this type (`split`'s first child).
    Only(TypeId),
    /// Every type but this one (`exclude`, `split`'s second child).
    Except(TypeId),
}

impl Takes {
    fn accepts(self, type_id: TypeId) -> bool {
        match self {
            Takes::Any => true,
            Takes::Only(only) => type_id == only,
            Takes::Except(except) => type_id != except,
        }
    }
}

/// A send's snapshot, taken at the call, before the value is attached.
struct Snapshot {
    targets: Arc<Targets>,
    type_name: TypeName,
    msg_id: u64,
    origin: u64,
    tracker: Option<Arc<Tracker>>,
    trace: SendSpan,
}

impl Snapshot {
    fn load(self, value: Arc<dyn Any + Send + Sync>) -> Outgoing {
        Outgoing {
            envelope: Envelope {
                value,
                type_name: self.type_name,
                msg_id: self.msg_id,
                origin: self.origin,
                trace: self.trace,
            },
            targets: self.targets,
            tracker: self.tracker,
        }
    }
}

/// What a send's pushing did so far: the receipt it is filling in, and whether some
/// queue it pushed to is more than half full (then the send yields once).
#[derive(Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) receipt: Receipt,
    pub(crate) crowded: bool,
}

/// What the first poll of a send did (see [`Core::push_ready`]).
pub(crate) enum Pushed {
    /// Every target was handled.
    Done {
        tally: Tally,
        tracker: Option<Arc<Tracker>>,
    },
    /// Lossless mode: a queue was full; the rest goes to [`Core::deliver_rest`].
    /// Boxed: the cold path pays for its size, so the common `Done` is returned in
    /// registers-sized memory (160 bytes against 56 otherwise).
    Blocked(Box<Blocked>),
}

/// A lossless send stopped at a full queue: `item` is for `targets.slots[next]`, the
/// slots after it are still to do.
pub(crate) struct Blocked {
    /// The send's own copy, for the slots after `next` (`None` once the last slot's push
    /// took it: see `push_from`).
    envelope: Option<Envelope>,
    targets: Arc<Targets>,
    tracker: Option<Arc<Tracker>>,
    next: usize,
    item: Queued,
    tally: Tally,
}

/// Who makes a send: what decides its origin (echo prevention) and whether
/// [`RelayBuilder::reject_unrouted`](crate::RelayBuilder::reject_unrouted) applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum From {
    /// A user's `RelaySender` or `WeakSender`: origin this relay; unrouted may be refused.
    User,
    /// The relay's own forwarder making a new message here (`map`, `batch`): origin this
    /// relay, never refused.
    Here,
    /// A forwarder passing on a message that entered relay `0` first: origin kept.
    Relay(u64),
}

static NEXT_RELAY_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The bit of an envelope's origin that marks a message a bridge imported into the relay
/// whose id is the rest (`bridge::IMPORTED`; relay ids never reach it).
pub(crate) const IMPORTED_BIT: u64 = 1 << 63;

/// Shared state of one relay.
///
/// Ownership: the [`RelaySender`](crate::RelaySender) and in-flight sends hold it
/// strongly; receivers, weak senders, subscriptions and handler tasks hold it weakly, so
/// nothing but the sender keeps a relay open, and nothing at all keeps it alive once the
/// sender and its in-flight sends are gone.
///
/// Invariants: `closed` goes from false to true once, under the registry lock, together
/// with `Registry::closed`; after that no subscriber is added and no send starts.
pub(crate) struct Core {
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    /// Notified (all) when the relay closes. `closed()` futures wait on it.
    closed_event: Event,
    next_msg_id: AtomicU64,
    /// Waits of this relay's sends broken by the deadlock check (`core/deadlock.rs`).
    deadlocks_broken: AtomicU64,
    /// Notified (all) whenever a tracked handler registers. `wait_for_handlers` waits on it.
    handlers_event: Event,
    /// Tasks started from this relay: live count and the readiness barrier.
    pub(crate) tasks: Arc<Tasks>,
    /// Its receiver handles (see `observers.rs`).
    pub(crate) observers: Arc<crate::core::observers::Observers>,
    /// Handler and forwarder tasks that ended while the relay was open.
    handlers_lost: AtomicU64,
    /// Failures reported on the dual path (`report`), and how many of them were panics.
    failures: AtomicU64,
    panics: AtomicU64,
    /// The rings of the retained types (`RelayBuilder::retain`), fixed at construction;
    /// few, so a slice (see `core/retention.rs`).
    retained: Box<[(TypeId, Arc<retention::Retention>)]>,
    /// This relay's family, for the idle barrier: its own, or the relay it was derived
    /// from's (`core/flow.rs`).
    pub(crate) flow: Arc<flow::Flow>,
}

impl Core {
    /// A relay in the family whose idle count is `flow` (a derived relay: its parent's).
    pub(crate) fn in_family(config: Config, flow: Arc<flow::Flow>) -> Arc<Core> {
        let retained = config
            .retain
            .iter()
            .map(|&(type_id, keep)| (type_id, retention::Retention::new(keep)))
            .collect();
        Arc::new(Core {
            retained,
            flow,
            id: NEXT_RELAY_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config,
            registry: Registry::default(),
            closed_event: Event::new(),
            next_msg_id: AtomicU64::new(1),
            deadlocks_broken: AtomicU64::new(0),
            handlers_event: Event::new(),
            tasks: Arc::new(Tasks::default()),
            observers: Arc::default(),
            handlers_lost: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        })
    }

    // ----- subscribers -------------------------------------------------------------

    /// Registers a queue for messages of `ty` (every type when `None`). Complete when it
    /// returns: every send that starts afterwards includes it. On a closed relay the queue
    /// is born closed. `links` are the derived relays a tracked forwarder passes messages
    /// on to (empty for everything else).
    ///
    /// The queue's delivery mode and capacity are `options`' where set, else its type's
    /// mode (`RelayBuilder::mode_for`) and the relay's.
    pub(crate) fn register(
        self: &Arc<Self>,
        ty: Option<(TypeId, crate::relay::envelope::TypeName)>,
        tracked: Option<HandlerKind>,
        links: Box<[Link]>,
        options: SubscribeOptions,
    ) -> QueueRx {
        let mode = options
            .mode
            .unwrap_or_else(|| self.config.mode_of(ty.map(|(id, _)| id)));
        let capacity = options.capacity.unwrap_or(self.config.channel_size);
        let id = next_subscriber_id();
        let (tx, rx) = queue_for(mode, capacity, id, tracked, links, self.flow.clone());
        self.flow.track(&tx.state);
        // A retained type: the replay goes into the queue before anyone can push to it,
        // under the ring's lock, which a commit takes too (core/retention.rs).
        let retention = ty.and_then(|(type_id, _)| self.retention_of(type_id));
        let ring = retention.map(|retention| retention.lock());
        if let Some(ring) = ring.as_ref().filter(|_| !self.registry.is_closed()) {
            let room = if mode == DeliveryMode::Latest {
                1
            } else {
                capacity
            };
            retention::Retention::replay_into(ring, &tx, room);
        }
        let added = self.registry.add(ty, tx);
        drop(ring);
        match added {
            Ok(0) => {}
            Ok(_) => {
                self.handlers_event.notify(usize::MAX);
            }
            // The only sender goes here, outside the lock: the queue reads as closed.
            Err((_, tx)) => drop(tx),
        }
        rx
    }

    pub(crate) fn unregister(&self, id: u64) {
        if self.registry.remove(id).is_some() && self.registry.subscribers() == 0 {
            self.observers.subscribers_gone();
        }
    }

    /// Resolves once nothing can observe this relay any more: no receiver handle, no
    /// subscriber (for the forwarder of a derived relay).
    /// Whether nothing can observe this relay any more (see `observers.rs`).
    pub(crate) fn is_unobserved(&self) -> bool {
        self.observers.unobserved(|| self.registry.subscribers())
    }

    pub(crate) async fn wait_unobserved(&self) {
        self.observers
            .wait_unobserved(|| self.registry.subscribers())
            .await;
    }

    /// A handler or forwarder task ended while this relay was open: count it, report it.
    pub(crate) fn handler_lost(&self, lost: HandlerLost) {
        if self.is_closed() {
            return; // a task ending after the close is the normal end
        }
        self.handlers_lost.fetch_add(1, Ordering::Relaxed);
        trace::lost(&lost);
        self.emit(lost);
    }

    // ----- lifecycle ---------------------------------------------------------------

    /// Closes the relay: no new sends or subscribers. Sends already past their snapshot
    /// finish delivering; each queue closes when the last of them lets go of it, and its
    /// subscriber drains what was queued, then sees the end.
    pub(crate) fn close(&self) {
        let Some(queues) = self.registry.close() else {
            return;
        };
        drop(queues); // outside the registry's locks: may wake receivers
        self.closed_event.notify(usize::MAX);
        self.handlers_event.notify(usize::MAX);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.registry.is_closed()
    }

    pub(crate) async fn wait_closed(&self) {
        wait_until(&self.closed_event, || self.is_closed()).await;
    }

    pub(crate) fn handler_count(&self) -> usize {
        self.registry.handlers()
    }

    /// Resolves once at least `n` tracked handlers are registered, or the relay closed.
    pub(crate) async fn wait_for_handlers(&self, n: usize) -> bool {
        // `close` notifies `handlers_event` too, so a closing relay releases the waiters.
        wait_until(&self.handlers_event, || {
            self.handler_count() >= n || self.is_closed()
        })
        .await;
        self.handler_count() >= n
    }

    pub(crate) fn stats(&self) -> RelayStats {
        let [sent, delivered, dropped, unrouted] = self.registry.totals();
        RelayStats {
            sent,
            delivered,
            dropped,
            unrouted,
            deadlocks_broken: self.deadlocks_broken.load(Ordering::Relaxed),
            handlers_lost: self.handlers_lost.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            subscribers: self.registry.subscribers(),
            tracked_handlers: self.registry.tracked(),
            live_tasks: self.tasks.live(),
        }
    }

    /// A wait of one of the relay's tasks was on a cycle of waits and was broken.
    pub(crate) fn deadlock_broken(&self) {
        self.deadlocks_broken.fetch_add(1, Ordering::Relaxed);
        trace::deadlock_broken(self.id);
    }

    pub(crate) fn type_stats(&self, type_id: TypeId) -> Option<TypeStats> {
        self.registry.type_stats(type_id)
    }

    // ----- sending -----------------------------------------------------------------

    /// Prepares a typed value for sending (see [`Core::prepare`]).
    pub(crate) fn prepare_value<T: Any + Send + Sync>(
        &self,
        value: T,
        from: From,
    ) -> Result<Outgoing, SendError> {
        self.prepare_or_return(value, from)
            .map_err(|(error, _)| error)
    }

    /// As [`prepare_value`](Self::prepare_value), but a refused send hands the value back.
    /// The value is wrapped in its `Arc` only once the snapshot is taken (outside the
    /// registry lock), so there is nothing to unwrap on refusal.
    pub(crate) fn prepare_or_return<T: Any + Send + Sync>(
        &self,
        value: T,
        from: From,
    ) -> Result<Outgoing, (SendError, T)> {
        match self.snapshot(
            TypeId::of::<T>(),
            Some(std::any::type_name::<T>),
            from,
            true,
        ) {
            Ok(snapshot) => Ok(snapshot.load(Arc::new(value))),
            Err(error) => Err((error, value)),
        }
    }

    /// The synchronous half of a send, run when `send` is *called*: checks the relay is
    /// open, takes the snapshot of targets, numbers the message and creates its tracker.
    /// This is what makes the snapshot rule exact: a subscriber registered before the call
    /// is in it, one registered after is not, however late the future is first polled.
    ///
    /// `from` says who sends: a user's sender, or a forwarder passing on a message that
    /// entered elsewhere first. `wait` decides whether this send is tracked.
    pub(crate) fn prepare(
        &self,
        value: Arc<dyn Any + Send + Sync>,
        type_id: TypeId,
        type_name: Option<TypeName>,
        from: From,
        wait: bool,
    ) -> Result<Outgoing, SendError> {
        Ok(self.snapshot(type_id, type_name, from, wait)?.load(value))
    }

    /// [`prepare`](Self::prepare) without the value: everything decided at the call.
    fn snapshot(
        &self,
        type_id: TypeId,
        type_name: Option<TypeName>,
        from: From,
        wait: bool,
    ) -> Result<Snapshot, SendError> {
        let targets = self
            .registry
            .targets(type_id, type_name)
            .map_err(|_| SendError::Closed)?;
        let plans = if wait && targets.chained {
            self.plans(&targets, type_id, type_name)
        } else {
            Vec::new()
        };
        self.snapshot_of(targets, plans, type_id, type_name, from, wait)
    }

    /// Prepares a message a tracked forwarder passes on into this relay, with the snapshot
    /// planned when the parent's send was called (instead of one taken now).
    pub(crate) fn prepare_planned(
        &self,
        envelope: &Envelope,
        plan: Plan,
    ) -> Result<Outgoing, SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let snapshot = self.snapshot_of(
            plan.targets,
            plan.plans,
            envelope.type_id(),
            Some(envelope.type_name),
            From::Relay(envelope.origin),
            true,
        )?;
        Ok(snapshot.load(envelope.value.clone()))
    }

    /// The plans of the tracked forwarders among `targets`: each one's derived relays'
    /// targets for this type, now, recursively.
    fn plans(&self, targets: &Targets, type_id: TypeId, type_name: Option<TypeName>) -> Vec<Plan> {
        let mut plans = Vec::new();
        for slot in targets.iter().filter(|slot| slot.state.chains()) {
            let links = slot.state.links.iter();
            let open = links.filter(|link| link.takes.accepts(type_id));
            for child in open.filter_map(|link| link.relay.upgrade()) {
                let Ok(child_targets) = child.registry.targets(type_id, type_name) else {
                    continue; // closed: the forwarder finds it so too
                };
                let grand = if child_targets.chained {
                    child.plans(&child_targets, type_id, type_name)
                } else {
                    Vec::new()
                };
                plans.push(Plan {
                    forwarder: slot.state.id,
                    relay: child.id,
                    targets: child_targets,
                    plans: grand,
                });
            }
        }
        plans
    }

    fn snapshot_of(
        &self,
        targets: Arc<Targets>,
        plans: Vec<Plan>,
        type_id: TypeId,
        type_name: Option<TypeName>,
        from: From,
        wait: bool,
    ) -> Result<Snapshot, SendError> {
        let type_name = type_name.or(targets.type_name).unwrap_or(erased_name);
        let msg_id = self.next_msg_id.fetch_add(1, Ordering::Relaxed);
        if targets.is_empty()
            && from == From::User
            && self.config.reject_unrouted
            && self.retention_of(type_id).is_none()
        {
            // Refused at the call, so `send_or_return` can hand the value back; still
            // counted and reported, as every unrouted message is.
            TypeCounters::add(&targets.counters.sent, 1);
            self.unrouted(&targets.counters, msg_id, type_id, type_name);
            return Err(SendError::Unrouted {
                type_name: type_name(),
            });
        }
        let tracker = (wait && targets.tracked > 0)
            .then(|| Arc::new(Tracker::new(targets.tracked, self.config.error_mode, plans)));
        Ok(Snapshot {
            trace: SendSpan::default(),
            targets,
            type_name,
            msg_id,
            origin: match from {
                From::Relay(origin) => origin,
                From::User | From::Here => self.id,
            },
            tracker,
        })
    }

    /// A message reached no subscriber: count it, and report it unless it is one of the
    /// relay's own events (which are simply not made while nobody subscribes to them).
    fn unrouted(&self, counters: &TypeCounters, msg_id: u64, type_id: TypeId, type_name: TypeName) {
        if is_internal_event(type_id) {
            return;
        }
        let first = counters.unrouted.load(std::sync::atomic::Ordering::Relaxed) == 0;
        TypeCounters::add(&counters.unrouted, 1);
        trace::unrouted(self.id, msg_id, type_name(), first);
        self.emit(Unrouted {
            relay_id: self.id,
            msg_id,
            type_name: type_name(),
        });
    }

    /// The first poll of a send (see `core/delivery.rs`): pushes the message to every target
    /// queue with room, in order, without waiting. In lossless mode the first full queue
    /// stops it, and what is left is handed back as [`Pushed::Blocked`].
    pub(crate) fn push_ready(&self, outgoing: Outgoing) -> Pushed {
        let Outgoing {
            mut envelope,
            targets,
            tracker,
        } = outgoing;
        // Opened at the first poll, not at the call, so that both `tx.send(v).instrument(s)`
        // and a send made inside an instrumented block hang below `s`.
        envelope.trace = SendSpan::open(self.id, envelope.msg_id, envelope.type_name);
        let mut tally = self.start_delivery(&envelope, &targets);
        if targets.is_empty() {
            return Pushed::Done { tally, tracker };
        }
        if let Some(tracker) = &tracker {
            if crate::core::deadlock::in_node() {
                // One of the relay's own tasks sends this: the deadlock check may need to
                // know whom it still waits for, so record who settles from the start.
                tracker.watch(
                    targets
                        .iter()
                        .filter(|slot| slot.state.tracked.is_some())
                        .map(|slot| slot.state.id)
                        .collect(),
                );
            }
        }
        let mut envelope = Some(envelope);
        let blocked = self.push_from(&mut envelope, &targets, 0, tracker.as_ref(), &mut tally);
        match blocked {
            None => Pushed::Done { tally, tracker },
            Some((next, item)) => Pushed::Blocked(Box::new(Blocked {
                envelope,
                targets,
                tracker,
                next,
                item,
                tally,
            })),
        }
    }

    /// What every single send does when its delivery starts, before any push: counts it
    /// as sent (a send dropped before its first poll sent nothing), and commits it to its
    /// type's ring if the type is retained (core/retention.rs; then it is never unrouted),
    /// or else reports it unrouted if it has no target. The tally to fill in.
    fn start_delivery(&self, envelope: &Envelope, targets: &Targets) -> Tally {
        let counters = &targets.counters;
        TypeCounters::add(&counters.sent, 1);
        let mut tally = Tally::default();
        tally.receipt.msg_id = envelope.msg_id;
        if let Some(retention) = self.retention_of(envelope.type_id()) {
            self.commit_retained(retention, envelope, targets, &mut tally);
        } else if targets.is_empty() {
            let (msg_id, type_id) = (envelope.msg_id, envelope.type_id());
            self.unrouted(counters, msg_id, type_id, envelope.type_name);
        }
        tally
    }

    /// A send that never waits (`try_send`): untracked (nobody waits for the handlers),
    /// and in lossless mode all or nothing — a slot is taken in every lossless target
    /// queue first, and if one is full they are all given back and the value returned.
    pub(crate) fn try_send_value<T: Any + Send + Sync>(
        &self,
        value: T,
    ) -> Result<Receipt, TrySendError<T>> {
        let mut reserved = match self.reservation::<T>() {
            Ok(reserved) => reserved,
            Err(SendError::Unrouted { .. }) => return Err(TrySendError::Unrouted(value)),
            Err(_) => return Err(TrySendError::Closed(value)),
        };
        if !reserved.take_room_now() {
            return Err(TrySendError::Full(value)); // what was taken is given back
        }
        Ok(self.send_reserved(reserved, Arc::new(value)))
    }

    /// The cold path of a lossless send that met a full queue: wait for room there, then
    /// push to the rest (waiting again where needed). Hands back what the first poll would
    /// have: the tally, and the tracker to wait on.
    pub(crate) async fn deliver_rest(
        &self,
        blocked: Box<Blocked>,
    ) -> (Tally, Option<Arc<Tracker>>) {
        let Blocked {
            mut envelope,
            targets,
            tracker,
            mut next,
            item,
            mut tally,
        } = *blocked;
        // `push_from` counts its own pushes. Those made here, after a wait, are added to
        // the type's counter when delivery ends *or is cancelled* part-way, so copies
        // already queued by a dropped send are counted.
        let mut added = CountOnDrop(&targets.counters.delivered, 0);
        let mut waiting = Some(item);
        while let Some(item) = waiting.take() {
            let slot = &targets.run_from(next)[0];
            let tracked = item.tracker.is_some();
            if self.push_waiting(slot, item).await {
                tally.receipt.queued += 1;
                tally.receipt.handled += usize::from(tracked);
                tally.crowded |= slot.is_crowded();
                added.1 += 1;
            }
            let blocked = self.push_from(
                &mut envelope,
                &targets,
                next + 1,
                tracker.as_ref(),
                &mut tally,
            );
            if let Some((at, item)) = blocked {
                next = at;
                waiting = Some(item);
            }
        }
        (tally, tracker)
    }

    /// Pushes `item` into `slot`, waiting for room (lossless): `true` once queued, `false`
    /// if its receiver went away (the item then fails as gone). Inside one of the relay's
    /// own tasks, a wait for room is a wait of that task: the deadlock check may let it in
    /// over the capacity (core/deadlock.rs), which is counted.
    pub(crate) async fn push_waiting(&self, slot: &QueueTx, item: Queued) -> bool {
        match slot.push(item).await {
            Ok(over) => {
                if over {
                    self.deadlock_broken();
                }
                true
            }
            Err(item) => {
                self.fail_gone(item, &slot.state);
                false
            }
        }
    }

    /// Pushes the message to each target from index `start` on that has room, in order,
    /// without waiting. Returns the first full queue (its index) and its item in lossless
    /// mode, where the caller must wait for room and then continue after it. What it
    /// queues is added to the type's `delivered` counter here.
    ///
    /// The last target gets the send's own copy (`envelope` is `None` after it), not a
    /// clone: once a message is queued everywhere, the sender holds no copy of it, so the
    /// last copy is always let go of by a receiver — where a panicking `Drop` is caught
    /// (SEMANTICS.md §6) — and never, by a race with the handlers, by the sender.
    fn push_from(
        &self,
        envelope: &mut Option<Envelope>,
        targets: &Targets,
        start: usize,
        tracker: Option<&Arc<Tracker>>,
        tally: &mut Tally,
    ) -> Option<(usize, Queued)> {
        let last = targets.len().checked_sub(1)?;
        if start > last {
            return None; // the last target is done: the send holds no copy any more
        }
        let counters = &targets.counters;
        let before = tally.receipt.queued;
        // Counted even if the last push unwinds: a refused last copy is dropped there, and
        // its `Drop` may panic (a forwarder catches that, see `send_made`).
        let mut counted = CountOnDrop(&counters.delivered, 0);
        let mut at = start;
        if let Some(own) = envelope.as_ref() {
            while at < last {
                let run = targets.run_from(at);
                for slot in &run[..run.len().min(last - at)] {
                    if let Some(item) = self.push_one(own.clone(), slot, tracker, tally, counters) {
                        counted.1 = (tally.receipt.queued - before) as u64;
                        return Some((at, item));
                    }
                    at += 1;
                }
            }
        }
        counted.1 = (tally.receipt.queued - before) as u64;
        let (Some(own), Some(slot)) = (envelope.take(), targets.run_from(last).first()) else {
            return None; // not reached: `envelope` is only `None` once `start > last`
        };
        let blocked = self.push_one(own, slot, tracker, tally, counters);
        counted.1 = (tally.receipt.queued - before) as u64;
        blocked.map(|item| (last, item))
    }

    /// Pushes the message to one target without waiting; the item back if the queue is
    /// full in lossless mode.
    pub(crate) fn push_one(
        &self,
        envelope: Envelope,
        slot: &QueueTx,
        tracker: Option<&Arc<Tracker>>,
        tally: &mut Tally,
        counters: &TypeCounters,
    ) -> Option<Queued> {
        let item = Queued {
            envelope,
            tracker: slot.state.tracked.and(tracker.cloned()),
        };
        let tracked = item.tracker.is_some();
        match slot.try_push(item) {
            Ok(()) => {
                tally.receipt.queued += 1;
                tally.receipt.handled += usize::from(tracked);
                tally.crowded |= slot.is_crowded();
            }
            Err(PushError::Full(item)) if slot.state.ended_quietly() => {
                self.fail_gone(item, &slot.state)
            }
            Err(PushError::Full(item)) => match slot.state.mode {
                DeliveryMode::Lossless => return Some(item),
                mode if mode.evicts() => {
                    let sent = item.envelope.type_id();
                    let (pushed, evicted) = slot.evict_for(item);
                    if let Some(old) = evicted {
                        self.evicted(slot, old, Some((sent, counters)), true);
                    }
                    match pushed {
                        Ok(()) => {
                            tally.receipt.queued += 1;
                            tally.receipt.handled += usize::from(tracked);
                            tally.crowded |= slot.is_crowded();
                        }
                        Err(item) => self.fail_gone(item, &slot.state),
                    }
                }
                _ => {
                    tally.receipt.missed += usize::from(!tracked);
                    self.missed(slot, &item, counters, true)
                }
            },
            Err(PushError::Closed(item)) => self.fail_gone(item, &slot.state),
        }
        None
    }

    /// A drop-oldest queue evicted `old` to make room: counted and reported as that
    /// message missed, on its own type's counters (`sending`: the type being sent and its
    /// counters, used when `old` is of that type; a queue of every type may evict another
    /// type's message). `publish`: whether events are published about it (not when the
    /// eviction made room for an event: publishing would evict again, a cascade as deep
    /// as the queue; the counters and the tracked sender still learn of it).
    ///
    /// Then `old` is let go of: its copy may be the last, and a panic in its `Drop` is
    /// caught wherever the eviction ran (a user's send, a forwarder, an event), reported
    /// as a `RelayError` of the queue's kind ("while dropping the message": published if
    /// `publish`, always counted), and raised again after that under
    /// `PanicMode::Propagate` — except while an event is being published, where
    /// unwinding would cut that publication short.
    fn evicted(
        &self,
        slot: &QueueTx,
        old: Queued,
        sending: Option<(TypeId, &TypeCounters)>,
        publish: bool,
    ) {
        let type_id = old.envelope.type_id();
        match sending {
            Some((sent, counters)) if sent == type_id => self.missed(slot, &old, counters, publish),
            // A message that was queued was routed: its type has counters.
            _ => match self.registry.counters_of(type_id) {
                Some(counters) => self.missed(slot, &old, &counters, publish),
                None => slot.state.count_drop(), // not reached
            },
        }
        let (msg_id, type_name) = (old.envelope.msg_id, old.envelope.type_name());
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(old)));
        if let Err(payload) = dropped {
            let error = RelayError {
                msg_id,
                relay_id: self.id,
                kind: slot.state.tracked.unwrap_or(HandlerKind::Subscription),
                type_name,
                error: Arc::new(crate::relay::error::PanicError::dropping(&*payload)),
            };
            self.report_as(None, error, publish);
            if publish && self.config.panic_mode == crate::PanicMode::Propagate {
                std::panic::resume_unwind(payload);
            }
        }
    }

    /// A subscriber's queue had no room for `item` (broadcast mode, or an eviction):
    /// count it, report it (events, `Dropped` and the tracked send's `RelayError`, only if
    /// `publish`), and fail its tracked send, if one waits.
    fn missed(&self, slot: &QueueTx, item: &Queued, counters: &TypeCounters, publish: bool) {
        TypeCounters::add(&counters.dropped, 1);
        slot.state.count_drop();
        let env = &item.envelope;
        if publish && !is_internal_event(env.type_id()) {
            let dropped = Dropped {
                relay_id: self.id,
                msg_id: env.msg_id,
                type_name: env.type_name(),
                subscriber_id: slot.state.id,
            };
            trace::dropped(&dropped);
            self.emit(dropped);
        }
        if let (Some(kind), Some(tracker)) = (slot.state.tracked, item.tracker.as_deref()) {
            self.report_as(
                Some((tracker, slot.state.id)),
                self.error_for(&item.envelope, kind, Arc::new(QueueFull)),
                publish,
            );
        }
    }

    /// A message taken by a subscriber that could not pass it on (a bridge's export, the
    /// engine unreachable): counted as dropped on its type and reported as `Dropped`,
    /// as a queue that overflowed would be.
    #[cfg(any(feature = "nats", feature = "redis"))]
    pub(crate) fn dropped_elsewhere(&self, env: &Envelope, subscriber_id: u64) {
        if let Some(counters) = self.registry.counters_of(env.type_id()) {
            TypeCounters::add(&counters.dropped, 1);
        }
        let dropped = Dropped {
            relay_id: self.id,
            msg_id: env.msg_id,
            type_name: env.type_name(),
            subscriber_id,
        };
        trace::dropped(&dropped);
        self.emit(dropped);
    }

    /// A message for this relay that an engine's client dropped before a bridge got it
    /// (NATS "slow consumer"): its id and type are not known, so the `Dropped` has
    /// `msg_id` 0 and `type_name` says what it was.
    #[cfg(feature = "nats")]
    pub(crate) fn dropped_remote(&self, type_name: &'static str, subscriber_id: u64) {
        let dropped = Dropped {
            relay_id: self.id,
            msg_id: 0,
            type_name,
            subscriber_id,
        };
        trace::dropped(&dropped);
        self.emit(dropped);
    }

    /// A tracked message could not reach, or was never processed by, its handler.
    pub(crate) fn fail_gone(&self, mut item: Queued, queue: &QueueState) {
        self.settle_gone(&mut item, queue);
    }

    /// As `fail_gone`, but leaves the message itself to the caller (who drops it where a
    /// panicking `Drop` can be caught): only its tracker is taken and settled.
    pub(crate) fn settle_gone(&self, item: &mut Queued, queue: &QueueState) {
        let Some(tracker) = item.tracker.take() else {
            return;
        };
        if queue.ended_quietly() {
            // A forwarder that ended because nobody observes its child any more. If the
            // send's snapshot of the child held tracked handlers, they went after it was
            // taken: that is a handler gone, as for any subscriber of the snapshot.
            // Otherwise there was nobody to pass the message on to, which is no failure.
            let plans = tracker.take_plans(queue.id);
            if !plans.iter().any(|plan| plan.targets.tracked > 0) {
                tracker.complete(queue.id);
                return;
            }
        }
        if let Some(kind) = queue.tracked {
            self.report(
                Some((&tracker, queue.id)),
                self.error_for(&item.envelope, kind, Arc::new(HandlerGone)),
            );
        }
    }

    pub(crate) fn error_for(
        &self,
        envelope: &Envelope,
        kind: HandlerKind,
        error: SharedError,
    ) -> RelayError {
        RelayError {
            msg_id: envelope.msg_id,
            relay_id: self.id,
            kind,
            type_name: envelope.type_name(),
            error,
        }
    }

    /// The dual path: the error goes to the tracked sender (if any) and is published as a
    /// `RelayError` event — except a failure while handling an internal event, which is
    /// not re-published (that could loop).
    /// `by` is the subscriber the failure is for (who settles the tracker).
    pub(crate) fn report(&self, tracker: Option<(&Tracker, u64)>, error: RelayError) {
        self.report_as(tracker, error, true);
    }

    /// As [`report`](Self::report); `publish: false` counts the failure and settles the
    /// tracker but publishes no event (a failure found while an event was being
    /// published: publishing it would recurse). The event is published before the
    /// tracker is settled, so a sender that gets the error finds the event already there
    /// (publication never unwinds: an eviction it makes catches a panicking `Drop`).
    fn report_as(&self, tracker: Option<(&Tracker, u64)>, error: RelayError, publish: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        trace::failure(&error);
        if error.is_panic() {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
        if publish && !is_internal_type_name(error.type_name) {
            self.emit(error.clone());
        }
        if let Some((tracker, by)) = tracker {
            tracker.fail(by, error);
        }
    }

    /// Publishes an internal event (`Dropped`, `RelayError`, `Unrouted`). Events never wait
    /// and are never tracked: a full queue misses the event (counted, not re-reported).
    pub(crate) fn emit<T: Any + Send + Sync>(&self, event: T) {
        if !self.registry.has_listeners() {
            return; // nobody can receive it: as `targets.is_empty()` below, sooner
        }
        let Ok(targets) = self
            .registry
            .targets(TypeId::of::<T>(), Some(std::any::type_name::<T>))
        else {
            return;
        };
        if targets.is_empty() {
            return;
        }
        let envelope = Envelope {
            value: Arc::new(event),
            type_name: std::any::type_name::<T>,
            msg_id: self.next_msg_id.fetch_add(1, Ordering::Relaxed),
            origin: self.id,
            trace: SendSpan::default(),
        };
        let counters = &targets.counters;
        TypeCounters::add(&counters.sent, 1);
        let mut delivered = 0;
        for slot in targets.iter() {
            let item = Queued {
                envelope: envelope.clone(),
                tracker: None,
            };
            // An event never waits, but a drop-oldest queue still makes room for it.
            let (pushed, evicted) = slot.push_now(item);
            if let Some(old) = evicted {
                // Counted, with no `Dropped` event: that would evict again.
                self.evicted(slot, old, Some((TypeId::of::<T>(), counters)), false);
            }
            match pushed {
                Ok(()) => delivered += 1,
                Err(PushError::Full(_)) => {
                    TypeCounters::add(&counters.dropped, 1);
                    slot.state.count_drop();
                }
                Err(PushError::Closed(_)) => {}
            }
        }
        TypeCounters::add(&counters.delivered, delivered);
    }
}

/// The relay's own events: never forwarded, never reported as unrouted, and a failure
/// while handling one is not re-published (either could loop).
pub(crate) fn is_internal_event(type_id: TypeId) -> bool {
    type_id == TypeId::of::<Dropped>()
        || type_id == TypeId::of::<RelayError>()
        || type_id == TypeId::of::<Unrouted>()
        || type_id == TypeId::of::<HandlerLost>()
}

fn is_internal_type_name(name: &str) -> bool {
    name == std::any::type_name::<Dropped>()
        || name == std::any::type_name::<RelayError>()
        || name == std::any::type_name::<Unrouted>()
        || name == std::any::type_name::<HandlerLost>()
}

/// Adds its count to a type's counter when dropped (the counters are std atomics: they
/// order nothing, so loom need not see them).
pub(crate) struct CountOnDrop<'a>(pub(crate) &'a std::sync::atomic::AtomicU64, pub(crate) u64);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        TypeCounters::add(self.0, self.1);
    }
}
