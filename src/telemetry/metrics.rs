//! Prometheus metrics: one prefix (`moodstream_`), units in names, small fixed label sets,
//! never customer data in labels. A process-wide registry, as the stages are process-wide.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub consumed: IntCounterVec,
    pub produced: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub skipped: IntCounterVec,
    pub producer_errors: IntCounterVec,
    pub emotions: IntCounterVec,
    pub escalations: IntCounterVec,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub tokenize_seconds: Histogram,
    pub queue_wait_seconds: Histogram,
    pub inference_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub in_flight: IntGauge,
    pub queue_depth: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub commits: IntCounterVec,
    pub transactions: IntCounterVec,
    pub transaction_seconds: Histogram,
    pub producer_queue_full: IntCounter,
    pub rebalances: IntCounterVec,
    pub redis_degraded: IntGauge,
    pub provider_info: IntGaugeVec,
    pub stage_seconds: HistogramVec,
    pub dependency_failures: IntCounterVec,
    pub consumer_errors: IntCounterVec,
    pub paused_partitions: IntGauge,
    pub in_flight_bytes: IntGauge,
    pub webhook_notifications: IntCounterVec,
    pub webhook_retries: IntCounter,
    pub api_requests: IntCounterVec,
    pub api_request_seconds: HistogramVec,
    pub reloads: IntCounterVec,
    pub model_info: IntGaugeVec,
    pub shadow_compared: IntCounterVec,
    pub shadow_agreed: IntCounterVec,
    pub shadow_labels: IntCounterVec,
    pub shadow_dropped: IntCounter,
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 18).expect("static buckets: bug")
}

impl Metrics {
    fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("moodstream".into()), None).expect("static registry: bug");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("static metric definition: bug");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric: bug");
                m
            }};
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        };
        Metrics {
            consumed: reg!(counter(
                "messages_consumed_total",
                "Records consumed, by input topic.",
                &["topic"]
            )),
            produced: reg!(counter(
                "messages_produced_total",
                "Outputs acknowledged by the broker, by kind (emotion, reply, escalation, dead_letter).",
                &["kind"]
            )),
            dead_letters: reg!(counter(
                "dead_letters_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"]
            )),
            skipped: reg!(counter(
                "skipped_total",
                "Records the input mapping skipped on purpose (no output, offset committed), by \
                 reason (delete, update, agent, internal, system, filtered).",
                &["reason"]
            )),
            producer_errors: reg!(counter(
                "producer_errors_total",
                "Failed deliveries, by kind.",
                &["kind"]
            )),
            emotions: reg!(counter(
                "emotions_total",
                "Classified messages, by primary emotion.",
                &["emotion"]
            )),
            escalations: reg!(counter(
                "escalations_total",
                "Escalation events produced, by kind and severity.",
                &["kind", "severity"]
            )),
            batch_size: reg!(hist(
                "batch_size",
                "Messages per inference batch.",
                prometheus::exponential_buckets(1.0, 2.0, 12).expect("static buckets: bug")
            )),
            batch_tokens: reg!(hist(
                "batch_tokens",
                "Padded tokens per inference batch.",
                prometheus::exponential_buckets(16.0, 2.0, 14).expect("static buckets: bug")
            )),
            tokenize_seconds: reg!(hist(
                "tokenize_seconds",
                "Time to tokenize one message.",
                latency_buckets()
            )),
            queue_wait_seconds: reg!(hist(
                "queue_wait_seconds",
                "Time a message waited in the batch queue.",
                latency_buckets()
            )),
            inference_seconds: reg!(hist(
                "inference_seconds",
                "Time to run one batch through the model.",
                latency_buckets()
            )),
            end_to_end_seconds: reg!(hist(
                "end_to_end_seconds",
                "Consume to last output acknowledged, per message.",
                latency_buckets()
            )),
            in_flight: reg!(IntGauge::new(
                "in_flight_messages",
                "Messages consumed and not yet acknowledged."
            )),
            queue_depth: reg!(IntGaugeVec::new(
                Opts::new("queue_depth", "Messages waiting in a stage's input queue."),
                &["stage"]
            )),
            consumer_lag: reg!(IntGaugeVec::new(
                Opts::new(
                    "consumer_lag",
                    "Consumer lag per assigned partition (librdkafka statistics)."
                ),
                &["topic", "partition"]
            )),
            commits: reg!(counter(
                "commits_total",
                "Offset commits, by result.",
                &["result"]
            )),
            transactions: reg!(counter(
                "transactions_total",
                "Exactly-once mode: transaction commits, by result.",
                &["result"]
            )),
            transaction_seconds: reg!(hist(
                "transaction_commit_seconds",
                "Exactly-once mode: time to flush, send offsets and commit one transaction.",
                latency_buckets()
            )),
            producer_queue_full: reg!(IntCounter::new(
                "producer_queue_full_total",
                "Sends that found the producer queue full and waited for deliveries (backpressure)."
            )),
            rebalances: reg!(counter(
                "rebalances_total",
                "Rebalance events, by kind (assign, revoke, error).",
                &["kind"]
            )),
            redis_degraded: reg!(IntGauge::new(
                "redis_degraded",
                "1 while escalation state falls back to per-replica memory."
            )),
            provider_info: reg!(IntGaugeVec::new(
                Opts::new(
                    "execution_provider_info",
                    "The active ONNX Runtime execution provider (value 1), and the one \
                     --execution-provider asked for (auto, cpu, cuda): provider cpu with requested \
                     auto or cuda is a GPU pod on the CPU fallback."
                ),
                &["provider", "requested"]
            )),
            stage_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "stage_seconds",
                    "Time per message in the post-model stages (escalation: its round's Redis round trip)."
                )
                .buckets(latency_buckets()),
                &["stage"]
            )),
            dependency_failures: reg!(counter(
                "dependency_failures_total",
                "Failed calls to a dependency that are retried, never dead-lettered (schema_registry, model).",
                &["dependency"]
            )),
            consumer_errors: reg!(counter(
                "consumer_errors_total",
                "Consumer errors, by kind (fatal, authorization, other).",
                &["kind"]
            )),
            paused_partitions: reg!(IntGauge::new(
                "paused_partitions",
                "Input partitions paused by backpressure or a retried dependency failure."
            )),
            in_flight_bytes: reg!(IntGauge::new(
                "in_flight_bytes",
                "Key and value bytes of the messages between consume and offset store."
            )),
            webhook_notifications: reg!(counter(
                "webhook_notifications_total",
                "Escalation webhook notifications, by result (delivered, rejected, failed, dropped).",
                &["result"]
            )),
            webhook_retries: reg!(IntCounter::new(
                "webhook_retries_total",
                "Escalation webhook POSTs retried after a transport error, 408, 429 or 5xx."
            )),
            api_requests: reg!(counter(
                "api_requests_total",
                "HTTP API requests answered, by route and status code.",
                &["route", "status"]
            )),
            api_request_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "api_request_seconds",
                    "HTTP API request latency (receipt to response), by route."
                )
                .buckets(latency_buckets()),
                &["route"]
            )),
            reloads: reg!(counter(
                "reloads_total",
                "Reload attempts by part (model, replies, thresholds) and outcome (loaded, \
                 unchanged, failed: the previous one stays live).",
                &["part", "outcome"]
            )),
            model_info: reg!(IntGaugeVec::new(
                Opts::new(
                    "model_info",
                    "1 for the model version that labels messages (role live) and the candidate \
                     in shadow mode (role shadow); 0 for versions that were live earlier."
                ),
                &["model_version", "role"]
            )),
            shadow_compared: reg!(counter(
                "shadow_compared_total",
                "Messages the shadow candidate also scored, by the live model's primary label.",
                &["label"]
            )),
            shadow_agreed: reg!(counter(
                "shadow_agreed_total",
                "Of those, messages where the candidate's primary label was the same, by label: \
                 agreement per label = agreed / compared.",
                &["label"]
            )),
            shadow_labels: reg!(counter(
                "shadow_labels_total",
                "Shadow comparisons by live and candidate primary label (a confusion matrix).",
                &["live", "candidate"]
            )),
            shadow_dropped: reg!(IntCounter::new(
                "shadow_dropped_total",
                "Sampled messages the shadow candidate skipped because it was behind (it never \
                 slows the live path)."
            )),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding to a Vec cannot fail: bug");
        String::from_utf8(buf).expect("prometheus text is UTF-8: bug")
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}
