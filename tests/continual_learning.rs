//! The continual-learning loop end to end on the real broker: agents' feedback events in →
//! `moodstream feedback export` (masked) → `models/train/run.sh --feedback … --tiny` (a small
//! CPU retrain from the running model, proving the path, not the quality) → the evaluation gate's
//! report → the running worker switches to the new model version with no lost or duplicated
//! outputs and no rebalance.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use moodstream::config::Format;
use moodstream::console::feedback::{Action, FeedbackEvent, encode};
use moodstream::feedback::export::example_id;
use moodstream::message::CustomerMessage;
use moodstream::schema::SchemaRegistry;

/// Customer messages and the label an agent gives them; some carry personal data the export
/// must mask.
const LABELLED: [(&str, &str); 24] = [
    (
        "This is the third time my order is late. I am furious, cancel everything now!",
        "anger",
    ),
    ("你们这是什么服务！三次了还没给我退款，气死我了！", "anger"),
    (
        "Unacceptable. You charged me twice and nobody answers. Email me at alex.chen@example.com right now.",
        "anger",
    ),
    (
        "再不处理我就投诉到消费者协会，电话13800138000，马上给我回电！",
        "anger",
    ),
    (
        "I've been on hold for an hour, this is so annoying.",
        "frustration",
    ),
    ("等了一个小时客服还没回复，真的很烦", "frustration"),
    (
        "The app keeps logging me out every five minutes, it's driving me crazy",
        "frustration",
    ),
    ("又要我重新填一遍表格？烦死了", "frustration"),
    (
        "Honestly disappointed, the jacket looks nothing like the photos.",
        "disappointment",
    ),
    ("有点失望，收到的杯子和图片完全不一样", "disappointment"),
    (
        "I expected better from you, the gift arrived a week after the birthday.",
        "disappointment",
    ),
    (
        "I'm worried my card 4111 1111 1111 1111 was charged twice, please help asap",
        "anxiety",
    ),
    ("我很担心我的账户被盗了，能帮我查一下吗？", "anxiety"),
    (
        "Will my parcel arrive before I fly out on Friday? I'm really nervous.",
        "anxiety",
    ),
    (
        "I don't understand the return process, do I ship it first or request a label?",
        "confusion",
    ),
    (
        "我不太明白这个退货流程，需要先寄回还是先申请？",
        "confusion",
    ),
    (
        "Which plan am I on? The invoice says Pro but the app says Basic.",
        "confusion",
    ),
    (
        "Thank you so much, the replacement arrived and works perfectly.",
        "gratitude",
    ),
    ("太感谢了，问题解决了！", "gratitude"),
    ("Thanks Jamie, you were really helpful today.", "gratitude"),
    (
        "Great, the refund for order #A12345678 came through. All good now.",
        "satisfaction",
    ),
    ("收到了，质量很好，很满意", "satisfaction"),
    ("Can you tell me your opening hours on Sunday?", "neutral"),
    ("请问周日营业吗？", "neutral"),
];

fn customer(prefix: &str, i: usize, text: &str) -> CustomerMessage {
    let mut m = message(prefix, i, 8, text);
    m.customer_name = Some("Jamie".into());
    m
}

/// Steady traffic for the switch: one message per call, ids `<prefix>-m<i>`.
fn traffic(prefix: &str, from: usize, n: usize) -> Vec<CustomerMessage> {
    const TEXTS: [&str; 3] = [
        "Where is my order? It was due yesterday.",
        "我的快递三天了还没到，太让人生气了",
        "Thanks a lot, that solved it!",
    ];
    (from..from + n)
        .map(|i| message(prefix, i, 12, TEXTS[i % TEXTS.len()]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_feedback_retrains_a_gated_model_that_the_running_worker_switches_to() {
    let topics = TestTopics::create("learn", 1, 3).await;
    let input = topics.inputs[0].clone();
    let feedback_topic = unique("learn-feedback");
    create_topics(&[(feedback_topic.as_str(), 1)]).await;
    let root = tempfile::tempdir().expect("temp dir");
    let live = model_copy(root.path(), "live", None);
    let current = root.path().join("current");
    point_symlink(&current, &live);
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);

    let group = unique("learn-group");
    let worker = Worker::start(
        &group,
        &topics,
        &[
            "--model-dir",
            current.to_str().unwrap(),
            "--reload-poll-secs",
            "1",
        ],
    );
    worker.wait_ready(Duration::from_secs(120));

    // 1. Customers write; the worker labels them with the shipped model.
    let labelled: Vec<CustomerMessage> = LABELLED
        .iter()
        .enumerate()
        .map(|(i, (text, _))| customer("learn", i, text))
        .collect();
    produce_json(&input, &labelled).await;
    let results = read_all(
        &[&topics.emotions],
        labelled.len(),
        Duration::from_secs(180),
    );
    assert_eq!(results.len(), labelled.len());
    let shipped_version = results[0].json()["model_version"]
        .as_str()
        .expect("model_version")
        .to_string();
    let predicted: HashMap<String, String> = results
        .iter()
        .map(|r| {
            let v = r.json();
            (
                v["message_id"].as_str().unwrap().to_string(),
                v["primary_emotion"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    // 2. Agents act in the console: a relabel where the model was wrong, an accept where it was
    //    right, and a retried send of one action (same event id).
    let now = jiff::Timestamp::now().as_millisecond();
    let mut events: Vec<FeedbackEvent> = labelled
        .iter()
        .zip(LABELLED)
        .enumerate()
        .map(|(i, (m, (_, label)))| {
            let seen = predicted[&m.message_id].clone();
            let (action, corrected) = if seen == label {
                (Action::Accept, None)
            } else {
                (Action::Relabel, Some(label.to_string()))
            };
            FeedbackEvent {
                event_id: uuid::Uuid::new_v4().to_string(),
                action,
                message_id: m.message_id.clone(),
                draft_id: None,
                conversation_id: m.conversation_id.clone(),
                tenant_id: m.tenant_id.clone(),
                channel: m.channel.clone(),
                model_version: shipped_version.clone(),
                predicted_label: seen,
                template_id: None,
                edited_text: None,
                corrected_label: corrected,
                agent_id: format!("agent-{}", i % 3),
                created_at: now + i as i64,
            }
        })
        .collect();
    events.push(events[0].clone());
    let registry = SchemaRegistry::local(&repo().join("schemas")).expect("registry.json");
    let records: Vec<RawRecord> = events
        .iter()
        .map(|e| {
            (
                e.conversation_id.clone(),
                encode(e, Format::Avro, &registry, &feedback_topic).expect("encodes"),
                vec![],
            )
        })
        .collect();
    produce_raw(&feedback_topic, &records).await;

    // 3. Export: one masked example per message.
    let examples = root.path().join("feedback.jsonl");
    let started = started.to_string();
    let (text, lines) = feedback_export(
        &[
            "--feedback-topic",
            &feedback_topic,
            "--input-topic",
            &input,
            "--from",
            &started,
        ],
        &examples,
    );
    assert_eq!(lines.len(), LABELLED.len(), "one example per message");
    for secret in [
        "alex.chen@example.com",
        "13800138000",
        "4111 1111 1111 1111",
        "A12345678",
        "Jamie",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the export");
    }
    let by_example: HashMap<String, &serde_json::Value> = lines
        .iter()
        .map(|l| (l["example_id"].as_str().unwrap().to_string(), l))
        .collect();
    for (m, (_, label)) in labelled.iter().zip(LABELLED) {
        let line = by_example[&example_id(&m.message_id)];
        assert_eq!(line["label"], label, "{line}");
    }

    // 4. A tiny retrain from the live model, and its gate report.
    let candidate = root.path().join("candidate");
    let train = Command::new(repo().join("models/train/run.sh"))
        .arg("--feedback")
        .arg(&examples)
        .arg("--out")
        .arg(&candidate)
        .arg("--base-model")
        .arg(&live)
        .arg("--tiny")
        .output()
        .expect("run models/train/run.sh");
    let gate_md = std::fs::read_to_string(candidate.join("gate.md")).unwrap_or_default();
    assert!(
        train.status.success(),
        "retrain or gate failed ({:?}): {}\n{gate_md}",
        train.status.code(),
        String::from_utf8_lossy(&train.stderr)
    );
    let gate: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(candidate.join("gate.json")).expect("gate.json"),
    )
    .expect("gate.json is JSON");
    assert_eq!(gate["passed"], true, "{gate_md}");
    assert!(!gate_md.is_empty(), "the gate writes a markdown report too");
    let labels: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(candidate.join("labels.json")).expect("labels.json"),
    )
    .expect("labels.json is JSON");
    let new_version = labels["model_version"]
        .as_str()
        .expect("model_version")
        .to_string();
    assert_ne!(new_version, shipped_version, "a retrain is a new version");
    assert!(new_version.starts_with(&shipped_version), "{new_version}");

    // 5. Promote it while traffic flows: the worker switches between messages.
    let rebalances = metric(&worker, "moodstream_rebalances_total");
    let before = traffic("learn-t", 0, 90);
    produce_json(&input, &before).await;
    point_symlink(&current, &candidate);
    let during = traffic("learn-t", 90, 90);
    produce_json(&input, &during).await;
    let ready = worker.wait_readyz(|b| b.contains(&new_version));
    assert!(ready.contains(&format!("model: {new_version}")), "{ready}");
    let after = traffic("learn-t", 180, 60);
    produce_json(&input, &after).await;

    let versions = one_result_each(
        &topics.emotions,
        labelled.iter().chain(&before).chain(&during).chain(&after),
    );
    for m in &after {
        assert_eq!(versions[&m.message_id], new_version, "after the switch");
    }
    assert!(
        during
            .iter()
            .chain(&before)
            .all(|m| versions[&m.message_id] == shipped_version
                || versions[&m.message_id] == new_version)
    );
    assert_eq!(
        metric(&worker, "moodstream_rebalances_total"),
        rebalances,
        "no rebalance"
    );
    assert!(worker.terminate().success());
}
