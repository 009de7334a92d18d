//! W8's peer: the raw `async-nats` client doing the bridge's work by hand (postcard
//! payloads, no frame, no relay).

use super::*;

pub(crate) const RAW_NATS: &str = "async-nats publish / subscribe";
pub(crate) const RAW_NATS_REQUEST: &str = "async-nats request / reply";

/// Waits until the server has processed the client's subscription, as the bridge does
/// (a flush only writes it to the socket): a request nobody answers but the server.
async fn confirmed(client: &async_nats::Client) {
    let answered = client.request(client.new_inbox(), Vec::new().into()).await;
    assert!(
        matches!(&answered, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "{answered:?}"
    );
}

/// W8T, raw: one client publishes `m` encoded messages, a second decodes them.
pub(crate) async fn w8_raw_throughput(url: String, m: usize) -> Duration {
    let publisher = async_nats::connect(url.as_str()).await.expect("connect");
    let reader = async_nats::connect(url.as_str()).await.expect("connect");
    let mut sub = reader.subscribe("bench.raw.w8t").await.expect("subscribe");
    confirmed(&reader).await;
    let last = (m - 1) as u64;
    let read = tokio::spawn(async move {
        let mut acc = 0u64;
        while let Some(msg) = sub.next().await {
            let v: Wire32 = postcard::from_bytes(&msg.payload).expect("decode");
            acc = acc.wrapping_add(v.b);
            if v.a == last {
                break;
            }
        }
        acc
    });
    let t = Instant::now();
    for i in 0..m {
        let bytes = postcard::to_allocvec(&Wire32::new(i as u64)).expect("encode");
        publisher
            .publish("bench.raw.w8t", bytes.into())
            .await
            .expect("publish");
    }
    black_box(read.await.expect("reader"));
    t.elapsed()
}

/// W8R, raw: sequential requests to a responder that decodes each and answers.
pub(crate) async fn w8_raw_round_trips(url: String, iters: usize) -> Vec<u64> {
    let requester = async_nats::connect(url.as_str()).await.expect("connect");
    let responder = async_nats::connect(url.as_str()).await.expect("connect");
    let mut sub = responder
        .queue_subscribe("bench.raw.w8r", "bench.raw.w8r".to_string())
        .await
        .expect("subscribe");
    confirmed(&responder).await;
    let answering = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let v: Wire32 = postcard::from_bytes(&msg.payload).expect("decode");
            black_box(v.a);
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, vec![0u8; 13].into()).await;
            }
        }
    });
    let encode =
        |i: usize| -> Vec<u8> { postcard::to_allocvec(&Wire32::new(i as u64)).expect("encode") };
    for i in 0..iters / 10 {
        black_box(
            requester
                .request("bench.raw.w8r", encode(i).into())
                .await
                .expect("reply"),
        );
    }
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        black_box(
            requester
                .request("bench.raw.w8r", encode(i).into())
                .await
                .expect("reply"),
        );
        samples.push(t.elapsed().as_nanos() as u64);
    }
    answering.abort();
    samples
}
