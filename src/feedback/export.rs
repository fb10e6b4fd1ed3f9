//! `moodstream feedback export`: feedback topic → per-message label ([`super::labels`]) →
//! joined with the customer text from the input topics, masked ([`super::mask`]) → JSONL.
//!
//! Reads fixed offset ranges, never subscribes: `--from`/`--to` become offsets through the
//! brokers' timestamp index; `--group` starts at the group's committed offsets and stops at
//! the high watermarks seen at start, and commits those only after the output file is written,
//! fsynced and renamed into place (a failed run commits nothing and leaves no file). The input
//! topics are scanned over the same span plus `--input-lookback` before it, keeping only the
//! messages some feedback refers to, so memory grows with the feedback, not the traffic.
//!
//! Nothing here logs text or ids; the output never holds message, customer, conversation or
//! agent ids, nor the agents' edited replies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::labels::{self, Dropped, LabelSource};
use super::mask::mask;
use crate::config::{Client, Format, InputDecodeConfig, KafkaConfig, SchemaRegistryConfig};
use crate::console::feedback::FeedbackEvent;
use crate::decode::Limits;
use crate::schema::{SchemaRegistry, contract, contracts};

#[derive(Args, Debug, Clone)]
pub struct ExportConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// The console's feedback topic.
    #[arg(long, env = "MOODSTREAM_FEEDBACK_TOPIC", default_value = "feedback")]
    pub feedback_topic: String,
    /// A topic the original customer messages are on (the worker's input topics); repeat the
    /// flag, or comma-separate.
    #[arg(
        long = "input-topic",
        env = "MOODSTREAM_TOPICS",
        value_delimiter = ',',
        default_value = "customer-messages"
    )]
    pub input_topics: Vec<String>,
    #[command(flatten)]
    pub input: InputDecodeConfig,
    #[command(flatten)]
    pub registry: SchemaRegistryConfig,
    /// Output JSONL file, written to a temporary file beside it and renamed when complete;
    /// `-` for stdout.
    #[arg(long, env = "MOODSTREAM_FEEDBACK_EXPORT_OUT")]
    pub out: String,
    /// Also write the summary (JSON, always printed to stderr) to this file.
    #[arg(long, env = "MOODSTREAM_FEEDBACK_EXPORT_SUMMARY")]
    pub summary: Option<PathBuf>,
    /// Feedback from this time on (RFC 3339; the records' broker timestamps).
    #[arg(
        long,
        env = "MOODSTREAM_FEEDBACK_EXPORT_FROM",
        value_parser = parse_time,
        required_unless_present = "group",
        conflicts_with = "group"
    )]
    pub from: Option<jiff::Timestamp>,
    /// Feedback before this time (RFC 3339); default: everything on the topic at start.
    #[arg(
        long,
        env = "MOODSTREAM_FEEDBACK_EXPORT_TO",
        value_parser = parse_time,
        requires = "from"
    )]
    pub to: Option<jiff::Timestamp>,
    /// Incremental export: start at this consumer group's committed offsets on the feedback
    /// topic (the beginning the first time), read to the end seen at start, and commit that end
    /// only once the output is completely written.
    #[arg(long, env = "MOODSTREAM_FEEDBACK_EXPORT_GROUP")]
    pub group: Option<String>,
    /// How far before the feedback the input topics are scanned for the messages' text
    /// (`30m`, `12h`, `7d`): before `--from`, or before the oldest event's `created_at`.
    #[arg(
        long,
        env = "MOODSTREAM_FEEDBACK_EXPORT_INPUT_LOOKBACK",
        default_value = "7d",
        value_parser = parse_lookback
    )]
    pub input_lookback: Duration,
    /// Longest wait for the brokers (metadata, offsets, the next record) before giving up.
    #[arg(
        long,
        env = "MOODSTREAM_FEEDBACK_EXPORT_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub timeout_ms: u64,
}

fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    s.parse::<jiff::Timestamp>()
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-05-01T00:00:00Z: {e}"))
}

/// `90s`, `30m`, `12h`, `7d`.
fn parse_lookback(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a number and a unit (s, m, h, d), got `{s}`"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` (s, m, h or d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// One line of the export. A contract: the retrain script reads exactly these keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The first 16 hex digits of SHA-256(message_id): stable across exports, not reversible.
    pub example_id: String,
    /// The customer's text, masked.
    pub text: String,
    pub label: String,
    pub label_source: LabelSource,
    pub agents: usize,
    /// Identified on the original (unmasked) text, as the worker identifies it.
    pub language: String,
    pub channel: String,
    pub tenant_id: Option<String>,
    pub model_version: String,
    pub predicted_label: String,
    /// RFC 3339 time of the latest event used.
    pub feedback_at: String,
}

/// The first 16 hex digits of SHA-256 of `message_id`.
pub fn example_id(message_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, message_id.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What an export did: printed to stderr as JSON, and written to `--summary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Feedback records read in the range.
    pub events_read: u64,
    /// Records that are no feedback event (neither JSON nor Avro of the schema).
    pub events_undecodable: u64,
    /// Events seen before under the same `event_id` (the console's retries).
    pub duplicates: u64,
    /// Reject events (no label).
    pub rejects: u64,
    /// Distinct messages with feedback.
    pub messages: u64,
    pub exported: u64,
    pub exported_by_label_source: BTreeMap<&'static str, u64>,
    /// Messages not exported, by reason: conflict, invalid, rejected, no_text.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Exported examples by language.
    pub per_language: BTreeMap<String, u64>,
    /// Input records scanned for the text, and those that could not be decoded.
    pub input_records_scanned: u64,
    pub input_records_undecodable: u64,
    /// With `--group`: whether the new offsets were committed.
    pub committed: bool,
}

impl Summary {
    fn new() -> Summary {
        let mut s = Summary::default();
        for source in [LabelSource::Relabel, LabelSource::Accepted] {
            s.exported_by_label_source.insert(source.as_str(), 0);
        }
        for reason in [
            Dropped::Conflict,
            Dropped::Invalid,
            Dropped::Rejected,
            Dropped::NoText,
        ] {
            s.dropped.insert(reason.as_str(), 0);
        }
        s
    }
}

/// Feedback events grouped per message: deduplicated by `event_id`, edited text dropped.
#[derive(Default)]
pub struct Collected {
    seen: HashSet<String>,
    by_message: HashMap<String, Vec<FeedbackEvent>>,
    oldest_ms: Option<i64>,
}

impl Collected {
    /// Adds one event; false when its `event_id` was seen before.
    pub fn add(&mut self, mut ev: FeedbackEvent) -> bool {
        if !self.seen.insert(ev.event_id.clone()) {
            return false;
        }
        // Never written, so never kept.
        ev.edited_text = None;
        self.oldest_ms = Some(
            self.oldest_ms
                .map_or(ev.created_at, |t| t.min(ev.created_at)),
        );
        self.by_message
            .entry(ev.message_id.clone())
            .or_default()
            .push(ev);
        true
    }

    pub fn wants(&self, message_id: &str) -> bool {
        self.by_message.contains_key(message_id)
    }
}

/// A referenced message's text, masked, and its language.
pub struct Found {
    pub masked: String,
    pub language: String,
}

impl Found {
    pub fn of(msg: &crate::message::CustomerMessage) -> Found {
        Found {
            // On the original text: masking must not change what language it is.
            language: crate::reply::language::identify(msg.language.as_deref(), &msg.text),
            masked: mask(&msg.text, msg.customer_name.as_deref()),
        }
    }
}

/// The examples, sorted by `feedback_at` then `example_id`, and the counts.
pub fn examples(
    collected: &Collected,
    texts: &HashMap<String, Found>,
    summary: &mut Summary,
) -> Vec<Example> {
    let mut out = Vec::new();
    summary.messages = collected.by_message.len() as u64;
    for (message_id, events) in &collected.by_message {
        let verdict = labels::decide(events).and_then(|v| {
            texts
                .get(message_id)
                .map(|found| (v, found))
                .ok_or(Dropped::NoText)
        });
        let (v, found) = match verdict {
            Ok(x) => x,
            Err(reason) => {
                *summary.dropped.entry(reason.as_str()).or_default() += 1;
                continue;
            }
        };
        *summary
            .exported_by_label_source
            .entry(v.source.as_str())
            .or_default() += 1;
        *summary
            .per_language
            .entry(found.language.clone())
            .or_default() += 1;
        summary.exported += 1;
        out.push(Example {
            example_id: example_id(message_id),
            text: found.masked.clone(),
            label: v.label.as_str().to_string(),
            label_source: v.source,
            agents: v.agents,
            language: found.language.clone(),
            channel: v.latest.channel.clone(),
            tenant_id: v.latest.tenant_id.clone(),
            model_version: v.latest.model_version.clone(),
            predicted_label: v.latest.predicted_label.clone(),
            feedback_at: rfc3339(v.latest.created_at),
        });
    }
    out.sort_by(|a, b| (&a.feedback_at, &a.example_id).cmp(&(&b.feedback_at, &b.example_id)));
    out
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Decodes one feedback record as the console encodes it: Confluent wire-format Avro (magic
/// byte 0) with the writer schema from the registry, else JSON.
pub fn decode_event(bytes: &[u8], registry: &SchemaRegistry) -> Option<FeedbackEvent> {
    let format = if bytes.first() == Some(&0) {
        Format::Avro
    } else {
        Format::Json
    };
    static READER: std::sync::OnceLock<apache_avro::Schema> = std::sync::OnceLock::new();
    let reader = READER.get_or_init(|| contract(contracts::FEEDBACK_EVENT));
    crate::console::decode_output(bytes, format, registry, reader)
}

/// Runs the export (blocking Kafka and file work on its own thread).
pub async fn run(cfg: ExportConfig) -> anyhow::Result<Summary> {
    tokio::task::spawn_blocking(move || export(&cfg))
        .await
        .context("export thread")?
}

/// Offsets `[start, end)` of one partition.
#[derive(Debug, Clone, Copy)]
struct Span {
    partition: i32,
    start: i64,
    end: i64,
}

fn export(cfg: &ExportConfig) -> anyhow::Result<Summary> {
    cfg.kafka.validate()?;
    cfg.input.validate()?;
    let inputs: Vec<String> = cfg
        .input_topics
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if inputs.is_empty() {
        bail!("no --input-topic: the text of the messages is read from there");
    }
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    let registry = Arc::new(
        cfg.registry
            .registry(false)
            .context("configuring the Schema Registry client")?,
    );
    let limits = Limits {
        max_message_bytes: 1 << 20,
        max_text_chars: 100_000,
    };
    let decoder = cfg.input.decoder(&inputs, limits, registry.clone())?;
    let group = cfg
        .group
        .clone()
        .unwrap_or_else(|| "moodstream-feedback-export".to_string());
    let consumer: BaseConsumer = cfg
        .kafka
        .client_config(
            Client::Consumer,
            &[],
            // Offsets are committed by hand, once, after the output is safe.
            &[
                ("group.id", group.clone()),
                ("enable.auto.commit", "false".to_string()),
                ("enable.auto.offset.store", "false".to_string()),
            ],
        )?
        .create()
        .context("Kafka consumer")?;
    let now_ms = jiff::Timestamp::now().as_millisecond();

    // 1. The feedback in range.
    let topic = cfg.feedback_topic.as_str();
    let spans = match (&cfg.group, cfg.from) {
        (Some(_), _) => committed_spans(&consumer, topic, timeout)?,
        (None, Some(from)) => time_spans(
            &consumer,
            topic,
            from.as_millisecond(),
            cfg.to.map(|t| t.as_millisecond()),
            timeout,
        )?,
        (None, None) => bail!("give --from or --group"),
    };
    let mut summary = Summary::new();
    let mut collected = Collected::default();
    read_spans(&consumer, topic, &spans, timeout, |bytes| {
        summary.events_read += 1;
        let Some(ev) = bytes.and_then(|b| decode_event(b, &registry)) else {
            summary.events_undecodable += 1;
            return Ok(());
        };
        let reject = ev.action == crate::console::feedback::Action::Reject;
        if !collected.add(ev) {
            summary.duplicates += 1;
        } else if reject {
            summary.rejects += 1;
        }
        Ok(())
    })?;

    // 2. The text of the messages referred to.
    let mut texts: HashMap<String, Found> = HashMap::new();
    if !collected.by_message.is_empty() {
        let since_ms = match (&cfg.group, cfg.from) {
            (None, Some(from)) => from.as_millisecond(),
            _ => collected.oldest_ms.unwrap_or(now_ms),
        }
        .saturating_sub(cfg.input_lookback.as_millis() as i64);
        for input in &inputs {
            let spans = time_spans(&consumer, input, since_ms, None, timeout)?;
            let format = cfg.input.format_of(input);
            read_spans(&consumer, input, &spans, timeout, |bytes| {
                summary.input_records_scanned += 1;
                match decoder.decode_from(input, bytes, format) {
                    Ok(msg) if collected.wants(&msg.message_id) => {
                        texts.insert(msg.message_id.clone(), Found::of(&msg));
                    }
                    Ok(_) | Err(crate::decode::DecodeError::Skipped(_)) => {}
                    Err(e) if e.is_transient() => {
                        return Err(anyhow::anyhow!(e).context(format!("decoding {input}")));
                    }
                    Err(_) => summary.input_records_undecodable += 1,
                }
                Ok(())
            })?;
        }
    }

    // 3. Decide, write, and only then commit.
    let lines = examples(&collected, &texts, &mut summary);
    write_lines(&cfg.out, &lines)?;
    if cfg.group.is_some() {
        let mut tpl = TopicPartitionList::new();
        for s in &spans {
            tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.end))
                .context("offsets to commit")?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the export's offsets for group {group}"))?;
        summary.committed = true;
    }
    let json = serde_json::to_string(&summary).expect("summary serialises");
    eprintln!("{json}");
    if let Some(path) = &cfg.summary {
        write_atomically(path, |w| writeln!(w, "{json}"))
            .with_context(|| format!("writing the summary {}", path.display()))?;
    }
    Ok(summary)
}

fn partitions(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> anyhow::Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("metadata of {topic}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty());
    match t {
        Some(t) => Ok(t.partitions().iter().map(|p| p.id()).collect()),
        None => bail!("topic {topic} does not exist"),
    }
}

/// Per partition: from the first record at or after `from_ms` to the first at or after
/// `to_ms` (the end at start when `None`).
fn time_spans(
    consumer: &BaseConsumer,
    topic: &str,
    from_ms: i64,
    to_ms: Option<i64>,
    timeout: Duration,
) -> anyhow::Result<Vec<Span>> {
    let parts = partitions(consumer, topic, timeout)?;
    let ends = high_watermarks(consumer, topic, &parts, timeout)?;
    let at = |ms: i64| -> anyhow::Result<HashMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Offset(ms.max(0)))?;
        }
        let found = consumer
            .offsets_for_times(tpl, timeout)
            .with_context(|| format!("offsets by time of {topic}"))?;
        Ok(parts
            .iter()
            .map(|p| {
                let offset = match found.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    // No record at or after that time: the end.
                    _ => ends[p],
                };
                (*p, offset.min(ends[p]))
            })
            .collect())
    };
    let starts = at(from_ms)?;
    let stops = match to_ms {
        Some(ms) => at(ms)?,
        None => ends.clone(),
    };
    Ok(parts
        .iter()
        .map(|p| Span {
            partition: *p,
            start: starts[p],
            end: stops[p],
        })
        .collect())
}

/// Per partition: from the group's committed offset (the oldest retained record when it has
/// none) to the end at start.
fn committed_spans(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Span>> {
    let parts = partitions(consumer, topic, timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .with_context(|| format!("committed offsets on {topic}"))?;
    let mut spans = Vec::new();
    for p in parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("offsets of {topic}"))?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        spans.push(Span {
            partition: p,
            start: start.min(high),
            end: high,
        });
    }
    Ok(spans)
}

fn high_watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    parts: &[i32],
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, i64>> {
    parts
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, *p, timeout)
                .with_context(|| format!("offsets of {topic}"))?;
            Ok((*p, high))
        })
        .collect()
}

/// Reads every record of `spans` and hands its value to `f`. A partition is done when its
/// position reaches the span's end (transaction markers and compacted offsets have no record).
fn read_spans(
    consumer: &BaseConsumer,
    topic: &str,
    spans: &[Span],
    timeout: Duration,
    mut f: impl FnMut(Option<&[u8]>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut open: HashMap<i32, i64> = spans
        .iter()
        .filter(|s| s.start < s.end)
        .map(|s| (s.partition, s.end))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for s in spans.iter().filter(|s| open.contains_key(&s.partition)) {
        tpl.add_partition_offset(topic, s.partition, Offset::Offset(s.start))?;
    }
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}"))?;
    let mut progress = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                progress = Instant::now();
                let Some(end) = open.get(&m.partition()).copied() else {
                    continue;
                };
                if m.offset() < end {
                    f(m.payload())?;
                }
                if m.offset() + 1 >= end {
                    open.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "consumer error while exporting"),
            None => {
                let position = consumer.position()?;
                open.retain(|p, end| {
                    !matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *end
                    )
                });
                if !open.is_empty() && progress.elapsed() > timeout {
                    bail!(
                        "no record from {topic} for {} ms before its end offsets",
                        timeout.as_millis()
                    );
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(())
}

/// Writes the examples as JSONL to `out` (`-`: stdout).
fn write_lines(out: &str, lines: &[Example]) -> anyhow::Result<()> {
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        for line in lines {
            serde_json::to_writer(&mut *w, line)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    };
    if out == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        write(&mut lock)
            .and_then(|()| lock.flush())
            .context("writing the examples to stdout")
    } else {
        write_atomically(Path::new(out), |w| write(w))
            .with_context(|| format!("writing the examples to {out}"))
    }
}

/// Writes `path` through a temporary file beside it: fsynced, then renamed over `path`, then
/// the directory fsynced. On any error the temporary file is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Dropped (and deleted) on any early return.
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut w = std::io::BufWriter::new(tmp);
    fill(&mut w)?;
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::feedback::Action;

    fn ev(
        id: &str,
        message: &str,
        agent: &str,
        action: Action,
        label: Option<&str>,
    ) -> FeedbackEvent {
        FeedbackEvent {
            event_id: id.into(),
            action,
            message_id: message.into(),
            draft_id: None,
            conversation_id: "c1".into(),
            tenant_id: Some("acme".into()),
            channel: "chat".into(),
            model_version: "emotion-v3".into(),
            predicted_label: "neutral".into(),
            template_id: None,
            edited_text: Some("secret reply".into()),
            corrected_label: label.map(String::from),
            agent_id: agent.into(),
            created_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn example_ids_are_the_first_16_hex_digits_of_sha256() {
        // `printf m1 | sha256sum`: ca0df2c95aa144c1d0ff...
        assert_eq!(example_id("m1"), "ca0df2c95aa144c1");
        assert_eq!(example_id("m1").len(), 16);
        assert_ne!(example_id("m1"), example_id("m2"));
    }

    #[test]
    fn lookback_takes_seconds_minutes_hours_and_days() {
        assert_eq!(parse_lookback("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_lookback("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_lookback("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_lookback("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_lookback("7").is_err());
        assert!(parse_lookback("d").is_err());
        assert!(parse_lookback("1w").is_err());
    }

    #[test]
    fn duplicate_event_ids_count_once_and_edited_text_is_not_kept() {
        let mut c = Collected::default();
        assert!(c.add(ev("e1", "m1", "a", Action::Accept, None)));
        assert!(!c.add(ev("e1", "m1", "a", Action::Accept, None)));
        assert!(c.add(ev("e2", "m2", "a", Action::Relabel, Some("anger"))));
        assert_eq!(c.by_message.len(), 2);
        assert!(
            c.by_message
                .values()
                .flatten()
                .all(|e| e.edited_text.is_none())
        );
    }

    #[test]
    fn examples_are_masked_joined_and_never_carry_ids() {
        let mut c = Collected::default();
        c.add(ev("e1", "m1", "alice", Action::Relabel, Some("anger")));
        c.add(ev("e2", "m2", "alice", Action::Accept, None));
        c.add(ev("e3", "m3", "bob", Action::Reject, None));
        let msg = crate::message::CustomerMessage {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            customer_id: "u1".into(),
            tenant_id: Some("acme".into()),
            channel: "chat".into(),
            text: "This is Dana, where is my order #A10023? Mail dana@example.com".into(),
            subject: None,
            language: None,
            sent_at: 0,
            customer_name: Some("Dana".into()),
            metadata: Default::default(),
        };
        let texts = HashMap::from([("m1".to_string(), Found::of(&msg))]);
        let mut summary = Summary::new();
        let lines = examples(&c, &texts, &mut summary);
        assert_eq!(lines.len(), 1);
        let json = serde_json::to_string(&lines[0]).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"example_id":"{}","text":"This is <NAME>, where is my order #<ORDER>? Mail <EMAIL>","label":"anger","label_source":"relabel","agents":1,"language":"en","channel":"chat","tenant_id":"acme","model_version":"emotion-v3","predicted_label":"neutral","feedback_at":"2023-11-14T22:13:20Z"}}"#,
                example_id("m1")
            )
        );
        for id in ["m1", "c1", "u1", "alice", "secret reply"] {
            assert!(!json.contains(&format!("\"{id}\"")), "{id} leaked: {json}");
        }
        assert_eq!(summary.exported, 1);
        assert_eq!(summary.dropped["no_text"], 1);
        assert_eq!(summary.dropped["rejected"], 1);
        assert_eq!(summary.per_language["en"], 1);
    }

    #[test]
    fn a_failed_write_leaves_neither_file_nor_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let err = write_atomically(&path, |w| {
            w.write_all(b"half a line")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomically(&path, |w| w.write_all(b"done\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn feedback_decodes_from_both_console_encodings() {
        let e = ev("e1", "m1", "a", Action::Relabel, Some("anger"));
        let registry = SchemaRegistry::local(Path::new("schemas")).unwrap();
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(decode_event(&json, &registry), Some(e.clone()));
        let schema = contract(contracts::FEEDBACK_EVENT);
        let id = registry
            .id_for("feedback", "feedback_event.avsc", &schema)
            .unwrap();
        let avro = crate::schema::encode_avro(&schema, id, &e).unwrap();
        assert_eq!(decode_event(&avro, &registry), Some(e));
        assert_eq!(decode_event(b"not json", &registry), None);
    }
}
