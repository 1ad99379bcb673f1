"""Massive activations: tokens whose activation norm is many times the median norm.

The first position of every context is an attention sink (chapter 1): at the residual stream its
norm is about 150 times that of any other token, and later tokens can become sinks too. An SAE
gives such tokens absurd activations, and one of them dominates any mean-squared error, so the
library leaves them out of training, evaluation and the feature pages. "Massive" always means
*norm above a factor times the median norm* (:func:`typical_rows`); the factor is one of three
named thresholds, each for one purpose:

* :data:`MASSIVE_FACTOR` (10): the library's threshold, for evaluation (typical-token FVE),
  training's outlier filter and every chapter's "typical tokens".
* :data:`SINK_FACTOR` (5): the chapters' sink count on probe texts (chapters 2-4), where a short
  text's second sink sits between 5 and 10 times the median.
* :data:`PAGE_FACTOR` (3): the feature pages' and autointerp's filter, lower because a page ranks
  single top activations, which one 5x sink already dominates.
"""

from __future__ import annotations

from typing import Sequence

import torch

from interp_lib.errors import InvalidArgumentError

__all__ = ["MASSIVE_FACTOR", "SINK_FACTOR", "PAGE_FACTOR", "typical_rows", "massive_tokens"]

MASSIVE_FACTOR = 10.0
"""The library's threshold: a token whose activation norm exceeds this many times the median norm
is *massive* (an attention sink, or a second one later in the text)."""

SINK_FACTOR = 5
"""The chapters' threshold for counting attention sinks on the probe texts: a lower bar than
:data:`MASSIVE_FACTOR` that catches every sink there (chapter 2 measures it)."""

PAGE_FACTOR = 3.0
"""The feature pages' and autointerp's threshold: lower than :data:`MASSIVE_FACTOR` because a page
ranks single top activations, which one 5x sink already dominates. Measured on held-out text, the
norms fall in two groups: ordinary tokens up to about 2x the median (the MLP output at layer 15
reaches 2.1x), sinks from about 4.5x (at layer 5 about 1% of tokens, many at 4.5-4.9x, which a cut
at 5x would keep, and they then dominate the top activations of dozens of features). 3x lies in
the gap at every hook of the zoo."""


def typical_rows(x: torch.Tensor, factor: float = MASSIVE_FACTOR) -> torch.Tensor:
    """[n] True where a row of ``x`` [n, d] has a norm of at most ``factor`` x the median norm."""
    # Norms in chunks: no fp32 copy of the whole of x.
    norms = torch.cat([x[i : i + 65536].float().norm(dim=-1) for i in range(0, x.shape[0], 65536)])
    return norms <= factor * norms.median()


def massive_tokens(
    acts: Sequence[torch.Tensor], factor: float = MASSIVE_FACTOR
) -> list[torch.Tensor]:
    """Per text, a bool mask of tokens whose activation norm exceeds ``factor`` x the median norm of
    all tokens."""
    if not acts or not sum(len(a) for a in acts):
        raise InvalidArgumentError("acts: no tokens given (need at least one text with tokens)")
    massive = ~typical_rows(torch.cat([a.reshape(len(a), -1) for a in acts]), factor)
    return list(massive.split([len(a) for a in acts]))
