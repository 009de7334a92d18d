//! The three configuration modes of a relay, and the configuration they form.

use crate::spawner::choice::Choice;

/// What `send` does when a subscriber's queue is full.
///
/// # Examples
///
/// ```
/// use pipedream_rs::{DeliveryMode, Relay};
/// let (tx, rx) = Relay::builder().delivery_mode(DeliveryMode::Lossless).build().unwrap();
/// # drop((tx, rx));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
            .field("error_mode", &self.error_mode)
            .field("panic_mode", &self.panic_mode)
            .field("reject_unrouted", &self.reject_unrouted)
            .field("spawner", &self.spawner.describe())
            .finish()
    }
}
