//! model: the tokenizer and the ONNX Runtime session. Tokenization runs on dedicated threads
//! and the session on its own OS thread (see `pipeline`); this module is the synchronous core
//! they call, so `classify`, `bench` and the Kafka worker share one code path.

mod labels;
mod live;
mod session;
mod tokenizer;

pub use labels::{LabelSpec, Scored, Scorer};
pub use live::{Generation, LiveModel};
pub use session::{ActiveProvider, Engine};
pub use tokenizer::{Encoded, Tokenizer};

use std::path::PathBuf;

use crate::config::{ExecutionProvider, ModelConfig, ModelVariant};

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

/// The files of one model directory, for the variant the provider runs.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub onnx: PathBuf,
    pub tokenizer: PathBuf,
    pub labels: PathBuf,
}

impl ModelFiles {
    pub fn new(cfg: &ModelConfig, variant: ModelVariant) -> Result<ModelFiles, ModelError> {
        let file = match variant {
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

/// The model file a provider runs: `--model-variant` when given, else int8 on CPU and fp16 on
/// CUDA. int8 is refused on CUDA: its integer matmuls have no CUDA kernels, so ONNX Runtime would
/// run them on the CPU with copies in between while reporting "cuda".
pub fn variant_for(
    requested: Option<ModelVariant>,
    provider: ActiveProvider,
) -> Result<ModelVariant, ModelError> {
    match (requested, provider) {
        (Some(ModelVariant::Int8), ActiveProvider::Cuda) => Err(ModelError::Provider(
            "the int8 model has no CUDA kernels (its integer matmuls would run on the CPU); \
             use --model-variant fp16 with CUDA"
                .into(),
        )),
        (Some(variant), _) => Ok(variant),
        (None, ActiveProvider::Cuda) => Ok(ModelVariant::Fp16),
        (None, ActiveProvider::Cpu) => Ok(ModelVariant::Int8),
    }
}

/// The first session, on the provider `--execution-provider` asks for. `auto` tries CUDA (with
/// its variant) when the loaded libonnxruntime has the CUDA provider, and falls back to the CPU
/// (with its variant) loudly.
fn first_engine(cfg: &ModelConfig) -> Result<(Engine, ModelFiles), ModelError> {
    let open = |provider| -> Result<(Engine, ModelFiles), ModelError> {
        let files = ModelFiles::new(cfg, variant_for(cfg.model_variant, provider)?)?;
        Ok((Engine::load(cfg, provider, &files.onnx)?, files))
    };
    match cfg.execution_provider {
        ExecutionProvider::Cpu => open(ActiveProvider::Cpu),
        ExecutionProvider::Cuda => open(ActiveProvider::Cuda),
        ExecutionProvider::Auto => {
            if !session::cuda_compiled_in(cfg.ort_dylib_path.as_deref())? {
                return open(ActiveProvider::Cpu);
            }
            open(ActiveProvider::Cuda).or_else(|e| {
                tracing::warn!(reason = %e, "CUDA unavailable; falling back to the CPU provider");
                open(ActiveProvider::Cpu)
            })
        }
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
        let (first, files) = first_engine(cfg)?;
        Model::finish(cfg, first, &files)
    }

    /// Loads `cfg.model_dir` on `provider` only (a reload keeps the provider the worker runs).
    pub fn load_on(cfg: &ModelConfig, provider: ActiveProvider) -> Result<Model, ModelError> {
        let files = ModelFiles::new(cfg, variant_for(cfg.model_variant, provider)?)?;
        let first = Engine::load(cfg, provider, &files.onnx)?;
        Model::finish(cfg, first, &files)
    }

    fn finish(cfg: &ModelConfig, first: Engine, files: &ModelFiles) -> Result<Model, ModelError> {
        let (scorer, spec) = Scorer::load(&files.labels)?;
        let max_len = cfg.max_seq_len.min(spec.max_seq_len.max(8));
        let tokenizer = Tokenizer::load(&files.tokenizer, max_len)?;
        let provider = first.provider();
        let mut engines = vec![first];
        for _ in 1..cfg.model_sessions(provider) {
            engines.push(Engine::load(cfg, provider, &files.onnx)?);
        }
        Ok(Model {
            tokenizer,
            scorer,
            engines,
        })
    }

    /// Runs a few short English, Chinese and mixed texts through every session, so the first
    /// customer messages after a reload do not pay for lazy initialisation, and a graph that
    /// loads but cannot run is refused before it goes live.
    pub fn warm_up(&mut self) -> Result<(), ModelError> {
        const TEXTS: [&str; 3] = [
            "Where is my order? It has been a week.",
            "我的快递三天了还没到，太让人生气了",
            "我的order还没到",
        ];
        let encs: Vec<Encoded> = TEXTS
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Encoded> = encs.iter().collect();
        for engine in &mut self.engines {
            let logits = engine.infer(&refs)?;
            if logits.iter().flatten().any(|l| !l.is_finite()) {
                return Err(ModelError::Inference(
                    "warm-up produced non-finite logits".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_runs_fp16_and_cpu_runs_int8_unless_told_otherwise() {
        use ActiveProvider::{Cpu, Cuda};
        assert!(matches!(variant_for(None, Cuda), Ok(ModelVariant::Fp16)));
        assert!(matches!(variant_for(None, Cpu), Ok(ModelVariant::Int8)));
        assert!(matches!(
            variant_for(Some(ModelVariant::Fp16), Cpu),
            Ok(ModelVariant::Fp16)
        ));
        assert!(matches!(
            variant_for(Some(ModelVariant::Int8), Cuda),
            Err(ModelError::Provider(_))
        ));
    }
}
