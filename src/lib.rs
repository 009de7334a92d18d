//! A typed, heterogeneous, in-process event relay that runs on any async executor.
//!
//! One relay carries messages of any `'static + Send + Sync` type. Subscribers ask for a
//! type and receive only that type. Handlers (`sink`, `tap`) are *tracked*:
//! `tx.send(msg).await?` returns once they have processed the message, and hands their
//! errors (and caught panics) back to the sender.
//!
//! ```
//! # futures::executor::block_on(async {
//! use pipedream_rs::{Relay, SendError};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("order {0} has no items")]
//! struct EmptyOrder(u32);
//!
//! struct Order { id: u32, items: usize }
//!
//! let (tx, rx) = Relay::channel();
//! let mut log = rx.subscribe::<String>();                 // untracked: only Strings
//! rx.sink::<Order>(|o| {                            // tracked: send waits for it
//!     if o.items == 0 { Err(EmptyOrder(o.id)) } else { Ok(()) }
//! });
//!
//! tx.send(String::from("started")).await?;
//! tx.send(Order { id: 1, items: 3 }).await?;              // Ok: the sink processed it
//! let err = tx.send(Order { id: 2, items: 0 }).await.unwrap_err();
//! assert!(matches!(err, SendError::Downstream(_)));
//! assert_eq!(log.recv().await.unwrap().as_str(), "started");
//! # Ok::<(), SendError>(())
//! # }).unwrap();
//! ```
//!
//! # The pieces
//!
//! - [`Relay::channel`] / [`Relay::builder`] make a relay: a [`RelaySender`] (owns it;
//!   dropping it closes the relay) and a [`RelayReceiver`] (`Clone`; subscribe and register
//!   handlers with it). [`WeakSender`]s send without keeping the relay open.
//! - [`Subscription<T>`]: untracked, typed; [`EnvelopeSubscription`]: every type;
//!   [`TrackedSubscription<T>`]: tracked, for driving completion yourself.
//! - Handlers: [`RelayReceiver::sink`], [`RelayReceiver::tap`] (and `_async` forms),
//!   [`RelayReceiver::within`] for untracked tasks.
//! - Observability: [`Dropped`] and [`RelayError`] events, [`RelayReceiver::stats`].
//! - Runtimes: the [`Spawner`] trait, with [`SmolSpawner`] (feature `smol`, default),
//!   `TokioSpawner` (feature `tokio`) and `AsyncStdSpawner` (feature `async-std`).
//!
//! # Delivery modes
//!
//! Each subscriber has its own queue of `channel_size` messages (default 65,536; memory
//! follows what is queued, not the capacity).
//!
//! - [`DeliveryMode::Broadcast`] (default): `send` never waits for queue space. A message
//!   that does not fit a subscriber's queue is dropped *for that subscriber*, counted, and
//!   reported as a [`Dropped`] event; if that subscriber is a tracked handler, the send
//!   fails with [`QueueFull`] (the handler did not process it).
//! - [`DeliveryMode::Lossless`]: `send` waits for room in every live subscriber's queue, so
//!   `Ok(())` means every subscriber that existed when `send` was called has it queued.
//!
//! In both modes, `Ok(())` also means every tracked handler of the message's type has
//! processed it without error. The full contract is in `SEMANTICS.md`.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

// The crate reads as four rooms (docs/architecture.md, "The pieces"):
// - `relay`: the public face: building a relay, sending, subscribing, handlers, errors;
// - `core`: the machinery under it: registry, queues, the send path, trackers, waits;
// - `topology`: relays derived from relays, and connections between relays;
// - `spawner`: the executors tasks run on, one module per runtime feature.
#[cfg(any(feature = "nats", feature = "redis"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "nats", feature = "redis"))))]
pub mod bridge;
mod core;
mod relay;
pub mod spawner;
mod topology;

pub use crate::core::deadlock::WouldDeadlock;
pub use crate::relay::config::{DeliveryMode, ErrorMode, PanicMode};
pub use crate::relay::envelope::Envelope;
pub use crate::relay::error::{
    BuildError, HandlerGone, HandlerKind, PanicError, QueueFull, RelayError, SendAllError,
    SendError, SharedError, TaskAborted, TrySendError, Unsent,
};
pub use crate::relay::events::{Dropped, HandlerLost, LossReason, Unrouted};
pub use crate::relay::handler::{AsyncHandler, Handler, HandlerResult};
pub use crate::relay::options::SubscribeOptions;
pub use crate::relay::permit::Permit;
pub use crate::relay::receipt::{BatchReceipt, Receipt};
pub use crate::relay::receiver::RelayReceiver;
pub use crate::relay::recv::{Recv, RecvEnvelope, RecvMany, RecvTracked};
pub use crate::relay::request::{Request, RequestError};
pub use crate::relay::send_sink::SendSink;
pub use crate::relay::sender::{RelaySender, WeakSender};
pub use crate::relay::stats::{RelayStats, TypeStats};
pub use crate::relay::subscription::{EnvelopeSubscription, Subscription, TryRecvError};
pub use crate::relay::task_handle::TaskHandle;
pub use crate::relay::tracked_subscription::{Tracked, TrackedSubscription};
pub use crate::relay::{Relay, RelayBuilder, DEFAULT_CHANNEL_SIZE, MAX_CHANNEL_SIZE};
#[cfg(feature = "async-std")]
pub use crate::spawner::AsyncStdSpawner;
#[cfg(feature = "smol")]
pub use crate::spawner::SmolSpawner;
#[cfg(feature = "tokio")]
pub use crate::spawner::TokioSpawner;
pub use crate::spawner::{BoxFuture, Spawner};
pub use crate::topology::connect::ForwardTarget;
pub use crate::topology::derived::BatchError;
