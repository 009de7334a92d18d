//! Two relays, each with its own connection to one NATS server, exchanging typed events
//! (features `nats` and `smol`):
//!
//! - `shop` exports `Order`s and imports `Shipped` notes; `warehouse` does the opposite;
//! - `shop` sends `Pick` jobs *tracked*: the send returns once the warehouse's handler
//!   has run, and the warehouse's error comes back to the shop's sender.
//!
//! It uses `NATS_URL` if set; otherwise it starts Debian's `nats-server` on a free port of
//! 127.0.0.1 and stops it at the end. Without either it says so and exits.
//!
//! ```text
//! cargo run --features nats --example bridge
//! ```

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pipedream_rs::bridge::nats::NatsBridge;
use pipedream_rs::bridge::BridgeError;
use pipedream_rs::{Relay, SendError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    item: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipped {
    order: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pick {
    order: u64,
    shelf: u32,
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
    if let Ok(url) = std::env::var("NATS_URL") {
        return Some((url, Server(None)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(Some(child));
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((format!("nats://127.0.0.1:{port}"), server));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some((url, _server)) = server() else {
        println!("bridge example skipped: no NATS_URL and no nats-server to start (apt-get install -y nats-server)");
        return Ok(());
    };
    smol::block_on(async {
        let (shop_tx, shop_rx) = Relay::channel();
        let (warehouse_tx, warehouse_rx) = Relay::channel();
        // Made outside tokio, each bridge runs its NATS I/O on a small tokio runtime of
        // its own; the relays stay on smol.
        let shop = NatsBridge::connect(url.as_str(), &shop_rx).await?;
        let warehouse = NatsBridge::connect(url.as_str(), &warehouse_rx).await?;

        shop.export::<Order>("shop.order")?;
        warehouse.import::<Order>("shop.order").await?;
        warehouse.export::<Shipped>("shop.shipped")?;
        shop.import::<Shipped>("shop.shipped").await?;
        shop.export_tracked::<Pick>("shop.pick")?;
        warehouse.import_tracked::<Pick>("shop.pick").await?;

        // The warehouse ships what it is ordered, and picks from shelves 1 to 9 only.
        let mut orders = warehouse_rx.subscribe::<Order>();
        let ship = warehouse_tx.weak();
        let shipping = smol::spawn(async move {
            if let Some(order) = orders.recv().await {
                println!("warehouse: got order {} ({})", order.id, order.item);
                let _ = ship.send(Shipped { order: order.id }).await;
            }
        });
        warehouse_rx.sink::<Pick>(|pick: &Pick| {
            if (1..=9).contains(&pick.shelf) {
                println!(
                    "warehouse: picked order {} from shelf {}",
                    pick.order, pick.shelf
                );
                Ok(())
            } else {
                Err(format!("there is no shelf {}", pick.shelf))
            }
        });

        let mut shipped = shop_rx.subscribe::<Shipped>();
        shop_tx
            .send(Order {
                id: 7,
                item: "tea".into(),
            })
            .await?;
        let note = shipped.recv().await.ok_or("the shop's relay closed")?;
        println!("shop: order {} shipped", note.order);
        shipping.await;

        // Tracked across the wire: Ok only once the warehouse's handler has run.
        let receipt = shop_tx.send(Pick { order: 7, shelf: 3 }).await?;
        println!("shop: pick of order 7 done (msg {})", receipt.msg_id);
        match shop_tx
            .send(Pick {
                order: 8,
                shelf: 42,
            })
            .await
        {
            Err(SendError::Downstream(e)) => match e.error.downcast_ref::<BridgeError>() {
                Some(BridgeError::Remote { relay, errors }) => {
                    println!(
                        "shop: the warehouse ({relay:#x}) refused: {}",
                        errors.join("; ")
                    );
                    assert_eq!(*relay, warehouse.wire_id());
                }
                other => println!("shop: unexpected failure: {other:?}"),
            },
            other => println!("shop: unexpected result: {other:?}"),
        }
        println!("shop: {:?}", shop.stats());
        println!("warehouse: {:?}", warehouse.stats());
        Ok(())
    })
}
