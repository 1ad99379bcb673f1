"""Text for the book: a small labelled probe set and an offline training corpus.

- :mod:`interp_lib.data.probes`: the 70 probe texts, 10 in each of 7 categories
  (:func:`probe_texts`, :data:`CATEGORIES`, :data:`CATEGORY_LABELS`), shipped beside this
  file as ``probe_texts.jsonl``;
- :mod:`interp_lib.data.corpus`: the offline training corpus built from installed text
  (:func:`build_corpus`), its train / held-out split (:func:`split_corpus`), cache key
  (:func:`corpus_key`), composition table (:func:`corpus_report`) and tokenisation
  (:func:`tokenize_corpus`).

The names below are the package's API: ``from interp_lib import data; data.build_corpus()``.
"""

from .corpus import (
    CORPUS_PACKAGES,
    DEFAULT_CHUNK_CHARS,
    KINDS,
    MIN_DOC_CHARS,
    SOURCES,
    Document,
    build_corpus,
    corpus_key,
    corpus_report,
    split_corpus,
    tokenize_corpus,
)
from .probes import CATEGORIES, CATEGORY_LABELS, ProbeText, probe_texts

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "ProbeText",
    "probe_texts",
    "SOURCES",
    "KINDS",
    "DEFAULT_CHUNK_CHARS",
    "MIN_DOC_CHARS",
    "CORPUS_PACKAGES",
    "Document",
    "build_corpus",
    "split_corpus",
    "corpus_report",
    "corpus_key",
    "tokenize_corpus",
]
