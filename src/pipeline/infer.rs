//! The blocking stages: tokenizer threads and the model threads (one per session). Both talk to
//! the async world through bounded channels (`blocking_send`/`blocking_recv`), never the other
//! way round.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Instant, SystemTime};

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

use crate::batcher::Batch;
use crate::model::{Engine, Scorer, Tokenizer};
use crate::reply::language::identify;
use crate::telemetry::metrics;

use super::{Classified, DeadLetter, Job, Outcome, Tokenized};

pub(super) fn spawn_tokenizers(
    n: usize,
    tokenizer: Arc<Tokenizer>,
    jobs: crossbeam_channel::Receiver<Job>,
    out: mpsc::Sender<Tokenized>,
    failed: mpsc::Sender<Classified>,
) {
    for i in 0..n.max(1) {
        let (tokenizer, jobs, out, failed) =
            (tokenizer.clone(), jobs.clone(), out.clone(), failed.clone());
        thread::Builder::new()
            .name(format!("tokenize-{i}"))
            .spawn(move || {
                let hist = &metrics().tokenize_seconds;
                for job in jobs {
                    let start = Instant::now();
                    let sent = match tokenizer.encode(&job.msg.text) {
                        Ok(enc) => {
                            hist.observe(start.elapsed().as_secs_f64());
                            let language = identify(job.msg.language.as_deref(), &job.msg.text);
                            out.blocking_send(Tokenized { job, enc, language }).is_ok()
                        }
                        Err(e) => failed
                            .blocking_send(Classified {
                                origin: job.origin,
                                outcome: Outcome::DeadLetter(DeadLetter {
                                    kind: "tokenize_error",
                                    reason: e.to_string(),
                                }),
                            })
                            .is_ok(),
                    };
                    if !sent {
                        return; // downstream is gone: shutting down
                    }
                }
            })
            .expect("spawning a tokenizer thread");
    }
}

/// One model thread per session (`model-<i>`), each taking the next batch from the batcher.
/// Batches finish out of order; the post stage's sequencer restores input order.
pub(super) fn spawn_models(
    engines: Vec<Engine>,
    scorer: &Scorer,
    batches: mpsc::Receiver<Batch<Tokenized>>,
    out: &mpsc::Sender<Classified>,
) {
    let batches = Arc::new(Mutex::new(batches));
    for (i, engine) in engines.into_iter().enumerate() {
        let (scorer, batches, out) = (scorer.clone(), batches.clone(), out.clone());
        thread::Builder::new()
            .name(format!("model-{i}"))
            .spawn(move || run_model(engine, &scorer, &batches, &out))
            .expect("spawning a model thread");
    }
}

fn run_model(
    mut engine: Engine,
    scorer: &Scorer,
    batches: &Mutex<mpsc::Receiver<Batch<Tokenized>>>,
    out: &mpsc::Sender<Classified>,
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
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let encs: Vec<_> = batch.items.iter().map(|t| &t.enc).collect();
        let result = engine.infer(&encs);
        m.inference_seconds.observe(started.elapsed().as_secs_f64());
        let ended_wall = SystemTime::now();
        let size = batch.items.len() as i64;
        for (i, (item, wait)) in batch.items.into_iter().zip(batch.queue_waits).enumerate() {
            let Tokenized {
                job: Job { origin, msg },
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
                    KeyValue::new("provider", engine.provider().as_str()),
                ],
            );
            let outcome = match &result {
                Ok(logits) => Outcome::Scored {
                    msg: Box::new(msg),
                    scored: scorer.score(&logits[i]),
                    language,
                },
                Err(e) => Outcome::DeadLetter(DeadLetter {
                    kind: "model_error",
                    reason: e.to_string(),
                }),
            };
            if out.blocking_send(Classified { origin, outcome }).is_err() {
                return;
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, batch = size, "inference failed; batch dead-lettered");
        }
    }
}
