//! The NATS bridge against a real `nats-server` (Debian's package), started per test on
//! 127.0.0.1 on a free port and stopped by its process id. Without the binary each test
//! prints why it is skipped and passes; with `PIPEDREAM_REQUIRE_SERVERS=1` (set by
//! `.ci/run`) a missing binary fails instead.
#![cfg(feature = "nats")]

#[macro_use]
mod common;

use std::io::Write;

use futures::StreamExt;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, frame, free_port, next_bridge_error, within, STEP};
use pipedream_rs::bridge::nats::NatsBridge;
use pipedream_rs::bridge::BridgeError;
use pipedream_rs::{Dropped, HandlerKind, Relay, RelayError, SendError};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    item: String,
}

/// A `nats-server` child process on 127.0.0.1; killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    config: std::path::PathBuf,
}

/// Debian's `nats-server`, or `None` with the reason (see `common::server_binary`).
fn server_binary() -> Option<String> {
    common::server_binary("NATS_SERVER", "nats-server")
}

impl Server {
    /// Starts a server, or `None` (with the reason printed) if there is no binary.
    fn start(max_payload: Option<usize>) -> Option<Server> {
        Server::start_with(max_payload, false)
    }

    /// A server with JetStream, its file store in a directory of its own (kept across
    /// a kill and restart, removed on drop).
    fn start_with_jetstream() -> Option<Server> {
        Server::start_with(None, true)
    }

    fn start_with(max_payload: Option<usize>, jetstream: bool) -> Option<Server> {
        server_binary()?;
        let port = free_port();
        let config = std::env::temp_dir().join(format!("pipedream-nats-{port}.conf"));
        let mut file = std::fs::File::create(&config).unwrap();
        writeln!(file, "listen: 127.0.0.1:{port}").unwrap();
        if let Some(max) = max_payload {
            writeln!(file, "max_payload: {max}").unwrap();
        }
        if jetstream {
            let store = std::env::temp_dir().join(format!("pipedream-nats-{port}-store"));
            let _ = std::fs::remove_dir_all(&store);
            writeln!(
                file,
                "jetstream {{ store_dir: {:?} }}",
                store.display().to_string()
            )
            .unwrap();
        }
        let mut server = Server {
            child: None,
            port,
            config,
        };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let binary = server_binary().unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (by its pid) and waits until the port is free.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.config);
        let store = std::env::temp_dir().join(format!("pipedream-nats-{}-store", self.port));
        let _ = std::fs::remove_dir_all(store);
    }
}

/// Sleeps on any runtime.
async fn pause(dur: Duration) {
    async_io::Timer::after(dur).await;
}

/// Publishes raw bytes on a subject, with a plain client on a runtime of its own.
fn publish_raw(url: &str, subject: &str, payload: Vec<u8>) {
    let (url, subject) = (url.to_owned(), subject.to_owned());
    // On a thread of its own: the test may itself be running inside a tokio runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(bounded(async {
            let client = async_nats::connect(url).await.unwrap();
            client.publish(subject, payload.into()).await.unwrap();
            client.flush().await.unwrap();
        }));
    })
    .join()
    .unwrap();
}

/// `fut`, failing after [`STEP`]: for the work a test does on a tokio runtime of its own
/// (a helper thread's `block_on`), which the test body's own timeout cannot reach.
async fn bounded<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("timed out: work on the test's own tokio runtime")
}

on_every_runtime! {
    async fn typed_messages_cross_between_two_relays_once_each_way() {
        let Some(server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect a", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
        let b = within(STEP, "connect b", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        for bridge in [&a, &b] {
            bridge.export::<Order>("shop.order").unwrap();
            within(STEP, "import", bridge.import::<Order>("shop.order")).await.unwrap();
        }
        let mut on_a = a_rx.subscribe::<Order>();
        let mut on_b = b_rx.subscribe::<Order>();

        let tea = Order { id: 1, item: "tea".into() };
        a_tx.send(tea.clone()).await.unwrap();
        assert_eq!(*within(STEP, "a's own copy", on_a.recv()).await.unwrap(), tea);
        assert_eq!(*within(STEP, "b's copy", on_b.recv()).await.unwrap(), tea);

        let jam = Order { id: 2, item: "jam".into() };
        b_tx.send(jam.clone()).await.unwrap();
        assert_eq!(*within(STEP, "b's own copy", on_b.recv()).await.unwrap(), jam);
        assert_eq!(*within(STEP, "a's copy", on_a.recv()).await.unwrap(), jam);

        // No echo: each side saw each message once, and each bridge skipped its own
        // publications when the server echoed them.
        within(STEP, "flush a", a.flush()).await.unwrap();
        within(STEP, "flush b", b.flush()).await.unwrap();
        eventually("both echoes seen", || a.stats().echoes == 1 && b.stats().echoes == 1).await;
        pause(Duration::from_millis(100)).await;
        assert!(on_a.try_recv().is_err(), "nothing more on a");
        assert!(on_b.try_recv().is_err(), "nothing more on b");
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.exported, sa.imported, sb.exported, sb.imported), (1, 1, 1, 1));
    }

    async fn a_message_published_as_soon_as_import_returns_arrives() {
        // `import` returns once the server has the subscription, not once it was written
        // to the socket: a publication from another connection right after must arrive.
        let Some(server) = Server::start(None) else { return };
        for round in 0..20u64 {
            let (a_tx, a_rx) = Relay::channel();
            let (_b_tx, b_rx) = Relay::channel();
            let a = within(STEP, "connect", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
            let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
            let mut on_b = b_rx.subscribe::<Order>();
            let name = format!("fresh.r{round}");
            a.export::<Order>(&name).unwrap();
            within(STEP, "import", b.import::<Order>(&name)).await.unwrap();
            a_tx.send(Order { id: round, item: name }).await.unwrap();
            let got = within(STEP, "the first message", on_b.recv()).await.unwrap();
            assert_eq!(got.id, round);
        }
    }

    async fn two_bridges_on_one_relay_do_not_pass_imports_back_and_forth() {
        let Some(server) = Server::start(None) else { return };
        let (tx, rx) = Relay::channel();
        let (far_tx, far_rx) = Relay::channel();
        let one = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        let two = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        let far = within(STEP, "connect", NatsBridge::connect(server.url(), &far_rx)).await.unwrap();
        for bridge in [&one, &two] {
            bridge.export::<Order>("o").unwrap();
            within(STEP, "import", bridge.import::<Order>("o")).await.unwrap();
        }
        far.export::<Order>("o").unwrap();
        let mut here = rx.subscribe::<Order>();
        far_tx.send(Order { id: 9, item: "far".into() }).await.unwrap();
        // Both bridges import it (two subscriptions), neither exports it again.
        for _ in 0..2 {
            assert_eq!(within(STEP, "an import", here.recv()).await.unwrap().id, 9);
        }
        within(STEP, "flush", far.flush()).await.unwrap();
        pause(Duration::from_millis(200)).await;
        assert!(here.try_recv().is_err(), "no message circled back");
        assert_eq!(one.stats().exported + two.stats().exported, 0);
        // A local send goes out through both bridges and comes back to neither.
        tx.send(Order { id: 10, item: "here".into() }).await.unwrap();
        assert_eq!(within(STEP, "local", here.recv()).await.unwrap().id, 10);
        eventually("both exported", || one.stats().exported == 1 && two.stats().exported == 1).await;
        within(STEP, "flush", one.flush()).await.unwrap();
        within(STEP, "flush", two.flush()).await.unwrap();
        pause(Duration::from_millis(200)).await;
        assert!(here.try_recv().is_err(), "the relay's own frames are skipped");
    }

    async fn an_imported_message_does_not_circle_through_a_forward_pair() {
        let Some(server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (b_tx, b_rx) = Relay::channel();
        let (far_tx, far_rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
        let far = within(STEP, "connect", NatsBridge::connect(server.url(), &far_rx)).await.unwrap();
        within(STEP, "import", a.import::<Order>("o")).await.unwrap();
        far.export::<Order>("o").unwrap();
        let _ab = a_rx.forward_detached(&b_tx);
        let _ba = b_rx.forward_detached(&a_tx);
        let mut on_a = a_rx.subscribe::<Order>();
        let mut on_b = b_rx.subscribe::<Order>();
        far_tx.send(Order { id: 4, item: "far".into() }).await.unwrap();
        assert_eq!(within(STEP, "on a", on_a.recv()).await.unwrap().id, 4);
        assert_eq!(within(STEP, "on b", on_b.recv()).await.unwrap().id, 4);
        pause(Duration::from_millis(200)).await;
        assert!(on_a.try_recv().is_err(), "it came back to a");
        assert!(on_b.try_recv().is_err(), "it came back to b");
    }

    async fn a_relay_cannot_export_and_import_one_name_tracked() {
        let Some(server) = Server::start(None) else { return };
        let (_tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_tracked::<Order>("t").unwrap();
        let both = within(STEP, "import", a.import_tracked::<Order>("t")).await;
        assert!(matches!(both, Err(BridgeError::AlreadyBridged { .. })), "{both:?}");
        within(STEP, "untracked import", a.import::<Order>("t")).await.unwrap();
    }

    async fn tracked_exports_both_ways_between_two_relays_do_not_wait_on_each_other() {
        let Some(server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::builder(server.url())
            .request_timeout(Duration::from_secs(5))
            .connect(&a_rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::builder(server.url())
            .request_timeout(Duration::from_secs(5))
            .connect(&b_rx)).await.unwrap();
        a_rx.sink::<Order>(|_: &Order| Ok::<(), String>(()));
        b_rx.sink::<Order>(|_: &Order| Ok::<(), String>(()));
        a.export_tracked::<Order>("ab").unwrap();
        within(STEP, "import", b.import_tracked::<Order>("ab")).await.unwrap();
        b.export_tracked::<Order>("ba").unwrap();
        within(STEP, "import", a.import_tracked::<Order>("ba")).await.unwrap();
        // Each import waits for its relay's tracked handlers, the other export among them:
        // that export must not keep the import waiting behind its own request.
        let started = Instant::now();
        let (x, y) = futures::join!(
            a_tx.send(Order { id: 1, item: "a".into() }),
            b_tx.send(Order { id: 2, item: "b".into() }),
        );
        assert!(x.is_ok() && y.is_ok(), "{x:?} {y:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "they waited on each other");
        assert!(a.stats().skipped >= 1 && b.stats().skipped >= 1);
    }

    async fn a_tracked_send_returns_after_the_remote_handler_and_brings_its_error_back() {
        let Some(server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (_b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = done.clone();
        b_rx.sink::<Order>(move |order: &Order| {
            if order.item == "poison" {
                return Err(format!("order {} is poison", order.id));
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        within(STEP, "import", b.import_tracked::<Order>("jobs")).await.unwrap();
        a.export_tracked::<Order>("jobs").unwrap();

        let ok = within(STEP, "tracked send", a_tx.send(Order { id: 1, item: "tea".into() })).await;
        assert!(ok.is_ok(), "{ok:?}");
        // Returned only after the remote handler ran.
        assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 1);

        let failed = within(STEP, "tracked send", a_tx.send(Order { id: 2, item: "poison".into() })).await;
        let Err(SendError::Downstream(error)) = failed else { panic!("{failed:?}") };
        assert_eq!(error.kind, HandlerKind::Bridge);
        match error.error.downcast_ref::<BridgeError>() {
            Some(BridgeError::Remote { relay, errors }) => {
                assert_eq!(*relay, b.wire_id(), "the error names the remote relay");
                assert!(errors.iter().any(|e| e.contains("order 2 is poison")), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.stats().remote_failures, 1);
    }

    async fn a_tracked_send_nobody_imports_fails_with_no_responders() {
        let Some(server) = Server::start(None) else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_tracked::<Order>("nobody").unwrap();
        let sent = within(STEP, "send", tx.send(Order { id: 1, item: "x".into() })).await;
        let Err(SendError::Downstream(error)) = sent else { panic!("{sent:?}") };
        assert!(
            matches!(error.error.downcast_ref::<BridgeError>(), Some(BridgeError::NoResponders { .. })),
            "{error:?}"
        );
    }

    async fn a_tracked_send_with_no_answer_in_time_is_a_timeout_not_ok() {
        let Some(server) = Server::start(None) else { return };
        let (tx, rx) = Relay::channel();
        let (_b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::builder(server.url())
            .request_timeout(Duration::from_millis(200))
            .connect(&rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        b_rx.sink_async::<Order>(|_order: std::sync::Arc<Order>| async move {
            pause(Duration::from_millis(1_000)).await;
            Ok::<(), String>(())
        });
        within(STEP, "import", b.import_tracked::<Order>("slow")).await.unwrap();
        a.export_tracked::<Order>("slow").unwrap();
        let sent = within(STEP, "send", tx.send(Order { id: 1, item: "x".into() })).await;
        let Err(SendError::Downstream(error)) = sent else { panic!("{sent:?}") };
        match error.error.downcast_ref::<BridgeError>() {
            Some(e @ BridgeError::Timeout { after, .. }) => {
                assert_eq!(*after, Duration::from_millis(200));
                assert!(e.to_string().contains("outcome unknown"));
            }
            other => panic!("{other:?}"),
        }
    }

    async fn bad_payloads_and_unknown_names_are_reported_and_the_bridge_goes_on() {
        let Some(server) = Server::start(None) else { return };
        let (_tx, rx) = Relay::channel();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        within(STEP, "import", b.import::<Order>("shop.order")).await.unwrap();
        let mut errors = rx.subscribe::<RelayError>();
        let mut orders = rx.subscribe::<Order>();
        let subject = "pipedream.msg.shop.order";
        let url = server.url();

        publish_raw(&url, subject, b"not a frame at all".to_vec());
        let e = next_bridge_error(&mut errors).await;
        assert!(matches!(&e, BridgeError::Decode { subject: s, .. } if s == subject), "{e:?}");

        publish_raw(&url, subject, frame(1, 1, "shop.order", &[0xff, 0xff, 0xff]));
        let e = next_bridge_error(&mut errors).await;
        assert!(matches!(&e, BridgeError::Decode { .. }), "{e:?}");

        publish_raw(&url, subject, frame(1, 2, "shop.refund", &[1, 0]));
        let e = next_bridge_error(&mut errors).await;
        assert!(
            matches!(&e, BridgeError::UnknownType { name, .. } if name == "shop.refund"),
            "{e:?}"
        );

        // Still running: a good frame (postcard of Order { id: 5, item: "ok" }) arrives.
        let good = postcard::to_allocvec(&Order { id: 5, item: "ok".into() }).unwrap();
        publish_raw(&url, subject, frame(1, 3, "shop.order", &good));
        assert_eq!(within(STEP, "the good one", orders.recv()).await.unwrap().id, 5);
        assert_eq!(b.stats().failed_in, 3);
    }

    async fn a_codec_that_panics_is_reported_and_the_import_goes_on() {
        struct Touchy;
        impl pipedream_rs::bridge::Codec<Order> for Touchy {
            fn encode(&self, value: &Order) -> Result<Vec<u8>, pipedream_rs::bridge::CodecError> {
                pipedream_rs::bridge::Codec::<Order>::encode(&pipedream_rs::bridge::Postcard, value)
            }
            fn decode(&self, bytes: &[u8]) -> Result<Order, pipedream_rs::bridge::CodecError> {
                if bytes.first() == Some(&0xEE) {
                    panic!("touchy codec");
                }
                pipedream_rs::bridge::Codec::<Order>::decode(&pipedream_rs::bridge::Postcard, bytes)
            }
        }
        let Some(server) = Server::start(None) else { return };
        let (_tx, rx) = Relay::channel();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        within(STEP, "import", b.import_with::<Order>("touchy", Touchy)).await.unwrap();
        let mut errors = rx.subscribe::<RelayError>();
        let mut orders = rx.subscribe::<Order>();
        let subject = "pipedream.msg.touchy";
        publish_raw(&server.url(), subject, frame(1, 1, "touchy", &[0xEE]));
        let e = next_bridge_error(&mut errors).await;
        assert!(
            matches!(&e, BridgeError::Decode { reason, .. } if reason.contains("touchy codec")),
            "{e:?}"
        );
        let good = postcard::to_allocvec(&Order { id: 6, item: "ok".into() }).unwrap();
        publish_raw(&server.url(), subject, frame(1, 2, "touchy", &good));
        assert_eq!(within(STEP, "the good one", orders.recv()).await.unwrap().id, 6);
    }

    async fn a_message_over_the_servers_limit_is_reported_and_not_sent() {
        let Some(server) = Server::start(Some(1024)) else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        a.export::<Order>("big").unwrap();
        let mut errors = rx.subscribe::<RelayError>();
        tx.send(Order { id: 1, item: "x".repeat(4096) }).await.unwrap();
        let e = next_bridge_error(&mut errors).await;
        match e {
            BridgeError::TooLarge { size, limit, .. } => {
                assert_eq!(limit, 1024);
                assert!(size > 4096);
            }
            other => panic!("{other:?}"),
        }
        tx.send(Order { id: 2, item: "small".into() }).await.unwrap();
        eventually("the small one exported", || a.stats().exported == 1).await;
        assert_eq!(a.stats().failed_out, 1);
    }

    async fn a_broker_restart_reports_what_could_not_be_sent_and_reconnects() {
        let Some(mut server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (_b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        a.export::<Order>("r").unwrap();
        within(STEP, "import", b.import::<Order>("r")).await.unwrap();
        let mut on_b = b_rx.subscribe::<Order>();
        let mut dropped = a_rx.subscribe::<Dropped>();
        a_tx.send(Order { id: 1, item: "before".into() }).await.unwrap();
        assert_eq!(within(STEP, "before", on_b.recv()).await.unwrap().id, 1);

        server.stop();
        // The client notices the broken connection; from then on nothing is published.
        let mut lost = 0;
        let deadline = Instant::now() + STEP;
        while lost == 0 {
            assert!(Instant::now() < deadline, "no Dropped while the server was down");
            a_tx.send(Order { id: 2, item: "during".into() }).await.unwrap();
            pause(Duration::from_millis(50)).await;
            while let Ok(d) = dropped.try_recv() {
                assert_eq!(d.type_name, std::any::type_name::<Order>());
                lost += 1;
            }
        }
        assert!(a.stats().dropped >= lost);

        server.launch();
        // Reconnected (both clients, and b's subscription renewed): a message gets through.
        let deadline = Instant::now() + STEP * 2;
        loop {
            assert!(Instant::now() < deadline, "no message got through after the restart");
            a_tx.send(Order { id: 3, item: "after".into() }).await.unwrap();
            if let Some(Some(order)) = common::timeout(Duration::from_millis(200), on_b.recv()).await {
                if order.id == 3 {
                    break;
                }
            }
        }
    }

    async fn a_slow_consumer_is_reported_not_silent() {
        let Some(server) = Server::start(None) else { return };
        let (a_tx, a_rx) = Relay::channel();
        // b delivers losslessly into a queue of one that nobody reads: its import stalls,
        // the client's buffer of 4 fills, and the client drops what follows.
        let (_b_tx, b_rx) = Relay::builder()
            .delivery_mode(pipedream_rs::DeliveryMode::Lossless)
            .channel_size(1)
            .build()
            .unwrap();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &a_rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::builder(server.url())
            .subscription_capacity(4)
            .connect(&b_rx)).await.unwrap();
        let _stalled = b_rx.subscribe::<Order>();
        let mut errors = b_rx.subscribe_with::<RelayError>(
            pipedream_rs::SubscribeOptions::new().mode(pipedream_rs::DeliveryMode::Broadcast),
        ).unwrap();
        let mut dropped = b_rx.subscribe_with::<Dropped>(
            pipedream_rs::SubscribeOptions::new().mode(pipedream_rs::DeliveryMode::Broadcast),
        ).unwrap();
        within(STEP, "import", b.import::<Order>("flood")).await.unwrap();
        a.export::<Order>("flood").unwrap();
        for id in 0..200 {
            a_tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        within(STEP, "flush", a.flush()).await.unwrap();
        let e = next_bridge_error(&mut errors).await;
        assert!(matches!(e, BridgeError::SlowConsumer { .. }), "{e:?}");
        eventually("counted", || b.stats().slow_consumer >= 1).await;
        // Each message the client dropped is also a `Dropped` event, as any miss.
        let d = within(STEP, "a Dropped event", dropped.recv()).await.unwrap();
        assert_eq!(d.type_name, pipedream_rs::bridge::nats::DROPPED_BY_CLIENT);
        assert_eq!((d.msg_id, d.relay_id), (0, b_rx.id()));
    }

    async fn a_jetstream_stream_reaches_every_group_once_and_shares_each_group_s_messages() {
        let Some(server) = Server::start_with_jetstream() else { return };
        let (tx, rx) = Relay::channel();
        let exporter = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        let mut relays = Vec::new();
        for group in ["billing", "billing", "audit"] {
            let (keep, rx) = Relay::channel();
            let bridge = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
            let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink_got = got.clone();
            rx.sink::<Order>(move |o: &Order| sink_got.lock().unwrap().push(o.id));
            within(STEP, "import", bridge.import_stream::<Order>("jobs", group)).await.unwrap();
            relays.push((bridge, got, keep, rx));
        }
        exporter.export_stream::<Order>("jobs").unwrap();
        for id in 0..40 {
            tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        eventually("audit got all 40", || relays[2].1.lock().unwrap().len() == 40).await;
        assert_eq!(*relays[2].1.lock().unwrap(), (0..40).collect::<Vec<_>>(), "in order");
        eventually("billing shared all 40", || {
            relays[0].1.lock().unwrap().len() + relays[1].1.lock().unwrap().len() == 40
        }).await;
        let mut billing: Vec<u64> = relays[0].1.lock().unwrap().clone();
        billing.extend(relays[1].1.lock().unwrap().iter());
        billing.sort_unstable();
        assert_eq!(billing, (0..40).collect::<Vec<_>>(), "each once within the group");
        eventually("all 40 acknowledged by the server", || exporter.stats().exported == 40).await;
    }

    async fn a_jetstream_stream_loses_nothing_when_the_server_is_killed_and_restarted() {
        let Some(mut server) = Server::start_with_jetstream() else { return };
        let (tx, rx) = Relay::channel();
        let (_far_tx, far_rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        // Publications the server does not acknowledge within 1 s are retried.
        let a = NatsBridge::builder(server.url()).request_timeout(Duration::from_secs(1));
        let a = within(STEP, "connect", a.connect(&rx)).await.unwrap();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &far_rx)).await.unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let sink_got = got.clone();
        far_rx.sink::<Order>(move |o: &Order| { sink_got.lock().unwrap().insert(o.id); });
        within(STEP, "import", b.import_stream::<Order>("ledger", "books")).await.unwrap();
        a.export_stream::<Order>("ledger").unwrap();
        for id in 0..30 {
            tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        eventually("the first 30", || got.lock().unwrap().len() == 30).await;
        server.stop();
        for id in 30..60 {
            tx.send(Order { id, item: String::new() }).await.unwrap(); // waits in the export
        }
        // The connection's own failure comes first; then the export's retrying.
        loop {
            match next_bridge_error(&mut errors).await {
                BridgeError::Retrying { subject, .. } => {
                    assert_eq!(subject, "pipedream.stream.ledger");
                    break;
                }
                BridgeError::Publish { subject, .. } if subject == "(connection)" => {}
                other => panic!("expected Retrying, got {other:?}"),
            }
        }
        assert_eq!(a.stats().dropped, 0, "a stream export drops nothing while the server is down");
        server.launch();
        let deadline = Instant::now() + STEP * 2;
        while got.lock().unwrap().len() < 60 {
            assert!(Instant::now() < deadline, "only {} of 60 arrived", got.lock().unwrap().len());
            pause(Duration::from_millis(50)).await;
        }
        assert_eq!(*got.lock().unwrap(), (0..60).collect());
        assert_eq!(a.stats().dropped, 0);
    }

    async fn a_jetstream_message_nobody_takes_waits_and_a_failing_handler_s_is_not_redelivered() {
        let Some(server) = Server::start_with_jetstream() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        let mut errors = b_rx.subscribe::<RelayError>();
        // A short ack wait: a handled message that was not acknowledged would come back.
        let b = NatsBridge::builder(server.url()).ack_wait(Duration::from_millis(300));
        let b = within(STEP, "connect", b.connect(&b_rx)).await.unwrap();
        within(STEP, "import", b.import_stream_entries::<Order>("later", "g")).await.unwrap();
        a.export_stream::<Order>("later").unwrap();
        for id in 0..3 {
            tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        match next_bridge_error(&mut errors).await {
            BridgeError::Retrying { reason, .. } => assert!(reason.contains("no subscriber"), "{reason}"),
            other => panic!("expected Retrying (unrouted), got {other:?}"),
        }
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_got = got.clone();
        b_rx.sink::<pipedream_rs::bridge::StreamEntry<Order>>(move |e: &pipedream_rs::bridge::StreamEntry<Order>| {
            sink_got.lock().unwrap().push((e.value.id, e.origin, e.redelivered));
            if e.value.id == 1 { Err("order 1 is refused") } else { Ok(()) }
        });
        eventually("all three handled", || got.lock().unwrap().len() >= 3).await;
        let seen = got.lock().unwrap().clone();
        let mut ids: Vec<u64> = seen.iter().map(|(id, ..)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(seen.iter().all(|(_, origin, again)| *origin == a.wire_id() && !again), "{seen:?}");
        // Acknowledged although its handler failed: not delivered again after ack_wait.
        pause(Duration::from_millis(1_000)).await;
        assert_eq!(got.lock().unwrap().len(), 3, "no redelivery of a handled message");
        assert_eq!(b.stats().redelivered, 0);
    }

    async fn a_jetstream_consumer_that_goes_away_is_made_again_and_nothing_is_skipped() {
        let Some(server) = Server::start_with_jetstream() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        let mut errors = b_rx.subscribe::<RelayError>();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_got = got.clone();
        b_rx.sink::<Order>(move |o: &Order| sink_got.lock().unwrap().push(o.id));
        a.export_stream::<Order>("gone").unwrap();
        within(STEP, "import", b.import_stream::<Order>("gone", "g")).await.unwrap();
        for id in 0..3 {
            tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        eventually("the first three", || got.lock().unwrap().len() == 3).await;
        // Someone deletes the group's consumer behind the bridge's back.
        let url = server.url();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(bounded(async {
                let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
                let stream = js.get_stream("pipedream_sgone").await.unwrap();
                stream.delete_consumer("g").await.unwrap();
            }));
        }).join().unwrap();
        for id in 3..6 {
            tx.send(Order { id, item: String::new() }).await.unwrap();
        }
        match next_bridge_error(&mut errors).await {
            BridgeError::Retrying { reason, .. } => assert!(reason.contains("made again"), "{reason}"),
            other => panic!("expected Retrying (the consumer made again), got {other:?}"),
        }
        // Made again from the stream's first message: the first three come again, and
        // nothing after them is skipped.
        let deadline = Instant::now() + STEP * 2;
        loop {
            let seen = got.lock().unwrap().clone();
            let count = |id: u64| seen.iter().filter(|&&x| x == id).count();
            if (0..3).all(|id| count(id) >= 2) && (3..6).all(|id| count(id) >= 1) {
                break;
            }
            assert!(Instant::now() < deadline, "got only {seen:?}");
            pause(Duration::from_millis(50)).await;
        }
    }

    async fn a_jetstream_message_taken_and_not_acknowledged_is_delivered_again() {
        let Some(server) = Server::start_with_jetstream() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        // A member of "crew" takes a message and never acknowledges it (with an ack wait
        // of 300 ms): the consumer is made here, by hand.
        let url = server.url();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(bounded(async {
                let client = async_nats::connect(url).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js.get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "pipedream_swork".into(),
                    subjects: vec!["pipedream.stream.work".into()],
                    ..Default::default()
                }).await.unwrap();
                let consumer = stream.get_or_create_consumer("crew", async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("crew".into()),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
                    ack_wait: Duration::from_millis(300),
                    ..Default::default()
                }).await.unwrap();
                taken_tx.send(()).unwrap();
                let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5))
                    .messages().await.unwrap();
                let message = batch.next().await.unwrap().unwrap();
                drop(message); // taken, never acknowledged
            }));
        });
        taken_rx.recv_timeout(STEP).unwrap();
        a.export_stream::<Order>("work").unwrap();
        tx.send(Order { id: 7, item: String::new() }).await.unwrap();
        holder.join().unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        let b = within(STEP, "connect", NatsBridge::connect(server.url(), &b_rx)).await.unwrap();
        let mut entries = b_rx.subscribe_tracked::<pipedream_rs::bridge::StreamEntry<Order>>();
        within(STEP, "import", b.import_stream_entries::<Order>("work", "crew")).await.unwrap();
        let entry = within(STEP, "the redelivered message", entries.recv()).await.unwrap();
        assert_eq!((entry.value().value.id, entry.value().redelivered), (7, true));
        assert_eq!(entry.value().origin, a.wire_id());
        entry.complete();
        eventually("counted", || b.stats().redelivered == 1).await;
    }

    async fn bad_names_are_refused_and_a_name_is_bridged_once_per_direction() {
        let Some(server) = Server::start(None) else { return };
        let (_tx, rx) = Relay::channel();
        let a = within(STEP, "connect", NatsBridge::connect(server.url(), &rx)).await.unwrap();
        assert!(matches!(a.export::<Order>("has space"), Err(BridgeError::InvalidName { .. })));
        assert!(matches!(a.export::<Order>("wild.*"), Err(BridgeError::InvalidName { .. })));
        a.export::<Order>("o").unwrap();
        assert!(matches!(a.export::<Order>("o"), Err(BridgeError::AlreadyBridged { .. })));
        within(STEP, "import", a.import::<Order>("o")).await.unwrap();
        let bad_prefix = NatsBridge::builder(server.url()).prefix("a..b").connect(&rx).await;
        assert!(matches!(bad_prefix, Err(BridgeError::InvalidName { .. })));
        let nobody = NatsBridge::connect("nats://127.0.0.1:1", &rx).await;
        assert!(matches!(nobody, Err(BridgeError::Connect(_))), "{nobody:?}");
    }
}

/// The bridge's tasks live on the tokio runtime it was made in; when that runtime shuts
/// down while the relay lives on, each is reported lost, never silently gone.
#[test]
fn a_bridge_whose_runtime_shuts_down_is_reported_as_lost_handlers() {
    let Some(server) = Server::start(None) else {
        return;
    };
    let (_tx, rx) = Relay::channel();
    let mut lost = rx.subscribe::<pipedream_rs::HandlerLost>();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bridge = runtime.block_on(bounded(async {
        let bridge = NatsBridge::connect(server.url(), &rx).await.unwrap();
        bridge.export::<Order>("gone.rt").unwrap();
        bridge.import::<Order>("gone.rt").await.unwrap();
        bridge
    }));
    drop(runtime); // the bridge's handle lives on: its tasks' end was not asked for
    let reports = futures::executor::block_on(async {
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let report = within(STEP, "a HandlerLost", lost.recv()).await.unwrap();
            kinds.push((report.kind, report.type_name));
        }
        kinds
    });
    for (kind, type_name) in reports {
        assert_eq!(kind, HandlerKind::Bridge);
        assert_eq!(type_name, std::any::type_name::<Order>());
    }
    assert_eq!(
        rx.stats().handlers_lost,
        2,
        "the export and the import, once each"
    );
    drop(bridge);
}
