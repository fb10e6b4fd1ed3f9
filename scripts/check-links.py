#!/usr/bin/env python3
"""Offline link check of the Markdown docs: every relative link must name a file or directory
of the repository, and every #anchor a heading of its target (GitHub's heading ids). Web links
(http, https, mailto) are not followed: CI has no internet.

    scripts/check-links.py [FILE.md ...]   default: README.md, CONTRIBUTING.md, docs/**/*.md,
                                           helm/moodstream/README.md
Exit status 1 when a link is broken, with FILE:LINE: for each.
"""

import re
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["README.md", "CONTRIBUTING.md", "docs/**/*.md", "helm/moodstream/README.md"]

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the target may be wrapped in <>.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_HREF = re.compile(r"<a\s[^>]*href=\"([^\"]+)\"")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's heading id: markup dropped, lowercased, punctuation removed, spaces to dashes."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of every script, digits, _
    return text.replace(" ", "-")


def lines_outside_code(path: Path):
    """(line number, text without inline code, text) of the lines outside fenced code blocks."""
    fenced = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            fenced = None if fenced == fence.group(1) else (fenced or fence.group(1))
            continue
        if fenced is None:
            yield number, INLINE_CODE.sub("", line), line


_anchors: dict[Path, set[str]] = {}


def anchors(path: Path) -> set[str]:
    if path not in _anchors:
        seen: dict[str, int] = {}
        ids = set()
        for _, line, raw in lines_outside_code(path):
            ids.update(HTML_ANCHOR.findall(line))
            heading = HEADING.match(raw)
            if not heading:
                continue
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            ids.add(base if count == 0 else f"{base}-{count}")
        _anchors[path] = ids
    return _anchors[path]


def check(path: Path) -> list[str]:
    errors = []
    rel = path.relative_to(ROOT)
    for number, line, _ in lines_outside_code(path):
        targets = INLINE_LINK.findall(line) + HTML_HREF.findall(line)
        definition = REFERENCE_DEF.match(line)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                continue  # web links, mailto: not followed offline
            file_part, _, fragment = target.partition("#")
            file_part = urllib.parse.unquote(file_part)
            dest = (ROOT / file_part.lstrip("/")) if file_part.startswith("/") else (path.parent / file_part)
            dest = dest.resolve() if file_part else path
            if not dest.exists():
                errors.append(f"{rel}:{number}: {target}: no such file")
                continue
            if fragment and dest.suffix == ".md" and dest.is_file():
                if urllib.parse.unquote(fragment).lower() not in anchors(dest):
                    errors.append(f"{rel}:{number}: {target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    return errors


def main(args: list[str]) -> int:
    patterns = args or DEFAULT
    files = sorted({p.resolve() for pattern in patterns for p in ROOT.glob(pattern) if p.is_file()})
    errors = [e for f in files for e in check(f)]
    for error in errors:
        print(error)
    links = sum(
        len(INLINE_LINK.findall(line)) + len(HTML_HREF.findall(line))
        for f in files
        for _, line, _ in lines_outside_code(f)
    )
    print(f"{len(files)} files, {links} links, {len(errors)} broken")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
