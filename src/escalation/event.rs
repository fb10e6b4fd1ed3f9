//! The escalation event published to the `escalations` topic (`schemas/escalation_event.avsc`,
//! or JSON with the same field names), and the detection it is built from.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The Avro schema of [`EscalationEvent`].
pub const ESCALATION_EVENT_SCHEMA: &str = include_str!("../../schemas/escalation_event.avsc");

/// Namespace of escalation ids (UUID v5), so the same trigger always yields the same id.
const ESCALATION_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d6f_6f64_7374_7265_616d_6573_6361_6c31);

/// What kind of incident an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationKind {
    ConversationTrend,
    RepeatContact,
    Surge,
}

impl EscalationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationKind::ConversationTrend => "conversation_trend",
            EscalationKind::RepeatContact => "repeat_contact",
            EscalationKind::Surge => "surge",
        }
    }
}

/// How urgent an incident is; an open warning may be upgraded to critical once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// One escalation, exactly as `schemas/escalation_event.avsc` describes it (the schema's field
/// docs explain each statistic per kind). Timestamps are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationEvent {
    pub escalation_id: String,
    /// The `escalation_id` of the event that opened this event's incident (this one's own when
    /// it opened it); `None` only when read from an event written before the field existed.
    pub incident_id: Option<String>,
    pub kind: EscalationKind,
    pub severity: Severity,
    pub reasons: Vec<String>,
    pub scope: String,
    pub tenant_id: Option<String>,
    pub channel: Option<String>,
    pub conversation_id: Option<String>,
    /// Personal data: fine in the payload, never in logs or metrics.
    pub customer_id: Option<String>,
    pub window_start: i64,
    pub window_end: i64,
    pub message_count: i64,
    pub negative_count: i64,
    pub negative_rate: Option<f64>,
    pub baseline_count: Option<i64>,
    pub baseline_rate: Option<f64>,
    pub conversation_count: Option<i64>,
    pub score: f64,
    pub threshold: f64,
    pub trigger_message_ids: Vec<String>,
    pub first_seen: i64,
    pub detected_at: i64,
    pub degraded: bool,
    /// The `model_version` that scored the triggering message.
    pub model_version: Option<String>,
}

impl EscalationEvent {
    /// The Kafka key: the scope, so one incident's events stay in one partition, in order.
    pub fn key(&self) -> String {
        self.scope.clone()
    }
}

/// Window statistics of a detection; see the schema for their meaning per kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct WindowStats {
    pub window_start: i64,
    pub window_end: i64,
    pub message_count: i64,
    pub negative_count: i64,
    pub negative_rate: Option<f64>,
    pub baseline_count: Option<i64>,
    pub baseline_rate: Option<f64>,
    pub conversation_count: Option<i64>,
    pub score: f64,
    pub threshold: f64,
}

/// What the pure window logic found, before the cooldown decides whether it is published.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Detection {
    pub kind: EscalationKind,
    pub severity: Severity,
    pub reasons: Vec<&'static str>,
    pub stats: WindowStats,
    /// Oldest first, at most `max_trigger_ids`.
    pub trigger_message_ids: Vec<String>,
    pub first_seen: i64,
}

/// Who an incident is about: the event's scope fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ScopeFields {
    /// The event's `scope` (and Kafka key).
    pub scope: String,
    pub tenant_id: Option<String>,
    pub channel: Option<String>,
    pub conversation_id: Option<String>,
    pub customer_id: Option<String>,
}

impl Detection {
    /// The event for this detection, triggered by `message_id` and raised at `detected_at`.
    pub fn into_event(
        self,
        fields: ScopeFields,
        message_id: &str,
        detected_at: i64,
        degraded: bool,
    ) -> EscalationEvent {
        let id_source = format!(
            "{}|{}|{}|{message_id}",
            self.kind.as_str(),
            fields.scope,
            self.severity.as_str()
        );
        let WindowStats {
            window_start,
            window_end,
            message_count,
            negative_count,
            negative_rate,
            baseline_count,
            baseline_rate,
            conversation_count,
            score,
            threshold,
        } = self.stats;
        let escalation_id =
            Uuid::new_v5(&ESCALATION_ID_NAMESPACE, id_source.as_bytes()).to_string();
        EscalationEvent {
            // Until a claim says which incident is open.
            incident_id: Some(escalation_id.clone()),
            escalation_id,
            kind: self.kind,
            severity: self.severity,
            reasons: self.reasons.into_iter().map(str::to_owned).collect(),
            scope: fields.scope,
            tenant_id: fields.tenant_id,
            channel: fields.channel,
            conversation_id: fields.conversation_id,
            customer_id: fields.customer_id,
            window_start,
            window_end,
            message_count,
            negative_count,
            negative_rate,
            baseline_count,
            baseline_rate,
            conversation_count,
            score,
            threshold,
            trigger_message_ids: self.trigger_message_ids,
            first_seen: self.first_seen,
            detected_at,
            degraded,
            model_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::Schema;
    use apache_avro::reader::datum::GenericDatumReader;
    use apache_avro::types::Value;
    use apache_avro::writer::datum::GenericDatumWriter;

    use super::*;

    fn sample(optional: bool) -> EscalationEvent {
        let detection = Detection {
            kind: EscalationKind::Surge,
            severity: Severity::Critical,
            reasons: vec!["negative_rate_factor", "negative_rate_zscore"],
            stats: WindowStats {
                window_start: 1_700_000_000_000,
                window_end: 1_700_000_060_000,
                message_count: 120,
                negative_count: 80,
                negative_rate: optional.then_some(0.66),
                baseline_count: optional.then_some(900),
                baseline_rate: optional.then_some(0.1),
                conversation_count: None,
                score: 20.5,
                threshold: 3.0,
            },
            trigger_message_ids: vec!["m-1".into(), "m-2".into()],
            first_seen: 1_700_000_001_000,
        };
        let fields = ScopeFields {
            scope: "surge:tenant=acme,channel=chat".into(),
            tenant_id: optional.then(|| "acme".to_owned()),
            channel: Some("chat".into()),
            conversation_id: None,
            customer_id: None,
        };
        detection.into_event(fields, "m-2", 1_700_000_060_500, false)
    }

    fn schema() -> Schema {
        Schema::parse_str(ESCALATION_EVENT_SCHEMA).expect("schema parses")
    }

    #[test]
    fn event_serialises_to_values_that_validate_against_the_avro_schema() {
        let schema = schema();
        for optional in [true, false] {
            let value = apache_avro::to_value(sample(optional)).expect("to_value");
            assert!(value.validate(&schema), "does not validate: {value:?}");
            let resolved = value.resolve(&schema).expect("resolves");
            let datum = GenericDatumWriter::builder(&schema)
                .build()
                .and_then(|w| w.write_value_to_vec(resolved))
                .expect("encodes");
            let decoded = GenericDatumReader::builder(&schema)
                .build()
                .and_then(|r| r.read_value(&mut datum.as_slice()))
                .expect("decodes");
            let back: EscalationEvent = apache_avro::from_value(&decoded).expect("from_value");
            assert_eq!(back, sample(optional));
        }
    }

    #[test]
    fn struct_fields_match_schema_fields_in_order() {
        let Schema::Record(record) = schema() else {
            panic!("schema is not a record");
        };
        assert_eq!(record.name.fullname(None), "io.moodstream.EscalationEvent");
        let schema_fields: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        let Value::Record(values) = apache_avro::to_value(sample(true)).expect("to_value") else {
            panic!("event is not a record");
        };
        let struct_fields: Vec<&str> = values.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(struct_fields, schema_fields);
        for field in &record.fields {
            if let Schema::Union(union) = &field.schema {
                assert_eq!(
                    union.variants()[0],
                    Schema::Null,
                    "{} null first",
                    field.name
                );
                assert_eq!(
                    field.default,
                    Some(serde_json::Value::Null),
                    "{} defaults to null",
                    field.name
                );
            }
        }
    }

    #[test]
    fn event_json_uses_schema_symbols() {
        let json = serde_json::to_value(sample(true)).expect("json");
        assert_eq!(json["kind"], "surge");
        assert_eq!(json["severity"], "critical");
        assert_eq!(json["window_start"], 1_700_000_000_000_i64);
    }

    #[test]
    fn same_trigger_yields_same_escalation_id() {
        assert_eq!(sample(true).escalation_id, sample(false).escalation_id);
        assert_eq!(sample(true).key(), "surge:tenant=acme,channel=chat");
    }
}
