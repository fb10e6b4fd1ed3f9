//! Per-replica escalation state in memory: the only state without Redis, and the fallback while
//! Redis is unavailable. It mirrors the Redis layout and rules (`store.rs`) with expiry driven
//! by the injected clock, and is bounded by `--escalation-memory-max-keys` entries per kind.
//!
//! In shared mode it is written as a shadow of Redis, so a failover starts from warm windows of
//! this replica's own traffic instead of empty ones.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use super::config::{EscalationConfig, secs_to_ms};
use super::event::EscalationKind;
use super::repeat::Contact;
use super::store::{
    Claim, ClaimOutcome, Claimed, Record, Snapshot, cooldown_severity, decide_claim,
};
use super::surge::SurgeWindow;
use super::trend::Turn;

/// Most negative messages kept per customer (the count saturates here).
pub(crate) fn contact_cap(cfg: &EscalationConfig) -> usize {
    cfg.repeat_critical_messages
        .max(cfg.max_trigger_ids)
        .max(64)
}

struct Entry<V> {
    value: V,
    expires_at: i64,
}

/// A map whose entries expire like Redis keys, bounded in size.
struct TtlMap<V> {
    map: HashMap<String, Entry<V>>,
    max_keys: usize,
}

impl<V> TtlMap<V> {
    fn new(max_keys: usize) -> Self {
        Self {
            map: HashMap::new(),
            max_keys,
        }
    }

    fn live(&self, key: &str, now: i64) -> Option<&V> {
        self.map
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| &e.value)
    }

    /// The live value (a fresh one if missing or expired), with its expiry reset to
    /// `now + ttl_ms`.
    fn touch(&mut self, key: &str, now: i64, ttl_ms: i64, fresh: impl FnOnce() -> V) -> &mut V {
        if self.live(key, now).is_none() {
            let value = fresh();
            self.insert(key, value, now, now);
        }
        let entry = self.map.get_mut(key).expect("entry inserted above");
        entry.expires_at = now.saturating_add(ttl_ms);
        &mut entry.value
    }

    fn insert(&mut self, key: &str, value: V, expires_at: i64, now: i64) {
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            self.shrink(now);
        }
        self.map.insert(key.to_owned(), Entry { value, expires_at });
    }

    /// Drops expired entries, then the soonest to expire, down to 90% of the bound; amortised
    /// over the next tenth of inserts.
    fn shrink(&mut self, now: i64) {
        self.map.retain(|_, e| e.expires_at > now);
        let target = self.max_keys - self.max_keys / 10 - 1;
        if self.map.len() > target {
            let mut expiries: Vec<i64> = self.map.values().map(|e| e.expires_at).collect();
            expiries.sort_unstable();
            let cutoff = expiries[self.map.len() - target - 1];
            self.map.retain(|_, e| e.expires_at > cutoff);
        }
    }
}

#[derive(Default)]
struct SurgeState {
    /// Bucket index → (messages, negative messages).
    buckets: BTreeMap<i64, (i64, i64)>,
    negatives: VecDeque<(i64, String)>,
}

struct State {
    conversations: TtlMap<VecDeque<Turn>>,
    customers: TtlMap<Vec<Contact>>,
    surges: TtlMap<SurgeState>,
    cooldowns: TtlMap<String>,
}

pub(crate) struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new(cfg: &EscalationConfig) -> Self {
        let max = cfg.memory_max_keys.max(1);
        Self {
            state: Mutex::new(State {
                conversations: TtlMap::new(max),
                customers: TtlMap::new(max),
                surges: TtlMap::new(max),
                cooldowns: TtlMap::new(max),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters at worst slightly off; keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn record(&self, cfg: &EscalationConfig, rec: &Record) -> Snapshot {
        let now = rec.now_ms;
        let mut state = self.lock();
        let State {
            conversations,
            customers,
            surges,
            cooldowns,
        } = &mut *state;

        let turns = conversations.touch(
            &rec.keys.conversation,
            now,
            secs_to_ms(cfg.trend_ttl_secs),
            VecDeque::new,
        );
        let duplicate = turns.iter().any(|t| t.message_id == rec.turn.message_id);
        if !duplicate {
            turns.push_back(rec.turn.clone());
            while turns.len() > cfg.trend_max_turns {
                turns.pop_front();
            }
        }
        let turns: Vec<Turn> = turns.iter().cloned().collect();
        let conversation_cooldown = cooldowns
            .live(&rec.keys.cooldown(EscalationKind::ConversationTrend), now)
            .and_then(|v| cooldown_severity(v));

        let surge = surges.touch(
            &rec.keys.surge_prefix,
            now,
            secs_to_ms(cfg.surge_ttl_secs()),
            SurgeState::default,
        );
        // Buckets live as long as their Redis keys would.
        let oldest_bucket = rec.now_bucket - secs_to_ms(cfg.surge_ttl_secs()) / cfg.bucket_ms();
        surge.buckets.retain(|&b, _| b >= oldest_bucket);
        if !duplicate {
            let counts = surge.buckets.entry(rec.event_bucket).or_default();
            counts.0 += 1;
            if rec.negative {
                counts.1 += 1;
            }
        }

        let mut snapshot = Snapshot {
            duplicate,
            turns,
            conversation_cooldown,
            contacts: Vec::new(),
            surge: None,
        };
        if !rec.negative {
            return snapshot;
        }

        if !duplicate {
            surge
                .negatives
                .push_back((rec.event_ms, rec.turn.message_id.clone()));
            while surge.negatives.len() > cfg.max_trigger_ids {
                surge.negatives.pop_front();
            }
        }
        snapshot.surge = Some(window(cfg, rec.now_bucket, surge));

        let contacts = customers.touch(
            &rec.keys.customer,
            now,
            secs_to_ms(cfg.repeat_window_secs),
            Vec::new,
        );
        let known = contacts.iter().any(|c| {
            c.message_id == rec.turn.message_id && c.conversation == rec.keys.conversation_hash
        });
        if !known {
            contacts.push(Contact {
                event_ms: rec.event_ms,
                conversation: rec.keys.conversation_hash.clone(),
                message_id: rec.turn.message_id.clone(),
            });
        }
        let cutoff = rec.repeat_cutoff_ms(cfg);
        contacts.retain(|c| c.event_ms >= cutoff);
        contacts.sort_by_key(|c| c.event_ms);
        let excess = contacts.len().saturating_sub(contact_cap(cfg));
        contacts.drain(..excess);
        snapshot.contacts = contacts.clone();
        snapshot
    }

    /// Same rule as the Redis claim script: the cooldown decides; a published claim joins the
    /// open incident or opens it; an opened cooldown keeps its incident open at least as long.
    pub fn claim(&self, claims: &[Claim], now: i64) -> Vec<Claimed> {
        let mut state = self.lock();
        claims
            .iter()
            .map(|claim| {
                let current = state.cooldowns.live(&claim.key, now).cloned();
                let outcome = decide_claim(current.as_deref(), claim);
                let expires_at = now.saturating_add(secs_to_ms(claim.ttl_secs));
                match outcome {
                    ClaimOutcome::Opened => {
                        state
                            .cooldowns
                            .insert(&claim.key, claim.stored_value(), expires_at, now);
                    }
                    ClaimOutcome::Upgraded => {
                        if let Some(entry) = state.cooldowns.map.get_mut(&claim.key) {
                            entry.value = claim.stored_value();
                        }
                    }
                    ClaimOutcome::Suppressed => {
                        return Claimed {
                            outcome,
                            incident_id: String::new(),
                        };
                    }
                    ClaimOutcome::Redelivered => {}
                }
                // Incidents share the cooldown map: restored to Redis with the cooldowns.
                let incident_id = match state.cooldowns.live(&claim.incident_key, now).cloned() {
                    None => {
                        state.cooldowns.insert(
                            &claim.incident_key,
                            claim.incident_id.clone(),
                            expires_at,
                            now,
                        );
                        claim.incident_id.clone()
                    }
                    Some(open) => {
                        if outcome == ClaimOutcome::Opened
                            && let Some(entry) = state.cooldowns.map.get_mut(&claim.incident_key)
                        {
                            entry.expires_at = entry.expires_at.max(expires_at);
                        }
                        open
                    }
                };
                Claimed {
                    outcome,
                    incident_id,
                }
            })
            .collect()
    }

    /// Open incidents as `(key, stored value, seconds left)`, to hand back to Redis when it
    /// returns (it may have lost them, or never seen those raised while it was away).
    pub fn open_cooldowns(&self, now: i64) -> Vec<(String, String, u64)> {
        let state = self.lock();
        state
            .cooldowns
            .map
            .iter()
            .filter(|(_, e)| e.expires_at > now)
            .map(|(key, e)| {
                let left_ms = u64::try_from(e.expires_at - now).unwrap_or(0);
                (key.clone(), e.value.clone(), left_ms.div_ceil(1_000).max(1))
            })
            .collect()
    }
}

fn window(cfg: &EscalationConfig, now_bucket: i64, state: &SurgeState) -> SurgeWindow {
    let recent_from = now_bucket - cfg.recent_buckets() + 1;
    let baseline_from = recent_from - cfg.baseline_buckets();
    let mut w = SurgeWindow {
        now_bucket,
        recent_negatives: state.negatives.iter().cloned().collect(),
        ..SurgeWindow::default()
    };
    for (&bucket, &(total, negative)) in state.buckets.range(baseline_from..=now_bucket) {
        if bucket >= recent_from {
            w.recent_total += total;
            w.recent_negative += negative;
            if negative > 0 && w.first_negative_bucket.is_none() {
                w.first_negative_bucket = Some(bucket);
            }
        } else {
            w.baseline_total += total;
            w.baseline_negative += negative;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escalation::event::Severity;
    use crate::escalation::tests::{message, result};
    use crate::message::Emotion;

    fn record(
        cfg: &EscalationConfig,
        id: &str,
        conv: &str,
        sent_at: i64,
        now: i64,
        emotion: Emotion,
    ) -> Record {
        let msg = message(id, conv, "cust", sent_at);
        let negativity = if emotion.is_negative() { 0.8 } else { 0.1 };
        Record::new(cfg, &msg, &result(&msg, emotion, negativity, 0.7), now)
    }

    #[test]
    fn conversation_window_keeps_the_last_n_turns_and_expires() {
        let cfg = EscalationConfig {
            trend_max_turns: 3,
            ..EscalationConfig::default()
        };
        let store = MemoryStore::new(&cfg);
        let mut now = 1_000_000;
        for i in 0..5 {
            now += 1_000;
            store.record(
                &cfg,
                &record(&cfg, &format!("m{i}"), "c", now, now, Emotion::Neutral),
            );
        }
        now += 1_000;
        let snap = store.record(&cfg, &record(&cfg, "m5", "c", now, now, Emotion::Neutral));
        let ids: Vec<&str> = snap.turns.iter().map(|t| t.message_id.as_str()).collect();
        assert_eq!(ids, vec!["m3", "m4", "m5"]);
        now += secs_to_ms(cfg.trend_ttl_secs) + 1;
        let snap = store.record(&cfg, &record(&cfg, "m6", "c", now, now, Emotion::Neutral));
        assert_eq!(snap.turns.len(), 1);
    }

    #[test]
    fn redelivered_message_is_not_counted_twice() {
        let cfg = EscalationConfig::default();
        let store = MemoryStore::new(&cfg);
        let now = 1_000_000;
        let rec = record(&cfg, "m1", "c", now, now, Emotion::Anger);
        let first = store.record(&cfg, &rec);
        let again = store.record(&cfg, &rec);
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(again.turns.len(), 1);
        assert_eq!(again.contacts.len(), 1);
        let surge = again
            .surge
            .expect("negative message reads the surge window");
        assert_eq!((surge.recent_total, surge.recent_negative), (1, 1));
    }

    #[test]
    fn late_message_is_counted_in_the_current_bucket() {
        let cfg = EscalationConfig::default();
        let store = MemoryStore::new(&cfg);
        let now = 10_000_000;
        // 10 minutes late: beyond the 2-minute tolerance, so it lands in the current bucket
        // (inside the recent window) instead of the baseline.
        let snap = store.record(
            &cfg,
            &record(&cfg, "m1", "c", now - 600_000, now, Emotion::Anger),
        );
        let surge = snap.surge.expect("window");
        assert_eq!((surge.recent_total, surge.baseline_total), (1, 0));
        // 90 s late: within tolerance, so it keeps its own (baseline) bucket.
        let snap = store.record(
            &cfg,
            &record(&cfg, "m2", "d", now - 90_000, now, Emotion::Anger),
        );
        let surge = snap.surge.expect("window");
        assert_eq!((surge.recent_total, surge.baseline_total), (1, 1));
    }

    #[test]
    fn cooldown_expires_with_the_clock() {
        let cfg = EscalationConfig::default();
        let store = MemoryStore::new(&cfg);
        let claim = Claim {
            key: "k".into(),
            severity: Severity::Warning,
            token: "t".into(),
            ttl_secs: 60,
            incident_key: "i".into(),
            incident_id: "e-t".into(),
        };
        let other = Claim {
            token: "u".into(),
            incident_id: "e-u".into(),
            ..claim.clone()
        };
        let outcomes = |claimed: Vec<Claimed>| -> Vec<(ClaimOutcome, String)> {
            claimed
                .into_iter()
                .map(|c| (c.outcome, c.incident_id))
                .collect()
        };
        assert_eq!(
            outcomes(store.claim(&[claim], 0)),
            vec![(ClaimOutcome::Opened, "e-t".to_owned())]
        );
        assert_eq!(
            outcomes(store.claim(std::slice::from_ref(&other), 59_999)),
            vec![(ClaimOutcome::Suppressed, String::new())]
        );
        let mut open = store.open_cooldowns(30_000);
        open.sort();
        assert_eq!(
            open,
            vec![
                ("i".to_owned(), "e-t".to_owned(), 30),
                ("k".to_owned(), "warning:t".to_owned(), 30)
            ]
        );
        assert_eq!(
            outcomes(store.claim(&[other], 60_000)),
            vec![(ClaimOutcome::Opened, "e-u".to_owned())]
        );
    }

    /// A later kind (or a later scope of the same customer) joins the open incident, and an
    /// opened cooldown keeps it open at least as long as itself.
    #[test]
    fn claims_join_the_open_incident_and_extend_it() {
        let cfg = EscalationConfig::default();
        let store = MemoryStore::new(&cfg);
        let claim = |key: &str, token: &str, ttl_secs| Claim {
            key: key.into(),
            severity: Severity::Warning,
            token: token.into(),
            ttl_secs,
            incident_key: "inc".into(),
            incident_id: format!("e-{token}"),
        };
        let ids = |claimed: Vec<Claimed>| -> Vec<String> {
            claimed.into_iter().map(|c| c.incident_id).collect()
        };
        assert_eq!(
            ids(store.claim(&[claim("trend", "a", 60), claim("repeat", "a", 600)], 0)),
            vec!["e-a", "e-a"]
        );
        // The trend cooldown has ended, the repeat one (600 s) still holds the incident open.
        assert_eq!(
            ids(store.claim(&[claim("trend", "b", 60)], 120_000)),
            vec!["e-a"]
        );
        assert_eq!(
            ids(store.claim(&[claim("trend", "c", 60)], 600_000)),
            vec!["e-c"]
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let cfg = EscalationConfig {
            memory_max_keys: 100,
            ..EscalationConfig::default()
        };
        let store = MemoryStore::new(&cfg);
        for i in 0..1_000 {
            store.record(
                &cfg,
                &record(
                    &cfg,
                    "m",
                    &format!("c{i}"),
                    5_000 + i,
                    5_000 + i,
                    Emotion::Neutral,
                ),
            );
        }
        assert!(store.lock().conversations.map.len() <= 100);
    }
}
