//! The blocking stages: tokenizer threads and the model threads (one per session). Both talk to
//! the async world through bounded channels (`blocking_send`/`blocking_recv`), never the other
//! way round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use crate::batcher::Batch;
use crate::model::{Encoded, Engine, LiveModel, ModelError};
use crate::reply::language::identify;
use crate::retry::{Backoff, RetryPolicy};
use crate::telemetry::metrics;

use super::{Classified, DeadLetter, Job, Outcome, Tokenized};

/// Tokenizer threads: each message is tokenized by the live generation of the moment and
/// tagged with it.
pub(super) fn spawn_tokenizers(
    n: usize,
    model: LiveModel,
    jobs: crossbeam_channel::Receiver<Job>,
    out: mpsc::Sender<Tokenized>,
    failed: mpsc::Sender<Classified>,
) {
    for i in 0..n.max(1) {
        let (model, jobs, out, failed) = (model.clone(), jobs.clone(), out.clone(), failed.clone());
        thread::Builder::new()
            .name(format!("tokenize-{i}"))
            .spawn(move || {
                let hist = &metrics().tokenize_seconds;
                for job in jobs {
                    let start = Instant::now();
                    let generation = model.current();
                    let sent = match generation.tokenizer.encode(&job.msg.text) {
                        Ok(enc) => {
                            hist.observe(start.elapsed().as_secs_f64());
                            let language = identify(job.msg.language.as_deref(), &job.msg.text);
                            out.blocking_send(Tokenized {
                                job,
                                enc,
                                generation,
                                language,
                            })
                            .is_ok()
                        }
                        Err(e) => {
                            let outcome = Outcome::DeadLetter(DeadLetter {
                                kind: "tokenize_error",
                                reason: e.to_string(),
                            });
                            match job.reply {
                                // The caller may have gone; that is no reason to stop.
                                Some(reply) => {
                                    let _ = reply.send(outcome);
                                    true
                                }
                                None => failed
                                    .blocking_send(Classified {
                                        origin: job.origin,
                                        outcome,
                                    })
                                    .is_ok(),
                            }
                        }
                    };
                    if !sent {
                        return; // downstream is gone: shutting down
                    }
                }
            })
            .expect("spawning a tokenizer thread");
    }
}

/// Test hook for the fault suite: `MOODSTREAM_TEST_FAIL_INFERENCE=<n>` makes the process's
/// first `n` inference calls fail, as a transient CUDA out-of-memory would.
const FAIL_INFERENCE_ENV: &str = "MOODSTREAM_TEST_FAIL_INFERENCE";
static INJECTED_FAILURES: AtomicU64 = AtomicU64::new(0);

/// One model thread per session (`model-<i>`), each taking the next batch from the batcher and
/// running it on session `i` of the generation that tokenized it. Batches finish out of order;
/// the post stage's sequencer restores input order.
pub(super) fn spawn_models(
    sessions: usize,
    batches: mpsc::Receiver<Batch<Tokenized>>,
    out: &mpsc::Sender<Classified>,
    retry: &RetryPolicy,
) {
    if let Some(n) = std::env::var(FAIL_INFERENCE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tracing::warn!(
            failures = n,
            "test hook: the first inference calls will fail"
        );
        INJECTED_FAILURES.store(n, Ordering::Relaxed);
    }
    let batches = Arc::new(Mutex::new(batches));
    for i in 0..sessions {
        let (batches, out, retry) = (batches.clone(), out.clone(), retry.clone());
        thread::Builder::new()
            .name(format!("model-{i}"))
            .spawn(move || run_model(i, &batches, &out, &retry))
            .expect("spawning a model thread");
    }
}

fn infer_once(engine: &mut Engine, encs: &[&Encoded]) -> Result<Vec<[f32; 8]>, ModelError> {
    let injected = INJECTED_FAILURES
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok();
    if injected {
        return Err(ModelError::Inference("injected failure (test hook)".into()));
    }
    engine.infer(encs)
}

/// Runs one batch, retrying a failure with backoff for the retry timeout (a transient CUDA
/// out-of-memory must not lose 64 good messages). Meanwhile the queues behind the model fill
/// and the source pauses its partitions (it keeps polling).
fn infer_retrying(
    engine: &mut Engine,
    encs: &[&Encoded],
    retry: &RetryPolicy,
) -> Result<Vec<[f32; 8]>, ModelError> {
    let mut backoff = Backoff::new(retry.timeout);
    loop {
        let result = infer_once(engine, encs);
        let Err(e) = &result else { return result };
        metrics()
            .dependency_failures
            .with_label_values(&["model"])
            .inc();
        match backoff.next_delay() {
            Some(delay) => {
                tracing::warn!(error = %e, batch = encs.len(), retry_in = ?delay, "inference failed; retrying");
                thread::sleep(delay);
            }
            None => return result,
        }
    }
}

fn run_model(
    session: usize,
    batches: &Mutex<mpsc::Receiver<Batch<Tokenized>>>,
    out: &mpsc::Sender<Classified>,
    retry: &RetryPolicy,
) {
    let m = metrics();
    // The lock is held only while waiting for the next batch, never during inference.
    let next = || batches.lock().ok()?.blocking_recv();
    while let Some(batch) = next() {
        m.batch_size.observe(batch.items.len() as f64);
        m.batch_tokens.observe(batch.padded_tokens() as f64);
        for wait in &batch.queue_waits {
            m.queue_wait_seconds.observe(wait.as_secs_f64());
        }
        for (items, waits) in by_generation(batch.items, batch.queue_waits) {
            if !run_group(session, items, waits, out, retry) {
                return; // downstream is gone, or the worker is stopping on a fatal error
            }
        }
    }
}

/// Splits a batch by the generation that tokenized its messages: one group, except for a batch
/// that straddles a reload.
fn by_generation(
    items: Vec<Tokenized>,
    waits: Vec<Duration>,
) -> Vec<(Vec<Tokenized>, Vec<Duration>)> {
    let mut groups: Vec<(Vec<Tokenized>, Vec<Duration>)> = Vec::with_capacity(1);
    for (item, wait) in items.into_iter().zip(waits) {
        match groups
            .iter_mut()
            .find(|(g, _)| g[0].generation.id == item.generation.id)
        {
            Some((g, w)) => {
                g.push(item);
                w.push(wait);
            }
            None => groups.push((vec![item], vec![wait])),
        }
    }
    groups
}

/// Runs messages of one generation on its session `session`. False when the model thread must
/// stop.
fn run_group(
    session: usize,
    items: Vec<Tokenized>,
    waits: Vec<Duration>,
    out: &mpsc::Sender<Classified>,
    retry: &RetryPolicy,
) -> bool {
    let m = metrics();
    let generation = items[0].generation.clone();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let encs: Vec<_> = items.iter().map(|t| &t.enc).collect();
    let (result, provider) = {
        let mut engine = generation.engine(session);
        (infer_retrying(&mut engine, &encs, retry), engine.provider())
    };
    if let (Err(e), Some(fatal)) = (&result, &retry.fatal) {
        // Never dead-letter good records for our own failure: stop the worker instead; the
        // batch's offsets are not committed and it is reprocessed after the restart.
        fatal.report(format!(
            "inference failed for {:?} (batch of {}): {e}",
            retry.timeout,
            encs.len()
        ));
        return false;
    }
    m.inference_seconds.observe(started.elapsed().as_secs_f64());
    let ended_wall = SystemTime::now();
    let size = items.len() as i64;
    for (i, (item, wait)) in items.into_iter().zip(waits).enumerate() {
        let Tokenized {
            job: Job { origin, msg, reply },
            language,
            ..
        } = item;
        origin.trace.stage(
            "batch_wait",
            started_wall.checked_sub(wait).unwrap_or(started_wall),
            started_wall,
            vec![],
        );
        origin.trace.stage(
            "inference",
            started_wall,
            ended_wall,
            vec![
                KeyValue::new("batch.size", size),
                KeyValue::new("provider", provider.as_str()),
            ],
        );
        let outcome = match &result {
            Ok(logits) => Outcome::Scored {
                msg: Box::new(msg),
                scored: generation.scorer.score(&logits[i]),
                language,
                model_version: generation.version.clone(),
            },
            Err(e) => Outcome::DeadLetter(DeadLetter {
                kind: "model_error",
                reason: e.to_string(),
            }),
        };
        match reply {
            // An API request: straight back to its caller (who may have gone).
            Some(reply) => {
                let _ = reply.send(outcome);
            }
            None => {
                if out.blocking_send(Classified { origin, outcome }).is_err() {
                    return false;
                }
            }
        }
    }
    if let Err(e) = &result {
        tracing::error!(error = %e, batch = size, "inference failed; batch failed");
    }
    true
}
