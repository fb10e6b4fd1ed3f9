//! model: the tokenizer and the ONNX Runtime session. Tokenization runs on dedicated threads
//! and the session on its own OS thread (see `pipeline`); this module is the synchronous core
//! they call, so `classify`, `bench` and the Kafka worker share one code path.

mod labels;
mod session;
mod tokenizer;

pub use labels::{LabelSpec, Scored, Scorer};
pub use session::{ActiveProvider, Engine};
pub use tokenizer::{Encoded, Tokenizer};

use std::path::PathBuf;

use crate::config::{ModelConfig, ModelVariant};

/// A model failure. `Clone` so one failed batch reaches every message in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("model files: {0}")]
    Files(String),
    #[error("ONNX Runtime library: {0}")]
    Runtime(String),
    #[error("execution provider: {0}")]
    Provider(String),
    #[error("tokenizer: {0}")]
    Tokenize(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The files of one model directory.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
    pub labels: PathBuf,
}

impl ModelFiles {
    pub fn from_config(cfg: &ModelConfig) -> Result<ModelFiles, ModelError> {
        let file = match cfg.variant() {
            ModelVariant::Int8 => "model.int8.onnx",
            ModelVariant::Fp16 => "model.fp16.onnx",
        };
        let files = ModelFiles {
            onnx: cfg.model_dir.join(file),
            tokenizer: cfg.model_dir.join("tokenizer.json"),
            labels: cfg.model_dir.join("labels.json"),
        };
        for path in [&files.onnx, &files.tokenizer, &files.labels] {
            if !path.is_file() {
                let hint = if path.ends_with("model.fp16.onnx") {
                    " (derive it with `python3 models/derive_fp16.py`)"
                } else {
                    ""
                };
                return Err(ModelError::Files(format!(
                    "{} is missing{hint}",
                    path.display()
                )));
            }
        }
        Ok(files)
    }
}

/// Everything needed to turn texts into scores: loaded once at startup.
pub struct Model {
    pub tokenizer: Tokenizer,
    pub scorer: Scorer,
    /// One ONNX Runtime session per `--model-sessions`; never empty.
    pub engines: Vec<Engine>,
}

impl Model {
    pub fn load(cfg: &ModelConfig) -> Result<Model, ModelError> {
        let files = ModelFiles::from_config(cfg)?;
        let (scorer, spec) = Scorer::load(&files.labels)?;
        let max_len = cfg.max_seq_len.min(spec.max_seq_len.max(8));
        let tokenizer = Tokenizer::load(&files.tokenizer, max_len)?;
        let engines = (0..cfg.model_sessions.max(1))
            .map(|_| Engine::load(cfg, &files.onnx))
            .collect::<Result<_, _>>()?;
        Ok(Model {
            tokenizer,
            scorer,
            engines,
        })
    }
}
