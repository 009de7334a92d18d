//! A three-stage pipeline across derived relays, with errors flowing back to the sender.
//!
//! Run: `cargo run --example pipeline` (default smol runtime).
//!
//! raw text --parse (filter_map)--> Reading --validate (filter)--> store (sink)
//!
//! `filter_map` is a tracking boundary, so the parse stage gets its own sender: the
//! forwarder. To bring the consumer's verdict back to whoever sent the raw text, this
//! example parses in a tracked `sink` that re-sends on a second relay and returns that
//! send's result — the pattern to use when you want end-to-end `send().await?`.

use pipedream_rs::{Relay, RelayError, SendError};
use std::sync::Arc;

#[derive(Debug)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[derive(Debug, thiserror::Error)]
enum PipelineError {
    #[error("cannot parse {0:?}: expected `sensor=value`")]
    Parse(String),
    #[error("unknown sensor {0:?}: the store only accepts kitchen and freezer")]
    UnknownSensor(String),
    #[error("downstream failed: {0}")]
    Downstream(#[from] SendError),
}

fn parse(line: &str) -> Result<Reading, PipelineError> {
    let (sensor, value) = line
        .split_once('=')
        .ok_or_else(|| PipelineError::Parse(line.to_owned()))?;
    let celsius = value
        .trim()
        .parse()
        .map_err(|_| PipelineError::Parse(line.to_owned()))?;
    Ok(Reading {
        sensor: sensor.trim().to_owned(),
        celsius,
    })
}

fn main() {
    smol::block_on(async {
        // Stage relays: raw lines in, readings out.
        let (lines_tx, lines) = Relay::channel();
        let (readings_tx, readings) = Relay::channel();

        // Consume: only plausible readings reach the store (a tracked filter: a sender of a
        // Reading waits for the decision *and* for the store).
        let plausible = readings.filter::<Reading>(|r| r.celsius > -100.0);
        plausible.sink::<Reading>(|r| {
            if !["kitchen", "freezer"].contains(&r.sensor.as_str()) {
                return Err(PipelineError::UnknownSensor(r.sensor.clone()));
            }
            println!("  stored  {} = {:.1} °C", r.sensor, r.celsius);
            Ok(())
        });
        // Implausible readings are not an error here; watch them on the side, untracked.
        let mut rejected = readings
            .filter::<Reading>(|r| r.celsius <= -100.0)
            .subscribe::<Reading>();

        // Parse: a tracked async sink on the raw relay that forwards with a tracked send, so
        // the raw sender hears about every failure further down.
        let next = readings_tx.weak();
        lines.sink_async::<String>(move |line: Arc<String>| {
            let next = next.clone();
            async move {
                let reading = parse(&line)?;
                next.send(reading).await?;
                Ok::<(), PipelineError>(())
            }
        });

        // Every failure is also an event on the relay where it happened.
        let mut parse_errors = lines.subscribe::<RelayError>();

        for line in [
            "kitchen=21.5",
            "garage 4",
            "freezer=-18",
            "attic=12",
            "probe=-150",
        ] {
            println!("send {line:?}");
            match lines_tx.send(line.to_owned()).await {
                Ok(_) => println!("  ok: processed end to end"),
                Err(e) => println!("  error back at the sender: {e}"),
            }
        }

        drop(lines_tx);
        drop(readings_tx);
        while let Some(r) = rejected.recv().await {
            println!("rejected as implausible: {} = {} °C", r.sensor, r.celsius);
        }
        while let Ok(e) = parse_errors.try_recv() {
            println!("RelayError event on the raw relay: {e}");
        }
    });
}
