//! Reply drafts, metrics, health and trace propagation, observed through a real broker.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

const TEXTS: [&str; 3] = [
    "Where is my order? It was due yesterday.",
    "I want a refund, the blender arrived broken.",
    "Thanks a lot, that solved it!",
];

#[tokio::test(flavor = "multi_thread")]
async fn drafts_reach_each_channel_topic_in_conversation_order() {
    let topics = TestTopics::create("drafts", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 60;
    let msgs: Vec<_> = (0..n)
        .map(|i| message("drafts", i, 6, TEXTS[i % 3]))
        .collect();
    produce_json(input, &msgs).await;
    let group = unique("drafts-group");
    let worker = Worker::start(&group, &topics, &[]);
    let reply_topics: Vec<String> = ["chat", "email", "sms"]
        .iter()
        .map(|c| topics.reply_topic(c))
        .collect();
    let drafts = read_all(&reply_topics, n, Duration::from_secs(180));
    assert_eq!(drafts.len(), n, "one draft per message");
    let mut last_index: HashMap<String, usize> = HashMap::new();
    let mut sorted: Vec<&Record> = drafts.iter().collect();
    sorted.sort_by_key(|r| (r.topic.clone(), r.partition, r.offset));
    for r in sorted {
        let v = r.json();
        let id = v["message_id"].as_str().unwrap();
        let input = msgs
            .iter()
            .find(|m| m.message_id == id)
            .expect("draft of a known message");
        assert_eq!(
            r.topic,
            topics.reply_topic(&input.channel),
            "draft on its channel's topic"
        );
        assert_eq!(r.key.as_deref(), Some(input.conversation_id.as_str()));
        assert!(v["template_id"].as_str().is_some_and(|t| !t.is_empty()));
        if input.channel == "sms" {
            assert!(v["segments"].as_array().is_some_and(|s| !s.is_empty()));
        } else {
            assert!(v["body"].as_str().is_some_and(|b| !b.is_empty()));
        }
        let index: usize = id.rsplit('m').next().unwrap().parse().unwrap();
        if let Some(prev) = last_index.insert(input.conversation_id.clone(), index) {
            assert!(
                index > prev,
                "conversation {} drafted out of order",
                input.conversation_id
            );
        }
    }
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_offset_only_after_reply_is_delivered() {
    let topics = TestTopics::create("undelivered", 1, 1).await;
    let input = &topics.inputs[0];
    // Channel "fax" maps to `<prefix>other`; delete that mapping's topic by pointing it at a
    // topic that does not exist: use a channel whose reply topic is missing.
    let mut msgs: Vec<_> = (0..4)
        .map(|i| message("undelivered", i, 4, TEXTS[i % 3]))
        .collect();
    msgs[2].channel = "fax".into();
    // The `other` reply topic does not exist for this test's prefix: create nothing for it.
    let missing = topics.reply_topic("other");
    delete_topic(&missing).await;
    produce_json(input, &msgs).await;
    let group = unique("undelivered-group");
    let mut worker = Worker::start(
        &group,
        &topics,
        &["--kafka-options", "message.timeout.ms=5000"],
    );
    let status = wait_for_exit(&mut worker, Duration::from_secs(120));
    assert!(
        !status.success(),
        "a reply that cannot be delivered is fatal, not skipped"
    );
    let (committed, _) = committed_and_end(&group, input);
    assert!(
        committed[0] <= 2,
        "offset {} committed past the undelivered message at offset 2",
        committed[0]
    );

    // Once the topic exists, a restarted worker finishes the job.
    create_topics(&[(missing.as_str(), 1)]).await;
    let worker = Worker::start(&group, &topics, &[]);
    let drafts = read_all(&[&missing], 1, Duration::from_secs(120));
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].json()["message_id"], msgs[2].message_id.as_str());
    let results = read_until(&[&topics.emotions], Duration::from_secs(120), |r| {
        message_ids(r).len() >= 4
    });
    let ids = message_ids(&results);
    assert_eq!(ids.len(), 4, "nothing lost");
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_readiness_and_trace_context_follow_the_messages() {
    let topics = TestTopics::create("telemetry", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 30;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let records: Vec<RawRecord> = (0..n)
        .map(|i| {
            let m = message("telemetry", i, 5, TEXTS[i % 3]);
            (
                m.conversation_id.clone(),
                serde_json::to_vec(&m).unwrap(),
                vec![("traceparent", traceparent.as_str())],
            )
        })
        .collect();
    produce_raw(input, &records).await;
    let group = unique("telemetry-group");
    let worker = Worker::start(&group, &topics, &[]);
    let mut outputs = vec![topics.emotions.clone()];
    outputs.extend(
        ["chat", "email", "sms"]
            .iter()
            .map(|c| topics.reply_topic(c)),
    );
    let out = read_all(&outputs, 2 * n, Duration::from_secs(180));
    assert_eq!(out.len(), 2 * n);
    for r in &out {
        let tp = r
            .headers
            .get("traceparent")
            .expect("traceparent on every output");
        assert_eq!(
            tp.split('-').nth(1),
            Some(trace_id),
            "same trace id as the input"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (_, text) = worker.get("/metrics").expect("metrics endpoint");
        if metric(
            &text,
            "moodstream_messages_produced_total",
            "kind=\"reply\"",
        ) >= n as f64
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&text, "moodstream_messages_consumed_total", input),
        n as f64
    );
    assert_eq!(
        metric(
            &text,
            "moodstream_messages_produced_total",
            "kind=\"emotion\""
        ),
        n as f64
    );
    assert_eq!(
        metric(
            &text,
            "moodstream_messages_produced_total",
            "kind=\"reply\""
        ),
        n as f64
    );
    assert!(
        metric(
            &text,
            "moodstream_execution_provider_info",
            "provider=\"cpu\",requested=\"cpu\""
        ) == 1.0
    );
    assert!(!text.contains("telemetry-u"), "no customer ids in metrics");
    assert_eq!(worker.get("/readyz").map(|r| r.0), Some(200));
    assert_eq!(worker.get("/healthz").map(|r| r.0), Some(200));
    assert!(worker.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_turns_off_while_draining() {
    let topics = TestTopics::create("drain", 1, 1).await;
    let input = &topics.inputs[0];
    let msgs: Vec<_> = (0..1500)
        .map(|i| message("drain", i, 50, TEXTS[i % 3]))
        .collect();
    produce_json(input, &msgs).await;
    let group = unique("drain-group");
    let mut worker = Worker::start(
        &group,
        &topics,
        &["--max-batch-size", "4", "--max-in-flight", "1500"],
    );
    let _ = read_all(&[&topics.emotions], 10, Duration::from_secs(180));
    signal(worker.pid(), "TERM");
    let mut saw_not_ready = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        if let Some((503, _)) = worker.get("/readyz") {
            saw_not_ready = true;
            assert_eq!(
                worker.get("/healthz").map(|r| r.0),
                Some(200),
                "alive while draining"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_not_ready, "/readyz reported not ready during the drain");
    let status = wait_for_exit(&mut worker, Duration::from_secs(60));
    assert!(status.success());
}

/// Issue 14: a missing output topic crash-looped the worker on the first record that needed
/// it. Now every output topic is checked at startup, with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_when_an_output_topic_is_missing() {
    let topics = TestTopics::create("missing", 1, 1).await;
    let other = topics.reply_topic("other");
    delete_topic(&other).await;
    let dlq = format!("{}.dlq", topics.inputs[0]);
    delete_topic(&dlq).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // deletion is asynchronous
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut worker = Worker::start_with_stderr(
        &unique("missing-group"),
        &topics,
        &[],
        std::process::Stdio::from(log.reopen().expect("log")),
    );
    let status = wait_for_exit(&mut worker, Duration::from_secs(120));
    assert!(!status.success());
    let stderr = std::fs::read_to_string(log.path()).expect("log");
    assert!(
        stderr.contains("output topics do not exist")
            && stderr.contains(&other)
            && stderr.contains(&dlq),
        "{stderr}"
    );
}

/// Issue 14: a dead letter larger than its topic accepts failed its delivery, which is fatal:
/// the worker crash-looped on that record forever. Now it goes truncated (no value, a header
/// saying so) and the partition moves on.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_too_large_for_its_topic_goes_truncated() {
    let topics = TestTopics::create("bigdlq", 1, 1).await;
    let input = &topics.inputs[0];
    let dlq = format!("{input}.dlq");
    // A dead-letter topic that takes at most 2 KB per record.
    delete_topic(&dlq).await;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin");
    let topic = rdkafka::admin::NewTopic::new(&dlq, 1, rdkafka::admin::TopicReplication::Fixed(1))
        .set("max.message.bytes", "2048");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = admin
            .create_topics([&topic], &rdkafka::admin::AdminOptions::new())
            .await
            .expect("create");
        match &r[0] {
            Ok(_) => break,
            // Still being deleted.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // Malformed and incompressible (the producer compresses with lz4).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let big: Vec<u8> = (0..10_000)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i == 0 { b'{' } else { state as u8 }
        })
        .collect();
    let good = serde_json::to_vec(&message("bigdlq", 1, 1, TEXTS[0])).unwrap();
    produce_raw(
        input,
        &[("k".into(), big, vec![]), ("k".into(), good, vec![])],
    )
    .await;
    let group = unique("bigdlq-group");
    let worker = Worker::start(&group, &topics, &[]);
    let dead = read_all(&[&dlq], 1, Duration::from_secs(120));
    assert_eq!(dead.len(), 1, "dead-lettered");
    assert!(dead[0].value.is_empty(), "without the value");
    assert_eq!(dead[0].headers["moodstream.error.kind"], "malformed_json");
    assert!(
        dead[0].headers["moodstream.dead_letter.truncated"].contains("10000 bytes"),
        "{:?}",
        dead[0].headers
    );
    read_all(&[&topics.emotions], 1, Duration::from_secs(120));
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}
