"""Split the hand-written customer-service seed set into train / dev / test, by group, with no near-duplicate
crossing splits.

    python split_seed.py            # writes data/cs-seed/split/{train,dev,test}.jsonl and report.json
    python split_seed.py --check    # exits non-zero if the committed split files are not what it would write

Rules (the data card, data/cs-seed/README.md, states them too):
1. The unit is the `group` (a template and its paraphrases): a group never spans splits.
2. Near-duplicates join their groups into one cluster first: exact duplicates after normalisation (NFKC,
   lower case, no spaces or punctuation), or character-shingle Jaccard >= NEAR_DUP_JACCARD (4-grams for
   Latin text, 2-grams for Chinese and mixed text, whose words are mostly 1-2 characters), compared across
   all four files. A cluster larger than MAX_CLUSTER_SHARE of the data fails the run: that would mean the
   set is one template, and the split would be meaningless.
3. A cluster's split comes from sha256 of its smallest group id alone (first 8 bytes as a fraction:
   < 0.6 train, < 0.8 dev, else test), so adding or editing other groups never moves a message between
   splits (the test split cannot leak into a model trained earlier). The split is stratified only in
   expectation; report.json prints the per-split label x language counts, and the run fails if a
   label x language cell has fewer than MIN_CELL messages in dev or test.
4. Afterwards every near-duplicate pair is re-checked to lie in one split; any crossing aborts.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import sys
import unicodedata

from common import LABELS
from corpora import SPLIT_DIR, seed_labels, seed_raw

NEAR_DUP_JACCARD = 0.5
MAX_CLUSTER_SHARE = 0.05
MIN_CELL = 5
SPLITS = ["train", "dev", "test"]


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not (c.isspace() or unicodedata.category(c)[0] in "PSZ"))


def shingles(text: str, lang: str) -> frozenset[str]:
    n = 4 if lang == "en" else 2
    t = normalise(text)
    return frozenset(t[i : i + n] for i in range(max(1, len(t) - n + 1)))


def near_duplicate_pairs(rows: list[dict]) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) from different groups; an inverted shingle index keeps this far from n^2."""
    sh = [shingles(r["text"], r["lang"]) for r in rows]
    index: dict[str, list[int]] = collections.defaultdict(list)
    for i, s in enumerate(sh):
        for g in s:
            index[g].append(i)
    pairs = []
    for i, s in enumerate(sh):
        overlap = collections.Counter(j for g in s for j in index[g] if j > i)
        for j, inter in overlap.items():
            if rows[i]["group"] == rows[j]["group"]:
                continue
            jac = inter / len(s | sh[j])
            if jac >= NEAR_DUP_JACCARD or normalise(rows[i]["text"]) == normalise(rows[j]["text"]):
                pairs.append((i, j, round(jac, 3)))
    return pairs


def assign(rows: list[dict]) -> tuple[dict[str, str], list, dict]:
    groups = sorted({r["group"] for r in rows})
    parent = {g: g for g in groups}

    def find(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    pairs = near_duplicate_pairs(rows)
    for i, j, _ in pairs:
        a, b = find(rows[i]["group"]), find(rows[j]["group"])
        if a != b:
            parent[max(a, b)] = min(a, b)
    clusters: dict[str, list[int]] = collections.defaultdict(list)
    for i, r in enumerate(rows):
        clusters[find(r["group"])].append(i)
    biggest = max(len(v) for v in clusters.values())
    if biggest > MAX_CLUSTER_SHARE * len(rows):
        sys.exit(f"split_seed: a near-duplicate cluster holds {biggest} of {len(rows)} rows; fix the seed set")

    split_of_group = {}
    for key, members in clusters.items():
        u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
        split = "train" if u < 0.6 else "dev" if u < 0.8 else "test"
        for i in members:
            split_of_group[rows[i]["group"]] = split

    crossing = [(i, j) for i, j, _ in pairs if split_of_group[rows[i]["group"]] != split_of_group[rows[j]["group"]]]
    if crossing:
        sys.exit(f"split_seed: {len(crossing)} near-duplicate pairs cross splits after merging: {crossing[:5]}")
    merged = sum(1 for members in clusters.values() if len({rows[i]["group"] for i in members}) > 1)
    report = {
        "rows": len(rows),
        "groups": len(groups),
        "near_duplicate_pairs": len(pairs),
        "clusters_merging_groups": merged,
        "largest_cluster_rows": biggest,
        "pairs": [
            {"a": rows[i]["text"], "b": rows[j]["text"], "jaccard": jac, "groups": [rows[i]["group"], rows[j]["group"]]}
            for i, j, jac in pairs
        ],
    }
    return split_of_group, pairs, report


def counts(rows: list[dict]) -> dict:
    out = {}
    for field in ("label", "lang", "channel", "intent"):
        out[field] = dict(sorted(collections.Counter(
            seed_labels(r)[0] if field == "label" else r.get(field, "?") for r in rows).items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args()

    rows = seed_raw()
    for r in rows:
        assert r["lang"] in ("en", "zh", "mixed"), r
        assert r["text"].strip(), r
    split_of_group, _pairs, report = assign(rows)
    files = {s: [] for s in SPLITS}
    for r in rows:
        files[split_of_group[r["group"]]].append({k: v for k, v in r.items() if k != "file"})
    report["per_split"] = {s: dict(rows=len(v), groups=len({r["group"] for r in v}), **counts(v)) for s, v in files.items()}
    cells = {s: collections.Counter((seed_labels(r)[0], "en" if r["lang"] == "en" else "zh") for r in v)
             for s, v in files.items()}
    report["label_x_lang"] = {s: {f"{a}/{b}": n for (a, b), n in sorted(c.items())} for s, c in cells.items()}
    thin = [(s, label, lang, cells[s][(label, lang)]) for s in ("dev", "test") for label in LABELS
            for lang in ("en", "zh") if cells[s][(label, lang)] < MIN_CELL]
    text = {s: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in v) for s, v in files.items()}
    text["report"] = json.dumps(report, indent=1, ensure_ascii=False) + "\n"
    paths = {s: SPLIT_DIR / (f"{s}.jsonl" if s != "report" else "report.json") for s in text}
    if thin:
        sys.exit(f"split_seed: label x language cells below {MIN_CELL} messages: {thin}")
    if args.check:
        stale = [str(p) for s, p in paths.items() if not p.exists() or p.read_text(encoding="utf-8") != text[s]]
        sys.exit(f"split_seed: stale split files: {stale}" if stale else 0)
    SPLIT_DIR.mkdir(parents=True, exist_ok=True)
    for s, p in paths.items():
        p.write_text(text[s], encoding="utf-8")
    for s in SPLITS:
        c = report["per_split"][s]
        print(f"{s:5s} rows={c['rows']:4d} groups={c['groups']:3d} lang={c['lang']} label={c['label']}")
    print(f"near-duplicate pairs across groups: {report['near_duplicate_pairs']}, "
          f"clusters merging groups: {report['clusters_merging_groups']}, largest cluster: {report['largest_cluster_rows']} rows")


if __name__ == "__main__":
    main()
