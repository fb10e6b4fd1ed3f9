//! `moodstream console`: the agent console. Consumes the customer messages, emotion results,
//! drafted replies and escalations as its own consumer group (→ [`state`]), streams them to the
//! browser with Server-Sent Events (→ [`web`]), and turns every agent action into a feedback
//! event on the feedback topic (→ [`feedback`]). Customer text is shown, never logged.

pub mod auth;
pub mod feedback;
pub mod state;
pub mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc};

use crate::config::{Client, Format, KafkaConfig, SchemaRegistryConfig};
use crate::decode::{Decoder, Limits as DecodeLimits, split_wire_format};
use crate::schema::{SchemaRegistry, contract, contracts};
use auth::Auth;
use state::{Record, Request, State};

#[derive(Args, Debug, Clone)]
pub struct ConsoleConfig {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Address the console listens on. Anything but loopback requires `--tokens-file` or
    /// `--auth-proxy`.
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_BIND",
        default_value = "127.0.0.1:8090"
    )]
    pub bind: SocketAddr,
    /// The console's own consumer group (it commits no offsets: each start reads what the
    /// topics retain, bounded by `--max-conversations`).
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_GROUP",
        default_value = "moodstream-console"
    )]
    pub group: String,
    /// Input topics of customer messages (the text the agent reads), comma-separated; empty:
    /// no text, the chart then counts messages at their processing time.
    #[arg(
        long,
        env = "MOODSTREAM_TOPICS",
        value_delimiter = ',',
        default_value = "customer-messages"
    )]
    pub topics: Vec<String>,
    /// Format of the input topics.
    #[arg(
        long,
        env = "MOODSTREAM_INPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub input_format: Format,
    /// Format of emotions, replies and escalations, and of the feedback events produced.
    #[arg(
        long,
        env = "MOODSTREAM_OUTPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub output_format: Format,
    /// Where Avro schema ids resolve: the worker's Schema Registry flags, so the console reads
    /// the ids the worker wrote and writes feedback events under ids the same registry knows.
    #[command(flatten)]
    pub registry: SchemaRegistryConfig,
    /// Register `feedback_event.avsc` under `<feedback topic>-value` at startup (Avro output
    /// with a remote registry). Off: it must already be registered there.
    #[arg(
        long,
        env = "MOODSTREAM_SCHEMA_REGISTRY_AUTO_REGISTER",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub schema_registry_auto_register: bool,
    /// Emotion results topic.
    #[arg(long, env = "MOODSTREAM_OUTPUT_TOPIC", default_value = "emotions")]
    pub output_topic: String,
    /// Reply topics, a regular expression (librdkafka subscribes to every match, new ones too).
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_REPLY_TOPICS",
        default_value = r"^replies\..*"
    )]
    pub reply_topics: String,
    /// Escalation events topic.
    #[arg(
        long,
        env = "MOODSTREAM_ESCALATION_TOPIC",
        default_value = "escalations"
    )]
    pub escalation_topic: String,
    /// Where agent feedback events go.
    #[arg(long, env = "MOODSTREAM_FEEDBACK_TOPIC", default_value = "feedback")]
    pub feedback_topic: String,
    /// Per-agent tokens, one line each: `<token> <agent id> <tenant,tenant|*>` (`-` is the
    /// empty tenant). Agents sign in at /login; API clients send `Authorization: Bearer`.
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_TOKENS_FILE",
        conflicts_with = "auth_proxy"
    )]
    pub tokens_file: Option<PathBuf>,
    /// Trust an authenticating proxy (oauth2-proxy) for the identity: agent from
    /// `--proxy-user-header`, tenants from `--proxy-groups-header`. Only safe when nothing but
    /// the proxy can reach the console.
    #[arg(long, env = "MOODSTREAM_CONSOLE_AUTH_PROXY")]
    pub auth_proxy: bool,
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_PROXY_USER_HEADER",
        default_value = "X-Forwarded-Email"
    )]
    pub proxy_user_header: String,
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_PROXY_GROUPS_HEADER",
        default_value = "X-Forwarded-Groups"
    )]
    pub proxy_groups_header: String,
    /// Groups naming a tenant the agent may see: `<prefix><tenant>` (`<prefix>*`: all).
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_PROXY_TENANT_PREFIX",
        default_value = "moodstream-tenant:"
    )]
    pub proxy_tenant_prefix: String,
    /// Without tokens or a proxy (loopback only): the agent id written into feedback events.
    #[arg(long, env = "MOODSTREAM_CONSOLE_AGENT_ID", default_value = "local")]
    pub agent_id: String,
    /// Origins besides the console's own `Host` allowed to send feedback (e.g. the public
    /// address of a proxy that rewrites `Host`), comma-separated.
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Mark the sign-in cookie `Secure` (serve over HTTPS).
    #[arg(long, env = "MOODSTREAM_CONSOLE_SECURE_COOKIE")]
    pub secure_cookie: bool,
    /// Conversations kept in memory; the least recently active go first.
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_MAX_CONVERSATIONS",
        default_value_t = 1000
    )]
    pub max_conversations: usize,
    /// Messages kept per conversation.
    #[arg(long, env = "MOODSTREAM_CONSOLE_MAX_MESSAGES", default_value_t = 50)]
    pub max_messages: usize,
    /// Width of one point of the negative-share chart (event time).
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_CHART_BUCKET_SECS",
        default_value_t = 10
    )]
    pub chart_bucket_secs: u32,
    /// Points per tenant × channel chart.
    #[arg(long, env = "MOODSTREAM_CONSOLE_CHART_BUCKETS", default_value_t = 60)]
    pub chart_buckets: usize,
    /// How long a feedback send may take before the agent is told it failed.
    #[arg(
        long,
        env = "MOODSTREAM_CONSOLE_FEEDBACK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub feedback_timeout_ms: u64,
    #[command(flatten)]
    pub telemetry: crate::config::TelemetryConfig,
}

impl ConsoleConfig {
    /// How agents authenticate; refuses to serve beyond loopback without authentication.
    pub fn auth(&self) -> anyhow::Result<Auth> {
        let auth = if let Some(path) = &self.tokens_file {
            Auth::Tokens(auth::load_tokens(path).with_context(|| format!("{}", path.display()))?)
        } else if self.auth_proxy {
            Auth::Proxy {
                user_header: self.proxy_user_header.to_ascii_lowercase(),
                groups_header: self.proxy_groups_header.to_ascii_lowercase(),
                tenant_group_prefix: self.proxy_tenant_prefix.clone(),
            }
        } else {
            Auth::Local {
                agent_id: self.agent_id.clone(),
            }
        };
        if matches!(auth, Auth::Local { .. }) && !self.bind.ip().is_loopback() {
            anyhow::bail!(
                "--bind {} is beyond localhost: the console shows customer text, so it then needs \
                 --tokens-file or --auth-proxy",
                self.bind
            );
        }
        Ok(auth)
    }
}

/// Decodes one output record (emotion result, draft, escalation, feedback) in `format`.
pub(crate) fn decode_output<T: DeserializeOwned>(
    bytes: &[u8],
    format: Format,
    registry: &SchemaRegistry,
    reader: &apache_avro::Schema,
) -> Option<T> {
    match format {
        Format::Json => serde_json::from_slice(bytes).ok(),
        Format::Avro => {
            let (id, mut body) = split_wire_format(bytes).ok()?;
            let writer = registry.schema_by_id(id).ok()?;
            let value = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
                .reader_schema(reader)
                .build()
                .and_then(|r| r.read_value(&mut body))
                .ok()?;
            apache_avro::from_value(&value).ok()
        }
    }
}

/// Reads the topics into the state task until the consumer fails.
async fn consume(
    cfg: ConsoleConfig,
    registry: Arc<SchemaRegistry>,
    requests: mpsc::Sender<Request>,
) -> anyhow::Result<()> {
    let client = cfg.kafka.client_config(
        Client::Consumer,
        &[
            ("auto.offset.reset", "earliest".to_string()),
            ("topic.metadata.refresh.interval.ms", "5000".to_string()),
        ],
        // The console commits nothing: each start reads what the topics retain.
        &[
            ("group.id", cfg.group.clone()),
            ("enable.auto.commit", "false".to_string()),
        ],
    )?;
    let consumer: StreamConsumer = client.create().context("Kafka consumer")?;
    let inputs: Vec<String> = cfg
        .topics
        .iter()
        .filter(|t| !t.is_empty())
        .cloned()
        .collect();
    let mut topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    topics.extend([
        cfg.output_topic.as_str(),
        cfg.escalation_topic.as_str(),
        cfg.reply_topics.as_str(),
        cfg.feedback_topic.as_str(),
    ]);
    consumer.subscribe(&topics).context("subscribe")?;
    let decoder = Decoder::new(
        DecodeLimits {
            max_message_bytes: 1 << 20,
            max_text_chars: 100_000,
        },
        registry.clone(),
    );
    let emotion_schema = contract(contracts::EMOTION_RESULT);
    let draft_schema = contract(contracts::DRAFT_REPLY);
    let escalation_schema = contract(contracts::ESCALATION_EVENT);
    let feedback_schema = contract(contracts::FEEDBACK_EVENT);
    let format = cfg.output_format;
    loop {
        let msg = match consumer.recv().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "console consumer error");
                continue;
            }
        };
        let Some(bytes) = msg.payload() else { continue };
        let topic = msg.topic();
        // A writer schema not yet cached is fetched from the registry: a blocking call.
        let record = tokio::task::block_in_place(|| {
            if inputs.iter().any(|t| t == topic) {
                decoder
                    .decode(Some(bytes), cfg.input_format)
                    .ok()
                    .map(|m| Record::Message(Box::new(m)))
            } else if topic == cfg.output_topic {
                decode_output(bytes, format, &registry, &emotion_schema)
                    .map(|e| Record::Emotion(Box::new(e)))
            } else if topic == cfg.feedback_topic {
                decode_output(bytes, format, &registry, &feedback_schema)
                    .map(|e| Record::Feedback(Box::new(e)))
            } else if topic == cfg.escalation_topic {
                decode_output(bytes, format, &registry, &escalation_schema)
                    .map(|e| Record::Escalation(Box::new(e)))
            } else {
                decode_output(bytes, format, &registry, &draft_schema)
                    .map(|d| Record::Draft(Box::new(d)))
            }
        });
        match record {
            Some(r) => {
                if requests.send(Request::Record(r)).await.is_err() {
                    return Ok(());
                }
            }
            // The worker dead-letters bad input; the console just skips what it cannot read.
            None => tracing::debug!(
                topic,
                offset = msg.offset(),
                "console skipped an undecodable record"
            ),
        }
    }
}

/// Runs the console until SIGTERM/SIGINT.
pub async fn run(cfg: ConsoleConfig) -> anyhow::Result<()> {
    crate::telemetry::init_logging(&cfg.telemetry);
    let auth = cfg.auth()?;
    // Registry calls block (HTTP on a cache miss): off the async runtime, here and in `consume`.
    let registry = if cfg.output_format == Format::Avro || cfg.input_format == Format::Avro {
        let (registry, auto_register) = (cfg.registry.clone(), cfg.schema_registry_auto_register);
        tokio::task::spawn_blocking(move || registry.registry(auto_register))
            .await?
            .context("Schema Registry")?
    } else {
        SchemaRegistry::none()
    };
    let registry = Arc::new(registry);
    let sender = {
        let (cfg, registry) = (cfg.clone(), registry.clone());
        tokio::task::spawn_blocking(move || feedback::Sender::new(&cfg, registry))
            .await?
            .context("feedback producer")?
    };
    let (req_tx, req_rx) = mpsc::channel(1024);
    let (upd_tx, _) = broadcast::channel(4096);
    let limits = state::Limits {
        max_conversations: cfg.max_conversations.max(1),
        max_messages: cfg.max_messages.max(1),
        bucket_ms: i64::from(cfg.chart_bucket_secs.max(1)) * 1000,
        max_buckets: cfg.chart_buckets.max(2),
    };
    let no_inputs = cfg.topics.iter().all(String::is_empty);
    tokio::spawn(state::run(
        req_rx,
        State::new(limits, no_inputs),
        upd_tx.clone(),
    ));
    let app = Arc::new(web::App {
        auth,
        allowed_origins: cfg.allowed_origins.clone(),
        secure_cookie: cfg.secure_cookie,
        requests: req_tx.clone(),
        updates: upd_tx,
        feedback: sender,
    });
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("bind {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "console listening");
    // The demo and the tests read the address from stdout.
    println!("console: http://{addr}/");
    let consumer = tokio::spawn(consume(cfg, registry, req_tx));
    tokio::select! {
        r = web::serve(listener, app) => r.context("console HTTP server")?,
        r = consumer => r.context("console consumer task")??,
        _ = crate::worker::shutdown_signal() => tracing::info!("console stopping"),
    }
    Ok(())
}
