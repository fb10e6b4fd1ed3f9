//! Escalation settings: one `clap` argument group flattened into the worker's config. Every flag
//! has an env var (`MOODSTREAM_ESCALATION_*`, `MOODSTREAM_REDIS_*`) and its doc comment is the
//! `--help` text; the README ("Escalation events") explains how the thresholds interact.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default values, shared by the flags and by `EscalationConfig::default()`.
pub mod defaults {
    pub const REDIS_TIMEOUT_MS: u64 = 100;
    pub const REDIS_PROBE_INTERVAL_MS: u64 = 2_000;
    pub const REDIS_KEY_PREFIX: &str = "moodstream";
    pub const NEGATIVITY_THRESHOLD: f32 = 0.5;
    pub const TREND_MAX_TURNS: usize = 10;
    pub const TREND_TTL_SECS: u64 = 86_400;
    pub const TREND_EWMA_ALPHA: f32 = 0.4;
    pub const TREND_MIN_TURNS: usize = 3;
    pub const TREND_EWMA_THRESHOLD: f32 = 0.6;
    pub const TREND_EWMA_CRITICAL: f32 = 0.8;
    pub const TREND_RISE_TURNS: usize = 3;
    pub const TREND_RISE_DELTA: f32 = 0.4;
    pub const ANGER_CONFIDENCE: f32 = 0.9;
    pub const TREND_COOLDOWN_SECS: u64 = 1_800;
    pub const REPEAT_MIN_MESSAGES: usize = 3;
    pub const REPEAT_MIN_CONVERSATIONS: usize = 2;
    pub const REPEAT_CRITICAL_MESSAGES: usize = 6;
    pub const REPEAT_WINDOW_SECS: u64 = 86_400;
    pub const REPEAT_COOLDOWN_SECS: u64 = 86_400;
    pub const SURGE_SCOPE: &str = "tenant,channel";
    pub const SURGE_BUCKET_SECS: u64 = 10;
    pub const SURGE_WINDOW_SECS: u64 = 60;
    pub const SURGE_BASELINE_SECS: u64 = 900;
    pub const SURGE_MIN_NEGATIVE: u64 = 10;
    pub const SURGE_MIN_BASELINE_MESSAGES: u64 = 50;
    pub const SURGE_MIN_BASELINE_RATE: f64 = 0.05;
    pub const SURGE_RATE_FACTOR: f64 = 2.0;
    pub const SURGE_CRITICAL_FACTOR: f64 = 3.0;
    pub const SURGE_Z_THRESHOLD: f64 = 3.0;
    pub const SURGE_COOLDOWN_SECS: u64 = 900;
    pub const LATE_TOLERANCE_MS: u64 = 120_000;
    pub const MAX_TRIGGER_IDS: usize = 10;
    pub const MEMORY_MAX_KEYS: usize = 100_000;
}

/// Escalation detection: conversation trend, repeat contact and surges, shared across replicas
/// through Redis.
#[derive(clap::Args, Debug, Clone)]
pub struct EscalationConfig {
    /// Redis URL shared by all replicas (`redis://host:6379/0`). Unset: in-memory windows only,
    /// which is correct for a single replica.
    #[arg(
        long = "redis-url",
        env = "MOODSTREAM_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<RedisUrl>,

    /// Redis ACL user name (Redis 6+), when not in the URL.
    #[arg(long = "redis-username", env = "MOODSTREAM_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// Redis password, when not in the URL. Never logged.
    #[arg(
        long = "redis-password",
        env = "MOODSTREAM_REDIS_PASSWORD",
        hide_env_values = true
    )]
    pub redis_password: Option<Secret>,

    /// Timeout for every Redis call (connect included); past it the replica goes degraded.
    #[arg(long = "redis-timeout-ms", env = "MOODSTREAM_REDIS_TIMEOUT_MS", default_value_t = defaults::REDIS_TIMEOUT_MS)]
    pub redis_timeout_ms: u64,

    /// While degraded, how often to PING Redis to find out whether it is back.
    #[arg(long = "redis-probe-interval-ms", env = "MOODSTREAM_REDIS_PROBE_INTERVAL_MS", default_value_t = defaults::REDIS_PROBE_INTERVAL_MS)]
    pub redis_probe_interval_ms: u64,

    /// Prefix of every Redis key this worker writes (`<prefix>:esc:...`).
    #[arg(long = "redis-key-prefix", env = "MOODSTREAM_REDIS_KEY_PREFIX", default_value = defaults::REDIS_KEY_PREFIX)]
    pub redis_key_prefix: String,

    /// A message counts as negative when its primary emotion is negative or its negativity is
    /// at least this.
    #[arg(long = "escalation-negativity-threshold", env = "MOODSTREAM_ESCALATION_NEGATIVITY_THRESHOLD", default_value_t = defaults::NEGATIVITY_THRESHOLD)]
    pub negativity_threshold: f32,

    /// Conversation trend: turns kept per conversation (N).
    #[arg(long = "escalation-trend-max-turns", env = "MOODSTREAM_ESCALATION_TREND_MAX_TURNS", default_value_t = defaults::TREND_MAX_TURNS)]
    pub trend_max_turns: usize,

    /// Conversation trend: a conversation's window is forgotten this long after its last turn.
    #[arg(long = "escalation-trend-ttl-secs", env = "MOODSTREAM_ESCALATION_TREND_TTL_SECS", default_value_t = defaults::TREND_TTL_SECS)]
    pub trend_ttl_secs: u64,

    /// Conversation trend: EWMA weight of the newest turn (0 < alpha <= 1).
    #[arg(long = "escalation-trend-ewma-alpha", env = "MOODSTREAM_ESCALATION_TREND_EWMA_ALPHA", default_value_t = defaults::TREND_EWMA_ALPHA)]
    pub trend_ewma_alpha: f32,

    /// Conversation trend: turns needed before the EWMA threshold applies.
    #[arg(long = "escalation-trend-min-turns", env = "MOODSTREAM_ESCALATION_TREND_MIN_TURNS", default_value_t = defaults::TREND_MIN_TURNS)]
    pub trend_min_turns: usize,

    /// Conversation trend: EWMA negativity at or above this escalates (warning).
    #[arg(long = "escalation-trend-ewma-threshold", env = "MOODSTREAM_ESCALATION_TREND_EWMA_THRESHOLD", default_value_t = defaults::TREND_EWMA_THRESHOLD)]
    pub trend_ewma_threshold: f32,

    /// Conversation trend: EWMA negativity at or above this escalates as critical.
    #[arg(long = "escalation-trend-ewma-critical", env = "MOODSTREAM_ESCALATION_TREND_EWMA_CRITICAL", default_value_t = defaults::TREND_EWMA_CRITICAL)]
    pub trend_ewma_critical: f32,

    /// Conversation trend: the rise is measured over this many turns (K).
    #[arg(long = "escalation-trend-rise-turns", env = "MOODSTREAM_ESCALATION_TREND_RISE_TURNS", default_value_t = defaults::TREND_RISE_TURNS)]
    pub trend_rise_turns: usize,

    /// Conversation trend: an EWMA rise of at least this over K turns escalates (warning).
    #[arg(long = "escalation-trend-rise-delta", env = "MOODSTREAM_ESCALATION_TREND_RISE_DELTA", default_value_t = defaults::TREND_RISE_DELTA)]
    pub trend_rise_delta: f32,

    /// Conversation trend: a message whose primary emotion is anger with at least this
    /// confidence escalates on its own (critical when the EWMA threshold is also met).
    #[arg(long = "escalation-anger-confidence", env = "MOODSTREAM_ESCALATION_ANGER_CONFIDENCE", default_value_t = defaults::ANGER_CONFIDENCE)]
    pub anger_confidence: f32,

    /// Conversation trend: one event per conversation per this many seconds (plus at most one
    /// warning-to-critical upgrade).
    #[arg(long = "escalation-trend-cooldown-secs", env = "MOODSTREAM_ESCALATION_TREND_COOLDOWN_SECS", default_value_t = defaults::TREND_COOLDOWN_SECS)]
    pub trend_cooldown_secs: u64,

    /// Repeat contact: negative messages from one customer within the window that escalate (M).
    #[arg(long = "escalation-repeat-min-messages", env = "MOODSTREAM_ESCALATION_REPEAT_MIN_MESSAGES", default_value_t = defaults::REPEAT_MIN_MESSAGES)]
    pub repeat_min_messages: usize,

    /// Repeat contact: those messages must span at least this many conversations (1 counts
    /// negative messages in a single conversation too).
    #[arg(long = "escalation-repeat-min-conversations", env = "MOODSTREAM_ESCALATION_REPEAT_MIN_CONVERSATIONS", default_value_t = defaults::REPEAT_MIN_CONVERSATIONS)]
    pub repeat_min_conversations: usize,

    /// Repeat contact: this many negative messages within the window is critical.
    #[arg(long = "escalation-repeat-critical-messages", env = "MOODSTREAM_ESCALATION_REPEAT_CRITICAL_MESSAGES", default_value_t = defaults::REPEAT_CRITICAL_MESSAGES)]
    pub repeat_critical_messages: usize,

    /// Repeat contact: the window, in seconds.
    #[arg(long = "escalation-repeat-window-secs", env = "MOODSTREAM_ESCALATION_REPEAT_WINDOW_SECS", default_value_t = defaults::REPEAT_WINDOW_SECS)]
    pub repeat_window_secs: u64,

    /// Repeat contact: one event per customer per this many seconds (plus one upgrade).
    #[arg(long = "escalation-repeat-cooldown-secs", env = "MOODSTREAM_ESCALATION_REPEAT_COOLDOWN_SECS", default_value_t = defaults::REPEAT_COOLDOWN_SECS)]
    pub repeat_cooldown_secs: u64,

    /// Surge: the fields a surge scope is made of, comma-separated: `tenant`, `channel`,
    /// `metadata.<key>` (e.g. `tenant,metadata.queue`).
    #[arg(long = "escalation-surge-scope", env = "MOODSTREAM_ESCALATION_SURGE_SCOPE", value_delimiter = ',', default_value = defaults::SURGE_SCOPE)]
    pub surge_scope: Vec<ScopeKey>,

    /// Surge: counting bucket width, in seconds.
    #[arg(long = "escalation-surge-bucket-secs", env = "MOODSTREAM_ESCALATION_SURGE_BUCKET_SECS", default_value_t = defaults::SURGE_BUCKET_SECS)]
    pub surge_bucket_secs: u64,

    /// Surge: the recent window whose negative rate is tested, in seconds (a multiple of the
    /// bucket width).
    #[arg(long = "escalation-surge-window-secs", env = "MOODSTREAM_ESCALATION_SURGE_WINDOW_SECS", default_value_t = defaults::SURGE_WINDOW_SECS)]
    pub surge_window_secs: u64,

    /// Surge: the baseline window just before the recent one, in seconds (a multiple of the
    /// bucket width).
    #[arg(long = "escalation-surge-baseline-secs", env = "MOODSTREAM_ESCALATION_SURGE_BASELINE_SECS", default_value_t = defaults::SURGE_BASELINE_SECS)]
    pub surge_baseline_secs: u64,

    /// Surge: negative messages needed in the recent window.
    #[arg(long = "escalation-surge-min-negative", env = "MOODSTREAM_ESCALATION_SURGE_MIN_NEGATIVE", default_value_t = defaults::SURGE_MIN_NEGATIVE)]
    pub surge_min_negative: u64,

    /// Surge: messages needed in the baseline window before a scope is judged at all.
    #[arg(long = "escalation-surge-min-baseline-messages", env = "MOODSTREAM_ESCALATION_SURGE_MIN_BASELINE_MESSAGES", default_value_t = defaults::SURGE_MIN_BASELINE_MESSAGES)]
    pub surge_min_baseline_messages: u64,

    /// Surge: floor of the baseline negative rate, so a spotless baseline does not make every
    /// few complaints a surge.
    #[arg(long = "escalation-surge-min-baseline-rate", env = "MOODSTREAM_ESCALATION_SURGE_MIN_BASELINE_RATE", default_value_t = defaults::SURGE_MIN_BASELINE_RATE)]
    pub surge_min_baseline_rate: f64,

    /// Surge: recent negative rate must be at least this multiple of the baseline rate (0
    /// disables the factor test).
    #[arg(long = "escalation-surge-rate-factor", env = "MOODSTREAM_ESCALATION_SURGE_RATE_FACTOR", default_value_t = defaults::SURGE_RATE_FACTOR)]
    pub surge_rate_factor: f64,

    /// Surge: a rate at least this multiple of the baseline is critical.
    #[arg(long = "escalation-surge-critical-factor", env = "MOODSTREAM_ESCALATION_SURGE_CRITICAL_FACTOR", default_value_t = defaults::SURGE_CRITICAL_FACTOR)]
    pub surge_critical_factor: f64,

    /// Surge: the recent rate's z-score against the baseline (binomial) must be at least this
    /// (0 disables the z test).
    #[arg(long = "escalation-surge-z-threshold", env = "MOODSTREAM_ESCALATION_SURGE_Z_THRESHOLD", default_value_t = defaults::SURGE_Z_THRESHOLD)]
    pub surge_z_threshold: f64,

    /// Surge: one event per scope per this many seconds (plus one upgrade).
    #[arg(long = "escalation-surge-cooldown-secs", env = "MOODSTREAM_ESCALATION_SURGE_COOLDOWN_SECS", default_value_t = defaults::SURGE_COOLDOWN_SECS)]
    pub surge_cooldown_secs: u64,

    /// Allowed lateness: messages whose `sent_at` is this much behind their input partition's
    /// event-time watermark (the latest `sent_at` seen there) are counted in the watermark's
    /// bucket instead of their own; a future `sent_at` is clamped to now. Hours are fine (surge
    /// buckets then live that much longer in Redis).
    #[arg(long = "escalation-late-tolerance-ms", env = "MOODSTREAM_ESCALATION_LATE_TOLERANCE_MS", default_value_t = defaults::LATE_TOLERANCE_MS)]
    pub late_tolerance_ms: u64,

    /// Most triggering message ids carried by one event.
    #[arg(long = "escalation-max-trigger-ids", env = "MOODSTREAM_ESCALATION_MAX_TRIGGER_IDS", default_value_t = defaults::MAX_TRIGGER_IDS)]
    pub max_trigger_ids: usize,

    /// Bound on the per-replica in-memory windows (entries per kind), used when Redis is
    /// unset or unreachable.
    #[arg(long = "escalation-memory-max-keys", env = "MOODSTREAM_ESCALATION_MEMORY_MAX_KEYS", default_value_t = defaults::MEMORY_MAX_KEYS)]
    pub memory_max_keys: usize,

    /// YAML file of decision thresholds and cooldowns (keys: the `--escalation-*` flag names
    /// below without the prefix, with underscores, e.g. `surge_z_threshold: 3.5`) that override
    /// those flags. A reload (file change, SIGHUP, `POST /admin/reload`) re-reads it; window
    /// sizes, surge scope and Redis settings need a restart.
    #[arg(
        long = "escalation-thresholds",
        env = "MOODSTREAM_ESCALATION_THRESHOLDS"
    )]
    pub thresholds_file: Option<std::path::PathBuf>,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        use defaults::*;
        Self {
            redis_url: None,
            redis_username: None,
            redis_password: None,
            redis_timeout_ms: REDIS_TIMEOUT_MS,
            redis_probe_interval_ms: REDIS_PROBE_INTERVAL_MS,
            redis_key_prefix: REDIS_KEY_PREFIX.to_owned(),
            negativity_threshold: NEGATIVITY_THRESHOLD,
            trend_max_turns: TREND_MAX_TURNS,
            trend_ttl_secs: TREND_TTL_SECS,
            trend_ewma_alpha: TREND_EWMA_ALPHA,
            trend_min_turns: TREND_MIN_TURNS,
            trend_ewma_threshold: TREND_EWMA_THRESHOLD,
            trend_ewma_critical: TREND_EWMA_CRITICAL,
            trend_rise_turns: TREND_RISE_TURNS,
            trend_rise_delta: TREND_RISE_DELTA,
            anger_confidence: ANGER_CONFIDENCE,
            trend_cooldown_secs: TREND_COOLDOWN_SECS,
            repeat_min_messages: REPEAT_MIN_MESSAGES,
            repeat_min_conversations: REPEAT_MIN_CONVERSATIONS,
            repeat_critical_messages: REPEAT_CRITICAL_MESSAGES,
            repeat_window_secs: REPEAT_WINDOW_SECS,
            repeat_cooldown_secs: REPEAT_COOLDOWN_SECS,
            surge_scope: vec![ScopeKey::Tenant, ScopeKey::Channel],
            surge_bucket_secs: SURGE_BUCKET_SECS,
            surge_window_secs: SURGE_WINDOW_SECS,
            surge_baseline_secs: SURGE_BASELINE_SECS,
            surge_min_negative: SURGE_MIN_NEGATIVE,
            surge_min_baseline_messages: SURGE_MIN_BASELINE_MESSAGES,
            surge_min_baseline_rate: SURGE_MIN_BASELINE_RATE,
            surge_rate_factor: SURGE_RATE_FACTOR,
            surge_critical_factor: SURGE_CRITICAL_FACTOR,
            surge_z_threshold: SURGE_Z_THRESHOLD,
            surge_cooldown_secs: SURGE_COOLDOWN_SECS,
            late_tolerance_ms: LATE_TOLERANCE_MS,
            max_trigger_ids: MAX_TRIGGER_IDS,
            memory_max_keys: MEMORY_MAX_KEYS,
            thresholds_file: None,
        }
    }
}

/// What `--escalation-thresholds` may set: the detectors' decision thresholds and cooldowns.
/// Everything that shapes the stored windows (sizes, buckets, scope, Redis) is left out on
/// purpose: a live change there would misread the state already in Redis.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    negativity_threshold: Option<f32>,
    trend_min_turns: Option<usize>,
    trend_ewma_threshold: Option<f32>,
    trend_ewma_critical: Option<f32>,
    trend_rise_turns: Option<usize>,
    trend_rise_delta: Option<f32>,
    anger_confidence: Option<f32>,
    trend_cooldown_secs: Option<u64>,
    repeat_min_messages: Option<usize>,
    repeat_min_conversations: Option<usize>,
    repeat_critical_messages: Option<usize>,
    repeat_cooldown_secs: Option<u64>,
    surge_min_negative: Option<u64>,
    surge_min_baseline_messages: Option<u64>,
    surge_min_baseline_rate: Option<f64>,
    surge_rate_factor: Option<f64>,
    surge_critical_factor: Option<f64>,
    surge_z_threshold: Option<f64>,
    surge_cooldown_secs: Option<u64>,
}

/// Why `--escalation-thresholds` cannot be used (the previous thresholds stay).
#[derive(Debug, thiserror::Error)]
pub enum ThresholdsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_norway::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: std::path::PathBuf,
        source: ConfigError,
    },
}

impl EscalationConfig {
    /// These settings with `--escalation-thresholds` applied (unchanged without the flag),
    /// validated as a whole.
    pub fn with_thresholds_file(&self) -> Result<EscalationConfig, ThresholdsError> {
        let Some(path) = &self.thresholds_file else {
            return Ok(self.clone());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdsError::Read {
            path: path.clone(),
            source,
        })?;
        self.with_thresholds(&text, path)
    }

    fn with_thresholds(
        &self,
        yaml: &str,
        path: &std::path::Path,
    ) -> Result<EscalationConfig, ThresholdsError> {
        let t: Thresholds = if yaml.trim().is_empty() {
            Thresholds::default()
        } else {
            serde_norway::from_str(yaml).map_err(|source| ThresholdsError::Parse {
                path: path.to_path_buf(),
                source,
            })?
        };
        let mut cfg = self.clone();
        macro_rules! apply {
            ($($field:ident),*) => {$( if let Some(v) = t.$field { cfg.$field = v; } )*};
        }
        apply!(
            negativity_threshold,
            trend_min_turns,
            trend_ewma_threshold,
            trend_ewma_critical,
            trend_rise_turns,
            trend_rise_delta,
            anger_confidence,
            trend_cooldown_secs,
            repeat_min_messages,
            repeat_min_conversations,
            repeat_critical_messages,
            repeat_cooldown_secs,
            surge_min_negative,
            surge_min_baseline_messages,
            surge_min_baseline_rate,
            surge_rate_factor,
            surge_critical_factor,
            surge_z_threshold,
            surge_cooldown_secs
        );
        cfg.validate().map_err(|source| ThresholdsError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(cfg)
    }
}

/// A setting that makes no sense; reported at startup.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid escalation setting {flag}: {reason}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl EscalationConfig {
    /// Checks the settings against each other; call once at startup.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |flag: &'static str, reason: String| Err(ConfigError { flag, reason });
        let unit = |flag: &'static str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                fail(flag, format!("{v} is outside [0, 1]"))
            }
        };
        if let Some(url) = &self.redis_url
            && let Err(e) = redis::Client::open(url.as_str())
        {
            return fail("--redis-url", format!("{} ({e})", url.redacted()));
        }
        if self.redis_timeout_ms == 0 {
            return fail("--redis-timeout-ms", "must be positive".into());
        }
        if self.redis_probe_interval_ms == 0 {
            return fail("--redis-probe-interval-ms", "must be positive".into());
        }
        if self.redis_key_prefix.is_empty() {
            return fail("--redis-key-prefix", "must not be empty".into());
        }
        unit(
            "--escalation-negativity-threshold",
            self.negativity_threshold,
        )?;
        unit(
            "--escalation-trend-ewma-threshold",
            self.trend_ewma_threshold,
        )?;
        unit("--escalation-trend-ewma-critical", self.trend_ewma_critical)?;
        unit("--escalation-trend-rise-delta", self.trend_rise_delta)?;
        unit("--escalation-anger-confidence", self.anger_confidence)?;
        if !(self.trend_ewma_alpha > 0.0 && self.trend_ewma_alpha <= 1.0) {
            return fail(
                "--escalation-trend-ewma-alpha",
                format!("{} is outside (0, 1]", self.trend_ewma_alpha),
            );
        }
        if self.trend_ewma_critical < self.trend_ewma_threshold {
            return fail(
                "--escalation-trend-ewma-critical",
                "must not be below --escalation-trend-ewma-threshold".into(),
            );
        }
        if self.trend_max_turns < 2 {
            return fail("--escalation-trend-max-turns", "must be at least 2".into());
        }
        if self.trend_rise_turns == 0 || self.trend_rise_turns >= self.trend_max_turns {
            return fail(
                "--escalation-trend-rise-turns",
                "must be at least 1 and below --escalation-trend-max-turns".into(),
            );
        }
        if self.repeat_min_messages == 0 || self.repeat_min_conversations == 0 {
            return fail(
                "--escalation-repeat-min-messages",
                "repeat thresholds must be positive".into(),
            );
        }
        if self.repeat_critical_messages < self.repeat_min_messages {
            return fail(
                "--escalation-repeat-critical-messages",
                "must not be below --escalation-repeat-min-messages".into(),
            );
        }
        if self.surge_scope.is_empty() {
            return fail("--escalation-surge-scope", "needs at least one key".into());
        }
        let bucket = self.surge_bucket_secs;
        if bucket == 0 {
            return fail("--escalation-surge-bucket-secs", "must be positive".into());
        }
        for (flag, secs) in [
            ("--escalation-surge-window-secs", self.surge_window_secs),
            ("--escalation-surge-baseline-secs", self.surge_baseline_secs),
        ] {
            if secs == 0 || secs % bucket != 0 {
                return fail(
                    flag,
                    format!("{secs} must be a positive multiple of the bucket width {bucket}"),
                );
            }
        }
        if !(0.0..1.0).contains(&self.surge_min_baseline_rate) {
            return fail(
                "--escalation-surge-min-baseline-rate",
                "must be in [0, 1)".into(),
            );
        }
        if self.surge_critical_factor < self.surge_rate_factor {
            return fail(
                "--escalation-surge-critical-factor",
                "must not be below --escalation-surge-rate-factor".into(),
            );
        }
        for (flag, secs) in [
            ("--escalation-trend-ttl-secs", self.trend_ttl_secs),
            ("--escalation-trend-cooldown-secs", self.trend_cooldown_secs),
            ("--escalation-repeat-window-secs", self.repeat_window_secs),
            (
                "--escalation-repeat-cooldown-secs",
                self.repeat_cooldown_secs,
            ),
            ("--escalation-surge-cooldown-secs", self.surge_cooldown_secs),
        ] {
            if secs == 0 {
                return fail(flag, "must be positive".into());
            }
        }
        if self.max_trigger_ids == 0 {
            return fail("--escalation-max-trigger-ids", "must be positive".into());
        }
        if self.memory_max_keys == 0 {
            return fail("--escalation-memory-max-keys", "must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub(crate) fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.redis_probe_interval_ms)
    }

    pub(crate) fn bucket_ms(&self) -> i64 {
        secs_to_ms(self.surge_bucket_secs)
    }

    /// Buckets in the recent window.
    pub(crate) fn recent_buckets(&self) -> i64 {
        (self.surge_window_secs / self.surge_bucket_secs.max(1)) as i64
    }

    /// Buckets in the baseline window.
    pub(crate) fn baseline_buckets(&self) -> i64 {
        (self.surge_baseline_secs / self.surge_bucket_secs.max(1)) as i64
    }

    /// How long a surge bucket must live: the windows it can be read in, plus late arrivals.
    pub(crate) fn surge_ttl_secs(&self) -> u64 {
        self.surge_window_secs
            + self.surge_baseline_secs
            + self.surge_bucket_secs
            + self.late_tolerance_ms.div_ceil(1_000)
    }
}

pub(crate) fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX)
}

/// One field a surge scope is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeKey {
    Tenant,
    Channel,
    /// A key of the message's `metadata` map (e.g. a queue name).
    Metadata(String),
}

impl ScopeKey {
    pub fn name(&self) -> String {
        match self {
            ScopeKey::Tenant => "tenant".to_owned(),
            ScopeKey::Channel => "channel".to_owned(),
            ScopeKey::Metadata(key) => format!("metadata.{key}"),
        }
    }
}

impl FromStr for ScopeKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "tenant" => Ok(ScopeKey::Tenant),
            "channel" => Ok(ScopeKey::Channel),
            other => match other.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => Ok(ScopeKey::Metadata(key.to_owned())),
                _ => Err(format!(
                    "unknown surge scope key {other:?} (expected tenant, channel or metadata.<key>)"
                )),
            },
        }
    }
}

/// A string that must not appear in logs: `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Redis URL; `Debug` and [`RedisUrl::redacted`] hide a password embedded in it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any `user:password@` reduced to `user:***@`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let Some((userinfo, host)) = rest.rsplit_once('@') else {
            return self.0.clone();
        };
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        }
    }
}

impl From<String> for RedisUrl {
    fn from(s: String) -> Self {
        RedisUrl(s)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        escalation: EscalationConfig,
    }

    #[test]
    fn flag_defaults_match_default_impl() {
        let cli = Cli::try_parse_from(["moodstream"]).expect("defaults parse");
        let parsed = cli.escalation;
        let default = EscalationConfig::default();
        assert_eq!(parsed.trend_max_turns, default.trend_max_turns);
        assert_eq!(parsed.surge_scope, default.surge_scope);
        assert_eq!(parsed.surge_baseline_secs, default.surge_baseline_secs);
        assert_eq!(parsed.late_tolerance_ms, default.late_tolerance_ms);
        default.validate().expect("defaults are valid");
    }

    #[test]
    fn parses_metadata_scope_keys() {
        let cli = Cli::try_parse_from([
            "moodstream",
            "--escalation-surge-scope",
            "tenant,metadata.queue",
        ])
        .expect("parses");
        assert_eq!(
            cli.escalation.surge_scope,
            vec![ScopeKey::Tenant, ScopeKey::Metadata("queue".into())]
        );
        assert!(Cli::try_parse_from(["moodstream", "--escalation-surge-scope", "queue"]).is_err());
    }

    #[test]
    fn debug_output_redacts_redis_credentials() {
        let cfg = EscalationConfig {
            redis_url: Some(RedisUrl::from(
                "redis://app:hunter2@redis:6379/0".to_owned(),
            )),
            redis_password: Some(Secret::from("s3cret".to_owned())),
            ..EscalationConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://app:***@redis:6379/0"), "{shown}");
    }

    #[test]
    fn rejects_windows_that_are_not_whole_buckets() {
        let cfg = EscalationConfig {
            surge_window_secs: 15,
            ..EscalationConfig::default()
        };
        let err = cfg.validate().expect_err("15 s is not a multiple of 10 s");
        assert_eq!(err.flag, "--escalation-surge-window-secs");
    }

    #[test]
    fn a_thresholds_file_overrides_only_what_it_names_and_is_validated() {
        let base = EscalationConfig::default();
        let path = std::path::Path::new("thresholds.yaml");
        let cfg = base
            .with_thresholds("surge_z_threshold: 4.5\ntrend_cooldown_secs: 60\n", path)
            .expect("valid");
        assert_eq!(cfg.surge_z_threshold, 4.5);
        assert_eq!(cfg.trend_cooldown_secs, 60);
        assert_eq!(cfg.negativity_threshold, base.negativity_threshold);
        let unknown = base.with_thresholds("surge_window_secs: 60\n", path);
        assert!(
            matches!(unknown, Err(ThresholdsError::Parse { .. })),
            "window sizes are not reloadable: {unknown:?}"
        );
        let invalid = base.with_thresholds("negativity_threshold: 1.5\n", path);
        assert!(
            matches!(invalid, Err(ThresholdsError::Invalid { .. })),
            "{invalid:?}"
        );
    }
}
