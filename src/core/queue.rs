//! One subscriber's queue: an unbounded `async-channel` with a capacity enforced by a
//! counter, so memory follows what is queued, never the configured capacity.
//!
//! `async_channel::bounded(65_536)` would allocate its whole ring up front; `unbounded`
//! allocates blocks only as messages arrive. The bound is kept here instead:
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
//! The length and the number of waiters share one atomic word (`state`: low 40 bits
//! length, high 24 bits waiters), so the receiver's single `fetch_sub` tells it whether
//! anyone waits, and no wake-up is lost: the modification order of that one word puts the
//! receiver's decrement either before the waiter's registration (then the waiter's re-check,
//! which reads the word after its own registration, sees the freed slot) or after it (then
//! the decrement returns a non-zero waiter count and the receiver notifies; a notification
//! that lands before the waiter listens is covered by its re-check after listening).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender, TryRecvError};
use event_listener::Event;
use futures::Stream;

use crate::core::sync::{AtomicU64, Ordering};
use crate::relay::envelope::Queued;
use crate::relay::error::HandlerKind;

/// Accounting shared by a queue's senders (the registry's copies) and its receiver.
///
/// Invariant: `len(state) <= capacity` at all times. `len` is the messages in the
/// channel, plus the reservations in flight (each lives for one synchronous push), plus the
/// taken messages whose room is held back (counted in `owed`, or just swapped out of it and
/// about to be released). `waiters(state)` counts the live `Waiting` guards.
pub(crate) struct QueueState {
    /// Low 40 bits: queued + reserved messages (senders add, the receiver subtracts).
    /// High 24 bits: lossless senders registered as waiting.
    state: AtomicU64,
    capacity: u64,
    /// How many taken messages the receiver gathers before giving their room back.
    credit_batch: u64,
    /// Low 40 bits: messages taken whose room is not yet given back. Added to by the
    /// receiver, moved out (`reclaim`) by the receiver at a full batch, before it waits, or
    /// at once while a sender waits, and by any sender that finds the queue full.
    /// High 24 bits: lossless senders registered as waiting (the same count as in `state`).
    /// On its own cache line: the receiver writes it per message.
    owed: CachePadded,
    /// Lossless senders waiting for room (or for the receiver to go away). Notified for each
    /// slot given back while a sender waits (per batch, or by a reclaim), and for all on
    /// close.
    space: Event,
    /// Messages this subscriber missed because its queue was full.
    dropped: AtomicU64,
    /// Registry id of this subscriber.
    pub(crate) id: u64,
    /// `Some` for a tracked subscriber: which kind of handler it is.
    pub(crate) tracked: Option<HandlerKind>,
}

impl QueueState {
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

    /// Reserves a slot, taking back held-back room first if the queue reads full.
    fn reserve(&self) -> bool {
        self.try_reserve() || {
            self.reclaim();
            self.try_reserve()
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

    fn release(&self, slots: u64) {
        let before = self.state.fetch_sub(slots, Ordering::AcqRel);
        if before >= WAITER {
            // Each freed slot lets one more waiting sender in; a woken sender that loses
            // the race listens again, and a dropped notified listener passes its wake-up on.
            self.space
                .notify_additional(usize::try_from(slots).unwrap_or(usize::MAX));
        }
    }

    fn len(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & LEN_MASK
    }

    /// The loom models' view of the counters, once every thread is joined:
    /// `(len, waiters in state, count held back in owed, waiters in owed)`.
    #[cfg(all(test, loom))]
    pub(crate) fn accounting(&self) -> (u64, u64, u64, u64) {
        let state = self.state.load(Ordering::SeqCst);
        let owed = self.owed.0.load(Ordering::SeqCst);
        (
            state & LEN_MASK,
            state >> LEN_BITS,
            owed & LEN_MASK,
            owed >> LEN_BITS,
        )
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

const LEN_BITS: u32 = 40;
/// Mask of the length bits of `QueueState::state` (and of the count bits of `owed`); also
/// the largest capacity.
pub(crate) const LEN_MASK: u64 = (1 << LEN_BITS) - 1;
/// One registered waiter in `QueueState::state` and in `QueueState::owed`.
const WAITER: u64 = 1 << LEN_BITS;

/// An atomic on a cache line of its own, so the receiver's per-message count does not
/// bounce the line of `state` that senders write.
#[repr(align(64))]
struct CachePadded(AtomicU64);

/// A lossless sender registered as waiting, for as long as it lives: in `state`, so a
/// release notifies, and in `owed`, so the receiver gives back room per message meanwhile.
/// The caller must `reclaim` (through `reserve`) after registering, to take the room of
/// any message taken before the receiver could see the registration.
struct Waiting<'a>(&'a QueueState);

impl<'a> Waiting<'a> {
    fn new(queue: &'a QueueState) -> Self {
        queue.state.fetch_add(WAITER, Ordering::AcqRel);
        queue.owed.0.fetch_add(WAITER, Ordering::AcqRel);
        Waiting(queue)
    }
}

impl Drop for Waiting<'_> {
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

/// The sending side, as kept in the registry. Cloning it clones the channel sender.
#[derive(Clone)]
pub(crate) struct QueueTx {
    tx: Sender<Queued>,
    pub(crate) state: Arc<QueueState>,
}

impl QueueTx {
    /// Queue `item` if there is room; never waits.
    pub(crate) fn try_push(&self, item: Queued) -> Result<(), PushError> {
        if !self.state.reserve() {
            return Err(PushError::Full(item));
        }
        self.tx.try_send(item).map_err(|e| {
            self.state.release(1);
            PushError::Closed(e.into_inner())
        })
    }

    /// Queue `item`, waiting for room; `Err` gives it back if the receiver went away.
    ///
    /// Cancel safety: a reservation is taken and used in the same poll, so dropping this
    /// future loses nothing and leaves the count exact.
    pub(crate) async fn push(&self, item: Queued) -> Result<(), Queued> {
        if self.tx.is_closed() {
            return Err(item);
        }
        if !self.state.reserve() {
            // Slow path: register as a waiter for as long as this future waits (the guard
            // also deregisters if the send is cancelled).
            let _waiting = Waiting::new(&self.state);
            loop {
                // Eventcount: listen, then re-check, so a slot freed in between is not missed.
                let listener = self.state.space.listen();
                if self.tx.is_closed() {
                    return Err(item);
                }
                if self.state.reserve() {
                    break;
                }
                listener.await;
            }
        }
        self.tx.try_send(item).map_err(|e| {
            self.state.release(1);
            e.into_inner()
        })
    }

    /// More than half full: a broadcast sender should let the consumer run.
    pub(crate) fn is_crowded(&self) -> bool {
        self.state.len() > self.state.capacity / 2
    }
}

/// The receiving side, owned by exactly one subscription.
pub(crate) struct QueueRx {
    // Boxed because `async_channel::Receiver` is `!Unpin`; this keeps every subscription
    // `Unpin` (so `.next()` works without pinning) at one allocation per subscriber.
    rx: Pin<Box<Receiver<Queued>>>,
    pub(crate) state: Arc<QueueState>,
}

/// Makes a queue with room for `capacity` messages.
pub(crate) fn queue(capacity: usize, id: u64, tracked: Option<HandlerKind>) -> (QueueTx, QueueRx) {
    // Capacities beyond 2^40 - 1 messages are treated as 2^40 - 1.
    let capacity = (capacity as u64).min(LEN_MASK);
    queue_with_credit_batch(capacity, (capacity / 64).clamp(1, 32), id, tracked)
}

/// [`queue`] with an explicit `credit_batch` (the loom models use small ones).
pub(crate) fn queue_with_credit_batch(
    capacity: u64,
    credit_batch: u64,
    id: u64,
    tracked: Option<HandlerKind>,
) -> (QueueTx, QueueRx) {
    debug_assert!((1..=capacity.max(1)).contains(&credit_batch));
    let (tx, rx) = async_channel::unbounded();
    let state = Arc::new(QueueState {
        state: AtomicU64::new(0),
        capacity,
        credit_batch,
        owed: CachePadded(AtomicU64::new(0)),
        space: Event::new(),
        dropped: AtomicU64::new(0),
        id,
        tracked,
    });
    (
        QueueTx {
            tx,
            state: state.clone(),
        },
        QueueRx {
            rx: Box::pin(rx),
            state,
        },
    )
}

impl QueueRx {
    /// Counts a taken message; gives the room back once a batch is owed.
    fn taken(&mut self, item: Queued) -> Queued {
        self.state.taken();
        item
    }

    /// Gives back the room of every taken message: before waiting on an empty queue, so
    /// a sender never waits for room that only an idle receiver holds.
    fn settle(&mut self) {
        self.state.reclaim();
    }

    /// The next message, or `None` once the queue is closed and drained.
    /// Cancel safe: `async_channel`'s `recv` takes a message only when it completes.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        if let Ok(item) = self.rx.try_recv() {
            return Some(self.taken(item));
        }
        self.settle();
        let item = self.rx.recv().await.ok()?;
        Some(self.taken(item))
    }

    pub(crate) fn try_recv(&mut self) -> Result<Queued, TryRecvError> {
        match self.rx.try_recv() {
            Ok(item) => Ok(self.taken(item)),
            Err(e) => {
                self.settle();
                Err(e)
            }
        }
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Queued>> {
        match self.rx.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(self.taken(item))),
            other => {
                self.settle();
                other
            }
        }
    }

    /// Messages queued now.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// Closes the queue and hands back what it still held, so the owner can fail the
    /// tracked ones. Senders blocked on `space` are woken and see the queue closed.
    pub(crate) fn close_and_drain(&mut self) -> Vec<Queued> {
        self.rx.close();
        self.state.space.notify(usize::MAX);
        let mut left = Vec::new();
        while let Ok(item) = self.rx.try_recv() {
            left.push(item);
        }
        // Give back every slot, so a sender racing with the close sees the queue closed,
        // not full.
        self.state.release(left.len() as u64);
        self.state.reclaim();
        left
    }
}
