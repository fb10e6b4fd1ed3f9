//! source: the Kafka consumer. One OS thread polls a `BaseConsumer` (so the rebalance callback
//! may block while revoked partitions drain), decodes each record, registers it with the
//! offset tracker and hands it to the pipeline. Offsets are stored only by the sink, after
//! delivery; librdkafka auto-commits what is stored, and we commit synchronously on revoke
//! and shutdown. In exactly-once mode the consumer commits nothing: the sink sends offsets
//! in its transactions, and a revoke waits until they are committed.
//!
//! The thread never stops polling (so the group membership, `max.poll.interval.ms` and the
//! rebalance callbacks stay alive): a record that cannot go on now — the pipeline is full
//! (`--max-in-flight`, `--max-in-flight-bytes`, a full queue) or the Schema Registry cannot
//! answer — is held, in order, and its partition paused until it has gone on. A registry
//! failure is retried with backoff; one that outlasts `--retry-timeout-ms` is fatal.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::{Client, Format, RunConfig};
use crate::decode::{DecodeError, Decoder};
use crate::health::Health;
use crate::message::CustomerMessage;
use crate::offsets::OffsetTracker;
use crate::pipeline::{Inlet, Origin, Submit};
use crate::retry::{Backoff, Fatal};
use crate::telemetry::metrics;
use crate::telemetry::trace::MessageTrace;

pub type KafkaConsumer = BaseConsumer<SourceContext>;

type Key = (String, i32);

/// Consumer callbacks: rebalances drain and commit, statistics feed the lag gauge.
pub struct SourceContext {
    tracker: Arc<OffsetTracker>,
    health: Arc<Health>,
    drain_timeout: Duration,
    exactly_once: bool,
    /// Assigned partitions, each with the epoch of its assignment: a record held from an
    /// earlier assignment of the partition is stale (the new owner reprocesses it).
    assignment: Mutex<HashMap<Key, u64>>,
    epochs: AtomicU64,
}

impl SourceContext {
    fn epoch(&self, key: &Key) -> Option<u64> {
        self.assignment
            .lock()
            .expect("assignment poisoned: bug")
            .get(key)
            .copied()
    }
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
        // Only assigned partitions: librdkafka also reports partitions it merely knows of.
        let assignment = self.assignment.lock().expect("assignment poisoned: bug");
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                let assigned = assignment.contains_key(&(topic.clone(), *partition));
                if *partition >= 0 && p.consumer_lag >= 0 && assigned {
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
        {
            let mut assignment = self.assignment.lock().expect("assignment poisoned: bug");
            for key in &revoked {
                assignment.remove(key);
            }
        }
        let lost = consumer.assignment_lost();
        // Finish what we hold for these partitions so the next owner starts after it.
        let drained = self.tracker.drain(Some(&revoked), self.drain_timeout);
        if !drained {
            tracing::warn!(
                partitions = revoked.len(),
                "revoke: drain timed out; the new owner will reprocess in-flight records"
            );
        }
        if !lost && !self.exactly_once {
            store(consumer, &self.tracker.committable(&revoked));
            commit_now(consumer, "revoke");
        }
        // Exactly-once: outputs of the records still in flight may be in the open transaction,
        // which would then commit them without their offsets; the sink aborts it instead.
        let dropped = self.tracker.forget(&revoked, self.exactly_once);
        if self.exactly_once && dropped > 0 {
            tracing::error!(
                records = dropped,
                lost,
                "revoked with records in the open transaction: it will be aborted"
            );
        }
        let lag = &metrics().consumer_lag;
        for (topic, partition) in &revoked {
            let _ = lag.remove_label_values(&[topic, &partition.to_string()]);
        }
        if lost {
            // The group dropped us (session timeout): not in it until the next assignment.
            self.health.set_in_group(false);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                metrics().rebalances.with_label_values(&["assign"]).inc();
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                let mut assignment = self.assignment.lock().expect("assignment poisoned: bug");
                for key in partitions(tpl) {
                    assignment.insert(key, self.epochs.fetch_add(1, Ordering::Relaxed));
                }
                drop(assignment);
                // A partition paused under an earlier assignment starts fetching afresh.
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(error = %e, "resuming newly assigned partitions");
                }
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

/// Creates the consumer and subscribes. Fails clearly if an input topic or any of
/// `output_topics` does not exist.
pub fn connect(
    cfg: &RunConfig,
    output_topics: &[String],
    tracker: Arc<OffsetTracker>,
    health: Arc<Health>,
) -> anyhow::Result<Arc<KafkaConsumer>> {
    // Overridable defaults (README "Kafka client settings")...
    let defaults = [
        // --auto-offset-reset (the chart sets KEDA's offsetResetPolicy from the same value).
        (
            "auto.offset.reset",
            cfg.auto_offset_reset.as_str().to_string(),
        ),
        ("statistics.interval.ms", "5000".to_string()),
        ("allow.auto.create.topics", "false".to_string()),
        ("isolation.level", "read_committed".to_string()),
    ];
    // ...and what the offset handling depends on: offsets are stored only after delivery,
    // committed by librdkafka (or in the transaction), rebalances are incremental.
    let mut forced = vec![
        ("group.id", cfg.group.clone()),
        ("enable.auto.commit", (!cfg.exactly_once).to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        (
            "auto.commit.interval.ms",
            cfg.commit_interval_ms.to_string(),
        ),
        (
            "partition.assignment.strategy",
            "cooperative-sticky".to_string(),
        ),
        ("session.timeout.ms", cfg.session_timeout_ms.to_string()),
    ];
    if cfg.exactly_once {
        // Reading aborted input would break exactly-once.
        forced.push(("isolation.level", "read_committed".to_string()));
    }
    if let Some(id) = &cfg.group_instance_id {
        forced.push(("group.instance.id", id.clone()));
    }
    let client = cfg
        .kafka
        .client_config(Client::Consumer, &defaults, &forced)?;
    let consumer: KafkaConsumer = client.create_with_context(SourceContext {
        tracker,
        health,
        drain_timeout: cfg.drain_timeout(),
        exactly_once: cfg.exactly_once,
        assignment: Mutex::default(),
        epochs: AtomicU64::new(1),
    })?;
    let metadata = match consumer.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(metadata) => metadata,
        Err(e) => return Err(connect_error(&consumer, e)),
    };
    let exists = |topic: &str| {
        metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    };
    // A topic the client may not describe is reported without partitions, as if missing.
    let denied = |topic: &str| {
        metadata.topics().iter().any(|t| {
            t.name() == topic
                && t.error().is_some_and(|e| {
                    RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed
                })
        })
    };
    for topic in &cfg.topics {
        anyhow::ensure!(
            !denied(topic),
            "not authorised to read input topic `{topic}` (check the Kafka ACLs of this client)"
        );
        anyhow::ensure!(
            exists(topic),
            "input topic `{topic}` does not exist (the worker never creates its input topics)"
        );
    }
    // A missing output topic would fail the first record that needs it, and again after every
    // restart: refuse to start instead.
    let missing: Vec<&String> = output_topics.iter().filter(|t| !exists(t)).collect();
    anyhow::ensure!(
        missing.is_empty(),
        "output topics do not exist: {} (the worker never creates topics; create them, or \
         point --output-topic, --escalation-topic, --dlq-topic or the reply config's topics \
         at existing ones)",
        missing
            .iter()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(Arc::new(consumer))
}

/// Why the first metadata request failed: a rejected password or certificate shows up as a
/// separate error event (librdkafka keeps retrying), so look for one before reporting a timeout.
fn connect_error(consumer: &KafkaConsumer, e: KafkaError) -> anyhow::Error {
    use RDKafkaErrorCode::{Authentication, SSL, SaslAuthenticationFailed};
    for _ in 0..10 {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Err(event)) => {
                if let Some(code @ (Authentication | SaslAuthenticationFailed | SSL)) =
                    event.rdkafka_error_code()
                {
                    let what = if code == SSL { "TLS" } else { "authentication" };
                    return anyhow::anyhow!(
                        "cannot connect to Kafka: {what} failed ({event}); check the credentials \
                         (sasl.username / password, client certificate and key, CA)"
                    );
                }
            }
            Some(Ok(_)) => {}
            None => break,
        }
    }
    anyhow::Error::new(e).context("cannot connect to Kafka: fetching metadata failed")
}

/// The source thread's inputs.
pub struct Source {
    pub consumer: Arc<KafkaConsumer>,
    pub decoder: Decoder,
    pub formats: HashMap<String, Format>,
    pub tracker: Arc<OffsetTracker>,
    pub inlet: Inlet,
    pub max_in_flight: usize,
    /// Key and value bytes between consume and offset store (backpressure beyond).
    pub max_in_flight_bytes: usize,
    /// Values over this are dead-lettered without a copy of their bytes.
    pub max_message_bytes: usize,
    pub drain_timeout: Duration,
    /// The sink commits offsets in its transactions; the consumer commits none.
    pub exactly_once: bool,
    /// How long a Schema Registry failure is retried before it is fatal.
    pub retry_timeout: Duration,
    pub fatal: Fatal,
    pub health: Arc<Health>,
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
        max_in_flight_bytes,
        max_message_bytes,
        drain_timeout,
        exactly_once,
        retry_timeout,
        fatal,
        health,
        stop,
    } = source;
    std::thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            let mut poller = Poller {
                decoder,
                formats,
                tracker: tracker.clone(),
                consumer: consumer.clone(),
                inlet,
                seqs: HashMap::new(),
                topics: HashMap::new(),
                held: VecDeque::new(),
                paused: HashMap::new(),
                max_in_flight,
                max_in_flight_bytes,
                max_message_bytes,
                retry_timeout,
                fatal: fatal.clone(),
                gave_up: false,
            };
            let mut errors = ErrorLog::default();
            while !stop.load(Ordering::Relaxed) {
                let wait = match poller.flush_held() {
                    Some(wait) => wait,
                    None => break, // the pipeline is gone
                };
                let timeout = match wait {
                    Wait::Idle => Duration::from_millis(100),
                    Wait::Until(at) => at
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(100)),
                    Wait::Queue => Duration::from_millis(10),
                    // Wake as soon as the sink frees room; still serve callbacks every 20 ms.
                    Wait::Room => {
                        tracker.wait_below(
                            max_in_flight,
                            max_in_flight_bytes,
                            Duration::from_millis(20),
                        );
                        Duration::ZERO
                    }
                };
                match consumer.poll(timeout) {
                    None => {}
                    Some(Err(e)) => errors.report(&e, &consumer, &health, &fatal),
                    Some(Ok(record)) if !poller.accept(&record) => break,
                    Some(Ok(_)) => {}
                }
                metrics().in_flight.set(tracker.in_flight() as i64);
                metrics()
                    .in_flight_bytes
                    .set(tracker.in_flight_bytes() as i64);
                metrics()
                    .queue_depth
                    .with_label_values(&["tokenize"])
                    .set(poller.inlet.jobs.len() as i64);
            }
            // Records held back never entered the pipeline: the committed offsets stop before
            // them. Closing the inlet lets every stage drain in order.
            poller.held.clear();
            drop(poller);
            if !tracker.drain(None, drain_timeout) {
                tracing::warn!(
                    in_flight = tracker.in_flight(),
                    "shutdown: drain timed out; uncommitted records will be reprocessed"
                );
            }
            if !exactly_once {
                commit_now(&consumer, "shutdown");
            }
            // What did not drain is left to the next owner; the revoke that unsubscribing
            // triggers must not wait for it a second time (exactly-once: nor commit it).
            tracker.forget(&tracker.partitions(), exactly_once);
            consumer.unsubscribe();
            health.set_in_group(false);
            tracing::info!("consumer stopped");
        })
        .expect("spawning the source thread")
}

/// Consumer errors repeat on every poll while a broker is down (librdkafka retries by
/// itself): log a new error at once, a repeat at most every 10 s, with the count. Fatal and
/// authorisation errors also reach `/healthz` and `moodstream_consumer_errors_total`.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, Instant, u64)>,
}

/// The `kind` label of a consumer error.
fn consumer_error_kind(e: &KafkaError) -> &'static str {
    use RDKafkaErrorCode::*;
    match e.rdkafka_error_code() {
        Some(Fatal) => "fatal",
        Some(
            TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | SaslAuthenticationFailed
            | Authentication,
        ) => "authorization",
        _ => "other",
    }
}

impl ErrorLog {
    fn report(&mut self, e: &KafkaError, consumer: &KafkaConsumer, health: &Health, fatal: &Fatal) {
        let kind = consumer_error_kind(e);
        metrics().consumer_errors.with_label_values(&[kind]).inc();
        match kind {
            "fatal" => {
                // The client is unusable: the underlying error says why.
                let reason = consumer
                    .client()
                    .fatal_error()
                    .map_or_else(|| e.to_string(), |(code, text)| format!("{code:?}: {text}"));
                health.set_consumer_error(format!("fatal consumer error: {reason}"), true);
                fatal.report(format!("fatal consumer error: {reason}"));
            }
            "authorization" => {
                health.set_consumer_error(format!("consumer not authorised: {e}"), false)
            }
            _ => {}
        }
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

/// A record taken from the consumer that has not entered the pipeline yet.
struct Held {
    origin: Origin,
    format: Format,
    /// The assignment it was fetched under.
    epoch: u64,
    /// `None` until decoded without a registry failure.
    decoded: Option<Result<CustomerMessage, DecodeError>>,
    /// Registry failures: the backoff and the next attempt.
    retry: Option<(Backoff, Instant)>,
}

/// What the poll loop waits for before its next pass.
enum Wait {
    Idle,
    /// Room in the in-flight budgets.
    Room,
    /// Room in the next stage's queue (no notification: poll briefly and try again).
    Queue,
    /// A registry retry.
    Until(Instant),
}

struct Poller {
    decoder: Decoder,
    formats: HashMap<String, Format>,
    tracker: Arc<OffsetTracker>,
    consumer: Arc<KafkaConsumer>,
    inlet: Inlet,
    seqs: HashMap<(Arc<str>, i32), u64>,
    topics: HashMap<String, Arc<str>>,
    /// In consumption order; per partition, nothing passes a held record.
    held: VecDeque<Held>,
    /// Partitions we paused, with the epoch of the assignment they were paused under.
    paused: HashMap<Key, u64>,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    max_message_bytes: usize,
    retry_timeout: Duration,
    fatal: Fatal,
    gave_up: bool,
}

impl Poller {
    fn key(origin: &Origin) -> Key {
        (origin.topic.to_string(), origin.partition)
    }

    fn has_room(&self) -> bool {
        self.tracker
            .wait_below(self.max_in_flight, self.max_in_flight_bytes, Duration::ZERO)
    }

    /// Takes one polled record: on into the pipeline, or held (its partition paused). False
    /// when the pipeline has shut down.
    fn accept(&mut self, record: &BorrowedMessage<'_>) -> bool {
        let started = SystemTime::now();
        let topic = self
            .topics
            .entry(record.topic().to_string())
            .or_insert_with(|| Arc::from(record.topic()))
            .clone();
        let partition = record.partition();
        let key = (topic.to_string(), partition);
        let epoch = self.consumer.context().epoch(&key).unwrap_or(0);
        metrics().consumed.with_label_values(&[&topic]).inc();
        let format = self.formats.get(&*topic).copied().unwrap_or(Format::Json);
        let size = record.payload_len();
        let behind = self.held.iter().any(|h| Self::key(&h.origin) == key);
        // Decoding reads the record where librdkafka holds it; a record queued behind a held
        // one of its partition is decoded when its turn comes (an oversized one at once: its
        // bytes are not kept).
        let oversized = size > self.max_message_bytes;
        let decoded = (!behind || oversized)
            .then(|| self.decoder.decode_from(&topic, record.payload(), format));
        let origin = Origin {
            topic,
            partition,
            offset: record.offset(),
            seq: 0, // assigned when it enters the pipeline
            consumed_at: Instant::now(),
            consumed_wall: started,
            trace: MessageTrace::from_headers(record.headers()),
            key: record.key().map(<[u8]>::to_vec),
            // An oversized value is dead-lettered without its bytes: no copy of them.
            payload: (!oversized)
                .then(|| record.payload().map(<[u8]>::to_vec))
                .flatten(),
        };
        origin
            .trace
            .stage("decode", started, SystemTime::now(), vec![]);
        let mut held = Held {
            origin,
            format,
            epoch,
            decoded: None,
            retry: None,
        };
        match decoded {
            None => {}
            Some(Err(e)) if e.is_transient() => self.registry_failed(&mut held, &e),
            Some(d) if behind => held.decoded = Some(d),
            Some(d) if self.has_room() => match self.submit(held.origin, d) {
                Submit::Sent => return true,
                Submit::Closed => return false,
                Submit::Full(back) => {
                    let (origin, d) = *back;
                    (held.origin, held.decoded) = (origin, Some(d));
                }
            },
            Some(d) => held.decoded = Some(d),
        }
        self.pause(&key, epoch);
        self.held.push_back(held);
        true
    }

    /// Registers a record and hands it to the pipeline, with the next sequence number of its
    /// partition if it goes in (the post stage restores order by them, so they are dense).
    fn submit(
        &mut self,
        mut origin: Origin,
        decoded: Result<CustomerMessage, DecodeError>,
    ) -> Submit {
        let seq = self
            .seqs
            .entry((origin.topic.clone(), origin.partition))
            .or_insert(0);
        origin.seq = *seq;
        let bytes =
            origin.key.as_ref().map_or(0, Vec::len) + origin.payload.as_ref().map_or(0, Vec::len);
        // Registered before it is sent (the sink may acknowledge it at once), and
        // unregistered if it does not go in.
        let (topic, partition, offset) = (origin.topic.clone(), origin.partition, origin.offset);
        self.tracker.register(&topic, partition, offset, bytes);
        let result = self.inlet.try_submit(origin, decoded);
        match &result {
            Submit::Sent => *seq += 1,
            Submit::Full(..) | Submit::Closed => self.tracker.unregister(&topic, partition, offset),
        }
        result
    }

    /// A registry failure: retry later with backoff, or give up (fatal) once it has lasted
    /// the retry timeout.
    fn registry_failed(&mut self, held: &mut Held, e: &DecodeError) {
        metrics()
            .dependency_failures
            .with_label_values(&["schema_registry"])
            .inc();
        let first = held.retry.is_none();
        let (backoff, at) = held
            .retry
            .get_or_insert_with(|| (Backoff::new(self.retry_timeout), Instant::now()));
        match backoff.next_delay() {
            Some(delay) => {
                *at = Instant::now() + delay;
                if first {
                    let o = &held.origin;
                    tracing::warn!(error = %e, topic = %o.topic, partition = o.partition, offset = o.offset, "schema registry unavailable: pausing the partition and retrying");
                }
            }
            None if !self.gave_up => {
                self.gave_up = true;
                self.fatal.report(format!(
                    "schema registry unavailable for {:?}: {e}",
                    self.retry_timeout
                ));
            }
            None => {}
        }
    }

    fn pause(&mut self, key: &Key, epoch: u64) {
        if self.paused.get(key) == Some(&epoch) {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&key.0, key.1);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::debug!(error = %e, "pausing a partition");
        }
        self.paused.insert(key.clone(), epoch);
        metrics().paused_partitions.set(self.paused.len() as i64);
    }

    /// Moves held records on, in order per partition; resumes the partitions with nothing held
    /// once the pipeline has room again. `None` when the pipeline has shut down.
    fn flush_held(&mut self) -> Option<Wait> {
        let mut blocked: HashSet<Key> = HashSet::new();
        let mut wait = Wait::Idle;
        let mut i = 0;
        while i < self.held.len() {
            let key = Self::key(&self.held[i].origin);
            if self.consumer.context().epoch(&key).unwrap_or(0) != self.held[i].epoch {
                self.held.remove(i); // revoked: the new owner reads it from the committed offset
                continue;
            }
            if blocked.contains(&key) {
                i += 1;
                continue;
            }
            if self.held[i].decoded.is_none() {
                if let Some((_, at)) = &self.held[i].retry
                    && Instant::now() < *at
                {
                    wait = match wait {
                        Wait::Until(t) if t <= *at => Wait::Until(t),
                        Wait::Idle | Wait::Until(_) => Wait::Until(*at),
                        other => other,
                    };
                    blocked.insert(key);
                    i += 1;
                    continue;
                }
                let h = &self.held[i];
                let d = self.decoder.decode_from(
                    &h.origin.topic,
                    h.origin.payload.as_deref(),
                    h.format,
                );
                match d {
                    Err(e) if e.is_transient() => {
                        let mut h = self.held.remove(i).expect("index in range: bug");
                        self.registry_failed(&mut h, &e);
                        self.held.insert(i, h);
                        blocked.insert(key);
                        i += 1;
                        continue;
                    }
                    d => self.held[i].decoded = Some(d),
                }
            }
            if !self.has_room() {
                wait = Wait::Room;
                break;
            }
            let h = self.held.remove(i).expect("index in range: bug");
            let d = h.decoded.expect("decoded above");
            match self.submit(h.origin, d) {
                Submit::Sent => {}
                Submit::Closed => return None,
                Submit::Full(back) => {
                    let (origin, d) = *back;
                    self.held.insert(
                        i,
                        Held {
                            origin,
                            decoded: Some(d),
                            ..h
                        },
                    );
                    wait = Wait::Queue;
                    break;
                }
            }
        }
        self.resume_idle();
        Some(wait)
    }

    /// Resumes paused partitions that hold nothing back, when the pipeline has headroom (a
    /// quarter of each budget, so a busy worker does not pause and resume on every record).
    fn resume_idle(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let headroom = self.tracker.wait_below(
            self.max_in_flight - self.max_in_flight / 4,
            self.max_in_flight_bytes - self.max_in_flight_bytes / 4,
            Duration::ZERO,
        );
        let ctx = self.consumer.context();
        let held: HashSet<Key> = self.held.iter().map(|h| Self::key(&h.origin)).collect();
        let mut tpl = TopicPartitionList::new();
        self.paused.retain(|key, epoch| {
            if ctx.epoch(key).unwrap_or(0) != *epoch {
                return false; // reassigned since (and resumed then) or revoked
            }
            if held.contains(key) || !headroom {
                return true;
            }
            tpl.add_partition(&key.0, key.1);
            false
        });
        if tpl.count() > 0
            && let Err(e) = self.consumer.resume(&tpl)
        {
            tracing::debug!(error = %e, "resuming partitions");
        }
        metrics().paused_partitions.set(self.paused.len() as i64);
    }
}
