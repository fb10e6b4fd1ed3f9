//! moodstream: Kafka in → decode → tokenize → dynamic batch → ONNX emotion model →
//! escalation + reply drafting → Kafka out, with offsets committed only after every output
//! of a message (and of all earlier messages in its partition) is acknowledged.

pub mod message;
