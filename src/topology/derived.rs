//! Derived relays: `filter`, `only`, `exclude`, `split` (tracked: the parent's send waits
//! for the decision and, for a forwarded message, for the child's tracked handlers) and
//! `map`, `filter_map`, `batch` (tracking boundaries: the parent's send does not wait).
//!
//! Each returns the child's [`RelayReceiver`]. The child has the parent's configuration
//! (queue size, delivery mode, error and panic modes, spawner), closes after the parent
//! closes and its forwarder drains, and is returned already closed when the parent is.
//! A forwarder that panics reports it, fails what it held, and closes its child.

use std::any::{Any, TypeId};
use std::sync::Arc;

use crate::core::deadlock::{InNode, Node};
use crate::core::delivery::Delivery;
use crate::core::inbox::{Completion, Inbox};
use crate::core::is_internal_event;
use crate::core::trace::Work;
use crate::core::{From, Link, Plan, Takes};
use crate::relay::config::PanicMode;
use crate::relay::envelope::TypeName;
use crate::relay::error::HandlerKind;
use crate::relay::receiver::RelayReceiver;
use crate::relay::sender::RelaySender;
use crate::topology::{forwarder_panicked, guarded, next_for, send_made, settle_quietly};

/// Why [`RelayReceiver::batch`] refused a batch size.
///
/// # Examples
///
/// ```
/// let (_tx, rx) = pipedream_rs::Relay::channel();
/// let err = rx.batch::<u8>(0).unwrap_err();
/// assert_eq!(err.to_string(), "batch size must be at least 1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A batch of zero messages would never be emitted.
    #[error("batch size must be at least 1")]
    ZeroSize,
}

impl RelayReceiver {
    /// A child relay with the `T` messages for which `pred` returns `true` (and nothing
    /// else).
    ///
    /// Tracked: the parent's `send` of a `T` waits for `pred`, and for a forwarded message
    /// also for the child's tracked handlers, whose errors it returns. A `T` that does not
    /// pass completes at once. A panic in `pred` fails that send and closes the child.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let big = rx.filter::<i32>(|n| *n > 5);
    /// let mut sub = big.subscribe::<i32>();
    /// for n in [3, 7, 1, 9] { tx.send(n).await.unwrap(); }
    /// drop(tx);
    /// assert_eq!(*sub.recv().await.unwrap(), 7);
    /// assert_eq!(*sub.recv().await.unwrap(), 9);
    /// assert!(sub.recv().await.is_none());
    /// # });
    /// ```
    ///
    /// A derived relay dropped at once is never fed, so not keeping it is a warning
    /// (`#[must_use]`; an error here, where the example denies it):
    ///
    /// ```compile_fail
    /// #![deny(unused_must_use)]
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// rx.filter::<i32>(|n| *n > 5); // error: unused `RelayReceiver` that must be used
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn filter<T: Any + Send + Sync>(
        &self,
        mut pred: impl FnMut(&T) -> bool + Send + 'static,
    ) -> RelayReceiver {
        self.tracked_forwarder(
            Some((TypeId::of::<T>(), std::any::type_name::<T>)),
            Takes::Any,
            move |env| {
                let value = env.value.downcast_ref::<T>().expect("routed by TypeId");
                if pred(value) {
                    Some(0)
                } else {
                    None
                }
            },
        )
    }

    /// A child relay with only the `T` messages. Tracked, like [`filter`](Self::filter).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.only::<u8>().subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// tx.send("not a u8").await.unwrap();
    /// drop(tx);
    /// assert!(all.recv().await.unwrap().is::<u8>());
    /// assert!(all.recv().await.is_none());
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn only<T: Any + Send + Sync>(&self) -> RelayReceiver {
        let only: (TypeId, TypeName) = (TypeId::of::<T>(), std::any::type_name::<T>);
        self.tracked_forwarder(Some(only), Takes::Any, |_| Some(0))
    }

    /// A child relay with every message except the `T`s. Tracked, like
    /// [`filter`](Self::filter): every parent send (of any type) waits for this forwarder.
    /// Internal events (`Dropped`, `RelayError`) are not passed on: they describe the relay
    /// they happened on.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.exclude::<u8>().subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// tx.send(2u16).await.unwrap();
    /// drop(tx);
    /// assert!(all.recv().await.unwrap().is::<u16>());
    /// assert!(all.recv().await.is_none());
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn exclude<T: Any + Send + Sync>(&self) -> RelayReceiver {
        let excluded = TypeId::of::<T>();
        self.tracked_forwarder(None, Takes::Except(excluded), move |env| {
            (env.type_id() != excluded).then_some(0)
        })
    }

    /// Two child relays: the `T` messages, and all the others. Tracked, like
    /// [`exclude`](Self::exclude) (one forwarder decides for both).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let (numbers, rest) = rx.split::<u32>();
    /// let (mut n, mut r) = (numbers.subscribe::<u32>(), rest.subscribe::<&str>());
    /// tx.send(4u32).await.unwrap();
    /// tx.send("four").await.unwrap();
    /// assert_eq!(*n.recv().await.unwrap(), 4);
    /// assert_eq!(*r.recv().await.unwrap(), "four");
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn split<T: Any + Send + Sync>(&self) -> (RelayReceiver, RelayReceiver) {
        let (matched_tx, matched) = self.child();
        let (rest_tx, rest) = self.child();
        if let (Some(matched_tx), Some(rest_tx)) = (matched_tx, rest_tx) {
            let split = TypeId::of::<T>();
            let links = [
                (&matched_tx, Takes::Only(split)),
                (&rest_tx, Takes::Except(split)),
            ]
            .map(|(tx, takes)| Link {
                relay: Arc::downgrade(&tx.core),
                takes,
            });
            let inbox = Inbox::forwarder(&self.core, None, Box::new(links));
            self.run_tracked(inbox, vec![matched_tx, rest_tx], |env| {
                Some(if env.type_id() == TypeId::of::<T>() {
                    0
                } else {
                    1
                })
            });
        }
        (matched, rest)
    }

    /// A child relay of `f(&t)` for every `T` — a tracking boundary: the parent's send
    /// does not wait for `f` or the child; the child's handlers are tracked by the child's
    /// own sends (the forwarder waits for them, in order, before taking the next message).
    /// A panic in `f` is reported as a `RelayError` event on the parent and closes the
    /// child.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut texts = rx.map::<i32, String>(|n| n.to_string()).subscribe::<String>();
    /// tx.send(42).await.unwrap();
    /// assert_eq!(texts.recv().await.unwrap().as_str(), "42");
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn map<T: Any + Send + Sync, U: Any + Send + Sync>(
        &self,
        mut f: impl FnMut(&T) -> U + Send + 'static,
    ) -> RelayReceiver {
        self.filter_map::<T, U>(move |t| Some(f(t)))
    }

    /// A child relay of `f(&t)` for every `T` where it is `Some`. A tracking boundary, like
    /// [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let parsed = rx.filter_map::<String, i32>(|s| s.parse().ok());
    /// let mut sub = parsed.subscribe::<i32>();
    /// tx.send(String::from("x")).await.unwrap();
    /// tx.send(String::from("12")).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 12);
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn filter_map<T: Any + Send + Sync, U: Any + Send + Sync>(
        &self,
        mut f: impl FnMut(&T) -> Option<U> + Send + 'static,
    ) -> RelayReceiver {
        self.boundary_forwarder::<T, _, _>(|inbox, child_tx, mode| async move {
            // Declared in this order so they drop in the other: the child closes (its own
            // forwarders see their end) before this inbox ends and leaves the idle count.
            let mut inbox = inbox;
            let child_tx = child_tx;
            let (relay_id, me) = (inbox.relay_id(), inbox.id());
            while let Some(msg) = next_for(&mut inbox, std::slice::from_ref(&child_tx)).await {
                let work = Work::of(HandlerKind::Forwarder, relay_id, me, msg.envelope());
                let value = msg
                    .envelope()
                    .value
                    .downcast_ref::<T>()
                    .expect("routed by TypeId");
                match work.enter(|| guarded(|| f(value))) {
                    Ok(Some(out)) => {
                        let origin = msg.envelope().origin;
                        let reporter = msg.reporter();
                        settle_quietly(msg, drop);
                        // The child's handler errors were published on the child.
                        let core = &child_tx.core;
                        let send = async {
                            let send =
                                work.enter(|| Delivery::value(core, out, From::Relay(origin)));
                            let _ = work.run(send).await;
                        };
                        send_made(send, reporter).await;
                    }
                    // This copy may be the last (the parent's other handlers are done).
                    Ok(None) => settle_quietly(msg, drop),
                    Err(payload) => return forwarder_panicked(msg, payload, mode),
                }
            }
        })
    }

    /// A child relay of `Vec<T>` batches of `size` messages, in order; the last, partial
    /// batch is sent when the parent closes. A tracking boundary, like [`map`](Self::map).
    /// A batch is only sent when full (or at close): there is no timer.
    ///
    /// Values are cloned out of their shared `Arc` only when another subscriber still holds
    /// it; use [`batch_shared`](Self::batch_shared) for types that are not `Clone`.
    ///
    /// # Errors
    ///
    /// [`BatchError::ZeroSize`] if `size` is zero. See [`batch_of`](Self::batch_of) for a
    /// size checked at compile time.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut batches = rx.batch::<u32>(2).unwrap().subscribe::<Vec<u32>>();
    /// for n in 1..=3u32 { tx.send(n).await.unwrap(); }
    /// drop(tx);
    /// assert_eq!(*batches.recv().await.unwrap(), vec![1, 2]);
    /// assert_eq!(*batches.recv().await.unwrap(), vec![3]); // the final partial batch
    /// assert!(batches.recv().await.is_none());
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn batch<T>(&self, size: usize) -> Result<RelayReceiver, BatchError>
    where
        T: Any + Send + Sync + Clone,
    {
        if size == 0 {
            return Err(BatchError::ZeroSize);
        }
        Ok(self.batcher::<T, T, _>(size, unshare))
    }

    /// As [`batch`](Self::batch), with the size a const generic: `N == 0` does not compile.
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let batches = rx.batch_of::<u32, 100>();
    /// # drop(batches);
    /// ```
    ///
    /// ```compile_fail
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let batches = rx.batch_of::<u32, 0>(); // error: batch size must be at least 1
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn batch_of<T, const N: usize>(&self) -> RelayReceiver
    where
        T: Any + Send + Sync + Clone,
    {
        const { assert!(N > 0, "batch size must be at least 1") };
        self.batcher::<T, T, _>(N, unshare)
    }

    /// As [`batch`](Self::batch), for any `T` (no `Clone`): batches of `Vec<Arc<T>>`.
    ///
    /// # Errors
    ///
    /// [`BatchError::ZeroSize`] if `size` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// struct Reading(u8); // not Clone
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut batches = rx.batch_shared::<Reading>(2).unwrap().subscribe::<Vec<Arc<Reading>>>();
    /// tx.send(Reading(1)).await.unwrap();
    /// tx.send(Reading(2)).await.unwrap();
    /// assert_eq!(batches.recv().await.unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    /// # });
    /// ```
    #[must_use = "a derived relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn batch_shared<T>(&self, size: usize) -> Result<RelayReceiver, BatchError>
    where
        T: Any + Send + Sync,
    {
        if size == 0 {
            return Err(BatchError::ZeroSize);
        }
        Ok(self.batcher::<T, Arc<T>, _>(size, |shared| shared))
    }

    fn batcher<T, Item, F>(&self, size: usize, take: F) -> RelayReceiver
    where
        T: Any + Send + Sync,
        Item: Any + Send + Sync,
        F: Fn(Arc<T>) -> Item + Send + Sync + 'static,
    {
        self.boundary_forwarder::<T, _, _>(move |inbox, child_tx, mode| async move {
            // Declared in this order so they drop in the other: the child closes (its own
            // forwarders see their end) before this inbox ends and leaves the idle count.
            let mut inbox = inbox;
            let child_tx = child_tx;
            // Never preallocate more than a modest batch: `size` may be anything a user
            // passes (`usize::MAX` is a batch that only the close ends), and memory must
            // follow what is batched, not the size asked for.
            let first = size.min(PREALLOCATED_BATCH);
            let mut batch: Vec<Item> = Vec::with_capacity(first);
            let mut last = None;
            let (relay_id, me) = (inbox.relay_id(), inbox.id());
            while let Some(mut msg) = next_for(&mut inbox, std::slice::from_ref(&child_tx)).await {
                let work = Work::of(HandlerKind::Forwarder, relay_id, me, msg.envelope());
                // Take the envelope so this forwarder's copy of the value's Arc is the one
                // `take` gets: unshared values are moved into the batch, not cloned.
                let shared = msg
                    .take_envelope()
                    .value
                    .downcast::<T>()
                    .expect("routed by TypeId");
                match work.enter(|| guarded(|| take(shared))) {
                    Ok(item) => batch.push(item),
                    Err(payload) => return forwarder_panicked(msg, payload, mode),
                }
                // A panicking drop of the batch is reported about its last message.
                let reporter = msg.reporter();
                settle_quietly(msg, drop);
                if batch.len() == size {
                    // The batch's send hangs below the span of the message that filled it.
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(first));
                    let core = &child_tx.core;
                    let send = async {
                        let send = work.enter(|| Delivery::value(core, full, From::Here));
                        let _ = work.run(send).await;
                    };
                    send_made(send, reporter).await;
                } else {
                    last = Some(reporter);
                }
            }
            if let (false, Some(reporter)) = (batch.is_empty(), last) {
                let send = async {
                    let _ = Delivery::value(&child_tx.core, batch, From::Here).await;
                };
                send_made(send, reporter).await;
            }
        })
    }

    /// A tracking boundary: an untracked inbox for `T` on this relay, and a task `run`
    /// that feeds the child (whose only sender it gets). Returns the child, closed at
    /// once if this relay is.
    fn boundary_forwarder<T, R, Fut>(&self, run: R) -> RelayReceiver
    where
        T: Any + Send + Sync,
        R: FnOnce(Inbox, RelaySender, PanicMode) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (child_tx, child) = self.child();
        if let Some(child_tx) = child_tx {
            let inbox = Inbox::typed::<T>(&self.core, HandlerKind::Forwarder, false);
            // The whole loop is this forwarder's work: its waits on the child (for room,
            // for the child's handlers) are seen by the deadlock check.
            let node = Node::forwarder(inbox.id());
            let who = self.forwarder_identity(&inbox);
            let work = run(inbox, child_tx, self.config().panic_mode);
            self.spawn_forwarder(who, InNode::new(node, work));
        }
        child
    }

    /// One tracked forwarder for messages of `ty` (every type when `None`): `route` picks
    /// the child (index into `children`) a message goes to, or `None` to drop it
    /// (completing it at once). The child is made first, so the forwarder's inbox is
    /// registered knowing where it passes messages on to. Returns the first child.
    fn tracked_forwarder<R>(
        &self,
        ty: Option<(TypeId, TypeName)>,
        takes: Takes,
        route: R,
    ) -> RelayReceiver
    where
        R: FnMut(&crate::Envelope) -> Option<usize> + Send + 'static,
    {
        let (child_tx, child) = self.child();
        if let Some(tx) = child_tx {
            let link = Link {
                relay: Arc::downgrade(&tx.core),
                takes,
            };
            let inbox = Inbox::forwarder(&self.core, ty, Box::new([link]));
            self.run_tracked(inbox, vec![tx], route);
        }
        child
    }

    fn run_tracked<R>(&self, inbox: Inbox, children: Vec<RelaySender>, mut route: R)
    where
        R: FnMut(&crate::Envelope) -> Option<usize> + Send + 'static,
    {
        let wildcard = inbox.is_wildcard();
        let node = Node::forwarder(inbox.id());
        let mode = self.config().panic_mode;
        let who = self.forwarder_identity(&inbox);
        self.spawn_forwarder(who, async move {
            // Declared in this order so they drop in the other: the children close (their
            // forwarders see their end) before this inbox ends and leaves the idle count.
            let mut inbox = inbox;
            let children = children;
            let (relay_id, me) = (inbox.relay_id(), inbox.id());
            while let Some(msg) = next_for(&mut inbox, &children).await {
                if wildcard && is_internal_event(msg.envelope().type_id()) {
                    settle_quietly(msg, Completion::complete);
                    continue;
                }
                let work = Work::of(HandlerKind::Forwarder, relay_id, me, msg.envelope());
                // Taken now, used or not, so nothing holds the children's lists longer.
                let mut plans = msg.take_plans();
                match work.enter(|| guarded(|| route(msg.envelope()))) {
                    // As this forwarder's work: its wait for the child's handlers is seen by
                    // the deadlock check.
                    Ok(Some(i)) => {
                        let child = &children[i];
                        let plan = plans
                            .iter()
                            .position(|p| p.relay == child.core.id)
                            .map(|at| plans.swap_remove(at));
                        work.run(InNode::new(node.clone(), pass_on(msg, child, plan)))
                            .await
                    }
                    Ok(None) => settle_quietly(msg, Completion::complete),
                    Err(payload) => return forwarder_panicked(msg, payload, mode),
                }
            }
        });
    }
}

/// The most a batch forwarder allocates for a batch before it holds messages: a batch of
/// more grows as messages arrive.
const PREALLOCATED_BATCH: usize = 1024;

/// The value itself when nobody else holds it, a clone otherwise.
fn unshare<T: Clone>(shared: Arc<T>) -> T {
    Arc::try_unwrap(shared).unwrap_or_else(|shared| (*shared).clone())
}

/// Sends `msg` into `child` and settles it with the child's verdict (waiting for the
/// child's tracked handlers only if the parent's sender is waiting for this message). A
/// tracked message goes to the child's subscribers as the parent's send snapshotted them.
async fn pass_on(msg: Completion, child: &RelaySender, plan: Option<Plan>) {
    let delivery = match plan {
        Some(plan) => Delivery::planned(&child.core, msg.envelope(), plan),
        None => Delivery::forwarded(&child.core, msg.envelope(), msg.is_tracked()),
    };
    let outcome = delivery.await;
    settle_quietly(msg, |msg| msg.settle_forwarded(outcome));
}
