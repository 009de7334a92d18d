//! The Redis bridge against a real `redis-server` (Debian's package), started per test on
//! 127.0.0.1 on a free port, with an append-only file synced on every write (so a killed
//! server restarts with what it acknowledged), and stopped by its process id. Without
//! the binary each test prints why it is skipped and passes; with
//! `PIPEDREAM_REQUIRE_SERVERS=1` (set by `.ci/run`) a missing binary fails instead.
#![cfg(feature = "redis")]

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, frame, free_port, next_bridge_error, sleep, within, STEP};
use pipedream_rs::bridge::redis::{RedisBridge, StreamEntry};
use pipedream_rs::bridge::BridgeError;
use pipedream_rs::{Dropped, HandlerKind, Relay, RelayError};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    item: String,
}

fn order(id: u64) -> Order {
    Order {
        id,
        item: format!("item {id}"),
    }
}

/// A `redis-server` child process on 127.0.0.1; killed on drop, its files removed.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    extra: Vec<String>,
}

/// Debian's `redis-server`, or `None` with the reason (see `common::server_binary`).
fn server_binary() -> Option<String> {
    common::server_binary("REDIS_SERVER", "redis-server")
}

impl Server {
    /// Starts a server, or `None` (with the reason printed) if there is no binary.
    fn start() -> Option<Server> {
        Server::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Option<Server> {
        server_binary()?;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pipedream-redis-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.launch();
        Some(server)
    }

    fn launch(&mut self) {
        let binary = server_binary().unwrap();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(mut conn) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, by its pid): what it acknowledged is in its file.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "redis-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain (blocking) connection, for what the test does behind the bridge's back.
    /// Its reads and writes time out after [`STEP`]: it blocks the test's thread, where
    /// the test body's own timeout cannot reach.
    fn raw(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let conn = client.get_connection_with_timeout(STEP).unwrap();
        conn.set_read_timeout(Some(STEP)).unwrap();
        conn.set_write_timeout(Some(STEP)).unwrap();
        conn
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes `n` messages from `sub` (each within [`STEP`]).
async fn take_ids(sub: &mut pipedream_rs::Subscription<Order>, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(within(STEP, "a message", sub.recv()).await.unwrap().id);
    }
    ids
}

on_every_runtime! {
    async fn pubsub_messages_cross_between_two_relays_once_each_way() {
        let Some(server) = Server::start() else { return };
        let (a_tx, a_rx) = Relay::channel();
        let (b_tx, b_rx) = Relay::channel();
        let a = within(STEP, "connect a", RedisBridge::connect(server.url(), &a_rx)).await.unwrap();
        let b = within(STEP, "connect b", RedisBridge::connect(server.url(), &b_rx)).await.unwrap();
        for bridge in [&a, &b] {
            bridge.export::<Order>("shop.order").unwrap();
            within(STEP, "import", bridge.import::<Order>("shop.order")).await.unwrap();
        }
        let mut on_a = a_rx.subscribe::<Order>();
        let mut on_b = b_rx.subscribe::<Order>();

        a_tx.send(order(1)).await.unwrap();
        assert_eq!(*within(STEP, "a's own copy", on_a.recv()).await.unwrap(), order(1));
        assert_eq!(*within(STEP, "b's copy", on_b.recv()).await.unwrap(), order(1));
        b_tx.send(order(2)).await.unwrap();
        assert_eq!(*within(STEP, "b's own copy", on_b.recv()).await.unwrap(), order(2));
        assert_eq!(*within(STEP, "a's copy", on_a.recv()).await.unwrap(), order(2));

        // No echo: each bridge skipped its own publication when the server sent it back.
        eventually("both echoes seen", || a.stats().echoes == 1 && b.stats().echoes == 1).await;
        sleep(Duration::from_millis(100)).await;
        assert!(on_a.try_recv().is_err(), "nothing more on a");
        assert!(on_b.try_recv().is_err(), "nothing more on b");
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.exported, sa.imported, sb.exported, sb.imported), (1, 1, 1, 1));
    }

    async fn two_bridges_on_one_relay_do_not_pass_imports_back_and_forth() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let (far_tx, far_rx) = Relay::channel();
        let one = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        let two = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        let far = within(STEP, "connect", RedisBridge::connect(server.url(), &far_rx)).await.unwrap();
        for bridge in [&one, &two] {
            bridge.export::<Order>("o").unwrap();
            within(STEP, "import", bridge.import::<Order>("o")).await.unwrap();
        }
        far.export::<Order>("o").unwrap();
        let mut here = rx.subscribe::<Order>();
        far_tx.send(order(9)).await.unwrap();
        // Both bridges import it (two subscriptions); neither exports it again.
        for _ in 0..2 {
            assert_eq!(within(STEP, "an import", here.recv()).await.unwrap().id, 9);
        }
        sleep(Duration::from_millis(200)).await;
        assert!(here.try_recv().is_err(), "no message circled back");
        eventually("both skipped the import", || one.stats().skipped + two.stats().skipped == 4).await;
        assert_eq!(one.stats().exported + two.stats().exported, 0);
        // A local send goes out through both bridges and comes back to neither.
        tx.send(order(10)).await.unwrap();
        assert_eq!(within(STEP, "local", here.recv()).await.unwrap().id, 10);
        eventually("both exported", || one.stats().exported == 1 && two.stats().exported == 1).await;
        sleep(Duration::from_millis(200)).await;
        assert!(here.try_recv().is_err(), "its own message did not come back");
    }

    async fn a_stream_reaches_every_group_once_and_shares_each_group_s_entries() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let exporter = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        exporter.export_stream::<Order>("jobs").unwrap();
        let mut relays = Vec::new();
        for group in ["billing", "billing", "audit"] {
            let (_tx, rx) = Relay::channel();
            let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
            within(STEP, "import", bridge.import_stream::<Order>("jobs", group)).await.unwrap();
            let sub = rx.subscribe::<Order>();
            relays.push((bridge, sub, _tx));
        }
        for id in 0..40 {
            tx.send(order(id)).await.unwrap();
        }
        let audit = take_ids(&mut relays[2].1, 40).await;
        assert_eq!(audit, (0..40).collect::<Vec<_>>(), "one group gets every entry, in order");
        // The two billing consumers share the 40 entries: each exactly once.
        let mut billing = Vec::new();
        let deadline = Instant::now() + STEP;
        while billing.len() < 40 {
            assert!(Instant::now() < deadline, "billing got {} of 40", billing.len());
            for (_, sub, _) in relays.iter_mut().take(2) {
                while let Ok(o) = sub.try_recv() {
                    billing.push(o.id);
                }
            }
            sleep(Duration::from_millis(10)).await;
        }
        billing.sort_unstable();
        assert_eq!(billing, (0..40).collect::<Vec<_>>());
        // Every entry was acknowledged: none pending in either group.
        let mut raw = server.raw();
        for group in ["billing", "audit"] {
            eventually("all acknowledged", || {
                let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                    .arg("pipedream:stream:jobs").arg(group).query(&mut raw).unwrap();
                pending.0 == 0
            }).await;
        }
        eventually("all 40 appended", || exporter.stats().exported == 40).await;
    }

    async fn a_stream_loses_nothing_when_the_server_is_killed_and_restarted() {
        let Some(mut server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let (_far_tx, far_rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let mut far_errors = far_rx.subscribe::<RelayError>();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        let b = within(STEP, "connect", RedisBridge::connect(server.url(), &far_rx)).await.unwrap();
        a.export_stream::<Order>("ledger").unwrap();
        within(STEP, "import", b.import_stream::<Order>("ledger", "books")).await.unwrap();
        let mut far = far_rx.subscribe::<Order>();
        for id in 0..30 {
            tx.send(order(id)).await.unwrap();
        }
        let mut seen: BTreeSet<u64> = take_ids(&mut far, 30).await.into_iter().collect();

        server.kill();
        for id in 30..60 {
            tx.send(order(id)).await.unwrap(); // waits in the export's queue
        }
        match next_bridge_error(&mut errors).await {
            BridgeError::Retrying { subject, .. } => assert_eq!(subject, "pipedream:stream:ledger"),
            other => panic!("expected Retrying, got {other:?}"),
        }
        match next_bridge_error(&mut far_errors).await {
            BridgeError::Retrying { subject, .. } => assert_eq!(subject, "pipedream:stream:ledger"),
            other => panic!("expected Retrying, got {other:?}"),
        }
        assert_eq!(a.stats().dropped, 0, "a stream export drops nothing while the server is down");
        server.launch();

        let deadline = Instant::now() + STEP * 2;
        while seen.len() < 60 {
            assert!(Instant::now() < deadline, "only {} of 60 arrived", seen.len());
            if let Some(Some(o)) = common::timeout(Duration::from_millis(200), far.recv()).await {
                seen.insert(o.id);
            }
        }
        assert_eq!(seen, (0..60).collect::<BTreeSet<_>>());
        assert_eq!(a.stats().dropped, 0);
        eventually("all 60 appended", || a.stats().exported == 60).await;
    }

    async fn a_consumer_that_stopped_has_its_entries_claimed_and_redelivered() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_stream::<Order>("work").unwrap();
        let key = "pipedream:stream:work";
        let mut raw = server.raw();
        let _: () = redis::cmd("XGROUP").arg("CREATE").arg(key).arg("crew").arg("$").arg("MKSTREAM")
            .query(&mut raw).unwrap();
        for id in 0..3 {
            tx.send(order(id)).await.unwrap();
        }
        eventually("three appended", || a.stats().exported == 3).await;
        // A consumer takes them and stops without acknowledging.
        let taken: redis::Value = redis::cmd("XREADGROUP").arg("GROUP").arg("crew").arg("gone")
            .arg("COUNT").arg(10).arg("STREAMS").arg(key).arg(">").query(&mut raw).unwrap();
        assert!(matches!(taken, redis::Value::Array(ref keys) if !keys.is_empty()));

        let (_b_tx, b_rx) = Relay::channel();
        let b = within(STEP, "connect", RedisBridge::builder(server.url())
            .claim_after(Duration::from_millis(100))
            .connect(&b_rx)).await.unwrap();
        let mut entries = b_rx.subscribe::<StreamEntry<Order>>();
        within(STEP, "import", b.import_stream_entries::<Order>("work", "crew")).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let entry = within(STEP * 2, "a claimed entry", entries.recv()).await.unwrap();
            assert!(entry.redelivered, "{entry:?}");
            assert_eq!(entry.origin, a.wire_id());
            got.push(entry.value.id);
        }
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2]);
        eventually("three counted as redelivered", || b.stats().redelivered == 3).await;
        // New entries come as first deliveries.
        tx.send(order(3)).await.unwrap();
        let entry = within(STEP, "a new entry", entries.recv()).await.unwrap();
        assert_eq!((entry.value.id, entry.redelivered), (3, false));
    }

    async fn a_restarted_consumer_takes_back_its_own_pending_entries_at_once() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_stream::<Order>("own").unwrap();
        let key = "pipedream:stream:own";
        let mut raw = server.raw();
        let _: () = redis::cmd("XGROUP").arg("CREATE").arg(key).arg("crew").arg("$").arg("MKSTREAM")
            .query(&mut raw).unwrap();
        tx.send(order(7)).await.unwrap();
        eventually("appended", || a.stats().exported == 1).await;
        // "worker-1" took it in an earlier life and did not acknowledge it.
        let _: redis::Value = redis::cmd("XREADGROUP").arg("GROUP").arg("crew").arg("worker-1")
            .arg("STREAMS").arg(key).arg(">").query(&mut raw).unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        // The default claim_after (30 s) is far away: only its own name brings it back now.
        let b = within(STEP, "connect", RedisBridge::builder(server.url()).consumer("worker-1")
            .connect(&b_rx)).await.unwrap();
        let mut entries = b_rx.subscribe::<StreamEntry<Order>>();
        within(STEP, "import", b.import_stream_entries::<Order>("own", "crew")).await.unwrap();
        let entry = within(STEP, "its own entry", entries.recv()).await.unwrap();
        assert_eq!((entry.value.id, entry.redelivered, entry.origin), (7, true, a.wire_id()));
        eventually("acknowledged", || {
            let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                .arg(key).arg("crew").query(&mut raw).unwrap();
            pending.0 == 0
        }).await;
    }

    async fn a_failing_handler_is_reported_and_its_entry_acknowledged_not_redelivered() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_stream::<Order>("strict").unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        let mut errors = b_rx.subscribe::<RelayError>();
        b_rx.sink::<Order>(|o: &Order| if o.id == 1 { Err("order 1 is refused") } else { Ok(()) });
        let b = within(STEP, "connect", RedisBridge::builder(server.url())
            .claim_after(Duration::from_millis(50)).connect(&b_rx)).await.unwrap();
        within(STEP, "import", b.import_stream::<Order>("strict", "g")).await.unwrap();
        let mut after = b_rx.subscribe::<Order>();
        for id in 0..3 {
            tx.send(order(id)).await.unwrap();
        }
        assert_eq!(take_ids(&mut after, 3).await, vec![0, 1, 2]);
        let error = within(STEP, "the handler's error", errors.recv()).await.unwrap();
        assert_eq!(error.kind, HandlerKind::Sink);
        assert!(error.to_string().contains("order 1 is refused") || format!("{:?}", error.error).contains("order 1 is refused"));
        // Acknowledged: not delivered again, even with a short claim time (claim passes
        // run at most each second: wait past two).
        sleep(Duration::from_millis(2_200)).await;
        assert!(after.try_recv().is_err(), "no redelivery of a processed entry");
        assert_eq!(b.stats().redelivered, 0);
    }

    async fn bad_entries_and_payloads_are_reported_and_the_bridge_goes_on() {
        let Some(server) = Server::start() else { return };
        let (_tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        within(STEP, "import", bridge.import_stream::<Order>("in", "g")).await.unwrap();
        within(STEP, "import", bridge.import::<Order>("in")).await.unwrap();
        let mut orders = rx.subscribe::<Order>();
        let mut raw = server.raw();
        let key = "pipedream:stream:in";
        let xadd = |raw: &mut redis::Connection, field: &[u8], bytes: Vec<u8>| {
            let _: String = redis::cmd("XADD").arg(key).arg("*").arg(field).arg(bytes).query(raw).unwrap();
        };
        xadd(&mut raw, b"f", b"not a frame".to_vec());
        match next_bridge_error(&mut errors).await {
            BridgeError::Decode { subject, .. } => assert_eq!(subject, key),
            other => panic!("expected Decode, got {other:?}"),
        }
        xadd(&mut raw, b"f", frame(42, 1, "other.type", b""));
        match next_bridge_error(&mut errors).await {
            BridgeError::UnknownType { subject, name } => {
                assert_eq!((subject.as_str(), name.as_str()), (key, "other.type"));
            }
            other => panic!("expected UnknownType, got {other:?}"),
        }
        xadd(&mut raw, b"g", b"x".to_vec());
        match next_bridge_error(&mut errors).await {
            BridgeError::Decode { subject, reason } => {
                assert_eq!(subject, key);
                assert!(reason.contains("no field"), "{reason}");
            }
            other => panic!("expected Decode, got {other:?}"),
        }
        // A field name that is not UTF-8 (which the client's stream types cannot parse):
        // reported and acknowledged like any foreign entry, and reading goes on.
        xadd(&mut raw, b"\xff\xfe", b"x".to_vec());
        match next_bridge_error(&mut errors).await {
            BridgeError::Decode { subject, reason } => {
                assert_eq!(subject, key);
                assert!(reason.contains("no field"), "{reason}");
            }
            other => panic!("expected Decode, got {other:?}"),
        }
        let _: i64 = redis::cmd("PUBLISH").arg("pipedream:msg:in").arg(b"\x00junk".to_vec())
            .query(&mut raw).unwrap();
        match next_bridge_error(&mut errors).await {
            BridgeError::Decode { subject, .. } => assert_eq!(subject, "pipedream:msg:in"),
            other => panic!("expected Decode, got {other:?}"),
        }
        // The bridge goes on: a good entry arrives.
        let payload = postcard_of(&order(5));
        xadd(&mut raw, b"f", frame(42, 2, "in", &payload));
        assert_eq!(within(STEP, "a good entry", orders.recv()).await.unwrap().id, 5);
        eventually("the counts", || bridge.stats().imported == 1).await;
        assert_eq!(bridge.stats().failed_in, 5);
    }

    async fn a_message_over_the_servers_limit_is_reported_and_not_sent() {
        let Some(server) = Server::start_with(&["--proto-max-bulk-len", "1mb"]) else { return };
        let (tx, rx) = Relay::channel();
        let mut errors = rx.subscribe::<RelayError>();
        let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        bridge.export_stream::<Order>("big").unwrap();
        tx.send(Order { id: 1, item: "x".repeat(2 << 20) }).await.unwrap();
        match next_bridge_error(&mut errors).await {
            BridgeError::TooLarge { subject, limit, size } => {
                assert_eq!(subject, "pipedream:stream:big");
                assert_eq!(limit, 1 << 20);
                assert!(size > 2 << 20);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        tx.send(order(2)).await.unwrap();
        eventually("the small one appended", || bridge.stats().exported == 1).await;
        assert_eq!(bridge.stats().failed_out, 1);
    }

    async fn an_append_the_server_refuses_for_good_is_dropped_not_retried_for_ever() {
        let Some(server) = Server::start() else { return };
        let mut raw = server.raw();
        // The stream's key already holds a string: every XADD is refused (WRONGTYPE).
        let _: () = redis::cmd("SET").arg("pipedream:stream:taken").arg("x").query(&mut raw).unwrap();
        let (tx, rx) = Relay::channel();
        let mut dropped = rx.subscribe::<Dropped>();
        let mut errors = rx.subscribe::<RelayError>();
        let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        bridge.export_stream::<Order>("taken").unwrap();
        tx.send(order(1)).await.unwrap();
        within(STEP, "a Dropped event", dropped.recv()).await.unwrap();
        match next_bridge_error(&mut errors).await {
            BridgeError::Publish { subject, reason } => {
                assert_eq!(subject, "pipedream:stream:taken");
                assert!(reason.contains("WRONGTYPE"), "{reason}");
            }
            other => panic!("expected Publish (refused), got {other:?}"),
        }
        tx.send(order(2)).await.unwrap();
        within(STEP, "the second Dropped event", dropped.recv()).await.unwrap();
        let stats = bridge.stats();
        assert_eq!((stats.dropped, stats.exported), (2, 0));
    }

    async fn an_entry_nobody_takes_waits_in_the_stream_until_a_handler_comes() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        a.export_stream::<Order>("later").unwrap();
        let (_b_tx, b_rx) = Relay::channel();
        let mut errors = b_rx.subscribe::<RelayError>();
        let b = within(STEP, "connect", RedisBridge::connect(server.url(), &b_rx)).await.unwrap();
        within(STEP, "import", b.import_stream::<Order>("later", "g")).await.unwrap();
        for id in 0..3 {
            tx.send(order(id)).await.unwrap();
        }
        match next_bridge_error(&mut errors).await {
            BridgeError::Retrying { reason, .. } => assert!(reason.contains("no subscriber"), "{reason}"),
            other => panic!("expected Retrying (unrouted), got {other:?}"),
        }
        // Not acknowledged meanwhile.
        let mut raw = server.raw();
        let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("pipedream:stream:later").arg("g").query(&mut raw).unwrap();
        assert!(pending.0 >= 1, "the unrouted entry stays pending");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink_got = got.clone();
        b_rx.sink::<Order>(move |o: &Order| sink_got.lock().unwrap().push(o.id));
        eventually("all three handled", || got.lock().unwrap().len() == 3).await;
        assert_eq!(*got.lock().unwrap(), vec![0, 1, 2]);
        eventually("all acknowledged", || {
            let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
                .arg("pipedream:stream:later").arg("g").query(&mut raw).unwrap();
            pending.0 == 0
        }).await;
    }

    async fn a_pubsub_outage_is_reported_as_drops_and_an_interruption_then_recovers() {
        let Some(mut server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let (_far_tx, far_rx) = Relay::channel();
        let mut dropped = rx.subscribe::<Dropped>();
        let mut errors = rx.subscribe::<RelayError>();
        let mut far_errors = far_rx.subscribe::<RelayError>();
        let a = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        let b = within(STEP, "connect", RedisBridge::connect(server.url(), &far_rx)).await.unwrap();
        a.export::<Order>("news").unwrap();
        within(STEP, "import", b.import::<Order>("news")).await.unwrap();
        let mut far = far_rx.subscribe::<Order>();
        tx.send(order(1)).await.unwrap();
        assert_eq!(within(STEP, "before", far.recv()).await.unwrap().id, 1);

        server.kill();
        match next_bridge_error(&mut far_errors).await {
            BridgeError::Interrupted { subject, .. } => assert_eq!(subject, "pipedream:msg:news"),
            other => panic!("expected Interrupted, got {other:?}"),
        }
        tx.send(order(2)).await.unwrap();
        let drop = within(STEP, "a Dropped event", dropped.recv()).await.unwrap();
        assert_eq!(drop.type_name, std::any::type_name::<Order>());
        match next_bridge_error(&mut errors).await {
            BridgeError::Publish { subject, .. } => assert_eq!(subject, "pipedream:msg:news"),
            other => panic!("expected Publish, got {other:?}"),
        }
        assert_eq!(a.stats().dropped, 1);
        assert_eq!(b.stats().interrupted, 1);

        server.launch();
        // Both sides come back: keep sending until one arrives.
        let deadline = Instant::now() + STEP * 2;
        let mut id = 100;
        loop {
            assert!(Instant::now() < deadline, "no message after the restart");
            tx.send(order(id)).await.unwrap();
            if let Some(Some(o)) = common::timeout(Duration::from_millis(200), far.recv()).await {
                assert!(o.id >= 100);
                break;
            }
            id += 1;
        }
    }

    async fn bad_names_are_refused_and_a_name_is_bridged_once_per_direction_and_mode() {
        let Some(server) = Server::start() else { return };
        let (_tx, rx) = Relay::channel();
        let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        assert!(matches!(bridge.export::<Order>("has space"), Err(BridgeError::InvalidName { .. })));
        assert!(matches!(
            within(STEP, "import", bridge.import_stream::<Order>("ok", "bad group")).await,
            Err(BridgeError::InvalidName { .. })
        ));
        bridge.export::<Order>("o").unwrap();
        assert!(matches!(bridge.export::<Order>("o"), Err(BridgeError::AlreadyBridged { .. })));
        bridge.export_stream::<Order>("o").unwrap(); // another mode: allowed
        within(STEP, "import", bridge.import_stream::<Order>("p", "g")).await.unwrap();
        assert!(matches!(
            within(STEP, "import", bridge.import_stream::<Order>("p", "h")).await,
            Err(BridgeError::AlreadyBridged { .. })
        ));
        // A stream both ways on one bridge is refused (its own entries would be skipped
        // for the whole group).
        assert!(matches!(
            within(STEP, "import", bridge.import_stream::<Order>("o", "g")).await,
            Err(BridgeError::AlreadyBridged { .. })
        ));
        assert!(matches!(bridge.export_stream::<Order>("p"), Err(BridgeError::AlreadyBridged { .. })));
        let bad = RedisBridge::builder(server.url()).prefix("a b").connect(&rx);
        assert!(matches!(within(STEP, "connect", bad).await, Err(BridgeError::InvalidName { .. })));
        let nowhere = RedisBridge::connect(format!("redis://127.0.0.1:{}", free_port()), &rx);
        assert!(matches!(within(STEP, "connect", nowhere).await, Err(BridgeError::Connect(_))));
    }

    async fn a_closed_relay_ends_the_bridge_s_tasks_after_the_export_drained() {
        let Some(server) = Server::start() else { return };
        let (tx, rx) = Relay::channel();
        let bridge = within(STEP, "connect", RedisBridge::connect(server.url(), &rx)).await.unwrap();
        bridge.export_stream::<Order>("end").unwrap();
        within(STEP, "import", bridge.import_stream::<Order>("other", "g")).await.unwrap();
        within(STEP, "import", bridge.import::<Order>("end")).await.unwrap();
        for id in 0..5 {
            tx.send(order(id)).await.unwrap();
        }
        within(STEP, "ready", rx.ready()).await;
        assert_eq!(rx.stats().live_tasks, 3, "the bridge's tasks are the relay's");
        drop(tx);
        // Every task ends with the relay, the export's after appending what it took.
        eventually("the bridge's tasks ended", || rx.stats().live_tasks == 0).await;
        assert_eq!(bridge.stats().exported, 5);
        let mut raw = server.raw();
        let len: u64 = redis::cmd("XLEN").arg("pipedream:stream:end").query(&mut raw).unwrap();
        assert_eq!(len, 5);
    }
}

/// A value encoded as the default codec does.
fn postcard_of(order: &Order) -> Vec<u8> {
    use pipedream_rs::bridge::Codec;
    pipedream_rs::bridge::Postcard.encode(order).unwrap()
}
