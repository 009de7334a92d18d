//! Durable, acknowledged delivery over NATS JetStream: [`NatsBridge::export_stream`] and
//! [`NatsBridge::import_stream`], the same contract as the Redis bridge's streams (at
//! least once to every consumer group, duplicates identifiable by `(origin, msg_id)`),
//! on JetStream's streams and durable pull consumers.
//!
//! | wire name | subject | JetStream stream | a group |
//! |---|---|---|---|
//! | `name` | `{prefix}.stream.{name}` | `{prefix}_{name}` with `.` as `_` (file storage, created if missing) | a durable pull consumer named after the group, explicit acks |

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream;
use futures::StreamExt;

use super::{NatsBridge, Shared};
use crate::bridge::{
    check_name, longer, BridgeError, Codec, Holding, Local, Postcard, Received, StreamEntry,
    RETRY_FIRST,
};
use crate::relay::error::SendError;

/// How many messages an export has published and not yet seen acknowledged.
const IN_FLIGHT: usize = 64;

impl Shared {
    fn stream_subject(&self, name: &str) -> String {
        format!("{}.stream.{name}", self.prefix)
    }

    /// JetStream stream names cannot hold `.`.
    fn stream_name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix).replace('.', "_")
    }

    /// A JetStream context whose calls and publish acknowledgements wait at most the
    /// bridge's request timeout.
    fn jetstream(&self) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(self.request_timeout)
            .ack_timeout(self.request_timeout)
            .build(self.client.clone())
    }

    fn stream_config(&self, name: &str) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: self.stream_name(name),
            subjects: vec![self.stream_subject(name)],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }
    }
}

/// The claim key of a stream: never a valid wire name (it has a space), so it cannot
/// collide with the other modes' names.
fn stream_key(name: &str) -> String {
    format!("stream {name}")
}

impl NatsBridge {
    /// Claims a stream name in one direction; refused if this bridge bridges it in the
    /// other (its import would skip the relay's own messages as echoes, yet acknowledge
    /// them for the whole group).
    fn claim_stream(
        &self,
        import: bool,
        name: &str,
    ) -> Result<Arc<crate::core::Core>, BridgeError> {
        check_name(name)?;
        let key = stream_key(name);
        {
            let mut names = self.tasks.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.contains(&(false, !import, key.clone()))
                || !names.insert((false, import, key.clone()))
            {
                return Err(BridgeError::AlreadyBridged {
                    name: name.to_owned(),
                });
            }
        }
        match self.shared.local.core.upgrade() {
            Some(core) if !core.is_closed() => Ok(core),
            _ => {
                self.tasks.release(false, import, &key);
                Err(BridgeError::Closed)
            }
        }
    }

    /// Exports `T` as `name` to a JetStream stream with the default codec: every `T` sent
    /// on the local relay from now on is published and waited for until the server
    /// acknowledges that the stream holds it. A publication that fails (the server
    /// unreachable, no acknowledgement in time, the stream missing) is retried until it
    /// succeeds, the messages behind it waiting in the export's queue; the outage is
    /// reported once as a [`BridgeError::Retrying`]. The stream is created if it is
    /// missing. Only when the bridge's last handle is dropped are the messages it still
    /// holds given up, each reported `Dropped`. See SEMANTICS.md §17.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`], [`BridgeError::AlreadyBridged`] (also when this bridge
    /// imports the stream), or [`BridgeError::Closed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_stream::<String>("audit.line")?;
    /// # Ok(()) }
    /// ```
    pub fn export_stream<T>(&self, name: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.export_stream_with::<T>(name, Postcard)
    }

    /// As [`export_stream`](Self::export_stream), with a codec of your own.
    ///
    /// # Errors
    ///
    /// As [`export_stream`](Self::export_stream).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.export_stream_with::<u64>("ticks", pipedream_rs::bridge::Postcard)?;
    /// # Ok(()) }
    /// ```
    pub fn export_stream_with<T>(&self, name: &str, codec: impl Codec<T>) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
    {
        let core = self.claim_stream(false, name)?;
        let sub = crate::EnvelopeSubscription::typed::<T>(&Arc::downgrade(&core));
        drop(core);
        let exporter = export(self.shared.clone(), sub, codec, name.to_owned());
        if let Err(error) = self.tasks.spawn(exporter) {
            self.tasks.release(false, false, &stream_key(name));
            return Err(error);
        }
        Ok(())
    }

    /// Imports `T` as `name` from a JetStream stream, as a member of `group` (a durable
    /// pull consumer of that name), with the default codec. The same contract as
    /// [`RedisBridge::import_stream`](crate::bridge::redis::RedisBridge::import_stream):
    /// each message is sent on the local relay, the bridge waits for the relay's tracked
    /// handlers and then acknowledges it, whether they succeeded or failed; a message
    /// nobody on the relay takes is not acknowledged and comes back later; one taken and
    /// not acknowledged in `ack_wait` (the request timeout, by default 5 s; a
    /// consumer made before keeps its own) is delivered again, to this or another
    /// member of the group. The stream and the consumer are created if missing (the
    /// consumer delivering what is published from then on); when this returns both
    /// exist.
    ///
    /// # Errors
    ///
    /// [`BridgeError::InvalidName`] (the name or the group), [`BridgeError::AlreadyBridged`],
    /// [`BridgeError::Connect`] if the stream or the consumer cannot be made (a server
    /// without JetStream), or [`BridgeError::Closed`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_stream::<String>("audit.line", "archiver").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_stream<T>(&self, name: &str, group: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.start_stream_import::<T, T>(name, group, Postcard, |received, _, _| received.value)
            .await
    }

    /// As [`import_stream`](Self::import_stream), but each value is sent on the local
    /// relay as a [`StreamEntry<T>`] (its `id` the JetStream sequence number), which
    /// identifies the message, to drop duplicates by.
    ///
    /// # Errors
    ///
    /// As [`import_stream`](Self::import_stream).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(bridge: pipedream_rs::bridge::nats::NatsBridge) -> Result<(), pipedream_rs::bridge::BridgeError> {
    /// bridge.import_stream_entries::<String>("audit.line", "archiver").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_stream_entries<T>(&self, name: &str, group: &str) -> Result<(), BridgeError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Any + Send + Sync,
    {
        self.start_stream_import::<T, StreamEntry<T>>(
            name,
            group,
            Postcard,
            |received, id, redelivered| StreamEntry {
                id: id.to_owned(),
                origin: received.origin,
                msg_id: received.msg_id,
                redelivered,
                value: received.value,
            },
        )
        .await
    }

    async fn start_stream_import<T, U>(
        &self,
        name: &str,
        group: &str,
        codec: impl Codec<T>,
        wrap: fn(Received<T>, &str, bool) -> U,
    ) -> Result<(), BridgeError>
    where
        T: Any + Send + Sync,
        U: Any + Send + Sync,
    {
        check_name(group)?;
        let core = self.claim_stream(true, name)?;
        let key = stream_key(name);
        // Given back unless the import comes into place (also if this future is dropped).
        let claim = Claimed {
            bridge: self,
            key: Some(key),
        };
        let shared = self.shared.clone();
        let (name, group) = (name.to_owned(), group.to_owned());
        // The stream and the consumer are made on the bridge's runtime (the client needs
        // tokio), and the consumer moves into the task from there.
        let setup = {
            let shared = shared.clone();
            let (name, group) = (name.clone(), group.clone());
            async move {
                let js = shared.jetstream();
                let stream = js
                    .get_or_create_stream(shared.stream_config(&name))
                    .await
                    .map_err(|e| BridgeError::Connect(format!("the stream: {e}")))?;
                let config = jetstream::consumer::pull::Config {
                    durable_name: Some(group.clone()),
                    deliver_policy: jetstream::consumer::DeliverPolicy::New,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: shared.request_timeout,
                    ..Default::default()
                };
                stream
                    .get_or_create_consumer(&group, config)
                    .await
                    .map_err(|e| BridgeError::Connect(format!("the consumer: {e}")))
            }
        };
        let consumer = self.tasks.run(setup).await??;
        let importer = StreamImport {
            shared,
            codec,
            wrap,
            subject: self.shared.stream_subject(&name),
            name,
            core,
        }
        .run(consumer);
        self.tasks.spawn(importer)?;
        claim.keep();
        Ok(())
    }
}

/// A stream name claimed by an import that is not in place yet.
struct Claimed<'a> {
    bridge: &'a NatsBridge,
    key: Option<String>,
}

impl Claimed<'_> {
    fn keep(mut self) {
        self.key = None;
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.bridge.tasks.release(false, true, &key);
        }
    }
}

/// An export's task: takes up to [`IN_FLIGHT`] messages at a time, publishes them all,
/// then waits for each acknowledgement, and publishes again what was not acknowledged.
async fn export<T: Any + Send + Sync>(
    shared: Arc<Shared>,
    mut sub: crate::EnvelopeSubscription,
    codec: impl Codec<T>,
    name: String,
) {
    let local = shared.local.clone();
    let subject = shared.stream_subject(&name);
    let type_name = std::any::type_name::<T>();
    let js = shared.jetstream();
    let mut holding = Holding {
        local: local.clone(),
        subscriber_id: sub.id(),
        envelopes: Vec::with_capacity(IN_FLIGHT),
    };
    let mut frames: Vec<bytes::Bytes> = Vec::with_capacity(IN_FLIGHT);
    let mut troubled = false;
    while let Some(first) = sub.recv().await {
        let mut next = Some(first);
        while let Some(envelope) = next.take() {
            if Local::came_from_engine(&envelope) {
                local.skipped();
            } else if let Some(value) = envelope.downcast::<T>() {
                let limit = shared.limit();
                match local.encode(&codec, &name, &subject, envelope.msg_id(), &*value, limit) {
                    Ok(frame) => {
                        frames.push(frame.into());
                        holding.envelopes.push(envelope);
                    }
                    Err(error) => local.report(type_name, envelope.msg_id(), error),
                }
            }
            if frames.len() < IN_FLIGHT {
                next = sub.try_recv().ok();
            }
        }
        let mut wait = RETRY_FIRST;
        while !frames.is_empty() {
            // Publish all, then collect the acknowledgements: each is the server saying
            // the stream holds that message.
            // Each carries its `(origin, msg_id)` as the JetStream message id, so the
            // server drops a retried publication it already holds (within its duplicate
            // window, 2 minutes by default).
            let mut acks = Vec::with_capacity(frames.len());
            for (frame, envelope) in frames.iter().zip(&holding.envelopes) {
                let id = format!("{:x}-{}", local.wire_id, envelope.msg_id());
                let message = jetstream::message::PublishMessage::build()
                    .payload(frame.clone())
                    .message_id(id);
                acks.push(js.send_publish(subject.clone(), message).await);
            }
            // Awaited together: each acknowledgement's timeout starts when it is first
            // polled, so one by one they would add up.
            let acks = futures::future::join_all(acks.into_iter().map(|ack| async move {
                match ack {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| (e.kind(), e.to_string())),
                    Err(e) => Err((e.kind(), e.to_string())),
                }
            }))
            .await;
            let mut failure = None;
            let mut kept = (Vec::new(), Vec::new());
            let messages = holding.envelopes.drain(..).zip(frames.drain(..));
            for ((envelope, frame), acked) in messages.zip(acks) {
                match acked {
                    Ok(()) => local.exported(),
                    Err((kind, reason)) => {
                        failure.get_or_insert((kind, reason));
                        kept.0.push(envelope);
                        kept.1.push(frame);
                    }
                }
            }
            let Some((kind, reason)) = failure else {
                troubled = false;
                break;
            };
            (holding.envelopes, frames) = kept;
            if kind == jetstream::context::PublishErrorKind::StreamNotFound {
                // Deleted, or a server that lost its data: made again.
                let _ = js.get_or_create_stream(shared.stream_config(&name)).await;
            }
            if !std::mem::replace(&mut troubled, true) {
                let msg_id = holding.envelopes.first().map_or(0, crate::Envelope::msg_id);
                let reason = format!("publishing failed: {reason}");
                let subject = subject.clone();
                local.report(type_name, msg_id, BridgeError::Retrying { subject, reason });
            }
            tokio::time::sleep(wait).await;
            wait = longer(wait);
        }
    }
}

/// What became of one message a stream import delivered.
enum Handled {
    /// Processed (or refused for good, and reported): acknowledge it.
    Done,
    /// Nobody on the local relay took it: leave it for redelivery.
    Unrouted,
    /// The relay closed: leave it, and stop.
    Closed,
}

/// A stream import's task.
struct StreamImport<T, U, C> {
    shared: Arc<Shared>,
    codec: C,
    wrap: fn(Received<T>, &str, bool) -> U,
    name: String,
    subject: String,
    core: Arc<crate::core::Core>,
}

impl<T, U, C> StreamImport<T, U, C>
where
    T: Any + Send + Sync,
    U: Any + Send + Sync,
    C: Codec<T>,
{
    async fn run(self, consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>) {
        let type_name = std::any::type_name::<U>();
        let local = self.shared.local.clone();
        let mut closed = std::pin::pin!(self.core.wait_closed());
        let mut wait = RETRY_FIRST;
        let mut trouble: Option<&'static str> = None;
        // Messages left unacknowledged because nobody took them: not redeliveries.
        let mut waiting: HashSet<u64> = HashSet::new();
        loop {
            let messages = {
                let opened = std::pin::pin!(consumer.messages());
                match futures::future::select(opened, closed.as_mut()).await {
                    futures::future::Either::Left((opened, _)) => opened,
                    futures::future::Either::Right(_) => return,
                }
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    if trouble != Some("open") {
                        trouble = Some("open");
                        let (subject, reason) =
                            (self.subject.clone(), format!("reading failed: {e}"));
                        local.report(type_name, 0, BridgeError::Retrying { subject, reason });
                    }
                    let paused = std::pin::pin!(tokio::time::sleep(wait));
                    if let futures::future::Either::Right(_) =
                        futures::future::select(paused, closed.as_mut()).await
                    {
                        return;
                    }
                    wait = longer(wait);
                    continue;
                }
            };
            loop {
                let next = std::pin::pin!(messages.next());
                let message = match futures::future::select(next, closed.as_mut()).await {
                    futures::future::Either::Left((Some(Ok(message)), _)) => message,
                    futures::future::Either::Left((Some(Err(e)), _)) => {
                        // Missed heartbeats, a connection that broke: the client goes on
                        // asking; said once.
                        if trouble != Some("read") {
                            trouble = Some("read");
                            let (subject, reason) =
                                (self.subject.clone(), format!("reading failed: {e}"));
                            local.report(type_name, 0, BridgeError::Retrying { subject, reason });
                        }
                        continue;
                    }
                    futures::future::Either::Left((None, _)) => break,
                    futures::future::Either::Right(_) => return,
                };
                let (sequence, delivered) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.delivered),
                    Err(_) => (0, 1),
                };
                let again = delivered > 1 && !waiting.remove(&sequence);
                match self.handle(&message, sequence, again).await {
                    Handled::Done => {
                        // Whatever was wrong (a read, nobody taking messages) is over.
                        trouble = None;
                        wait = RETRY_FIRST;
                        if again {
                            local.redelivered();
                        }
                        if let Err(e) = message.ack().await {
                            // Delivered again after `ack_wait` (a duplicate).
                            let (subject, reason) =
                                (self.subject.clone(), format!("acknowledging failed: {e}"));
                            local.report(type_name, 0, BridgeError::Retrying { subject, reason });
                        }
                    }
                    Handled::Unrouted => {
                        waiting.insert(sequence);
                        if trouble != Some("unrouted") {
                            trouble = Some("unrouted");
                            let reason = format!(
                                "no subscriber of {type_name} on the local relay: the messages \
                                 wait in the stream until one comes"
                            );
                            let subject = self.subject.clone();
                            local.report(type_name, 0, BridgeError::Retrying { subject, reason });
                        }
                        let delay = jetstream::AckKind::Nak(Some(wait));
                        let _ = message.ack_with(delay).await;
                        wait = longer(wait);
                    }
                    Handled::Closed => return, // left for redelivery
                }
            }
        }
    }

    /// Delivers one message, and says whether to acknowledge it.
    async fn handle(&self, message: &jetstream::Message, sequence: u64, again: bool) -> Handled {
        let local = &self.shared.local;
        let type_name = std::any::type_name::<U>();
        let received = match local.decode(&self.codec, &self.name, &self.subject, &message.payload)
        {
            Ok(Some(received)) => received,
            Ok(None) => return Handled::Done, // this relay's own message
            Err(error) => {
                local.report(type_name, 0, error);
                return Handled::Done; // it would never decode
            }
        };
        let msg_id = received.msg_id;
        let value = (self.wrap)(received, &sequence.to_string(), again);
        let result = local.deliver_uncounted(value, true).await;
        let unrouted = match &result {
            Ok(receipt) => receipt.is_unrouted(),
            Err(e) => matches!(e, SendError::Unrouted { .. }),
        };
        if unrouted {
            return Handled::Unrouted;
        }
        local.count_delivered(&result);
        match result {
            Ok(_) => Handled::Done,
            Err(SendError::Closed) => Handled::Closed,
            Err(SendError::Downstream(_) | SendError::Aggregate(_)) => Handled::Done,
            Err(error) => {
                let subject = self.subject.clone();
                let reason = format!("not sent on the local relay: {error}");
                local.report(type_name, msg_id, BridgeError::Publish { subject, reason });
                Handled::Done
            }
        }
    }
}
