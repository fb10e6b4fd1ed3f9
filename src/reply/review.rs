//! Whether a human must review a draft before it is sent: negative or uncertain emotion,
//! a heated conversation, or a channel or tenant configured for review.

use std::collections::BTreeSet;

use super::config::ReviewConfig;
use super::strategy::{trend_is_heated, unit};
use crate::message::{ConversationTrend, EmotionResult};

pub(crate) struct ReviewRules {
    negative_emotions: bool,
    negativity: f32,
    min_confidence: f32,
    trend: bool,
    channels: BTreeSet<String>,
    tenants: BTreeSet<String>,
}

impl ReviewRules {
    pub(crate) fn new(config: &ReviewConfig) -> ReviewRules {
        ReviewRules {
            negative_emotions: config.negative_emotions,
            negativity: config.negativity,
            min_confidence: config.min_confidence,
            trend: config.trend,
            channels: config.channels.iter().map(|c| c.to_lowercase()).collect(),
            tenants: config.tenants.iter().cloned().collect(),
        }
    }

    /// `channel` is the message's channel, `kind` the formatting it resolved to; either may
    /// be listed (`social` covers an aliased `twitter`).
    pub(crate) fn requires_review(
        &self,
        result: &EmotionResult,
        trend: Option<&ConversationTrend>,
        channel: &str,
        kind: &str,
        tenant: Option<&str>,
    ) -> bool {
        (self.negative_emotions && result.primary().is_negative())
            || unit(result.negativity) >= self.negativity
            || unit(result.confidence) < self.min_confidence
            || (self.trend && trend_is_heated(trend))
            || self.channels.contains(channel)
            || self.channels.contains(kind)
            || tenant.is_some_and(|t| self.tenants.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Emotion;
    use crate::reply::strategy::tests::result;

    fn rules() -> ReviewRules {
        ReviewRules::new(&ReviewConfig {
            tenants: vec!["acme".into()],
            ..ReviewConfig::default()
        })
    }

    fn calm() -> EmotionResult {
        result(Emotion::Neutral, 0.9, 0.1)
    }

    #[test]
    fn calm_confident_chat_needs_no_review() {
        assert!(!rules().requires_review(&calm(), None, "chat", "chat", None));
    }

    #[test]
    fn negative_emotion_requires_review() {
        let angry = result(Emotion::Anger, 0.9, 0.4);
        assert!(rules().requires_review(&angry, None, "chat", "chat", None));
    }

    #[test]
    fn high_negativity_requires_review_whatever_the_label() {
        let mixed = result(Emotion::Confusion, 0.9, 0.55);
        assert!(rules().requires_review(&mixed, None, "chat", "chat", None));
    }

    #[test]
    fn low_confidence_requires_review() {
        let unsure = result(Emotion::Neutral, 0.3, 0.1);
        assert!(rules().requires_review(&unsure, None, "chat", "chat", None));
        let nan = result(Emotion::Neutral, f32::NAN, 0.1);
        assert!(rules().requires_review(&nan, None, "chat", "chat", None));
    }

    #[test]
    fn heated_trend_requires_review() {
        let rising = ConversationTrend {
            rising: true,
            ..Default::default()
        };
        assert!(rules().requires_review(&calm(), Some(&rising), "chat", "chat", None));
    }

    #[test]
    fn configured_channel_or_tenant_requires_review() {
        assert!(rules().requires_review(&calm(), None, "social", "social", None));
        assert!(rules().requires_review(&calm(), None, "twitter", "social", None));
        assert!(rules().requires_review(&calm(), None, "chat", "chat", Some("acme")));
        assert!(!rules().requires_review(&calm(), None, "chat", "chat", Some("globex")));
    }
}
