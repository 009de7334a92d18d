//! Batch sends (`send_all`): many messages of one type with one snapshot, and per target
//! queue one reservation and one wake-up for the whole batch, while each message keeps
//! the semantics of a single send (SEMANTICS.md §2, "Sending in batches").
//!
//! The fast path covers batches whose snapshot holds no tracked handler: nobody waits for
//! a handler, so each queue first takes the run of the batch that fits, in one go, and
//! what does not fit then goes message by message. A type with tracked handlers is sent
//! one message at a time (each its own `send`), which keeps every tracking rule as it is.

use std::any::{Any, TypeId};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::core::delivery::Delivery;
use crate::core::registry::{Targets, TypeCounters};
use crate::core::trace::SendSpan;
use crate::core::{Core, CountOnDrop, From, Tally};
use crate::relay::envelope::{erased_name, Envelope, TypeName};
use crate::relay::error::{SendAllError, SendError};
use crate::relay::receipt::{BatchReceipt, Receipt};

/// A batch prepared at the call.
pub(crate) enum Prepared<T> {
    /// No tracked handler in the snapshot: the messages, numbered, with their targets.
    Fast {
        targets: Arc<Targets>,
        envelopes: Vec<Envelope>,
    },
    /// Tracked handlers: sent one by one, each with its own send.
    OneByOne(Vec<T>),
}

impl Core {
    /// The synchronous half of `send_all`: the snapshot, and the message ids, taken at
    /// the call (as for a single send, section 3).
    /// `from` decides the origin and whether `reject_unrouted` applies, as for a single
    /// send (a user's `send_all`: `From::User`; a bridge's imports: their own origin).
    pub(crate) fn prepare_batch<T: Any + Send + Sync>(
        &self,
        values: Vec<T>,
        from: From,
    ) -> Result<Prepared<T>, SendError> {
        let type_id = TypeId::of::<T>();
        let given: Option<TypeName> = Some(std::any::type_name::<T>);
        let targets = self
            .registry
            .targets(type_id, given)
            .map_err(|_| SendError::Closed)?;
        if targets.tracked > 0 {
            return Ok(Prepared::OneByOne(values));
        }
        let type_name = given.or(targets.type_name).unwrap_or(erased_name);
        let count = values.len() as u64;
        let first = self.next_msg_id.fetch_add(count, Ordering::Relaxed);
        let retained = self.retention_of(type_id).is_some();
        let by_user = from == From::User;
        if targets.is_empty() && count > 0 && self.config.reject_unrouted && !retained && by_user {
            // Refused at the call, as a single send is; still counted and reported.
            TypeCounters::add(&targets.counters.sent, count);
            for msg_id in first..first + count {
                self.unrouted(&targets.counters, msg_id, type_id, type_name);
            }
            return Err(SendError::Unrouted {
                type_name: type_name(),
            });
        }
        let origin = match from {
            From::Relay(origin) => origin,
            From::User | From::Here => self.id,
        };
        let envelopes = values
            .into_iter()
            .zip(first..)
            .map(|(value, msg_id)| Envelope {
                origin,
                value: Arc::new(value),
                type_name,
                msg_id,
                trace: SendSpan::default(),
            })
            .collect();
        Ok(Prepared::Fast { targets, envelopes })
    }

    /// Delivers a fast-path batch, every queue getting the messages in batch order: first
    /// each queue the run that fits (one reservation, one wake-up), then the rest message
    /// by message to every queue that lacks it, waiting for room (lossless) or missing and
    /// reporting (broadcast) as single sends do.
    pub(crate) async fn deliver_batch(
        &self,
        targets: Arc<Targets>,
        mut envelopes: Vec<Envelope>,
    ) -> BatchReceipt {
        for envelope in &mut envelopes {
            envelope.trace = SendSpan::open(self.id, envelope.msg_id, envelope.type_name);
        }
        let count = envelopes.len();
        let mut receipt = BatchReceipt {
            first_msg_id: envelopes.first().map_or(0, |e| e.msg_id),
            messages: count,
            ..BatchReceipt::default()
        };
        if count == 0 {
            return receipt;
        }
        let counters = &targets.counters;
        TypeCounters::add(&counters.sent, count as u64);
        if let Some(retention) = envelopes
            .first()
            .and_then(|e| self.retention_of(e.type_id()))
        {
            // Each message commits as a single send's would (core/retention.rs); the
            // late joiners' copies count in the batch's receipt.
            let mut tally = Tally::default();
            for envelope in &envelopes {
                self.commit_retained(retention, envelope, &targets, &mut tally);
            }
            receipt.queued += tally.receipt.queued;
            receipt.missed += tally.receipt.missed;
            if targets.is_empty() {
                return receipt;
            }
        }
        if targets.is_empty() {
            for envelope in &envelopes {
                let (msg_id, type_id) = (envelope.msg_id, envelope.type_id());
                self.unrouted(counters, msg_id, type_id, envelope.type_name);
            }
            return receipt;
        }
        // Counted as they are queued, and on a cancellation part-way too.
        let mut added = CountOnDrop(&counters.delivered, 0);
        // Phase 1, per queue: one reservation for the run that fits, its pushes, one
        // wake-up. `next[i]`: the first message queue `i` still lacks (`count` once it has
        // them all, or if it is gone).
        let mut next = Vec::with_capacity(targets.len());
        for slot in targets.iter() {
            let Some(room) = slot.reserve_up_to(count as u64) else {
                next.push(count); // the subscriber is gone: nothing to deliver, nobody waits
                continue;
            };
            let room = room as usize;
            let pushed = slot.push_reserved_many(&envelopes[..room]);
            receipt.queued += pushed;
            added.1 += pushed as u64;
            // Short of the run: its receiver went away part-way.
            next.push(if pushed < room { count } else { room });
        }
        // Phase 2, message by message as single sends go: message k reaches every queue
        // that lacks it before message k + 1 goes anywhere, so a reader that takes from
        // several of these queues in turn is never starved (each queue still gets the
        // batch in order).
        let from = next.iter().copied().min().unwrap_or(count);
        // Each message as a single send pushes it (`push_one`: queued, missed and reported,
        // or skipped for a quietly ending forwarder), waiting where a lossless queue is full.
        let mut tally = Tally::default();
        for (k, envelope) in envelopes.iter().enumerate().skip(from) {
            for (slot, lacks) in targets.iter().zip(next.iter_mut()) {
                if *lacks != k {
                    continue;
                }
                *lacks = k + 1;
                let before = tally.receipt.queued;
                if let Some(item) =
                    self.push_one(envelope.clone(), slot, None, &mut tally, counters)
                {
                    if self.push_waiting(slot, item).await {
                        tally.receipt.queued += 1;
                    }
                }
                added.1 += (tally.receipt.queued - before) as u64;
            }
        }
        receipt.queued += tally.receipt.queued;
        receipt.missed += tally.receipt.missed;
        drop(added);
        if targets.iter().any(|slot| slot.is_crowded()) {
            // As a single send does: give a consumer on this worker one turn.
            YieldOnce(false).await;
        }
        receipt
    }
}

/// Sends `values` on `core` (what `RelaySender::send_all` and `WeakSender::send_all`
/// return): prepared now, delivered when polled.
pub(crate) fn send_all<T: Any + Send + Sync>(
    core: Arc<Core>,
    values: Vec<T>,
) -> impl Future<Output = Result<BatchReceipt, SendAllError>> + Send + 'static {
    /// What the call decided.
    enum Start<T> {
        Refused(SendError),
        Fast(Arc<Targets>, Vec<Envelope>),
        /// One by one: the first message's send, prepared at the call (so its snapshot
        /// is taken there too), and the rest, each prepared once the one before returned.
        OneByOne(Delivery<'static, Arc<Core>>, Vec<T>),
        Empty,
    }
    let start = match core.prepare_batch(values, From::User) {
        Err(error) => Start::Refused(error),
        Ok(Prepared::Fast { targets, envelopes }) => Start::Fast(targets, envelopes),
        Ok(Prepared::OneByOne(values)) => {
            let mut values = values.into_iter();
            match values.next() {
                None => Start::Empty,
                Some(head) => Start::OneByOne(
                    Delivery::new(core.clone(), core.prepare_value(head, From::User)),
                    values.collect(),
                ),
            }
        }
    };
    async move {
        match start {
            Start::Refused(error) => Err(SendAllError::new(0, BatchReceipt::default(), error)),
            Start::Fast(targets, envelopes) => Ok(core.deliver_batch(targets, envelopes).await),
            Start::Empty => Ok(BatchReceipt::default()),
            Start::OneByOne(head, rest) => {
                let mut receipt = BatchReceipt::default();
                match head.await {
                    Ok(one) => receipt.add(one),
                    Err(error) => return Err(SendAllError::new(0, receipt, error)),
                }
                for (i, value) in rest.into_iter().enumerate() {
                    match Delivery::value(&core, value, From::User).await {
                        Ok(one) => receipt.add(one),
                        Err(error) => return Err(SendAllError::new(i + 1, receipt, error)),
                    }
                }
                Ok(receipt)
            }
        }
    }
}

impl BatchReceipt {
    /// Adds what one message's send did.
    fn add(&mut self, one: Receipt) {
        if self.messages == 0 {
            self.first_msg_id = one.msg_id;
        }
        self.messages += 1;
        self.queued += one.queued;
        self.handled += one.handled;
        self.missed += one.missed;
    }
}

/// Returns `Pending` once (asking to be polled again at once), then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
