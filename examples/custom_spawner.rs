//! Running pipedream-rs on an executor of your own: any `Fn(BoxFuture)` is a `Spawner`.
//!
//! Run: `cargo run --example custom_spawner` (needs no runtime feature:
//! `cargo run --example custom_spawner --no-default-features` works too).
//!
//! This is what a library does when it must not choose an executor for its users: take a
//! spawner from them, or use one built on `futures`' thread pool as here.

use futures::executor::{block_on, ThreadPool};
use pipedream_rs::{BoxFuture, Relay, Spawner};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A spawner that counts the tasks it is given, then runs them on a thread pool.
struct CountingPool {
    pool: ThreadPool,
    spawned: AtomicUsize,
}

impl Spawner for CountingPool {
    fn spawn(&self, task: BoxFuture) {
        self.spawned.fetch_add(1, Ordering::Relaxed);
        self.pool.spawn_ok(task);
    }
}

fn main() {
    let pool = ThreadPool::builder()
        .pool_size(2)
        .create()
        .expect("a thread pool");

    // 1. A closure is the shortest spawner.
    let closure_pool = pool.clone();
    let (tx, rx) = Relay::builder()
        .spawner(move |task: BoxFuture| closure_pool.spawn_ok(task))
        .build()
        .expect("a spawner was given");
    rx.sink::<String>(|s| println!("closure spawner ran the sink for {s:?}"));
    block_on(tx.send(String::from("hello"))).expect("handled");

    // 2. A type implementing Spawner, shared by reference counting.
    let counting = Arc::new(CountingPool {
        pool,
        spawned: AtomicUsize::new(0),
    });
    let shared = counting.clone();
    let (tx, rx) = Relay::builder()
        .spawner(move |task: BoxFuture| shared.spawn(task))
        .build()
        .expect("a spawner was given");
    rx.sink::<u32>(|n| println!("counting spawner: sink got {n}"));
    // Derived relays use the same spawner. `map` is a tracking boundary: the send above
    // does not wait for it, so read its output to see it.
    let doubled = rx.map::<u32, u32>(|n| n * 2);
    let mut doubled_values = doubled.subscribe::<u32>();
    block_on(async {
        tx.send(21u32).await.expect("handled");
        let d = doubled_values.recv().await.expect("mapped");
        println!("counting spawner: doubled to {d}");
        rx.ready().await;
    });
    println!(
        "tasks handed to the custom spawner: {}",
        counting.spawned.load(Ordering::Relaxed)
    );
}
