//! sink: publishes every output of a processed message — emotion result, reply draft,
//! escalation events, or the dead letter — with an idempotent producer, in the order the post
//! stage released them (per-partition input order, so a conversation stays ordered), and
//! acknowledges the message to the offset tracker only when every one of its outputs is
//! acknowledged by the broker. Only then may its offset be stored (at-least-once), or sent
//! with its outputs in one Kafka transaction (exactly-once mode).
//!
//! The dead-letter topic is for bad input only: a Schema Registry failure while encoding an
//! output is retried, then fatal. A dead letter too large for the dead-letter topic goes
//! there truncated (headers and coordinates, no value) rather than failing forever.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use apache_avro::Schema;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Client, Format, KafkaConfig, RunConfig};
use crate::offsets::OffsetTracker;
use crate::pipeline::{Origin, Processed, Unscored};
use crate::reply::LiveDrafter;
use crate::retry::Backoff;
use crate::schema::{SchemaError, SchemaRegistry, contract, contracts};
use crate::source::{self, KafkaConsumer};
use crate::telemetry::metrics;
use crate::webhook::Notifier;

/// What a published record is, for metrics and schema choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Emotion,
    Reply,
    Escalation,
    DeadLetter,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Emotion => "emotion",
            OutputKind::Reply => "reply",
            OutputKind::Escalation => "escalation",
            OutputKind::DeadLetter => "dead_letter",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("delivery to `{topic}` failed: {error}")]
    Delivery { topic: String, error: String },
    #[error("transaction failed: {0}")]
    Transaction(String),
    #[error("schema registry unavailable while encoding outputs: {0}")]
    Registry(String),
}

fn record_transaction(result: &rdkafka::error::KafkaResult<()>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics().transactions.with_label_values(&[label]).inc();
}

/// Serialises outputs as JSON, or Avro in the Confluent wire format.
pub struct OutputEncoder {
    format: Format,
    registry: Arc<SchemaRegistry>,
    /// How long a registry failure is retried before the encoding fails.
    retry_timeout: Duration,
    emotion: Schema,
    reply: Schema,
    escalation: Schema,
}

impl OutputEncoder {
    pub fn new(format: Format, registry: Arc<SchemaRegistry>) -> OutputEncoder {
        OutputEncoder {
            format,
            registry,
            retry_timeout: Duration::from_secs(5),
            emotion: contract(contracts::EMOTION_RESULT),
            reply: contract(contracts::DRAFT_REPLY),
            escalation: contract(contracts::ESCALATION_EVENT),
        }
    }

    /// Retries registry failures for `timeout` (with backoff) before an encoding fails.
    pub fn with_retry_timeout(mut self, timeout: Duration) -> OutputEncoder {
        self.retry_timeout = timeout;
        self
    }

    /// Registers (or looks up) the subject of every output topic now, retrying registry
    /// failures, so no record waits for the registry later. Blocking.
    pub fn prepare(&self, topics: &[(String, OutputKind)]) -> Result<(), SchemaError> {
        if self.format != Format::Avro {
            return Ok(());
        }
        for (topic, kind) in topics {
            let (file, schema) = self.schema(*kind);
            self.id_for(topic, file, schema)?;
        }
        Ok(())
    }

    fn schema(&self, kind: OutputKind) -> (&'static str, &Schema) {
        match kind {
            OutputKind::Emotion => ("emotion_result.avsc", &self.emotion),
            OutputKind::Reply => ("draft_reply.avsc", &self.reply),
            OutputKind::Escalation => ("escalation_event.avsc", &self.escalation),
            OutputKind::DeadLetter => unreachable!("dead letters keep their original bytes"),
        }
    }

    /// The schema id, retrying registry failures with backoff for the retry timeout.
    fn id_for(&self, topic: &str, file: &str, schema: &Schema) -> Result<u32, SchemaError> {
        let mut backoff = Backoff::new(self.retry_timeout);
        loop {
            match self.registry.id_for(topic, file, schema) {
                Err(e) if e.is_transient() => {
                    metrics()
                        .dependency_failures
                        .with_label_values(&["schema_registry"])
                        .inc();
                    let Some(delay) = backoff.next_delay() else {
                        return Err(e);
                    };
                    tracing::warn!(error = %e, topic, retry_in = ?delay, "schema registry unavailable; retrying");
                    std::thread::sleep(delay);
                }
                result => return result,
            }
        }
    }

    pub fn encode<T: Serialize>(
        &self,
        topic: &str,
        kind: OutputKind,
        value: &T,
    ) -> Result<Vec<u8>, SchemaError> {
        match self.format {
            Format::Json => {
                serde_json::to_vec(value).map_err(|e| SchemaError::Encode(e.to_string()))
            }
            Format::Avro => {
                let (file, schema) = self.schema(kind);
                // Registry lookups are cached (and `prepare` filled the cache at startup).
                let id = tokio::task::block_in_place(|| self.id_for(topic, file, schema))?;
                crate::schema::encode_avro(schema, id, value)
            }
        }
    }
}

/// Output topic names.
pub struct Topics {
    pub emotions: String,
    pub escalations: String,
    /// Fixed dead-letter topic, or `<input>.dlq` when `None`.
    pub dlq: Option<String>,
}

impl Topics {
    pub fn from_config(cfg: &RunConfig) -> Topics {
        Topics {
            emotions: cfg.output_topic.clone(),
            escalations: cfg.escalation_topic.clone(),
            dlq: cfg.dlq_topic.clone(),
        }
    }

    fn dlq_for(&self, input: &str) -> String {
        crate::config::dlq_topic(self.dlq.as_deref(), input)
    }
}

#[derive(Clone)]
struct OutRecord {
    topic: String,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: OwnedHeaders,
    kind: OutputKind,
}

pub struct Sink {
    pub producer: FutureProducer,
    pub encoder: OutputEncoder,
    pub topics: Topics,
    pub drafter: Option<LiveDrafter>,
    pub tracker: Arc<OffsetTracker>,
    pub consumer: Arc<KafkaConsumer>,
    /// Exactly-once mode: how long a transaction stays open. `None`: at-least-once.
    pub transaction_interval: Option<Duration>,
    /// The escalation webhook, told of each escalation event once the broker acknowledged it.
    pub webhook: Option<Notifier>,
}

/// An idempotent producer: acks=all, retries without reordering or duplicates; transactional
/// when given a `transactional.id` (exactly-once mode; the caller runs `init_transactions`).
pub fn producer(
    kafka: &KafkaConfig,
    transactional_id: Option<&str>,
) -> anyhow::Result<FutureProducer> {
    // Tuning defaults the operator's properties may override...
    let defaults = [
        ("compression.type", "lz4".to_string()),
        ("linger.ms", "5".to_string()),
    ];
    // ...and the delivery guarantees they may not.
    let mut forced = vec![
        ("enable.idempotence", "true".to_string()),
        ("acks", "all".to_string()),
    ];
    if let Some(id) = transactional_id {
        forced.push(("transactional.id", id.to_string()));
    }
    Ok(kafka
        .client_config(Client::Producer, &defaults, &forced)?
        .create()?)
}

type Completion = (
    Origin,
    SystemTime,
    Vec<(OutputKind, String, Result<(), KafkaError>)>,
);

/// The deliveries of one message's outputs, resolving when all are acknowledged or failed.
type Pending = FuturesUnordered<Pin<Box<dyn Future<Output = Completion> + Send>>>;

/// Exactly-once mode: the open transaction.
#[derive(Default)]
struct Transaction {
    open: bool,
    /// Records whose outputs are all in the open transaction: their offsets go into it.
    done: Vec<(Arc<str>, i32, i64)>,
}

/// How long one transactional call (offsets, commit) may take before the worker gives up.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

impl Sink {
    /// Runs until `input` closes and every delivery completes, or a delivery fails for good
    /// (then the offset of that message is never stored and the worker must restart).
    pub async fn run(self, mut input: mpsc::Receiver<Processed>) -> Result<(), SinkError> {
        let mut txn = self.transaction_interval.map(|_| Transaction::default());
        let mut tick = tokio::time::interval(
            self.transaction_interval
                .unwrap_or(Duration::from_secs(3600)),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending = Pending::new();
        let mut open = true;
        while open || !pending.is_empty() {
            tokio::select! {
                processed = input.recv(), if open => match processed {
                    Some(p) => self.publish(p, &mut pending, txn.as_mut()).await?,
                    None => open = false,
                },
                Some(done) = pending.next(), if !pending.is_empty() => {
                    self.complete(done, txn.as_mut())?
                }
                _ = tick.tick(), if txn.is_some() => {
                    self.commit(&mut pending, txn.as_mut().expect("exactly-once")).await?
                }
            }
        }
        if let Some(txn) = txn.as_mut() {
            self.commit(&mut pending, txn).await?;
        }
        Ok(())
    }

    /// Sends every output of one processed message; their deliveries complete in `pending`.
    async fn publish(
        &self,
        p: Processed,
        pending: &mut Pending,
        mut txn: Option<&mut Transaction>,
    ) -> Result<(), SinkError> {
        if let Some(t) = txn.as_deref_mut().filter(|t| !t.open) {
            self.producer
                .begin_transaction()
                .map_err(|e| SinkError::Transaction(e.to_string()))?;
            t.open = true;
        }
        let records = self.records(&p)?;
        let mut deliveries = Vec::with_capacity(records.len());
        for rec in records {
            let (kind, topic) = (rec.kind, rec.topic.clone());
            // A dead letter the broker finds too large is sent again without its value.
            let fallback =
                (kind == OutputKind::DeadLetter && rec.payload.is_some()).then(|| truncated(&rec));
            let future = self.send(rec, pending, txn.as_deref_mut()).await?;
            deliveries.push((kind, topic, future, fallback));
        }
        let started = SystemTime::now();
        let producer = self.producer.clone();
        let notify = self.webhook.as_ref().and_then(|w| match &p.result {
            Ok(e) if !e.escalations.is_empty() => Some((w.clone(), e.escalations.clone())),
            _ => None,
        });
        pending.push(Box::pin(async move {
            let mut results = Vec::with_capacity(deliveries.len());
            for (kind, topic, fut, fallback) in deliveries {
                let mut r = delivered(fut).await;
                if let (Err(e), Some(fallback)) = (&r, fallback)
                    && too_large(e)
                {
                    tracing::warn!(topic = %topic, "dead letter too large for its topic; sending it truncated");
                    r = send_truncated(&producer, fallback).await;
                }
                results.push((kind, topic, r));
            }
            // Best-effort, after the acknowledgement: a notification never announces an
            // event the topic lacks (an event whose encoding failed went to the DLQ instead).
            if let Some((webhook, events)) = notify {
                let acked = results
                    .iter()
                    .filter(|(k, _, r)| *k == OutputKind::Escalation && r.is_ok())
                    .count();
                if acked == events.len() {
                    events.iter().for_each(|e| webhook.notify(e));
                }
            }
            (p.origin, started, results)
        }));
        Ok(())
    }

    /// Enqueues one record; on a full producer queue, completes deliveries until there is room.
    async fn send(
        &self,
        rec: OutRecord,
        pending: &mut Pending,
        mut txn: Option<&mut Transaction>,
    ) -> Result<DeliveryFuture, SinkError> {
        loop {
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&rec.topic).headers(rec.headers.clone());
            if let Some(k) = &rec.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &rec.payload {
                record = record.payload(p.as_slice());
            }
            match self.producer.send_result(record) {
                Ok(fut) => return Ok(fut),
                // Over the producer's `message.max.bytes`: a dead letter goes truncated.
                Err((e, _))
                    if rec.kind == OutputKind::DeadLetter
                        && rec.payload.is_some()
                        && too_large(&e) =>
                {
                    tracing::warn!(topic = %rec.topic, "dead letter too large to produce; sending it truncated");
                    return Box::pin(self.send(truncated(&rec), pending, txn)).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    metrics().producer_queue_full.inc();
                    match pending.next().await {
                        Some(done) => self.complete(done, txn.as_deref_mut())?,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => {
                    metrics()
                        .producer_errors
                        .with_label_values(&[rec.kind.as_str()])
                        .inc();
                    return Err(SinkError::Delivery {
                        topic: rec.topic,
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    /// Every output of one message is acknowledged: at-least-once stores its offset (once
    /// nothing before it is in flight); exactly-once adds it to the open transaction.
    fn complete(
        &self,
        (origin, started, results): Completion,
        txn: Option<&mut Transaction>,
    ) -> Result<(), SinkError> {
        for (kind, topic, r) in results {
            match r {
                Ok(()) => metrics().produced.with_label_values(&[kind.as_str()]).inc(),
                Err(e) => {
                    metrics()
                        .producer_errors
                        .with_label_values(&[kind.as_str()])
                        .inc();
                    return Err(SinkError::Delivery {
                        topic,
                        error: e.to_string(),
                    });
                }
            }
        }
        origin
            .trace
            .stage("produce", started, SystemTime::now(), vec![]);
        origin.trace.finish();
        metrics()
            .end_to_end_seconds
            .observe(origin.consumed_at.elapsed().as_secs_f64());
        match txn {
            Some(t) => t.done.push((origin.topic, origin.partition, origin.offset)),
            None => {
                if let Some(next) =
                    self.tracker
                        .acknowledge(&origin.topic, origin.partition, origin.offset)
                {
                    source::store(
                        &self.consumer,
                        &[(origin.topic.to_string(), origin.partition, next)],
                    );
                }
            }
        }
        Ok(())
    }

    /// Exactly-once: waits for every delivery of the open transaction, then commits its
    /// outputs together with the input offsets they complete. Any failure is fatal: the
    /// transaction is aborted by the broker (or fenced by the restarted worker) and its
    /// inputs are reprocessed from the last committed offsets.
    async fn commit(&self, pending: &mut Pending, txn: &mut Transaction) -> Result<(), SinkError> {
        if !txn.open {
            return Ok(());
        }
        while let Some(done) = pending.next().await {
            self.complete(done, Some(txn))?;
        }
        // Acknowledge under a hold: a revoke must not return between acknowledging these
        // records and committing their offsets.
        let _hold = self.tracker.hold();
        if self.tracker.take_poisoned() {
            // Partitions were revoked (drain timeout, lost assignment) while their outputs
            // were in this transaction: committing would publish them without their offsets,
            // and the next owner would publish them again.
            let result = tokio::task::block_in_place(|| {
                self.producer.abort_transaction(TRANSACTION_TIMEOUT)
            });
            record_transaction(&Err(KafkaError::Canceled));
            return Err(SinkError::Transaction(format!(
                "partitions were revoked with outputs in the open transaction; aborted it ({})",
                match result {
                    Ok(()) => "abort ok".to_string(),
                    Err(e) => format!("abort failed: {e}"),
                }
            )));
        }
        let advanced: Vec<_> = txn
            .done
            .drain(..)
            .filter_map(|(topic, partition, offset)| {
                let next = self.tracker.acknowledge(&topic, partition, offset)?;
                Some((topic, partition, next))
            })
            .collect();
        let offsets = transaction_offsets(advanced)?;
        let group = match offsets.count() {
            0 => None,
            _ => Some(self.consumer.group_metadata().ok_or_else(|| {
                SinkError::Transaction("the consumer has no group metadata".into())
            })?),
        };
        let started = Instant::now();
        let result = tokio::task::block_in_place(|| {
            if let Some(group) = &group {
                self.producer
                    .send_offsets_to_transaction(&offsets, group, TRANSACTION_TIMEOUT)?;
            }
            self.producer.commit_transaction(TRANSACTION_TIMEOUT)
        });
        metrics()
            .transaction_seconds
            .observe(started.elapsed().as_secs_f64());
        record_transaction(&result);
        result.map_err(|e| SinkError::Transaction(e.to_string()))?;
        txn.open = false;
        Ok(())
    }

    fn records(&self, p: &Processed) -> Result<Vec<OutRecord>, SinkError> {
        let trace_headers = || p.origin.trace.inject(OwnedHeaders::new());
        let enriched = match &p.result {
            Ok(e) => e,
            Err(Unscored::DeadLetter(dl)) => {
                return Ok(vec![self.dead_letter(&p.origin, dl.kind, &dl.reason)]);
            }
            // No outputs: the record completes (and its offset is stored) at once.
            Err(Unscored::Skipped(reason)) => {
                metrics()
                    .skipped
                    .with_label_values(&[reason.as_str()])
                    .inc();
                return Ok(Vec::new());
            }
        };
        let key = Some(enriched.msg.conversation_id.as_bytes().to_vec());
        let mut out = Vec::with_capacity(2 + enriched.escalations.len());
        let mut push = |topic: String,
                        key: Option<Vec<u8>>,
                        kind: OutputKind,
                        encoded: Result<Vec<u8>, SchemaError>| {
            match encoded {
                Ok(payload) => out.push(OutRecord {
                    topic,
                    key,
                    payload: Some(payload),
                    headers: trace_headers(),
                    kind,
                }),
                // The registry is down (after retries): not this record's fault; fatal.
                Err(e) if e.is_transient() => return Err(SinkError::Registry(e.to_string())),
                // A value our own schema rejects (deterministic for this record): keep the
                // message, loudly.
                Err(e) => {
                    tracing::error!(error = %e, kind = kind.as_str(), "output encoding failed; dead-lettering");
                    out.push(self.dead_letter(&p.origin, "output_encoding", &e.to_string()));
                }
            }
            Ok(())
        };
        let t = &self.topics.emotions;
        push(
            t.clone(),
            key.clone(),
            OutputKind::Emotion,
            self.encoder
                .encode(t, OutputKind::Emotion, &enriched.emotion),
        )?;
        if let (Some(draft), Some(drafter)) = (&enriched.draft, &self.drafter) {
            let t = drafter.load().topic_for(&draft.channel).to_string();
            let encoded = self.encoder.encode(&t, OutputKind::Reply, draft);
            push(t, key.clone(), OutputKind::Reply, encoded)?;
        }
        for event in &enriched.escalations {
            metrics()
                .escalations
                .with_label_values(&[event.kind.as_str(), event.severity.as_str()])
                .inc();
            let t = &self.topics.escalations;
            let encoded = self.encoder.encode(t, OutputKind::Escalation, event);
            push(
                t.clone(),
                Some(event.key().into_bytes()),
                OutputKind::Escalation,
                encoded,
            )?;
        }
        Ok(out)
    }

    fn dead_letter(&self, origin: &Origin, kind: &str, reason: &str) -> OutRecord {
        metrics().dead_letters.with_label_values(&[kind]).inc();
        log_dead_letter(origin, kind, reason);
        let headers = dead_letter_headers(origin, kind, reason).into_iter().fold(
            origin.trace.inject(OwnedHeaders::new()),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        );
        OutRecord {
            topic: self.topics.dlq_for(&origin.topic),
            key: origin.key.clone(),
            payload: origin.payload.clone(),
            headers,
            kind: OutputKind::DeadLetter,
        }
    }
}

/// The warning logged for each dead letter: coordinates, kind and reason, never its content.
pub fn log_dead_letter(origin: &Origin, kind: &str, reason: &str) {
    tracing::warn!(kind, reason, topic = %origin.topic, partition = origin.partition, offset = origin.offset, "dead-lettering record");
}

/// Header `moodstream.dead_letter.truncated`: the value is not in the dead letter (it was over
/// `--max-message-bytes`, or too large for the dead-letter topic); says why.
pub const TRUNCATED_HEADER: &str = "moodstream.dead_letter.truncated";

/// The headers of a dead letter (besides the trace context).
pub fn dead_letter_headers(
    origin: &Origin,
    kind: &str,
    reason: &str,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("moodstream.error.kind", kind.to_string()),
        ("moodstream.error.reason", reason.to_string()),
        ("moodstream.source.topic", origin.topic.to_string()),
        ("moodstream.source.partition", origin.partition.to_string()),
        ("moodstream.source.offset", origin.offset.to_string()),
    ];
    if origin.payload.is_none() && kind == "oversized" {
        headers.push((TRUNCATED_HEADER, "value over --max-message-bytes".into()));
    }
    headers
}

/// The dead letter `rec` without its value (and without a key over 1 KiB), saying so.
fn truncated(rec: &OutRecord) -> OutRecord {
    let size = rec.payload.as_ref().map_or(0, Vec::len);
    let note = format!("value of {size} bytes too large for the dead-letter topic");
    OutRecord {
        topic: rec.topic.clone(),
        key: rec.key.clone().filter(|k| k.len() <= 1024),
        payload: None,
        headers: rec.headers.clone().insert(Header {
            key: TRUNCATED_HEADER,
            value: Some(note.as_bytes()),
        }),
        kind: OutputKind::DeadLetter,
    }
}

fn too_large(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

async fn delivered(fut: DeliveryFuture) -> Result<(), KafkaError> {
    match fut.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Sends a truncated dead letter from a delivery future (waiting while the queue is full).
async fn send_truncated(producer: &FutureProducer, rec: OutRecord) -> Result<(), KafkaError> {
    loop {
        let mut record = FutureRecord::<[u8], [u8]>::to(&rec.topic).headers(rec.headers.clone());
        if let Some(k) = &rec.key {
            record = record.key(k.as_slice());
        }
        match producer.send_result(record) {
            Ok(fut) => return delivered(fut).await,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The offsets list of a transaction from every advance of its records' partitions: one entry
/// per partition, the furthest.
fn transaction_offsets(
    advanced: impl IntoIterator<Item = (Arc<str>, i32, i64)>,
) -> Result<TopicPartitionList, SinkError> {
    let mut furthest: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
    for (topic, partition, next) in advanced {
        let e = furthest.entry((topic, partition)).or_insert(next);
        *e = (*e).max(next);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), next) in &furthest {
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .map_err(|e| SinkError::Transaction(e.to_string()))?;
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fake_registry::FakeRegistry;

    fn avro_encoder(registry: &FakeRegistry, retry_timeout: Duration) -> OutputEncoder {
        OutputEncoder::new(
            Format::Avro,
            Arc::new(SchemaRegistry::remote(&registry.url, None)),
        )
        .with_retry_timeout(retry_timeout)
    }

    /// Issue 14: a registry failure while encoding an output dead-lettered good records. The
    /// encoder now waits the outage out (retries with backoff) and then encodes.
    #[test]
    fn output_encoding_waits_out_a_registry_outage() {
        let registry = FakeRegistry::start(&[]);
        registry.set_down(true);
        let encoder = avro_encoder(&registry, Duration::from_secs(120));
        let back = registry.clone();
        let restorer = std::thread::spawn(move || {
            // Up again after the encoder has met the outage twice.
            while back.requests().len() < 2 {
                std::thread::sleep(Duration::from_millis(10));
            }
            back.set_down(false);
        });
        encoder
            .prepare(&[("emotions".to_owned(), OutputKind::Emotion)])
            .expect("registered once the registry is back");
        restorer.join().expect("restorer");
        assert!(registry.requests().len() >= 3, "{:?}", registry.requests());
    }

    /// ...and gives up with a transient error (the worker stops; nothing is dead-lettered)
    /// once the outage has outlasted the retry timeout.
    #[test]
    fn output_encoding_gives_up_after_the_retry_timeout() {
        let registry = FakeRegistry::start(&[]);
        registry.set_down(true);
        let encoder = avro_encoder(&registry, Duration::from_millis(300));
        let err = encoder
            .prepare(&[("emotions".to_owned(), OutputKind::Emotion)])
            .expect_err("the registry never came back");
        assert!(err.is_transient(), "{err}");
    }

    #[test]
    fn a_transaction_sends_one_offset_per_partition() {
        let t: Arc<str> = Arc::from("in");
        let advanced = [(t.clone(), 0, 5), (t.clone(), 1, 3), (t.clone(), 0, 7)];
        let tpl = transaction_offsets(advanced).expect("list");
        assert_eq!(tpl.count(), 2);
        assert_eq!(
            tpl.find_partition("in", 0).map(|e| e.offset()),
            Some(Offset::Offset(7))
        );
    }
}
