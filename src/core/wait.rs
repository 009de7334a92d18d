//! The one implementation of the eventcount pattern every wait in the crate uses (except
//! the lossless capacity wait, which also registers as a waiter: see `core/queue.rs`).
//!
//! Check the condition; if false, create a listener; check again (a notification between
//! the first check and the listener's creation would otherwise be lost); then await the
//! listener and start over. The notifier must make the condition true *before* calling
//! `notify`.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use event_listener::{Event, EventListener};

/// Resolves once `done()` returns true, re-checking every time `event` is notified.
pub(crate) async fn wait_until(event: &Event, mut done: impl FnMut() -> bool) {
    let mut listener = None;
    poll_fn(|cx| poll_until(event, &mut listener, cx, &mut done)).await;
}

/// The poll form of [`wait_until`], for hand-written futures: `listener` is the future's
/// own slot for the listener between polls (`None` to start; `None` again when ready).
pub(crate) fn poll_until(
    event: &Event,
    listener: &mut Option<EventListener>,
    cx: &mut Context<'_>,
    mut done: impl FnMut() -> bool,
) -> Poll<()> {
    loop {
        if done() {
            *listener = None;
            return Poll::Ready(());
        }
        match listener {
            // Listen, then loop to re-check before waiting.
            None => *listener = Some(event.listen()),
            Some(l) => match Pin::new(l).poll(cx) {
                Poll::Ready(()) => *listener = None,
                Poll::Pending => return Poll::Pending,
            },
        }
    }
}
