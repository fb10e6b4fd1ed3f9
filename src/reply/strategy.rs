//! How a reply responds to the customer's emotion: the strategy chosen from the emotion
//! label, its confidence and negativity, and the conversation's trend. The mapping is
//! configuration (`strategies:` in `config/replies.yaml`).

use std::collections::{BTreeMap, BTreeSet};

use super::config::StrategiesConfig;
use crate::message::{ConversationTrend, Emotion, EmotionResult};

/// Below this negativity an untrusted label is answered with the default strategy.
const UNCERTAIN_NEGATIVITY: f32 = 0.5;

pub(crate) struct StrategyRules {
    by_emotion: BTreeMap<Emotion, String>,
    default: String,
    escalation: String,
    escalate_negativity: f32,
    min_confidence: f32,
    uncertain_negative: String,
    acknowledge_only: BTreeSet<String>,
}

impl StrategyRules {
    /// Expects a validated config (every `by_emotion` key is an emotion label).
    pub(crate) fn new(config: &StrategiesConfig) -> StrategyRules {
        let by_emotion: BTreeMap<Emotion, String> = config
            .by_emotion
            .iter()
            .filter_map(|(label, strategy)| Some((Emotion::parse(label)?, strategy.clone())))
            .collect();
        for emotion in Emotion::ALL.iter().filter(|e| !by_emotion.contains_key(e)) {
            tracing::warn!(
                emotion = emotion.as_str(),
                fallback = config.default.as_str(),
                "replies config maps no strategy to this emotion; using the default strategy"
            );
        }
        StrategyRules {
            by_emotion,
            default: config.default.clone(),
            escalation: config.escalation.clone(),
            escalate_negativity: config.escalate_negativity,
            min_confidence: config.min_confidence,
            uncertain_negative: config
                .uncertain_negative
                .clone()
                .unwrap_or_else(|| config.default.clone()),
            acknowledge_only: config.acknowledge_only.iter().cloned().collect(),
        }
    }

    pub(crate) fn default_strategy(&self) -> &str {
        &self.default
    }

    /// Strategies whose replies only acknowledge: no intent body, no private-channel invite.
    pub(crate) fn acknowledges_only(&self, strategy: &str) -> bool {
        self.acknowledge_only.contains(strategy)
    }

    /// A customer getting angrier gets the escalation strategy whatever this message's
    /// label; a positive message keeps its thanks (review is still required upstream).
    pub(crate) fn choose(&self, result: &EmotionResult, trend: Option<&ConversationTrend>) -> &str {
        let emotion = result.primary();
        let confidence = unit(result.confidence);
        let negativity = unit(result.negativity);
        let heated = trend_is_heated(trend) || negativity >= self.escalate_negativity;
        if heated && !emotion.is_positive() {
            return &self.escalation;
        }
        if confidence < self.min_confidence {
            return if negativity >= UNCERTAIN_NEGATIVITY {
                &self.uncertain_negative
            } else {
                &self.default
            };
        }
        self.by_emotion.get(&emotion).unwrap_or(&self.default)
    }
}

pub(crate) fn trend_is_heated(trend: Option<&ConversationTrend>) -> bool {
    trend.is_some_and(|t| t.rising || t.escalated)
}

/// A model score as a number in [0, 1]; NaN counts as 0 (no confidence, no negativity).
pub(crate) fn unit(score: f32) -> f32 {
    if score.is_nan() {
        0.0
    } else {
        score.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An emotion result as the model would publish it.
    pub(crate) fn result(emotion: Emotion, confidence: f32, negativity: f32) -> EmotionResult {
        EmotionResult {
            message_id: "m-1".into(),
            conversation_id: "c-1".into(),
            customer_id: "cust-1".into(),
            tenant_id: None,
            channel: "chat".into(),
            primary_emotion: emotion.as_str().into(),
            labels: vec![emotion.as_str().into()],
            scores: BTreeMap::from([(emotion.as_str().to_string(), confidence)]),
            confidence,
            valence: if emotion.is_positive() {
                0.8
            } else {
                -negativity
            },
            negativity,
            model_version: "test".into(),
            processed_at: 0,
            source_topic: "messages".into(),
            source_partition: 0,
            source_offset: 0,
            language: "en".into(),
        }
    }

    fn rules() -> StrategyRules {
        let config: StrategiesConfig = serde_norway::from_str(
            r#"
by_emotion:
  anger: de_escalate
  frustration: acknowledge_next_step
  disappointment: empathise_remedy
  anxiety: reassure
  confusion: clarify
  gratitude: thank
  satisfaction: thank_reinforce
  neutral: answer_directly
default: answer_directly
escalation: de_escalate
uncertain_negative: acknowledge_next_step
"#,
        )
        .expect("test config parses");
        StrategyRules::new(&config)
    }

    #[test]
    fn each_emotion_gets_its_configured_strategy() {
        let rules = rules();
        let expected = [
            (Emotion::Anger, "de_escalate"),
            (Emotion::Frustration, "acknowledge_next_step"),
            (Emotion::Disappointment, "empathise_remedy"),
            (Emotion::Anxiety, "reassure"),
            (Emotion::Confusion, "clarify"),
            (Emotion::Gratitude, "thank"),
            (Emotion::Satisfaction, "thank_reinforce"),
            (Emotion::Neutral, "answer_directly"),
        ];
        for (emotion, strategy) in expected {
            let negativity = if emotion.is_negative() { 0.6 } else { 0.1 };
            assert_eq!(
                rules.choose(&result(emotion, 0.8, negativity), None),
                strategy
            );
        }
    }

    #[test]
    fn rising_or_escalated_trend_upgrades_to_de_escalation() {
        let rules = rules();
        let rising = ConversationTrend {
            rising: true,
            ..Default::default()
        };
        let escalated = ConversationTrend {
            escalated: true,
            ..Default::default()
        };
        let confused = result(Emotion::Confusion, 0.9, 0.2);
        assert_eq!(rules.choose(&confused, Some(&rising)), "de_escalate");
        assert_eq!(rules.choose(&confused, Some(&escalated)), "de_escalate");
        assert_eq!(
            rules.choose(&confused, Some(&ConversationTrend::default())),
            "clarify"
        );
    }

    #[test]
    fn positive_message_in_a_heated_conversation_keeps_its_thanks() {
        let escalated = ConversationTrend {
            escalated: true,
            ..Default::default()
        };
        assert_eq!(
            rules().choose(&result(Emotion::Gratitude, 0.9, 0.0), Some(&escalated)),
            "thank"
        );
    }

    #[test]
    fn very_negative_message_is_de_escalated_even_when_labelled_frustration() {
        assert_eq!(
            rules().choose(&result(Emotion::Frustration, 0.8, 0.95), None),
            "de_escalate"
        );
    }

    #[test]
    fn untrusted_label_falls_back_by_negativity() {
        let rules = rules();
        assert_eq!(
            rules.choose(&result(Emotion::Gratitude, 0.2, 0.1), None),
            "answer_directly"
        );
        assert_eq!(
            rules.choose(&result(Emotion::Anxiety, 0.2, 0.7), None),
            "acknowledge_next_step"
        );
        assert_eq!(
            rules.choose(&result(Emotion::Anger, f32::NAN, f32::NAN), None),
            "answer_directly"
        );
    }

    #[test]
    fn unknown_label_is_treated_as_neutral() {
        let mut r = result(Emotion::Neutral, 0.9, 0.0);
        r.primary_emotion = "elation".into();
        assert_eq!(rules().choose(&r, None), "answer_directly");
    }
}
