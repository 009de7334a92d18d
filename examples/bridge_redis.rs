//! Two relays, each with its own connection to one Redis server, exchanging typed events
//! over a Redis stream with a consumer group (features `redis` and `smol`):
//!
//! - `shop` exports `Order`s to a stream; `billing` imports them as consumer group
//!   `billing`, so each order is acknowledged only after billing's handler has run;
//! - billing's handler refuses one order: the failure is billing's `RelayError`, and the
//!   entry is still acknowledged (it does not come back forever);
//! - `StreamEntry` says which message each entry carries, to drop duplicates by.
//!
//! It uses `REDIS_URL` if set; otherwise it starts Debian's `redis-server` on a free port
//! of 127.0.0.1 and stops it at the end. Without either it says so and exits.
//!
//! ```text
//! cargo run --features redis --example bridge_redis
//! ```

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pipedream_rs::bridge::redis::{RedisBridge, StreamEntry};
use pipedream_rs::{Relay, RelayError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    cents: u64,
}

/// The server this example started, if it started one.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn server() -> Option<(String, Server)> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Some((url, Server(None)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(Some(child));
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((format!("redis://127.0.0.1:{port}"), server));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some((url, _server)) = server() else {
        println!("bridge_redis example skipped: no REDIS_URL and no redis-server to start (apt-get install -y redis-server)");
        return Ok(());
    };
    smol::block_on(async {
        let (shop_tx, shop_rx) = Relay::channel();
        let (_billing_tx, billing_rx) = Relay::channel();
        let shop = RedisBridge::connect(url.as_str(), &shop_rx).await?;
        let billing = RedisBridge::builder(url.as_str())
            .consumer("billing-1") // the same name after a restart takes back its entries
            .connect(&billing_rx)
            .await?;
        shop.export_stream::<Order>("shop.order")?;
        // When this returns, the group exists: every order appended from now on reaches it.
        billing
            .import_stream_entries::<Order>("shop.order", "billing")
            .await?;

        // Billing charges each order once, dropping a redelivered duplicate by the pair
        // (origin, msg_id), and refuses orders over 100.00.
        let mut charged = HashSet::new();
        billing_rx.sink::<StreamEntry<Order>>(move |entry: &StreamEntry<Order>| {
            if !charged.insert((entry.origin, entry.msg_id)) {
                println!("billing: entry {} is a duplicate, skipped", entry.id);
                return Ok(());
            }
            if entry.value.cents > 10_000 {
                return Err(format!("order {} is over the limit", entry.value.id));
            }
            println!(
                "billing: charged order {} ({} cents), entry {}",
                entry.value.id, entry.value.cents, entry.id
            );
            Ok(())
        });
        let mut refused = billing_rx.subscribe::<RelayError>();

        for (id, cents) in [(1, 1_250), (2, 99_000), (3, 400)] {
            shop_tx.send(Order { id, cents }).await?; // taken by the export, appended next
        }
        let error = refused.recv().await.ok_or("billing's relay closed")?;
        println!("billing: refused: {}", error.error);

        // Wait until all three are acknowledged (the example's own check).
        for _ in 0..500 {
            if billing.stats().imported == 3 {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        println!("shop: {:?}", shop.stats());
        println!("billing: {:?}", billing.stats());
        assert_eq!(billing.stats().imported, 3);
        Ok(())
    })
}
