"""Read features out of texts: per-token SAE activations and per-text summaries.

:func:`encode_texts` is the bridge from text to features that every chapter uses: it runs each
text through the model up to the SAE's hook, encodes the activation with the SAE, and keeps the
token strings beside the feature activations. The BOS position (an attention sink) is dropped,
so token ``i`` of a text is its ``i``-th real token.

The rest of the module answers the chapters' questions about features over a set of texts,
from the per-text table ``Encoded.max`` [n_texts, d_sae]: :func:`strongest_features`,
:func:`frequent_features`, :func:`selective_features`, :func:`specialist_scores` and
:func:`category_specialists` (with "strong" defined relative to each feature's own maximum, see
:func:`strong_mask`), :func:`category_means`, :func:`category_common_features`,
:func:`coactivation`, :func:`features_for_concept` (composite score = frequency x mean activation,
optionally contrasted with a background). :func:`top_activating` and :func:`feature_peaks` say
where a feature fires; :func:`massive_tokens` and :func:`mask_tokens` find and silence tokens
whose residual norm is far above the rest (a text's first token can be a second attention sink);
:func:`with_readable_tokens` makes byte-level token strings readable. :func:`hook_activations` reads
the activation at a hook for a list of texts (batched); :func:`encode_activations` turns those into
an :class:`Encoded` without running the model again.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from .metrics import check_widths


class Encoded(NamedTuple):
    """Feature activations of a list of texts under one SAE."""

    texts: list[str]
    """The input texts (possibly truncated to the model's context)."""
    tokens: list[list[str]]
    """Per text, its token strings (BOS dropped)."""
    acts: list[torch.Tensor]
    """Per text, feature activations [n_tokens, d_sae] (float32, BOS dropped)."""
    max: torch.Tensor
    """Per-text max over tokens, [n_texts, d_sae]."""
    mean: torch.Tensor
    """Per-text mean over tokens, [n_texts, d_sae]."""

    def top_features(self, i: int, n: int = 5, pool: str = "max") -> list[tuple[int, float]]:
        """The ``n`` strongest features of text ``i`` as (feature, activation)."""
        pooled = {"max": self.max, "mean": self.mean}.get(pool)
        if pooled is None:
            raise ValueError(f"pool must be 'max' or 'mean', got {pool!r}")
        values, idx = pooled[i].topk(n)
        return [(int(f), float(v)) for f, v in zip(idx, values) if v > 0]


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a list of texts: non-empty list of non-empty strings."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string (wrap it: [text])")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is a {type(text).__name__}, not a str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is an empty string")
    return texts


def tokenize_text(model, text: str, index: int = 0) -> tuple[torch.Tensor, str]:
    """Tokens [1, n] of ``text`` with BOS, truncated to the model's context with a warning (and the kept text)."""
    toks = model.to_tokens(text, prepend_bos=True, truncate=False)
    n_ctx = model.cfg.n_ctx
    if toks.shape[1] > n_ctx:
        warnings.warn(f"texts[{index}] has {toks.shape[1]} tokens, more than the model's context of {n_ctx}: truncated",
                      stacklevel=3)
        toks = toks[:, :n_ctx]
        text = model.tokenizer.decode(toks[0, 1:])
    return toks, text


@torch.inference_mode()
def encode_texts(model, sae, texts: Sequence[str], *, progress: bool = False) -> Encoded:
    """Per-token feature activations (with token strings) and per-text max/mean pooled activations."""
    from tqdm.auto import tqdm

    texts = check_texts(texts)
    hook = check_widths(model, sae)
    from .activations import hook_layer

    stop_at = hook_layer(hook) + 1
    dtype = next(sae.parameters()).dtype
    tokens_out, acts_out, kept_texts = [], [], []
    for i, text in enumerate(tqdm(texts, desc="encode", disable=not progress, leave=False)):
        toks, text = tokenize_text(model, text, i)
        captured = {}

        def grab(act, hook):
            captured["x"] = act[0, 1:]

        model.run_with_hooks(toks.to(model.cfg.device), fwd_hooks=[(hook, grab)], stop_at_layer=stop_at)
        feats = sae.encode(captured["x"].to(dtype)).float().cpu()
        acts_out.append(feats)
        tokens_out.append(model.to_str_tokens(toks[0, 1:]))
        kept_texts.append(text)
    d_sae = sae.cfg.d_sae
    pooled_max = torch.stack([a.max(0).values if len(a) else torch.zeros(d_sae) for a in acts_out])
    pooled_mean = torch.stack([a.mean(0) if len(a) else torch.zeros(d_sae) for a in acts_out])
    return Encoded(kept_texts, tokens_out, acts_out, pooled_max, pooled_mean)


# ----------------------------------------------------------------------------------------------
# Feature statistics over a set of texts (the chapters' "which features matter?" questions)
#
# Every function below takes a per-text activation matrix ``pooled`` of shape [n_texts, d_sae]
# (usually ``Encoded.max``: each feature's largest activation over the text's tokens), as a torch
# tensor or a numpy array, and returns numpy arrays or small pandas tables.
#
# "Strong" is defined relative to each feature, so that it means the same on any SAE whatever its
# activation scale: a text activates a feature *strongly* when the feature's activation on it is
# positive and at least ``frac`` (default one half) of the largest activation that feature reaches
# on any of the texts considered.

STRONG_FRAC = 0.5
"""Default share of a feature's largest activation above which an activation counts as strong."""


def _as_matrix(pooled) -> np.ndarray:
    """A [n_texts, d_sae] float64 numpy copy of ``pooled`` (torch tensor or array-like)."""
    if isinstance(pooled, torch.Tensor):
        pooled = pooled.detach().float().cpu().numpy()
    arr = np.asarray(pooled, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a [n_texts, d_sae] matrix, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("expected at least one text (row), got none")
    return arr


def _check_categories(categories: Sequence[str], n_rows: int) -> tuple[np.ndarray, list[str]]:
    cats = np.asarray(list(categories), dtype=object)
    if len(cats) != n_rows:
        raise ValueError(f"got {len(cats)} categories for {n_rows} texts")
    return cats, list(dict.fromkeys(cats.tolist()))


def feature_frequency(pooled, threshold: float = 0.0) -> np.ndarray:
    """Share of texts on which each feature's activation exceeds ``threshold``, shape [d_sae]."""
    return (_as_matrix(pooled) > threshold).mean(0)


def strong_thresholds(pooled, frac: float = STRONG_FRAC) -> np.ndarray:
    """Per feature, the activation counted as strong: ``frac`` x its max over the texts (inf if it never fires)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    top = _as_matrix(pooled).max(0)
    return np.where(top > 0, frac * top, np.inf)


def strong_mask(pooled, frac: float = STRONG_FRAC) -> np.ndarray:
    """Boolean [n_texts, d_sae]: True where a text activates a feature strongly (>= its strong threshold)."""
    arr = _as_matrix(pooled)
    return (arr > 0) & (arr >= strong_thresholds(arr, frac))


def strongest_features(pooled, n: int = 10) -> pd.DataFrame:
    """The ``n`` features with the largest single activation: feature, max_act, text (its row), n_active."""
    arr = _as_matrix(pooled)
    top = arr.max(0)
    order = np.argsort(-top, kind="stable")[:n]
    order = order[top[order] > 0]
    return pd.DataFrame({
        "feature": order.astype(int),
        "max_act": top[order],
        "text": arr[:, order].argmax(0).astype(int),
        "n_active": (arr[:, order] > 0).sum(0).astype(int),
    })


def frequent_features(pooled, n: int = 10, threshold: float = 0.0) -> pd.DataFrame:
    """The ``n`` features active on the most texts: feature, n_active, frequency, mean_act, text (of the max)."""
    arr = _as_matrix(pooled)
    active = arr > threshold
    count = active.sum(0)
    mean = arr.mean(0)
    order = np.lexsort((-mean, -count))[:n]
    order = order[count[order] > 0]
    return pd.DataFrame({
        "feature": order.astype(int),
        "n_active": count[order].astype(int),
        "frequency": count[order] / arr.shape[0],
        "mean_act": mean[order],
        "text": arr[:, order].argmax(0).astype(int),
    })


def selective_features(pooled, n: int = 10, *, min_max: float | None = None, quantile: float = 0.9) -> pd.DataFrame:
    """Strong but rare features: among those whose max is >= ``min_max`` (default: the ``quantile`` of
    the maxima of features that fire at all), the ``n`` active on the fewest texts (ties: stronger first)."""
    arr = _as_matrix(pooled)
    top = arr.max(0)
    if min_max is None:
        fired = top[top > 0]
        if not len(fired):
            return pd.DataFrame({"feature": [], "max_act": [], "n_active": [], "text": []})
        min_max = float(np.quantile(fired, quantile))
    count = (arr > 0).sum(0)
    candidates = np.flatnonzero((top >= min_max) & (top > 0))
    order = candidates[np.lexsort((-top[candidates], count[candidates]))][:n]
    return pd.DataFrame({
        "feature": order.astype(int),
        "max_act": top[order],
        "n_active": count[order].astype(int),
        "text": arr[:, order].argmax(0).astype(int),
    })


def specialist_scores(pooled, categories: Sequence[str], frac: float = STRONG_FRAC) -> pd.DataFrame:
    """[d_sae x category] specialist score: texts of the category with a strong activation minus texts outside it."""
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    total = strong.sum(0)
    inside = {c: strong[cats == c].sum(0) for c in names}
    return pd.DataFrame({c: inside[c] - (total - inside[c]) for c in names}).rename_axis("feature")


def category_specialists(pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC,
                         min_score: int | None = None) -> pd.DataFrame:
    """Best specialist per category: feature, score, inside, outside, n_texts, mean_inside, specialist.

    ``specialist`` is True when the score reaches ``min_score`` (default: half the category's texts,
    rounded up): the feature is strong on that many more of the category's texts than of the others.
    """
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    total = strong.sum(0)
    rows = []
    for c in names:
        rows_c = cats == c
        inside = strong[rows_c].sum(0)
        outside = total - inside
        score = inside - outside
        mean_inside = arr[rows_c].mean(0)
        best = int(np.lexsort((-mean_inside, -score))[0])
        need = min_score if min_score is not None else int(np.ceil(rows_c.sum() / 2))
        rows.append({"category": c, "feature": best, "score": int(score[best]), "inside": int(inside[best]),
                     "outside": int(outside[best]), "n_texts": int(rows_c.sum()),
                     "mean_inside": float(mean_inside[best]), "specialist": bool(score[best] >= need)})
    return pd.DataFrame(rows)


def category_means(pooled, categories: Sequence[str], features: Sequence[int]) -> pd.DataFrame:
    """Mean activation of ``features`` (rows) over each category's texts (columns)."""
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    feats = [int(f) for f in features]
    return pd.DataFrame({c: arr[cats == c][:, feats].mean(0) for c in names}, index=pd.Index(feats, name="feature"))


def composite_scores(pooled, threshold: float = 0.0) -> np.ndarray:
    """Frequency x strength per feature: share of texts above ``threshold`` times mean activation, [d_sae]."""
    arr = _as_matrix(pooled)
    return (arr > threshold).mean(0) * arr.mean(0)


def features_for_concept(concept, background=None, *, n: int = 10, threshold: float = 0.0) -> pd.DataFrame:
    """Features that characterise a concept's example texts, ranked by composite score
    (frequency x mean activation); with ``background`` texts, by the concept's composite minus theirs.

    Columns: feature, frequency, mean_act, composite (and background, score when ``background`` is given).
    """
    arr = _as_matrix(concept)
    freq = (arr > threshold).mean(0)
    mean = arr.mean(0)
    composite = freq * mean
    columns = {"frequency": freq, "mean_act": mean, "composite": composite}
    rank = composite
    if background is not None:
        bg = _as_matrix(background)
        if bg.shape[1] != arr.shape[1]:
            raise ValueError(f"concept has {arr.shape[1]} features, background {bg.shape[1]}")
        columns["background"] = composite_scores(bg, threshold)
        columns["score"] = rank = composite - columns["background"]
    order = np.argsort(-rank, kind="stable")[:n]
    order = order[rank[order] > 0]
    return pd.DataFrame({"feature": order.astype(int), **{k: v[order] for k, v in columns.items()}})


def category_common_features(pooled, categories: Sequence[str], n: int = 5, threshold: float = 0.0) -> pd.DataFrame:
    """Per category, the ``n`` features active on most of its texts: category, feature, frequency, mean_act."""
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    rows = []
    for c in names:
        sub = arr[cats == c]
        freq, mean = (sub > threshold).mean(0), sub.mean(0)
        for f in np.lexsort((-mean, -freq))[:n]:
            if freq[f] > 0:
                rows.append({"category": c, "feature": int(f), "frequency": float(freq[f]), "mean_act": float(mean[f])})
    return pd.DataFrame(rows)


def coactivation(acts, features: Sequence[int], threshold: float = 0.0) -> pd.DataFrame:
    """Jaccard index between ``features``: rows (tokens or texts) where both are active / where either is."""
    arr = _as_matrix(acts)
    feats = [int(f) for f in features]
    on = arr[:, feats] > threshold
    both = on.T.astype(np.int64) @ on.astype(np.int64)
    count = on.sum(0)
    either = count[:, None] + count[None, :] - both
    jac = np.divide(both, either, out=np.zeros(both.shape), where=either > 0)
    return pd.DataFrame(jac, index=pd.Index(feats, name="feature"), columns=feats)


def _token_at(tokens: Sequence[str], position: int) -> str:
    """The token at ``position``, or for a '' continuation piece (see readable_tokens) the token it continues."""
    for p in range(position, -1, -1):
        if tokens[p]:
            return tokens[p]
    return tokens[position]


def top_activating(enc: Encoded, feature: int, n: int = 10) -> pd.DataFrame:
    """The ``n`` texts on which ``feature`` is strongest: text (index), max_act, position and token of the max."""
    col = enc.max[:, int(feature)].float().numpy()
    order = [int(i) for i in np.argsort(-col, kind="stable")[:n] if col[i] > 0]
    pos = [int(enc.acts[i][:, int(feature)].argmax()) for i in order]
    return pd.DataFrame({"text": order, "max_act": col[order] if order else [], "position": pos,
                         "token": [_token_at(enc.tokens[i], p) for i, p in zip(order, pos)]})


def feature_peaks(enc: Encoded, features: Sequence[int], texts: Sequence[int]) -> pd.DataFrame:
    """Where each feature peaks in its text (pairwise): feature, text, position, token, activation."""
    if len(features) != len(texts):
        raise ValueError(f"got {len(features)} features for {len(texts)} texts")
    rows = []
    for f, t in zip(features, texts):
        f, t = int(f), int(t)
        p = int(enc.acts[t][:, f].argmax())
        rows.append({"feature": f, "text": t, "position": p, "token": _token_at(enc.tokens[t], p),
                     "activation": float(enc.acts[t][p, f])})
    return pd.DataFrame(rows)


def readable_tokens(tokenizer, text: str) -> list[str] | None:
    """Token strings that read as the text: a character split over several byte tokens shows once,
    on its first token, and its other tokens are ''. None if the tokenizer gives no character offsets."""
    try:
        spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    out, end = [], 0
    for _, stop in spans:
        # From the end of the previous token: a space that the offsets leave out goes with the next token.
        out.append(text[end:stop] if stop > end else "")
        end = max(end, stop)
    return out


def with_readable_tokens(enc: Encoded, tokenizer) -> Encoded:
    """``enc`` with each text's token strings from :func:`readable_tokens` (kept as they are where those do not line up)."""
    tokens = []
    for text, toks in zip(enc.texts, enc.tokens):
        readable = readable_tokens(tokenizer, text)
        tokens.append(readable if readable is not None and len(readable) == len(toks) else list(toks))
    return enc._replace(tokens=tokens)


@torch.inference_mode()
def hook_activations(model, hook: str, texts: Sequence[str], *, drop_bos: bool = True,
                     batch_size: int = 16) -> list[torch.Tensor]:
    """Per text, the model's activation at ``hook``, [n_tokens, d] (float32; position 0 kept if not ``drop_bos``).

    Texts of similar length are run together, padded at the end: the model is causal, so padding
    after a text changes nothing at its own positions.
    """
    from .activations import _check_hooks, hook_layer

    texts = check_texts(texts)
    hook = _check_hooks(model, [hook])[0]
    stop_at = hook_layer(hook) + 1
    toks = [model.to_tokens(text, prepend_bos=True)[0, : model.cfg.n_ctx] for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(toks[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(toks[i]) for i in idx)
        batch = torch.zeros(len(idx), width, dtype=toks[idx[0]].dtype)
        for row, i in enumerate(idx):
            batch[row, : len(toks[i])] = toks[i]
        captured = {}

        def grab(act, hook):
            captured["x"] = act

        model.run_with_hooks(batch.to(model.cfg.device), fwd_hooks=[(hook, grab)], stop_at_layer=stop_at)
        acts = captured["x"].float().cpu()
        for row, i in enumerate(idx):
            x = acts[row, : len(toks[i])]
            out[i] = (x[1:] if drop_bos else x).clone()
    return out


def text_tokens(model, texts: Sequence[str]) -> list[list[str]]:
    """Per text, its token strings with BOS left out, made readable where possible (see readable_tokens)."""
    out = []
    for text in check_texts(texts):
        raw = model.to_str_tokens(model.to_tokens(text, prepend_bos=True)[0, 1 : model.cfg.n_ctx])
        readable = readable_tokens(model.tokenizer, text)
        out.append(readable if readable is not None and len(readable) == len(raw) else list(raw))
    return out


@torch.inference_mode()
def encode_activations(sae, acts: Sequence[torch.Tensor], tokens: Sequence[Sequence[str]],
                       texts: Sequence[str]) -> Encoded:
    """The :class:`Encoded` of activations already read from the model (e.g. by hook_activations), without another pass."""
    if not (len(acts) == len(tokens) == len(texts)):
        raise ValueError(f"got {len(acts)} activation tensors, {len(tokens)} token lists and {len(texts)} texts")
    for i, (a, t) in enumerate(zip(acts, tokens)):
        if a.shape[0] != len(t):
            raise ValueError(f"text {i}: {a.shape[0]} activations but {len(t)} tokens")
    dtype = next(sae.parameters()).dtype
    sizes = [a.shape[0] for a in acts]
    feats = sae.encode(torch.cat(list(acts)).to(dtype)).float().cpu() if sum(sizes) else torch.zeros(0, sae.cfg.d_sae)
    per_text = list(feats.split(sizes))
    d_sae = sae.cfg.d_sae
    pooled_max = torch.stack([a.max(0).values if len(a) else torch.zeros(d_sae) for a in per_text])
    pooled_mean = torch.stack([a.mean(0) if len(a) else torch.zeros(d_sae) for a in per_text])
    return Encoded(list(texts), [list(t) for t in tokens], per_text, pooled_max, pooled_mean)


def massive_tokens(acts: Sequence[torch.Tensor], factor: float = 5.0) -> list[torch.Tensor]:
    """Per text, a bool mask of tokens whose activation norm exceeds ``factor`` x the median norm of all tokens."""
    from .metrics import typical_rows

    if not acts or not sum(len(a) for a in acts):
        raise ValueError("no tokens given")
    massive = ~typical_rows(torch.cat([a.reshape(len(a), -1) for a in acts]), factor)
    return list(massive.split([len(a) for a in acts]))


def mask_tokens(enc: Encoded, mask: Sequence[torch.Tensor]) -> Encoded:
    """``enc`` with the tokens marked in ``mask`` (one bool mask per text) silenced: their feature activations
    set to zero and left out of the pooled max and mean. Tokens and positions stay as they were."""
    if len(mask) != len(enc.acts):
        raise ValueError(f"got {len(mask)} masks for {len(enc.acts)} texts")
    d_sae = enc.max.shape[1]
    acts, pooled_max, pooled_mean = [], [], []
    for i, (toks, a, m) in enumerate(zip(enc.tokens, enc.acts, mask)):
        m = torch.as_tensor(m, dtype=torch.bool)
        if m.shape != (len(toks),):
            raise ValueError(f"mask {i} has shape {tuple(m.shape)}, text {i} has {len(toks)} tokens")
        a = a.clone()
        a[m] = 0
        kept = a[~m]
        acts.append(a)
        pooled_max.append(kept.max(0).values if len(kept) else torch.zeros(d_sae))
        pooled_mean.append(kept.mean(0) if len(kept) else torch.zeros(d_sae))
    return Encoded(list(enc.texts), [list(t) for t in enc.tokens], acts, torch.stack(pooled_max), torch.stack(pooled_mean))