//! The live model: the loaded version new messages are tokenized with, and the means to swap it
//! for another without stopping the pipeline (`reload`).
//!
//! A [`Generation`] is one loaded model directory: tokenizer, scorer and one session per model
//! thread. A tokenizer thread tags every message with the generation that tokenized it, and the
//! model thread runs it on that generation's session, so a message never meets a tokenizer and a
//! session from different models (a new model may bring a new vocabulary). A swap therefore
//! happens between messages: everything tokenized before it finishes on the old sessions, which
//! are dropped with the last message that holds them.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::{ActiveProvider, Engine, Model, ModelError, Scorer, Tokenizer};

/// One loaded model version.
pub struct Generation {
    /// 1 for the model loaded at startup, +1 per successful reload.
    pub id: u64,
    /// `model_version` from `labels.json`: what every output names.
    pub version: Arc<str>,
    pub tokenizer: Tokenizer,
    pub scorer: Scorer,
    /// One session per model thread; thread `i` only ever locks `engines[i]`, so the lock is
    /// never contended (it makes the generation shareable).
    engines: Vec<Mutex<Engine>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Generation {
    pub fn new(id: u64, model: Model) -> Generation {
        Generation {
            id,
            version: Arc::from(model.scorer.model_version.as_str()),
            tokenizer: model.tokenizer,
            scorer: model.scorer,
            engines: model.engines.into_iter().map(Mutex::new).collect(),
        }
    }

    pub fn provider(&self) -> ActiveProvider {
        self.engine(0).provider()
    }

    pub fn sessions(&self) -> usize {
        self.engines.len()
    }

    /// Model thread `i`'s session.
    pub fn engine(&self, i: usize) -> MutexGuard<'_, Engine> {
        self.engines[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The generation new messages get; a reload swaps it.
#[derive(Clone)]
pub struct LiveModel {
    current: Arc<ArcSwap<Generation>>,
}

impl LiveModel {
    /// The model loaded at startup, as generation 1.
    pub fn new(model: Model) -> LiveModel {
        LiveModel {
            current: Arc::new(ArcSwap::from_pointee(Generation::new(1, model))),
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Makes `model` the live generation and returns it. It must have as many sessions as there
    /// are model threads (the same `--model-sessions` on the same provider). Only the reload
    /// task calls this, so the generation number cannot race.
    pub fn install(&self, model: Model) -> Result<Arc<Generation>, ModelError> {
        let current = self.current.load();
        if model.engines.len() != current.sessions() {
            return Err(ModelError::Files(format!(
                "{} sessions loaded for {} model threads: bug",
                model.engines.len(),
                current.sessions()
            )));
        }
        let next = Arc::new(Generation::new(current.id + 1, model));
        self.current.store(next.clone());
        Ok(next)
    }
}
