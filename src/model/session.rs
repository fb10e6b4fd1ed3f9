//! The ONNX Runtime session: loading libonnxruntime, choosing the execution provider, and
//! running one padded batch. Owned by a single thread; never shared.

use std::path::Path;
use std::sync::OnceLock;

use ort::ep;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;

use crate::config::{ExecutionProvider, ModelConfig};

use super::{Encoded, ModelError};

/// The provider the session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveProvider {
    Cpu,
    Cuda,
}

impl ActiveProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveProvider::Cpu => "cpu",
            ActiveProvider::Cuda => "cuda",
        }
    }
}

/// libonnxruntime can be loaded once per process; every session shares the environment.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, ModelError>> = OnceLock::new();

fn environment(dylib: Option<&Path>) -> Result<&'static ort::environment::Environment, ModelError> {
    ENVIRONMENT
        .get_or_init(|| {
            let path = dylib.ok_or_else(|| {
                ModelError::Runtime(
                    "ORT_DYLIB_PATH is not set: run scripts/setup-ort.sh and export the path it prints \
                     (or pass --ort-dylib-path)"
                        .into(),
                )
            })?;
            if !path.is_file() {
                return Err(ModelError::Runtime(format!(
                    "{} does not exist: run scripts/setup-ort.sh (CPU) or scripts/setup-ort.sh --gpu",
                    path.display()
                )));
            }
            ort::init_from(path)
                .map_err(|e| ModelError::Runtime(format!("cannot load {}: {e}", path.display())))?
                .with_name("moodstream")
                .build()
                .map_err(|e| ModelError::Runtime(e.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A loaded session plus reusable input buffers (no per-batch allocation once warm).
pub struct Engine {
    session: Session,
    provider: ActiveProvider,
    token_type_input: bool,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

impl Engine {
    /// Loads the session on a thread named `ort`: ONNX Runtime's intra-op pool threads are created
    /// with the session and inherit that name, so `top -H` and the benchmarks' per-thread CPU
    /// breakdown tell them apart from the async runtime's threads.
    pub fn load(cfg: &ModelConfig, onnx: &Path) -> Result<Engine, ModelError> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("ort".into())
                .spawn_scoped(scope, || Engine::load_here(cfg, onnx))
                .map_err(|e| ModelError::Runtime(format!("cannot start a thread: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn load_here(cfg: &ModelConfig, onnx: &Path) -> Result<Engine, ModelError> {
        let env = environment(cfg.ort_dylib_path.as_deref())?;
        let (session, provider) = match cfg.execution_provider {
            ExecutionProvider::Cpu => (commit(cpu_builder(env, cfg)?, onnx)?, ActiveProvider::Cpu),
            ExecutionProvider::Cuda => {
                (commit(cuda_builder(env, cfg)?, onnx)?, ActiveProvider::Cuda)
            }
            ExecutionProvider::Auto => match cuda_builder(env, cfg).and_then(|b| commit(b, onnx)) {
                Ok(session) => (session, ActiveProvider::Cuda),
                Err(e) => {
                    tracing::warn!(reason = %e, "CUDA execution provider unavailable; falling back to CPU");
                    (commit(cpu_builder(env, cfg)?, onnx)?, ActiveProvider::Cpu)
                }
            },
        };
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !names.contains(&required) {
                return Err(ModelError::Files(format!(
                    "model has no `{required}` input (inputs: {names:?})"
                )));
            }
        }
        if !session.outputs().iter().any(|o| o.name() == "logits") {
            return Err(ModelError::Files("model has no `logits` output".into()));
        }
        let token_type_input = names.contains(&"token_type_ids");
        tracing::info!(provider = provider.as_str(), model = %onnx.display(), "ONNX session ready");
        Ok(Engine {
            session,
            provider,
            token_type_input,
            ids: Vec::new(),
            mask: Vec::new(),
            types: Vec::new(),
        })
    }

    pub fn provider(&self) -> ActiveProvider {
        self.provider
    }

    /// Runs one batch, padding to its longest sequence. Returns one logits row per input.
    pub fn infer(&mut self, batch: &[&Encoded]) -> Result<Vec<[f32; 8]>, ModelError> {
        let n = batch.len();
        let len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        for buf in [&mut self.ids, &mut self.mask, &mut self.types] {
            buf.clear();
            buf.resize(n * len, 0);
        }
        for (row, enc) in batch.iter().enumerate() {
            let base = row * len;
            for (i, (&id, &ty)) in enc.ids.iter().zip(&enc.type_ids).enumerate() {
                self.ids[base + i] = i64::from(id);
                self.types[base + i] = i64::from(ty);
                self.mask[base + i] = 1;
            }
        }
        let shape = [n, len];
        let err = |e: ort::Error| ModelError::Inference(e.to_string());
        let mut inputs = ort::inputs![
            "input_ids" => TensorRef::from_array_view((shape, self.ids.as_slice())).map_err(err)?,
            "attention_mask" => TensorRef::from_array_view((shape, self.mask.as_slice())).map_err(err)?,
        ];
        if self.token_type_input {
            inputs.push((
                "token_type_ids".into(),
                TensorRef::from_array_view((shape, self.types.as_slice()))
                    .map_err(err)?
                    .into(),
            ));
        }
        let outputs = self.session.run(inputs).map_err(err)?;
        let (out_shape, logits) = outputs["logits"].try_extract_tensor::<f32>().map_err(err)?;
        if out_shape.len() != 2 || out_shape[0] as usize != n || out_shape[1] != 8 {
            return Err(ModelError::Inference(format!(
                "unexpected logits shape {out_shape:?}"
            )));
        }
        Ok(logits
            .chunks_exact(8)
            .map(|c| c.try_into().expect("chunks of 8: bug"))
            .collect())
    }
}

fn commit(mut builder: SessionBuilder, onnx: &Path) -> Result<Session, ModelError> {
    builder
        .commit_from_file(onnx)
        .map_err(|e| ModelError::Files(format!("cannot load {}: {e}", onnx.display())))
}

fn cpu_builder(
    env: &ort::environment::Environment,
    cfg: &ModelConfig,
) -> Result<SessionBuilder, ModelError> {
    let err = |e: ort::Error<SessionBuilder>| ModelError::Runtime(e.to_string());
    Session::builder(env)
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_intra_threads(cfg.intra_threads())
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)
}

fn cuda_builder(
    env: &ort::environment::Environment,
    cfg: &ModelConfig,
) -> Result<SessionBuilder, ModelError> {
    let cuda = ep::CUDA::default()
        .with_device_id(cfg.cuda_device_id)
        // Transformers have no convolutions worth searching for; exhaustive search only costs startup.
        .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Default)
        .build()
        .error_on_failure();
    cpu_builder(env, cfg)?
        .with_execution_providers([cuda])
        .map_err(|e| ModelError::Provider(format!("CUDA requested but unavailable: {e}")))
}
