"""Tests of the feedback retrain: feedback parsing and the held-out rule (feedback.py), the head surgery
(onnx_head.py), the head fine-tune (retrain.train_head) and one tiny run end to end on the committed fixture.

    python -m unittest discover -s models/train -p 'test_*.py'     # with the venv-retrain python
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import tempfile
import unittest
from pathlib import Path

import numpy as np

import retrain
from common import ARTIFACT_DIR, INFER_MAX_LEN, LABELS, TRAIN_DIR, load_tokenizer, sigmoid
from feedback import FeedbackError, file_tag, is_held_out, language_group, read_feedback, split_feedback

FIXTURE = TRAIN_DIR / "testdata" / "feedback-sane.jsonl"


def row(example_id="0123456789abcdef", **fields) -> str:
    obj = {"example_id": example_id, "text": "where is my parcel", "label": "neutral", "label_source": "relabel",
           "agents": 1, "language": "en", "channel": "chat", "tenant_id": None, "model_version": "x",
           "predicted_label": "anxiety", "feedback_at": "2026-12-04T19:00:00Z"}
    obj.update(fields)
    return json.dumps(obj)


class FeedbackFile(unittest.TestCase):
    def read(self, *lines: str):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write("\n".join(lines) + "\n")
        self.addCleanup(Path(f.name).unlink)
        return read_feedback(Path(f.name))

    def assertErrorOnLine(self, line: int, fragment: str, *lines: str):
        with self.assertRaises(FeedbackError) as ctx:
            self.read(*lines)
        self.assertIn(f":{line}: ", str(ctx.exception))
        self.assertIn(fragment, str(ctx.exception))

    def test_reads_examples_ignoring_unknown_fields_and_blank_lines(self):
        rows = self.read(row(future_field={"x": 1}), "", row("fedcba9876543210", label="anger", language="zh"))
        self.assertEqual([(r.label, r.language, r.line) for r in rows], [("neutral", "en", 1), ("anger", "zh", 3)])

    def test_malformed_json_names_the_line(self):
        self.assertErrorOnLine(2, "not valid JSON", row(), '{"example_id": "0000000000000001", "text": ')

    def test_unknown_label_names_the_line(self):
        self.assertErrorOnLine(1, "label 'angry'", row(label="angry"))

    def test_missing_field_names_the_line(self):
        self.assertErrorOnLine(3, "'label_source'", row("0000000000000001"), row("0000000000000002"),
                               json.dumps({"example_id": "0000000000000003", "text": "a", "label": "anger"}))

    def test_bad_example_id_and_source_name_the_line(self):
        self.assertErrorOnLine(1, "16 hex digits", row("xyz"))
        self.assertErrorOnLine(1, "label_source 'guess'", row(label_source="guess"))

    def test_not_an_object_and_empty_text_name_the_line(self):
        self.assertErrorOnLine(1, "expected a JSON object", "[1, 2]")
        self.assertErrorOnLine(2, "text is empty", row("0000000000000001"), row("0000000000000002", text="  "))

    def test_a_repeated_example_id_keeps_the_latest_feedback(self):
        rows = self.read(row(label="anger", feedback_at="2026-12-04T19:00:00.500Z"),
                         row(label="anxiety", feedback_at="2026-12-04T18:00:00Z"),
                         row("0000000000000002"))
        self.assertEqual([r.label for r in rows], ["anger", "neutral"])
        rows = self.read(row(label="anger", feedback_at="2026-12-04T18:00:00Z"),
                         row(label="anxiety", feedback_at="2026-12-04T19:00:00Z"))
        self.assertEqual([r.label for r in rows], ["anxiety"])
        self.assertErrorOnLine(1, "not an RFC 3339 time", row(feedback_at="yesterday"))

    def test_held_out_rule_is_the_documented_one(self):
        self.assertTrue(is_held_out("00000000ffffffff"))  # 0 % 5 == 0
        self.assertTrue(is_held_out("0000000affffffff"))  # 10 % 5 == 0
        self.assertFalse(is_held_out("0000000bffffffff"))
        rows = read_feedback(FIXTURE)
        train, held = split_feedback(rows)
        self.assertEqual(len(train) + len(held), len(rows))
        self.assertEqual({r.example_id for r in held}, {r.example_id for r in rows if int(r.example_id[:8], 16) % 5 == 0})

    def test_language_groups_and_file_tag(self):
        self.assertEqual([language_group(x) for x in ("en", "en-GB", "zh", "zh-Hant", "mixed", "und", "fr", "")],
                         ["en", "en", "zh", "zh", "zh", "other", "other", "other"])
        self.assertEqual(file_tag(FIXTURE), hashlib.sha256(FIXTURE.read_bytes()).hexdigest()[:8])


class HeadSurgery(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import onnx

        from onnx_head import feature_model, find_head

        cls.model = onnx.load(str(ARTIFACT_DIR / "model.int8.onnx"))
        cls.head = find_head(cls.model)
        tok = load_tokenizer(ARTIFACT_DIR / "tokenizer.json", INFER_MAX_LEN)
        cls.enc = tok.encode_batch([r.text for r in read_feedback(FIXTURE)][:16])
        cls.logits, cls.pooled = retrain.run_batches(retrain.make_session(feature_model(cls.model, cls.head), 2),
                                                     cls.enc, ["logits", cls.head.input])

    def test_finds_the_quantized_384_by_8_head(self):
        self.assertTrue(self.head.quantized)
        self.assertEqual(self.head.weight.shape, (384, len(LABELS)))

    def test_int8_head_recomputed_in_numpy_matches_the_graph(self):
        from onnx_head import int8_head_error

        self.assertLess(int8_head_error(self.head, self.pooled, self.logits), retrain.EMULATION_TOL)

    def test_saturating_reference_adds_product_pairs_in_int16(self):
        from onnx_head import Head, int8_head_reference

        # 4 inputs, 2 outputs; weight scale 1, zero points 0. Inputs quantize to uint8 255, 255, 0, 255
        # (scale 1, zero point 0): the first pair's products 255*127 + 255*127 = 64770 saturate at 32767.
        w_q = np.array([[127, -1], [127, 1], [5, 3], [2, 0]], dtype=np.int8)
        head = Head("x", w_q.astype(np.float32), np.zeros(2, np.float32), True, [], w_q,
                    np.zeros(2, np.int8), np.ones(2, np.float32))
        x = np.array([[255.0, 255.0, 0.0, 255.0]], np.float32)
        np.testing.assert_array_equal(int8_head_reference(head, x), [[64770 + 510, 0]])
        np.testing.assert_array_equal(int8_head_reference(head, x, saturating=True), [[32767 + 510, 0]])

    def test_original_weights_through_the_surgery_reproduce_the_current_logits(self):
        from onnx_head import with_float_head

        same = with_float_head(self.model, self.head, self.head.weight, self.head.bias)
        logits = retrain.run_batches(retrain.make_session(same, 2), self.enc, ["logits"])[0]
        self.assertLess(np.abs(logits - self.logits).max(), retrain.PARITY_TOL)
        np.testing.assert_array_equal(logits.argmax(1), self.logits.argmax(1))

    def test_a_float_head_can_be_read_back_and_replaced_again(self):
        from onnx_head import find_head, with_float_head

        w = self.head.weight + 0.01
        once = with_float_head(self.model, self.head, w, self.head.bias)
        again = find_head(once)
        self.assertFalse(again.quantized)
        np.testing.assert_array_equal(again.weight, w)
        twice = with_float_head(once, again, self.head.weight, self.head.bias)
        logits = retrain.run_batches(retrain.make_session(twice, 2), self.enc, ["logits"])[0]
        np.testing.assert_allclose(logits, self.pooled @ self.head.weight + self.head.bias, atol=1e-4)


class HeadTraining(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(1)
        self.x = rng.normal(size=(200, 16))
        self.w0, self.b0 = rng.normal(size=(16, 8)) * 0.3, np.zeros(8)

    def test_soft_replay_alone_leaves_the_head_unchanged(self):
        targets = sigmoid(self.x @ self.w0 + self.b0)
        w, b, _, _ = retrain.train_head(self.x, targets, np.ones(200), self.w0, self.b0, steps=50, l2=1e-2)
        np.testing.assert_allclose(w, self.w0, atol=1e-6)
        np.testing.assert_allclose(b, self.b0, atol=1e-6)

    def test_feedback_lowers_the_loss_monotonically_and_moves_towards_its_labels(self):
        targets = sigmoid(self.x @ self.w0 + self.b0)
        targets[:20] = np.eye(8)[np.zeros(20, int)]  # 20 "feedback" rows say: label 0
        weights = np.r_[np.full(20, 5.0), np.ones(180)]
        w, b, losses, _ = retrain.train_head(self.x, targets, weights, self.w0, self.b0, steps=100, l2=1e-2)
        self.assertTrue(all(a >= c - 1e-12 for a, c in zip(losses, losses[1:])))
        before = sigmoid(self.x[:20] @ self.w0 + self.b0)[:, 0].mean()
        after = sigmoid(self.x[:20] @ w + b)[:, 0].mean()
        self.assertGreater(after, before)


class TinyRunEndToEnd(unittest.TestCase):
    """run.sh --feedback --tiny on the committed sane fixture, through the CLI (about 10 s on 2 cores)."""

    def setUp(self):  # the CLI's progress lines are not test output
        for redirect in (contextlib.redirect_stdout, contextlib.redirect_stderr):
            self.enterContext(redirect(io.StringIO()))

    def test_sane_feedback_gives_a_complete_candidate_that_passes_the_gate(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "candidate"
            code = retrain.main(["--feedback", str(FIXTURE), "--out", str(out), "--tiny"])
            self.assertEqual(code, 0, (out / "gate.md").read_text() if (out / "gate.md").exists() else "no report")
            for name in ("model.int8.onnx", "tokenizer.json", "labels.json", "SHA256SUMS", "gate.json", "gate.md"):
                self.assertTrue((out / name).is_file(), name)
            labels = json.loads((out / "labels.json").read_text())
            current = json.loads((ARTIFACT_DIR / "labels.json").read_text())
            self.assertEqual(labels["model_version"], f"{current['model_version']}+ft.{file_tag(FIXTURE)}")
            self.assertEqual({k: v for k, v in labels.items() if k != "model_version"},
                             {k: v for k, v in current.items() if k != "model_version"})
            subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)
            self.assertTrue(json.loads((out / "gate.json").read_text())["passed"])

    def test_bad_feedback_file_is_a_usage_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "bad.jsonl"
            bad.write_text(row() + "\nnot json\n")
            self.assertEqual(retrain.main(["--feedback", str(bad), "--out", str(Path(tmp) / "c"), "--tiny"]), 2)
            self.assertFalse((Path(tmp) / "c").exists())

    def test_refuses_to_overwrite_the_shipped_model(self):
        self.assertEqual(retrain.main(["--feedback", str(FIXTURE), "--out", str(ARTIFACT_DIR), "--tiny"]), 2)


if __name__ == "__main__":
    unittest.main()
