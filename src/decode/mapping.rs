//! mapping: a declarative, per-topic mapping from someone else's record (JSON, or Avro read
//! as a JSON-like value) to our [`CustomerMessage`], configured by `--input-mapping` (YAML).
//!
//! A mapping names where each contract field is (JSON Pointer, RFC 6901), how values are
//! translated (value maps, constants, defaults, time formats, HTML to text) and which records
//! are skipped on purpose (agent replies, internal notes, system events, deletes). A skipped
//! record is no error: it produces nothing and its offset is committed. A record the mapping
//! cannot read is dead-lettered with the path of the field it could not read; paths come from
//! the configuration, so a reason never carries the record's content.
//!
//! Presets (`preset: debezium | zendesk | salesforce | intercom`) are mappings shipped in
//! `src/decode/presets/`; a topic's own `fields`, `metadata` and `skip` go on top of them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::CustomerMessage;

/// The `--input-mapping` file: one mapping per input topic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    pub topics: BTreeMap<String, MappingSpec>,
}

/// One topic's mapping as written (a preset and/or explicit entries).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// A shipped mapping to start from.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Contract field → where it comes from.
    #[serde(default)]
    pub fields: BTreeMap<Field, FieldSpec>,
    /// Metadata key → where it comes from (a missing value leaves the key out).
    #[serde(default)]
    pub metadata: BTreeMap<String, FieldSpec>,
    /// Records matching any rule are skipped (not classified, offset committed).
    #[serde(default)]
    pub skip: Vec<SkipRule>,
    /// A record without a value (a Kafka tombstone, as Debezium sends after a delete) is
    /// skipped as a delete instead of dead-lettered.
    #[serde(default)]
    pub skip_tombstones: Option<bool>,
}

/// Shipped mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Debezium change events of a messages table (`before`/`after`/`op`), with or without the
    /// Kafka Connect JsonConverter `schema`/`payload` envelope.
    Debezium,
    /// Zendesk ticket events (`zen:event-type:ticket.comment_added`).
    Zendesk,
    /// Salesforce Change Data Capture events of `Case` and `EmailMessage`.
    Salesforce,
    /// Intercom conversation webhooks (`notification_event` with one conversation part).
    Intercom,
}

impl Preset {
    fn source(self) -> (&'static str, &'static str) {
        match self {
            Preset::Debezium => ("debezium", include_str!("presets/debezium.yaml")),
            Preset::Zendesk => ("zendesk", include_str!("presets/zendesk.yaml")),
            Preset::Salesforce => ("salesforce", include_str!("presets/salesforce.yaml")),
            Preset::Intercom => ("intercom", include_str!("presets/intercom.yaml")),
        }
    }

    fn spec(self) -> MappingSpec {
        let (name, text) = self.source();
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("preset {name} does not parse: {e}"))
    }
}

/// The fields of the contract a mapping fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    MessageId,
    ConversationId,
    CustomerId,
    TenantId,
    Channel,
    Text,
    Subject,
    Language,
    SentAt,
    CustomerName,
}

impl Field {
    const REQUIRED: [Field; 6] = [
        Field::MessageId,
        Field::ConversationId,
        Field::CustomerId,
        Field::Channel,
        Field::Text,
        Field::SentAt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::MessageId => "message_id",
            Field::ConversationId => "conversation_id",
            Field::CustomerId => "customer_id",
            Field::TenantId => "tenant_id",
            Field::Channel => "channel",
            Field::Text => "text",
            Field::Subject => "subject",
            Field::Language => "language",
            Field::SentAt => "sent_at",
            Field::CustomerName => "customer_name",
        }
    }
}

/// Where one value comes from: a JSON Pointer (shorthand), or the full form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpecFull {
    /// JSON Pointer, or a list of them: the first present, non-null one is used.
    #[serde(default, deserialize_with = "one_or_many")]
    pub path: Vec<String>,
    /// A constant instead of a path.
    #[serde(default, rename = "const")]
    pub constant: Option<String>,
    /// Value map: their value → ours.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// With `map`: the value for anything not in the map (else the value passes unchanged).
    #[serde(default)]
    pub unmapped: Option<String>,
    /// The value when the path is missing or null.
    #[serde(default)]
    pub default: Option<String>,
    /// `sent_at` only: how the time is written.
    #[serde(default)]
    pub time: Option<TimeFormat>,
    /// `sent_at` with `time: local`: the IANA time zone of a time written without one.
    #[serde(default)]
    pub zone: Option<String>,
    /// Reduce HTML to its text (tags dropped, entities decoded, whitespace collapsed).
    #[serde(default)]
    pub strip_html: bool,
}

/// A field's source: `text: /body`, `text: [/plain, /html]` or
/// `text: {path: /body, strip_html: true}`.
#[derive(Debug, Clone, Default)]
pub struct FieldSpec(pub FieldSpecFull);

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FieldSpec, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON Pointer, a list of them, or a map with `path` or `const`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<FieldSpec, A::Error> {
                let path = Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(FieldSpec(FieldSpecFull {
                    path,
                    ..FieldSpecFull::default()
                }))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec(FieldSpecFull {
                    path: vec![s.to_string()],
                    ..FieldSpecFull::default()
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                FieldSpecFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(FieldSpec)
            }
        }
        d.deserialize_any(V)
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON Pointer or a list of them")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<String>, A::Error> {
            Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(V)
}

/// How `sent_at` is written in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// A number is epoch milliseconds, a string RFC 3339 (the default).
    Auto,
    EpochS,
    EpochMs,
    EpochUs,
    /// RFC 3339 / ISO 8601 with a UTC offset or `Z`.
    Rfc3339,
    /// ISO 8601 without a zone (`2024-05-01T10:00:00`, `2024-05-01 10:00:00.123`), read in
    /// `zone`; a string that does carry an offset is read by it.
    Local,
}

impl TimeFormat {
    fn as_str(self) -> &'static str {
        match self {
            TimeFormat::Auto => "auto",
            TimeFormat::EpochS => "epoch_s",
            TimeFormat::EpochMs => "epoch_ms",
            TimeFormat::EpochUs => "epoch_us",
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::Local => "local",
        }
    }
}

/// Skip a record when the value at `path` (null when missing) matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipRule {
    pub path: String,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default, rename = "in")]
    pub any_of: Option<Vec<Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<Value>>,
    /// The `reason` label of `moodstream_skipped_total`.
    #[serde(default = "SkipReason::default")]
    pub reason: SkipReason,
}

/// Why a record was skipped: the fixed label set of `moodstream_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A delete (Debezium `op: d`, a tombstone, a Salesforce `DELETE`).
    Delete,
    /// A change to an existing row (Debezium `op: u`, Salesforce `UPDATE`): already classified.
    Update,
    /// Written by an agent, admin or bot.
    Agent,
    /// An internal note.
    Internal,
    /// A system event (status change, assignment, other event types).
    System,
    /// Any other rule.
    Filtered,
}

impl SkipReason {
    pub const ALL: [SkipReason; 6] = [
        SkipReason::Delete,
        SkipReason::Update,
        SkipReason::Agent,
        SkipReason::Internal,
        SkipReason::System,
        SkipReason::Filtered,
    ];

    fn default() -> SkipReason {
        SkipReason::Filtered
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Delete => "delete",
            SkipReason::Update => "update",
            SkipReason::Agent => "agent",
            SkipReason::Internal => "internal",
            SkipReason::System => "system",
            SkipReason::Filtered => "filtered",
        }
    }
}

/// Why a record cannot be mapped. Paths are the configured ones (prefixed with `/payload`
/// inside a Kafka Connect envelope); values are never quoted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error("missing field {path} (for {field})")]
    Missing { path: String, field: String },
    #[error("field {path} (for {field}) is {found}, expected a string or number")]
    NotScalar {
        path: String,
        field: String,
        found: &'static str,
    },
    #[error("field {path} (for {field}) is not a time in format {format}")]
    BadTime {
        path: String,
        field: String,
        format: &'static str,
    },
}

/// A mapping configuration mistake, with where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SpecError {
    pub at: String,
    pub message: String,
}

/// What a mapping made of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Message(Box<CustomerMessage>),
    Skipped(SkipReason),
}

/// A validated, ready mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    fields: Vec<(Field, Rule)>,
    metadata: Vec<(String, Rule)>,
    skip: Vec<SkipRule>,
    skip_tombstones: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    source: Source,
    map: BTreeMap<String, String>,
    unmapped: Option<String>,
    default: Option<String>,
    time: Time,
    strip_html: bool,
}

#[derive(Debug, Clone)]
enum Source {
    Paths(Vec<String>),
    Const(String),
}

#[derive(Debug, Clone)]
enum Time {
    Format(TimeFormat),
    Local(jiff::tz::TimeZone),
}

/// Reads and validates `--input-mapping`: every topic it names must be an input topic.
pub fn load(path: &Path, input_topics: &[String]) -> Result<BTreeMap<String, Mapping>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        at: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&text, input_topics)
}

/// As [`load`], from the file's text.
pub fn parse(text: &str, input_topics: &[String]) -> Result<BTreeMap<String, Mapping>, SpecError> {
    let file: MappingFile = serde_norway::from_str(text).map_err(|e| SpecError {
        // serde_norway names the path (`topics.t.fields.text`) and the line.
        at: "input mapping".into(),
        message: e.to_string(),
    })?;
    let mut out = BTreeMap::new();
    for (topic, spec) in file.topics {
        if !input_topics.contains(&topic) {
            return Err(SpecError {
                at: format!("topics.{topic}"),
                message: format!(
                    "`{topic}` is not an input topic (--topics: {})",
                    input_topics.join(",")
                ),
            });
        }
        let mapping = Mapping::new(spec, &format!("topics.{topic}"))?;
        out.insert(topic, mapping);
    }
    Ok(out)
}

impl Mapping {
    /// A preset as it ships (tests, examples).
    pub fn preset(preset: Preset) -> Mapping {
        Mapping::new(
            MappingSpec {
                preset: Some(preset),
                ..MappingSpec::default()
            },
            "preset",
        )
        .expect("shipped presets are valid: bug")
    }

    /// Merges the preset under `spec` and validates the result; errors name `at` and the key.
    pub fn new(spec: MappingSpec, at: &str) -> Result<Mapping, SpecError> {
        let mut merged = match spec.preset {
            Some(p) => p.spec(),
            None => MappingSpec::default(),
        };
        merged.fields.extend(spec.fields);
        merged.metadata.extend(spec.metadata);
        merged.skip.extend(spec.skip);
        if spec.skip_tombstones.is_some() {
            merged.skip_tombstones = spec.skip_tombstones;
        }
        let err = |key: String, message: String| SpecError {
            at: format!("{at}.{key}"),
            message,
        };
        for field in Field::REQUIRED {
            if !merged.fields.contains_key(&field) {
                return Err(err(
                    format!("fields.{}", field.as_str()),
                    "required: give a path, a const or a preset".into(),
                ));
            }
        }
        let mut fields = Vec::new();
        for (field, spec) in merged.fields {
            let key = format!("fields.{}", field.as_str());
            let rule = Rule::new(spec.0, field == Field::SentAt).map_err(|m| err(key, m))?;
            fields.push((field, rule));
        }
        let mut metadata = Vec::new();
        for (name, spec) in merged.metadata {
            let key = format!("metadata.{name}");
            let rule = Rule::new(spec.0, false).map_err(|m| err(key, m))?;
            metadata.push((name, rule));
        }
        for (i, rule) in merged.skip.iter().enumerate() {
            let key = format!("skip[{i}]");
            check_pointer(&rule.path).map_err(|m| err(format!("{key}.path"), m))?;
            let tests = [
                rule.equals.is_some(),
                rule.any_of.is_some(),
                rule.not_in.is_some(),
            ];
            if tests.iter().filter(|t| **t).count() != 1 {
                return Err(err(
                    key,
                    "give exactly one of `equals`, `in`, `not_in`".into(),
                ));
            }
        }
        Ok(Mapping {
            fields,
            metadata,
            skip: merged.skip,
            skip_tombstones: merged.skip_tombstones.unwrap_or(false),
        })
    }

    /// A record without a value is a delete, not an error.
    pub fn skips_tombstones(&self) -> bool {
        self.skip_tombstones
    }

    /// Maps one record, or says why it is skipped or cannot be read.
    pub fn apply(&self, record: &Value) -> Result<Mapped, MappingError> {
        // Kafka Connect's JsonConverter with schemas.enable=true wraps the value.
        let (root, prefix) = match record.as_object() {
            Some(o) if o.len() == 2 && o.contains_key("schema") && o.contains_key("payload") => {
                (&o["payload"], "/payload")
            }
            _ => (record, ""),
        };
        if root.is_null() && self.skip_tombstones {
            return Ok(Mapped::Skipped(SkipReason::Delete));
        }
        for rule in &self.skip {
            let value = root.pointer(&rule.path).unwrap_or(&Value::Null);
            let matched = match (&rule.equals, &rule.any_of, &rule.not_in) {
                (Some(v), _, _) => same(value, v),
                (_, Some(vs), _) => vs.iter().any(|v| same(value, v)),
                (_, _, Some(vs)) => !vs.iter().any(|v| same(value, v)),
                _ => false,
            };
            if matched {
                return Ok(Mapped::Skipped(rule.reason));
            }
        }
        let mut msg = CustomerMessage {
            message_id: String::new(),
            conversation_id: String::new(),
            customer_id: String::new(),
            tenant_id: None,
            channel: String::new(),
            text: String::new(),
            subject: None,
            language: None,
            sent_at: 0,
            customer_name: None,
            metadata: BTreeMap::new(),
        };
        for (field, rule) in &self.fields {
            let name = field.as_str();
            if *field == Field::SentAt {
                msg.sent_at = rule.time(root, prefix, name)?;
                continue;
            }
            let value = rule.read(root, prefix, name, false)?;
            let required = |v: Option<String>| v.ok_or_else(|| rule.missing(prefix, name));
            match field {
                Field::MessageId => msg.message_id = required(value)?,
                Field::ConversationId => msg.conversation_id = required(value)?,
                Field::CustomerId => msg.customer_id = required(value)?,
                Field::Channel => msg.channel = required(value)?,
                Field::Text => msg.text = required(value)?,
                Field::TenantId => msg.tenant_id = value,
                Field::Subject => msg.subject = value,
                Field::Language => msg.language = value,
                Field::CustomerName => msg.customer_name = value,
                Field::SentAt => unreachable!("handled above"),
            }
        }
        for (name, rule) in &self.metadata {
            if let Some(v) = rule.read(root, prefix, name, true)? {
                msg.metadata.insert(name.clone(), v);
            }
        }
        Ok(Mapped::Message(Box::new(msg)))
    }
}

/// Equal values, or scalars written alike (`1` and `"1"`, `true` and `"true"`).
fn same(a: &Value, b: &Value) -> bool {
    a == b
        || match (scalar(a), scalar(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 6901: empty (the whole record) or `/`-separated tokens with `~0`/`~1` escapes.
fn check_pointer(p: &str) -> Result<(), String> {
    if !(p.is_empty() || p.starts_with('/')) {
        return Err(format!(
            "`{p}` is not a JSON Pointer (it must start with `/`, e.g. `/{p}`)"
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!("`{p}`: `~` must be followed by 0 or 1 (RFC 6901)"));
        }
    }
    Ok(())
}

impl Rule {
    fn new(spec: FieldSpecFull, is_time: bool) -> Result<Rule, String> {
        let source = match (spec.path.is_empty(), spec.constant) {
            (false, None) => {
                for p in &spec.path {
                    check_pointer(p)?;
                }
                Source::Paths(spec.path)
            }
            (true, Some(c)) => Source::Const(c),
            (false, Some(_)) => return Err("give either `path` or `const`, not both".into()),
            (true, None) => return Err("give a `path` or a `const`".into()),
        };
        if spec.unmapped.is_some() && spec.map.is_empty() {
            return Err("`unmapped` needs a `map`".into());
        }
        let format = spec.time.unwrap_or(TimeFormat::Auto);
        if !is_time && (spec.time.is_some() || spec.zone.is_some()) {
            return Err("`time` and `zone` apply to sent_at only".into());
        }
        let time = match (format, spec.zone) {
            (TimeFormat::Local, Some(zone)) => {
                Time::Local(jiff::tz::TimeZone::get(&zone).map_err(|_| {
                    format!("unknown time zone `{zone}` (an IANA name, e.g. Europe/Berlin)")
                })?)
            }
            (TimeFormat::Local, None) => {
                return Err("`time: local` needs a `zone` (e.g. Europe/Berlin)".into());
            }
            (_, Some(_)) => return Err("`zone` applies to `time: local` only".into()),
            (f, None) => Time::Format(f),
        };
        Ok(Rule {
            source,
            map: spec.map,
            unmapped: spec.unmapped,
            default: spec.default,
            time,
            strip_html: spec.strip_html,
        })
    }

    fn missing(&self, prefix: &str, field: &str) -> MappingError {
        let path = match &self.source {
            Source::Paths(p) => p.first().cloned().unwrap_or_default(),
            Source::Const(_) => String::new(),
        };
        MappingError::Missing {
            path: format!("{prefix}{path}"),
            field: field.to_string(),
        }
    }

    /// The first present, non-null value and its path.
    fn lookup<'a>(&'a self, root: &'a Value) -> Option<(&'a str, &'a Value)> {
        match &self.source {
            Source::Paths(paths) => paths.iter().find_map(|p| {
                root.pointer(p)
                    .filter(|v| !v.is_null())
                    .map(|v| (p.as_str(), v))
            }),
            Source::Const(_) => None,
        }
    }

    /// The value as text (`structured`: an object or array as JSON text); `None` when missing
    /// and no default applies.
    fn read(
        &self,
        root: &Value,
        prefix: &str,
        field: &str,
        structured: bool,
    ) -> Result<Option<String>, MappingError> {
        let raw = match (&self.source, self.lookup(root)) {
            (Source::Const(c), _) => Some(c.clone()),
            (_, Some((path, v))) => Some(match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => scalar(v).expect("scalar"),
                Value::Object(_) | Value::Array(_) if structured => v.to_string(),
                _ => {
                    return Err(MappingError::NotScalar {
                        path: format!("{prefix}{path}"),
                        field: field.to_string(),
                        found: kind_of(v),
                    });
                }
            }),
            (_, None) => None,
        };
        let Some(raw) = raw else {
            return Ok(self.default.clone());
        };
        let mapped = match self.map.get(&raw) {
            Some(to) => to.clone(),
            None if !self.map.is_empty() => self.unmapped.clone().unwrap_or(raw),
            None => raw,
        };
        Ok(Some(if self.strip_html {
            html_to_text(&mapped)
        } else {
            mapped
        }))
    }

    /// `sent_at` in epoch milliseconds.
    fn time(&self, root: &Value, prefix: &str, field: &str) -> Result<i64, MappingError> {
        let Some((path, value)) = self.lookup(root) else {
            return match (&self.source, &self.default) {
                (Source::Const(c), _) | (_, Some(c)) => {
                    parse_time(&Value::String(c.clone()), &self.time)
                        .ok_or_else(|| self.bad_time("", field))
                }
                _ => Err(self.missing(prefix, field)),
            };
        };
        parse_time(value, &self.time)
            .ok_or_else(|| self.bad_time(&format!("{prefix}{path}"), field))
    }

    fn bad_time(&self, path: &str, field: &str) -> MappingError {
        MappingError::BadTime {
            path: path.to_string(),
            field: field.to_string(),
            format: match self.time {
                Time::Format(f) => f.as_str(),
                Time::Local(_) => "local",
            },
        }
    }
}

/// Epoch milliseconds of a time value, or `None` if it is not one in this format.
fn parse_time(v: &Value, time: &Time) -> Option<i64> {
    let number = || match v {
        Value::Number(n) => n.as_i64().map(|i| i as f64).or_else(|| n.as_f64()),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    let epoch = |scale: f64| {
        number()
            .map(|n| (n * scale).floor())
            .filter(|ms| ms.is_finite() && ms.abs() < 1e16)
            .map(|ms| ms as i64)
    };
    let rfc3339 = |s: &str| {
        s.trim()
            .parse::<jiff::Timestamp>()
            .ok()
            .map(|t| t.as_millisecond())
    };
    match (time, v) {
        (Time::Format(TimeFormat::EpochS), _) => epoch(1e3),
        (Time::Format(TimeFormat::EpochMs), _) => epoch(1.0),
        (Time::Format(TimeFormat::EpochUs), _) => epoch(1e-3),
        (Time::Format(TimeFormat::Auto), Value::Number(_)) => epoch(1.0),
        (Time::Format(TimeFormat::Auto | TimeFormat::Rfc3339), Value::String(s)) => rfc3339(s),
        (Time::Format(_), _) => None,
        (Time::Local(zone), Value::String(s)) => rfc3339(s).or_else(|| {
            let civil = s.trim().parse::<jiff::civil::DateTime>().ok()?;
            // A time that falls in a DST gap or fold resolves as jiff's "compatible" does.
            Some(zone.to_timestamp(civil).ok()?.as_millisecond())
        }),
        (Time::Local(_), _) => None,
    }
}

/// The text of an HTML fragment: tags become spaces, entities are decoded, whitespace runs
/// collapse to one space.
pub fn html_to_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(i) = rest.find(['<', '&']) {
        text.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => {
                    text.push(' ');
                    rest = &rest[end + 1..];
                }
                None => {
                    rest = "";
                }
            }
            continue;
        }
        let (decoded, len) = entity(rest);
        text.push_str(&decoded);
        rest = &rest[len..];
    }
    text.push_str(rest);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes the entity at the start of `s` (which starts with `&`): the text and its length.
fn entity(s: &str) -> (String, usize) {
    let Some(end) = s[..s.len().min(12)].find(';') else {
        return ("&".into(), 1);
    };
    let name = &s[1..end];
    let decoded = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => name
            .strip_prefix("#x")
            .or_else(|| name.strip_prefix("#X"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32),
    };
    match decoded {
        Some(c) => (c.to_string(), end + 1),
        None => ("&".into(), 1),
    }
}

#[cfg(test)]
mod tests;
