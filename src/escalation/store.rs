//! What the escalation state stores hold and how it is keyed, shared by the Redis backend
//! (`redis_store.rs`, shared by all replicas) and the in-memory one (`memory_store.rs`, per
//! replica, used without Redis or while Redis is unavailable). Both answer the same two calls:
//!
//! - `record`: append the message to its conversation window, customer contacts and surge
//!   bucket, and read back the windows the detectors need (one Lua script per message; a
//!   round of messages is one Redis pipeline, one round trip);
//! - `claim`: take the cooldown of each detection (one more round trip, only when something
//!   was detected).
//!
//! Key layout (`<p>` = `--redis-key-prefix`; `<h>` = UUID v5 of the tenant and id, so no raw
//! customer or conversation id appears in a key):
//!
//! | key | type | content | TTL |
//! |---|---|---|---|
//! | `<p>:esc:conv:<h>` | list | last N turns `event_ms \t negativity \t emotion \t confidence \t message_id` | trend TTL |
//! | `<p>:esc:cust:<h>` | zset | negative messages `conversation hash \t message_id`, score = event ms | repeat window |
//! | `<p>:esc:surge:<h>:b` | hash | `t:<bucket>` total, `n:<bucket>` negative messages per bucket (read in one `HMGET`) | windows + late tolerance, refreshed by writes; buckets past it dropped |
//! | `<p>:esc:surge:<h>:neg` | list | latest negatives `event_ms \t message_id` | same |
//! | `<p>:esc:cooldown:<kind>:<h>` | string | `severity:token` of the scope's open event | kind's cooldown |
//! | `<p>:esc:incident:cust:<h>`, `<p>:esc:incident:surge:<h>` | string | id of the open incident (its first event's `escalation_id`) | the longest cooldown opened in it |

use uuid::Uuid;

use crate::message::{CustomerMessage, Emotion, EmotionResult};

use super::config::EscalationConfig;
use super::event::{EscalationKind, Severity};
use super::repeat::Contact;
use super::surge::{SurgeScope, SurgeWindow};
use super::trend::{Turn, counts_as_negative};

/// Namespace of the key hashes (UUID v5).
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6d6f_6f64_7374_7265_616d_6b65_7973_0001);

/// Hex UUID v5 of the parts: stable across replicas and releases, and not reversible without
/// guessing the ids.
pub(crate) fn hash_id(parts: &[&str]) -> String {
    let joined = parts.join("\u{1f}");
    Uuid::new_v5(&KEY_NAMESPACE, joined.as_bytes())
        .simple()
        .to_string()
}

/// The keys one message touches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Keys {
    pub conversation: String,
    pub customer: String,
    /// The bucket hash is this plus `b`; the negatives list is this plus `neg`.
    pub surge_prefix: String,
    pub conversation_hash: String,
    pub customer_hash: String,
    pub surge_hash: String,
    prefix: String,
}

impl Keys {
    fn new(prefix: &str, msg: &CustomerMessage, surge: &SurgeScope) -> Self {
        let tenant = msg.tenant_id.as_deref().unwrap_or_default();
        let conversation_hash = hash_id(&[tenant, &msg.conversation_id]);
        let customer_hash = hash_id(&[tenant, &msg.customer_id]);
        let surge_hash = hash_id(&[&surge.label]);
        Self {
            conversation: format!("{prefix}:esc:conv:{conversation_hash}"),
            customer: format!("{prefix}:esc:cust:{customer_hash}"),
            surge_prefix: format!("{prefix}:esc:surge:{surge_hash}:"),
            conversation_hash,
            customer_hash,
            surge_hash,
            prefix: prefix.to_owned(),
        }
    }

    /// The incident a detection of `kind` belongs to: the customer's (conversation trend and
    /// repeat contact are one customer's problem) or the surge scope's.
    pub fn incident(&self, kind: EscalationKind) -> String {
        match kind {
            EscalationKind::ConversationTrend | EscalationKind::RepeatContact => {
                format!("{}:esc:incident:cust:{}", self.prefix, self.customer_hash)
            }
            EscalationKind::Surge => {
                format!("{}:esc:incident:surge:{}", self.prefix, self.surge_hash)
            }
        }
    }

    pub fn cooldown(&self, kind: EscalationKind) -> String {
        let hash = match kind {
            EscalationKind::ConversationTrend => &self.conversation_hash,
            EscalationKind::RepeatContact => &self.customer_hash,
            EscalationKind::Surge => &self.surge_hash,
        };
        format!("{}:esc:cooldown:{}:{hash}", self.prefix, kind.as_str())
    }
}

/// One message, as the stores record it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    /// Processing time of this replica (expiry of in-memory state, `detected_at`).
    pub now_ms: i64,
    /// Event time of the windows: the watermark of the message's input partition (the latest
    /// `sent_at` seen there, never past processing time), so a backlog replayed after downtime
    /// is judged at the times its messages were sent, as it was live.
    pub clock_ms: i64,
    /// `sent_at`, clamped: future times become the event clock; times older than the late
    /// tolerance (behind the watermark) become the event clock too (the current bucket).
    pub event_ms: i64,
    /// `sent_at` was older than the late tolerance.
    pub late: bool,
    pub negative: bool,
    pub turn: Turn,
    pub keys: Keys,
    pub surge: SurgeScope,
    pub event_bucket: i64,
    pub now_bucket: i64,
}

impl Record {
    /// A message judged at processing time (`clock_ms` = `now_ms`).
    #[cfg(test)]
    pub fn new(
        cfg: &EscalationConfig,
        msg: &CustomerMessage,
        result: &EmotionResult,
        now_ms: i64,
    ) -> Self {
        Self::at(cfg, msg, result, now_ms, now_ms)
    }

    /// A message judged at event time `clock_ms` (its partition's watermark).
    pub fn at(
        cfg: &EscalationConfig,
        msg: &CustomerMessage,
        result: &EmotionResult,
        now_ms: i64,
        clock_ms: i64,
    ) -> Self {
        let tolerance = i64::try_from(cfg.late_tolerance_ms).unwrap_or(i64::MAX);
        let late = msg.sent_at < clock_ms.saturating_sub(tolerance);
        let event_ms = if late {
            clock_ms
        } else {
            msg.sent_at.min(clock_ms)
        };
        let emotion = result.primary();
        let negative = counts_as_negative(emotion, result.negativity, cfg.negativity_threshold);
        let surge = SurgeScope::of(&cfg.surge_scope, msg);
        let bucket_ms = cfg.bucket_ms();
        Self {
            now_ms,
            clock_ms,
            event_ms,
            late,
            negative,
            turn: Turn::new(
                event_ms,
                result.negativity,
                emotion,
                result.confidence,
                msg.message_id.clone(),
            ),
            keys: Keys::new(&cfg.redis_key_prefix, msg, &surge),
            surge,
            event_bucket: event_ms.div_euclid(bucket_ms),
            now_bucket: clock_ms.div_euclid(bucket_ms),
        }
    }

    /// Cut-off of the customer's repeat-contact window.
    pub fn repeat_cutoff_ms(&self, cfg: &EscalationConfig) -> i64 {
        self.event_ms
            .saturating_sub(super::config::secs_to_ms(cfg.repeat_window_secs))
    }
}

/// The windows after recording a message.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Snapshot {
    /// The message was already in its conversation window (a redelivery): nothing was counted
    /// again.
    pub duplicate: bool,
    /// The conversation's turns, oldest first, ending with this message (a duplicate: the
    /// newest turns, this message's somewhere among them, if not trimmed away).
    pub turns: Vec<Turn>,
    /// Severity of the conversation's open trend incident, if any.
    pub conversation_cooldown: Option<Severity>,
    /// The customer's negative messages in the window; read only for a negative message.
    pub contacts: Vec<Contact>,
    /// The surge scope's counts; read only for a negative message.
    pub surge: Option<SurgeWindow>,
}

/// A request to open (or upgrade) the incident of one scope and kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Claim {
    pub key: String,
    pub severity: Severity,
    /// Identifies the triggering message, so its redelivery republishes instead of being
    /// suppressed by its own cooldown.
    pub token: String,
    pub ttl_secs: u64,
    /// `Keys::incident` of the detection.
    pub incident_key: String,
    /// The event's own `escalation_id`: the incident's id if this claim opens the incident.
    pub incident_id: String,
}

impl Claim {
    pub fn stored_value(&self) -> String {
        format!("{}:{}", self.severity.as_str(), self.token)
    }
}

/// A claim's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub outcome: ClaimOutcome,
    /// The open incident the event belongs to (empty when suppressed).
    pub incident_id: String,
}

/// What a claim did; the event is published unless it was suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimOutcome {
    /// Another event for this scope and kind is inside its cooldown.
    Suppressed,
    /// No open incident: this one opens it.
    Opened,
    /// The open incident was a warning and this is critical: upgraded (once).
    Upgraded,
    /// The message that opened or upgraded the incident came again (redelivery).
    Redelivered,
}

impl ClaimOutcome {
    pub fn publishes(self) -> bool {
        self != ClaimOutcome::Suppressed
    }

    pub(crate) fn from_code(code: i64) -> ClaimOutcome {
        match code {
            1 => ClaimOutcome::Opened,
            2 => ClaimOutcome::Upgraded,
            3 => ClaimOutcome::Redelivered,
            _ => ClaimOutcome::Suppressed,
        }
    }
}

/// The cooldown rule, given the incident currently open (`severity:token`), if any. The Redis
/// claim script implements the same rule atomically.
pub(crate) fn decide_claim(current: Option<&str>, claim: &Claim) -> ClaimOutcome {
    let Some(current) = current else {
        return ClaimOutcome::Opened;
    };
    let (severity, token) = current.split_once(':').unwrap_or((current, ""));
    if token == claim.token && severity == claim.severity.as_str() {
        ClaimOutcome::Redelivered
    } else if severity == Severity::Warning.as_str() && claim.severity == Severity::Critical {
        ClaimOutcome::Upgraded
    } else {
        ClaimOutcome::Suppressed
    }
}

/// Severity of a stored cooldown value.
pub(crate) fn cooldown_severity(value: &str) -> Option<Severity> {
    Severity::parse(
        value
            .split_once(':')
            .map_or(value, |(severity, _)| severity),
    )
}

pub(crate) fn encode_turn(turn: &Turn) -> String {
    format!(
        "{}\t{:.4}\t{}\t{:.4}\t{}",
        turn.event_ms,
        turn.negativity,
        turn.emotion.as_str(),
        turn.confidence,
        turn.message_id
    )
}

pub(crate) fn decode_turn(s: &str) -> Option<Turn> {
    let mut parts = s.splitn(5, '\t');
    let event_ms = parts.next()?.parse().ok()?;
    let negativity = parts.next()?.parse().ok()?;
    let emotion = Emotion::parse(parts.next()?)?;
    let confidence = parts.next()?.parse().ok()?;
    let message_id = parts.next()?.to_owned();
    Some(Turn::new(
        event_ms, negativity, emotion, confidence, message_id,
    ))
}

/// Member of the customer's contact set (the score carries the event time).
pub(crate) fn encode_contact_member(conversation_hash: &str, message_id: &str) -> String {
    format!("{conversation_hash}\t{message_id}")
}

pub(crate) fn decode_contact(member: &str, event_ms: i64) -> Option<Contact> {
    let (conversation, message_id) = member.split_once('\t')?;
    Some(Contact {
        event_ms,
        conversation: conversation.to_owned(),
        message_id: message_id.to_owned(),
    })
}

pub(crate) fn encode_negative(event_ms: i64, message_id: &str) -> String {
    format!("{event_ms}\t{message_id}")
}

pub(crate) fn decode_negative(s: &str) -> Option<(i64, String)> {
    let (ts, id) = s.split_once('\t')?;
    Some((ts.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::tests::{message, result};

    #[test]
    fn turns_round_trip_through_their_encoding() {
        let turn = Turn::new(
            1_700_000_000_123,
            0.83337,
            Emotion::Anger,
            0.9,
            "id\twith tab".into(),
        );
        assert_eq!(decode_turn(&encode_turn(&turn)), Some(turn));
        assert_eq!(decode_turn("garbage"), None);
    }

    #[test]
    fn keys_are_namespaced_and_hide_raw_ids() {
        let cfg = EscalationConfig::default();
        let msg = message("m1", "conv-42", "customer-7", 5_000);
        let rec = Record::new(&cfg, &msg, &result(&msg, Emotion::Neutral, 0.1, 0.9), 5_000);
        for key in [
            &rec.keys.conversation,
            &rec.keys.customer,
            &rec.keys.surge_prefix,
            &rec.keys.cooldown(EscalationKind::RepeatContact),
        ] {
            assert!(key.starts_with("moodstream:esc:"), "{key}");
            assert!(
                !key.contains("customer-7") && !key.contains("conv-42"),
                "{key}"
            );
        }
        assert_eq!(rec.keys.conversation_hash.len(), 32);
    }

    #[test]
    fn late_and_future_messages_are_clamped_to_now() {
        let cfg = EscalationConfig::default();
        let now = 1_000_000_000;
        let at = |sent_at| {
            let msg = message("m1", "c", "u", sent_at);
            Record::new(&cfg, &msg, &result(&msg, Emotion::Neutral, 0.1, 0.9), now)
        };
        let on_time = at(now - 30_000);
        assert_eq!((on_time.event_ms, on_time.late), (now - 30_000, false));
        assert_eq!(on_time.event_bucket, on_time.now_bucket - 3);
        let late = at(now - 120_001);
        assert_eq!((late.event_ms, late.late), (now, true));
        let future = at(now + 60_000);
        assert_eq!((future.event_ms, future.late), (now, false));
    }

    #[test]
    fn claim_rule_allows_one_upgrade_and_redelivery() {
        let claim = |severity, token: &str| Claim {
            key: "k".into(),
            severity,
            token: token.into(),
            ttl_secs: 60,
            incident_key: "i".into(),
            incident_id: format!("e-{token}"),
        };
        let warning_a = claim(Severity::Warning, "a");
        assert_eq!(decide_claim(None, &warning_a), ClaimOutcome::Opened);
        let open = warning_a.stored_value();
        assert_eq!(
            decide_claim(Some(&open), &claim(Severity::Warning, "b")),
            ClaimOutcome::Suppressed
        );
        assert_eq!(
            decide_claim(Some(&open), &warning_a),
            ClaimOutcome::Redelivered
        );
        let critical_c = claim(Severity::Critical, "c");
        assert_eq!(
            decide_claim(Some(&open), &critical_c),
            ClaimOutcome::Upgraded
        );
        let upgraded = critical_c.stored_value();
        assert_eq!(
            decide_claim(Some(&upgraded), &claim(Severity::Critical, "d")),
            ClaimOutcome::Suppressed
        );
        assert_eq!(
            decide_claim(Some(&upgraded), &critical_c),
            ClaimOutcome::Redelivered
        );
        assert_eq!(cooldown_severity(&upgraded), Some(Severity::Critical));
    }
}
