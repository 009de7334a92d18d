//! W9's peer: the raw `redis` client doing the bridge's work by hand (postcard payloads
//! in pipelines of 64, no frame, no relay).

use super::*;

use futures::StreamExt;

pub(crate) const RAW_REDIS: &str = "redis PUBLISH pipelines / SUBSCRIBE";
pub(crate) const RAW_REDIS_STREAM: &str = "redis XADD pipelines / XREADGROUP + XACK";

const BATCH: usize = 64;

/// Publishes (or appends) `m` encoded messages in pipelines of [`BATCH`].
async fn send_all(conn: &mut redis::aio::MultiplexedConnection, m: usize, key: &str, stream: bool) {
    let mut i = 0;
    while i < m {
        let mut pipe = redis::pipe();
        for j in i..(i + BATCH).min(m) {
            let bytes = postcard::to_allocvec(&Wire32::new(j as u64)).expect("encode");
            if stream {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("f")
                    .arg(bytes)
                    .ignore();
            } else {
                pipe.cmd("PUBLISH").arg(key).arg(bytes).ignore();
            }
        }
        let () = pipe.query_async(conn).await.expect("pipeline");
        i += BATCH;
    }
}

/// W9P, raw: one connection publishes `m` encoded messages, a subscription decodes them.
pub(crate) async fn w9_raw_pubsub(url: String, m: usize) -> Duration {
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut publisher = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut pubsub = client.get_async_pubsub().await.expect("connect");
    pubsub.subscribe("bench.raw.w9p").await.expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let last = (m - 1) as u64;
    let read = tokio::spawn(async move {
        let mut acc = 0u64;
        while let Some(msg) = messages.next().await {
            let v: Wire32 = postcard::from_bytes(msg.get_payload_bytes()).expect("decode");
            acc = acc.wrapping_add(v.b);
            if v.a == last {
                break;
            }
        }
        acc
    });
    let t = Instant::now();
    send_all(&mut publisher, m, "bench.raw.w9p", false).await;
    black_box(read.await.expect("reader"));
    t.elapsed()
}

/// W9S, raw: one connection appends `m` encoded messages, a consumer of a group reads
/// them in batches of [`BATCH`], acknowledging each batch.
pub(crate) async fn w9_raw_stream(url: String, m: usize) -> Duration {
    use redis::streams::StreamReadReply;
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut writer = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut reader = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect");
    let key = "bench.raw.w9s";
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("bench")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut writer)
        .await;
    let last = (m - 1) as u64;
    let read = tokio::spawn(async move {
        let mut acc = 0u64;
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("bench")
                .arg("raw")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(2000)
                .arg("STREAMS")
                .arg(key)
                .arg(">")
                .query_async(&mut reader)
                .await
                .expect("read");
            let entries: Vec<_> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            let mut done = false;
            for entry in &entries {
                let Some(redis::Value::BulkString(bytes)) = entry.map.get("f") else {
                    panic!("an entry without its field");
                };
                let v: Wire32 = postcard::from_bytes(bytes).expect("decode");
                acc = acc.wrapping_add(v.b);
                done |= v.a == last;
            }
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            if !ids.is_empty() {
                let () = redis::cmd("XACK")
                    .arg(key)
                    .arg("bench")
                    .arg(&ids)
                    .query_async(&mut reader)
                    .await
                    .expect("ack");
            }
            if done {
                return acc;
            }
        }
    });
    let t = Instant::now();
    send_all(&mut writer, m, key, true).await;
    black_box(read.await.expect("reader"));
    t.elapsed()
}
