//! classify: `moodstream classify` — JSONL customer messages in, JSONL emotion results out,
//! in input order, through the same decode → tokenize → batch → model path as the worker.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context;

use crate::config::{ClassifyConfig, Format};
use crate::decode::{Decoder, Limits};
use crate::model::{LiveModel, Model};
use crate::pipeline::{self, Enricher, Origin, Unscored};
use crate::schema::SchemaRegistry;
use crate::telemetry::trace::MessageTrace;

/// Returns the number of input lines that could not be classified.
pub async fn run(cfg: ClassifyConfig) -> anyhow::Result<usize> {
    let model_cfg = cfg.model.clone();
    let model = tokio::task::spawn_blocking(move || Model::load(&model_cfg)).await??;
    let decoder = Decoder::new(
        Limits {
            max_message_bytes: 1 << 20,
            max_text_chars: 100_000,
        },
        Arc::new(SchemaRegistry::none()),
    );
    let enricher = Enricher {
        escalator: None,
        drafter: None,
        draft_threads: 1,
        shadow: None,
    };
    let model = LiveModel::new(model);
    let (inlet, mut processed, _) = pipeline::spawn(model, &cfg.model, enricher);

    let input: Box<dyn BufRead + Send> = match &cfg.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let topic: Arc<str> = Arc::from("input");
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        for (n, line) in input.lines().enumerate() {
            let line = line?;
            let origin = Origin {
                topic: topic.clone(),
                partition: 0,
                offset: n as i64 + 1,
                seq: n as u64,
                consumed_at: Instant::now(),
                consumed_wall: SystemTime::now(),
                trace: MessageTrace::default(),
                key: None,
                payload: None,
            };
            let sent = inlet.submit(origin, decoder.decode(Some(line.as_bytes()), Format::Json));
            if !sent {
                break;
            }
        }
        Ok(())
    });

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = 0;
    while let Some(p) = processed.recv().await {
        match p.result {
            Ok(e) => {
                serde_json::to_writer(&mut out, &e.emotion)?;
                out.write_all(b"\n")?;
            }
            Err(Unscored::DeadLetter(dl)) => {
                failed += 1;
                eprintln!("line {}: {} ({})", p.origin.offset, dl.reason, dl.kind);
            }
            Err(Unscored::Skipped(reason)) => {
                eprintln!("line {}: skipped ({})", p.origin.offset, reason.as_str());
            }
        }
    }
    out.flush()?;
    reader.join().expect("reader thread panicked: bug")?;
    Ok(failed)
}
