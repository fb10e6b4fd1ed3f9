//! shadow: a candidate model beside the live one (`--shadow-model-dir`), on a sample of the
//! messages (`--shadow-sample-rate`, chosen by message id so every replica samples the same
//! ones). The post stage offers it each sampled message with the live model's primary label;
//! the candidate scores it on its own thread with its own tokenizer and session and only counts
//! agreement (`moodstream_shadow_*`). Nothing it computes is published, and it never slows the
//! live path: when it falls behind, offered messages are dropped and counted.

use std::thread;

use crate::message::Emotion;
use crate::model::{Encoded, Model};
use crate::telemetry::metrics;

/// Most messages the candidate scores in one run.
const MAX_BATCH: usize = 16;
/// Offered messages waiting for the candidate; beyond this they are dropped.
const QUEUE: usize = 256;

struct Sample {
    text: String,
    live: Emotion,
}

/// The post stage's handle on the candidate.
pub struct Shadow {
    samples: crossbeam_channel::Sender<Sample>,
    /// Messages whose id hashes below this are sampled.
    cutoff: u64,
}

impl Shadow {
    /// Starts the candidate's thread. `model` needs one session.
    pub fn spawn(model: Model, rate: f64) -> std::io::Result<Shadow> {
        let (samples, rx) = crossbeam_channel::bounded::<Sample>(QUEUE);
        metrics()
            .model_info
            .with_label_values(&[&model.scorer.model_version, "shadow"])
            .set(1);
        thread::Builder::new()
            .name("shadow".into())
            .spawn(move || run(model, &rx))?;
        Ok(Shadow {
            samples,
            cutoff: (rate.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
        })
    }

    /// Offers one scored message; the candidate scores it when its id is in the sample.
    pub fn offer(&self, message_id: &str, text: &str, live: Emotion) {
        if !sampled(message_id, self.cutoff) {
            return;
        }
        let sample = Sample {
            text: text.to_string(),
            live,
        };
        if self.samples.try_send(sample).is_err() {
            metrics().shadow_dropped.inc();
        }
    }
}

/// FNV-1a of the id, mixed by MurmurHash3's finaliser (FNV alone leaves similar ids with
/// similar high bits): stable across replicas, processes and versions, unlike std's hasher.
fn sampled(message_id: &str, cutoff: u64) -> bool {
    let mut h = message_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h < cutoff || cutoff == u64::MAX
}

fn run(mut model: Model, samples: &crossbeam_channel::Receiver<Sample>) {
    let m = metrics();
    while let Ok(first) = samples.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(s) = samples.try_recv()
        {
            batch.push(s);
        }
        // A text the candidate cannot tokenize is left out of the comparison.
        let (encs, lives): (Vec<Encoded>, Vec<Emotion>) = batch
            .iter()
            .filter_map(|s| Some((model.tokenizer.encode(&s.text).ok()?, s.live)))
            .unzip();
        let refs: Vec<&Encoded> = encs.iter().collect();
        let logits = match model.engines[0].infer(&refs) {
            Ok(logits) => logits,
            Err(e) => {
                tracing::warn!(error = %e, "shadow model failed on a batch; skipped");
                continue;
            }
        };
        for (live, logits) in lives.into_iter().zip(&logits) {
            let candidate = model.scorer.score(logits).primary;
            let label = live.as_str();
            m.shadow_compared.with_label_values(&[label]).inc();
            if candidate == live {
                m.shadow_agreed.with_label_values(&[label]).inc();
            }
            m.shadow_labels
                .with_label_values(&[label, candidate.as_str()])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_stable_and_close_to_the_rate() {
        let cutoff = (0.1 * u64::MAX as f64) as u64;
        let ids: Vec<String> = (0..20_000).map(|i| format!("msg-{i}")).collect();
        let picked = ids.iter().filter(|id| sampled(id, cutoff)).count();
        assert!((1_700..2_300).contains(&picked), "{picked} of 20000 at 10%");
        assert_eq!(
            ids.iter().filter(|id| sampled(id, cutoff)).count(),
            picked,
            "the same ids every time"
        );
        assert!(
            ids.iter().all(|id| sampled(id, u64::MAX)),
            "rate 1 takes all"
        );
        assert!(!ids.iter().any(|id| sampled(id, 0)), "rate 0 takes none");
    }
}
