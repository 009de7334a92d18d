//! pipedream-rs inside an async-std application.
//!
//! Run: `cargo run --example async_std_app --features async-std`
//!
//! async-std is discontinued upstream; it stays supported for existing applications. New
//! code should prefer smol (the default feature). A relay built inside an async-std task
//! runs its handlers on async-std.

use pipedream_rs::Relay;

#[derive(Debug)]
struct Tick(u32);

fn main() {
    async_std::task::block_on(async {
        let (tx, rx) = Relay::channel();
        let mut ticks = rx.subscribe::<Tick>();
        rx.sink::<Tick>(|t| println!("sink saw tick {}", t.0));

        for n in 1..=3 {
            tx.send(Tick(n)).await.expect("the sink ran");
        }
        drop(tx); // closes the relay: the subscription drains, then ends

        while let Some(t) = ticks.recv().await {
            println!("subscriber drained tick {}", t.0);
        }
        println!("done");
    });
}
