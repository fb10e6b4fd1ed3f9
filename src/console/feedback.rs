//! Agent feedback as data: one [`FeedbackEvent`] per console action
//! (`schemas/feedback_event.avsc`), produced idempotently with `acks=all` and awaited, so the
//! agent learns at once when a send failed.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use super::ConsoleConfig;
use super::state::MessageFacts;
use crate::config::Format;
use crate::message::Emotion;
use crate::schema::{SchemaRegistry, contract, contracts, encode_avro};

/// What the agent did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Accept,
    EditSend,
    Reject,
    Relabel,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::EditSend => "edit_send",
            Action::Reject => "reject",
            Action::Relabel => "relabel",
        }
    }
}

/// The body of `POST /api/feedback`. Everything else in the event comes from the console's own
/// state and the authenticated identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// Chosen by the page once per action and reused when it retries.
    pub event_id: String,
    pub message_id: String,
    pub action: Action,
    #[serde(default)]
    pub edited_text: Option<String>,
    #[serde(default)]
    pub corrected_label: Option<String>,
}

/// One agent action, exactly as `schemas/feedback_event.avsc` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    pub event_id: String,
    pub action: Action,
    pub message_id: String,
    pub draft_id: Option<String>,
    pub conversation_id: String,
    pub tenant_id: Option<String>,
    pub channel: String,
    pub model_version: String,
    pub predicted_label: String,
    pub template_id: Option<String>,
    pub edited_text: Option<String>,
    pub corrected_label: Option<String>,
    pub agent_id: String,
    pub created_at: i64,
}

/// Why a feedback request is refused before anything is sent (HTTP 400/409).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("event_id must be a UUID")]
    EventId,
    #[error("edit_send needs the edited text")]
    NoEditedText,
    #[error("relabel needs one of the eight emotion labels")]
    Label,
    #[error("the message has no emotion result yet")]
    NotLabelled,
    #[error("the message has no draft to {0}")]
    NoDraft(&'static str),
}

/// Builds the event for `req` on the message described by `facts`, acted on by `agent_id`.
pub fn build(
    req: FeedbackRequest,
    facts: MessageFacts,
    agent_id: &str,
    now_ms: i64,
) -> Result<FeedbackEvent, Invalid> {
    let event_id = uuid::Uuid::parse_str(&req.event_id)
        .map_err(|_| Invalid::EventId)?
        .to_string();
    let (Some(model_version), Some(predicted_label)) = (facts.model_version, facts.predicted_label)
    else {
        return Err(Invalid::NotLabelled);
    };
    let (edited_text, corrected_label) = match req.action {
        Action::EditSend => match req.edited_text {
            Some(t) if !t.trim().is_empty() => (Some(t), None),
            _ => return Err(Invalid::NoEditedText),
        },
        Action::Relabel => match req.corrected_label.as_deref().and_then(Emotion::parse) {
            Some(e) => (None, Some(e.as_str().to_string())),
            None => return Err(Invalid::Label),
        },
        Action::Accept | Action::Reject => (None, None),
    };
    if req.action != Action::Relabel && facts.draft.is_none() {
        return Err(Invalid::NoDraft(req.action.as_str()));
    }
    Ok(FeedbackEvent {
        event_id,
        action: req.action,
        message_id: req.message_id,
        draft_id: facts.draft.as_ref().map(|d| d.draft_id.clone()),
        conversation_id: facts.conversation_id,
        tenant_id: (!facts.tenant.is_empty()).then_some(facts.tenant),
        channel: facts.channel,
        model_version,
        predicted_label,
        template_id: facts.draft.map(|d| d.template_id),
        edited_text,
        corrected_label,
        agent_id: agent_id.to_string(),
        created_at: now_ms,
    })
}

/// Encodes `event` exactly as the console's [`Sender`] does for `topic` in `format` (Avro: the
/// Confluent wire format with the id `registry` gives `feedback_event.avsc`), e.g. for tests
/// that stand in for the console.
pub fn encode(
    event: &FeedbackEvent,
    format: Format,
    registry: &SchemaRegistry,
    topic: &str,
) -> Result<Vec<u8>, String> {
    let avro = match format {
        Format::Avro => {
            let schema = contract(contracts::FEEDBACK_EVENT);
            let id = registry
                .id_for(topic, "feedback_event.avsc", &schema)
                .map_err(|e| e.to_string())?;
            Some((schema, id))
        }
        Format::Json => None,
    };
    encode_with(event, format, avro.as_ref())
}

fn encode_with(
    event: &FeedbackEvent,
    format: Format,
    avro: Option<&(apache_avro::Schema, u32)>,
) -> Result<Vec<u8>, String> {
    match (format, avro) {
        (Format::Avro, Some((schema, id))) => {
            encode_avro(schema, *id, event).map_err(|e| e.to_string())
        }
        _ => serde_json::to_vec(event).map_err(|e| e.to_string()),
    }
}

/// Produces feedback events: idempotent, `acks=all`, each send awaited.
pub struct Sender {
    producer: FutureProducer,
    topic: String,
    format: Format,
    avro: Option<(apache_avro::Schema, u32)>,
    timeout: Duration,
}

impl Sender {
    pub fn new(cfg: &ConsoleConfig, registry: Arc<SchemaRegistry>) -> anyhow::Result<Sender> {
        // Lossless: the guarantees the operator's pass-through options may not weaken.
        let config = cfg.kafka.client_config(
            crate::config::Client::Producer,
            &[("linger.ms", "0".to_string())],
            &[
                ("enable.idempotence", "true".to_string()),
                ("acks", "all".to_string()),
                ("message.timeout.ms", cfg.feedback_timeout_ms.to_string()),
            ],
        )?;
        let avro = match cfg.output_format {
            Format::Avro => {
                let schema = contract(contracts::FEEDBACK_EVENT);
                let id = registry.id_for(&cfg.feedback_topic, "feedback_event.avsc", &schema)?;
                Some((schema, id))
            }
            Format::Json => None,
        };
        Ok(Sender {
            producer: config.create()?,
            topic: cfg.feedback_topic.clone(),
            format: cfg.output_format,
            avro,
            timeout: Duration::from_millis(cfg.feedback_timeout_ms),
        })
    }

    pub fn encode(&self, event: &FeedbackEvent) -> Result<Vec<u8>, String> {
        encode_with(event, self.format, self.avro.as_ref())
    }

    /// Sends and waits for the broker's acknowledgement; the error is safe to show and log
    /// (it never contains the event's text).
    pub async fn send(&self, event: &FeedbackEvent) -> Result<(), String> {
        let payload = self.encode(event)?;
        let record = FutureRecord::to(&self.topic)
            .key(event.conversation_id.as_str())
            .payload(&payload);
        self.producer
            .send(record, self.timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| format!("feedback not delivered to {}: {e}", self.topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::state::DraftFacts;

    fn facts(draft: bool) -> MessageFacts {
        MessageFacts {
            tenant: "acme".into(),
            conversation_id: "c1".into(),
            channel: "chat".into(),
            model_version: Some("m1".into()),
            predicted_label: Some("anger".into()),
            draft: draft.then(|| DraftFacts {
                draft_id: "d1".into(),
                template_id: "default/en/chat/de_escalate".into(),
            }),
        }
    }

    fn req(action: Action) -> FeedbackRequest {
        FeedbackRequest {
            event_id: "6f1c1c8e-8d8e-4b8e-9d55-6d3f6c1a2b3c".into(),
            message_id: "m1".into(),
            action,
            edited_text: None,
            corrected_label: None,
        }
    }

    #[test]
    fn agent_id_comes_from_the_identity_and_the_rest_from_the_console_state() {
        let ev = build(req(Action::Accept), facts(true), "alice", 42).unwrap();
        assert_eq!(ev.agent_id, "alice");
        assert_eq!(ev.draft_id.as_deref(), Some("d1"));
        assert_eq!(ev.model_version, "m1");
        assert_eq!(ev.tenant_id.as_deref(), Some("acme"));
        assert_eq!((ev.edited_text, ev.corrected_label), (None, None));
        // The page cannot smuggle an agent id: the request type has no such field.
        let forged = r#"{"event_id":"6f1c1c8e-8d8e-4b8e-9d55-6d3f6c1a2b3c","message_id":"m1","action":"accept","agent_id":"mallory"}"#;
        assert!(serde_json::from_str::<FeedbackRequest>(forged).is_err());
    }

    #[test]
    fn actions_need_their_fields() {
        assert_eq!(
            build(req(Action::EditSend), facts(true), "a", 0),
            Err(Invalid::NoEditedText)
        );
        let mut r = req(Action::Relabel);
        r.corrected_label = Some("furious".into());
        assert_eq!(build(r.clone(), facts(false), "a", 0), Err(Invalid::Label));
        r.corrected_label = Some("frustration".into());
        let ev = build(r, facts(false), "a", 0).unwrap();
        assert_eq!(ev.corrected_label.as_deref(), Some("frustration"));
        assert_eq!(ev.draft_id, None);
        assert_eq!(
            build(req(Action::Reject), facts(false), "a", 0),
            Err(Invalid::NoDraft("reject"))
        );
        let mut bad = req(Action::Accept);
        bad.event_id = "1".into();
        assert_eq!(build(bad, facts(true), "a", 0), Err(Invalid::EventId));
    }

    #[test]
    fn json_events_have_exactly_the_fields_of_both_published_schemas() {
        let json_schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/feedback_event.schema.json"))
                .expect("JSON Schema parses");
        let avro: serde_json::Value =
            serde_json::from_str(contracts::FEEDBACK_EVENT).expect("Avro schema parses");
        let avro_fields: Vec<&str> = avro["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let required: Vec<&str> = json_schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(required, avro_fields);
        let ev = build(req(Action::Accept), facts(true), "alice", 1).unwrap();
        let json = serde_json::to_value(&ev).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = avro_fields.clone();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want, "every field present, null where empty");
        let actions = &json_schema["properties"]["action"]["enum"];
        assert_eq!(
            actions,
            &serde_json::json!(["accept", "edit_send", "reject", "relabel"])
        );
    }

    #[test]
    fn events_encode_as_the_published_avro_schema() {
        let mut r = req(Action::EditSend);
        r.edited_text = Some("Sorry about that".into());
        let ev = build(r, facts(true), "alice", 1_700_000_000_000).unwrap();
        let schema = contract(contracts::FEEDBACK_EVENT);
        let bytes = encode_avro(&schema, 5, &ev).expect("encodes");
        let (id, mut body) = crate::decode::split_wire_format(&bytes).unwrap();
        assert_eq!(id, 5);
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .and_then(|r| r.read_value(&mut body))
            .unwrap();
        let back: FeedbackEvent = apache_avro::from_value(&value).unwrap();
        assert_eq!(back, ev);
    }
}
