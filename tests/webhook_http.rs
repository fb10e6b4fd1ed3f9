//! The escalation webhook against a real HTTP server (a tiny one in this test: the receiving
//! end, standing in for Slack or PagerDuty), with the real binary, broker and Redis.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A conversation that turns angry turn by turn (the demo's escalating conversation).
const ESCALATING: [&str; 5] = [
    "Hi, my order 4711 was supposed to arrive on Monday. Any update?",
    "It's Wednesday now and the tracking still hasn't moved. Annoying.",
    "I've asked twice already. This is really frustrating, nobody tells me anything.",
    "This is ridiculous. I want my money back now.",
    "I am absolutely furious! Worst service ever, I'm reporting you and cancelling everything!",
];

/// One received request: its path and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// Answers the first request with 500 and every later one with 200, recording each.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hooks/escalations",
        listener.local_addr().unwrap()
    );
    let received: Received = Arc::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
            let first = {
                let mut log = log.lock().unwrap();
                log.push((path, String::from_utf8_lossy(&body).into_owned()));
                log.len() == 1
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            );
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_webhook_retries_after_a_500_and_carries_no_customer_data() {
    let (url, received) = receiver();
    let topics = TestTopics::create("webhook", 1, 1).await;
    let input = &topics.inputs[0];
    let msgs: Vec<_> = ESCALATING
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut m = message("webhook", i, 1, text);
            m.channel = "chat".into();
            m
        })
        .collect();
    produce_json(input, &msgs).await;
    let group = unique("webhook-group");
    let worker = Worker::start(
        &group,
        &topics,
        &[
            "--escalation-webhook-url",
            &url,
            "--escalation-webhook-format",
            "slack",
            "--escalation-webhook-backoff-ms",
            "100",
        ],
    );

    // Safety net, not a timing assertion: the 500, then the retry.
    let deadline = Instant::now() + Duration::from_secs(180);
    while received.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook was called {} time(s), expected a failed POST and its retry",
            received.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = read_all(&[&topics.escalations], 1, Duration::from_secs(60));
    assert!(!events.is_empty(), "the escalation is on its topic");
    let escalation_ids: Vec<String> = events
        .iter()
        .map(|r| r.json()["escalation_id"].as_str().unwrap().to_string())
        .collect();

    let calls = received.lock().unwrap().clone();
    let (first, retry) = (&calls[0], &calls[1]);
    assert_eq!(first.0, "/hooks/escalations");
    assert_eq!(first, retry, "the retry sends the same notification");
    let body: serde_json::Value = serde_json::from_str(&retry.1).expect("JSON body");
    let text = body["text"].as_str().expect("Slack `text`");
    assert!(text.contains("acme"), "names the tenant: {text}");
    assert!(
        escalation_ids
            .iter()
            .any(|id| retry.1.contains(id.as_str())),
        "names an escalation id of the topic: {}",
        retry.1
    );
    for m in &msgs {
        assert!(
            !retry.1.contains(&m.customer_id),
            "no customer id: {}",
            retry.1
        );
        assert!(!retry.1.contains(&m.text), "no customer text: {}", retry.1);
        assert!(
            !retry.1.contains(&m.message_id),
            "no message ids: {}",
            retry.1
        );
    }

    // The worker counts the delivery once it has read the 200 (safety-net deadline again).
    let delivered = || {
        metric(
            &worker,
            "moodstream_webhook_notifications_total{result=\"delivered\"}",
        )
    };
    while delivered() < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no delivered notification counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(&worker, "moodstream_webhook_retries_total") >= 1.0);
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends, "offsets did not wait for the webhook");
}
