//! pipeline: the in-process stages between a source and a sink, and the values that flow
//! through them.
//!
//! ```text
//! source ──Job──▶ tokenizer threads ──Tokenized──▶ batcher ──Batch──▶ model threads
//!    │                                                                   │
//!    └──────────────── Classified (dead letters) ──────────────▶ post ◀──┘ Classified
//!                                                                 │ per-partition input order,
//!                                                                 │ escalation per round
//!                                                                 ▼
//!                                        draft threads (chunks of a round) ──▶ forwarder
//!                                                                 │ chunks in queue order
//!                                                                 ▼
//!                                                             Processed ──▶ sink
//! ```
//! Every channel is bounded: a full channel is backpressure. Blocking work (tokenization,
//! inference, reply drafting) runs on dedicated OS threads; the batcher, post and forwarder
//! stages are tokio tasks.

mod draft;
mod infer;
pub mod post;
pub mod shadow;

pub use post::{Enricher, Processed};
pub use shadow::Shadow;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use crate::batcher::{self, Tokens};
use crate::config::ModelConfig;
use crate::decode::DecodeError;
use crate::decode::mapping::SkipReason;
use crate::message::CustomerMessage;
use crate::model::{Encoded, Generation, LiveModel, Scored};
use crate::telemetry::trace::MessageTrace;

/// Where a record came from, and what every stage needs to know about it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Dense per-(topic, partition) sequence number assigned by the source, for reordering.
    pub seq: u64,
    pub consumed_at: Instant,
    pub consumed_wall: SystemTime,
    pub trace: MessageTrace,
    /// The record's key and value as consumed, for the dead-letter topic.
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// A decoded message on its way to the model.
#[derive(Debug)]
pub struct Job {
    pub origin: Origin,
    pub msg: CustomerMessage,
    /// Set for a synchronous API request (`api`): the model's outcome goes back on it instead
    /// of on to the post stage (no escalation, no Kafka outputs, no offsets).
    pub reply: Option<Reply>,
}

/// Where a synchronous caller waits for one message's outcome.
pub type Reply = tokio::sync::oneshot::Sender<Outcome>;

impl Job {
    /// A message from Kafka (or a one-shot command): its outcome flows on to the post stage.
    pub fn new(origin: Origin, msg: CustomerMessage) -> Job {
        Job {
            origin,
            msg,
            reply: None,
        }
    }
}

/// A tokenized message waiting for a batch.
#[derive(Debug)]
pub struct Tokenized {
    pub job: Job,
    pub enc: Encoded,
    /// The model that tokenized it, whose session must run it.
    pub generation: Arc<Generation>,
    /// The message's language (`reply::language::identify`), found here on the tokenizer
    /// threads rather than in the post stage, which runs on one task.
    pub language: String,
}

impl Tokens for Encoded {
    fn tokens(&self) -> usize {
        self.len()
    }
}

impl Tokens for Tokenized {
    fn tokens(&self) -> usize {
        self.enc.len()
    }
}

/// Why a record goes to the dead-letter topic: a stable kind and a human-readable reason
/// (neither may contain customer text).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub kind: &'static str,
    pub reason: String,
}

/// Why a record has no emotion result: it goes to the dead-letter topic, or the topic's input
/// mapping skipped it on purpose (no output at all; its offset is committed all the same).
#[derive(Debug, Clone, PartialEq)]
pub enum Unscored {
    DeadLetter(DeadLetter),
    Skipped(SkipReason),
}

/// The model's verdict on one record, or why it has none.
#[derive(Debug)]
pub enum Outcome {
    Scored {
        msg: Box<CustomerMessage>,
        scored: Scored,
        language: String,
        /// The `model_version` of the generation that scored it.
        model_version: Arc<str>,
    },
    DeadLetter(DeadLetter),
    Skipped(SkipReason),
}

#[derive(Debug)]
pub struct Classified {
    pub origin: Origin,
    pub outcome: Outcome,
}

/// What [`Inlet::try_submit`] did with a record.
#[derive(Debug)]
pub enum Submit {
    Sent,
    /// The stage's queue is full (backpressure): the record comes back.
    Full(Box<(Origin, Result<CustomerMessage, crate::decode::DecodeError>)>),
    /// The pipeline has shut down.
    Closed,
}

/// Senders into a running pipeline. Dropping both (and every clone) drains and closes it.
pub struct Inlet {
    /// Decoded messages (blocking send: call from the source thread).
    pub jobs: crossbeam_channel::Sender<Job>,
    /// Records that already failed (decode errors) and skip the model.
    pub dead: mpsc::Sender<Classified>,
}

impl Inlet {
    /// Hands one decoded record to the pipeline: a message to the model, a decode error
    /// straight to the post stage as a dead letter. Blocking (call from a plain thread).
    /// False when the pipeline has shut down.
    pub fn submit(
        &self,
        origin: Origin,
        decoded: Result<CustomerMessage, crate::decode::DecodeError>,
    ) -> bool {
        match decoded {
            Ok(msg) => self.jobs.send(Job::new(origin, msg)).is_ok(),
            Err(e) => self.dead.blocking_send(dead_letter(origin, &e)).is_ok(),
        }
    }

    /// As [`Inlet::submit`] without blocking: a full queue hands the record back, so the
    /// source can keep polling (and pause the partition) instead of waiting.
    pub fn try_submit(
        &self,
        origin: Origin,
        decoded: Result<CustomerMessage, crate::decode::DecodeError>,
    ) -> Submit {
        match decoded {
            Ok(msg) => match self.jobs.try_send(Job::new(origin, msg)) {
                Ok(()) => Submit::Sent,
                Err(crossbeam_channel::TrySendError::Full(job)) => {
                    Submit::Full(Box::new((job.origin, Ok(job.msg))))
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => Submit::Closed,
            },
            Err(e) => match self.dead.try_send(dead_letter(origin, &e)) {
                Ok(()) => Submit::Sent,
                Err(mpsc::error::TrySendError::Full(c)) => {
                    Submit::Full(Box::new((c.origin, Err(e))))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Submit::Closed,
            },
        }
    }
}

/// A record that skips the model: a decode error goes to the dead-letter topic, a record the
/// input mapping skips goes on with no output (so its offset follows its predecessors').
fn dead_letter(origin: Origin, e: &DecodeError) -> Classified {
    debug_assert!(
        !e.is_transient(),
        "a registry failure is retried, never dead-lettered"
    );
    let outcome = match e {
        DecodeError::Skipped(reason) => Outcome::Skipped(*reason),
        e => Outcome::DeadLetter(DeadLetter {
            kind: e.kind(),
            reason: e.to_string(),
        }),
    };
    Classified { origin, outcome }
}

/// The stages, wired: the inlet, the processed messages, the active provider.
pub type Spawned = (
    Inlet,
    mpsc::Receiver<Processed>,
    crate::model::ActiveProvider,
);

/// Starts the tokenizer threads, batcher, model threads and post stage. Returns the inlet, the
/// stream of processed messages in per-partition input order, and the active provider. A failed
/// inference is retried briefly, then its records fail (the one-shot commands).
pub fn spawn(model: LiveModel, cfg: &ModelConfig, enricher: Enricher) -> Spawned {
    spawn_with(model, cfg, enricher, crate::retry::RetryPolicy::default())
}

/// As [`spawn`], with the worker's retry policy: a failed inference is retried for
/// `retry.timeout`, then reported as fatal (the records are never dead-lettered). A reload
/// swaps `model`'s generation while this runs.
pub fn spawn_with(
    model: LiveModel,
    cfg: &ModelConfig,
    enricher: Enricher,
    retry: crate::retry::RetryPolicy,
) -> Spawned {
    let first = model.current();
    let provider = first.provider();
    let sessions = first.sessions();
    drop(first);
    let cap = cfg.max_batch_size * 2;
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(cap);
    let (tok_tx, tok_rx) = mpsc::channel::<Tokenized>(cap);
    let (batch_tx, batch_rx) = mpsc::channel(1);
    let (classified_tx, classified_rx) = mpsc::channel::<Classified>(cap);
    let (processed_tx, processed_rx) = mpsc::channel::<Processed>(cap);

    infer::spawn_tokenizers(
        cfg.tokenizer_threads(),
        model,
        job_rx,
        tok_tx,
        classified_tx.clone(),
    );
    tokio::spawn(batcher::run(cfg.batch_policy(), tok_rx, batch_tx));
    infer::spawn_models(sessions, batch_rx, &classified_tx, &retry);
    tokio::spawn(post::run(enricher, classified_rx, processed_tx));
    (
        Inlet {
            jobs: job_tx,
            dead: classified_tx,
        },
        processed_rx,
        provider,
    )
}
