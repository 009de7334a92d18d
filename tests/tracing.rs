//! The `tracing` feature: spans with the right parents, across tasks, forwarders and
//! derived relays, and a log line for every loss and failure. A capturing layer records
//! every span and event; each test looks only at its own relays (tests run in parallel
//! against one global subscriber).
#![cfg(feature = "tracing")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{quiet_intended_panics, wait_until, within, DroppingLater};
use pipedream_rs::Relay;
use tracing::field::{Field, Visit};
use tracing::{Instrument, Level};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const WAIT: Duration = Duration::from_secs(10);

/// A span as it was opened.
#[derive(Clone, Debug)]
struct SpanRecord {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

/// An event as it was logged, with the span it was logged in.
#[derive(Clone, Debug)]
struct EventRecord {
    level: Level,
    span: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Records {
    spans: Vec<SpanRecord>,
    events: Vec<EventRecord>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Capture(Arc<Mutex<Records>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|p| p.id().into_u64());
        self.0.lock().unwrap().spans.push(SpanRecord {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|s| s.id().into_u64());
        self.0.lock().unwrap().events.push(EventRecord {
            level: *event.metadata().level(),
            span,
            fields,
        });
    }
}

/// The records of the whole test binary (installed once, as the global subscriber).
fn records() -> &'static Arc<Mutex<Records>> {
    static RECORDS: OnceLock<Arc<Mutex<Records>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let records = Arc::new(Mutex::new(Records::default()));
        tracing_subscriber::registry()
            .with(Capture(records.clone()))
            .try_init()
            .expect("the only global subscriber");
        records
    })
}

/// The spans named `name` on relay `relay`.
fn spans(name: &str, relay: u64) -> Vec<SpanRecord> {
    let relay = relay.to_string();
    let records = records().lock().unwrap();
    let on_relay = records
        .spans
        .iter()
        .filter(|s| s.fields.get("relay_id") == Some(&relay));
    on_relay.filter(|s| s.name == name).cloned().collect()
}

/// The events on relay `relay` whose message is `message`.
fn events(relay: u64, message: &str) -> Vec<EventRecord> {
    let relay = relay.to_string();
    let records = records().lock().unwrap();
    let on_relay = records
        .events
        .iter()
        .filter(|e| e.fields.get("relay_id") == Some(&relay));
    on_relay
        .filter(|e| e.fields.get("message").map(String::as_str) == Some(message))
        .cloned()
        .collect()
}

fn span_by_id(id: u64) -> SpanRecord {
    let records = records().lock().unwrap();
    records
        .spans
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .expect("a recorded span")
}

/// The one span named `name` on `relay`, once it exists.
async fn the_span(name: &str, relay: u64) -> SpanRecord {
    wait_until(WAIT, &format!("a {name} span on relay {relay}"), || {
        !spans(name, relay).is_empty()
    })
    .await;
    let mut found = spans(name, relay);
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

on_every_runtime! {
    async fn a_handlers_span_is_a_child_of_the_send_which_is_a_child_of_the_span_current_at_send() {
        records();
        let (tx, rx) = Relay::channel();
        rx.sink::<u32>(|_| tracing::info!("in the sink"));
        rx.tap::<u32>(|_| ());
        let request = tracing::info_span!("request", n = 7);
        let request_id = request.id().unwrap().into_u64();
        within(WAIT, "the send", tx.send(1u32).instrument(request)).await.unwrap();

        let send = the_span("pipedream.send", tx.id()).await;
        assert_eq!(send.parent, Some(request_id), "{send:?}");
        assert_eq!((send.fields["msg_id"].as_str(), send.fields["type_name"].as_str()), ("1", "u32"));
        for (name, kind) in [("pipedream.sink", "sink"), ("pipedream.tap", "tap")] {
            let work = the_span(name, tx.id()).await;
            assert_eq!(work.parent, Some(send.id), "{work:?}");
            assert_eq!(work.fields["kind"], kind);
            assert_eq!(work.fields["msg_id"], "1");
            assert_eq!(work.fields["type_name"], "u32");
            assert!(work.fields.contains_key("subscriber_id"));
            // The spawner the task runs on, as the relay chose it.
            assert!(!work.fields["spawner"].is_empty() && work.fields["spawner"] != "caller", "{work:?}");
        }
        // What the handler logs is logged inside its span.
        let sink = the_span("pipedream.sink", tx.id()).await;
        let records = records().lock().unwrap();
        let inside = records.events.iter().filter(|e| e.span == Some(sink.id));
        assert_eq!(inside.filter(|e| e.fields["message"] == "in the sink").count(), 1);
    }

    async fn a_trace_goes_on_through_derived_relays_and_forwards() {
        records();
        let (tx, rx) = Relay::channel();
        let evens = rx.filter::<u32>(|n| n % 2 == 0); // tracked
        let doubled = evens.map::<u32, u64>(|n| u64::from(*n) * 2); // a tracking boundary
        let (far_tx, far) = Relay::channel();
        let forwarding = doubled.forward_detached(&far_tx);
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        far.sink::<u64>(move |n| g.lock().unwrap().push(*n));
        let request = tracing::info_span!("request", n = 8);
        let request_id = request.id().unwrap().into_u64();
        within(WAIT, "the send", tx.send(4u32).instrument(request)).await.unwrap();
        wait_until(WAIT, "the far sink", || *got.lock().unwrap() == [8]).await;

        // request > send(rx) > forward(rx) > send(evens) > forward(evens) > send(doubled)
        //   > forward(doubled) > send(far) > sink(far)
        let sink = the_span("pipedream.sink", far.id()).await;
        let mut chain = vec![sink.name];
        let mut at = sink;
        while let Some(parent) = at.parent {
            at = span_by_id(parent);
            chain.push(at.name);
        }
        chain.reverse();
        assert_eq!(at.id, request_id, "the trace starts at the request");
        assert_eq!(
            chain,
            [
                "request",
                "pipedream.send",
                "pipedream.forward",
                "pipedream.send",
                "pipedream.forward",
                "pipedream.send",
                "pipedream.forward",
                "pipedream.send",
                "pipedream.sink",
            ]
        );
        drop((tx, far_tx));
        within(WAIT, "the forward ends", forwarding).await.unwrap();
    }

    async fn every_loss_and_failure_is_logged_even_with_nobody_subscribed() {
        const INTENDED: &str = "intended: a traced sink panics";
        quiet_intended_panics(INTENDED);
        records();
        let (tx, rx) = Relay::channel();
        rx.sink::<u32>(|n| match *n {
            1 => Err("refused"),
            2 => panic!("{INTENDED}"),
            _ => Ok(()),
        });
        let _ = within(WAIT, "an erring send", tx.send(1u32)).await;
        let _ = within(WAIT, "a panicking send", tx.send(2u32)).await;
        let failed = events(tx.id(), "handler failed");
        assert_eq!((failed.len(), failed[0].level), (1, Level::WARN), "{failed:?}");
        assert_eq!(failed[0].fields["error"], "refused");
        let panicked = events(tx.id(), "handler panicked");
        assert_eq!((panicked.len(), panicked[0].level), (1, Level::ERROR), "{panicked:?}");

        // Unrouted: the first of a type at WARN, the next at DEBUG.
        within(WAIT, "unrouted", tx.send("a &str")).await.unwrap();
        within(WAIT, "unrouted again", tx.send("another")).await.unwrap();
        let first = events(tx.id(), "message reached no subscriber (further ones of this type are logged at DEBUG)");
        let later = events(tx.id(), "message reached no subscriber");
        assert_eq!((first.len(), later.len()), (1, 1));
        assert_eq!((first[0].level, later[0].level), (Level::WARN, Level::DEBUG));
        assert_eq!(first[0].fields["type_name"], "&str");

        // A full queue in broadcast mode.
        let (small_tx, small) = Relay::channel_with_size(1);
        let _slow = small.subscribe::<u8>();
        within(WAIT, "fills the queue", small_tx.send(1u8)).await.unwrap();
        within(WAIT, "misses", small_tx.send(2u8)).await.unwrap();
        let dropped = events(small_tx.id(), "message dropped: the subscriber's queue is full");
        assert_eq!((dropped.len(), dropped[0].level), (1, Level::WARN));

        // A handler whose task is lost.
        let spawner = DroppingLater::default();
        let (lost_tx, lost) = Relay::builder().spawner(spawner.clone()).build().unwrap();
        lost.sink::<u8>(|_| ());
        spawner.drop_all();
        wait_until(WAIT, "the loss logged", || !events(lost_tx.id(), "handler task lost").is_empty()).await;
        let logged = events(lost_tx.id(), "handler task lost");
        assert_eq!((logged.len(), logged[0].level), (1, Level::ERROR));
        assert_eq!(logged[0].fields["reason"], "NeverStarted");
    }

    async fn a_failure_behind_a_tracking_boundary_is_logged_in_the_handlers_span() {
        records();
        let (tx, rx) = Relay::channel();
        let child = rx.map::<u32, u64>(|n| u64::from(*n));
        child.sink::<u64>(|_| Err("behind map"));
        within(WAIT, "the send (Ok: map is a boundary)", tx.send(1u32)).await.unwrap();
        wait_until(WAIT, "the failure logged", || !events(child.id(), "handler failed").is_empty()).await;
        let failed = events(child.id(), "handler failed");
        let sink = the_span("pipedream.sink", child.id()).await;
        assert_eq!(failed[0].span, Some(sink.id), "{failed:?}");
    }
}
