//! The replies configuration file (`config/replies.yaml`): its YAML shape, its defaults and
//! the checks that need no template engine. Template checks live in [`super::templates`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::channel::ChannelKind;
use crate::message::Emotion;

/// Why a replies configuration was rejected at startup.
#[derive(Debug, thiserror::Error)]
pub enum ReplyConfigError {
    #[error("cannot read replies config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replies config {origin} is not valid YAML for this format: {source}")]
    Yaml {
        origin: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("template `{id}` does not compile: {source}")]
    Template {
        id: String,
        #[source]
        source: minijinja::Error,
    },
    #[error("template `{id}` uses unknown variable `{variable}` (known slots: {known})")]
    UnknownVariable {
        id: String,
        variable: String,
        known: String,
    },
    #[error("template `{id}` fails to render {case}: {source}")]
    Render {
        id: String,
        case: &'static str,
        #[source]
        source: minijinja::Error,
    },
    #[error("template `{id}` leaves a raw placeholder in its output {case}")]
    PlaceholderLeak { id: String, case: &'static str },
    #[error("plain text `{id}` must not contain template syntax")]
    SyntaxInPlainText { id: String },
    #[error("language `{language}` has no `{part}` template for channel `{channel}`")]
    MissingRequired {
        language: String,
        channel: &'static str,
        part: String,
    },
    #[error("default_language `{0}` has no templates")]
    DefaultLanguage(String),
    #[error(
        "tenant `{tenant}` has templates for language `{language}`, which has no default templates"
    )]
    TenantLanguage { tenant: String, language: String },
    #[error("unknown emotion `{0}` in strategies.by_emotion")]
    UnknownEmotion(String),
    #[error(
        "unknown channel `{channel}` in {context} (known: chat, email, sms, voice, social, other)"
    )]
    UnknownChannel {
        channel: String,
        context: &'static str,
    },
    #[error("invalid {kind} name `{name}`: use lowercase ASCII letters, digits, `_` or `-`")]
    InvalidName { kind: &'static str, name: String },
    #[error("invalid Kafka topic `{topic}` for channel `{channel}`")]
    InvalidTopic { channel: String, topic: String },
    #[error("{field} must be a number in [0, 1], got {value}")]
    Threshold { field: &'static str, value: f32 },
    #[error("{field} must be in {min}..={max}, got {value}")]
    Limit {
        field: &'static str,
        value: usize,
        min: usize,
        max: usize,
    },
}

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Templates used when a message's language has none.
    pub default_language: String,
    /// Output topic per channel; `other` is used for channels not listed.
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    #[serde(default)]
    pub channels: ChannelsConfig,
    pub strategies: StrategiesConfig,
    pub intents: IntentsConfig,
    #[serde(default)]
    pub order_id: OrderIdConfig,
    #[serde(default)]
    pub review: ReviewConfig,
    /// language → channel (or `default`) → parts.
    pub templates: BTreeMap<String, LanguageTemplates>,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

/// channel kind (or `default`, inherited by every channel) → parts.
pub(crate) type LanguageTemplates = BTreeMap<String, PartSet>;

/// The pieces a reply is assembled from; every field may be left out to inherit it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartSet {
    pub greeting: Option<String>,
    /// Email subject line.
    pub subject: Option<String>,
    pub sign_off: Option<String>,
    /// Agent signature: plain text, also available to templates as `signature`.
    pub signature: Option<String>,
    /// Social: the invitation to continue in a private channel.
    pub private_invite: Option<String>,
    /// strategy → template acknowledging the emotion.
    #[serde(default)]
    pub opening: BTreeMap<String, String>,
    /// strategy → template with the strategy's promise (a human, a time frame, ...).
    #[serde(default)]
    pub closing: BTreeMap<String, String>,
    /// intent → template answering what the message is about.
    #[serde(default)]
    pub body: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantConfig {
    #[serde(default)]
    pub templates: BTreeMap<String, LanguageTemplates>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ChannelsConfig {
    /// Other channel names formatted like one of the known kinds (`whatsapp: chat`).
    pub aliases: BTreeMap<String, String>,
    pub chat: TextLimit,
    pub sms: SmsLimit,
    pub voice: TextLimit,
    pub social: TextLimit,
    pub other: TextLimit,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            aliases: BTreeMap::new(),
            chat: TextLimit { max_chars: 300 },
            sms: SmsLimit { max_segments: 4 },
            voice: TextLimit { max_chars: 700 },
            social: TextLimit { max_chars: 280 },
            other: TextLimit { max_chars: 1000 },
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TextLimit {
    pub max_chars: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmsLimit {
    pub max_segments: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StrategiesConfig {
    /// emotion label → strategy.
    pub by_emotion: BTreeMap<String, String>,
    /// For unmapped emotions and uncertain, non-negative results.
    pub default: String,
    /// For a rising or escalated trend, or negativity at or above `escalate_negativity`.
    pub escalation: String,
    #[serde(default = "default_escalate_negativity")]
    pub escalate_negativity: f32,
    /// Below this confidence the label is not trusted.
    #[serde(default = "default_strategy_min_confidence")]
    pub min_confidence: f32,
    /// For an untrusted label with negativity of at least one half; `default` when absent.
    #[serde(default)]
    pub uncertain_negative: Option<String>,
    /// Strategies whose replies only acknowledge (no intent body, no private-channel invite).
    #[serde(default)]
    pub acknowledge_only: Vec<String>,
}

fn default_escalate_negativity() -> f32 {
    0.9
}

fn default_strategy_min_confidence() -> f32 {
    0.4
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntentsConfig {
    pub default: String,
    /// In priority order: on a tie in matched keywords the earlier rule wins.
    pub rules: Vec<IntentRuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntentRuleConfig {
    pub intent: String,
    /// language → keywords; every language's keywords are matched against every message.
    pub keywords: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OrderIdConfig {
    /// Metadata keys holding the order id, first present wins.
    pub metadata_keys: Vec<String>,
    /// Words after which an order id is looked for in the text.
    pub cues: Vec<String>,
}

impl Default for OrderIdConfig {
    fn default() -> Self {
        OrderIdConfig {
            metadata_keys: vec!["order_id".into(), "order_number".into()],
            cues: ["order", "ref", "reference", "订单号", "订单编号", "订单"]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ReviewConfig {
    /// A primary emotion that is negative requires review.
    pub negative_emotions: bool,
    /// Negativity at or above this requires review.
    pub negativity: f32,
    /// Confidence below this requires review.
    pub min_confidence: f32,
    /// A rising or escalated conversation requires review.
    pub trend: bool,
    /// Channels whose drafts always require review.
    pub channels: Vec<String>,
    /// Tenants whose drafts always require review.
    pub tenants: Vec<String>,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        ReviewConfig {
            negative_emotions: true,
            negativity: 0.5,
            min_confidence: 0.6,
            trend: true,
            channels: vec!["social".into()],
            tenants: Vec::new(),
        }
    }
}

impl RawConfig {
    pub(crate) fn parse(yaml: &str, origin: &str) -> Result<RawConfig, ReplyConfigError> {
        serde_norway::from_str(yaml).map_err(|source| ReplyConfigError::Yaml {
            origin: origin.to_string(),
            source,
        })
    }

    /// Checks that need no template engine.
    pub(crate) fn validate(&self) -> Result<(), ReplyConfigError> {
        if !self.templates.contains_key(&self.default_language) {
            return Err(ReplyConfigError::DefaultLanguage(
                self.default_language.clone(),
            ));
        }
        for (channel, topic) in &self.topics {
            if !is_valid_topic(topic) {
                return Err(ReplyConfigError::InvalidTopic {
                    channel: channel.clone(),
                    topic: topic.clone(),
                });
            }
        }
        for target in self.channels.aliases.values() {
            if ChannelKind::parse(target).is_none() {
                return Err(ReplyConfigError::UnknownChannel {
                    channel: target.clone(),
                    context: "channels.aliases",
                });
            }
        }
        for (field, limit) in [
            ("channels.chat.max_chars", self.channels.chat.max_chars),
            ("channels.voice.max_chars", self.channels.voice.max_chars),
            ("channels.social.max_chars", self.channels.social.max_chars),
            ("channels.other.max_chars", self.channels.other.max_chars),
        ] {
            check_limit(field, limit, 40, 100_000)?;
        }
        // One-digit segment markers: "(1/4) ".
        check_limit(
            "channels.sms.max_segments",
            self.channels.sms.max_segments,
            1,
            9,
        )?;

        let s = &self.strategies;
        for (emotion, strategy) in &s.by_emotion {
            if Emotion::parse(emotion).is_none() {
                return Err(ReplyConfigError::UnknownEmotion(emotion.clone()));
            }
            check_name("strategy", strategy)?;
        }
        for name in [&s.default, &s.escalation]
            .into_iter()
            .chain(s.uncertain_negative.as_ref())
            .chain(&s.acknowledge_only)
        {
            check_name("strategy", name)?;
        }
        check_threshold("strategies.escalate_negativity", s.escalate_negativity)?;
        check_threshold("strategies.min_confidence", s.min_confidence)?;

        check_name("intent", &self.intents.default)?;
        for rule in &self.intents.rules {
            check_name("intent", &rule.intent)?;
        }

        check_threshold("review.negativity", self.review.negativity)?;
        check_threshold("review.min_confidence", self.review.min_confidence)?;
        for channel in &self.review.channels {
            check_name("review channel", channel)?;
        }

        let scopes = std::iter::once(&self.templates)
            .chain(self.tenants.values().map(|tenant| &tenant.templates));
        for languages in scopes {
            for (language, channels) in languages {
                check_name("language", language)?;
                for (channel, parts) in channels {
                    if channel != "default" && ChannelKind::parse(channel).is_none() {
                        return Err(ReplyConfigError::UnknownChannel {
                            channel: channel.clone(),
                            context: "templates",
                        });
                    }
                    for name in parts.opening.keys().chain(parts.closing.keys()) {
                        check_name("strategy", name)?;
                    }
                    for name in parts.body.keys() {
                        check_name("intent", name)?;
                    }
                }
            }
        }
        for (tenant, config) in &self.tenants {
            // Template ids start with the scope, and `default` is the shared scope.
            if tenant == "default" || tenant.contains('/') || tenant.is_empty() {
                return Err(ReplyConfigError::InvalidName {
                    kind: "tenant",
                    name: tenant.clone(),
                });
            }
            if let Some(language) = config
                .templates
                .keys()
                .find(|language| !self.templates.contains_key(*language))
            {
                return Err(ReplyConfigError::TenantLanguage {
                    tenant: tenant.clone(),
                    language: language.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every strategy the strategy rules can choose.
    pub(crate) fn referenced_strategies(&self) -> Vec<&str> {
        let s = &self.strategies;
        let mut names: Vec<&str> = s
            .by_emotion
            .values()
            .chain([&s.default, &s.escalation])
            .chain(s.uncertain_negative.as_ref())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Every intent the intent rules can detect.
    pub(crate) fn referenced_intents(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .intents
            .rules
            .iter()
            .map(|rule| rule.intent.as_str())
            .chain([self.intents.default.as_str()])
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn check_threshold(field: &'static str, value: f32) -> Result<(), ReplyConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ReplyConfigError::Threshold { field, value })
    }
}

fn check_limit(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ReplyConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ReplyConfigError::Limit {
            field,
            value,
            min,
            max,
        })
    }
}

/// Names end up in template ids and topic lookups, so they stay simple.
fn check_name(kind: &'static str, name: &str) -> Result<(), ReplyConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReplyConfigError::InvalidName {
            kind,
            name: name.to_string(),
        })
    }
}

/// Kafka's own rule: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
fn is_valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_names_follow_kafkas_rules() {
        assert!(is_valid_topic("replies.chat"));
        assert!(is_valid_topic("replies_other-2"));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic(".."));
        assert!(!is_valid_topic("replies/chat"));
        assert!(!is_valid_topic(&"x".repeat(250)));
    }

    #[test]
    fn names_reject_separators_used_in_template_ids() {
        assert!(check_name("intent", "order_status").is_ok());
        assert!(check_name("intent", "order/status").is_err());
        assert!(check_name("intent", "Order").is_err());
        assert!(check_name("intent", "").is_err());
    }

    #[test]
    fn thresholds_outside_unit_interval_are_rejected() {
        assert!(check_threshold("x", 0.0).is_ok());
        assert!(check_threshold("x", 1.0).is_ok());
        assert!(check_threshold("x", 1.5).is_err());
        assert!(check_threshold("x", f32::NAN).is_err());
    }
}
