//! Tokenization with the model's own `tokenizer.json` (Hugging Face `tokenizers`).

use std::path::Path;

use tokenizers::{TruncationParams, TruncationStrategy};

use super::ModelError;

/// One tokenized text, truncated to the model's max length, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Thread-safe: tokenizer threads share one instance behind an `Arc`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn load(path: &Path, max_len: usize) -> Result<Tokenizer, ModelError> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Files(format!("cannot load {}: {e}", path.display())))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        inner.with_padding(None);
        Ok(Tokenizer { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Encoded, ModelError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenize(e.to_string()))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }
}
