//! Which language a message is in: the producer's `language` tag, else detected (Chinese,
//! Japanese and Korean by script, other scripts by `whatlang`'s trigram model when it is sure).
//! Replies use it when templates exist for that language, else the configured default; emotion
//! results carry it as `language`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use whatlang::{Detector, Lang, Script};

use super::text::prefix_bytes;

/// Enough text to decide on the script; keeps detection cheap on huge messages.
const DETECT_BYTES: usize = 4096;

/// The primary subtag of a BCP-47-ish tag: `zh-Hans-CN` → `zh`, `en_GB` → `en`.
pub(crate) fn primary_subtag(tag: &str) -> Option<String> {
    let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
    match primary.as_str() {
        "" | "und" | "mul" | "zxx" => None,
        // Mandarin and Cantonese tags are written with Chinese templates.
        "cmn" | "yue" => Some("zh".to_string()),
        _ => Some(primary),
    }
}

/// Guesses the language from the script: Han → `zh`, kana → `ja`, hangul → `ko`, otherwise
/// `None` (Latin and everything else; the caller uses its default).
pub(crate) fn detect(text: &str) -> Option<&'static str> {
    let (mut han, mut kana, mut hangul, mut latin_words) = (0usize, 0usize, 0usize, 0usize);
    let mut in_word = false;
    for c in prefix_bytes(text, DETECT_BYTES).chars() {
        match c {
            '\u{3040}'..='\u{30FF}' => kana += 1,
            '\u{AC00}'..='\u{D7AF}' | '\u{1100}'..='\u{11FF}' => hangul += 1,
            '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' => han += 1,
            _ => {}
        }
        let latin = c.is_ascii_alphabetic() || ('\u{00C0}'..='\u{024F}').contains(&c);
        if latin && !in_word {
            latin_words += 1;
        }
        in_word = latin;
    }
    // One CJK character carries roughly a word, so compare characters with Latin words:
    // "iPhone 15 的屏幕坏了" is Chinese, "my name is 王伟 and my order is late" is not.
    let cjk = han + kana + hangul;
    if cjk == 0 || cjk <= latin_words {
        return None;
    }
    Some(if hangul * 2 > cjk {
        "ko"
    } else if kana > 0 && kana * 10 >= cjk {
        "ja"
    } else {
        "zh"
    })
}

/// Latin-script languages told apart by trigrams. A short list on purpose: on short messages
/// `whatlang` over all its languages often answers Afrikaans or German for plain English.
const LATIN: [Lang; 9] = [
    Lang::Eng,
    Lang::Spa,
    Lang::Fra,
    Lang::Deu,
    Lang::Por,
    Lang::Ita,
    Lang::Nld,
    Lang::Ind,
    Lang::Vie,
];

/// Below this confidence a non-English answer for Latin-script text is taken as English ("ok
/// got it" scores German at 0.01); "où est ma commande" scores French at 0.18.
const NON_ENGLISH_CONFIDENCE: f64 = 0.15;

/// English function words. Trigrams alone call short English Dutch ("What are your opening hours
/// on weekends?" scores Dutch at 0.32), so Latin text where a fifth of the words are these is
/// English before any trigram is counted. None is also a common word of the other languages in
/// [`LATIN`].
const ENGLISH_WORDS: [&str; 37] = [
    "the", "an", "is", "are", "was", "were", "be", "been", "you", "my", "your", "we", "our", "it",
    "this", "that", "what", "where", "when", "why", "how", "can", "could", "will", "would",
    "please", "to", "of", "for", "and", "with", "not", "have", "has", "just", "still", "thanks",
];

/// Whether at least a fifth of the words (and at least one) are English function words.
fn looks_english(text: &str) -> bool {
    let (mut words, mut english) = (0usize, 0usize);
    for word in text
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .filter(|w| !w.is_empty())
    {
        words += 1;
        let word = word.to_lowercase();
        let stem = word.split('\'').next().unwrap_or_default();
        english += usize::from(ENGLISH_WORDS.contains(&stem));
    }
    english > 0 && english * 5 >= words
}

/// Scripts other than Han, kana and hangul: `whatlang` (trigrams for Latin among [`LATIN`], the
/// script alone where it decides). `None` for text without letters.
fn detect_other(text: &str) -> Option<String> {
    static LATIN_DETECTOR: OnceLock<Detector> = OnceLock::new();
    let text = prefix_bytes(text, DETECT_BYTES);
    if !text.chars().any(char::is_alphabetic) {
        return None;
    }
    let info = if whatlang::detect_script(text) == Some(Script::Latin) {
        if looks_english(text) {
            return Some("en".to_string());
        }
        let detector = LATIN_DETECTOR.get_or_init(|| Detector::with_allowlist(LATIN.to_vec()));
        match detector.detect(text) {
            Some(i) if i.lang() != Lang::Eng && i.confidence() >= NON_ENGLISH_CONFIDENCE => i,
            _ => return Some("en".to_string()),
        }
    } else {
        whatlang::detect(text)?
    };
    Some(iso_639_1(info.lang()).to_string())
}

/// ISO 639-1 where the language has one (the common ones here), else `whatlang`'s ISO 639-3.
fn iso_639_1(lang: Lang) -> &'static str {
    match lang.code() {
        "eng" => "en",
        "spa" => "es",
        "fra" => "fr",
        "deu" => "de",
        "por" => "pt",
        "ita" => "it",
        "nld" => "nl",
        "ind" => "id",
        "vie" => "vi",
        "rus" => "ru",
        "ukr" => "uk",
        "tha" => "th",
        "ara" => "ar",
        "hin" => "hi",
        "heb" => "he",
        "ell" => "el",
        other => other,
    }
}

/// The language of a message as emotion results report it: the producer's tag (primary
/// subtag), else detected, else `und` (undetermined).
pub(crate) fn identify(tag: Option<&str>, text: &str) -> String {
    tag.and_then(primary_subtag)
        .or_else(|| detect(text).map(str::to_string))
        .or_else(|| detect_other(text))
        .unwrap_or_else(|| "und".to_string())
}

/// The language to draft in, always one of `supported`: `identified` (what [`identify`] gave
/// for this message, carried by its emotion result) when there are templates for it; else, when
/// that was the producer's `tag`, the language detected in `text`; else `default`.
pub(crate) fn for_reply(
    identified: &str,
    tag: Option<&str>,
    text: &str,
    supported: &BTreeSet<String>,
    default: &str,
) -> String {
    if supported.contains(identified) {
        return identified.to_string();
    }
    // Without a usable tag, `identified` already is the detected language.
    if tag.and_then(primary_subtag).is_some()
        && let Some(language) = detect(text)
            .map(str::to_string)
            .or_else(|| detect_other(text))
        && supported.contains(&language)
    {
        return language;
    }
    default.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> BTreeSet<String> {
        ["en", "zh"].map(String::from).into()
    }

    /// The reply language of a message as the pipeline finds it: identified, then chosen.
    fn resolve(
        tag: Option<&str>,
        text: &str,
        supported: &BTreeSet<String>,
        default: &str,
    ) -> String {
        for_reply(&identify(tag, text), tag, text, supported, default)
    }

    #[test]
    fn reply_language_is_the_identified_one_when_it_has_templates() {
        // No second detection: the identified language is taken as it is.
        assert_eq!(
            for_reply("en", None, "我的订单还没到", &supported(), "en"),
            "en"
        );
        assert_eq!(
            for_reply("zh", None, "where is my order", &supported(), "en"),
            "zh"
        );
        assert_eq!(
            for_reply("fr", None, "我的订单还没到", &supported(), "en"),
            "en"
        );
        // An unsupported producer tag: the text decides.
        assert_eq!(
            for_reply("fr", Some("fr"), "我的订单还没到", &supported(), "en"),
            "zh"
        );
    }

    #[test]
    fn language_tag_wins_when_templates_exist() {
        assert_eq!(
            resolve(Some("zh-CN"), "hello there", &supported(), "en"),
            "zh"
        );
        assert_eq!(resolve(Some("EN_gb"), "你好", &supported(), "en"), "en");
        assert_eq!(resolve(Some("cmn-Hans"), "hello", &supported(), "en"), "zh");
    }

    #[test]
    fn unsupported_or_empty_tag_falls_back_to_detection() {
        assert_eq!(
            resolve(Some("fr"), "我的订单还没到", &supported(), "en"),
            "zh"
        );
        assert_eq!(
            resolve(Some(""), "我的订单还没到", &supported(), "en"),
            "zh"
        );
        assert_eq!(
            resolve(Some("und"), "where is my order", &supported(), "en"),
            "en"
        );
        assert_eq!(
            resolve(None, "où est ma commande", &supported(), "en"),
            "en"
        );
    }

    #[test]
    fn detector_separates_latin_from_cjk_scripts() {
        assert_eq!(detect("iPhone 15 的屏幕坏了"), Some("zh"));
        assert_eq!(detect("my name is 王伟 and my order is late"), None);
        assert_eq!(detect("注文した商品がまだ届きません"), Some("ja"));
        assert_eq!(detect("주문한 상품이 아직 안 왔어요"), Some("ko"));
        assert_eq!(detect("Where is my parcel?"), None);
        assert_eq!(detect(""), None);
        assert_eq!(detect("12345 !!! 😀"), None);
    }

    #[test]
    fn identify_prefers_the_tag_then_script_then_trigrams() {
        assert_eq!(identify(Some("zh-Hant-TW"), "where is my order"), "zh");
        assert_eq!(identify(None, "我的order还没到，tracking一直不更新"), "zh");
        assert_eq!(
            identify(
                None,
                "I have been waiting three weeks for my refund and nobody answers"
            ),
            "en"
        );
        assert_eq!(
            identify(None, "Mi pedido no ha llegado todavía y nadie me responde"),
            "es"
        );
        assert_eq!(identify(None, "ok got it"), "en");
        assert_eq!(
            identify(None, "What are your opening hours on weekends?"),
            "en"
        );
        assert_eq!(identify(None, "où est ma commande"), "fr");
        assert_eq!(identify(None, "Voy a la tienda mañana por mi pedido"), "es");
        assert_eq!(
            identify(None, "Ich warte seit drei Wochen auf meine Erstattung"),
            "de"
        );
        assert_eq!(identify(Some("und"), "12345 !!! 😀"), "und");
    }

    #[test]
    fn detected_language_without_templates_uses_the_default() {
        assert_eq!(
            resolve(None, "주문한 상품이 아직 안 왔어요", &supported(), "en"),
            "en"
        );
    }
}
