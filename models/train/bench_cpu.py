"""Reference CPU throughput of the int8 model: onnxruntime (Python), 2 intra-op threads, all graph
optimisations, batches of 32 messages of 24 tokens (issue 13's bar: >= 400 messages/s on the 2-core box).

    python bench_cpu.py [--model PATH] [--seconds 20]
    python bench_cpu.py --texts zh       # real Chinese cs-seed test messages at their own token lengths

With --texts en|zh the batches are 32 consecutive messages of that language from the cs-seed test split,
tokenized with the shipped tokenizer.json and padded to the longest in the batch, as the worker does
(--sorted: sorted by length first, like the worker's length grouping under load).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common import ARTIFACT_DIR, INFER_MAX_LEN, OUTPUT_NAMES, load_tokenizer, pad_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ARTIFACT_DIR / "model.int8.onnx")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=24, help="sequence length including [CLS] and [SEP]")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--texts", choices=["en", "zh"], default=None, help="real cs-seed test messages instead")
    ap.add_argument("--sorted", action="store_true", help="with --texts: batch messages of similar length together")
    args = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])

    wanted = {i.name for i in sess.get_inputs()}
    if args.texts:
        from corpora import load_seed

        texts, _, langs = load_seed("test")
        texts = [t for t, lang in zip(texts, langs) if (lang == "en") == (args.texts == "en")]
        tok = load_tokenizer(args.model.parent / "tokenizer.json", INFER_MAX_LEN)
        encs = tok.encode_batch(texts)
        if args.sorted:
            encs.sort(key=lambda e: len(e.ids))
        feeds = [pad_batch(encs[i : i + args.batch]) for i in range(0, len(encs) - args.batch + 1, args.batch)]
        shape = f"{args.texts} cs-seed test, {np.mean([len(e.ids) for e in encs]):.1f} tokens/message mean, " \
                f"{np.mean([f['input_ids'].shape[1] for f in feeds]):.1f} padded width mean"
    else:
        # Random pieces between <s> and </s>: the cost does not depend on which tokens they are.
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, 20000, size=(args.batch, args.tokens), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 0, 2
        feeds = [{"input_ids": ids, "attention_mask": np.ones_like(ids)}]
        shape = f"{args.tokens} tokens"
    for f in feeds:
        if "token_type_ids" in wanted:
            f["token_type_ids"] = np.zeros_like(f["input_ids"])

    for i in range(5):
        sess.run(OUTPUT_NAMES, feeds[i % len(feeds)])
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        sess.run(OUTPUT_NAMES, feeds[runs % len(feeds)])
        runs += 1
    elapsed = time.perf_counter() - start
    per_batch_ms = 1000 * elapsed / runs
    print(
        f"{args.model.name}: {runs * args.batch / elapsed:.0f} messages/s "
        f"(batch {args.batch} x {shape}, {per_batch_ms:.1f} ms/batch, {args.threads} threads)"
    )


if __name__ == "__main__":
    main()
