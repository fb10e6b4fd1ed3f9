//! post: puts classified messages back into per-partition input order (batching and parallel
//! tokenization reorder them), then runs escalation tracking and reply drafting in that
//! order, so a conversation's trend and its outputs follow the customer's turns. It works in
//! rounds (what has arrived, typically one model batch), so escalation costs one Redis round
//! trip per round rather than per message. Drafting runs on the draft threads (`draft`), a
//! round's chunks in parallel, while the next round is escalated; the output keeps the order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::escalation::{EscalationEvent, Escalator, Observation};
use crate::message::{CustomerMessage, EmotionResult};
use crate::model::Scored;
use crate::reply::{DraftReply, LiveDrafter, ReplyDrafter};
use crate::telemetry::metrics;

use super::{Classified, Origin, Outcome, Unscored, draft, shadow};

/// What the post stage adds to a classified message.
pub struct Enricher {
    pub escalator: Option<Arc<Escalator>>,
    pub drafter: Option<LiveDrafter>,
    /// Threads drafting replies (`--draft-threads`); at least one runs.
    pub draft_threads: usize,
    /// A candidate model scoring a sample of messages beside the live one (shadow mode).
    pub shadow: Option<shadow::Shadow>,
}

/// A message ready for the sink: its outputs, or why it has none (dead letter or skipped).
#[derive(Debug)]
pub struct Processed {
    pub origin: Origin,
    pub result: Result<Enriched, Unscored>,
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
    language: String,
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
        language,
    }
}

/// A scored message and its published emotion result.
type Labelled = (Box<CustomerMessage>, EmotionResult);

/// Most messages enriched in one round (one escalation round trip to Redis).
const MAX_ROUND: usize = 256;

/// A message after escalation, waiting for its reply draft.
struct Escalated {
    origin: Origin,
    result: Result<Labelled, Unscored>,
    observation: Option<Observation>,
}

impl Enricher {
    /// Runs escalation for a round of messages at once (one Redis round trip), in order.
    async fn escalate(&self, round: Vec<Classified>) -> Vec<Escalated> {
        let round: Vec<(Origin, Result<Labelled, Unscored>)> = round
            .into_iter()
            .map(|Classified { origin, outcome }| {
                let result = match outcome {
                    Outcome::Scored {
                        msg,
                        scored,
                        language,
                        model_version,
                    } => {
                        metrics()
                            .emotions
                            .with_label_values(&[scored.primary.as_str()])
                            .inc();
                        if let Some(shadow) = &self.shadow {
                            shadow.offer(&msg.message_id, &msg.text, scored.primary);
                        }
                        let emotion =
                            emotion_result(&msg, &scored, language, &origin, &model_version);
                        Ok((msg, emotion))
                    }
                    Outcome::DeadLetter(dl) => Err(Unscored::DeadLetter(dl)),
                    Outcome::Skipped(reason) => Err(Unscored::Skipped(reason)),
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
            .map(|(origin, result)| Escalated {
                observation: result.is_ok().then(|| observations.next()).flatten(),
                origin,
                result,
            })
            .collect()
    }
}

impl Escalated {
    /// Drafts the reply (on a draft thread) from the message, its emotion and its trend.
    fn draft(self, drafter: Option<&ReplyDrafter>) -> Processed {
        let Escalated {
            origin,
            result,
            observation,
        } = self;
        let result = result.map(|(msg, emotion)| {
            let (escalations, trend) = match observation {
                Some(obs) => (obs.events, Some(obs.trend)),
                None => (Vec::new(), None),
            };
            let draft = drafter.map(|d| {
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
    let threads = enricher.draft_threads.max(1);
    let drafter = enricher.drafter.clone();
    let pool = draft::Pool::spawn(threads, "draft", move |e: Escalated| {
        let live = drafter.as_ref().map(|d| d.load());
        e.draft(live.as_deref().map(|d| &**d))
    });
    // Room for this round's chunks while the previous round's are drafted.
    let (pending, pending_rx) = mpsc::channel(2 * threads);
    tokio::spawn(draft::forward_in_order(pending_rx, output));
    let mut seq = Sequencer::default();
    while let Some(c) = input.recv().await {
        // What else has already arrived (the rest of a model batch) joins the round.
        let mut round = seq.push(c);
        while round.len() < MAX_ROUND
            && let Ok(c) = input.try_recv()
        {
            round.extend(seq.push(c));
        }
        let round = enricher.escalate(round).await;
        let chunk = round.len().div_ceil(threads);
        let mut round = round.into_iter().peekable();
        while round.peek().is_some() {
            let answer = pool.submit(round.by_ref().take(chunk).collect());
            if pending.send(answer).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::{EscalationConfig, ManualClock, testkit};
    use crate::message::Emotion;
    use crate::pipeline::DeadLetter;
    use crate::telemetry::trace::MessageTrace;

    const T0: i64 = 1_700_000_000_000;

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

    /// 24 partitions of the angrier-conversation and repeat-contact turns (more than one round),
    /// as the model stage delivers them: out of order across and within partitions.
    fn shuffled_traffic() -> Vec<Classified> {
        let mut out = Vec::new();
        for partition in 0..24 {
            let turns = testkit::interleaved_turns(T0);
            for (seq, (mut msg, res)) in turns.into_iter().enumerate() {
                msg.message_id = format!("{}-p{partition}", msg.message_id);
                msg.conversation_id = format!("{}-p{partition}", msg.conversation_id);
                msg.customer_id = format!("cust-p{partition}");
                msg.text = "Where is my refund? I have asked three times now.".into();
                let primary = Emotion::parse(&res.primary_emotion).expect("a label");
                let scored = Scored {
                    primary,
                    labels: vec![primary],
                    probs: [0.1; 8],
                    confidence: res.confidence,
                    valence: res.valence,
                    negativity: res.negativity,
                };
                let mut c = item(partition, seq as u64);
                c.outcome = Outcome::Scored {
                    msg: Box::new(msg),
                    scored,
                    language: "en".into(),
                    model_version: "test".into(),
                };
                out.push(c);
            }
        }
        // Batches finish out of order: deal the items out in blocks of 5, reversed, every
        // third block last.
        let mut blocks: Vec<Vec<Classified>> = Vec::new();
        let mut items = out.into_iter().peekable();
        while items.peek().is_some() {
            let mut block: Vec<_> = items.by_ref().take(5).collect();
            block.reverse();
            blocks.push(block);
        }
        let (late, early): (Vec<_>, Vec<_>) = blocks
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 3 == 0);
        early.into_iter().chain(late).flat_map(|(_, b)| b).collect()
    }

    /// What a reader of the outputs sees of one message (timestamps and random ids aside).
    type Seen = (
        i32,
        u64,
        Option<(String, String, Option<String>)>,
        Vec<String>,
    );

    async fn post_with_draft_threads(threads: usize) -> Vec<Seen> {
        let clock = Arc::new(ManualClock::new(T0 + 60_000));
        let escalator = Escalator::new(&EscalationConfig::default(), clock).await;
        let enricher = Enricher {
            escalator: Some(Arc::new(escalator)),
            drafter: Some(ReplyDrafter::builtin().live()),
            draft_threads: threads,
            shadow: None,
        };
        let traffic = shuffled_traffic();
        let (in_tx, in_rx) = mpsc::channel(traffic.len());
        for c in traffic {
            in_tx.send(c).await.unwrap();
        }
        drop(in_tx);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        tokio::spawn(run(enricher, in_rx, out_tx));
        let mut seen = Vec::new();
        while let Some(p) = out_rx.recv().await {
            let e = p.result.expect("scored");
            let draft = e.draft.map(|d| (d.strategy, d.template_id, d.body));
            let events = e
                .escalations
                .iter()
                .map(|ev| format!("{:?}/{:?}/{}", ev.kind, ev.severity, ev.scope))
                .collect();
            seen.push((p.origin.partition, p.origin.seq, draft, events));
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drafting_on_many_threads_keeps_partition_order_and_the_one_thread_outputs() {
        let one = post_with_draft_threads(1).await;
        let four = post_with_draft_threads(4).await;
        assert_eq!(four.len(), 24 * 14, "every message comes out once");
        let mut next: HashMap<i32, u64> = HashMap::new();
        for (partition, seq, draft, _) in &four {
            let expected = next.entry(*partition).or_default();
            assert_eq!(seq, expected, "partition {partition} out of order");
            *expected += 1;
            assert!(draft.is_some(), "every message is drafted");
        }
        assert!(
            four.iter().any(|(_, _, _, events)| !events.is_empty()),
            "the traffic escalates"
        );
        assert_eq!(
            one, four,
            "same drafts and escalations, in the same order, as on one thread"
        );
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
