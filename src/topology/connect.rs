//! Connections between relays that already exist: `forward` (one relay into another)
//! and `merge` (many into a new one), with echo prevention.
//!
//! Both are tracking boundaries: the source's sends do not wait for the target, and the
//! target's handler errors stay on the target. The forwarder does wait for the target's
//! tracked handlers before taking its next message, so order is kept and a slow target
//! slows the forwarder, not the source's other subscribers.
//!
//! # Echo prevention
//!
//! Every envelope carries the id of the relay it was first sent on
//! ([`Envelope::origin`](crate::Envelope::origin)), and forwarding keeps it. A forwarder
//! never delivers a message into the relay it came from first, so `a ↔ b` and
//! `a → b → c → a` deliver each message once per relay and go quiet. The limit: only the
//! *first* relay is remembered, so a cycle that does not pass through the message's
//! origin (`a → b`, `b ↔ c`: a message from `a` circles `b → c → b`) is not stopped.
//!
//! Internal events (`Dropped`, `RelayError`) are not forwarded: they describe the relay
//! they happened on.

use std::future::Future;
use std::sync::Arc;

use futures::future::{select, Either};

use crate::core::deadlock::{InNode, Node};
use crate::core::delivery::Delivery;
use crate::core::inbox::Inbox;
use crate::core::lost::Guarded;
use crate::core::trace::Work;
use crate::core::{is_internal_event, IMPORTED_BIT};
use crate::relay::config::Config;
use crate::relay::error::HandlerKind;
use crate::relay::handler::start_within;
use crate::relay::receiver::RelayReceiver;
use crate::relay::sender::{RelaySender, WeakSender};
use crate::relay::task_handle::TaskHandle;
use crate::relay::Relay;
use crate::spawner::choice::Choice;
use crate::spawner::BoxFuture;
use crate::topology::settle_quietly;

/// Something [`RelayReceiver::forward`] can send into: a [`RelaySender`] or a
/// [`WeakSender`]. The forward holds it weakly either way, so it never keeps the target
/// open.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{ForwardTarget, Relay};
/// let (tx, _rx) = Relay::channel();
/// assert_eq!(tx.forward_target().id(), tx.weak().forward_target().id());
/// ```
pub trait ForwardTarget {
    /// The weak sender the forward sends with.
    fn forward_target(&self) -> WeakSender;
}

impl ForwardTarget for RelaySender {
    fn forward_target(&self) -> WeakSender {
        self.weak()
    }
}

impl ForwardTarget for WeakSender {
    fn forward_target(&self) -> WeakSender {
        self.clone()
    }
}

impl RelayReceiver {
    /// Forwards every message of this relay into `target` until this relay closes (and
    /// what was queued for the forward is drained) or the target closes. This relay's
    /// close does not close the target.
    ///
    /// The subscription is made when `forward` is called, so nothing sent after the call
    /// is missed even if the future is polled later. The returned future does the work:
    /// await it, or spawn it; see [`forward_detached`](Self::forward_detached) to have the
    /// relay's spawner run it.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::Relay;
    /// let (a_tx, a) = Relay::channel();
    /// let (b_tx, b) = Relay::channel();
    /// let mut on_b = b.subscribe::<u8>();
    /// let forwarding = a.forward(&b_tx);
    /// a_tx.send(1u8).await.unwrap();
    /// drop(a_tx); // the source closes; the forward ends after draining
    /// forwarding.await;
    /// assert_eq!(*on_b.recv().await.unwrap(), 1);
    /// assert!(!b_tx.is_closed());
    /// # });
    /// ```
    #[must_use = "the forward does nothing until the returned future is awaited or spawned (see forward_detached)"]
    pub fn forward<S: ForwardTarget + ?Sized>(
        &self,
        target: &S,
    ) -> impl Future<Output = ()> + Send + 'static {
        let inbox = Inbox::new(&self.core, None, HandlerKind::Forwarder, false);
        forwarding(inbox, target.forward_target())
    }

    /// As [`forward`](Self::forward), run as a task on this relay's spawner. The handle
    /// resolves when the forward ends.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::Relay;
    /// let (a_tx, a) = Relay::channel();
    /// let (b_tx, b) = Relay::channel();
    /// let mut on_b = b.subscribe::<&str>();
    /// let handle = a.forward_detached(&b_tx.weak());
    /// a_tx.send("hop").await.unwrap();
    /// assert_eq!(*on_b.recv().await.unwrap(), "hop");
    /// drop(a_tx);
    /// handle.await.unwrap();
    /// # });
    /// ```
    pub fn forward_detached<S: ForwardTarget + ?Sized>(&self, target: &S) -> TaskHandle {
        let inbox = Inbox::new(&self.core, None, HandlerKind::Forwarder, false);
        // A task of the relay's own: reported as lost if it ends before this relay does.
        let abort = futures::future::AbortHandle::new_pair();
        let mut who = self.forwarder_identity(&inbox);
        who.abort = Some(abort.0.clone());
        let work = Guarded::new(who, forwarding(inbox, target.forward_target()));
        start_within(
            &self.core,
            self.id,
            &self.config,
            &self.tasks,
            abort,
            move || work,
        )
    }

    /// Merges this relay and `others` into a new relay (see [`Relay::merge`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (a_tx, a) = pipedream_rs::Relay::channel();
    /// let (b_tx, b) = pipedream_rs::Relay::channel();
    /// let mut both = a.merge([b]).subscribe::<u8>();
    /// a_tx.send(1u8).await.unwrap();
    /// b_tx.send(2u8).await.unwrap();
    /// let mut got = vec![*both.recv().await.unwrap(), *both.recv().await.unwrap()];
    /// got.sort();
    /// assert_eq!(got, [1, 2]);
    /// # });
    /// ```
    #[must_use = "the merged relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn merge(&self, others: impl IntoIterator<Item = RelayReceiver>) -> RelayReceiver {
        Relay::merge(std::iter::once(self.clone()).chain(others))
    }
}

impl Relay {
    /// A new relay carrying every message of every input, which closes once all inputs
    /// have closed (and their forwarders drained). It takes the first input's
    /// configuration; each input's forwarder runs on that input's spawner. Messages keep
    /// their origin. With no inputs, or only closed ones, the merged relay is closed at
    /// once.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::Relay;
    /// let (a_tx, a) = Relay::channel();
    /// let (b_tx, b) = Relay::channel();
    /// let merged = Relay::merge([a, b]);
    /// let mut sub = merged.subscribe::<u8>();
    /// a_tx.send(1u8).await.unwrap();
    /// drop((a_tx, b_tx));
    /// assert_eq!(*sub.recv().await.unwrap(), 1);
    /// assert!(sub.recv().await.is_none());
    /// # });
    /// ```
    #[must_use = "the merged relay is fed only while something observes it: keep its receiver, or subscribe to it"]
    pub fn merge(inputs: impl IntoIterator<Item = RelayReceiver>) -> RelayReceiver {
        let inputs: Vec<RelayReceiver> = inputs.into_iter().collect();
        let Some(first) = inputs.first() else {
            let (tx, rx) = Relay::from_config(Config::closed());
            tx.close();
            return rx;
        };
        let (tx, merged) = Relay::from_config(first.config().clone());
        if inputs.iter().all(RelayReceiver::is_closed) {
            tx.close(); // nothing will ever arrive: closed at once, like any derived relay
            return merged;
        }
        // Every input's forwarder shares the merged relay's only sender; the last one to
        // end drops it, which closes the merged relay.
        let tx = Arc::new(tx);
        for input in &inputs {
            let inbox = Inbox::new(&input.core, None, HandlerKind::Forwarder, false);
            let target = tx.weak();
            let owner = tx.clone();
            let who = input.forwarder_identity(&inbox);
            input.spawn_forwarder(who, async move {
                forwarding(inbox, target).await;
                drop(owner);
            });
        }
        merged
    }
}

/// The forward loop: until the source is drained or the target closes.
async fn forwarding(inbox: Inbox, target: WeakSender) {
    // The loop is this forward's work: its waits on the target are seen by the deadlock
    // check (a lossless `a <-> b` would otherwise wait for room forever).
    let node = Node::forwarder(inbox.id());
    InNode::new(node, forwarding_loop(inbox, target)).await
}

async fn forwarding_loop(mut inbox: Inbox, target: WeakSender) {
    let target_id = target.id();
    let (relay_id, me) = (inbox.relay_id(), inbox.id());
    loop {
        let next = {
            let closed = std::pin::pin!(target_closed(&target));
            let recv = std::pin::pin!(inbox.recv());
            match select(recv, closed).await {
                Either::Left((next, _)) => next,
                Either::Right(((), _)) => None,
            }
        };
        let Some(msg) = next else { return };
        let envelope = msg.envelope();
        // An imported message's origin is its relay's id with the bridge bit set
        // (`bridge::IMPORTED`): it came from `target` if the rest is `target`'s id.
        if envelope.origin & !IMPORTED_BIT == target_id || is_internal_event(envelope.type_id()) {
            settle_quietly(msg, drop); // echo, or an event of the source relay
            continue;
        }
        let Some(core) = target.upgrade_core() else {
            return settle_quietly(msg, drop);
        };
        // Tracked by the target's own rules; its handler errors stay on the target.
        let work = Work::of(HandlerKind::Forwarder, relay_id, me, envelope);
        let send = work.enter(|| Delivery::forwarded(&core, envelope, true));
        let outcome = work.run(send).await;
        // The target's handlers may be done with it: this copy may be the last.
        settle_quietly(msg, drop);
        if let Err(crate::SendError::Closed) = outcome {
            return;
        }
    }
}

async fn target_closed(target: &WeakSender) {
    if let Some(core) = target.upgrade_core() {
        core.wait_closed().await;
    }
}

impl Config {
    /// The configuration of a relay that is closed from birth: its spawner drops work.
    pub(crate) fn closed() -> Config {
        Config {
            channel_size: 1,
            delivery_mode: Default::default(),
            type_modes: Arc::new([]),
            retain: Arc::new([]),
            error_mode: Default::default(),
            panic_mode: Default::default(),
            reject_unrouted: false,
            spawner: Choice::given(Arc::new(|_task: BoxFuture| {})),
        }
    }
}
