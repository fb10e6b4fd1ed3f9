//! SMS length rules: a text that fits the GSM-7 alphabet is limited to 160 septets per
//! message (153 per part of a longer one); anything else is sent as UCS-2 with 70 (67)
//! UTF-16 units. A longer draft is split into parts marked "(1/3) ", each within the limit.

/// GSM 03.38 basic character set (one septet each).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table (an escape plus the character: two septets each).
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

const GSM7_SINGLE: usize = 160;
const GSM7_PART: usize = 153;
const UCS2_SINGLE: usize = 70;
const UCS2_PART: usize = 67;
/// "(1/4) ": segment counts stay below ten (the config caps them at 9).
const MARKER_UNITS: usize = 6;

/// The most units one message may hold, when the draft is sent as `messages` messages.
pub(crate) fn limit(gsm: bool, messages: usize) -> usize {
    match (gsm, messages) {
        (true, 0 | 1) => GSM7_SINGLE,
        (true, _) => GSM7_PART,
        (false, 0 | 1) => UCS2_SINGLE,
        (false, _) => UCS2_PART,
    }
}

/// Septets for a GSM-7 character, `None` for a character outside the alphabet.
fn septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

pub(crate) fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| septets(c).is_some())
}

/// Length in the units of the encoding the text will be sent in.
pub(crate) fn encoded_len(text: &str, gsm: bool) -> usize {
    text.chars().map(|c| unit_len(c, gsm)).sum()
}

fn unit_len(c: char, gsm: bool) -> usize {
    if gsm {
        septets(c).unwrap_or(2)
    } else {
        c.len_utf16()
    }
}

/// Replaces typographic punctuation with GSM equivalents, so that an English draft with a
/// curly apostrophe is not sent as UCS-2 at less than half the length.
pub(crate) fn to_gsm_friendly(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{2032}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{2033}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{00A0}' | '\u{2009}' | '\u{202F}' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// Splits a draft into SMS messages: one when it fits, otherwise up to `max_segments` marked
/// parts, the last one cut with an ellipsis when the draft is longer still.
pub(crate) fn segment(text: &str, max_segments: usize) -> Vec<String> {
    // Straight quotes only help when they make the whole text GSM-7; UCS-2 text keeps its
    // typography (and "…" stays one unit rather than three).
    let friendly = to_gsm_friendly(text);
    let gsm = is_gsm7(&friendly);
    let text = if gsm { friendly } else { text.to_string() };
    if encoded_len(&text, gsm) <= limit(gsm, 1) {
        return vec![text];
    }
    let capacity = limit(gsm, 2) - MARKER_UNITS;
    let mut chunks = split_units(&text, capacity, gsm);
    if chunks.len() > max_segments.max(1) {
        chunks.truncate(max_segments.max(1));
        let ellipsis = if gsm { "..." } else { "…" };
        if let Some(last) = chunks.last_mut() {
            let room = capacity - encoded_len(ellipsis, gsm);
            let mut cut = take_units(last, room, gsm).trim_end().to_string();
            cut.push_str(ellipsis);
            *last = cut;
        }
    }
    let total = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| format!("({}/{total}) {chunk}", i + 1))
        .collect()
}

/// The longest prefix of `text` within `room` units.
fn take_units(text: &str, room: usize, gsm: bool) -> &str {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += unit_len(c, gsm);
        if used > room {
            return &text[..i];
        }
    }
    text
}

/// Greedy split into chunks of at most `capacity` units, breaking at a space or after CJK
/// punctuation when one lies in the second half of the chunk.
fn split_units(text: &str, capacity: usize, gsm: bool) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        while start < chars.len() && chars[start].is_whitespace() {
            start += 1;
        }
        if start == chars.len() {
            break;
        }
        let mut end = start;
        let mut used = 0;
        while end < chars.len() && used + unit_len(chars[end], gsm) <= capacity {
            used += unit_len(chars[end], gsm);
            end += 1;
        }
        if end == start {
            // Cannot happen with real capacities (a character is at most 2 units), but a
            // chunk must make progress.
            end += 1;
        } else if end < chars.len() {
            let mid = start + (end - start) / 2;
            let breaks_well = |i: usize| {
                chars[i].is_whitespace()
                    || matches!(chars[i - 1], '。' | '！' | '？' | '，' | '；' | '、')
            };
            if let Some(i) = (mid.max(start + 1)..=end).rev().find(|&i| breaks_well(i)) {
                end = i;
            }
        }
        let chunk: String = chars[start..end].iter().collect();
        chunks.push(chunk.trim_end().to_string());
        start = end;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_within_limits(segments: &[String]) {
        let gsm = segments.iter().all(|s| is_gsm7(s));
        let limit = limit(gsm, segments.len());
        for s in segments {
            assert!(
                encoded_len(s, gsm) <= limit,
                "{} > {limit}: {s}",
                encoded_len(s, gsm)
            );
        }
    }

    #[test]
    fn short_gsm_text_is_one_unmarked_message() {
        let text = "Hi Anna! Your refund is on its way.";
        assert_eq!(segment(text, 4), vec![text.to_string()]);
    }

    #[test]
    fn exactly_160_septets_fit_one_message() {
        let text = "a".repeat(160);
        assert_eq!(segment(&text, 4).len(), 1);
        assert_eq!(segment(&"a".repeat(161), 4).len(), 2);
    }

    #[test]
    fn extension_characters_count_two_septets() {
        assert_eq!(encoded_len("€[]", true), 6);
        let text = "€".repeat(81); // 162 septets
        let segments = segment(&text, 4);
        assert_eq!(segments.len(), 2);
        assert_within_limits(&segments);
    }

    #[test]
    fn long_text_is_split_into_marked_parts_at_word_boundaries() {
        let text = "word ".repeat(80);
        let segments = segment(&text, 9);
        assert!(segments.len() > 1);
        for (i, s) in segments.iter().enumerate() {
            assert!(
                s.starts_with(&format!("({}/{}) ", i + 1, segments.len())),
                "{s}"
            );
            assert!(s.ends_with("word"), "split mid-word: {s}");
        }
        assert_within_limits(&segments);
    }

    #[test]
    fn chinese_text_uses_ucs2_limits() {
        let text = "您好！我们已为您发起退款，款项将原路退回，通常在五到七个工作日内到账。如有任何问题，欢迎随时联系我们。我们会持续跟进直到问题解决，有任何需要随时联系我们。";
        assert!(!is_gsm7(text));
        let segments = segment(text, 4);
        assert_eq!(segments.len(), 2);
        assert_within_limits(&segments);
        assert!(
            segments[0].ends_with('，') || segments[0].ends_with('。'),
            "{}",
            segments[0]
        );
    }

    #[test]
    fn emoji_count_as_two_ucs2_units() {
        let text = "😀".repeat(36); // 72 units
        let segments = segment(&text, 4);
        assert_eq!(segments.len(), 2);
        assert_within_limits(&segments);
    }

    #[test]
    fn text_beyond_the_segment_cap_is_cut_with_an_ellipsis() {
        let segments = segment(&"word ".repeat(400), 3);
        assert_eq!(segments.len(), 3);
        assert!(segments[2].starts_with("(3/3) "));
        assert!(segments[2].ends_with("..."));
        assert_within_limits(&segments);
    }

    #[test]
    fn chinese_text_keeps_its_typographic_quotes() {
        assert_eq!(
            segment("请在“我的订单”中查看…", 4),
            vec!["请在“我的订单”中查看…".to_string()]
        );
    }

    #[test]
    fn curly_quotes_and_dashes_do_not_force_ucs2() {
        let segments = segment("We\u{2019}re sorry \u{2014} it\u{2019}s on us\u{2026}", 4);
        assert_eq!(segments, vec!["We're sorry - it's on us...".to_string()]);
    }
}
