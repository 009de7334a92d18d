//! Request/response on one relay: typed queries, typed replies, distinct errors.
//!
//! Run: `cargo run --example request_response`
//!
//! A price service answers `Quote` queries with `Price` replies; an inventory service
//! answers `Stock` queries and refuses unknown items with an error the requester gets
//! back, with its cause. A query nobody answers says so instead of hanging.

use pipedream_rs::{Relay, RequestError};

#[derive(Debug)]
struct Quote {
    item: &'static str,
    quantity: u32,
}

#[derive(Debug, PartialEq)]
struct Price(u64);

#[derive(Debug)]
struct Stock(&'static str);

#[derive(Debug)]
struct Shipping(&'static str);

fn main() {
    smol::block_on(async {
        let (tx, rx) = Relay::channel();

        rx.respond::<Quote, Price>(|q| {
            let cents = if q.item == "widget" { 250 } else { 400 };
            Price(u64::from(q.quantity) * cents)
        });
        rx.try_respond::<Stock, u32, _>(|s| match s.0 {
            "widget" => Ok(12),
            "gadget" => Ok(0),
            other => Err(format!("no such item: {other}")),
        });

        let price = tx
            .request::<Quote, Price>(Quote {
                item: "widget",
                quantity: 4,
            })
            .await
            .expect("the price service answers");
        println!("4 widgets cost {} cents", price.0);
        assert_eq!(price, Price(1000));

        let stock = tx.request::<Stock, u32>(Stock("widget")).await;
        println!("widgets in stock: {stock:?}");
        assert_eq!(stock, Ok(12));

        // A responder's error comes back, with its cause one `source()` away.
        match tx.request::<Stock, u32>(Stock("sprocket")).await {
            Err(RequestError::Failed(e)) => println!("refused: {} ({})", e, e.error),
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Nobody answers `Shipping`: an error that names the types, not a hang.
        let speed = Shipping("express");
        println!("asking for {} shipping", speed.0);
        let none = tx.request::<Shipping, u64>(speed).await;
        println!("shipping: {}", none.as_ref().unwrap_err());
        assert!(matches!(none, Err(RequestError::NoResponder { .. })));
    });
}
