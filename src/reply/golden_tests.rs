//! Golden tests: one checked-in expected draft per strategy × channel × language (plus a few
//! special cases) in `tests/golden/replies/`, compared exactly. After an intended change to
//! templates or formatting, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test --lib reply::golden_tests` and review the diff.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::strategy::tests::result;
use super::{BUILTIN_CONFIG, DraftReply, ReplyDrafter};
use crate::message::{ConversationTrend, CustomerMessage, Emotion};

const CHANNELS: [&str; 5] = ["chat", "email", "sms", "voice", "social"];

/// An input message for one language.
struct Input {
    text: &'static str,
    subject: Option<&'static str>,
    customer_name: Option<&'static str>,
    metadata_order_id: Option<&'static str>,
}

/// One strategy's case: the emotion that selects it and a message in each language, each
/// about a different intent so that every intent's body appears in the set.
struct Case {
    emotion: Emotion,
    strategy: &'static str,
    en: Input,
    zh: Input,
}

fn cases() -> Vec<Case> {
    let input = |text, subject, customer_name, metadata_order_id| Input {
        text,
        subject,
        customer_name,
        metadata_order_id,
    };
    vec![
        Case {
            emotion: Emotion::Anger,
            strategy: "de_escalate",
            en: input(
                "This is ridiculous. I was promised a refund for order A10023 weeks ago and still nothing!",
                Some("Still no refund"),
                Some("Anna"),
                None,
            ),
            zh: input(
                "太过分了！订单号 A10023 的退款申请了三周还没到账！",
                Some("退款还没到账"),
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Frustration,
            strategy: "acknowledge_next_step",
            en: input(
                "I've emailed three times already. Where is my order? Tracking hasn't changed in a week.",
                None,
                None,
                None,
            ),
            zh: input(
                "我已经问了三次了，我的快递到底什么时候到？物流一周都没更新。",
                None,
                None,
                None,
            ),
        },
        Case {
            emotion: Emotion::Disappointment,
            strategy: "empathise_remedy",
            en: input(
                "The blender from order #B20417 stopped working after two days. Really disappointed.",
                Some("Broken blender"),
                Some("Anna"),
                None,
            ),
            zh: input(
                "订单 B20417 的搅拌机用了两天就坏了，真的很失望。",
                Some("搅拌机坏了"),
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Anxiety,
            strategy: "reassure",
            en: input(
                "I think I was charged twice for order 30991-C. Is my card safe?",
                Some("Double charge"),
                Some("Anna"),
                None,
            ),
            zh: input(
                "订单号 30991-C 好像被重复扣款了，我的银行卡安全吗？",
                Some("重复扣款"),
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Confusion,
            strategy: "clarify",
            en: input(
                "How do I reset my password? The login page keeps asking for a verification code.",
                None,
                Some("Anna"),
                None,
            ),
            zh: input(
                "怎么重置密码？登录的时候一直让我输入验证码。",
                None,
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Gratitude,
            strategy: "thank",
            en: input(
                "Thank you so much for the quick help yesterday, you were wonderful!",
                None,
                Some("Anna"),
                None,
            ),
            zh: input(
                "非常感谢昨天的耐心帮助，你们太棒了！",
                None,
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Satisfaction,
            strategy: "thank_reinforce",
            en: input(
                "The exchange went smoothly and the new size fits perfectly.",
                Some("Exchange"),
                Some("Anna"),
                None,
            ),
            zh: input(
                "换货很顺利，新尺码非常合适。",
                Some("换货"),
                Some("王芳"),
                None,
            ),
        },
        Case {
            emotion: Emotion::Neutral,
            strategy: "answer_directly",
            en: input(
                "Please cancel my subscription renewal.",
                None,
                Some("Anna"),
                Some("A55810"),
            ),
            zh: input("请帮我取消自动续费。", None, Some("王芳"), Some("A55810")),
        },
    ]
}

fn message(channel: &str, input: &Input) -> CustomerMessage {
    CustomerMessage {
        message_id: "msg-0001".into(),
        conversation_id: "conv-0001".into(),
        customer_id: "cust-0001".into(),
        tenant_id: None,
        channel: channel.into(),
        text: input.text.into(),
        subject: input.subject.map(String::from),
        // Left out so that the detector picks the language.
        language: None,
        sent_at: 1_700_000_000_000,
        customer_name: input.customer_name.map(String::from),
        metadata: input
            .metadata_order_id
            .map(|id| BTreeMap::from([("order_id".to_string(), id.to_string())]))
            .unwrap_or_default(),
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/replies")
}

/// The input and the draft as reviewable text.
fn render(
    msg: &CustomerMessage,
    emotion: Emotion,
    trend: Option<&ConversationTrend>,
    draft: &DraftReply,
) -> String {
    let mut out = String::new();
    let opt = |v: Option<&str>| v.unwrap_or("-").to_string();
    let _ = writeln!(out, "## input");
    let _ = writeln!(out, "channel: {}", msg.channel);
    let _ = writeln!(out, "tenant: {}", opt(msg.tenant_id.as_deref()));
    let _ = writeln!(out, "customer_name: {}", opt(msg.customer_name.as_deref()));
    let _ = writeln!(out, "subject: {}", opt(msg.subject.as_deref()));
    let _ = writeln!(out, "metadata: {:?}", msg.metadata);
    let _ = writeln!(out, "emotion: {emotion}");
    let _ = writeln!(
        out,
        "trend: {}",
        trend.map_or("-".to_string(), |t| format!(
            "rising={} escalated={}",
            t.rising, t.escalated
        ))
    );
    let _ = writeln!(out, "text: {}", msg.text);
    let _ = writeln!(out, "\n## draft");
    let _ = writeln!(out, "language: {}", draft.language);
    let _ = writeln!(out, "strategy: {}", draft.strategy);
    let _ = writeln!(out, "intent: {}", draft.intent);
    let _ = writeln!(out, "template_id: {}", draft.template_id);
    let _ = writeln!(out, "requires_review: {}", draft.requires_review);
    if let Some(subject) = &draft.subject {
        let _ = writeln!(out, "subject: {subject}");
    }
    if let Some(body) = &draft.body {
        let _ = writeln!(out, "body ({} chars):\n{body}", body.chars().count());
    }
    if let Some(segments) = &draft.segments {
        for segment in segments {
            let _ = writeln!(
                out,
                "segment ({} chars): {segment}",
                segment.chars().count()
            );
        }
    }
    out
}

fn result_for(emotion: Emotion) -> crate::message::EmotionResult {
    let negativity = if emotion.is_negative() {
        0.75
    } else if emotion.is_positive() {
        0.02
    } else {
        0.15
    };
    result(emotion, 0.85, negativity)
}

/// Every golden case: (file name, rendered draft).
fn golden_cases() -> Vec<(String, String)> {
    let drafter = ReplyDrafter::builtin();
    let mut out = Vec::new();
    for case in cases() {
        for (language, input) in [("en", &case.en), ("zh", &case.zh)] {
            for channel in CHANNELS {
                let msg = message(channel, input);
                let draft = drafter.draft_identified(
                    &msg,
                    &result_for(case.emotion),
                    None,
                    1_700_000_000_500,
                );
                assert_eq!(draft.strategy, case.strategy, "{language}/{channel}");
                assert_eq!(draft.language, language, "{language}/{channel}");
                let name = format!("{language}_{channel}_{}.txt", case.strategy);
                out.push((name, render(&msg, case.emotion, None, &draft)));
            }
        }
    }

    // A confused customer in an escalated conversation is de-escalated.
    let escalated = ConversationTrend {
        turns: 5,
        ewma_negativity: 0.72,
        rising: true,
        escalated: true,
    };
    let msg = message("chat", &cases()[4].en);
    let draft = drafter.draft_identified(
        &msg,
        &result_for(Emotion::Confusion),
        Some(&escalated),
        1_700_000_000_500,
    );
    out.push((
        "en_chat_escalated_trend.txt".into(),
        render(&msg, Emotion::Confusion, Some(&escalated), &draft),
    ));

    // A tenant's own refund body and signature, everything else inherited.
    let yaml = format!(
        r#"{BUILTIN_CONFIG}
tenants:
  acme:
    templates:
      en:
        default:
          signature: "Acme Customer Care"
        email:
          body:
            refund: >-
              Your Acme refund{{% if order_id %}} for order {{{{ order_id }}}}{{% endif %}} is on its way
              and will reach your original payment method within 3 business days.
"#
    );
    let tenant_drafter = ReplyDrafter::from_yaml(&yaml, "golden tenant config").expect("valid");
    let mut msg = message("email", &cases()[0].en);
    msg.tenant_id = Some("acme".into());
    let draft =
        tenant_drafter.draft_identified(&msg, &result_for(Emotion::Anger), None, 1_700_000_000_500);
    out.push((
        "en_email_tenant_override.txt".into(),
        render(&msg, Emotion::Anger, None, &draft),
    ));
    out
}

#[test]
fn drafts_match_golden_files_for_every_strategy_channel_and_language() {
    let dir = golden_dir();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cases = golden_cases();
    assert_eq!(cases.len(), 8 * 5 * 2 + 2);
    let mut failures = Vec::new();
    if update {
        std::fs::create_dir_all(&dir).expect("create golden dir");
    }
    for (name, actual) in &cases {
        let path = dir.join(name);
        if update {
            std::fs::write(&path, actual).expect("write golden file");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == *actual => {}
            Ok(expected) => failures.push(format!(
                "{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!("{name} is missing")),
        }
    }
    let names: Vec<&str> = cases.iter().map(|(name, _)| name.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if !names.contains(&file.as_str()) {
                failures.push(format!("{file} is stale: no golden case produces it"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\n{} golden mismatches; if intended, regenerate with UPDATE_GOLDEN=1 cargo test --lib reply::golden_tests",
        failures.join("\n\n"),
        failures.len()
    );
}
