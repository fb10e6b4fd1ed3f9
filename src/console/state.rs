//! The console's view of the stream: open conversations (customer messages joined with their
//! emotion results, drafts and escalations) and negative share over time per tenant × channel.
//! Owned by one task ([`run`]); the web handlers talk to it through channels.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::escalation::{EscalationEvent, EscalationKind, Severity};
use crate::message::{CustomerMessage, EmotionResult};
use crate::reply::DraftReply;

/// Bounds on what the console keeps in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_conversations: usize,
    pub max_messages: usize,
    /// Width of one bucket of the negative-share chart, milliseconds of event time.
    pub bucket_ms: i64,
    /// Buckets kept per tenant × channel.
    pub max_buckets: usize,
}

/// One decoded record from any of the consumed topics.
#[derive(Debug)]
pub enum Record {
    Message(Box<CustomerMessage>),
    Emotion(Box<EmotionResult>),
    Draft(Box<DraftReply>),
    Escalation(Box<EscalationEvent>),
    /// A feedback event (this console's or another's): restores what was handled on restart.
    Feedback(Box<crate::console::feedback::FeedbackEvent>),
}

/// What a feedback handler needs to know about a message to build its event.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFacts {
    pub tenant: String,
    pub conversation_id: String,
    pub channel: String,
    pub model_version: Option<String>,
    pub predicted_label: Option<String>,
    pub draft: Option<DraftFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DraftFacts {
    pub draft_id: String,
    pub template_id: String,
}

/// Requests to the state task.
pub enum Request {
    Record(Record),
    /// Every conversation and series, for a new browser stream.
    Snapshot(oneshot::Sender<Snapshot>),
    Facts(String, oneshot::Sender<Option<MessageFacts>>),
    /// A feedback event was delivered: mark the message (and its conversation) as handled.
    Acted(Box<crate::console::feedback::FeedbackEvent>),
}

/// A change pushed to the browsers, for the agents allowed to see `tenant`.
#[derive(Debug, Clone)]
pub struct Update {
    pub tenant: String,
    /// `conversation` or `series`.
    pub kind: &'static str,
    pub json: Arc<str>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub conversations: Vec<ConversationView>,
    pub series: Vec<SeriesView>,
}

/// A draft's id: UUID v5 (URL namespace) of `<message_id>/<template_id>/<created_at>`, so every
/// console derives the same id for the same draft (the feedback contract in the README).
pub fn draft_id(d: &DraftReply) -> String {
    let name = format!("{}/{}/{}", d.message_id, d.template_id, d.created_at);
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub message_id: String,
    pub text: Option<String>,
    pub subject: Option<String>,
    pub sent_at: Option<i64>,
    pub primary_emotion: Option<String>,
    pub labels: Vec<String>,
    pub confidence: Option<f32>,
    pub negativity: Option<f32>,
    pub model_version: Option<String>,
    pub draft: Option<DraftView>,
    /// Agent actions taken on this message (`accept by alice`, ...), newest last.
    pub actions: Vec<String>,
    pub corrected_label: Option<String>,
    #[serde(skip)]
    counted: bool,
    #[serde(skip)]
    event_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DraftView {
    pub draft_id: String,
    pub strategy: String,
    pub intent: String,
    pub requires_review: bool,
    pub subject: Option<String>,
    /// The body, or the SMS segments joined by newlines.
    pub text: String,
    pub template_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConversationView {
    pub key: String,
    pub tenant: String,
    pub conversation_id: String,
    pub channel: String,
    pub messages: Vec<MessageView>,
    /// `warning` or `critical` when the conversation has an escalation.
    pub escalation: Option<Severity>,
    /// EWMA of the messages' negativity (α = 0.5), the trend shown in the queue.
    pub negativity_ewma: f32,
    /// Negativity of the latest message minus that of the one three turns earlier.
    pub negativity_rise: f32,
    /// Sort key of the queue, highest first: escalated first (critical over warning), then
    /// rising negativity.
    pub urgency: f32,
    /// The latest message's draft was accepted, sent or rejected: out of the queue until the
    /// customer writes again.
    pub handled: bool,
    pub last_activity: i64,
    /// False while only drafts (which carry no tenant) were seen.
    #[serde(skip)]
    tenant_known: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    pub key: String,
    pub tenant: String,
    pub channel: String,
    pub bucket_ms: i64,
    /// (bucket start ms, messages, negative messages), oldest first.
    pub buckets: Vec<(i64, u32, u32)>,
    /// (window end ms, severity) of surge events.
    pub surges: Vec<(i64, Severity)>,
}

/// The tenant of a record, `""` when the producer sent none.
pub fn tenant_of(t: &Option<String>) -> String {
    t.clone().unwrap_or_default()
}

fn conversation_key(tenant: &str, conversation_id: &str) -> String {
    format!("{tenant}\u{1f}{conversation_id}")
}

/// The console's state; every method is synchronous and side-effect free apart from `self`.
pub struct State {
    limits: Limits,
    count_on_emotion: bool,
    conversations: HashMap<String, ConversationView>,
    /// message id → conversation key.
    message_index: HashMap<String, String>,
    series: BTreeMap<String, SeriesView>,
    /// Records applied so far: the clock of `last_activity` (arrival order, not wall time).
    tick: i64,
}

impl State {
    /// `count_on_emotion`: the console reads no input topic, so the chart counts a message when
    /// its emotion result arrives (at `processed_at`) rather than at its `sent_at`.
    pub fn new(limits: Limits, count_on_emotion: bool) -> State {
        State {
            limits,
            count_on_emotion,
            conversations: HashMap::new(),
            message_index: HashMap::new(),
            series: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Applies one record; returns the updates to push.
    pub fn apply(&mut self, record: Record) -> Vec<Update> {
        self.tick += 1;
        match record {
            Record::Message(m) => {
                let key = self.touch(&tenant_of(&m.tenant_id), &m.conversation_id, &m.channel);
                let msg = self.message_mut(&key, &m.message_id);
                msg.text = Some(m.text);
                msg.subject = m.subject;
                msg.sent_at = Some(m.sent_at);
                self.reopen(&key);
                self.recompute(&key);
                let mut out = self.count(&key, &m.message_id);
                out.extend(self.conversation_update(&key));
                out
            }
            Record::Emotion(e) => {
                let key = self.touch(&tenant_of(&e.tenant_id), &e.conversation_id, &e.channel);
                let count_on_emotion = self.count_on_emotion;
                let msg = self.message_mut(&key, &e.message_id);
                msg.primary_emotion = Some(e.primary_emotion.clone());
                msg.labels = e.labels.clone();
                msg.confidence = Some(e.confidence);
                msg.negativity = Some(e.negativity);
                msg.model_version = Some(e.model_version.clone());
                if count_on_emotion {
                    msg.sent_at.get_or_insert(e.processed_at);
                }
                self.reopen(&key);
                self.recompute(&key);
                let mut out = self.count(&key, &e.message_id);
                out.extend(self.conversation_update(&key));
                out
            }
            Record::Draft(d) => {
                // Drafts carry no tenant: they join the conversation their message opened.
                let known = self.message_index.get(&d.message_id).cloned().or_else(|| {
                    self.conversations
                        .values()
                        .find(|c| c.conversation_id == d.conversation_id)
                        .map(|c| c.key.clone())
                });
                let key = match known {
                    Some(k) => k,
                    // Until its message or label arrives: the empty tenant, re-keyed then.
                    None => {
                        let key = self.touch("", &d.conversation_id, &d.channel);
                        if let Some(c) = self.conversations.get_mut(&key)
                            && c.messages.is_empty()
                        {
                            c.tenant_known = false;
                        }
                        key
                    }
                };
                let text = match (&d.body, &d.segments) {
                    (Some(b), _) => b.clone(),
                    (None, Some(s)) => s.join("\n"),
                    (None, None) => String::new(),
                };
                let view = DraftView {
                    draft_id: draft_id(&d),
                    strategy: d.strategy.clone(),
                    intent: d.intent.clone(),
                    requires_review: d.requires_review,
                    subject: d.subject.clone(),
                    text,
                    template_id: d.template_id.clone(),
                };
                self.message_mut(&key, &d.message_id).draft = Some(view);
                self.conversation_update(&key).into_iter().collect()
            }
            Record::Escalation(ev) => self.escalation(*ev),
            Record::Feedback(ev) => self.acted(&ev),
        }
    }

    fn escalation(&mut self, ev: EscalationEvent) -> Vec<Update> {
        let tenant = tenant_of(&ev.tenant_id);
        match ev.kind {
            EscalationKind::Surge => {
                let channel = ev.channel.clone().unwrap_or_else(|| "*".into());
                let max = self.limits.max_buckets;
                let series = self.series_mut(&tenant, &channel);
                series.surges.push((ev.window_end, ev.severity));
                if series.surges.len() > max {
                    series.surges.remove(0);
                }
                self.series_update(&tenant, &channel).into_iter().collect()
            }
            EscalationKind::ConversationTrend | EscalationKind::RepeatContact => {
                let mut keys: Vec<String> = Vec::new();
                if let Some(c) = &ev.conversation_id {
                    let key = conversation_key(&tenant, c);
                    if self.conversations.contains_key(&key) {
                        keys.push(key);
                    }
                }
                for id in &ev.trigger_message_ids {
                    if let Some(k) = self.message_index.get(id)
                        && !keys.contains(k)
                    {
                        keys.push(k.clone());
                    }
                }
                let mut out = Vec::new();
                for key in keys {
                    if let Some(c) = self.conversations.get_mut(&key) {
                        c.escalation = c.escalation.max(Some(ev.severity));
                        c.handled = false;
                    }
                    self.recompute(&key);
                    out.extend(self.conversation_update(&key));
                }
                out
            }
        }
    }

    /// Records a delivered feedback action (once per event id: the console sees its own events
    /// both from the handler and from the feedback topic).
    pub fn acted(&mut self, ev: &crate::console::feedback::FeedbackEvent) -> Vec<Update> {
        let (message_id, action) = (ev.message_id.as_str(), ev.action.as_str());
        let Some(key) = self.message_index.get(message_id).cloned() else {
            return Vec::new();
        };
        let Some(c) = self.conversations.get_mut(&key) else {
            return Vec::new();
        };
        let latest = c.messages.last().map(|m| m.message_id.clone());
        if let Some(m) = c.messages.iter_mut().find(|m| m.message_id == message_id) {
            if m.event_ids.contains(&ev.event_id) {
                return Vec::new();
            }
            m.event_ids.push(ev.event_id.clone());
            m.actions.push(format!("{action} by {}", ev.agent_id));
            if ev.corrected_label.is_some() {
                m.corrected_label = ev.corrected_label.clone();
            }
        }
        if action != "relabel" && latest.as_deref() == Some(message_id) {
            c.handled = true;
        }
        self.conversation_update(&key).into_iter().collect()
    }

    pub fn facts(&self, message_id: &str) -> Option<MessageFacts> {
        let key = self.message_index.get(message_id)?;
        let c = self.conversations.get(key)?;
        let m = c.messages.iter().find(|m| m.message_id == message_id)?;
        Some(MessageFacts {
            tenant: c.tenant.clone(),
            conversation_id: c.conversation_id.clone(),
            channel: c.channel.clone(),
            model_version: m.model_version.clone(),
            predicted_label: m.primary_emotion.clone(),
            draft: m.draft.as_ref().map(|d| DraftFacts {
                draft_id: d.draft_id.clone(),
                template_id: d.template_id.clone(),
            }),
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut conversations: Vec<ConversationView> =
            self.conversations.values().cloned().collect();
        sort_queue(&mut conversations);
        Snapshot {
            conversations,
            series: self.series.values().cloned().collect(),
        }
    }

    /// The conversation's key, creating it (and evicting the least recently active one beyond
    /// the bound) when new.
    fn touch(&mut self, tenant: &str, conversation_id: &str, channel: &str) -> String {
        let key = conversation_key(tenant, conversation_id);
        let orphan = conversation_key("", conversation_id);
        if !tenant.is_empty()
            && !self.conversations.contains_key(&key)
            && self
                .conversations
                .get(&orphan)
                .is_some_and(|c| !c.tenant_known)
            && let Some(mut c) = self.conversations.remove(&orphan)
        {
            // A draft came first: its conversation now learns its tenant.
            c.key = key.clone();
            c.tenant = tenant.to_string();
            for m in &c.messages {
                self.message_index.insert(m.message_id.clone(), key.clone());
            }
            self.conversations.insert(key.clone(), c);
        }
        if let Some(c) = self.conversations.get_mut(&key) {
            c.tenant_known |= !tenant.is_empty();
        }
        if !self.conversations.contains_key(&key) {
            if self.conversations.len() >= self.limits.max_conversations {
                self.evict_oldest();
            }
            self.conversations.insert(
                key.clone(),
                ConversationView {
                    key: key.clone(),
                    tenant: tenant.to_string(),
                    conversation_id: conversation_id.to_string(),
                    channel: channel.trim().to_lowercase(),
                    messages: Vec::new(),
                    escalation: None,
                    negativity_ewma: 0.0,
                    negativity_rise: 0.0,
                    urgency: 0.0,
                    handled: false,
                    last_activity: 0,
                    tenant_known: true,
                },
            );
        }
        let tick = self.tick;
        if let Some(c) = self.conversations.get_mut(&key) {
            c.last_activity = tick;
        }
        key
    }

    fn evict_oldest(&mut self) {
        let Some(oldest) = self
            .conversations
            .values()
            .min_by_key(|c| c.last_activity)
            .map(|c| c.key.clone())
        else {
            return;
        };
        if let Some(c) = self.conversations.remove(&oldest) {
            for m in c.messages {
                self.message_index.remove(&m.message_id);
            }
        }
    }

    fn message_mut(&mut self, key: &str, message_id: &str) -> &mut MessageView {
        let max = self.limits.max_messages;
        let c = self
            .conversations
            .get_mut(key)
            .expect("touch() created the conversation: bug");
        let pos = match c.messages.iter().position(|m| m.message_id == message_id) {
            Some(p) => p,
            None => {
                self.message_index
                    .insert(message_id.to_string(), key.to_string());
                c.messages.push(MessageView {
                    message_id: message_id.to_string(),
                    text: None,
                    subject: None,
                    sent_at: None,
                    primary_emotion: None,
                    labels: Vec::new(),
                    confidence: None,
                    negativity: None,
                    model_version: None,
                    draft: None,
                    actions: Vec::new(),
                    corrected_label: None,
                    counted: false,
                    event_ids: Vec::new(),
                });
                if c.messages.len() > max {
                    let old = c.messages.remove(0);
                    self.message_index.remove(&old.message_id);
                }
                c.messages.len() - 1
            }
        };
        &mut c.messages[pos]
    }

    /// A new customer message reopens a handled conversation.
    fn reopen(&mut self, key: &str) {
        if let Some(c) = self.conversations.get_mut(key)
            && c.handled
        {
            let latest_untouched = c.messages.last().is_some_and(|m| m.actions.is_empty());
            c.handled = !latest_untouched;
        }
    }

    fn recompute(&mut self, key: &str) {
        let Some(c) = self.conversations.get_mut(key) else {
            return;
        };
        c.messages
            .sort_by_key(|m| (m.sent_at.unwrap_or(i64::MAX), m.message_id.clone()));
        let neg: Vec<f32> = c.messages.iter().filter_map(|m| m.negativity).collect();
        c.negativity_ewma = neg
            .iter()
            .fold(None, |acc: Option<f32>, &n| {
                Some(acc.map_or(n, |a| 0.5 * n + 0.5 * a))
            })
            .unwrap_or(0.0);
        c.negativity_rise = match neg.len() {
            0 | 1 => 0.0,
            n => neg[n - 1] - neg[n.saturating_sub(4)],
        };
        c.urgency = urgency(c.escalation, c.negativity_ewma, c.negativity_rise);
    }

    /// Adds the message to its tenant × channel chart once its time and label are both known.
    fn count(&mut self, key: &str, message_id: &str) -> Vec<Update> {
        let Some(c) = self.conversations.get_mut(key) else {
            return Vec::new();
        };
        let (tenant, channel) = (c.tenant.clone(), c.channel.clone());
        let Some(m) = c.messages.iter_mut().find(|m| m.message_id == message_id) else {
            return Vec::new();
        };
        let (Some(at), Some(label), false) = (m.sent_at, m.primary_emotion.as_deref(), m.counted)
        else {
            return Vec::new();
        };
        m.counted = true;
        let negative = crate::message::Emotion::parse(label).is_some_and(|e| e.is_negative());
        let bucket_ms = self.limits.bucket_ms;
        let max = self.limits.max_buckets;
        let series = self.series_mut(&tenant, &channel);
        let start = at.div_euclid(bucket_ms) * bucket_ms;
        match series.buckets.binary_search_by_key(&start, |b| b.0) {
            Ok(i) => {
                series.buckets[i].1 += 1;
                series.buckets[i].2 += u32::from(negative);
            }
            Err(i) => {
                series.buckets.insert(i, (start, 1, u32::from(negative)));
                if series.buckets.len() > max {
                    series.buckets.remove(0);
                }
            }
        }
        self.series_update(&tenant, &channel).into_iter().collect()
    }

    fn series_mut(&mut self, tenant: &str, channel: &str) -> &mut SeriesView {
        let key = format!("{tenant}\u{1f}{channel}");
        let bucket_ms = self.limits.bucket_ms;
        self.series
            .entry(key.clone())
            .or_insert_with(|| SeriesView {
                key,
                tenant: tenant.to_string(),
                channel: channel.to_string(),
                bucket_ms,
                buckets: Vec::new(),
                surges: Vec::new(),
            })
    }

    fn conversation_update(&self, key: &str) -> Option<Update> {
        let c = self.conversations.get(key)?;
        Some(Update {
            tenant: c.tenant.clone(),
            kind: "conversation",
            json: serde_json::to_string(c).ok()?.into(),
        })
    }

    fn series_update(&self, tenant: &str, channel: &str) -> Option<Update> {
        let s = self.series.get(&format!("{tenant}\u{1f}{channel}"))?;
        Some(Update {
            tenant: tenant.to_string(),
            kind: "series",
            json: serde_json::to_string(s).ok()?.into(),
        })
    }
}

/// The queue's sort key: an escalation outranks any negativity (critical over warning), then
/// the negativity trend, with a rise weighted over the level.
pub fn urgency(escalation: Option<Severity>, ewma: f32, rise: f32) -> f32 {
    let rank = match escalation {
        Some(Severity::Critical) => 20.0,
        Some(Severity::Warning) => 10.0,
        None => 0.0,
    };
    rank + ewma + 2.0 * rise.max(0.0)
}

/// Most urgent first; ties by most recent activity.
pub fn sort_queue(conversations: &mut [ConversationView]) {
    conversations.sort_by(|a, b| {
        b.urgency
            .total_cmp(&a.urgency)
            .then(b.last_activity.cmp(&a.last_activity))
    });
}

/// Runs the state task until every sender is gone.
pub async fn run(
    mut requests: mpsc::Receiver<Request>,
    mut state: State,
    updates: broadcast::Sender<Update>,
) {
    while let Some(req) = requests.recv().await {
        let out = match req {
            Request::Record(r) => state.apply(r),
            Request::Snapshot(reply) => {
                let _ = reply.send(state.snapshot());
                Vec::new()
            }
            Request::Facts(id, reply) => {
                let _ = reply.send(state.facts(&id));
                Vec::new()
            }
            Request::Acted(ev) => state.acted(&ev),
        };
        for u in out {
            // No subscriber is fine: nobody has the page open.
            let _ = updates.send(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::EscalationKind;

    fn limits() -> Limits {
        Limits {
            max_conversations: 3,
            max_messages: 10,
            bucket_ms: 10_000,
            max_buckets: 10,
        }
    }

    fn emotion(conv: &str, msg: &str, label: &str, negativity: f32) -> Record {
        Record::Emotion(Box::new(EmotionResult {
            message_id: msg.into(),
            conversation_id: conv.into(),
            customer_id: "u".into(),
            tenant_id: Some("acme".into()),
            channel: "chat".into(),
            primary_emotion: label.into(),
            labels: vec![label.into()],
            scores: BTreeMap::new(),
            confidence: 0.9,
            valence: 0.0,
            negativity,
            model_version: "m1".into(),
            processed_at: 1_000,
            source_topic: "in".into(),
            source_partition: 0,
            source_offset: 0,
            language: "en".into(),
        }))
    }

    fn draft(conv: &str, msg: &str) -> Record {
        Record::Draft(Box::new(DraftReply {
            message_id: msg.into(),
            conversation_id: conv.into(),
            channel: "chat".into(),
            language: "en".into(),
            emotion: "anger".into(),
            strategy: "de_escalate".into(),
            intent: "refund".into(),
            subject: None,
            body: Some("Sorry".into()),
            segments: None,
            template_id: "t".into(),
            requires_review: true,
            created_at: 5,
            model_version: None,
        }))
    }

    fn escalation(conv: &str, severity: Severity) -> Record {
        Record::Escalation(Box::new(EscalationEvent {
            escalation_id: "e".into(),
            incident_id: Some("e".into()),
            kind: EscalationKind::ConversationTrend,
            severity,
            reasons: vec![],
            scope: format!("conversation:acme:{conv}"),
            tenant_id: Some("acme".into()),
            channel: Some("chat".into()),
            conversation_id: Some(conv.into()),
            customer_id: None,
            window_start: 0,
            window_end: 0,
            message_count: 1,
            negative_count: 1,
            negative_rate: None,
            baseline_count: None,
            baseline_rate: None,
            conversation_count: None,
            score: 1.0,
            threshold: 0.5,
            trigger_message_ids: vec![],
            first_seen: 0,
            detected_at: 0,
            degraded: false,
            model_version: None,
        }))
    }

    fn order(state: &State) -> Vec<String> {
        state
            .snapshot()
            .conversations
            .into_iter()
            .map(|c| c.conversation_id)
            .collect()
    }

    #[test]
    fn queue_puts_escalated_first_then_rising_negativity() {
        let mut s = State::new(limits(), true);
        s.apply(emotion("calm", "c1", "neutral", 0.0));
        s.apply(emotion("rising", "r1", "neutral", 0.1));
        s.apply(emotion("rising", "r2", "anger", 0.9));
        s.apply(emotion("escalated", "e1", "neutral", 0.05));
        assert_eq!(order(&s), ["rising", "escalated", "calm"]);
        s.apply(escalation("escalated", Severity::Warning));
        assert_eq!(order(&s), ["escalated", "rising", "calm"]);
    }

    #[test]
    fn a_draft_before_its_label_joins_the_conversation_once_the_tenant_is_known() {
        let mut s = State::new(limits(), true);
        s.apply(draft("c", "m1"));
        s.apply(emotion("c", "m1", "anger", 0.9));
        let snap = s.snapshot();
        assert_eq!(snap.conversations.len(), 1);
        let c = &snap.conversations[0];
        assert_eq!(c.tenant, "acme");
        assert!(c.messages[0].draft.is_some());
        let facts = s.facts("m1").unwrap();
        assert_eq!(facts.tenant, "acme");
        assert_eq!(facts.model_version.as_deref(), Some("m1"));
    }

    #[test]
    fn negative_share_is_bucketed_per_tenant_and_channel() {
        let mut s = State::new(limits(), true);
        s.apply(emotion("a", "1", "anger", 0.9));
        s.apply(emotion("b", "2", "gratitude", 0.0));
        let series = s.snapshot().series;
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].buckets, vec![(0, 2, 1)]);
    }

    #[test]
    fn the_least_recently_active_conversation_is_evicted_beyond_the_bound() {
        let mut s = State::new(limits(), true);
        for c in ["a", "b", "c", "d"] {
            s.apply(emotion(c, &format!("{c}1"), "neutral", 0.0));
        }
        let mut ids = order(&s);
        ids.sort();
        assert_eq!(ids, ["b", "c", "d"]);
        assert!(s.facts("a1").is_none());
    }
}
