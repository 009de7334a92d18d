//! W4: memory

use super::*;

pub(crate) fn relay_with(capacity: usize) -> (RelaySender, RelayReceiver) {
    Relay::builder()
        .spawner(SmolSpawner)
        .channel_size(capacity)
        .build()
        .expect("relay")
}

/// Heap bytes per idle subscriber: `count` subscribers made by `make`, kept alive.
pub(crate) fn per_item<T>(count: usize, mut make: impl FnMut() -> T) -> f64 {
    let mut keep = Vec::with_capacity(count); // allocated before counting starts
    let ((), bytes) = heap_delta(|| {
        for _ in 0..count {
            keep.push(make());
        }
    });
    drop(keep);
    bytes as f64 / count as f64
}

/// Heap bytes per queued message: `queued` messages pushed with `push` (nobody reads).
pub(crate) fn per_queued(queued: usize, mut push: impl FnMut(u64)) -> f64 {
    let ((), bytes) = heap_delta(|| {
        for i in 0..queued {
            push(i as u64);
        }
    });
    bytes as f64 / queued as f64
}

pub(crate) fn run_w4(b: &mut Bench, subs: usize, queued: usize) {
    eprintln!("W4 memory ({subs} idle subscribers, {queued} queued messages)");
    let big = pipedream_rs::DEFAULT_CHANNEL_SIZE;
    // Bounded(65,536) rings preallocate ~2.6 MB each: measure fewer of them.
    let few = subs.min(16);
    for _ in 0..b.reps.min(3) {
        let mut idle: Vec<(String, f64)> = Vec::new();
        for cap in [big, 1024] {
            let (tx, rx) = relay_with(cap);
            idle.push((
                format!("pipedream subscribe, capacity {cap}"),
                per_item(subs, || rx.subscribe::<Msg32>()),
            ));
            drop((tx, rx));
        }
        idle.push((
            "async-channel bounded(65536)".into(),
            per_item(few, || async_channel::bounded::<Msg32>(big)),
        ));
        idle.push((
            "async-channel bounded(1024)".into(),
            per_item(subs, || async_channel::bounded::<Msg32>(1024)),
        ));
        idle.push((
            "async-channel unbounded".into(),
            per_item(subs, async_channel::unbounded::<Msg32>),
        ));
        idle.push((
            "flume bounded(65536)".into(),
            per_item(subs, || flume::bounded::<Msg32>(big)),
        ));
        idle.push((
            "flume unbounded".into(),
            per_item(subs, flume::unbounded::<Msg32>),
        ));
        {
            let ((tx, _rx0), ring) = heap_delta(|| tokio::sync::broadcast::channel::<Msg32>(big));
            idle.push((
                "tokio::sync::broadcast(65536): the shared ring".into(),
                ring as f64,
            ));
            idle.push((
                "tokio::sync::broadcast(65536): per receiver".into(),
                per_item(subs, || tx.subscribe()),
            ));
        }
        for (name, v) in idle {
            b.add("W4", "-", &name, "idle subscriber", "bytes", v);
        }

        let mut q: Vec<(String, f64)> = Vec::new();
        for subs_now in [1usize, 4] {
            let (tx, rx) = relay_with(big);
            let keep: Vec<_> = (0..subs_now).map(|_| rx.subscribe::<Msg32>()).collect();
            let per = per_queued(queued, |i| {
                futures::executor::block_on(tx.send(Msg32::new(i))).expect("send");
            });
            assert_eq!(keep[0].len(), queued);
            q.push((
                format!("pipedream, {subs_now} subscriber(s), per message"),
                per,
            ));
            drop((keep, tx, rx));
        }
        {
            let (tx, rx) = async_channel::unbounded::<Msg32>();
            q.push((
                "async-channel unbounded".into(),
                per_queued(queued, |i| tx.try_send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = async_channel::bounded::<Msg32>(big);
            q.push((
                "async-channel bounded(65536) (ring preallocated)".into(),
                per_queued(queued, |i| tx.try_send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = flume::unbounded::<Msg32>();
            q.push((
                "flume unbounded".into(),
                per_queued(queued, |i| tx.send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
            let (tx, rx) = flume::bounded::<Msg32>(big);
            q.push((
                "flume bounded(65536)".into(),
                per_queued(queued, |i| tx.send(Msg32::new(i)).expect("send")),
            ));
            drop(rx);
        }
        for (name, v) in q {
            b.add("W4", "-", &name, "queued message", "bytes", v);
        }
    }
    b.add(
        "W4",
        "-",
        "size_of::<Subscription<Msg32>>() (inline, not heap)",
        "handle",
        "bytes",
        std::mem::size_of::<pipedream_rs::Subscription<Msg32>>() as f64,
    );
    b.print("W4", "-");
}
