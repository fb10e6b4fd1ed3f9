"""Evaluate the shipped model variants on the GoEmotions dev split (mapped to moodstream's 8 labels).

    python evaluate.py                              # every variant found, printed as a table
    python evaluate.py --write ../emotion-minilm/metrics.json
    python evaluate.py --variant deq=/tmp/model.fp32.onnx

Variants: int8 (the shipped models/emotion-minilm/model.int8.onnx), fp32 (export.py's graph in the cache,
if present) and fp16 (models/emotion-minilm/model.fp16.onnx from derive_fp16.py, if present). Each is scored
with the shipped tokenizer.json and labels.json thresholds, through the same rules the worker applies
(common.derive): predicted labels = {p_i >= t_i} plus the primary label.

Note: the thresholds were tuned on this same dev split, so the tuned F1s are optimistic; `macro_f1_crossfit`
(thresholds tuned on one half of dev, scored on the other, both ways) is the honest estimate.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common import (
    ARTIFACT_DIR,
    INFER_MAX_LEN,
    LABELS,
    NEGATIVE,
    OUTPUT_NAMES,
    derive,
    f1_scores,
    load_split,
    load_tokenizer,
    pad_batch,
    read_labels_json,
    sigmoid,
    tune_thresholds,
)


def default_variants() -> dict[str, Path]:
    cache = Path(os.environ.get("MOODSTREAM_CACHE", Path.home() / ".cache" / "moodstream"))
    candidates = {
        "int8": ARTIFACT_DIR / "model.int8.onnx",
        "fp32": cache / "emotion-minilm-onnx" / "model.fp32.onnx",
        "fp16": ARTIFACT_DIR / "model.fp16.onnx",
    }
    return {name: path for name, path in candidates.items() if path.exists()}


def run_logits(path: Path, encodings, threads: int, providers: list[str], batch_size: int = 64) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")  # little padding per batch
    logits = np.zeros((len(encodings), len(LABELS)), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        logits[idx] = sess.run([OUTPUT_NAMES[0]], pad_batch([encodings[j] for j in idx]))[0]
    return logits


def crossfit_macro_f1(logits: np.ndarray, gold: np.ndarray, seed: int = 0) -> float:
    """Macro-F1 with thresholds tuned on the other half of dev (2-fold, averaged): no tuning on scored rows."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(gold)), 2)
    probs = sigmoid(logits)
    scores = []
    for tune, test in (halves, halves[::-1]):
        t = tune_thresholds(probs[tune], gold[tune])
        scores.append(f1_scores(gold[test], derive(logits[test], t)["labels"]).mean())
    return float(np.mean(scores))


def score(logits: np.ndarray, gold: np.ndarray, thresholds: np.ndarray) -> dict:
    out = derive(logits, thresholds)
    f1 = f1_scores(gold, out["labels"])
    neg = [LABELS.index(n) for n in NEGATIVE]
    gold_bool = gold.astype(bool)
    return {
        "macro_f1": round(float(f1.mean()), 4),
        "macro_f1_crossfit": round(crossfit_macro_f1(logits, gold), 4),
        "per_label_f1": {label: round(float(v), 4) for label, v in zip(LABELS, f1)},
        "top1_accuracy": round(float(gold_bool[np.arange(len(gold)), out["primary"]].mean()), 4),
        "negative_vs_not_accuracy": round(
            float((out["labels"][:, neg].any(axis=1) == gold_bool[:, neg].any(axis=1)).mean()), 4
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH", help="add or replace a variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cuda", action="store_true", help="run on the CUDA execution provider when available")
    ap.add_argument("--write", type=Path, default=None, help="write the metrics JSON here")
    args = ap.parse_args()

    variants = default_variants()
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants[name] = Path(path)
    providers = ["CPUExecutionProvider"]
    if args.cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")

    meta = read_labels_json()
    thresholds = np.array([meta["thresholds"][label] for label in LABELS])
    texts, gold = load_split("dev")
    encodings = load_tokenizer(ARTIFACT_DIR / "tokenizer.json", INFER_MAX_LEN).encode_batch(texts)

    results, primaries = {}, {}
    for name, path in variants.items():
        logits = run_logits(path, encodings, args.threads, providers)
        results[name] = score(logits, gold, thresholds)
        primaries[name] = derive(logits, thresholds)["primary"]
        r = results[name]
        print(f"{name:5s} macro-F1 {r['macro_f1']:.4f} (crossfit {r['macro_f1_crossfit']:.4f})  "
              f"top-1 {r['top1_accuracy']:.4f}  negative-vs-not {r['negative_vs_not_accuracy']:.4f}  "
              + " ".join(f"{k}={v:.3f}" for k, v in r["per_label_f1"].items()), flush=True)

    agreement = {
        f"{a}_vs_{b}_top1": round(float((primaries[a] == primaries[b]).mean()), 4)
        for a, b in [("int8", "fp32"), ("fp16", "fp32"), ("fp16", "int8")]
        if a in primaries and b in primaries
    }
    for k, v in agreement.items():
        print(f"agreement {k}: {v:.4f}")

    if args.write:
        metrics = {
            "model_version": meta["model_version"],
            "split": "goemotions-dev",
            "examples": len(texts),
            "thresholds": meta["thresholds"],
            "onnxruntime": ort.__version__,
            "variants": results,
            "agreement": agreement,
        }
        args.write.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
