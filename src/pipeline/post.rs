//! post: puts classified messages back into per-partition input order (batching and parallel
//! tokenization reorder them), then runs escalation tracking and reply drafting in that
//! order, so a conversation's trend and its outputs follow the customer's turns. It works in
//! rounds (what has arrived, typically one model batch), so escalation costs one Redis round
//! trip per round rather than per message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::escalation::{EscalationEvent, Escalator};
use crate::message::{CustomerMessage, EmotionResult};
use crate::model::Scored;
use crate::reply::{DraftReply, ReplyDrafter};
use crate::telemetry::metrics;

use super::{Classified, DeadLetter, Origin, Outcome};

/// What the post stage adds to a classified message.
pub struct Enricher {
    pub escalator: Option<Arc<Escalator>>,
    pub drafter: Option<Arc<ReplyDrafter>>,
    pub model_version: String,
}

/// A message ready for the sink: its outputs, or the reason it goes to the dead-letter topic.
#[derive(Debug)]
pub struct Processed {
    pub origin: Origin,
    pub result: Result<Enriched, DeadLetter>,
}

#[derive(Debug)]
pub struct Enriched {
    pub msg: Box<CustomerMessage>,
    pub emotion: EmotionResult,
    pub draft: Option<DraftReply>,
    pub escalations: Vec<EscalationEvent>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds the published emotion result of one message.
pub fn emotion_result(
    msg: &CustomerMessage,
    scored: &Scored,
    origin: &Origin,
    model_version: &str,
) -> EmotionResult {
    EmotionResult {
        message_id: msg.message_id.clone(),
        conversation_id: msg.conversation_id.clone(),
        customer_id: msg.customer_id.clone(),
        tenant_id: msg.tenant_id.clone(),
        channel: msg.channel.clone(),
        primary_emotion: scored.primary.as_str().to_string(),
        labels: scored
            .labels
            .iter()
            .map(|e| e.as_str().to_string())
            .collect(),
        scores: scored.scores_map(),
        confidence: scored.confidence,
        valence: scored.valence,
        negativity: scored.negativity,
        model_version: model_version.to_string(),
        processed_at: now_ms(),
        source_topic: origin.topic.to_string(),
        source_partition: origin.partition,
        source_offset: origin.offset,
        language: crate::reply::language::identify(msg.language.as_deref(), &msg.text),
    }
}

/// A scored message and its published emotion result.
type Labelled = (Box<CustomerMessage>, EmotionResult);

/// Most messages enriched in one round (one escalation round trip to Redis).
const MAX_ROUND: usize = 256;

impl Enricher {
    /// Enriches a round of messages, in order: escalation for all of them at once (one Redis
    /// round trip), then a reply draft for each.
    async fn enrich(&self, round: Vec<Classified>) -> Vec<Processed> {
        let round: Vec<(Origin, Result<Labelled, DeadLetter>)> = round
            .into_iter()
            .map(|Classified { origin, outcome }| {
                let result = match outcome {
                    Outcome::Scored { msg, scored } => {
                        metrics()
                            .emotions
                            .with_label_values(&[scored.primary.as_str()])
                            .inc();
                        let emotion = emotion_result(&msg, &scored, &origin, &self.model_version);
                        Ok((msg, emotion))
                    }
                    Outcome::DeadLetter(dl) => Err(dl),
                };
                (origin, result)
            })
            .collect();
        let mut observations = match &self.escalator {
            Some(esc) => {
                let items: Vec<(&CustomerMessage, &EmotionResult)> = round
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok().map(|(msg, e)| (&**msg, e)))
                    .collect();
                let start = Instant::now();
                let observations = esc.observe_batch(&items).await;
                // Each message waited for the whole round trip.
                let elapsed = start.elapsed().as_secs_f64();
                let stage = metrics().stage_seconds.with_label_values(&["escalation"]);
                for _ in 0..observations.len() {
                    stage.observe(elapsed);
                }
                metrics().redis_degraded.set(i64::from(esc.is_degraded()));
                observations
            }
            None => Vec::new(),
        }
        .into_iter();
        round
            .into_iter()
            .map(|(origin, result)| {
                let result = result.map(|(msg, emotion)| {
                    let (escalations, trend) = match observations.next() {
                        Some(obs) => (obs.events, Some(obs.trend)),
                        None => (Vec::new(), None),
                    };
                    let draft = self.drafter.as_ref().map(|d| {
                        let start = Instant::now();
                        let draft = d.draft(&msg, &emotion, trend.as_ref(), now_ms());
                        metrics()
                            .stage_seconds
                            .with_label_values(&["reply"])
                            .observe(start.elapsed().as_secs_f64());
                        draft
                    });
                    Enriched {
                        msg,
                        emotion,
                        draft,
                        escalations,
                    }
                });
                Processed { origin, result }
            })
            .collect()
    }
}

/// Per-partition reorder buffer: releases sequence numbers in order.
#[derive(Default)]
struct Sequencer {
    partitions: HashMap<(Arc<str>, i32), Pending>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    waiting: BTreeMap<u64, Classified>,
}

impl Sequencer {
    /// Accepts one item; returns every item now releasable, in order.
    fn push(&mut self, c: Classified) -> Vec<Classified> {
        let key = (c.origin.topic.clone(), c.origin.partition);
        let p = self.partitions.entry(key).or_default();
        p.waiting.insert(c.origin.seq, c);
        let mut ready = Vec::new();
        while let Some(c) = p.waiting.remove(&p.next) {
            ready.push(c);
            p.next += 1;
        }
        ready
    }
}

pub(super) async fn run(
    enricher: Enricher,
    mut input: mpsc::Receiver<Classified>,
    output: mpsc::Sender<Processed>,
) {
    let mut seq = Sequencer::default();
    while let Some(c) = input.recv().await {
        // What else has already arrived (the rest of a model batch) joins the round.
        let mut round = seq.push(c);
        while round.len() < MAX_ROUND
            && let Ok(c) = input.try_recv()
        {
            round.extend(seq.push(c));
        }
        for processed in enricher.enrich(round).await {
            if output.send(processed).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::MessageTrace;

    fn item(partition: i32, seq: u64) -> Classified {
        Classified {
            origin: Origin {
                topic: Arc::from("t"),
                partition,
                offset: seq as i64 * 10,
                seq,
                consumed_at: Instant::now(),
                consumed_wall: SystemTime::now(),
                trace: MessageTrace::default(),
                key: None,
                payload: None,
            },
            outcome: Outcome::DeadLetter(DeadLetter {
                kind: "test",
                reason: String::new(),
            }),
        }
    }

    fn seqs(v: Vec<Classified>) -> Vec<(i32, u64)> {
        v.into_iter()
            .map(|c| (c.origin.partition, c.origin.seq))
            .collect()
    }

    #[test]
    fn releases_each_partition_in_input_order() {
        let mut s = Sequencer::default();
        assert!(s.push(item(0, 1)).is_empty(), "seq 1 waits for seq 0");
        assert_eq!(
            seqs(s.push(item(1, 0))),
            vec![(1, 0)],
            "partitions are independent"
        );
        assert!(s.push(item(0, 2)).is_empty());
        assert_eq!(seqs(s.push(item(0, 0))), vec![(0, 0), (0, 1), (0, 2)]);
        assert_eq!(seqs(s.push(item(0, 3))), vec![(0, 3)]);
    }
}
