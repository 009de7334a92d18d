//! Error recovery: retrying failed sends, aggregating every failure, surviving panics.
//!
//! Run: `cargo run --example error_recovery`

use pipedream_rs::{ErrorMode, Relay, RelayError, SendError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("database unavailable (attempt {0})")]
struct Unavailable(u32);

#[derive(Debug, thiserror::Error)]
#[error("quota exceeded")]
struct Quota;

#[derive(Debug)]
struct Payment(u32);

fn main() {
    // The relay catches handler panics and reports them as errors; silence the default
    // hook so it does not also print a backtrace for the panic below.
    std::panic::set_hook(Box::new(|_| {}));
    smol::block_on(async {
        // 1. Retry: the sender sees the handler's error and decides what to do.
        let (tx, rx) = Relay::channel();
        let attempts = Arc::new(AtomicU32::new(0));
        let a = attempts.clone();
        rx.sink::<Payment>(move |p| {
            let n = a.fetch_add(1, Ordering::SeqCst) + 1;
            if n < 3 {
                Err(Unavailable(n))
            } else {
                println!("payment {} stored", p.0);
                Ok(())
            }
        });
        let mut tries = 0;
        loop {
            tries += 1;
            match tx.send(Payment(42)).await {
                Ok(_) => break,
                Err(e) if tries < 5 => println!("retrying after: {e}"),
                Err(e) => panic!("giving up: {e}"),
            }
        }

        // 2. Aggregate: see every failing handler, not only the first.
        let (tx, rx) = Relay::builder()
            .error_mode(ErrorMode::Aggregate)
            .build()
            .unwrap();
        rx.sink::<Payment>(|_| Err(Quota));
        rx.tap::<Payment>(|p| {
            if p.0 > 100 {
                Err(Unavailable(0))
            } else {
                Ok(())
            }
        });
        if let Err(SendError::Aggregate(errors)) = tx.send(Payment(500)).await {
            for e in &errors {
                println!("aggregated: {} said {}", e.kind, e.error);
            }
        }

        // 3. Panics are caught: the sender gets a PanicError, the handler keeps serving.
        let (tx, rx) = Relay::channel();
        let mut failures = rx.subscribe::<RelayError>(); // every failure, as an event
        rx.sink::<u32>(|n| {
            if *n == 13 {
                panic!("unlucky number");
            }
            println!("sink handled {n}");
        });
        for n in [12u32, 13, 14] {
            if let Err(e) = tx.send(n).await {
                let first = &e.errors()[0];
                println!("send {n} failed (panic: {}): {first}", first.is_panic());
            }
        }
        while let Ok(e) = failures.try_recv() {
            println!("RelayError event for message {}: {}", e.msg_id, e.error);
        }
    });
}
