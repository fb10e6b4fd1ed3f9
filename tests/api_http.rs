//! The synchronous HTTP API against a running worker (real Kafka and Redis): answers in request
//! order through the same batcher and model as the Kafka path, refuses bad input with JSON 4xx,
//! requires the bearer token when one is set, and answers many parallel requests correctly.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

// Texts the model labels with a wide margin: int8 dynamic quantisation scales activations per
// batch, so a borderline text's label can change with the batch it shares.
const ANGRY: &str = "I am furious, this is the worst service ever and I want a manager now!";
const GRATEFUL: &str = "Thank you so much, the refund arrived and you were great!";
const CONFUSED: &str = "I don't understand how to reset my password, where is the setting?";
const TEXTS: [&str; 3] = [ANGRY, GRATEFUL, CONFUSED];

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// POSTs `body` to the API; (status, parsed JSON body, `WWW-Authenticate`).
fn post(
    api: &str,
    route: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value, Option<String>) {
    let (url, route, key, body) = (
        format!("http://{api}{route}"),
        route.to_owned(),
        key.map(str::to_owned),
        body.to_owned(),
    );
    off_runtime(move || {
        let mut req = reqwest::blocking::Client::new()
            .post(url)
            .header("Content-Type", "application/json")
            .timeout(Duration::from_secs(120))
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("POST {route}: {e}"));
        let status = resp.status().as_u16();
        let auth = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().expect("a body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {route}: {status} answer is not JSON ({e}): {text}"));
        (status, json, auth)
    })
}

fn messages(prefix: &str, n: usize) -> serde_json::Value {
    serde_json::Value::Array(
        (0..n)
            .map(|i| {
                serde_json::json!({
                    "message_id": format!("{prefix}-{i}"),
                    "text": TEXTS[i % TEXTS.len()],
                })
            })
            .collect(),
    )
}

fn ids(answers: &serde_json::Value) -> Vec<String> {
    answers
        .as_array()
        .expect("an array")
        .iter()
        .map(|a| a["message_id"].as_str().expect("message_id").to_string())
        .collect()
}

fn primary(result: &serde_json::Value) -> String {
    result["primary_emotion"]
        .as_str()
        .expect("primary_emotion")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_kafka_share_the_batcher_and_model_and_answers_keep_request_order() {
    let topics = TestTopics::create("api-shared", 1, 2).await;
    let n = 30;
    let msgs: Vec<_> = (0..n)
        .map(|i| message("api-kafka", i, 5, TEXTS[i % TEXTS.len()]))
        .collect();
    produce_json(&topics.inputs[0], &msgs).await;
    let api = free_addr();
    let worker = Worker::start(
        &unique("api-shared-group"),
        &topics,
        &["--api-addr", &api, "--max-batch-size", "8"],
    );
    worker.wait_ready(Duration::from_secs(120));
    let kafka_out = read_all(&[&topics.emotions], n, Duration::from_secs(180));
    assert_eq!(kafka_out.len(), n, "the Kafka path runs beside the API");

    let batched_before = metric(&worker, "moodstream_batch_size_sum");
    let request = messages("api", 12);
    let (status, answers, _) = post(&api, "/v1/classify", None, &request.to_string());
    assert_eq!(status, 200, "{answers}");
    let expected: Vec<String> = (0..12).map(|i| format!("api-{i}")).collect();
    assert_eq!(ids(&answers), expected, "results in request order");
    let batched_after = metric(&worker, "moodstream_batch_size_sum");
    assert!(
        batched_after - batched_before >= 12.0,
        "the API's messages went through the batcher ({batched_before} → {batched_after})"
    );

    // The same model: each text's API result matches its Kafka result (up to the batch's
    // effect on int8 dynamic quantisation).
    for (i, answer) in answers.as_array().unwrap().iter().enumerate() {
        let text = TEXTS[i % TEXTS.len()];
        let kafka = kafka_out
            .iter()
            .map(Record::json)
            .find(|v| {
                let id = v["message_id"].as_str().unwrap();
                msgs.iter().any(|m| m.message_id == id && m.text == text)
            })
            .expect("a Kafka result for the same text");
        assert_eq!(primary(answer), primary(&kafka), "message {i}");
        for (label, score) in kafka["scores"].as_object().unwrap() {
            let api_score = answer["scores"][label].as_f64().unwrap();
            assert!(
                (api_score - score.as_f64().unwrap()).abs() < 0.05,
                "message {i} {label}: API {api_score} vs Kafka {score}"
            );
        }
        assert_eq!(answer["source_topic"], "http");
        assert_eq!(answer["source_offset"], i as i64);
    }
    // Distinct labels across the request, so an out-of-order answer could not pass.
    let labels: HashSet<String> = answers.as_array().unwrap().iter().map(primary).collect();
    assert!(
        labels.len() >= 2,
        "the texts get different labels: {labels:?}"
    );

    // /v1/draft: an emotion and a reply each, in order.
    let (status, drafted, _) = post(&api, "/v1/draft", None, &messages("d", 3).to_string());
    assert_eq!(status, 200, "{drafted}");
    for (i, d) in drafted.as_array().unwrap().iter().enumerate() {
        assert_eq!(d["emotion"]["message_id"], format!("d-{i}"));
        assert_eq!(d["reply"]["message_id"], format!("d-{i}"));
        assert!(d["reply"]["body"].as_str().is_some_and(|b| !b.is_empty()));
    }

    // API messages are answered, never published.
    let status = worker.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    let published = read_to_end(&[&topics.emotions], Duration::from_secs(60));
    assert_eq!(published.len(), n, "only the Kafka messages were published");
    assert!(published.iter().all(|r| r.json()["source_topic"] != "http"));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_refuses_bad_requests_with_json_errors_and_requires_the_bearer_token() {
    let topics = TestTopics::create("api-errors", 1, 1).await;
    let api = free_addr();
    let key_file = std::env::temp_dir().join(format!("{}.key", unique("api-key")));
    std::fs::write(&key_file, "s3cret-token\n").unwrap();
    let worker = Worker::start(
        &unique("api-errors-group"),
        &topics,
        &[
            "--api-addr",
            &api,
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--api-max-messages",
            "4",
            "--api-max-body-bytes",
            "4096",
            "--api-max-text-chars",
            "200",
        ],
    );
    worker.wait_ready(Duration::from_secs(120));
    let key = Some("s3cret-token");
    let good = messages("ok", 2).to_string();

    let (status, body, challenge) = post(&api, "/v1/classify", None, &good);
    assert_eq!((status, &body["error_type"]), (401, &"unauthorized".into()));
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let (status, _, _) = post(&api, "/v1/draft", Some("s3cret-tokeN"), &good);
    assert_eq!(status, 401, "a wrong token");
    let (status, body, _) = post(&api, "/v1/classify", key, &good);
    assert_eq!(status, 200, "{body}");

    let long_text = "x".repeat(201);
    let too_big_body = serde_json::json!([{ "text": "y".repeat(5000) }]).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "[{\"text\": ".into(), 400, "malformed"),
        (
            "not an array",
            r#"{"text": "hi"}"#.into(),
            422,
            "validation",
        ),
        ("no messages", "[]".into(), 422, "validation"),
        (
            "no text",
            r#"[{"message_id": "a"}]"#.into(),
            422,
            "validation",
        ),
        (
            "empty text",
            r#"[{"text": "  "}]"#.into(),
            422,
            "validation",
        ),
        (
            "text of the wrong type",
            r#"[{"text": 7}]"#.into(),
            422,
            "validation",
        ),
        (
            "too many messages",
            messages("m", 5).to_string(),
            413,
            "too_large",
        ),
        (
            "text too long",
            serde_json::json!([{ "text": "ok" }, { "text": long_text }]).to_string(),
            413,
            "too_large",
        ),
        ("body too large", too_big_body, 413, "too_large"),
    ];
    for (what, body, want_status, want_type) in cases {
        for route in ["/v1/classify", "/v1/draft"] {
            let (status, answer, _) = post(&api, route, key, &body);
            assert_eq!(status, want_status, "{what} on {route}: {answer}");
            assert_eq!(answer["error_type"], want_type, "{what} on {route}");
            assert!(
                answer["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: says why"
            );
        }
    }
    let (_, answer, _) = post(
        &api,
        "/v1/classify",
        key,
        &serde_json::json!([{ "text": "ok" }, { "text": "x".repeat(201) }]).to_string(),
    );
    assert!(
        answer["error"].as_str().unwrap().contains("message 1"),
        "names the offending message: {answer}"
    );

    // The OpenAPI document is open, parses, and lists both routes.
    let url = format!("http://{api}/openapi.json");
    let doc = off_runtime(move || {
        reqwest::blocking::get(url)
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
    })
    .expect("/openapi.json answers without a token");
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("OpenAPI is JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for route in ["/v1/classify", "/v1/draft"] {
        assert!(doc["paths"][route]["post"].is_object(), "lists {route}");
    }

    // Counted by route and status.
    assert!(
        metric(
            &worker,
            r#"moodstream_api_requests_total{route="/v1/classify",status="401"}"#
        ) >= 1.0
    );
    assert!(
        metric(
            &worker,
            r#"moodstream_api_requests_total{route="/v1/classify",status="413"}"#
        ) >= 3.0
    );
    assert!(metric(&worker, "moodstream_api_request_seconds_count") >= 20.0);
    let _ = std::fs::remove_file(key_file);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_answers_many_parallel_requests_each_in_its_own_order() {
    let topics = TestTopics::create("api-parallel", 1, 1).await;
    let api = free_addr();
    let worker = Worker::start(
        &unique("api-parallel-group"),
        &topics,
        &["--api-addr", &api, "--max-batch-size", "16"],
    );
    worker.wait_ready(Duration::from_secs(120));
    // Each text's label alone, to check every parallel answer against.
    let (status, alone, _) = post(
        &api,
        "/v1/classify",
        None,
        &messages("alone", 3).to_string(),
    );
    assert_eq!(status, 200);
    let labels: Vec<String> = alone.as_array().unwrap().iter().map(primary).collect();

    let clients: Vec<_> = (0..24)
        .map(|c| {
            let (api, labels) = (api.clone(), labels.clone());
            std::thread::spawn(move || {
                for r in 0..4 {
                    // Each request starts at a different text, so answers from another request
                    // or in another order would not match.
                    let n = 1 + (c + r) % 5;
                    let prefix = format!("c{c}-r{r}");
                    let request: Vec<_> = (0..n)
                        .map(|i| {
                            let t = (c + i) % TEXTS.len();
                            serde_json::json!({"message_id": format!("{prefix}-{i}"), "text": TEXTS[t]})
                        })
                        .collect();
                    let body = serde_json::Value::Array(request).to_string();
                    let (status, answers, _) = post(&api, "/v1/classify", None, &body);
                    assert_eq!(status, 200, "{answers}");
                    let want: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
                    assert_eq!(ids(&answers), want);
                    for (i, a) in answers.as_array().unwrap().iter().enumerate() {
                        assert_eq!(primary(a), labels[(c + i) % TEXTS.len()], "{prefix}-{i}");
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every parallel request answered correctly");
    }
    assert!(
        metric(
            &worker,
            r#"moodstream_api_requests_total{route="/v1/classify",status="200"}"#
        ) >= 97.0
    );
}
