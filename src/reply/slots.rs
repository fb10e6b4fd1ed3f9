//! The values templates may print, taken from the message and cleaned so that nothing a
//! customer typed can smuggle template syntax or markup into a draft: `customer_name`,
//! `order_id` (metadata, else found after a cue word such as "order" or "订单号"), `subject`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::OrderIdConfig;
use super::text::{prefix_bytes, squash_whitespace, truncate_chars};

const NAME_MAX_CHARS: usize = 40;
const SUBJECT_MAX_CHARS: usize = 120;
const ORDER_ID_MAX_CHARS: usize = 32;
/// Order ids are stated early; bounds the scan on huge messages.
const SCAN_BYTES: usize = 8192;
/// How many words after a cue may precede the id ("order no. 123", "order number is 123"),
/// and how far away (in bytes) it may start, so "订单还没到，电话 13800138000" finds no id.
const WORDS_AFTER_CUE: usize = 3;
const BYTES_AFTER_CUE: usize = 20;

/// The template context. Every name here is a variable templates may use; anything else is
/// rejected at startup.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Slots<'a> {
    pub customer_name: Option<&'a str>,
    pub order_id: Option<&'a str>,
    /// The message's subject without "Re:" prefixes.
    pub subject: Option<&'a str>,
    /// Agent signature from the configuration.
    pub signature: &'a str,
    pub channel: &'a str,
    pub language: &'a str,
    pub emotion: &'a str,
    pub strategy: &'a str,
    pub intent: &'a str,
}

pub(crate) const SLOT_NAMES: [&str; 9] = [
    "customer_name",
    "order_id",
    "subject",
    "signature",
    "channel",
    "language",
    "emotion",
    "strategy",
    "intent",
];

pub(crate) struct OrderIdFinder {
    metadata_keys: Vec<String>,
    /// Lowercased.
    cues: Vec<String>,
}

impl OrderIdFinder {
    pub(crate) fn new(config: &OrderIdConfig) -> OrderIdFinder {
        let mut cues: Vec<String> = config
            .cues
            .iter()
            .map(|c| c.trim().to_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        // Longest first, so "订单号" is tried before "订单" at the same position.
        cues.sort_by_key(|c| std::cmp::Reverse(c.len()));
        OrderIdFinder {
            metadata_keys: config.metadata_keys.clone(),
            cues,
        }
    }

    /// The order id from the first configured metadata key that holds a valid one, else
    /// from the text, else from the subject.
    pub(crate) fn find(
        &self,
        metadata: &BTreeMap<String, String>,
        text: &str,
        subject: Option<&str>,
    ) -> Option<String> {
        self.metadata_keys
            .iter()
            .filter_map(|key| metadata.get(key))
            .find_map(|value| clean_order_id(value, false))
            .or_else(|| self.scan(prefix_bytes(text, SCAN_BYTES)))
            .or_else(|| subject.and_then(|s| self.scan(prefix_bytes(s, 1024))))
    }

    /// Finds an id-like word shortly after a cue word, or right after `#`.
    fn scan(&self, text: &str) -> Option<String> {
        self.scan_ids(text, true)
            .into_iter()
            .next()
            .map(|(_, id)| id)
    }

    /// Byte ranges of every id-like word found as [`OrderIdFinder::find`] finds one in text
    /// (shortly after a cue word, or right after `#`): what the feedback export masks.
    pub(crate) fn id_spans(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        self.scan_ids(text, false)
            .into_iter()
            .map(|(span, _)| span)
            .collect()
    }

    /// The ids found (their words' byte ranges and the cleaned ids), in text order; only the
    /// first when `first_only`.
    fn scan_ids(&self, text: &str, first_only: bool) -> Vec<(std::ops::Range<usize>, String)> {
        let mut found: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        for (i, c) in text.char_indices() {
            if found.last().is_some_and(|(span, _)| i < span.end) {
                continue;
            }
            if c == '#' || c == '＃' {
                let start = i + c.len_utf8();
                let after = &text[start..];
                let first = words(after).next().filter(|(offset, _)| *offset == 0);
                if let Some((_, w)) = first
                    && let Some(id) = clean_order_id(w, true)
                {
                    found.push((start..start + w.len(), id));
                    if first_only {
                        break;
                    }
                    continue;
                }
            }
            let rest = &text[i..];
            for cue in &self.cues {
                if !starts_with_ignore_ascii_case(rest, cue) {
                    continue;
                }
                let latin = cue.starts_with(|c: char| c.is_ascii_alphanumeric());
                let after = &rest[cue.len()..];
                let word_start = !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_alphanumeric);
                let word_end = !after.starts_with(|c: char| c.is_alphanumeric());
                if latin && !(word_start && word_end) {
                    continue;
                }
                if let Some((offset, w, id)) = words(after)
                    .take(WORDS_AFTER_CUE)
                    .take_while(|(offset, _)| *offset <= BYTES_AFTER_CUE)
                    .find_map(|(offset, w)| clean_order_id(w, true).map(|id| (offset, w, id)))
                {
                    let start = i + cue.len() + offset;
                    found.push((start..start + w.len(), id));
                    break;
                }
            }
            if first_only && !found.is_empty() {
                break;
            }
        }
        found
    }
}

fn starts_with_ignore_ascii_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Runs of id characters (ASCII letters, digits, `-`, `_`) with their byte offsets;
/// anything else separates.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_id_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = 0;
    std::iter::from_fn(move || {
        let start = rest + text[rest..].find(is_id_char)?;
        let end = text[start..]
            .find(|c: char| !is_id_char(c))
            .map_or(text.len(), |n| start + n);
        rest = end;
        Some((start, &text[start..end]))
    })
}

/// An id is 1 to 32 characters from `[A-Za-z0-9_-]`. One found in free text must also be at
/// least 4 characters with at least 3 digits, so that "order no. is late" finds nothing.
fn clean_order_id(raw: &str, from_text: bool) -> Option<String> {
    let id = raw.trim().trim_matches(['-', '_']);
    let charset_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let len_ok = (1..=ORDER_ID_MAX_CHARS).contains(&id.len());
    let shape_ok =
        !from_text || (id.len() >= 4 && id.chars().filter(char::is_ascii_digit).count() >= 3);
    (charset_ok && len_ok && shape_ok).then(|| id.to_string())
}

/// A display name: letters, spaces, apostrophes, hyphens and dots only; something with an
/// `@` or digits is an address or a number, not a name, and is dropped.
pub(crate) fn clean_name(raw: &str) -> Option<String> {
    let raw = prefix_bytes(raw, 1024);
    if raw.contains('@') || raw.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let kept: String = raw
        .chars()
        .map(|c| {
            if c.is_alphabetic() || matches!(c, '\'' | '-' | '.' | '·' | '\u{2019}') {
                c
            } else {
                ' '
            }
        })
        .collect();
    let name = squash_whitespace(&kept);
    let name: String = name.chars().take(NAME_MAX_CHARS).collect();
    let name = name.trim_matches(|c: char| c.is_whitespace() || matches!(c, '-' | '.' | '\''));
    name.chars()
        .any(char::is_alphabetic)
        .then(|| name.to_string())
}

/// The subject without reply/forward prefixes, control characters or braces.
pub(crate) fn clean_subject(raw: &str) -> Option<String> {
    let kept: String = prefix_bytes(raw, 2048)
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '{' | '}' | '<' | '>'))
        .collect();
    let mut subject = squash_whitespace(&kept);
    loop {
        let trimmed = strip_reply_prefix(&subject);
        if trimmed.len() == subject.len() {
            break;
        }
        subject = trimmed.to_string();
    }
    let subject = truncate_chars(&subject, SUBJECT_MAX_CHARS);
    (!subject.is_empty()).then_some(subject)
}

fn strip_reply_prefix(subject: &str) -> &str {
    const PREFIXES: [&str; 8] = [
        "re:",
        "fw:",
        "fwd:",
        "aw:",
        "sv:",
        "回复:",
        "回复：",
        "答复：",
    ];
    PREFIXES
        .iter()
        .find(|p| starts_with_ignore_ascii_case(subject, p))
        .map_or(subject, |p| subject[p.len()..].trim_start())
}

/// Fragments of the message that must not appear in a public (social) reply: the order id,
/// e-mail addresses, and runs of four or more digits (phone, card and account numbers).
pub(crate) fn sensitive_fragments(
    texts: &[&str],
    order_id: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut fragments: Vec<String> = order_id
        .filter(|id| id.chars().any(|c| c.is_ascii_digit()) && id.len() >= 3)
        .map(String::from)
        .into_iter()
        .collect();
    for text in texts
        .iter()
        .copied()
        .chain(metadata.values().map(String::as_str))
    {
        let text = prefix_bytes(text, SCAN_BYTES);
        for token in text
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '(' | ')'))
        {
            let token = token.trim_matches(|c: char| !c.is_alphanumeric());
            if token.contains('@') && token.len() > 2 {
                fragments.push(token.to_string());
            }
        }
        let mut run = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                run.push(c);
            } else {
                if run.len() >= 4 {
                    fragments.push(std::mem::take(&mut run));
                }
                run.clear();
            }
        }
    }
    // Longest first, so a phone number goes before its own digit runs.
    fragments.sort_by_key(|f| std::cmp::Reverse(f.len()));
    fragments.dedup();
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finder() -> OrderIdFinder {
        OrderIdFinder::new(&OrderIdConfig::default())
    }

    fn no_metadata() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn order_id_comes_from_metadata_first() {
        let metadata = BTreeMap::from([("order_id".to_string(), "A-77".to_string())]);
        assert_eq!(
            finder().find(&metadata, "order 99999", None).as_deref(),
            Some("A-77")
        );
    }

    #[test]
    fn metadata_order_id_with_template_syntax_is_ignored() {
        let metadata = BTreeMap::from([("order_id".to_string(), "{{ evil }}".to_string())]);
        assert_eq!(finder().find(&metadata, "no id here", None), None);
    }

    #[test]
    fn order_id_is_found_after_cue_words_in_english_and_chinese() {
        let f = finder();
        let find = |text: &str| f.find(&no_metadata(), text, None);
        assert_eq!(find("Where is order #A10023?").as_deref(), Some("A10023"));
        assert_eq!(
            find("my ORDER no. 30991-C is late").as_deref(),
            Some("30991-C")
        );
        assert_eq!(find("order number: 555123").as_deref(), Some("555123"));
        assert_eq!(
            find("订单号：20240501123的物流").as_deref(),
            Some("20240501123")
        );
        assert_eq!(find("请取消订单 A55810 的续费").as_deref(), Some("A55810"));
        assert_eq!(find("ref #ZX-9921").as_deref(), Some("ZX-9921"));
    }

    #[test]
    fn numbers_without_a_cue_are_not_order_ids() {
        let f = finder();
        let find = |text: &str| f.find(&no_metadata(), text, None);
        assert_eq!(find("call me on 555 123 4567"), None);
        assert_eq!(find("my order is late, I waited 3 days"), None);
        assert_eq!(find("border 12345"), None);
        assert_eq!(find("orders 12345"), None);
        assert_eq!(find("订单还没到，我的电话是13800138000"), None);
        assert_eq!(find("see # 12345 or #ab"), None);
    }

    #[test]
    fn order_id_is_found_in_the_subject_when_the_text_has_none() {
        assert_eq!(
            finder()
                .find(&no_metadata(), "see subject", Some("Order #B2041"))
                .as_deref(),
            Some("B2041")
        );
    }

    #[test]
    fn names_keep_letters_and_drop_everything_else() {
        assert_eq!(clean_name("  Anna  ").as_deref(), Some("Anna"));
        assert_eq!(clean_name("Seán O'Brien").as_deref(), Some("Seán O'Brien"));
        assert_eq!(clean_name("王芳").as_deref(), Some("王芳"));
        assert_eq!(clean_name("{{ name }} 😀 Bob").as_deref(), Some("name Bob"));
        assert_eq!(clean_name("bob@example.com"), None);
        assert_eq!(clean_name("+1 555 0100"), None);
        assert_eq!(clean_name("!!!"), None);
        assert!(clean_name(&"x".repeat(500)).unwrap().chars().count() <= NAME_MAX_CHARS);
    }

    #[test]
    fn subject_loses_reply_prefixes_and_braces() {
        assert_eq!(
            clean_subject("RE: Re: Fwd: My refund").as_deref(),
            Some("My refund")
        );
        assert_eq!(clean_subject("回复：退款").as_deref(), Some("退款"));
        assert_eq!(clean_subject("{{ x }}").as_deref(), Some("x"));
        assert_eq!(clean_subject("Re:   "), None);
    }

    #[test]
    fn sensitive_fragments_cover_ids_emails_and_long_digit_runs() {
        let fragments = sensitive_fragments(
            &["mail me at jo.doe@example.com or call 0176 5551234, order 12"],
            Some("A10023"),
            &no_metadata(),
        );
        for expected in ["A10023", "jo.doe@example.com", "0176", "5551234"] {
            assert!(
                fragments.iter().any(|f| f == expected),
                "{expected}: {fragments:?}"
            );
        }
        assert!(!fragments.iter().any(|f| f == "12"));
    }
}
