//! The worker against a real Kafka broker (and Redis): no loss, order per conversation,
//! dead letters, and offsets committed only after outputs are acknowledged.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use moodstream::schema::{contract, contracts, encode_avro};

const TEXTS: [&str; 4] = [
    "Where is my package? It was due yesterday.",
    "Thank you so much, the refund arrived!",
    "This is unacceptable, I was charged twice and nobody answers.",
    "I don't understand how to reset my password.",
];

fn by_topic<'a>(records: &'a [Record], topic: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.topic == topic).collect()
}

/// Per conversation, the results' source offsets must increase in output order.
fn assert_conversation_order(results: &[&Record]) {
    let mut last: HashMap<(String, String, i64), i64> = HashMap::new();
    let mut by_output_partition: Vec<&&Record> = results.iter().collect();
    by_output_partition.sort_by_key(|r| (r.partition, r.offset));
    for r in by_output_partition {
        let v = r.json();
        let conv = v["conversation_id"].as_str().unwrap().to_string();
        let key = (
            conv,
            v["source_topic"].as_str().unwrap().to_string(),
            v["source_partition"].as_i64().unwrap(),
        );
        let offset = v["source_offset"].as_i64().unwrap();
        if let Some(prev) = last.insert(key.clone(), offset) {
            assert!(
                offset > prev,
                "conversation {key:?}: offset {offset} published after {prev}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_mixed_json_and_avro_in_conversation_order_and_commits_end_offsets() {
    let topics = TestTopics::create("order", 2, 3).await;
    let (json_topic, avro_topic) = (&topics.inputs[0], &topics.inputs[1]);
    let n = 120;
    let msgs: Vec<_> = (0..n)
        .map(|i| message("order", i, 7, TEXTS[i % 4]))
        .collect();
    let (json_half, avro_half) = msgs.split_at(n / 2);
    produce_json(json_topic, json_half).await;
    let schema = contract(contracts::CUSTOMER_MESSAGE);
    let avro: Vec<_> = avro_half
        .iter()
        .map(|m| {
            (
                m.conversation_id.clone(),
                encode_avro(&schema, 1, m).unwrap(),
                vec![],
            )
        })
        .collect();
    produce_raw(avro_topic, &avro).await;

    let group = unique("order-group");
    // Three model sessions taking batches of four: batches finish out of input order, and
    // the post stage's sequencer must restore it.
    let worker = Worker::start(
        &group,
        &topics,
        &[
            "--topic-formats",
            &format!("{avro_topic}=avro"),
            "--model-sessions",
            "3",
            "--intra-threads",
            "1",
            "--max-batch-size",
            "4",
        ],
    );
    let out = read_all(&[&topics.emotions], n, Duration::from_secs(180));
    let results = by_topic(&out, &topics.emotions);
    assert_eq!(results.len(), n, "exactly one result per message");
    let ids = message_ids(&results);
    let expected: HashSet<String> = msgs.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids, expected);
    for r in &results {
        let v = r.json();
        let input = msgs
            .iter()
            .find(|m| m.message_id == v["message_id"])
            .unwrap();
        assert_eq!(v["conversation_id"], input.conversation_id.as_str());
        assert_eq!(
            r.key.as_deref(),
            Some(input.conversation_id.as_str()),
            "keyed by conversation"
        );
        assert_eq!(v["scores"].as_object().unwrap().len(), 8);
    }
    assert_conversation_order(&results);

    let status = worker.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    for topic in [json_topic, avro_topic] {
        let (committed, ends) = committed_and_end(&group, topic);
        assert_eq!(
            committed, ends,
            "committed offsets reach the end of {topic}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_malformed_inputs_with_reasons_and_leaves_no_offset_gap() {
    let topics = TestTopics::create("dlq", 1, 1).await;
    let input = &topics.inputs[0];
    let good = |i| serde_json::to_vec(&message("dlq", i, 3, TEXTS[i % 4])).unwrap();
    let mut empty_text = message("dlq", 90, 3, "x");
    empty_text.text = "   ".into();
    let records: Vec<RawRecord> = vec![
        ("k".into(), good(0), vec![]),
        ("k".into(), b"{not json".to_vec(), vec![]),
        ("k".into(), good(1), vec![]),
        ("k".into(), vec![0xff, 0xfe, 0x00], vec![]),
        (
            "k".into(),
            br#"{"message_id":"x","text":"hi"}"#.to_vec(),
            vec![],
        ),
        ("k".into(), serde_json::to_vec(&empty_text).unwrap(), vec![]),
        ("k".into(), vec![b'a'; 300_000], vec![]),
        ("k".into(), good(2), vec![]),
    ];
    produce_raw(input, &records).await;
    let group = unique("dlq-group");
    let worker = Worker::start(&group, &topics, &[]);
    let dlq = format!("{input}.dlq");
    let out = read_all(&[&topics.emotions, &dlq], 8, Duration::from_secs(180));
    assert_eq!(
        by_topic(&out, &topics.emotions).len(),
        3,
        "every good message processed"
    );
    let dead = by_topic(&out, &dlq);
    let kinds: Vec<&str> = dead
        .iter()
        .map(|r| r.headers["moodstream.error.kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "malformed_json",
            "malformed_json",
            "malformed_json",
            "invalid_field",
            "oversized"
        ]
    );
    let offsets: Vec<&str> = dead
        .iter()
        .map(|r| r.headers["moodstream.source.offset"].as_str())
        .collect();
    assert_eq!(offsets, ["1", "3", "4", "5", "6"]);
    for r in &dead {
        assert_eq!(r.headers["moodstream.source.topic"], *input);
        assert!(!r.headers["moodstream.error.reason"].is_empty());
    }
    assert_eq!(dead[0].value, b"{not json", "the original bytes are kept");
    // A value over --max-message-bytes is not copied, nor dead-lettered whole.
    assert!(dead[4].value.is_empty(), "oversized value left out");
    assert!(dead[4].headers["moodstream.error.reason"].contains("300000 bytes"));
    assert!(
        dead[4]
            .headers
            .contains_key("moodstream.dead_letter.truncated")
    );
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(
        committed, ends,
        "dead-lettered records count as done: no gap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_then_restart_loses_nothing() {
    let topics = TestTopics::create("restart", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 600;
    let msgs: Vec<_> = (0..n)
        .map(|i| message("restart", i, 25, TEXTS[i % 4]))
        .collect();
    produce_json(input, &msgs).await;
    let group = unique("restart-group");

    let first = Worker::start(&group, &topics, &["--max-batch-size", "8"]);
    let early = read_all(&[&topics.emotions], 50, Duration::from_secs(180));
    assert!(early.len() >= 50, "worker made progress");
    assert!(first.terminate().success(), "SIGTERM drains and exits 0");
    let (committed_at_stop, _) = committed_and_end(&group, input);
    let after_first = read_all(&[&topics.emotions], n, Duration::from_secs(5));

    // Every committed record has its result already: commit never runs ahead of outputs.
    let seen: HashSet<(i64, i64)> = after_first
        .iter()
        .map(|r| {
            (
                r.json()["source_partition"].as_i64().unwrap(),
                r.json()["source_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    for (p, committed) in committed_at_stop.iter().enumerate() {
        for o in 0..*committed {
            assert!(
                seen.contains(&(p as i64, o)),
                "offset {o} of partition {p} committed without its result"
            );
        }
    }

    let second = Worker::start(&group, &topics, &[]);
    let all = read_all(&[&topics.emotions], n + 2 * n, Duration::from_secs(20));
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &all {
        *count.entry(r.message_id()).or_default() += 1;
    }
    for m in &msgs {
        assert!(count.contains_key(&m.message_id), "{} lost", m.message_id);
    }
    // Duplicates only for records whose offsets were not committed at the stop.
    for r in &all {
        let v = r.json();
        if count[v["message_id"].as_str().unwrap()] > 1 {
            let (p, o) = (
                v["source_partition"].as_i64().unwrap() as usize,
                v["source_offset"].as_i64().unwrap(),
            );
            assert!(
                o >= committed_at_stop[p],
                "duplicate of committed offset {o} in partition {p}"
            );
        }
    }
    assert!(second.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

#[tokio::test(flavor = "multi_thread")]
async fn second_worker_takes_over_partitions_when_first_leaves() {
    let topics = TestTopics::create("takeover", 1, 6).await;
    let input = &topics.inputs[0];
    let group = unique("takeover-group");
    let a = Worker::start(&group, &topics, &[]);
    let b = Worker::start(&group, &topics, &[]);
    a.wait_ready(Duration::from_secs(120));
    b.wait_ready(Duration::from_secs(120));
    let first: Vec<_> = (0..120)
        .map(|i| message("takeover", i, 30, TEXTS[i % 4]))
        .collect();
    produce_json(input, &first).await;
    let out = read_all(&[&topics.emotions], 120, Duration::from_secs(180));
    assert_eq!(out.len(), 120);
    assert!(a.terminate().success());
    let second: Vec<_> = (120..240)
        .map(|i| message("takeover", i, 30, TEXTS[i % 4]))
        .collect();
    produce_json(input, &second).await;
    let out = read_until(&[&topics.emotions], Duration::from_secs(180), |r| {
        message_ids(r).len() >= 240
    });
    let ids = message_ids(&out);
    assert_eq!(
        ids.len(),
        240,
        "the remaining worker processed every partition"
    );
    assert!(b.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

/// The consumer_lag gauges of `topic` a worker exports.
fn lag_gauges(worker: &Worker, topic: &str) -> usize {
    let (_, body) = worker.get("/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| l.starts_with("moodstream_consumer_lag{") && l.contains(topic))
        .count()
}

/// Issue 14: a revoked partition's lag gauge stayed, frozen, so a dashboard summing lag over
/// pods counted it twice. Now a worker exports lag for its assigned partitions only.
#[tokio::test(flavor = "multi_thread")]
async fn lag_gauges_follow_the_assignment() {
    let topics = TestTopics::create("lag", 1, 6).await;
    let input = &topics.inputs[0];
    let group = unique("lag-group");
    let msgs: Vec<_> = (0..60)
        .map(|i| message("lag", i, 30, TEXTS[i % 4]))
        .collect();
    produce_json(input, &msgs).await;
    let a = Worker::start(&group, &topics, &[]);
    a.wait_ready(Duration::from_secs(120));
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    // Statistics come every 5 s.
    wait_for("lag of all six partitions", &|| lag_gauges(&a, input) == 6);
    let b = Worker::start(&group, &topics, &[]);
    b.wait_ready(Duration::from_secs(120));
    wait_for(
        "the first worker drops the lag of the partitions it lost",
        &|| lag_gauges(&a, input) < 6,
    );
    // And does not get them back from a later statistics report.
    std::thread::sleep(Duration::from_secs(6));
    let mine = lag_gauges(&a, input);
    wait_for("the second worker reports the rest", &|| {
        lag_gauges(&b, input) + mine == 6
    });
    assert!(a.terminate().success());
    assert!(b.terminate().success());
}
