//! Repeat contact (pure logic): a customer who keeps coming back unhappy. Given the customer's
//! negative messages within the window (including the one just observed), escalate when there
//! are at least M of them spread over at least C conversations; critical from a higher count.

use std::collections::HashSet;

use super::config::{EscalationConfig, secs_to_ms};
use super::event::{Detection, EscalationKind, Severity, WindowStats};

/// One negative message of a customer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Contact {
    /// Event time, ms.
    pub event_ms: i64,
    /// Hash of the conversation (only compared, never shown).
    pub conversation: String,
    pub message_id: String,
}

/// `contacts` are the customer's negative messages, any order; `event_ms` is the current
/// message's event time, which ends the window.
pub(crate) fn assess(
    cfg: &EscalationConfig,
    contacts: &[Contact],
    event_ms: i64,
) -> Option<Detection> {
    let window_start = event_ms.saturating_sub(secs_to_ms(cfg.repeat_window_secs));
    let mut in_window: Vec<&Contact> = contacts
        .iter()
        .filter(|c| c.event_ms >= window_start)
        .collect();
    in_window.sort_by_key(|c| c.event_ms);
    let count = in_window.len();
    let conversations = in_window
        .iter()
        .map(|c| c.conversation.as_str())
        .collect::<HashSet<_>>()
        .len();
    if count < cfg.repeat_min_messages || conversations < cfg.repeat_min_conversations {
        return None;
    }
    let severity = if count >= cfg.repeat_critical_messages {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let skip = count.saturating_sub(cfg.max_trigger_ids);
    Some(Detection {
        kind: EscalationKind::RepeatContact,
        severity,
        reasons: vec!["repeat_contact"],
        stats: WindowStats {
            window_start,
            window_end: event_ms,
            message_count: count as i64,
            negative_count: count as i64,
            negative_rate: None,
            baseline_count: None,
            baseline_rate: None,
            conversation_count: Some(conversations as i64),
            score: count as f64,
            threshold: cfg.repeat_min_messages as f64,
        },
        trigger_message_ids: in_window[skip..]
            .iter()
            .map(|c| c.message_id.clone())
            .collect(),
        first_seen: in_window.first().map_or(event_ms, |c| c.event_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn contact(hours: i64, conversation: &str, id: &str) -> Contact {
        Contact {
            event_ms: hours * HOUR_MS,
            conversation: conversation.into(),
            message_id: id.into(),
        }
    }

    #[test]
    fn three_negative_messages_over_two_conversations_escalate() {
        let cfg = EscalationConfig::default();
        let contacts = vec![
            contact(100, "c1", "a"),
            contact(101, "c1", "b"),
            contact(105, "c2", "c"),
        ];
        let detection = assess(&cfg, &contacts, 105 * HOUR_MS).expect("escalates");
        assert_eq!(detection.kind, EscalationKind::RepeatContact);
        assert_eq!(detection.severity, Severity::Warning);
        assert_eq!(detection.trigger_message_ids, vec!["a", "b", "c"]);
        assert_eq!(detection.stats.conversation_count, Some(2));
        assert_eq!(detection.first_seen, 100 * HOUR_MS);
    }

    #[test]
    fn negative_messages_in_one_conversation_are_not_a_repeat_contact() {
        let cfg = EscalationConfig::default();
        let contacts: Vec<Contact> = (0..5)
            .map(|i| contact(100, "c1", &format!("m{i}")))
            .collect();
        assert_eq!(assess(&cfg, &contacts, 100 * HOUR_MS), None);
    }

    #[test]
    fn contacts_older_than_the_window_do_not_count() {
        let cfg = EscalationConfig::default();
        let contacts = vec![
            contact(10, "c1", "old"),
            contact(100, "c2", "b"),
            contact(101, "c3", "c"),
        ];
        assert_eq!(assess(&cfg, &contacts, 101 * HOUR_MS), None);
    }

    #[test]
    fn many_negative_contacts_are_critical() {
        let cfg = EscalationConfig::default();
        let contacts: Vec<Contact> = (0..6)
            .map(|i| contact(100 + i, &format!("c{i}"), &format!("m{i}")))
            .collect();
        let detection = assess(&cfg, &contacts, 105 * HOUR_MS).expect("escalates");
        assert_eq!(detection.severity, Severity::Critical);
    }
}
