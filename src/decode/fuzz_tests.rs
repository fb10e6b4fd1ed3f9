//! Property tests: whatever bytes arrive — junk, mutated records, deep or mistyped JSON,
//! invalid UTF-8, wrong schema ids, huge values — decoding never panics, every failure has a
//! kind and a reason that carry no customer text, and every valid message round-trips.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{DecodeError, Decoder, Limits};
use crate::config::Format;
use crate::message::CustomerMessage;
use crate::schema::{SchemaRegistry, contract, contracts, encode_avro};

const MAX_BYTES: usize = 4096;
const MAX_CHARS: usize = 100;
/// Written into hostile values; no error reason may repeat it.
const MARKER: &str = "zqxSECRETzqx";

const KINDS: [&str; 8] = [
    "no_value",
    "oversized",
    "malformed_json",
    "malformed_wire_format",
    "unknown_schema",
    "schema_registry_unavailable",
    "malformed_avro",
    "invalid_field",
];

fn decoder_with(max_message_bytes: usize, max_text_chars: usize) -> Decoder {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let registry = Arc::new(SchemaRegistry::local(&dir).expect("local registry"));
    Decoder::new(
        Limits {
            max_message_bytes,
            max_text_chars,
        },
        registry,
    )
}

fn decoder() -> Decoder {
    decoder_with(MAX_BYTES, MAX_CHARS)
}

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Json), Just(Format::Avro)]
}

/// Decodes, and checks what must hold for any input: a known kind, a non-empty reason free
/// of [`MARKER`], and an accepted message that passes the limits.
fn decode_checked(
    d: &Decoder,
    bytes: Option<&[u8]>,
    format: Format,
) -> Result<Result<CustomerMessage, DecodeError>, TestCaseError> {
    let result = d.decode(bytes, format);
    match &result {
        Ok(msg) => {
            prop_assert!(bytes.is_some_and(|b| b.len() <= d.limits.max_message_bytes));
            prop_assert!(!msg.text.trim().is_empty() && !msg.message_id.trim().is_empty());
            prop_assert!(msg.text.chars().count() <= d.limits.max_text_chars);
        }
        Err(e) => {
            prop_assert!(KINDS.contains(&e.kind()), "unknown kind {}", e.kind());
            let reason = e.to_string();
            prop_assert!(!reason.trim().is_empty(), "empty reason for {e:?}");
            prop_assert!(!reason.contains(MARKER), "reason leaks input: {reason}");
        }
    }
    Ok(result)
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,12}",
        ".{0,16}",
        Just(" ".to_string()),
        Just(String::new()),
        Just("{{ 7*7 }}".to_string()),
        Just("\u{202e}\u{200b}\u{feff}".to_string()),
        Just("\0\u{7}\u{1b}[31m".to_string()),
    ]
}

prop_compose! {
    fn customer_message()(
        ids in prop::array::uniform4(field()),
        text in prop_oneof![".{1,120}", "[a-z ]{1,60}", Just(format!("{MARKER} where is my order"))],
        optionals in prop::array::uniform4(prop::option::of(field())),
        sent_at in any::<i64>(),
        metadata in prop::collection::btree_map("[a-z]{0,4}", ".{0,4}", 0..120),
    ) -> CustomerMessage {
        let [message_id, conversation_id, customer_id, channel] = ids;
        let [tenant_id, subject, language, customer_name] = optionals;
        CustomerMessage {
            message_id, conversation_id, customer_id, tenant_id, channel, text,
            subject, language, sent_at, customer_name, metadata,
        }
    }
}

/// What decoding the encoding of `msg` (`len` bytes) must give.
fn expected(msg: &CustomerMessage, len: usize) -> Result<CustomerMessage, &'static str> {
    let blank = [
        &msg.message_id,
        &msg.conversation_id,
        &msg.customer_id,
        &msg.channel,
        &msg.text,
    ]
    .iter()
    .any(|f| f.trim().is_empty());
    if len > MAX_BYTES || (msg.text.chars().count() > MAX_CHARS && !blank) {
        Err("oversized")
    } else if blank {
        Err("invalid_field")
    } else {
        Ok(msg.clone())
    }
}

fn encode(msg: &CustomerMessage, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(msg).expect("json"),
        Format::Avro => encode_avro(&contract(contracts::CUSTOMER_MESSAGE), 1, msg).expect("avro"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>().prop_map(|i| i.index(usize::MAX / 2));
    prop_oneof![
        (at.clone(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        at.clone().prop_map(|at| Mutation::Truncate { at }),
        (at.clone(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (at.clone(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (at, prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

/// Applies `m`; positions wrap around the input, and a truncation leaves a strict prefix.
fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match m {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Overwrite { at, bytes: new } => {
            for (i, b) in new.iter().enumerate() {
                if let Some(slot) = bytes.get_mut((at + i) % n) {
                    *slot = *b;
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Tamper {
    Remove,
    Set(Value),
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        Just(Tamper::Remove),
        Just(Tamper::Set(Value::Null)),
        Just(Tamper::Set(json!(42))),
        Just(Tamper::Set(json!(-1.5))),
        Just(Tamper::Set(json!(u64::MAX))),
        Just(Tamper::Set(json!(true))),
        Just(Tamper::Set(json!([MARKER]))),
        Just(Tamper::Set(json!({ "k": MARKER }))),
        Just(Tamper::Set(json!(MARKER))),
        Just(Tamper::Set(json!(""))),
    ]
}

const FIELDS: [&str; 11] = [
    "message_id",
    "conversation_id",
    "customer_id",
    "tenant_id",
    "channel",
    "text",
    "subject",
    "language",
    "sent_at",
    "customer_name",
    "metadata",
];

/// The kind a valid message gets after `tamper` on `field`; None when it must decode.
fn tampered_kind(field: &str, tamper: &Tamper) -> Option<&'static str> {
    let string_field = !matches!(field, "sent_at" | "metadata");
    let optional = matches!(
        field,
        "tenant_id" | "subject" | "language" | "customer_name"
    );
    match tamper {
        Tamper::Remove if optional || field == "metadata" => None,
        Tamper::Set(Value::Null) if optional => None,
        Tamper::Set(Value::String(s)) if string_field => match field {
            _ if optional => None,
            _ if s.is_empty() => Some("invalid_field"),
            _ => None,
        },
        // A map of strings is what metadata is.
        Tamper::Set(Value::Object(_)) if field == "metadata" => None,
        Tamper::Set(Value::Number(n)) if field == "sent_at" && n.is_i64() => None,
        _ => Some("malformed_json"),
    }
}

fn good_message() -> CustomerMessage {
    CustomerMessage {
        message_id: "m1".into(),
        conversation_id: "c1".into(),
        customer_id: "u1".into(),
        tenant_id: Some("acme".into()),
        channel: "chat".into(),
        text: "Where is my order AAAA?".into(),
        subject: Some("Order".into()),
        language: None,
        sent_at: 1_700_000_000_000,
        customer_name: Some("Alex".into()),
        metadata: BTreeMap::from([("order_id".into(), "1234".into())]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_oversized_values_are_oversized(
        bytes in prop::collection::vec(any::<u8>(), 0..MAX_BYTES + 200),
        format in format(),
    ) {
        let result = decode_checked(&decoder(), Some(&bytes), format)?;
        if bytes.len() > MAX_BYTES {
            prop_assert_eq!(result.map_err(|e| e.kind()), Err("oversized"));
        }
    }

    #[test]
    fn wire_format_header_with_any_schema_id_and_body_never_panics(
        id in prop_oneof![0u32..8, any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = super::wire_format(id, &body);
        let result = decode_checked(&decoder(), Some(&bytes), Format::Avro)?;
        if !(1..=5).contains(&id) {
            prop_assert_eq!(result, Err(DecodeError::UnknownSchema(id)));
        }
    }

    #[test]
    fn valid_messages_round_trip_or_fail_the_limits(msg in customer_message(), format in format()) {
        let bytes = encode(&msg, format);
        let result = decode_checked(&decoder(), Some(&bytes), format)?;
        prop_assert_eq!(result.map_err(|e| e.kind()), expected(&msg, bytes.len()));
    }

    #[test]
    fn mutated_messages_never_panic_and_truncated_ones_fail(
        msg in customer_message(),
        format in format(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = encode(&msg, format);
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        let result = decode_checked(&decoder(), Some(&bytes), format)?;
        if let [Mutation::Truncate { .. }] = mutations.as_slice() {
            prop_assert!(result.is_err(), "a strict prefix decoded");
        }
    }

    #[test]
    fn json_fields_removed_nulled_or_mistyped_are_dead_lettered_as_malformed(
        field in prop::sample::select(FIELDS.to_vec()),
        tamper in tamper(),
    ) {
        let mut value = serde_json::to_value(good_message()).expect("json");
        let object = value.as_object_mut().expect("object");
        match &tamper {
            Tamper::Remove => { object.remove(field); }
            Tamper::Set(v) => { object.insert(field.to_string(), v.clone()); }
        }
        let bytes = serde_json::to_vec(&value).expect("json");
        let result = decode_checked(&decoder(), Some(&bytes), Format::Json)?;
        prop_assert_eq!(result.err().map(|e| e.kind()), tampered_kind(field, &tamper));
    }

    #[test]
    fn invalid_utf8_inside_a_string_is_malformed(
        junk in prop::sample::select(vec![
            vec![0xff, 0xfe, 0xfd, 0xfc], vec![0xc3, 0x28, 0x41, 0x41], vec![0xed, 0xa0, 0x80, 0x41],
            vec![0xf0, 0x28, 0x8c, 0x28], vec![0x80, 0x80, 0x80, 0x80], vec![0xf8, 0x88, 0x80, 0x80],
        ]),
        format in format(),
    ) {
        let mut bytes = encode(&good_message(), format);
        let at = bytes.windows(4).position(|w| w == b"AAAA").expect("marker in the encoding");
        bytes[at..at + 4].copy_from_slice(&junk);
        let result = decode_checked(&decoder(), Some(&bytes), format)?;
        let kind = match format { Format::Json => "malformed_json", Format::Avro => "malformed_avro" };
        prop_assert_eq!(result.map_err(|e| e.kind()), Err(kind));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_stack_overflow(
        depth in prop_oneof![Just(100_000usize), 129usize..5000],
        open in prop::sample::select(vec!["[", "{\"a\":", "{\"text\":"]),
        inside_a_field in any::<bool>(),
    ) {
        // Limits large enough that the parser, not the size check, meets the nesting.
        let d = decoder_with(4 << 20, MAX_CHARS);
        let nested = open.repeat(depth);
        let bytes = if inside_a_field {
            format!(r#"{{"message_id":"m","metadata":{nested}"#)
        } else {
            nested
        };
        let result = decode_checked(&d, Some(bytes.as_bytes()), Format::Json)?;
        prop_assert_eq!(result.map_err(|e| e.kind()), Err("malformed_json"));
    }

    #[test]
    fn huge_texts_are_oversized(
        extra in prop_oneof![1usize..1000, Just(100_000), Just(1_000_000)],
        format in format(),
    ) {
        // Over the character limit within the byte limit (2 bytes a character), or over both.
        let msg = CustomerMessage { text: "é".repeat(MAX_CHARS + extra), ..good_message() };
        let bytes = encode(&msg, format);
        let result = decode_checked(&decoder(), Some(&bytes), format)?;
        prop_assert_eq!(result.map_err(|e| e.kind()), Err("oversized"));
        // Only the character limit, where the byte limit allows the record (apache-avro's
        // allocation limit is process-wide, so only JSON here).
        if format == Format::Json {
            let roomy = decoder_with(4 << 20, MAX_CHARS);
            let result = decode_checked(&roomy, Some(&bytes), format)?;
            prop_assert_eq!(result, Err(DecodeError::TextTooLong { chars: msg.text.chars().count(), max: MAX_CHARS }));
        }
    }
}

#[test]
fn known_schema_ids_of_other_contracts_are_malformed_avro() {
    let d = decoder();
    let body = &encode(&good_message(), Format::Avro)[5..];
    for id in 2..=4 {
        let err = d
            .decode(Some(&super::wire_format(id, body)), Format::Avro)
            .expect_err("a record of another contract");
        assert_eq!(err.kind(), "malformed_avro", "schema id {id}: {err}");
    }
}

#[test]
fn no_value_and_empty_value_are_dead_lettered() {
    let d = decoder();
    assert_eq!(d.decode(None, Format::Json), Err(DecodeError::NoValue));
    assert_eq!(d.decode(None, Format::Avro), Err(DecodeError::NoValue));
    assert_eq!(
        d.decode(Some(b""), Format::Json).unwrap_err().kind(),
        "malformed_json"
    );
    assert_eq!(
        d.decode(Some(b""), Format::Avro).unwrap_err().kind(),
        "malformed_wire_format"
    );
}

/// Captures what the log subscriber writes, for the sentinel test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A card number planted everywhere: before the fix, `redact_quoted` stopped at an escaped
/// quote and the rest of a quoted value reached the `moodstream.error.reason` header and the
/// WARN log. Now no parser message is echoed at all.
#[test]
fn a_sentinel_planted_anywhere_never_reaches_headers_logs_or_metrics() {
    const SENTINEL: &str = "4111111111111111";
    let plants = [
        SENTINEL.to_string(),
        format!("\"{SENTINEL}\""),
        format!("\\\"{SENTINEL}"),
        format!("x\\\"{SENTINEL}\\\""),
        format!("\"{SENTINEL}\":"),
        format!("\"{SENTINEL}\":\"{SENTINEL}\","),
        format!("\\u0022{SENTINEL}"),
    ];
    let good = serde_json::to_string(&good_message()).expect("json");
    // A mistyped field: the parser quotes the string it got.
    let mistyped = good.replace("1700000000000", "\"at noon\"");
    let avro = encode(&good_message(), Format::Avro);
    let d = decoder();
    let capture = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .finish();
    let mut reasons = 0;
    tracing::subscriber::with_default(subscriber, || {
        let mut check = |bytes: &[u8], format: Format| {
            let Err(e) = d.decode(Some(bytes), format) else {
                return;
            };
            reasons += 1;
            let origin = crate::pipeline::Origin {
                topic: Arc::from("in"),
                partition: 0,
                offset: 7,
                seq: 0,
                consumed_at: std::time::Instant::now(),
                consumed_wall: std::time::SystemTime::now(),
                trace: Default::default(),
                key: None,
                payload: Some(bytes.to_vec()),
            };
            let reason = e.to_string();
            crate::sink::log_dead_letter(&origin, e.kind(), &reason);
            for (name, value) in crate::sink::dead_letter_headers(&origin, e.kind(), &reason) {
                assert!(!value.contains(SENTINEL), "header {name} leaks: {value}");
            }
        };
        for base in [&good, &mistyped] {
            for at in (0..=base.len()).filter(|i| base.is_char_boundary(*i)) {
                for plant in &plants {
                    let mut text = base.clone();
                    text.insert_str(at, plant);
                    check(text.as_bytes(), Format::Json);
                }
            }
        }
        for at in 0..=avro.len() {
            let mut bytes = avro.clone();
            bytes.splice(at..at, SENTINEL.bytes());
            check(&bytes, Format::Avro);
        }
    });
    assert!(reasons > 1000, "most plants break the record ({reasons})");
    let logs = String::from_utf8_lossy(&capture.0.lock().expect("capture")).to_string();
    assert!(
        logs.contains("dead-lettering record"),
        "the log was captured"
    );
    assert!(!logs.contains(SENTINEL), "a log line leaks the sentinel");
    assert!(!crate::telemetry::metrics().render().contains(SENTINEL));
}
