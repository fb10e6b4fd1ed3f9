//! The ONNX Runtime session: loading libonnxruntime, building a session for one execution
//! provider, and running one padded batch. Owned by a single thread; never shared.
//!
//! Two ways to feed a batch: borrowed host buffers (`Io::Host`, the default), or an
//! [`IoBinding`] (`Io::Bound`, `--io-binding true`, CPU only) whose tensors come from the
//! session's allocator. Either way only `logits` is fetched. On ONNX Runtime 1.31.1's CUDA
//! provider every bound run of this graph failed on the H200 ("dst_data != src_data" in
//! GPUDataTransfer::CopyTensorAsync), with page-locked inputs and outputs and with page-locked
//! outputs alone, so CUDA sessions refuse it at startup.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use ort::ep::{self, ExecutionProvider as _};
use ort::logging::LogLevel;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, IoBinding, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorRef};

use crate::config::ModelConfig;

use super::{Encoded, ModelError};

/// The provider a session runs on.
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

pub(super) fn environment(
    dylib: Option<&Path>,
) -> Result<&'static ort::environment::Environment, ModelError> {
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
                .with_logger(Arc::new(ort_log))
                .build()
                .map_err(|e| ModelError::Runtime(e.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// ONNX Runtime's own messages, as `tracing` events with target `ort`. Sessions log at warning
/// and above (see [`builder`]), so "nodes not assigned to the CUDA provider" and "Memcpy nodes
/// added" reach the operator's log; they never carry message text.
fn ort_log(level: LogLevel, category: &str, _id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::error!(target: "ort", category, location, "{message}")
        }
        LogLevel::Warning => tracing::warn!(target: "ort", category, location, "{message}"),
        LogLevel::Info => tracing::debug!(target: "ort", category, location, "{message}"),
        LogLevel::Verbose => tracing::trace!(target: "ort", category, location, "{message}"),
    }
}

/// Whether the loaded libonnxruntime was built with the CUDA provider (the `onnxruntime-gpu`
/// build). Says nothing about whether CUDA's own libraries and a GPU are there: only building a
/// session tells.
pub(super) fn cuda_compiled_in(dylib: Option<&Path>) -> Result<bool, ModelError> {
    environment(dylib)?;
    ep::CUDA::is_available().map_err(|e| ModelError::Runtime(e.to_string()))
}

/// How a batch reaches the session.
enum Io {
    /// Borrowed host buffers, reused across batches.
    Host {
        options: RunOptions<HasSelectedOutputs>,
        ids: Vec<i64>,
        mask: Vec<i64>,
        types: Vec<i64>,
    },
    /// Tensors from the session's allocator, bound to the session once per batch (boxed: the
    /// binding is large beside the host variant).
    Bound(Box<IoBinding>),
}

/// A loaded session and the way batches reach it.
pub struct Engine {
    session: Session,
    provider: ActiveProvider,
    token_type_input: bool,
    io: Io,
}

impl Engine {
    /// Loads the session on a thread named `ort`: ONNX Runtime's intra-op pool threads are created
    /// with the session and inherit that name, so `top -H` and the benchmarks' per-thread CPU
    /// breakdown tell them apart from the async runtime's threads.
    pub fn load(
        cfg: &ModelConfig,
        provider: ActiveProvider,
        onnx: &Path,
    ) -> Result<Engine, ModelError> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("ort".into())
                .spawn_scoped(scope, || Engine::load_here(cfg, provider, onnx))
                .map_err(|e| ModelError::Runtime(format!("cannot start a thread: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn load_here(
        cfg: &ModelConfig,
        provider: ActiveProvider,
        onnx: &Path,
    ) -> Result<Engine, ModelError> {
        let session = builder(cfg, provider)?
            .commit_from_file(onnx)
            .map_err(|e| {
                let what = format!(
                    "cannot load {} on {}: {e}",
                    onnx.display(),
                    provider.as_str()
                );
                match provider {
                    // A missing CUDA library or a device error surfaces here, not when registering.
                    ActiveProvider::Cuda => ModelError::Provider(what),
                    ActiveProvider::Cpu => ModelError::Files(what),
                }
            })?;
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
        let runtime = |e: ort::Error| ModelError::Runtime(e.to_string());
        let io = if cfg.io_binding() {
            if provider == ActiveProvider::Cuda {
                return Err(ModelError::Provider(
                    "--io-binding fails on ONNX Runtime's CUDA provider with this model \
                     (GPUDataTransfer::CopyTensorAsync); run CUDA without it"
                        .into(),
                ));
            }
            Io::Bound(Box::new(session.create_binding().map_err(runtime)?))
        } else {
            Io::Host {
                options: RunOptions::new()
                    .map_err(runtime)?
                    .with_outputs(OutputSelector::no_default().with("logits")),
                ids: Vec::new(),
                mask: Vec::new(),
                types: Vec::new(),
            }
        };
        tracing::info!(
            provider = provider.as_str(),
            io_binding = matches!(io, Io::Bound(_)),
            model = %onnx.display(),
            "ONNX session ready"
        );
        Ok(Engine {
            session,
            provider,
            token_type_input,
            io,
        })
    }

    pub fn provider(&self) -> ActiveProvider {
        self.provider
    }

    /// Runs one batch, padding to its longest sequence. Returns one logits row per input.
    pub fn infer(&mut self, batch: &[&Encoded]) -> Result<Vec<[f32; 8]>, ModelError> {
        let n = batch.len();
        let len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let shape = [n, len];
        let err = |e: ort::Error| ModelError::Inference(e.to_string());
        let outputs = match &mut self.io {
            Io::Host {
                options,
                ids,
                mask,
                types,
            } => {
                for buf in [&mut *ids, &mut *mask, &mut *types] {
                    buf.resize(n * len, 0);
                }
                fill(batch, len, ids, mask, types);
                let mut inputs = ort::inputs![
                    "input_ids" => TensorRef::from_array_view((shape, ids.as_slice())).map_err(err)?,
                    "attention_mask" => TensorRef::from_array_view((shape, mask.as_slice())).map_err(err)?,
                ];
                if self.token_type_input {
                    inputs.push((
                        "token_type_ids".into(),
                        TensorRef::from_array_view((shape, types.as_slice()))
                            .map_err(err)?
                            .into(),
                    ));
                }
                self.session
                    .run_with_options(inputs, options)
                    .map_err(err)?
            }
            Io::Bound(binding) => {
                let alloc = self.session.allocator();
                let mut ids = Tensor::<i64>::new(alloc, shape).map_err(err)?;
                let mut mask = Tensor::<i64>::new(alloc, shape).map_err(err)?;
                let mut types = Tensor::<i64>::new(alloc, shape).map_err(err)?;
                fill(
                    batch,
                    len,
                    ids.extract_tensor_mut().1,
                    mask.extract_tensor_mut().1,
                    types.extract_tensor_mut().1,
                );
                binding.bind_input("input_ids", &ids).map_err(err)?;
                binding.bind_input("attention_mask", &mask).map_err(err)?;
                if self.token_type_input {
                    binding.bind_input("token_type_ids", &types).map_err(err)?;
                }
                let logits = Tensor::<f32>::new(alloc, [n, 8]).map_err(err)?;
                binding.bind_output("logits", logits).map_err(err)?;
                self.session.run_binding(binding).map_err(err)?
            }
        };
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

/// Writes a batch into row-major `[n, len]` input buffers, every element (padding included: the
/// tensors' memory may come uninitialised from an allocator).
fn fill(batch: &[&Encoded], len: usize, ids: &mut [i64], mask: &mut [i64], types: &mut [i64]) {
    for (row, enc) in batch.iter().enumerate() {
        let span = row * len..(row + 1) * len;
        let (ids, mask, types) = (
            &mut ids[span.clone()],
            &mut mask[span.clone()],
            &mut types[span],
        );
        for i in 0..len {
            match (enc.ids.get(i), enc.type_ids.get(i)) {
                (Some(&id), Some(&ty)) => {
                    (ids[i], mask[i], types[i]) = (i64::from(id), 1, i64::from(ty));
                }
                _ => (ids[i], mask[i], types[i]) = (0, 0, 0),
            }
        }
    }
}

/// A session builder for `provider`. CUDA sessions use one intra-op thread that never spins:
/// the GPU does the work, and a spinning thread per session only steals cores from tokenizing
/// and drafting.
fn builder(cfg: &ModelConfig, provider: ActiveProvider) -> Result<SessionBuilder, ModelError> {
    let env = environment(cfg.ort_dylib_path.as_deref())?;
    let err = |e: ort::Error<SessionBuilder>| ModelError::Runtime(e.to_string());
    let builder = Session::builder(env)
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .with_log_level(LogLevel::Warning)
        .map_err(err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(err)?
        .with_intra_threads(cfg.intra_threads(provider))
        .map_err(err)?
        .with_inter_threads(1)
        .map_err(err)?;
    match provider {
        ActiveProvider::Cpu => Ok(builder),
        ActiveProvider::Cuda => {
            let cuda = ep::CUDA::default()
                .with_device_id(cfg.cuda_device_id)
                // Transformers have no convolutions worth searching for; exhaustive search only
                // costs startup.
                .with_conv_algorithm_search(ep::cuda::ConvAlgorithmSearch::Default)
                .build()
                .error_on_failure();
            builder
                .with_intra_op_spinning(false)
                .map_err(err)?
                .with_execution_providers([cuda])
                .map_err(|e| ModelError::Provider(format!("CUDA requested but unavailable: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(ids: &[u32]) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            type_ids: vec![0; ids.len()],
        }
    }

    #[test]
    fn fill_overwrites_padding_left_by_an_earlier_batch() {
        let (a, b) = (encoded(&[101, 7, 102]), encoded(&[101, 102]));
        let mut bufs = [vec![9; 6], vec![9; 6], vec![9; 6]];
        let [ids, mask, types] = &mut bufs;
        fill(&[&a, &b], 3, ids, mask, types);
        assert_eq!(ids, &[101, 7, 102, 101, 102, 0]);
        assert_eq!(mask, &[1, 1, 1, 1, 1, 0]);
        assert_eq!(types, &[0; 6]);
    }
}
