//! moodstream: Kafka in → decode → tokenize → dynamic batch → ONNX emotion model →
//! escalation + reply drafting → Kafka out, with offsets committed only after every output
//! of a message (and of all earlier messages in its partition) is acknowledged.

pub mod api;
pub mod batcher;
pub mod bench;
pub mod bench_api;
pub mod classify;
pub mod config;
pub mod console;
pub mod decode;
pub mod demo;
pub mod escalation;
pub mod feedback;
pub mod health;
pub mod http;
pub mod message;
pub mod model;
pub mod offsets;
pub mod pipeline;
pub mod reload;
pub mod reply;
pub mod retry;
pub mod schema;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod webhook;
pub mod worker;
