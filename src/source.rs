//! source: the Kafka consumer. One OS thread polls a `BaseConsumer` (so the rebalance callback
//! may block while revoked partitions drain), decodes each record, registers it with the
//! offset tracker and hands it to the pipeline. Offsets are stored only by the sink, after
//! delivery; librdkafka auto-commits what is stored, and we commit synchronously on revoke
//! and shutdown. In exactly-once mode the consumer commits nothing: the sink sends offsets
//! in its transactions, and a revoke waits until they are committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{Format, RunConfig};
use crate::decode::Decoder;
use crate::health::Health;
use crate::offsets::OffsetTracker;
use crate::pipeline::{Inlet, Origin};
use crate::telemetry::metrics;
use crate::telemetry::trace::MessageTrace;

pub type KafkaConsumer = BaseConsumer<SourceContext>;

/// Consumer callbacks: rebalances drain and commit, statistics feed the lag gauge.
pub struct SourceContext {
    tracker: Arc<OffsetTracker>,
    health: Arc<Health>,
    drain_timeout: Duration,
    exactly_once: bool,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        let gauge = &metrics().consumer_lag;
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    gauge
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        metrics().rebalances.with_label_values(&["revoke"]).inc();
        let revoked = partitions(tpl);
        // Finish what we hold for these partitions so the next owner starts after it.
        let drained = self.tracker.drain(Some(&revoked), self.drain_timeout);
        if !drained {
            tracing::warn!(
                partitions = revoked.len(),
                "revoke: drain timed out; the new owner will reprocess in-flight records"
            );
        }
        if !consumer.assignment_lost() && !self.exactly_once {
            store(consumer, &self.tracker.committable(&revoked));
            commit_now(consumer, "revoke");
        }
        self.tracker.forget(&revoked);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics().rebalances.with_label_values(&["assign"]).inc();
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                self.health.set_in_group(true);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => {
                metrics().rebalances.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "rebalance error");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = &result {
            // "No offset stored" is routine for idle partitions.
            if !matches!(
                e.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
            ) {
                tracing::warn!(error = %e, "offset commit failed");
            }
        }
        record_commit(&result);
    }
}

/// A synchronous commit of the stored offsets (revoke, shutdown). A failure is not fatal
/// (every stored offset's outputs are delivered); the records after the last successful
/// commit are reprocessed by the next owner.
fn commit_now(consumer: &KafkaConsumer, when: &str) {
    let result = consumer.commit_consumer_state(CommitMode::Sync);
    if let Err(e) = &result
        && e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::NoOffset)
    {
        tracing::warn!(error = %e, when, "offset commit failed; records since the last commit will be reprocessed");
    }
    record_commit(&result);
}

fn record_commit(result: &KafkaResult<()>) {
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics().commits.with_label_values(&[label]).inc();
}

/// Stores `next offset to consume` for each partition (the sink calls this after delivery).
pub fn store(consumer: &KafkaConsumer, offsets: &[(String, i32, i64)]) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::error!(error = %e, "cannot build offset list");
            return;
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // After a revoke the partition is no longer ours: the new owner reprocesses.
        tracing::debug!(error = %e, "offset store rejected");
    }
}

/// Creates the consumer and subscribes. Fails clearly if an input topic does not exist.
pub fn connect(
    cfg: &RunConfig,
    tracker: Arc<OffsetTracker>,
    health: Arc<Health>,
) -> anyhow::Result<Arc<KafkaConsumer>> {
    let mut client = cfg.kafka.client_config();
    client
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", (!cfg.exactly_once).to_string())
        .set("isolation.level", "read_committed")
        .set(
            "auto.commit.interval.ms",
            cfg.commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("statistics.interval.ms", "5000")
        .set("allow.auto.create.topics", "false");
    let consumer: KafkaConsumer = client.create_with_context(SourceContext {
        tracker,
        health,
        drain_timeout: cfg.drain_timeout(),
        exactly_once: cfg.exactly_once,
    })?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    for topic in &cfg.topics {
        let known = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        anyhow::ensure!(
            known,
            "input topic `{topic}` does not exist (the worker never creates its input topics)"
        );
    }
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// The source thread's inputs.
pub struct Source {
    pub consumer: Arc<KafkaConsumer>,
    pub decoder: Decoder,
    pub formats: HashMap<String, Format>,
    pub tracker: Arc<OffsetTracker>,
    pub inlet: Inlet,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
    /// The sink commits offsets in its transactions; the consumer commits none.
    pub exactly_once: bool,
    pub stop: Arc<AtomicBool>,
}

/// Polls until `stop` is set, then drains the pipeline (up to the drain timeout) and commits.
pub fn spawn(source: Source) -> JoinHandle<()> {
    let Source {
        consumer,
        decoder,
        formats,
        tracker,
        inlet,
        max_in_flight,
        drain_timeout,
        exactly_once,
        stop,
    } = source;
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            let mut poller = Poller {
                decoder,
                formats,
                tracker: tracker.clone(),
                seqs: HashMap::new(),
                topics: HashMap::new(),
            };
            let mut errors = ErrorLog::default();
            while !stop.load(Ordering::Relaxed) {
                if !tracker.wait_below(max_in_flight, Duration::from_millis(100)) {
                    continue; // backpressure: the pipeline is full
                }
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(e)) => errors.report(&e),
                    Some(Ok(record)) if !poller.dispatch(&record, &inlet) => break, // the pipeline is gone
                    Some(Ok(_)) => {}
                }
                metrics().in_flight.set(tracker.in_flight() as i64);
                metrics()
                    .queue_depth
                    .with_label_values(&["tokenize"])
                    .set(inlet.jobs.len() as i64);
            }
            // Closing the inlet lets every stage drain in order.
            drop(inlet);
            if !tracker.drain(None, drain_timeout) {
                tracing::warn!(
                    in_flight = tracker.in_flight(),
                    "shutdown: drain timed out; uncommitted records will be reprocessed"
                );
            }
            if !exactly_once {
                commit_now(&consumer, "shutdown");
            }
            consumer.unsubscribe();
            tracing::info!("consumer stopped");
        })
        .expect("spawning the source thread")
}

/// Consumer errors repeat on every poll while a broker is down (librdkafka retries by
/// itself): log a new error at once, a repeat at most every 10 s, with the count.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, Instant, u64)>,
}

impl ErrorLog {
    fn report(&mut self, e: &rdkafka::error::KafkaError) {
        let text = e.to_string();
        match &mut self.last {
            Some((last, since, repeats)) if *last == text => {
                *repeats += 1;
                if since.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(error = %text, repeats = *repeats, "consumer error (repeating)");
                    (*since, *repeats) = (Instant::now(), 0);
                }
            }
            _ => {
                tracing::warn!(error = %text, "consumer error");
                self.last = Some((text, Instant::now(), 0));
            }
        }
    }
}

struct Poller {
    decoder: Decoder,
    formats: HashMap<String, Format>,
    tracker: Arc<OffsetTracker>,
    seqs: HashMap<(Arc<str>, i32), u64>,
    topics: HashMap<String, Arc<str>>,
}

impl Poller {
    /// Registers, decodes and forwards one record. False when the pipeline has shut down.
    fn dispatch(&mut self, record: &BorrowedMessage<'_>, inlet: &Inlet) -> bool {
        let started = SystemTime::now();
        let topic = self
            .topics
            .entry(record.topic().to_string())
            .or_insert_with(|| Arc::from(record.topic()))
            .clone();
        let partition = record.partition();
        let seq = self.seqs.entry((topic.clone(), partition)).or_insert(0);
        let origin_seq = *seq;
        *seq += 1;
        self.tracker.register(&topic, partition, record.offset());
        metrics().consumed.with_label_values(&[&topic]).inc();
        let format = self.formats.get(&*topic).copied().unwrap_or(Format::Json);
        let decoded = self.decoder.decode(record.payload(), format);
        let origin = Origin {
            topic,
            partition,
            offset: record.offset(),
            seq: origin_seq,
            consumed_at: Instant::now(),
            consumed_wall: started,
            trace: MessageTrace::from_headers(record.headers()),
            key: record.key().map(<[u8]>::to_vec),
            payload: record.payload().map(<[u8]>::to_vec),
        };
        origin
            .trace
            .stage("decode", started, SystemTime::now(), vec![]);
        inlet.submit(origin, decoded)
    }
}
