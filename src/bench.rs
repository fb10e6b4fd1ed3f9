//! bench: `moodstream bench` — synthetic messages (or `--input` JSON lines) through decode →
//! tokenize → batch → infer → reply drafting in process (no Kafka), compared with the model
//! stage alone on the same input in the same batches, with a per-stage breakdown and padding
//! efficiency. Numbers for notes come from here, never from tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use prometheus::Histogram;
use prometheus::core::Metric;

use crate::batcher::{BatchPolicy, Queue};
use crate::config::{BenchConfig, Format};
use crate::decode::{Decoder, Limits};
use crate::demo::{Rng, realistic_texts, synthetic};
use crate::message::CustomerMessage;
use crate::model::{Encoded, Engine, Model, ModelError};
use crate::pipeline::{self, Enricher, Job, Origin};
use crate::reply::ReplyDrafter;
use crate::schema::SchemaRegistry;
use crate::telemetry::metrics;
use crate::telemetry::trace::MessageTrace;

/// Words that are one WordPiece each, for exact fixed-length messages.
const WORDS: &[&str] = &[
    "order", "refund", "please", "help", "late", "package", "account", "thanks", "still", "waiting",
];

fn messages(cfg: &BenchConfig) -> anyhow::Result<Vec<CustomerMessage>> {
    if let Some(path) = &cfg.input {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let msgs: Vec<CustomerMessage> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(!msgs.is_empty(), "{} holds no messages", path.display());
        return Ok(msgs);
    }
    let mut rng = Rng::new(cfg.seed);
    let texts = match cfg.fixed_tokens {
        // [CLS] + words + [SEP]
        Some(n) => (0..cfg.messages)
            .map(|_| {
                (0..n.saturating_sub(2).max(1))
                    .map(|_| *rng.pick(WORDS))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
        None => realistic_texts(&mut rng, cfg.messages),
    };
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| synthetic(&mut rng, i, t))
        .collect())
}

/// The upper bound of the histogram bucket holding quantile `q` (an upper estimate).
fn quantile(h: &Histogram, q: f64) -> f64 {
    let m = h.metric();
    let hist = m.get_histogram();
    let target = (hist.get_sample_count() as f64 * q).ceil() as u64;
    hist.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() >= target)
        .map_or(f64::INFINITY, |b| b.upper_bound())
}

fn mean(h: &Histogram) -> f64 {
    h.get_sample_sum() / (h.get_sample_count().max(1) as f64)
}

/// The batches the pipeline's batcher forms when the model is the bottleneck: its queue is
/// full at every cut and every anchor is overdue.
fn saturated_batches(policy: BatchPolicy, encs: &[Encoded]) -> Vec<Vec<&Encoded>> {
    let mut queue = Queue::new(policy);
    let queued_at = tokio::time::Instant::now();
    let overdue = queued_at + policy.max_wait;
    let mut input = encs.iter();
    let mut batches = Vec::new();
    loop {
        while queue.has_room() {
            match input.next() {
                Some(enc) => queue.push(enc, queued_at),
                None => break,
            }
        }
        if queue.is_empty() {
            return batches;
        }
        batches.push(queue.cut(overdue).items);
    }
}

/// Exact quantile `q` of `sorted`.
fn exact_quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or_default()
}

/// Runs `batches` on the sessions, one thread each taking the next batch; returns the wall time
/// and each batch's latency.
fn infer_all(
    engines: &mut [Engine],
    batches: &[Vec<&Encoded>],
) -> Result<(Duration, Vec<Duration>), ModelError> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_session = std::thread::scope(|scope| {
        let workers: Vec<_> = engines
            .iter_mut()
            .map(|engine| {
                let next = &next;
                scope.spawn(move || -> Result<Vec<Duration>, ModelError> {
                    let mut latencies = Vec::new();
                    while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let t = Instant::now();
                        engine.infer(batch)?;
                        latencies.push(t.elapsed());
                    }
                    Ok(latencies)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok((start.elapsed(), per_session.into_iter().flatten().collect()))
}

pub async fn run(cfg: BenchConfig) -> anyhow::Result<()> {
    let msgs = messages(&cfg)?;
    let payloads: Vec<Vec<u8>> = msgs
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;

    // 1. The model stage alone: pre-tokenized, the same batches the pipeline's batcher forms
    //    under load, one thread per session taking the next batch (as the model threads do).
    let model_cfg = cfg.model.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&model_cfg)).await??;
    let encs: Vec<Encoded> = msgs
        .iter()
        .map(|m| model.tokenizer.encode(&m.text))
        .collect::<Result<_, _>>()?;
    let tokens: usize = encs.iter().map(Encoded::len).sum();
    let batches = saturated_batches(cfg.model.batch_policy(), &encs);
    let padded: usize = batches
        .iter()
        .map(|b| b.len() * b.iter().map(|e| e.len()).max().unwrap_or(0))
        .sum();
    let provider = model.engines[0].provider();
    let mut engines = model.engines;
    if let Some(warm) = batches.first() {
        for engine in &mut engines {
            engine.infer(warm)?;
        }
    }
    let (model_only, mut latencies) = infer_all(&mut engines, &batches)?;
    latencies.sort_unstable();
    drop(engines);

    // 2. The whole in-process pipeline on the same messages.
    let model_cfg = cfg.model.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&model_cfg)).await??;
    let enricher = Enricher {
        escalator: None,
        drafter: cfg.draft_replies.then(|| Arc::new(ReplyDrafter::builtin())),
        draft_threads: cfg.draft.threads(),
        model_version: model.scorer.model_version.clone(),
    };
    let decoder = Decoder::new(
        Limits {
            max_message_bytes: 1 << 20,
            max_text_chars: 100_000,
        },
        Arc::new(SchemaRegistry::none()),
    );
    let (inlet, mut processed, _) = pipeline::spawn(model, &cfg.model, enricher);
    let n = payloads.len();
    let start = Instant::now();
    let feeder = std::thread::spawn(move || -> Duration {
        let topic: Arc<str> = Arc::from("bench");
        let mut decode_time = Duration::ZERO;
        for (i, p) in payloads.iter().enumerate() {
            let t = Instant::now();
            let msg = decoder
                .decode(Some(p), Format::Json)
                .expect("synthetic messages decode");
            decode_time += t.elapsed();
            let origin = Origin {
                topic: topic.clone(),
                partition: (i % 6) as i32,
                offset: (i / 6) as i64,
                seq: (i / 6) as u64,
                consumed_at: Instant::now(),
                consumed_wall: SystemTime::now(),
                trace: MessageTrace::default(),
                key: None,
                payload: None,
            };
            if inlet.jobs.send(Job { origin, msg }).is_err() {
                break;
            }
        }
        decode_time
    });
    let mut done = 0;
    let mut drafts = 0;
    while let Some(p) = processed.recv().await {
        done += 1;
        drafts += usize::from(p.result.as_ref().is_ok_and(|e| e.draft.is_some()));
        if done == n {
            break;
        }
    }
    let pipeline_time = start.elapsed();
    let decode_time = feeder.join().expect("feeder panicked: bug");

    let m = metrics();
    let model_rate = n as f64 / model_only.as_secs_f64();
    let pipe_rate = n as f64 / pipeline_time.as_secs_f64();
    let reply = m.stage_seconds.with_label_values(&["reply"]);
    println!(
        "moodstream bench: {n} messages, {:.1} tokens/message mean, provider {}",
        tokens as f64 / n as f64,
        provider.as_str()
    );
    println!(
        "  settings: max_batch_size {} max_batch_tokens {} max_wait_us {} model_sessions {} intra_threads {} tokenizer_threads {}",
        cfg.model.max_batch_size,
        cfg.model.max_batch_tokens,
        cfg.model.max_wait_us,
        cfg.model.model_sessions,
        cfg.model.intra_threads(),
        cfg.model.tokenizer_threads()
    );
    println!(
        "  model stage alone (same batches as the pipeline: {} batches, mean size {:.1}, padding efficiency {:.1} %): {model_rate:.0} messages/s, batch latency p50 {:.2} ms, p99 {:.2} ms",
        batches.len(),
        n as f64 / batches.len() as f64,
        tokens as f64 * 100.0 / padded as f64,
        exact_quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        exact_quantile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "  full pipeline (decode→tokenize→batch→infer{}): {pipe_rate:.0} messages/s, {drafts} drafts",
        if cfg.draft_replies { "→draft" } else { "" }
    );
    println!(
        "  pipeline overhead vs model alone: {:.1} %",
        (1.0 - pipe_rate / model_rate) * 100.0
    );
    println!(
        "  pipeline batches: {} mean size {:.1}, mean padded tokens {:.0}, padding efficiency {:.1} % (real / padded tokens)",
        m.batch_size.get_sample_count(),
        mean(&m.batch_size),
        mean(&m.batch_tokens),
        tokens as f64 * 100.0 / m.batch_tokens.get_sample_sum()
    );
    println!(
        "  pipeline batch latency: mean {:.2} ms, p50 ≤ {:.2} ms, p99 ≤ {:.2} ms (histogram bucket bounds)",
        mean(&m.inference_seconds) * 1e3,
        quantile(&m.inference_seconds, 0.5) * 1e3,
        quantile(&m.inference_seconds, 0.99) * 1e3
    );
    println!(
        "  per message (µs): decode {:.1}, tokenize {:.1}, queue wait {:.1}, inference {:.1} (batch time / size), draft {:.1}",
        decode_time.as_secs_f64() * 1e6 / n as f64,
        mean(&m.tokenize_seconds) * 1e6,
        mean(&m.queue_wait_seconds) * 1e6,
        m.inference_seconds.get_sample_sum() * 1e6 / n as f64,
        mean(&reply) * 1e6,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn bench_config(args: &[&str]) -> BenchConfig {
        let mut argv = vec!["moodstream", "bench"];
        argv.extend_from_slice(args);
        match crate::config::Cli::try_parse_from(argv)
            .expect("parses")
            .command
        {
            crate::config::Command::Bench(cfg) => cfg,
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn input_file_replaces_synthetic_messages_and_names_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let mut rng = Rng::new(1);
        let lines: Vec<String> = (0..3)
            .map(|i| serde_json::to_string(&synthetic(&mut rng, i, format!("text {i}"))).unwrap())
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n\n").unwrap();
        let cfg = bench_config(&["--input", path.to_str().unwrap(), "--messages", "99"]);
        let msgs = messages(&cfg).expect("reads the file");
        assert_eq!(msgs.len(), 3, "--messages is ignored with --input");
        assert_eq!(msgs[2].text, "text 2");

        std::fs::write(&path, format!("{}\nnot json\n", lines[0])).unwrap();
        let err = format!("{:#}", messages(&cfg).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }
}
