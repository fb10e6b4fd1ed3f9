//! The data contracts that flow through the pipeline: the customer message we consume
//! (`schemas/customer_message.avsc`) and the emotion result we publish
//! (`schemas/emotion_result.avsc`). Every stage speaks these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A customer message as produced by the CRM / ticketing pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerMessage {
    pub message_id: String,
    pub conversation_id: String,
    pub customer_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// chat, email, sms, voice, social, or any other string.
    pub channel: String,
    pub text: String,
    #[serde(default)]
    pub subject: Option<String>,
    /// BCP-47-ish language tag (`en`, `zh`, `zh-CN`), when the producer knows it.
    #[serde(default)]
    pub language: Option<String>,
    /// Event time, milliseconds since the Unix epoch.
    pub sent_at: i64,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The eight customer-service emotions, in the model's output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emotion {
    Anger,
    Frustration,
    Disappointment,
    Anxiety,
    Confusion,
    Gratitude,
    Satisfaction,
    Neutral,
}

impl Emotion {
    pub const ALL: [Emotion; 8] = [
        Emotion::Anger,
        Emotion::Frustration,
        Emotion::Disappointment,
        Emotion::Anxiety,
        Emotion::Confusion,
        Emotion::Gratitude,
        Emotion::Satisfaction,
        Emotion::Neutral,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Emotion::Anger => "anger",
            Emotion::Frustration => "frustration",
            Emotion::Disappointment => "disappointment",
            Emotion::Anxiety => "anxiety",
            Emotion::Confusion => "confusion",
            Emotion::Gratitude => "gratitude",
            Emotion::Satisfaction => "satisfaction",
            Emotion::Neutral => "neutral",
        }
    }

    pub fn parse(s: &str) -> Option<Emotion> {
        Emotion::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Anger, frustration, disappointment and anxiety count as negative.
    pub fn is_negative(self) -> bool {
        matches!(
            self,
            Emotion::Anger | Emotion::Frustration | Emotion::Disappointment | Emotion::Anxiety
        )
    }

    /// Gratitude and satisfaction count as positive.
    pub fn is_positive(self) -> bool {
        matches!(self, Emotion::Gratitude | Emotion::Satisfaction)
    }
}

impl std::fmt::Display for Emotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn undetermined() -> String {
    "und".to_string()
}

/// The emotion classification of one customer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionResult {
    pub message_id: String,
    pub conversation_id: String,
    pub customer_id: String,
    pub tenant_id: Option<String>,
    pub channel: String,
    /// The label with the highest score relative to its decision threshold.
    pub primary_emotion: String,
    /// Every label whose score passes its decision threshold (possibly several; at least the primary).
    pub labels: Vec<String>,
    /// Probability per label, for all eight labels.
    pub scores: BTreeMap<String, f32>,
    /// Score of the primary emotion.
    pub confidence: f32,
    /// In [-1, 1]: positive share minus negative share of the normalised scores.
    pub valence: f32,
    /// In [0, 1]: negative share of the normalised scores.
    pub negativity: f32,
    pub model_version: String,
    /// Milliseconds since the Unix epoch.
    pub processed_at: i64,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Language of the text: the producer's tag when it sent one, else detected (`zh`, `en`,
    /// ...; `und` when undetermined). The model reads Chinese and English.
    #[serde(default = "undetermined")]
    pub language: String,
}

impl EmotionResult {
    /// The primary emotion as the enum (falls back to neutral for an unknown label).
    pub fn primary(&self) -> Emotion {
        Emotion::parse(&self.primary_emotion).unwrap_or(Emotion::Neutral)
    }

    pub fn score(&self, emotion: Emotion) -> f32 {
        self.scores.get(emotion.as_str()).copied().unwrap_or(0.0)
    }
}

/// What escalation tracking knows about a conversation after observing its latest message;
/// reply drafting uses it to pick a strategy (a customer getting angrier gets a human).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConversationTrend {
    /// Turns observed in the conversation window (including this one).
    pub turns: u32,
    /// Exponentially weighted negativity over the window, in [0, 1].
    pub ewma_negativity: f32,
    /// Negativity rose by at least the configured delta over the last K turns.
    pub rising: bool,
    /// The conversation has an open escalation (this message or an earlier one triggered it).
    pub escalated: bool,
}
