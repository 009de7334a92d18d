//! The one implementation of the eventcount pattern every wait in the crate uses (except
//! the lossless capacity wait, which also registers as a waiter: see `queue.rs`).
//!
//! Check the condition; if false, create a listener; check again (a notification between
//! the first check and the listener's creation would otherwise be lost); then await the
//! listener and start over. The notifier must make the condition true *before* calling
//! `notify`.

use event_listener::Event;

/// Resolves once `done()` returns true, re-checking every time `event` is notified.
pub(crate) async fn wait_until(event: &Event, mut done: impl FnMut() -> bool) {
    loop {
        if done() {
            return;
        }
        let listener = event.listen();
        if done() {
            return;
        }
        listener.await;
    }
}
