//! Registering handlers while the relay runs, and waiting for them.
//!
//! Run: `cargo run --example dynamic_handlers`
//!
//! Registration is complete when `sink`/`tap`/`subscribe` returns: a message sent
//! afterwards reaches the new handler and is waited for. When the registration happens
//! in another task, `wait_for_handlers(n)` lets the producer wait until it has.

use pipedream_rs::Relay;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

fn main() {
    smol::block_on(async {
        let (tx, rx) = Relay::channel();
        let total = Arc::new(AtomicU32::new(0));

        // Plugins register their handlers from their own tasks, at their own pace.
        for plugin in 0..3u32 {
            let rx = rx.clone();
            let total = total.clone();
            smol::spawn(async move {
                rx.sink::<u32>(move |n| {
                    total.fetch_add(*n, Ordering::SeqCst);
                    println!("plugin {plugin} handled {n}");
                });
            })
            .detach();
        }

        // Wait until all three are registered: every send from here on reaches all three.
        rx.wait_for_handlers(3).await.expect("relay open");
        println!("{} handlers registered", tx.handler_count());
        tx.send(10u32).await.expect("handled");
        assert_eq!(total.load(Ordering::SeqCst), 30); // send waited for all three

        // A handler added later joins from the next send on.
        let late = total.clone();
        rx.tap::<u32>(move |n| {
            late.fetch_add(*n, Ordering::SeqCst);
            println!("late tap saw {n}");
        });
        tx.send(1u32).await.expect("handled");
        println!("total: {}", total.load(Ordering::SeqCst)); // 30 + 3 * 1 + 1
        rx.ready().await; // every handler task has started
        println!("live tasks: {}", rx.stats().live_tasks);
    });
}
