//! Conversation trend (pure logic): given the last N turns of a conversation, oldest first and
//! ending with the message just observed, decide whether the customer is getting angrier.
//!
//! Rules, evaluated on the newest turn:
//! - `ewma_threshold`: EWMA negativity over the window >= threshold, once the window holds
//!   `trend_min_turns` turns (`ewma_critical` when it also reaches the critical level);
//! - `rising`: the EWMA rose by at least Δ over the last K turns;
//! - `anger`: the message's primary emotion is anger with confidence >= `anger_confidence`.
//!
//! Any rule makes a warning; the critical EWMA level, or anger on top of a sustained EWMA,
//! makes it critical.

use crate::message::{ConversationTrend, Emotion};

use super::config::EscalationConfig;
use super::event::{Detection, EscalationKind, Severity, WindowStats};

/// Float comparisons against thresholds tolerate this much rounding.
const EPSILON: f32 = 1e-6;

/// One observed message of a conversation, as kept in its window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Turn {
    /// Event time (clamped `sent_at`), ms.
    pub event_ms: i64,
    /// Quantised to 1e-4 so the Redis and in-memory windows hold the same numbers.
    pub negativity: f32,
    pub emotion: Emotion,
    pub confidence: f32,
    pub message_id: String,
}

impl Turn {
    pub fn new(
        event_ms: i64,
        negativity: f32,
        emotion: Emotion,
        confidence: f32,
        message_id: String,
    ) -> Self {
        Self {
            event_ms,
            negativity: quantise(negativity),
            emotion,
            confidence: quantise(confidence),
            message_id,
        }
    }

    /// Negative primary emotion, or negativity at or above the threshold.
    pub fn is_negative(&self, negativity_threshold: f32) -> bool {
        counts_as_negative(self.emotion, self.negativity, negativity_threshold)
    }
}

/// The one definition of a negative message, shared by trend, repeat contact and surge.
pub(crate) fn counts_as_negative(emotion: Emotion, negativity: f32, threshold: f32) -> bool {
    emotion.is_negative() || negativity + EPSILON >= threshold
}

pub(crate) fn quantise(x: f32) -> f32 {
    if x.is_finite() {
        (x.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

/// An f32 statistic as the event's f64, without the binary noise (0.6 stays 0.6, not
/// 0.6000000238).
fn widen(x: f32) -> f64 {
    (f64::from(x) * 1e6).round() / 1e6
}

/// The trend after the newest turn, and an escalation if one is due.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct TrendAssessment {
    /// `escalated` is left false: only the cooldown state knows it.
    pub trend: ConversationTrend,
    pub detection: Option<Detection>,
}

/// EWMA of negativity per turn, seeded with the oldest turn of the window.
pub(crate) fn ewma_series(turns: &[Turn], alpha: f32) -> Vec<f32> {
    let mut series = Vec::with_capacity(turns.len());
    let mut ewma: Option<f32> = None;
    for turn in turns {
        let next = match ewma {
            None => turn.negativity,
            Some(prev) => alpha * turn.negativity + (1.0 - alpha) * prev,
        };
        ewma = Some(next);
        series.push(next);
    }
    series
}

pub(crate) fn assess(cfg: &EscalationConfig, turns: &[Turn]) -> TrendAssessment {
    let Some(current) = turns.last() else {
        return TrendAssessment::default();
    };
    let series = ewma_series(turns, cfg.trend_ewma_alpha);
    let ewma = series.last().copied().unwrap_or_default();
    let k = cfg.trend_rise_turns;
    let earlier = (series.len() > k).then(|| series[series.len() - 1 - k]);
    let rising = earlier.is_some_and(|before| ewma - before + EPSILON >= cfg.trend_rise_delta);
    let enough_turns = turns.len() >= cfg.trend_min_turns;
    let sustained = enough_turns && ewma + EPSILON >= cfg.trend_ewma_threshold;
    let critical_level = enough_turns && ewma + EPSILON >= cfg.trend_ewma_critical;
    let anger =
        current.emotion == Emotion::Anger && current.confidence + EPSILON >= cfg.anger_confidence;

    let trend = ConversationTrend {
        turns: u32::try_from(turns.len()).unwrap_or(u32::MAX),
        ewma_negativity: ewma,
        rising,
        escalated: false,
    };

    let mut reasons = Vec::new();
    if critical_level {
        reasons.push("ewma_critical");
    } else if sustained {
        reasons.push("ewma_threshold");
    }
    if rising {
        reasons.push("rising");
    }
    if anger {
        reasons.push("anger");
    }
    if reasons.is_empty() {
        return TrendAssessment {
            trend,
            detection: None,
        };
    }
    let severity = if critical_level || (anger && sustained) {
        Severity::Critical
    } else {
        Severity::Warning
    };

    let threshold = cfg.negativity_threshold;
    let negative_count = turns.iter().filter(|t| t.is_negative(threshold)).count();
    // The turns that make up the incident: the negative ones of the rise span (K + 1 turns).
    let span = &turns[turns.len().saturating_sub(k + 1)..];
    let mut triggers: Vec<&Turn> = span.iter().filter(|t| t.is_negative(threshold)).collect();
    if triggers.is_empty() {
        triggers.push(current);
    }
    let first_seen = triggers
        .iter()
        .map(|t| t.event_ms)
        .min()
        .unwrap_or(current.event_ms);
    let skip = triggers.len().saturating_sub(cfg.max_trigger_ids);
    let trigger_message_ids = triggers[skip..]
        .iter()
        .map(|t| t.message_id.clone())
        .collect();

    let detection = Detection {
        kind: EscalationKind::ConversationTrend,
        severity,
        reasons,
        stats: WindowStats {
            window_start: turns.iter().map(|t| t.event_ms).min().unwrap_or_default(),
            window_end: turns.iter().map(|t| t.event_ms).max().unwrap_or_default(),
            message_count: turns.len() as i64,
            negative_count: negative_count as i64,
            negative_rate: Some(negative_count as f64 / turns.len() as f64),
            baseline_count: None,
            baseline_rate: earlier.map(widen),
            conversation_count: None,
            score: widen(ewma),
            threshold: widen(cfg.trend_ewma_threshold),
        },
        trigger_message_ids,
        first_seen,
    };
    TrendAssessment {
        trend,
        detection: Some(detection),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::escalation::testkit::{ANGRIER_CONVERSATION, CALM_CONVERSATION};

    proptest! {
        #[test]
        fn ewma_stays_within_the_range_of_negativity(
            negativities in proptest::collection::vec(-1.0f32..2.0, 1..30),
            alpha in 0.01f32..=1.0,
        ) {
            let t: Vec<Turn> = negativities
                .iter()
                .map(|&n| Turn::new(0, n, Emotion::Neutral, 0.5, "m".into()))
                .collect();
            for ewma in ewma_series(&t, alpha) {
                prop_assert!((0.0..=1.0).contains(&ewma), "{ewma}");
            }
        }
    }

    fn turns(spec: &[(f32, Emotion, f32)]) -> Vec<Turn> {
        spec.iter()
            .enumerate()
            .map(|(i, &(neg, emotion, conf))| {
                Turn::new(1_000 * i as i64, neg, emotion, conf, format!("m{}", i + 1))
            })
            .collect()
    }

    /// The first turn (1-based) whose window triggers, and the detection there.
    fn first_trigger(cfg: &EscalationConfig, all: &[Turn]) -> Option<(usize, Detection)> {
        (1..=all.len()).find_map(|n| assess(cfg, &all[..n]).detection.map(|d| (n, d)))
    }

    #[test]
    fn ewma_is_seeded_with_the_oldest_turn() {
        let t = turns(&[
            (0.2, Emotion::Neutral, 0.5),
            (0.6, Emotion::Frustration, 0.5),
        ]);
        let series = ewma_series(&t, 0.5);
        assert_eq!(series, vec![0.2, 0.4]);
    }

    #[test]
    fn increasingly_negative_conversation_triggers_rising_warning_at_turn_six() {
        let cfg = EscalationConfig::default();
        let t = turns(&ANGRIER_CONVERSATION[..6]);
        let (turn, detection) = first_trigger(&cfg, &t).expect("escalates");
        // EWMA (alpha 0.4): .05 .07 .162 .297 .458 .595; rise over 3 turns at turn 6: .433.
        assert_eq!(turn, 6);
        assert_eq!(detection.severity, Severity::Warning);
        assert_eq!(detection.reasons, vec!["rising"]);
        assert_eq!(detection.trigger_message_ids, vec!["m4", "m5", "m6"]);
        assert_eq!(detection.first_seen, 3_000);
        assert_eq!(detection.stats.message_count, 6);
        assert_eq!(detection.stats.negative_count, 3);
        let trend = assess(&cfg, &t).trend;
        assert!(trend.rising);
        assert_eq!(trend.turns, 6);
        assert!((trend.ewma_negativity - 0.595).abs() < 1e-3);
    }

    #[test]
    fn calm_conversation_never_triggers() {
        let cfg = EscalationConfig::default();
        let t = turns(&CALM_CONVERSATION);
        assert_eq!(first_trigger(&cfg, &t), None);
        assert!(!assess(&cfg, &t).trend.rising);
    }

    #[test]
    fn single_negative_message_after_calm_does_not_trigger() {
        let cfg = EscalationConfig::default();
        let t = turns(&[
            (0.0, Emotion::Neutral, 0.9),
            (0.0, Emotion::Neutral, 0.9),
            (0.0, Emotion::Neutral, 0.9),
            (0.9, Emotion::Frustration, 0.8),
        ]);
        assert_eq!(first_trigger(&cfg, &t), None);
    }

    #[test]
    fn high_confidence_anger_triggers_on_its_own() {
        let cfg = EscalationConfig::default();
        let t = turns(&[(0.95, Emotion::Anger, 0.93)]);
        let (turn, detection) = first_trigger(&cfg, &t).expect("escalates");
        assert_eq!(turn, 1);
        assert_eq!(detection.reasons, vec!["anger"]);
        assert_eq!(detection.severity, Severity::Warning);
        let low_confidence = turns(&[(0.95, Emotion::Anger, 0.6)]);
        assert_eq!(first_trigger(&cfg, &low_confidence), None);
    }

    #[test]
    fn sustained_negativity_reaching_the_critical_level_is_critical() {
        let cfg = EscalationConfig::default();
        let t = turns(&[
            (0.9, Emotion::Frustration, 0.8),
            (0.9, Emotion::Frustration, 0.8),
            (0.9, Emotion::Disappointment, 0.8),
        ]);
        let detection = assess(&cfg, &t).detection.expect("escalates");
        assert_eq!(detection.severity, Severity::Critical);
        assert_eq!(detection.reasons, vec!["ewma_critical"]);
    }

    #[test]
    fn anger_on_top_of_sustained_negativity_is_critical() {
        let cfg = EscalationConfig::default();
        let t = turns(&[
            (0.7, Emotion::Frustration, 0.8),
            (0.7, Emotion::Frustration, 0.8),
            (0.7, Emotion::Anger, 0.95),
        ]);
        let detection = assess(&cfg, &t).detection.expect("escalates");
        assert_eq!(detection.severity, Severity::Critical);
        assert_eq!(detection.reasons, vec!["ewma_threshold", "anger"]);
    }

    #[test]
    fn trigger_ids_are_bounded_and_keep_the_newest() {
        let cfg = EscalationConfig {
            max_trigger_ids: 2,
            ..EscalationConfig::default()
        };
        let t = turns(&[(0.9, Emotion::Anger, 0.95); 5]);
        let detection = assess(&cfg, &t).detection.expect("escalates");
        assert_eq!(detection.trigger_message_ids, vec!["m4", "m5"]);
        assert_eq!(detection.first_seen, 1_000);
    }
}
