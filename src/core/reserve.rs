//! Room taken in subscriber queues ahead of a message: the all-or-nothing first phase of
//! `try_send`, and the waiting reservation behind `RelaySender::reserve`'s permits.
//!
//! A [`Reserved`] holds a send's snapshot (taken when the reservation was asked for, as
//! a `send` takes it at the call) and one slot in each of its *lossless* target queues.
//! Queues of the other modes never wait, so they hold nothing: the message is pushed to
//! them when it is sent, as any send pushes (a miss or an eviction is reported then).

use std::any::{Any, TypeId};
use std::sync::Arc;

use crate::core::trace::SendSpan;
use crate::core::{Core, CountOnDrop, From, Outgoing, Reservations, Snapshot};
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
        let mut tally = self.start_delivery(&envelope, &targets);
        if targets.is_empty() {
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
        self.try_take_all(None).is_ok()
    }

    /// All or nothing, without waiting: a slot in every lossless target queue, or, if
    /// queue `i` is full, none at all (every slot taken is given back) and `Err(i)`.
    /// `forced`: a queue whose wait the deadlock check broke, taken over its capacity if
    /// full, as a broken wait's push is.
    fn try_take_all(&mut self, forced: Option<usize>) -> Result<(), usize> {
        self.give_back();
        let targets = self.snapshot.targets.clone();
        for (i, slot) in targets.iter().enumerate() {
            if !slot.state.mode.waits() {
                self.held.held.push(false);
                continue;
            }
            match slot.reserve_slot() {
                Some(true) => self.held.held.push(true),
                Some(false) if forced == Some(i) => {
                    let taken = slot.reserve_over();
                    self.held.held.push(taken);
                }
                Some(false) => {
                    self.give_back();
                    return Err(i);
                }
                None => self.held.held.push(false), // its receiver is gone: nothing to queue
            }
        }
        Ok(())
    }

    /// Gives back every slot held, and forgets them.
    fn give_back(&mut self) {
        let held = &mut self.held;
        for (slot, held) in held.targets.iter().zip(held.held.drain(..)) {
            if held {
                slot.unreserve();
            }
        }
    }

    /// Takes a slot in every lossless target queue, waiting for room as a lossless send
    /// waits — but **holding nothing while it waits**: it takes all the slots at once or
    /// none, and when a queue is full it gives back what it took and waits for room in
    /// that queue alone, then tries again. A reservation waiting for one subscriber so
    /// never holds room another subscriber's progress needs (a handler blocked on a queue
    /// the reservation held would be a deadlock the check cannot see: a slot holder is not
    /// a drainer). Under steady contention it can be overtaken by sends, as any waiter
    /// can. A wait the deadlock check breaks (inside one of the relay's own tasks) lets
    /// the reservation into that queue over its capacity, by one, as it lets a send.
    ///
    /// Cancel safe: dropped while it waits, it holds no slot (the one its wait takes is
    /// given back at once).
    pub(crate) async fn take_room(&mut self, core: &Core) {
        let targets = self.snapshot.targets.clone();
        let mut forced = None;
        while let Err(full) = self.try_take_all(forced) {
            let Some(slot) = targets.iter().nth(full) else {
                return; // not reached: `full` is one of the targets
            };
            // Wait for room there (taking it, as a lossless push does), then let it go
            // and try for all of them again. Gone: the next try skips it.
            if let Ok(over) = slot.reserve_waiting().await {
                slot.unreserve();
                if over {
                    core.deadlock_broken();
                    forced = Some(full);
                }
            }
        }
    }

    /// The message id the reserved message will have.
    pub(crate) fn msg_id(&self) -> u64 {
        self.snapshot.msg_id
    }
}
