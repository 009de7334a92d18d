//! One subscriber's queue: an unbounded `async-channel` with a capacity enforced by a
//! counter, created when a message arrives and let go of when the queue drains, so memory
//! follows what is queued, never the configured capacity.
//!
//! # Storage: a channel per busy period
//!
//! `async_channel::bounded(65_536)` would allocate its whole ring up front; `unbounded`
//! allocates 31-slot blocks only as messages arrive, but keeps its last block (and its own
//! 768-byte state) for as long as it lives. So the queue holds its channel in a shared
//! [`Slot`]: the first sender that finds the slot empty creates a channel; the receiver,
//! when it finds the queue empty and is about to wait, *retires* it (empties the slot and
//! closes the channel). An idle subscriber then holds no channel at all.
//!
//! A sender that still holds a retired channel finds it closed and retries on the current
//! one, so no message is left in a channel nobody reads. A message that landed in the
//! retired channel just before the close is read first: the receiver keeps that channel
//! as `leftover` until it is drained. Only the receiver retires, so while it holds a
//! channel it knows the slot holds the same one and reads it without touching the slot.
//!
//! # Capacity
//!
//! - `len` counts messages queued *plus* slots reserved by senders about to push. A sender
//!   reserves with a compare-and-swap that never lets `len` exceed `capacity`, pushes, and
//!   never awaits in between (so a cancelled `send` cannot leak a reservation).
//! - The receiver gives room back in batches. It counts the messages it took in `owed`,
//!   a counter on a cache line of its own, and moves that count out of `len` every
//!   `credit_batch` messages (`capacity / 64` within `1..=32`), and always before it waits
//!   on an empty queue. One atomic operation on the shared word per batch, instead of per
//!   message, keeps that line from bouncing between the producer's and the consumer's
//!   cores.
//! - A sender that finds the queue full first takes back the room held in `owed`
//!   (`reclaim`), then tries again. So the capacity is exact: a send is refused (broadcast)
//!   or waits (lossless) only when `capacity` messages are really queued or reserved. This
//!   matters for liveness, too. A task that receives one message and then sends one to the
//!   same full queue would otherwise wait for room that only it can give back.
//! - While a lossless sender waits, the receiver gives back the room of each message at
//!   once, not per batch. A waiting sender is counted in the high bits of `owed` as well as
//!   in `state`, so the receiver learns of it from the `fetch_add` it makes per message
//!   anyway. Both sides' operations on `owed` are read-modify-writes of one word, so they
//!   are ordered: either the receiver's add sees the waiter (and gives the room back), or
//!   the sender's registration comes first and its next `reclaim` takes the room. So a
//!   consumer that takes one message and then waits for the blocked sender's next step
//!   does not deadlock with it over a slot held back for a batch.
//! - Every unit of `owed` is moved out with one `fetch_and` that clears the count and keeps
//!   the waiter bits, by the receiver or by a sender, so each is given back exactly once.
//! - When it gives room back, the receiver notifies `space` only if a sender is waiting:
//!   `Event::notify` takes a lock, too much to pay when nobody waits.
//! - A lossless sender that finds the queue full registers as a waiter, then waits on
//!   `space` with the eventcount pattern: try, listen, try again, await.
//!
//! The length, the number of waiters and the receiver's `PARKED` flag share one atomic
//! word (`state`: low 40 bits length, then 22 bits of waiters, then `PARKED`), so the
//! receiver's single `fetch_sub` tells it whether anyone waits, and no wake-up can be lost:
//! the modification order of that one word puts the receiver's decrement either before the
//! waiter's registration (then the waiter's re-check, which reads the word after its own
//! registration, sees the freed slot) or after it (then the decrement returns a non-zero
//! waiter count and the receiver notifies; a notification that lands before the waiter
//! listens is covered by its re-check after listening).
//!
//! # The receiver's wait
//!
//! The receiver waits on its own event, `arrival`, never inside async-channel. A sender
//! notifies `arrival` only if the receiver said it waits (`PARKED`, a bit of `state`), so
//! a receiver that keeps up costs its senders no notification. The wait is the eventcount
//! pattern, with the flag in the middle:
//!
//! 1. the receiver *listens* on `arrival`;
//! 2. it raises `PARKED` (a SeqCst read-modify-write), lets go of its channel if it
//!    releases it, and makes a SeqCst fence;
//! 3. it looks at its queue again, and waits only if it is still empty.
//!
//! A sender, after each push (after the last push of a batch's run, for `send_all`),
//! makes a SeqCst fence and reads `PARKED`; if it is raised,
//! it takes it down (one sender wins) and notifies `arrival`. The two fences make a
//! store-buffering pair: either the sender sees the flag, or the receiver's second look
//! sees the message. Listening *before* raising the flag matters: a sender's wake-up for
//! an earlier message can run late and take down a flag the receiver raised for a later
//! wait, and it must then still find the listener to wake (the receiver looks again and
//! raises the flag anew). The loom model `loom_a_late_wake_up_for_an_earlier_message_…`
//! finds the lost wake-up if the order is reversed.
//!
//! A subscription a user holds also lets go of its channel when it waits; before that it
//! yields to its executor once, so a message arriving within one turn of the scheduler
//! does not cost a new channel. The relay's own handler and forwarder tasks keep their
//! channel: they wait after every message, and making a channel per message doubled the
//! time of a tracked round trip (SEMANTICS.md §13).
//!
//! The last sender handle to go away (the relay closed and every in-flight send let go)
//! notifies `arrival` too; the receiver then drains what is queued and sees the end.

use std::future::Future;
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender};
use event_listener::{Event, EventListener};

use crate::core::deadlock::{On, Waiting as DeadlockWait};
use crate::core::sync::{fence, Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, Slot};
use crate::relay::envelope::{Envelope, Queued};
use crate::relay::error::HandlerKind;

/// One channel of a queue's busy period: both ends, so the queue can close it, drain it
/// and let it go as a whole. It is never closed by async-channel's own counting (the queue
/// holds both ends): only [`QueueRx`] closes it, when it retires it or goes away.
struct Chan {
    tx: Sender<Queued>,
    rx: Receiver<Queued>,
}

impl Chan {
    fn new() -> Arc<Chan> {
        let (tx, rx) = async_channel::unbounded();
        Arc::new(Chan { tx, rx })
    }
}

/// Accounting shared by a queue's senders (the registry's copies) and its receiver.
///
/// Invariants:
/// - `len(state) <= capacity` at all times, but for the messages let in over it by a
///   broken cycle of waits (one per broken wait, `core/deadlock.rs`) or by a drop-oldest
///   push that found nothing to evict (`evict_for`), still counted. `len` is the messages
///   in the channels, plus the reservations in flight (each lives for one synchronous
///   push, or for the synchronous run of pushes of a batch, or for as long as a permit,
///   `core/reserve.rs`, holds it: a permit gives its slots back when dropped), plus the taken
///   messages whose room is held back (counted in `owed`, or just swapped out of it and
///   about to be released). `waiters(state)` counts the live `WaiterGuard`s.
/// - `chan` is empty, or holds the one channel senders push to. Only a sender that finds
///   it empty fills it (under `creating`), and only the receiver empties it.
/// - Once `gone` is set (under `creating`) no channel is created again, and every push
///   fails: the receiver closed the channels it held before draining them.
/// - `senders` counts the live [`QueueTx`] handles; once it reaches zero it stays zero and
///   nothing more is pushed.
pub(crate) struct QueueState {
    /// Bits 0..40: queued + reserved messages (senders add, the receiver subtracts).
    /// Bits 40..62: lossless senders registered as waiting. Bit 62: `PARKED`, the receiver
    /// waits (or is about to) on `arrival`; cleared by the first sender to push after it
    /// was set (`arrived`), which then notifies.
    state: AtomicU64,
    /// Messages ever made visible here, raised before each becomes visible (the idle
    /// barrier's count, `core/flow.rs`); on the senders' line, next to `state`.
    pushed: AtomicU64,
    capacity: u64,
    /// How many taken messages the receiver gathers before giving their room back.
    credit_batch: u64,
    /// Low 40 bits: messages taken whose room is not yet given back. Added to by the
    /// receiver, moved out (`reclaim`) by the receiver at a full batch, before it waits, or
    /// at once while a sender waits, and by any sender that finds the queue full (or too
    /// short for a batch's run).
    /// High bits: lossless senders registered as waiting (the same count as in `state`).
    /// On its own cache line: the receiver writes it per message.
    owed: CachePadded,
    /// Lossless senders waiting for room (or for the receiver to go away). Notified for each
    /// slot given back while a sender waits (per batch, or by a reclaim), and for all on
    /// close.
    space: Event,
    /// The receiver waiting for a message or for the end. Notified by the sender that
    /// clears `PARKED`, and by the last [`QueueTx`] to go away.
    arrival: Event,
    /// The channel senders push to; empty while the queue is idle (see the module docs).
    chan: Slot<Chan>,
    /// Held while a channel is created, and while the receiver marks itself `gone`.
    creating: Mutex<()>,
    /// Live sender handles (see the invariants).
    senders: AtomicUsize,
    /// The receiver is gone: every push fails, nothing is created.
    gone: AtomicBool,
    /// The receiver is one of the relay's own handler or forwarder tasks
    /// (`QueueRx::count_until_next`): once no sender is left, its end is work still to
    /// do (a forwarder's last partial batch, a handler's last message) until the receiver
    /// ends, so the idle barrier counts it (`counts`). Only ever set (false to true, so
    /// no waiter needs waking for it), right after registration.
    task: AtomicBool,
    /// It went because nothing could observe what it would pass on (a forwarder whose
    /// derived relay is unobserved): a tracked message that cannot reach it now counts as
    /// handled, not as a failure.
    quiet: AtomicBool,
    /// Messages this subscriber missed because its queue was full.
    dropped: AtomicU64,
    /// The queue's relay family, whose idle barrier this queue wakes (`core/flow.rs`).
    pub(crate) flow: std::sync::Arc<crate::core::flow::Flow>,
    /// What a push does when the queue is full (chosen at registration: the
    /// subscription's own mode, else its type's, else the relay's).
    pub(crate) mode: crate::DeliveryMode,
    /// Registry id of this subscriber.
    pub(crate) id: u64,
    /// `Some` for a tracked subscriber: which kind of handler it is.
    pub(crate) tracked: Option<HandlerKind>,
    /// For the forwarder of a derived relay that is tracked (`filter`, `only`, `exclude`,
    /// `split`): the relays it passes messages on to, so that a tracked send can snapshot
    /// them at the call. Empty for every other subscriber.
    pub(crate) links: Box<[crate::core::Link]>,
}

impl QueueState {
    /// `n` messages are done with (`core/flow.rs`); if that leaves the queue idle while
    /// someone waits for the family's idle barrier, wake them.
    ///
    /// Whether anyone waits is learnt from the same read-modify-write: a waiter *arms*
    /// the queue (`arm`, a `fetch_or` of `IDLE_WAITER` into the same word) before it
    /// reads the counts, so either this add sees the flag, or the waiter's read sees this
    /// add. Modification order on one word, no fence, nothing extra on the hot path.
    #[inline]
    fn done(&self, n: u64) {
        let before = self.owed.1.fetch_add(n, Ordering::AcqRel);
        if before & IDLE_WAITER != 0
            && (before & !IDLE_WAITER) + n == self.pushed.load(Ordering::Acquire)
        {
            self.flow.poke();
        }
    }

    /// The idle barrier's view: (subscriber id, done, pushed), `done` read first.
    ///
    /// A task's queue with no sender left counts one more pushed: its end, which the task
    /// has still to see and act on (it may pass on what it holds). That count is raised
    /// by the last sender handle's drop (the same `senders` word the receiver reads to see
    /// the end, so before the receiver can see it) and done with when the receiver ends:
    /// `untrack` takes the queue out of the family and wakes the waiters.
    pub(crate) fn counts(&self) -> crate::core::flow::Counts {
        let done = self.owed.1.load(Ordering::Acquire) & !IDLE_WAITER;
        let pushed = self.pushed.load(Ordering::Acquire);
        let end = self.task.load(Ordering::Acquire) && self.senders.load(Ordering::Acquire) == 0;
        (self.id, done, pushed + u64::from(end))
    }

    /// An idle barrier waits on this queue: the receiver that makes it idle wakes it. The
    /// flag stays once its waiters are gone: each later raise of `done` on this queue then
    /// also loads `pushed` (the senders' line) and, if the queue is idle, the family's
    /// waiter count. A cost paid only by queues an `idle()` once slept on.
    pub(crate) fn arm(&self) {
        self.owed.1.fetch_or(IDLE_WAITER, Ordering::AcqRel);
    }

    /// Takes back the room of messages the receiver has taken but not yet given back.
    fn reclaim(&self) {
        let owed = self.owed.0.fetch_and(!LEN_MASK, Ordering::AcqRel) & LEN_MASK;
        if owed > 0 {
            self.release(owed);
        }
    }

    /// The receiver took one message: its room comes back at a full batch, or at once if
    /// a sender is waiting.
    fn taken(&self) {
        let before = self.owed.0.fetch_add(1, Ordering::AcqRel);
        if before >= WAITER || (before & LEN_MASK) + 1 >= self.credit_batch {
            self.reclaim();
        }
    }

    /// Reserves a slot, taking back held-back room first if the queue reads full; `false`
    /// if the queue is full.
    fn reserve(&self) -> bool {
        self.try_reserve() || {
            self.reclaim();
            self.try_reserve()
        }
    }

    /// Reserves as many of `n` slots as there is room for, in one step: how many.
    fn try_reserve_up_to(&self, n: u64) -> u64 {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let room = self.capacity.saturating_sub(state & LEN_MASK);
            let take = room.min(n);
            if take == 0 {
                return 0;
            }
            match self.state.compare_exchange_weak(
                state,
                state + take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(now) => state = now,
            }
        }
    }

    fn try_reserve(&self) -> bool {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & LEN_MASK >= self.capacity {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// A message was just pushed: wake the receiver if it parked. The SeqCst fence pairs
    /// with the one the receiver makes between setting `PARKED` and looking at its queue
    /// (store-buffering): either this load sees `PARKED`, or the receiver's look sees the
    /// message. Only one sender takes the flag down and notifies.
    fn arrived(&self) {
        fence(Ordering::SeqCst);
        if self.state.load(Ordering::Relaxed) & PARKED != 0
            && self.state.fetch_and(!PARKED, Ordering::AcqRel) & PARKED != 0
        {
            self.arrival.notify(1);
        }
    }

    fn release(&self, slots: u64) {
        let before = self.state.fetch_sub(slots, Ordering::AcqRel);
        if before & WAITERS != 0 {
            // Each freed slot lets one more waiting sender in; a woken sender that loses
            // the race listens again, and a dropped notified listener passes its wake-up on.
            self.space
                .notify_additional(usize::try_from(slots).unwrap_or(usize::MAX));
        }
    }

    fn len(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & LEN_MASK
    }

    /// Makes sure there is a channel to push to, creating one if the queue is idle.
    /// `false` once the receiver is gone.
    fn ensure_channel(&self) -> bool {
        let _creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        // Only a sender fills the slot, and only under this lock.
        if self.chan.with(|chan| chan.is_none()) {
            drop(self.chan.swap(Some(Chan::new())));
        }
        true
    }

    /// The loom models' view of the counters, once every thread is joined:
    /// `(len, waiters in state, count held back in owed, waiters in owed)`.
    #[cfg(all(test, loom))]
    pub(crate) fn accounting(&self) -> (u64, u64, u64, u64) {
        let state = self.state.load(Ordering::SeqCst);
        let owed = self.owed.0.load(Ordering::SeqCst);
        (
            state & LEN_MASK,
            (state & WAITERS) >> LEN_BITS,
            owed & LEN_MASK,
            owed >> LEN_BITS,
        )
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// See `quiet`.
    pub(crate) fn ended_quietly(&self) -> bool {
        self.quiet.load(Ordering::Acquire)
    }

    /// A tracked forwarder into derived relays (see `links`).
    pub(crate) fn chains(&self) -> bool {
        !self.links.is_empty()
    }

    pub(crate) fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The top bit of a queue's `done` count: an idle barrier waits on it (`arm`).
const IDLE_WAITER: u64 = 1 << 63;

const LEN_BITS: u32 = 40;
/// Mask of the length bits of `QueueState::state` (and of the count bits of `owed`); also
/// the largest capacity.
pub(crate) const LEN_MASK: u64 = (1 << LEN_BITS) - 1;
/// One registered waiter in `QueueState::state` and in `QueueState::owed`.
const WAITER: u64 = 1 << LEN_BITS;
/// The waiter bits of `QueueState::state`.
const WAITERS: u64 = ((1 << 22) - 1) << LEN_BITS;
/// The receiver waits on `arrival` (a bit of `QueueState::state`).
const PARKED: u64 = 1 << 62;

/// The receiver's atomics, on a cache line of their own, so its per-message counts do not
/// bounce the line of `state` that senders write: `owed` (`.0`), and `done` (`.1`, the
/// messages done with, for the idle barrier: `core/flow.rs`).
#[repr(align(64))]
struct CachePadded(AtomicU64, AtomicU64);

/// A lossless sender registered as waiting, for as long as it lives: in `state`, so a
/// release notifies, and in `owed`, so the receiver gives back room per message meanwhile.
/// The caller must `reclaim` (through `reserve`) after registering, to take the room of
/// any message taken before the receiver could see the registration.
struct WaiterGuard<'a>(&'a QueueState);

impl<'a> WaiterGuard<'a> {
    fn new(queue: &'a QueueState) -> Self {
        queue.state.fetch_add(WAITER, Ordering::AcqRel);
        queue.owed.0.fetch_add(WAITER, Ordering::AcqRel);
        WaiterGuard(queue)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.owed.0.fetch_sub(WAITER, Ordering::AcqRel);
        self.0.state.fetch_sub(WAITER, Ordering::AcqRel);
    }
}

/// Why a push did not queue the message; the message is handed back.
pub(crate) enum PushError {
    /// The queue is at capacity (broadcast mode only).
    Full(Queued),
    /// The receiver is gone.
    Closed(Queued),
}

/// The sending side, as kept in the registry. Every clone counts in `senders`: the queue
/// ends (after draining) when the last one is dropped.
pub(crate) struct QueueTx {
    pub(crate) state: Arc<QueueState>,
}

impl Clone for QueueTx {
    fn clone(&self) -> Self {
        self.state.senders.fetch_add(1, Ordering::Relaxed);
        QueueTx {
            state: self.state.clone(),
        }
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        // AcqRel: the receiver that reads zero sees every push made through any handle.
        if self.state.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state.arrival.notify(usize::MAX);
        }
    }
}

impl QueueTx {
    /// Queue `item` if there is room; never waits.
    pub(crate) fn try_push(&self, item: Queued) -> Result<(), PushError> {
        if self.state.gone.load(Ordering::Acquire) {
            return Err(PushError::Closed(item));
        }
        if !self.state.reserve() {
            return Err(PushError::Full(item));
        }
        self.push_reserved(item).map_err(PushError::Closed)
    }

    /// Queue `item` now, never waiting, as the queue's mode says when it is full: a
    /// drop-oldest (or latest) queue evicts its oldest message to make room (handed back
    /// as the second value, to be reported), any other refuses `item` as `Full`.
    pub(crate) fn push_now(&self, item: Queued) -> (Result<(), PushError>, Option<Queued>) {
        match self.try_push(item) {
            Err(PushError::Full(item)) if self.state.mode.evicts() => {
                let (pushed, evicted) = self.evict_for(item);
                (pushed.map_err(PushError::Closed), evicted)
            }
            pushed => (pushed, None),
        }
    }

    /// Drop-oldest, once `try_push` found the queue full: takes the oldest message out of
    /// the current channel and queues `item` in the room it held (so `len` does not move:
    /// the room passes from one message to the other, and the receiver, which never took
    /// the evicted one, gives nothing back for it). Returns the push's result and the
    /// evicted message, to be reported as missed. `Err` hands `item` back only if the
    /// receiver is gone: the newest message is never the one refused for room.
    ///
    /// The receiver may take messages from the same channel meanwhile: async-channel is
    /// multi-consumer, so each message goes to exactly one of them, and what this takes is
    /// the oldest message still queued in that channel. If it finds nothing to take, the
    /// room is held by something transient: a receiver between taking a message and
    /// giving its room back, a push in flight, or messages in a channel the receiver
    /// retired and still drains. The room may be back already (`reserve`); if not, the
    /// message goes in over the capacity, by one, as a broken wait's does, and the next
    /// push evicts again. So a drop-oldest queue can hold a message or two more than its
    /// capacity for an instant, never more than one per push racing in that window.
    pub(crate) fn evict_for(&self, item: Queued) -> (Result<(), Queued>, Option<Queued>) {
        let evicted = self
            .state
            .chan
            .with(|chan| chan.and_then(|chan| chan.rx.try_recv().ok()));
        // The evicted message's room is this one's reservation.
        if evicted.is_none() && !self.state.reserve() {
            self.state.state.fetch_add(1, Ordering::AcqRel);
        }
        let pushed = self.push_reserved(item);
        if evicted.is_some() {
            self.state.done(1); // out of the channel (after the new one is in)
        }
        (pushed, evicted)
    }

    /// Queue `item`, waiting for room; `Err` gives it back if the receiver went away.
    ///
    /// While it waits, the wait is registered with the relay task polling it (if any), so
    /// the deadlock check sees it (`core/deadlock.rs`): if the check breaks it, the item is
    /// queued over the capacity instead of waiting forever (`Ok(true)`), so a lossless
    /// cycle moves on without losing anything.
    ///
    /// Cancel safety: a reservation is taken and used in the same poll, so dropping this
    /// future loses nothing and leaves the count exact.
    pub(crate) async fn push(&self, item: Queued) -> Result<bool, Queued> {
        match self.reserve_waiting().await {
            // Taken in the same poll as the push: no reservation outlives this future.
            Ok(over) => self.push_reserved(item).map(|()| over),
            Err(()) => Err(item),
        }
    }

    /// Waits for room and takes one slot: `Ok(over)` once it is taken (`over` if the
    /// deadlock check let it in over the capacity), `Err(())` if the receiver is gone. The
    /// slot is the caller's, to use with `push_reserved` or give back with `unreserve`.
    /// Cancelled while it waits, it has taken nothing.
    pub(crate) async fn reserve_waiting(&self) -> Result<bool, ()> {
        let state = &self.state;
        if state.gone.load(Ordering::Acquire) {
            return Err(());
        }
        if !state.reserve() {
            // Slow path: register as a waiter for as long as this future waits (the guard
            // also deregisters if the send is cancelled).
            let _waiting = WaiterGuard::new(state);
            let mut room = None;
            loop {
                // Eventcount: listen, then re-check, so a slot freed in between is not
                // missed. `space` wakes it: room given back, or the receiver gone.
                let listener = state.space.listen();
                if state.gone.load(Ordering::Acquire) {
                    return Err(());
                }
                if state.reserve() {
                    break;
                }
                if room
                    .as_ref()
                    .is_some_and(|w: &DeadlockWait| w.broken().is_some())
                {
                    // Over the capacity, by one, to break a cycle of waits.
                    state.state.fetch_add(1, Ordering::AcqRel);
                    return Ok(true);
                }
                // `space` wakes it, or the deadlock check, which breaks the wait.
                BreakableWait {
                    listener,
                    room: &mut room,
                    queue: state,
                }
                .await;
            }
        }
        Ok(false)
    }

    /// Takes a slot for a push that follows at once, without waiting (`try_send`'s first
    /// phase): `Some(true)` taken, `Some(false)` the queue is full, `None` its receiver is
    /// gone. A slot taken is used with `push_reserved` or given back with `unreserve`, in
    /// the same synchronous call, so no reservation outlives it.
    pub(crate) fn reserve_slot(&self) -> Option<bool> {
        if self.state.gone.load(Ordering::Acquire) {
            return None;
        }
        Some(self.state.reserve())
    }

    /// Takes a slot over the capacity, by one, for a reservation whose wait the deadlock
    /// check broke (as `push` does for a broken wait): `false` if the receiver is gone.
    pub(crate) fn reserve_over(&self) -> bool {
        if self.state.gone.load(Ordering::Acquire) {
            return false;
        }
        self.state.state.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Gives back a slot taken by `reserve_slot` and not used.
    pub(crate) fn unreserve(&self) {
        self.state.release(1);
    }

    /// Takes up to `n` slots at once, without waiting (a batch send's one reservation
    /// for this queue): how many it took, `0` if the queue is full; `None` if its
    /// receiver is gone. Every slot taken is used by `push_reserved_many` in the same
    /// synchronous call.
    pub(crate) fn reserve_up_to(&self, n: u64) -> Option<u64> {
        if self.state.gone.load(Ordering::Acquire) {
            return None;
        }
        let taken = self.state.try_reserve_up_to(n);
        if taken == n {
            return Some(taken);
        }
        // Short: take back the room held back by the receiver, and try for the rest.
        self.state.reclaim();
        Some(taken + self.state.try_reserve_up_to(n - taken))
    }

    /// Pushes a copy of each envelope, each into a slot taken by `reserve_up_to`, then
    /// wakes the receiver once (if it parked): how many were pushed. If the receiver goes
    /// away part-way, the slots not used are given back and the rest is not pushed.
    pub(crate) fn push_reserved_many(&self, envelopes: &[Envelope]) -> usize {
        let mut pushed = 0;
        for envelope in envelopes {
            let item = Queued {
                envelope: envelope.clone(),
                tracker: None,
            };
            if self.push_quietly(item).is_err() {
                // That slot was given back; so are those of the envelopes after it.
                let left = envelopes.len() - pushed - 1;
                if left > 0 {
                    self.state.release(left as u64);
                }
                break;
            }
            pushed += 1;
        }
        if pushed > 0 {
            self.state.arrived();
        }
        pushed
    }

    /// Pushes `item` into the current channel, with a slot already reserved for it (by
    /// `reserve_slot` or a push), and wakes the receiver if it parked. `Err` (with the slot
    /// given back) if the receiver is gone.
    pub(crate) fn push_reserved(&self, item: Queued) -> Result<(), Queued> {
        self.push_quietly(item)?;
        self.state.arrived();
        Ok(())
    }

    /// `push_reserved` without the wake-up: the caller wakes the receiver (`arrived`)
    /// once it has pushed what it had.
    fn push_quietly(&self, mut item: Queued) -> Result<(), Queued> {
        let state = &self.state;
        // Counted before it can be seen (and taken): see `core/flow.rs`.
        state.pushed.fetch_add(1, Ordering::AcqRel);
        loop {
            let attempt = state.chan.with(|chan| match chan {
                Some(chan) => chan.tx.try_send(item).map_err(|e| e.into_inner()),
                None => Err(item),
            });
            match attempt {
                Ok(()) => break,
                // No channel (the queue was idle), or a closed one: retired by the
                // receiver (a new one is made or taken next) or closed because the
                // receiver is gone.
                Err(back) => {
                    item = back;
                    if !state.ensure_channel() {
                        state.release(1);
                        state.done(1); // never visible: done with at once
                        return Err(item);
                    }
                }
            }
        }
        Ok(())
    }

    /// More than half full: a broadcast sender should let the consumer run. Never for a
    /// `Latest` queue (one message, so always "full"): conflation is its answer to a
    /// consumer that falls behind, and a yield per send would cost more than it saves.
    pub(crate) fn is_crowded(&self) -> bool {
        self.state.mode != crate::DeliveryMode::Latest && self.state.len() > self.state.capacity / 2
    }
}

/// A lossless sender's wait for room: ends when `space` notifies, or when the deadlock
/// check breaks it. At each poll it keeps its registration with the relay task polling it
/// (`room`), which records the waker the check wakes.
struct BreakableWait<'a> {
    listener: EventListener,
    room: &'a mut Option<DeadlockWait>,
    queue: &'a Arc<QueueState>,
}

impl Future for BreakableWait<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.room.as_ref().is_some_and(|w| w.broken().is_some()) {
            return Poll::Ready(());
        }
        match std::pin::Pin::new(&mut this.listener).poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                let queue = this.queue;
                DeadlockWait::refresh(this.room, || On::Room(queue.clone()), cx);
                Poll::Pending
            }
        }
    }
}

/// The receiving side, owned by exactly one subscription.
pub(crate) struct QueueRx {
    pub(crate) state: Arc<QueueState>,
    /// The channel read now. While `Some`, it is the one in the slot: only this receiver
    /// empties the slot, and senders fill it only when it is empty.
    current: Option<Arc<Chan>>,
    /// A retired channel that still held messages pushed just before it was closed: read
    /// before `current`, then let go of.
    leftover: Option<Arc<Chan>>,
    /// This receiver's registration on `arrival` between polls.
    listener: Option<EventListener>,
    /// Let go of the channel before waiting (see [`QueueRx::release_when_idle`]).
    release_idle: bool,
    /// It already yielded once since it last found a message (with `release_idle`).
    yielded: bool,
    /// It has reported the end (`None`, or `try_recv`'s closed-and-drained): what
    /// `FusedStream::is_terminated` says, so a stream is terminated only after its `None`.
    finished: bool,
    /// The relay's own handler or forwarder task reads it: a message it takes stays in
    /// the idle count until the task comes back for the next one (`core/flow.rs`).
    defer_done: bool,
    /// With `defer_done`: the last message taken is still being worked on.
    working: bool,
}

/// The future of [`QueueRx::recv`]. Dropped while it waits, it gives up the wait as an
/// idle receiver does, so a `recv` polled once and abandoned (`select!` losing, a timeout,
/// `now_or_never`) leaves no listener or channel behind.
pub(crate) struct Recv<'a> {
    rx: &'a mut QueueRx,
    /// The last poll returned `Pending`.
    pending: bool,
}

impl Future for Recv<'_> {
    type Output = Option<Queued>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        let polled = self.rx.poll_recv(cx);
        self.pending = polled.is_pending();
        polled
    }
}

impl Drop for Recv<'_> {
    fn drop(&mut self) {
        if self.pending {
            self.rx.abandon_wait();
        }
    }
}

/// Makes a queue with room for `capacity` messages (at most [`LEN_MASK`]).
pub(crate) fn queue(
    capacity: usize,
    id: u64,
    tracked: Option<HandlerKind>,
    links: Box<[crate::core::Link]>,
) -> (QueueTx, QueueRx) {
    let flow = std::sync::Arc::default();
    queue_for(
        crate::DeliveryMode::default(),
        capacity,
        id,
        tracked,
        links,
        flow,
    )
}

/// A queue under `mode`: of one message for [`DeliveryMode::Latest`](crate::DeliveryMode::Latest),
/// else of `capacity`.
pub(crate) fn queue_for(
    mode: crate::DeliveryMode,
    capacity: usize,
    id: u64,
    tracked: Option<HandlerKind>,
    links: Box<[crate::core::Link]>,
    flow: std::sync::Arc<crate::core::flow::Flow>,
) -> (QueueTx, QueueRx) {
    let capacity = match mode {
        crate::DeliveryMode::Latest => 1,
        _ => (capacity as u64).min(LEN_MASK),
    };
    let credit_batch = (capacity / 64).clamp(1, 32);
    make(mode, capacity, credit_batch, id, tracked, links, flow)
}

/// [`queue`] with an explicit `credit_batch` (the loom models use small ones).
#[cfg(all(test, loom))]
pub(crate) fn queue_with_credit_batch(
    capacity: u64,
    credit_batch: u64,
    id: u64,
    tracked: Option<HandlerKind>,
) -> (QueueTx, QueueRx) {
    let mode = crate::DeliveryMode::default();
    make(
        mode,
        capacity,
        credit_batch,
        id,
        tracked,
        Box::default(),
        Default::default(),
    )
}

fn make(
    mode: crate::DeliveryMode,
    capacity: u64,
    credit_batch: u64,
    id: u64,
    tracked: Option<HandlerKind>,
    links: Box<[crate::core::Link]>,
    flow: std::sync::Arc<crate::core::flow::Flow>,
) -> (QueueTx, QueueRx) {
    debug_assert!((1..=capacity.max(1)).contains(&credit_batch));
    let state = Arc::new(QueueState {
        state: AtomicU64::new(0),
        pushed: AtomicU64::new(0),
        capacity,
        credit_batch,
        owed: CachePadded(AtomicU64::new(0), AtomicU64::new(0)),
        space: Event::new(),
        arrival: Event::new(),
        chan: Slot::empty(),
        creating: Mutex::new(()),
        senders: AtomicUsize::new(1),
        gone: AtomicBool::new(false),
        task: AtomicBool::new(false),
        quiet: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        flow,
        mode,
        id,
        tracked,
        links,
    });
    (
        QueueTx {
            state: state.clone(),
        },
        QueueRx {
            state,
            current: None,
            leftover: None,
            listener: None,
            release_idle: false,
            yielded: false,
            finished: false,
            defer_done: false,
            working: false,
        },
    )
}

impl QueueRx {
    /// Makes this receiver let go of its channel whenever it is about to wait on an empty
    /// queue (and when `try_recv` finds it empty), so that while it is idle it holds no
    /// channel at all. Before waiting it yields to its executor once, so a message that
    /// arrives within one turn of the scheduler is taken without a channel being made
    /// again. Subscriptions a user holds do this; the relay's own handler and forwarder
    /// tasks, which wait after every message, keep their channel (SEMANTICS.md §13).
    pub(crate) fn release_when_idle(&mut self) {
        self.release_idle = true;
    }

    /// A message this receiver takes stays in the idle count until it comes back for the
    /// next (a handler's or forwarder's inbox: the task works on it meanwhile).
    pub(crate) fn count_until_next(&mut self) {
        self.defer_done = true;
        self.state.task.store(true, Ordering::Release);
    }

    /// The task came back: the message it worked on is done with.
    fn settle_working(&mut self) {
        if std::mem::take(&mut self.working) {
            self.state.done(1);
        }
    }

    /// Whether this is a subscription a user holds (see `release_when_idle`).
    pub(crate) fn releases_when_idle(&self) -> bool {
        self.release_idle
    }

    /// The next message queued now, if any: from the leftover of a retired channel first,
    /// then from the current channel (picking up one a sender made while we were idle).
    fn take(&mut self) -> Option<Queued> {
        let item = self.take_from_channels()?;
        // The message worked on before is done with once the next is taken, or once the
        // receiver finds nothing and is about to wait or return empty (`settle_working`
        // there). At the end it stays counted until the queue is drained at its drop: a
        // task may still pass on what it holds (a batch's last, partial batch).
        self.settle_working();
        if self.defer_done {
            self.working = true;
        } else {
            self.state.done(1);
        }
        Some(item)
    }

    fn take_from_channels(&mut self) -> Option<Queued> {
        if let Some(leftover) = &self.leftover {
            if let Ok(item) = leftover.rx.try_recv() {
                self.state.taken();
                return Some(item);
            }
            // Closed before we drained it: nothing more can arrive there.
            self.leftover = None;
        }
        if self.current.is_none() {
            self.current = self.state.chan.get();
        }
        let item = self.current.as_ref()?.rx.try_recv().ok()?;
        self.state.taken();
        self.yielded = false;
        Some(item)
    }

    /// The queue is empty and this receiver is about to wait: let go of the channel, so an
    /// idle subscriber holds none. A message pushed into it before the close is kept as
    /// `leftover`, read first.
    fn retire(&mut self) {
        if !self.release_idle {
            return;
        }
        let Some(chan) = self.current.take() else {
            return;
        };
        drop(self.state.chan.swap(None));
        // From here a sender that still holds `chan` sees it closed and takes a new one.
        chan.rx.close();
        if !chan.rx.is_empty() {
            self.leftover = Some(chan);
        }
    }

    /// `true` once no sender handle is left: nothing more will be pushed.
    fn ended(&self) -> bool {
        self.state.senders.load(Ordering::Acquire) == 0
    }

    /// The next message, or `None` once the queue is closed and drained.
    /// Cancel safe: a message is taken only in the poll that returns it.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        loop {
            if let Some(item) = self.take() {
                self.listener = None;
                return Poll::Ready(Some(item));
            }
            if self.ended() {
                // Every push happened before the last handle went (AcqRel on `senders`).
                let last = self.take();
                self.listener = None;
                self.finished = last.is_none();
                return Poll::Ready(last);
            }
            if let Some(listener) = &mut self.listener {
                // Registered on `arrival` and checked again since: wait for the wake-up.
                match std::pin::Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => {
                        self.listener = None;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            // Nothing queued, not the end: the task is back and idle.
            self.settle_working();
            if self.release_idle && !self.yielded && self.current.is_some() {
                // One turn of the scheduler before letting go of the channel: a message
                // arriving meanwhile is taken without making a channel again.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Empty: give back every held-back slot (a sender may be waiting for room only
            // this receiver holds), then wait with the eventcount pattern:
            // 1. listen first, so whoever takes `PARKED` down finds a listener to wake,
            //    even a sender that clears a flag set for an earlier wait;
            // 2. announce the wait (`PARKED`), and let go of the channel;
            // 3. check again (the loop's top) before waiting. The fence pairs with the one
            //    in `QueueState::arrived` (store-buffering): either that sender sees
            //    `PARKED`, or this check sees its message.
            self.state.reclaim();
            self.listener = Some(self.state.arrival.listen());
            self.state.state.fetch_or(PARKED, Ordering::SeqCst);
            self.retire();
            fence(Ordering::SeqCst);
        }
    }

    /// The next message, or `None` once the queue is closed and drained.
    pub(crate) fn recv(&mut self) -> Recv<'_> {
        Recv {
            rx: self,
            pending: false,
        }
    }

    /// A `recv` was given up while it waited: drop its listener, and let go of the
    /// channel as a receiver about to wait does (if it releases it and the queue is empty).
    pub(crate) fn abandon_wait(&mut self) {
        self.listener = None;
        self.state.reclaim();
        if self.state.len() == 0 {
            self.retire();
        }
    }

    /// The next message if one is queued now; `Err(true)` once closed and drained,
    /// `Err(false)` if empty for now. An empty queue lets go of its channel.
    pub(crate) fn try_recv(&mut self) -> Result<Queued, bool> {
        if let Some(item) = self.take() {
            return Ok(item);
        }
        if self.ended() {
            let last = self.take();
            self.finished = last.is_none();
            return last.ok_or(true);
        }
        self.settle_working();
        self.state.reclaim();
        if self.state.len() == 0 {
            self.retire();
        }
        Err(false)
    }

    /// The next message if one is queued now, without reporting the end and without
    /// letting go of the channel: the rest of a batch (`recv_many`), whose caller has not
    /// asked for the end and will see it at its next receive.
    pub(crate) fn take_queued(&mut self) -> Option<Queued> {
        // A batched take would count a handler's earlier messages done too early.
        debug_assert!(!self.defer_done, "batched takes are for subscriptions");
        self.take()
    }

    /// A receiver that found nothing queued and is not waiting: give back the held-back
    /// room and let go of the channel, as `try_recv` on an empty queue does.
    pub(crate) fn settle_idle(&mut self) {
        self.state.reclaim();
        if self.state.len() == 0 {
            self.retire();
        }
    }

    /// It has said it is over: a receive returned the end (closed and drained).
    pub(crate) fn has_finished(&self) -> bool {
        self.finished
    }

    /// Messages queued now.
    pub(crate) fn len(&self) -> usize {
        let current = match &self.current {
            Some(chan) => chan.rx.len(),
            None => self.state.chan.with(|chan| chan.map_or(0, |c| c.rx.len())),
        };
        current + self.leftover.as_ref().map_or(0, |c| c.rx.len())
    }

    /// The queue's subscriber ends because nothing can observe what it would pass on: from
    /// now on what cannot reach it completes instead of failing (see `quiet`). Set before
    /// the queue closes.
    pub(crate) fn end_quietly(&mut self) {
        self.state.quiet.store(true, Ordering::Release);
    }

    /// Closes the queue and hands back what it still held, so the owner can fail the
    /// tracked ones. Senders blocked on `space` are woken and see the queue closed.
    pub(crate) fn close_and_drain(&mut self) -> Vec<Queued> {
        let in_slot = {
            let _creating = self
                .state
                .creating
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.state.gone.store(true, Ordering::Release);
            self.state.chan.swap(None)
        };
        // `current`, if any, is the slot's channel; otherwise a sender may have made one.
        let current = self.current.take().or(in_slot);
        let chans: Vec<Arc<Chan>> = self.leftover.take().into_iter().chain(current).collect();
        for chan in &chans {
            chan.rx.close(); // from here every push into it fails
        }
        self.state.space.notify(usize::MAX);
        let mut left = Vec::new();
        for chan in &chans {
            while let Ok(item) = chan.rx.try_recv() {
                left.push(item);
            }
        }
        // Give back every slot, so a sender racing with the close sees the queue closed,
        // not full.
        self.state.release(left.len() as u64);
        self.state.reclaim();
        self.listener = None;
        // Out of the channels: done with, as far as the idle count goes (their tracked
        // senders are failed by the caller).
        self.settle_working();
        self.state.done(left.len() as u64);
        // The receiver's end: the queue is idle for good.
        self.state.flow.untrack(self.state.id);
        left
    }
}

#[cfg(all(test, not(loom)))]
mod stress {
    //! A producer thread against a consumer thread on one small queue, every receiver and
    //! push mode. The consumer polls by hand and fails the test, instead of hanging, if
    //! it sleeps for two seconds while messages are queued: a lost wake-up. (Run on
    //! release of the channel, the receiver's wait once lost one this way: a sender's late
    //! wake-up for an earlier message took `PARKED` down before the receiver listened.)
    use super::*;
    use crate::relay::envelope::{Envelope, Queued};
    use std::sync::atomic::AtomicBool;
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    fn item(n: u64) -> Queued {
        Queued {
            envelope: Envelope {
                value: std::sync::Arc::new(n),
                type_name: std::any::type_name::<u64>,
                msg_id: n,
                origin: 1,
                trace: Default::default(),
            },
            tracker: None,
        }
    }

    /// Wakes the consumer thread and records that it was woken.
    struct Unpark(std::thread::Thread, AtomicBool);

    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.1.store(true, Ordering::SeqCst);
            self.0.unpark();
        }
    }

    fn run(release_idle: bool, lossless: bool) {
        // Miri runs each step about a thousand times slower.
        const N: u64 = if cfg!(miri) { 400 } else { 20_000 };
        let (tx, mut rx) = queue(4, 1, None, Box::default());
        if release_idle {
            rx.release_when_idle();
        }
        let producer = std::thread::spawn(move || {
            for n in 0..N {
                if lossless {
                    futures::executor::block_on(tx.push(item(n))).ok().unwrap();
                } else {
                    while tx.try_push(item(n)).is_err() {
                        std::thread::yield_now();
                    }
                }
            }
        });
        let woken = std::sync::Arc::new(Unpark(std::thread::current(), AtomicBool::new(false)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        for n in 0..N {
            let got = loop {
                woken.1.store(false, Ordering::SeqCst);
                if let Poll::Ready(got) = rx.poll_recv(&mut cx) {
                    break got.expect("the producer is still sending");
                }
                let since = Instant::now();
                while !woken.1.load(Ordering::SeqCst) {
                    std::thread::park_timeout(Duration::from_millis(50));
                    assert!(
                        since.elapsed() < Duration::from_secs(2) || rx.len() == 0,
                        "asleep with {} message(s) queued, waiting for message {n}",
                        rx.len()
                    );
                }
            };
            assert_eq!(got.envelope.msg_id, n);
        }
        producer.join().unwrap();
    }

    #[test]
    fn a_keeping_receiver_misses_no_lossless_push() {
        run(false, true)
    }

    #[test]
    fn a_releasing_receiver_misses_no_lossless_push() {
        run(true, true)
    }

    #[test]
    fn a_keeping_receiver_misses_no_try_push() {
        run(false, false)
    }

    #[test]
    fn a_releasing_receiver_misses_no_try_push() {
        run(true, false)
    }
}
