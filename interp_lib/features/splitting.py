"""Feature splitting: a narrow SAE's feature and the wide SAE's features that correlate with it
(its children), how often they fire together, and a table of each family."""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch


def children_firing(
    narrow_feats: torch.Tensor, wide_feats: torch.Tensor, parent: int, kids: Sequence[int]
) -> torch.Tensor:
    """On each token where narrow feature ``parent`` fires, how many of the wide features ``kids``
    fire too (``narrow_feats`` [n, d_narrow], ``wide_feats`` [n, d_wide], same tokens)."""
    fires = narrow_feats[:, int(parent)] > 0
    kids = torch.as_tensor(list(kids), dtype=torch.long)
    return (wide_feats[fires][:, kids] > 0).sum(1)


FAMILY_COLUMNS = ["parent", "children", "parent fires on", "coverage", "children firing at once"]
"""Columns of :func:`split_families`."""


def split_families(
    narrow_feats: torch.Tensor,
    wide_feats: torch.Tensor,
    parent_index: torch.Tensor,
    is_child: torch.Tensor,
) -> pd.DataFrame:
    """One row per narrow feature with two or more children (wide features whose parent it is,
    ``parent_index`` [d_wide] where ``is_child``), largest family first: how often the parent
    fires, the share of those tokens on which a child fires too (*coverage*) and the mean number
    of children firing there (*children firing at once*: about 1 for a split, many for copies)."""
    children = torch.bincount(parent_index[is_child], minlength=narrow_feats.shape[1])
    rows = []
    for p in torch.nonzero(children >= 2).flatten().tolist():
        kids = torch.nonzero(is_child & (parent_index == p)).flatten().tolist()
        count = children_firing(narrow_feats, wide_feats, p, kids)
        rows.append(
            {
                "parent": p,
                "children": len(kids),
                "parent fires on": int((narrow_feats[:, p] > 0).sum()),
                "coverage": (count > 0).float().mean().item(),
                "children firing at once": count.float()[count > 0].mean().item(),
            }
        )
    fam = pd.DataFrame(rows, columns=FAMILY_COLUMNS)
    return fam.sort_values("children", ascending=False, kind="stable")


def top_tokens(column: torch.Tensor, strings: Sequence[str], n: int = 6) -> str:
    """The ``n`` tokens a feature fires on most often, with counts (``column`` [n_tokens]: its
    activations; ``strings``: the token of each row)."""
    fired = torch.nonzero(column > 0).flatten().tolist()
    counts = pd.Series([strings[i].strip() or repr(strings[i]) for i in fired]).value_counts()
    return ", ".join(f"{t!r} {c}" for t, c in counts.head(n).items())


def family_table(
    parent: int,
    narrow_feats: torch.Tensor,
    wide_feats: torch.Tensor,
    parent_index: torch.Tensor,
    parent_corr: torch.Tensor,
    is_child: torch.Tensor,
    strings: Sequence[str],
) -> pd.DataFrame:
    """A narrow feature and its children, one row each: correlation with the parent, tokens
    fired on, and the tokens each fires on most often (:func:`top_tokens`)."""
    kids = torch.nonzero(is_child & (parent_index == parent)).flatten().tolist()
    rows = [
        {
            "feature": f"narrow {parent} (parent)",
            "correlation with parent": 1.0,
            "fires on": int((narrow_feats[:, parent] > 0).sum()),
            "most frequent tokens": top_tokens(narrow_feats[:, parent], strings),
        }
    ]
    rows += [
        {
            "feature": f"wide {k}",
            "correlation with parent": float(parent_corr[k]),
            "fires on": int((wide_feats[:, k] > 0).sum()),
            "most frequent tokens": top_tokens(wide_feats[:, k], strings),
        }
        for k in kids
    ]
    return pd.DataFrame(rows)
