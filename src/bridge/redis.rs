//! The Redis bridge (feature `redis`, on the `redis` crate).
//!
//! # Keys and modes
//!
//! | method | key | Redis | guarantee |
//! |---|---|---|---|
//! | [`export`](RedisBridge::export) / [`import`](RedisBridge::import) | channel `{prefix}:msg:{name}` | `PUBLISH` / `SUBSCRIBE` | at most once, to every importer subscribed at the time |
//! | [`export_stream`](RedisBridge::export_stream) / [`import_stream`](RedisBridge::import_stream) | stream `{prefix}:stream:{name}` | `XADD` / `XREADGROUP`, `XACK`, `XAUTOCLAIM` | at least once to each consumer group, across restarts of either side and of the server; duplicates possible |
//!
//! **Streams.** An export appends each local message to the stream, and retries while
//! the server is unreachable: the messages wait in the export's queue (a lossless relay
//! then holds its senders back), nothing is dropped. An import reads as one consumer of a
//! consumer group, sends each entry on the local relay, waits for the relay's tracked
//! handlers, and only then acknowledges it (`XACK`). An entry taken and not acknowledged
//! (the process stopped, the relay closed, the connection broke) is delivered again: to
//! this consumer when it reads its pending entries at start, or to another consumer of
//! the group, which claims entries left pending longer than
//! [`claim_after`](RedisBridgeBuilder::claim_after). So a handler can see a message twice;
//! [`import_stream_entries`](RedisBridge::import_stream_entries) delivers each value in a
//! [`StreamEntry`] that says which message it is, to drop duplicates by.
//!
//! # Runtime
//!
//! The client runs on smol's reactor (`async-io`, with a thread of its own), which works
//! under any executor, tokio's included; so does everything the bridge waits on. That is
//! why the client's tokio support is not used: its connections could only reconnect
//! inside the runtime that made them. (If another crate of the build turns on the
//! client's `tokio-comp`, the client picks tokio inside a tokio runtime by itself; then
//! connect and register inside the runtime the relay's tasks run on.) The bridge's own tasks are the relay's tasks: they run on the spawner the
//! relay picks for a task registered where `export`/`import` is called (SEMANTICS.md
//! §10), and one that vanishes while the relay is open (its runtime shut down) is
//! reported as a [`HandlerLost`](crate::HandlerLost) of kind
//! [`HandlerKind::Bridge`].

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{AbortHandle, Abortable, Either};
use futures::{FutureExt, StreamExt};
use redis::Value;

pub use crate::bridge::StreamEntry;
use crate::bridge::{
    check_name, longer, BridgeError, BridgeStats, Codec, Handled, Holding, Local, Mode, Names,
    Postcard, Received, RETRY_FIRST,
};
use crate::core::lost::{Guarded, Identity};
use crate::core::Core;
use crate::relay::envelope::Envelope;
use crate::relay::error::HandlerKind;
use crate::relay::receiver::RelayReceiver;
use crate::EnvelopeSubscription;

/// Redis's largest bulk string by default (`proto-max-bulk-len`, 512 MiB): the limit
/// when the server does not say its own.
const LIMIT: usize = 512 * 1024 * 1024;

/// How many messages an export sends, or an import reads, in one round trip.
const BATCH: usize = 64;

/// How long one `XREADGROUP` blocks at the server.
const BLOCK: Duration = Duration::from_secs(2);

/// The stream entry field that holds the frame.
const FIELD: &str = "f";

/// Configures a [`RedisBridge`] before it connects.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
/// use std::time::Duration;
/// use pipedream_rs::bridge::redis::RedisBridge;
/// let (_tx, rx) = pipedream_rs::Relay::channel();
/// let bridge = RedisBridge::builder("redis://127.0.0.1:6379")
///     .prefix("shop")
///     .consumer("worker-1")
///     .claim_after(Duration::from_secs(10))
///     .connect(&rx)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct RedisBridgeBuilder {
    url: String,
    prefix: String,
    consumer: Option<String>,
    claim_after: Duration,
    response_timeout: Duration,
    max_len: Option<usize>,
}

impl RedisBridgeBuilder {
    /// The first part of every key (default `"pipedream"`), so that several applications
    /// can share one server. Checked as a wire name at `connect`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379").prefix("shop");
    /// # drop(b);
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This bridge's consumer name in the consumer groups it reads streams in (default:
    /// its wire id in hex, new in every process). A name that stays the same across
    /// restarts lets the restarted process take back its own unacknowledged entries at
    /// once, instead of after [`claim_after`](Self::claim_after). Two live bridges must
    /// not share one. Checked as a wire name at `connect`.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379")
    ///     .consumer("billing-1");
    /// # drop(b);
    /// ```
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// How long an entry may stay unacknowledged with another consumer of the group
    /// before this bridge claims it and delivers it again (default 30 s). Shorter
    /// recovers faster from a stopped consumer, and redelivers more of a slow one's
    /// entries (duplicates).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379")
    ///     .claim_after(Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.claim_after = idle;
        self
    }

    /// How long one command may wait for the server's answer (default 5 s). A stream
    /// command that times out is retried (its entry may then be appended twice).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379")
    ///     .response_timeout(Duration::from_secs(1));
    /// # drop(b);
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trims each exported stream to about `len` entries (`XADD MAXLEN ~`; default: never
    /// trimmed). Entries trimmed before a group read them are lost to it: size it above
    /// what the slowest group may fall behind.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379")
    ///     .max_len(1_000_000);
    /// # drop(b);
    /// ```
    pub fn max_len(mut self, len: usize) -> Self {
        self.max_len = Some(len);
        self
    }

    /// Connects, and attaches the bridge to `rx`'s relay (held weakly: the bridge never
    /// keeps the relay open).
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`] for a bad prefix or consumer name,
    /// [`BridgeError::Closed`] if the relay is closed, [`BridgeError::Connect`] for a bad
    /// URL or a server that cannot be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let bridge = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379")
    ///     .connect(&rx)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self, rx: &RelayReceiver) -> Result<RedisBridge, BridgeError> {
        check_name(&self.prefix)?;
        if let Some(consumer) = &self.consumer {
            check_name(consumer)?;
        }
        if rx.is_closed() {
            return Err(BridgeError::Closed);
        }
        let client = redis::Client::open(self.url.as_str())
            .map_err(|e| BridgeError::Connect(e.to_string()))?;
        let mut commands = manager(&client, self.response_timeout).await?;
        let limit = max_bulk_len(&mut commands).await;
        let local = Arc::new(Local::new(rx));
        let consumer = self
            .consumer
            .unwrap_or_else(|| format!("{:x}", local.wire_id));
        Ok(RedisBridge {
            shared: Arc::new(Shared {
                client,
                commands,
                local,
                prefix: self.prefix,
                consumer,
                claim_after: self.claim_after,
                response_timeout: self.response_timeout,
                max_len: self.max_len,
                limit,
                tasks: rx.tasks.clone(),
                config: rx.config.clone(),
            }),
            registry: Arc::new(Registry::default()),
        })
    }
}

/// A connection that reconnects by itself (each command fails while it is down).
async fn manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<redis::aio::ConnectionManager, BridgeError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(timeout))
        .set_number_of_retries(1);
    redis::aio::ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| BridgeError::Connect(e.to_string()))
}

/// The server's `proto-max-bulk-len`, or Redis's default if it does not say (a managed
/// server may refuse `CONFIG`).
async fn max_bulk_len(conn: &mut redis::aio::ConnectionManager) -> usize {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("proto-max-bulk-len")
        .query_async(conn)
        .await;
    match reply.as_deref() {
        Ok([_, value]) => value.parse().unwrap_or(LIMIT),
        _ => LIMIT,
    }
}

/// What the bridge's tasks share.
struct Shared {
    client: redis::Client,
    /// The connection exports publish and append on.
    commands: redis::aio::ConnectionManager,
    local: Arc<Local>,
    prefix: String,
    consumer: String,
    claim_after: Duration,
    response_timeout: Duration,
    max_len: Option<usize>,
    /// The largest frame the server takes (its `proto-max-bulk-len`).
    limit: usize,
    /// The relay's task counter and configuration: the bridge's tasks are the relay's.
    tasks: Arc<crate::core::tasks::Tasks>,
    config: crate::relay::config::Config,
}

impl Shared {
    fn channel(&self, name: &str) -> String {
        format!("{}:msg:{name}", self.prefix)
    }

    fn stream(&self, name: &str) -> String {
        format!("{}:stream:{name}", self.prefix)
    }
}

/// The bridge's registrations and the handles that stop its tasks when the last
/// [`RedisBridge`] goes.
#[derive(Default)]
struct Registry {
    aborts: Mutex<Vec<AbortHandle>>,
    names: Names,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let aborts = self.aborts.get_mut().unwrap_or_else(|e| e.into_inner());
        for abort in aborts.drain(..) {
            abort.abort();
        }
    }
}

/// A bridge between one relay and a Redis server (see the module docs).
///
/// Cloning gives another handle to the same bridge; the bridge stops (its subscriptions
/// end, its exports stop) when the last handle is dropped or the relay closes.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64 }
/// let (tx, rx) = pipedream_rs::Relay::channel();
/// let bridge = pipedream_rs::bridge::redis::RedisBridge::connect("redis://127.0.0.1:6379", &rx).await?;
/// bridge.export_stream::<Order>("shop.order")?; // local Orders are appended, retried
///
/// let (_far_tx, far_rx) = pipedream_rs::Relay::channel();
/// let far = pipedream_rs::bridge::redis::RedisBridge::connect("redis://127.0.0.1:6379", &far_rx).await?;
/// far_rx.sink::<Order>(|o: &Order| println!("billing order {}", o.id));
/// far.import_stream::<Order>("shop.order", "billing").await?; // acknowledged after the sink
/// # drop(tx);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBridge {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for RedisBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBridge")
            .field("relay_id", &self.shared.local.relay_id)
            .field("wire_id", &format_args!("{:#x}", self.shared.local.wire_id))
            .field("prefix", &self.shared.prefix)
            .field("consumer", &self.shared.consumer)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RedisBridge {
    /// A builder, to set the key prefix, the consumer name and the timeouts.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = pipedream_rs::bridge::redis::RedisBridge::builder("redis://127.0.0.1:6379");
    /// # drop(b);
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisBridgeBuilder {
        RedisBridgeBuilder {
            url: url.into(),
            prefix: String::from("pipedream"),
            consumer: None,
            claim_after: Duration::from_secs(30),
            response_timeout: Duration::from_secs(5),
            max_len: None,
        }
    }

    /// Connects with the default settings (see [`RedisBridgeBuilder::connect`]).
    ///
    /// # Errors
    ///
    /// As [`RedisBridgeBuilder::connect`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// let (_tx, rx) = pipedream_rs::Relay::channel();
    /// let bridge = pipedream_rs::bridge::redis::RedisBridge::connect("redis://127.0.0.1:6379", &rx).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        url: impl Into<String>,
        rx: &RelayReceiver,
    ) -> Result<RedisBridge, BridgeError> {
        RedisBridge::builder(url).connect(rx).await
    }

    /// What the bridge has done so far.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) {
    /// let stats = bridge.stats();
    /// println!("{} out, {} in, {} again", stats.exported, stats.imported, stats.redelivered);
    /// # }
    /// ```
    pub fn stats(&self) -> BridgeStats {
        self.shared.local.counters.snapshot()
    }

    /// The local relay's id on the wire: what [`StreamEntry::origin`] says for its messages.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) {
    /// println!("{:#x}", bridge.wire_id());
    /// # }
    /// ```
    pub fn wire_id(&self) -> u64 {
        self.shared.local.wire_id
    }

    /// Exports `T` as `name` over pub/sub with the default codec ([`Postcard`]): every
    /// `T` sent on the local relay from now on is published (at most once). Messages
    /// this or any bridge imported are not exported. While the server is unreachable
    /// each message is reported [`Dropped`](crate::Dropped) (and the outage once).
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`], [`BridgeError::AlreadyBridged`], or
    /// [`BridgeError::Closed`] if the relay is closed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
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
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_with::<u64>("ticks", pipedream_rs::bridge::Postcard)?;
    /// # Ok(()) }
    /// ```
    pub fn export_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        self.start_export(Mode::Plain, name, codec)
    }

    /// Exports `T` as `name` to a stream with the default codec: every `T` sent on the
    /// local relay from now on is appended (`XADD`), and an append that fails because
    /// the server is unreachable (or times out) is retried until it succeeds, the
    /// messages behind it waiting in the export's queue. The outage is reported once as a
    /// [`BridgeError::Retrying`]. A message the server refuses for good (a key of another
    /// type) is reported `Dropped`. Only when the bridge's last handle is dropped are the
    /// messages it still holds given up, each reported `Dropped`.
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_stream::<String>("audit.line")?;
    /// # Ok(()) }
    /// ```
    pub fn export_stream<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.export_stream_with::<T>(name, Postcard)
    }

    /// As [`export_stream`](Self::export_stream), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_stream_with::<u64>("ticks", pipedream_rs::bridge::Postcard)?;
    /// # Ok(()) }
    /// ```
    pub fn export_stream_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        self.start_export(Mode::Stream, name, codec)
    }

    /// Imports `T` as `name` over pub/sub with the default codec: every message
    /// published under that name (by another relay) is sent on the local relay, as an
    /// imported message. The subscription is in place at the server when this returns. If
    /// the connection breaks, the subscription is renewed, and the gap is reported as a
    /// [`BridgeError::Interrupted`]: what was published meanwhile is lost.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`], [`BridgeError::AlreadyBridged`],
    /// [`BridgeError::Connect`] if the subscription cannot be made, or
    /// [`BridgeError::Closed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
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
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_with::<u64>("ticks", pipedream_rs::bridge::Postcard).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let claim = self.registry.names.claim(Mode::Plain, true, name)?;
        let core = self.core()?;
        let shared = self.shared.clone();
        let channel = shared.channel(name);
        let pubsub = subscribe(&shared.client, &channel)
            .await
            .map_err(|e| BridgeError::Connect(e.to_string()))?;
        let name = name.to_owned();
        let importer = pubsub_import(shared, codec, name, channel, core, pubsub);
        self.spawn(std::any::type_name::<T>(), 0, importer);
        claim.keep();
        Ok(())
    }

    /// Imports `T` as `name` from a stream, as a consumer of `group`, with the default
    /// codec. Each entry is sent on the local relay (as an imported message), the bridge
    /// waits for the relay's tracked handlers (`sink`, `tap`, tracked subscriptions), and
    /// then acknowledges it, whether they succeeded or failed (their failures are the
    /// relay's `RelayError`s, as for any send; a failing handler does not make an entry
    /// come back forever). So at least once holds for tracked handlers; a plain
    /// subscription's entry is acknowledged once it is queued there. An entry nobody on
    /// the relay takes (unrouted) is not acknowledged: it waits in the stream, read again
    /// until a subscriber comes (reported once as [`BridgeError::Retrying`]). A relay
    /// cannot export and import one stream on one bridge (`AlreadyBridged`): it would
    /// skip its own entries for the whole group. Entries are
    /// delivered one at a time, in stream order, except that redelivered ones (see the
    /// module docs) come first. The group is created if it does not exist, reading from
    /// the entries appended after that moment; when this returns it exists, so every
    /// entry appended from then on reaches the group.
    ///
    /// Each group gets every entry, and within one group each entry goes to one of its
    /// consumers: several relays importing with one group share the work.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import) (and [`BridgeError::InvalidName`] for the group).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_stream::<String>("audit.line", "archiver").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_stream<T>(&self, name: &str, group: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.import_stream_with::<T>(name, group, Postcard).await
    }

    /// As [`import_stream`](Self::import_stream), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`import_stream`](Self::import_stream).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_stream_with::<u64>("ticks", "counter", pipedream_rs::bridge::Postcard).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_stream_with<T>(
        &self,
        name: &str,
        group: &str,
        codec: impl Codec<T>,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        self.start_stream_import(name, group, codec, |received, _, _| received.value)
            .await
    }

    /// As [`import_stream`](Self::import_stream), but each value is sent on the local
    /// relay as a [`StreamEntry<T>`], which identifies the message (to drop duplicates)
    /// and says whether the entry was delivered before. Subscribe to `StreamEntry<T>`,
    /// not `T`.
    ///
    /// # Errors
    ///
    /// As [`import_stream`](Self::import_stream).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::redis::RedisBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_stream_entries::<String>("audit.line", "archiver").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_stream_entries<T>(&self, name: &str, group: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.start_stream_import::<T, StreamEntry<T>>(name, group, Postcard, StreamEntry::of)
            .await
    }

    /// The relay's core, if it is still open.
    fn core(&self) -> Result<Arc<Core>, BridgeError> {
        match self.shared.local.core.upgrade() {
            Some(core) if !core.is_closed() => Ok(core),
            _ => Err(BridgeError::Closed),
        }
    }

    /// Runs `task` as one of the relay's tasks (reported lost if it vanishes while the
    /// relay is open), stopped when the bridge's last handle goes.
    fn spawn(
        &self,
        type_name: &'static str,
        subscriber_id: u64,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let (abort, registration) = AbortHandle::new_pair();
        let who = Identity {
            core: self.shared.local.core.clone(),
            subscriber_id,
            kind: HandlerKind::Bridge,
            type_name,
            abort: Some(abort.clone()),
        };
        self.registry
            .aborts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(abort);
        let task = async move {
            let _ = Abortable::new(task, registration).await;
        };
        let spawner = self.shared.config.spawner.here();
        self.shared.tasks.spawn(&*spawner, Guarded::new(who, task));
    }

    fn start_export<T>(
        &self,
        mode: Mode,
        name: &str,
        codec: impl Codec<T>,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let claim = self.registry.names.claim(mode, false, name)?;
        let core = self.core()?;
        let sub = EnvelopeSubscription::typed::<T>(&Arc::downgrade(&core));
        drop(core);
        let id = sub.id();
        let exporter = export(self.shared.clone(), mode, sub, codec, name.to_owned());
        self.spawn(std::any::type_name::<T>(), id, exporter);
        claim.keep();
        Ok(())
    }

    async fn start_stream_import<T, U>(
        &self,
        name: &str,
        group: &str,
        codec: impl Codec<T>,
        wrap: fn(Received<T>, &str, bool) -> U,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
        U: Any + Send + Sync,
    {
        check_name(group)?;
        let claim = self.registry.names.claim(Mode::Stream, true, name)?;
        let core = self.core()?;
        let shared = self.shared.clone();
        let key = shared.stream(name);
        // A connection of its own: `XREADGROUP BLOCK` holds it while it waits.
        let mut reader = manager(&shared.client, BLOCK + shared.response_timeout).await?;
        create_group(&mut reader, &key, group, "$")
            .await
            .map_err(|e| BridgeError::Connect(e.to_string()))?;
        let importer = StreamImport {
            shared,
            codec,
            wrap,
            name: name.to_owned(),
            key,
            group: group.to_owned(),
            reader,
            waiting: HashSet::new(),
        }
        .run(core);
        self.spawn(std::any::type_name::<U>(), 0, importer);
        claim.keep();
        Ok(())
    }
}

/// Sleeps on any executor.
async fn pause(wait: Duration) {
    async_io::Timer::after(wait).await;
}

/// Whether a failed command may succeed if tried again: a connection failure, a timeout,
/// or a server state that passes (`LOADING`, `BUSY`, `OOM`, `MISCONF`, `TRYAGAIN`, …),
/// but not a refusal that depends on the data or the setup (a key of another type, a bad
/// argument, no permission, a cluster node that does not hold the key). The code is read
/// from the server's error itself: the client only names the codes it knows.
fn retryable(error: &redis::RedisError) -> bool {
    let Some(errors) = error.clone().into_server_errors() else {
        return true; // not the server's answer: the connection, or a timeout
    };
    !errors.iter().any(|(_, e)| {
        matches!(
            e.code(),
            "WRONGTYPE"
                | "ERR"
                | "NOPERM"
                | "NOAUTH"
                | "WRONGPASS"
                | "MOVED"
                | "ASK"
                | "CROSSSLOT"
                | "NOSCRIPT"
                | "EXECABORT"
        )
    })
}

/// One pipeline for `frames`: `PUBLISH`es or `XADD`s, each answered on its own.
fn pipeline(mode: Mode, key: &str, max_len: Option<usize>, frames: &[Vec<u8>]) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for frame in frames {
        match mode {
            // (Redis has no tracked mode: only `Plain` and `Stream` reach here.)
            Mode::Plain | Mode::Tracked => {
                pipe.cmd("PUBLISH").arg(key).arg(frame.as_slice());
            }
            Mode::Stream => {
                pipe.cmd("XADD").arg(key);
                if let Some(len) = max_len {
                    pipe.arg("MAXLEN").arg("~").arg(len);
                }
                pipe.arg("*").arg(FIELD).arg(frame.as_slice());
            }
        }
    }
    pipe
}

/// A pub/sub connection subscribed to `channel` (the server confirmed it).
async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Creates `group` on the stream at `key` (and the stream), starting at `start`; a group
/// that exists already is left as it is.
async fn create_group(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    group: &str,
    start: &str,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// An export's task: takes up to [`BATCH`] messages at a time, encodes them, and sends
/// them in one pipeline (`PUBLISH` or `XADD`).
async fn export<T: Any + Send + Sync>(
    shared: Arc<Shared>,
    mode: Mode,
    mut sub: EnvelopeSubscription,
    codec: impl Codec<T>,
    name: String,
) {
    let local = shared.local.clone();
    let key = match mode {
        Mode::Plain | Mode::Tracked => shared.channel(&name),
        Mode::Stream => shared.stream(&name),
    };
    let type_name = std::any::type_name::<T>();
    let mut conn = shared.commands.clone();
    let mut holding = Holding {
        local: local.clone(),
        subscriber_id: sub.id(),
        envelopes: Vec::with_capacity(BATCH),
    };
    let mut frames = Vec::with_capacity(BATCH);
    let mut troubled = false;
    while let Some(first) = sub.recv().await {
        let mut next = Some(first);
        while let Some(envelope) = next.take() {
            if Local::came_from_engine(&envelope) {
                local.skipped();
            } else if let Some(value) = envelope.downcast::<T>() {
                match local.encode(
                    &codec,
                    &name,
                    &key,
                    envelope.msg_id(),
                    &*value,
                    shared.limit,
                ) {
                    Ok(frame) => {
                        frames.push(frame);
                        holding.envelopes.push(envelope);
                    }
                    Err(error) => local.report(type_name, envelope.msg_id(), error),
                }
            }
            if frames.len() < BATCH {
                next = sub.try_recv().ok();
            }
        }
        if frames.is_empty() {
            continue;
        }
        let mut wait = RETRY_FIRST;
        while !frames.is_empty() {
            let pipe = pipeline(mode, &key, shared.max_len, &frames);
            let sent: redis::RedisResult<Vec<redis::RedisResult<Value>>> =
                pipe.query_async(&mut conn).await;
            // Each message's fate: sent, retried (a stream's append that may pass), or
            // dropped (pub/sub is at most once; a refused append would be refused again).
            let mut failure = None;
            let mut kept = (Vec::new(), Vec::new());
            match sent {
                Ok(results) if results.len() == frames.len() => {
                    let messages = holding.envelopes.drain(..).zip(frames.drain(..));
                    for ((envelope, frame), result) in messages.zip(results) {
                        match result {
                            Ok(_) => local.exported(),
                            Err(error) if mode == Mode::Stream && retryable(&error) => {
                                failure.get_or_insert((true, error));
                                kept.0.push(envelope);
                                kept.1.push(frame);
                            }
                            Err(error) => {
                                local.dropped(&envelope, sub.id());
                                let msg_id = envelope.msg_id();
                                let (subject, reason) = (key.clone(), error.to_string());
                                local.report(
                                    type_name,
                                    msg_id,
                                    BridgeError::Publish { subject, reason },
                                );
                            }
                        }
                    }
                }
                // The whole pipeline failed (the connection), or its answer does not fit.
                Ok(_) => {
                    let error = redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "the server answered a pipeline with the wrong number of replies",
                    ));
                    failure = Some((mode == Mode::Stream, error));
                    kept = (
                        std::mem::take(&mut holding.envelopes),
                        std::mem::take(&mut frames),
                    );
                }
                Err(error) => {
                    failure = Some((mode == Mode::Stream && retryable(&error), error));
                    kept = (
                        std::mem::take(&mut holding.envelopes),
                        std::mem::take(&mut frames),
                    );
                }
            }
            let Some((retry, error)) = failure else {
                troubled = false;
                break;
            };
            let msg_id = kept.0.first().map_or(0, Envelope::msg_id);
            if retry {
                (holding.envelopes, frames) = kept;
                if !std::mem::replace(&mut troubled, true) {
                    let reason = format!("appending failed: {error}");
                    let subject = key.clone();
                    local.report(type_name, msg_id, BridgeError::Retrying { subject, reason });
                }
                pause(wait).await;
                wait = longer(wait);
                continue;
            }
            for envelope in kept.0 {
                local.dropped(&envelope, sub.id());
            }
            // Pub/sub: the outage once; a stream: every refusal.
            if mode == Mode::Stream || !std::mem::replace(&mut troubled, true) {
                let (subject, reason) = (key.clone(), error.to_string());
                local.report(type_name, msg_id, BridgeError::Publish { subject, reason });
            }
            break;
        }
        frames.clear();
        // Nothing is held between batches (a dropped, refused message was reported).
        debug_assert!(holding.envelopes.is_empty());
    }
}

/// A pub/sub import's task: delivers what the subscription receives, and renews it when
/// it ends while the relay is open (reporting the gap).
async fn pubsub_import<T: Any + Send + Sync>(
    shared: Arc<Shared>,
    codec: impl Codec<T>,
    name: String,
    channel: String,
    core: Arc<Core>,
    pubsub: redis::aio::PubSub,
) {
    let local = &shared.local;
    let type_name = std::any::type_name::<T>();
    let mut closed = std::pin::pin!(core.wait_closed());
    let mut messages = pubsub.into_on_message();
    // A subscription that ends soon after it was renewed backs off further (a server that
    // accepts and drops at once is not hammered).
    let mut renewed_at = Instant::now();
    let mut wait = RETRY_FIRST;
    loop {
        let next = std::pin::pin!(messages.next());
        let message = match futures::future::select(next, closed.as_mut()).await {
            Either::Left((Some(message), _)) => message,
            Either::Left((None, _)) => {
                // The connection ended (or the server disconnected this subscriber).
                let reason = String::from("the connection ended");
                let subject = channel.clone();
                local.report(type_name, 0, BridgeError::Interrupted { subject, reason });
                if renewed_at.elapsed() > Duration::from_secs(10) {
                    wait = RETRY_FIRST;
                } else {
                    let paused = std::pin::pin!(pause(wait));
                    if let Either::Right(_) = futures::future::select(paused, closed.as_mut()).await
                    {
                        return;
                    }
                    wait = longer(wait);
                }
                let renewed = async {
                    loop {
                        match subscribe(&shared.client, &channel).await {
                            Ok(pubsub) => return pubsub.into_on_message(),
                            Err(_) => {
                                pause(wait).await;
                                wait = longer(wait);
                            }
                        }
                    }
                };
                let renewed = std::pin::pin!(renewed);
                match futures::future::select(renewed, closed.as_mut()).await {
                    Either::Left((stream, _)) => {
                        messages = stream;
                        renewed_at = Instant::now();
                    }
                    Either::Right(_) => return,
                }
                continue;
            }
            Either::Right(_) => return,
        };
        // What else has arrived goes with it, as one batch on the relay (an ended
        // subscription is seen at the next turn: it keeps saying so).
        let mut values = Vec::new();
        let mut next = Some(message);
        while let Some(message) = next.take() {
            match local.decode(&codec, &name, &channel, message.get_payload_bytes()) {
                Ok(Some(received)) => values.push(received.value),
                Ok(None) => {}
                Err(error) => local.report(type_name, 0, error),
            }
            if values.len() < BATCH {
                next = messages.next().now_or_never().flatten();
            }
        }
        if values.is_empty() {
            continue;
        }
        if let Err(error) = local.deliver_batch(values).await {
            let reason = format!("not sent on the local relay: {error}");
            let subject = channel.clone();
            local.report(type_name, 0, BridgeError::Publish { subject, reason });
        }
    }
}

/// A stream import's task and what it reads with.
struct StreamImport<T, U, C> {
    shared: Arc<Shared>,
    codec: C,
    wrap: fn(Received<T>, &str, bool) -> U,
    name: String,
    key: String,
    group: String,
    /// A connection of its own (it blocks in `XREADGROUP`).
    reader: redis::aio::ConnectionManager,
    /// Entries left pending because nobody on the relay took them: read again as this
    /// consumer's own, they are not redeliveries (nobody received them).
    waiting: HashSet<String>,
}

/// One stream entry as read. The reply is walked by hand, not parsed into the client's
/// stream types: those need UTF-8 field names, and one foreign entry that fails to parse
/// would stay pending for ever, blocking every read after it.
#[derive(Debug)]
struct Entry {
    id: String,
    /// Its fields, or `None` for a pending entry the stream no longer holds.
    fields: Option<Vec<(Value, Value)>>,
}

impl Entry {
    /// The frame: the bytes of the field [`FIELD`].
    fn frame(&self) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find_map(|(name, value)| match (name, value) {
                (Value::BulkString(name), Value::BulkString(bytes)) if name == FIELD.as_bytes() => {
                    Some(bytes.as_slice())
                }
                _ => None,
            })
    }

    fn text(value: &Value) -> Option<String> {
        match value {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            Value::SimpleString(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// `[[id, [field, value, ...] | nil], ...]`; an item without an id is left out.
    fn list(value: Value) -> Vec<Entry> {
        let Value::Array(items) = value else {
            return Vec::new();
        };
        let mut entries = Vec::with_capacity(items.len());
        for item in items {
            let Value::Array(mut pair) = item else {
                continue;
            };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop();
            let Some(id) = Entry::text(&pair[0]) else {
                continue;
            };
            let fields = match fields {
                Some(Value::Array(flat)) => {
                    let mut fields = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        fields.push((name, value));
                    }
                    Some(fields)
                }
                Some(Value::Map(pairs)) => Some(pairs),
                _ => None,
            };
            entries.push(Entry { id, fields });
        }
        entries
    }

    /// An `XREADGROUP` reply: nil, or `[[key, entries], ...]` (a map under RESP3).
    fn of_read(reply: Value) -> Vec<Entry> {
        let streams = match reply {
            Value::Array(streams) => streams
                .into_iter()
                .filter_map(|stream| match stream {
                    Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                    _ => None,
                })
                .collect(),
            Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
            _ => Vec::new(),
        };
        streams.into_iter().flat_map(Entry::list).collect()
    }

    /// An `XAUTOCLAIM` reply: `[next cursor, entries, deleted ids]`.
    fn of_autoclaim(reply: Value) -> (String, Vec<Entry>, Vec<String>) {
        let Value::Array(parts) = reply else {
            return (String::from("0-0"), Vec::new(), Vec::new());
        };
        let mut parts = parts.into_iter();
        let next = parts
            .next()
            .and_then(|v| Entry::text(&v))
            .unwrap_or_else(|| String::from("0-0"));
        let claimed = parts.next().map(Entry::list).unwrap_or_default();
        let deleted = match parts.next() {
            Some(Value::Array(ids)) => ids.iter().filter_map(Entry::text).collect(),
            _ => Vec::new(),
        };
        (next, claimed, deleted)
    }
}

/// What one read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// This consumer's own entries, taken before and not acknowledged (at start, and
    /// after a failure).
    Own,
    /// Entries another consumer has left pending too long, from this cursor on.
    Claim,
    /// New entries (blocks at the server for a while).
    New,
}

impl<T, U, C> StreamImport<T, U, C>
where
    T: Any + Send + Sync,
    U: Any + Send + Sync,
    C: Codec<T>,
{
    async fn run(mut self, core: Arc<Core>) {
        let mut closed = std::pin::pin!(core.wait_closed());
        let type_name = std::any::type_name::<U>();
        let mut read = Read::Own;
        let mut cursor = String::from("0-0");
        let mut claimed_at: Option<Instant> = None;
        // Never more often than each second: a claim pass must leave room for new reads.
        let claim_every = (self.shared.claim_after / 2).max(Duration::from_secs(1));
        let mut wait = RETRY_FIRST;
        // What is wrong now, reported once until a read and its acknowledgement succeed.
        let mut trouble: Option<&'static str> = None;
        loop {
            if read == Read::New && claimed_at.is_none_or(|at| at.elapsed() >= claim_every) {
                read = Read::Claim;
            }
            let fetched = {
                let fetch = std::pin::pin!(self.fetch(read, &mut cursor));
                match futures::future::select(fetch, closed.as_mut()).await {
                    Either::Left((fetched, _)) => fetched,
                    Either::Right(_) => return,
                }
            };
            // `Some(why)`: something failed; the entries not acknowledged stay pending and
            // are read again (as this consumer's own) after a pause.
            let mut failed: Option<(&'static str, String)> = None;
            let mut relay_closed = false;
            match fetched {
                Err(error) if error.code() == Some("NOGROUP") => {
                    // The server lost the group (restarted without its data, or it was
                    // deleted): make it again from the stream's start, so no entry it
                    // still holds is skipped.
                    let reason = format!(
                        "the consumer group {} was missing and is created again from the \
                         stream's first entry",
                        self.group
                    );
                    let subject = self.key.clone();
                    let local = &self.shared.local;
                    local.report(type_name, 0, BridgeError::Retrying { subject, reason });
                    let _ = create_group(&mut self.reader, &self.key, &self.group, "0").await;
                    failed = Some(("group", String::new()));
                    trouble = Some("group");
                }
                Err(error) => failed = Some(("read", format!("reading failed: {error}"))),
                Ok(entries) => {
                    let (redelivered, done) = match read {
                        Read::Own => (true, entries.is_empty()),
                        Read::Claim => (true, cursor == "0-0"),
                        Read::New => (false, false),
                    };
                    let mut acks = Vec::with_capacity(entries.len());
                    for entry in &entries {
                        let again = redelivered && !self.waiting.remove(&entry.id);
                        match self.handle(entry, again).await {
                            Handled::Done => acks.push(entry.id.as_str()),
                            Handled::Closed => {
                                relay_closed = true;
                                break;
                            }
                            Handled::Unrouted => {
                                self.waiting.insert(entry.id.clone());
                                let reason = format!(
                                    "no subscriber of {type_name} on the local relay: the \
                                     entries wait in the stream until one comes"
                                );
                                failed = Some(("unrouted", reason));
                                break;
                            }
                        }
                        if again {
                            self.shared.local.redelivered();
                        }
                    }
                    if !acks.is_empty() {
                        let acked: redis::RedisResult<()> = redis::cmd("XACK")
                            .arg(&self.key)
                            .arg(&self.group)
                            .arg(&acks)
                            .query_async(&mut self.reader)
                            .await;
                        if let Err(error) = acked {
                            let reason = format!("acknowledging failed: {error}");
                            failed.get_or_insert(("ack", reason));
                        }
                    }
                    if failed.is_none() {
                        read = match (read, done) {
                            (Read::Own, false) => Read::Own,
                            (Read::Claim, false) => Read::Claim,
                            (Read::Claim, true) => {
                                claimed_at = Some(Instant::now());
                                Read::New
                            }
                            _ => Read::New,
                        };
                    }
                }
            }
            if relay_closed {
                return;
            }
            if failed.is_some() && read == Read::Claim {
                // Not at once again (a server without XAUTOCLAIM would stop every new read).
                claimed_at = Some(Instant::now());
                cursor = String::from("0-0");
            }
            let Some((what, reason)) = failed else {
                trouble = None;
                wait = RETRY_FIRST;
                continue;
            };
            if trouble != Some(what) {
                trouble = Some(what);
                let subject = self.key.clone();
                let local = &self.shared.local;
                local.report(type_name, 0, BridgeError::Retrying { subject, reason });
            }
            let paused = std::pin::pin!(pause(wait));
            if let Either::Right(_) = futures::future::select(paused, closed.as_mut()).await {
                return;
            }
            wait = longer(wait);
            read = Read::Own;
        }
    }

    /// One read: up to [`BATCH`] entries.
    async fn fetch(&mut self, read: Read, cursor: &mut String) -> redis::RedisResult<Vec<Entry>> {
        let shared = &self.shared;
        match read {
            Read::Own | Read::New => {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&self.group)
                    .arg(&shared.consumer)
                    .arg("COUNT")
                    .arg(BATCH);
                if read == Read::New {
                    cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
                }
                let from = if read == Read::New { ">" } else { "0" };
                cmd.arg("STREAMS").arg(&self.key).arg(from);
                let reply: Value = cmd.query_async(&mut self.reader).await?;
                Ok(Entry::of_read(reply))
            }
            Read::Claim => {
                let reply: Value = redis::cmd("XAUTOCLAIM")
                    .arg(&self.key)
                    .arg(&self.group)
                    .arg(&shared.consumer)
                    .arg(shared.claim_after.as_millis() as u64)
                    .arg(cursor.as_str())
                    .arg("COUNT")
                    .arg(BATCH)
                    .query_async(&mut self.reader)
                    .await?;
                let (next, claimed, deleted) = Entry::of_autoclaim(reply);
                *cursor = next;
                let local = &self.shared.local;
                for id in deleted {
                    // Pending, then trimmed away before anyone acknowledged it.
                    local.failed_in();
                    let subject = self.key.clone();
                    let reason = format!(
                        "entry {id} was trimmed from the stream before it was acknowledged: lost"
                    );
                    local.report(
                        std::any::type_name::<U>(),
                        0,
                        BridgeError::Decode { subject, reason },
                    );
                }
                Ok(claimed)
            }
        }
    }

    /// Delivers one entry, and says whether to acknowledge it.
    async fn handle(&self, entry: &Entry, redelivered: bool) -> Handled {
        let local = &self.shared.local;
        let type_name = std::any::type_name::<U>();
        let Some(bytes) = entry.frame() else {
            local.failed_in();
            let subject = self.key.clone();
            let reason = if entry.fields.as_ref().is_none_or(Vec::is_empty) {
                // A pending entry the stream no longer holds.
                format!(
                    "entry {} was trimmed from the stream before it was acknowledged: lost",
                    entry.id
                )
            } else {
                format!("entry {} has no field {FIELD:?} of bytes", entry.id)
            };
            local.report(type_name, 0, BridgeError::Decode { subject, reason });
            return Handled::Done; // it would never decode
        };
        let received = match local.decode(&self.codec, &self.name, &self.key, bytes) {
            Ok(Some(received)) => received,
            Ok(None) => return Handled::Done, // this relay's own message, back from the stream
            Err(error) => {
                local.report(type_name, 0, error);
                return Handled::Done;
            }
        };
        let msg_id = received.msg_id;
        let value = (self.wrap)(received, &entry.id, redelivered);
        local.deliver_entry(value, msg_id, &self.key).await
    }
}
