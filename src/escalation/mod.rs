//! Escalation: after a message is classified, decide whether alerting must hear about it. Three
//! detectors (conversation trend, repeat contact, surge) read windows kept in Redis, shared by
//! every replica, and a cooldown per scope and kind makes one incident one event (plus at most
//! one warning-to-critical upgrade). When Redis is unset or unavailable the same logic runs on
//! per-replica in-memory windows and events are marked `degraded`; a background probe returns
//! to shared mode when Redis answers again. See the README, "Escalation events".
//!
//! `observe_batch` never fails; it records a round of messages in one Redis call and claims
//! cooldowns in one more per message with a detection, each bounded by the Redis timeout;
//! after one failure it stops calling Redis until the probe succeeds.

mod clock;
mod config;
mod event;
mod memory_store;
mod redis_store;
mod repeat;
mod store;
mod surge;
#[doc(hidden)]
pub mod testkit;
mod trend;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::message::{ConversationTrend, CustomerMessage, EmotionResult};

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    ConfigError, EscalationConfig, RedisUrl, ScopeKey, Secret, ThresholdsError, defaults,
};
pub use event::{ESCALATION_EVENT_SCHEMA, EscalationEvent, EscalationKind, Severity};

use event::{Detection, ScopeFields};
use memory_store::MemoryStore;
use redis_store::{RedisStore, StoreError};
use store::{Claim, Record, Snapshot, hash_id};

/// What one message changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Events to publish to the escalations topic before the message's offset is committed.
    pub events: Vec<EscalationEvent>,
    pub trend: ConversationTrend,
}

/// Counters for telemetry (never labelled by customer, conversation or scope).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EscalationStats {
    /// Redis is configured but unavailable: in-memory windows are in use.
    pub degraded: bool,
    pub messages_total: u64,
    /// Messages older than the late tolerance, counted in the current bucket.
    pub late_messages_total: u64,
    pub events_total: u64,
    pub degraded_events_total: u64,
    /// Detections held back by an open incident's cooldown.
    pub suppressed_total: u64,
    /// Redis calls that failed or timed out (each switches to degraded mode).
    pub redis_failures_total: u64,
    /// Returns to shared mode after a failure.
    pub redis_recoveries_total: u64,
}

#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    late: AtomicU64,
    events: AtomicU64,
    degraded_events: AtomicU64,
    suppressed: AtomicU64,
    redis_failures: AtomicU64,
    redis_recoveries: AtomicU64,
}

/// Escalation detection for one replica; cheap to clone, safe to share across partitions.
#[derive(Clone)]
pub struct Escalator {
    inner: Arc<Inner>,
}

struct Inner {
    /// Swapped by a reload of `--escalation-thresholds`; a round reads it once.
    cfg: arc_swap::ArcSwap<EscalationConfig>,
    clock: Arc<dyn Clock>,
    /// Event-time watermark per input partition: the latest `sent_at` seen there, never past
    /// processing time.
    watermarks: std::sync::Mutex<HashMap<(String, i32), i64>>,
    memory: MemoryStore,
    redis: Option<RedisStore>,
    degraded: AtomicBool,
    counters: Counters,
}

impl Escalator {
    /// Never fails because Redis is down: it starts degraded and a background task (stopped
    /// when the last clone is dropped) reconnects. An unusable URL (which `validate` reports)
    /// leaves it in-memory only, degraded.
    pub async fn new(cfg: &EscalationConfig, clock: Arc<dyn Clock>) -> Escalator {
        let (redis, unusable) = match RedisStore::new(cfg) {
            Ok(redis) => (redis, false),
            Err(error) => {
                tracing::error!(%error, "unusable Redis settings: escalation runs on per-replica in-memory windows");
                (None, true)
            }
        };
        let inner = Arc::new(Inner {
            cfg: arc_swap::ArcSwap::from_pointee(cfg.clone()),
            clock,
            watermarks: std::sync::Mutex::default(),
            memory: MemoryStore::new(cfg),
            redis,
            degraded: AtomicBool::new(unusable),
            counters: Counters::default(),
        });
        if let Some(redis) = &inner.redis {
            match redis.ping().await {
                Ok(()) => tracing::info!("escalation windows shared through Redis"),
                Err(error) => inner.fail(&error),
            }
            tokio::spawn(probe(Arc::downgrade(&inner)));
        } else if !unusable {
            tracing::info!(
                "no Redis configured: escalation runs on in-memory windows (single replica)"
            );
        }
        Escalator { inner }
    }

    /// Observes one classified message (in per-partition input order); `observe_batch` of one.
    pub async fn observe(&self, msg: &CustomerMessage, result: &EmotionResult) -> Observation {
        self.observe_batch(&[(msg, result)])
            .await
            .pop()
            .expect("one observation per message")
    }

    /// Observes classified messages in per-partition input order, one observation per message.
    /// Never fails: on Redis errors or timeouts it falls back to this replica's in-memory
    /// windows and marks the events degraded.
    ///
    /// All the messages' windows are written and read in one Redis round trip, in order, so
    /// each message sees the ones before it. Cooldowns are then claimed message by message.
    /// The windows do not depend on claims, and a detection made before an earlier message's
    /// claim was visible is settled by the claim itself (the cooldown holds it back or upgrades
    /// it), so a round gives the same observations as its messages one by one.
    pub async fn observe_batch(
        &self,
        items: &[(&CustomerMessage, &EmotionResult)],
    ) -> Vec<Observation> {
        let inner = &*self.inner;
        let cfg = &*inner.cfg.load_full();
        let now_ms = inner.clock.now_ms();
        let recs: Vec<Record> = {
            let mut watermarks = inner
                .watermarks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            items
                .iter()
                .map(|(msg, result)| {
                    let partition = (result.source_topic.clone(), result.source_partition);
                    let watermark = watermarks.entry(partition).or_insert(i64::MIN);
                    *watermark = (*watermark).max(msg.sent_at.min(now_ms));
                    Record::at(cfg, msg, result, now_ms, *watermark)
                })
                .collect()
        };
        let late = recs.iter().filter(|rec| rec.late).count() as u64;
        inner
            .counters
            .messages
            .fetch_add(recs.len() as u64, Ordering::Relaxed);
        inner.counters.late.fetch_add(late, Ordering::Relaxed);

        // Always written, so a failover starts from warm windows.
        let local: Vec<Snapshot> = recs
            .iter()
            .map(|rec| inner.memory.record(cfg, rec))
            .collect();
        let shared = match inner.shared() {
            Some(redis) => match redis.record(cfg, &recs).await {
                Ok(snapshots) => Some(snapshots),
                Err(error) => {
                    inner.fail(&error);
                    None
                }
            },
            None => None,
        };
        let mut degraded = cfg.redis_url.is_some() && shared.is_none();
        let snapshots = shared.unwrap_or(local);
        let mut observations = Vec::with_capacity(items.len());
        let mut escalated: HashSet<&str> = HashSet::new();
        for ((msg, result), (rec, snapshot)) in items.iter().zip(recs.iter().zip(&snapshots)) {
            let mut observation = inner.decide(cfg, msg, rec, snapshot, &mut degraded).await;
            for event in &mut observation.events {
                event.model_version = Some(result.model_version.clone());
            }
            // A conversation escalated earlier in the round holds its trend cooldown now (the
            // claim opened it or found it open), as the later turns would have read one by one.
            let conversation = rec.keys.conversation.as_str();
            if observation.trend.escalated {
                escalated.insert(conversation);
            } else if escalated.contains(conversation) {
                observation.trend.escalated = true;
            }
            observations.push(observation);
        }
        observations
    }

    /// Swaps in new decision thresholds (a reload of `--escalation-thresholds`); the next round
    /// uses them. Only thresholds and cooldowns may differ from the settings at startup.
    pub fn set_config(&self, cfg: EscalationConfig) {
        self.inner.cfg.store(Arc::new(cfg));
    }

    /// Redis is configured but unavailable: events come from per-replica windows.
    pub fn is_degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> EscalationStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EscalationStats {
            degraded: self.is_degraded(),
            messages_total: get(&c.messages),
            late_messages_total: get(&c.late),
            events_total: get(&c.events),
            degraded_events_total: get(&c.degraded_events),
            suppressed_total: get(&c.suppressed),
            redis_failures_total: get(&c.redis_failures),
            redis_recoveries_total: get(&c.redis_recoveries),
        }
    }
}

impl Inner {
    /// Runs the detectors on one message's windows and claims the cooldowns of what they
    /// found. A failed claim makes this and the rest of the round `degraded`.
    async fn decide(
        &self,
        cfg: &EscalationConfig,
        msg: &CustomerMessage,
        rec: &Record,
        snapshot: &Snapshot,
        degraded: &mut bool,
    ) -> Observation {
        let (mut trend, detections) = detect(cfg, rec, snapshot);
        trend.escalated = snapshot.conversation_cooldown.is_some()
            || detections
                .iter()
                .any(|d| d.kind == EscalationKind::ConversationTrend);
        if detections.is_empty() {
            return Observation {
                events: Vec::new(),
                trend,
            };
        }

        // The events are built before the claims: an event that opens its incident gives the
        // incident its own escalation id.
        let token = hash_id(&[&msg.message_id]);
        let candidates: Vec<EscalationEvent> = detections
            .into_iter()
            .map(|d| {
                let fields = scope_fields(rec, msg, d.kind);
                d.into_event(fields, &msg.message_id, rec.now_ms, *degraded)
            })
            .collect();
        let claims: Vec<Claim> = candidates
            .iter()
            .map(|event| Claim {
                key: rec.keys.cooldown(event.kind),
                severity: event.severity,
                token: token.clone(),
                ttl_secs: cooldown_secs(cfg, event.kind),
                incident_key: rec.keys.incident(event.kind),
                incident_id: event.escalation_id.clone(),
            })
            .collect();
        let local_claimed = self.memory.claim(&claims, rec.now_ms);
        let claimed = match (*degraded, &self.redis) {
            (false, Some(redis)) => match redis.claim(&claims).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    self.fail(&error);
                    *degraded = true;
                    local_claimed
                }
            },
            _ => local_claimed,
        };

        let mut events = Vec::new();
        for (mut event, claimed) in candidates.into_iter().zip(claimed) {
            if !claimed.outcome.publishes() {
                self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            event.incident_id = Some(claimed.incident_id);
            event.degraded = *degraded;
            tracing::info!(
                escalation_id = %event.escalation_id,
                incident_id = event.incident_id.as_deref().unwrap_or_default(),
                kind = event.kind.as_str(),
                severity = event.severity.as_str(),
                degraded = *degraded,
                outcome = ?claimed.outcome,
                "escalation raised"
            );
            events.push(event);
        }
        self.counters
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        if *degraded {
            self.counters
                .degraded_events
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        Observation { events, trend }
    }

    /// Redis, unless unset or known to be unavailable.
    fn shared(&self) -> Option<&RedisStore> {
        self.redis
            .as_ref()
            .filter(|_| !self.degraded.load(Ordering::SeqCst))
    }

    fn fail(&self, error: &StoreError) {
        self.counters.redis_failures.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::SeqCst) {
            tracing::warn!(%error, "Redis unavailable: escalation falls back to per-replica in-memory windows (events marked degraded)");
        }
    }
}

/// While degraded, PINGs Redis every probe interval; on an answer, hands back the incidents
/// opened meanwhile and resumes shared mode. Ends when the escalator is dropped.
async fn probe(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.cfg.load().probe_interval()) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(redis) = &inner.redis else {
            return;
        };
        if !inner.degraded.load(Ordering::SeqCst) {
            continue;
        }
        let open = inner.memory.open_cooldowns(inner.clock.now_ms());
        let back = match redis.ping().await {
            Ok(()) => redis.restore_cooldowns(&open).await,
            Err(error) => Err(error),
        };
        match back {
            Ok(()) => {
                inner.degraded.store(false, Ordering::SeqCst);
                inner
                    .counters
                    .redis_recoveries
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    restored_cooldowns = open.len(),
                    "Redis reachable again: escalation windows shared again"
                );
            }
            Err(error) => tracing::debug!(%error, "Redis still unavailable"),
        }
    }
}

fn cooldown_secs(cfg: &EscalationConfig, kind: EscalationKind) -> u64 {
    match kind {
        EscalationKind::ConversationTrend => cfg.trend_cooldown_secs,
        EscalationKind::RepeatContact => cfg.repeat_cooldown_secs,
        EscalationKind::Surge => cfg.surge_cooldown_secs,
    }
}

/// Runs the detectors on the windows; pure.
fn detect(
    cfg: &EscalationConfig,
    rec: &Record,
    snapshot: &Snapshot,
) -> (ConversationTrend, Vec<Detection>) {
    // A redelivered message (a replay after a crash, a failed delivery or an aborted
    // transaction) is judged on the window as it stood at its own turn, not the newest one,
    // so it yields the same detection (and, its claim token being the same, the same event).
    let window = match snapshot.duplicate {
        false => &snapshot.turns[..],
        true => match snapshot
            .turns
            .iter()
            .position(|t| t.message_id == rec.turn.message_id)
        {
            Some(at) => &snapshot.turns[..=at],
            // Trimmed out of the window since: too old to judge again.
            None => &[],
        },
    };
    let assessment = trend::assess(cfg, window);
    let mut detections: Vec<Detection> = assessment.detection.into_iter().collect();
    if rec.negative {
        detections.extend(repeat::assess(cfg, &snapshot.contacts, rec.event_ms));
        if let Some(window) = &snapshot.surge {
            detections.extend(surge::assess(cfg, window));
        }
    }
    (assessment.trend, detections)
}

fn scope_fields(rec: &Record, msg: &CustomerMessage, kind: EscalationKind) -> ScopeFields {
    let tenant = msg.tenant_id.as_deref().unwrap_or_default();
    match kind {
        EscalationKind::ConversationTrend => ScopeFields {
            scope: format!("conversation:{tenant}:{}", msg.conversation_id),
            tenant_id: msg.tenant_id.clone(),
            channel: Some(msg.channel.clone()),
            conversation_id: Some(msg.conversation_id.clone()),
            customer_id: Some(msg.customer_id.clone()),
        },
        // The key carries the hashed customer id: keys end up in more places than payloads.
        EscalationKind::RepeatContact => ScopeFields {
            scope: format!("customer:{tenant}:{}", rec.keys.customer_hash),
            tenant_id: msg.tenant_id.clone(),
            channel: Some(msg.channel.clone()),
            conversation_id: Some(msg.conversation_id.clone()),
            customer_id: Some(msg.customer_id.clone()),
        },
        EscalationKind::Surge => ScopeFields {
            scope: format!("surge:{}", rec.surge.label),
            tenant_id: rec.surge.tenant_id.clone(),
            channel: rec.surge.channel.clone(),
            conversation_id: None,
            customer_id: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::message::Emotion;

    pub(crate) use super::testkit::{message, result};

    const T0: i64 = 1_700_000_000_000;

    async fn in_memory(cfg: EscalationConfig) -> (Escalator, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        (Escalator::new(&cfg, clock.clone()).await, clock)
    }

    /// Observes a conversation turn by turn (one second apart); returns events per turn.
    async fn converse(
        escalator: &Escalator,
        clock: &ManualClock,
        conversation: &str,
        turns: &[(f32, Emotion, f32)],
    ) -> Vec<Observation> {
        let mut out = Vec::new();
        for (i, &(negativity, emotion, confidence)) in turns.iter().enumerate() {
            clock.advance_ms(1_000);
            let msg = message(
                &format!("{conversation}-{i}"),
                conversation,
                "cust-1",
                clock.now_ms(),
            );
            let res = result(&msg, emotion, negativity, confidence);
            out.push(escalator.observe(&msg, &res).await);
        }
        out
    }

    #[tokio::test]
    async fn increasingly_negative_conversation_raises_one_trend_event_at_turn_six() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let observations =
            converse(&escalator, &clock, "conv-a", &testkit::ANGRIER_CONVERSATION).await;
        let turns_with_events: Vec<usize> = observations
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.events.is_empty())
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(turns_with_events, vec![6]);
        let event = &observations[5].events[0];
        assert_eq!(event.kind, EscalationKind::ConversationTrend);
        assert_eq!(event.severity, Severity::Warning);
        assert_eq!(event.scope, "conversation:acme:conv-a");
        assert_eq!(event.key(), event.scope);
        assert_eq!(event.customer_id.as_deref(), Some("cust-1"));
        assert!(!event.degraded);
        assert!(!observations[4].trend.escalated);
        assert!(observations[5..].iter().all(|o| o.trend.escalated));
        assert_eq!(observations[7].trend.turns, 8);
        assert!(!escalator.is_degraded());
    }

    /// Issue 14: a redelivered turn was judged on the conversation's newest window, so a
    /// replay after `kill -9` lost the escalation its first pass had raised.
    #[tokio::test]
    async fn a_replayed_conversation_raises_the_same_events() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        for from in [0, 3, 5, 7] {
            let conversation = format!("conv-replay-{from}");
            let (first, replay) = testkit::observe_and_replay(
                &escalator,
                &clock,
                &conversation,
                &testkit::angry_then_calmed(),
                from,
            )
            .await;
            assert_eq!(first[5].len(), 1, "turn 6 escalates");
            assert_eq!(replay, first[from..], "replayed from turn {}", from + 1);
        }
    }

    #[tokio::test]
    async fn calm_conversation_raises_nothing() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let observations =
            converse(&escalator, &clock, "conv-calm", &testkit::CALM_CONVERSATION).await;
        assert!(observations.iter().all(|o| o.events.is_empty()));
        assert!(
            observations
                .iter()
                .all(|o| !o.trend.escalated && !o.trend.rising)
        );
    }

    #[tokio::test]
    async fn warning_is_upgraded_to_critical_once_inside_the_cooldown() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let anger = (0.95, Emotion::Anger, 0.95);
        let observations = converse(&escalator, &clock, "conv-b", &[anger; 5]).await;
        let severities: Vec<Vec<Severity>> = observations
            .iter()
            .map(|o| o.events.iter().map(|e| e.severity).collect())
            .collect();
        // Turn 1: anger alone → warning. Turn 3: anger on a sustained EWMA → critical (upgrade).
        assert_eq!(
            severities,
            vec![
                vec![Severity::Warning],
                vec![],
                vec![Severity::Critical],
                vec![],
                vec![]
            ]
        );
        // After the cooldown a new incident may open.
        clock.advance_ms(config::secs_to_ms(defaults::TREND_COOLDOWN_SECS));
        let later = converse(&escalator, &clock, "conv-b", &[anger]).await;
        assert_eq!(later[0].events.len(), 1);
        assert_eq!(escalator.stats().suppressed_total, 3);
    }

    #[tokio::test]
    async fn a_round_observes_what_its_messages_observe_one_by_one() {
        let traffic = testkit::interleaved_turns(T0);
        for round in [4, traffic.len()] {
            let (single, clock) = in_memory(EscalationConfig::default()).await;
            let one_by_one =
                testkit::observe_in_rounds(&single, &clock, &traffic, round, false).await;
            let events = one_by_one.iter().filter(|o| !o.events.is_empty()).count();
            assert!(events >= 3, "the traffic escalates: {one_by_one:#?}");

            let (batched, clock) = in_memory(EscalationConfig::default()).await;
            let observed =
                testkit::observe_in_rounds(&batched, &clock, &traffic, round, true).await;
            assert_eq!(observed, one_by_one, "rounds of {round}");
        }
    }

    #[tokio::test]
    async fn redelivered_trigger_republishes_the_same_escalation_id() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let msg = message("m-1", "conv-c", "cust-1", clock.now_ms());
        let res = result(&msg, Emotion::Anger, 0.95, 0.95);
        let first = escalator.observe(&msg, &res).await;
        let again = escalator.observe(&msg, &res).await;
        assert_eq!(first.events.len(), 1);
        assert_eq!(again.events, first.events);
        assert_eq!(again.trend.turns, 1);
    }

    #[tokio::test]
    async fn repeat_contact_across_conversations_raises_one_event() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let mut kinds = Vec::new();
        for (i, conversation) in ["c1", "c1", "c2", "c3", "c4"].iter().enumerate() {
            clock.advance_ms(3_600_000);
            let msg = message(&format!("m{i}"), conversation, "cust-9", clock.now_ms());
            let res = result(&msg, Emotion::Frustration, 0.7, 0.7);
            let obs = escalator.observe(&msg, &res).await;
            kinds.push(obs.events.iter().map(|e| e.kind).collect::<Vec<_>>());
            if let Some(event) = obs.events.first() {
                assert_eq!(event.trigger_message_ids, vec!["m0", "m1", "m2"]);
                assert_eq!(event.conversation_count, Some(2));
                assert!(event.scope.starts_with("customer:acme:"));
                assert!(!event.scope.contains("cust-9"));
            }
        }
        assert_eq!(
            kinds,
            vec![
                vec![],
                vec![],
                vec![EscalationKind::RepeatContact],
                vec![],
                vec![]
            ]
        );
    }

    /// Issue 14: an angry customer raised a trend warning, a trend critical and a repeat-contact
    /// event as three unrelated incidents. They are one incident now: the later events carry
    /// the first one's id; another customer's events are another incident.
    #[tokio::test]
    async fn one_customers_trend_and_repeat_contact_events_share_one_incident() {
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        let events = testkit::one_incident_traffic(&escalator, &clock, "cust-1").await;
        let kinds: Vec<(EscalationKind, Severity)> =
            events.iter().map(|e| (e.kind, e.severity)).collect();
        assert_eq!(
            kinds,
            vec![
                (EscalationKind::ConversationTrend, Severity::Warning),
                (EscalationKind::ConversationTrend, Severity::Critical),
                (EscalationKind::RepeatContact, Severity::Warning),
            ]
        );
        let opener = Some(events[0].escalation_id.clone());
        assert!(
            events.iter().all(|e| e.incident_id == opener),
            "{events:#?}"
        );

        let other = testkit::one_incident_traffic(&escalator, &clock, "cust-2").await;
        assert_eq!(other.len(), 3);
        assert_eq!(other[0].incident_id, Some(other[0].escalation_id.clone()));
        assert_ne!(other[0].incident_id, opener);
    }

    #[tokio::test]
    async fn surge_on_one_channel_raises_exactly_one_event_for_that_scope() {
        let cfg = EscalationConfig::default();
        let replay = testkit::surge_replay(T0, "acme");
        let (escalator, clock) = in_memory(cfg).await;
        let mut events = Vec::new();
        for (msg, res) in &replay {
            clock.set_ms(msg.sent_at);
            events.extend(escalator.observe(msg, res).await.events);
        }
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].kind, EscalationKind::Surge);
        assert_eq!(events[0].scope, "surge:tenant=acme,channel=chat");
        assert_eq!(events[0].severity, Severity::Critical);
        assert_eq!(events[0].channel.as_deref(), Some("chat"));
        assert_eq!(events[0].customer_id, None);
        assert!(events[0].first_seen >= testkit::burst_start(T0));
        assert_eq!(events[0].trigger_message_ids.len(), 10);
    }

    /// Issue 14: windows ran in processing time, so a backlog replayed after downtime fell
    /// into one bucket with no baseline and its surge was never reported. Now they run on the
    /// partition's event-time watermark: the same input gives the same event, live or replayed.
    #[tokio::test]
    async fn a_backlog_replayed_a_day_later_reports_its_surge_at_its_event_time() {
        let replay = testkit::surge_replay(T0, "acme");
        let (escalator, clock) = in_memory(EscalationConfig::default()).await;
        clock.set_ms(T0 + 24 * 3_600_000);
        let mut events = Vec::new();
        for (msg, res) in &replay {
            clock.advance_ms(1); // the backlog drains fast
            events.extend(escalator.observe(msg, res).await.events);
        }
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].kind, EscalationKind::Surge);
        assert_eq!(events[0].scope, "surge:tenant=acme,channel=chat");
        assert!(events[0].first_seen >= testkit::burst_start(T0));
        assert!(events[0].first_seen < testkit::burst_start(T0) + 60_000);
        assert_eq!(escalator.stats().late_messages_total, 0);
    }

    #[tokio::test]
    async fn gradual_surge_raises_a_warning_then_one_critical_upgrade() {
        let cfg = EscalationConfig::default();
        let (escalator, clock) = in_memory(cfg).await;
        let mut events = Vec::new();
        // Dense baseline: 1 message/s at 10% negative for 15 minutes, then 90% negative.
        for i in 0..(15 * 60 + 120) {
            clock.set_ms(T0 + i * 1_000);
            let negative = if i < 15 * 60 {
                i % 10 == 0
            } else {
                i % 10 != 0
            };
            let msg = message(
                &format!("m{i}"),
                &format!("conv{i}"),
                &format!("u{i}"),
                clock.now_ms(),
            );
            let res = if negative {
                result(&msg, Emotion::Frustration, 0.8, 0.7)
            } else {
                result(&msg, Emotion::Neutral, 0.1, 0.9)
            };
            events.extend(escalator.observe(&msg, &res).await.events);
        }
        let severities: Vec<Severity> = events.iter().map(|e| e.severity).collect();
        assert_eq!(severities, vec![Severity::Warning, Severity::Critical]);
        assert!(events.iter().all(|e| e.kind == EscalationKind::Surge));
        assert_ne!(events[0].escalation_id, events[1].escalation_id);
    }

    #[tokio::test]
    async fn without_redis_events_are_not_degraded() {
        let (escalator, _clock) = in_memory(EscalationConfig::default()).await;
        let msg = message("m-1", "conv-d", "cust-1", T0);
        let obs = escalator
            .observe(&msg, &result(&msg, Emotion::Anger, 0.95, 0.95))
            .await;
        assert!(!obs.events[0].degraded);
        assert!(!escalator.is_degraded());
        assert_eq!(escalator.stats().events_total, 1);
    }

    #[tokio::test]
    async fn unreachable_redis_degrades_without_failing() {
        let cfg = EscalationConfig {
            // Nothing listens on port 1.
            redis_url: Some(RedisUrl::from("redis://127.0.0.1:1".to_owned())),
            redis_timeout_ms: 200,
            ..EscalationConfig::default()
        };
        let (escalator, _clock) = in_memory(cfg).await;
        assert!(escalator.is_degraded());
        let msg = message("m-1", "conv-e", "cust-1", T0);
        let obs = escalator
            .observe(&msg, &result(&msg, Emotion::Anger, 0.95, 0.95))
            .await;
        assert_eq!(obs.events.len(), 1);
        assert!(obs.events[0].degraded);
        assert_eq!(escalator.stats().degraded_events_total, 1);
    }
}
