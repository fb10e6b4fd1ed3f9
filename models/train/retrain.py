"""Fast retrain from agent feedback (issue 17): fine-tune the shipped model's classification head on feedback
examples, write a candidate artifact directory, and run the evaluation gate (gate.py) against the current model.

    python retrain.py --feedback FILE [--out DIR] [--base-model DIR] [--tiny]      # run.sh --feedback ... runs this

Method ("head fine-tune"), CPU-only, no torch and no training checkpoint:
1. Read the feedback (feedback.py); rows whose example_id falls in the held-out fifth are never trained on.
2. From the current graph (onnx_head.find_head) take the head's input, the mean-pooled 384-d encoder output,
   as a second graph output and run it with onnxruntime (2 threads) over the training texts: the feedback
   rows plus a replay of the cs-seed train split (and, without --tiny, a sample of GoEmotions train).
3. Fine-tune the 384x8 head (+ bias), initialised from the current head (dequantised), with numpy: full-batch
   gradient descent (step 1/L, see train_head) on the weighted mean multi-label BCE (sigmoid) plus an L2 pull (l2/2)·|θ − θ₀|² towards the current
   head. Feedback rows target their label one-hot and weigh SOURCE_WEIGHTS[label_source] (relabel 1.0,
   accepted 0.5) × --feedback-weight (2); replay rows weigh 1 (all 891 cs-seed train rows; without --tiny
   also 2,000 GoEmotions train rows) and, by default, target the current head's own
   probabilities (distillation; --replay-targets gold uses the seed labels instead). With soft replay targets
   the replay gradient is exactly zero at the start, so the head moves only as far as the feedback asks, and
   the replay and the L2 term hold it near the behaviour that passed the last evaluation.
4. Write the candidate graph: the current graph with the head replaced by a float MatMul + Add holding the
   new weights (everything else stays int8; the file keeps the name model.int8.onnx so the worker loads it
   on CPU). Two checks run on every retrain: the ORIGINAL head written through the same surgery must
   reproduce the current model's logits within PARITY_TOL (it differs only by the int8 head's activation
   quantisation: measured 0.02-0.03 max abs logit, 0.12-0.14 on AVX2-only CPUs, see onnx_head), and the
   written candidate graph must reproduce the numpy head on the features within 1e-4. The int8 head is also recomputed in numpy from the features to show
   the head was read correctly (within EMULATION_TOL, by the closer of onnxruntime's two CPU kernels).
5. labels.json is the current one with model_version `<current>+ft.<sha256(feedback)[:8]>`; thresholds are
   kept (not re-tuned); tokenizer.json is copied; SHA256SUMS as in models/emotion. retrain.json records the
   data, settings, parity numbers and timings.
6. gate.run_gate compares candidate and current; exit 0 when it passes, 3 when it refuses, 2 on bad input.

Why the head only: a full fine-tune needs torch, the training checkpoint and minutes to hours; feedback
arrives in tens of examples, which a 3k-parameter head can absorb without forgetting, in seconds, from the
shipped artifact alone. What the head cannot learn (a new phrasing the encoder does not separate) needs the
full recipe (train.py) with the feedback added to its data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import gate
from common import ARTIFACT_DIR, CACHE_DIR, INFER_MAX_LEN, LABELS, derive, load_split, load_tokenizer, pad_batch, sigmoid
from corpora import load_seed
from feedback import FeedbackError, file_tag, language_group, read_feedback, split_feedback
from onnx_head import feature_model, find_head, int8_head_error, with_float_head

# Original head through the surgery vs the current graph, max abs logit: the int8 head's activation rounding
# (0.02-0.03 measured with VNNI) and, on AVX2-only x86, its int16 pair saturation (0.12-0.14 measured on an
# AMD EPYC); a misread head is off by whole logits. The two checks below are the tight ones.
PARITY_TOL = 0.3
EMULATION_TOL = 0.01  # int8 head recomputed in numpy vs the graph (≤ 3e-3 measured: rounding ties)
CANDIDATE_TOL = 1e-4  # written candidate graph vs the numpy head on the same features
ARTIFACT_FILES = ["model.int8.onnx", "tokenizer.json", "labels.json"]

# Full and --tiny settings; every one can be overridden on the command line.
# Chosen on 6 feedback files drawn from the cs-seed DEV split plus the committed fixtures (never on test
# feedback): with these, sane feedback passed the gate 8 of 8 times; --feedback-weight 5 or l2 1e-3 moved
# per-label F1 on test by 2-3 messages and was refused in 3-4 of 8 (docs/continual-learning.md).
PRESETS = {
    "full": {"steps": 300, "l2": 1e-2, "replay_goemotions": 2000, "goemotions": True},
    "tiny": {"steps": 20, "l2": 1e-2, "replay_goemotions": 0, "goemotions": False},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feedback", type=Path, required=True, help="feedback JSONL (moodstream feedback export)")
    ap.add_argument("--out", type=Path, default=CACHE_DIR / "emotion-candidate", help="candidate artifact directory")
    ap.add_argument("--base-model", type=Path, default=ARTIFACT_DIR, help="the current model (default models/emotion)")
    ap.add_argument("--tiny", action="store_true", help="20 steps, no GoEmotions in replay or gate: the CI smoke run")
    ap.add_argument("--steps", type=int, help="full-batch gradient steps (full 300, tiny 20)")
    ap.add_argument("--lr", type=float, default=None, help="step size (default 1/L, see train_head)")
    ap.add_argument("--l2", type=float, help="pull towards the current head (1e-2)")
    ap.add_argument("--feedback-weight", type=float, default=2.0,
                    help="loss weight of a feedback row relative to a replay row, times relabel 1.0 / accepted 0.5")
    ap.add_argument("--replay-seed", type=int, default=0, help="cs-seed train rows replayed (0 = all 891)")
    ap.add_argument("--replay-goemotions", type=int, help="GoEmotions train rows replayed (full 2000, tiny 0)")
    ap.add_argument("--replay-targets", choices=["soft", "gold"], default="soft",
                    help="replay targets: the current head's probabilities (default) or the gold labels")
    ap.add_argument("--goemotions", action=argparse.BooleanOptionalAction, default=None,
                    help="gate on GoEmotions dev too (default: yes, except with --tiny)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    gate.add_tolerance_args(ap)
    args = ap.parse_args(argv)
    for key, value in PRESETS["tiny" if args.tiny else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def make_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run_batches(sess: ort.InferenceSession, encodings, outputs: list[str], batch_size: int = 64, on_batch=None):
    """`outputs` for every encoding, batched by length (little padding), in input order."""
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    results = None
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        got = sess.run(outputs, pad_batch([encodings[j] for j in idx]))
        if on_batch:
            on_batch(got)
        if results is None:
            results = [np.zeros((len(encodings),) + g.shape[1:], dtype=g.dtype) for g in got]
        for r, g in zip(results, got):
            r[idx] = g
    return results


def replay_rows(args, rng) -> tuple[list[str], np.ndarray]:
    """Replay texts and gold multi-hot labels: cs-seed train (a sample with --replay-seed N) + a GoEmotions
    sample (--replay-goemotions N)."""
    texts, gold, _ = load_seed("train")
    if 0 < args.replay_seed < len(texts):
        pick = np.sort(rng.choice(len(texts), size=args.replay_seed, replace=False))
        texts, gold = [texts[i] for i in pick], gold[pick]
    if args.replay_goemotions > 0:
        go_texts, go_gold = load_split("train")
        pick = np.sort(rng.choice(len(go_texts), size=min(args.replay_goemotions, len(go_texts)), replace=False))
        texts, gold = texts + [go_texts[i] for i in pick], np.concatenate([gold, go_gold[pick]])
    return texts, gold


def train_head(x: np.ndarray, targets: np.ndarray, weights: np.ndarray, w0: np.ndarray, b0: np.ndarray,
               steps: int, l2: float, lr: float | None = None) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """Full-batch gradient descent on
        Σ wᵢ·mean_k BCE(σ(xᵢW + b)_k, tᵢₖ) / Σ wᵢ + (l2/2)(|W − W₀|² + |b − b₀|²),
    a convex problem. The step is 1/L with L = λ_max(Xᵀ diag(w/Σw) X) / (4·labels) + l2, a bound on the
    curvature of the weight part (σ' ≤ 1/4), so descent is monotone without tuning a learning rate; `lr`
    overrides it. Returns the new weight, bias, the loss before each step and after the last, and the step."""
    x = x.astype(np.float64)
    w, b = w0.astype(np.float64).copy(), b0.astype(np.float64).copy()
    norm = weights / weights.sum()
    k = targets.shape[1]
    step = lr or 1.0 / (float(np.linalg.eigvalsh((x * norm[:, None]).T @ x).max()) / (4 * k) + l2)
    losses = []

    def loss_and_grads():
        z = x @ w + b
        # BCE with logits, numerically stable: max(z, 0) - z·t + log(1 + e^-|z|)
        bce = np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z)))
        loss = float((norm * bce.mean(axis=1)).sum() + 0.5 * l2 * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum()))
        g = (sigmoid(z) - targets) * norm[:, None] / k
        return loss, x.T @ g + l2 * (w - w0), g.sum(axis=0) + l2 * (b - b0)

    for _ in range(steps):
        loss, gw, gb = loss_and_grads()
        losses.append(loss)
        w -= step * gw
        b -= step * gb
    losses.append(loss_and_grads()[0])
    return w.astype(np.float32), b.astype(np.float32), losses, step


def top1(logits: np.ndarray, labels: list[str], thresholds: np.ndarray) -> float | None:
    if not labels:
        return None
    primary = derive(logits, thresholds)["primary"]
    return round(float(np.mean([LABELS[p] == label for p, label in zip(primary, labels)])), 4)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    timings = {}
    base, out = args.base_model.resolve(), args.out.resolve()
    missing = [f for f in ARTIFACT_FILES if not (base / f).is_file()]
    if missing:
        print(f"retrain: {base} lacks {', '.join(missing)}", file=sys.stderr)
        return gate.EXIT_USAGE
    if out == base or out == ARTIFACT_DIR.resolve():
        print(f"retrain: --out {out} would overwrite a model in service; choose another directory", file=sys.stderr)
        return gate.EXIT_USAGE
    try:
        rows = read_feedback(args.feedback)
    except FeedbackError as e:
        print(f"retrain: {e}", file=sys.stderr)
        return gate.EXIT_USAGE
    train_fb, held_out = split_feedback(rows)
    if not train_fb:
        print(f"retrain: {args.feedback} has no example to train on ({len(rows)} in all, {len(held_out)} held out)",
              file=sys.stderr)
        return gate.EXIT_USAGE
    meta = json.loads((base / "labels.json").read_text())
    thresholds = np.array([meta["thresholds"][label] for label in LABELS])
    tag = file_tag(args.feedback)
    print(f"retrain: {len(rows)} feedback examples ({len(train_fb)} to train on, {len(held_out)} held out), "
          f"base {meta['model_version']} in {base}", flush=True)

    # -- features (and the current model's logits) of every training text ------------------------------------
    t0 = time.time()
    model = onnx.load(str(base / "model.int8.onnx"))
    head = find_head(model)
    tok = load_tokenizer(base / "tokenizer.json", min(INFER_MAX_LEN, meta.get("max_seq_len", INFER_MAX_LEN)))
    rng = np.random.default_rng(args.seed)
    r_texts, r_gold = replay_rows(args, rng)
    texts = [r.text for r in train_fb] + r_texts
    emulation = []  # the int8 head recomputed in numpy, per batch (same batches as onnxruntime)

    def check_batch(got):
        if head.quantized:
            emulation.append(int8_head_error(head, got[1], got[0]))

    encodings = tok.encode_batch(texts)
    feature_session = make_session(feature_model(model, head), args.threads)
    current_logits, features = run_batches(feature_session, encodings,
                                           ["logits", head.input], on_batch=check_batch)
    timings["features_s"] = round(time.time() - t0, 2)
    if emulation and max(emulation) > EMULATION_TOL:
        raise AssertionError(f"the int8 head was not read correctly: numpy vs graph max abs {max(emulation):.4f}")

    # -- fine-tune the head ----------------------------------------------------------------------------------
    t0 = time.time()
    n_fb = len(train_fb)
    targets = np.zeros((len(texts), len(LABELS)))
    for i, r in enumerate(train_fb):
        targets[i, LABELS.index(r.label)] = 1.0
    targets[n_fb:] = sigmoid(features[n_fb:] @ head.weight + head.bias) if args.replay_targets == "soft" else r_gold
    weights = np.concatenate([[r.weight * args.feedback_weight for r in train_fb], np.ones(len(r_texts))])
    new_w, new_b, losses, step = train_head(features, targets, weights, head.weight, head.bias, args.steps, args.l2,
                                            args.lr)
    timings["train_s"] = round(time.time() - t0, 2)

    # -- write the candidate, with the parity checks -----------------------------------------------------------
    t0 = time.time()
    # Same texts in the same batches on both sides: the int8 encoder quantizes activations per batch, so a
    # text's logits also depend on its batch-mates (cs-seed dev, batches of 64 vs one at a time: median 0.36,
    # max 2.3 logits apart), which is not what this check is about.
    sample = encodings[:64]
    sample_current, sample_features = run_batches(feature_session, sample, ["logits", head.input])
    identity = run_batches(make_session(with_float_head(model, head, head.weight, head.bias), args.threads), sample,
                           ["logits"])[0]
    parity = float(np.abs(identity - sample_current).max())
    if parity > PARITY_TOL:
        raise AssertionError(f"head surgery does not reproduce the current model: max abs logit diff {parity:.4f}")
    candidate = with_float_head(model, head, new_w, new_b)
    cand_logits = run_batches(make_session(candidate, args.threads), sample, ["logits"])[0]
    cand_diff = float(np.abs(cand_logits - (sample_features @ new_w + new_b)).max())
    if cand_diff > CANDIDATE_TOL:
        raise AssertionError(f"candidate graph does not compute the trained head: max abs diff {cand_diff:.2e}")

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("gate.json", "gate.md", "retrain.json", "SHA256SUMS"):  # a previous run's verdict is not this one's
        (out / stale).unlink(missing_ok=True)
    tmp = out / "model.int8.onnx.tmp"
    onnx.save(candidate, str(tmp))
    tmp.replace(out / "model.int8.onnx")
    shutil.copyfile(base / "tokenizer.json", out / "tokenizer.json")
    labels = dict(meta, model_version=f"{meta['model_version']}+ft.{tag}")
    (out / "labels.json").write_text(json.dumps(labels, indent=2, ensure_ascii=False) + "\n")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / f)}  {f}\n" for f in ARTIFACT_FILES))
    timings["write_s"] = round(time.time() - t0, 2)

    fb_logits_after = features[:n_fb] @ new_w + new_b
    fb_labels = [r.label for r in train_fb]
    record = {
        "candidate": labels["model_version"],
        "base": {"dir": str(base), "model_version": meta["model_version"], "model_sha256": sha256(base / "model.int8.onnx")},
        "feedback": {
            "file": str(args.feedback), "sha256_8": tag, "examples": len(rows), "trained": n_fb, "held_out": len(held_out),
            "held_out_rule": "int(example_id[:8], 16) % 5 == 0",
            "trained_by_source": {s: sum(r.label_source == s for r in train_fb) for s in ("relabel", "accepted")},
            "trained_by_language": {g: sum(language_group(r.language) == g for r in train_fb) for g in ("en", "zh", "other")},
        },
        "method": "head fine-tune (numpy full-batch gradient descent, BCE + L2 to the current head) on frozen int8-encoder features",
        "settings": {"step_size": round(step, 4), **{k: getattr(args, k) for k in (
            "tiny", "steps", "lr", "l2", "feedback_weight", "replay_seed", "replay_goemotions", "replay_targets",
            "seed", "threads")}},
        "replay_rows": len(r_texts),
        "head": {"quantized_in_base": head.quantized, "input": head.input, "shape": list(head.weight.shape),
                 "weight_change_max_abs": round(float(np.abs(new_w - head.weight).max()), 5),
                 "bias_change_max_abs": round(float(np.abs(new_b - head.bias).max()), 5)},
        "loss": {"start": round(losses[0], 5), "end": round(losses[-1], 5)},
        "trained_feedback_top1": {"current_head": top1(current_logits[:n_fb], fb_labels, thresholds),
                                  "candidate_head": top1(fb_logits_after, fb_labels, thresholds)},
        "parity": {
            "int8_head_numpy_vs_graph_max_abs": max(emulation) if emulation else None,
            "original_head_through_surgery_vs_current_max_abs": round(parity, 5),
            "original_head_through_surgery_top1_agreement": round(float(
                (identity.argmax(1) == sample_current.argmax(1)).mean()), 4),
            "candidate_graph_vs_numpy_max_abs": cand_diff,
            "sample": len(sample),
        },
        "thresholds": "kept from the base labels.json (not re-tuned)",
        "timings": timings,
    }
    print(f"retrain: {args.steps} steps on {n_fb} feedback + {len(r_texts)} replay rows, loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f}; trained-feedback top-1 {record['trained_feedback_top1']}; parity: "
          f"original head through surgery vs current max abs logit {parity:.4f}, int8 head numpy vs graph "
          f"{record['parity']['int8_head_numpy_vs_graph_max_abs']}", flush=True)

    # -- gate --------------------------------------------------------------------------------------------------
    t0 = time.time()
    goemotions = args.goemotions if args.goemotions is not None else PRESETS["tiny" if args.tiny else "full"]["goemotions"]
    report = gate.run_gate(base, out, rows, out, gate.tolerances_from(args), goemotions, args.threads, str(args.feedback))
    timings["gate_s"] = round(time.time() - t0, 2)
    timings["total_s"] = round(time.time() - started, 2)
    record["gate"] = {"passed": report["passed"], "reasons": report["reasons"]}
    (out / "retrain.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    gate.print_summary(report)
    print(f"retrain: wrote {out} ({labels['model_version']}) in {timings['total_s']} s {timings}")
    return gate.EXIT_PASS if report["passed"] else gate.EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
