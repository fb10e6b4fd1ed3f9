"""How much an int8 graph's labels depend on the other messages in their batch (docs/model.md, "Known limit").

`DynamicQuantizeLinear` picks one activation scale per call, so a message's logits move with its batch-mates.
This scores the cs-seed dev split one message at a time and in batches of 64 and prints the largest logit
difference, the share of primary labels that flip, and batched throughput. With --per-row it first rewrites
the graph so that every `DynamicQuantizeLinear` becomes a per-token symmetric quantizer (scale = max|x| / 127
per row, zero point 128; the MatMulInteger nodes and everything after them unchanged) and measures that too.

    $MOODSTREAM_CACHE/venv-retrain/bin/python models/train/batch_invariance.py [--model M] [--per-row]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from common import ARTIFACT_DIR, INFER_MAX_LEN, load_tokenizer, pad_batch
from corpora import SPLIT_DIR


def per_row(src: Path, dst: Path) -> None:
    model = onnx.load(src)
    graph = model.graph
    consts = {"prq_127": np.float32(127.0), "prq_eps": np.float32(1e-8), "prq_lo": np.float32(-127.0),
              "prq_hi": np.float32(127.0), "prq_128": np.float32(128.0), "prq_zp": np.uint8(128)}
    graph.initializer.extend(numpy_helper.from_array(np.array(v), k) for k, v in consts.items())
    nodes = []
    for n in graph.node:
        if n.op_type != "DynamicQuantizeLinear":
            nodes.append(n)
            continue
        x, (q, scale, zero) = n.input[0], n.output
        p = n.name + "_row"
        nodes += [
            helper.make_node("Abs", [x], [p + "_abs"]),
            helper.make_node("ReduceMax", [p + "_abs"], [p + "_max"], keepdims=1, axes=[-1]),
            helper.make_node("Max", [p + "_max", "prq_eps"], [p + "_maxe"]),
            helper.make_node("Div", [p + "_maxe", "prq_127"], [scale]),
            helper.make_node("Div", [x, scale], [p + "_div"]),
            helper.make_node("Round", [p + "_div"], [p + "_round"]),
            helper.make_node("Clip", [p + "_round", "prq_lo", "prq_hi"], [p + "_clip"]),
            helper.make_node("Add", [p + "_clip", "prq_128"], [p + "_shift"]),
            helper.make_node("Cast", [p + "_shift"], [q], to=TensorProto.UINT8),
            helper.make_node("Identity", ["prq_zp"], [zero]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, dst)


def measure(path: Path, encs, threads: int) -> str:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}

    def run(batch):
        return sess.run(["logits"], {k: v for k, v in pad_batch(batch).items() if k in inputs})[0]

    one = np.concatenate([run([e]) for e in encs])
    start = time.perf_counter()
    batched = np.concatenate([run(encs[i:i + 64]) for i in range(0, len(encs), 64)])
    rate = len(encs) / (time.perf_counter() - start)
    diff = np.abs(one - batched)
    flips = (one.argmax(1) != batched.argmax(1)).mean()
    return (f"max logit difference {diff.max():.3f} (median per text {np.median(diff.max(1)):.3f}), "
            f"primary label flips {100 * flips:.1f} %, batched {rate:.0f} texts/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ARTIFACT_DIR / "model.int8.onnx")
    ap.add_argument("--per-row", action="store_true", help="also measure the per-row quantizer variant")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tok = load_tokenizer(args.model.parent / "tokenizer.json", INFER_MAX_LEN)
    texts = [json.loads(line)["text"] for line in (SPLIT_DIR / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    encs = [tok.encode(t) for t in texts]
    print(f"{args.model} ({len(encs)} cs-seed dev texts): {measure(args.model, encs, args.threads)}")
    if args.per_row:
        with tempfile.TemporaryDirectory() as tmp:
            variant = Path(tmp) / "model.per-row.onnx"
            per_row(args.model, variant)
            print(f"per-row quantizer variant: {measure(variant, encs, args.threads)}")


if __name__ == "__main__":
    main()
