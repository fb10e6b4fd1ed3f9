//! The model's label spec (`labels.json`) and the one place where logits become an emotion
//! result's scores, labels, valence and negativity (the formula is documented in MODEL.md).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::message::Emotion;

use super::ModelError;

/// `labels.json` as shipped beside the model.
#[derive(Debug, Clone, Deserialize)]
pub struct LabelSpec {
    pub model_version: String,
    pub labels: Vec<String>,
    /// Decision threshold per label, tuned on dev.
    pub thresholds: BTreeMap<String, f32>,
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
}

fn default_max_seq_len() -> usize {
    128
}

/// Scores of one message, derived from its logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub primary: Emotion,
    pub labels: Vec<Emotion>,
    /// Sigmoid probability per label, in [`Emotion::ALL`] order.
    pub probs: [f32; 8],
    pub confidence: f32,
    pub valence: f32,
    pub negativity: f32,
}

impl Scored {
    pub fn scores_map(&self) -> BTreeMap<String, f32> {
        Emotion::ALL
            .iter()
            .zip(self.probs)
            .map(|(e, p)| (e.as_str().to_string(), p))
            .collect()
    }
}

/// Turns logits into [`Scored`] results with per-label thresholds.
#[derive(Debug, Clone)]
pub struct Scorer {
    pub model_version: String,
    thresholds: [f32; 8],
}

impl Scorer {
    pub fn load(path: &Path) -> Result<(Scorer, LabelSpec), ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Files(format!("cannot read {}: {e}", path.display())))?;
        let spec: LabelSpec = serde_json::from_str(&text)
            .map_err(|e| ModelError::Files(format!("invalid {}: {e}", path.display())))?;
        Ok((Scorer::from_spec(&spec)?, spec))
    }

    pub fn from_spec(spec: &LabelSpec) -> Result<Scorer, ModelError> {
        let expected: Vec<&str> = Emotion::ALL.iter().map(|e| e.as_str()).collect();
        if spec.labels != expected {
            return Err(ModelError::Files(format!(
                "labels.json lists {:?}; moodstream expects {:?} in that order",
                spec.labels, expected
            )));
        }
        let mut thresholds = [0.5f32; 8];
        for (t, e) in thresholds.iter_mut().zip(Emotion::ALL) {
            if let Some(v) = spec.thresholds.get(e.as_str()) {
                *t = v.clamp(1e-3, 0.999);
            }
        }
        Ok(Scorer {
            model_version: spec.model_version.clone(),
            thresholds,
        })
    }

    /// p = sigmoid(logit); q = p / Σp; negativity = Σ_neg q; valence = Σ_pos q − Σ_neg q;
    /// primary = argmax p/threshold; labels = {p ≥ threshold} ∪ {primary}.
    pub fn score(&self, logits: &[f32]) -> Scored {
        let mut probs = [0f32; 8];
        for (p, l) in probs.iter_mut().zip(logits) {
            *p = 1.0 / (1.0 + (-l).exp());
        }
        let total: f32 = probs.iter().sum::<f32>().max(f32::MIN_POSITIVE);
        let share = |pred: fn(Emotion) -> bool| -> f32 {
            Emotion::ALL
                .iter()
                .zip(probs)
                .filter(|(e, _)| pred(**e))
                .map(|(_, p)| p)
                .sum::<f32>()
                / total
        };
        let negativity = share(Emotion::is_negative).clamp(0.0, 1.0);
        let valence = (share(Emotion::is_positive) - negativity).clamp(-1.0, 1.0);
        let primary_idx = (0..8)
            .max_by(|&a, &b| {
                (probs[a] / self.thresholds[a]).total_cmp(&(probs[b] / self.thresholds[b]))
            })
            .unwrap_or(7);
        let primary = Emotion::ALL[primary_idx];
        let labels = Emotion::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| probs[*i] >= self.thresholds[*i] || *i == primary_idx)
            .map(|(_, e)| *e)
            .collect();
        Scored {
            primary,
            labels,
            probs,
            confidence: probs[primary_idx],
            valence,
            negativity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer() -> Scorer {
        let spec = LabelSpec {
            model_version: "test".into(),
            labels: Emotion::ALL
                .iter()
                .map(|e| e.as_str().to_string())
                .collect(),
            thresholds: [("anger".to_string(), 0.2f32)].into_iter().collect(),
            max_seq_len: 128,
        };
        Scorer::from_spec(&spec).expect("valid spec")
    }

    #[test]
    fn primary_is_relative_to_threshold_and_always_labelled() {
        // anger p≈0.27 over a 0.2 threshold beats neutral p≈0.5 over 0.5.
        let s = scorer().score(&[-1.0, -5.0, -5.0, -5.0, -5.0, -5.0, -5.0, 0.0]);
        assert_eq!(s.primary, Emotion::Anger);
        assert_eq!(s.labels, vec![Emotion::Anger, Emotion::Neutral]);
        assert!((s.confidence - 0.2689).abs() < 1e-3);
    }

    #[test]
    fn valence_and_negativity_stay_in_range() {
        let angry = scorer().score(&[5.0, 5.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0]);
        assert!(angry.negativity > 0.99 && angry.valence < -0.99);
        let happy = scorer().score(&[-9.0, -9.0, -9.0, -9.0, -9.0, 5.0, 5.0, -9.0]);
        assert!(happy.negativity < 0.01 && happy.valence > 0.99);
        let flat = scorer().score(&[0.0; 8]);
        assert!((flat.negativity - 0.5).abs() < 1e-6 && flat.valence.abs() < 0.5);
    }

    #[test]
    fn rejects_label_order_mismatch() {
        let spec = LabelSpec {
            model_version: "x".into(),
            labels: vec!["neutral".into()],
            thresholds: BTreeMap::new(),
            max_seq_len: 128,
        };
        assert!(Scorer::from_spec(&spec).is_err());
    }
}
