"""Held-out text for evaluation: the corpus's held-out files and the evaluation set's kinds.

Neither is ever used in training: the corpus's ``heldout`` split holds files no SAE saw, and the
evaluation set (:mod:`interp_lib.data.evalset`) is kept apart from the training sources and the
probe texts (``tests/test_data.py`` checks both).
"""

from __future__ import annotations

from typing import Sequence

import torch

from interp_lib import data
from interp_lib.model.activations import corpus_tokens

__all__ = ["heldout_tokens", "evalset_tokens"]


def heldout_tokens(
    model, n_tokens: int, ctx_len: int = 128, *, sources: Sequence[str] = data.SOURCES
) -> torch.Tensor:
    """Held-out corpus tokens [n_tokens // ctx_len, ctx_len] (files never used in training) of
    the corpus built from ``sources``."""
    return corpus_tokens(model, "heldout", n_tokens, ctx_len, sources=sources)


def evalset_tokens(model, kind: str, ctx_len: int = 128) -> torch.Tensor:
    """One kind's evaluation texts (:mod:`interp_lib.data.evalset`) as token ids
    [n, ctx_len], BOS first, EOS between texts (the ragged end left out)."""
    return data.tokenize_corpus(model, data.eval_documents(kind), ctx_len=ctx_len)
