//! Small text helpers shared by rendering and channel formatting: whitespace, sentence
//! joining that respects CJK typography, truncation, and the character classes we strip.

use unicode_segmentation::UnicodeSegmentation;

/// Template syntax that must never reach a customer.
const PLACEHOLDER_MARKERS: [&str; 6] = ["{{", "}}", "{%", "%}", "{#", "#}"];

pub(crate) fn contains_placeholder(text: &str) -> bool {
    PLACEHOLDER_MARKERS
        .iter()
        .any(|marker| text.contains(marker))
}

/// Collapses every run of whitespace into one space and trims the ends.
pub(crate) fn squash_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Han, kana, hangul and the CJK punctuation blocks.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{303F}'   // CJK symbols and punctuation
        | '\u{3040}'..='\u{30FF}' // kana
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{AC00}'..='\u{D7AF}' // hangul syllables
        | '\u{F900}'..='\u{FAFF}'
        | '\u{FF00}'..='\u{FFEF}' // full-width forms
        | '\u{20000}'..='\u{2FA1F}')
}

/// Joins sentences with a space, except next to CJK text, which is written without one.
pub(crate) fn join_sentences<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let cjk_boundary =
            out.chars().next_back().is_some_and(is_cjk) || part.chars().next().is_some_and(is_cjk);
        if !out.is_empty() && !cjk_boundary {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// Splits into sentences at the Unicode sentence boundaries (UAX #29), trimmed: after `.`,
/// `!`, `?` and the CJK full stops, but not inside decimals (`5.99`) or before a lowercase word
/// (`e.g. the`), and with closing quotes and brackets kept with their sentence.
pub(crate) fn split_sentences(text: &str) -> Vec<&str> {
    text.split_sentence_bounds()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Cuts `text` to at most `max` characters, at a word boundary when one is near, ending
/// with `…`.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let kept: String = text.chars().take(max - 1).collect();
    let at_word_end = text.chars().nth(max - 1).is_some_and(char::is_whitespace);
    let cut = match kept.rfind(char::is_whitespace) {
        _ if at_word_end => kept.as_str(),
        // Only back up to a space if that loses less than a third of the text.
        Some(i) if kept[..i].chars().count() * 3 >= (max - 1) * 2 => &kept[..i],
        _ => kept.as_str(),
    };
    let cut = cut.trim_end_matches(|c: char| {
        c.is_whitespace() || matches!(c, ',' | ';' | ':' | '，' | '、')
    });
    format!("{cut}…")
}

/// Truncates to at most `max_bytes` bytes on a char boundary (bounds work on huge inputs).
pub(crate) fn prefix_bytes(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Emoji and pictographs, their modifiers and joiners, and the symbol blocks TTS reads badly.
pub(crate) fn is_emoji(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2190}'..='\u{21FF}' // arrows
        | '\u{2300}'..='\u{23FF}' // misc technical (⌚, ⏰)
        | '\u{24C2}'
        | '\u{25A0}'..='\u{25FF}' // geometric shapes
        | '\u{2600}'..='\u{27BF}' // misc symbols, dingbats
        | '\u{2900}'..='\u{297F}'
        | '\u{2B00}'..='\u{2BFF}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{200D}'              // zero-width joiner
        | '\u{20E3}'              // combining keycap
        | '\u{FE00}'..='\u{FE0F}' // variation selectors
        | '\u{1F000}'..='\u{1FAFF}'
        | '\u{E0020}'..='\u{E007F}') // tag sequences (flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_template_delimiter() {
        for leak in ["a {{ b", "c }} d", "{% if %}", "x %}", "{# note", "note #}"] {
            assert!(contains_placeholder(leak), "{leak}");
        }
        assert!(!contains_placeholder(
            "{ single } braces and 100% fine # ok"
        ));
    }

    #[test]
    fn joins_latin_with_spaces_and_cjk_without() {
        assert_eq!(
            join_sentences(["Hi Anna,", "", "thanks."]),
            "Hi Anna, thanks."
        );
        assert_eq!(
            join_sentences(["您好！", "感谢您联系我们。"]),
            "您好！感谢您联系我们。"
        );
        assert_eq!(
            join_sentences(["订单 A1 已发货。", "Thanks!"]),
            "订单 A1 已发货。Thanks!"
        );
    }

    #[test]
    fn splits_sentences_but_not_decimals_or_abbreviated_ids() {
        assert_eq!(
            split_sentences("It costs 5.99 today. Really! Ok?"),
            vec!["It costs 5.99 today.", "Really!", "Ok?"]
        );
        assert_eq!(
            split_sentences("第一句。第二句！尾巴"),
            vec!["第一句。", "第二句！", "尾巴"]
        );
    }

    #[test]
    fn keeps_abbreviations_and_closing_punctuation_with_their_sentence() {
        assert_eq!(
            split_sentences("We refund e.g. shipping costs, approx. 3 days. Thanks!"),
            vec!["We refund e.g. shipping costs, approx. 3 days.", "Thanks!"]
        );
        assert_eq!(
            split_sentences("He said \"it broke.\" Then it worked (mostly.) Fine?"),
            vec!["He said \"it broke.\"", "Then it worked (mostly.)", "Fine?"]
        );
        assert_eq!(
            split_sentences("您说“已经发货了。”对吗？好的……谢谢！"),
            vec!["您说“已经发货了。”", "对吗？", "好的……谢谢！"]
        );
        assert_eq!(split_sentences("  \n "), Vec::<&str>::new());
    }

    #[test]
    fn truncation_respects_the_limit_and_prefers_word_boundaries() {
        let text = "The quick brown fox jumps over the lazy dog";
        let cut = truncate_chars(text, 20);
        assert!(cut.chars().count() <= 20, "{cut}");
        assert_eq!(cut, "The quick brown fox…");
        assert_eq!(truncate_chars("短文本", 10), "短文本");
        assert_eq!(truncate_chars("一二三四五六七八九十", 5).chars().count(), 5);
    }

    #[test]
    fn byte_prefix_never_splits_a_character() {
        assert_eq!(prefix_bytes("订单号", 4), "订");
        assert_eq!(prefix_bytes("abc", 10), "abc");
    }

    #[test]
    fn emoji_and_joiners_are_classified_as_emoji() {
        for c in ['😀', '👍', '❤', '\u{FE0F}', '\u{200D}', '🇨', '⭐', '✅'] {
            assert!(is_emoji(c), "{c:?}");
        }
        for c in ['a', '订', '。', '€', '1'] {
            assert!(!is_emoji(c), "{c:?}");
        }
    }
}
