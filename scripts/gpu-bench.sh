#!/usr/bin/env bash
# The GPU benchmark (issue 18): on a machine with an NVIDIA GPU, checks the CUDA execution
# provider really runs the shipped model (fp16 derived from the int8 file), compares its scores
# with the Python reference, then measures the model stage alone and the in-process pipeline over
# batch size x sequence length, and samples GPU utilisation while it runs. Optionally (torch
# installed) a PyTorch eager fp16 encoder of the same shape as the anchor.
#
#   scripts/gpu-bench.sh [quick|pipeline|full]   results under $OUT (or /tmp/gpu-bench), summary.txt
#   (pipeline: the in-process pipeline runs of full only, plus IO binding; no anchor)
#
# Env: BIN (moodstream binary; default the release build), ORT_DYLIB_PATH (the onnxruntime-gpu
# libonnxruntime.so; `scripts/setup-ort.sh --gpu` prints it), LD_LIBRARY_PATH with CUDA 13 and
# cuDNN 9 (found in python's site-packages nvidia/*/lib when unset), MODEL_DIR (models/emotion),
# EP (cuda; `cpu` rehearses the script on a CPU machine), TOK_THREADS (tokenizer threads, 12),
# FP16 (an fp16 model derived elsewhere; derive_fp16.py needs onnxruntime >= 1.31 to fuse this
# graph's attention: 1.30's optimizer fuses none).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode=${1:-full}
out=${OUT:-/tmp/gpu-bench}; mkdir -p "$out/logs"
bin=${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/moodstream/target}/release/moodstream}
src_model=${MODEL_DIR:-models/emotion}
ep=${EP:-cuda}
tok=${TOK_THREADS:-12}
t0=$SECONDS
summary=$out/summary.txt
say() { echo "$*" | tee -a "$summary"; }

nv=$(python3 -c "import glob,site;print(':'.join(d for sp in site.getsitepackages() for d in glob.glob(sp+'/nvidia/**/lib',recursive=True)))" 2>/dev/null)
export LD_LIBRARY_PATH=${nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export RUST_LOG=${RUST_LOG:-info,ort=warn}

# A private copy of the model directory, with the fp16 variant derived beside the int8 file.
model=$out/model
mkdir -p "$model" && cp "$src_model"/{model.int8.onnx,tokenizer.json,labels.json} "$model"/
if [[ $ep == cuda ]]; then
  variant=fp16
  if [[ -n ${FP16:-} ]]; then
    cp "$FP16" "$model/model.fp16.onnx"
  else
    python3 models/derive_fp16.py --int8 "$model/model.int8.onnx" --out "$model/model.fp16.onnx" >"$out/logs/derive.log" 2>&1 ||
      { tail -n 20 "$out/logs/derive.log"; say "FAIL: derive fp16"; exit 2; }
    say "$(grep -o "fused: .*" "$out/logs/derive.log" | grep -o "'Attention': [0-9]*") (onnxruntime $(python3 -c 'import onnxruntime as o; print(o.__version__)'))"
  fi
  command -v nvidia-smi >/dev/null && say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
else
  variant=int8
fi
common=(--execution-provider "$ep" --model-variant "$variant" --model-dir "$model" --tokenizer-threads "$tok")
say "moodstream gpu-bench ($mode) $(date -u +%FT%TZ) ep=$ep variant=$variant model=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['model_version'])" "$model/labels.json")"

# 1. Correctness on the provider: the parity fixture's texts, scores against the Python reference.
python3 - >"$out/parity.jsonl" <<'PY'
import json
for i, c in enumerate(json.load(open("tests/fixtures/parity.json"))["cases"]):
    print(json.dumps(dict(message_id=f"p{i}", conversation_id="c1", customer_id="u1", channel="chat",
                          text=c["text"], sent_at=1760000000000), ensure_ascii=False))
PY
timeout 120 "$bin" classify "${common[@]}" --input "$out/parity.jsonl" >"$out/parity.out" 2>"$out/logs/classify.log"
rc=$?
grep -E "session ready|WARN|ERROR" "$out/logs/classify.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | tee -a "$summary"
[[ $rc == 0 ]] || { tail -n 20 "$out/logs/classify.log"; say "FAIL: classify rc=$rc"; exit 3; }
python3 - "$out/parity.out" <<'PY' | tee -a "$summary"
import json, math, sys
ref = json.load(open("tests/fixtures/parity.json"))
labels = json.load(open("models/emotion/labels.json"))["labels"]
out = [json.loads(l) for l in open(sys.argv[1])]
d = max(abs(o["scores"][k] - 1 / (1 + math.exp(-r["reference"]["exact"]["logits"][i])))
        for o, r in zip(out, ref["cases"]) for i, k in enumerate(labels))
agree = sum(o["primary_emotion"] == r["reference"]["exact"]["primary"] for o, r in zip(out, ref["cases"]))
print(f"parity: {len(out)}/{len(ref['cases'])} results, primary agrees {agree}, max |score diff| {d:.4f}")
PY

# 2. Throughput: the model stage alone and the in-process pipeline, same batches.
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 250 \
  >"$out/smi.csv" 2>/dev/null &
smi=$!
bench() { # name, bench args...
  local name=$1; shift
  timeout 100 "$bin" bench "${common[@]}" --seconds "${SECONDS_PER_RUN:-3}" "$@" >"$out/logs/$name.log" 2>&1
  local rc=$?
  say "== $name: bench $* (rc=$rc, t=$((SECONDS - t0))s)"
  grep -E "moodstream bench|settings|warm-up|model stage|pipeline|per message|rror" "$out/logs/$name.log" | sed 's/^/   /' | tee -a "$summary"
}
if [[ $mode == pipeline ]]; then
  bench L16_b1024 --fixed-tokens 16 --messages 20000 --max-batch-size 1024 --max-batch-tokens 16384 --draft-replies false
  bench L32_b1024 --fixed-tokens 32 --messages 20000 --max-batch-size 1024 --max-batch-tokens 32768 --draft-replies false
  bench L32_b1024_bind --fixed-tokens 32 --messages 20000 --max-batch-size 1024 --max-batch-tokens 32768 \
    --draft-replies false --io-binding true
  bench L24_b512_drafts --fixed-tokens 24 --messages 20000 --max-batch-size 512 --max-batch-tokens 12288
  bench mix_values_gpu --messages 20000 --max-batch-size 256 --max-batch-tokens 16384
elif [[ $mode == quick ]]; then
  bench L32_b256 --fixed-tokens 32 --messages 4000 --max-batch-size 256 --max-batch-tokens 8192 --draft-replies false
else
  for len in 16 32 64 128; do
    for b in 256 1024; do
      bench "L${len}_b${b}" --fixed-tokens "$len" --messages 20000 --max-batch-size "$b" \
        --max-batch-tokens $((b * len)) --draft-replies false
    done
  done
  bench L32_b1024_s1 --fixed-tokens 32 --messages 20000 --max-batch-size 1024 --max-batch-tokens 32768 \
    --draft-replies false --model-sessions 1
  bench L32_b1024_nobind --fixed-tokens 32 --messages 20000 --max-batch-size 1024 --max-batch-tokens 32768 \
    --draft-replies false --io-binding false
  bench L24_b512_drafts --fixed-tokens 24 --messages 20000 --max-batch-size 512 --max-batch-tokens 12288
  bench mix_values_gpu --messages 20000 --max-batch-size 256 --max-batch-tokens 16384
fi
kill "$smi" 2>/dev/null
if [[ -s $out/smi.csv ]]; then
  say "GPU utilisation samples (every 250 ms): $(cut -d, -f2 "$out/smi.csv" | tr -d ' %' |
    sort -n | awk '{a[NR]=$1} END {if (NR) printf "n=%d p50=%s%% p90=%s%% max=%s%%", NR, a[int(NR*0.5)+1], a[int(NR*0.9)+1], a[NR]}')"
fi

# 3. The anchor: PyTorch eager fp16 (SDPA) on an encoder of the shipped model's shape.
if [[ $ep == cuda && $mode == full ]] && python3 -c "import torch, transformers" 2>/dev/null; then
  python3 - "$model/labels.json" <<'PY' 2>&1 | tee -a "$summary"
import json, sys, time, torch
from transformers import BertConfig, BertModel
shape = json.load(open(sys.argv[1])).get("encoder", {})  # MiniLM-L6 / mE5-small-L6 shape unless labels.json says
cfg = BertConfig(vocab_size=shape.get("vocab_size", 32000), hidden_size=shape.get("hidden_size", 384),
                 num_hidden_layers=shape.get("num_hidden_layers", 6), num_attention_heads=shape.get("num_attention_heads", 12),
                 intermediate_size=shape.get("intermediate_size", 1536), max_position_embeddings=514,
                 attn_implementation="sdpa")
m = BertModel(cfg, add_pooling_layer=False).cuda().half().eval()
print(f"pytorch eager fp16 anchor, encoder {cfg.num_hidden_layers}x{cfg.hidden_size}, host copies included:")
for seq in (16, 32, 64, 128):
    b = 1024
    ids = torch.randint(5, cfg.vocab_size, (b, seq)); mask = torch.ones(b, seq, dtype=torch.long)
    with torch.inference_mode():
        for _ in range(3):
            m(input_ids=ids.cuda(), attention_mask=mask.cuda()).last_hidden_state.mean(1).float().cpu()
        torch.cuda.synchronize(); n = 30; t = time.perf_counter()
        for _ in range(n):
            m(input_ids=ids.cuda(), attention_mask=mask.cuda()).last_hidden_state.mean(1).float().cpu()
        torch.cuda.synchronize()
    print(f"   seq {seq:>3} batch {b}: {n * b / (time.perf_counter() - t):,.0f} seq/s")
PY
fi
say "done t=$((SECONDS - t0))s"
tar -czf "$out/gpu-bench-logs.tgz" -C "$out" logs smi.csv parity.out 2>/dev/null
