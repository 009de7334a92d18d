//! A device dashboard on one relay: per-type delivery policies and replay.
//!
//! Run: `cargo run --example dashboard`
//!
//! - **Commands** (`Command`) are lossless: the relay's mode. A command is never dropped;
//!   a sender waits if the device falls behind.
//! - **Readings** (`Reading`) are conflated (`DeliveryMode::Latest`): a slow view sees
//!   only the newest reading, and each one it skipped is counted as dropped. The sensor
//!   never waits for a view.
//! - **Device state** (`State`) is retained (`retain::<State>(1)`): a view that joins
//!   late first gets the current state, then every change, with nothing missed or
//!   doubled at the seam; `latest::<State>()` reads it without subscribing.

use std::time::Duration;

use pipedream_rs::{DeliveryMode, Relay};

#[derive(Debug)]
enum Command {
    SetTarget(f64),
    Stop,
}

#[derive(Debug, Clone, Copy)]
struct Reading(f64);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Idle,
    Heating { target: f64 },
    Stopped,
}

fn main() {
    smol::block_on(async {
        let (tx, rx) = Relay::builder()
            .channel_size(8)
            .delivery_mode(DeliveryMode::Lossless)
            .mode_for::<Reading>(DeliveryMode::Latest)
            .retain::<State>(1)
            .build()
            .expect("a valid configuration");
        let weak = tx.weak();

        // The device: obeys commands (one at a time, in order) and reports its state.
        let device = weak.clone();
        rx.sink_async::<Command>(move |command| {
            let device = device.clone();
            let next = match &*command {
                Command::SetTarget(target) => State::Heating { target: *target },
                Command::Stop => State::Stopped,
            };
            async move {
                device.send(next).await.expect("the relay is open");
            }
        });
        tx.send(State::Idle).await.expect("the relay is open");

        // A slow view of the readings: it sleeps between frames, so it sees fewer.
        let mut readings = rx.subscribe::<Reading>();
        let view = smol::spawn(async move {
            let mut frames = Vec::new();
            while let Some(reading) = readings.recv().await {
                frames.push(reading.0);
                smol::Timer::after(Duration::from_millis(5)).await;
            }
            (frames, readings.dropped())
        });

        // The sensor: 200 readings, as fast as it can; it never waits for the view.
        for i in 0..200u32 {
            tx.send(Reading(20.0 + f64::from(i) / 10.0))
                .await
                .expect("open");
            if i % 50 == 0 {
                smol::future::yield_now().await;
            }
        }
        // Commands: lossless and tracked, so each send returns once the device obeyed.
        tx.send(Command::SetTarget(42.0))
            .await
            .expect("the device obeyed");
        println!(
            "state after the command: {:?}",
            rx.latest::<State>().as_deref()
        );

        // A view that joins late gets the current state first, then the changes.
        let mut late_view = rx.subscribe::<State>();
        let current = late_view.recv().await.expect("the current state");
        println!("late view starts from: {current:?}");
        assert_eq!(*current, State::Heating { target: 42.0 });
        tx.send(Command::Stop).await.expect("the device obeyed");
        let change = late_view.recv().await.expect("the next change");
        println!("late view then sees: {change:?}");
        assert_eq!(*change, State::Stopped);

        drop(tx); // close the relay: the view drains and ends
        let (frames, skipped) = view.await;
        println!(
            "the slow view drew {} frames, skipped {skipped} readings, last {:?}",
            frames.len(),
            frames.last()
        );
        assert_eq!(
            frames.len() as u64 + skipped,
            200,
            "every reading seen or counted"
        );
        assert_eq!(
            frames.last(),
            Some(&39.9),
            "the newest reading is never lost"
        );
    });
}
