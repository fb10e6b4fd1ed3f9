"""Evaluate the shipped model on the customer-service TEST split (per language) and on GoEmotions dev.

    python evaluate.py                                   # int8 (+ fp32, fp16 when present), printed
    python evaluate.py --write ../emotion/metrics.json
    python evaluate.py --model-dir /path/to/emotion-minilm --only int8   # another artifact dir (e.g. v1)

Variants: int8 (models/emotion/model.int8.onnx), fp32 (export.py's graph in the cache, if present) and fp16
(models/emotion/model.fp16.onnx from derive_fp16.py, if present). Each is scored with its directory's
tokenizer.json and labels.json thresholds through the worker's rules (common.derive): predicted labels =
{p_i >= t_i} plus the primary label. Graph inputs are fed by name, so the v1 MiniLM (which also takes
token_type_ids) is scored the same way.

The cs-seed test split is never used for training, model selection or threshold tuning (train.py tunes on
dev); "zh" includes the code-switched ("mixed") messages. Per language: negative-vs-not accuracy (any of
anger, frustration, disappointment, anxiety among the predicted labels vs in the gold labels), 8-label
macro-F1 and per-label precision/recall/F1 on the predicted label sets, top-1 (primary label is a gold
label), the confusion matrix of gold label vs primary label, and calibration of the primary label's
confidence (expected calibration error over 10 equal-width bins, and the reliability table). The GoEmotions
dev thresholds were tuned on that same split (together with cs-seed dev), so its F1 is slightly optimistic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common import (
    ARTIFACT_DIR,
    CACHE_DIR,
    INFER_MAX_LEN,
    LABELS,
    NEGATIVE,
    derive,
    f1_scores,
    load_split,
    load_tokenizer,
    pad_batch,
)
from corpora import load_seed


def default_variants(model_dir: Path) -> dict[str, Path]:
    candidates = {
        "int8": model_dir / "model.int8.onnx",
        "fp32": CACHE_DIR / "emotion-onnx" / "model.fp32.onnx",
        "fp16": model_dir / "model.fp16.onnx",
    }
    if model_dir != ARTIFACT_DIR:
        candidates.pop("fp32")
    return {name: path for name, path in candidates.items() if path.exists()}


def run_logits(path: Path, encodings, threads: int, providers: list[str], batch_size: int = 64) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=providers)
    wanted = [i.name for i in sess.get_inputs()]
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")  # little padding per batch
    logits = np.zeros((len(encodings), len(LABELS)), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        feed = pad_batch([encodings[j] for j in idx])
        if "token_type_ids" in wanted:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        logits[idx] = sess.run(["logits"], feed)[0]
    return logits


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    edges = np.linspace(0, 1, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (confidence >= lo) & ((confidence < hi) if hi < 1 else (confidence <= hi))
        if m.any():
            acc, conf = float(correct[m].mean()), float(confidence[m].mean())
            ece += m.mean() * abs(acc - conf)
            table.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(m.sum()), "confidence": round(conf, 3),
                          "accuracy": round(acc, 3)})
    return {"ece": round(float(ece), 4), "reliability": table}


def score(logits: np.ndarray, gold: np.ndarray, thresholds: np.ndarray, detail: bool = True) -> dict:
    out = derive(logits, thresholds)
    pred, g = out["labels"], gold.astype(bool)
    neg = [LABELS.index(n) for n in NEGATIVE]
    tp = (g & pred).sum(0)
    precision = np.where(pred.sum(0) > 0, tp / np.maximum(pred.sum(0), 1), 0.0)
    recall = np.where(g.sum(0) > 0, tp / np.maximum(g.sum(0), 1), 0.0)
    f1 = f1_scores(g, pred)
    correct = g[np.arange(len(g)), out["primary"]]
    res = {
        "n": int(len(g)),
        "negative_vs_not_accuracy": round(float((pred[:, neg].any(1) == g[:, neg].any(1)).mean()), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "top1_accuracy": round(float(correct.mean()), 4),
    }
    if detail:
        res["per_label"] = {
            label: {"precision": round(float(p), 3), "recall": round(float(r), 3), "f1": round(float(f), 3),
                    "support": int(s)}
            for label, p, r, f, s in zip(LABELS, precision, recall, f1, g.sum(0))
        }
        first_gold = np.argmax(g, axis=1)  # the seed set has one label per message
        cm = np.zeros((len(LABELS), len(LABELS)), dtype=int)
        np.add.at(cm, (first_gold, out["primary"]), 1)
        res["confusion_gold_rows_primary_cols"] = {label: dict(zip(LABELS, map(int, row))) for label, row in zip(LABELS, cm)}
        res["calibration_primary"] = calibration(out["confidence"], correct)
    return res


def print_block(name: str, r: dict) -> None:
    print(f"  {name:6s} n={r['n']:4d} neg-vs-not {r['negative_vs_not_accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
          f"top-1 {r['top1_accuracy']:.4f}" + (f"  ECE {r['calibration_primary']['ece']:.3f}" if "calibration_primary" in r else ""))
    if "per_label" in r:
        print("         " + " ".join(f"{k[:6]}={v['f1']:.2f}" for k, v in r["per_label"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=ARTIFACT_DIR, help="artifact dir: tokenizer.json, labels.json")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PATH", help="add or replace a variant")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--write", type=Path, default=None, help="write the metrics JSON here")
    args = ap.parse_args()

    variants = default_variants(args.model_dir)
    for spec in args.variant:
        name, _, path = spec.partition("=")
        variants[name] = Path(path)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    providers = ["CPUExecutionProvider"]
    if args.cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")

    meta = json.loads((args.model_dir / "labels.json").read_text())
    thresholds = np.array([meta["thresholds"][label] for label in LABELS])
    tok = load_tokenizer(args.model_dir / "tokenizer.json", min(INFER_MAX_LEN, meta.get("max_seq_len", 128)))
    cs_texts, cs_gold, cs_langs = load_seed("test")
    is_en = np.array([lang == "en" for lang in cs_langs])
    go_texts, go_gold = load_split("dev")
    cs_enc, go_enc = tok.encode_batch(cs_texts), tok.encode_batch(go_texts)
    zh_lengths = [len(e.ids) for e, en in zip(cs_enc, is_en) if not en]
    en_lengths = [len(e.ids) for e, en in zip(cs_enc, is_en) if en]

    results, primaries = {}, {}
    for name, path in variants.items():
        cs_logits = run_logits(path, cs_enc, args.threads, providers)
        go_logits = run_logits(path, go_enc, args.threads, providers)
        detail = name == "int8"
        r = {
            "cs_test": {
                "en": score(cs_logits[is_en], cs_gold[is_en], thresholds, detail),
                "zh": score(cs_logits[~is_en], cs_gold[~is_en], thresholds, detail),
                "all": score(cs_logits, cs_gold, thresholds, detail),
            },
            "goemotions_dev": score(go_logits, go_gold, thresholds, detail=False),
        }
        r["goemotions_dev"]["per_label_f1"] = dict(zip(LABELS, np.round(f1_scores(go_gold, derive(go_logits, thresholds)["labels"]), 4).tolist()))
        results[name] = r
        primaries[name] = np.concatenate([derive(cs_logits, thresholds)["primary"], derive(go_logits, thresholds)["primary"]])
        print(f"{name} ({path})")
        for lang in ("en", "zh", "all"):
            print_block(f"cs {lang}", r["cs_test"][lang])
        print_block("go dev", r["goemotions_dev"])

    agreement = {
        f"{a}_vs_{b}_top1": round(float((primaries[a] == primaries[b]).mean()), 4)
        for a, b in [("int8", "fp32"), ("fp16", "fp32"), ("fp16", "int8")]
        if a in primaries and b in primaries
    }
    for k, v in agreement.items():
        print(f"agreement (cs test + goemotions dev) {k}: {v:.4f}")
    print(f"tokens per message (incl. <s></s>), cs test: en median {int(np.median(en_lengths))} / p90 "
          f"{int(np.percentile(en_lengths, 90))}, zh median {int(np.median(zh_lengths))} / p90 {int(np.percentile(zh_lengths, 90))}")

    if args.write:
        metrics = {
            "model_version": meta["model_version"],
            "splits": {"cs_test": "models/train/data/cs-seed/split/test.jsonl (zh includes mixed)",
                       "goemotions_dev": "models/train/data/goemotions/dev.tsv"},
            "thresholds": meta["thresholds"],
            "onnxruntime": ort.__version__,
            "variants": results,
            "agreement": agreement,
            "cs_test_tokens": {"en_median": float(np.median(en_lengths)), "zh_median": float(np.median(zh_lengths))},
        }
        args.write.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
