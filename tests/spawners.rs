//! Spawners: custom executors, `TokioSpawner` from outside its runtime, spawners that drop
//! their tasks, the default-spawner rule, and the builder's checks.
//!
//! Most tests here run without any runtime feature: they bring their own executor.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{handler_gone, timeout, within, DroppingLater};
use futures::executor::block_on;
use pipedream_rs::{BoxFuture, BuildError, HandlerGone, HandlerKind, Relay};

/// Long enough for anything that should happen; only reached when something hangs.
const WAIT: Duration = Duration::from_secs(10);
/// How long a send must stay pending to count as "waiting".
const STAYS_PENDING: Duration = Duration::from_millis(100);

/// The name of the thread the relay runs a `u8` sink on.
async fn handler_thread_name(
    tx: &pipedream_rs::RelaySender,
    rx: &pipedream_rs::RelayReceiver,
) -> String {
    let name = Arc::new(Mutex::new(None));
    let n = name.clone();
    rx.sink::<u8>(move |_| {
        *n.lock().unwrap() = std::thread::current().name().map(str::to_owned);
    });
    within(WAIT, "a send to the probe sink", tx.send(0u8))
        .await
        .unwrap();
    let name = name.lock().unwrap().clone();
    name.unwrap_or_default()
}

// ----- custom executors ------------------------------------------------------------------

#[test]
fn relay_runs_its_tasks_on_a_futures_thread_pool() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .name_prefix("custom-pool-")
        .create()
        .unwrap();
    let (tx, rx) = Relay::builder()
        .spawner(move |task: BoxFuture| pool.spawn_ok(task))
        .build()
        .unwrap();
    block_on(async {
        assert!(handler_thread_name(&tx, &rx)
            .await
            .starts_with("custom-pool-"));
        let sum = Arc::new(AtomicUsize::new(0));
        let s = sum.clone();
        rx.tap::<u32>(move |n| {
            s.fetch_add(*n as usize, Ordering::SeqCst);
        });
        for n in 1..=10u32 {
            tx.send(n).await.unwrap();
        }
        assert_eq!(sum.load(Ordering::SeqCst), 55);
        within(WAIT, "ready", rx.ready()).await;
        within(WAIT, "a within task", rx.within(|| async {}))
            .await
            .unwrap();
    });
}

#[test]
fn relay_runs_its_tasks_on_an_async_executor() {
    let ex = Arc::new(async_executor::Executor::new());
    let spawn_on = ex.clone();
    let (tx, rx) = Relay::builder()
        .spawner(move |task: BoxFuture| spawn_on.spawn(task).detach())
        .build()
        .unwrap();
    // One thread drives the executor and the test: the sink can only run if the relay
    // handed its task to this executor.
    block_on(ex.run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        rx.sink_async::<u32>(move |n: Arc<u32>| {
            let s = s.clone();
            async move { s.lock().unwrap().push(*n) }
        });
        let mut sub = rx.subscribe::<u32>();
        let worker = rx.within(move || async move {
            let mut total = 0;
            while let Some(n) = sub.recv().await {
                total += *n;
            }
            assert_eq!(total, 6);
        });
        for n in 1..=3u32 {
            within(WAIT, "a send on a custom executor", tx.send(n))
                .await
                .unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        drop(tx);
        within(WAIT, "the within task", worker).await.unwrap();
    }));
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_spawner_with_a_handle_works_from_outside_the_runtime() {
    use pipedream_rs::TokioSpawner;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("outside-handle-rt")
        .build()
        .unwrap();
    // This thread is not in the runtime.
    assert!(TokioSpawner::try_current().is_none());
    let (tx, rx) = Relay::builder()
        .spawner(TokioSpawner::new(rt.handle().clone()))
        .build()
        .unwrap();
    let in_runtime = Arc::new(Mutex::new(None));
    let r = in_runtime.clone();
    rx.sink::<u32>(move |_| {
        *r.lock().unwrap() = Some(tokio::runtime::Handle::try_current().is_ok());
    });
    block_on(async {
        within(WAIT, "a send from outside the runtime", tx.send(1u32))
            .await
            .unwrap();
        assert_eq!(*in_runtime.lock().unwrap(), Some(true));
        assert_eq!(handler_thread_name(&tx, &rx).await, "outside-handle-rt");
    });
}

// ----- spawners that drop their tasks ----------------------------------------------------

#[test]
fn sends_waiting_on_a_task_the_spawner_drops_fail_with_handler_gone() {
    let spawner = DroppingLater::default();
    let (tx, rx) = Relay::builder().spawner(spawner.clone()).build().unwrap();
    rx.sink::<u32>(|_| ());
    let finished = rx.within(|| async {});
    block_on(async {
        let mut ready = Box::pin(rx.ready());
        let mut send = Box::pin(tx.send(1u32));
        assert!(timeout(STAYS_PENDING, send.as_mut()).await.is_none());
        assert!(timeout(STAYS_PENDING, ready.as_mut()).await.is_none());

        spawner.drop_all();
        handler_gone(
            within(WAIT, "a send whose handler was dropped", send).await,
            HandlerKind::Sink,
        );
        within(WAIT, "ready() after the tasks were dropped", ready).await;
        let e = within(WAIT, "the handle of a dropped within task", finished)
            .await
            .unwrap_err();
        assert_eq!(e.kind, HandlerKind::Within);
        assert!(e.downcast_ref::<HandlerGone>().is_some());
        assert_eq!(rx.stats().live_tasks, 0);
    });
}

#[test]
fn spawner_that_drops_every_task_reports_the_handler_lost_and_ready_still_resolves() {
    let (tx, rx) = Relay::builder()
        .spawner(|task: BoxFuture| drop(task))
        .build()
        .unwrap();
    rx.sink::<u32>(|_| ());
    let handle = rx.within(|| async {});
    block_on(async {
        within(WAIT, "ready() with every task dropped", rx.ready()).await;
        // Never Ok as if handled: the handler never ran, was reported lost, and is gone.
        let receipt = within(WAIT, "a send to a handler that never ran", tx.send(1u32)).await;
        assert!(receipt.unwrap().is_unrouted());
        let e = within(WAIT, "a within handle", handle).await.unwrap_err();
        assert!(e.downcast_ref::<HandlerGone>().is_some());
        let stats = rx.stats();
        assert_eq!(
            (
                stats.live_tasks,
                stats.tracked_handlers,
                stats.handlers_lost
            ),
            (0, 0, 1)
        );
    });
}

/// The case: a relay and its sink are built in tokio runtime A, A is shut down, and
/// the relay lives on. The sink's task is dropped with A: that is reported once, the sink
/// leaves the registry, and sends made afterwards (here from runtime B) show it.
#[cfg(feature = "tokio")]
#[test]
fn a_handler_whose_runtime_shut_down_is_reported_lost_and_later_sends_show_it() {
    let a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx, mut lost, processed) = a.block_on(async {
        let (tx, rx) = Relay::channel(); // inside A: its handlers run on A
        let lost = rx.subscribe::<pipedream_rs::HandlerLost>();
        let processed = Arc::new(AtomicUsize::new(0));
        let p = processed.clone();
        rx.sink::<u32>(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
        });
        within(WAIT, "a send while A runs", tx.send(1u32))
            .await
            .unwrap();
        (tx, rx, lost, processed)
    });
    drop(a); // shuts A down: its tasks, the sink's among them, are dropped
    let b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    b.block_on(async {
        let report = within(WAIT, "the loss report", lost.recv()).await.unwrap();
        assert_eq!((report.kind, report.type_name), (HandlerKind::Sink, "u32"));
        let receipt = within(WAIT, "a send from B", tx.send(2u32)).await.unwrap();
        assert!(receipt.is_unrouted() && receipt.handled == 0, "{receipt:?}");
        let stats = rx.stats();
        assert_eq!(
            (stats.handlers_lost, stats.tracked_handlers, stats.unrouted),
            (1, 0, 1)
        );
    });
    assert_eq!(processed.load(Ordering::SeqCst), 1);
}

// ----- which spawner runs a task: one test per row of the table in src/spawner/mod.rs ----

/// A tokio runtime whose threads are named `name`.
#[cfg(feature = "tokio")]
fn tokio_runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// A spawner running each task on a thread of its own, named `given-spawner`.
fn thread_per_task(task: BoxFuture) {
    std::thread::Builder::new()
        .name("given-spawner".into())
        .spawn(move || block_on(task))
        .unwrap();
}

#[test]
fn row_1_a_given_spawner_runs_every_task_of_the_relay_and_its_children_wherever_registered() {
    let run = || {
        block_on(async {
            let (tx, rx) = Relay::builder().spawner(thread_per_task).build().unwrap();
            assert_eq!(handler_thread_name(&tx, &rx).await, "given-spawner");
            // A derived relay's handler too.
            let child = rx.filter::<u8>(|_| true);
            let name = Arc::new(Mutex::new(None));
            let n = name.clone();
            child.sink::<u8>(move |_| {
                *n.lock().unwrap() = std::thread::current().name().map(str::to_owned);
            });
            within(WAIT, "a send through the child", tx.send(1u8))
                .await
                .unwrap();
            assert_eq!(name.lock().unwrap().as_deref(), Some("given-spawner"));
            assert!(format!("{rx:?}").contains("custom (given)"), "{rx:?}");
        })
    };
    run();
    // Inside a tokio runtime, the given spawner still wins.
    #[cfg(feature = "tokio")]
    tokio_runtime("row-1-rt").block_on(async { run() });
}

#[cfg(feature = "tokio")]
#[test]
fn row_2_a_task_registered_inside_a_tokio_runtime_runs_on_it_wherever_the_relay_was_built() {
    // Built before the runtime exists (the trap of 0.2: handlers on smol, and
    // `tokio::time::sleep` in them panicked for want of a reactor).
    let (tx, rx) = Relay::channel();
    tokio_runtime("row-2-rt").block_on(async {
        assert_eq!(handler_thread_name(&tx, &rx).await, "row-2-rt");
        let slept = Arc::new(AtomicUsize::new(0));
        let s = slept.clone();
        rx.sink_async::<u16>(move |_| {
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                s.fetch_add(1, Ordering::SeqCst);
            }
        });
        within(WAIT, "a send to a sink using tokio's timer", tx.send(1u16))
            .await
            .unwrap();
        assert_eq!(slept.load(Ordering::SeqCst), 1);
    });
}

#[cfg(feature = "async-std")]
#[test]
fn row_3_a_task_registered_inside_an_async_std_task_runs_on_async_std() {
    let (tx, rx) = Relay::channel();
    async_std::task::block_on(async {
        let in_task = Arc::new(Mutex::new(None));
        let t = in_task.clone();
        rx.sink::<u32>(move |_| {
            let name = std::thread::current().name().map(str::to_owned);
            *t.lock().unwrap() = Some((async_std::task::try_current().is_some(), name));
        });
        within(WAIT, "a send", tx.send(1u32)).await.unwrap();
        let (in_async_std, thread) = in_task.lock().unwrap().clone().unwrap();
        assert!(in_async_std, "ran on {thread:?}");
        assert_ne!(thread.as_deref(), Some("pipedream-tokio"));
    });
}

#[cfg(feature = "tokio")]
#[test]
fn row_4_a_task_registered_outside_any_runtime_runs_where_the_relay_was_built() {
    let rt = tokio_runtime("row-4-rt");
    let (tx, rx) = rt.block_on(async { Relay::channel() });
    assert_eq!(block_on(handler_thread_name(&tx, &rx)), "row-4-rt");
    assert!(format!("{rx:?}").contains("\"tokio unless"), "{rx:?}");
}

#[cfg(feature = "tokio")]
#[test]
fn row_5_outside_any_runtime_the_tokio_feature_gives_pipedreams_own_tokio_runtime() {
    // Whatever else is enabled: smol and async-std code runs there too, tokio code
    // would not run on smol.
    let (tx, rx) = Relay::channel();
    assert_eq!(block_on(handler_thread_name(&tx, &rx)), "pipedream-tokio");
    let slept = Arc::new(AtomicUsize::new(0));
    let s = slept.clone();
    rx.sink_async::<u16>(move |_| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            s.fetch_add(1, Ordering::SeqCst);
        }
    });
    block_on(within(
        WAIT,
        "a send to a sink using tokio's timer",
        tx.send(1u16),
    ))
    .unwrap();
    assert_eq!(slept.load(Ordering::SeqCst), 1);
    assert!(
        format!("{rx:?}").contains("pipedream-tokio thread"),
        "{rx:?}"
    );
}

#[cfg(all(feature = "smol", not(feature = "tokio")))]
#[test]
fn row_6_outside_any_runtime_without_tokio_smol_runs_the_tasks() {
    let (tx, rx) = Relay::channel();
    let name = block_on(handler_thread_name(&tx, &rx));
    assert!(name.starts_with("smol-"), "handler ran on {name:?}");
}

#[cfg(all(feature = "async-std", not(any(feature = "smol", feature = "tokio"))))]
#[test]
fn row_7_outside_any_runtime_with_only_async_std_async_std_runs_the_tasks() {
    let (tx, rx) = Relay::channel();
    let in_task = Arc::new(Mutex::new(None));
    let t = in_task.clone();
    rx.sink::<u32>(move |_| {
        *t.lock().unwrap() = Some(async_std::task::try_current().is_some());
    });
    block_on(within(WAIT, "a send", tx.send(1u32))).unwrap();
    assert_eq!(*in_task.lock().unwrap(), Some(true));
}

#[cfg(not(any(feature = "smol", feature = "async-std", feature = "tokio")))]
#[test]
fn row_8_with_no_runtime_feature_and_no_spawner_there_is_none() {
    assert_eq!(Relay::builder().build().unwrap_err(), BuildError::NoSpawner);
    let panic = std::panic::catch_unwind(Relay::channel).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.starts_with("no spawner"), "{message}");
}

// ----- builder checks ----------------------------------------------------------------------

#[test]
fn zero_channel_size_is_a_build_error() {
    let err = Relay::builder()
        .channel_size(0)
        .spawner(|task: BoxFuture| drop(task))
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroChannelSize);
    assert_eq!(err.to_string(), "channel size must be at least 1");
}

#[test]
#[should_panic(expected = "channel size must be at least 1")]
fn channel_with_size_zero_panics() {
    let _ = Relay::channel_with_size(0);
}
