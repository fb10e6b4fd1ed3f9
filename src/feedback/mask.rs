//! Personal data out of customer text before a training example is written: e-mail addresses,
//! phone numbers, payment cards, IBANs, Chinese resident ids, order numbers and names become
//! placeholders (`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`, `<ID>`, `<ORDER>`, `<NAME>`). What
//! carries the emotion (wording, amounts, durations, dates, percentages) is kept.
//!
//! Detection runs on a copy with full-width characters folded to ASCII (`１３８…`, `＠`, `＃`), so
//! Chinese input is masked like Latin input; the replacement is cut from the original text.
//! Detectors run in a fixed order and a later one never masks inside an earlier one's span:
//! e-mail, IBAN, resident id, card (Luhn), phone, order number after a cue word, names, then any
//! remaining id-like token with six or more digits.

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use crate::reply::config::OrderIdConfig;
use crate::reply::slots::OrderIdFinder;

/// `text` with personal data replaced by placeholders. `customer_name` is the message's own
/// `customer_name` field: masked wherever it (or, for a Latin name, one of its words) occurs.
pub fn mask(text: &str, customer_name: Option<&str>) -> String {
    let folded = Folded::new(text);
    let t = folded.text.as_str();
    let mut spans = Spans::default();
    let d = detectors();
    for m in d.email.find_iter(t) {
        spans.add(m.range(), "<EMAIL>");
    }
    for m in d.iban.find_iter(t) {
        if let Some(end) = iban_end(t, m.range()) {
            spans.add(m.start()..end, "<IBAN>");
        }
    }
    for m in d.resident_id.find_iter(t) {
        if isolated(t, m.range()) && resident_id_valid(m.as_str()) {
            spans.add(m.range(), "<ID>");
        }
    }
    for m in d.card.find_iter(t) {
        if let Some(end) = card_end(t, m.range()) {
            spans.add(m.start()..end, "<CARD>");
        }
    }
    for re in &d.phones {
        for m in re.find_iter(t) {
            if isolated(t, m.range()) && phone_digits_ok(m.as_str()) {
                spans.add(m.range(), "<PHONE>");
            }
        }
    }
    for span in d.orders.id_spans(t) {
        spans.add(span, "<ORDER>");
    }
    for span in name_spans(t, customer_name) {
        spans.add(span, "<NAME>");
    }
    for m in d.long_id.find_iter(t) {
        if long_id(t, m.range()) {
            spans.add(m.range(), "<ORDER>");
        }
    }
    spans.apply(text, &folded)
}

struct Detectors {
    email: Regex,
    iban: Regex,
    resident_id: Regex,
    card: Regex,
    phones: Vec<Regex>,
    orders: OrderIdFinder,
    long_id: Regex,
    intro_en: Regex,
    honorific_en: Regex,
    intro_zh: Regex,
    intro_zh_honorific: Regex,
}

fn detectors() -> &'static Detectors {
    static DETECTORS: OnceLock<Detectors> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        let re = |pattern: &str| Regex::new(pattern).expect("masking pattern compiles: tested");
        let mut orders = OrderIdConfig::default();
        orders.metadata_keys.clear();
        // Tracking and invoice numbers identify an order as well as its number does.
        orders
            .cues
            .extend(["单号", "运单", "tracking", "invoice"].map(String::from));
        Detectors {
            email: re(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
            iban: re(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}"),
            resident_id: re(r"[1-9][0-9]{16}[0-9Xx]"),
            card: re(r"[0-9](?:[ \-]?[0-9]){12,22}"),
            phones: vec![
                // International: +44 20 7946 0958, +1 (555) 123-4567, +86 138 0013 8000.
                re(r"\+[0-9]{1,3}(?:[ \-.]?\(?[0-9]{1,4}\)?){2,6}"),
                // North American: (555) 123-4567, 555-123-4567, 555.123.4567.
                re(r"\(?[0-9]{3}\)?[ \-.]?[0-9]{3}[ \-.][0-9]{4}"),
                // Chinese mobiles: 13800138000, 138-0013-8000, 138 0013 8000.
                re(r"1[3-9][0-9](?:[ \-]?[0-9]{4}){2}"),
                // Landlines with a trunk prefix: 010-12345678, (021)87654321, 020 7946 0958.
                re(r"\(0[1-9][0-9]{1,2}\) ?[0-9]{7,8}"),
                re(r"0[1-9][0-9]{1,3}[ \-][0-9]{3,4}[ \-]?[0-9]{3,4}"),
            ],
            orders: OrderIdFinder::new(&orders),
            long_id: re(r"[A-Za-z0-9]+(?:[\-_/][A-Za-z0-9]+)*"),
            intro_en: re(
                r"(?i:\b(?:my name is|my name's|this is|i'm|i am)\b)[ ]+((?:[A-Za-z\u{C0}-\u{24F}][A-Za-z\u{C0}-\u{24F}'\-]*)(?:[ ]+[A-Z][A-Za-z\u{C0}-\u{24F}'\-]*)?)",
            ),
            honorific_en: re(r"\b(?:Mr|Mrs|Ms|Miss|Dr)\.?[ ]+([A-Z][A-Za-z\u{C0}-\u{24F}'\-]+)"),
            intro_zh: re(r"(?:我叫|我的名字是|我的名字叫|本人叫|本人是)[ ]*(\p{Han}{1,4})"),
            intro_zh_honorific: re(r"我(?:是|姓)[ ]*(\p{Han}{1,3}?)(?:先生|女士|小姐|太太)"),
        }
    })
}

/// Words after "this is" / "I'm" that are not names even when capitalised (sentence case).
const NOT_NAMES: [&str; 40] = [
    "a",
    "an",
    "the",
    "not",
    "so",
    "very",
    "really",
    "still",
    "just",
    "sorry",
    "fine",
    "done",
    "here",
    "there",
    "going",
    "getting",
    "trying",
    "waiting",
    "writing",
    "calling",
    "contacting",
    "ridiculous",
    "unacceptable",
    "terrible",
    "awful",
    "great",
    "happy",
    "angry",
    "upset",
    "frustrated",
    "disappointed",
    "confused",
    "worried",
    "tired",
    "sick",
    "again",
    "about",
    "your",
    "my",
    "from",
];

/// Characters that end a Chinese name taken after 我叫 (particles and verbs that follow it).
/// Characters common in given names (明, 可, 和) are not among them.
const ZH_NAME_STOPS: &str = "的了在是我你他她想要请问跟今昨刚已还就也都不没给从对，。！？、";

/// Spans of the customer's name: the `customer_name` field wherever it occurs (and each of its
/// words of three or more letters, for a Latin name), and self-introductions.
fn name_spans(t: &str, customer_name: Option<&str>) -> Vec<Range<usize>> {
    let d = detectors();
    let mut out = Vec::new();
    if let Some(name) = customer_name.map(|n| Folded::new(n.trim()).text) {
        let mut needles: Vec<String> = Vec::new();
        if name.chars().count() >= 2 {
            needles.push(name.clone());
        }
        let words: Vec<&str> = name.split_whitespace().collect();
        if words.len() > 1 {
            needles.extend(
                words
                    .iter()
                    .filter(|w| w.chars().count() >= 3 && w.chars().all(char::is_alphabetic))
                    .map(|w| w.to_string()),
            );
        }
        for needle in needles {
            out.extend(find_word(t, &needle));
        }
    }
    for c in d.intro_en.captures_iter(t) {
        let Some(m) = c.get(1) else { continue };
        let intro = c.get(0).map_or("", |m| m.as_str()).to_ascii_lowercase();
        // "my name is anna" names her whatever the case; after "this is" or "I'm" only a
        // capitalised word that is not a common adjective or verb counts as a name.
        let explicit = intro.starts_with("my name");
        let mut words = m.as_str().split(' ').filter(|w| !w.is_empty());
        let first = words.next().unwrap_or_default();
        if NOT_NAMES.contains(&first.to_ascii_lowercase().as_str()) {
            continue;
        }
        let title_case = first.chars().next().is_some_and(char::is_uppercase)
            && first.chars().skip(1).any(char::is_lowercase);
        if !explicit && !title_case {
            continue;
        }
        // The second word only when it is a capitalised name too, not "Anna And ..." lowercase.
        let end = match words.next() {
            Some(second)
                if !NOT_NAMES.contains(&second.to_ascii_lowercase().as_str())
                    && second.chars().skip(1).any(char::is_lowercase) =>
            {
                m.end()
            }
            _ => m.start() + first.len(),
        };
        out.push(m.start()..end);
    }
    for c in d.honorific_en.captures_iter(t) {
        if let Some(m) = c.get(1) {
            out.push(m.range());
        }
    }
    for c in d.intro_zh.captures_iter(t) {
        let Some(m) = c.get(1) else { continue };
        let name: usize = m
            .as_str()
            .chars()
            .take_while(|ch| !ZH_NAME_STOPS.contains(*ch))
            .take(3)
            .map(char::len_utf8)
            .sum();
        if name > 0 {
            out.push(m.start()..m.start() + name);
        }
    }
    for c in d.intro_zh_honorific.captures_iter(t) {
        if let Some(m) = c.get(1).filter(|m| !m.is_empty()) {
            out.push(m.range());
        }
    }
    out
}

/// Occurrences of `needle` in `t` (ASCII case ignored) not inside a longer Latin word.
fn find_word(t: &str, needle: &str) -> Vec<Range<usize>> {
    let lower_t = t.to_ascii_lowercase();
    let lower_n = needle.to_ascii_lowercase();
    let latin = |c: char| c.is_ascii_alphabetic() || ('\u{C0}'..='\u{24F}').contains(&c);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower_t[from..].find(&lower_n) {
        let start = from + pos;
        let end = start + lower_n.len();
        let before = t[..start].chars().next_back();
        let after = t[end..].chars().next();
        let glued_before = needle.starts_with(latin) && before.is_some_and(latin);
        let glued_after = needle.ends_with(latin) && after.is_some_and(latin);
        if !glued_before && !glued_after {
            out.push(start..end);
        }
        from = end;
    }
    out
}

/// Not glued to another ASCII letter or digit on either side (a Chinese character may touch).
fn isolated(t: &str, r: Range<usize>) -> bool {
    let before = t[..r.start].chars().next_back();
    let after = t[r.end..].chars().next();
    !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '+')
        && !after.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn phone_digits_ok(s: &str) -> bool {
    (7..=15).contains(&digits(s).len())
}

/// The end of the longest Luhn-valid card number (13–19 digits, first digit 2–6, spaces or
/// dashes between groups) starting at the match, if any.
fn card_end(t: &str, r: Range<usize>) -> Option<usize> {
    if t[..r.start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        return None;
    }
    let s = &t[r.clone()];
    if !matches!(s.as_bytes()[0], b'2'..=b'6') {
        return None;
    }
    // Candidate ends: after each digit that is followed by a separator or the match's end.
    let mut ends: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut ds = Vec::new();
    for (i, c) in s.char_indices() {
        if let Some(d) = c.to_digit(10) {
            ds.push(d);
            let next = s[i + 1..].chars().next();
            if !next.is_some_and(|n| n.is_ascii_digit()) && (13..=19).contains(&ds.len()) {
                ends.push((r.start + i + 1, ds.clone()));
            }
        }
    }
    ends.into_iter()
        .rev()
        .find(|(end, ds)| {
            !t[*end..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && luhn(ds)
        })
        .map(|(end, _)| end)
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The end of the longest IBAN (ISO 13616 mod-97 check, 15–34 characters) starting at the match.
fn iban_end(t: &str, r: Range<usize>) -> Option<usize> {
    if t[..r.start]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    let s = &t[r.clone()];
    let mut compact = String::new();
    let mut ends = Vec::new();
    for (i, c) in s.char_indices() {
        if c != ' ' {
            compact.push(c);
            if (15..=34).contains(&compact.len()) {
                ends.push((r.start + i + 1, compact.clone()));
            }
        }
    }
    ends.into_iter()
        .rev()
        .find(|(end, iban)| {
            !t[*end..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
                && mod97(iban)
        })
        .map(|(end, _)| end)
}

fn mod97(iban: &str) -> bool {
    let (head, tail) = iban.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

/// A Chinese resident identity number: a plausible birth date and the ISO 7064 MOD 11-2 check
/// character.
fn resident_id_valid(s: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = s.as_bytes();
    let ds = digits(&s[..17]);
    let sum: u32 = ds.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    let year = &s[6..10];
    let month: u32 = s[10..12].parse().unwrap_or(0);
    let day: u32 = s[12..14].parse().unwrap_or(0);
    (year.starts_with("19") || year.starts_with("20"))
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && b[17].to_ascii_uppercase() == CHECK[(sum % 11) as usize]
}

/// An id-like token (letters and digits, maybe joined by `-`, `_` or `/`) with six or more
/// digits that is not a date or an amount of money.
fn long_id(t: &str, r: Range<usize>) -> bool {
    let s = &t[r.clone()];
    if digits(s).len() < 6 {
        return false;
    }
    let before = t[..r.start].chars().next_back();
    let after = t[r.end..].chars().next();
    if before.is_some_and(|c| "$€£¥￥".contains(c)) || after.is_some_and(|c| "%元块".contains(c))
    {
        return false;
    }
    !is_date(s)
}

/// `2024-05-01`, `01/05/2024`, `2024/5/1`, `20240501`.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['-', '/']).collect();
    let num = |p: &str| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty();
    match parts.as_slice() {
        [a, b, c] if parts.iter().all(|p| num(p)) => {
            (a.len() == 4 && b.len() <= 2 && c.len() <= 2)
                || (a.len() <= 2 && b.len() <= 2 && (c.len() == 4 || c.len() == 2))
        }
        [one] if one.len() == 8 && num(one) => {
            let month: u32 = one[4..6].parse().unwrap_or(0);
            let day: u32 = one[6..8].parse().unwrap_or(0);
            (one.starts_with("19") || one.starts_with("20"))
                && (1..=12).contains(&month)
                && (1..=31).contains(&day)
        }
        _ => false,
    }
}

/// The text with full-width forms folded to ASCII, one character for one, and where each
/// folded character came from.
struct Folded {
    text: String,
    /// (byte offset in `text`, byte offset in the original) per character, plus the two ends.
    offsets: Vec<(usize, usize)>,
}

impl Folded {
    fn new(original: &str) -> Folded {
        let mut text = String::with_capacity(original.len());
        let mut offsets = Vec::with_capacity(original.len() + 1);
        for (i, c) in original.char_indices() {
            offsets.push((text.len(), i));
            let folded = match c {
                '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                '\u{3000}' => ' ',
                _ => c,
            };
            text.push(folded);
        }
        offsets.push((text.len(), original.len()));
        Folded { text, offsets }
    }

    /// The original byte offset of folded byte offset `at` (a character boundary).
    fn original(&self, at: usize) -> usize {
        match self.offsets.binary_search_by_key(&at, |(f, _)| *f) {
            Ok(i) => self.offsets[i].1,
            Err(i) => self.offsets[i.saturating_sub(1)].1,
        }
    }
}

/// Non-overlapping spans of the folded text, each with its placeholder; the first to claim
/// a character keeps it.
#[derive(Default)]
struct Spans(Vec<(Range<usize>, &'static str)>);

impl Spans {
    fn add(&mut self, r: Range<usize>, token: &'static str) {
        if r.is_empty()
            || self
                .0
                .iter()
                .any(|(s, _)| s.start < r.end && r.start < s.end)
        {
            return;
        }
        self.0.push((r, token));
    }

    fn apply(mut self, original: &str, folded: &Folded) -> String {
        self.0.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(original.len());
        let mut at = 0;
        for (r, token) in self.0 {
            let (start, end) = (folded.original(r.start), folded.original(r.end));
            out.push_str(&original[at..start]);
            out.push_str(token);
            at = end;
        }
        out.push_str(&original[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> String {
        mask(text, None)
    }

    #[test]
    fn emails_are_masked_in_any_script() {
        assert_eq!(m("mail jo.doe+cs@example.co.uk now"), "mail <EMAIL> now");
        assert_eq!(
            m("我的邮箱是wang.fang@qq.com，请回复"),
            "我的邮箱是<EMAIL>，请回复"
        );
        assert_eq!(m("邮箱：ｗａｎｇ＠ｑｑ．ｃｏｍ"), "邮箱：<EMAIL>");
        assert_eq!(
            m("an @ sign alone, or me@home"),
            "an @ sign alone, or me@home"
        );
    }

    #[test]
    fn phone_numbers_are_masked() {
        assert_eq!(m("call +44 20 7946 0958 today"), "call <PHONE> today");
        assert_eq!(m("call +1 (555) 123-4567"), "call <PHONE>");
        assert_eq!(m("my number is (555) 123-4567."), "my number is <PHONE>.");
        assert_eq!(m("or 555.123.4567"), "or <PHONE>");
        assert_eq!(m("我的电话是13800138000，快点"), "我的电话是<PHONE>，快点");
        assert_eq!(m("手机138-0013-8000"), "手机<PHONE>");
        assert_eq!(m("座机010-12345678找我"), "座机<PHONE>找我");
        assert_eq!(m("电话：１３８００１３８０００"), "电话：<PHONE>");
        assert_eq!(m("ring 020 7946 0958"), "ring <PHONE>");
        assert_eq!(m("+86 138 0013 8000 是我的"), "<PHONE> 是我的");
    }

    #[test]
    fn luhn_valid_card_numbers_are_masked_and_others_are_not_cards() {
        assert_eq!(
            m("card 4111 1111 1111 1111 was charged"),
            "card <CARD> was charged"
        );
        assert_eq!(m("card 4111-1111-1111-1111"), "card <CARD>");
        assert_eq!(m("卡号6222021234567890128扣款两次"), "卡号<CARD>扣款两次");
        assert_eq!(m("5500005555555559"), "<CARD>");
        // Full-width digits fold before the check.
        assert_eq!(m("卡号４１１１１１１１１１１１１１１１"), "卡号<CARD>");
        // One digit off: not a card. In groups of four it is left alone; unbroken after a cue
        // word it is an order number.
        assert_eq!(m("card 4111 1111 1111 1112"), "card 4111 1111 1111 1112");
        assert_eq!(m("ref 4111111111111112"), "ref <ORDER>");
    }

    #[test]
    fn iban_and_resident_ids_are_masked() {
        assert_eq!(
            m("IBAN DE89 3704 0044 0532 0130 00 please"),
            "IBAN <IBAN> please"
        );
        assert_eq!(m("GB82WEST12345698765432"), "<IBAN>");
        assert_eq!(m("身份证号11010519491231002X"), "身份证号<ID>");
        // A bad check character is no resident id; the number is still masked as an id.
        assert_eq!(m("号码110105194912310021"), "号码<ORDER>");
    }

    #[test]
    fn order_numbers_after_cue_words_and_long_ids_are_masked() {
        assert_eq!(m("Where is order #A10023?"), "Where is order #<ORDER>?");
        assert_eq!(
            m("my ORDER no. 30991-C is late"),
            "my ORDER no. <ORDER> is late"
        );
        assert_eq!(m("订单号：20240501123的物流"), "订单号：<ORDER>的物流");
        assert_eq!(m("快递单号 SF1234 还没更新"), "快递单号 <ORDER> 还没更新");
        assert_eq!(m("订单＃Ａ５５８１０"), "订单＃<ORDER>");
        assert_eq!(
            m("tracking 1Z999AA10123456784 stuck"),
            "tracking <ORDER> stuck"
        );
        assert_eq!(m("ticket ORD-2024-889123 again"), "ticket <ORDER> again");
    }

    #[test]
    fn names_from_the_field_and_from_introductions_are_masked() {
        assert_eq!(
            mask("Hi, Alex Chen here. alex needs help", Some("Alex Chen")),
            "Hi, <NAME> here. <NAME> needs help"
        );
        assert_eq!(
            mask("Alexander is not Alex", Some("Alex")),
            "Alexander is not <NAME>"
        );
        assert_eq!(mask("王芳的订单还没到", Some("王芳")), "<NAME>的订单还没到");
        assert_eq!(
            m("Hello, my name is Maria Lopez and"),
            "Hello, my name is <NAME> and"
        );
        assert_eq!(
            m("my name is john, order late"),
            "my name is <NAME>, order late"
        );
        assert_eq!(
            m("Hi, this is Tom from Berlin"),
            "Hi, this is <NAME> from Berlin"
        );
        assert_eq!(m("I'm Sarah"), "I'm <NAME>");
        assert_eq!(
            m("call me at 9am, my name's Bo"),
            "call me at 9am, my name's <NAME>"
        );
        assert_eq!(m("Please ask Mr. Smith"), "Please ask Mr. <NAME>");
        assert_eq!(m("我叫王芳，想问一下"), "我叫<NAME>，想问一下");
        assert_eq!(m("我叫李明想退款"), "我叫<NAME>想退款");
        assert_eq!(m("你好，我是张先生"), "你好，我是<NAME>先生");
    }

    #[test]
    fn ordinary_words_after_intro_phrases_are_not_names() {
        for text in [
            "this is ridiculous",
            "This is Ridiculous!",
            "I'm so angry",
            "I'm Very upset",
            "I AM DONE WITH YOU",
            "this is the third time",
            "I'm still waiting",
            "我是老客户了",
        ] {
            assert_eq!(m(text), text);
        }
    }

    #[test]
    fn numbers_that_carry_meaning_survive() {
        for text in [
            "I waited 3 days and 50% of the order is missing",
            "delivered on 2024-05-01 at 10:30, or 01/05/2024",
            "it cost ¥199, then $20, then €1,299.00",
            "5月1日下单，等了15天，退我199元",
            "iPhone 15 Pro, 256GB, order 12",
            "paid ¥1999999 for this",
            "20240501 was the date",
            "room 404, floor 3",
        ] {
            assert_eq!(m(text), text);
        }
    }

    #[test]
    fn mixed_chinese_and_english_with_everything() {
        let text = "Hi 我是Lily，订单号 A88812345 没到，call me at +86 138 0013 8000 or lily.w@163.com，卡 4111 1111 1111 1111 被扣两次，等了3天";
        assert_eq!(
            mask(text, Some("Lily Wang")),
            "Hi 我是<NAME>，订单号 <ORDER> 没到，call me at <PHONE> or <EMAIL>，卡 <CARD> 被扣两次，等了3天"
        );
    }

    #[test]
    fn folding_keeps_the_unmasked_original() {
        // The full-width text around a masked span is copied from the original, not folded.
        assert_eq!(
            m("（急）电话：１３８００１３８０００！"),
            "（急）电话：<PHONE>！"
        );
        assert_eq!(m(""), "");
    }
}
