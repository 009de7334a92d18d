//! pipedream-rs inside a tokio application.
//!
//! Run: `cargo run --example tokio_app --features tokio`
//!
//! A handler registered inside a tokio runtime runs on that runtime, wherever the relay
//! was built (SEMANTICS.md §10), so nothing needs configuring. To pin every task to one
//! runtime, give the builder a `TokioSpawner::new(handle)`.

use pipedream_rs::{Relay, TokioSpawner};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
struct Request {
    path: &'static str,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (tx, rx) = Relay::channel(); // inside the runtime: tokio is chosen

    // An async sink using tokio's timer; `send` waits until it is done.
    rx.sink_async::<Request>(|req: Arc<Request>| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        println!(
            "handled {} on {:?}",
            req.path,
            std::thread::current().name()
        );
    });

    for path in ["/", "/health", "/metrics"] {
        tx.send(Request { path }).await.expect("handled");
    }

    // From a plain thread (no tokio context): hand the runtime's handle to the spawner.
    let handle = tokio::runtime::Handle::current();
    let outside = std::thread::spawn(move || {
        let (tx, rx) = Relay::builder()
            .spawner(TokioSpawner::new(handle))
            .build()
            .expect("a spawner was given");
        rx.sink::<u32>(|n| println!("sink on tokio, sent from a plain thread: {n}"));
        futures::executor::block_on(tx.send(7u32)).expect("handled");
    });
    tokio::task::spawn_blocking(move || outside.join().unwrap())
        .await
        .unwrap();
    println!("done");
}
