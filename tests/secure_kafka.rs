//! The worker against the local broker's secured listeners (`MOODSTREAM_KAFKA_SECURE=1`, which
//! `scripts/test.sh` sets): SASL_SSL with SCRAM-SHA-512, and mutual TLS with an encrypted client
//! key. Each runs end to end — message in, emotion out, offsets committed — with the secrets
//! passed the ways the README documents (secret file, environment) and never logged; a wrong
//! password is a clear fatal error, not a hang.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Certificates and secrets written by `deploy/local/stack.sh` with `MOODSTREAM_KAFKA_SECURE=1`.
fn tls_dir() -> PathBuf {
    let dir = std::env::var("MOODSTREAM_LOCAL_KAFKA_TLS_DIR")
        .map(PathBuf::from)
        .expect("MOODSTREAM_LOCAL_KAFKA_TLS_DIR (source scripts/env.sh)");
    assert!(
        dir.join(".complete").exists(),
        "no certificates in {}: start the stack with MOODSTREAM_KAFKA_SECURE=1 \
         (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn listener(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} (source scripts/env.sh)"))
}

fn read_secret(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// SASL_SSL flags; the password comes from `password_file` through --kafka-secret-file.
fn sasl_ssl_flags(dir: &std::path::Path, password_file: &std::path::Path) -> Vec<String> {
    vec![
        "--brokers".into(),
        listener("MOODSTREAM_LOCAL_SASL_SSL_BROKERS"),
        "--kafka-options".into(),
        "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username=moodstream".into(),
        "--kafka-property".into(),
        format!("ssl.ca.location={}", dir.join("ca.pem").display()),
        "--kafka-secret-file".into(),
        format!("sasl.password={}", password_file.display()),
    ]
}

/// Produces `n` messages (through the plaintext listener: the harness, not the subject), waits
/// for their emotions, stops the worker and checks it committed every input offset.
async fn runs_end_to_end(name: &str, flags: &[String], env: &[(&str, &str)]) -> String {
    let topics = TestTopics::create(name, 1, 2).await;
    let n = 6;
    let msgs: Vec<_> = (0..n)
        .map(|i| message(name, i, 3, "I was charged twice and nobody answers."))
        .collect();
    produce_json(&topics.inputs[0], &msgs).await;
    let group = unique(&format!("{name}-group"));
    let log = tempfile::NamedTempFile::new().expect("log file");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let worker = Worker::start_with_env(
        &group,
        &topics,
        &flags,
        Stdio::from(log.reopen().expect("log file")),
        env,
    );
    let out = read_all(&[&topics.emotions], n, Duration::from_secs(180));
    let logs = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(out.len(), n, "one emotion per message; worker log:\n{logs}");
    let expected: std::collections::HashSet<_> =
        msgs.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(message_ids(&out), expected);
    let status = worker.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    let (committed, ends) = committed_and_end(&group, &topics.inputs[0]);
    assert_eq!(
        committed, ends,
        "offsets committed through the secured listener"
    );
    std::fs::read_to_string(log.path()).expect("worker log")
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_scram_listener_end_to_end_with_password_from_file() {
    let dir = tls_dir();
    let password = read_secret(dir.join("scram-password"));
    let flags = sasl_ssl_flags(&dir, &dir.join("scram-password"));
    // Debug logging shows the effective client config: the password must be redacted there.
    let logs = runs_end_to_end("sasl", &flags, &[("RUST_LOG", "warn,moodstream=debug")]).await;
    assert!(
        logs.contains("sasl.password=<redacted>"),
        "the client config is logged, redacted:\n{logs}"
    );
    assert!(!logs.contains(&password), "the SCRAM password was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_listener_end_to_end_with_encrypted_key_password_from_env() {
    let dir = tls_dir();
    let key_password = read_secret(dir.join("client-key-password"));
    let props = tempfile::NamedTempFile::new().expect("properties file");
    std::fs::write(
        props.path(),
        format!(
            "# mutual TLS: the broker requires a client certificate\n\
             security.protocol=SSL\n\
             ssl.ca.location={dir}/ca.pem\n\
             ssl.certificate.location={dir}/client.pem\n\
             ssl.key.location={dir}/client.key\n\
             producer.client.id=moodstream-mtls,with-a-comma\n",
            dir = dir.display()
        ),
    )
    .expect("write properties");
    let flags = vec![
        "--brokers".to_string(),
        listener("MOODSTREAM_LOCAL_MTLS_BROKERS"),
        "--kafka-properties-file".to_string(),
        props.path().display().to_string(),
    ];
    let logs = runs_end_to_end(
        "mtls",
        &flags,
        &[
            ("MOODSTREAM_KAFKA_SSL_KEY_PASSWORD", key_password.as_str()),
            ("RUST_LOG", "warn,moodstream=debug"),
        ],
    )
    .await;
    assert!(logs.contains("ssl.key.password=<redacted>"), "{logs}");
    assert!(!logs.contains(&key_password), "the key password was logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_scram_password_is_a_fatal_authentication_error() {
    let dir = tls_dir();
    let topics = TestTopics::create("badpw", 1, 1).await;
    let wrong = tempfile::NamedTempFile::new().expect("password file");
    let wrong_password = "not-the-password-0f5e";
    std::fs::write(wrong.path(), wrong_password).expect("write password");
    let flags = sasl_ssl_flags(&dir, wrong.path());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut worker = Worker::start_with_stderr(
        &unique("badpw-group"),
        &topics,
        &flags,
        Stdio::from(log.reopen().expect("log file")),
    );
    // A safety net against a hang, not a timing assertion.
    let status = wait_for_exit(&mut worker, Duration::from_secs(120));
    let logs = std::fs::read_to_string(log.path()).expect("worker log");
    assert!(!status.success(), "exits non-zero: {status:?}\n{logs}");
    // The worker's own last word, not librdkafka's log lines (which say it too).
    assert!(
        logs.contains("error: cannot connect to Kafka: authentication failed"),
        "says why:\n{logs}"
    );
    assert!(!logs.contains(wrong_password), "the password was logged");
}

/// Issue 14: consumer errors such as a group the worker may not join were only logged:
/// `/healthz` said ok and no metric counted them. Now `/healthz` fails, naming the authorisation
/// error, and `moodstream_consumer_errors_total{kind="authorization"}` counts it. (The broker
/// denies this test's SCRAM user its consumer group with an ACL.)
#[tokio::test(flavor = "multi_thread")]
async fn a_group_the_worker_may_not_join_fails_healthz_and_is_counted() {
    let dir = tls_dir();
    let topics = TestTopics::create("denied", 1, 1).await;
    produce_json(
        &topics.inputs[0],
        &[message("denied", 0, 1, "Where is my parcel?")],
    )
    .await;
    let group = unique("denied-group");
    stack(&[
        "kafka",
        "kafka-acls",
        "--bootstrap-server",
        &brokers(),
        "--add",
        "--deny-principal",
        "User:moodstream",
        "--operation",
        "Read",
        "--group",
        &group,
    ]);
    let flags = sasl_ssl_flags(&dir, &dir.join("scram-password"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let worker = Worker::start_with_env(&group, &topics, &flags, Stdio::null(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let body = loop {
        if let Some((503, body)) = worker.get("/healthz") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never reported the authorisation error"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("not authorised"), "{body}");
    assert!(
        metric(
            &worker,
            "moodstream_consumer_errors_total{kind=\"authorization\"}"
        ) >= 1.0
    );
    assert!(
        read_to_end(&[&topics.emotions], Duration::from_secs(30)).is_empty(),
        "nothing processed without the group"
    );
    drop(worker);
}
