//! `moodstream feedback export` against a real broker: customer messages (with an e-mail, a
//! phone, a card, an order number and the customer's name in them) and console feedback events
//! (Avro, as the console writes them) on fresh topics; the binary's exact JSONL lines and
//! summary for relabels, accepts, a reject, a retried event, two agents in conflict, an agent
//! changing their mind, feedback on a message that is not on the input topic and an unknown
//! label. Incremental `--group` runs export nothing twice; `--from`/`--to` select by broker time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use moodstream::config::Format;
use moodstream::console::feedback::{Action, FeedbackEvent, encode};
use moodstream::feedback::export::example_id;
use moodstream::message::CustomerMessage;
use moodstream::schema::SchemaRegistry;

/// 2026-01-01T00:00:00Z: feedback times are fixed so the lines are exact.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

fn input(
    id: &str,
    channel: &str,
    tenant: Option<&str>,
    name: Option<&str>,
    text: &str,
) -> CustomerMessage {
    CustomerMessage {
        message_id: id.into(),
        conversation_id: format!("{id}-conv"),
        customer_id: format!("{id}-cust"),
        tenant_id: tenant.map(String::from),
        channel: channel.into(),
        text: text.into(),
        subject: None,
        language: None,
        sent_at: T0,
        customer_name: name.map(String::from),
        metadata: Default::default(),
    }
}

struct Feedback {
    run: String,
}

impl Feedback {
    /// An event as the console builds it (`console::feedback::build`'s fields).
    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        event: &str,
        message: &str,
        agent: &str,
        action: Action,
        label: Option<&str>,
        minutes: i64,
        tenant: Option<&str>,
        channel: &str,
        predicted: &str,
    ) -> FeedbackEvent {
        FeedbackEvent {
            event_id: format!("{}-{event}", self.run),
            action,
            message_id: format!("{}-{message}", self.run),
            draft_id: Some("d1".into()),
            conversation_id: format!("{}-{message}-conv", self.run),
            tenant_id: tenant.map(String::from),
            channel: channel.into(),
            model_version: "emotion-v3".into(),
            predicted_label: predicted.into(),
            template_id: Some("default/en/chat/de_escalate".into()),
            edited_text: (action == Action::EditSend).then(|| "Sorry, Dana, refund sent".into()),
            corrected_label: label.map(String::from),
            agent_id: agent.into(),
            created_at: T0 + minutes * MINUTE,
        }
    }

    fn id(&self, message: &str) -> String {
        example_id(&format!("{}-{message}", self.run))
    }
}

async fn produce_events(topic: &str, events: &[FeedbackEvent]) {
    let registry = SchemaRegistry::local(&repo().join("schemas")).expect("registry.json");
    let records: Vec<RawRecord> = events
        .iter()
        .map(|e| {
            (
                e.conversation_id.clone(),
                encode(e, Format::Avro, &registry, topic).expect("encodes"),
                vec![],
            )
        })
        .collect();
    produce_raw(topic, &records).await;
}

/// The binary under test (`MOODSTREAM_TEST_BIN`: a copy, when checkouts share a target dir).
fn bin() -> String {
    std::env::var("MOODSTREAM_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_moodstream").to_string())
}

fn export(
    feedback: &str,
    inputs: &str,
    out: &str,
    summary: Option<&Path>,
    range: &[&str],
) -> Output {
    let mut cmd = Command::new(bin());
    cmd.current_dir(repo())
        .args(["feedback", "export", "--brokers", &brokers()])
        .args(["--feedback-topic", feedback, "--input-topic", inputs])
        .args(["--out", out])
        .args(range)
        .env("RUST_LOG", "warn");
    if let Some(path) = summary {
        cmd.arg("--summary").arg(path);
    }
    let output = cmd.output().expect("run moodstream feedback export");
    assert!(
        output.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("output written")
        .lines()
        .map(String::from)
        .collect()
}

fn stderr_summary(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().expect("a summary on stderr");
    serde_json::from_str(last).expect("the summary is JSON")
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(unique(name))
}

#[tokio::test]
async fn exports_masked_examples_by_the_label_rule_and_increments_by_group() {
    let run = unique("fbx");
    let f = Feedback { run: run.clone() };
    let inputs = unique("fbx-in");
    let feedback = unique("fbx-feedback");
    create_topics(&[(inputs.as_str(), 2), (feedback.as_str(), 2)]).await;
    let t_start = jiff::Timestamp::now();

    let m = |id: &str| format!("{run}-{id}");
    let messages = [
        input(
            &m("m1"),
            "chat",
            Some("acme"),
            Some("Dana Kim"),
            "Hi, this is Dana. Email dana.k@example.com or call +44 20 7946 0958, my card \
             4111 1111 1111 1111 was charged twice for order #A10023.",
        ),
        input(
            &m("m2"),
            "email",
            None,
            Some("王芳"),
            "我叫王芳，订单号 20240501123 还没到，电话13800138000",
        ),
        input(&m("m3"), "chat", Some("acme"), None, "ok whatever"),
        input(&m("m4"), "chat", Some("acme"), None, "Why is this so hard?"),
        input(
            &m("m5"),
            "chat",
            Some("acme"),
            None,
            "I have waited 3 days for a refund of $20, this is the second time",
        ),
        input(&m("m7"), "chat", Some("acme"), None, "meh"),
        input(
            &m("m8"),
            "sms",
            Some("acme"),
            Some("Li Lei"),
            "Thanks a lot, Li Lei here",
        ),
    ];
    produce_json(&inputs, &messages).await;
    produce_raw(&inputs, &[("k".into(), b"{not a message".to_vec(), vec![])]).await;

    use Action::*;
    let chat = |event, message, agent, action, label, minutes| {
        f.event(
            event,
            message,
            agent,
            action,
            label,
            minutes,
            Some("acme"),
            "chat",
            "neutral",
        )
    };
    let alice_m1 = chat("e1", "m1", "alice", Relabel, Some("anger"), 1);
    let batch1 = vec![
        alice_m1.clone(),
        // The console's retry of the same action: one event.
        alice_m1,
        // A relabel by anyone beats accepts.
        chat("e1b", "m1", "bob", Accept, None, 1),
        f.event("e2", "m2", "bob", Accept, None, 2, None, "email", "anxiety"),
        chat("e3", "m3", "alice", Reject, None, 3),
        // Two agents, two labels, one vote each: conflict.
        chat("e4a", "m4", "alice", Relabel, Some("anger"), 4),
        chat("e4b", "m4", "bob", Relabel, Some("frustration"), 5),
        // Carol changes her mind: only her last label counts.
        chat("e5a", "m5", "carol", Relabel, Some("anger"), 6),
        chat("e5b", "m5", "carol", Relabel, Some("disappointment"), 7),
        // Feedback on a message that is on no input topic.
        chat("e6", "m6", "bob", Accept, None, 8),
        chat("e7", "m7", "bob", Relabel, Some("furious"), 9),
    ];
    produce_events(&feedback, &batch1).await;
    produce_raw(&feedback, &[("k".into(), b"garbage".to_vec(), vec![])]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t_mid = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let expected1 = vec![
        format!(
            r#"{{"example_id":"{}","text":"Hi, this is <NAME>. Email <EMAIL> or call <PHONE>, my card <CARD> was charged twice for order #<ORDER>.","label":"anger","label_source":"relabel","agents":1,"language":"en","channel":"chat","tenant_id":"acme","model_version":"emotion-v3","predicted_label":"neutral","feedback_at":"2026-01-01T00:01:00Z"}}"#,
            f.id("m1")
        ),
        format!(
            r#"{{"example_id":"{}","text":"我叫<NAME>，订单号 <ORDER> 还没到，电话<PHONE>","label":"anxiety","label_source":"accepted","agents":1,"language":"zh","channel":"email","tenant_id":null,"model_version":"emotion-v3","predicted_label":"anxiety","feedback_at":"2026-01-01T00:02:00Z"}}"#,
            f.id("m2")
        ),
        format!(
            r#"{{"example_id":"{}","text":"I have waited 3 days for a refund of $20, this is the second time","label":"disappointment","label_source":"relabel","agents":1,"language":"en","channel":"chat","tenant_id":"acme","model_version":"emotion-v3","predicted_label":"neutral","feedback_at":"2026-01-01T00:07:00Z"}}"#,
            f.id("m5")
        ),
    ];

    // 1. The first incremental export reads everything.
    let group = unique("fbx-group");
    let out = tmp("fbx-out.jsonl");
    let summary_file = tmp("fbx-summary.json");
    let first = export(
        &feedback,
        &inputs,
        out.to_str().unwrap(),
        Some(&summary_file),
        &["--group", &group],
    );
    assert_eq!(lines(&out), expected1);
    let summary = stderr_summary(&first);
    assert_eq!(
        summary,
        serde_json::json!({
            "events_read": 12, "events_undecodable": 1, "duplicates": 1, "rejects": 1,
            "messages": 7, "exported": 3,
            "exported_by_label_source": {"relabel": 2, "accepted": 1},
            "dropped": {"conflict": 1, "invalid": 1, "rejected": 1, "no_text": 1},
            "per_language": {"en": 2, "zh": 1},
            "input_records_scanned": 8, "input_records_undecodable": 1,
            "committed": true
        })
    );
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_file).unwrap()).unwrap();
    assert_eq!(from_file, summary);
    // Nothing personal in the output or on stderr: no ids, agents, edited text or raw PII.
    let written = std::fs::read_to_string(&out).unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr).to_string();
    for secret in [
        run.as_str(),
        "alice",
        "bob",
        "carol",
        "Dana",
        "dana.k@",
        "7946",
        "4111",
        "A10023",
        "王芳",
        "13800138000",
        "20240501123",
        "Sorry",
    ] {
        assert!(!written.contains(secret), "{secret} in the export");
        assert!(!stderr.contains(secret), "{secret} on stderr");
    }
    let (committed, ends) = committed_and_end(&group, &feedback);
    assert_eq!(
        committed, ends,
        "the group's offsets are committed to the end read"
    );

    // 2. Again: nothing new, an empty file, offsets unchanged.
    let second = export(
        &feedback,
        &inputs,
        out.to_str().unwrap(),
        None,
        &["--group", &group],
    );
    assert_eq!(lines(&out), Vec::<String>::new());
    let summary = stderr_summary(&second);
    assert_eq!(
        (
            summary["events_read"].as_u64(),
            summary["exported"].as_u64()
        ),
        (Some(0), Some(0))
    );

    // 3. More feedback: the next run exports only it (to stdout this time).
    let dave = f.event(
        "e8",
        "m8",
        "dave",
        Relabel,
        Some("gratitude"),
        10,
        Some("acme"),
        "sms",
        "neutral",
    );
    produce_events(&feedback, &[dave]).await;
    let expected8 = format!(
        r#"{{"example_id":"{}","text":"Thanks a lot, <NAME> here","label":"gratitude","label_source":"relabel","agents":1,"language":"en","channel":"sms","tenant_id":"acme","model_version":"emotion-v3","predicted_label":"neutral","feedback_at":"2026-01-01T00:10:00Z"}}"#,
        f.id("m8")
    );
    let third = export(&feedback, &inputs, "-", None, &["--group", &group]);
    let stdout: Vec<String> = String::from_utf8(third.stdout.clone())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(stdout, vec![expected8.clone()]);
    assert_eq!(stderr_summary(&third)["events_read"].as_u64(), Some(1));

    // 4. By broker time: [start, mid) is the first batch; from start on, everything.
    let window = tmp("fbx-window.jsonl");
    let (from, mid) = (t_start.to_string(), t_mid.to_string());
    export(
        &feedback,
        &inputs,
        window.to_str().unwrap(),
        None,
        &["--from", &from, "--to", &mid],
    );
    assert_eq!(lines(&window), expected1);
    export(
        &feedback,
        &inputs,
        window.to_str().unwrap(),
        None,
        &["--from", &from],
    );
    let mut all = expected1.clone();
    all.push(expected8);
    assert_eq!(lines(&window), all);
    let (committed_after, _) = committed_and_end(&group, &feedback);
    let total: i64 = committed_after.iter().sum();
    assert_eq!(
        total,
        ends.iter().sum::<i64>() + 1,
        "--from runs commit nothing"
    );

    for path in [&out, &summary_file, &window] {
        let _ = std::fs::remove_file(path);
    }
}

#[tokio::test]
async fn a_failed_export_leaves_no_file_and_commits_nothing() {
    let feedback = unique("fbx-feedback");
    create_topics(&[(feedback.as_str(), 1)]).await;
    let f = Feedback { run: unique("fbx") };
    produce_events(
        &feedback,
        &[f.event(
            "e1",
            "m1",
            "a",
            Action::Accept,
            None,
            1,
            None,
            "chat",
            "anger",
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let group = unique("fbx-group");
    // The input topic does not exist: the join cannot be made, so the export fails.
    let output = Command::new(bin())
        .current_dir(repo())
        .args(["feedback", "export", "--brokers", &brokers()])
        .args([
            "--feedback-topic",
            &feedback,
            "--input-topic",
            &unique("fbx-missing"),
        ])
        .args(["--group", &group, "--timeout-ms", "5000"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file, no temporary"
    );
    let (committed, _) = committed_and_end(&group, &feedback);
    assert_eq!(committed, vec![0]);
}
