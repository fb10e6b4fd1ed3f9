//! bench: `moodstream bench` — synthetic messages (or `--input` JSON lines) through decode →
//! tokenize → batch → infer → reply drafting in process (no Kafka), compared with the model
//! stage alone on the same input in the same batches, with a per-stage breakdown and padding
//! efficiency. Numbers for notes come from here, never from tests.

use std::collections::{HashMap, HashSet};
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
use crate::model::{Encoded, Engine, LiveModel, Model, ModelError, Tokenizer};
use crate::pipeline::{self, Enricher, Job, Origin};
use crate::reply::ReplyDrafter;
use crate::schema::SchemaRegistry;
use crate::telemetry::metrics;
use crate::telemetry::trace::MessageTrace;

/// Input partitions the feeder spreads messages over (the post stage orders per partition).
const PARTITIONS: usize = 6;

/// Words to fill a fixed-length message up with (the first that is one word piece is used).
const FILLERS: &[&str] = &["order", "help", "please", "the", "a"];

fn messages(cfg: &BenchConfig, tokenizer: &Tokenizer) -> anyhow::Result<Vec<CustomerMessage>> {
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
        Some(n) => fixed_token_texts(&mut rng, tokenizer, cfg.messages, n)?,
        None => realistic_texts(&mut rng, cfg.messages),
    };
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| synthetic(&mut rng, i, t))
        .collect())
}

/// `count` texts that each encode to exactly `n` tokens ([CLS], n − 2 word pieces, [SEP]): the
/// words of realistic texts, each kept while its pieces fit, then one-piece words to fill up.
/// BERT pre-tokenization splits on whitespace and punctuation, so a text's pieces are the sum of
/// its words'; [`check_fixed_tokens`] checks the encodings all the same.
fn fixed_token_texts(
    rng: &mut Rng,
    tokenizer: &Tokenizer,
    count: usize,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let specials = tokenizer.encode("")?.len();
    let mut pieces: HashMap<String, usize> = HashMap::new();
    let mut pieces_of = |word: &str| -> anyhow::Result<usize> {
        if let Some(&p) = pieces.get(word) {
            return Ok(p);
        }
        let p = tokenizer.encode(word)?.len().saturating_sub(specials);
        pieces.insert(word.to_string(), p);
        Ok(p)
    };
    let filler = *FILLERS
        .iter()
        .find(|w| pieces_of(w).ok() == Some(1))
        .context("no one-piece filler word in this vocabulary")?;
    anyhow::ensure!(
        n > specials,
        "--fixed-tokens {n}: a message has at least {} tokens",
        specials + 1
    );
    let pool = realistic_texts(rng, count.clamp(1, 1000));
    let mut words = pool.iter().flat_map(|t| t.split_whitespace()).cycle();
    let mut texts = Vec::with_capacity(count);
    for _ in 0..count {
        let mut left = n - specials;
        let mut text: Vec<&str> = Vec::new();
        // A few tries for a word that fits, then fillers.
        let mut misses = 0;
        while left > 0 {
            let word = match words.next() {
                Some(w) if misses < 8 => w,
                _ => filler,
            };
            let p = pieces_of(word)?;
            if p == 0 || p > left {
                misses += 1;
                continue;
            }
            text.push(word);
            left -= p;
            misses = 0;
        }
        texts.push(text.join(" "));
    }
    Ok(texts)
}

/// Every message of `--fixed-tokens n` has exactly `n` tokens.
fn check_fixed_tokens(encs: &[Encoded], n: usize) -> anyhow::Result<()> {
    match encs.iter().find(|e| e.len() != n) {
        Some(e) => anyhow::bail!(
            "--fixed-tokens {n}: a generated text has {} tokens (is --max-seq-len below {n}?)",
            e.len()
        ),
        None => Ok(()),
    }
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

/// One distinct `(size, longest sequence)` batch of `batches` per shape.
fn shapes<'a, 'b>(batches: &'b [Vec<&'a Encoded>]) -> Vec<&'b Vec<&'a Encoded>> {
    let mut seen = HashSet::new();
    batches
        .iter()
        .filter(|b| seen.insert((b.len(), b.iter().map(|e| e.len()).max().unwrap_or(0))))
        .collect()
}

/// What one measurement of the model stage alone did.
struct ModelRun {
    wall: Duration,
    messages: usize,
    /// Each batch's latency, sorted.
    latencies: Vec<Duration>,
}

/// Runs `batches` on the sessions, one thread each taking the next batch, cycling over them
/// until `min_time` has passed (at least once through).
fn infer_all(
    engines: &mut [Engine],
    batches: &[Vec<&Encoded>],
    min_time: Duration,
) -> Result<ModelRun, ModelError> {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_session = std::thread::scope(|scope| {
        let workers: Vec<_> = engines
            .iter_mut()
            .map(|engine| {
                let next = &next;
                scope.spawn(move || -> Result<(usize, Vec<Duration>), ModelError> {
                    let (mut messages, mut latencies) = (0, Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if batches.is_empty() || (i >= batches.len() && start.elapsed() >= min_time)
                        {
                            return Ok((messages, latencies));
                        }
                        let batch = &batches[i % batches.len()];
                        let t = Instant::now();
                        engine.infer(batch)?;
                        latencies.push(t.elapsed());
                        messages += batch.len();
                    }
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
    let wall = start.elapsed();
    let messages = per_session.iter().map(|(m, _)| m).sum();
    let mut latencies: Vec<Duration> = per_session.into_iter().flat_map(|(_, l)| l).collect();
    latencies.sort_unstable();
    Ok(ModelRun {
        wall,
        messages,
        latencies,
    })
}

pub async fn run(cfg: BenchConfig) -> anyhow::Result<()> {
    let min_time = Duration::from_secs_f64(cfg.seconds.max(0.0));
    let model_cfg = cfg.model.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&model_cfg)).await??;
    let msgs = messages(&cfg, &model.tokenizer)?;
    anyhow::ensure!(!msgs.is_empty(), "--messages 0: nothing to measure");
    let payloads: Vec<Vec<u8>> = msgs
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;

    // 1. The model stage alone: pre-tokenized, the same batches the pipeline's batcher forms
    //    under load, one thread per session taking the next batch (as the model threads do),
    //    after every batch shape has run once on every session (a GPU's first run of a shape
    //    allocates and picks kernels).
    let encs: Vec<Encoded> = msgs
        .iter()
        .map(|m| model.tokenizer.encode(&m.text))
        .collect::<Result<_, _>>()?;
    if let Some(n) = cfg.fixed_tokens {
        check_fixed_tokens(&encs, n)?;
    }
    let tokens: usize = encs.iter().map(Encoded::len).sum();
    let (min_len, max_len) = encs.iter().fold((usize::MAX, 0), |(lo, hi), e| {
        (lo.min(e.len()), hi.max(e.len()))
    });
    let batches = saturated_batches(cfg.model.batch_policy(), &encs);
    let padded: usize = batches
        .iter()
        .map(|b| b.len() * b.iter().map(|e| e.len()).max().unwrap_or(0))
        .sum();
    let provider = model.engines[0].provider();
    let model_sessions = model.engines.len();
    let Model {
        tokenizer,
        scorer,
        mut engines,
    } = model;
    let batch_count = batches.len();
    let warm_shapes = shapes(&batches);
    let warm_start = Instant::now();
    for engine in &mut engines {
        for batch in &warm_shapes {
            engine.infer(batch)?;
        }
    }
    let warm_time = warm_start.elapsed();
    let warm_shapes = warm_shapes.len();
    let model_only = infer_all(&mut engines, &batches, min_time)?;
    drop(batches);

    // 2. The whole in-process pipeline, on the same (warm) sessions, fed the same messages
    //    round and round for as long.
    let model = Model {
        tokenizer,
        scorer,
        engines,
    };
    let enricher = Enricher {
        escalator: None,
        drafter: cfg.draft_replies.then(|| ReplyDrafter::builtin().live()),
        draft_threads: cfg.draft.threads(),
        shadow: None,
    };
    let model = LiveModel::new(model);
    let decoder = Decoder::new(
        Limits {
            max_message_bytes: 1 << 20,
            max_text_chars: 100_000,
        },
        Arc::new(SchemaRegistry::none()),
    );
    let (inlet, mut processed, _) = pipeline::spawn(model, &cfg.model, enricher);
    let start = Instant::now();
    let feeder = std::thread::spawn(move || -> (usize, Duration) {
        // The whole inlet (a closure would capture only `inlet.jobs`): dropping it at the end
        // drains and closes the pipeline.
        let inlet = inlet;
        let topic: Arc<str> = Arc::from("bench");
        let mut decode_time = Duration::ZERO;
        let mut fed = 0;
        for p in payloads.iter().cycle() {
            if fed >= payloads.len() && start.elapsed() >= min_time {
                break;
            }
            let t = Instant::now();
            let msg = decoder
                .decode(Some(p), Format::Json)
                .expect("synthetic messages decode");
            decode_time += t.elapsed();
            let origin = Origin {
                topic: topic.clone(),
                partition: (fed % PARTITIONS) as i32,
                offset: (fed / PARTITIONS) as i64,
                seq: (fed / PARTITIONS) as u64,
                consumed_at: Instant::now(),
                consumed_wall: SystemTime::now(),
                trace: MessageTrace::default(),
                key: None,
                payload: None,
            };
            if inlet.jobs.send(Job::new(origin, msg)).is_err() {
                break;
            }
            fed += 1;
        }
        (fed, decode_time)
    });
    let mut done = 0;
    let mut drafts = 0;
    while let Some(p) = processed.recv().await {
        done += 1;
        drafts += usize::from(p.result.as_ref().is_ok_and(|e| e.draft.is_some()));
    }
    let pipeline_time = start.elapsed();
    let (fed, decode_time) = feeder.join().expect("feeder panicked: bug");
    anyhow::ensure!(done == fed, "{fed} messages fed, {done} came out: bug");

    let fed_tokens: usize = (0..fed).map(|i| encs[i % encs.len()].len()).sum();
    let m = metrics();
    let n = done;
    let model_rate = model_only.messages as f64 / model_only.wall.as_secs_f64();
    let pipe_rate = n as f64 / pipeline_time.as_secs_f64();
    let reply = m.stage_seconds.with_label_values(&["reply"]);
    let latencies = &model_only.latencies;
    println!(
        "moodstream bench: {} distinct messages, {:.1} tokens/message mean (min {min_len}, max {max_len}), provider {}",
        msgs.len(),
        tokens as f64 / msgs.len() as f64,
        provider.as_str()
    );
    println!(
        "  settings: max_batch_size {} max_batch_tokens {} max_wait_us {} model_sessions {} intra_threads {} tokenizer_threads {} draft_threads {} seconds {}",
        cfg.model.max_batch_size,
        cfg.model.max_batch_tokens,
        cfg.model.max_wait_us,
        model_sessions,
        cfg.model.intra_threads(provider),
        cfg.model.tokenizer_threads(),
        cfg.draft.threads(),
        cfg.seconds,
    );
    println!(
        "  warm-up: {warm_shapes} batch shapes on each of {} sessions in {:.2} s",
        model_sessions,
        warm_time.as_secs_f64()
    );
    println!(
        "  model stage alone ({} messages in {:.2} s; the pipeline's batches under load: {} per pass, mean size {:.1}, padding efficiency {:.1} %): {model_rate:.0} messages/s, batch latency p50 {:.2} ms, p99 {:.2} ms",
        model_only.messages,
        model_only.wall.as_secs_f64(),
        batch_count,
        msgs.len() as f64 / batch_count.max(1) as f64,
        tokens as f64 * 100.0 / padded as f64,
        exact_quantile(latencies, 0.5).as_secs_f64() * 1e3,
        exact_quantile(latencies, 0.99).as_secs_f64() * 1e3,
    );
    println!(
        "  full pipeline (decode→tokenize→batch→infer{}; {n} messages in {:.2} s): {pipe_rate:.0} messages/s, {drafts} drafts",
        if cfg.draft_replies { "→draft" } else { "" },
        pipeline_time.as_secs_f64(),
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
        fed_tokens as f64 * 100.0 / m.batch_tokens.get_sample_sum()
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

    fn tokenizer() -> Tokenizer {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/emotion/tokenizer.json");
        Tokenizer::load(&path, 128).expect("the shipped tokenizer loads")
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
        let msgs = messages(&cfg, &tokenizer()).expect("reads the file");
        assert_eq!(msgs.len(), 3, "--messages is ignored with --input");
        assert_eq!(msgs[2].text, "text 2");

        std::fs::write(&path, format!("{}\nnot json\n", lines[0])).unwrap();
        let err = format!("{:#}", messages(&cfg, &tokenizer()).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn fixed_tokens_gives_every_message_exactly_that_many_tokens() {
        let tokenizer = tokenizer();
        for n in [3, 16, 24, 32, 64, 128] {
            let n_arg = n.to_string();
            let cfg = bench_config(&["--fixed-tokens", &n_arg, "--messages", "300"]);
            let msgs = messages(&cfg, &tokenizer).expect("generates");
            assert_eq!(msgs.len(), 300);
            let encs: Vec<Encoded> = msgs
                .iter()
                .map(|m| tokenizer.encode(&m.text).unwrap())
                .collect();
            check_fixed_tokens(&encs, n).expect("exactly n tokens each");
            let distinct: HashSet<&str> = msgs.iter().map(|m| m.text.as_str()).collect();
            assert!(distinct.len() > 100 || n == 3, "varied texts at {n} tokens");
        }
        let too_long = bench_config(&["--fixed-tokens", "129", "--messages", "5"]);
        let encs: Vec<Encoded> = messages(&too_long, &tokenizer)
            .unwrap()
            .iter()
            .map(|m| tokenizer.encode(&m.text).unwrap())
            .collect();
        assert!(
            check_fixed_tokens(&encs, 129).is_err(),
            "truncated at max_seq_len"
        );
        let too_short = bench_config(&["--fixed-tokens", "2", "--messages", "5"]);
        assert!(messages(&too_short, &tokenizer).is_err());
    }

    #[test]
    fn warms_one_batch_of_every_shape() {
        let enc = |len: usize| Encoded {
            ids: vec![1; len],
            type_ids: vec![0; len],
        };
        let (a, b, c) = (enc(8), enc(8), enc(12));
        let batches = vec![vec![&a, &b], vec![&a, &c], vec![&b, &a], vec![&c]];
        let shapes: Vec<(usize, usize)> = shapes(&batches)
            .iter()
            .map(|b| (b.len(), b.iter().map(|e| e.len()).max().unwrap()))
            .collect();
        assert_eq!(shapes, vec![(2, 8), (2, 12), (1, 12)]);
    }
}
