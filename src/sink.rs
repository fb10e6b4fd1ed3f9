//! sink: publishes every output of a processed message — emotion result, reply draft,
//! escalation events, or the dead letter — with an idempotent producer, in the order the post
//! stage released them (per-partition input order, so a conversation stays ordered), and
//! acknowledges the message to the offset tracker only when every one of its outputs is
//! acknowledged by the broker. Only then may its offset be stored (at-least-once), or sent
//! with its outputs in one Kafka transaction (exactly-once mode).

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

use crate::config::{Format, KafkaConfig, RunConfig};
use crate::offsets::OffsetTracker;
use crate::pipeline::{Origin, Processed};
use crate::reply::ReplyDrafter;
use crate::schema::{SchemaError, SchemaRegistry, contract, contracts};
use crate::source::{self, KafkaConsumer};
use crate::telemetry::metrics;

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
}

fn record_transaction(result: &rdkafka::error::KafkaResult<()>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics().transactions.with_label_values(&[label]).inc();
}

/// Serialises outputs as JSON, or Avro in the Confluent wire format.
pub struct OutputEncoder {
    format: Format,
    registry: Arc<SchemaRegistry>,
    emotion: Schema,
    reply: Schema,
    escalation: Schema,
}

impl OutputEncoder {
    pub fn new(format: Format, registry: Arc<SchemaRegistry>) -> OutputEncoder {
        OutputEncoder {
            format,
            registry,
            emotion: contract(contracts::EMOTION_RESULT),
            reply: contract(contracts::DRAFT_REPLY),
            escalation: contract(contracts::ESCALATION_EVENT),
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
                let (file, schema) = match kind {
                    OutputKind::Emotion => ("emotion_result.avsc", &self.emotion),
                    OutputKind::Reply => ("draft_reply.avsc", &self.reply),
                    OutputKind::Escalation => ("escalation_event.avsc", &self.escalation),
                    OutputKind::DeadLetter => {
                        unreachable!("dead letters keep their original bytes")
                    }
                };
                // Registry lookups are cached; only the first record per topic does HTTP.
                let id = tokio::task::block_in_place(|| self.registry.id_for(topic, file, schema))?;
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
    pub drafter: Option<Arc<ReplyDrafter>>,
    pub tracker: Arc<OffsetTracker>,
    pub consumer: Arc<KafkaConsumer>,
    /// Exactly-once mode: how long a transaction stays open. `None`: at-least-once.
    pub transaction_interval: Option<Duration>,
}

/// An idempotent producer: acks=all, retries without reordering or duplicates; transactional
/// when given a `transactional.id` (exactly-once mode; the caller runs `init_transactions`).
pub fn producer(
    kafka: &KafkaConfig,
    transactional_id: Option<&str>,
) -> rdkafka::error::KafkaResult<FutureProducer> {
    // Tuning defaults the operator's pass-through options may override...
    let mut defaults = rdkafka::ClientConfig::new();
    defaults
        .set("compression.type", "lz4")
        .set("linger.ms", "5");
    // ...and the delivery guarantees they may not.
    let mut config = kafka.apply(defaults);
    config.set("enable.idempotence", "true").set("acks", "all");
    if let Some(id) = transactional_id {
        config.set("transactional.id", id);
    }
    config.create()
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
        let records = self.records(&p);
        let mut deliveries = Vec::with_capacity(records.len());
        for rec in records {
            let (kind, topic) = (rec.kind, rec.topic.clone());
            let future = self.send(rec, pending, txn.as_deref_mut()).await?;
            deliveries.push((kind, topic, future));
        }
        let started = SystemTime::now();
        pending.push(Box::pin(async move {
            let mut results = Vec::with_capacity(deliveries.len());
            for (kind, topic, fut) in deliveries {
                let r = match fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                };
                results.push((kind, topic, r));
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
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, offset) in txn.done.drain(..) {
            if let Some(next) = self.tracker.acknowledge(&topic, partition, offset) {
                offsets
                    .add_partition_offset(&topic, partition, Offset::Offset(next))
                    .map_err(|e| SinkError::Transaction(e.to_string()))?;
            }
        }
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

    fn records(&self, p: &Processed) -> Vec<OutRecord> {
        let trace_headers = || p.origin.trace.inject(OwnedHeaders::new());
        let enriched = match &p.result {
            Ok(e) => e,
            Err(dl) => return vec![self.dead_letter(&p.origin, dl.kind, &dl.reason)],
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
                // Our own structs failing our own schemas is a bug; keep the message, loudly.
                Err(e) => {
                    tracing::error!(error = %e, kind = kind.as_str(), "output encoding failed; dead-lettering");
                    out.push(self.dead_letter(&p.origin, "output_encoding", &e.to_string()));
                }
            }
        };
        let t = &self.topics.emotions;
        push(
            t.clone(),
            key.clone(),
            OutputKind::Emotion,
            self.encoder
                .encode(t, OutputKind::Emotion, &enriched.emotion),
        );
        if let (Some(draft), Some(drafter)) = (&enriched.draft, &self.drafter) {
            let t = drafter.topic_for(&draft.channel).to_string();
            let encoded = self.encoder.encode(&t, OutputKind::Reply, draft);
            push(t, key.clone(), OutputKind::Reply, encoded);
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
            );
        }
        out
    }

    fn dead_letter(&self, origin: &Origin, kind: &str, reason: &str) -> OutRecord {
        metrics().dead_letters.with_label_values(&[kind]).inc();
        tracing::warn!(kind, reason, topic = %origin.topic, partition = origin.partition, offset = origin.offset, "dead-lettering record");
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        let headers = [
            ("moodstream.error.kind", kind),
            ("moodstream.error.reason", reason),
            ("moodstream.source.topic", &origin.topic),
            ("moodstream.source.partition", &partition),
            ("moodstream.source.offset", &offset),
        ]
        .into_iter()
        .fold(
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
