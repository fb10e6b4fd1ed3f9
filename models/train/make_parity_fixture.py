"""Write tests/fixtures/parity.json: reference token ids and int8 logits for fixed English, Chinese and
code-switched sentences.

    python make_parity_fixture.py

The Rust parity test runs the same sentences through the worker's tokenizer + ort path and compares against
this file. Each sentence is run alone (batch 1, no padding) on onnxruntime's CPU execution provider, so the
reference does not depend on how the worker batches. Derived scores (common.derive) are included so the
worker's implementation of the scoring rules can be checked too.

The int8 logits depend on which uint8 x int8 kernel onnxruntime's CPU provider uses: "exact" (int32 products:
x86 with AVX-512 VNNI or AVX-VNNI, and ARM) or "saturating" (x86 with AVX2 but no VNNI: `vpmaddubsw` adds
each pair of products in int16 with saturation; see onnx_head.py). Each case keeps one reference per kernel;
a run writes this CPU's kernel and keeps the other's when the model is unchanged, so run it once on a CPU of
each kind (the Rust test picks the reference of the CPU it runs on).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from common import ARTIFACT_DIR, INFER_MAX_LEN, LABELS, OUTPUT_NAMES, REPO_DIR, derive, load_tokenizer, pad_batch

LONG = (
    "I have been a customer for more than six years and I have never written a complaint before, but this "
    "time I really have to. I ordered a replacement part on the third of the month, paid for express "
    "shipping, and was promised delivery within two working days. Nine days later nothing has arrived, the "
    "tracking page has said 'label created' the whole time, and every time I call I wait forty minutes "
    "only to be told that someone will call me back, which never happens. I need this part to repair the "
    "heating in my flat, my kids are cold, and I am honestly at the end of my patience. Please either ship "
    "it today or refund me in full, including the express fee."
)

SENTENCES = [
    "Thank you so much, the replacement arrived today and works perfectly!",
    "This is the third time my order has been cancelled without any explanation. Unacceptable.",
    "Where is my refund???",
    "ok",
    "I'm a bit worried my card was charged twice, can you check?",
    "I don't understand the new billing page, which plan am I on now?",
    "Honestly disappointed. I expected much better support from you.",
    "Great service 👍😊 will recommend to friends",
    "Your app crashed AGAIN and I lost all my notes!!! 😡",
    "Can you tell me the opening hours of the Berlin store?",
    "我的订单还没有到，请帮我查一下。",
    "你们这是什么破服务！退款拖了一个月还没到账，再不处理我就去12315投诉！",
    "太感谢了，客服小姐姐特别耐心，问题终于解决了 😊",
    "刚收到短信说我的账号在外地登录了，我好担心被盗，怎么办？",
    "请问这个优惠券怎么用？结算页面没看到输入的地方",
    "我的order还没到，tracking一直没更新，有点失望",
    "收到了，谢谢",
    LONG,
]


def int8_kernel() -> str:
    """The kind of uint8 x int8 kernel onnxruntime's CPU provider runs here (tests/model_parity.rs decides
    the same way)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return "exact"
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return "exact" if {"avx512_vnni", "avx_vnni"} & set(flags) else "saturating"


def main() -> None:
    model_path = ARTIFACT_DIR / "model.int8.onnx"
    out = REPO_DIR / "tests" / "fixtures" / "parity.json"
    model_sha256 = hashlib.sha256(model_path.read_bytes()).hexdigest()
    kernel = int8_kernel()
    old = json.loads(out.read_text()) if out.exists() else {}
    kept = old.get("cases", []) if old.get("model_sha256") == model_sha256 else []
    tok = load_tokenizer(ARTIFACT_DIR / "tokenizer.json", INFER_MAX_LEN)
    meta = json.loads((ARTIFACT_DIR / "labels.json").read_text())
    thresholds = np.array([meta["thresholds"][label] for label in LABELS])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])

    cases = []
    for text in SENTENCES:
        enc = tok.encode(text)
        logits = sess.run([OUTPUT_NAMES[0]], pad_batch([enc]))[0]
        d = derive(logits, thresholds)
        reference = next((c["reference"] for c in kept if c["text"] == text), {})
        reference[kernel] = {
            "logits": [round(float(x), 6) for x in logits[0]],
            "primary": LABELS[int(d["primary"][0])],
            "labels": [LABELS[i] for i in np.flatnonzero(d["labels"][0])],
            "negativity": round(float(d["negativity"][0]), 6),
            "valence": round(float(d["valence"][0]), 6),
        }
        cases.append({"text": text, "input_ids": enc.ids, "reference": dict(sorted(reference.items()))})
    assert any(len(c["input_ids"]) == INFER_MAX_LEN for c in cases), "need one sentence truncated at max_seq_len"

    fixture = {
        "model": str(model_path.relative_to(REPO_DIR)),
        "model_sha256": model_sha256,
        "model_version": meta["model_version"],
        "tokenizer": str((ARTIFACT_DIR / "tokenizer.json").relative_to(REPO_DIR)),
        "max_seq_len": INFER_MAX_LEN,
        "labels": LABELS,
        "reference": f"onnxruntime {ort.__version__} CPUExecutionProvider, batch 1, no padding, per int8 kernel",
        "cases": cases,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    kernels = sorted({k for c in cases for k in c["reference"]})
    print(f"wrote {out} ({len(cases)} sentences; this CPU's int8 kernel: {kernel}; references: {', '.join(kernels)})")


if __name__ == "__main__":
    main()
