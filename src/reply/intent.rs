//! What a message is about (order status, refund, ...), by configurable multilingual
//! keyword rules. The intent picks the body of the reply.

use super::config::IntentsConfig;
use super::text::prefix_bytes;

/// Intent is usually stated early; scanning a bounded prefix keeps huge messages cheap.
const SCAN_BYTES: usize = 8192;

pub(crate) struct IntentRules {
    rules: Vec<Rule>,
    default: String,
}

struct Rule {
    intent: String,
    /// Lowercased; every language's keywords together.
    keywords: Vec<String>,
}

impl IntentRules {
    pub(crate) fn new(config: &IntentsConfig) -> IntentRules {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let mut keywords: Vec<String> = rule
                    .keywords
                    .values()
                    .flatten()
                    .map(|k| k.trim().to_lowercase())
                    .filter(|k| !k.is_empty())
                    .collect();
                keywords.sort_unstable();
                keywords.dedup();
                Rule {
                    intent: rule.intent.clone(),
                    keywords,
                }
            })
            .collect();
        IntentRules {
            rules,
            default: config.default.clone(),
        }
    }

    /// The rule matching the most distinct keywords in the text and subject; the earlier rule
    /// on a tie; the default intent when nothing matches.
    pub(crate) fn detect(&self, text: &str, subject: Option<&str>) -> &str {
        let mut haystack = prefix_bytes(text, SCAN_BYTES).to_lowercase();
        if let Some(subject) = subject {
            haystack.push('\n');
            haystack.push_str(&prefix_bytes(subject, 1024).to_lowercase());
        }
        let mut best: Option<(&str, usize)> = None;
        for rule in &self.rules {
            let hits = rule
                .keywords
                .iter()
                .filter(|k| contains_keyword(&haystack, k))
                .count();
            if hits > 0 && best.is_none_or(|(_, most)| hits > most) {
                best = Some((&rule.intent, hits));
            }
        }
        best.map_or(&self.default, |(intent, _)| intent)
    }
}

/// A keyword that starts with a Latin letter or digit must start a word ("bill" does not
/// match "rebill"); it may end inside one ("refund" matches "refunded"). CJK keywords match
/// anywhere, as CJK text has no spaces.
fn contains_keyword(haystack: &str, keyword: &str) -> bool {
    let needs_word_start = keyword.starts_with(|c: char| c.is_ascii_alphanumeric());
    haystack.match_indices(keyword).any(|(i, _)| {
        !needs_word_start
            || !haystack[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::reply::config::IntentRuleConfig;

    fn rules() -> IntentRules {
        let rule = |intent: &str, en: &[&str], zh: &[&str]| IntentRuleConfig {
            intent: intent.to_string(),
            keywords: BTreeMap::from([
                ("en".to_string(), en.iter().map(|s| s.to_string()).collect()),
                ("zh".to_string(), zh.iter().map(|s| s.to_string()).collect()),
            ]),
        };
        IntentRules::new(&IntentsConfig {
            default: "general".into(),
            rules: vec![
                rule("refund", &["refund", "money back"], &["退款"]),
                rule(
                    "order_status",
                    &["tracking", "where is my order", "delivery"],
                    &["物流", "快递"],
                ),
                rule("billing", &["bill", "charged"], &["扣款"]),
            ],
        })
    }

    #[test]
    fn matches_keywords_case_insensitively_in_any_language() {
        let rules = rules();
        assert_eq!(rules.detect("I want my REFUND", None), "refund");
        assert_eq!(rules.detect("我的快递到哪了", None), "order_status");
        assert_eq!(rules.detect("Refunded? 还没有退款", None), "refund");
    }

    #[test]
    fn most_matched_keywords_win_and_ties_go_to_the_earlier_rule() {
        let rules = rules();
        assert_eq!(rules.detect("refund the delivery", None), "refund");
        assert_eq!(
            rules.detect("refund? where is my order, no tracking, no delivery", None),
            "order_status"
        );
    }

    #[test]
    fn latin_keywords_must_start_a_word() {
        let rules = rules();
        assert_eq!(rules.detect("they rebilled me", None), "general");
        assert_eq!(rules.detect("the billing page", None), "billing");
    }

    #[test]
    fn subject_counts_as_part_of_the_message() {
        assert_eq!(
            rules().detect("see above", Some("Refund request")),
            "refund"
        );
    }

    #[test]
    fn no_match_gives_the_default_intent() {
        assert_eq!(rules().detect("hello there", None), "general");
        assert_eq!(rules().detect("", None), "general");
    }
}
