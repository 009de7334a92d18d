//! W5: transformation overhead — filter/map chains, batch(100)

use super::*;

pub(crate) mod peers;
pub(crate) use peers::*;

#[derive(Clone, Copy)]
pub(crate) enum Stage {
    /// `filter` (tracked: each send waits for every filter decision down the chain).
    Filter,
    /// `map` (a tracking boundary: sends do not wait).
    Map,
}

/// A chain of `depth` transformations of `kind`, one untracked subscriber at its end.
pub(crate) async fn w5_pd_chain(rt: Rt, kind: Stage, depth: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let mut end = rx.clone();
    for _ in 0..depth {
        end = match kind {
            Stage::Filter => end.filter::<Msg32>(|v| v.a != u64::MAX),
            Stage::Map => end.map::<Msg32, Msg32>(|v| Msg32 { c: v.c ^ 1, ..*v }),
        };
    }
    let h = pd_consumer(&rt, &end, m);
    rx.ready().await;
    end.ready().await;
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    t.elapsed()
}

/// `batch(size)`, one subscriber of the `Vec<Msg32>` batches.
pub(crate) async fn w5_pd_batch(rt: Rt, size: usize, m: usize) -> Duration {
    let (tx, rx) = lossless(&rt, m);
    let batches = rx.batch::<Msg32>(size).expect("batch size");
    let mut sub = batches.subscribe::<Vec<Msg32>>();
    let h = rt.spawn(async move {
        let (mut got, mut acc) = (0, 0);
        while got < m {
            match sub.recv().await {
                Some(b) => {
                    for v in b.iter() {
                        acc = work(acc, v);
                    }
                    got += b.len();
                }
                None => break,
            }
        }
        (got, acc)
    });
    rx.ready().await;
    let t = Instant::now();
    for i in 0..m {
        tx.send(Msg32::new(i as u64)).await.expect("send");
    }
    join_all(vec![h], m).await;
    t.elapsed()
}

pub(crate) fn run_w5(b: &mut Bench, r: &Runtime, m: usize) {
    eprintln!("W5 transformations on {} ({m} messages)", r.name);
    for _ in 0..b.reps {
        let el = r.run(w1_pd(r.rt.clone(), 1, m));
        b.add(
            "W5",
            r.name,
            "pipedream subscribe (no transformation)",
            "depth=0",
            "ns/message",
            ns_per(el, m),
        );
        for depth in [1usize, 2, 4, 8] {
            let p = format!("depth={depth}");
            let el = r.run(w5_pd_chain(r.rt.clone(), Stage::Filter, depth, m));
            b.add(
                "W5",
                r.name,
                "pipedream filter chain (tracked)",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w5_pd_chain(r.rt.clone(), Stage::Map, depth, m));
            b.add(
                "W5",
                r.name,
                "pipedream map chain",
                &p,
                "ns/message",
                ns_per(el, m),
            );
            let el = r.run(w5_async_ch_chain(r.rt.clone(), depth, 0, m));
            b.add(
                "W5",
                r.name,
                "async-channel task chain (map)",
                &p,
                "ns/message",
                ns_per(el, m),
            );
        }
        let el = r.run(w5_pd_batch(r.rt.clone(), 100, m));
        b.add(
            "W5",
            r.name,
            "pipedream batch(100)",
            "batch=100",
            "ns/message",
            ns_per(el, m),
        );
        let el = r.run(w5_async_ch_chain(r.rt.clone(), 0, 100, m));
        b.add(
            "W5",
            r.name,
            "async-channel batching task",
            "batch=100",
            "ns/message",
            ns_per(el, m),
        );
    }
    b.print("W5", r.name);
}
