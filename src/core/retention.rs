//! Replay for late subscribers: a per-type ring of the last `n` messages
//! (`RelayBuilder::retain::<T>(n)`), given to every queue of that type that registers
//! later, before any live message.
//!
//! # The seam
//!
//! A send takes its snapshot of subscribers at the call, but a message only counts as
//! sent at its first poll (a send dropped before it sent nothing). Retention follows the
//! second: the message enters the ring when its delivery starts — its *commit*. Nothing
//! may be missed or duplicated for a subscriber that registers around that time, so two
//! critical sections exclude each other under the ring's lock:
//!
//! - a **registration** of the type copies the ring into its new queue, then adds the
//!   queue to the registry;
//! - a **commit** appends the message to the ring, then pushes it to every queue of the
//!   type that registered after the send's snapshot was taken ("late joiners": in the
//!   registry now, not in the snapshot).
//!
//! For a subscriber `S` and a message `m`: if `S` registered before `m`'s snapshot, `S` is
//! in it and gets `m` from the send, and `m` was not in the ring `S` copied (it commits
//! later). If `S` registered between the snapshot and the commit, `S` copied a ring
//! without `m` and the commit pushes `m` to it as a late joiner. If `S` registered after
//! the commit, `m` is in the ring it copies (if still among the last `n`), and `S` is in
//! neither the snapshot nor the commit's view. Each case gives `m` once, after the
//! replayed messages. Wildcard subscribers get no replay and are never late joiners: for
//! them the exact-snapshot rule holds unchanged.
//!
//! Lock order: a ring's lock, then the registry's (`book`, then `published`). No user
//! code runs under a ring's lock: the pushes to late joiners never wait and never report,
//! and what they refused or evicted, and the ring's own evicted entry, are reported and
//! dropped after the lock is let go.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::queue::{PushError, QueueTx};
use crate::core::registry::Targets;
use crate::core::{Core, Tally};
use crate::relay::envelope::{Envelope, Queued};

/// The last `keep` committed messages of one type, oldest first.
///
/// Invariant: `ring.len() <= keep`; every envelope in it has no tracing span (a retained
/// message does not keep its send's span open).
pub(crate) struct Retention {
    keep: usize,
    ring: Mutex<VecDeque<Envelope>>,
}

impl Retention {
    pub(crate) fn new(keep: usize) -> Arc<Retention> {
        Arc::new(Retention {
            keep,
            ring: Mutex::new(VecDeque::with_capacity(keep.min(64))),
        })
    }

    /// The ring, locked. Values' `Drop` never runs under it (evicted values are dropped
    /// after the guard), so a poisoned lock still holds a consistent ring.
    pub(crate) fn lock(&self) -> MutexGuard<'_, VecDeque<Envelope>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the newest retained messages, up to `room`, into `tx` (a queue not yet
    /// registered, so nothing else pushes to it): the replay of a new subscriber.
    pub(crate) fn replay_into(ring: &VecDeque<Envelope>, tx: &QueueTx, room: usize) {
        let skip = ring.len().saturating_sub(room);
        for envelope in ring.iter().skip(skip) {
            let item = Queued {
                envelope: envelope.clone(),
                tracker: None,
            };
            if tx.try_push(item).is_err() {
                break; // not reached: a fresh queue has room for `room`
            }
        }
    }
}

impl Core {
    /// The ring of type `type_id`, if the relay retains it.
    pub(crate) fn retention_of(&self, type_id: std::any::TypeId) -> Option<&Arc<Retention>> {
        if self.retained.is_empty() {
            return None;
        }
        self.retained
            .iter()
            .find(|(id, _)| *id == type_id)
            .map(|(_, retention)| retention)
    }

    /// The commit of a retained message (see the module docs): appends it to the ring
    /// and pushes it to the late joiners of `targets`, the send's snapshot, counting them
    /// in `tally` (as queued, or missed if a late joiner's queue is full: nothing waits
    /// under the ring's lock).
    pub(crate) fn commit_retained(
        &self,
        retention: &Retention,
        envelope: &Envelope,
        targets: &Targets,
        tally: &mut Tally,
    ) {
        tally.receipt.retained = true;
        let mut ring = retention.lock();
        ring.push_back(Envelope {
            value: envelope.value.clone(),
            type_name: envelope.type_name,
            msg_id: envelope.msg_id,
            origin: envelope.origin,
            trace: Default::default(),
        });
        let evicted = if ring.len() > retention.keep {
            ring.pop_front()
        } else {
            None
        };
        // What must not be dropped or reported under the lock (user code may run there:
        // a value's `Drop`, a panic re-raised): what the late joiners' queues refused or
        // evicted, handled once the lock is let go.
        let mut refused: Vec<(QueueTx, Queued, bool)> = Vec::new();
        let mut late_queued = 0;
        let type_id = envelope.type_id();
        // The snapshot is the published list itself unless someone registered or left
        // since: then look for the late joiners.
        let now = self.registry.targets(type_id, None).ok();
        if let Some(now) = now.as_ref().filter(|now| !std::ptr::eq(targets, &***now)) {
            for slot in now.own_iter() {
                if targets.own_iter().any(|s| s.state.id == slot.state.id) {
                    continue;
                }
                let item = Queued {
                    envelope: envelope.clone(),
                    tracker: None,
                };
                match late_push(slot, item) {
                    Late::Queued(evicted) => {
                        tally.receipt.queued += 1;
                        late_queued += 1;
                        if let Some(old) = evicted {
                            refused.push((slot.clone(), old, true));
                        }
                    }
                    Late::Missed(item) => {
                        tally.receipt.missed += 1;
                        refused.push((slot.clone(), item, false));
                    }
                    Late::Gone => {}
                }
            }
        }
        drop(ring);
        drop(evicted); // outside the lock: its `Drop` is user code
        if let Some(now) = now {
            crate::core::registry::TypeCounters::add(&now.counters.delivered, late_queued);
            for (slot, item, was_evicted) in refused {
                if was_evicted {
                    self.evicted(&slot, item, Some((type_id, &now.counters)), true);
                } else {
                    self.missed(&slot, &item, &now.counters, true);
                }
            }
        }
    }
}

/// What a late joiner's queue did with the message.
enum Late {
    /// Queued (and, drop-oldest, the message it evicted to make room).
    Queued(Option<Queued>),
    /// Refused: a broadcast queue with no room.
    Missed(Queued),
    /// Its receiver is gone.
    Gone,
}

/// Pushes to a late joiner without waiting (the ring's lock is held) and without
/// running user code: a lossless queue takes the message over its capacity if it must
/// (its new subscriber may be full of its replay; the message must not be lost, and the
/// overshoot is one per send in flight with an older snapshot), a drop-oldest one evicts
/// (the evicted message is handed back), a broadcast one misses it.
fn late_push(slot: &QueueTx, item: Queued) -> Late {
    match slot.push_now(item) {
        (Ok(()), evicted) => Late::Queued(evicted),
        (Err(PushError::Closed(_)), _) => Late::Gone,
        (Err(PushError::Full(item)), _) if slot.state.mode.waits() => {
            if slot.reserve_over() && slot.push_reserved(item).is_ok() {
                Late::Queued(None)
            } else {
                Late::Gone
            }
        }
        (Err(PushError::Full(item)), _) => Late::Missed(item),
    }
}
