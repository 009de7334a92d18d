//! Two relays forwarding into each other, without echo.
//!
//! Run: `cargo run --example bidirectional` (default smol runtime).
//!
//! Every envelope remembers the relay it was first sent on (its origin); a forward never
//! delivers a message back into its origin. So `ui ↔ engine` shows each message once on
//! each side, and then goes quiet.

use pipedream_rs::Relay;
use std::time::Duration;

#[derive(Debug)]
struct Command(&'static str);
#[derive(Debug)]
struct Status(&'static str);

fn main() {
    smol::block_on(async {
        let (ui_tx, ui) = Relay::channel();
        let (engine_tx, engine) = Relay::channel();

        // Both directions, each run on the relay's spawner.
        let ui_to_engine = ui.forward_detached(&engine_tx);
        let engine_to_ui = engine.forward_detached(&ui_tx);

        let mut engine_sees = engine.subscribe_all();
        let mut ui_sees = ui.subscribe_all();

        ui_tx.send(Command("start")).await.unwrap();
        engine_tx.send(Status("running")).await.unwrap();

        smol::Timer::after(Duration::from_millis(50)).await; // let any echo show up
        for (side, sub) in [("engine", &mut engine_sees), ("ui", &mut ui_sees)] {
            println!("{side} saw:");
            while let Ok(env) = sub.try_recv() {
                let what = match (env.downcast::<Command>(), env.downcast::<Status>()) {
                    (Some(c), _) => format!("Command({:?})", c.0),
                    (_, Some(s)) => format!("Status({:?})", s.0),
                    _ => env.type_name().to_owned(),
                };
                println!("  {what} (origin relay {})", env.origin());
            }
        }
        println!(
            "messages sent: ui {}, engine {} — one each, plus one forwarded each: no echo",
            ui.stats().sent,
            engine.stats().sent
        );

        // Closing one side ends both forwards: the source's forward drains, the other's
        // target is gone.
        drop(ui_tx);
        ui_to_engine.await.unwrap();
        engine_to_ui.await.unwrap();
        println!(
            "both forwards ended; engine still open: {}",
            !engine_tx.is_closed()
        );
    });
}
