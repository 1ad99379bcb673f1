"""A held-out evaluation set of the seven kinds of text the probe set covers.

The offline training corpus (:mod:`interp_lib.data.corpus`) is English software text. A reader
will push other text through the model: code in other languages, web addresses, mathematics,
other languages, social-media posts with emoji, legal and academic prose, conversation. This set
measures how the shipped SAEs do on each such kind, apart from the corpus's own held-out split.

The texts were written for evaluation (none is a probe text, and none comes from the corpus's
sources), about 1,000-1,900 tokens of SmolLM2's tokenizer per kind, and ship beside this file as
``eval_texts.jsonl`` (one JSON object per line, ``{"text": ..., "kind": ...}``; the kinds are
:data:`~interp_lib.data.probes.CATEGORIES`, whose ``"python"`` stands here for code in general:
JavaScript, SQL, shell, C, Rust, YAML and Python). :func:`eval_documents` gives one kind's texts as
corpus :class:`~interp_lib.data.corpus.Document` rows, ready for
:func:`~interp_lib.data.corpus.tokenize_corpus`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from interp_lib.data.corpus import Document
from interp_lib.data.probes import CATEGORIES, labelled_lines
from interp_lib.errors import InvalidArgumentError

__all__ = ["EVAL_KINDS", "KIND_NAMES", "EvalText", "eval_texts", "eval_documents"]

EVAL_KINDS: tuple[str, ...] = CATEGORIES
"""The kinds of text in the set, in the probe set's order."""

KIND_NAMES: dict[str, str] = {
    "python": "code",
    "urls": "URLs",
    "math": "maths",
    "non_english": "non-English",
    "social": "social / emoji",
    "formal": "formal",
    "conversational": "conversational",
}
"""Short display names of the kinds (``"python"`` is code in several languages here)."""

_EVAL_FILE = "eval_texts.jsonl"  # inside the interp_lib.data package


class EvalText(NamedTuple):
    """One evaluation text."""

    text: str
    kind: str


@functools.lru_cache(maxsize=1)
def _load() -> tuple[EvalText, ...]:
    """Read and validate the shipped file once."""
    return tuple(EvalText(*row) for row in labelled_lines(_EVAL_FILE, "kind", EVAL_KINDS))


def eval_texts(kind: str | None = None) -> list[EvalText]:
    """Every evaluation text, or one kind's (one of :data:`EVAL_KINDS`)."""
    if kind is not None and kind not in EVAL_KINDS:
        raise InvalidArgumentError(f"unknown kind {kind!r}; valid kinds: {list(EVAL_KINDS)}")
    return [t for t in _load() if kind is None or t.kind == kind]


def eval_documents(kind: str) -> list[Document]:
    """One kind's texts as corpus documents (source ``"evalset"``)."""
    return [
        Document(t.text, "evalset", kind, f"evalset:{kind}#{i}")
        for i, t in enumerate(eval_texts(kind))
    ]
