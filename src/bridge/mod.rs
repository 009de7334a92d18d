//! Bridges: the same typed messages between processes, over an existing message engine
//! (features `nats` and `redis`; the frame, the codec and the rules here are the engine-independent
//! part, for every engine the crate bridges to).
//!
//! A bridge connects one relay to one engine connection. Bridging is per type and per
//! direction, and every bridged type has an explicit, stable **wire name** (a `TypeId`
//! differs between builds):
//!
//! - **export** `T` as `"name"`: every `T` sent on the local relay is encoded with the
//!   type's [`Codec`] and published;
//! - **import** `T` as `"name"`: every message published under that name is decoded and
//!   sent on the local relay.
//!
//! The engine carries opaque bytes: one frame per message, the same for every engine
//! (`bridge/frame.rs`: a version, the sending relay's wire id, the message id, the wire
//! name, then the codec's payload). What each engine and mode guarantees is in
//! SEMANTICS.md §17; in short, publish/subscribe is at most once, and what the bridge knows
//! it lost is reported, never silent.
//!
//! # Echo prevention
//!
//! - A message a bridge imported is sent on the local relay with an origin that marks it
//!   as imported ([`Envelope::origin`] has [`IMPORTED`] set), and
//!   **no bridge exports an imported message**. So `a ↔ engine ↔ b` delivers each message
//!   once per relay, and two bridges on one relay do not pass each other's imports back
//!   and forth. The price: one process does not relay messages from one engine to
//!   another (a gateway); that needs an explicit forwarder of your own.
//! - Every frame carries the wire id of the relay that sent it, and a bridge drops the
//!   frames of its own relay (engines echo a connection's publications to its own
//!   subscriptions). Wire ids are the relay id mixed with a random number drawn once per
//!   process, so two processes collide with a chance of one in 2³².
//!
//! # Failures are events
//!
//! Whatever a bridge cannot deliver is published on its relay, as on any relay: a
//! message it could not publish is a [`Dropped`](crate::Dropped) (counted in
//! [`BridgeStats::dropped`]); a payload that does not decode, a frame of an unknown type
//! name, a payload over the engine's size limit, a remote handler's failure are
//! [`RelayError`]s of kind [`HandlerKind::Bridge`]
//! whose error is a [`BridgeError`] naming the subject and the reason. The bridge keeps
//! running after each.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::core::{Core, From};
use crate::relay::envelope::Envelope;
use crate::relay::error::{HandlerKind, RelayError, SendError};
use crate::relay::receipt::Receipt;

pub mod codec;
mod frame;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;

pub use codec::{Codec, CodecError, Postcard};
pub use frame::FrameError;
pub(crate) use frame::{Frame, FrameKind, Outcome};

/// The bit of [`Envelope::origin`] that marks a message a bridge
/// imported (relay ids never reach it).
///
/// # Examples
///
/// ```
/// let (tx, _rx) = pipedream_rs::Relay::channel();
/// assert_eq!(tx.id() & pipedream_rs::bridge::IMPORTED, 0);
/// ```
pub const IMPORTED: u64 = crate::core::IMPORTED_BIT;

/// Why a bridge refused a registration, or what went wrong with one message.
///
/// Registration errors are returned; per-message errors are published on the relay as
/// the `error` of a [`RelayError`] of kind
/// [`HandlerKind::Bridge`] (and, for a tracked export, handed to
/// the waiting sender).
///
/// # Examples
///
/// ```
/// use pipedream_rs::bridge::BridgeError;
/// let e = BridgeError::Timeout { subject: "pd.req.order".into(), after: std::time::Duration::from_secs(2) };
/// assert!(e.to_string().contains("outcome unknown"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeError {
    /// A wire name or prefix the engines cannot carry (see [`check_name`]).
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This bridge already bridges that name in that direction, or (tracked) in the
    /// other: a relay that exported and imported one name tracked could be handed its own
    /// messages back by the engine.
    AlreadyBridged {
        /// The wire name.
        name: String,
    },
    /// The engine could not be reached, or refused the connection.
    Connect(String),
    /// The relay is closed (or the bridge was shut down).
    Closed,
    /// A payload could not be encoded (nothing was published).
    Encode {
        /// Where it would have gone.
        subject: String,
        /// The codec's reason.
        reason: CodecError,
    },
    /// A received payload could not be decoded (it is skipped).
    Decode {
        /// Where it came from.
        subject: String,
        /// The codec's (or the frame's) reason.
        reason: String,
    },
    /// A received frame names a type this subject's import does not carry (it is skipped).
    UnknownType {
        /// Where it came from.
        subject: String,
        /// The wire name in the frame.
        name: String,
    },
    /// An encoded message is larger than the engine takes (nothing was published).
    TooLarge {
        /// Where it would have gone.
        subject: String,
        /// Its size in bytes, frame included.
        size: usize,
        /// The engine's limit.
        limit: usize,
    },
    /// The engine refused or lost a publication, or the connection is down (the message
    /// is reported `Dropped`).
    Publish {
        /// Where it would have gone.
        subject: String,
        /// The engine's reason.
        reason: String,
    },
    /// The engine dropped messages for a subscription that did not keep up (NATS "slow
    /// consumer"); how many is not known to the client.
    SlowConsumer {
        /// The subscription's subject.
        subject: String,
    },
    /// A subscription was interrupted (the connection broke, or the server disconnected a
    /// subscriber that did not keep up) and is renewed: whatever was published to it
    /// in between is lost, and how much is not known (Redis pub/sub).
    Interrupted {
        /// The subscription's channel.
        subject: String,
        /// What ended it.
        reason: String,
    },
    /// An engine call failed and is retried until it succeeds: nothing is lost, the
    /// messages wait (a Redis stream's export or import while the server is down).
    Retrying {
        /// The stream.
        subject: String,
        /// The engine's reason.
        reason: String,
    },
    /// A tracked message reached no remote relay: nobody imports it as tracked. Never
    /// processed remotely.
    NoResponders {
        /// Where it was sent.
        subject: String,
    },
    /// No answer in time: the **outcome is unknown**. The remote relay may have processed
    /// it, may still, or may never; this is neither success nor "not processed".
    Timeout {
        /// Where it was sent.
        subject: String,
        /// The time waited.
        after: Duration,
    },
    /// The bridge stopped (its last handle dropped, its runtime shut down) while a tracked
    /// message waited for its answer: the **outcome is unknown**, as for a timeout.
    Abandoned {
        /// Where it was sent.
        subject: String,
    },
    /// The remote relay's tracked handlers (or its send) failed.
    Remote {
        /// The remote relay's wire id.
        relay: u64,
        /// What the remote side reported, one text per failure.
        errors: Vec<String>,
    },
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::InvalidName { name, reason } => {
                write!(f, "invalid wire name {name:?}: {reason}")
            }
            BridgeError::AlreadyBridged { name } => {
                write!(f, "{name:?} is already bridged in this direction")
            }
            BridgeError::Connect(reason) => write!(f, "could not connect to the engine: {reason}"),
            BridgeError::Closed => f.write_str("the relay or the bridge is closed"),
            BridgeError::Encode { subject, reason } => {
                write!(f, "could not encode a message for {subject}: {reason}")
            }
            BridgeError::Decode { subject, reason } => {
                write!(f, "could not decode a message from {subject}: {reason}")
            }
            BridgeError::UnknownType { subject, name } => {
                write!(
                    f,
                    "a message from {subject} names type {name:?}, which is not imported there"
                )
            }
            BridgeError::TooLarge {
                subject,
                size,
                limit,
            } => write!(
                f,
                "a message for {subject} is {size} bytes, over the engine's limit of {limit}"
            ),
            BridgeError::Publish { subject, reason } => {
                write!(f, "could not publish to {subject}: {reason}")
            }
            BridgeError::SlowConsumer { subject } => write!(
                f,
                "the engine dropped messages for {subject}: the subscription did not keep up"
            ),
            BridgeError::Interrupted { subject, reason } => write!(
                f,
                "the subscription to {subject} was interrupted ({reason}): what was published \
                 to it until it was renewed is lost"
            ),
            BridgeError::Retrying { subject, reason } => write!(
                f,
                "a call for {subject} failed ({reason}); retrying until it succeeds, nothing is lost"
            ),
            BridgeError::NoResponders { subject } => {
                write!(f, "no remote relay imports {subject} as tracked")
            }
            BridgeError::Timeout { subject, after } => write!(
                f,
                "no answer from {subject} within {after:?}: outcome unknown"
            ),
            BridgeError::Abandoned { subject } => write!(
                f,
                "the bridge stopped while waiting for the answer from {subject}: outcome unknown"
            ),
            BridgeError::Remote { relay, errors } => {
                write!(f, "remote relay {relay:#x} failed: {}", errors.join("; "))
            }
        }
    }
}

impl std::error::Error for BridgeError {}

/// What a bridge has done so far (all counts since it was made).
///
/// `exported + dropped + failed_out + skipped` is every local message its exports took
/// (`exported`: handed to the engine's client, which for a tracked export means the
/// request went out, whatever the answer); `imported + echoes + failed_in` is every
/// message its imports received.
///
/// # Examples
///
/// ```
/// let s = pipedream_rs::bridge::BridgeStats::default();
/// assert_eq!(s.exported + s.imported, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Messages handed to the engine's client.
    pub exported: u64,
    /// Messages received and sent on the local relay (whatever its handlers then did).
    pub imported: u64,
    /// Local messages an export left out because they came from an engine: imported by a
    /// bridge, or passed on from such a message by `map`, `filter`, `forward` and the like,
    /// which keep its origin (a `batch` is a new message, and is exported).
    pub skipped: u64,
    /// Frames of this bridge's own relay that came back, and were skipped.
    pub echoes: u64,
    /// Local messages not published: the connection was down or the engine refused them
    /// (each also a `Dropped` event).
    pub dropped: u64,
    /// Local messages not published because they could not be encoded or were too large.
    pub failed_out: u64,
    /// Received messages not delivered: not decodable, of an unknown type name, without
    /// the reply subject a tracked one needs, or arrived as the relay closed.
    pub failed_in: u64,
    /// Tracked messages whose remote outcome was a failure, a timeout or no responder.
    pub remote_failures: u64,
    /// Times the engine reported messages dropped for a slow subscription.
    pub slow_consumer: u64,
    /// Times a subscription was interrupted and renewed, losing what was published
    /// meanwhile (Redis pub/sub).
    pub interrupted: u64,
    /// Stream entries delivered again: taken before but not acknowledged, by this
    /// consumer before a restart or by one that stopped (Redis streams).
    pub redelivered: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    exported: AtomicU64,
    imported: AtomicU64,
    skipped: AtomicU64,
    echoes: AtomicU64,
    dropped: AtomicU64,
    failed_out: AtomicU64,
    failed_in: AtomicU64,
    remote_failures: AtomicU64,
    slow_consumer: AtomicU64,
    interrupted: AtomicU64,
    redelivered: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> BridgeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeStats {
            exported: get(&self.exported),
            imported: get(&self.imported),
            skipped: get(&self.skipped),
            echoes: get(&self.echoes),
            dropped: get(&self.dropped),
            failed_out: get(&self.failed_out),
            failed_in: get(&self.failed_in),
            remote_failures: get(&self.remote_failures),
            slow_consumer: get(&self.slow_consumer),
            interrupted: get(&self.interrupted),
            redelivered: get(&self.redelivered),
        }
    }
}

/// Checks a wire name (or a subject prefix): 1 to 200 bytes of ASCII letters, digits,
/// `.`, `-` and `_`, not starting or ending with `.` and without `..`. That is what a
/// NATS subject token sequence and a Redis key both carry without quoting, so one name
/// works on every engine.
///
/// # Errors
///
/// [`BridgeError::InvalidName`] saying what is wrong.
///
/// # Examples
///
/// ```
/// use pipedream_rs::bridge::check_name;
/// assert!(check_name("shop.order.v1").is_ok());
/// assert!(check_name("has space").is_err());
/// assert!(check_name("orders.>").is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), BridgeError> {
    let invalid = |reason| {
        Err(BridgeError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > 200 {
        return invalid("it is longer than 200 bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return invalid("only ASCII letters, digits, '.', '-' and '_' are allowed");
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return invalid("'.' separates non-empty parts");
    }
    Ok(())
}

/// How a name is bridged: one registration per mode and direction on a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// Publish/subscribe (at most once).
    Plain,
    /// Tracked: request/reply (NATS only).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    Tracked,
    /// A durable stream (Redis streams, JetStream).
    Stream,
}

impl Mode {
    /// Whether one bridge refuses the name in the other direction too. Tracked: the queue
    /// group could hand the relay its own messages back. A stream: the import would skip
    /// the bridge's own entries as echoes, yet acknowledge them for the whole group.
    fn one_way(self) -> bool {
        matches!(self, Mode::Tracked | Mode::Stream)
    }
}

/// The names a bridge has registered, as `(mode, import, name)`.
#[derive(Default)]
pub(crate) struct Names(std::sync::Mutex<std::collections::HashSet<(Mode, bool, String)>>);

impl Names {
    /// Claims `name` for one registration, refused if it is taken (or, for a one-way
    /// mode, taken in the other direction). Given back when the guard drops, unless
    /// [`Claim::keep`] is called.
    pub(crate) fn claim(
        &self,
        mode: Mode,
        import: bool,
        name: &str,
    ) -> Result<Claim<'_>, BridgeError> {
        check_name(name)?;
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let both_ways = mode.one_way() && names.contains(&(mode, !import, name.to_owned()));
        if both_ways || !names.insert((mode, import, name.to_owned())) {
            return Err(BridgeError::AlreadyBridged {
                name: name.to_owned(),
            });
        }
        Ok(Claim {
            names: self,
            key: Some((mode, import, name.to_owned())),
        })
    }

    /// Gives a kept claim back (a registration whose task could not come into place).
    #[cfg(feature = "nats")]
    pub(crate) fn release(&self, mode: Mode, import: bool, name: &str) {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.remove(&(mode, import, name.to_owned()));
    }
}

/// A name claimed for a registration that is not in place yet: given back if dropped
/// (the registration failed, or its future was cancelled), kept once `keep` is called.
pub(crate) struct Claim<'a> {
    names: &'a Names,
    key: Option<(Mode, bool, String)>,
}

impl Claim<'_> {
    pub(crate) fn keep(mut self) {
        self.key = None;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut names = self.names.0.lock().unwrap_or_else(|e| e.into_inner());
            names.remove(&key);
        }
    }
}

/// A number drawn once per process, mixed into relay wire ids.
fn process_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.finish() << 32
    })
}

/// The reply frame for `outcome`, its error texts shortened (from the end, at character
/// boundaries) until the frame fits in `limit` bytes: an answer too large to send would
/// leave the sender with a timeout instead of the failure.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn reply_frame(
    wire_id: u64,
    msg_id: u64,
    name: &str,
    mut outcome: Outcome,
    limit: usize,
) -> Vec<u8> {
    loop {
        let frame = Frame::encode(FrameKind::Reply, wire_id, msg_id, name, &outcome.encode());
        if frame.len() <= limit || outcome.errors.iter().all(|e| e.is_empty()) {
            return frame;
        }
        let over = frame.len() - limit;
        let Some(longest) = outcome.errors.iter_mut().max_by_key(|e| e.len()) else {
            return frame;
        };
        let mut keep = longest.len().saturating_sub(over + 3);
        while !longest.is_char_boundary(keep) {
            keep -= 1;
        }
        longest.truncate(keep);
        longest.push_str("...");
        if longest.len() <= 3 {
            longest.clear();
        }
    }
}

/// Runs a codec, turning a panic in it into its error: a codec is user code, and a
/// bridge's task must outlive its mistakes.
fn caught<R>(f: impl FnOnce() -> Result<R, CodecError>) -> Result<R, CodecError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| String::from("a panic"));
        Err(CodecError::new(format_args!("the codec panicked: {what}")))
    })
}

/// One entry of a stream import (Redis streams, NATS JetStream), with what identifies the
/// message it carries: what `import_stream_entries` on `RedisBridge` (feature `redis`)
/// and `NatsBridge` (feature `nats`) send on the relay.
///
/// A message is delivered more than once when an entry is redelivered (taken before and
/// not acknowledged) or when an export appended it twice (it retried an append whose
/// answer was lost). In both cases `(origin, msg_id)` is the same: drop an entry whose
/// pair you have seen. `id` tells apart entries, not messages.
///
/// # Examples
///
/// ```no_run
/// # async fn demo(rx: pipedream_rs::RelayReceiver) {
/// use pipedream_rs::bridge::StreamEntry;
/// let mut seen = std::collections::HashSet::new();
/// // A tracked handler: the entry is acknowledged once it has run.
/// rx.sink::<StreamEntry<String>>(move |entry: &StreamEntry<String>| {
///     if seen.insert((entry.origin, entry.msg_id)) {
///         println!("{} from {:#x}/{}: {}", entry.id, entry.origin, entry.msg_id, entry.value);
///     } // else a duplicate: already handled
/// });
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEntry<T> {
    /// The entry's id in its stream: Redis's entry id (`1700000000000-0`), or the
    /// JetStream sequence number in decimal.
    pub id: String,
    /// The wire id of the relay that sent the message.
    pub origin: u64,
    /// The message's id on that relay.
    pub msg_id: u64,
    /// Whether this entry was delivered before (to this consumer or another) and not
    /// acknowledged.
    pub redelivered: bool,
    /// The message.
    pub value: T,
}

impl<T> StreamEntry<T> {
    /// The entry for a decoded message: its stream id, and whether it came before.
    pub(crate) fn of(received: Received<T>, id: &str, redelivered: bool) -> StreamEntry<T> {
        StreamEntry {
            id: id.to_owned(),
            origin: received.origin,
            msg_id: received.msg_id,
            redelivered,
            value: received.value,
        }
    }
}

/// What became of one message a stream import delivered (Redis streams, JetStream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Processed (or refused for good, and reported): acknowledge it.
    Done,
    /// Nobody on the local relay took it: not delivered (nor counted); leave it for
    /// later.
    Unrouted,
    /// The relay closed: leave it (it is delivered again), and stop.
    Closed,
}

/// The first and the longest wait between an engine call's retries.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(50);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(2);

/// The next wait between retries.
pub(crate) fn longer(wait: Duration) -> Duration {
    (wait * 2).min(RETRY_MAX)
}

/// The messages an export took and has not passed on yet. Dropped with messages in it
/// (the bridge's last handle went while an append was being retried), each is reported
/// `Dropped`: given up, never silently.
pub(crate) struct Holding {
    pub(crate) local: Arc<Local>,
    pub(crate) subscriber_id: u64,
    pub(crate) envelopes: Vec<Envelope>,
}

impl Drop for Holding {
    fn drop(&mut self) {
        for envelope in self.envelopes.drain(..) {
            self.local.dropped(&envelope, self.subscriber_id);
        }
    }
}

/// A decoded message from the engine.
pub(crate) struct Received<T> {
    pub(crate) value: T,
    /// Its id on the relay that sent it.
    pub(crate) msg_id: u64,
    /// The wire id of the relay that sent it.
    pub(crate) origin: u64,
}

/// The texts a remote answer carries for a failed send: each handler's error with its
/// sources, or the send's own error.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) fn error_texts(error: &SendError) -> Vec<String> {
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(next) = source {
            text.push_str(": ");
            text.push_str(&next.to_string());
            source = next.source();
        }
        text
    }
    match error {
        SendError::Aggregate(errors) => errors.iter().map(|e| chain(e)).collect(),
        other => vec![chain(other)],
    }
}

/// The side of a bridge that talks to the local relay, the same for every engine.
///
/// Invariant: `origin` is the relay's id with [`IMPORTED`] set, so a message it sends is
/// recognisable as imported, and `forward` still sees which relay it entered first (an
/// `a ↔ b` forward pair stops it as it stops any message).
pub(crate) struct Local {
    pub(crate) core: Weak<Core>,
    pub(crate) relay_id: u64,
    /// The relay's id on the wire (`relay_id` mixed with the process nonce).
    pub(crate) wire_id: u64,
    /// The origin of the messages this bridge imports.
    pub(crate) origin: u64,
    pub(crate) counters: Counters,
}

impl Local {
    pub(crate) fn new(rx: &crate::RelayReceiver) -> Local {
        Local {
            core: rx.core.clone(),
            relay_id: rx.id,
            wire_id: process_nonce() ^ rx.id,
            origin: rx.id | IMPORTED,
            counters: Counters::default(),
        }
    }

    /// Whether a local message came from an engine (any bridge): such a message is never
    /// exported.
    pub(crate) fn came_from_engine(envelope: &Envelope) -> bool {
        envelope.origin() & IMPORTED != 0
    }

    /// The message frame for a local message, or the error to report (counted).
    pub(crate) fn encode<T: 'static>(
        &self,
        codec: &dyn Codec<T>,
        name: &str,
        subject: &str,
        msg_id: u64,
        value: &T,
        limit: usize,
    ) -> Result<Vec<u8>, BridgeError> {
        let payload = caught(|| codec.encode(value)).map_err(|reason| BridgeError::Encode {
            subject: subject.to_owned(),
            reason,
        });
        let frame =
            payload.map(|p| Frame::encode(FrameKind::Message, self.wire_id, msg_id, name, &p));
        let frame = frame.and_then(|frame| {
            if frame.len() > limit {
                Err(BridgeError::TooLarge {
                    subject: subject.to_owned(),
                    size: frame.len(),
                    limit,
                })
            } else {
                Ok(frame)
            }
        });
        if frame.is_err() {
            self.counters.failed_out.fetch_add(1, Ordering::Relaxed);
        }
        frame
    }

    /// A received frame's value: `Ok(None)` for a frame of this relay (an echo, counted),
    /// `Err` (counted) for bytes that are not a frame, a frame of another wire name, or a
    /// payload the codec refuses.
    pub(crate) fn decode<T: 'static>(
        &self,
        codec: &dyn Codec<T>,
        name: &str,
        subject: &str,
        bytes: &[u8],
    ) -> Result<Option<Received<T>>, BridgeError> {
        let decoded = self.decode_frame(name, subject, bytes).and_then(|frame| {
            let Some(frame) = frame else {
                return Ok(None);
            };
            let value =
                caught(|| codec.decode(frame.payload)).map_err(|reason| BridgeError::Decode {
                    subject: subject.to_owned(),
                    reason: reason.to_string(),
                })?;
            Ok(Some(Received {
                value,
                msg_id: frame.msg_id,
                origin: frame.origin,
            }))
        });
        match &decoded {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.counters.echoes.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.failed_in.fetch_add(1, Ordering::Relaxed);
            }
        }
        decoded
    }

    fn decode_frame<'b>(
        &self,
        name: &str,
        subject: &str,
        bytes: &'b [u8],
    ) -> Result<Option<Frame<'b>>, BridgeError> {
        let frame = Frame::decode(bytes).map_err(|e| BridgeError::Decode {
            subject: subject.to_owned(),
            reason: e.to_string(),
        })?;
        if frame.kind != FrameKind::Message {
            return Err(BridgeError::Decode {
                subject: subject.to_owned(),
                reason: String::from("a reply frame where a message was expected"),
            });
        }
        if frame.origin == self.wire_id {
            return Ok(None);
        }
        if frame.name != name {
            return Err(BridgeError::UnknownType {
                subject: subject.to_owned(),
                name: frame.name.to_owned(),
            });
        }
        Ok(Some(frame))
    }

    /// Sends an imported value on the local relay, marked as imported. `wait`: whether
    /// to wait for the relay's tracked handlers (a tracked import does, to answer).
    pub(crate) async fn deliver<T: Any + Send + Sync>(
        &self,
        value: T,
        wait: bool,
    ) -> Result<Receipt, SendError> {
        let result = self.deliver_uncounted(value, wait).await;
        self.count_delivered(&result);
        result
    }

    /// As [`deliver`](Self::deliver), leaving the count to the caller
    /// ([`count_delivered`](Self::count_delivered)): a stream import does not count an
    /// entry it will deliver again.
    pub(crate) async fn deliver_uncounted<T: Any + Send + Sync>(
        &self,
        value: T,
        wait: bool,
    ) -> Result<Receipt, SendError> {
        let Some(core) = self.core.upgrade() else {
            return Err(SendError::Closed);
        };
        let prepared = core.prepare(
            Arc::new(value),
            std::any::TypeId::of::<T>(),
            Some(std::any::type_name::<T>),
            From::Relay(self.origin),
            wait,
        );
        crate::core::delivery::Delivery::new(&*core, prepared).await
    }

    /// Sends imported values on the local relay as one batch, without waiting for
    /// tracked handlers (an untracked import): one snapshot and, per queue, one
    /// reservation and one wake-up for the batch (`core/batch.rs`), or one by one when the
    /// type has tracked handlers. Counted as `deliver` counts each. `Err`: the relay is
    /// closed (the values not sent are counted as failed in).
    pub(crate) async fn deliver_batch<T: Any + Send + Sync>(
        &self,
        values: Vec<T>,
    ) -> Result<(), SendError> {
        let count = values.len() as u64;
        let Some(core) = self.core.upgrade() else {
            self.counters.failed_in.fetch_add(count, Ordering::Relaxed);
            return Err(SendError::Closed);
        };
        match core.prepare_batch(values, From::Relay(self.origin)) {
            Err(error) => {
                self.counters.failed_in.fetch_add(count, Ordering::Relaxed);
                Err(error)
            }
            Ok(crate::core::batch::Prepared::Fast { targets, envelopes }) => {
                core.deliver_batch(targets, envelopes).await;
                self.counters.imported.fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Ok(crate::core::batch::Prepared::OneByOne(values)) => {
                drop(core);
                let mut failed = None;
                for value in values {
                    if let Err(error) = self.deliver(value, false).await {
                        failed.get_or_insert(error);
                    }
                }
                failed.map_or(Ok(()), Err)
            }
        }
    }

    /// Sends a stream's message on the local relay and waits for its tracked handlers:
    /// what the import then does with it. An unrouted message is neither counted nor to
    /// be acknowledged; the handlers' failures are published on the relay already (§5),
    /// so they are acknowledged; any other refusal is reported, under `subject`.
    pub(crate) async fn deliver_entry<U: Any + Send + Sync>(
        &self,
        value: U,
        msg_id: u64,
        subject: &str,
    ) -> Handled {
        let result = self.deliver_uncounted(value, true).await;
        let unrouted = match &result {
            Ok(receipt) => receipt.is_unrouted(),
            Err(e) => matches!(e, SendError::Unrouted { .. }),
        };
        if unrouted {
            return Handled::Unrouted;
        }
        self.count_delivered(&result);
        match result {
            Ok(_) => Handled::Done,
            Err(SendError::Closed) => Handled::Closed,
            Err(SendError::Downstream(_) | SendError::Aggregate(_)) => Handled::Done,
            Err(error) => {
                let (subject, reason) = (
                    subject.to_owned(),
                    format!("not sent on the local relay: {error}"),
                );
                let type_name = std::any::type_name::<U>();
                self.report(type_name, msg_id, BridgeError::Publish { subject, reason });
                Handled::Done
            }
        }
    }

    /// Counts a delivery's result: imported, or failed in if it was not sent.
    pub(crate) fn count_delivered(&self, result: &Result<Receipt, SendError>) {
        match result {
            // Not sent: the relay closed (or refused it at the call).
            Err(SendError::Closed | SendError::Unrouted { .. } | SendError::TypeMismatch) => {
                self.counters.failed_in.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.counters.imported.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reports a per-message failure on the relay (a `RelayError` of kind `Bridge`).
    pub(crate) fn report(&self, type_name: &'static str, msg_id: u64, error: BridgeError) {
        match error {
            BridgeError::SlowConsumer { .. } => {
                self.counters.slow_consumer.fetch_add(1, Ordering::Relaxed);
            }
            BridgeError::Interrupted { .. } => {
                self.counters.interrupted.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Some(core) = self.core.upgrade() {
            core.report(
                None,
                RelayError {
                    msg_id,
                    relay_id: self.relay_id,
                    kind: HandlerKind::Bridge,
                    type_name,
                    error: Arc::new(error),
                },
            );
        }
    }

    /// A local message was not published: a `Dropped` event (and the reason, once per
    /// cause, as the caller decides, through `report`).
    pub(crate) fn dropped(&self, envelope: &Envelope, subscriber_id: u64) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(core) = self.core.upgrade() {
            core.dropped_elsewhere(envelope, subscriber_id);
        }
    }

    /// A message for an import that the engine's client dropped (`Core::dropped_remote`).
    #[cfg(feature = "nats")]
    pub(crate) fn dropped_remote(&self, type_name: &'static str, subscription: u64) {
        if let Some(core) = self.core.upgrade() {
            core.dropped_remote(type_name, subscription);
        }
    }

    pub(crate) fn exported(&self) {
        self.counters.exported.fetch_add(1, Ordering::Relaxed);
    }

    /// A local message an export left out: it came from an engine.
    pub(crate) fn skipped(&self) {
        self.counters.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// A received message that cannot be delivered for a reason of its own.
    pub(crate) fn failed_in(&self) {
        self.counters.failed_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream entry delivered again.
    pub(crate) fn redelivered(&self) {
        self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn remote_failed(&self) {
        self.counters
            .remote_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}
