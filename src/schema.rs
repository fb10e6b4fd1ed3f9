//! schema: Avro schemas and their ids. Ids come from a Confluent Schema Registry (looked up
//! once, cached) or, without one, from `schemas/registry.json`. Also the Avro encoding of
//! outputs, shared by the sink and the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use serde::Serialize;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid schema {name}: {reason}")]
    Parse { name: String, reason: String },
    #[error("unknown schema id {0}")]
    UnknownId(u32),
    #[error("schema registry request failed: {0}")]
    Registry(String),
    #[error("no schema registered locally for {0}")]
    NotRegistered(String),
    #[error(
        "subject {0} has no such schema registered, and auto-register is off \
         (register it, or set --schema-registry-auto-register true)"
    )]
    SubjectNotRegistered(String),
    #[error("cannot use the Schema Registry CA file {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("cannot encode as Avro: {0}")]
    Encode(String),
}

impl SchemaError {
    /// A failure of the registry itself (unreachable, 5xx, timeout): retrying may succeed,
    /// so a record that met it is never dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, SchemaError::Registry(_))
    }
}

/// The Avro schemas of moodstream's own contracts, compiled in (the files in `schemas/` are
/// the published copies).
pub mod contracts {
    pub const CUSTOMER_MESSAGE: &str = include_str!("../schemas/customer_message.avsc");
    pub const EMOTION_RESULT: &str = include_str!("../schemas/emotion_result.avsc");
    pub const DRAFT_REPLY: &str = include_str!("../schemas/draft_reply.avsc");
    pub const ESCALATION_EVENT: &str = include_str!("../schemas/escalation_event.avsc");
    pub const FEEDBACK_EVENT: &str = include_str!("../schemas/feedback_event.avsc");
}

/// Parses one of the compiled-in [`contracts`].
pub fn contract(text: &str) -> Schema {
    Schema::parse_str(text).expect("compiled-in schema is valid: covered by tests")
}

/// Reads and parses `dir/name`.
pub fn load_schema(dir: &Path, name: &str) -> Result<Schema, SchemaError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Schema::parse_str(&text).map_err(|e| SchemaError::Parse {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Encodes `value` as an Avro datum of `schema`, in the Confluent wire format with `id`.
pub fn encode_avro<T: Serialize>(
    schema: &Schema,
    id: u32,
    value: &T,
) -> Result<Vec<u8>, SchemaError> {
    let value = apache_avro::to_value(value)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .map_err(|e| SchemaError::Encode(e.to_string()))?;
    Ok(crate::decode::wire_format(id, &datum))
}

/// Where schema ids resolve.
pub enum SchemaRegistry {
    /// `schemas/registry.json`: id → file name.
    Local {
        by_id: HashMap<u32, Arc<Schema>>,
        by_file: HashMap<String, u32>,
    },
    /// A Confluent-compatible Schema Registry.
    Remote(Box<Remote>),
}

/// How long a 404 for a schema id is remembered, so records with a hostile id cost one
/// request per id per minute, not one each.
const UNKNOWN_ID_TTL: Duration = Duration::from_secs(60);
/// After a failed request, lookups fail at once for this long: while the registry is down,
/// a partition's worth of records costs one request, not one each (each may block).
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

/// Schema Registry credentials (HTTP basic auth).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// How the client of a remote registry connects and registers.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    pub credentials: Option<Credentials>,
    /// PEM CA certificate(s): the only roots trusted for the registry's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// Register output schemas (else only look them up under their subject).
    pub auto_register: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            credentials: None,
            ca_file: None,
            auto_register: true,
        }
    }
}

/// The certificates of the PEM file `path`: the only roots trusted for the registry's TLS.
fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, SchemaError> {
    let err = |reason: String| SchemaError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The client of a remote registry: caches answers (schemas for good, unknown ids briefly).
pub struct Remote {
    /// Without userinfo: errors quote it.
    url: String,
    credentials: Option<Credentials>,
    auto_register: bool,
    /// `--schema-registry-ca`: trusted instead of the system's CA store.
    ca: Option<Vec<reqwest::Certificate>>,
    /// Built on first use: reqwest's blocking client must not be built on an async task,
    /// and lookups already run off the runtime.
    client: OnceLock<reqwest::blocking::Client>,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    by_subject: Mutex<HashMap<String, u32>>,
    unknown: Mutex<HashMap<u32, Instant>>,
    failed_until: Mutex<Option<(Instant, String)>>,
}

impl Remote {
    /// Requests time out after 5 s (2 s to connect); HTTPS is verified against the given CA
    /// certificates, else the system's CA store.
    fn client(&self) -> Result<&reqwest::blocking::Client, SchemaError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        crate::telemetry::install_tls_provider();
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca {
            builder = builder.tls_certs_only(ca.iter().cloned());
        }
        let client = builder.build().map_err(|e| self.failed(e))?;
        Ok(self.client.get_or_init(|| client))
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::blocking::RequestBuilder, SchemaError> {
        let req = self
            .client()?
            .request(method, format!("{}{path}", self.url));
        Ok(match &self.credentials {
            Some(c) => req.basic_auth(&c.username, Some(&c.password)),
            None => req,
        })
    }

    /// Fails at once while a recent request failed (see [`FAILURE_BACKOFF`]).
    fn check_backoff(&self) -> Result<(), SchemaError> {
        let failed = self
            .failed_until
            .lock()
            .expect("registry state poisoned: bug");
        match &*failed {
            Some((until, reason)) if Instant::now() < *until => {
                Err(SchemaError::Registry(reason.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Turns a request failure into a transient error (and starts the backoff).
    fn failed(&self, reason: impl std::fmt::Display) -> SchemaError {
        let reason = redact_userinfo(&reason.to_string());
        *self
            .failed_until
            .lock()
            .expect("registry state poisoned: bug") =
            Some((Instant::now() + FAILURE_BACKOFF, reason.clone()));
        SchemaError::Registry(reason)
    }

    fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, SchemaError> {
        if let Some(s) = self
            .by_id
            .lock()
            .expect("registry cache poisoned: bug")
            .get(&id)
        {
            return Ok(s.clone());
        }
        {
            let mut unknown = self.unknown.lock().expect("registry cache poisoned: bug");
            match unknown.get(&id) {
                Some(at) if at.elapsed() < UNKNOWN_ID_TTL => {
                    return Err(SchemaError::UnknownId(id));
                }
                Some(_) => {
                    unknown.remove(&id);
                }
                None => {}
            }
        }
        self.check_backoff()?;
        #[derive(serde::Deserialize)]
        struct Body {
            schema: String,
        }
        let resp = self
            .request(reqwest::Method::GET, &format!("/schemas/ids/{id}"))?
            .send()
            .map_err(|e| self.failed(e))?;
        let body: Body = match resp.status() {
            reqwest::StatusCode::NOT_FOUND => {
                let mut unknown = self.unknown.lock().expect("registry cache poisoned: bug");
                // Bounded: a flood of distinct hostile ids cannot grow it without limit.
                if unknown.len() >= 10_000 {
                    unknown.retain(|_, at| at.elapsed() < UNKNOWN_ID_TTL);
                }
                if unknown.len() < 10_000 {
                    unknown.insert(id, Instant::now());
                }
                return Err(SchemaError::UnknownId(id));
            }
            _ => resp
                .error_for_status()
                .and_then(|resp| resp.json())
                .map_err(|e| self.failed(e))?,
        };
        let schema = Arc::new(
            Schema::parse_str(&body.schema).map_err(|e| SchemaError::Parse {
                name: format!("registry id {id}"),
                reason: e.to_string(),
            })?,
        );
        self.by_id
            .lock()
            .expect("registry cache poisoned: bug")
            .insert(id, schema.clone());
        Ok(schema)
    }

    fn id_for(&self, topic: &str, schema: &Schema) -> Result<u32, SchemaError> {
        let subject = format!("{topic}-value");
        if let Some(id) = self
            .by_subject
            .lock()
            .expect("registry cache poisoned: bug")
            .get(&subject)
        {
            return Ok(*id);
        }
        self.check_backoff()?;
        #[derive(serde::Deserialize)]
        struct Body {
            id: u32,
        }
        if !self.auto_register {
            let id = self.registered_id(&subject, schema)?;
            self.by_subject
                .lock()
                .expect("registry cache poisoned: bug")
                .insert(subject, id);
            return Ok(id);
        }
        // Registering an already registered schema returns its id.
        let body: Body = self
            .request(
                reqwest::Method::POST,
                &format!("/subjects/{subject}/versions"),
            )?
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/vnd.schemaregistry.v1+json",
            )
            .body(serde_json::json!({ "schema": schema.canonical_form() }).to_string())
            .send()
            .and_then(|resp| resp.error_for_status())
            .and_then(|resp| resp.json())
            .map_err(|e| self.failed(e))?;
        self.by_subject
            .lock()
            .expect("registry cache poisoned: bug")
            .insert(subject, body.id);
        Ok(body.id)
    }
}

impl Remote {
    /// With auto-register off: the id of the newest version under `subject` whose schema has
    /// the same Avro canonical form as `schema`. Compared here, not by the registry's lookup
    /// (`POST /subjects/{subject}`), which some registries (Apicurio) match on the exact text.
    fn registered_id(&self, subject: &str, schema: &Schema) -> Result<u32, SchemaError> {
        #[derive(serde::Deserialize)]
        struct Version {
            id: u32,
            schema: String,
        }
        let resp = self
            .request(
                reqwest::Method::GET,
                &format!("/subjects/{subject}/versions"),
            )?
            .send()
            .map_err(|e| self.failed(e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(SchemaError::SubjectNotRegistered(subject.to_string()));
        }
        let versions: Vec<u32> = resp
            .error_for_status()
            .and_then(|resp| resp.json())
            .map_err(|e| self.failed(e))?;
        let ours = schema.canonical_form();
        for v in versions.iter().rev() {
            let version: Version = self
                .request(
                    reqwest::Method::GET,
                    &format!("/subjects/{subject}/versions/{v}"),
                )?
                .send()
                .and_then(|resp| resp.error_for_status())
                .and_then(|resp| resp.json())
                .map_err(|e| self.failed(e))?;
            // A version that is not Avro (or not valid) is simply not ours.
            if Schema::parse_str(&version.schema).is_ok_and(|s| s.canonical_form() == ours) {
                return Ok(version.id);
            }
        }
        Err(SchemaError::SubjectNotRegistered(subject.to_string()))
    }
}

/// Splits `scheme://user:pass@host/...` into the URL without userinfo and the credentials.
pub fn split_userinfo(url: &str) -> (String, Option<Credentials>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return (url.to_string(), None);
    };
    let userinfo = &url[scheme_end..at];
    let (username, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let stripped = format!("{}{}", &url[..scheme_end], &url[at + 1..]);
    let credentials = Credentials {
        username: username.to_string(),
        password: password.to_string(),
    };
    (stripped, Some(credentials))
}

/// Removes the userinfo of every URL in `text` (error messages quote URLs).
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("<redacted>@");
                rest = &tail[at + 1..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

impl SchemaRegistry {
    /// No schema ids at all (JSON-only use, such as `classify`).
    pub fn none() -> SchemaRegistry {
        SchemaRegistry::Local {
            by_id: HashMap::new(),
            by_file: HashMap::new(),
        }
    }

    pub fn local(dir: &Path) -> Result<SchemaRegistry, SchemaError> {
        let path = dir.join("registry.json");
        let text = std::fs::read_to_string(&path).map_err(|e| SchemaError::Read {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let entries: HashMap<String, String> =
            serde_json::from_str::<HashMap<String, serde_json::Value>>(&text)
                .map_err(|e| SchemaError::Parse {
                    name: "registry.json".into(),
                    reason: e.to_string(),
                })?
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                .collect();
        let mut by_id = HashMap::new();
        let mut by_file = HashMap::new();
        for (id, file) in entries {
            let Ok(id) = id.parse::<u32>() else { continue };
            by_id.insert(id, Arc::new(load_schema(dir, &file)?));
            by_file.insert(file, id);
        }
        Ok(SchemaRegistry::Local { by_id, by_file })
    }

    /// A remote registry at `url`. Credentials come from `credentials`, else from the URL's
    /// userinfo (kept for compatibility); either way the URL is stored, and quoted in errors,
    /// without them. Requests time out after 5 s (2 s to connect).
    pub fn remote(url: &str, credentials: Option<Credentials>) -> SchemaRegistry {
        Self::remote_with(
            url,
            RemoteOptions {
                credentials,
                ..RemoteOptions::default()
            },
        )
        .expect("no CA file to read: infallible")
    }

    /// As [`SchemaRegistry::remote`], with a CA file and the auto-register switch. Fails only
    /// on an unreadable or invalid CA file.
    pub fn remote_with(url: &str, opts: RemoteOptions) -> Result<SchemaRegistry, SchemaError> {
        let (url, from_url) = split_userinfo(url);
        let ca = opts.ca_file.as_deref().map(ca_certificates).transpose()?;
        Ok(SchemaRegistry::Remote(Box::new(Remote {
            url: url.trim_end_matches('/').to_string(),
            credentials: opts.credentials.or(from_url),
            auto_register: opts.auto_register,
            ca,
            client: OnceLock::new(),
            by_id: Mutex::default(),
            by_subject: Mutex::default(),
            unknown: Mutex::default(),
            failed_until: Mutex::default(),
        })))
    }

    /// The writer schema for `id`. Blocking (HTTP on a cache miss): call off the async runtime.
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, SchemaError> {
        match self {
            SchemaRegistry::Local { by_id, .. } => {
                by_id.get(&id).cloned().ok_or(SchemaError::UnknownId(id))
            }
            SchemaRegistry::Remote(remote) => remote.schema_by_id(id),
        }
    }

    /// The id under which outputs of `schema` (file `file`) are written to `topic`: registered as
    /// subject `<topic>-value` with a remote registry. Blocking on a cache miss.
    pub fn id_for(&self, topic: &str, file: &str, schema: &Schema) -> Result<u32, SchemaError> {
        match self {
            SchemaRegistry::Local { by_file, .. } => by_file
                .get(file)
                .copied()
                .ok_or_else(|| SchemaError::NotRegistered(file.into())),
            SchemaRegistry::Remote(remote) => remote.id_for(topic, schema),
        }
    }
}

pub mod fake_registry;

#[cfg(test)]
mod tests {
    use super::fake_registry::FakeRegistry;
    use super::*;

    #[test]
    fn registry_outage_is_transient_and_fails_fast_within_the_backoff() {
        let fake = FakeRegistry::start(&[(7, contracts::CUSTOMER_MESSAGE)]);
        fake.set_down(true);
        let reg = SchemaRegistry::remote(&fake.url, None);
        let err = reg.schema_by_id(7).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(reg.schema_by_id(7).unwrap_err().is_transient());
        assert_eq!(fake.requests().len(), 1, "the second lookup did not ask");
        fake.set_down(false);
        std::thread::sleep(FAILURE_BACKOFF);
        assert_eq!(
            *reg.schema_by_id(7).unwrap(),
            contract(contracts::CUSTOMER_MESSAGE)
        );
        reg.schema_by_id(7).unwrap();
        assert_eq!(fake.requests().len(), 2, "cached");
    }

    #[test]
    fn unknown_schema_ids_are_remembered() {
        let fake = FakeRegistry::start(&[]);
        let reg = SchemaRegistry::remote(&fake.url, None);
        for _ in 0..50 {
            let err = reg.schema_by_id(666).unwrap_err();
            assert!(matches!(err, SchemaError::UnknownId(666)), "{err}");
            assert!(!err.is_transient());
        }
        assert_eq!(fake.requests(), vec!["GET /schemas/ids/666".to_string()]);
    }

    #[test]
    fn credentials_go_in_a_header_never_in_errors() {
        let fake = FakeRegistry::start(&[(1, contracts::CUSTOMER_MESSAGE)]);
        let with_userinfo = fake.url.replace("http://", "http://alice:s3cret-pw@");
        let reg = SchemaRegistry::remote(&with_userinfo, None);
        reg.schema_by_id(1).expect("found");
        let explicit = SchemaRegistry::remote(
            &fake.url,
            Some(Credentials {
                username: "alice".into(),
                password: "s3cret-pw".into(),
            }),
        );
        explicit.schema_by_id(1).expect("found");
        // base64("alice:s3cret-pw")
        let basic = "Basic YWxpY2U6czNjcmV0LXB3".to_string();
        assert_eq!(
            fake.authorizations(),
            vec![Some(basic.clone()), Some(basic)]
        );

        // An unreachable registry: the error names the URL without the userinfo.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead =
            SchemaRegistry::remote(&format!("http://alice:s3cret-pw@127.0.0.1:{port}"), None);
        let err = dead.schema_by_id(1).unwrap_err().to_string();
        assert!(!err.contains("s3cret") && !err.contains("alice"), "{err}");
        assert_eq!(
            redact_userinfo("GET https://u:p@h:1/x failed; see http://h/y"),
            "GET https://<redacted>@h:1/x failed; see http://h/y"
        );
    }

    #[test]
    fn compiled_in_contracts_parse_and_match_the_published_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        for (text, file) in [
            (contracts::CUSTOMER_MESSAGE, "customer_message.avsc"),
            (contracts::EMOTION_RESULT, "emotion_result.avsc"),
            (contracts::DRAFT_REPLY, "draft_reply.avsc"),
            (contracts::ESCALATION_EVENT, "escalation_event.avsc"),
            (contracts::FEEDBACK_EVENT, "feedback_event.avsc"),
        ] {
            assert_eq!(
                contract(text),
                load_schema(&dir, file).expect("file parses")
            );
        }
    }

    #[test]
    fn local_registry_maps_ids_to_files_both_ways() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let reg = SchemaRegistry::local(&dir).expect("registry.json");
        let schema = contract(contracts::EMOTION_RESULT);
        assert_eq!(
            reg.id_for("emotions", "emotion_result.avsc", &schema)
                .unwrap(),
            2
        );
        assert_eq!(*reg.schema_by_id(2).unwrap(), schema);
        assert!(matches!(
            reg.schema_by_id(77),
            Err(SchemaError::UnknownId(77))
        ));
    }
}
