//! Room taken in subscriber queues ahead of a message: the all-or-nothing first phase of
//! `try_send`, and the waiting reservation behind `RelaySender::reserve`'s permits.
//!
//! A [`Reserved`] holds a send's snapshot (taken when the reservation was asked for, as
//! a `send` takes it at the call) and one slot in each of its *lossless* target queues.
//! Queues of the other modes never wait, so they hold nothing: the message is pushed to
//! them when it is sent, as any send pushes (a miss or an eviction is reported then).

use std::any::{Any, TypeId};
use std::sync::Arc;

use crate::core::registry::TypeCounters;
use crate::core::trace::SendSpan;
use crate::core::{Core, CountOnDrop, From, Outgoing, Reservations, Snapshot, Tally};
use crate::relay::envelope::{Queued, TypeName};
use crate::relay::error::SendError;
use crate::relay::receipt::Receipt;

/// A snapshot and the room taken for one message in its lossless queues.
///
/// Invariant: `held.held[i]` is `true` exactly while a slot taken in `targets[i]` is not
/// yet used; dropping a `Reserved` (a permit dropped, a reservation's wait cancelled part
/// way, a `try_send` refused) gives every such slot back.
pub(crate) struct Reserved {
    snapshot: Snapshot,
    held: Reservations,
}

impl Core {
    /// A reservation for one message of `T`, with its snapshot taken now and no room yet.
    pub(crate) fn reservation<T: Any + Send + Sync>(&self) -> Result<Reserved, SendError> {
        let type_name = Some(std::any::type_name::<T> as TypeName);
        let mut snapshot = self.snapshot(TypeId::of::<T>(), type_name, From::User, false)?;
        // Opened before any room is taken: a tracing subscriber runs here, and a panic
        // in it must not strand a reservation.
        snapshot.trace = SendSpan::open(self.id, snapshot.msg_id, snapshot.type_name);
        let held = Reservations {
            targets: snapshot.targets.clone(),
            held: Vec::with_capacity(snapshot.targets.len()),
        };
        Ok(Reserved { snapshot, held })
    }

    /// Delivers `value` into the room `reserved` holds: its lossless queues get it in the
    /// slots taken for it, the others as any send pushes. Never waits; untracked (nobody
    /// waits for the handlers, which still process it). As in `push_from`, the last
    /// queue to get it gets the send's own copy.
    pub(crate) fn send_reserved(
        &self,
        reserved: Reserved,
        value: Arc<dyn Any + Send + Sync>,
    ) -> Receipt {
        let Reserved { snapshot, mut held } = reserved;
        let Outgoing {
            envelope,
            targets,
            tracker: _,
        } = snapshot.load(value);
        let counters = &targets.counters;
        TypeCounters::add(&counters.sent, 1);
        let mut tally = Tally::default();
        tally.receipt.msg_id = envelope.msg_id;
        if targets.is_empty() {
            let (msg_id, type_id) = (envelope.msg_id, envelope.type_id());
            self.unrouted(counters, msg_id, type_id, envelope.type_name);
            return tally.receipt;
        }
        let mut envelope = Some(envelope);
        if !held.held.iter().any(|&taken| taken) && targets.iter().all(|s| !s.state.mode.waits()) {
            // No queue waits: a full one misses the message (or evicts its oldest).
            self.push_from(&mut envelope, &targets, 0, None, &mut tally);
            return tally.receipt;
        }
        // Who gets it: the queues holding a slot for it, and those that never wait. A
        // lossless queue without a slot has no receiver any more.
        let gets = |held: &[bool], i: usize, slot: &crate::core::queue::QueueTx| {
            held.get(i).copied().unwrap_or(false) || !slot.state.mode.waits()
        };
        let Some(last) = targets
            .iter()
            .enumerate()
            .filter(|&(i, slot)| gets(&held.held, i, slot))
            .map(|(i, _)| i)
            .last()
        else {
            return tally.receipt; // every receiver is gone
        };
        let mut counted = CountOnDrop(&counters.delivered, 0);
        for (i, slot) in targets.iter().enumerate().take(last + 1) {
            if !gets(&held.held, i, slot) {
                continue;
            }
            let copy = if i == last {
                envelope.take()
            } else {
                envelope.clone()
            };
            let Some(copy) = copy else { break }; // not reached: taken only at `last`
            if !held.held.get(i).copied().unwrap_or(false) {
                let before = tally.receipt.queued;
                self.push_one(copy, slot, None, &mut tally, counters);
                counted.1 += (tally.receipt.queued - before) as u64;
                continue;
            }
            held.held[i] = false; // used now: `held` no longer gives it back
            let item = Queued {
                envelope: copy,
                tracker: None,
            };
            // On `Err` (the receiver just went) `push_reserved` gives the slot back.
            if slot.push_reserved(item).is_ok() {
                tally.receipt.queued += 1;
                counted.1 += 1;
            }
        }
        tally.receipt
    }
}

impl Reserved {
    /// Takes a slot in every lossless target queue now, without waiting: `false` if one
    /// is full (the slots already taken are given back when `self` is dropped).
    pub(crate) fn take_room_now(&mut self) -> bool {
        for slot in self.snapshot.targets.iter().skip(self.held.held.len()) {
            if !slot.state.mode.waits() {
                self.held.held.push(false);
                continue;
            }
            match slot.reserve_slot() {
                Some(false) => return false,
                Some(true) => self.held.held.push(true),
                None => self.held.held.push(false), // its receiver is gone: nothing to queue
            }
        }
        true
    }

    /// Takes a slot in every lossless target queue, waiting for room in each in turn, as
    /// a lossless send waits. Cancel safe: dropped while it waits, the slots taken so far
    /// are given back with `self` (or kept, if `self` lives on, and the wait resumes at
    /// the queue it stopped at when called again).
    pub(crate) async fn take_room(&mut self, core: &Core) {
        let targets = self.snapshot.targets.clone();
        for slot in targets.iter().skip(self.held.held.len()) {
            if !slot.state.mode.waits() {
                self.held.held.push(false);
                continue;
            }
            let taken = match slot.reserve_waiting().await {
                Ok(over) => {
                    if over {
                        core.deadlock_broken();
                    }
                    true
                }
                Err(()) => false, // its receiver is gone: nothing to queue
            };
            self.held.held.push(taken);
        }
    }

    /// The message id the reserved message will have.
    pub(crate) fn msg_id(&self) -> u64 {
        self.snapshot.msg_id
    }
}
