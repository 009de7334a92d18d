//! `batch`, `batch_of`, `batch_shared`: batches of exactly `size` messages, in order, the
//! final partial batch at close, and no batch size of zero.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{drain, within};
use pipedream_rs::{BatchError, DeliveryMode, Relay};

const BOUND: Duration = Duration::from_secs(10);

fn chunks(range: std::ops::Range<u32>, size: usize) -> Vec<Vec<u32>> {
    range
        .collect::<Vec<_>>()
        .chunks(size)
        .map(<[u32]>::to_vec)
        .collect()
}

on_every_runtime! {
    async fn a_batch_of_any_size_is_collected_as_messages_arrive_without_crashing() {
        // Sizes no batch reaches: the only batch is the partial one sent at the close.
        // Preallocating them used to panic ("capacity overflow") or abort the process.
        for size in [usize::MAX, 1 << 45, 1 << 30] {
            let (tx, rx) = Relay::channel();
            let mut errors = rx.subscribe::<pipedream_rs::RelayError>();
            let mut batches = rx.batch::<u64>(size).unwrap().subscribe::<Vec<u64>>();
            for n in 0..3u64 {
                tx.send(n).await.unwrap();
            }
            drop(tx);
            assert_eq!(drain(&mut batches).await, vec![vec![0, 1, 2]], "batch size {size}");
            assert!(errors.try_recv().is_err(), "no forwarder failure at size {size}");
        }
    }

    async fn batches_of_1_3_and_100_over_1000_messages_are_exact_and_in_order() {
        let (tx, rx) = Relay::channel();
        let mut ones = rx.batch::<u32>(1).unwrap().subscribe::<Vec<u32>>();
        let mut threes = rx.batch::<u32>(3).unwrap().subscribe::<Vec<u32>>();
        let mut hundreds = rx.batch::<u32>(100).unwrap().subscribe::<Vec<u32>>();
        for n in 0..1_000u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        assert_eq!(drain(&mut ones).await, chunks(0..1_000, 1));
        let threes = drain(&mut threes).await;
        assert_eq!(threes.len(), 334);
        assert_eq!(threes.last().unwrap(), &[999], "the final partial batch");
        assert_eq!(threes, chunks(0..1_000, 3));
        let hundreds = drain(&mut hundreds).await;
        assert_eq!(hundreds.len(), 10, "no empty batch at the end");
        assert_eq!(hundreds, chunks(0..1_000, 100));
    }

    async fn the_final_partial_batch_is_sent_when_the_parent_closes() {
        let (tx, rx) = Relay::channel();
        let mut batches = rx.batch::<u32>(4).unwrap().subscribe::<Vec<u32>>();
        for n in 0..6u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        assert_eq!(*within(BOUND, "the full batch", batches.recv()).await.unwrap(), [0, 1, 2, 3]);
        tx.close();
        assert_eq!(drain(&mut batches).await, [vec![4, 5]]);
    }

    async fn nothing_is_sent_at_close_when_no_batch_is_pending() {
        let (tx, rx) = Relay::channel();
        let mut batches = rx.batch::<u32>(4).unwrap().subscribe::<Vec<u32>>();
        for n in 0..4u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        assert_eq!(drain(&mut batches).await, [vec![0, 1, 2, 3]]);
    }

    async fn a_batch_size_of_zero_is_refused() {
        let (_tx, rx) = Relay::channel();
        assert_eq!(rx.batch::<u32>(0).unwrap_err(), BatchError::ZeroSize);
        assert_eq!(rx.batch_shared::<u32>(0).unwrap_err(), BatchError::ZeroSize);
        assert_eq!(BatchError::ZeroSize.to_string(), "batch size must be at least 1");
        assert_eq!(rx.stats().live_tasks, 0, "no forwarder was started");
    }

    async fn batch_of_batches_by_a_const_size() {
        let (tx, rx) = Relay::channel();
        let mut batches = rx.batch_of::<u32, 2>().subscribe::<Vec<u32>>();
        for n in 0..5u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        assert_eq!(drain(&mut batches).await, chunks(0..5, 2));
    }

    async fn a_batch_collects_only_its_own_type() {
        let (tx, rx) = Relay::channel();
        let mut batches = rx.batch::<u32>(2).unwrap().subscribe::<Vec<u32>>();
        for n in 0..6u32 {
            within(BOUND, "send u32", tx.send(n)).await.unwrap();
            within(BOUND, "send u64", tx.send(u64::from(n) + 100)).await.unwrap();
            within(BOUND, "send text", tx.send(n.to_string())).await.unwrap();
        }
        drop(tx);
        assert_eq!(drain(&mut batches).await, chunks(0..6, 2));
    }

    async fn batches_feed_a_tracked_sink_in_order_and_the_child_closes_after_the_last() {
        let (tx, rx) = Relay::channel();
        let child = rx.batch::<u32>(3).unwrap();
        let handled = Arc::new(Mutex::new(Vec::new()));
        let h = handled.clone();
        child.sink_async::<Vec<u32>>(move |batch: Arc<Vec<u32>>| {
            let h = h.clone();
            async move {
                common::sleep(Duration::from_millis(2)).await;
                h.lock().unwrap().push((*batch).clone());
            }
        });
        for n in 0..10u32 {
            within(BOUND, "send", tx.send(n)).await.unwrap();
        }
        drop(tx);
        // The forwarder waits for the child's tracked sink on every batch, and the child
        // closes when the forwarder ends: by then the sink has handled the last batch.
        within(BOUND, "child closed", child.closed()).await;
        assert_eq!(*handled.lock().unwrap(), chunks(0..10, 3));
    }

    async fn batch_shared_batches_a_non_clone_type_without_copying() {
        struct Reading(u32); // not Clone
        let (tx, rx) = Relay::channel();
        let mut on_root = rx.subscribe::<Reading>();
        let mut batches = rx.batch_shared::<Reading>(2).unwrap().subscribe::<Vec<Arc<Reading>>>();
        for n in 1..=3u32 {
            within(BOUND, "send", tx.send(Reading(n))).await.unwrap();
        }
        drop(tx);
        let mut originals = Vec::new();
        while let Some(r) = within(BOUND, "root message or end", on_root.recv()).await {
            originals.push(r);
        }
        let got = drain(&mut batches).await;
        let ids: Vec<Vec<u32>> = got.iter().map(|b| b.iter().map(|r| r.0).collect()).collect();
        assert_eq!(ids, [vec![1, 2], vec![3]]);
        let batched: Vec<&Arc<Reading>> = got.iter().flatten().collect();
        assert_eq!(batched.len(), originals.len());
        for (b, original) in batched.into_iter().zip(&originals) {
            assert!(Arc::ptr_eq(b, original), "the batch shares the sent value");
        }
    }

    async fn a_lossless_batch_with_small_queues_loses_nothing() {
        let (tx, rx) = Relay::builder()
            .delivery_mode(DeliveryMode::Lossless)
            .channel_size(4)
            .build()
            .unwrap();
        let mut batches = rx.batch::<u32>(7).unwrap().subscribe::<Vec<u32>>();
        let sending = async move {
            for n in 0..1_000u32 {
                tx.send(n).await.unwrap();
            }
        };
        let both = futures::future::join(sending, drain(&mut batches));
        let ((), got) = within(BOUND, "send and receive", both).await;
        assert_eq!(got, chunks(0..1_000, 7));
    }
}

on_every_runtime! {
    async fn batch_moves_values_that_no_other_subscriber_holds() {
        // The docs: "Values are cloned out of their shared Arc only when another
        // subscriber still holds it."
        #[derive(Debug)]
        struct Counted {
            id: u32,
            clones: Arc<AtomicUsize>,
        }
        impl Clone for Counted {
            fn clone(&self) -> Self {
                self.clones.fetch_add(1, Ordering::SeqCst);
                Counted { id: self.id, clones: self.clones.clone() }
            }
        }
        let (tx, rx) = Relay::channel();
        let child = rx.batch::<Counted>(1).unwrap();
        let (open, gate) = async_channel::bounded::<()>(1);
        let (entered_tx, entered) = async_channel::unbounded();
        child.sink_async::<Vec<Counted>>(move |batch: Arc<Vec<Counted>>| {
            let (gate, entered_tx) = (gate.clone(), entered_tx.clone());
            async move {
                let _ = entered_tx.send(batch[0].id).await;
                let _ = gate.recv().await;
            }
        });
        let counters: Vec<Arc<AtomicUsize>> =
            (0..5).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let message = |id: u32| Counted { id, clones: counters[id as usize].clone() };

        within(BOUND, "send 0", tx.send(message(0))).await.unwrap();
        // The forwarder is now held by the child's sink: 1..5 wait in its queue, where the
        // queue holds the only reference to each.
        assert_eq!(within(BOUND, "sink got batch 0", entered.recv()).await.unwrap(), 0);
        for id in 1..5 {
            within(BOUND, "send", tx.send(message(id))).await.unwrap();
        }
        drop(open);
        for id in 1..5 {
            assert_eq!(within(BOUND, "sink got the next batch", entered.recv()).await.unwrap(), id);
        }
        let clones: Vec<usize> = counters[1..].iter().map(|c| c.load(Ordering::SeqCst)).collect();
        assert_eq!(clones, [0, 0, 0, 0], "values nobody else held were cloned");
    }
}
