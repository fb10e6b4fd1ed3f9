"""Agent-feedback examples (issue 17): reading `moodstream feedback export` JSONL and the held-out rule.

One JSON object per line, e.g.

    {"example_id": "0f3a9c1d2b4e5f60", "text": "masked customer text", "label": "anger",
     "label_source": "relabel", "agents": 1, "language": "en", "channel": "chat", "tenant_id": null,
     "model_version": "emotion-me5s-l6-v2", "predicted_label": "frustration", "feedback_at": "2026-12-04T19:00:00Z"}

Required: `example_id` (16 hex digits), `text` (non-empty), `label` (one of common.LABELS), `label_source`
(`relabel`: an agent corrected the model; `accepted`: an agent confirmed its label). `language` and `channel`
are read when present; every other field is ignored, so the exporter may add fields. Blank lines are skipped;
anything else that is not such an object is a `FeedbackError` naming the line. An `example_id` that appears
again (two incremental exports concatenated: each decides per run) keeps the line with the later
`feedback_at` (RFC 3339; a tie keeps the later line), as docs/continual-learning.md says.

Held-out rule: an example is held out — never trained on, only scored by the gate — when
`int(example_id[:8], 16) % 5 == 0` (about one in five). It depends only on the id, so the same example is
held out in every retrain, whatever else the file contains, and retrain.py and gate.py agree without
passing a list around.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common import LABELS

# Loss weight of a training example by how its label came about: a correction says more than a confirmation
# (the model already predicted an accepted label, so it mostly re-teaches what the model does).
SOURCE_WEIGHTS = {"relabel": 1.0, "accepted": 0.5}
HELD_OUT_MODULUS = 5
_EXAMPLE_ID = re.compile(r"[0-9a-fA-F]{16}")


class FeedbackError(ValueError):
    """A feedback file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Feedback:
    example_id: str
    text: str
    label: str
    label_source: str
    language: str
    channel: str
    feedback_at: datetime | None  # when the latest agent event behind it was received
    line: int  # 1-based line in the file, for messages

    @property
    def held_out(self) -> bool:
        return is_held_out(self.example_id)

    @property
    def weight(self) -> float:
        return SOURCE_WEIGHTS[self.label_source]


def is_held_out(example_id: str) -> bool:
    """The deterministic held-out rule (module docstring)."""
    return int(example_id[:8], 16) % HELD_OUT_MODULUS == 0


def language_group(language: str) -> str:
    """The gate's language groups: `en`, `zh` (Chinese and code-switched, as evaluate.py), `other`."""
    lang = (language or "und").lower()
    if lang == "en" or lang.startswith("en-"):
        return "en"
    if lang in ("zh", "mixed") or lang.startswith("zh-"):
        return "zh"
    return "other"


def _parse_line(path: Path, number: int, line: str) -> Feedback:
    where = f"{path}:{number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise FeedbackError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise FeedbackError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for field in ("example_id", "text", "label", "label_source"):
        if not isinstance(obj.get(field), str):
            raise FeedbackError(f"{where}: field {field!r} is missing or not a string")
    if not _EXAMPLE_ID.fullmatch(obj["example_id"]):
        raise FeedbackError(f"{where}: example_id {obj['example_id']!r} is not 16 hex digits")
    if not obj["text"].strip():
        raise FeedbackError(f"{where}: text is empty")
    if obj["label"] not in LABELS:
        raise FeedbackError(f"{where}: label {obj['label']!r} is not one of {', '.join(LABELS)}")
    if obj["label_source"] not in SOURCE_WEIGHTS:
        raise FeedbackError(f"{where}: label_source {obj['label_source']!r} is not one of {', '.join(SOURCE_WEIGHTS)}")
    return Feedback(
        example_id=obj["example_id"].lower(),
        text=obj["text"],
        label=obj["label"],
        label_source=obj["label_source"],
        language=str(obj.get("language") or "und"),
        channel=str(obj.get("channel") or ""),
        feedback_at=_timestamp(where, obj.get("feedback_at")),
        line=number,
    )


def _timestamp(where: str, value) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise FeedbackError(f"{where}: feedback_at {value!r} is not an RFC 3339 time") from None


def read_feedback(path: Path) -> list[Feedback]:
    """Every example of a feedback file, validated (FeedbackError on the first bad line); a repeated
    example_id keeps its latest line by feedback_at."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FeedbackError(f"{path}: cannot read feedback file ({e})") from None
    latest: dict[str, Feedback] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _parse_line(Path(path), number, line)
        earlier = latest.get(row.example_id)
        if earlier is None or _not_older(row, earlier):
            latest[row.example_id] = row
    return sorted(latest.values(), key=lambda r: r.line)


def _not_older(row: Feedback, earlier: Feedback) -> bool:
    if row.feedback_at is None or earlier.feedback_at is None:
        return True  # no time to compare: the later line wins
    return row.feedback_at >= earlier.feedback_at


def split_feedback(rows: list[Feedback]) -> tuple[list[Feedback], list[Feedback]]:
    """(training rows, held-out rows) by the held-out rule."""
    return [r for r in rows if not r.held_out], [r for r in rows if r.held_out]


def file_tag(path: Path) -> str:
    """First 8 hex digits of the file's sha256: the `+ft.<tag>` suffix of the candidate's model_version."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]
