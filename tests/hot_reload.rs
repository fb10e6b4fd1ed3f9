//! Hot reload and shadow mode on the real broker: the worker switches model versions between
//! messages with no lost or duplicated output and no rebalance; a model that fails its checks
//! leaves the live one in place and says so; a shadow candidate is compared, never published.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TEXTS: [&str; 4] = [
    "Where is my order? It was due yesterday.",
    "我的快递三天了还没到，太让人生气了",
    "Thanks a lot, that solved it!",
    "我的order还没到，tracking一直不更新",
];

fn post(worker: &Worker, path: &str) -> (u16, String) {
    let url = format!("http://{}{}", worker.http, path);
    off_runtime(move || {
        let resp = reqwest::blocking::Client::new()
            .post(url)
            .send()
            .expect("POST answers");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    })
}

fn messages(prefix: &str, from: usize, n: usize) -> Vec<moodstream::message::CustomerMessage> {
    (from..from + n)
        .map(|i| message(prefix, i, 12, TEXTS[i % TEXTS.len()]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn switches_model_between_messages_without_loss_duplicates_or_rebalance() {
    let topics = TestTopics::create("reload", 1, 3).await;
    let input = &topics.inputs[0];
    let root = tempfile::tempdir().expect("temp dir");
    let v1 = model_copy(root.path(), "v1", Some("reload-test-v1"));
    let v2 = model_copy(root.path(), "v2", Some("reload-test-v2"));
    let current = root.path().join("current");
    point_symlink(&current, &v1);
    let thresholds = root.path().join("thresholds.yaml");
    std::fs::write(&thresholds, "surge_z_threshold: 3.0\n").expect("write thresholds");

    let group = unique("reload-group");
    let worker = Worker::start(
        &group,
        &topics,
        &[
            "--model-dir",
            current.to_str().unwrap(),
            "--reload-poll-secs",
            "1",
            "--escalation-thresholds",
            thresholds.to_str().unwrap(),
        ],
    );
    worker.wait_ready(Duration::from_secs(120));
    let body = worker.get("/readyz").expect("readyz").1;
    assert!(
        body.contains("model: reload-test-v1 (generation 1)"),
        "{body}"
    );

    // 1. Before the switch: every output is v1's.
    let first = messages("reload", 0, 120);
    produce_json(input, &first).await;
    let got = read_all(&[&topics.emotions], first.len(), Duration::from_secs(180));
    assert_eq!(got.len(), first.len());
    let rebalances = metric(&worker, "moodstream_rebalances_total");

    // 2. The deployment points the directory at v2 while messages keep coming.
    point_symlink(&current, &v2);
    let during = messages("reload", 120, 120);
    produce_json(input, &during).await;
    let body = worker.wait_readyz(|b| b.contains("reload-test-v2"));
    assert!(
        body.contains("model: reload-test-v2 (generation 2)"),
        "{body}"
    );
    // 3. Everything consumed from now on is tokenized and scored by v2.
    let after = messages("reload", 240, 60);
    produce_json(input, &after).await;

    let versions = one_result_each(&topics.emotions, first.iter().chain(&during).chain(&after));
    let total = versions.len();
    for m in &first {
        assert_eq!(versions[&m.message_id], "reload-test-v1");
    }
    for m in &after {
        assert_eq!(versions[&m.message_id], "reload-test-v2");
    }
    for m in &during {
        let v = &versions[&m.message_id];
        assert!(v == "reload-test-v1" || v == "reload-test-v2", "{v}");
    }
    // Drafts name the version of the emotion result they answer.
    let reply_topics: Vec<String> = ["chat", "email", "sms"]
        .iter()
        .map(|c| topics.reply_topic(c))
        .collect();
    let drafts = read_to_end(&reply_topics, Duration::from_secs(60));
    assert_eq!(drafts.len(), total, "one draft per message");
    for d in &drafts {
        let v = d.json();
        let id = v["message_id"].as_str().unwrap();
        assert_eq!(v["model_version"].as_str(), Some(versions[id].as_str()));
    }
    assert_eq!(
        metric(&worker, "moodstream_rebalances_total"),
        rebalances,
        "the consumer kept its partitions"
    );
    assert_eq!(
        metric(
            &worker,
            "moodstream_reloads_total{outcome=\"loaded\",part=\"model\"}"
        ),
        1.0
    );

    // 4. A copy in progress (a file that no longer matches SHA256SUMS) is refused; v2 stays.
    let torn = model_copy(root.path(), "torn", Some("reload-test-torn"));
    std::fs::write(torn.join("model.int8.onnx"), b"not a model").expect("truncate");
    point_symlink(&current, &torn);
    let (status, report) = post(&worker, "/admin/reload");
    assert_eq!(status, 500, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    assert_eq!(report["model"]["outcome"], "failed");
    assert!(
        report["model"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not match SHA256SUMS")),
        "{report}"
    );
    assert_eq!(report["model_version"], "reload-test-v2");
    let body = worker.get("/readyz").expect("readyz");
    assert_eq!(
        body.0, 200,
        "still ready: the previous model labels every message"
    );
    assert!(
        body.1.contains("last reload failed") && body.1.contains("reload-test-v2"),
        "{}",
        body.1
    );

    // 5. A candidate the evaluation gate refused is not loaded either (SIGHUP this time).
    let refused = model_copy(root.path(), "refused", Some("reload-test-refused"));
    std::fs::write(
        refused.join("gate.json"),
        r#"{"passed": false, "reasons": ["zh macro-F1 fell by 0.06 (tolerance 0.02)"]}"#,
    )
    .expect("write gate.json");
    point_symlink(&current, &refused);
    let failed_before = metric(
        &worker,
        "moodstream_reloads_total{outcome=\"failed\",part=\"model\"}",
    );
    signal(worker.pid(), "HUP");
    let body = worker.wait_readyz(|b| b.contains("evaluation gate refused"));
    assert!(body.contains("zh macro-F1 fell"), "{body}");
    assert!(
        metric(
            &worker,
            "moodstream_reloads_total{outcome=\"failed\",part=\"model\"}"
        ) > failed_before
    );

    // 6. Thresholds: an invalid file is refused, a valid one is taken, both without a restart.
    std::fs::write(&thresholds, "negativity_threshold: 7\n").expect("write thresholds");
    let (status, report) = post(&worker, "/admin/reload");
    assert_eq!(status, 500, "{report}");
    assert!(
        report.contains("\"thresholds\":{\"outcome\":\"failed\""),
        "{report}"
    );
    std::fs::write(&thresholds, "negativity_threshold: 0.7\n").expect("write thresholds");
    point_symlink(&current, &v2);
    let (status, report) = post(&worker, "/admin/reload");
    assert_eq!(status, 200, "{report}");
    // Loaded by this request, or by the file watch just before it.
    assert_eq!(
        metric(
            &worker,
            "moodstream_reloads_total{outcome=\"loaded\",part=\"thresholds\"}"
        ),
        1.0,
        "{report}"
    );
    let body = worker.get("/readyz").expect("readyz").1;
    assert!(!body.contains("last reload failed"), "{body}");

    // Still v2, still one output per message.
    let last = messages("reload", 300, 30);
    produce_json(input, &last).await;
    let versions = one_result_each(
        &topics.emotions,
        first.iter().chain(&during).chain(&after).chain(&last),
    );
    for m in &last {
        assert_eq!(versions[&m.message_id], "reload-test-v2");
    }
    assert_eq!(
        metric(&worker, "moodstream_rebalances_total"),
        rebalances,
        "no rebalance through failed reloads either"
    );
    assert!(worker.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_candidate_is_compared_and_never_published() {
    let topics = TestTopics::create("shadow", 1, 2).await;
    let root = tempfile::tempdir().expect("temp dir");
    // The same weights under another name. Not quite total agreement: the int8 graph quantizes
    // activations per batch (DynamicQuantizeLinear), and the candidate's batches differ from the
    // live model's, so a message near a decision boundary may flip.
    let candidate = model_copy(root.path(), "candidate", Some("shadow-candidate"));
    let group = unique("shadow-group");
    let worker = Worker::start(
        &group,
        &topics,
        &[
            "--shadow-model-dir",
            candidate.to_str().unwrap(),
            "--shadow-sample-rate",
            "1",
        ],
    );
    worker.wait_ready(Duration::from_secs(120));
    let msgs = messages("shadow", 0, 40);
    produce_json(&topics.inputs[0], &msgs).await;
    let got = read_all(&[&topics.emotions], msgs.len(), Duration::from_secs(180));
    assert_eq!(got.len(), msgs.len());
    assert!(
        got.iter()
            .all(|r| r.json()["model_version"] != "shadow-candidate"),
        "only the live model's results are published"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&worker, "moodstream_shadow_compared_total") < msgs.len() as f64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&worker, "moodstream_shadow_compared_total"),
        msgs.len() as f64
    );
    let agreed = metric(&worker, "moodstream_shadow_agreed_total");
    assert!(
        agreed >= 0.85 * msgs.len() as f64,
        "the same weights agree on almost every message: {agreed} of {}",
        msgs.len()
    );
    let confusion = metric(&worker, "moodstream_shadow_labels_total");
    assert_eq!(
        confusion,
        msgs.len() as f64,
        "one confusion cell per comparison"
    );
    assert_eq!(
        metric(
            &worker,
            "moodstream_model_info{model_version=\"shadow-candidate\",role=\"shadow\"}"
        ),
        1.0
    );
    assert!(worker.terminate().success());
}
