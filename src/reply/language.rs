//! Which language a reply is written in: the message's `language` tag when we have templates
//! for it, else a script detector (CJK vs Latin), else the configured default language.

use std::collections::BTreeSet;

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

/// The language to draft in, always one of `supported`.
pub(crate) fn resolve(
    tag: Option<&str>,
    text: &str,
    supported: &BTreeSet<String>,
    default: &str,
) -> String {
    if let Some(language) = tag.and_then(primary_subtag)
        && supported.contains(&language)
    {
        return language;
    }
    match detect(text) {
        Some(language) if supported.contains(language) => language.to_string(),
        _ => default.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported() -> BTreeSet<String> {
        ["en", "zh"].map(String::from).into()
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
    fn detected_language_without_templates_uses_the_default() {
        assert_eq!(
            resolve(None, "주문한 상품이 아직 안 왔어요", &supported(), "en"),
            "en"
        );
    }
}
