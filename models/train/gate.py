"""Evaluation gate for a retrained emotion model (issue 17): compare a candidate with the current model and
refuse it when it regresses beyond stated tolerances. Writes gate.json (machine-readable) and gate.md (for a
reviewer) and exits 0 when the candidate passes, 3 when it is refused (the report is written either way), 2 on
usage or input errors.

    python gate.py --current ../emotion --candidate DIR [--feedback FILE] [--goemotions] [--out DIR]

Both models are scored the same way as evaluate.py (its `run_logits` and `score`, i.e. the worker's rules in
common.derive), each with its own tokenizer.json and labels.json thresholds, on:

- the cs-seed TEST split per language ("en"; "zh" = Chinese + code-switched): macro-F1, negative-vs-not
  accuracy, top-1, and per-label F1 for labels with at least MIN_LABEL_SUPPORT test examples in that
  language. This is the only place in the retrain path that reads the test split.
- GoEmotions dev (English Reddit; --goemotions, off by default because it costs ~20 s per model on 2 cores):
  macro-F1 and negative-vs-not.
- the held-out feedback (feedback.is_held_out: never trained on): top-1 = the primary label equals the agent's
  label, per language group and overall; checked only when at least MIN_FEEDBACK_N examples, else "skipped".

A check fails when `candidate < current - tolerance`; the candidate is refused when any check fails. Metrics
may improve without limit. `decide` is that rule and nothing else (test_gate.py tests it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common import INFER_MAX_LEN, LABELS, load_split, load_tokenizer
from feedback import Feedback, FeedbackError, language_group, read_feedback, split_feedback

EXIT_PASS, EXIT_USAGE, EXIT_REFUSED = 0, 2, 3

# Largest allowed drop (candidate - current) per metric; overridable on the command line.
TOLERANCES = {
    "macro_f1": 0.02,  # per language, cs-seed test (and GoEmotions dev when scored)
    "negative_vs_not_accuracy": 0.02,  # per language
    "top1_accuracy": 0.02,  # per language, cs-seed test
    "label_f1": 0.05,  # per label and language, labels with >= MIN_LABEL_SUPPORT test examples
    "feedback_top1": 0.0,  # held-out feedback, per language group and overall, when n >= MIN_FEEDBACK_N
}
MIN_LABEL_SUPPORT = 10
MIN_FEEDBACK_N = 20
CS_LANGUAGES = ("en", "zh")
FEEDBACK_GROUPS = ("en", "zh", "other", "all")
EPS = 1e-9  # metrics are rounded to 3-4 decimals: equal means equal


@dataclass
class Check:
    name: str
    split: str
    language: str
    label: str | None
    metric: str
    current: float | None
    candidate: float | None
    delta: float | None
    tolerance: float
    n: int
    status: str  # pass | fail | skipped
    note: str = ""


def make_check(split: str, language: str, label: str | None, metric: str, current: float | None,
               candidate: float | None, tolerance: float, n: int, min_n: int = 1) -> Check:
    """One comparison: skipped when n < min_n (too few examples to mean anything), else pass/fail by the rule."""
    name = f"{split}/{language}/{label + ' ' if label else ''}{metric}"
    if n < min_n or current is None or candidate is None:
        return Check(name, split, language, label, metric, current, candidate, None, tolerance, n, "skipped",
                     f"skipped: n = {n} < {min_n}")
    delta = round(candidate - current, 4)
    status = "fail" if candidate < current - tolerance - EPS else "pass"
    return Check(name, split, language, label, metric, current, candidate, delta, tolerance, n, status)


def compare(current: dict, candidate: dict, tolerances: dict[str, float] = TOLERANCES) -> list[Check]:
    """All checks from two metric dicts as `evaluate_model` returns them (same splits on both sides)."""
    tol = {**TOLERANCES, **tolerances}
    checks = []
    for lang in CS_LANGUAGES:
        cur, cand = current["cs_test"][lang], candidate["cs_test"][lang]
        for metric in ("macro_f1", "negative_vs_not_accuracy", "top1_accuracy"):
            checks.append(make_check("cs_test", lang, None, metric, cur[metric], cand[metric], tol[metric], cur["n"]))
        for label in LABELS:
            c, d = cur["per_label"][label], cand["per_label"][label]
            checks.append(make_check("cs_test", lang, label, "f1", c["f1"], d["f1"], tol["label_f1"], c["support"],
                                     MIN_LABEL_SUPPORT))
    if "goemotions_dev" in current and "goemotions_dev" in candidate:
        cur, cand = current["goemotions_dev"], candidate["goemotions_dev"]
        for metric in ("macro_f1", "negative_vs_not_accuracy"):
            checks.append(make_check("goemotions_dev", "en", None, metric, cur[metric], cand[metric], tol[metric],
                                     cur["n"]))
    fb_cur, fb_cand = current.get("feedback_held_out", {}), candidate.get("feedback_held_out", {})
    for group in FEEDBACK_GROUPS:
        cur, cand = fb_cur.get(group, {"n": 0}), fb_cand.get(group, {"n": 0})
        if group != "all" and cur["n"] == 0:
            continue  # no held-out example in this language: nothing to report beyond "all"
        checks.append(make_check("feedback_held_out", group, None, "top1_accuracy", cur.get("top1_accuracy"),
                                 cand.get("top1_accuracy"), tol["feedback_top1"], cur["n"], MIN_FEEDBACK_N))
    return checks


def decide(checks: list[Check]) -> tuple[bool, list[str]]:
    """(passed, reasons): refused when any check failed; one reason per failed check."""
    reasons = [
        f"{c.split} {c.language}{' ' + c.label if c.label else ''} {c.metric} fell from {c.current:.4f} to "
        f"{c.candidate:.4f} ({c.delta:+.4f}; allowed drop {c.tolerance:.4f}, n = {c.n})"
        for c in checks if c.status == "fail"
    ]
    return not reasons, reasons


# ---- scoring -------------------------------------------------------------------------------------------------

def load_eval_sets(goemotions: bool) -> dict:
    """Texts and gold labels of the gate's fixed splits (reads the cs-seed test split: the gate only)."""
    from corpora import load_seed

    texts, gold, langs = load_seed("test")
    sets = {"cs_test": (texts, gold, [language_group(lang) for lang in langs])}
    if goemotions:
        go_texts, go_gold = load_split("dev")
        sets["goemotions_dev"] = (go_texts, go_gold, ["en"] * len(go_texts))
    return sets


def feedback_set(rows: list[Feedback]) -> tuple[list[str], np.ndarray, list[str]]:
    gold = np.zeros((len(rows), len(LABELS)), dtype=np.float32)
    for i, r in enumerate(rows):
        gold[i, LABELS.index(r.label)] = 1.0
    return [r.text for r in rows], gold, [language_group(r.language) for r in rows]


def evaluate_model(model_dir: Path, sets: dict, held_out: list[Feedback], threads: int = 2) -> dict:
    """Metrics of one artifact directory (model.int8.onnx, tokenizer.json, labels.json) on the gate's sets."""
    from evaluate import run_logits, score

    meta = json.loads((model_dir / "labels.json").read_text())
    if meta["labels"] != LABELS:
        raise ValueError(f"{model_dir}/labels.json: label order {meta['labels']} differs from {LABELS}")
    thresholds = np.array([meta["thresholds"][label] for label in LABELS])
    tok = load_tokenizer(model_dir / "tokenizer.json", min(INFER_MAX_LEN, meta.get("max_seq_len", INFER_MAX_LEN)))
    providers = ["CPUExecutionProvider"]
    path = model_dir / "model.int8.onnx"
    out = {"model_version": meta["model_version"]}

    def run(texts):
        return run_logits(path, tok.encode_batch(texts), threads, providers) if texts else np.zeros((0, len(LABELS)))

    texts, gold, langs = sets["cs_test"]
    logits, langs = run(texts), np.array(langs)
    out["cs_test"] = {lang: _plain(score(logits[langs == lang], gold[langs == lang], thresholds)) for lang in CS_LANGUAGES}
    if "goemotions_dev" in sets:
        texts, gold, _ = sets["goemotions_dev"]
        out["goemotions_dev"] = _plain(score(run(texts), gold, thresholds, detail=False))
    texts, gold, langs = feedback_set(held_out)
    logits, langs = run(texts), np.array(langs)
    out["feedback_held_out"] = {}
    for group in FEEDBACK_GROUPS:
        m = np.ones(len(texts), bool) if group == "all" else langs == group
        if m.any():
            out["feedback_held_out"][group] = {k: v for k, v in score(logits[m], gold[m], thresholds, detail=False).items()
                                               if k in ("n", "top1_accuracy")}
        else:
            out["feedback_held_out"][group] = {"n": 0}
    return out


def _plain(result: dict) -> dict:
    """evaluate.score's dict without the parts the gate does not compare (confusion, calibration)."""
    return {k: v for k, v in result.items() if k not in ("confusion_gold_rows_primary_cols", "calibration_primary")}


# ---- report ----------------------------------------------------------------------------------------------------

def run_gate(current_dir: Path, candidate_dir: Path, feedback_rows: list[Feedback] | None, out_dir: Path,
             tolerances: dict[str, float] | None = None, goemotions: bool = False, threads: int = 2,
             feedback_file: str | None = None) -> dict:
    """Score both models, decide, write gate.json and gate.md into out_dir; returns the gate.json dict."""
    started = time.time()
    tol = {**TOLERANCES, **(tolerances or {})}
    train_rows, held_out = split_feedback(feedback_rows or [])
    sets = load_eval_sets(goemotions)
    current = evaluate_model(current_dir, sets, held_out, threads)
    candidate = evaluate_model(candidate_dir, sets, held_out, threads)
    checks = compare(current, candidate, tol)
    passed, reasons = decide(checks)
    # A feedback text that is also a test message would make the test numbers optimistic: say so.
    test_texts = set(sets["cs_test"][0])
    overlap = sum(r.text in test_texts for r in train_rows)
    warnings = [f"{overlap} trained feedback example(s) have the exact text of a cs-seed test message: the test "
                f"numbers of the candidate are optimistic"] if overlap else []
    report = {
        "passed": passed,
        "current": current["model_version"],
        "candidate": candidate["model_version"],
        "current_dir": str(current_dir),
        "candidate_dir": str(candidate_dir),
        "feedback_file": feedback_file,
        "feedback": {"trained": len(train_rows), "held_out": len(held_out),
                     "held_out_rule": "int(example_id[:8], 16) % 5 == 0"},
        "tolerances": tol,
        "min_label_support": MIN_LABEL_SUPPORT,
        "min_feedback_n": MIN_FEEDBACK_N,
        "splits": {
            "cs_test": "models/train/data/cs-seed/split/test.jsonl (zh includes code-switched)",
            **({"goemotions_dev": "models/train/data/goemotions/dev.tsv"} if goemotions else {}),
            "feedback_held_out": "held-out rows of the feedback file",
        },
        "checks": [asdict(c) for c in checks],
        "reasons": reasons,
        "warnings": warnings,
        "metrics": {"current": current, "candidate": candidate},
        "seconds": round(time.time() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gate.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "gate.md").write_text(markdown(report, checks))
    return report


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def markdown(report: dict, checks: list[Check]) -> str:
    fb = report["feedback"]
    lines = [
        f"# Evaluation gate: {'PASSED' if report['passed'] else 'REFUSED'}",
        "",
        f"Candidate `{report['candidate']}` ({report['candidate_dir']}) against current `{report['current']}` "
        f"({report['current_dir']}).",
        "",
        f"Feedback: {report['feedback_file'] or 'none'} — {fb['trained']} example(s) trained on, {fb['held_out']} held "
        f"out ({fb['held_out_rule']}; never trained on).",
        "",
        "Compared on: " + "; ".join(f"`{k}` = {v}" for k, v in report["splits"].items()) + ". Each model is scored "
        "with its own tokenizer and labels.json thresholds, by the worker's rules (evaluate.py / common.derive).",
        "",
        "Rule: a check fails when the candidate is below the current model by more than the tolerance; any failed "
        f"check refuses the candidate. Per-label F1 only for labels with ≥ {report['min_label_support']} test "
        f"examples in that language; held-out feedback only with ≥ {report['min_feedback_n']} examples.",
        "",
    ]
    if report["passed"]:
        lines += ["**Decision: passed** — no check fell by more than its tolerance.", ""]
    else:
        lines += ["**Decision: refused** because:", ""] + [f"- {r}" for r in report["reasons"]] + [""]
    lines += [f"Warning: {w}" for w in report["warnings"]] + ([""] if report["warnings"] else [])
    lines += ["| check | n | current | candidate | delta | allowed drop | status |",
              "|---|---|---|---|---|---|---|"]
    for c in checks:
        status = {"pass": "pass", "fail": "**FAIL**", "skipped": c.note or "skipped"}[c.status]
        lines.append(f"| {c.name} | {c.n} | {_fmt(c.current)} | {_fmt(c.candidate)} | "
                     f"{'' if c.delta is None else f'{c.delta:+.4f}'} | {c.tolerance:.2f} | {status} |")
    lines += ["", f"Gate time: {report['seconds']} s.", ""]
    return "\n".join(lines)


def add_tolerance_args(ap: argparse.ArgumentParser) -> None:
    """--tol-<metric> flags for every tolerance (shared with retrain.py)."""
    for key, value in TOLERANCES.items():
        ap.add_argument(f"--tol-{key.replace('_', '-')}", type=float, default=value, dest=f"tol_{key}",
                        help=f"allowed drop of {key} (default {value})")


def tolerances_from(args: argparse.Namespace) -> dict[str, float]:
    return {key: getattr(args, f"tol_{key}") for key in TOLERANCES}


def main(argv: list[str] | None = None) -> int:
    from common import ARTIFACT_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--current", type=Path, default=ARTIFACT_DIR, help="the model in service (default models/emotion)")
    ap.add_argument("--candidate", type=Path, required=True, help="the retrained artifact directory")
    ap.add_argument("--feedback", type=Path, default=None, help="the feedback JSONL the candidate was trained on")
    ap.add_argument("--out", type=Path, default=None, help="where gate.json and gate.md go (default: --candidate)")
    ap.add_argument("--goemotions", action="store_true", help="also compare on GoEmotions dev (~20 s per model)")
    ap.add_argument("--threads", type=int, default=2)
    add_tolerance_args(ap)
    args = ap.parse_args(argv)
    for d in (args.current, args.candidate):
        if not (d / "model.int8.onnx").is_file() or not (d / "labels.json").is_file():
            print(f"gate: {d} has no model.int8.onnx / labels.json", file=sys.stderr)
            return EXIT_USAGE
    try:
        rows = read_feedback(args.feedback) if args.feedback else []
    except FeedbackError as e:
        print(f"gate: {e}", file=sys.stderr)
        return EXIT_USAGE
    report = run_gate(args.current, args.candidate, rows, args.out or args.candidate, tolerances_from(args),
                      args.goemotions, args.threads, str(args.feedback) if args.feedback else None)
    print_summary(report)
    return EXIT_PASS if report["passed"] else EXIT_REFUSED


def print_summary(report: dict) -> None:
    counts = {s: sum(c["status"] == s for c in report["checks"]) for s in ("pass", "fail", "skipped")}
    print(f"gate: {'PASSED' if report['passed'] else 'REFUSED'} {report['candidate']} vs {report['current']} "
          f"({counts['pass']} pass, {counts['fail']} fail, {counts['skipped']} skipped; {report['seconds']} s)")
    for r in report["reasons"]:
        print(f"gate: refused: {r}")
    for w in report["warnings"]:
        print(f"gate: warning: {w}")


if __name__ == "__main__":
    sys.exit(main())
