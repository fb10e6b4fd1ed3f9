//! Input mappings against a real broker: preset records (Debezium in the Kafka Connect
//! envelope, Zendesk events) through a running worker. A customer message becomes an emotion
//! result with the mapped fields; agent replies, notes and deletes produce nothing but their
//! offsets are committed; an unreadable record is dead-lettered with the missing path.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures/mapping").join(name)).expect("fixture")
}

fn write_mapping(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("mapping")));
    std::fs::write(&path, text).expect("write mapping");
    path
}

/// Waits (safety net only) until the metric reaches `want`.
fn wait_metric(worker: &Worker, name: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = metric(worker, name);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn maps_preset_records_skips_non_customer_ones_and_dead_letters_unreadable_ones() {
    let topics = TestTopics::create("mapping", 2, 1).await;
    let (cdc, zendesk) = (&topics.inputs[0], &topics.inputs[1]);
    let mapping = write_mapping(&format!(
        "topics:\n  {cdc}:\n    preset: debezium\n  {zendesk}:\n    preset: zendesk\n"
    ));

    let customer = fixture("debezium_create_envelope.json");
    let mut unreadable: serde_json::Value =
        serde_json::from_slice(&fixture("debezium_create_envelope.json")).unwrap();
    let row = unreadable["payload"]["after"].as_object_mut().unwrap();
    row.remove("body");
    row.insert("id".into(), "msg-broken".into());
    let unreadable = serde_json::to_vec(&unreadable).unwrap();
    let cdc_records: Vec<RawRecord> = vec![
        ("conv-77".into(), customer, vec![]),
        ("conv-77".into(), unreadable.clone(), vec![]),
        (
            "conv-77".into(),
            fixture("debezium_agent_reply.json"),
            vec![],
        ),
        // Skipped records last: their offsets are committed although nothing follows them.
        (
            "conv-77".into(),
            fixture("debezium_delete_envelope.json"),
            vec![],
        ),
    ];
    produce_raw(cdc, &cdc_records).await;
    let zendesk_records: Vec<RawRecord> = vec![
        ("5158".into(), fixture("zendesk_comment.json"), vec![]),
        ("5158".into(), fixture("zendesk_agent_reply.json"), vec![]),
        ("5158".into(), fixture("zendesk_internal_note.json"), vec![]),
    ];
    produce_raw(zendesk, &zendesk_records).await;

    let group = unique("mapping-group");
    let worker = Worker::start(
        &group,
        &topics,
        &["--input-mapping", mapping.to_str().unwrap()],
    );
    let cdc_dlq = format!("{cdc}.dlq");
    let zendesk_dlq = format!("{zendesk}.dlq");
    let out = read_all(&[&topics.emotions, &cdc_dlq], 3, Duration::from_secs(180));
    let results: Vec<serde_json::Value> = out
        .iter()
        .filter(|r| r.topic == topics.emotions)
        .map(Record::json)
        .collect();
    assert_eq!(
        results.len(),
        2,
        "one customer message per topic: {results:?}"
    );
    let from_cdc = results
        .iter()
        .find(|r| r["source_topic"] == cdc.as_str())
        .expect("the Debezium customer message");
    assert_eq!(from_cdc["message_id"], "msg-1002");
    assert_eq!(from_cdc["conversation_id"], "conv-77");
    assert_eq!(from_cdc["customer_id"], "cust-5");
    assert_eq!(from_cdc["tenant_id"], "acme");
    assert_eq!(from_cdc["channel"], "chat");
    assert_eq!(from_cdc["language"], "en", "the mapped language tag");
    assert_eq!(from_cdc["source_offset"], 0);
    let from_zendesk = results
        .iter()
        .find(|r| r["source_topic"] == zendesk.as_str())
        .expect("the Zendesk comment");
    assert_eq!(from_zendesk["message_id"], "10414779686782");
    assert_eq!(from_zendesk["conversation_id"], "5158");
    assert_eq!(from_zendesk["customer_id"], "8447388090494");
    assert_eq!(from_zendesk["tenant_id"], "22129848");
    assert_eq!(
        from_zendesk["channel"], "web",
        "via.channel web_form mapped"
    );

    let dead: Vec<&Record> = out.iter().filter(|r| r.topic == cdc_dlq).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["moodstream.error.kind"], "unmapped");
    assert_eq!(
        dead[0].headers["moodstream.error.reason"],
        "input mapping: missing field /payload/after/body (for text)"
    );
    assert_eq!(dead[0].headers["moodstream.source.offset"], "1");
    assert_eq!(dead[0].value, unreadable, "the original bytes are kept");

    // Agent reply + delete on the CDC topic, agent reply + internal note on the Zendesk one.
    let skipped = wait_metric(&worker, "moodstream_skipped_total", 4.0);
    assert_eq!(skipped, 4.0);
    assert_eq!(
        metric(&worker, "moodstream_skipped_total{reason=\"agent\"}"),
        2.0
    );
    assert_eq!(
        metric(&worker, "moodstream_skipped_total{reason=\"delete\"}"),
        1.0
    );
    assert_eq!(
        metric(&worker, "moodstream_skipped_total{reason=\"internal\"}"),
        1.0
    );
    assert!(worker.terminate().success());

    for input in [cdc, zendesk] {
        let (committed, ends) = committed_and_end(&group, input);
        assert_eq!(committed, ends, "{input}: skipped records count as done");
    }
    // Skipped records produced nothing anywhere.
    let all = read_to_end(
        &[
            &topics.emotions,
            &cdc_dlq,
            &zendesk_dlq,
            &topics.escalations,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(all.iter().filter(|r| r.topic == topics.emotions).count(), 2);
    assert_eq!(all.iter().filter(|r| r.topic == cdc_dlq).count(), 1);
    assert_eq!(all.iter().filter(|r| r.topic == zendesk_dlq).count(), 0);
    let _ = std::fs::remove_file(mapping);
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_with_a_mapping_error_naming_its_path() {
    let topics = TestTopics::create("mapping-bad", 1, 1).await;
    let input = &topics.inputs[0];
    let mapping = write_mapping(&format!(
        "topics:\n  {input}:\n    preset: zendesk\n    fields:\n      sent_at: {{path: /time, time: local, zone: Mars/Olympus}}\n"
    ));
    let mut worker = Worker::start_with_stderr(
        &unique("mapping-bad-group"),
        &topics,
        &["--input-mapping", mapping.to_str().unwrap()],
        Stdio::piped(),
    );
    let status = wait_for_exit(&mut worker, Duration::from_secs(60));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut worker.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "topics.{input}.fields.sent_at: unknown time zone `Mars/Olympus`"
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(mapping);
}
