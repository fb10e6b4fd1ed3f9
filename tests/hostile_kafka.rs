//! Hostile input through the running worker: more than 100,000 records — binary junk, invalid
//! UTF-8, truncated, mutated, deep and mistyped JSON, null and empty values, huge texts and
//! values, Confluent wire format with unknown or wrong schema ids and garbage Avro bodies —
//! among a few thousand good messages. Proves: no panic, every bad record in the dead-letter
//! topic exactly once with a kind and a reason, every good one classified exactly once, and
//! every offset committed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

use common::*;
use moodstream::config::Format;
use moodstream::decode::{Decoder, Limits, wire_format};
use moodstream::message::CustomerMessage;
use moodstream::schema::{SchemaRegistry, contract, contracts, encode_avro};

const JSON_RECORDS: usize = 100_000;
const AVRO_RECORDS: usize = 8_000;
const PARTITIONS: i32 = 4;
const LIMITS: Limits = Limits {
    max_message_bytes: 4096,
    max_text_chars: 2000,
};

/// xorshift64*: the same records on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What the worker must do with a record.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// An emotion result.
    Good,
    /// A dead letter of this kind.
    Dead(&'static str),
    /// Whatever the decoder says (mutations that may or may not still be valid), as long as
    /// it is one of these kinds.
    AsDecoded(&'static [&'static str]),
}

struct Hostile {
    category: &'static str,
    expect: Expect,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

/// The fields a message cannot do without.
const REQUIRED: [&str; 6] = [
    "message_id",
    "conversation_id",
    "customer_id",
    "channel",
    "text",
    "sent_at",
];

const TEXTS: [&str; 10] = [
    "Where is my package? It was due yesterday.",
    "Thank you so much, the refund arrived!",
    "This is unacceptable, I was charged twice and nobody answers.",
    "I don't understand how to reset my password.",
    "{{ customer_name }} {% for i in range(3) %}refund{% endfor %} where is it",
    "\u{202e}\u{200b}help me please\u{feff} my order \u{2066}#A1234\u{2069}",
    "control \u{7}\u{1b}[31m chars \0 in text 😡😡😡",
    "我的快递还没到，订单号 B20411",
    "ok",
    "}}%}#} {# not a comment #}",
];

struct Generator {
    rng: Rng,
    n: usize,
    avro: apache_avro::Schema,
}

impl Generator {
    /// A valid message, its text, name or order id sometimes full of template syntax, bidi,
    /// zero-width or control characters (still valid: the worker must classify it).
    fn message(&mut self) -> CustomerMessage {
        self.n += 1;
        let text = if self.rng.below(20) == 0 {
            "long text ".repeat(self.rng.range(50, 150))
        } else {
            self.rng.pick(&TEXTS).to_string()
        };
        let mut m = message("hostile", self.n, 400, &text);
        m.channel = self
            .rng
            .pick(&["chat", "email", "sms", "voice", "social", "fax"])
            .to_string();
        m.customer_name = self
            .rng
            .pick(&[Some("Alex"), None, Some("{{ 7*7 }}"), Some("\u{202e}Eve")])
            .map(str::to_string);
        if self.rng.below(4) == 0 {
            m.metadata = BTreeMap::from([("order_id".into(), "{% raw %}A1{% endraw %}".into())]);
        }
        m
    }

    /// A valid message as JSON, its optional fields present, null or missing at random.
    fn good_json(&mut self) -> Vec<u8> {
        let m = self.message();
        let mut v = serde_json::to_value(&m).expect("json");
        let object = v.as_object_mut().expect("object");
        for field in [
            "tenant_id",
            "subject",
            "language",
            "customer_name",
            "metadata",
        ] {
            match self.rng.below(4) {
                0 => {
                    object.remove(field);
                }
                1 if field != "metadata" => {
                    object.insert(field.into(), Value::Null);
                }
                _ => {}
            }
        }
        object.insert("unknown_extra".into(), json!({"nested": [1, 2, 3]}));
        serde_json::to_vec(&v).expect("json")
    }

    fn good_avro(&mut self) -> Vec<u8> {
        let m = self.message();
        encode_avro(&self.avro, 1, &m).expect("avro")
    }

    fn tampered(
        &mut self,
        f: impl FnOnce(&mut Rng, &mut serde_json::Map<String, Value>),
    ) -> Vec<u8> {
        let m = self.message();
        let mut v = serde_json::to_value(&m).expect("json");
        f(&mut self.rng, v.as_object_mut().expect("object"));
        serde_json::to_vec(&v).expect("json")
    }

    fn mutated(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        for _ in 0..self.rng.range(1, 5) {
            let at = self.rng.below(bytes.len().max(1));
            match self.rng.below(3) {
                0 if at < bytes.len() => bytes[at] ^= 1 << self.rng.below(8),
                1 => bytes.insert(at.min(bytes.len()), self.rng.next() as u8),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    }

    fn invalid_utf8(&mut self, avro: bool) -> Vec<u8> {
        let mut m = self.message();
        m.text = "Hello AAAA world".into();
        let mut bytes = if avro {
            encode_avro(&self.avro, 1, &m).expect("avro")
        } else {
            serde_json::to_vec(&m).expect("json")
        };
        let junk: &[u8; 4] = self.rng.pick(&[
            [0xff, 0xfe, 0xfd, 0xfc],
            [0xc3, 0x28, 0x41, 0x41],
            [0xed, 0xa0, 0x80, 0x41],
            [0x80, 0x80, 0x80, 0x80],
        ]);
        let at = bytes.windows(4).position(|w| w == b"AAAA").expect("marker");
        bytes[at..at + 4].copy_from_slice(junk);
        bytes
    }

    fn key(&mut self) -> Option<Vec<u8>> {
        match self.rng.below(3) {
            0 => None,
            1 => {
                let len = self.rng.below(32);
                Some(self.rng.bytes(len))
            }
            _ => Some(format!("hostile-c{}", self.rng.below(400)).into_bytes()),
        }
    }

    fn headers(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        if self.rng.below(20) != 0 {
            return vec![];
        }
        let traceparent = self
            .rng
            .pick(&[
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec(),
                b"00-zzzz-yyyy-01".to_vec(),
                vec![0xff, 0xfe, 0x00],
                vec![b'x'; 2000],
            ])
            .clone();
        vec![
            ("traceparent", traceparent.clone()),
            ("traceparent", traceparent),
            ("tracestate", vec![0xc3, 0x28]),
        ]
    }

    fn record(
        &mut self,
        category: &'static str,
        expect: Expect,
        value: Option<Vec<u8>>,
    ) -> Hostile {
        Hostile {
            category,
            expect,
            key: self.key(),
            value,
            headers: self.headers(),
        }
    }

    /// One record of the JSON topic: ~3% good, the rest hostile.
    fn json_record(&mut self) -> Hostile {
        use Expect::*;
        const MALFORMED: Expect = Dead("malformed_json");
        let roll = self.rng.below(1000);
        let (category, expect, value) = match roll {
            0..30 => ("good", Good, Some(self.good_json())),
            30..180 => {
                let len = self.rng.range(1, 512);
                ("binary junk", MALFORMED, Some(self.rng.bytes(len)))
            }
            180..210 => ("empty value", MALFORMED, Some(vec![])),
            210..240 => ("null value", Dead("no_value"), None),
            240..300 => ("invalid utf-8", MALFORMED, Some(self.invalid_utf8(false))),
            300..380 => {
                let mut bytes = self.good_json();
                bytes.truncate(self.rng.below(bytes.len()));
                ("truncated json", MALFORMED, Some(bytes))
            }
            380..420 => {
                let deep = match self.rng.below(3) {
                    0 => "[".repeat(self.rng.range(129, 4000)),
                    1 => r#"{"a":"#.repeat(self.rng.range(129, 800)),
                    _ => format!(
                        r#"{{"message_id":"x","metadata":{}"#,
                        "[".repeat(self.rng.range(129, 4000))
                    ),
                };
                ("deep json", MALFORMED, Some(deep.into_bytes()))
            }
            420..470 => {
                let v = self.tampered(|rng, o| {
                    // Metadata is not required, but it may not be null either.
                    let field = match rng.below(REQUIRED.len() + 1) {
                        0 => "metadata",
                        i => REQUIRED[i - 1],
                    };
                    o.insert(field.into(), Value::Null);
                });
                ("null required field or metadata", MALFORMED, Some(v))
            }
            470..520 => {
                let v = self.tampered(|rng, o| {
                    o.remove(*rng.pick(&REQUIRED));
                });
                ("missing required field", MALFORMED, Some(v))
            }
            520..570 => {
                let v = self.tampered(|rng, o| {
                    let (field, value) = rng
                        .pick(&[
                            ("message_id", json!(42)),
                            ("text", json!(["a"])),
                            ("channel", json!({"c": 1})),
                            ("customer_id", json!(true)),
                            ("sent_at", json!("yesterday")),
                            ("sent_at", json!(1.5)),
                            ("sent_at", json!(u64::MAX)),
                            ("metadata", json!(["k", "v"])),
                            ("metadata", json!({"k": 1})),
                            ("subject", json!(7)),
                            ("tenant_id", json!({})),
                        ])
                        .clone();
                    o.insert(field.into(), value);
                });
                ("wrong-typed field", MALFORMED, Some(v))
            }
            570..610 => {
                let v = self.tampered(|rng, o| {
                    // Every required string; sent_at is a number.
                    let field = *rng.pick(&REQUIRED[..5]);
                    let blank = *rng.pick(&["", "   ", "\t\n", "\u{3000}"]);
                    o.insert(field.into(), json!(blank));
                });
                ("blank required field", Dead("invalid_field"), Some(v))
            }
            610..650 => {
                let chars = self.rng.range(2001, 3500);
                let v = self.tampered(|_, o| {
                    o.insert("text".into(), json!("a".repeat(chars)));
                });
                ("text over --max-text-chars", Dead("oversized"), Some(v))
            }
            650..670 => {
                let size = self.rng.range(4097, 16_000);
                let v = if self.rng.below(2) == 0 {
                    self.rng.bytes(size)
                } else {
                    self.tampered(|_, o| {
                        o.insert("text".into(), json!("b".repeat(size)));
                    })
                };
                ("value over --max-message-bytes", Dead("oversized"), Some(v))
            }
            670..870 => {
                let good = self.good_json();
                let kinds = &["malformed_json", "invalid_field"];
                ("mutated json", AsDecoded(kinds), Some(self.mutated(good)))
            }
            870..900 => (
                "wire format on a json topic",
                MALFORMED,
                Some(self.good_avro()),
            ),
            _ => {
                let v = self
                    .rng
                    .pick(&[
                        "null",
                        "42",
                        "\"str\"",
                        "[]",
                        "{}",
                        "true",
                        "{\"message_id\":\"m\"}{}",
                        " ",
                    ])
                    .as_bytes()
                    .to_vec();
                ("json that is not a message", MALFORMED, Some(v))
            }
        };
        self.record(category, expect, value)
    }

    /// One record of the Avro topic: ~5% good, the rest hostile.
    fn avro_record(&mut self) -> Hostile {
        use Expect::*;
        let roll = self.rng.below(100);
        let (category, expect, value) = match roll {
            0..5 => ("good avro", Good, Some(self.good_avro())),
            5..25 => {
                let id = self.rng.range(5, u32::MAX as usize) as u32;
                let body = self.good_avro()[5..].to_vec();
                (
                    "unknown schema id",
                    Dead("unknown_schema"),
                    Some(wire_format(id, &body)),
                )
            }
            25..35 => {
                let id = self.rng.range(2, 5) as u32;
                let body = self.good_avro()[5..].to_vec();
                (
                    "schema id of another contract",
                    Dead("malformed_avro"),
                    Some(wire_format(id, &body)),
                )
            }
            35..55 => {
                let len = self.rng.range(0, 300);
                let body = self.rng.bytes(len);
                let kinds = &["malformed_avro", "invalid_field"];
                (
                    "garbage avro body",
                    AsDecoded(kinds),
                    Some(wire_format(1, &body)),
                )
            }
            55..65 => (
                "json on an avro topic",
                Dead("malformed_wire_format"),
                Some(self.good_json()),
            ),
            65..70 => {
                let len = self.rng.range(1, 5);
                let mut v = vec![0];
                v.extend(self.rng.bytes(len - 1));
                (
                    "short wire-format header",
                    Dead("malformed_wire_format"),
                    Some(v),
                )
            }
            70..80 => {
                let mut bytes = self.good_avro();
                bytes.truncate(self.rng.range(5, bytes.len()));
                ("truncated avro", Dead("malformed_avro"), Some(bytes))
            }
            80..85 => (
                "invalid utf-8 in avro",
                Dead("malformed_avro"),
                Some(self.invalid_utf8(true)),
            ),
            85..95 => {
                let good = self.good_avro();
                let kinds = &[
                    "malformed_avro",
                    "malformed_wire_format",
                    "unknown_schema",
                    "invalid_field",
                ];
                ("mutated avro", AsDecoded(kinds), Some(self.mutated(good)))
            }
            95..97 => ("null value", Dead("no_value"), None),
            _ => {
                let mut m = self.message();
                m.text = "c".repeat(self.rng.range(4097, 12_000));
                let v = encode_avro(&self.avro, 1, &m).expect("avro");
                ("value over --max-message-bytes", Dead("oversized"), Some(v))
            }
        };
        self.record(category, expect, value)
    }
}

/// Produces every record with one producer, all in flight at once; returns each record's
/// (partition, offset) in input order. Partitions are assigned round-robin.
async fn produce(topic: &str, records: &[Hostile]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "50")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    let mut deliveries = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let headers = r
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                })
            });
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(i as i32 % PARTITIONS)
            .headers(headers);
        if let Some(key) = &r.key {
            rec = rec.key(key.as_slice());
        }
        if let Some(value) = &r.value {
            rec = rec.payload(value.as_slice());
        }
        deliveries.push(
            producer
                .send_result(rec)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut at = Vec::with_capacity(records.len());
    for d in deliveries {
        let delivery = d
            .await
            .expect("delivery future")
            .map_err(|(e, _)| e)
            .expect("delivered");
        at.push((delivery.partition, delivery.offset));
    }
    at
}

/// A record's (topic, partition, offset).
type Source = (String, i32, i64);

/// Classified (`Ok`), or dead-lettered with this kind.
type Outcome = Result<(), &'static str>;

#[derive(Debug, Default)]
struct Tally {
    records: usize,
    good: usize,
    dead: BTreeMap<&'static str, usize>,
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_never_crash_the_worker_and_each_lands_in_the_dlq_or_the_results() {
    let started = Instant::now();
    let topics = TestTopics::create("hostile", 2, PARTITIONS).await;
    let (json_topic, avro_topic) = (topics.inputs[0].clone(), topics.inputs[1].clone());
    let mut generator = Generator {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        n: 0,
        avro: contract(contracts::CUSTOMER_MESSAGE),
    };
    let json_records: Vec<Hostile> = (0..JSON_RECORDS).map(|_| generator.json_record()).collect();
    let avro_records: Vec<Hostile> = (0..AVRO_RECORDS).map(|_| generator.avro_record()).collect();

    // The expected outcome of every record, by (topic, partition, offset). Mutations that may
    // still be valid ask the decoder the worker runs, configured alike.
    let registry = Arc::new(SchemaRegistry::local(&repo().join("schemas")).expect("registry"));
    let decoder = Decoder::new(LIMITS, registry);
    let mut expected: HashMap<Source, (&'static str, Outcome)> = HashMap::new();
    let mut tally: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for (topic, records, format) in [
        (&json_topic, &json_records, Format::Json),
        (&avro_topic, &avro_records, Format::Avro),
    ] {
        let at = produce(topic, records).await;
        for (r, (partition, offset)) in records.iter().zip(at) {
            let decoded = decoder.decode(r.value.as_deref(), format);
            let outcome = match r.expect {
                Expect::Good => Ok(()),
                Expect::Dead(kind) => Err(kind),
                Expect::AsDecoded(kinds) => {
                    let outcome = decoded.as_ref().map(|_| ()).map_err(|e| e.kind());
                    if let Err(kind) = outcome {
                        assert!(
                            kinds.contains(&kind),
                            "{} record decodes as {kind}",
                            r.category
                        );
                    }
                    outcome
                }
            };
            // The category's own expectation agrees with the decoder (a unit-level check
            // of the generator, so the broker-level assertions below mean what they say).
            assert_eq!(
                decoded.as_ref().map(|_| ()).map_err(|e| e.kind()),
                outcome,
                "{} record decodes as expected",
                r.category
            );
            let t = tally.entry(r.category).or_default();
            t.records += 1;
            expected.insert((topic.clone(), partition, offset), (r.category, outcome));
        }
    }
    let total = JSON_RECORDS + AVRO_RECORDS;
    assert_eq!(expected.len(), total, "every record at its own offset");
    let good = expected.values().filter(|(_, o)| o.is_ok()).count();
    let bad = total - good;
    println!(
        "produced {total} records ({good} good, {bad} hostile) in {:.1?}",
        started.elapsed()
    );

    let log = tempfile::NamedTempFile::new().expect("log file");
    let group = unique("hostile-group");
    let worker = Worker::start_with_stderr(
        &group,
        &topics,
        &[
            "--topic-formats",
            &format!("{avro_topic}=avro"),
            "--max-message-bytes",
            &LIMITS.max_message_bytes.to_string(),
            "--max-text-chars",
            &LIMITS.max_text_chars.to_string(),
        ],
        Stdio::from(log.reopen().expect("log file")),
    );

    let dlqs = [format!("{json_topic}.dlq"), format!("{avro_topic}.dlq")];
    let dead = read_until(&dlqs, Duration::from_secs(600), |r| r.len() >= bad);
    let results = read_until(&[&topics.emotions], Duration::from_secs(600), |r| {
        r.len() >= good
    });
    println!(
        "read {} dead letters and {} results after {:.1?}",
        dead.len(),
        results.len(),
        started.elapsed()
    );

    let mut seen: HashMap<Source, usize> = HashMap::new();
    for r in &dead {
        let h = |name: &str| {
            r.headers
                .get(name)
                .unwrap_or_else(|| panic!("dead letter without {name}"))
                .as_str()
        };
        let source = (
            h("moodstream.source.topic").to_string(),
            h("moodstream.source.partition").parse().expect("partition"),
            h("moodstream.source.offset").parse().expect("offset"),
        );
        let kind = h("moodstream.error.kind");
        assert!(
            !h("moodstream.error.reason").trim().is_empty(),
            "{source:?} has no reason"
        );
        let (category, outcome) = expected
            .get(&source)
            .unwrap_or_else(|| panic!("dead letter for an unknown record {source:?}"));
        assert_eq!(
            Err(kind),
            *outcome,
            "{category} record {source:?} dead-lettered as {kind}: {}",
            h("moodstream.error.reason")
        );
        *tally
            .get_mut(category)
            .expect("category")
            .dead
            .entry(outcome.unwrap_err())
            .or_default() += 1;
        *seen.entry(source).or_default() += 1;
    }
    for r in &results {
        let v = r.json();
        let source = (
            v["source_topic"]
                .as_str()
                .expect("source_topic")
                .to_string(),
            v["source_partition"].as_i64().expect("source_partition") as i32,
            v["source_offset"].as_i64().expect("source_offset"),
        );
        let (category, outcome) = expected
            .get(&source)
            .unwrap_or_else(|| panic!("result for an unknown record {source:?}"));
        assert_eq!(
            *outcome,
            Ok(()),
            "{category} record {source:?} was classified"
        );
        tally.get_mut(category).expect("category").good += 1;
        *seen.entry(source).or_default() += 1;
    }

    println!(
        "{:<34} {:>7} {:>7}  dead letters by kind",
        "category", "records", "good"
    );
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (category, t) in &tally {
        println!(
            "{category:<34} {:>7} {:>7}  {:?}",
            t.records, t.good, t.dead
        );
        for (kind, n) in &t.dead {
            *by_kind.entry(kind).or_default() += n;
        }
    }
    println!("dead letters by kind: {by_kind:?}");

    let missing: Vec<_> = expected
        .iter()
        .filter(|(source, _)| !seen.contains_key(*source))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "records with no output: {missing:?}");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        repeated.is_empty(),
        "records with more than one output: {repeated:?}"
    );
    assert_eq!(dead.len(), bad, "every hostile record dead-lettered once");
    assert_eq!(results.len(), good, "every good record classified once");

    let status = worker.terminate();
    assert!(status.success(), "clean shutdown exits 0: {status:?}");
    for topic in [&json_topic, &avro_topic] {
        let (committed, ends) = committed_and_end(&group, topic);
        assert_eq!(
            committed, ends,
            "committed offsets reach the end of {topic}"
        );
    }
    let log = std::fs::read_to_string(log.path()).expect("worker log");
    assert!(
        !log.contains("panicked"),
        "the worker panicked:\n{}",
        tail(&log)
    );
    println!("done in {:.1?}", started.elapsed());
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|i| log.is_char_boundary(*i))
        .unwrap_or(0);
    &log[start..]
}
