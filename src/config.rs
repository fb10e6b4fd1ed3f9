//! Configuration: one typed struct per subcommand, parsed by clap. Every flag has an
//! environment fallback (`MOODSTREAM_...`) so Helm values map to env vars; doc comments are
//! the `--help` text. Validation that needs more than one field lives in [`RunConfig::validate`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::batcher::BatchPolicy;
use crate::escalation::EscalationConfig;
use crate::model::ActiveProvider;

mod kafka;
pub use kafka::{Client, KafkaConfig, KafkaConfigError, Secret, librdkafka_features};

/// Parses the command line over an optional config file: `--config FILE` (or `MOODSTREAM_CONFIG`),
/// a dotenv file of `MOODSTREAM_...=value` lines (`#` comments, optional quotes) — the names of
/// the environment variables. Its values become the defaults of the matching flags, so a flag
/// beats the environment, the environment beats the file and the file beats the built-in
/// defaults. The process environment is never changed.
pub fn parse_with_config_file() -> Result<Cli, ConfigFileError> {
    parse_from(
        std::env::args_os().collect(),
        std::env::var_os("MOODSTREAM_CONFIG"),
    )
}

/// [`parse_with_config_file`] of `args`, with `config_env` as `MOODSTREAM_CONFIG`.
fn parse_from(args: Vec<OsString>, config_env: Option<OsString>) -> Result<Cli, ConfigFileError> {
    let settings = match config_path(&args).or(config_env.map(PathBuf::from)) {
        Some(path) => read_config_file(&path)?,
        None => Vec::new(),
    };
    let matches = with_file_defaults(Cli::command(), &settings).try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// A config file that cannot be used, or a command line that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: dotenvy::Error,
    },
    #[error(
        "config file {path}: unknown setting `{key}` (it takes the environment variable names of \
         moodstream's flags; set OTEL_* and RUST_LOG in the environment)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error(transparent)]
    Cli(#[from] clap::Error),
}

/// The `--config` value on the command line, found before clap parses it (the file supplies
/// defaults for that very parse).
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    let mut found = None;
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            found = Some(PathBuf::from(path));
        } else if arg == "--config" {
            found = args.next().map(|p| PathBuf::from(p.as_ref()));
        }
    }
    found
}

/// The `KEY=value` pairs of a dotenv file, parsed without touching the environment, every key
/// checked against the environment names of the flags of every subcommand.
pub fn read_config_file(path: &std::path::Path) -> Result<Vec<(String, String)>, ConfigFileError> {
    let read_error = |source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let known = env_names(&Cli::command());
    let mut settings = Vec::new();
    for item in dotenvy::from_path_iter(path).map_err(read_error)? {
        let (key, value) = item.map_err(read_error)?;
        if !known.contains(&key) {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key,
            });
        }
        settings.push((key, value));
    }
    Ok(settings)
}

fn env_names(command: &clap::Command) -> std::collections::HashSet<String> {
    let mut names: std::collections::HashSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(env_names(sub));
    }
    names
}

/// `command` with each setting as the default of the flag that reads that environment variable,
/// in every subcommand that has one (the last line of a repeated key wins).
fn with_file_defaults(command: clap::Command, settings: &[(String, String)]) -> clap::Command {
    if settings.is_empty() {
        return command;
    }
    command
        .mut_args(|arg| {
            let Some(env) = arg.get_env().map(|e| e.to_string_lossy().into_owned()) else {
                return arg;
            };
            let Some((_, value)) = settings.iter().rev().find(|(k, _)| *k == env) else {
                return arg;
            };
            let value = if arg.get_action().takes_values() {
                value.clone()
            } else {
                // A flag (`--exactly-once`): any value but a false one turns it on, as clap
                // reads the environment variable.
                let off = matches!(
                    value.to_ascii_lowercase().as_str(),
                    "" | "0" | "false" | "no" | "off" | "n" | "f"
                );
                (!off).to_string()
            };
            arg.default_value(value)
        })
        .mut_subcommands(|sub| with_file_defaults(sub, settings))
}

#[derive(Parser, Debug)]
#[command(
    name = "moodstream",
    version,
    args_override_self = true,
    about = "Emotion labels, drafted replies and escalation events for customer-service messages on Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Join the consumer group and process messages until SIGTERM/SIGINT.
    Run(Box<RunConfig>),
    /// Classify JSONL customer messages (stdin or --input) and write JSONL emotion results to stdout.
    Classify(ClassifyConfig),
    /// In-process benchmark: synthetic messages through decode → tokenize → batch → infer → draft.
    Bench(BenchConfig),
    /// Produce realistic sample customer messages to Kafka (the demo's traffic).
    DemoProduce(DemoProduceConfig),
    /// Load generator for a running worker's HTTP API: reports throughput and p50/p99 latency.
    BenchApi(BenchApiConfig),
    /// The agent console: a web app showing open conversations, drafts and surges live, turning
    /// agent actions into feedback events.
    Console(Box<crate::console::ConsoleConfig>),
    /// Agent feedback as training data (`feedback export`).
    Feedback(crate::feedback::FeedbackArgs),
}

/// Wire format of a topic's values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// Avro in the Confluent wire format (magic byte 0, 4-byte schema id).
    Avro,
}

/// The consumer's `auto.offset.reset`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest retained record: nothing already on the topic is skipped.
    Earliest,
    /// Only records produced after the group first joins.
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Where the ONNX session runs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProvider {
    /// CUDA if it registers, else CPU (logged loudly).
    Auto,
    Cpu,
    /// CUDA or a startup error.
    Cuda,
}

impl ExecutionProvider {
    /// The flag value (`requested` label of `moodstream_execution_provider_info`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Auto => "auto",
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda => "cuda",
        }
    }
}

/// Which shipped model file to load from the model directory.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelVariant {
    /// `model.int8.onnx`: dynamic-quantised, for CPU.
    Int8,
    /// `model.fp16.onnx`: derived by `models/derive_fp16.py`, for CUDA.
    Fp16,
}

/// Model, tokenizer and batching options shared by `run`, `classify` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct ModelConfig {
    /// Directory with model.*.onnx, tokenizer.json and labels.json.
    #[arg(long, env = "MOODSTREAM_MODEL_DIR", default_value = "models/emotion")]
    pub model_dir: PathBuf,
    /// Model file variant; defaults to fp16 on CUDA and int8 on CPU. int8 is refused on CUDA (its
    /// integer matmuls have no CUDA kernels).
    #[arg(long, env = "MOODSTREAM_MODEL_VARIANT")]
    pub model_variant: Option<ModelVariant>,
    /// Path to libonnxruntime.so (scripts/setup-ort.sh prints it).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,
    #[arg(
        long,
        env = "MOODSTREAM_EXECUTION_PROVIDER",
        value_enum,
        default_value = "auto"
    )]
    pub execution_provider: ExecutionProvider,
    /// CUDA device ordinal.
    #[arg(long, env = "MOODSTREAM_CUDA_DEVICE_ID", default_value_t = 0)]
    pub cuda_device_id: i32,
    /// ONNX Runtime intra-op threads per session; 0 = on CPU the cores divided among the
    /// sessions, on CUDA 1 (the GPU does the work; CUDA sessions never spin).
    #[arg(long, env = "MOODSTREAM_INTRA_THREADS", default_value_t = 0)]
    pub intra_threads: usize,
    /// ONNX Runtime sessions, each on its own model thread taking the next batch as it comes,
    /// so that many batches are in flight at once (on a GPU, one overlaps another's copies and
    /// CPU work; on CPU, sessions of fewer threads each synchronise less). Each holds a copy of
    /// the model. 0 = 1 on CPU, 2 on CUDA.
    #[arg(long, env = "MOODSTREAM_MODEL_SESSIONS", default_value_t = 0)]
    pub model_sessions: usize,
    /// Feed batches through an ONNX Runtime IO binding (CPU only: on ONNX Runtime 1.31.1's CUDA
    /// provider every bound run of this model failed, so CUDA refuses it at startup).
    #[arg(long, env = "MOODSTREAM_IO_BINDING")]
    pub io_binding: Option<bool>,
    /// Tokenizer threads; 0 = one per core, at most 4.
    #[arg(long, env = "MOODSTREAM_TOKENIZER_THREADS", default_value_t = 0)]
    pub tokenizer_threads: usize,
    /// Tokens per message fed to the model (longer texts are truncated for the model only;
    /// outputs keep the original message ids and the text is never rewritten).
    #[arg(long, env = "MOODSTREAM_MAX_SEQ_LEN", default_value_t = 128)]
    pub max_seq_len: usize,
    /// Most messages in one inference batch.
    #[arg(long, env = "MOODSTREAM_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,
    /// Most padded tokens (batch size × longest sequence) in one batch.
    #[arg(long, env = "MOODSTREAM_MAX_BATCH_TOKENS", default_value_t = 4096)]
    pub max_batch_tokens: usize,
    /// Longest a message waits for its batch to fill, in microseconds.
    #[arg(long, env = "MOODSTREAM_MAX_WAIT_US", default_value_t = 2000)]
    pub max_wait_us: u64,
}

impl ModelConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_micros(self.max_wait_us)
    }

    pub fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            max_wait: self.max_wait(),
        }
    }

    /// Sessions for the provider the model runs on (`--model-sessions`, 0 = auto).
    pub fn model_sessions(&self, provider: ActiveProvider) -> usize {
        match (self.model_sessions, provider) {
            (0, ActiveProvider::Cuda) => 2,
            (0, ActiveProvider::Cpu) => 1,
            (n, _) => n,
        }
    }

    pub fn io_binding(&self) -> bool {
        self.io_binding.unwrap_or(false)
    }

    pub fn tokenizer_threads(&self) -> usize {
        match self.tokenizer_threads {
            0 => cores().min(4),
            n => n,
        }
    }

    pub fn intra_threads(&self, provider: ActiveProvider) -> usize {
        match (self.intra_threads, provider) {
            (0, ActiveProvider::Cuda) => 1,
            (0, ActiveProvider::Cpu) => (cores() / self.model_sessions(provider)).max(1),
            (n, _) => n,
        }
    }
}

/// This machine's cores (1 when unknown): the base of every thread-count default.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reply drafting threads, shared by `run` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct DraftConfig {
    /// Reply drafting threads: the post stage hands each round's messages to them in chunks and
    /// passes the drafts on in input order; 0 = one per core, at most 4.
    #[arg(long, env = "MOODSTREAM_DRAFT_THREADS", default_value_t = 0)]
    pub draft_threads: usize,
}

impl DraftConfig {
    pub fn threads(&self) -> usize {
        match self.draft_threads {
            0 => cores().min(4),
            n => n,
        }
    }
}

/// The synchronous HTTP API (`api`): its own listener, off unless `--api-addr` is set.
#[derive(Args, Debug, Clone)]
pub struct ApiConfig {
    /// Address for the HTTP API (`POST /v1/classify`, `POST /v1/draft`, `GET /openapi.json`);
    /// unset (the default) = no API. Its own port, apart from /metrics and the probes, so it
    /// can be exposed to applications while those stay cluster-internal.
    #[arg(long, env = "MOODSTREAM_API_ADDR")]
    pub api_addr: Option<String>,
    /// Bearer token the API requires (`Authorization: Bearer <key>`); unset = no auth. Prefer
    /// --api-key-file (a mounted secret) to passing it on the command line.
    #[arg(long, env = "MOODSTREAM_API_KEY", hide_env_values = true)]
    pub api_key: Option<crate::escalation::Secret>,
    /// File holding the API bearer token (surrounding whitespace ignored), e.g. a mounted secret.
    #[arg(long, env = "MOODSTREAM_API_KEY_FILE", conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Most messages in one API request (413 beyond).
    #[arg(long, env = "MOODSTREAM_API_MAX_MESSAGES", default_value_t = 64)]
    pub api_max_messages: usize,
    /// Largest API request body in bytes (413 beyond).
    #[arg(long, env = "MOODSTREAM_API_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub api_max_body_bytes: usize,
    /// Most characters of one message's `text` in an API request (413 beyond).
    #[arg(long, env = "MOODSTREAM_API_MAX_TEXT_CHARS", default_value_t = 20_000)]
    pub api_max_text_chars: usize,
    /// Most API requests in flight at once; more are refused with 429 (overload), not queued.
    #[arg(
        long,
        env = "MOODSTREAM_API_MAX_CONCURRENT_REQUESTS",
        default_value_t = 512
    )]
    pub api_max_concurrent_requests: usize,
}

impl ApiConfig {
    /// The bearer token from --api-key or --api-key-file, if any (an empty one is an error:
    /// it would silently turn auth off).
    pub fn key(&self) -> Result<Option<String>, ConfigError> {
        let key = match (&self.api_key, &self.api_key_file) {
            (Some(k), _) => k.expose().trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::ApiKeyFile(format!("{}: {e}", path.display())))?
                .trim()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if key.is_empty() {
            return Err(ConfigError::ApiKeyFile("the API key is empty".into()));
        }
        Ok(Some(key))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (self.api_max_messages, "api max messages"),
            (self.api_max_body_bytes, "api max body bytes"),
            (self.api_max_text_chars, "api max text chars"),
            (
                self.api_max_concurrent_requests,
                "api max concurrent requests",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(())
    }
}

/// The dead-letter topic of `input`: the configured one, else `<input>.dlq`.
pub fn dlq_topic(configured: Option<&str>, input: &str) -> String {
    configured.map_or_else(|| format!("{input}.dlq"), str::to_string)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got `{s}`"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// How input records become customer messages, shared by `run` and `feedback export` (which
/// decodes the input topics exactly as the worker does, to find the text agents labelled).
#[derive(Args, Debug, Clone)]
pub struct InputDecodeConfig {
    /// Input value format, for every input topic unless overridden by --topic-format.
    #[arg(
        long,
        env = "MOODSTREAM_INPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub input_format: Format,
    /// Per-topic input format overrides, comma-separated `topic=json|avro`.
    #[arg(long, env = "MOODSTREAM_TOPIC_FORMATS", value_delimiter = ',', value_parser = parse_key_value)]
    pub topic_formats: Vec<(String, String)>,
    /// Input mappings (YAML): per input topic, how its records become customer messages
    /// (a preset — debezium, zendesk, salesforce, intercom — and/or field paths, value maps,
    /// time formats and skip rules). Topics without one are read as our contract.
    #[arg(long, env = "MOODSTREAM_INPUT_MAPPING")]
    pub input_mapping: Option<PathBuf>,
}

impl InputDecodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (topic, format) in &self.topic_formats {
            if Format::from_str(format, true).is_err() {
                return Err(ConfigError::BadTopicFormat {
                    topic: topic.clone(),
                    format: format.clone(),
                });
            }
        }
        Ok(())
    }

    /// The input format of `topic`.
    pub fn format_of(&self, topic: &str) -> Format {
        self.topic_formats
            .iter()
            .find(|(t, _)| t == topic)
            .and_then(|(_, f)| Format::from_str(f, true).ok())
            .unwrap_or(self.input_format)
    }

    /// The decoder of `topics`, with the input mappings of `--input-mapping` (a mapping
    /// mistake is an error here, before anything connects).
    pub fn decoder(
        &self,
        topics: &[String],
        limits: crate::decode::Limits,
        registry: std::sync::Arc<crate::schema::SchemaRegistry>,
    ) -> anyhow::Result<crate::decode::Decoder> {
        use anyhow::Context;
        let mappings = match &self.input_mapping {
            Some(path) => crate::decode::mapping::load(path, topics)
                .with_context(|| format!("input mapping {}", path.display()))?,
            None => Default::default(),
        };
        for topic in mappings.keys() {
            tracing::info!(topic = %topic, "input mapping configured");
        }
        Ok(crate::decode::Decoder::new(limits, registry).with_mappings(mappings))
    }
}

/// Where Avro schema ids resolve, shared by `run` and `feedback export`.
#[derive(Args, Debug, Clone)]
pub struct SchemaRegistryConfig {
    /// Confluent Schema Registry URL; without it Avro schema ids resolve from schemas/registry.json.
    /// Credentials belong in --schema-registry-username/-password (userinfo in the URL still
    /// works, but the URL is configuration, not a secret).
    #[arg(long, env = "MOODSTREAM_SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,
    /// Schema Registry user (HTTP basic auth).
    #[arg(long, env = "MOODSTREAM_SCHEMA_REGISTRY_USERNAME")]
    pub schema_registry_username: Option<String>,
    /// Schema Registry password (kept out of logs and --help output).
    #[arg(
        long,
        env = "MOODSTREAM_SCHEMA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub schema_registry_password: Option<crate::escalation::Secret>,
    /// PEM file of the CA certificate(s) that sign the Schema Registry's TLS certificate; with it
    /// these are the only trusted roots for the registry (the built-in web roots otherwise).
    #[arg(long, env = "MOODSTREAM_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,
    /// Directory holding the .avsc files and registry.json.
    #[arg(long, env = "MOODSTREAM_SCHEMA_DIR", default_value = "schemas")]
    pub schema_dir: PathBuf,
}

impl SchemaRegistryConfig {
    /// Schema Registry credentials from their own options.
    pub fn credentials(&self) -> Option<crate::schema::Credentials> {
        self.schema_registry_username
            .as_ref()
            .map(|username| crate::schema::Credentials {
                username: username.clone(),
                password: self
                    .schema_registry_password
                    .as_ref()
                    .map(|p| p.expose().to_string())
                    .unwrap_or_default(),
            })
    }

    /// The remote registry when `--schema-registry-url` is set, else `registry.json`.
    pub fn registry(
        &self,
        auto_register: bool,
    ) -> Result<crate::schema::SchemaRegistry, crate::schema::SchemaError> {
        use crate::schema::{RemoteOptions, SchemaRegistry};
        match &self.schema_registry_url {
            Some(url) => SchemaRegistry::remote_with(
                url,
                RemoteOptions {
                    credentials: self.credentials(),
                    ca_file: self.schema_registry_ca.clone(),
                    auto_register,
                },
            ),
            None => SchemaRegistry::local(&self.schema_dir),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunConfig {
    /// Config file of `MOODSTREAM_...=value` lines (dotenv syntax): defaults under the
    /// environment and the flags.
    #[arg(long, env = "MOODSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Consumer group id.
    #[arg(long, env = "MOODSTREAM_GROUP", default_value = "moodstream")]
    pub group: String,
    /// Input topics, comma-separated. They must exist: the worker never creates them.
    #[arg(
        long,
        env = "MOODSTREAM_TOPICS",
        value_delimiter = ',',
        default_value = "customer-messages"
    )]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub input: InputDecodeConfig,
    /// Output value format for emotions, replies and escalations.
    #[arg(
        long,
        env = "MOODSTREAM_OUTPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub output_format: Format,
    #[command(flatten)]
    pub registry: SchemaRegistryConfig,
    /// Register the output schemas under `<topic>-value` at startup (`auto.register` on). Off:
    /// they must already be registered there; one missing stops the worker at startup.
    #[arg(
        long,
        env = "MOODSTREAM_SCHEMA_REGISTRY_AUTO_REGISTER",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub schema_registry_auto_register: bool,
    /// Topic for emotion results.
    #[arg(long, env = "MOODSTREAM_OUTPUT_TOPIC", default_value = "emotions")]
    pub output_topic: String,
    /// Dead-letter topic; default `<input topic>.dlq` for each input topic.
    #[arg(long, env = "MOODSTREAM_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Topic for escalation events.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_TOPIC",
        default_value = "escalations"
    )]
    pub escalation_topic: String,
    /// Reply templates and per-channel topic mapping (YAML); the shipped default when unset.
    /// A reload re-reads it (new reply topics need a restart).
    #[arg(long, env = "MOODSTREAM_REPLY_CONFIG")]
    pub reply_config: Option<PathBuf>,
    /// Disable reply drafting (no replies.* outputs).
    #[arg(long, env = "MOODSTREAM_DISABLE_REPLIES")]
    pub disable_replies: bool,
    #[command(flatten)]
    pub draft: DraftConfig,
    /// Largest accepted message value in bytes; larger ones go to the dead-letter topic.
    #[arg(long, env = "MOODSTREAM_MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// Most characters of `text` accepted; longer messages are dead-lettered as oversized.
    #[arg(long, env = "MOODSTREAM_MAX_TEXT_CHARS", default_value_t = 20_000)]
    pub max_text_chars: usize,
    /// Most messages between consume and offset store (bounds memory; backpressure beyond).
    #[arg(long, env = "MOODSTREAM_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Most key and value bytes between consume and offset store (backpressure beyond; one
    /// larger record still goes through alone).
    #[arg(long, env = "MOODSTREAM_MAX_IN_FLIGHT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,
    /// How long a failing dependency (Schema Registry, the model) is retried, with backoff
    /// and the affected partitions paused, before the worker gives up and exits non-zero
    /// (its records are never dead-lettered), in ms.
    #[arg(long, env = "MOODSTREAM_RETRY_TIMEOUT_MS", default_value_t = 60_000)]
    pub retry_timeout_ms: u64,
    /// How long shutdown and partition revocation wait for in-flight messages, in ms.
    #[arg(long, env = "MOODSTREAM_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,
    /// Where reading starts on a partition without a committed offset (a new group, or offsets
    /// expired). The chart derives KEDA's offsetResetPolicy from the same value.
    #[arg(
        long,
        env = "MOODSTREAM_AUTO_OFFSET_RESET",
        value_enum,
        default_value = "earliest"
    )]
    pub auto_offset_reset: OffsetReset,
    /// Consumer group session timeout, in ms (must exceed the drain timeout).
    #[arg(long, env = "MOODSTREAM_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub session_timeout_ms: u64,
    /// Offset commit interval, in ms (offsets are also committed on revoke and shutdown). In
    /// exactly-once mode: how long a transaction stays open, so also how late outputs become
    /// visible to `read_committed` consumers.
    #[arg(long, env = "MOODSTREAM_COMMIT_INTERVAL_MS", default_value_t = 1000)]
    pub commit_interval_ms: u64,
    /// Exactly-once mode: every output and the input offsets are committed in one Kafka
    /// transaction (read-process-write); consumers of the outputs must use `read_committed`.
    #[arg(long, env = "MOODSTREAM_EXACTLY_ONCE")]
    pub exactly_once: bool,
    /// This replica's `transactional.id` in exactly-once mode: unique per replica and stable
    /// across its restarts (so a restart fences its zombie). Default `moodstream-<group>-<hostname>`.
    #[arg(long, env = "MOODSTREAM_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// Static group membership (`group.instance.id`), stable across this replica's restarts
    /// (the chart's StatefulSet sets the pod name): a restart within the session timeout gets
    /// the same partitions back without a rebalance. Unique per replica.
    #[arg(long, env = "MOODSTREAM_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Address for /metrics, /healthz, /readyz and POST /admin/reload.
    #[arg(long, env = "MOODSTREAM_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,
    /// How often to look for changes of the model directory, `--reply-config` and
    /// `--escalation-thresholds` (a change reloads them once it has held still for one
    /// interval); 0 turns the file watch off (SIGHUP and POST /admin/reload still reload).
    #[arg(long, env = "MOODSTREAM_RELOAD_POLL_SECS", default_value_t = 10)]
    pub reload_poll_secs: u64,
    /// A candidate model directory to run beside the live model on a sample of messages
    /// (shadow mode): its labels are never published, only compared
    /// (`moodstream_shadow_*` metrics).
    #[arg(long, env = "MOODSTREAM_SHADOW_MODEL_DIR")]
    pub shadow_model_dir: Option<PathBuf>,
    /// Share of messages the shadow candidate scores, chosen by message id (the same messages
    /// on every replica).
    #[arg(long, env = "MOODSTREAM_SHADOW_SAMPLE_RATE", default_value_t = 0.1)]
    pub shadow_sample_rate: f64,
    #[command(flatten)]
    pub api: ApiConfig,
    #[command(flatten)]
    pub model: ModelConfig,
    #[command(flatten)]
    pub escalation: EscalationConfig,
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookConfig,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

/// Configuration mistakes caught before anything connects.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("drain timeout ({drain_ms} ms) must be below the session timeout ({session_ms} ms)")]
    DrainExceedsSession { drain_ms: u64, session_ms: u64 },
    #[error("no input topics configured")]
    NoTopics,
    #[error("unknown format `{format}` for topic `{topic}` (expected json or avro)")]
    BadTopicFormat { topic: String, format: String },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("max batch tokens ({tokens}) must be at least max seq len ({seq})")]
    TokensBelowSeqLen { tokens: usize, seq: usize },
    #[error("API key: {0}")]
    ApiKeyFile(String),
    #[error("shadow sample rate {0} is outside (0, 1]")]
    ShadowSampleRate(f64),
    #[error(transparent)]
    Escalation(#[from] crate::escalation::ConfigError),
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookConfigError),
    #[error(transparent)]
    Kafka(#[from] KafkaConfigError),
}

impl RunConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.drain_timeout_ms >= self.session_timeout_ms {
            return Err(ConfigError::DrainExceedsSession {
                drain_ms: self.drain_timeout_ms,
                session_ms: self.session_timeout_ms,
            });
        }
        self.kafka.validate()?;
        if self.topics.iter().all(|t| t.trim().is_empty()) {
            return Err(ConfigError::NoTopics);
        }
        self.input.validate()?;
        if self.max_in_flight == 0 {
            return Err(ConfigError::Zero("max in flight"));
        }
        if self.max_in_flight_bytes == 0 {
            return Err(ConfigError::Zero("max in flight bytes"));
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::Zero("commit interval"));
        }
        if self.shadow_model_dir.is_some()
            && !(self.shadow_sample_rate > 0.0 && self.shadow_sample_rate <= 1.0)
        {
            return Err(ConfigError::ShadowSampleRate(self.shadow_sample_rate));
        }
        self.escalation.validate()?;
        self.webhook.validate()?;
        self.api.validate()?;
        self.model.validate()
    }

    /// The input format of `topic`.
    pub fn format_of(&self, topic: &str) -> Format {
        self.input.format_of(topic)
    }

    pub fn dlq_topic_for(&self, input_topic: &str) -> String {
        dlq_topic(self.dlq_topic.as_deref(), input_topic)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    pub fn retry_timeout(&self) -> Duration {
        Duration::from_millis(self.retry_timeout_ms)
    }

    /// The `transactional.id` in exactly-once mode; `None` in at-least-once mode.
    pub fn transactional_id(&self) -> Option<String> {
        self.exactly_once.then(|| {
            self.transactional_id.clone().unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .or_else(|| {
                        std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .ok()
                            .map(|h| h.trim().to_string())
                    })
                    .unwrap_or_else(|| "localhost".into());
                format!("moodstream-{}-{host}", self.group)
            })
        })
    }
}

impl ModelConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_batch_size == 0 {
            return Err(ConfigError::Zero("max batch size"));
        }
        if self.max_seq_len == 0 {
            return Err(ConfigError::Zero("max seq len"));
        }
        if self.max_batch_tokens < self.max_seq_len {
            return Err(ConfigError::TokensBelowSeqLen {
                tokens: self.max_batch_tokens,
                seq: self.max_seq_len,
            });
        }
        Ok(())
    }
}

/// Logging and tracing. Tracing export is configured by the standard `OTEL_*` variables.
#[derive(Args, Debug, Clone)]
pub struct TelemetryConfig {
    /// Log format.
    #[arg(
        long,
        env = "MOODSTREAM_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Args, Debug, Clone)]
pub struct ClassifyConfig {
    /// JSONL file of customer messages; stdin when absent.
    #[arg(long)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelConfig,
}

#[derive(Args, Debug, Clone)]
pub struct BenchConfig {
    /// Distinct messages generated (the model stage and the pipeline cycle over them for
    /// `--seconds`).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Each measurement (model stage alone, whole pipeline) runs at least this long, cycling over
    /// the messages, and at least once through them; 0 = once through.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// JSON lines of customer messages to use instead of synthetic ones (e.g. a topic's
    /// content, to compare with a Kafka run on the same input); `--messages` is then ignored.
    #[arg(long, conflicts_with = "fixed_tokens")]
    pub input: Option<PathBuf>,
    /// Exactly this many tokens per message, [CLS] and [SEP] included (e.g. 24; at most
    /// `--max-seq-len`); when absent, a realistic 5–120 token mix.
    #[arg(long)]
    pub fixed_tokens: Option<usize>,
    /// Also draft a reply for every message (the full per-message work).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub draft_replies: bool,
    #[command(flatten)]
    pub draft: DraftConfig,
    /// Random seed for the synthetic messages.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ModelConfig,
}

#[derive(Args, Debug, Clone)]
pub struct BenchApiConfig {
    /// The API's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub url: String,
    /// Route to load: classify or draft.
    #[arg(long, default_value = "classify")]
    pub route: String,
    /// Bearer token, when the API requires one.
    #[arg(long, env = "MOODSTREAM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent clients, each sending its next request when the previous one is answered.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Messages per request.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// How long to send requests, in seconds (after one warm-up request per client).
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Random seed for the synthetic messages.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Args, Debug, Clone)]
pub struct DemoProduceConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Topic to produce to.
    #[arg(
        long,
        env = "MOODSTREAM_DEMO_TOPIC",
        default_value = "customer-messages"
    )]
    pub topic: String,
    /// Calm background messages (an angry conversation and a surge are added on top).
    #[arg(long, default_value_t = 300)]
    pub count: usize,
    /// Steady mode: produce calm traffic stamped with the current time at this many messages
    /// per second, for `--duration-secs`, instead of the fixed demo stream (soak tests).
    #[arg(
        long,
        requires = "duration_secs",
        conflicts_with = "count",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub rate: Option<u32>,
    /// How long steady mode (`--rate`) runs.
    #[arg(long, requires = "rate")]
    pub duration_secs: Option<u64>,
    /// Value format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prefix for message, conversation and customer ids, so reruns never share escalation
    /// state and their outputs can be told apart.
    #[arg(long, default_value = "demo")]
    pub run_tag: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_config(args: &[&str]) -> RunConfig {
        let mut argv = vec!["moodstream", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(cfg) => *cfg,
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn debug_of_the_run_config_hides_the_api_key_and_registry_password() {
        let cfg = run_config(&[
            "--api-key",
            "api-key-value-1",
            "--schema-registry-username",
            "svc",
            "--schema-registry-password",
            "registry-password-2",
        ]);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("api-key-value-1"), "{shown}");
        assert!(!shown.contains("registry-password-2"), "{shown}");
        assert_eq!(
            cfg.api.key().expect("a key"),
            Some("api-key-value-1".into())
        );
        assert_eq!(
            cfg.registry.credentials().map(|c| c.password),
            Some("registry-password-2".into())
        );
    }

    fn with_config_file(text: &str, args: &[&str]) -> Result<RunConfig, ConfigFileError> {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write config file");
        let mut argv: Vec<OsString> = vec!["moodstream".into(), "run".into()];
        argv.extend(args.iter().map(OsString::from));
        match parse_from(argv, Some(file.path().into()))?.command {
            Command::Run(cfg) => Ok(*cfg),
            other => panic!("unexpected command {other:?}"),
        }
    }

    #[test]
    fn config_file_values_replace_the_defaults_and_flags_beat_them() {
        let file = "# tuned for the load test\n\
                    MOODSTREAM_GROUP=from-file\n\
                    MOODSTREAM_TOPICS=\"a,b\"\n\
                    export MOODSTREAM_DRAIN_TIMEOUT_MS=1234\n\
                    MOODSTREAM_EXACTLY_ONCE=true\n\
                    MOODSTREAM_DISABLE_REPLIES=false\n\
                    MOODSTREAM_REDIS_URL='redis://r:6379'\n";
        let cfg = with_config_file(file, &[]).expect("parses");
        assert_eq!(cfg.group, "from-file");
        assert_eq!(cfg.topics, ["a", "b"]);
        assert_eq!(cfg.drain_timeout_ms, 1234);
        assert!(cfg.exactly_once);
        assert!(!cfg.disable_replies);
        assert!(cfg.escalation.redis_url.is_some());
        // Settings the file leaves out keep their built-in defaults.
        assert_eq!(cfg.session_timeout_ms, 45_000);

        let cfg =
            with_config_file(file, &["--group", "from-flag", "--topics", "c"]).expect("parses");
        assert_eq!(cfg.group, "from-flag");
        assert_eq!(cfg.topics, ["c"]);
        assert_eq!(cfg.drain_timeout_ms, 1234);
    }

    #[test]
    fn config_file_flag_beats_the_environment_variable_naming_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("flag.env");
        std::fs::write(&path, "MOODSTREAM_GROUP=from-flag-file\n").expect("write");
        let other = dir.path().join("env.env");
        std::fs::write(&other, "MOODSTREAM_GROUP=from-env-file\n").expect("write");
        let argv: Vec<OsString> = vec![
            "moodstream".into(),
            "run".into(),
            format!("--config={}", path.display()).into(),
        ];
        let Command::Run(cfg) = parse_from(argv, Some(other.into()))
            .expect("parses")
            .command
        else {
            panic!("run")
        };
        assert_eq!(cfg.group, "from-flag-file");
    }

    #[test]
    fn config_file_rejects_unknown_settings() {
        let err = with_config_file("MOODSTREAM_GRUOP=typo\n", &[]).expect_err("unknown key");
        assert!(
            matches!(&err, ConfigFileError::UnknownKey { key, .. } if key == "MOODSTREAM_GRUOP"),
            "{err}"
        );
        // OTEL_* is read by the exporter from the environment, which the file does not change.
        let err = with_config_file("OTEL_SERVICE_NAME=x\n", &[]).expect_err("not a flag");
        assert!(err.to_string().contains("OTEL_SERVICE_NAME"), "{err}");
        let err = with_config_file("MOODSTREAM_GROUP\n", &[]).expect_err("no value");
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err}");
    }

    #[test]
    fn config_file_settings_of_other_subcommands_are_accepted() {
        // One file for `run` and `demo-produce`: a demo-only setting does not fail `run`.
        let cfg = with_config_file("MOODSTREAM_DEMO_TOPIC=demo\nMOODSTREAM_GROUP=g\n", &[])
            .expect("parses");
        assert_eq!(cfg.group, "g");
        let err = with_config_file(
            "MOODSTREAM_GROUP=g\n",
            &["--config", "/nonexistent/moodstream.env"],
        )
        .expect_err("a --config file that cannot be read");
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err}");
    }

    #[test]
    fn transactional_id_only_in_exactly_once_mode_and_explicit_wins() {
        assert_eq!(run_config(&[]).transactional_id(), None);
        let default = run_config(&["--exactly-once", "--group", "g1"])
            .transactional_id()
            .expect("exactly-once has an id");
        assert!(default.starts_with("moodstream-g1-"), "{default}");
        assert!(default.len() > "moodstream-g1-".len(), "names the host");
        let explicit = run_config(&["--exactly-once", "--transactional-id", "pod-3"]);
        assert_eq!(explicit.transactional_id().as_deref(), Some("pod-3"));
    }

    #[test]
    fn offset_reset_defaults_to_earliest_and_the_webhook_is_validated() {
        assert_eq!(run_config(&[]).auto_offset_reset, OffsetReset::Earliest);
        let latest = run_config(&["--auto-offset-reset", "latest"]);
        assert_eq!(latest.auto_offset_reset.as_str(), "latest");
        let pagerduty = run_config(&[
            "--escalation-webhook-url",
            "https://events.pagerduty.com/v2/enqueue",
            "--escalation-webhook-format",
            "pagerduty",
        ]);
        assert!(matches!(
            pagerduty.validate(),
            Err(ConfigError::Webhook(
                crate::webhook::WebhookConfigError::NoRoutingKey
            ))
        ));
    }

    #[test]
    fn sessions_and_threads_default_per_provider() {
        use ActiveProvider::{Cpu, Cuda};
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = run_config(&[]).model;
        assert_eq!(
            (auto.model_sessions(Cpu), auto.intra_threads(Cpu)),
            (1, cores)
        );
        // CUDA: two sessions so one batch's copies overlap the other's kernels, one thread each.
        assert_eq!(
            (auto.model_sessions(Cuda), auto.intra_threads(Cuda)),
            (2, 1)
        );
        assert!(!auto.io_binding());
        let two = run_config(&["--model-sessions", "2"]).model;
        assert_eq!(two.intra_threads(Cpu), (cores / 2).max(1));
        let explicit = run_config(&["--model-sessions", "3", "--intra-threads", "3"]).model;
        assert_eq!(
            (explicit.model_sessions(Cuda), explicit.intra_threads(Cuda)),
            (3, 3)
        );
        let on = run_config(&["--io-binding", "true"]).model;
        assert!(on.io_binding());
    }

    #[test]
    fn draft_threads_default_to_the_cores_up_to_four() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(run_config(&[]).draft.threads(), cores.min(4));
        assert_eq!(run_config(&["--draft-threads", "6"]).draft.threads(), 6);
    }

    #[test]
    fn later_flags_override_earlier_ones() {
        let cfg = run_config(&["--drain-timeout-ms", "1000", "--drain-timeout-ms", "2000"]);
        assert_eq!(cfg.drain_timeout_ms, 2000);
    }

    #[test]
    fn rejects_drain_timeout_at_or_above_session_timeout() {
        let cfg = run_config(&[
            "--drain-timeout-ms",
            "50000",
            "--session-timeout-ms",
            "45000",
        ]);
        assert_eq!(
            cfg.validate(),
            Err(ConfigError::DrainExceedsSession {
                drain_ms: 50000,
                session_ms: 45000
            })
        );
    }

    #[test]
    fn accepts_tls_redis_urls_and_checks_escalation_settings() {
        run_config(&["--redis-url", "rediss://user:pw@redis.example:6380/0"])
            .validate()
            .expect("rediss is supported");
        let bad = run_config(&["--escalation-negativity-threshold", "1.5"]);
        assert!(matches!(bad.validate(), Err(ConfigError::Escalation(_))));
    }

    #[test]
    fn secrets_and_urls_never_show_in_help() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let run = cli.find_subcommand_mut("run").expect("run");
        for flag in [
            "kafka_sasl_password",
            "kafka_ssl_key_password",
            "kafka_oauthbearer_client_secret",
            "redis_url",
            "redis_password",
            "schema_registry_url",
            "schema_registry_password",
        ] {
            let arg = run
                .get_arguments()
                .find(|a| a.get_id() == flag)
                .unwrap_or_else(|| panic!("--{flag} exists"));
            assert!(arg.is_hide_env_values_set(), "--{flag} hides its env value");
        }
        let cfg = run_config(&[
            "--schema-registry-username",
            "svc",
            "--schema-registry-password",
            "pw",
        ]);
        let creds = cfg.registry.credentials().expect("credentials");
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("svc", "pw")
        );
    }

    #[test]
    fn per_topic_format_overrides_default() {
        let cfg = run_config(&["--topics", "a,b", "--topic-formats", "b=avro"]);
        cfg.validate().expect("valid");
        assert_eq!(cfg.format_of("a"), Format::Json);
        assert_eq!(cfg.format_of("b"), Format::Avro);
        assert_eq!(cfg.dlq_topic_for("b"), "b.dlq");
    }

    #[test]
    fn kafka_pass_through_options_reach_the_client_config() {
        let cfg = run_config(&[
            "--kafka-options",
            "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512",
            "--kafka-sasl-password",
            "s3cret",
        ]);
        cfg.validate().expect("valid");
        let client = cfg
            .kafka
            .client_config(Client::Consumer, &[], &[])
            .expect("config");
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(client.get("sasl.password"), Some("s3cret"));
        let leaky = run_config(&["--kafka-options", "sasl.password=s3cret"]);
        assert!(matches!(leaky.validate(), Err(ConfigError::Kafka(_))));
    }
}
