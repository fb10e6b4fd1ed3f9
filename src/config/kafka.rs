//! Kafka client settings: the brokers, librdkafka properties passed through per client
//! (`consumer.*`, `producer.*`), a properties file, and secrets from the environment or files.
//! Every client the worker creates is built here, in one order: the worker's overridable
//! defaults, then the user's properties, then the few settings the worker forces because its
//! delivery guarantees depend on them (a user value for one of those is ignored with a warning).
//! Secret values never reach a log line, an error message or `Debug` output.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;

/// Secret flags hide their value from `Debug` (shared with the Redis password and the webhook).
pub use crate::escalation::Secret;

/// Which client a set of properties is for: `consumer.`- and `producer.`-prefixed properties
/// apply to that client only (prefix removed), unprefixed ones to every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
}

impl Client {
    fn prefix(self) -> &'static str {
        match self {
            Client::Consumer => "consumer.",
            Client::Producer => "producer.",
        }
    }
}

/// Kafka connection options shared by `run` and `demo-produce`.
#[derive(Args, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    #[arg(long, env = "MOODSTREAM_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// librdkafka properties, comma-separated `key=value` (values cannot contain commas: use
    /// --kafka-property or --kafka-properties-file for those). `consumer.`/`producer.` prefixes
    /// limit a property to one client. No secrets here (see --kafka-secret-file).
    #[arg(long, env = "MOODSTREAM_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_property)]
    pub kafka_options: Vec<(String, String)>,
    /// One librdkafka property `key=value` (the value may contain commas); repeat the flag.
    /// The environment variable holds one property per line. Applied after --kafka-options.
    #[arg(long = "kafka-property", env = "MOODSTREAM_KAFKA_PROPERTIES", value_delimiter = '\n', value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// A file of librdkafka properties, one `key=value` per line (`#` comments), applied
    /// before the flags. It may hold secrets (mount it from a Secret): their values are redacted.
    #[arg(long, env = "MOODSTREAM_KAFKA_PROPERTIES_FILE")]
    pub kafka_properties_file: Option<PathBuf>,
    /// SASL password (`sasl.password`; kept out of logs and --help output).
    #[arg(long, env = "MOODSTREAM_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// Password of the encrypted client key (`ssl.key.password`).
    #[arg(
        long,
        env = "MOODSTREAM_KAFKA_SSL_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub kafka_ssl_key_password: Option<Secret>,
    /// OAUTHBEARER/OIDC client secret (`sasl.oauthbearer.client.secret`).
    #[arg(
        long,
        env = "MOODSTREAM_KAFKA_OAUTHBEARER_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub kafka_oauthbearer_client_secret: Option<Secret>,
    /// A secret librdkafka property read from a file, `key=path` (e.g.
    /// `sasl.password=/run/secrets/kafka-password`; one trailing newline is dropped); repeat
    /// the flag, or comma-separate in the environment variable.
    #[arg(long, env = "MOODSTREAM_KAFKA_SECRET_FILES", value_delimiter = ',', value_parser = parse_secret_file)]
    pub kafka_secret_file: Vec<(String, PathBuf)>,
}

/// Why the Kafka settings cannot be used. Never carries a secret value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KafkaConfigError {
    #[error("kafka properties file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("kafka properties file {path}:{line}: expected key=value")]
    Line { path: PathBuf, line: usize },
    #[error(
        "`{key}` is a secret: pass it with --kafka-secret-file {key}=PATH, a --kafka-*-password \
         flag or the properties file, not in {flag}"
    )]
    SecretInOptions { key: String, flag: &'static str },
    #[error("kafka secret file for `{key}` ({path}): {reason}")]
    SecretFile {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

/// True for librdkafka properties whose value is a secret (redacted wherever shown).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with("ssl.key.pem")
        || key.ends_with("sasl.oauthbearer.config")
}

impl KafkaConfig {
    /// Checks what can be checked without a broker: every source reads and no secret sits in
    /// the command-line/environment options (they show in `ps` and in ConfigMaps).
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        for (flag, props) in [
            ("--kafka-options", &self.kafka_options),
            ("--kafka-property", &self.kafka_properties),
        ] {
            if let Some((key, _)) = props.iter().find(|(k, _)| is_secret_key(k)) {
                return Err(KafkaConfigError::SecretInOptions {
                    key: key.clone(),
                    flag,
                });
            }
        }
        self.user_properties().map(drop)
    }

    /// The user's properties in the order they apply: the file, --kafka-options,
    /// --kafka-property, then the secrets (named flags, then secret files).
    fn user_properties(&self) -> Result<Vec<(String, String)>, KafkaConfigError> {
        let mut out = match &self.kafka_properties_file {
            Some(path) => read_properties(path)?,
            None => Vec::new(),
        };
        out.extend(self.kafka_options.iter().cloned());
        out.extend(self.kafka_properties.iter().cloned());
        for (key, secret) in [
            ("sasl.password", &self.kafka_sasl_password),
            ("ssl.key.password", &self.kafka_ssl_key_password),
            (
                "sasl.oauthbearer.client.secret",
                &self.kafka_oauthbearer_client_secret,
            ),
        ] {
            if let Some(secret) = secret {
                out.push((key.to_string(), secret.expose().to_string()));
            }
        }
        for (key, path) in &self.kafka_secret_file {
            let value =
                std::fs::read_to_string(path).map_err(|e| KafkaConfigError::SecretFile {
                    key: key.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            out.push((key.clone(), value.to_string()));
        }
        Ok(out)
    }

    /// The properties of one client, in apply order: `bootstrap.servers`, `defaults` (the
    /// worker's, overridable), the user's unprefixed then this client's prefixed properties,
    /// then `forced` (a user value for a forced key is dropped with a warning).
    pub fn properties(
        &self,
        client: Client,
        defaults: &[(&str, String)],
        forced: &[(&str, String)],
    ) -> Result<Vec<(String, String)>, KafkaConfigError> {
        let user = self.user_properties()?;
        let other = match client {
            Client::Consumer => Client::Producer.prefix(),
            Client::Producer => Client::Consumer.prefix(),
        };
        let general = user
            .iter()
            .filter(|(k, _)| !k.starts_with(client.prefix()) && !k.starts_with(other))
            .cloned();
        let specific = user.iter().filter_map(|(k, v)| {
            k.strip_prefix(client.prefix())
                .map(|k| (k.to_string(), v.clone()))
        });
        let mut out = vec![("bootstrap.servers".to_string(), self.brokers.clone())];
        out.extend(defaults.iter().map(|(k, v)| (k.to_string(), v.clone())));
        for (key, value) in general.chain(specific) {
            if forced.iter().any(|(f, _)| *f == key) {
                tracing::warn!(
                    property = %key,
                    client = ?client,
                    "kafka property is set by the worker; the configured value is ignored"
                );
                continue;
            }
            out.push((key, value));
        }
        out.extend(forced.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Ok(out)
    }

    /// A librdkafka client config built from [`KafkaConfig::properties`]; logs the resulting
    /// settings at debug level with secret values redacted.
    pub fn client_config(
        &self,
        client: Client,
        defaults: &[(&str, String)],
        forced: &[(&str, String)],
    ) -> Result<rdkafka::ClientConfig, KafkaConfigError> {
        let props = self.properties(client, defaults, forced)?;
        tracing::debug!(client = ?client, properties = %redacted(&props), "kafka client config");
        let mut cfg = rdkafka::ClientConfig::new();
        for (k, v) in &props {
            cfg.set(k, v);
        }
        Ok(cfg)
    }
}

/// `key=value, ...` with secret values shown as `<redacted>` (for logs and config dumps).
pub fn redacted(props: &[(String, String)]) -> String {
    props
        .iter()
        .map(|(k, v)| {
            if is_secret_key(k) {
                format!("{k}=<redacted>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The options are validated secret-free, but Debug may run before validation.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("kafka_options", &redacted(&self.kafka_options))
            .field("kafka_properties", &redacted(&self.kafka_properties))
            .field("kafka_properties_file", &self.kafka_properties_file)
            .field("kafka_sasl_password", &self.kafka_sasl_password)
            .field("kafka_ssl_key_password", &self.kafka_ssl_key_password)
            .field(
                "kafka_oauthbearer_client_secret",
                &self.kafka_oauthbearer_client_secret,
            )
            .field("kafka_secret_file", &self.kafka_secret_file)
            .finish()
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected key=value, got a value without `=`".to_string())?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn parse_secret_file(s: &str) -> Result<(String, PathBuf), String> {
    let (k, v) = parse_property(s)?;
    Ok((k, PathBuf::from(v)))
}

/// Reads a Java-style properties file: `key=value` lines, `#`/`!` comments, blank lines.
/// Values are taken verbatim after the first `=` (commas and `=` included), trimmed.
fn read_properties(path: &Path) -> Result<Vec<(String, String)>, KafkaConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| KafkaConfigError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or(KafkaConfigError::Line {
            path: path.to_path_buf(),
            line: n + 1,
        })?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// librdkafka's version and `builtin.features` (compression codecs, SASL mechanisms, OIDC),
/// as the linked library reports them.
pub fn librdkafka_features() -> (String, Vec<String>) {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = rdkafka::ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_default();
    (
        version,
        features.split(',').map(|f| f.trim().to_string()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaConfig,
    }

    fn kafka(args: &[&str]) -> KafkaConfig {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").kafka
    }

    fn get<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
        // The last setting of a key wins, as in librdkafka's config.
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn per_client_prefixes_apply_to_their_client_only_and_win_over_unprefixed() {
        let cfg = kafka(&[
            "--kafka-options",
            "consumer.fetch.min.bytes=10,linger.ms=7,producer.linger.ms=20",
            "--kafka-property",
            "client.id=a",
        ]);
        let consumer = cfg.properties(Client::Consumer, &[], &[]).unwrap();
        let producer = cfg.properties(Client::Producer, &[], &[]).unwrap();
        assert_eq!(get(&consumer, "fetch.min.bytes"), Some("10"));
        assert_eq!(get(&producer, "fetch.min.bytes"), None);
        assert_eq!(get(&consumer, "linger.ms"), Some("7"));
        assert_eq!(get(&producer, "linger.ms"), Some("20"));
        assert_eq!(get(&producer, "client.id"), Some("a"));
        assert!(consumer.iter().all(|(k, _)| !k.starts_with("producer.")));
    }

    #[test]
    fn property_values_may_contain_commas_from_the_flag_the_env_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(
            &file,
            "# comment\n\nsasl.oauthbearer.scope=kafka read,write\n\
             consumer.group.remote.assignor=uniform\nsasl.password=from-file\n",
        )
        .unwrap();
        let cfg = kafka(&[
            "--kafka-properties-file",
            file.to_str().unwrap(),
            "--kafka-property",
            "ssl.cipher.suites=ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384",
        ]);
        cfg.validate().expect("secrets may come from the file");
        let props = cfg.properties(Client::Consumer, &[], &[]).unwrap();
        assert_eq!(
            get(&props, "ssl.cipher.suites"),
            Some("ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384")
        );
        assert_eq!(
            get(&props, "sasl.oauthbearer.scope"),
            Some("kafka read,write")
        );
        assert_eq!(get(&props, "group.remote.assignor"), Some("uniform"));
        assert_eq!(get(&props, "sasl.password"), Some("from-file"));
        // The environment variable: one property per line.
        let multi = "ssl.cipher.suites=A,B\nclient.id=x";
        let parsed: Vec<_> = multi.split('\n').map(parse_property).collect();
        assert_eq!(
            parsed,
            vec![
                Ok(("ssl.cipher.suites".into(), "A,B".into())),
                Ok(("client.id".into(), "x".into()))
            ]
        );
    }

    #[test]
    fn defaults_yield_to_the_user_and_forced_settings_do_not() {
        let cfg = kafka(&[
            "--kafka-options",
            "auto.offset.reset=latest,consumer.enable.auto.offset.store=true",
        ]);
        let props = cfg
            .properties(
                Client::Consumer,
                &[("auto.offset.reset", "earliest".into())],
                &[("enable.auto.offset.store", "false".into())],
            )
            .unwrap();
        assert_eq!(get(&props, "auto.offset.reset"), Some("latest"));
        assert_eq!(get(&props, "enable.auto.offset.store"), Some("false"));
        assert_eq!(
            props
                .iter()
                .filter(|(k, _)| k == "enable.auto.offset.store")
                .count(),
            1,
            "the user's value for a forced key is dropped, not shadowed"
        );
    }

    #[test]
    fn secrets_come_from_flags_and_files_and_are_refused_in_plain_options() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "p,a=ss\n").unwrap();
        let cfg = kafka(&[
            "--kafka-secret-file",
            &format!("sasl.password={}", pw.display()),
            "--kafka-ssl-key-password",
            "keypw",
            "--kafka-oauthbearer-client-secret",
            "oidc",
        ]);
        cfg.validate().expect("valid");
        let props = cfg.properties(Client::Producer, &[], &[]).unwrap();
        assert_eq!(get(&props, "sasl.password"), Some("p,a=ss"));
        assert_eq!(get(&props, "ssl.key.password"), Some("keypw"));
        assert_eq!(get(&props, "sasl.oauthbearer.client.secret"), Some("oidc"));

        let refused = kafka(&["--kafka-options", "sasl.username=u,sasl.password=oops"]);
        let err = refused.validate().unwrap_err();
        assert_eq!(
            err,
            KafkaConfigError::SecretInOptions {
                key: "sasl.password".into(),
                flag: "--kafka-options"
            }
        );
        assert!(!err.to_string().contains("oops"));

        let missing = kafka(&["--kafka-secret-file", "sasl.password=/nonexistent/pw"]);
        assert!(matches!(
            missing.validate(),
            Err(KafkaConfigError::SecretFile { .. })
        ));
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_config_dumps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "ssl.keystore.password=file-secret\n").unwrap();
        let cfg = kafka(&[
            "--kafka-sasl-password",
            "flag-secret",
            "--kafka-properties-file",
            file.to_str().unwrap(),
            "--kafka-options",
            "sasl.oauthbearer.client.secret=opt-secret",
        ]);
        let debug = format!("{cfg:?}");
        let dump = redacted(&cfg.properties(Client::Consumer, &[], &[]).unwrap());
        for shown in [&debug, &dump] {
            for secret in ["flag-secret", "file-secret", "opt-secret"] {
                assert!(!shown.contains(secret), "{secret} leaked: {shown}");
            }
        }
        assert!(dump.contains("sasl.password=<redacted>"), "{dump}");
    }

    #[test]
    fn properties_file_errors_name_the_line_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p");
        std::fs::write(&file, "a=b\nsecret-without-equals\n").unwrap();
        let cfg = kafka(&["--kafka-properties-file", file.to_str().unwrap()]);
        let err = cfg.validate().unwrap_err();
        assert_eq!(
            err,
            KafkaConfigError::Line {
                path: file.clone(),
                line: 2
            }
        );
        assert!(!err.to_string().contains("secret-without-equals"));
    }

    #[test]
    fn librdkafka_is_built_with_zstd_scram_oauthbearer_oidc_and_gssapi() {
        let (version, features) = librdkafka_features();
        assert!(!version.is_empty());
        for want in [
            "zstd",
            "lz4",
            "ssl",
            "sasl_scram",
            "sasl_oauthbearer",
            "http",
            "oidc",
            "sasl_gssapi",
        ] {
            assert!(
                features.iter().any(|f| f == want),
                "librdkafka {version} lacks `{want}`: {features:?}"
            );
        }
    }
}
