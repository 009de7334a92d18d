//! The NATS bridge (feature `nats`, on the `async-nats` client).
//!
//! # Subjects and modes
//!
//! | method | subject | NATS | guarantee |
//! |---|---|---|---|
//! | [`export`](NatsBridge::export) / [`import`](NatsBridge::import) | `{prefix}.msg.{name}` | core publish / subscribe | at most once, to every importer |
//! | [`export_tracked`](NatsBridge::export_tracked) / [`import_tracked`](NatsBridge::import_tracked) | `{prefix}.req.{name}` | request / reply, importers in one queue group | exactly one importing relay processes it, or the sender learns why not |
//! | [`export_stream`](NatsBridge::export_stream) / [`import_stream`](NatsBridge::import_stream) | `{prefix}.stream.{name}` | JetStream: a stream, a durable pull consumer per group, explicit acks | at least once to each group, across restarts; duplicates identifiable ([`StreamEntry`](crate::bridge::StreamEntry)) |
//!
//! A tracked export makes the bridge a tracked handler of `T` on the local relay, so a
//! local `send(v).await` of a `T` returns once the remote side answered: `Ok` means one
//! remote relay's tracked handlers processed it (the relay the queue group gave it to;
//! the reply speaks for that relay only, never for others). Its failures come back as a
//! [`BridgeError::Remote`] naming that relay, a missing importer as
//! [`BridgeError::NoResponders`], and no answer in time as [`BridgeError::Timeout`]:
//! *outcome unknown*, neither `Ok` nor "not processed".
//!
//! # Runtime
//!
//! `async-nats` needs tokio. A bridge made inside a tokio runtime runs its I/O there (that
//! runtime needs its I/O and time drivers: `enable_all`, as `#[tokio::main]` has);
//! made anywhere else (smol, async-std, a plain thread) it starts a tokio runtime of its
//! own with one worker thread, and stops it when the bridge is dropped. Either way the
//! bridge's methods are futures any executor can await, and the relay side runs on the
//! relay's own executor as always.
//!
//! # Faults
//!
//! The client reconnects by itself, and subscriptions are renewed. While the connection
//! is down an export publishes nothing: each message is reported [`Dropped`](crate::Dropped)
//! (and the outage once, as a [`BridgeError::Publish`]). What was handed to the client
//! just before the connection broke can be lost without the client knowing: that window
//! is what "at most once" means here.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use crate::bridge::{
    check_name, BridgeError, BridgeStats, Codec, FrameKind, Local, Mode, Names, Outcome, Postcard,
};
use crate::relay::error::HandlerKind;
use crate::relay::receiver::RelayReceiver;

mod stream;

/// The name failures of the connection itself are reported under.
const CONNECTION: &str = "pipedream_rs::bridge::nats::NatsBridge";

/// The `type_name` of the [`Dropped`](crate::Dropped) event published for each message
/// the NATS client reports dropping because an import did not keep up (a slow consumer).
/// The client does not say which message it was, so the event's `msg_id` is 0 and its
/// `subscriber_id` is the client's subscription id (not a subscriber of the relay). It
/// has no type on the relay, so it counts in [`BridgeStats::slow_consumer`], not in
/// `stats().dropped` (SEMANTICS.md §7).
///
/// # Examples
///
/// ```
/// use pipedream_rs::bridge::nats::DROPPED_BY_CLIENT;
/// # let d_type_name = DROPPED_BY_CLIENT;
/// if d_type_name == DROPPED_BY_CLIENT {
///     println!("an import lost a message before it reached the relay");
/// }
/// ```
pub const DROPPED_BY_CLIENT: &str =
    "pipedream_rs::bridge::nats (a message for an import, dropped by the client: slow consumer)";

/// Where the bridge's I/O runs.
enum Io {
    /// The tokio runtime the bridge was made in.
    Ambient(tokio::runtime::Handle),
    /// A runtime of the bridge's own (made outside tokio).
    Own(Option<tokio::runtime::Runtime>),
}

impl Io {
    fn new() -> Result<Io, BridgeError> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(Io::Ambient(handle));
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pipedream-nats")
            .enable_all()
            .build()
            .map(|rt| Io::Own(Some(rt)))
            .map_err(|e| BridgeError::Connect(format!("could not start a tokio runtime: {e}")))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        match self {
            Io::Ambient(handle) => Some(handle.clone()),
            Io::Own(rt) => rt.as_ref().map(|rt| rt.handle().clone()),
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Io::Own(rt) = self {
            if let Some(rt) = rt.take() {
                // Never blocks, so it is safe wherever the bridge is dropped.
                rt.shutdown_background();
            }
        }
    }
}

/// What the bridge's tasks share.
struct Shared {
    client: async_nats::Client,
    local: Arc<Local>,
    prefix: String,
    request_timeout: Duration,
    /// A stream import's consumer's `ack_wait` (JetStream).
    ack_wait: Duration,
    /// The client's buffer per subscription (a stream import asks for no more).
    subscription_capacity: usize,
}

impl Shared {
    fn subject(&self, tracked: bool, name: &str) -> String {
        let kind = if tracked { "req" } else { "msg" };
        format!("{}.{kind}.{name}", self.prefix)
    }

    fn limit(&self) -> usize {
        self.client.server_info().max_payload
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Configures a [`NatsBridge`] before it connects.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
/// use std::time::Duration;
/// use pipedream_rs::bridge::nats::NatsBridge;
/// let (_tx, rx) = pipedream_rs::Relay::channel();
/// let bridge = NatsBridge::builder("nats://127.0.0.1:4222")
///     .prefix("shop")
///     .request_timeout(Duration::from_secs(2))
///     .connect(&rx)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct NatsBridgeBuilder {
    url: String,
    prefix: String,
    request_timeout: Duration,
    subscription_capacity: usize,
    ack_wait: Duration,
}

impl NatsBridgeBuilder {
    /// The first part of every subject (default `"pipedream"`), so that several
    /// applications can share one NATS server. Checked as a wire name at `connect`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222").prefix("shop");
    /// # drop(b);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a tracked export waits for the remote answer (default 5 s). After that
    /// the send fails with [`BridgeError::Timeout`]: outcome unknown.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222")
    ///     .request_timeout(Duration::from_millis(500));
    /// # drop(b);
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a JetStream consumer this bridge makes for a stream import waits for a
    /// message's acknowledgement before the server delivers it again, to this or another
    /// member of the group (default 30 s; a consumer that exists keeps its own). An import
    /// asks for up to 64 messages at a time: handlers slower than `ack_wait / 64` per
    /// message let the tail of a batch be redelivered (duplicates).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222")
    ///     .ack_wait(Duration::from_secs(60));
    /// # drop(b);
    /// ```
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// How many received messages the client buffers per import before it drops them and
    /// reports a slow consumer (default 65,536; at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222")
    ///     .subscription_capacity(1024);
    /// # drop(b);
    /// ```
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// Connects, and attaches the bridge to `rx`'s relay (held weakly: the bridge never
    /// keeps the relay open).
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`] for a bad prefix, [`BridgeError::Closed`] if the
    /// relay is closed, [`BridgeError::Connect`] if the server cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let bridge = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222")
    ///     .connect(&rx)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, rx: &RelayReceiver) -> Result<NatsBridge, BridgeError> {
        check_name(&self.prefix)?;
        if rx.is_closed() {
            return Err(BridgeError::Closed);
        }
        let io = Io::new()?;
        let handle = io.handle().ok_or(BridgeError::Closed)?;
        let local = Arc::new(Local::new(rx));
        // The connection's own events are reported (and counted) by the same `Local`.
        let events = local.clone();
        let options = async_nats::ConnectOptions::new()
            .subscription_capacity(self.subscription_capacity)
            .request_timeout(Some(self.request_timeout))
            .event_callback(move |event| {
                let events = events.clone();
                async move { connection_event(&events, event) }
            });
        let url = self.url.clone();
        let connecting = handle.spawn(async move { options.connect(url).await });
        let client = connecting
            .await
            .map_err(|e| BridgeError::Connect(e.to_string()))?
            .map_err(|e| BridgeError::Connect(e.to_string()))?;
        Ok(NatsBridge {
            shared: Arc::new(Shared {
                client,
                local,
                prefix: self.prefix,
                request_timeout: self.request_timeout,
                ack_wait: self.ack_wait,
                subscription_capacity: self.subscription_capacity,
            }),
            tasks: Arc::new(Tasks {
                io,
                handles: Mutex::new(Vec::new()),
                names: Names::default(),
            }),
        })
    }
}

/// A connection event, reported on the relay.
fn connection_event(local: &Local, event: async_nats::Event) {
    match event {
        async_nats::Event::SlowConsumer(sid) => {
            local.report(
                CONNECTION,
                0,
                BridgeError::SlowConsumer {
                    subject: format!("subscription {sid}"),
                },
            );
            // One event per message the client dropped: a `Dropped`, as any miss.
            local.dropped_remote(DROPPED_BY_CLIENT, sid);
        }
        async_nats::Event::ServerError(e) => local.report(
            CONNECTION,
            0,
            BridgeError::Publish {
                subject: String::from("(connection)"),
                reason: format!("server error: {e}"),
            },
        ),
        async_nats::Event::ClientError(e) => local.report(
            CONNECTION,
            0,
            BridgeError::Publish {
                subject: String::from("(connection)"),
                reason: format!("client error: {e}"),
            },
        ),
        _ => {}
    }
}

/// The bridge's tasks and registrations; aborts the tasks when the last handle goes.
struct Tasks {
    io: Io,
    /// Each task's tokio handle, and the flag that says its end was asked for (so it is
    /// not reported lost).
    handles: Mutex<Vec<(tokio::task::AbortHandle, futures::future::AbortHandle)>>,
    /// `(tracked, import, name)` already bridged.
    names: Names,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let handles = self.handles.get_mut().unwrap_or_else(|e| e.into_inner());
        for (task, asked) in handles.drain(..) {
            asked.abort(); // first: the task's report sees its end was asked for
            task.abort();
        }
    }
}

impl Tasks {
    /// Spawns one of the bridge's tasks on its tokio runtime. A task that ends before the
    /// relay closes without being asked to (its runtime shut down, a panic) is reported
    /// as a `HandlerLost` of kind `Bridge` on the relay, naming `type_name` and
    /// `subscriber_id` (the export's subscription, or 0 for an import).
    fn spawn(
        &self,
        local: &Local,
        type_name: &'static str,
        subscriber_id: u64,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), BridgeError> {
        let handle = self.io.handle().ok_or(BridgeError::Closed)?;
        let (asked, registration) = futures::future::AbortHandle::new_pair();
        let who = crate::core::lost::Identity {
            core: local.core.clone(),
            subscriber_id,
            kind: HandlerKind::Bridge,
            type_name,
            abort: Some(asked.clone()),
        };
        let task = crate::core::lost::Guarded::new(who, async move {
            let _ = futures::future::Abortable::new(task, registration).await;
        });
        let task = handle.spawn(task);
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((task.abort_handle(), asked));
        Ok(())
    }

    /// Runs `f` on the bridge's tokio runtime and waits for it (from any executor). `f`
    /// is spawned at the call, so the future returned holds only the task's handle, not
    /// `f` itself (the client's futures are large: kept inline they would swell every
    /// caller's future).
    fn run<R: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = R> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<R, BridgeError>> + Send + 'static {
        let task = self.io.handle().map(|handle| handle.spawn(f));
        async move {
            match task {
                Some(task) => task.await.map_err(|_| BridgeError::Closed),
                None => Err(BridgeError::Closed),
            }
        }
    }
}

/// A bridge between one relay and a NATS server (see the module docs).
///
/// Cloning gives another handle to the same bridge; the bridge stops (its subscriptions
/// end, its exports stop) when the last handle is dropped or the relay closes. A tracked
/// message still waiting for its answer then fails with [`BridgeError::Abandoned`]
/// (outcome unknown).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64 }
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let bridge = pipedream_rs::bridge::nats::NatsBridge::connect("nats://127.0.0.1:4222", &rx).await?;
/// bridge.export::<Order>("shop.order")?;      // local Orders go out
/// bridge.import::<Order>("shop.order").await?; // remote Orders come in
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsBridge {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl std::fmt::Debug for NatsBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBridge")
            .field("relay_id", &self.shared.local.relay_id)
            .field("wire_id", &format_args!("{:#x}", self.shared.local.wire_id))
            .field("prefix", &self.shared.prefix)
            .field("stats", &self.stats())
            .finish()
    }
}

impl NatsBridge {
    /// A builder, to set the subject prefix, the request timeout or the buffer size.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::nats::NatsBridge::builder("nats://127.0.0.1:4222");
    /// # drop(b);
    /// ```
    pub fn builder(url: impl Into<String>) -> NatsBridgeBuilder {
        NatsBridgeBuilder {
            url: url.into(),
            prefix: String::from("pipedream"),
            request_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            subscription_capacity: 65_536,
        }
    }

    /// Connects with the default settings (see [`NatsBridgeBuilder::connect`]).
    ///
    /// # Errors
    ///
    /// As [`NatsBridgeBuilder::connect`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let bridge = pipedream_rs::bridge::nats::NatsBridge::connect("nats://127.0.0.1:4222", &rx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        url: impl Into<String>,
        rx: &RelayReceiver,
    ) -> Result<NatsBridge, BridgeError> {
        NatsBridge::builder(url).connect(rx).await
    }

    /// What the bridge has done so far.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) {
    /// let stats = bridge.stats();
    /// println!("{} out, {} in, {} dropped", stats.exported, stats.imported, stats.dropped);
    /// # }
    /// ```
    pub fn stats(&self) -> BridgeStats {
        self.shared.local.counters.snapshot()
    }

    /// The local relay's id on the wire: what remote errors name ([`BridgeError::Remote`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) {
    /// println!("{:#x}", bridge.wire_id());
    /// # }
    /// ```
    pub fn wire_id(&self) -> u64 {
        self.shared.local.wire_id
    }

    /// Waits until everything published so far has reached the server.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Publish`] if the connection cannot flush, [`BridgeError::Closed`]
    /// if the bridge's runtime is gone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.flush().await?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), BridgeError> {
        let client = self.shared.client.clone();
        self.tasks
            .run(async move { client.flush().await })
            .await?
            .map_err(|e| BridgeError::Publish {
                subject: String::from("(flush)"),
                reason: e.to_string(),
            })
    }

    /// Exports `T` as `name` with the default codec ([`Postcard`]): every `T` sent on
    /// the local relay from now on is published (at most once; see the module docs).
    /// Messages this or any bridge imported are not exported.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`], [`BridgeError::AlreadyBridged`], or
    /// [`BridgeError::Closed`] if the relay or the bridge is closed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export::<String>("chat.line")?;
    /// # Ok(()) }
    /// ```
    pub fn export<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.export_with::<T>(name, Postcard)
    }

    /// As [`export`](Self::export), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_with::<u64>("ticks", pipedream_rs::bridge::Postcard)?;
    /// # Ok(()) }
    /// ```
    pub fn export_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let core = self.claim(Mode::Plain, false, name)?;
        let mut sub = crate::EnvelopeSubscription::typed::<T>(&Arc::downgrade(&core));
        let sub_id = sub.id();
        drop(core);
        let shared = self.shared.clone();
        let name = name.to_owned();
        let subject = shared.subject(false, &name);
        let type_name = std::any::type_name::<T>();
        let exporter = async move {
            let mut down_reported = false;
            // Built once: a subject's clone is a reference count, a `String`'s a copy.
            let to = async_nats::Subject::from(subject.as_str());
            let local = &shared.local;
            while let Some(first) = sub.recv().await {
                // What else is queued goes in the same turn, with one look at the
                // connection and its limit (the client hands out a copy of the whole
                // server information for each look).
                let limit = shared.limit();
                let connected = shared.connected();
                let mut next = Some(first);
                let mut taken = 1;
                while let Some(envelope) = next.take() {
                    if taken < IN_FLIGHT {
                        taken += 1;
                        next = sub.try_recv().ok();
                    }
                    if Local::came_from_engine(&envelope) {
                        local.skipped();
                        continue;
                    }
                    let Some(value) = envelope.downcast::<T>() else {
                        continue; // not reached: the subscription is of `T`
                    };
                    let msg_id = envelope.msg_id();
                    let frame = match local.encode(&codec, &name, &subject, msg_id, &*value, limit)
                    {
                        Ok(frame) => frame,
                        Err(error) => {
                            local.report(type_name, msg_id, error);
                            continue;
                        }
                    };
                    if !connected {
                        local.dropped(&envelope, sub.id());
                        if !std::mem::replace(&mut down_reported, true) {
                            let reason = String::from("the connection is down");
                            let subject = subject.clone();
                            local.report(
                                type_name,
                                msg_id,
                                BridgeError::Publish { subject, reason },
                            );
                        }
                        continue;
                    }
                    down_reported = false;
                    match shared.client.publish(to.clone(), frame.into()).await {
                        Ok(()) => local.exported(),
                        Err(e) => {
                            local.dropped(&envelope, sub.id());
                            let (subject, reason) = (subject.clone(), e.to_string());
                            local.report(
                                type_name,
                                msg_id,
                                BridgeError::Publish { subject, reason },
                            );
                        }
                    }
                }
            }
        };
        let local = self.shared.local.clone();
        self.tasks
            .spawn(&local, std::any::type_name::<T>(), sub_id, exporter)
    }

    /// Imports `T` as `name` with the default codec: every message published under that
    /// name (by another relay) is sent on the local relay, as an imported message. The
    /// subscription is in place at the server when this returns.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`], [`BridgeError::AlreadyBridged`],
    /// [`BridgeError::Connect`] if the server refuses the subscription, or
    /// [`BridgeError::Closed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import::<String>("chat.line").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.import_with::<T>(name, Postcard).await
    }

    /// As [`import`](Self::import), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_with::<u64>("ticks", pipedream_rs::bridge::Postcard).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        self.subscribe_import(false, name, codec).await
    }

    /// Exports `T` as `name`, tracked: the bridge becomes a tracked handler of `T` on the
    /// local relay, and each local `send` of a `T` returns once one remote relay that
    /// imports it as tracked has processed it (see the module docs for what `Ok` and each
    /// error mean). Up to 64 requests are out at once (more wait their turn), handed to the
    /// client in the order taken; a local `T` that came from an engine is completed at
    /// once, not exported.
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_tracked::<String>("jobs.run")?;
    /// # Ok(()) }
    /// ```
    pub fn export_tracked<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.export_tracked_with::<T>(name, Postcard)
    }

    /// As [`export_tracked`](Self::export_tracked), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_tracked_with::<u64>("jobs.id", pipedream_rs::bridge::Postcard)?;
    /// # Ok(()) }
    /// ```
    pub fn export_tracked_with<T>(
        &self,
        name: &str,
        codec: impl Codec<T>,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let core = self.claim(Mode::Tracked, false, name)?;
        let mut sub =
            crate::TrackedSubscription::<T>::new(&Arc::downgrade(&core), HandlerKind::Bridge);
        let sub_id = sub.id();
        drop(core);
        let shared = self.shared.clone();
        let name = name.to_owned();
        let subject = shared.subject(true, &name);
        let exporter = async move {
            // Requests run concurrently (up to `IN_FLIGHT`; the rest wait in `queued`, in
            // order), and the exporter never stops taking messages: an imported `T` is
            // completed at once instead of waiting behind requests (a tracked import waits
            // for this exporter too, as for any tracked handler of `T`; two relays
            // exporting tracked to each other would otherwise wait on each other). `queued`
            // is bounded by the local sends waiting for their answers.
            let mut in_flight = futures::stream::FuturesUnordered::new();
            let mut queued = std::collections::VecDeque::new();
            loop {
                while in_flight.len() < IN_FLIGHT {
                    let Some((frame, answer)) = queued.pop_front() else {
                        break;
                    };
                    in_flight.push(request(shared.clone(), subject.clone(), frame, answer));
                }
                let tracked = if in_flight.is_empty() {
                    sub.recv().await
                } else {
                    let recv = std::pin::pin!(sub.recv());
                    match futures::future::select(recv, in_flight.next()).await {
                        futures::future::Either::Left((tracked, _)) => tracked,
                        futures::future::Either::Right(_) => continue,
                    }
                };
                let Some(tracked) = tracked else { break };
                if Local::came_from_engine(tracked.envelope()) {
                    shared.local.skipped();
                    tracked.complete(); // an import: its own sender is remote
                    continue;
                }
                let msg_id = tracked.envelope().msg_id();
                let frame = shared.local.encode(
                    &codec,
                    &name,
                    &subject,
                    msg_id,
                    &**tracked.value(),
                    shared.limit(),
                );
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(error) => {
                        tracked.fail(error);
                        continue;
                    }
                };
                let answer = Answer {
                    tracked: Some(tracked),
                    subject: subject.clone(),
                };
                queued.push_back((frame, answer));
            }
            // The relay closed: let the requests still out (and those queued) finish.
            for (frame, answer) in queued {
                in_flight.push(request(shared.clone(), subject.clone(), frame, answer));
            }
            while in_flight.next().await.is_some() {}
        };
        let local = self.shared.local.clone();
        self.tasks
            .spawn(&local, std::any::type_name::<T>(), sub_id, exporter)
    }

    /// Imports `T` as `name`, tracked: each message is sent on the local relay and
    /// waited for, and the outcome (how many tracked handlers processed it, or their
    /// errors) is the answer. Importers of one name form a queue group, so each message
    /// goes to exactly one of them. Messages are processed one at a time, in the order they
    /// arrive. A relay cannot import and export one name tracked (the queue group could
    /// hand it its own messages): the second registration is refused.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_tracked::<String>("jobs.run").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_tracked<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.subscribe_import::<T>(true, name, Postcard).await
    }

    /// Claims `name` for one registration on a relay that is still there (its core, to
    /// register on); the name is given back if the relay is gone.
    fn claim(
        &self,
        mode: Mode,
        import: bool,
        name: &str,
    ) -> Result<Arc<crate::core::Core>, BridgeError> {
        let claim = self.tasks.names.claim(mode, import, name)?;
        let core = self
            .shared
            .local
            .core
            .upgrade()
            .ok_or(BridgeError::Closed)?;
        claim.keep();
        Ok(core)
    }

    /// The subscription of an import (tracked or not) and its task.
    ///
    /// One task on the bridge's runtime subscribes, says so, and then reads: the client's
    /// `Subscriber` never leaves tokio (its drop needs the runtime), so a cancelled
    /// `import` cannot strand it. Cancelled before the task said it subscribed, the
    /// import may still come into place (it then runs as if `import` had returned `Ok`).
    async fn subscribe_import<T>(
        &self,
        tracked: bool,
        name: &str,
        codec: impl Codec<T>,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let mode = if tracked { Mode::Tracked } else { Mode::Plain };
        let core = self.claim(mode, true, name)?;
        let (ready_tx, ready_rx) = futures::channel::oneshot::channel();
        let shared = self.shared.clone();
        let (name, key) = (name.to_owned(), name.to_owned());
        // The task owns the claim from here: it gives the name back if it cannot
        // subscribe, whether or not anyone still awaits this `import` (weakly: the bridge's
        // last handle aborts its tasks).
        let tasks = Arc::downgrade(&self.tasks);
        let importer = async move {
            let subject = shared.subject(tracked, &name);
            let client = &shared.client;
            let subscriber = if tracked {
                client
                    .queue_subscribe(subject.clone(), subject.clone())
                    .await
            } else {
                client.subscribe(subject.clone()).await
            };
            let subscribed = match subscriber {
                Ok(subscriber) => round_trip(client, shared.request_timeout)
                    .await
                    .map(|()| subscriber),
                Err(e) => Err(e.to_string()),
            };
            let mut subscriber = match subscribed {
                Ok(subscriber) => subscriber,
                Err(reason) => {
                    if let Some(tasks) = tasks.upgrade() {
                        tasks.names.release(mode, true, &name);
                    }
                    let _ = ready_tx.send(Err(BridgeError::Connect(reason)));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let mut closed = std::pin::pin!(core.wait_closed());
            loop {
                let next = std::pin::pin!(subscriber.next());
                let message = match futures::future::select(next, closed.as_mut()).await {
                    futures::future::Either::Left((Some(message), _)) => message,
                    // The client's connection is closed for good (or its runtime is
                    // shutting down) while the relay is open: the import is lost, and
                    // said so as any task that vanishes (nothing if the relay closed).
                    futures::future::Either::Left((None, _)) => {
                        core.handler_lost(crate::HandlerLost {
                            relay_id: core.id,
                            subscriber_id: 0,
                            kind: HandlerKind::Bridge,
                            type_name: std::any::type_name::<T>(),
                            reason: crate::LossReason::Dropped,
                        });
                        break;
                    }
                    // The relay closed: leave the subject (the subscriber's drop
                    // unsubscribes).
                    futures::future::Either::Right(_) => break,
                };
                if tracked {
                    import_one(&shared, &codec, &name, &subject, message).await;
                    continue;
                }
                // Untracked: what else has arrived goes with it, as one batch on the relay
                // (a closed subscription is seen at the next turn: it keeps saying so).
                let local = &shared.local;
                let type_name = std::any::type_name::<T>();
                let mut values = Vec::new();
                let mut next = Some(message);
                while let Some(message) = next.take() {
                    match local.decode(&codec, &name, &subject, &message.payload) {
                        Ok(Some(received)) => values.push(received.value),
                        Ok(None) => {}
                        Err(error) => local.report(type_name, 0, error),
                    }
                    if values.len() < IN_FLIGHT {
                        next = futures::FutureExt::now_or_never(subscriber.next()).flatten();
                    }
                }
                if values.is_empty() {
                    continue;
                }
                if let Err(error) = local.deliver_batch(values).await {
                    local.report(
                        type_name,
                        0,
                        BridgeError::Publish {
                            subject: subject.clone(),
                            reason: format!("not sent on the local relay: {error}"),
                        },
                    );
                }
            }
        };
        let local = self.shared.local.clone();
        if let Err(error) = self
            .tasks
            .spawn(&local, std::any::type_name::<T>(), 0, importer)
        {
            self.tasks.names.release(mode, true, &key);
            return Err(error);
        }
        match ready_rx.await {
            Ok(result) => result,
            Err(_) => {
                // The task was dropped before it subscribed (the runtime stopped).
                self.tasks.names.release(mode, true, &key);
                Err(BridgeError::Closed)
            }
        }
    }
}

/// Waits until the server has processed everything this client sent before: a message
/// to itself, which the server delivers only after the commands before it (it handles one
/// connection's commands in order). A flush is not enough: it only writes them to the
/// socket, and a publication from another connection could still overtake a subscription.
async fn round_trip(client: &async_nats::Client, wait: Duration) -> Result<(), String> {
    // Its own message on a fresh inbox, which only this subscription can receive: no
    // need for the server's "no responders" (headers support), and nobody else's
    // subscription (a `>` tap) can change the answer.
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(wait, probe.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(String::from(
            "the connection closed before the server confirmed the subscription",
        )),
        Err(_) => Err(format!(
            "the server did not confirm the subscription within {wait:?}"
        )),
    }
}

/// What a tracked import does with one message from the engine: it ends as imported,
/// an echo, or a reported failure (each counted), and it is answered.
async fn import_one<T: Any + Send + Sync>(
    shared: &Shared,
    codec: &dyn Codec<T>,
    name: &str,
    subject: &str,
    message: async_nats::Message,
) {
    let local = &shared.local;
    let type_name = std::any::type_name::<T>();
    let decoded = local.decode(codec, name, subject, &message.payload);
    let Some(reply) = message.reply else {
        // Counted as failed in whether it decoded or not: nobody can be answered.
        if let Ok(Some(_)) | Ok(None) = decoded {
            local.failed_in();
        }
        let reason = match decoded {
            Err(error) => format!("a tracked message without a reply subject ({error})"),
            Ok(_) => String::from("a tracked message without a reply subject"),
        };
        let subject = subject.to_owned();
        local.report(type_name, 0, BridgeError::Decode { subject, reason });
        return;
    };
    let refuse = |errors: Vec<String>| Outcome {
        relay_id: local.wire_id,
        handled: 0,
        errors,
    };
    let (msg_id, outcome) = match decoded {
        Ok(Some(received)) => {
            let msg_id = received.msg_id;
            let outcome = match local.deliver(received.value, true).await {
                Ok(receipt) => Outcome {
                    relay_id: local.wire_id,
                    handled: u32::try_from(receipt.handled).unwrap_or(u32::MAX),
                    errors: Vec::new(),
                },
                Err(error) => refuse(crate::bridge::error_texts(&error)),
            };
            (msg_id, outcome)
        }
        Ok(None) => (
            0,
            refuse(vec![String::from(
                "refused: the message came back to the relay that sent it",
            )]),
        ),
        Err(error) => {
            let text = error.to_string();
            local.report(type_name, 0, error);
            (0, refuse(vec![text]))
        }
    };
    let frame = crate::bridge::reply_frame(local.wire_id, msg_id, name, outcome, shared.limit());
    if let Err(e) = shared.client.publish(reply, frame.into()).await {
        local.report(
            type_name,
            msg_id,
            BridgeError::Publish {
                subject: subject.to_owned(),
                reason: format!("the answer was not sent: {e}"),
            },
        );
    }
}

/// The outcome in a reply frame, or why it is not one.
fn outcome_of(bytes: &[u8]) -> Result<Outcome, String> {
    let frame = crate::bridge::Frame::decode(bytes).map_err(|e| e.to_string())?;
    if frame.kind != FrameKind::Reply {
        return Err(String::from("the answer is not a reply frame"));
    }
    Outcome::decode(frame.payload).map_err(|e| e.to_string())
}

/// How many tracked requests one export has out at once.
const IN_FLIGHT: usize = 64;

/// A tracked message waiting for its remote answer. Dropped unanswered (the bridge shut
/// down, its runtime stopped) it fails with [`BridgeError::Abandoned`]: the request may
/// have been processed, so the outcome is unknown, not "not processed".
struct Answer<T: Any + Send + Sync> {
    tracked: Option<crate::Tracked<T>>,
    subject: String,
}

impl<T: Any + Send + Sync> Answer<T> {
    fn complete(mut self) {
        if let Some(tracked) = self.tracked.take() {
            tracked.complete();
        }
    }

    fn fail(mut self, error: BridgeError) {
        if let Some(tracked) = self.tracked.take() {
            tracked.fail(error);
        }
    }
}

impl<T: Any + Send + Sync> Drop for Answer<T> {
    fn drop(&mut self) {
        if let Some(tracked) = self.tracked.take() {
            tracked.fail(BridgeError::Abandoned {
                subject: std::mem::take(&mut self.subject),
            });
        }
    }
}

/// One tracked request and what its answer means for the local send.
async fn request<T: Any + Send + Sync>(
    shared: Arc<Shared>,
    subject: String,
    frame: Vec<u8>,
    answer: Answer<T>,
) {
    let local = &shared.local;
    let request = async_nats::Request::new()
        .payload(frame.into())
        .timeout(Some(shared.request_timeout));
    match shared.client.send_request(subject.clone(), request).await {
        Ok(reply) => {
            local.exported();
            match outcome_of(&reply.payload) {
                Ok(outcome) if outcome.errors.is_empty() => answer.complete(),
                Ok(outcome) => {
                    local.remote_failed();
                    answer.fail(BridgeError::Remote {
                        relay: outcome.relay_id,
                        errors: outcome.errors,
                    });
                }
                Err(reason) => {
                    local.remote_failed();
                    answer.fail(BridgeError::Decode { subject, reason });
                }
            }
        }
        Err(e) => {
            use async_nats::RequestErrorKind as Kind;
            let error = match e.kind() {
                Kind::NoResponders => {
                    local.exported();
                    local.remote_failed();
                    BridgeError::NoResponders { subject }
                }
                Kind::TimedOut => {
                    local.exported();
                    local.remote_failed();
                    BridgeError::Timeout {
                        subject,
                        after: shared.request_timeout,
                    }
                }
                // The client lost the request or its answer (the connection ended): it may
                // have been processed, so the outcome is unknown.
                Kind::Other => {
                    local.exported();
                    local.remote_failed();
                    BridgeError::Abandoned { subject }
                }
            };
            answer.fail(error);
        }
    }
}
