//! [`RelayReceiver`]: the handle for subscribing, registering handlers and watching a relay.

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Weak};

use crate::core::observers::Observers;
use crate::core::tasks::Tasks;
use crate::core::Core;
use crate::relay::config::Config;
use crate::relay::error::{HandlerKind, SendError};
use crate::relay::handler::{start_handler, start_within, AsyncHandler, Handler, HandlerResult};
use crate::relay::stats::RelayStats;
use crate::relay::subscription::{EnvelopeSubscription, Subscription};
use crate::relay::task_handle::TaskHandle;
use crate::relay::tracked_subscription::TrackedSubscription;

/// The receiving half of a relay: subscribe, register handlers, observe.
///
/// `Clone`, and never keeps the relay open or alive: once the
/// [`RelaySender`](crate::RelaySender) is gone, subscriptions made from it end (after
/// draining) and new ones end at once.
///
/// Every registration (`subscribe*`, `sink`, `tap`) is complete when the call returns: a
/// message sent afterwards reaches it, and a tracked one is waited for.
///
/// There is no `recv` here: a relay carries many types, so you receive from a
/// subscription to one of them, `rx.subscribe::<T>().recv()` (or every type with
/// [`subscribe_all`](Self::subscribe_all)), or register a handler with
/// [`sink`](Self::sink).
///
/// # Examples
///
/// ```
/// # futures::executor::block_on(async {
/// use pipedream_rs::Relay;
/// let (tx, rx) = Relay::channel();
/// let mut texts = rx.subscribe::<String>();
/// rx.sink::<u32>(|n| assert!(*n < 10));
/// tx.send(String::from("a")).await.unwrap();
/// tx.send(3u32).await.unwrap();
/// assert_eq!(texts.recv().await.unwrap().as_str(), "a");
/// # });
/// ```
pub struct RelayReceiver {
    pub(crate) core: Weak<Core>,
    pub(crate) id: u64,
    pub(crate) config: Config,
    pub(crate) tasks: Arc<Tasks>,
    /// The idle count of the relay's family (`idle()`).
    pub(crate) flow: Arc<crate::core::flow::Flow>,
    /// Counts this handle: a derived relay with no handle and no subscriber left is fed
    /// no more (`core/observers.rs`).
    observers: Arc<Observers>,
}

impl Clone for RelayReceiver {
    fn clone(&self) -> Self {
        self.observers.handle_added();
        RelayReceiver {
            core: self.core.clone(),
            id: self.id,
            config: self.config.clone(),
            tasks: self.tasks.clone(),
            flow: self.flow.clone(),
            observers: self.observers.clone(),
        }
    }
}

impl Drop for RelayReceiver {
    fn drop(&mut self) {
        self.observers.handle_dropped();
    }
}

impl RelayReceiver {
    pub(crate) fn new(core: &Arc<Core>) -> Self {
        core.observers.handle_added();
        RelayReceiver {
            core: Arc::downgrade(core),
            id: core.id,
            config: core.config.clone(),
            tasks: core.tasks.clone(),
            flow: core.flow.clone(),
            observers: core.observers.clone(),
        }
    }

    /// An untracked subscription to messages of type `T` (see [`Subscription`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<i32>();
    /// tx.send(-4i32).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), -4);
    /// # });
    /// ```
    #[doc(alias = "recv")]
    #[doc(alias = "receiver")]
    pub fn subscribe<T: Any + Send + Sync>(&self) -> Subscription<T> {
        Subscription::new(&self.core)
    }

    /// As [`subscribe`](Self::subscribe), with this subscription's own queue capacity or
    /// delivery mode (see [`SubscribeOptions`](crate::SubscribeOptions)): for example one
    /// dashboard view that only wants the latest reading, on a lossless relay.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroChannelSize`](crate::BuildError::ZeroChannelSize) or
    /// [`BuildError::ChannelSizeTooLarge`](crate::BuildError::ChannelSizeTooLarge) for a
    /// capacity a relay's builder would refuse too.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::{BuildError, DeliveryMode, Relay, SubscribeOptions};
    /// let (tx, rx) = Relay::builder().delivery_mode(DeliveryMode::Lossless).build().unwrap();
    /// let mut latest = rx
    ///     .subscribe_with::<u32>(SubscribeOptions::new().mode(DeliveryMode::Latest))
    ///     .unwrap();
    /// for n in 1..=3u32 {
    ///     tx.send(n).await.unwrap(); // never waits for this subscriber
    /// }
    /// assert_eq!(*latest.recv().await.unwrap(), 3);
    /// let refused = rx.subscribe_with::<u32>(SubscribeOptions::new().capacity(0));
    /// assert_eq!(refused.unwrap_err(), BuildError::ZeroChannelSize);
    /// # });
    /// ```
    pub fn subscribe_with<T: Any + Send + Sync>(
        &self,
        options: crate::SubscribeOptions,
    ) -> Result<Subscription<T>, crate::BuildError> {
        Ok(Subscription::with_options(&self.core, options.check()?))
    }

    /// Answers requests of `Q` with replies of `R` ([`RelaySender::request`](crate::RelaySender::request)):
    /// a tracked handler, run on the relay's spawner one request at a time, in order,
    /// like a [`sink`](Self::sink) (it is one, for [`Request<Q, R>`](crate::Request)).
    /// A panic in `f` is caught and comes back to the requester as
    /// [`RequestError::Failed`](crate::RequestError::Failed).
    ///
    /// With several responders for the same `Q` and `R`, every one of them runs for each
    /// request; `request` gets the reply of the first to finish and `request_all` every
    /// reply. A responder lives until the relay closes.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.respond::<String, usize>(|s| s.len());
    /// assert_eq!(tx.request::<String, usize>(String::from("four")).await, Ok(4));
    /// # });
    /// ```
    pub fn respond<Q, R>(&self, mut f: impl FnMut(&Q) -> R + Send + 'static)
    where
        Q: Any + Send + Sync,
        R: Any + Send,
    {
        self.sink::<crate::Request<Q, R>>(move |request| request.answer(f(request.query())));
    }

    /// As [`respond`](Self::respond), for a responder that can fail: its `Err` comes back
    /// to the requester as [`RequestError::Failed`](crate::RequestError::Failed) (and is
    /// published as a [`RelayError`](crate::RelayError)). `E` is any error a handler may
    /// return (`String`, `&str`, a boxed error, `anyhow::Error`, …).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::RequestError;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.try_respond::<i32, f64, _>(|n| {
    ///     if *n < 0 { Err("negative") } else { Ok(f64::from(*n).sqrt()) }
    /// });
    /// assert_eq!(tx.request::<i32, f64>(9).await, Ok(3.0));
    /// let failed = tx.request::<i32, f64>(-1).await.unwrap_err();
    /// let RequestError::Failed(e) = failed else { panic!("{failed:?}") };
    /// assert_eq!(e.error.to_string(), "negative");
    /// # });
    /// ```
    pub fn try_respond<Q, R, E>(&self, mut f: impl FnMut(&Q) -> Result<R, E> + Send + 'static)
    where
        Q: Any + Send + Sync,
        R: Any + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>> + Send + 'static,
    {
        self.sink::<crate::Request<Q, R>>(move |request| {
            f(request.query()).map(|reply| request.answer(reply))
        });
    }

    /// The newest retained message of `T`, without subscribing: `None` if `T` is not
    /// retained ([`RelayBuilder::retain`](crate::RelayBuilder::retain)) or none was sent
    /// yet. With `retain::<T>(1)` this is a current value, like a watch channel's.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use pipedream_rs::Relay;
    /// let (tx, rx) = Relay::builder().retain::<String>(1).build().unwrap();
    /// assert!(rx.latest::<String>().is_none());
    /// tx.send(String::from("ready")).await.unwrap();
    /// assert_eq!(rx.latest::<String>().as_deref().map(String::as_str), Some("ready"));
    /// assert!(rx.latest::<u8>().is_none()); // not retained
    /// # });
    /// ```
    pub fn latest<T: Any + Send + Sync>(&self) -> Option<std::sync::Arc<T>> {
        let core = self.core.upgrade()?;
        let retention = core.retention_of(std::any::TypeId::of::<T>())?;
        let newest = retention.lock().back()?.value.clone();
        newest.downcast::<T>().ok()
    }

    /// An untracked subscription to every message, as [`Envelope`](crate::Envelope)s.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut all = rx.subscribe_all();
    /// tx.send(1u8).await.unwrap();
    /// assert_eq!(all.recv().await.unwrap().type_name(), "u8");
    /// # });
    /// ```
    pub fn subscribe_all(&self) -> EnvelopeSubscription {
        EnvelopeSubscription::new(&self.core)
    }

    /// A tracked subscription to `T`: every send of a `T` waits until this subscription
    /// completes the message (advanced; see [`TrackedSubscription`] for the contract).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe_tracked::<u8>();
    /// let (sent, ()) = futures::join!(tx.send(1u8), async {
    ///     sub.recv().await.unwrap().complete();
    /// });
    /// assert!(sent.is_ok());
    /// # });
    /// ```
    pub fn subscribe_tracked<T: Any + Send + Sync>(&self) -> TrackedSubscription<T> {
        TrackedSubscription::new(&self.core, HandlerKind::Tracked)
    }

    /// Registers a tracked, terminal handler for `T`: a sync closure run on the relay's
    /// spawner, one message at a time, in order.
    ///
    /// Every `send` of a `T` waits until `f` has run for it. `f` returns `()` or
    /// `Result<(), E>`; an `Err` or a panic comes back to the sender as a
    /// [`RelayError`](crate::RelayError) and is published as a `RelayError` event. The
    /// handler keeps serving later messages (unless
    /// [`PanicMode::Propagate`](crate::PanicMode::Propagate)). It lives until the relay closes.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let total = Arc::new(AtomicU32::new(0));
    /// let t = total.clone();
    /// rx.sink::<u32>(move |n| { t.fetch_add(*n, Ordering::SeqCst); });
    /// tx.send(2u32).await.unwrap();
    /// tx.send(3u32).await.unwrap();
    /// assert_eq!(total.load(Ordering::SeqCst), 5); // no waiting needed: send is tracked
    /// # });
    /// ```
    pub fn sink<T: Any + Send + Sync>(&self, f: impl Handler<T>) {
        self.handler(HandlerKind::Sink, f);
    }

    /// As [`sink`](Self::sink), for an async handler: `f` takes the message and returns a
    /// future.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.sink_async::<String>(|s: Arc<String>| async move {
    ///     if s.is_empty() { Err(std::io::Error::other("empty")) } else { Ok(()) }
    /// });
    /// assert!(tx.send(String::new()).await.is_err());
    /// # });
    /// ```
    pub fn sink_async<T: Any + Send + Sync>(&self, f: impl AsyncHandler<T>) {
        self.handler_async(HandlerKind::Sink, f);
    }

    /// Registers a tracked pass-through observer for `T` and returns this receiver, for
    /// chaining. Tracking, errors and panics behave as for [`sink`](Self::sink).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx
    ///     .tap::<u8>(|n| println!("saw {n}"))
    ///     .subscribe::<u8>();
    /// tx.send(1u8).await.unwrap();
    /// assert_eq!(*sub.recv().await.unwrap(), 1);
    /// # });
    /// ```
    pub fn tap<T: Any + Send + Sync>(&self, f: impl Handler<T>) -> RelayReceiver {
        self.handler(HandlerKind::Tap, f);
        self.clone()
    }

    /// As [`tap`](Self::tap), for an async observer.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// rx.tap_async::<u8>(|n: Arc<u8>| async move { assert_eq!(*n, 1) });
    /// tx.send(1u8).await.unwrap();
    /// # });
    /// ```
    pub fn tap_async<T: Any + Send + Sync>(&self, f: impl AsyncHandler<T>) -> RelayReceiver {
        self.handler_async(HandlerKind::Tap, f);
        self.clone()
    }

    fn handler<T: Any + Send + Sync>(&self, kind: HandlerKind, mut f: impl Handler<T>) {
        start_handler::<T, _, _>(&self.core, &self.config, &self.tasks, kind, move |msg| {
            futures::future::ready(f(&msg).into_result())
        });
    }

    fn handler_async<T: Any + Send + Sync>(&self, kind: HandlerKind, mut f: impl AsyncHandler<T>) {
        start_handler::<T, _, _>(&self.core, &self.config, &self.tasks, kind, move |msg| {
            let fut = f(msg);
            async move { fut.await.into_result() }
        });
    }

    /// Runs `f()` as an untracked task on the relay's spawner. No send waits for it. Its
    /// `Err` or panic is published as a [`RelayError`](crate::RelayError) event (kind
    /// `Within`, message id 0) and returned by the [`TaskHandle`], which can be awaited
    /// from any executor.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let mut sub = rx.subscribe::<u8>();
    /// let worker = rx.within(move || async move {
    ///     let mut sum = 0u32;
    ///     while let Some(n) = sub.recv().await { sum += u32::from(*n); }
    ///     assert_eq!(sum, 3);
    /// });
    /// tx.send(1u8).await.unwrap();
    /// tx.send(2u8).await.unwrap();
    /// drop(tx);
    /// worker.await.unwrap();
    /// # });
    /// ```
    pub fn within<F, Fut>(&self, f: F) -> TaskHandle
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        let abort = futures::future::AbortHandle::new_pair();
        start_within(&self.core, self.id, &self.config, &self.tasks, abort, f)
    }

    /// Resolves once the relay is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it observes only.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let closed = rx.closed();
    /// drop(tx);
    /// closed.await;
    /// # });
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let core = self.core.clone();
        async move {
            if let Some(core) = core.upgrade() {
                core.wait_closed().await;
            }
        }
    }

    /// `true` once the relay is closed (or gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// assert!(!rx.is_closed());
    /// drop(tx);
    /// assert!(rx.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.core.upgrade().is_none_or(|c| c.is_closed())
    }

    /// The relay's counters now (zeros, but for live tasks, once the relay is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let _s = rx.subscribe::<u8>();
    /// assert_eq!(rx.stats().subscribers, 1);
    /// ```
    pub fn stats(&self) -> RelayStats {
        match self.core.upgrade() {
            Some(core) => core.stats(),
            None => RelayStats {
                live_tasks: self.tasks.live(),
                ..RelayStats::default()
            },
        }
    }

    /// The figures of one message type on this relay (see [`TypeStats`](crate::TypeStats)),
    /// or `None` if `T` was never sent on it nor subscribed to (or the relay is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let _texts = rx.subscribe::<String>();
    /// tx.send(String::from("a")).await.unwrap();
    /// assert_eq!(rx.stats_for::<String>().unwrap().delivered, 1);
    /// # });
    /// ```
    pub fn stats_for<T: Any>(&self) -> Option<crate::TypeStats> {
        self.core.upgrade()?.type_stats(std::any::TypeId::of::<T>())
    }

    /// Resolves once every task started from this relay so far (handlers, `within`) has
    /// begun running. Any number of waiters are released together.
    ///
    /// Registration does not depend on it: a handler receives every message sent after
    /// `sink` returned, started or not. Use `ready` when something outside the relay must
    /// know the tasks are running.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it observes only.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// rx.sink::<u8>(|_| ());
    /// rx.ready().await;
    /// assert_eq!(rx.stats().live_tasks, 1);
    /// # });
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let tasks = self.tasks.clone();
        async move { tasks.ready().await }
    }

    /// Resolves at a moment when every queue of this relay, and of every relay derived
    /// from it (transitively: its family), is empty and none of their handlers or
    /// forwarders is working on a message: everything sent so far has settled. For tests
    /// ("wait until the pipeline has processed everything") and graceful shutdown. Any
    /// number of waiters are released together.
    ///
    /// It resolves only at a real quiescent point, whatever sends run meanwhile: every
    /// queue counts the messages made visible in it and those done with (taken by a
    /// subscription, processed by a handler, or passed on by a forwarder into a derived
    /// relay, whose count is raised first), and `idle` reads them all twice, resolving
    /// only if every queue is idle and nothing moved in between. Under a stream of sends
    /// that never pauses it waits for the pause. It does not wait for sends that have not pushed yet, messages a
    /// subscription's owner took and still holds, a batch forwarder's partial batch, or
    /// relays connected with `forward`/`merge` (their own families). A handler or
    /// forwarder of the family that awaits it waits for itself (its own message keeps its
    /// queue busy): it never resolves there. See SEMANTICS.md §8.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// let total = Arc::new(AtomicU32::new(0));
    /// let t = total.clone();
    /// rx.map::<u32, u32>(|n| n * 10).sink::<u32>(move |n| { t.fetch_add(*n, Ordering::SeqCst); });
    /// for n in 1..=3u32 {
    ///     tx.send(n).await.unwrap(); // `map` is a tracking boundary: this does not wait
    /// }
    /// rx.idle().await; // ...but this does, for the derived relay's sink too
    /// assert_eq!(total.load(Ordering::SeqCst), 60);
    /// # });
    /// ```
    pub fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        let flow = self.flow.clone();
        async move { flow.wait_idle().await }
    }

    /// Resolves once at least `n` tracked handlers are registered. Any number of waiters
    /// are released together. `wait_for_handlers(0)` is `Ok` at once on any relay.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the relay is closed (or gone) before `n` handlers are
    /// registered.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it observes only.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let waiting = rx.wait_for_handlers(1);
    /// rx.sink::<u8>(|_| ());
    /// waiting.await.unwrap();
    /// # });
    /// ```
    #[must_use = "futures do nothing unless awaited"]
    pub fn wait_for_handlers(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<(), SendError>> + Send + 'static {
        let core = self.core.clone();
        async move {
            if n == 0 {
                // "At least none" holds on every relay, open, closed or gone.
                return Ok(());
            }
            let core = core.upgrade().ok_or(SendError::Closed)?;
            if core.wait_for_handlers(n).await {
                Ok(())
            } else {
                Err(SendError::Closed)
            }
        }
    }

    /// The relay's id (as [`RelaySender::id`](crate::RelaySender::id)).
    ///
    /// # Examples
    ///
    /// ```
    /// let (tx, rx) = pipedream_rs::Relay::channel();
    /// assert_eq!(rx.id(), tx.id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl std::fmt::Debug for RelayReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayReceiver")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish()
    }
}
