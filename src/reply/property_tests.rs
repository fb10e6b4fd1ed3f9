//! Property tests: whatever the message, metadata, emotion or trend, a draft never leaks
//! template syntax, respects its channel's limits, and a public reply repeats no personal
//! data from the message.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::sms::{encoded_len, is_gsm7, limit};
use super::strategy::tests::result;
use super::text::contains_placeholder;
use super::{DraftReply, ReplyDrafter};
use crate::message::{ConversationTrend, CustomerMessage, Emotion};

fn drafter() -> &'static ReplyDrafter {
    static DRAFTER: OnceLock<ReplyDrafter> = OnceLock::new();
    DRAFTER.get_or_init(ReplyDrafter::builtin)
}

/// Pieces of text that exercise every scanner and cleaner.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z]{1,10}",
        Just("refund".to_string()),
        Just("where is my order".to_string()),
        Just("password".to_string()),
        Just("退款".to_string()),
        Just("我的快递还没到".to_string()),
        "order #?[A-Z]{0,2}[0-9]{3,10}",
        "订单号 ?[A-Z0-9]{4,10}",
        "#[A-Z0-9-]{1,12}",
        "[a-z]{1,8}@[a-z]{1,8}\\.(com|cn)",
        "\\+?[0-9]{4,14}",
        "https?://[a-z]{1,10}\\.com/[a-z0-9?=&]{0,12}",
        "www\\.[a-z]{1,10}\\.com",
        Just("😀".to_string()),
        Just("👍🏽".to_string()),
        Just("🇨🇳".to_string()),
        Just("{{ customer_name }}".to_string()),
        Just("{% if x %}".to_string()),
        Just("{# c #}".to_string()),
        Just("}}%}#}".to_string()),
        "<[a-z]{1,5}>",
        "[*_`~\\[\\]|]{1,3}",
        ".{0,12}",
        "[\u{4e00}-\u{9fa5}]{1,20}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..12).prop_map(|parts| parts.join(" "))
}

fn optional_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn channel() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("chat".to_string()),
        Just("email".to_string()),
        Just("sms".to_string()),
        Just("voice".to_string()),
        Just("social".to_string()),
        Just("SMS ".to_string()),
        Just("twitter".to_string()),
        Just("whatsapp".to_string()),
        ".{0,8}",
    ]
}

fn metadata() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        Just("order_id".to_string()),
        Just("order_number".to_string()),
        Just("email".to_string()),
        Just("phone".to_string()),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        "[A-Z]{0,3}[0-9]{3,10}",
        "[a-z]{1,8}@[a-z]{1,8}\\.com",
        "\\+?[0-9]{6,14}",
        Just("{{ order_id }}".to_string()),
        ".{0,16}",
    ];
    prop::collection::btree_map(key, value, 0..4)
}

fn unit_score() -> impl Strategy<Value = f32> {
    prop_oneof![0.0f32..=1.0, Just(f32::NAN), Just(-1.0f32), Just(2.0f32)]
}

prop_compose! {
    fn message()(
        channel in channel(),
        text in text(),
        subject in optional_text(),
        language in prop::option::of(prop_oneof![
            Just("en".to_string()), Just("zh-CN".to_string()), Just("fr".to_string()), ".{0,6}",
        ]),
        customer_name in prop::option::of(prop_oneof!["Xq[a-z]{2,8}", ".{0,20}"]),
        tenant_id in prop::option::of(prop_oneof![Just("acme".to_string()), ".{0,6}"]),
        metadata in metadata(),
    ) -> CustomerMessage {
        CustomerMessage {
            message_id: "m".into(),
            conversation_id: "c".into(),
            customer_id: "cust".into(),
            tenant_id,
            channel,
            text,
            subject,
            language,
            sent_at: 0,
            customer_name,
            metadata,
        }
    }
}

prop_compose! {
    fn emotion_result()(
        emotion in prop::sample::select(Emotion::ALL.to_vec()),
        confidence in unit_score(),
        negativity in unit_score(),
    ) -> crate::message::EmotionResult {
        result(emotion, confidence, negativity)
    }
}

fn trend() -> impl Strategy<Value = Option<ConversationTrend>> {
    prop::option::of(
        (any::<bool>(), any::<bool>(), 0u32..20, 0.0f32..=1.0).prop_map(
            |(rising, escalated, turns, ewma_negativity)| ConversationTrend {
                turns,
                ewma_negativity,
                rising,
                escalated,
            },
        ),
    )
}

fn visible_texts(draft: &DraftReply) -> Vec<&str> {
    draft
        .subject
        .iter()
        .chain(&draft.body)
        .chain(draft.segments.iter().flatten())
        .map(String::as_str)
        .collect()
}

/// Runs of four or more ASCII digits.
fn digit_runs(text: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut run = String::new();
    for c in text.chars().chain([' ']) {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            if run.len() >= 4 {
                runs.push(run.clone());
            }
            run.clear();
        }
    }
    runs
}

/// Pictographs, symbols and emoji modifiers, checked independently of the module's own
/// classifier.
fn looks_like_emoji(c: char) -> bool {
    matches!(c, '\u{1F000}'..='\u{1FAFF}' | '\u{2600}'..='\u{27BF}' | '\u{FE0F}' | '\u{200D}')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn drafts_never_leak_placeholders(msg in message(), result in emotion_result(), trend in trend()) {
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        for text in visible_texts(&draft) {
            prop_assert!(!contains_placeholder(text), "placeholder in {text:?}");
        }
        prop_assert!(visible_texts(&draft).iter().any(|t| !t.trim().is_empty()), "empty draft");
        prop_assert!(!draft.template_id.is_empty());
    }

    #[test]
    fn chat_social_voice_and_other_drafts_stay_within_their_length_limits(
        msg in message(), result in emotion_result(), trend in trend(),
    ) {
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        let limit = match draft.channel.as_str() {
            "chat" | "web" | "whatsapp" => Some(300),
            "social" | "twitter" => Some(280),
            "voice" | "phone" => Some(700),
            "email" | "sms" => None,
            _ => Some(1000),
        };
        if let (Some(limit), Some(body)) = (limit, &draft.body) {
            prop_assert!(body.chars().count() <= limit, "{} > {limit}: {body}", body.chars().count());
        }
    }

    #[test]
    fn sms_segments_stay_within_gsm7_or_ucs2_limits(
        msg in message(), result in emotion_result(), trend in trend(),
    ) {
        let msg = CustomerMessage { channel: "sms".into(), ..msg };
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        prop_assert!(draft.body.is_none());
        let segments = draft.segments.expect("sms drafts have segments");
        prop_assert!(!segments.is_empty());
        let gsm = segments.iter().all(|s| is_gsm7(s));
        let limit = limit(gsm, segments.len());
        for (i, segment) in segments.iter().enumerate() {
            prop_assert!(encoded_len(segment, gsm) <= limit, "{segment:?}");
            // Independently of the module's own counting: 160 characters, 70 UTF-16 units.
            prop_assert!(segment.chars().count() <= 160);
            prop_assert!(gsm || segment.encode_utf16().count() <= 70, "{segment:?}");
            if segments.len() > 1 {
                let marker = format!("({}/{}) ", i + 1, segments.len());
                prop_assert!(segment.starts_with(&marker), "{segment:?}");
            }
        }
    }

    #[test]
    fn voice_scripts_have_no_urls_emoji_or_markup(
        msg in message(), result in emotion_result(), trend in trend(),
    ) {
        let msg = CustomerMessage { channel: "voice".into(), ..msg };
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        let body = draft.body.expect("voice drafts have a body");
        let lower = body.to_lowercase();
        prop_assert!(!lower.contains("http") && !lower.contains("www.") && !lower.contains("://"), "{body}");
        prop_assert!(!body.chars().any(looks_like_emoji), "{body}");
        prop_assert!(!body.chars().any(|c| matches!(c, '*' | '_' | '#' | '`' | '<' | '>' | '[' | ']' | '{' | '}')), "{body}");
    }

    #[test]
    fn social_replies_repeat_no_order_id_email_name_or_number_from_the_message(
        msg in message(), result in emotion_result(), trend in trend(),
    ) {
        let msg = CustomerMessage { channel: "social".into(), ..msg };
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        let body = draft.body.expect("social drafts have a body");
        let mut inputs: Vec<&str> = vec![&msg.text];
        inputs.extend(msg.subject.as_deref());
        inputs.extend(msg.customer_name.as_deref());
        inputs.extend(msg.metadata.values().map(String::as_str));
        for input in &inputs {
            for run in digit_runs(input) {
                prop_assert!(!body.contains(&run), "{run} repeated in {body}");
            }
        }
        prop_assert!(!body.contains('@'), "{body}");
        for key in ["order_id", "order_number"] {
            if let Some(id) = msg.metadata.get(key).filter(|id| id.len() >= 4 && id.chars().any(|c| c.is_ascii_digit())) {
                prop_assert!(!body.contains(id.as_str()), "{id} in {body}");
            }
        }
        if let Some(name) = msg.customer_name.as_deref().filter(|n| n.starts_with("Xq")) {
            prop_assert!(!body.contains(name), "{name} in {body}");
        }
        prop_assert!(draft.requires_review, "social drafts are configured for review");
    }

    #[test]
    fn email_drafts_reply_to_a_subject(msg in message(), result in emotion_result()) {
        let msg = CustomerMessage { channel: "email".into(), ..msg };
        let draft = drafter().draft_identified(&msg, &result, None, 0);
        let subject = draft.subject.expect("email drafts have a subject");
        prop_assert!(subject.starts_with("Re: "), "{subject}");
        prop_assert!(draft.body.is_some());
    }

    #[test]
    fn negative_or_uncertain_results_always_require_review(
        msg in message(), result in emotion_result(), trend in trend(),
    ) {
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        let uncertain = result.confidence.is_nan() || result.confidence < 0.6;
        let heated = trend.as_ref().is_some_and(|t| t.rising || t.escalated);
        if result.primary().is_negative() || uncertain || heated {
            prop_assert!(draft.requires_review);
        }
    }
}

/// Customer-controlled text an attacker or a broken client would send: template code whose
/// output differs from its source (`xkqz`, `lplplp`, `123456790` appear only if executed),
/// control, bidi and zero-width characters, empty and 100k-character strings.
fn hostile_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"{{ "xk" ~ "qz" }}"#.to_string()),
        Just("{% for i in range(3) %}lp{% endfor %}".to_string()),
        Just("{{ 123456789 + 1 }}".to_string()),
        Just("{% include 'x' %}{% import 'y' as z %}{% extends 'w' %}".to_string()),
        Just("{{ range(1000000000)|list }}".to_string()),
        Just("{% raw %}{{ customer_name }}{% endraw %}".to_string()),
        Just("{{ self }}{{ loop }}{{ namespace() }}".to_string()),
        Just("{# comment #}{{-".to_string()),
        Just("{{{{".to_string()),
        Just("}}}}%}%}#}".to_string()),
        "[\u{0}-\u{1f}\u{7f}\u{85}]{1,12}",
        "[a-z\u{200b}-\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}\u{feff}]{1,16}",
        Just("\u{202e}redro ym si erehw".to_string()),
        Just(String::new()),
        Just(" ".repeat(64)),
        Just("a".repeat(100_000)),
        Just("{{".repeat(50_000)),
        Just("退款 order #A1234 ".repeat(6_000)),
        fragment(),
    ]
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_fragment(), 0..4).prop_map(|parts| parts.concat())
}

prop_compose! {
    fn hostile_message()(
        msg in message(),
        channel in prop_oneof![channel(), hostile_text()],
        text in hostile_text(),
        subject in prop::option::of(hostile_text()),
        customer_name in prop::option::of(hostile_text()),
        language in prop::option::of(hostile_text()),
        tenant_id in prop::option::of(hostile_text()),
        order_id in hostile_text(),
    ) -> CustomerMessage {
        let mut metadata = msg.metadata.clone();
        metadata.insert("order_id".into(), order_id);
        CustomerMessage {
            channel, text, subject, customer_name, language, tenant_id, metadata, ..msg
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn hostile_customer_input_is_never_executed_as_template_code(
        msg in hostile_message(), result in emotion_result(), trend in trend(),
    ) {
        let draft = drafter().draft_identified(&msg, &result, trend.as_ref(), 0);
        let texts = visible_texts(&draft);
        prop_assert!(texts.iter().any(|t| !t.trim().is_empty()), "empty draft");
        for text in texts {
            prop_assert!(!contains_placeholder(text), "placeholder in {text:?}");
            for executed in ["xkqz", "lplplp", "123456790"] {
                prop_assert!(!text.contains(executed), "template code ran: {text:?}");
            }
            // A 100k-character input does not make a 100k-character draft.
            prop_assert!(text.chars().count() <= 5_000, "{} characters", text.chars().count());
        }
        prop_assert!(!draft.template_id.is_empty());
    }
}
