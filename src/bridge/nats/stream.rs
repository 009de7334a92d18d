//! Durable, acknowledged delivery over NATS JetStream: [`NatsBridge::export_stream`] and
//! [`NatsBridge::import_stream`], the same contract as the Redis bridge's streams (at
//! least once to every consumer group, duplicates identifiable by `(origin, msg_id)`),
//! on JetStream's streams and durable pull consumers.
//!
//! | wire name | subject | JetStream stream | a group |
//! |---|---|---|---|
//! | `name` | `{prefix}.stream.{name}` | `{prefix}_s{name}`, each part with `_` as `_u` and `.` as `_d` (file storage, created if missing) | a durable pull consumer named after the group (escaped the same way), explicit acks |

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;

use super::{NatsBridge, Shared};
use crate::bridge::{
    check_name, longer, BridgeError, Claim, Codec, Handled, Holding, Local, Mode, Postcard,
    Received, StreamEntry, RETRY_FIRST,
};

/// How many messages an export has published and not yet seen acknowledged.
const IN_FLIGHT: usize = 64;

/// How many messages an import asks for at once (and the most a consumer the bridge
/// makes has out to its group unacknowledged).
const PULL: usize = 64;

impl Shared {
    fn stream_subject(&self, name: &str) -> String {
        format!("{}.stream.{name}", self.prefix)
    }

    /// JetStream stream names cannot hold `.`: each part escaped (one to one), joined by
    /// `_s`, which no escaped part contains.
    fn stream_name(&self, name: &str) -> String {
        format!("{}_s{}", escaped(&self.prefix), escaped(name))
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

/// A wire name as JetStream names may hold it (no `.`), one to one: `_` → `_u`, `.` → `_d`.
fn escaped(name: &str) -> String {
    name.replace('_', "_u").replace('.', "_d")
}

/// JetStream's longest stream or consumer name.
const NAME_LIMIT: usize = 255;

/// Makes (or finds) the stream and the group's consumer, and checks that ones made before
/// fit: the stream carries the subject, the consumer acknowledges explicitly.
async fn consumer_for(
    shared: &Shared,
    name: &str,
    group: &str,
    policy: jetstream::consumer::DeliverPolicy,
) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::Config>, String> {
    let js = shared.jetstream();
    let stream = ensure_stream(shared, &js, name).await?;
    let durable = escaped(group);
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(durable.clone()),
        deliver_policy: policy,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: shared.ack_wait,
        filter_subject: shared.stream_subject(name),
        // No more out to this group's members at once than one pull: what waits behind a
        // held message is not delivered (and then redelivered) meanwhile.
        max_ack_pending: PULL as i64,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&durable, config)
        .await
        .map_err(|e| format!("the consumer {durable}: {e}"))?;
    if consumer.cached_info().config.ack_policy != jetstream::consumer::AckPolicy::Explicit {
        return Err(format!(
            "the consumer {durable} exists, and does not acknowledge each message explicitly"
        ));
    }
    Ok(consumer)
}

/// Makes (or finds) the stream, and checks that one made before carries the subject.
async fn ensure_stream(
    shared: &Shared,
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::stream::Stream, String> {
    let config = shared.stream_config(name);
    // Made by someone else between the look and the make (an export and an import of one
    // process start together): the second try finds it.
    let stream = match js.get_or_create_stream(config.clone()).await {
        Ok(stream) => stream,
        Err(_) => js
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| format!("the stream {}: {e}", config.name))?,
    };
    let subject = shared.stream_subject(name);
    if !stream.cached_info().config.subjects.contains(&subject) {
        return Err(format!(
            "the stream {} exists and does not carry the subject {subject}",
            config.name
        ));
    }
    Ok(stream)
}

impl NatsBridge {
    /// Claims a stream name in one direction; refused if this bridge bridges it in the
    /// other (its import would skip the relay's own messages as echoes, yet acknowledge
    /// them for the whole group).
    fn claim_stream(
        &self,
        import: bool,
        name: &str,
    ) -> Result<(Claim<'_>, Arc<crate::core::Core>), BridgeError> {
        check_name(name)?;
        if self.shared.stream_name(name).len() > NAME_LIMIT {
            return Err(BridgeError::InvalidName {
                name: name.to_owned(),
                reason: "with the prefix, longer than JetStream's 255-byte stream names",
            });
        }
        let claim = self.tasks.names.claim(Mode::Stream, import, name)?;
        match self.shared.local.core.upgrade() {
            Some(core) if !core.is_closed() => Ok((claim, core)),
            _ => Err(BridgeError::Closed),
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
        let (claim, core) = self.claim_stream(false, name)?;
        let sub = crate::EnvelopeSubscription::typed::<T>(&Arc::downgrade(&core));
        drop(core);
        let sub_id = sub.id();
        let exporter = export(self.shared.clone(), sub, codec, name.to_owned());
        let local = self.shared.local.clone();
        let type_name = std::any::type_name::<T>();
        self.tasks.spawn(&local, type_name, sub_id, exporter)?;
        claim.keep();
        Ok(())
    }

    /// Imports `T` as `name` from a JetStream stream, as a member of `group` (a durable
    /// pull consumer of that name), with the default codec. The same contract as the
    /// Redis bridge's `import_stream` (feature `redis`): each message is sent on the
    /// local relay, the bridge waits for the relay's tracked handlers and then
    /// acknowledges it, whether they succeeded or failed; a message nobody on the relay
    /// takes is held and offered again after a pause, until a subscriber comes; one taken
    /// and not acknowledged within the consumer's `ack_wait`
    /// ([`NatsBridgeBuilder::ack_wait`](super::NatsBridgeBuilder::ack_wait), default 30 s;
    /// a consumer made before keeps its own) is delivered again, to this or another
    /// member of the group. The stream and the consumer are created if missing (the
    /// consumer delivering what is published from then on); when this returns both
    /// exist. A consumer that goes away later is made again, from the stream's first
    /// message.
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
        self.start_stream_import::<T, StreamEntry<T>>(name, group, Postcard, StreamEntry::of)
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
        if escaped(group).len() > NAME_LIMIT {
            return Err(BridgeError::InvalidName {
                name: group.to_owned(),
                reason: "longer than JetStream's 255-byte consumer names",
            });
        }
        // Given back unless the import comes into place (also if this future is dropped).
        let (claim, core) = self.claim_stream(true, name)?;
        let shared = self.shared.clone();
        let (name, group) = (name.to_owned(), group.to_owned());
        // The stream and the consumer are made on the bridge's runtime (the client needs
        // tokio), and the consumer moves into the task from there.
        let setup = {
            let shared = shared.clone();
            let (name, group) = (name.clone(), group.clone());
            async move {
                let policy = jetstream::consumer::DeliverPolicy::New;
                consumer_for(&shared, &name, &group, policy)
                    .await
                    .map_err(BridgeError::Connect)
            }
        };
        let consumer = self.tasks.run(setup).await??;
        let importer = StreamImport {
            shared,
            codec,
            wrap,
            subject: self.shared.stream_subject(&name),
            name,
            group,
            core,
        }
        .run(consumer);
        let local = self.shared.local.clone();
        let type_name = std::any::type_name::<U>();
        self.tasks.spawn(&local, type_name, 0, importer)?;
        claim.keep();
        Ok(())
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
    // The stream first (an export may come before any import): a publication to a
    // subject no stream carries would only time out.
    let mut wait = RETRY_FIRST;
    while let Err(reason) = ensure_stream(&shared, &js, &name).await {
        if !std::mem::replace(&mut troubled, true) {
            let subject = subject.clone();
            local.report(type_name, 0, BridgeError::Retrying { subject, reason });
        }
        tokio::time::sleep(wait).await;
        wait = longer(wait);
    }
    troubled = false;
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
                    Err((kind, reason)) if passes(kind, &reason) => {
                        failure.get_or_insert((kind, reason));
                        kept.0.push(envelope);
                        kept.1.push(frame);
                    }
                    // Refused for good (over the stream's size limit, a full stream that
                    // discards new messages, an account limit): dropped, and said so.
                    Err((_, reason)) => {
                        let msg_id = envelope.msg_id();
                        local.dropped(&envelope, holding.subscriber_id);
                        let subject = subject.clone();
                        local.report(type_name, msg_id, BridgeError::Publish { subject, reason });
                    }
                }
            }
            let Some((kind, reason)) = failure else {
                troubled = false;
                break;
            };
            (holding.envelopes, frames) = kept;
            let mut reason = reason;
            if kind == jetstream::context::PublishErrorKind::StreamNotFound {
                // Deleted, or a server that lost its data: made again (or why not).
                if let Err(why) = ensure_stream(&shared, &js, &name).await {
                    reason = why;
                }
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

/// Whether a failed publication may pass if tried again: the connection, a timeout, a
/// stream being made or recovered, too many in flight, a server short of resources; not
/// a refusal for good, which JetStream gives as error code 10054 (over the stream's
/// message size) or 10077 naming a maximum (a full stream that discards new messages).
fn passes(kind: jetstream::context::PublishErrorKind, reason: &str) -> bool {
    use jetstream::context::PublishErrorKind as Kind;
    match kind {
        Kind::TimedOut | Kind::BrokenPipe | Kind::StreamNotFound | Kind::MaxAckPending => true,
        Kind::Other => {
            let for_good = reason.contains("error code 10054")
                || (reason.contains("error code 10077") && reason.contains("maximum"));
            !for_good
        }
        _ => false,
    }
}

/// A stream import's task.
struct StreamImport<T, U, C> {
    shared: Arc<Shared>,
    codec: C,
    wrap: fn(Received<T>, &str, bool) -> U,
    name: String,
    subject: String,
    group: String,
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
        // At most 64 at a time, and no more than the client buffers for a subscription.
        let batch = PULL.min(self.shared.subscription_capacity).max(1);
        // A held message is offered again at least twice within its `ack_wait`.
        let longest_pause = (self.shared.ack_wait / 2).max(Duration::from_millis(10));
        let mut consumer = Some(consumer);
        let mut wait = RETRY_FIRST;
        let mut trouble: Option<&'static str> = None;
        let say = |trouble: &mut Option<&'static str>, what: &'static str, reason: String| {
            if *trouble != Some(what) {
                *trouble = Some(what);
                let subject = self.subject.clone();
                local.report(type_name, 0, BridgeError::Retrying { subject, reason });
            }
        };
        loop {
            let ready = match consumer.as_ref() {
                Some(consumer) => {
                    let opened = std::pin::pin!(consumer
                        .stream()
                        .max_messages_per_batch(batch)
                        .heartbeat(Duration::from_secs(15))
                        .messages());
                    match futures::future::select(opened, closed.as_mut()).await {
                        futures::future::Either::Left((opened, _)) => {
                            opened.map_err(|e| e.to_string())
                        }
                        futures::future::Either::Right(_) => return,
                    }
                }
                None => {
                    // The consumer (or the stream) went away: made again, from the stream's
                    // first message, so nothing it still holds is skipped; after a pause, so
                    // a cause that returns at once is not hammered.
                    let paused = std::pin::pin!(tokio::time::sleep(wait));
                    if let futures::future::Either::Right(_) =
                        futures::future::select(paused, closed.as_mut()).await
                    {
                        return;
                    }
                    wait = longer(wait);
                    let policy = jetstream::consumer::DeliverPolicy::All;
                    let made =
                        std::pin::pin!(consumer_for(&self.shared, &self.name, &self.group, policy));
                    match futures::future::select(made, closed.as_mut()).await {
                        futures::future::Either::Left((Ok(made), _)) => {
                            consumer = Some(made);
                            continue;
                        }
                        futures::future::Either::Left((Err(reason), _)) => Err(reason),
                        futures::future::Either::Right(_) => return,
                    }
                }
            };
            let mut messages = match ready {
                Ok(messages) => messages,
                Err(reason) => {
                    say(&mut trouble, "open", format!("reading failed: {reason}"));
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
                        use jetstream::consumer::pull::MessagesErrorKind as Kind;
                        if matches!(e.kind(), Kind::ConsumerDeleted | Kind::NoResponders) {
                            let reason = format!(
                                "the consumer of group {} is gone ({e}) and is made again from \
                                 the stream's first message",
                                self.group
                            );
                            say(&mut trouble, "gone", reason);
                            consumer = None;
                            break;
                        }
                        // Missed heartbeats, a connection that broke: the client goes on
                        // asking; said once.
                        say(&mut trouble, "read", format!("reading failed: {e}"));
                        continue;
                    }
                    futures::future::Either::Left((None, _)) => {
                        let reason = format!(
                            "the consumer of group {} ended its messages and is made again \
                             from the stream's first message",
                            self.group
                        );
                        say(&mut trouble, "gone", reason);
                        consumer = None;
                        break;
                    }
                    futures::future::Either::Right(_) => return,
                };
                let (sequence, delivered) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.delivered),
                    Err(_) => (0, 1),
                };
                let again = delivered > 1;
                // A message nobody on the relay takes is held (the server told it is still
                // being worked on) and offered again after a pause, in order; given back
                // only if the relay closes.
                let mut pause = RETRY_FIRST;
                loop {
                    match self.handle(&message, sequence, again).await {
                        Handled::Done => {
                            trouble = None;
                            wait = RETRY_FIRST;
                            if again {
                                local.redelivered();
                            }
                            if let Err(e) = message.ack().await {
                                // Delivered again after `ack_wait` (a duplicate).
                                let reason = format!("acknowledging failed: {e}");
                                say(&mut trouble, "ack", reason);
                            }
                            break;
                        }
                        Handled::Unrouted => {
                            let reason = format!(
                                "no subscriber of {type_name} on the local relay: the messages \
                                 wait in the stream until one comes"
                            );
                            say(&mut trouble, "unrouted", reason);
                            let paused = std::pin::pin!(tokio::time::sleep(pause));
                            if let futures::future::Either::Right(_) =
                                futures::future::select(paused, closed.as_mut()).await
                            {
                                let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                                return;
                            }
                            let _ = message.ack_with(jetstream::AckKind::Progress).await;
                            pause = longer(pause).min(longest_pause);
                        }
                        Handled::Closed => return, // left for redelivery
                    }
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
        local.deliver_entry(value, msg_id, &self.subject).await
    }
}
