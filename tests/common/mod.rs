//! Shared helpers for the integration tests: a real Kafka broker and Redis from
//! `deploy/local/stack.sh` (started once by `scripts/test.sh`), the real `moodstream` binary
//! as a child process, and unique topic/group names per test so tests run in parallel.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use moodstream::message::CustomerMessage;

pub fn brokers() -> String {
    std::env::var("MOODSTREAM_BROKERS").unwrap_or_else(|_| "localhost:9092".into())
}

pub fn redis_url() -> String {
    std::env::var("MOODSTREAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn create_topics(names: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics (is the local stack up? deploy/local/stack.sh up)");
    for r in results {
        r.expect("topic created");
    }
}

/// The input, output and dead-letter topics of one test (each unique).
pub struct TestTopics {
    pub inputs: Vec<String>,
    pub emotions: String,
    pub escalations: String,
    pub dlq_suffix: &'static str,
    pub reply_prefix: String,
}

impl TestTopics {
    pub async fn create(name: &str, inputs: usize, partitions: i32) -> TestTopics {
        let inputs: Vec<String> = (0..inputs)
            .map(|i| unique(&format!("{name}-in{i}")))
            .collect();
        let emotions = unique(&format!("{name}-emotions"));
        let escalations = unique(&format!("{name}-escalations"));
        let reply_prefix = format!("{}.", unique(&format!("{name}-replies")));
        let mut all: Vec<(String, i32)> = inputs.iter().map(|t| (t.clone(), partitions)).collect();
        all.extend(inputs.iter().map(|t| (format!("{t}.dlq"), 1)));
        all.push((emotions.clone(), 3));
        all.push((escalations.clone(), 1));
        for ch in ["chat", "email", "sms", "voice", "social", "other"] {
            all.push((format!("{reply_prefix}{ch}"), 3));
        }
        let refs: Vec<(&str, i32)> = all.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        create_topics(&refs).await;
        TestTopics {
            inputs,
            emotions,
            escalations,
            dlq_suffix: ".dlq",
            reply_prefix,
        }
    }

    pub fn reply_topic(&self, channel: &str) -> String {
        format!("{}{channel}", self.reply_prefix)
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces raw values with keys; returns after every delivery is acknowledged.
/// (key, value, headers) of one record to produce.
pub type RawRecord<'a> = (String, Vec<u8>, Vec<(&'a str, &'a str)>);

pub async fn produce_raw(topic: &str, records: &[RawRecord<'_>]) {
    let p = producer();
    let mut futures = Vec::new();
    for (key, value, headers) in records {
        let mut h = rdkafka::message::OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let rec = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .headers(h);
        futures.push(p.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
    }
    for f in futures {
        f.await
            .expect("delivery future")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    p.flush(Duration::from_secs(10)).expect("flush");
}

pub fn message(prefix: &str, i: usize, conversations: usize, text: &str) -> CustomerMessage {
    let channels = ["chat", "email", "sms"];
    CustomerMessage {
        message_id: format!("{prefix}-m{i:05}"),
        conversation_id: format!("{prefix}-c{}", i % conversations),
        customer_id: format!("{prefix}-u{}", i % conversations),
        tenant_id: Some("acme".into()),
        channel: channels[i % 3].into(),
        text: text.into(),
        subject: Some("My order".into()),
        language: None,
        sent_at: 1_700_000_000_000 + i as i64 * 1000,
        customer_name: Some("Alex".into()),
        metadata: Default::default(),
    }
}

pub async fn produce_json(topic: &str, msgs: &[CustomerMessage]) {
    let records: Vec<_> = msgs
        .iter()
        .map(|m| {
            (
                m.conversation_id.clone(),
                serde_json::to_vec(m).unwrap(),
                vec![],
            )
        })
        .collect();
    produce_raw(topic, &records).await;
}

/// One consumed output record.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl From<&rdkafka::message::BorrowedMessage<'_>> for Record {
    fn from(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        }
    }
}

impl Record {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.value).expect("output is JSON")
    }

    pub fn message_id(&self) -> String {
        self.json()["message_id"]
            .as_str()
            .expect("output has a message_id")
            .to_string()
    }
}

/// The distinct message ids among `records` (duplicates from redelivery collapse).
pub fn message_ids(
    records: &[impl std::borrow::Borrow<Record>],
) -> std::collections::HashSet<String> {
    records.iter().map(|r| r.borrow().message_id()).collect()
}

/// Reads every record of `topics` from the beginning until `want` records arrived or the
/// timeout passes (a safety net, not an assertion on speed).
pub fn read_all<S: AsRef<str>>(topics: &[S], want: usize, timeout: Duration) -> Vec<Record> {
    read_until(topics, timeout, |records| records.len() >= want)
}

/// Reads `topics` from the beginning until `done` holds for what was read, or the timeout
/// passes (a safety net, not an assertion on speed).
pub fn read_until<S: AsRef<str>>(
    topics: &[S],
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("reader");
    let refs: Vec<&str> = topics.iter().map(AsRef::as_ref).collect();
    consumer.subscribe(&refs).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(Record::from(&m));
        }
    }
    out
}

/// Committed offset per partition of `topic` for `group`, and the end offsets.
pub fn committed_and_end(group: &str, topic: &str) -> (Vec<i64>, Vec<i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed");
    let committed = (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
        .collect();
    let ends = (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect();
    (committed, ends)
}

/// A running `moodstream run` child process.
pub struct Worker {
    pub child: Child,
    pub http: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Worker {
    /// Starts the real binary against the local broker. `extra` are more CLI flags.
    pub fn start(group: &str, topics: &TestTopics, extra: &[&str]) -> Worker {
        Worker::start_with_stderr(group, topics, extra, Stdio::inherit())
    }

    /// As `start`, with the worker's stderr (its logs) sent to `stderr`.
    pub fn start_with_stderr(
        group: &str,
        topics: &TestTopics,
        extra: &[&str],
        stderr: Stdio,
    ) -> Worker {
        Worker::start_with_env(group, topics, extra, stderr, &[])
    }

    /// As `start_with_stderr`, with more environment variables (test hooks).
    pub fn start_with_env(
        group: &str,
        topics: &TestTopics,
        extra: &[&str],
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Worker {
        let http = format!("127.0.0.1:{}", free_port());
        let reply_config = write_reply_config(&topics.reply_prefix);
        // MOODSTREAM_TEST_BIN: run a copy of the binary (checkouts sharing one target dir
        // overwrite each other's target/debug/moodstream).
        let bin = std::env::var("MOODSTREAM_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_moodstream").to_string());
        let mut cmd = Command::new(bin);
        cmd.current_dir(repo())
            .arg("run")
            .args(["--brokers", &brokers(), "--group", group])
            .args(["--topics", &topics.inputs.join(",")])
            .args([
                "--output-topic",
                &topics.emotions,
                "--escalation-topic",
                &topics.escalations,
            ])
            .args(["--http-addr", &http, "--execution-provider", "cpu"])
            .args(["--intra-threads", "1", "--tokenizer-threads", "1"])
            .args(["--reply-config", reply_config.to_str().unwrap()])
            .args(["--redis-url", &redis_url()])
            .args([
                "--log-format",
                "text",
                "--drain-timeout-ms",
                "15000",
                "--session-timeout-ms",
                "20000",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr);
        Worker {
            child: cmd.spawn().expect("spawn moodstream"),
            http,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.pid(), "TERM");
        wait_exit(&mut self.child, Duration::from_secs(60))
    }

    pub fn kill9(mut self) {
        signal(self.pid(), "KILL");
        let _ = self.child.wait();
    }

    /// GET `path` from the worker's HTTP server: status and body, `None` when unreachable.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{}", self.http, path);
        off_runtime(move || {
            let resp = reqwest::blocking::get(url).ok()?;
            let status = resp.status().as_u16();
            Some((status, resp.text().unwrap_or_default()))
        })
    }

    /// Waits (safety net only) until `/readyz`'s body satisfies `want`; returns the last body.
    pub fn wait_readyz(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let body = self.get("/readyz").map(|(_, b)| b).unwrap_or_default();
            if want(&body) || Instant::now() > deadline {
                return body;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until /readyz says ready (safety-net timeout).
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("worker never became ready");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: i32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "worker did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shipped reply config with channel topics renamed to this test's prefix.
fn write_reply_config(prefix: &str) -> PathBuf {
    let shipped =
        std::fs::read_to_string(repo().join("config/replies.yaml")).expect("config/replies.yaml");
    let text = shipped.replace("replies.", prefix);
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("replies")));
    std::fs::write(&path, text).expect("write reply config");
    path
}

pub async fn delete_topic(name: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let _ = admin.delete_topics(&[name], &AdminOptions::new()).await;
}

pub fn wait_for_exit(worker: &mut Worker, timeout: Duration) -> std::process::ExitStatus {
    wait_exit(&mut worker.child, timeout)
}

/// The sum of a metric's samples whose line starts with `name` (labels included, e.g.
/// `moodstream_rebalances_total{kind="revoke"}`); 0 when absent.
pub fn metric(worker: &Worker, name: &str) -> f64 {
    let (_, body) = worker.get("/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads every record of `topics` up to their current end (read_committed: aborted
/// transactional records are skipped), so duplicates are seen too, unlike reading until a
/// count arrives. Call it once producers are done. `timeout` is a safety net only.
pub fn read_to_end<S: AsRef<str>>(topics: &[S], timeout: Duration) -> Vec<Record> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for topic in topics {
        let topic = topic.as_ref();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .expect("reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut open = std::collections::HashSet::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
            open.insert(p.id());
        }
        consumer.assign(&tpl).expect("assign");
        while !open.is_empty() {
            assert!(
                Instant::now() < deadline,
                "could not read {topic} to its end"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Ok(m)) => out.push(Record::from(&m)),
                _ => {}
            }
        }
    }
    out
}

/// Runs `deploy/local/stack.sh <args>` (the fault tests stop and start Kafka and Redis).
pub fn stack(args: &[&str]) {
    let status = Command::new(repo().join("deploy/local/stack.sh"))
        .args(args)
        .status()
        .expect("deploy/local/stack.sh");
    assert!(status.success(), "stack.sh {args:?} failed");
}

/// Runs blocking HTTP (reqwest's blocking client) on its own thread: it must not run on an
/// async task, and the tests are async.
pub fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        moodstream::telemetry::install_tls_provider();
        f()
    })
    .join()
    .expect("HTTP thread")
}

/// A copy of the shipped model directory at `root/name`, with its `SHA256SUMS`. With
/// `version`, its labels.json names that version (and the sums are rewritten to match).
pub fn model_copy(root: &Path, name: &str, version: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let shipped = repo().join("models/emotion");
    for file in [
        "model.int8.onnx",
        "tokenizer.json",
        "labels.json",
        "SHA256SUMS",
    ] {
        std::fs::copy(shipped.join(file), dir.join(file)).expect("copy model file");
    }
    if let Some(version) = version {
        let labels = std::fs::read_to_string(dir.join("labels.json")).expect("labels.json");
        let mut spec: serde_json::Value = serde_json::from_str(&labels).expect("labels json");
        spec["model_version"] = serde_json::json!(version);
        std::fs::write(dir.join("labels.json"), spec.to_string()).expect("write labels");
        let sums = Command::new("sha256sum")
            .args(["model.int8.onnx", "tokenizer.json", "labels.json"])
            .current_dir(&dir)
            .output()
            .expect("sha256sum");
        assert!(sums.status.success());
        std::fs::write(dir.join("SHA256SUMS"), sums.stdout).expect("write SHA256SUMS");
    }
    dir
}

/// Points the symlink `link` at `target` atomically (a new link renamed over the old one), as
/// a deployment promotes a model.
pub fn point_symlink(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

/// The emotion results on `topic` once every message of `sent` has one, read to the topic's end
/// (so a repeated result is seen): `model_version` per message id, asserting exactly one result
/// per sent message and none for anything else.
pub fn one_result_each<'a>(
    topic: &str,
    sent: impl IntoIterator<Item = &'a CustomerMessage>,
) -> HashMap<String, String> {
    let sent: std::collections::BTreeSet<String> =
        sent.into_iter().map(|m| m.message_id.clone()).collect();
    let _ = read_all(&[topic], sent.len(), Duration::from_secs(180));
    let versions = model_versions(&read_to_end(&[topic], Duration::from_secs(60)));
    assert_eq!(
        versions
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        sent,
        "exactly one emotion result per message: nothing lost, nothing repeated"
    );
    versions
}

/// `model_version` per message id of emotion results, asserting each id appears once.
pub fn model_versions(records: &[Record]) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    for r in records {
        let v = r.json();
        let id = v["message_id"].as_str().expect("message_id").to_string();
        let version = v["model_version"]
            .as_str()
            .expect("model_version")
            .to_string();
        assert!(
            seen.insert(id.clone(), version).is_none(),
            "duplicate output for {id}"
        );
    }
    seen
}

/// A running `moodstream console` on `topics` (the worker's outputs) producing feedback to
/// `feedback`, its address read from its first line of stdout.
pub struct Console {
    child: Child,
    pub url: String,
}

impl Console {
    pub fn start(topics: &TestTopics, feedback: &str, extra: &[&str]) -> Console {
        let bin = std::env::var("MOODSTREAM_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_moodstream").to_string());
        let reply_pattern = format!("^{}.*", topics.reply_prefix.replace('.', r"\."));
        let mut child = Command::new(bin)
            .current_dir(repo())
            .arg("console")
            .args(["--brokers", &brokers(), "--group", &unique("console")])
            .args(["--bind", "127.0.0.1:0", "--topics", &topics.inputs[0]])
            .args(["--output-topic", &topics.emotions])
            .args(["--escalation-topic", &topics.escalations])
            .args([
                "--reply-topics",
                &reply_pattern,
                "--feedback-topic",
                feedback,
            ])
            .args(["--log-format", "text"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn moodstream console");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("console prints its address");
        let url = line
            .trim()
            .strip_prefix("console: ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        Console { child, url }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `moodstream feedback export --brokers <broker> <args> --out <out>` and panics unless it
/// succeeds; returns the written file's text and its JSON lines.
pub fn feedback_export(args: &[&str], out: &Path) -> (String, Vec<serde_json::Value>) {
    let run = Command::new(env!("CARGO_BIN_EXE_moodstream"))
        .current_dir(repo())
        .args(["feedback", "export", "--brokers", &brokers()])
        .args(args)
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run feedback export");
    assert!(
        run.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out).expect("exported file");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (text, lines)
}
