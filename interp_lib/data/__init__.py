"""Text for the book: a small labelled probe set and an offline training corpus.

- :mod:`interp_lib.data.probes`: the 70 probe texts, 10 in each of 7 categories
  (:func:`probe_texts`, :data:`CATEGORIES`, :data:`CATEGORY_LABELS`), shipped beside this
  file as ``probe_texts.jsonl``;
- :mod:`interp_lib.data.corpus`: the offline training corpus built from installed text
  (:func:`build_corpus`), its train / held-out split (:func:`split_corpus`), cache key
  (:func:`corpus_key`), composition table (:func:`corpus_report`) and tokenisation
  (:func:`tokenize_corpus`);
- :mod:`interp_lib.data.evalset`: a held-out evaluation set of the same seven kinds of text,
  written for evaluation (:func:`eval_texts`, :func:`eval_documents`), shipped as
  ``eval_texts.jsonl``;
- :mod:`interp_lib.data.textkinds`: which of those seven kinds a text is (:func:`text_kind`),
  for the corpus report's "text kind" rows.

The names below are the package's API: ``from interp_lib import data; data.build_corpus()``.
"""

from interp_lib.data import corpus, evalset, probes, textkinds
from interp_lib.data.corpus import *  # noqa: F403 - the package API is the modules' __all__
from interp_lib.data.evalset import *  # noqa: F403
from interp_lib.data.probes import *  # noqa: F403
from interp_lib.data.textkinds import *  # noqa: F403

__all__ = probes.__all__ + corpus.__all__ + evalset.__all__ + textkinds.__all__
