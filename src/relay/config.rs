//! The three configuration modes of a relay, and the configuration they form.

use crate::spawner::choice::Choice;

/// What `send` does when a subscriber's queue is full: the delivery policy.
///
/// A relay has one ([`RelayBuilder::delivery_mode`](crate::RelayBuilder::delivery_mode)),
/// a type may have its own ([`RelayBuilder::mode_for`](crate::RelayBuilder::mode_for)), and
/// so may one subscription ([`SubscribeOptions::mode`](crate::SubscribeOptions::mode)): the
/// most specific one applies to that subscriber's queue, chosen when it subscribes. One
/// relay can so carry lossless commands and conflated sensor readings side by side.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{DeliveryMode, Relay};
/// let (tx, rx) = Relay::builder()
///     .delivery_mode(DeliveryMode::Lossless)
///     .mode_for::<f64>(DeliveryMode::Latest)
///     .build()
///     .unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// `send` never waits for queue space. A message that does not fit a subscriber's
    /// queue is dropped *for that subscriber*, counted in
    /// [`RelayStats::dropped`](crate::RelayStats::dropped) and reported as a
    /// [`Dropped`](crate::Dropped) event. A tracked handler that misses a message this way
    /// fails that send with [`QueueFull`](crate::QueueFull).
    ///
    /// When a queue it delivered to is more than half full, the send yields to the
    /// scheduler once before returning, so a producer that never awaits anything else
    /// cannot starve its consumers on the same worker. It never waits for room.
    #[default]
    Broadcast,
    /// `send` waits for space in every live subscriber's queue (back-pressure), so `Ok(())`
    /// means every subscriber that existed when `send` was called has the message queued
    /// (and every tracked handler has processed it).
    Lossless,
    /// `send` never waits: a full queue makes room by evicting its *oldest* message, so
    /// the queue keeps the newest `capacity` messages. The evicted message is counted and
    /// reported exactly as a broadcast miss is (a [`Dropped`](crate::Dropped) event naming
    /// it, [`RelayStats::dropped`](crate::RelayStats::dropped), the subscription's
    /// `dropped()`); if it was a tracked send still waiting on this handler, that send
    /// fails with [`QueueFull`](crate::QueueFull). The new message is queued.
    DropOldest,
    /// Conflation: a queue of one message under [`DropOldest`](Self::DropOldest), whatever
    /// the capacity asked for. A subscriber that falls behind sees only the most recent
    /// value; each value it skipped is reported as dropped.
    Latest,
}

impl DeliveryMode {
    /// Whether `send` may wait for room under this mode.
    pub(crate) fn waits(self) -> bool {
        self == DeliveryMode::Lossless
    }

    /// Whether a full queue under this mode makes room by evicting its oldest message.
    pub(crate) fn evicts(self) -> bool {
        matches!(self, DeliveryMode::DropOldest | DeliveryMode::Latest)
    }
}

/// How many handler errors a failed `send` reports.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{ErrorMode, Relay};
/// let (tx, rx) = Relay::builder().error_mode(ErrorMode::Aggregate).build().unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorMode {
    /// The first handler failure of a message is returned as
    /// [`SendError::Downstream`](crate::SendError::Downstream); later ones of the same
    /// message are still published as [`RelayError`](crate::RelayError) events.
    #[default]
    FirstWins,
    /// Every handler failure of a message is returned, as
    /// [`SendError::Aggregate`](crate::SendError::Aggregate).
    Aggregate,
}

/// What happens when a handler or forwarder panics.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{PanicMode, Relay};
/// let (tx, rx) = Relay::builder().panic_mode(PanicMode::CatchAndEmit).build().unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PanicMode {
    /// The panic is caught and becomes a [`RelayError`](crate::RelayError) holding a
    /// [`PanicError`](crate::PanicError), on both paths (to the tracked sender and as an
    /// event). The handler keeps serving later messages.
    #[default]
    CatchAndEmit,
    /// For debugging: the message's sender is failed (so it never hangs), then the panic is
    /// resumed inside the handler's task, where the executor sees it. The handler is gone
    /// afterwards.
    Propagate,
}

/// The configuration a relay was built with; derived relays inherit it.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) channel_size: usize,
    pub(crate) delivery_mode: DeliveryMode,
    /// Per-type delivery modes (`RelayBuilder::mode_for`); few, so a slice.
    pub(crate) type_modes: std::sync::Arc<[(std::any::TypeId, DeliveryMode)]>,
    /// Retained types and how many messages of each (`RelayBuilder::retain`).
    pub(crate) retain: std::sync::Arc<[(std::any::TypeId, usize)]>,
    pub(crate) error_mode: ErrorMode,
    pub(crate) panic_mode: PanicMode,
    /// A send that would reach nobody fails with `SendError::Unrouted` instead of `Ok`.
    pub(crate) reject_unrouted: bool,
    /// Which spawner runs each task (`spawner/choice.rs`).
    pub(crate) spawner: Choice,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("channel_size", &self.channel_size)
            .field("delivery_mode", &self.delivery_mode)
            .field("type_modes", &self.type_modes.len())
            .field("retain", &self.retain.len())
            .field("error_mode", &self.error_mode)
            .field("panic_mode", &self.panic_mode)
            .field("reject_unrouted", &self.reject_unrouted)
            .field("spawner", &self.spawner.describe())
            .finish()
    }
}

impl Config {
    /// The delivery mode of a queue for `ty`: the type's own, else the relay's.
    pub(crate) fn mode_of(&self, ty: Option<std::any::TypeId>) -> DeliveryMode {
        ty.and_then(|ty| {
            self.type_modes
                .iter()
                .find(|(id, _)| *id == ty)
                .map(|(_, mode)| *mode)
        })
        .unwrap_or(self.delivery_mode)
    }
}
