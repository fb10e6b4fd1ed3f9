//! Fault suite (issue 8): the delivery guarantees under `kill -9`, a broker restart, Redis
//! going away, a rebalance storm and producer backpressure — against the real broker and
//! Redis of `deploy/local/stack.sh`, with the real worker binary. The tests here stop and
//! start those services, so they run one at a time (`SERIAL`), and cargo runs this test
//! binary alone. Sizes are the short (CI) mode; `MOODSTREAM_FAULT_SCALE=<n>` multiplies the
//! message counts and storm rounds for a longer run.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::Mutex;

use common::*;

/// One fault test at a time (each has its own runtime; tokio's mutex works across them).
static SERIAL: Mutex<()> = Mutex::const_new(());

fn scale() -> usize {
    std::env::var("MOODSTREAM_FAULT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

const TEXTS: [&str; 5] = [
    "Thanks so much, the replacement arrived and works great!",
    "This is the third time I am asking. Where is my refund?",
    "I am really disappointed, the package is damaged again.",
    "Can you tell me when the store opens tomorrow?",
    "Unacceptable. Cancel my account now, I am furious.",
];

const WAIT: Duration = Duration::from_secs(300);

fn messages(
    prefix: &str,
    range: std::ops::Range<usize>,
) -> Vec<moodstream::message::CustomerMessage> {
    range
        .map(|i| message(prefix, i, 40, TEXTS[i % TEXTS.len()]))
        .collect()
}

/// (partition, offset) of the input record each emotion result answers.
fn source(r: &Record) -> (i32, i64) {
    let v = r.json();
    (
        v["source_partition"].as_i64().expect("source_partition") as i32,
        v["source_offset"].as_i64().expect("source_offset"),
    )
}

/// Waits until every id in `want` has an emotion result; returns what was read.
fn wait_for_results(topics: &TestTopics, want: &HashSet<String>) -> Vec<Record> {
    let out = read_until(&[&topics.emotions], WAIT, |r| {
        message_ids(r).is_superset(want)
    });
    let missing = want.difference(&message_ids(&out)).count();
    assert_eq!(missing, 0, "{missing} messages have no result");
    out
}

fn ids(msgs: &[moodstream::message::CustomerMessage]) -> HashSet<String> {
    msgs.iter().map(|m| m.message_id.clone()).collect()
}

/// Every input record below a committed offset has its result among `results`.
fn assert_committed_have_results(committed: &[i64], results: &[Record], when: &str) {
    let seen: HashSet<(i32, i64)> = results.iter().map(source).collect();
    for (p, c) in committed.iter().enumerate() {
        for o in 0..*c {
            assert!(
                seen.contains(&(p as i32, o)),
                "{when}: offset {o} of partition {p} committed before its result"
            );
        }
    }
}

/// kill -9 mid-batch under load, then restart. Returns the duplicate count (reported) after
/// checking that nothing was lost and that duplicates are only of uncommitted records.
async fn kill9_and_restart(name: &str, extra: &[&str]) -> usize {
    let topics = TestTopics::create(name, 1, 4).await;
    let input = &topics.inputs[0];
    let n = 2000 * scale();
    let msgs = messages(name, 0..n);
    produce_json(input, &msgs).await;
    let group = unique(&format!("{name}-group"));

    let first = Worker::start(&group, &topics, extra);
    let early = read_all(&[&topics.emotions], n / 5, WAIT);
    assert!(early.len() >= n / 5, "the worker made progress");
    first.kill9();
    let (committed_at_kill, _) = committed_and_end(&group, input);
    assert!(
        committed_at_kill.iter().sum::<i64>() < n as i64,
        "killed mid-stream"
    );

    let second = Worker::start(&group, &topics, extra);
    wait_for_results(&topics, &ids(&msgs));
    assert!(second.terminate().success(), "SIGTERM drains and exits 0");
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends, "every input committed");

    let all = read_to_end(&[&topics.emotions], WAIT);
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &all {
        *count.entry(r.message_id()).or_default() += 1;
    }
    assert_eq!(count.len(), n, "exactly the inputs have results");
    for r in &all {
        if count[&r.message_id()] > 1 {
            let (p, o) = source(r);
            assert!(
                o >= committed_at_kill[p as usize],
                "duplicate of offset {o} in partition {p}, committed before the kill"
            );
        }
    }
    let duplicates = all.len() - n;
    let uncommitted = n as i64 - committed_at_kill.iter().sum::<i64>();
    eprintln!(
        "{name}: {n} inputs, {} committed at kill -9, {duplicates} duplicate results \
         (uncommitted window {uncommitted})",
        n as i64 - uncommitted
    );
    duplicates
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_at_least_once_loses_nothing_and_duplicates_only_uncommitted() {
    let _serial = SERIAL.lock().await;
    kill9_and_restart("kill9", &["--commit-interval-ms", "200"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_exactly_once_yields_each_output_exactly_once() {
    let _serial = SERIAL.lock().await;
    let txn_id = unique("eos");
    let extra = [
        "--exactly-once",
        "--transactional-id",
        &txn_id,
        "--commit-interval-ms",
        "200",
    ];
    let duplicates = kill9_and_restart("eos", &extra).await;
    assert_eq!(
        duplicates, 0,
        "read_committed consumers see each result once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_replies_and_dead_letters_appear_once_across_kill9() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("eos-all", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 900 * scale();
    // Every 10th record is malformed: dead letters are in the transaction too.
    let records: Vec<RawRecord> = messages("eos-all", 0..n)
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let value = if i % 10 == 9 {
                b"{not json".to_vec()
            } else {
                serde_json::to_vec(m).unwrap()
            };
            (m.conversation_id.clone(), value, vec![])
        })
        .collect();
    produce_raw(input, &records).await;
    let group = unique("eos-all-group");
    let txn_id = unique("eos-all");
    let extra = ["--exactly-once", "--transactional-id", &txn_id];
    let first = Worker::start(&group, &topics, &extra);
    read_all(&[&topics.emotions], n / 4, WAIT);
    first.kill9();
    let second = Worker::start(&group, &topics, &extra);
    let good = n - n / 10;
    read_until(&[&topics.emotions], WAIT, |r| message_ids(r).len() >= good);
    assert!(second.terminate().success());

    let dlq = read_to_end(&[format!("{input}.dlq")], WAIT);
    assert_eq!(
        dlq.len(),
        n / 10,
        "each malformed record dead-lettered once"
    );
    let reply_topics: Vec<String> = ["chat", "email", "sms"]
        .iter()
        .map(|c| topics.reply_topic(c))
        .collect();
    let replies = read_to_end(&reply_topics, WAIT);
    let reply_ids = message_ids(&replies);
    assert_eq!(replies.len(), reply_ids.len(), "no reply twice");
    let emotions = read_to_end(&[&topics.emotions], WAIT);
    assert_eq!(emotions.len(), good, "no result twice");
    assert!(reply_ids.is_subset(&message_ids(&emotions)));
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_mid_stream_recovers_without_a_worker_restart() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("broker", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 1500 * scale();
    let msgs = messages("broker", 0..n);
    produce_json(input, &msgs).await;
    let group = unique("broker-group");
    let mut worker = Worker::start(&group, &topics, &["--commit-interval-ms", "200"]);
    read_all(&[&topics.emotions], n / 5, WAIT);

    stack(&["stop", "kafka"]);
    std::thread::sleep(Duration::from_secs(3)); // down while the worker keeps working
    stack(&["start", "kafka"]);

    wait_for_results(&topics, &ids(&msgs));
    // The restart may have cost the group its session: the worker rejoins and reprocesses
    // from the committed offsets; it must get every partition committed to its end by itself.
    wait_until_committed(&group, input);
    assert!(
        worker.child.try_wait().expect("wait").is_none(),
        "the worker rode out the broker restart"
    );
    assert!(worker.terminate().success());
}

/// Waits (safety-net timeout) until `group` has committed `topic` to its end offsets.
fn wait_until_committed(group: &str, topic: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (committed, ends) = committed_and_end(group, topic);
        if committed == ends {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "committed {committed:?}, ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stop_and_start_neither_stalls_nor_loses() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("redis", 1, 3).await;
    let input = &topics.inputs[0];
    let group = unique("redis-group");
    let mut worker = Worker::start(&group, &topics, &[]);
    worker.wait_ready(WAIT);
    let step = 300 * scale();
    let mut sent = HashSet::new();
    for (round, phase) in ["redis up", "redis down", "redis back"].iter().enumerate() {
        match *phase {
            "redis down" => stack(&["stop", "redis"]),
            "redis back" => stack(&["start", "redis"]),
            _ => {}
        }
        let msgs = messages("redis", round * step..(round + 1) * step);
        produce_json(input, &msgs).await;
        sent.extend(ids(&msgs));
        wait_for_results(&topics, &sent);
        assert!(
            worker.child.try_wait().expect("wait").is_none(),
            "worker alive with {phase}"
        );
        if *phase == "redis down" {
            assert_eq!(metric(&worker, "moodstream_redis_degraded"), 1.0);
        }
    }
    assert!(worker.terminate().success());
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

#[tokio::test(flavor = "multi_thread")]
async fn rebalance_storm_loses_nothing_and_never_commits_ahead_of_outputs() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("storm", 1, 6).await;
    let input = topics.inputs[0].clone();
    let group = unique("storm-group");
    let flags = [
        "--session-timeout-ms",
        "6000",
        "--drain-timeout-ms",
        "5000",
        "--commit-interval-ms",
        "200",
    ];
    let rounds = 6 * scale();
    let per_round = 250;
    let total = rounds * per_round;

    // Traffic keeps arriving during the storm.
    let producer = {
        let input = input.clone();
        tokio::spawn(async move {
            for r in 0..rounds {
                produce_json(
                    &input,
                    &messages("storm", r * per_round..(r + 1) * per_round),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
        })
    };
    let mut workers: Vec<Worker> = (0..3)
        .map(|_| Worker::start(&group, &topics, &flags))
        .collect();
    let mut samples = Vec::new();
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Alternate a clean leave (SIGTERM) and a crash (kill -9); a new member joins either way.
        let leaving = workers.remove(round % workers.len());
        if round % 2 == 0 {
            assert!(leaving.terminate().success(), "a leaving member exits 0");
        } else {
            leaving.kill9();
        }
        workers.push(Worker::start(&group, &topics, &flags));
        // Sample: committed offsets, then the results present right after.
        let (committed, _) = committed_and_end(&group, &input);
        samples.push((round, committed, read_to_end(&[&topics.emotions], WAIT)));
    }
    producer.await.expect("producer");
    wait_for_results(&topics, &ids(&messages("storm", 0..total)));
    for w in workers {
        assert!(w.terminate().success());
    }
    for (round, committed, results) in &samples {
        assert_committed_have_results(committed, results, &format!("storm round {round}"));
    }
    let (committed, ends) = committed_and_end(&group, &input);
    assert_eq!(committed, ends, "no partition left unconsumed");
    let all = read_to_end(&[&topics.emotions], WAIT);
    eprintln!(
        "storm: {total} inputs over {rounds} membership changes, {} duplicate results",
        all.len() - total
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn producer_backpressure_stalls_cleanly_and_drops_nothing() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("backpressure", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 1000 * scale();
    let msgs = messages("backpressure", 0..n);
    produce_json(input, &msgs).await;
    let group = unique("backpressure-group");
    // A producer queue of 4 records: the sink must wait for deliveries, never drop.
    let worker = Worker::start(
        &group,
        &topics,
        &["--kafka-options", "queue.buffering.max.messages=4"],
    );
    wait_for_results(&topics, &ids(&msgs));
    assert!(
        metric(&worker, "moodstream_producer_queue_full_total") > 0.0,
        "the tiny queue filled up (backpressure engaged)"
    );
    assert!(worker.terminate().success());
    let emotions = read_to_end(&[&topics.emotions], WAIT);
    assert_eq!(message_ids(&emotions), ids(&msgs));
    let replies: Vec<String> = ["chat", "email", "sms"]
        .iter()
        .map(|c| topics.reply_topic(c))
        .collect();
    assert_eq!(
        message_ids(&read_to_end(&replies, WAIT)).len(),
        n,
        "a reply per message"
    );
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

/// Avro records (Confluent wire format, schema id 1) of `msgs`.
fn avro_records(msgs: &[moodstream::message::CustomerMessage]) -> Vec<RawRecord<'static>> {
    use moodstream::schema::{contract, contracts, encode_avro};
    let schema = contract(contracts::CUSTOMER_MESSAGE);
    msgs.iter()
        .map(|m| {
            let value = encode_avro(&schema, 1, m).expect("encodes");
            (m.conversation_id.clone(), value, vec![])
        })
        .collect()
}

/// Issue 14: a pod that restarted while the Schema Registry was down dead-lettered every Avro
/// record as `schema_registry_unavailable`, and committed them. Now the registry's failure is
/// retried (partitions paused), outlasting `--retry-timeout-ms` it stops the worker with
/// nothing dead-lettered or committed, and a worker started while it is still down rides it out.
#[tokio::test(flavor = "multi_thread")]
async fn registry_down_during_a_restart_dead_letters_nothing_and_loses_nothing() {
    use moodstream::schema::{contracts, fake_registry::FakeRegistry};
    let _serial = SERIAL.lock().await;
    let registry = FakeRegistry::start(&[(1, contracts::CUSTOMER_MESSAGE)]);
    registry.set_down(true);
    let topics = TestTopics::create("registry", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 300 * scale();
    let msgs = messages("registry", 0..n);
    let mut records = avro_records(&msgs);
    // Three records of a schema id the registry does not know: bad input, dead-lettered once
    // the registry answers (and asked about once: the answer is cached).
    for i in 0..3 {
        let value = moodstream::decode::wire_format(666, b"\x02x");
        records.push((format!("unknown-{i}"), value, vec![]));
    }
    produce_raw(input, &records).await;
    let group = unique("registry-group");
    let flags = [
        "--topic-formats",
        &format!("{input}=avro"),
        "--schema-registry-url",
        &registry.url,
        "--retry-timeout-ms",
        "4000",
    ];

    let mut first = Worker::start(&group, &topics, &flags);
    let status = wait_for_exit(&mut first, Duration::from_secs(120));
    assert!(
        !status.success(),
        "gives up after the retry timeout, non-zero"
    );
    let dlq = format!("{input}.dlq");
    assert_eq!(read_to_end(&[&dlq], WAIT).len(), 0, "nothing dead-lettered");
    assert_eq!(read_to_end(&[&topics.emotions], WAIT).len(), 0);
    let (committed, _) = committed_and_end(&group, input);
    assert_eq!(committed.iter().sum::<i64>(), 0, "nothing committed");

    // Restarted while the registry is still down; it comes back 5 s later.
    let second = Worker::start(&group, &topics, &flags[..4]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    registry.set_down(false);
    wait_for_results(&topics, &ids(&msgs));
    let dead = read_until(&[&dlq], WAIT, |r| r.len() >= 3);
    assert!(second.terminate().success());
    assert_eq!(read_to_end(&[&dlq], WAIT).len(), 3, "only the bad input");
    for r in &dead {
        assert_eq!(r.headers["moodstream.error.kind"], "unknown_schema");
    }
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
    let lookups = registry
        .requests()
        .iter()
        .filter(|r| r.as_str() == "GET /schemas/ids/666")
        .count();
    assert_eq!(lookups, 1, "the unknown id was asked about once");
}

/// Issue 14: a failed inference dead-lettered its whole batch as `model_error`. Now it is
/// retried; a failure that outlasts `--retry-timeout-ms` stops the worker, non-zero, with
/// nothing dead-lettered and the batch's offsets uncommitted.
#[tokio::test(flavor = "multi_thread")]
async fn model_failure_mid_batch_is_retried_never_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("model", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 400 * scale();
    let msgs = messages("model", 0..n);
    produce_json(input, &msgs).await;
    let group = unique("model-group");
    let dlq = format!("{input}.dlq");

    // Failing for good: stops, dead-letters nothing, commits nothing.
    let mut failing = Worker::start_with_env(
        &group,
        &topics,
        &["--retry-timeout-ms", "2000"],
        std::process::Stdio::inherit(),
        &[("MOODSTREAM_TEST_FAIL_INFERENCE", "1000000")],
    );
    let status = wait_for_exit(&mut failing, Duration::from_secs(120));
    assert!(!status.success(), "gives up non-zero");
    assert_eq!(read_to_end(&[&dlq], WAIT).len(), 0, "nothing dead-lettered");
    let (committed, _) = committed_and_end(&group, input);
    assert_eq!(committed.iter().sum::<i64>(), 0, "nothing committed");

    // Five failures (a transient out-of-memory): retried, everything classified once.
    let worker = Worker::start_with_env(
        &group,
        &topics,
        &[],
        std::process::Stdio::inherit(),
        &[("MOODSTREAM_TEST_FAIL_INFERENCE", "5")],
    );
    wait_for_results(&topics, &ids(&msgs));
    assert!(
        metric(
            &worker,
            "moodstream_dependency_failures_total{dependency=\"model\"}"
        ) >= 5.0,
        "the failures happened"
    );
    assert!(worker.terminate().success());
    assert_eq!(read_to_end(&[&dlq], WAIT).len(), 0, "nothing dead-lettered");
    assert_eq!(read_to_end(&[&topics.emotions], WAIT).len(), n, "each once");
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

/// Issue 14: backpressure stopped polling, so a stall longer than `max.poll.interval.ms` cost
/// the group membership (and a rebalance, and reprocessing). Now the source pauses its
/// partitions and keeps polling. The stall here: the model failing for ~20 s (retried),
/// against a `max.poll.interval.ms` of 8 s.
#[tokio::test(flavor = "multi_thread")]
async fn stall_longer_than_max_poll_interval_keeps_group_membership() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("stall", 1, 3).await;
    let input = &topics.inputs[0];
    let n = 1000 * scale();
    let msgs = messages("stall", 0..n);
    produce_json(input, &msgs).await;
    let group = unique("stall-group");
    let worker = Worker::start_with_env(
        &group,
        &topics,
        &[
            "--session-timeout-ms",
            "6000",
            "--drain-timeout-ms",
            "5000",
            "--kafka-options",
            "max.poll.interval.ms=8000",
            "--max-batch-size",
            "16",
        ],
        std::process::Stdio::inherit(),
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 + 5 + 5 s of backoff.
        &[("MOODSTREAM_TEST_FAIL_INFERENCE", "9")],
    );
    wait_for_results(&topics, &ids(&msgs));
    assert_eq!(
        metric(&worker, "moodstream_rebalances_total{kind=\"revoke\"}"),
        0.0,
        "never left the group"
    );
    assert!(
        metric(
            &worker,
            "moodstream_dependency_failures_total{dependency=\"model\"}"
        ) >= 9.0
    );
    assert!(worker.terminate().success());
    assert_eq!(
        read_to_end(&[&topics.emotions], WAIT).len(),
        n,
        "no reprocessing"
    );
    let (committed, ends) = committed_and_end(&group, input);
    assert_eq!(committed, ends);
}

/// Issue 14: a partition revoked while records of it were in the open transaction (its drain
/// timed out: transactions here last longer than the drain timeout) was forgotten, and the
/// transaction could then commit those outputs without their offsets (the next owner produces
/// them again). Now the transaction is aborted and the worker exits non-zero; each output
/// appears once to `read_committed` readers. (The broker's group-generation fencing often
/// rejected such a commit before, too, so this passes against the old worker as well; the
/// tracker's unit tests pin the abort rule.)
#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_aborts_the_transaction_of_a_partition_revoked_mid_transaction() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("eos-revoke", 1, 4).await;
    let input = &topics.inputs[0];
    let n = 2000 * scale();
    let msgs = messages("eos-revoke", 0..n);
    produce_json(input, &msgs).await;
    let group = unique("eos-revoke-group");
    let flags = |id: &str| {
        vec![
            "--exactly-once".to_string(),
            "--transactional-id".to_string(),
            id.to_string(),
            "--commit-interval-ms".to_string(),
            "8000".to_string(),
            "--drain-timeout-ms".to_string(),
            "2000".to_string(),
            "--session-timeout-ms".to_string(),
            "6000".to_string(),
        ]
    };
    let (a_id, b_id) = (unique("eos-revoke-a"), unique("eos-revoke-b"));
    let a_flags = flags(&a_id);
    let a_flags: Vec<&str> = a_flags.iter().map(String::as_str).collect();
    let mut a = Worker::start(&group, &topics, &a_flags);
    a.wait_ready(WAIT);
    tokio::time::sleep(Duration::from_secs(3)).await; // mid-transaction
    let b_flags = flags(&b_id);
    let b_flags: Vec<&str> = b_flags.iter().map(String::as_str).collect();
    let b = Worker::start(&group, &topics, &b_flags);
    // The first worker exits non-zero once it aborted (the usual case: it is mid-transaction
    // when the second one joins); it restarts, as Kubernetes would restart it.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let mut a_status = None;
    while a_status.is_none() && std::time::Instant::now() < deadline {
        a_status = a.child.try_wait().expect("wait");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("eos-revoke: the first worker exited: {a_status:?}");
    let others = match a_status {
        Some(status) => {
            assert!(!status.success(), "an aborted transaction is fatal");
            let c_flags = flags(&a_id);
            let c_flags: Vec<&str> = c_flags.iter().map(String::as_str).collect();
            vec![b, Worker::start(&group, &topics, &c_flags)]
        }
        None => vec![b, a],
    };
    wait_for_results(&topics, &ids(&msgs));
    for mut w in others {
        // The second worker can meet the same when the restarted first one joins (its
        // partitions revoked mid-transaction): then it has aborted and exited non-zero too.
        match w.child.try_wait().expect("wait") {
            Some(status) => assert!(!status.success(), "an aborted transaction is fatal"),
            None => assert!(w.terminate().success()),
        }
    }
    let all = read_to_end(&[&topics.emotions], WAIT);
    let unique_ids = message_ids(&all);
    assert_eq!(unique_ids.len(), n);
    assert_eq!(all.len(), n, "read_committed readers see each result once");
}

/// Issue 14: `in_group` was set when partitions were assigned and never reset, so a worker
/// the group had dropped (no coordinator for longer than the session timeout) still said
/// ready. Now a lost assignment makes `/readyz` fail (the pod leaves the Service; `/healthz`
/// stays up, so it is not restarted) until the worker is back in its group.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_out_of_its_group_is_not_ready_until_it_rejoins() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("ingroup", 1, 3).await;
    let input = &topics.inputs[0];
    let group = unique("ingroup-group");
    let worker = Worker::start(
        &group,
        &topics,
        &["--session-timeout-ms", "6000", "--drain-timeout-ms", "3000"],
    );
    worker.wait_ready(WAIT);

    stack(&["stop", "kafka"]);
    // librdkafka declares the assignment lost once the coordinator has been silent for the
    // session timeout; until then the worker may still say ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut readyz = worker.get("/readyz").map(|(status, _)| status);
    while readyz != Some(503) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        readyz = worker.get("/readyz").map(|(status, _)| status);
    }
    let healthz = worker.get("/healthz").map(|(status, _)| status);
    stack(&["start", "kafka"]);
    assert_eq!(readyz, Some(503), "not ready while out of the group");
    assert_eq!(healthz, Some(200), "alive all the same");

    worker.wait_ready(WAIT);
    let msgs = messages("ingroup", 0..300);
    produce_json(input, &msgs).await;
    wait_for_results(&topics, &ids(&msgs));
    assert!(worker.terminate().success());
}

/// Issue 14: in-flight memory was bounded by record count only (4096 records of ~1 MiB is
/// several GiB). With a byte budget, a stalled pipeline (the model failing, retried) holds
/// at most the budget plus one record; nothing is lost once it recovers.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pipeline_holds_no_more_than_the_byte_budget() {
    let _serial = SERIAL.lock().await;
    let topics = TestTopics::create("bytes", 1, 3).await;
    let input = &topics.inputs[0];
    let long = "My parcel never arrived and nobody answers my emails. ".repeat(150);
    let msgs: Vec<_> = (0..400).map(|i| message("bytes", i, 40, &long)).collect();
    let record_bytes = msgs
        .iter()
        .map(|m| serde_json::to_vec(m).expect("json").len() + m.conversation_id.len())
        .max()
        .expect("messages");
    produce_json(input, &msgs).await;
    let budget = 20 * record_bytes;
    let group = unique("bytes-group");
    let worker = Worker::start_with_env(
        &group,
        &topics,
        &["--max-in-flight-bytes", &budget.to_string()],
        std::process::Stdio::inherit(),
        // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of backoff: the source fills up meanwhile.
        &[("MOODSTREAM_TEST_FAIL_INFERENCE", "5")],
    );
    // Sampled while the records go through; the assertion is an upper bound on every sample.
    let done = std::sync::atomic::AtomicBool::new(false);
    let highest = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut highest = 0.0_f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // Not answering yet while the worker starts.
                if let Some((200, body)) = worker.get("/metrics") {
                    let held = body
                        .lines()
                        .find_map(|l| l.strip_prefix("moodstream_in_flight_bytes "))
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    highest = highest.max(held.unwrap_or(0.0));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            highest
        });
        wait_for_results(&topics, &ids(&msgs));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sampler.join().expect("sampler")
    });
    assert!(highest > 0.0, "records were held in flight");
    assert!(
        highest <= (budget + record_bytes) as f64,
        "held {highest} bytes, budget {budget} + one record of {record_bytes}"
    );
    assert!(worker.terminate().success());
}
