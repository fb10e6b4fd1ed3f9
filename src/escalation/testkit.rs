//! Message builders, a recorded-style surge replay and a round driver, shared by the unit tests
//! and `tests/escalation_redis.rs`. Not part of the pipeline.

use std::collections::BTreeMap;

use crate::message::{CustomerMessage, Emotion, EmotionResult};

use super::{Clock, Escalator, ManualClock, Observation};

/// Baseline traffic before the burst, ms.
const BASELINE_MS: i64 = 15 * 60 * 1_000;
/// Length of the burst, and of the calm after it, ms.
const BURST_MS: i64 = 60 * 1_000;

/// Turns `(negativity, primary emotion, confidence)` of a customer getting angrier: with the
/// default settings the trend detector escalates at turn 6 (EWMA rise of .433 over 3 turns)
/// and stays in that incident's cooldown for the last two turns.
pub const ANGRIER_CONVERSATION: [(f32, Emotion, f32); 8] = [
    (0.05, Emotion::Neutral, 0.8),
    (0.10, Emotion::Confusion, 0.6),
    (0.30, Emotion::Confusion, 0.6),
    (0.50, Emotion::Frustration, 0.6),
    (0.70, Emotion::Frustration, 0.7),
    (0.80, Emotion::Frustration, 0.8),
    (0.80, Emotion::Frustration, 0.8),
    (0.75, Emotion::Disappointment, 0.8),
];

/// Angrier until turn 6 (which escalates, as in [`ANGRIER_CONVERSATION`]), then calmed down:
/// the newest window no longer says "escalate", so a replay of turn 6 must be judged on the
/// window as it stood at turn 6.
pub fn angry_then_calmed() -> Vec<(f32, Emotion, f32)> {
    let mut turns = ANGRIER_CONVERSATION[..6].to_vec();
    turns.extend([
        (0.00, Emotion::Gratitude, 0.9),
        (0.00, Emotion::Gratitude, 0.9),
        (0.00, Emotion::Satisfaction, 0.9),
    ]);
    turns
}

/// Turns of a calm conversation: nothing escalates.
pub const CALM_CONVERSATION: [(f32, Emotion, f32); 7] = [
    (0.10, Emotion::Neutral, 0.9),
    (0.05, Emotion::Confusion, 0.6),
    (0.20, Emotion::Neutral, 0.7),
    (0.10, Emotion::Neutral, 0.7),
    (0.00, Emotion::Gratitude, 0.9),
    (0.15, Emotion::Neutral, 0.8),
    (0.10, Emotion::Satisfaction, 0.9),
];

/// A chat message of tenant `acme`.
pub fn message(
    message_id: &str,
    conversation_id: &str,
    customer_id: &str,
    sent_at: i64,
) -> CustomerMessage {
    CustomerMessage {
        message_id: message_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        customer_id: customer_id.to_owned(),
        tenant_id: Some("acme".to_owned()),
        channel: "chat".to_owned(),
        text: String::new(),
        subject: None,
        language: Some("en".to_owned()),
        sent_at,
        customer_name: None,
        metadata: BTreeMap::new(),
    }
}

/// A classification of `msg` with `emotion` as primary label.
pub fn result(
    msg: &CustomerMessage,
    emotion: Emotion,
    negativity: f32,
    confidence: f32,
) -> EmotionResult {
    let scores = Emotion::ALL
        .iter()
        .map(|e| {
            let score = if *e == emotion {
                confidence
            } else {
                (1.0 - confidence) / 7.0
            };
            (e.as_str().to_owned(), score)
        })
        .collect();
    EmotionResult {
        message_id: msg.message_id.clone(),
        conversation_id: msg.conversation_id.clone(),
        customer_id: msg.customer_id.clone(),
        tenant_id: msg.tenant_id.clone(),
        channel: msg.channel.clone(),
        primary_emotion: emotion.as_str().to_owned(),
        labels: vec![emotion.as_str().to_owned()],
        scores,
        confidence,
        valence: -negativity,
        negativity,
        model_version: "test".to_owned(),
        processed_at: msg.sent_at,
        source_topic: "customer-messages".to_owned(),
        source_partition: 0,
        source_offset: 0,
        language: "en".into(),
    }
}

/// When the replay's burst starts.
pub fn burst_start(start_ms: i64) -> i64 {
    start_ms + BASELINE_MS
}

/// A replay in `sent_at` order: 15 minutes of baseline traffic (one message per 10 s on each
/// of `tenant`/chat, `tenant`/email and `tenant-b`/chat, every tenth negative), then one minute
/// in which `tenant`/chat gets two negative messages a second and `tenant`/email two neutral
/// ones (volume alone is no surge), then a calm minute. Every message has its own conversation
/// and customer, so only the surge detector can fire: exactly once, for `tenant`/chat.
pub fn surge_replay(start_ms: i64, tenant: &str) -> Vec<(CustomerMessage, EmotionResult)> {
    let other_tenant = format!("{tenant}-b");
    let scopes = [
        (tenant, "chat"),
        (tenant, "email"),
        (other_tenant.as_str(), "chat"),
    ];
    let mut out = Vec::new();
    let mut push = |at: i64, tenant: &str, channel: &str, negative: bool| {
        let n = out.len();
        let mut msg = message(
            &format!("{tenant}-{channel}-m{n}"),
            &format!("{tenant}-conv-{n}"),
            &format!("{tenant}-cust-{n}"),
            at,
        );
        msg.tenant_id = Some(tenant.to_owned());
        msg.channel = channel.to_owned();
        let res = if negative {
            result(&msg, Emotion::Frustration, 0.85, 0.7)
        } else {
            result(&msg, Emotion::Neutral, 0.1, 0.8)
        };
        out.push((msg, res));
    };
    let end = start_ms + BASELINE_MS + 2 * BURST_MS;
    let burst = burst_start(start_ms)..burst_start(start_ms) + BURST_MS;
    let mut tick = 0;
    let mut at = start_ms;
    while at < end {
        if at % 10_000 == start_ms % 10_000 {
            for (tenant, channel) in scopes {
                push(at, tenant, channel, tick % 10 == 0);
            }
            tick += 1;
        }
        if burst.contains(&at) {
            push(at, tenant, "chat", true);
            push(at, tenant, "email", false);
        }
        at += 500;
    }
    out
}

/// Two conversations of one customer, interleaved one turn each, one second apart: the angrier
/// conversation (a trend warning at its sixth turn) and five angry turns then a calm one (a
/// warning, a critical upgrade, turns inside the cooldown, repeat contact across the two).
/// Observed in rounds of four, the calm turn follows an escalated turn of its conversation in
/// the same round.
pub fn interleaved_turns(start_ms: i64) -> Vec<(CustomerMessage, EmotionResult)> {
    let anger = (0.95, Emotion::Anger, 0.95);
    let calm = (0.05, Emotion::Neutral, 0.9);
    let anger = [anger, anger, anger, anger, anger, calm];
    let turns = ANGRIER_CONVERSATION.iter().map(|t| ("conv-angrier", *t));
    let angry = anger.iter().map(|t| ("conv-angry", *t));
    let mut out = Vec::new();
    let (mut turns, mut angry) = (turns.peekable(), angry.peekable());
    while turns.peek().is_some() || angry.peek().is_some() {
        for (conversation, (negativity, emotion, confidence)) in
            turns.next().into_iter().chain(angry.next())
        {
            let at = start_ms + 1_000 * (out.len() as i64 + 1);
            let msg = message(
                &format!("{conversation}-{}", out.len()),
                conversation,
                "cust-1",
                at,
            );
            let res = result(&msg, emotion, negativity, confidence);
            out.push((msg, res));
        }
    }
    out
}

/// Observes `traffic` in rounds of `round` messages, the clock at each round's last message:
/// each round in one `observe_batch` when `batched`, else message by message (the reference a
/// round must match).
pub async fn observe_in_rounds(
    escalator: &Escalator,
    clock: &ManualClock,
    traffic: &[(CustomerMessage, EmotionResult)],
    round: usize,
    batched: bool,
) -> Vec<Observation> {
    let mut out = Vec::new();
    for chunk in traffic.chunks(round) {
        let last = chunk.iter().map(|(m, _)| m.sent_at).max();
        clock.set_ms(last.expect("chunks are never empty"));
        if batched {
            let items: Vec<_> = chunk.iter().map(|(m, r)| (m, r)).collect();
            out.extend(escalator.observe_batch(&items).await);
        } else {
            for (msg, res) in chunk {
                out.push(escalator.observe(msg, res).await);
            }
        }
    }
    out
}

/// An event as a replay must reproduce it: `id kind severity`.
fn summary(o: &Observation) -> Vec<String> {
    o.events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.escalation_id,
                e.kind.as_str(),
                e.severity.as_str()
            )
        })
        .collect()
}

/// Observes a conversation (one turn a second, message ids `<conversation>-<i>`), then, a
/// minute later, observes its turns from `from` (0-based) again, as a worker restarted after
/// `kill -9` reprocesses its uncommitted tail. Returns the events of each turn in the first pass
/// and in the replay.
pub async fn observe_and_replay(
    escalator: &Escalator,
    clock: &ManualClock,
    conversation: &str,
    turns: &[(f32, Emotion, f32)],
    from: usize,
) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let start = clock.now_ms();
    let messages: Vec<(CustomerMessage, EmotionResult)> = turns
        .iter()
        .enumerate()
        .map(|(i, &(negativity, emotion, confidence))| {
            let msg = message(
                &format!("{conversation}-{i}"),
                conversation,
                &format!("{conversation}-customer"),
                start + 1_000 * (i as i64 + 1),
            );
            let res = result(&msg, emotion, negativity, confidence);
            (msg, res)
        })
        .collect();
    let mut first = Vec::new();
    for (msg, res) in &messages {
        clock.advance_ms(1_000);
        first.push(summary(&escalator.observe(msg, res).await));
    }
    clock.advance_ms(60_000);
    let mut replay = Vec::new();
    for (msg, res) in &messages[from..] {
        clock.advance_ms(10);
        replay.push(summary(&escalator.observe(msg, res).await));
    }
    (first, replay)
}

/// One customer's bad day, observed one message at a time (one second apart): an angry
/// conversation (trend warning, then critical), then negative messages in two more
/// conversations (repeat contact). Returns the events raised, in order.
pub async fn one_incident_traffic(
    escalator: &Escalator,
    clock: &ManualClock,
    customer: &str,
) -> Vec<super::EscalationEvent> {
    let mut events = Vec::new();
    let turns = [
        ("a", 0.95, Emotion::Anger),
        ("a", 0.95, Emotion::Anger),
        ("a", 0.95, Emotion::Anger),
        ("b", 0.7, Emotion::Frustration),
        ("c", 0.7, Emotion::Frustration),
    ];
    for (i, (conversation, negativity, emotion)) in turns.into_iter().enumerate() {
        clock.advance_ms(1_000);
        let msg = message(
            &format!("{customer}-m{i}"),
            &format!("{customer}-{conversation}"),
            customer,
            clock.now_ms(),
        );
        let res = result(&msg, emotion, negativity, negativity);
        events.extend(escalator.observe(&msg, &res).await.events);
    }
    events
}
