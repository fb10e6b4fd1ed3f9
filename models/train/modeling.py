"""The emotion classifier: MiniLM encoder, mean pooling over the attention mask, linear head.

The forward pass returns both outputs the ONNX graph exposes, so export.py traces exactly what was trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from common import LABELS


class EmotionModel(nn.Module):
    def __init__(self, encoder_dir: Path, dropout: float = 0.1, attn_implementation: str = "sdpa"):
        super().__init__()
        config = AutoConfig.from_pretrained(encoder_dir, attn_implementation=attn_implementation)
        # all-MiniLM-L6-v2 was trained with mean pooling; BERT's [CLS] pooler is unused, so drop it.
        self.encoder = AutoModel.from_pretrained(encoder_dir, config=config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, len(LABELS))

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        logits = self.head(self.dropout(pooled))
        embedding = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return logits, embedding
