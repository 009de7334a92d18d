//! Turns the raw samples of `benches/relay/` into `docs/performance.md` and its SVG plot.
//!
//! ```text
//! cargo run -p bench-report -- [docs/performance-data.tsv] [docs/performance.md]
//! ```
//!
//! Input: one line per measured series, tab-separated —
//! `workload runtime system param unit v1,v2,…` (the unit is for people reading the file) — plus `#meta key value` lines (machine,
//! sizes, date). Everything in the report (medians, min–max, ratios, pass/miss verdicts,
//! the plot) is computed here from those samples; the only hand-written part is
//! `benches/profile-notes.md`, included verbatim at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

struct Row {
    workload: String,
    runtime: String,
    system: String,
    param: String,
    values: Vec<f64>,
}

impl Row {
    fn median(&self) -> f64 {
        stats(&self.values).0
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (med, s[0], s[n - 1])
}

struct Data {
    meta: BTreeMap<String, String>,
    rows: Vec<Row>,
}

impl Data {
    fn parse(text: &str) -> Data {
        let mut meta = BTreeMap::new();
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            if f[0] == "#meta" && f.len() >= 3 {
                meta.insert(f[1].to_string(), f[2].to_string());
            } else if f.len() == 6 {
                rows.push(Row {
                    workload: f[0].into(),
                    runtime: f[1].into(),
                    system: f[2].into(),
                    param: f[3].into(),
                    values: f[5].split(',').filter_map(|v| v.parse().ok()).collect(),
                });
            }
        }
        rows.retain(|r| !r.values.is_empty());
        Data { meta, rows }
    }

    fn get(&self, workload: &str, runtime: &str, system: &str, param: &str) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.workload == workload && r.runtime == runtime && r.system == system && r.param == param
        })
    }

    fn med(&self, workload: &str, runtime: &str, system: &str, param: &str) -> Option<f64> {
        self.get(workload, runtime, system, param).map(Row::median)
    }

    /// Distinct values of a column, in first-seen order.
    fn distinct(
        &self,
        workload: &str,
        runtime: Option<&str>,
        col: fn(&Row) -> &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.workload == workload && runtime.is_none_or(|rt| r.runtime == rt))
        {
            let v = col(r).to_string();
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn meta(&self, key: &str) -> &str {
        self.meta.get(key).map_or("?", String::as_str)
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(r: Option<&Row>) -> String {
    match r {
        Some(r) => {
            let (m, lo, hi) = stats(&r.values);
            if r.values.len() == 1 || lo == hi {
                num(m)
            } else {
                format!("{} ({}–{})", num(m), num(lo), num(hi))
            }
        }
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn rcell(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

const PD_SUB: &str = "pipedream subscribe";
const PD_SINK: &str = "pipedream sink (sequential send)";
const PD_SINK_WIN: &str = "pipedream sink (64 sends in flight)";
const ASYNC_CH: &str = "async-channel (channel per subscriber)";
const ASYNC_CH_ARC: &str = "async-channel per subscriber, one Arc per message (floor, not a peer)";
const PD_W2: &str = "pipedream (typed subscribe)";
const PD_BATCH: &str = "pipedream send_all / recv_many (batches of 64)";
const W2_ROUTED: &str = "async-channel, routed by hand (floor, not a peer)";
const W2_ROUTED_ARC: &str = "async-channel per type, one Arc per message (floor, not a peer)";
const RUNTIMES: [&str; 2] = ["smol", "tokio"];

struct Verdicts {
    out: String,
    pass: usize,
    miss: usize,
}

impl Verdicts {
    fn row(&mut self, target: &str, runtime: &str, measured: String, ok: Option<bool>) {
        let v = match ok {
            Some(true) => {
                self.pass += 1;
                "**PASS**"
            }
            Some(false) => {
                self.miss += 1;
                "**MISS**"
            }
            None => "not measured",
        };
        let _ = writeln!(self.out, "| {target} | {runtime} | {measured} | {v} |");
    }
}

fn targets(d: &Data) -> String {
    let mut t = Verdicts {
        out: String::new(),
        pass: 0,
        miss: 0,
    };
    t.out
        .push_str("| target | runtime | measured (medians) | verdict |\n|---|---|---|---|\n");
    for rt in RUNTIMES {
        for n in ["N=1", "N=4", "N=16"] {
            let r = ratio(d.med("W1", rt, PD_SUB, n), d.med("W1", rt, ASYNC_CH, n));
            let floor = ratio(
                d.med("W1", rt, ASYNC_CH_ARC, n),
                d.med("W1", rt, ASYNC_CH, n),
            );
            t.row(
                &format!("W1 {n}: untracked subscribe ≤ 1.2× async-channel per subscriber"),
                rt,
                format!(
                    "{} (floor with an `Arc` per message: {})",
                    rcell(r),
                    rcell(floor)
                ),
                r.map(|r| r <= 1.2),
            );
        }
    }
    for rt in RUNTIMES {
        let sys = "pipedream broadcast mode, capacity 65536";
        let row = d.get("W1B", rt, sys, "delivered");
        let lowest = row.map(|r| stats(&r.values).1);
        t.row(
            "W1 broadcast mode (capacity 65,536), one subscriber keeping up: 100% delivered",
            rt,
            lowest.map_or("—".into(), |v| format!("{v:.2}% (lowest run)")),
            lowest.map(|v| v >= 100.0),
        );
    }
    for (variant, sys) in [
        ("sequential `send().await`", PD_SINK),
        ("64 sends in flight", PD_SINK_WIN),
    ] {
        for rt in RUNTIMES {
            let worst = ["N=1", "N=4", "N=16"]
                .iter()
                .filter_map(|n| {
                    ratio(d.med("W1", rt, sys, n), d.med("W1", rt, PD_SUB, n)).map(|r| (r, *n))
                })
                .max_by(|a, b| a.0.partial_cmp(&b.0).expect("no NaN"));
            // A sequential tracked send is one round trip per message; the raw async-channel
            // send + ack round trip (W3) against untracked N=1 shows what any system pays.
            let round_trip = match sys {
                PD_SINK => ratio(
                    d.med("W3", rt, "async-channel send + ack channel", "p50"),
                    d.med("W1", rt, PD_SUB, "N=1"),
                ),
                _ => None,
            };
            let floor = round_trip.map_or(String::new(), |f| {
                format!(" (floor: an async-channel send + ack round trip is {f:.2}× untracked N=1)")
            });
            t.row(
                &format!("W1 tracked sink ≤ 2× untracked ({variant}), worst N"),
                rt,
                worst.map_or("—".into(), |(r, n)| format!("{r:.2}× at {n}{floor}")),
                worst.map(|(r, _)| r <= 2.0),
            );
        }
    }
    for rt in RUNTIMES {
        let pd = d.med("W2", rt, PD_W2, "4 types");
        let best = d
            .rows
            .iter()
            .filter(|r| {
                r.workload == "W2"
                    && r.runtime == rt
                    && ![PD_W2, W2_ROUTED, W2_ROUTED_ARC].contains(&r.system.as_str())
            })
            .map(|r| (r.median(), r.system.clone()))
            .min_by(|a, b| a.0.partial_cmp(&b.0).expect("no NaN"));
        let r = ratio(pd, best.as_ref().map(|b| b.0));
        t.row(
            "W2 routing: faster than every peer's enum + discard",
            rt,
            match (&best, r) {
                (Some((_, name)), Some(r)) => format!("{r:.2}× the fastest peer ({name})"),
                _ => "—".into(),
            },
            r.map(|r| r < 1.0),
        );
    }
    for rt in RUNTIMES {
        for n in ["N=1", "N=4", "N=16"] {
            let batch = d.med("W1", rt, PD_BATCH, n);
            let vs_single = ratio(batch, d.med("W1", rt, PD_SUB, n));
            let vs_tokio = ratio(batch, d.med("W1", rt, "tokio::sync::broadcast", n));
            t.row(
                &format!("W1 batches of 64 ≤ 0.5× single sends, and below tokio broadcast, {n}"),
                rt,
                match (vs_single, vs_tokio) {
                    (Some(s), Some(b)) => format!("{s:.2}× single sends, {b:.2}× tokio broadcast"),
                    _ => "—".into(),
                },
                vs_single.zip(vs_tokio).map(|(s, b)| s <= 0.5 && b < 1.0),
            );
        }
    }
    for rt in RUNTIMES {
        let r = ratio(
            d.med("W2", rt, PD_W2, "4 types"),
            d.med("W2", rt, W2_ROUTED_ARC, "4 types"),
        );
        t.row(
            "W2 typed routing ≤ 1.2× the floor (async-channel per type, one Arc per message)",
            rt,
            rcell(r),
            r.map(|r| r <= 1.2),
        );
    }
    for rt in RUNTIMES {
        let r = ratio(
            d.med("W3", rt, "pipedream send + sink", "p50"),
            d.med("W3", rt, "async-channel send + ack channel", "p50"),
        );
        t.row(
            "W3 p50 ≤ 1.5× async-channel send + ack",
            rt,
            rcell(r),
            r.map(|r| r <= 1.5),
        );
    }
    let idle = d.med(
        "W4",
        "-",
        "pipedream subscribe, capacity 65536",
        "idle subscriber",
    );
    t.row(
        "W4 < 1 KiB per idle subscriber at capacity 65,536",
        "—",
        idle.map_or("—".into(), |v| format!("{} bytes", num(v))),
        idle.map(|v| v < 1024.0),
    );
    for rt in RUNTIMES {
        let r = ratio(
            d.med("W6S", rt, PD_SUB, "N=1024"),
            d.med("W6S", rt, PD_SUB, "N=16"),
        );
        t.row(
            "W6 cost per delivery at 1,024 subscribers ≤ 2× at 16",
            rt,
            rcell(r),
            r.map(|r| r <= 2.0),
        );
    }
    for (rt, sys) in [
        (
            "one thread",
            "pipedream send + try_recv, one subscriber per type",
        ),
        ("smol", "pipedream, one subscriber per type, tasks"),
        ("tokio", "pipedream, one subscriber per type, tasks"),
    ] {
        let r = ratio(
            d.med("W6T", rt, sys, "types=64"),
            d.med("W6T", rt, sys, "types=1"),
        );
        let peer = if rt == "one thread" {
            "async-channel send + try_recv, one channel per type"
        } else {
            "async-channel per type, routed by hand, tasks"
        };
        let pr = ratio(
            d.med("W6T", rt, peer, "types=64"),
            d.med("W6T", rt, peer, "types=1"),
        );
        t.row(
            "W6 routing flat in types: 64 types ≤ 1.25× 1 type",
            rt,
            format!("{} (same layout on async-channel: {})", rcell(r), rcell(pr)),
            r.map(|r| r <= 1.25),
        );
    }
    // The NATS bridge (W8, feature `nats`, tokio only), when the run had a server.
    if d.rows.iter().any(|r| r.workload == "W8T") {
        let r = ratio(
            d.med("W8T", "tokio", W8_BRIDGE, "throughput"),
            d.med("W8T", "tokio", W8_RAW, "throughput"),
        );
        t.row(
            "W8 bridged throughput ≤ 1.2× the raw async-nats client",
            "tokio",
            rcell(r),
            r.map(|r| r <= 1.2),
        );
        let r = ratio(
            d.med("W8R", "tokio", W8_BRIDGE_TRACKED, "p50"),
            d.med("W8R", "tokio", W8_RAW_REQUEST, "p50"),
        );
        t.row(
            "W8 tracked round trip p50 ≤ 1.2× raw request/reply",
            "tokio",
            rcell(r),
            r.map(|r| r <= 1.2),
        );
    }
    // The Redis bridge (W9, feature `redis`, tokio only), when the run had a server.
    for (workload, ours, raw, what) in W9_ROWS {
        if !d.rows.iter().any(|r| r.workload == workload) {
            continue;
        }
        let r = ratio(
            d.med(workload, "tokio", ours, "throughput"),
            d.med(workload, "tokio", raw, "throughput"),
        );
        t.row(
            &format!("W9 bridged {what} throughput ≤ 1.2× the raw redis client"),
            "tokio",
            rcell(r),
            r.map(|r| r <= 1.2),
        );
    }
    let _ = writeln!(t.out, "\n{} targets pass, {} miss.", t.pass, t.miss);
    t.out
}

/// W9's workloads: (workload, pipedream's row, the raw client's row, what it carries).
const W9_ROWS: [(&str, &str, &str, &str); 2] = [
    (
        "W9P",
        "pipedream Redis bridge, pub/sub",
        "redis PUBLISH pipelines / SUBSCRIBE",
        "pub/sub",
    ),
    (
        "W9S",
        "pipedream Redis bridge, stream + group",
        "redis XADD pipelines / XREADGROUP + XACK",
        "stream",
    ),
];

/// W9: the Redis bridge against the raw client (only when the run had a redis-server).
fn section_w9(d: &Data) -> String {
    if !W9_ROWS
        .iter()
        .any(|(w, ..)| d.rows.iter().any(|r| r.workload == *w))
    {
        return String::new();
    }
    let mut s = String::from("## W9 — the Redis bridge against the raw client\n\n");
    s.push_str(
        "One `redis-server` on 127.0.0.1 (nothing persisted), one tokio runtime with 2 workers \
         (`--features tokio,redis`, `-- w9`). Messages of 32 bytes from one relay, exported, \
         imported by a second relay over its own connection and read by a subscriber there, \
         from the first send to the last receive. **W9P**: pub/sub; the peer publishes the \
         same postcard payloads in pipelines of 64 from one connection and decodes them from a \
         subscription on a second. **W9S**: a stream and a consumer group; the peer appends in \
         pipelines of 64 and reads with `XREADGROUP COUNT 64`, one `XACK` per read. The Redis \
         bridge has no tracked mode, so there is no round trip.\n\n",
    );
    s.push_str("| workload | system | ns per message | ÷ raw |\n|---|---|---|---|\n");
    for (workload, ours, raw, _) in W9_ROWS {
        let vs = rcell(ratio(
            d.med(workload, "tokio", ours, "throughput"),
            d.med(workload, "tokio", raw, "throughput"),
        ));
        for (sys, vs) in [(ours, vs), (raw, String::new())] {
            let _ = writeln!(
                s,
                "| {workload} | {sys} | {} | {vs} |",
                cell(d.get(workload, "tokio", sys, "throughput"))
            );
        }
    }
    s.push('\n');
    s
}

const W8_BRIDGE: &str = "pipedream NATS bridge";
const W8_BRIDGE_TRACKED: &str = "pipedream NATS bridge, tracked send";
const W8_RAW: &str = "async-nats publish / subscribe";
const W8_RAW_REQUEST: &str = "async-nats request / reply";

/// W8: the NATS bridge against the raw client (only when the run had a nats-server).
fn section_w8(d: &Data) -> String {
    if !d.rows.iter().any(|r| r.workload == "W8T") {
        return String::new();
    }
    let mut s = String::from("## W8 — the NATS bridge against the raw client\n\n");
    s.push_str(
        "One `nats-server` on 127.0.0.1, one tokio runtime with 2 workers (`--features \
         tokio,nats`, `-- w8`). **W8T**: messages of 32 bytes from one relay, exported, \
         imported by a second relay over its own connection and read by a subscriber there, \
         from the first send to the last receive; the peer publishes the same postcard \
         payloads with one client and decodes them from a second. **W8R**: sequential tracked \
         sends (`export_tracked` → `import_tracked` → a `sink`) against the raw request/reply \
         they ride on, with a responder that decodes each request.\n\n",
    );
    s.push_str("| system (W8T) | ns per message | ÷ raw |\n|---|---|---|\n");
    for sys in [W8_BRIDGE, W8_RAW] {
        let vs = if sys == W8_BRIDGE {
            rcell(ratio(
                d.med("W8T", "tokio", W8_BRIDGE, "throughput"),
                d.med("W8T", "tokio", W8_RAW, "throughput"),
            ))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {sys} | {} | {vs} |",
            cell(d.get("W8T", "tokio", sys, "throughput"))
        );
    }
    s.push('\n');
    let ps = ["p50", "p99", "mean"];
    s.push_str("| runtime | system (W8R) | p50 ns | p99 ns | mean ns |\n|---|---|---|---|---|\n");
    s.push_str(&percentile_rows(d, "W8R", &ps));
    s.push('\n');
    s
}

/// A table: one row per system, one column per param, cells `median (min–max)`.
fn grid(d: &Data, workload: &str, runtime: &str, params: &[String], unit: &str) -> String {
    let mut s = format!(
        "| system | {} |\n|---|{}\n",
        params.join(" | "),
        "---|".repeat(params.len())
    );
    for sys in d.distinct(workload, Some(runtime), |r| &r.system) {
        let cells: Vec<String> = params
            .iter()
            .map(|p| cell(d.get(workload, runtime, &sys, p)))
            .collect();
        let _ = writeln!(s, "| {sys} | {} |", cells.join(" | "));
    }
    let _ = writeln!(s, "\nUnit: {unit}; median of the runs (min–max).\n");
    s
}

/// pipedream ÷ each peer, per param.
fn ratio_grid(
    d: &Data,
    workload: &str,
    runtime: &str,
    ours: &str,
    params: &[String],
    skip: &[&str],
) -> String {
    let mut s = format!(
        "| {ours} ÷ peer | {} |\n|---|{}\n",
        params.join(" | "),
        "---|".repeat(params.len())
    );
    for sys in d.distinct(workload, Some(runtime), |r| &r.system) {
        if sys == ours || skip.contains(&sys.as_str()) {
            continue;
        }
        let cells: Vec<String> = params
            .iter()
            .map(|p| {
                rcell(ratio(
                    d.med(workload, runtime, ours, p),
                    d.med(workload, runtime, &sys, p),
                ))
            })
            .collect();
        let _ = writeln!(s, "| {sys} | {} |", cells.join(" | "));
    }
    s.push('\n');
    s
}

fn section_w1(d: &Data) -> String {
    let mut s = String::from("## W1 — fan-out\n\n");
    let _ = writeln!(
        s,
        "One producer, N subscribers, {} messages of a 32-byte struct; every subscriber gets \
         every message. pipedream in `DeliveryMode::Lossless` with queues larger than the run \
         (the producer never waits); tokio broadcast with a ring that never lags; async-broadcast \
         with capacity = messages; flume, async-channel and crossbeam-channel with one unbounded \
         channel per subscriber. Each consumer folds every field of every message into a sum. \
         Cost per delivery = total time ÷ (messages × N), timed from the first send until every \
         consumer has its last message (for the sinks: until the last `send` returned, which is \
         after every sink processed it). The row \"one Arc per message\" is async-channel per \
         subscriber carrying an `Arc` made once per message and cloned into each channel: what \
         any relay pays that hands every subscriber the same value without `Clone`, as \
         `recv` returning `Arc<T>` does. It is the floor of this design, not a peer.\n",
        d.meta("messages")
    );
    for rt in RUNTIMES {
        let params = d
            .distinct("W1", Some(rt), |r| &r.param)
            .into_iter()
            .collect::<Vec<_>>();
        if params.is_empty() {
            continue;
        }
        let _ = writeln!(s, "### {rt}\n");
        s.push_str(&grid(d, "W1", rt, &params, "ns per delivery"));
        s.push_str(&ratio_grid(
            d,
            "W1",
            rt,
            PD_SUB,
            &params,
            &[PD_SINK, PD_SINK_WIN],
        ));
        let mut t = format!(
            "| tracked ÷ untracked | {} |\n|---|{}\n",
            params.join(" | "),
            "---|".repeat(params.len())
        );
        for sys in [PD_SINK, PD_SINK_WIN] {
            let cells: Vec<String> = params
                .iter()
                .map(|p| rcell(ratio(d.med("W1", rt, sys, p), d.med("W1", rt, PD_SUB, p))))
                .collect();
            let _ = writeln!(t, "| {sys} | {} |", cells.join(" | "));
        }
        s.push_str(&t);
        s.push('\n');
    }
    s.push_str("### W1 in broadcast mode: one subscriber that keeps up\n\n");
    s.push_str("`DeliveryMode::Broadcast` (the default): `send` never waits; a message that does not fit is dropped for that subscriber. One untracked subscriber reading as fast as it can. The 1,024 row is a stress case, not a target.\n\n");
    s.push_str("| runtime | queue capacity | delivered (median, min–max) | ns per message |\n|---|---|---|---|\n");
    for rt in RUNTIMES {
        for sys in d.distinct("W1B", Some(rt), |r| &r.system) {
            let cap = sys.rsplit(' ').next().unwrap_or("?");
            let _ = writeln!(
                s,
                "| {rt} | {cap} | {}% | {} |",
                cell(d.get("W1B", rt, &sys, "delivered")),
                cell(d.get("W1B", rt, &sys, "time"))
            );
        }
    }
    s.push('\n');
    s
}

fn section_w2(d: &Data) -> String {
    let mut s = String::from("## W2 — heterogeneous routing\n\n");
    s.push_str(
        "Four message types sent round-robin, four subscribers each wanting one type. \
         pipedream routes by `TypeId` (each subscriber gets only its type); every peer carries \
         one `enum` and each subscriber reads everything and discards what it does not want \
         (tokio/async-broadcast: one channel; flume/async-channel/crossbeam: the producer sends \
         the enum to one channel per subscriber). The last row routes by hand with one \
         async-channel per type: the floor any type router is measured against, not a peer. \
         Unit: ns per message sent.\n\n",
    );
    s.push_str("| system | smol | pipedream ÷ this (smol) | tokio | pipedream ÷ this (tokio) |\n|---|---|---|---|---|\n");
    for sys in d.distinct("W2", None, |r| &r.system) {
        let mut cells = Vec::new();
        for rt in RUNTIMES {
            cells.push(cell(d.get("W2", rt, &sys, "4 types")));
            cells.push(if sys == PD_W2 {
                "—".into()
            } else {
                rcell(ratio(
                    d.med("W2", rt, PD_W2, "4 types"),
                    d.med("W2", rt, &sys, "4 types"),
                ))
            });
        }
        let _ = writeln!(s, "| {sys} | {} |", cells.join(" | "));
    }
    s.push('\n');
    s
}

/// W7: delivery policies and request/response, each against its closest peer.
fn section_w7(d: &Data) -> String {
    let mut s = String::from(
        "## W7 — delivery policies and request/response

",
    );
    let _ = writeln!(
        s,
        "What no single peer offers together, each part against the closest single-purpose \
         peer. **W7D drop-oldest**: one producer sends {m} messages as fast as it can to one \
         consumer whose queue of 1,024 keeps the newest (`DeliveryMode::DropOldest`, a \
         `Dropped` event and counters per eviction); the peer is async-broadcast in overflow \
         mode (no report). **W7L latest**: the same with a conflating consumer \
         (`DeliveryMode::Latest`); the peer is `tokio::sync::watch`. Both: ns per message sent \
         (until the last send returned), and the share of messages the consumer saw (it reads \
         until the last). **W7R request/response**: {r} sequential `request` round trips to one \
         responder; the peer is the hand-written pattern, an async-channel of (query, oneshot \
         sender) to a responder task. Medians over the runs (min–max).\n",
        m = d.meta("messages"),
        r = d.meta("w3_sends")
    );
    s.push_str("| runtime | workload | system | ns per message | seen (%) | ÷ peer |\n|---|---|---|---|---|---|\n");
    for rt in RUNTIMES {
        for workload in ["W7D", "W7L"] {
            let systems = d.distinct(workload, Some(rt), |r| &r.system);
            for sys in &systems {
                let vs = systems
                    .iter()
                    .find(|other| !other.starts_with("pipedream"))
                    .filter(|_| sys.starts_with("pipedream"))
                    .map_or("".to_string(), |peer| {
                        rcell(ratio(
                            d.med(workload, rt, sys, "time"),
                            d.med(workload, rt, peer, "time"),
                        ))
                    });
                let _ = writeln!(
                    s,
                    "| {rt} | {workload} | {sys} | {} | {} | {vs} |",
                    cell(d.get(workload, rt, sys, "time")),
                    cell(d.get(workload, rt, sys, "seen"))
                );
            }
        }
    }
    s.push('\n');
    let ps = ["p50", "p99", "mean"];
    s.push_str("| runtime | system (W7R) | p50 ns | p99 ns | mean ns |\n|---|---|---|---|---|\n");
    s.push_str(&percentile_rows(d, "W7R", &ps));
    s.push('\n');
    s
}

/// One row per runtime and system of a latency workload's percentiles `ps`, then, where a
/// runtime has two systems, a row of their ratios (first ÷ second).
fn percentile_rows(d: &Data, workload: &str, ps: &[&str]) -> String {
    let mut s = String::new();
    for rt in RUNTIMES {
        let systems = d.distinct(workload, Some(rt), |r| &r.system);
        for sys in &systems {
            let cells: Vec<String> = ps
                .iter()
                .map(|p| cell(d.get(workload, rt, sys, p)))
                .collect();
            let _ = writeln!(s, "| {rt} | {sys} | {} |", cells.join(" | "));
        }
        if systems.len() == 2 {
            let cells: Vec<String> = ps
                .iter()
                .map(|p| {
                    rcell(ratio(
                        d.med(workload, rt, &systems[0], p),
                        d.med(workload, rt, &systems[1], p),
                    ))
                })
                .collect();
            let _ = writeln!(s, "| {rt} | *ratio* | {} |", cells.join(" | "));
        }
    }
    s
}

fn section_w3(d: &Data) -> String {
    let mut s = String::from("## W3 — tracked round trip\n\n");
    let _ = writeln!(
        s,
        "{} sequential sends, each timed alone: pipedream `send().await` returning after one \
         `sink` processed the message, against an async-channel send followed by waiting for \
         an ack on a second channel (same runtime, same work). Unit: ns; median over the runs of \
         each percentile (min–max). The last column is the share of round trips slower than \
         5 µs: those that had to wake a parked executor thread.\n",
        d.meta("w3_sends")
    );
    let ps = ["p50", "p95", "p99", "p99.9", "mean", "> 5 µs (%)"];
    s.push_str("| runtime | system | p50 | p95 | p99 | p99.9 | mean | sends > 5 µs (%) |\n|---|---|---|---|---|---|---|---|\n");
    s.push_str(&percentile_rows(d, "W3", &ps));
    s.push('\n');
    s
}

fn section_w4(d: &Data) -> String {
    let mut s = String::from("## W4 — memory\n\n");
    let _ = writeln!(
        s,
        "Heap bytes counted by a global allocator in the bench binary (live bytes after minus \
         before). Idle subscribers: {} of them (16 for the preallocating bounded(65,536) \
         async-channel), each a `subscribe::<Msg32>()` on one relay, or one channel per \
         subscriber for the peers; the registry's share is included. Queued messages: {} sent, \
         nobody reading.\n",
        d.meta("w4_subscribers"),
        d.meta("w4_queued")
    );
    for (param, title) in [
        ("idle subscriber", "Bytes per idle subscriber"),
        ("queued message", "Bytes per queued message"),
        ("handle", "Inline size"),
    ] {
        let _ = writeln!(s, "| {title} | bytes |\n|---|---|");
        for r in d
            .rows
            .iter()
            .filter(|r| r.workload == "W4" && r.param == param)
        {
            let _ = writeln!(s, "| {} | {} |", r.system, cell(Some(r)));
        }
        s.push('\n');
    }
    s
}

fn section_w5(d: &Data) -> String {
    let mut s = String::from("## W5 — transformation overhead\n\n");
    if !d.rows.iter().any(|r| r.workload == "W5") {
        s.push_str("Not measured in this run.\n\n");
        return s;
    }
    let _ = writeln!(
        s,
        "{} messages through a chain of `depth` transformations to one untracked subscriber. \
         `filter` is tracked: every `send` waits for the decision of each filter down the chain \
         (a round trip per message per stage). `map` and `batch` are tracking boundaries: sends do \
         not wait. The async-channel rows are the hand-written equivalent: a task per stage \
         between unbounded channels. Unit: ns per message.\n",
        d.meta("w5_messages")
    );
    for rt in RUNTIMES {
        let params = d.distinct("W5", Some(rt), |r| &r.param);
        if params.is_empty() {
            continue;
        }
        let _ = writeln!(s, "### {rt}\n");
        s.push_str(&grid(d, "W5", rt, &params, "ns per message"));
    }
    s
}

fn section_w6(d: &Data) -> String {
    let mut s = String::from("## W6 — scaling\n\n");
    let _ = writeln!(
        s,
        "**Subscribers.** W1's workload (lossless, untracked) with 1 to 1,024 subscribers: {} \
         messages up to 16 subscribers, then {} deliveries in all (so 1,024 subscribers get \
         fewer messages each). Unit: ns per delivery; the last columns divide by the cost at 16.\n",
        d.meta("messages"),
        d.meta("w6_deliveries")
    );
    for rt in RUNTIMES {
        let params = d.distinct("W6S", Some(rt), |r| &r.param);
        if params.is_empty() {
            continue;
        }
        let systems = d.distinct("W6S", Some(rt), |r| &r.system);
        let _ = writeln!(
            s,
            "| {rt}: subscribers | {} | {} |\n|---|{}",
            systems.join(" | "),
            systems
                .iter()
                .map(|x| format!("{x} ÷ its N=16"))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(systems.len() * 2)
        );
        for p in &params {
            let mut cells: Vec<String> = systems
                .iter()
                .map(|x| cell(d.get("W6S", rt, x, p)))
                .collect();
            cells.extend(
                systems
                    .iter()
                    .map(|x| rcell(ratio(d.med("W6S", rt, x, p), d.med("W6S", rt, x, "N=16")))),
            );
            let _ = writeln!(
                s,
                "| {} | {} |",
                p.trim_start_matches("N="),
                cells.join(" | ")
            );
        }
        s.push('\n');
    }
    s.push_str(
        "**Types.** K message types round-robin, one subscriber per type. \"one thread\" is \
         routing alone: one thread sends batches of 256 messages and drains every subscriber \
         with `try_recv` (no executor, no wake-ups), next to the same loop on one async-channel \
         per type. The smol/tokio rows run a task per subscriber, so they also pay K tasks' \
         wake-ups. Unit: ns per message; the last column divides by the cost at 1 type.\n\n",
    );
    s.push_str("| runtime | system | types | ns per message | ÷ 1 type |\n|---|---|---|---|---|\n");
    for rt in d.distinct("W6T", None, |r| &r.runtime) {
        for sys in d.distinct("W6T", Some(&rt), |r| &r.system) {
            for p in d.distinct("W6T", Some(&rt), |r| &r.param) {
                let _ = writeln!(
                    s,
                    "| {rt} | {sys} | {} | {} | {} |",
                    p.trim_start_matches("types="),
                    cell(d.get("W6T", &rt, &sys, &p)),
                    rcell(ratio(
                        d.med("W6T", &rt, &sys, &p),
                        d.med("W6T", &rt, &sys, "types=1")
                    ))
                );
            }
        }
    }
    s.push('\n');
    s
}

// ------------------------------------------------------------------------------------
// The SVG plot
// ------------------------------------------------------------------------------------

fn color(system: &str) -> &'static str {
    if system.starts_with("pipedream sink") {
        "#9467bd"
    } else if system.starts_with("pipedream") {
        "#d62728"
    } else if system.starts_with("tokio") {
        "#1f77b4"
    } else if system.starts_with("async-broadcast") {
        "#17becf"
    } else if system.starts_with("flume") {
        "#2ca02c"
    } else if system.contains("floor, not a peer") {
        "#bbbbbb"
    } else if system.starts_with("async-channel") {
        "#ff7f0e"
    } else {
        "#8c564b"
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars, one panel per runtime, one block per case (W1 N=1/4/16, W2); each bar is
/// a median with a min–max whisker. The sequential-sink series is left out (off scale).
fn svg(d: &Data) -> String {
    let cases: Vec<(&str, &str, String)> = vec![
        ("W1", "N=1", "W1 fan-out, N=1 (ns/delivery)".into()),
        ("W1", "N=4", "W1 fan-out, N=4 (ns/delivery)".into()),
        ("W1", "N=16", "W1 fan-out, N=16 (ns/delivery)".into()),
        ("W2", "4 types", "W2 routing, 4 types (ns/message)".into()),
    ];
    let (bar, gap, head, label_w, plot_w, panel_gap) = (13.0, 3.0, 22.0, 300.0, 330.0, 40.0);
    let panel_w = label_w + plot_w + 60.0;
    let mut body = String::new();
    let mut height: f64 = 0.0;
    for (pi, rt) in RUNTIMES.iter().enumerate() {
        let x0 = 10.0 + pi as f64 * (panel_w + panel_gap);
        let mut y = 50.0;
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="30" font-size="16" font-weight="bold">{rt}</text>"#,
            x0
        );
        for (w, p, title) in &cases {
            let rows: Vec<&Row> = d
                .rows
                .iter()
                .filter(|r| {
                    r.workload == *w && r.runtime == *rt && r.param == *p && r.system != PD_SINK
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            let max = rows
                .iter()
                .map(|r| stats(&r.values).2)
                .fold(0.0, f64::max)
                .max(1e-9)
                * 1.08;
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
                x0,
                y + 12.0,
                esc(title)
            );
            y += head;
            let top = y;
            for r in &rows {
                let (m, lo, hi) = stats(&r.values);
                let sx = |v: f64| x0 + label_w + v / max * plot_w;
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
                    x0 + label_w - 6.0,
                    y + bar - 3.0,
                    esc(&r.system)
                );
                let _ = writeln!(
                    body,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bar}" fill="{}"/>"#,
                    x0 + label_w,
                    y,
                    (sx(m) - x0 - label_w).max(0.5),
                    color(&r.system)
                );
                let _ = writeln!(
                    body,
                    r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#333" stroke-width="1"/>"##,
                    sx(lo),
                    sx(hi),
                    y + bar / 2.0,
                    y + bar / 2.0
                );
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                    sx(hi) + 4.0,
                    y + bar - 3.0,
                    num(m)
                );
                y += bar + gap;
            }
            let _ = writeln!(
                body,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
                x0 + label_w,
                x0 + label_w,
                top - 2.0,
                y
            );
            y += 16.0;
        }
        height = height.max(y);
    }
    let width = 20.0 + 2.0 * panel_w + panel_gap;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" \
         font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         {body}<text x=\"10\" y=\"{:.0}\" font-size=\"11\" fill=\"#555\">Bars: median; whiskers: \
         min–max over the runs. Lower is better. The sequential-sink series is left out (off \
         scale; see the W1 tables).</text>\n</svg>\n",
        height + 20.0,
        height + 8.0
    )
}

// ------------------------------------------------------------------------------------

fn main() {
    let mut args = std::env::args().skip(1);
    let input = args
        .next()
        .unwrap_or_else(|| "docs/performance-data.tsv".into());
    let output = args.next().unwrap_or_else(|| "docs/performance.md".into());
    let text = std::fs::read_to_string(&input).unwrap_or_else(|e| panic!("reading {input}: {e}"));
    let d = Data::parse(&text);
    let out_dir = Path::new(&output).parent().unwrap_or(Path::new("."));
    let svg_name = "performance-w1w2.svg";

    let mut md = String::new();
    md.push_str("# Performance\n\n");
    md.push_str(
        "Generated by `tools/bench-report` from the raw samples in \
         [`performance-data.tsv`](performance-data.tsv), which `benches/relay/` wrote. Do not \
         edit by hand (except `benches/profile-notes.md`, included at the end): rerun the \
         commands below.\n\n",
    );
    md.push_str("Every figure is the median of the runs with (min–max). Peers run side by side in the same process and the same pass (rep 1 of every system, then rep 2, …), so noise on this shared machine lands on all of them; compare ratios, not absolute numbers. A ratio is pipedream ÷ peer: above 1.00× pipedream is slower.\n\n");
    md.push_str("## Machine and commands\n\n");
    let _ = writeln!(
        md,
        "| | |\n|---|---|\n| CPU | {} |\n| cores (nproc) | {} |\n| rustc | {} |\n| commit | {} (plus uncommitted work, if any) |\n| date | {} |\n| runs per case | {} |\n| mode | {} |\n| wall time of the run | {} s |\n",
        d.meta("cpu"),
        d.meta("nproc"),
        d.meta("rustc"),
        d.meta("git"),
        d.meta("date"),
        d.meta("reps"),
        if d.meta("quick") == "true" { "QUICK (CI smoke run: sizes too small to mean anything)" } else { "full" },
        d.meta("duration_s"),
    );
    md.push_str(
        "Runtimes: **smol** is smol's global executor with `SMOL_THREADS=2`; **tokio** is a \
         multi-thread runtime with 2 workers. In both, the producer is itself a spawned task, \
         so each workload runs on two executor threads. crossbeam-channel has no async API: its \
         producer is the main thread and each consumer a thread of its own.\n\n",
    );
    md.push_str(
        "```sh\n\
         # full run (about 3 minutes on this machine; W8 needs `nats` and a nats-server), then this report\n\
         CARGO_TARGET_DIR=target cargo bench --features tokio,nats --bench relay\n\
         cargo run -p bench-report -- docs/performance-data.tsv docs/performance.md\n\
         # only some workloads: cargo bench --features tokio --bench relay -- w1 w3\n\
         # CI smoke run (every workload once, tiny sizes, writes nothing)\n\
         PIPEDREAM_BENCH_QUICK=1 cargo bench --features tokio --bench relay\n\
         # the single-threaded loops used for the callgrind profiles\n\
         valgrind --tool=callgrind target/release/deps/relay-<hash> profile\n\
         ```\n\n",
    );
    md.push_str("## Targets\n\n");
    md.push_str(&targets(&d));
    md.push('\n');
    let _ = writeln!(md, "![W1 and W2 per system]({svg_name})\n");
    md.push_str(&section_w1(&d));
    md.push_str(&section_w2(&d));
    md.push_str(&section_w3(&d));
    md.push_str(&section_w4(&d));
    md.push_str(&section_w5(&d));
    md.push_str(&section_w6(&d));
    md.push_str(&section_w7(&d));
    md.push_str(&section_w8(&d));
    md.push_str(&section_w9(&d));
    if let Ok(notes) = std::fs::read_to_string("benches/profile-notes.md") {
        md.push_str(&notes);
        if !md.ends_with('\n') {
            md.push('\n');
        }
    }

    std::fs::write(&output, md).unwrap_or_else(|e| panic!("writing {output}: {e}"));
    let svg_path = out_dir.join(svg_name);
    std::fs::write(&svg_path, svg(&d))
        .unwrap_or_else(|e| panic!("writing {}: {e}", svg_path.display()));
    eprintln!("wrote {output} and {}", svg_path.display());
}
