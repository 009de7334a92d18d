//! Barriers: `ready()` and `wait_for_handlers(n)` release every waiter at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{timeout, within};
use futures::FutureExt;
use pipedream_rs::{BoxFuture, Relay, SendError, Spawner};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long waiters must stay blocked to count as "waiting".
const STAYS_PENDING: Duration = Duration::from_millis(100);
const WAITERS: usize = 50;

/// Holds the relay's tasks until `release`, then spawns them on the test's runtime, so a
/// test decides when they start.
#[derive(Clone, Default)]
struct HeldSpawner(Arc<Mutex<Option<Vec<BoxFuture>>>>);

impl Spawner for HeldSpawner {
    fn spawn(&self, task: BoxFuture) {
        match &mut *self.0.lock().unwrap() {
            None => drop(common::spawn(task)),
            Some(held) => held.push(task),
        }
    }
}

impl HeldSpawner {
    fn holding() -> Self {
        HeldSpawner(Arc::new(Mutex::new(Some(Vec::new()))))
    }

    fn release(&self) {
        let held = self.0.lock().unwrap().take().unwrap_or_default();
        for task in held {
            drop(common::spawn(task));
        }
    }
}

/// Spawns `WAITERS` tasks, each awaiting its own copy of `barrier` and then counting
/// itself in; returns the count and a future of all of them finishing.
fn spawn_waiters<F, Fut>(barrier: F) -> (Arc<AtomicUsize>, impl std::future::Future<Output = ()>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future + Send + 'static,
{
    let released = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (wait, released) = (barrier(), released.clone());
            common::spawn(async move {
                wait.await;
                released.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    (released, futures::future::join_all(tasks).map(drop))
}

on_every_runtime! {
    async fn ready_releases_every_waiter_once_all_tasks_have_started() {
        let spawner = HeldSpawner::holding();
        let (tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
        rx.sink::<u8>(|_| ());
        rx.tap::<u16>(|_| ());
        let _worker = rx.within(|| async {});

        let ready = rx.clone();
        let (released, all_done) = spawn_waiters(move || ready.ready());
        common::sleep(STAYS_PENDING).await;
        assert_eq!(released.load(Ordering::SeqCst), 0, "ready() resolved before the tasks started");

        spawner.release();
        within(WAIT, "every ready() waiter", all_done).await;
        assert_eq!(released.load(Ordering::SeqCst), WAITERS);
        within(WAIT, "a send to a started handler", tx.send(1u8)).await.unwrap();
    }

    async fn ready_waits_again_for_tasks_started_after_it_resolved() {
        let spawner = HeldSpawner::holding();
        let (_tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
        // No task yet: ready at once.
        assert!(rx.ready().now_or_never().is_some());
        rx.sink::<u8>(|_| ());
        let mut ready = Box::pin(rx.ready());
        assert!(timeout(STAYS_PENDING, ready.as_mut()).await.is_none());
        spawner.release();
        within(WAIT, "ready()", ready).await;
        assert_eq!(rx.stats().live_tasks, 1);
    }

    async fn wait_for_handlers_releases_every_waiter_when_the_nth_handler_registers() {
        let (_tx, rx) = Relay::channel();
        let barrier = rx.clone();
        let (released, all_done) = spawn_waiters(move || barrier.wait_for_handlers(3));
        rx.sink::<u8>(|_| ());
        rx.tap::<u16>(|_| ());
        let _untracked = rx.subscribe::<u32>(); // not a handler
        common::sleep(STAYS_PENDING).await;
        assert_eq!(released.load(Ordering::SeqCst), 0, "released with only two handlers");

        let _third = rx.subscribe_tracked::<u64>();
        within(WAIT, "every wait_for_handlers(3) waiter", all_done).await;
        assert_eq!(released.load(Ordering::SeqCst), WAITERS);
        // Already satisfied: resolves on the first poll.
        assert!(matches!(rx.wait_for_handlers(3).now_or_never(), Some(Ok(_))));
        assert!(matches!(rx.wait_for_handlers(0).now_or_never(), Some(Ok(_))));
    }

    async fn wait_for_handlers_of_zero_is_ok_on_an_open_a_closed_and_a_dropped_relay() {
        let (tx, rx) = Relay::channel();
        assert_eq!(within(WAIT, "open", rx.wait_for_handlers(0)).await, Ok(()));
        tx.close();
        assert_eq!(within(WAIT, "closed", rx.wait_for_handlers(0)).await, Ok(()));
        assert_eq!(within(WAIT, "closed, n = 1", rx.wait_for_handlers(1)).await, Err(SendError::Closed));
        drop(tx); // the relay is gone now
        assert_eq!(within(WAIT, "gone", rx.wait_for_handlers(0)).await, Ok(()));
        assert_eq!(within(WAIT, "gone, n = 1", rx.wait_for_handlers(1)).await, Err(SendError::Closed));
    }

    async fn wait_for_handlers_fails_every_waiter_with_closed_when_the_relay_closes() {
        let (tx, rx) = Relay::channel();
        let results = Arc::new(Mutex::new(Vec::new()));
        let (barrier, r) = (rx.clone(), results.clone());
        let (released, all_done) = spawn_waiters(move || {
            let (wait, r) = (barrier.wait_for_handlers(1), r.clone());
            async move {
                let result = wait.await;
                r.lock().unwrap().push(result);
            }
        });
        common::sleep(STAYS_PENDING).await;
        assert_eq!(released.load(Ordering::SeqCst), 0);
        drop(tx);
        within(WAIT, "every waiter after close", all_done).await;
        let results = results.lock().unwrap();
        assert_eq!(results.len(), WAITERS);
        assert!(results.iter().all(|r| matches!(r, Err(SendError::Closed))), "{results:?}");
    }
}
