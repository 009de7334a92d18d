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
        // The sum of every value handled, over every handler, and how many handlings.
        let total = Arc::new(AtomicU32::new(0));
        let handled = Arc::new(AtomicU32::new(0));

        // Plugins register their handlers from their own tasks, at their own pace.
        for plugin in 0..3u32 {
            let rx = rx.clone();
            let (total, handled) = (total.clone(), handled.clone());
            smol::spawn(async move {
                rx.sink::<u32>(move |n| {
                    total.fetch_add(*n, Ordering::SeqCst);
                    handled.fetch_add(1, Ordering::SeqCst);
                    println!("plugin {plugin} got the value {n}");
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
        let (late_total, late_handled) = (total.clone(), handled.clone());
        rx.tap::<u32>(move |n| {
            late_total.fetch_add(*n, Ordering::SeqCst);
            late_handled.fetch_add(1, Ordering::SeqCst);
            println!("the late tap got the value {n}");
        });
        let receipt = tx.send(1u32).await.expect("handled");
        println!(
            "the second send was handled by {} handlers",
            receipt.handled
        );
        assert_eq!(receipt.handled, 4);
        // 3 handlers saw 10, then 4 saw 1.
        let (sum, count) = (total.load(Ordering::SeqCst), handled.load(Ordering::SeqCst));
        println!("{count} messages handled in all, values summing to {sum}");
        assert_eq!((count, sum), (7, 34));
        rx.ready().await; // every handler task has started
        println!("live tasks: {}", rx.stats().live_tasks);
    });
}
