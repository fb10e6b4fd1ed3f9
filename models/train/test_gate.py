"""Tests of the evaluation gate (gate.py): the decision rule on synthetic metrics, then the whole gate on the
shipped model against itself and against a deliberately broken candidate.

    python -m unittest discover -s models/train -p 'test_*.py'     # with the venv-retrain python
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
import unittest
from pathlib import Path

import numpy as np

import gate
from common import ARTIFACT_DIR, LABELS


def metrics(macro=0.85, neg=0.90, top1=0.84, label_f1=0.80, support=20, held_out=None) -> dict:
    """A metric dict shaped like gate.evaluate_model's, every language alike."""
    lang = {
        "n": 150, "macro_f1": macro, "negative_vs_not_accuracy": neg, "top1_accuracy": top1,
        "per_label": {label: {"f1": label_f1, "support": support} for label in LABELS},
    }
    return {
        "model_version": "m",
        "cs_test": {"en": copy.deepcopy(lang), "zh": copy.deepcopy(lang)},
        "feedback_held_out": held_out if held_out is not None else {"all": {"n": 0}},
    }


def by_name(checks: list[gate.Check]) -> dict[str, gate.Check]:
    return {c.name: c for c in checks}


class DecisionRule(unittest.TestCase):
    def test_macro_f1_drop_beyond_tolerance_is_refused_with_a_reason(self):
        current, candidate = metrics(), metrics()
        candidate["cs_test"]["zh"]["macro_f1"] = 0.85 - 0.03  # tolerance 0.02
        passed, reasons = gate.decide(gate.compare(current, candidate))
        self.assertFalse(passed)
        self.assertEqual(len(reasons), 1)
        self.assertIn("cs_test zh macro_f1 fell from 0.8500 to 0.8200", reasons[0])
        self.assertIn("allowed drop 0.0200", reasons[0])

    def test_drop_within_tolerance_passes(self):
        candidate = metrics(macro=0.835, neg=0.885, top1=0.825, label_f1=0.76)
        passed, reasons = gate.decide(gate.compare(metrics(), candidate))
        self.assertTrue(passed, reasons)

    def test_drop_of_exactly_the_tolerance_passes(self):
        candidate = metrics(macro=0.83, neg=0.88, top1=0.82, label_f1=0.75)
        self.assertTrue(gate.decide(gate.compare(metrics(), candidate))[0])

    def test_improvement_passes(self):
        self.assertTrue(gate.decide(gate.compare(metrics(), metrics(macro=0.95, neg=0.99, label_f1=0.9)))[0])

    def test_negative_accuracy_and_label_f1_drops_are_refused(self):
        candidate = metrics()
        candidate["cs_test"]["en"]["negative_vs_not_accuracy"] = 0.87
        candidate["cs_test"]["en"]["per_label"]["anger"]["f1"] = 0.74
        checks = by_name(gate.compare(metrics(), candidate))
        self.assertEqual(checks["cs_test/en/negative_vs_not_accuracy"].status, "fail")
        self.assertEqual(checks["cs_test/en/anger f1"].status, "fail")
        self.assertEqual(checks["cs_test/en/frustration f1"].status, "pass")
        self.assertEqual(len(gate.decide(list(checks.values()))[1]), 2)

    def test_label_with_few_test_examples_is_skipped(self):
        current, candidate = metrics(support=gate.MIN_LABEL_SUPPORT - 1), metrics(support=gate.MIN_LABEL_SUPPORT - 1)
        candidate["cs_test"]["en"]["per_label"]["anxiety"]["f1"] = 0.1
        check = by_name(gate.compare(current, candidate))["cs_test/en/anxiety f1"]
        self.assertEqual(check.status, "skipped")
        self.assertIn("n = 9 < 10", check.note)

    def test_empty_held_out_feedback_is_skipped_not_failed(self):
        checks = gate.compare(metrics(held_out={}), metrics(held_out={}))
        held = [c for c in checks if c.split == "feedback_held_out"]
        self.assertEqual([(c.language, c.n, c.status) for c in held], [("all", 0, "skipped")])
        self.assertTrue(gate.decide(checks)[0])

    def test_small_held_out_feedback_is_skipped_even_when_it_drops(self):
        small = {"all": {"n": 8, "top1_accuracy": 1.0}, "en": {"n": 8, "top1_accuracy": 1.0}}
        worse = {"all": {"n": 8, "top1_accuracy": 0.5}, "en": {"n": 8, "top1_accuracy": 0.5}}
        checks = gate.compare(metrics(held_out=small), metrics(held_out=worse))
        self.assertTrue(all(c.status == "skipped" for c in checks if c.split == "feedback_held_out"))
        self.assertTrue(gate.decide(checks)[0])

    def test_held_out_feedback_may_not_drop_at_all_with_enough_examples(self):
        n = gate.MIN_FEEDBACK_N
        current = metrics(held_out={"all": {"n": n, "top1_accuracy": 0.80}, "zh": {"n": n, "top1_accuracy": 0.80}})
        candidate = metrics(held_out={"all": {"n": n, "top1_accuracy": 0.75}, "zh": {"n": n, "top1_accuracy": 0.80}})
        checks = by_name(gate.compare(current, candidate))
        self.assertEqual(checks["feedback_held_out/all/top1_accuracy"].status, "fail")
        self.assertEqual(checks["feedback_held_out/zh/top1_accuracy"].status, "pass")
        passed, reasons = gate.decide(list(checks.values()))
        self.assertFalse(passed)
        self.assertIn("feedback_held_out all top1_accuracy", reasons[0])

    def test_tolerance_override_changes_the_decision(self):
        candidate = metrics(macro=0.80)
        self.assertFalse(gate.decide(gate.compare(metrics(), candidate))[0])
        self.assertTrue(gate.decide(gate.compare(metrics(), candidate, {"macro_f1": 0.06}))[0])


class WholeGate(unittest.TestCase):
    """The gate through onnxruntime on the cs-seed test split (a few seconds per model)."""

    def setUp(self):  # the CLI's summary lines are not test output
        for redirect in (contextlib.redirect_stdout, contextlib.redirect_stderr):
            self.enterContext(redirect(io.StringIO()))

    def test_the_shipped_model_passes_against_itself_and_the_report_is_complete(self):
        with tempfile.TemporaryDirectory() as tmp:
            report = gate.run_gate(ARTIFACT_DIR, ARTIFACT_DIR, [], Path(tmp))
            self.assertTrue(report["passed"])
            written = json.loads((Path(tmp) / "gate.json").read_text())
            for key in ("passed", "current", "candidate", "tolerances", "checks", "reasons"):
                self.assertIn(key, written)
            for key in ("name", "split", "language", "label", "metric", "current", "candidate", "delta", "tolerance",
                        "n", "status"):
                self.assertIn(key, written["checks"][0])
            self.assertTrue(all(c["delta"] in (0, None) for c in written["checks"]))
            self.assertIn("PASSED", (Path(tmp) / "gate.md").read_text())

    def test_a_candidate_with_a_broken_head_is_refused_with_exit_3(self):
        import onnx

        from onnx_head import find_head, with_float_head

        model = onnx.load(str(ARTIFACT_DIR / "model.int8.onnx"))
        head = find_head(model)
        rng = np.random.default_rng(0)
        broken = with_float_head(model, head, head.weight[:, rng.permutation(len(LABELS))], head.bias)
        with tempfile.TemporaryDirectory() as tmp:
            cand = Path(tmp)
            onnx.save(broken, str(cand / "model.int8.onnx"))
            for name in ("tokenizer.json", "labels.json"):
                (cand / name).write_bytes((ARTIFACT_DIR / name).read_bytes())
            code = gate.main(["--candidate", str(cand)])
            self.assertEqual(code, gate.EXIT_REFUSED)
            report = json.loads((cand / "gate.json").read_text())
            self.assertFalse(report["passed"])
            self.assertTrue(report["reasons"])
            self.assertIn("REFUSED", (cand / "gate.md").read_text())

    def test_missing_candidate_is_a_usage_error(self):
        self.assertEqual(gate.main(["--candidate", "/nonexistent/candidate"]), gate.EXIT_USAGE)


if __name__ == "__main__":
    unittest.main()
