//! One test per preset (realistic records in tests/fixtures/mapping), time format, value map,
//! skip rule and unreadable path.

use serde_json::{Value, json};

use super::*;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mapping")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn message(mapping: &Mapping, record: &Value) -> CustomerMessage {
    match mapping.apply(record) {
        Ok(Mapped::Message(msg)) => *msg,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn skipped(mapping: &Mapping, record: &Value) -> SkipReason {
    match mapping.apply(record) {
        Ok(Mapped::Skipped(reason)) => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

/// A mapping of one topic `t` from YAML.
fn mapping(yaml: &str) -> Result<Mapping, SpecError> {
    let text = format!("topics:\n  t:\n{}", indent(yaml));
    parse(&text, &["t".to_string()]).map(|mut m| m.remove("t").expect("topic t"))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

const MINIMAL: &str = "fields:
  message_id: /id
  conversation_id: /conv
  customer_id: /who
  channel: {const: chat}
  text: /text
  sent_at: /at
";

fn minimal_with(extra: &str) -> Mapping {
    mapping(&format!("{MINIMAL}{extra}")).expect("valid mapping")
}

#[test]
fn debezium_create_maps_the_after_row() {
    let msg = message(
        &Mapping::preset(Preset::Debezium),
        &fixture("debezium_create.json"),
    );
    assert_eq!(msg.message_id, "msg-1001");
    assert_eq!(msg.conversation_id, "conv-77");
    assert_eq!(msg.customer_id, "cust-5");
    assert_eq!(msg.tenant_id.as_deref(), Some("acme"));
    assert_eq!(msg.channel, "chat");
    assert_eq!(msg.language.as_deref(), Some("en"));
    assert_eq!(
        msg.subject, None,
        "a null column is an absent optional field"
    );
    assert!(msg.text.starts_with("My package never arrived"));
    // MicroTimestamp 1714557600123456 µs
    assert_eq!(msg.sent_at, 1_714_557_600_123);
    assert_eq!(msg.metadata["source_table"], "messages");
    assert_eq!(msg.metadata["source_db"], "crm");
}

#[test]
fn debezium_connect_envelope_is_unwrapped() {
    let msg = message(
        &Mapping::preset(Preset::Debezium),
        &fixture("debezium_create_envelope.json"),
    );
    assert_eq!(msg.message_id, "msg-1002");
    assert_eq!(msg.sent_at, 1_714_557_700_000);
}

#[test]
fn debezium_deletes_updates_agents_and_tombstones_are_skipped() {
    let m = Mapping::preset(Preset::Debezium);
    assert_eq!(
        skipped(&m, &fixture("debezium_delete.json")),
        SkipReason::Delete
    );
    assert_eq!(
        skipped(&m, &fixture("debezium_delete_envelope.json")),
        SkipReason::Delete
    );
    assert_eq!(
        skipped(&m, &fixture("debezium_update.json")),
        SkipReason::Update
    );
    assert_eq!(
        skipped(&m, &fixture("debezium_agent_reply.json")),
        SkipReason::Agent
    );
    // A JsonConverter tombstone: the envelope with a null payload.
    assert_eq!(
        skipped(&m, &json!({"schema": null, "payload": null})),
        SkipReason::Delete
    );
    assert!(m.skips_tombstones());
}

#[test]
fn debezium_missing_column_names_its_path_inside_the_envelope() {
    let m = Mapping::preset(Preset::Debezium);
    let mut record = fixture("debezium_create_envelope.json");
    record["payload"]["after"]
        .as_object_mut()
        .expect("row")
        .remove("body");
    let err = m.apply(&record).unwrap_err();
    assert_eq!(
        err,
        MappingError::Missing {
            path: "/payload/after/body".into(),
            field: "text".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "missing field /payload/after/body (for text)"
    );
}

#[test]
fn zendesk_comment_maps_ticket_and_author() {
    let msg = message(
        &Mapping::preset(Preset::Zendesk),
        &fixture("zendesk_comment.json"),
    );
    assert_eq!(msg.message_id, "10414779686782");
    assert_eq!(msg.conversation_id, "5158");
    assert_eq!(msg.customer_id, "8447388090494");
    assert_eq!(
        msg.tenant_id.as_deref(),
        Some("22129848"),
        "a number as text"
    );
    assert_eq!(msg.channel, "web", "via.channel web_form mapped");
    assert_eq!(msg.subject.as_deref(), Some("Order 4471 has not arrived"));
    assert_eq!(msg.customer_name.as_deref(), Some("Dana Whitfield"));
    assert_eq!(msg.sent_at, 1_714_557_600_000);
    assert_eq!(msg.metadata["ticket_status"], "OPEN");
}

#[test]
fn zendesk_agent_replies_notes_and_status_changes_are_skipped() {
    let m = Mapping::preset(Preset::Zendesk);
    assert_eq!(
        skipped(&m, &fixture("zendesk_agent_reply.json")),
        SkipReason::Agent
    );
    assert_eq!(
        skipped(&m, &fixture("zendesk_internal_note.json")),
        SkipReason::Internal
    );
    assert_eq!(
        skipped(&m, &fixture("zendesk_status_changed.json")),
        SkipReason::System
    );
}

#[test]
fn salesforce_incoming_email_and_new_case_map() {
    let m = Mapping::preset(Preset::Salesforce);
    let email = message(&m, &fixture("salesforce_email_incoming.json"));
    assert_eq!(email.message_id, "02s5g00000XyZ1AAI");
    assert_eq!(email.conversation_id, "5005g00000AbCdEAAZ");
    assert_eq!(email.customer_id, "lee.okafor@example.com");
    assert_eq!(email.channel, "email");
    assert_eq!(email.subject.as_deref(), Some("Charged twice"));
    // MessageDate "2024-05-01T09:59:58.000+0000": Salesforce's offset without a colon.
    assert_eq!(email.sent_at, 1_714_557_598_000);
    assert_eq!(email.metadata["salesforce_entity"], "EmailMessage");

    let case = message(&m, &fixture("salesforce_case_create.json"));
    assert_eq!(case.message_id, "5005g00000AbCdFAAZ");
    assert_eq!(case.conversation_id, "5005g00000AbCdFAAZ");
    assert_eq!(case.customer_id, "0035g00000QrStUAAV");
    assert_eq!(case.channel, "web", "Origin Web mapped");
    assert!(case.text.starts_with("The app crashes"));
    assert_eq!(case.sent_at, 1_714_637_730_000);
    assert_eq!(case.metadata["case_priority"], "Medium");
}

#[test]
fn salesforce_outgoing_email_and_updates_are_skipped() {
    let m = Mapping::preset(Preset::Salesforce);
    assert_eq!(
        skipped(&m, &fixture("salesforce_email_outgoing.json")),
        SkipReason::Agent
    );
    assert_eq!(
        skipped(&m, &fixture("salesforce_email_update.json")),
        SkipReason::Update
    );
}

#[test]
fn intercom_user_reply_maps_and_strips_html() {
    let msg = message(
        &Mapping::preset(Preset::Intercom),
        &fixture("intercom_user_reply.json"),
    );
    assert_eq!(msg.message_id, "31337001");
    assert_eq!(msg.conversation_id, "147258369");
    assert_eq!(msg.customer_id, "65f1c0ffee0001");
    assert_eq!(msg.tenant_id.as_deref(), Some("xq9c2k7d"));
    assert_eq!(msg.channel, "chat");
    assert_eq!(
        msg.text,
        "I've tried three cards & none work. Please help, I need access today!"
    );
    assert_eq!(msg.sent_at, 1_714_557_600_000);
    assert_eq!(msg.metadata["intercom_topic"], "conversation.user.replied");
}

#[test]
fn intercom_admin_replies_notes_and_closes_are_skipped() {
    let m = Mapping::preset(Preset::Intercom);
    assert_eq!(
        skipped(&m, &fixture("intercom_admin_reply.json")),
        SkipReason::Agent
    );
    assert_eq!(
        skipped(&m, &fixture("intercom_note.json")),
        SkipReason::Internal
    );
    assert_eq!(
        skipped(&m, &fixture("intercom_closed.json")),
        SkipReason::System
    );
}

#[test]
fn time_formats() {
    let at = |spec: &str, v: Value| {
        let m =
            mapping(&MINIMAL.replace("sent_at: /at", &format!("sent_at: {spec}"))).expect("valid");
        let record = json!({"id": "m", "conv": "c", "who": "u", "text": "hi", "at": v});
        m.apply(&record).map(|r| match r {
            Mapped::Message(msg) => msg.sent_at,
            Mapped::Skipped(r) => panic!("skipped {r:?}"),
        })
    };
    let ms = 1_714_557_600_000;
    assert_eq!(at("/at", json!(ms)), Ok(ms), "auto: a number is ms");
    assert_eq!(at("/at", json!("2024-05-01T10:00:00Z")), Ok(ms));
    assert_eq!(
        at("{path: /at, time: epoch_s}", json!(1_714_557_600)),
        Ok(ms)
    );
    assert_eq!(
        at("{path: /at, time: epoch_s}", json!(1_714_557_600.5)),
        Ok(ms + 500)
    );
    assert_eq!(
        at("{path: /at, time: epoch_s}", json!("1714557600")),
        Ok(ms)
    );
    assert_eq!(at("{path: /at, time: epoch_ms}", json!(ms)), Ok(ms));
    assert_eq!(
        at(
            "{path: /at, time: epoch_us}",
            json!(1_714_557_600_000_999i64)
        ),
        Ok(ms)
    );
    assert_eq!(
        at(
            "{path: /at, time: rfc3339}",
            json!("2024-05-01T12:00:00.000+02:00")
        ),
        Ok(ms)
    );
    // Local time in a configured zone: Berlin is UTC+2 in May, UTC+1 in January.
    let berlin = "{path: /at, time: local, zone: Europe/Berlin}";
    assert_eq!(at(berlin, json!("2024-05-01T12:00:00")), Ok(ms));
    assert_eq!(at(berlin, json!("2024-05-01 12:00:00.000")), Ok(ms));
    assert_eq!(
        at(berlin, json!("2024-01-01T01:00:00")),
        Ok(1_704_067_200_000)
    );
    // ... unless the string carries its own offset.
    assert_eq!(at(berlin, json!("2024-05-01T10:00:00Z")), Ok(ms));
    let bad = at("{path: /at, time: rfc3339}", json!("2024-05-01T10:00:00"));
    assert_eq!(
        bad,
        Err(MappingError::BadTime {
            path: "/at".into(),
            field: "sent_at".into(),
            format: "rfc3339"
        })
    );
    assert!(at("{path: /at, time: epoch_ms}", json!("yesterday")).is_err());
    assert!(at("{path: /at, time: epoch_ms}", json!(true)).is_err());
}

#[test]
fn value_maps_defaults_and_constants() {
    let m = minimal_with(
        "  tenant_id: {const: acme}
  language: {path: /lang, default: en}
metadata:
  source: {const: crm}
  tags: /tags
  absent: /nothing
",
    )
    .clone();
    let m = Mapping {
        fields: m
            .fields
            .into_iter()
            .map(|(f, r)| {
                if f == Field::Channel {
                    let spec = FieldSpecFull {
                        path: vec!["/via".into()],
                        map: [
                            ("web".into(), "chat".into()),
                            ("mail".into(), "email".into()),
                        ]
                        .into(),
                        unmapped: Some("other".into()),
                        ..FieldSpecFull::default()
                    };
                    (f, Rule::new(spec, false).expect("valid"))
                } else {
                    (f, r)
                }
            })
            .collect(),
        ..m
    };
    let base = json!({"id": 7, "conv": "c", "who": "u", "text": "hi", "at": 1, "tags": ["a", "b"]});
    let with = |via: Value| {
        let mut r = base.clone();
        r["via"] = via;
        message(&m, &r)
    };
    assert_eq!(with(json!("web")).channel, "chat");
    assert_eq!(with(json!("mail")).channel, "email");
    assert_eq!(with(json!("fax")).channel, "other", "unmapped");
    let msg = with(json!("web"));
    assert_eq!(msg.message_id, "7", "a number id as text");
    assert_eq!(msg.tenant_id.as_deref(), Some("acme"));
    assert_eq!(
        msg.language.as_deref(),
        Some("en"),
        "default for a missing path"
    );
    assert_eq!(msg.metadata["source"], "crm");
    assert_eq!(
        msg.metadata["tags"], r#"["a","b"]"#,
        "structure as JSON text"
    );
    assert!(!msg.metadata.contains_key("absent"));
    // Without `unmapped`, a value not in the map passes unchanged.
    let m = minimal_with("  language: {path: /lang, map: {english: en}}\n");
    let mut r = base.clone();
    r["lang"] = json!("english");
    assert_eq!(message(&m, &r).language.as_deref(), Some("en"));
    r["lang"] = json!("de");
    assert_eq!(message(&m, &r).language.as_deref(), Some("de"));
}

#[test]
fn path_lists_take_the_first_present_value() {
    let m = mapping(&MINIMAL.replace(
        "text: /text",
        "text: {path: [/plain, /html], strip_html: true}",
    ))
    .expect("valid");
    let r = json!({"id": "m", "conv": "c", "who": "u", "at": 1, "plain": null, "html": "<b>hi</b> there"});
    assert_eq!(message(&m, &r).text, "hi there");
}

#[test]
fn skip_rules_equals_in_and_not_in() {
    let m = minimal_with(
        "skip:
  - {path: /kind, equals: note, reason: internal}
  - {path: /role, not_in: [customer, lead], reason: agent}
  - {path: /event, in: [closed, assigned]}
",
    );
    let r = |extra: Value| {
        let mut r =
            json!({"id": "m", "conv": "c", "who": "u", "text": "hi", "at": 1, "role": "customer"});
        r.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        m.apply(&r).expect("readable")
    };
    assert_eq!(
        r(json!({"kind": "note"})),
        Mapped::Skipped(SkipReason::Internal)
    );
    assert_eq!(
        r(json!({"role": "admin"})),
        Mapped::Skipped(SkipReason::Agent)
    );
    assert_eq!(
        r(json!({"role": null})),
        Mapped::Skipped(SkipReason::Agent),
        "missing or null reads as null, which is not in the list"
    );
    assert_eq!(
        r(json!({"event": "closed"})),
        Mapped::Skipped(SkipReason::Filtered)
    );
    assert!(matches!(r(json!({"role": "lead"})), Mapped::Message(_)));
    assert!(matches!(r(json!({"kind": "comment"})), Mapped::Message(_)));
}

#[test]
fn missing_and_non_scalar_fields_name_their_path_not_their_value() {
    let m = minimal_with("");
    let err = m
        .apply(&json!({"id": "m", "conv": "c", "text": "secret words", "at": 1}))
        .unwrap_err();
    assert_eq!(
        err,
        MappingError::Missing {
            path: "/who".into(),
            field: "customer_id".into()
        }
    );
    let err = m
        .apply(&json!({"id": "m", "conv": "c", "who": "u", "text": {"secret": "words"}, "at": 1}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field /text (for text) is an object, expected a string or number"
    );
    assert!(!err.to_string().contains("secret"));
    // Not an object at all: every path is missing.
    assert!(matches!(
        m.apply(&json!("just text")),
        Err(MappingError::Missing { .. })
    ));
}

#[test]
fn config_errors_name_the_offending_key() {
    let err = |yaml: &str| mapping(yaml).unwrap_err().to_string();
    assert_eq!(
        err("fields:\n  message_id: /id\n"),
        "topics.t.fields.conversation_id: required: give a path, a const or a preset"
    );
    let e = err(&MINIMAL.replace(
        "sent_at: /at",
        "sent_at: {path: /at, time: local, zone: Europe/Berln}",
    ));
    assert!(
        e.starts_with("topics.t.fields.sent_at: unknown time zone `Europe/Berln`"),
        "{e}"
    );
    let e = err(&MINIMAL.replace("text: /text", "text: body"));
    assert!(
        e.starts_with("topics.t.fields.text: `body` is not a JSON Pointer"),
        "{e}"
    );
    let e = err(&format!(
        "{MINIMAL}skip:\n  - {{path: /a, equals: 1, in: [2]}}\n"
    ));
    assert_eq!(
        e,
        "topics.t.skip[0]: give exactly one of `equals`, `in`, `not_in`"
    );
    let e = err(&format!("{MINIMAL}skip:\n  - {{path: a~2b, equals: 1}}\n"));
    assert!(e.starts_with("topics.t.skip[0].path:"), "{e}");
    let e = err(&MINIMAL.replace("text: /text", "txt: /text"));
    assert!(e.contains("topics.t.fields") && e.contains("txt"), "{e}");
    let e = err(&MINIMAL.replace("text: /text", "text: {path: /text, tim: epoch_s}"));
    assert!(e.contains("topics.t.fields") && e.contains("tim"), "{e}");
    let e = err(&MINIMAL.replace("text: /text", "text: {path: /text, time: epoch_s}"));
    assert_eq!(
        e,
        "topics.t.fields.text: `time` and `zone` apply to sent_at only"
    );
    let e = err("preset: zendeks\n");
    assert!(e.contains("zendeks"), "{e}");
    let e = parse(
        "topics:\n  other:\n    preset: zendesk\n",
        &["t".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "topics.other: `other` is not an input topic (--topics: t)"
    );
}

#[test]
fn presets_take_overrides_on_top() {
    let m = mapping(
        "preset: debezium
fields:
  text: /after/message_text
  sent_at: {path: /after/created_at, time: epoch_ms}
skip:
  - {path: /after/channel, equals: chat, reason: filtered}
",
    )
    .expect("valid");
    let mut record = fixture("debezium_create.json");
    record["after"]["message_text"] = json!("renamed column");
    record["after"]["created_at"] = json!(1_714_557_600_000i64);
    record["after"]["channel"] = json!("email");
    let msg = message(&m, &record);
    assert_eq!(msg.text, "renamed column");
    assert_eq!(msg.sent_at, 1_714_557_600_000);
    assert_eq!(msg.message_id, "msg-1001", "the preset's other fields stay");
    record["after"]["channel"] = json!("chat");
    assert_eq!(skipped(&m, &record), SkipReason::Filtered);
    assert_eq!(
        skipped(&m, &fixture("debezium_delete.json")),
        SkipReason::Delete,
        "the preset's skip rules stay"
    );
}

#[test]
fn every_preset_parses() {
    for p in [
        Preset::Debezium,
        Preset::Zendesk,
        Preset::Salesforce,
        Preset::Intercom,
    ] {
        Mapping::preset(p);
    }
}

#[test]
fn html_to_text_decodes_entities_and_drops_tags() {
    assert_eq!(
        html_to_text("<p>a &lt;b&gt; &amp; &#x41;&#66;</p><br/>c &unknown; & d<"),
        "a <b> & AB c &unknown; & d"
    );
}
