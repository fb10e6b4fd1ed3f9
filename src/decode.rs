//! decode: Kafka record bytes → [`CustomerMessage`], or a [`DecodeError`] that names why the
//! record goes to the dead-letter topic. JSON, and Avro in the Confluent wire format with the
//! writer schema from a Schema Registry (cached) or from `schemas/registry.json`.
//!
//! Nothing here may panic on input, and no error message may carry the message's text or ids:
//! errors end up in DLQ headers and logs. So a parser's own message is never echoed (it quotes
//! the input): a JSON error is its category and line/column, an Avro error a fixed sentence.
//!
//! A Schema Registry failure is no verdict on the record: [`DecodeError::is_transient`] tells
//! the source to retry it, never to dead-letter it.
//!
//! A topic with an input mapping (`mapping`) is read as JSON (or Avro with its writer schema,
//! as a JSON-like value) and mapped to the contract; the mapping may also skip a record on
//! purpose ([`DecodeError::Skipped`]): no output, offset committed, never dead-lettered.

pub mod mapping;

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;

use crate::config::Format;
use crate::message::CustomerMessage;
use crate::schema::{SchemaRegistry, contract, contracts};
use mapping::{Mapped, Mapping, MappingError, SkipReason};

/// Why a record could not become a [`CustomerMessage`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    NoValue,
    #[error("value is {size} bytes, over the {max}-byte limit")]
    Oversized { size: usize, max: usize },
    #[error("text is {chars} characters, over the {max}-character limit")]
    TextTooLong { chars: usize, max: usize },
    #[error("invalid JSON: {0}")]
    Json(JsonErrorAt),
    #[error("not Confluent wire format: {0}")]
    WireFormat(&'static str),
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    #[error("schema registry unavailable: {0}")]
    Registry(String),
    #[error("invalid Avro: {0}")]
    Avro(String),
    #[error("field `{0}` must not be empty")]
    EmptyField(&'static str),
    /// The topic's input mapping cannot read the record (names the path, never the value).
    #[error("input mapping: {0}")]
    Unmapped(MappingError),
    /// Not an error: the topic's input mapping skips this record on purpose (an agent reply,
    /// a delete, ...). It produces no output and its offset is committed.
    #[error("skipped by the input mapping ({})", .0.as_str())]
    Skipped(SkipReason),
}

impl DecodeError {
    /// Stable machine-readable kind for the `moodstream.error.kind` header and metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NoValue => "no_value",
            DecodeError::Oversized { .. } | DecodeError::TextTooLong { .. } => "oversized",
            DecodeError::Json(_) => "malformed_json",
            DecodeError::WireFormat(_) => "malformed_wire_format",
            DecodeError::UnknownSchema(_) => "unknown_schema",
            DecodeError::Registry(_) => "schema_registry_unavailable",
            DecodeError::Avro(_) => "malformed_avro",
            DecodeError::EmptyField(_) => "invalid_field",
            DecodeError::Unmapped(_) => "unmapped",
            DecodeError::Skipped(_) => "skipped",
        }
    }

    /// The registry could not answer: the record is not bad, so it must be retried, never
    /// dead-lettered.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::Registry(_))
    }
}

/// Where and what kind of JSON error: all a dead letter says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonErrorAt {
    pub category: &'static str,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for JsonErrorAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} error at line {} column {}",
            self.category, self.line, self.column
        )
    }
}

impl From<&serde_json::Error> for JsonErrorAt {
    fn from(e: &serde_json::Error) -> JsonErrorAt {
        use serde_json::error::Category;
        JsonErrorAt {
            category: match e.classify() {
                Category::Io => "read",
                Category::Syntax => "syntax",
                Category::Data => "schema",
                Category::Eof => "unexpected end of input",
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Limits applied to every record.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_text_chars: usize,
}

/// Decodes records of any input topic. Cheap to clone; writer schemas are cached by the registry.
#[derive(Clone)]
pub struct Decoder {
    limits: Limits,
    registry: Arc<SchemaRegistry>,
    reader_schema: Arc<Schema>,
    /// Input mappings by topic; a topic without one is read as the contract.
    mappings: Arc<BTreeMap<String, Mapping>>,
}

impl Decoder {
    pub fn new(limits: Limits, registry: Arc<SchemaRegistry>) -> Decoder {
        let reader_schema = Arc::new(contract(contracts::CUSTOMER_MESSAGE));
        // A hostile length prefix must not make apache-avro allocate more than a record can hold.
        // The limit also caps a decoded array or map, whose entries take 1–2 bytes on the wire
        // but a whole `Value` (and key) in memory: without the factor, a valid 200-byte record
        // with 60 metadata entries would be dead-lettered.
        let per_wire_byte = std::mem::size_of::<(String, apache_avro::types::Value)>();
        apache_avro::util::max_allocation_bytes(
            limits
                .max_message_bytes
                .saturating_mul(per_wire_byte)
                .max(1024),
        );
        Decoder {
            limits,
            registry,
            reader_schema,
            mappings: Arc::default(),
        }
    }

    /// With input mappings by topic (`--input-mapping`).
    pub fn with_mappings(mut self, mappings: BTreeMap<String, Mapping>) -> Decoder {
        self.mappings = Arc::new(mappings);
        self
    }

    /// Decodes a record of `topic`, through its input mapping if it has one.
    pub fn decode_from(
        &self,
        topic: &str,
        value: Option<&[u8]>,
        format: Format,
    ) -> Result<CustomerMessage, DecodeError> {
        self.decode_with(self.mappings.get(topic), value, format)
    }

    /// Decodes a record in our contract (no input mapping).
    pub fn decode(
        &self,
        value: Option<&[u8]>,
        format: Format,
    ) -> Result<CustomerMessage, DecodeError> {
        self.decode_with(None, value, format)
    }

    /// Decodes a record, through `mapping` when given.
    pub fn decode_with(
        &self,
        mapping: Option<&Mapping>,
        value: Option<&[u8]>,
        format: Format,
    ) -> Result<CustomerMessage, DecodeError> {
        let bytes = match (value, mapping) {
            (Some(bytes), _) => bytes,
            (None, Some(m)) if m.skips_tombstones() => {
                return Err(DecodeError::Skipped(SkipReason::Delete));
            }
            (None, _) => return Err(DecodeError::NoValue),
        };
        if bytes.len() > self.limits.max_message_bytes {
            return Err(DecodeError::Oversized {
                size: bytes.len(),
                max: self.limits.max_message_bytes,
            });
        }
        let msg = match (format, mapping) {
            (Format::Json, None) => decode_json(bytes)?,
            (Format::Avro, None) => self.decode_avro(bytes)?,
            (format, Some(m)) => {
                let record = match format {
                    Format::Json => serde_json::from_slice(bytes)
                        .map_err(|e| DecodeError::Json(JsonErrorAt::from(&e)))?,
                    Format::Avro => self.avro_as_json(bytes)?,
                };
                match m.apply(&record).map_err(DecodeError::Unmapped)? {
                    Mapped::Message(msg) => *msg,
                    Mapped::Skipped(reason) => return Err(DecodeError::Skipped(reason)),
                }
            }
        };
        validate(msg, self.limits)
    }

    /// An Avro record of any writer schema as a JSON value, for an input mapping.
    fn avro_as_json(&self, bytes: &[u8]) -> Result<serde_json::Value, DecodeError> {
        let value = self.read_avro(bytes, None)?;
        serde_json::Value::try_from(value).map_err(|_| DecodeError::Avro(AVRO_JSON.into()))
    }

    fn decode_avro(&self, bytes: &[u8]) -> Result<CustomerMessage, DecodeError> {
        let value = self.read_avro(bytes, Some(&self.reader_schema))?;
        apache_avro::from_value::<CustomerMessage>(&value)
            .map_err(|_| DecodeError::Avro(AVRO_CONTRACT.into()))
    }

    /// Reads one wire-format datum with its writer schema, resolved to `reader` if given.
    fn read_avro(
        &self,
        bytes: &[u8],
        reader: Option<&Schema>,
    ) -> Result<apache_avro::types::Value, DecodeError> {
        let (id, mut body) = split_wire_format(bytes)?;
        let writer = self.writer_schema(id)?;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
            .maybe_reader_schema(reader)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .map_err(|_| DecodeError::Avro(AVRO_DATUM.into()))?;
        if !body.is_empty() {
            return Err(DecodeError::Avro(format!(
                "{} trailing bytes after the record",
                body.len()
            )));
        }
        Ok(value)
    }

    fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        match self.registry.schema_by_id(id) {
            Ok(schema) => Ok(schema),
            Err(e) if e.is_transient() => Err(DecodeError::Registry(e.to_string())),
            // Not found, or registered but unparsable: no schema to read the record with.
            Err(_) => Err(DecodeError::UnknownSchema(id)),
        }
    }
}

/// Splits `[0][schema id: u32 BE][datum]`.
pub fn split_wire_format(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [0, ..] => Err(DecodeError::WireFormat("shorter than the 5-byte header")),
        [] => Err(DecodeError::WireFormat("empty value")),
        _ => Err(DecodeError::WireFormat("magic byte is not 0")),
    }
}

/// Prepends the Confluent wire-format header.
pub fn wire_format(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

fn decode_json(bytes: &[u8]) -> Result<CustomerMessage, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(JsonErrorAt::from(&e)))
}

// Avro errors quote values (and field names of the writer schema, which the record chose):
// a fixed sentence per stage instead.
const AVRO_DATUM: &str = "the datum does not match its writer schema";
const AVRO_CONTRACT: &str = "the record does not fit the customer message contract";
const AVRO_JSON: &str = "the record has a value with no JSON form (a non-finite float)";

fn validate(msg: CustomerMessage, limits: Limits) -> Result<CustomerMessage, DecodeError> {
    for (name, value) in [
        ("message_id", &msg.message_id),
        ("conversation_id", &msg.conversation_id),
        ("customer_id", &msg.customer_id),
        ("channel", &msg.channel),
    ] {
        if value.trim().is_empty() {
            return Err(DecodeError::EmptyField(name));
        }
    }
    if msg.text.trim().is_empty() {
        return Err(DecodeError::EmptyField("text"));
    }
    let chars = msg.text.chars().count();
    if chars > limits.max_text_chars {
        return Err(DecodeError::TextTooLong {
            chars,
            max: limits.max_text_chars,
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let registry = Arc::new(SchemaRegistry::local(&dir).expect("local registry"));
        Decoder::new(
            Limits {
                max_message_bytes: 4096,
                max_text_chars: 100,
            },
            registry,
        )
    }

    const GOOD: &str = r#"{"message_id":"m1","conversation_id":"c1","customer_id":"u1","channel":"chat","text":"Where is my order?","sent_at":1700000000000}"#;

    #[test]
    fn decodes_minimal_json_message() {
        let msg = decoder()
            .decode(Some(GOOD.as_bytes()), Format::Json)
            .expect("decodes");
        assert_eq!(msg.message_id, "m1");
        assert_eq!(msg.tenant_id, None);
        assert!(msg.metadata.is_empty());
    }

    #[test]
    fn rejects_missing_required_field_without_echoing_text() {
        let err = decoder()
            .decode(
                Some(br#"{"message_id":"m1","text":"secret words"}"#),
                Format::Json,
            )
            .unwrap_err();
        assert_eq!(err.kind(), "malformed_json");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn wrong_type_error_does_not_leak_the_value() {
        let err = decoder()
            .decode(Some(br#"{"message_id":"m1","conversation_id":"c","customer_id":"u","channel":"chat","text":"t","sent_at":"my private words"}"#), Format::Json)
            .unwrap_err();
        assert!(!err.to_string().contains("private"), "{err}");
    }

    #[test]
    fn dead_letters_empty_text_and_oversized_values() {
        let d = decoder();
        let empty = GOOD.replace("Where is my order?", "   ");
        assert_eq!(
            d.decode(Some(empty.as_bytes()), Format::Json).unwrap_err(),
            DecodeError::EmptyField("text")
        );
        let long = GOOD.replace("Where is my order?", &"a".repeat(101));
        assert_eq!(
            d.decode(Some(long.as_bytes()), Format::Json)
                .unwrap_err()
                .kind(),
            "oversized"
        );
        let huge = vec![b' '; 5000];
        assert_eq!(
            d.decode(Some(&huge), Format::Json).unwrap_err().kind(),
            "oversized"
        );
        assert_eq!(
            d.decode(None, Format::Json).unwrap_err(),
            DecodeError::NoValue
        );
    }

    #[test]
    fn decodes_avro_wire_format_with_local_schema() {
        let d = decoder();
        let msg: CustomerMessage = serde_json::from_str(GOOD).expect("json");
        let bytes = crate::schema::encode_avro(&d.reader_schema, 1, &msg).expect("encodes");
        assert_eq!(d.decode(Some(&bytes), Format::Avro).expect("decodes"), msg);
    }

    #[test]
    fn dead_letters_unknown_schema_id_and_bad_magic() {
        let d = decoder();
        assert_eq!(
            d.decode(Some(&wire_format(999, b"x")), Format::Avro)
                .unwrap_err(),
            DecodeError::UnknownSchema(999)
        );
        assert_eq!(
            d.decode(Some(b"{\"a\":1}"), Format::Avro)
                .unwrap_err()
                .kind(),
            "malformed_wire_format"
        );
        assert_eq!(
            d.decode(Some(&[0, 0, 0]), Format::Avro).unwrap_err().kind(),
            "malformed_wire_format"
        );
        // schema id 1 with a truncated body
        assert_eq!(
            d.decode(Some(&wire_format(1, &[2, b'm'])), Format::Avro)
                .unwrap_err()
                .kind(),
            "malformed_avro"
        );
    }
}

#[cfg(test)]
mod mapping_tests {
    use super::*;
    use mapping::Preset;

    fn decoder() -> Decoder {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let registry = Arc::new(SchemaRegistry::local(&dir).expect("local registry"));
        let limits = Limits {
            max_message_bytes: 64 * 1024,
            max_text_chars: 1000,
        };
        let mappings = [("cdc".to_string(), Mapping::preset(Preset::Debezium))].into();
        Decoder::new(limits, registry).with_mappings(mappings)
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mapping")
            .join(name);
        std::fs::read(path).expect("fixture")
    }

    #[test]
    fn mapped_topics_use_their_mapping_and_others_the_contract() {
        let d = decoder();
        let record = fixture("debezium_create.json");
        let msg = d
            .decode_from("cdc", Some(&record), Format::Json)
            .expect("maps");
        assert_eq!(msg.message_id, "msg-1001");
        // The same record on an unmapped topic is not our contract.
        assert_eq!(
            d.decode_from("other", Some(&record), Format::Json)
                .unwrap_err()
                .kind(),
            "malformed_json"
        );
    }

    #[test]
    fn skips_deletes_and_tombstones_and_dead_letters_unreadable_records() {
        let d = decoder();
        let delete = fixture("debezium_delete.json");
        assert_eq!(
            d.decode_from("cdc", Some(&delete), Format::Json),
            Err(DecodeError::Skipped(SkipReason::Delete))
        );
        assert_eq!(
            d.decode_from("cdc", None, Format::Json),
            Err(DecodeError::Skipped(SkipReason::Delete))
        );
        let unreadable = br#"{"op":"c","after":{"id":"m9","conversation_id":"c","customer_id":"u","created_at":1,"note":"private words"}}"#;
        let err = d
            .decode_from("cdc", Some(unreadable), Format::Json)
            .unwrap_err();
        assert_eq!(err.kind(), "unmapped");
        assert_eq!(
            err.to_string(),
            "input mapping: missing field /after/body (for text)"
        );
        assert_eq!(
            d.decode_from("cdc", Some(b"not json"), Format::Json)
                .unwrap_err()
                .kind(),
            "malformed_json"
        );
        // The contract's checks still apply after mapping.
        let empty = String::from_utf8(fixture("debezium_create.json"))
            .expect("utf-8")
            .replace(
                "My package never arrived and nobody answers my emails.",
                " ",
            );
        assert_eq!(
            d.decode_from("cdc", Some(empty.as_bytes()), Format::Json),
            Err(DecodeError::EmptyField("text"))
        );
    }

    #[test]
    fn maps_avro_records_of_any_writer_schema() {
        // Our own contract's schema (id 1) stands in for a foreign one: the mapping reads it
        // as a JSON-like value.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let registry = Arc::new(SchemaRegistry::local(&dir).expect("local registry"));
        let yaml = "topics:\n  t:\n    fields:\n      message_id: /message_id\n      conversation_id: /conversation_id\n      customer_id: /customer_id\n      channel: {path: /channel, map: {chat: web-chat}}\n      text: /text\n      sent_at: /sent_at\n";
        let mappings = mapping::parse(yaml, &["t".to_string()]).expect("valid");
        let d = Decoder::new(
            Limits {
                max_message_bytes: 4096,
                max_text_chars: 100,
            },
            registry,
        )
        .with_mappings(mappings);
        let msg = CustomerMessage {
            message_id: "m1".into(),
            conversation_id: "c1".into(),
            customer_id: "u1".into(),
            tenant_id: Some("t1".into()),
            channel: "chat".into(),
            text: "Where is my order?".into(),
            subject: None,
            language: None,
            sent_at: 1_700_000_000_000,
            customer_name: None,
            metadata: Default::default(),
        };
        let bytes = crate::schema::encode_avro(&d.reader_schema, 1, &msg).expect("encodes");
        let mapped = d
            .decode_from("t", Some(&bytes), Format::Avro)
            .expect("maps");
        assert_eq!(mapped.channel, "web-chat");
        assert_eq!(mapped.sent_at, msg.sent_at);
        assert_eq!(mapped.tenant_id, None, "not mapped");
    }
}
