//! No leaks: once every handle is dropped, every relay of a topology is freed, its tasks
//! have ended, and every message copy is gone.
//!
//! What is observable from outside:
//! - `rx.is_closed()`;
//! - `rx.stats().live_tasks` reaching 0 (the task counters outlive the relay);
//! - `rx.stats()` equal to `RelayStats::default()` although messages were sent: `stats()`
//!   reads zeros only once the relay's internals are gone (a closed relay that is still
//!   alive keeps its `sent` count);
//! - messages holding a canary `Arc` whose strong count returns to 1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, within};
use pipedream_rs::{Relay, RelayReceiver, RelayStats};

const BOUND: Duration = Duration::from_secs(10);

/// A message that keeps the canary alive as long as any copy of it exists.
#[derive(Clone)]
struct Canary(#[allow(dead_code)] Arc<()>);

/// Every relay freed (closed, zero counters, no live task) and every message copy gone.
async fn assert_all_freed(relays: &[(&str, RelayReceiver)], canary: &Arc<()>) {
    for (name, relay) in relays {
        wait_until(BOUND, &format!("{name} freed"), || {
            relay.is_closed() && relay.stats() == RelayStats::default()
        })
        .await;
    }
    wait_until(BOUND, "every message copy freed", || {
        Arc::strong_count(canary) == 1
    })
    .await;
}

/// Every relay in `relays` has counted at least one message: a later all-zero `stats()`
/// then means its internals are gone.
fn assert_all_used(relays: &[(&str, RelayReceiver)]) {
    for (name, relay) in relays {
        assert!(relay.stats().sent > 0, "{name} carried nothing");
    }
}

on_every_runtime! {
    async fn a_tree_of_derived_relays_is_freed_after_every_handle_is_dropped() {
        let canary = Arc::new(());
        let (tx, rx) = Relay::channel();
        let filtered = rx.filter::<Canary>(|_| true);
        let mapped = rx.map::<Canary, Canary>(|c| c.clone());
        let batched = rx.batch::<Canary>(3).unwrap();
        let (matched, rest) = rx.split::<Canary>();
        let excluded = rx.exclude::<Canary>();
        let only = rx.only::<Canary>();
        let deep = filtered.filter::<Canary>(|_| true);
        let deep_mapped = filtered.filter_map::<Canary, Canary>(|c| Some(c.clone()));
        let shared = mapped.batch_shared::<Canary>(2).unwrap();
        let relays = [
            ("root", rx.clone()),
            ("filter", filtered.clone()),
            ("map", mapped.clone()),
            ("batch", batched.clone()),
            ("split matched", matched.clone()),
            ("split rest", rest.clone()),
            ("exclude", excluded.clone()),
            ("only", only.clone()),
            ("filter of filter", deep.clone()),
            ("filter_map of filter", deep_mapped.clone()),
            ("batch_shared of map", shared.clone()),
        ];

        // Handlers on several levels, and subscriptions that never read (they hold copies).
        filtered.sink::<Canary>(|_| ());
        let _ = mapped.tap::<Canary>(|_| ());
        batched.sink::<Vec<Canary>>(|_| ());
        let subscriptions = (
            rx.subscribe::<Canary>(),
            deep.subscribe::<Canary>(),
            deep_mapped.subscribe_all(),
            shared.subscribe::<Vec<Arc<Canary>>>(),
            matched.subscribe::<Canary>(),
            rest.subscribe::<u8>(),
            excluded.subscribe_all(),
            only.subscribe::<Canary>(),
        );
        for _ in 0..10 {
            within(BOUND, "send a canary", tx.send(Canary(canary.clone()))).await.unwrap();
            within(BOUND, "send a u8", tx.send(1u8)).await.unwrap();
        }
        wait_until(BOUND, "the boundary children got their messages", || {
            shared.stats().sent == 5 && batched.stats().sent == 3 && deep_mapped.stats().sent == 10
        })
        .await;
        assert_all_used(&relays);
        assert!(Arc::strong_count(&canary) > 1);

        drop(tx);
        drop(subscriptions);
        drop((rx, filtered, mapped, batched, matched, rest, excluded, only));
        drop((deep, deep_mapped, shared));
        assert_all_freed(&relays, &canary).await;
    }

    async fn a_merge_is_freed_after_every_handle_is_dropped() {
        let canary = Arc::new(());
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let (c_tx, c) = Relay::channel();
        let merged = Relay::merge([a.clone(), b.clone(), c.clone()]);
        let downstream = merged.filter::<Canary>(|_| true);
        let relays = [
            ("a", a.clone()),
            ("b", b.clone()),
            ("c", c.clone()),
            ("merged", merged.clone()),
            ("filter of merged", downstream.clone()),
        ];
        merged.sink::<Canary>(|_| ());
        let subscriptions = (
            a.subscribe::<Canary>(),
            merged.subscribe_all(),
            downstream.subscribe::<Canary>(),
        );
        for tx in [&a_tx, &b_tx, &c_tx] {
            for _ in 0..5 {
                within(BOUND, "send a canary", tx.send(Canary(canary.clone()))).await.unwrap();
            }
        }
        wait_until(BOUND, "merged got every message", || downstream.stats().sent == 15).await;
        assert_all_used(&relays);

        drop((a_tx, b_tx, c_tx, subscriptions));
        drop((a, b, c, merged, downstream));
        assert_all_freed(&relays, &canary).await;
    }

    async fn a_forward_cycle_is_freed_after_every_handle_is_dropped() {
        let canary = Arc::new(());
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let relays = [("a", a.clone()), ("b", b.clone())];
        let a_to_b = a.forward_detached(&b_tx);
        let b_to_a = b.forward_detached(&a_tx);
        b.sink::<Canary>(|_| ());
        let subscriptions = (a.subscribe::<Canary>(), b.subscribe_all());
        for _ in 0..5 {
            within(BOUND, "send on a", a_tx.send(Canary(canary.clone()))).await.unwrap();
            within(BOUND, "send on b", b_tx.send(Canary(canary.clone()))).await.unwrap();
        }
        wait_until(BOUND, "both sides got every message", || {
            a.stats().sent == 10 && b.stats().sent == 10
        })
        .await;

        drop((a_tx, b_tx, subscriptions, a, b));
        within(BOUND, "a -> b ended", a_to_b).await.unwrap();
        within(BOUND, "b -> a ended", b_to_a).await.unwrap();
        assert_all_freed(&relays, &canary).await;
    }

    async fn a_forward_whose_target_is_dropped_frees_the_target_and_leaves_the_source() {
        let canary = Arc::new(());
        let (a_tx, a) = Relay::channel();
        let (b_tx, b) = Relay::channel();
        let forwarding = a.forward_detached(&b_tx);
        let on_b = b.subscribe::<Canary>();
        within(BOUND, "send", a_tx.send(Canary(canary.clone()))).await.unwrap();
        wait_until(BOUND, "b got it", || b.stats().sent == 1).await;

        drop((b_tx, on_b));
        within(BOUND, "the forward ends", forwarding).await.unwrap();
        assert_all_freed(&[("b", b)], &canary).await;
        assert_eq!(a.stats().subscribers, 0, "the forward unregistered from a");
        wait_until(BOUND, "the forward's task ended", || a.stats().live_tasks == 0).await;
        assert!(!a.is_closed());
    }

    async fn a_forward_future_dropped_unpolled_unregisters_from_its_source() {
        let (a_tx, a) = Relay::channel();
        let (b_tx, _b) = Relay::channel();
        let forwarding = a.forward(&b_tx);
        assert_eq!(a.stats().subscribers, 1, "registered when forward is called");
        drop(forwarding);
        assert_eq!(a.stats().subscribers, 0);
        drop(a_tx);
        assert_eq!(a.stats(), RelayStats::default());
    }

    async fn a_panicked_forwarder_leaves_nothing_behind() {
        let canary = Arc::new(());
        let (tx, rx) = Relay::channel();
        let child = rx.map::<Canary, Canary>(|_| panic!("no"));
        let guarded = rx.filter::<Canary>(|_| panic!("no"));
        let relays = [("root", rx.clone()), ("map", child.clone()), ("filter", guarded.clone())];
        let subscriptions = (child.subscribe::<Canary>(), guarded.subscribe::<Canary>());
        let _ = within(BOUND, "send", tx.send(Canary(canary.clone()))).await;
        within(BOUND, "map child closed", child.closed()).await;
        within(BOUND, "filter child closed", guarded.closed()).await;

        drop((tx, subscriptions, rx, child, guarded));
        for (name, relay) in &relays {
            wait_until(BOUND, &format!("{name} freed"), || relay.stats() == RelayStats::default()).await;
        }
        wait_until(BOUND, "every message copy freed", || Arc::strong_count(&canary) == 1).await;
    }
}
