//! Which label the agents gave a message, from all the feedback events on it.
//!
//! The rule, applied per message after events are deduplicated by `event_id` (the console
//! retries a send with the same id):
//!
//! 1. `reject` carries no label: it is counted, never exported, and does not replace the
//!    agent's earlier label.
//! 2. `relabel` votes for its `corrected_label` (strong); `accept` and `edit_send` vote for the
//!    `predicted_label` the agent saw (weak, `label_source: "accepted"`). An event whose label
//!    is not one of the eight emotions is invalid and ignored.
//! 3. Per agent, only that agent's latest labelling event counts (by `created_at`; among equal
//!    times, the one read last): an agent who changes their mind is counted once, for the last
//!    choice.
//! 4. If any agent's counted event is a relabel, relabels decide and accepts are ignored;
//!    otherwise the accepts decide. The label with the most distinct agents wins; a tie between
//!    different labels drops the message as `conflict`.
//! 5. A message with no valid labelling event is dropped as `invalid` when it had invalid
//!    events, else as `rejected` (rejects only).
//!
//! The exported `model_version`, `predicted_label` and `feedback_at` come from the latest of
//! the winning label's counted events.

use std::collections::{BTreeMap, BTreeSet};

use crate::console::feedback::{Action, FeedbackEvent};
use crate::message::Emotion;

/// Where the exported label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// An agent corrected the model.
    Relabel,
    /// Agents accepted (or edited and sent) a draft made for the model's label.
    Accepted,
}

impl LabelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelSource::Relabel => "relabel",
            LabelSource::Accepted => "accepted",
        }
    }
}

/// Why a message with feedback is not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dropped {
    /// Different labels with equally many agents.
    Conflict,
    /// Its only labelling events name no known emotion.
    Invalid,
    /// Only rejects: no label.
    Rejected,
    /// The message text was not found on the input topics.
    NoText,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Conflict => "conflict",
            Dropped::Invalid => "invalid",
            Dropped::Rejected => "rejected",
            Dropped::NoText => "no_text",
        }
    }
}

/// The agents' verdict on one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub label: Emotion,
    pub source: LabelSource,
    /// Distinct agents whose counted event supports the label.
    pub agents: usize,
    /// The latest of those events.
    pub latest: &'a FeedbackEvent,
}

/// The label of a message from its (deduplicated) events, in read order.
pub fn decide(events: &[FeedbackEvent]) -> Result<Verdict<'_>, Dropped> {
    let mut invalid = false;
    // agent → (created_at, read order, event, label): that agent's latest labelling event.
    let mut latest: BTreeMap<&str, (i64, usize, &FeedbackEvent, Emotion)> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        let label = match ev.action {
            Action::Reject => continue,
            Action::Relabel => ev.corrected_label.as_deref(),
            Action::Accept | Action::EditSend => Some(ev.predicted_label.as_str()),
        };
        let Some(label) = label.and_then(Emotion::parse) else {
            invalid = true;
            continue;
        };
        let newer = latest
            .get(ev.agent_id.as_str())
            .is_none_or(|(at, _, _, _)| ev.created_at >= *at);
        if newer {
            latest.insert(&ev.agent_id, (ev.created_at, i, ev, label));
        }
    }
    if latest.is_empty() {
        return Err(if invalid {
            Dropped::Invalid
        } else {
            Dropped::Rejected
        });
    }
    let relabelled = latest
        .values()
        .any(|(_, _, ev, _)| ev.action == Action::Relabel);
    let (source, counted): (LabelSource, Vec<_>) = if relabelled {
        (
            LabelSource::Relabel,
            latest
                .values()
                .filter(|(_, _, ev, _)| ev.action == Action::Relabel)
                .collect(),
        )
    } else {
        (LabelSource::Accepted, latest.values().collect())
    };
    let mut votes: BTreeMap<Emotion, BTreeSet<&str>> = BTreeMap::new();
    for (_, _, ev, label) in &counted {
        votes.entry(*label).or_default().insert(&ev.agent_id);
    }
    let most = votes.values().map(BTreeSet::len).max().unwrap_or(0);
    let mut winners = votes.iter().filter(|(_, agents)| agents.len() == most);
    let (label, agents) = winners
        .next()
        .expect("at least one vote: latest is not empty");
    if winners.next().is_some() {
        return Err(Dropped::Conflict);
    }
    let (_, _, ev, _) = counted
        .iter()
        .filter(|(_, _, _, l)| l == label)
        .max_by_key(|(at, i, _, _)| (*at, *i))
        .expect("the winning label has a vote");
    Ok(Verdict {
        label: *label,
        source,
        agents: agents.len(),
        latest: ev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, agent: &str, action: Action, label: Option<&str>, at: i64) -> FeedbackEvent {
        FeedbackEvent {
            event_id: id.into(),
            action,
            message_id: "m1".into(),
            draft_id: None,
            conversation_id: "c1".into(),
            tenant_id: None,
            channel: "chat".into(),
            model_version: format!("v{at}"),
            predicted_label: "neutral".into(),
            template_id: None,
            edited_text: None,
            corrected_label: label.map(String::from),
            agent_id: agent.into(),
            created_at: at,
        }
    }

    fn relabel(agent: &str, label: &str, at: i64) -> FeedbackEvent {
        ev(
            &format!("{agent}{at}"),
            agent,
            Action::Relabel,
            Some(label),
            at,
        )
    }

    fn accept(agent: &str, at: i64) -> FeedbackEvent {
        ev(&format!("{agent}{at}"), agent, Action::Accept, None, at)
    }

    fn outcome(events: &[FeedbackEvent]) -> Result<(Emotion, LabelSource, usize, i64), Dropped> {
        decide(events).map(|v| (v.label, v.source, v.agents, v.latest.created_at))
    }

    #[test]
    fn accepts_and_edit_sends_label_the_prediction_weakly() {
        let mut edit = ev("e", "bob", Action::EditSend, None, 3);
        edit.edited_text = Some("Sorry".into());
        assert_eq!(
            outcome(&[accept("alice", 1), edit]),
            Ok((Emotion::Neutral, LabelSource::Accepted, 2, 3))
        );
    }

    #[test]
    fn a_relabel_beats_any_number_of_accepts() {
        assert_eq!(
            outcome(&[
                accept("a", 1),
                accept("b", 2),
                relabel("c", "anger", 3),
                accept("d", 4)
            ]),
            Ok((Emotion::Anger, LabelSource::Relabel, 1, 3))
        );
    }

    #[test]
    fn among_relabels_the_label_with_most_agents_wins() {
        assert_eq!(
            outcome(&[
                relabel("a", "anger", 1),
                relabel("b", "frustration", 2),
                relabel("c", "anger", 3),
            ]),
            Ok((Emotion::Anger, LabelSource::Relabel, 2, 3))
        );
    }

    #[test]
    fn a_tie_between_different_labels_is_a_conflict() {
        assert_eq!(
            outcome(&[relabel("a", "anger", 1), relabel("b", "frustration", 2)]),
            Err(Dropped::Conflict)
        );
        // Agreement is no conflict, however many agents.
        assert_eq!(
            outcome(&[relabel("a", "anger", 1), relabel("b", "anger", 2)]),
            Ok((Emotion::Anger, LabelSource::Relabel, 2, 2))
        );
    }

    #[test]
    fn only_each_agents_latest_labelling_event_counts() {
        // Alice changed her mind: anger, then frustration. Bob says anger. One vote each: tie.
        assert_eq!(
            outcome(&[
                relabel("alice", "anger", 1),
                relabel("bob", "anger", 2),
                relabel("alice", "frustration", 3),
            ]),
            Err(Dropped::Conflict)
        );
        // Alice relabelled, then accepted the draft: her vote is now a weak one.
        assert_eq!(
            outcome(&[relabel("alice", "anger", 1), accept("alice", 2)]),
            Ok((Emotion::Neutral, LabelSource::Accepted, 1, 2))
        );
        // Late arrival of an older event does not undo a newer one.
        assert_eq!(
            outcome(&[relabel("alice", "anxiety", 5), relabel("alice", "anger", 1)]),
            Ok((Emotion::Anxiety, LabelSource::Relabel, 1, 5))
        );
    }

    #[test]
    fn a_reject_carries_no_label_and_does_not_replace_one() {
        let reject = |agent: &str, at| ev(&format!("r{at}"), agent, Action::Reject, None, at);
        assert_eq!(
            outcome(&[reject("a", 1), reject("b", 2)]),
            Err(Dropped::Rejected)
        );
        assert_eq!(
            outcome(&[relabel("a", "confusion", 1), reject("a", 2)]),
            Ok((Emotion::Confusion, LabelSource::Relabel, 1, 1))
        );
    }

    #[test]
    fn unknown_labels_are_invalid() {
        assert_eq!(
            outcome(&[relabel("a", "furious", 1)]),
            Err(Dropped::Invalid)
        );
        let mut odd = accept("b", 2);
        odd.predicted_label = "joy".into();
        assert_eq!(outcome(&[odd.clone()]), Err(Dropped::Invalid));
        let no_label = ev("x", "c", Action::Relabel, None, 3);
        assert_eq!(outcome(&[no_label]), Err(Dropped::Invalid));
        // Next to a valid vote an invalid one is just ignored.
        assert_eq!(
            outcome(&[odd, relabel("a", "gratitude", 1)]),
            Ok((Emotion::Gratitude, LabelSource::Relabel, 1, 1))
        );
    }

    #[test]
    fn the_exported_event_is_the_latest_supporting_the_winner() {
        let events = [
            relabel("a", "anger", 7),
            relabel("b", "anger", 9),
            relabel("c", "anxiety", 8),
        ];
        let v = decide(&events).expect("anger wins 2 to 1");
        assert_eq!(v.latest.model_version, "v9");
    }
}
