"""The probe set: 70 short labelled texts, 10 in each of 7 categories.

The texts were written for this project: Python code, URLs / web, math notation, non-English
languages, social media / emoji, formal / academic / legal, conversational English
(:data:`CATEGORIES`, with display names in :data:`CATEGORY_LABELS`). They are the "diverse
inputs" that the chapters push through a model and an SAE to look for general and specialist
features. They ship as ``interp_lib/data/probe_texts.jsonl`` (one JSON object per line,
``{"text": ..., "category": ...}``) and are loaded with :mod:`importlib.resources`, so they work
from an installed wheel too.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from typing import NamedTuple

from interp_lib.errors import DamagedFileError, InvalidArgumentError

__all__ = ["CATEGORIES", "CATEGORY_LABELS", "ProbeText", "probe_texts"]

CATEGORIES: tuple[str, ...] = (
    "python",
    "urls",
    "math",
    "non_english",
    "social",
    "formal",
    "conversational",
)

CATEGORY_LABELS: dict[str, str] = {
    "python": "Python code",
    "urls": "URLs / web",
    "math": "Math notation",
    "non_english": "Non-English languages",
    "social": "Social media / emoji",
    "formal": "Formal / academic / legal",
    "conversational": "Conversational English",
}

_PROBE_FILE = "probe_texts.jsonl"  # inside the interp_lib.data package


class ProbeText(NamedTuple):
    """One labelled probe text."""

    text: str
    category: str


def labelled_lines(filename: str, label: str, valid: tuple[str, ...]) -> list[tuple[str, str]]:
    """(text, label) rows of a JSON-lines file shipped in this package, ``{"text": ...,
    label: ...}`` per line; a row without text or with a label outside ``valid`` raises
    DamagedFileError naming the file, the line and the valid labels."""
    resource = importlib.resources.files(__package__).joinpath(filename)
    rows: list[tuple[str, str]] = []
    with resource.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            text, tag = obj.get("text"), obj.get(label)
            if tag not in valid or not isinstance(text, str) or not text.strip():
                raise DamagedFileError(
                    str(resource),
                    f"line {lineno}: bad row {obj!r} (valid {label}s: {list(valid)})",
                    "restore it from git",
                )
            rows.append((text, tag))
    return rows


@functools.lru_cache(maxsize=1)
def _load_probe_texts() -> tuple[ProbeText, ...]:
    """Read and validate the shipped probe file once."""
    return tuple(ProbeText(*row) for row in labelled_lines(_PROBE_FILE, "category", CATEGORIES))


def probe_texts(category: str | None = None) -> list[ProbeText]:
    """The 70 probe texts (10 per category, in CATEGORIES order), or one category's 10."""
    rows = _load_probe_texts()
    if category is None:
        return list(rows)
    if category not in CATEGORIES:
        raise InvalidArgumentError(
            f"unknown category {category!r}; valid categories: {', '.join(CATEGORIES)}"
        )
    return [row for row in rows if row.category == category]
