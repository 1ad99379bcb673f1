"""Compare SAEs with each other: across layers and sites (chapter 3), and against a homebrew one (chapter 4).

Four groups of helpers, each small enough to read:

* **Quality of many SAEs at once.** :func:`splice_metrics` gives, for a dict of SAEs, the same
  :class:`~interp_lib.metrics.SAEMetrics` as :func:`interp_lib.metrics.sae_metrics`, but runs the
  clean and the zero-ablated forward passes once per hook instead of once per SAE (a sweep of ten
  SAEs at one hook costs about a third). :func:`metrics_table` and :func:`recorded_metrics` make
  tables of those and of the numbers stored beside a shipped SAE.
* **Feature geometry.** :func:`decoder_directions`, :func:`best_matches` (for every feature of
  one SAE, the feature of another whose decoder direction has the largest cosine similarity),
  :func:`match_shares` and :func:`random_match_baseline` (what "best match" gives for directions
  that have nothing in common).
* **How specialised features are.** :func:`category_concentration` (per feature, the share of its
  strong texts that belong to its most common category), :func:`specialisation_summary` (one row
  of numbers per SAE), :func:`emoji_mask` and :func:`token_precision` (token-level specialists, e.g.
  features whose strongest tokens are emoji), :func:`top_text_overlap` (do two features fire on
  the same texts?).
* **Homebrew SAEs next to SAELens ones.** :func:`to_saelens` turns an :mod:`interp_lib.sae` model
  into a ``sae_lens.SAE`` that takes raw activations; :func:`with_hook` labels one that lacks its
  hook name; :class:`LiveCurves` draws training curves while a trainer runs.

Plus figures in the book's style: :func:`density_figure`, :func:`tradeoff_figure`,
:func:`curves_figure`.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from .analysis import STRONG_FRAC, _as_matrix, _check_categories, strong_mask, tokenize_text
from .metrics import DENSE_THRESHOLD, SAEMetrics, _fve, check_widths, typical_fve

__all__ = [
    "sae_label",
    "splice_metrics",
    "ManyEncoded",
    "encode_many",
    "metrics_table",
    "recorded_metrics",
    "decoder_directions",
    "Matches",
    "best_matches",
    "activation_matches",
    "same_number_share",
    "match_shares",
    "random_match_baseline",
    "category_concentration",
    "specialisation_summary",
    "specialist_feature_count",
    "paired_subsamples",
    "is_emoji",
    "emoji_mask",
    "token_precision",
    "top_text_overlap",
    "to_saelens",
    "with_hook",
    "LiveCurves",
    "density_figure",
    "distributions_figure",
    "tradeoff_figure",
    "curves_figure",
]

_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(.+)$")
_SITE_NAMES = {"resid_pre": "resid", "mlp_out": "mlp_out", "attn_out": "attn_out", "resid_post": "resid_post"}


def sae_label(release: str, sae_id: str) -> str:
    """A short name for tables and legends: ``"resid 15"``, ``"mlp_out 15"`` (the sae_id if not a hook)."""
    match = _HOOK.match(sae_id)
    if not match:
        return sae_id
    layer, site = match.groups()
    return f"{_SITE_NAMES.get(site, site)} {layer}"


# ----------------------------------------------------------------------------------------------
# Quality of many SAEs at once
# ----------------------------------------------------------------------------------------------
@torch.inference_mode()
def splice_metrics(model, saes: Mapping[str, object], tokens: torch.Tensor, *, batch_size: int = 8,
                   progress: bool = True) -> dict[str, SAEMetrics]:
    """:func:`interp_lib.metrics.sae_metrics` for several SAEs over the same ``tokens`` [n, ctx].

    Each SAE must be a ``sae_lens.SAE`` (or anything with ``encode``, ``decode``, ``cfg.d_sae``,
    ``cfg.d_in`` and ``cfg.metadata.hook_name``); they may read different hooks. Per batch, the clean
    pass runs once (capturing every hook), the zero-ablated pass once per hook, and one spliced
    pass per SAE; for ``blocks.N.hook_resid_pre`` the ablated and spliced passes restart at layer N.
    Position 0 is neither spliced nor scored, as in ``sae_metrics``. Returns {name: SAEMetrics}.
    """
    from tqdm.auto import tqdm

    if not saes:
        raise ValueError("saes is empty: pass at least one SAE")
    if tokens.ndim != 2 or tokens.shape[1] < 3:
        raise ValueError(f"tokens must be [n_contexts, ctx_len >= 3], got shape {tuple(tokens.shape)}")
    hooks = {name: check_widths(model, sae) for name, sae in saes.items()}
    distinct = list(dict.fromkeys(hooks.values()))
    start = {}
    for hook in distinct:
        m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", hook)
        start[hook] = int(m.group(1)) if m and int(m.group(1)) > 0 else None
    acc = {name: {"fires": torch.zeros(sae.cfg.d_sae, dtype=torch.float64), "l0": 0.0, "sse": 0.0,
                  "loss": [], "err": []} for name, sae in saes.items()}
    xs = {hook: [] for hook in distinct}  # activations per hook, for both FVEs
    clean_losses, zero_losses, n_rows = [], {hook: [] for hook in distinct}, 0

    def run_with(hook, batch, full, fn):
        """Loss per token with fn applied to positions >= 1 of the activation at hook."""
        if start[hook] is not None:
            resid = full.clone()
            resid[:, 1:] = fn(resid[:, 1:])
            return model(resid, start_at_layer=start[hook], tokens=batch, return_type="loss", loss_per_token=True)

        def hook_fn(act, hook):
            act = act.clone()
            act[:, 1:] = fn(act[:, 1:])
            return act

        return model.run_with_hooks(batch, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, hook_fn)])

    bar = tqdm(total=tokens.shape[0], unit="ctx", desc="metrics", disable=not progress, leave=False)
    for i in range(0, tokens.shape[0], batch_size):
        batch = tokens[i : i + batch_size].to(model.cfg.device)
        captured = {}

        def grab(act, hook):
            captured[hook.name] = act

        clean = model.run_with_hooks(batch, return_type="loss", loss_per_token=True,
                                     fwd_hooks=[(h, grab) for h in distinct])
        clean_losses.append(clean[:, 1:].reshape(-1).double())
        for hook in distinct:
            x = captured[hook][:, 1:].reshape(-1, captured[hook].shape[-1]).float()
            xs[hook].append(x.cpu())
            zero_losses[hook].append(run_with(hook, batch, captured[hook], torch.zeros_like)[:, 1:].reshape(-1).double())
        n_rows += batch.shape[0] * (batch.shape[1] - 1)
        for name, sae in saes.items():
            hook = hooks[name]
            full = captured[hook]
            dtype = next(sae.parameters()).dtype
            x = full[:, 1:].reshape(-1, full.shape[-1]).float()
            feats = sae.encode(x.to(dtype)).float()
            x_hat = sae.decode(feats.to(dtype)).float()
            a = acc[name]
            active = feats > 0
            a["fires"] += active.sum(0).double()
            a["l0"] += active.sum().item()
            err = (x - x_hat).pow(2).sum(-1)
            a["sse"] += err.sum().item()
            a["err"].append(err.double().cpu())

            def reconstruct(act, sae=sae, dtype=dtype):
                return sae.decode(sae.encode(act.to(dtype))).to(act.dtype)

            a["loss"].append(run_with(hook, batch, full, reconstruct)[:, 1:].reshape(-1).double())
        bar.update(batch.shape[0])
    bar.close()
    ce_clean = torch.cat(clean_losses).mean().item()
    xs = {hook: torch.cat(rows) for hook, rows in xs.items()}
    out = {}
    for name, sae in saes.items():
        hook, a = hooks[name], acc[name]
        ce_zero = torch.cat(zero_losses[hook]).mean().item()
        ce_sae = torch.cat(a["loss"]).mean().item()
        density = (a["fires"] / n_rows).numpy()
        err = torch.cat(a["err"])
        fve_typ, massive = typical_fve(xs[hook], err)
        out[name] = SAEMetrics(
            l0=a["l0"] / n_rows,
            fve=_fve(xs[hook], err),
            fve_typical=fve_typ,
            massive_fraction=massive,
            mse=a["sse"] / (n_rows * sae.cfg.d_in),
            ce_clean=ce_clean,
            ce_sae=ce_sae,
            ce_zero=ce_zero,
            ce_recovered=(ce_zero - ce_sae) / (ce_zero - ce_clean) if ce_zero != ce_clean else float("nan"),
            ce_increase=ce_sae - ce_clean,
            dead_fraction=float((density == 0).mean()),
            dense_fraction=float((density > DENSE_THRESHOLD).mean()),
            density=density,
            n_tokens=n_rows,
        )
    return out


class ManyEncoded(NamedTuple):
    """What :func:`encode_many` returns."""

    encoded: dict
    """{name: :class:`interp_lib.analysis.Encoded`}, one per SAE, as ``encode_texts`` gives it."""
    hook_acts: dict
    """{hook: per text, the model's activation [n_tokens, d] (float32, BOS dropped)}."""


@torch.inference_mode()
def encode_many(model, saes: Mapping[str, object], texts: Sequence[str], *, progress: bool = False) -> ManyEncoded:
    """:func:`interp_lib.analysis.encode_texts` for several SAEs in one forward pass per text.

    Every hook the SAEs read is captured in the same pass (which stops after the deepest one), so
    five SAEs cost one pass instead of five; the raw activations at each hook come back too (for
    :func:`interp_lib.analysis.massive_tokens`). Texts longer than the model's context are
    truncated (with a warning, as in ``encode_texts``).
    """
    from tqdm.auto import tqdm

    from .activations import stop_layer
    from .analysis import Encoded, check_texts

    if not saes:
        raise ValueError("saes is empty: pass at least one SAE")
    texts = check_texts(texts)
    hooks = {name: check_widths(model, sae) for name, sae in saes.items()}
    distinct = list(dict.fromkeys(hooks.values()))
    stop_at = stop_layer(distinct)
    per_sae = {name: [] for name in saes}
    hook_acts = {h: [] for h in distinct}
    tokens_out, kept = [], []
    for i, text in enumerate(tqdm(texts, desc="encode", disable=not progress, leave=False)):
        toks, text = tokenize_text(model, text, i)
        captured = {}

        def grab(act, hook):
            captured[hook.name] = act[0, 1:]

        model.run_with_hooks(toks.to(model.cfg.device), fwd_hooks=[(h, grab) for h in distinct], stop_at_layer=stop_at)
        for h in distinct:
            hook_acts[h].append(captured[h].float().cpu())
        for name, sae in saes.items():
            dtype = next(sae.parameters()).dtype
            per_sae[name].append(sae.encode(captured[hooks[name]].to(dtype)).float().cpu())
        tokens_out.append(model.to_str_tokens(toks[0, 1:]))
        kept.append(text)
    encoded = {}
    for name, sae in saes.items():
        acts, d_sae = per_sae[name], sae.cfg.d_sae
        pooled_max = torch.stack([a.max(0).values if len(a) else torch.zeros(d_sae) for a in acts])
        pooled_mean = torch.stack([a.mean(0) if len(a) else torch.zeros(d_sae) for a in acts])
        encoded[name] = Encoded(list(kept), [list(t) for t in tokens_out], acts, pooled_max, pooled_mean)
    return ManyEncoded(encoded, hook_acts)


METRIC_COLUMNS = {
    "l0": "L0",
    "fve": "variance explained",
    "fve_typical": "variance explained (typical tokens)",
    "ce_recovered": "CE-loss recovered",
    "ce_increase": "loss increase (nats)",
    "dead_fraction": "dead",
    "dense_fraction": "dense",
}
"""The metrics the book tabulates, and their column titles."""


def metrics_table(results: Mapping[str, SAEMetrics | Mapping], columns: Mapping[str, str] = METRIC_COLUMNS) -> pd.DataFrame:
    """One row per SAE (index: its name) with the ``columns`` metrics, from SAEMetrics or dicts
    (e.g. :func:`recorded_metrics`; a missing metric is NaN)."""
    rows = {}
    for name, m in results.items():
        d = m.summary() if isinstance(m, SAEMetrics) else dict(m)
        rows[name] = {title: float(d[key]) if d.get(key) is not None else float("nan") for key, title in columns.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(columns.values()))


def recorded_metrics(release: str, sae_id: str) -> dict:
    """The quality numbers stored with a shipped SAE (its ``metrics.json``); ``{}`` for an SAE that
    is not shipped with the project (e.g. SAELens's pretrained releases) or has none."""
    from .zoo import RELEASES, sae_metadata

    if release not in RELEASES:
        return {}
    try:
        return sae_metadata(release, sae_id)
    except (FileNotFoundError, ValueError):
        return {}


def training_recipe(release: str, sae_id: str) -> dict:
    """How a shipped SAE was trained (``{"training tokens": N, "passes": E, "batch size": B}``, from
    its recorded recipe); ``{}`` for an SAE without one."""
    from .zoo import sae_recipe

    recipe = recorded_metrics(release, sae_id).get("recipe")
    if not recipe:
        return {}
    own = sae_recipe(sae_id, recipe)
    return {"training tokens": int(own["train_tokens"]), "passes": float(own["epochs"]), "batch size": int(own["batch_size"])}


# ----------------------------------------------------------------------------------------------
# Feature geometry: decoder directions and their best matches
# ----------------------------------------------------------------------------------------------
def decoder_directions(sae_or_matrix) -> torch.Tensor:
    """Unit-norm decoder directions ``[d_sae, d_in]`` (float32) of an SAE (``W_dec``: one row per
    feature, in SAELens and in :mod:`interp_lib.sae`) or of a matrix given directly."""
    w = sae_or_matrix if isinstance(sae_or_matrix, torch.Tensor) else sae_or_matrix.W_dec
    w = w.detach().float().cpu()
    if w.ndim != 2:
        raise ValueError(f"expected a [d_sae, d_in] matrix, got shape {tuple(w.shape)}")
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class Matches(NamedTuple):
    """For every feature of SAE A, its best match in SAE B."""

    index: torch.Tensor
    """``[d_sae_A]`` feature of B with the largest cosine similarity."""
    cosine: torch.Tensor
    """``[d_sae_A]`` that cosine similarity."""


@torch.no_grad()
def best_matches(a, b, *, exclude_same: bool = False, chunk: int = 2048) -> Matches:
    """For each decoder direction of ``a``, the direction of ``b`` with the largest cosine similarity.

    ``a``, ``b``: SAEs or ``[n, d]`` matrices with the same ``d`` (rows are normalised here).
    ``exclude_same``: never match feature ``i`` of A with feature ``i`` of B. Two SAEs trained from
    the same random initialisation (same seed, same shape) start with identical dictionaries, and
    a feature that moved little keeps much of its starting direction in both; excluding the
    same-numbered feature leaves only similarity that training produced. Computed in chunks of
    ``chunk`` rows of ``a``. Note the asymmetry: A's best match in B is not B's best match in A.
    """
    da, db = decoder_directions(a), decoder_directions(b)
    if da.shape[1] != db.shape[1]:
        raise ValueError(f"directions live in different spaces: d={da.shape[1]} vs d={db.shape[1]}")
    if exclude_same and db.shape[0] < 2:
        raise ValueError("exclude_same needs at least two features in b")
    idx, cos = [], []
    for i in range(0, da.shape[0], chunk):
        sims = da[i : i + chunk] @ db.T
        if exclude_same:
            rows = torch.arange(i, min(i + chunk, da.shape[0]))
            keep = rows < db.shape[0]
            sims[(rows - i)[keep], rows[keep]] = -torch.inf
        c, j = sims.max(dim=1)
        idx.append(j)
        cos.append(c)
    return Matches(torch.cat(idx), torch.cat(cos))


@torch.no_grad()
def activation_matches(acts_a, acts_b, *, exclude_same: bool = False, min_active: int = 5, chunk: int = 1024) -> Matches:
    """For each feature of A, the feature of B whose activations correlate best with its own over
    the same tokens (Pearson correlation; Bricken et al. 2023 compare features across SAEs this way).

    ``acts_a``: ``[n_tokens, d_a]``, ``acts_b``: ``[n_tokens, d_b]``, the two SAEs' activations on
    the same tokens. A feature active (non-zero) on fewer than ``min_active`` tokens is not matched:
    as a feature of A its result is NaN (index -1); as a feature of B it is never chosen (two
    features that both fire on one token only would correlate perfectly and mean nothing).
    ``exclude_same`` as in :func:`best_matches`.
    """
    a = torch.as_tensor(acts_a).detach().float().cpu()
    b = torch.as_tensor(acts_b).detach().float().cpu()
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"need [n_tokens, d] activations of the same tokens, got {tuple(a.shape)} and {tuple(b.shape)}")

    def standardise(x):
        active = (x != 0).sum(0) >= max(min_active, 1)
        x = x - x.mean(0)
        norm = x.norm(dim=0)
        return x / norm.clamp_min(1e-12), (norm > 1e-8) & active

    za, ok_a = standardise(a)
    zb, ok_b = standardise(b)
    idx, corr = [], []
    for i in range(0, a.shape[1], chunk):
        sims = za[:, i : i + chunk].T @ zb  # [chunk, d_b]
        sims[:, ~ok_b] = -torch.inf
        if exclude_same:
            rows = torch.arange(i, min(i + chunk, a.shape[1]))
            keep = rows < b.shape[1]
            sims[(rows - i)[keep], rows[keep]] = -torch.inf
        c, j = sims.max(dim=1)
        idx.append(j)
        corr.append(c)
    index, corr = torch.cat(idx), torch.cat(corr)
    bad = ~ok_a | torch.isinf(corr)
    return Matches(torch.where(bad, torch.full_like(index, -1), index), torch.where(bad, torch.nan, corr))


def same_number_share(matches: Matches) -> float:
    """Share of features whose best match is the feature with the same number (a sign of a shared
    initialisation when it is far above ``1 / d_sae``); features without a match (index -1) are left out."""
    ok = matches.index >= 0
    if not ok.any():
        return float("nan")
    return float((matches.index == torch.arange(len(matches.index)))[ok].float().mean())


def match_shares(cosine, thresholds: Sequence[float] = (0.5, 0.7, 0.9)) -> dict[float, float]:
    """Share of features whose best-match similarity is at least each threshold (NaN left out)."""
    c = torch.as_tensor(cosine).float()
    c = c[~torch.isnan(c)]
    if c.numel() == 0:
        raise ValueError("no similarities given (all NaN or empty)")
    return {float(t): float((c >= t).float().mean()) for t in thresholds}


def random_match_baseline(n_a: int, n_b: int, d: int, *, seed: int = 0) -> torch.Tensor:
    """Best-match cosines between two sets of random unit directions (``n_a`` against ``n_b`` in
    ``d`` dimensions): what :func:`best_matches` gives when the two dictionaries share nothing."""
    g = torch.Generator().manual_seed(seed)
    return best_matches(torch.randn(n_a, d, generator=g), torch.randn(n_b, d, generator=g)).cosine


# ----------------------------------------------------------------------------------------------
# How specialised are the features?
# ----------------------------------------------------------------------------------------------
def category_concentration(pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC,
                           min_strong: int = 3) -> np.ndarray:
    """Per feature, the share of its strong texts (see :func:`interp_lib.analysis.strong_mask`) that
    belong to its most common category, ``[d_sae]``; NaN for features strong on fewer than
    ``min_strong`` texts (too few to tell). 1.0: every strong text is from one category; a
    feature that fires regardless of category scores about the largest category's share."""
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    per_cat = np.stack([strong[cats == c].sum(0) for c in names])  # [n_categories, d_sae]
    total = per_cat.sum(0)
    out = np.full(arr.shape[1], np.nan)
    ok = total >= min_strong
    out[ok] = per_cat[:, ok].max(0) / total[ok]
    return out


def specialisation_summary(pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC,
                           min_strong: int = 3) -> dict:
    """How specialised one SAE's features are on a labelled text set, as plain numbers:

    ``categories_with_specialist`` (categories whose best feature scores at least half the
    category's size, as in :func:`interp_lib.analysis.category_specialists`), ``mean_best_score``
    (mean over categories of the best specialist score), ``specialist_features`` (features whose
    score reaches that bar for some category), ``scored_features`` (features strong on at least
    ``min_strong`` texts), ``mean_concentration`` and ``share_concentrated`` (share of scored
    features with concentration >= 0.8), from :func:`category_concentration`.
    """
    from .analysis import category_specialists

    arr = _as_matrix(pooled)
    best = category_specialists(arr, categories, frac=frac)
    conc = category_concentration(arr, categories, frac=frac, min_strong=min_strong)
    scored = conc[~np.isnan(conc)]
    return {
        "categories_with_specialist": int(best.specialist.sum()),
        "mean_best_score": float(best.score.mean()),
        "specialist_features": specialist_feature_count(arr, categories, frac=frac),
        "scored_features": int(scored.size),
        "mean_concentration": float(scored.mean()) if scored.size else float("nan"),
        "share_concentrated": float((scored >= 0.8).mean()) if scored.size else float("nan"),
    }


def specialist_feature_count(pooled, categories: Sequence[str], *, frac: float = STRONG_FRAC) -> int:
    """Number of features that are specialists of some category: strong on at least half the
    category's texts (rounded up) more often inside it than outside it (chapter 2's rule)."""
    arr = _as_matrix(pooled)
    cats, names = _check_categories(categories, arr.shape[0])
    strong = strong_mask(arr, frac)
    inside = np.stack([strong[cats == c].sum(0) for c in names])  # [n_categories, d_sae]
    score = 2 * inside - strong.sum(0)[None, :]
    need = np.array([math.ceil((cats == c).sum() / 2) for c in names])[:, None]
    return int((score >= need).any(0).sum())


def paired_subsamples(pooled_by_name: Mapping[str, object], categories: Sequence[str],
                      stat: Callable[[np.ndarray, Sequence[str]], float], *, n: int = 100, frac: float = 0.8,
                      seed: int = 0) -> pd.DataFrame:
    """``stat(pooled, categories)`` for every SAE on ``n`` random subsets of the texts, ``[n, n_saes]``.

    Each subset keeps, within every category, ``frac`` of its texts (rounded, at least one), drawn
    without replacement, and every SAE is scored on the *same* subset, so that the share of subsets
    in which SAE A beats SAE B measures how robust "A > B" is to the choice of texts. (Drawing
    without replacement matters: a bootstrap's duplicated texts would inflate threshold counts
    such as specialist scores, and not equally for every SAE.)"""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    mats = {name: _as_matrix(p) for name, p in pooled_by_name.items()}
    n_rows = {m.shape[0] for m in mats.values()}
    if len(n_rows) != 1:
        raise ValueError(f"every SAE must be scored on the same texts, got row counts {sorted(n_rows)}")
    cats, names = _check_categories(categories, n_rows.pop())
    groups = [np.flatnonzero(cats == c) for c in names]
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        idx = np.concatenate([np.sort(rng.choice(g, size=max(1, round(frac * len(g))), replace=False)) for g in groups])
        sub_cats = cats[idx].tolist()
        rows.append({name: float(stat(m[idx], sub_cats)) for name, m in mats.items()})
    return pd.DataFrame(rows, columns=list(mats))


_EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2300, 0x23FF), (0x2B00, 0x2BFF), (0x3030, 0x303D))


def is_emoji(text: str) -> bool:
    """True if ``text`` contains a pictographic character (emoji and the older dingbats/symbols
    blocks; joiners and variation selectors alone do not count)."""
    for ch in text:
        cp = ord(ch)
        if any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES):
            return True
    return False


def emoji_mask(tokens: Sequence[str]) -> np.ndarray:
    """Bool per token: the token shows an emoji, or is a continuation piece ('', see
    :func:`interp_lib.analysis.readable_tokens`) of a token that does."""
    out = np.zeros(len(tokens), dtype=bool)
    for i, tok in enumerate(tokens):
        out[i] = is_emoji(tok) if tok != "" or i == 0 else out[i - 1]
    return out


def token_precision(acts, mask, *, top: int = 10, min_active: int = 3) -> np.ndarray:
    """Per feature, the share of its ``top`` strongest tokens that are in ``mask``, ``[d_sae]``.

    ``acts``: ``[n_tokens, d_sae]`` feature activations (all texts' tokens concatenated);
    ``mask``: ``[n_tokens]`` bool (e.g. :func:`emoji_mask`). Only tokens where the feature is
    active count; a feature active on fewer than ``min_active`` tokens gets NaN.
    """
    arr = acts.detach().float().cpu().numpy() if isinstance(acts, torch.Tensor) else np.asarray(acts, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if arr.ndim != 2 or mask.shape != (arr.shape[0],):
        raise ValueError(f"need acts [n_tokens, d_sae] and mask [n_tokens], got {arr.shape} and {mask.shape}")
    n_active = (arr > 0).sum(0)
    top = min(top, arr.shape[0])
    # the top tokens of every feature (their order does not matter for a count)
    order = np.argpartition(-arr, top - 1, axis=0)[:top] if top < arr.shape[0] else np.arange(arr.shape[0])[:, None].repeat(arr.shape[1], 1)
    vals = np.take_along_axis(arr, order, axis=0)
    hit = mask[order] & (vals > 0)
    counted = np.minimum(n_active, top)
    out = np.full(arr.shape[1], np.nan)
    ok = n_active >= min_active
    out[ok] = hit[:, ok].sum(0) / counted[ok]
    return out


def top_text_overlap(pooled_a, pooled_b, features_a: Sequence[int], features_b: Sequence[int], *, n: int = 5) -> np.ndarray:
    """For feature pairs (``features_a[i]`` of A, ``features_b[i]`` of B) over the same texts, the
    Jaccard index of their ``n`` top-activating texts (only texts where the feature is active count)."""
    a, b = _as_matrix(pooled_a), _as_matrix(pooled_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"A has {a.shape[0]} texts, B {b.shape[0]}: they must be the same texts")
    if len(features_a) != len(features_b):
        raise ValueError(f"got {len(features_a)} features of A for {len(features_b)} of B")

    def top(col):
        order = np.argsort(-col, kind="stable")[:n]
        return {int(t) for t in order if col[t] > 0}

    out = []
    for fa, fb in zip(features_a, features_b):
        sa, sb = top(a[:, int(fa)]), top(b[:, int(fb)])
        union = sa | sb
        out.append(len(sa & sb) / len(union) if union else float("nan"))
    return np.array(out, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Homebrew SAEs next to SAELens ones
# ----------------------------------------------------------------------------------------------
def with_hook(sae, hook_name: str, model_name: str | None = None):
    """Write ``hook_name`` (and ``model_name``) into a ``sae_lens.SAE``'s metadata, in place; returns it."""
    sae.cfg.metadata.hook_name = hook_name
    if model_name is not None:
        sae.cfg.metadata.model_name = model_name
    return sae


def to_saelens(sae, scale: float, *, hook_name: str, model_name: str, dtype: str = "float32"):
    """An :mod:`interp_lib.sae` model (trained on ``raw * scale``) as a ``sae_lens.SAE`` that takes
    raw activations: saved with :func:`interp_lib.sae.save_saelens` (scale folded in) to a
    temporary folder and loaded back with :func:`interp_lib.zoo.load_sae`."""
    from .sae import save_saelens
    from .zoo import load_sae

    with tempfile.TemporaryDirectory(prefix="interp-sae-") as tmp:
        save_saelens(sae, tmp, hook_name=hook_name, model_name=model_name, scale=scale, dtype=dtype)
        return load_sae(tmp)


class LiveCurves:
    """A training callback that redraws curves while the trainer runs.

    Pass it as ``callback=`` to :func:`interp_lib.train.train_sae` / ``train_saelens``: it keeps
    every history row (``.rows``) and, in an interactive notebook, redraws :func:`curves_figure`
    of ``keys`` at most every ``every_s`` seconds. While the book is built (see
    :func:`interp_lib.plots.building_book`) it only collects; call :meth:`figure` afterwards.
    """

    def __init__(self, keys: Sequence[str] = ("loss", "fve", "l0", "dead_fraction"), *, title: str | None = None,
                 every_s: float = 2.0, live: bool | None = None):
        from .plots import building_book

        self.keys, self.title, self.every_s = list(keys), title, every_s
        self.live = (not building_book()) if live is None else live
        self.rows: list[dict] = []
        self._handle = None
        self._last = 0.0

    def __call__(self, row: dict) -> None:
        self.rows.append(dict(row))
        if not self.live or time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        from IPython.display import display

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)

    def figure(self) -> go.Figure:
        """The curves of every row so far."""
        return curves_figure(self.rows, self.keys, title=self.title)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def _finish(fig: go.Figure, title: str | None, height: int | None) -> go.Figure:
    from .plots import _finish as finish

    return finish(fig, title, height)


def density_figure(histograms: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str | None = None,
                   height: int | None = 420, dash: Mapping[str, str] | None = None) -> go.Figure:
    """Feature-density histograms as lines: {name: (counts, bin_edges)} over log10 firing frequency
    (e.g. from :func:`interp_lib.metrics.log_density_histogram` or a metrics.json)."""
    dash = dash or {}
    traces = []
    for name, (counts, edges) in histograms.items():
        edges = np.asarray(edges, dtype=float)
        centres = (edges[:-1] + edges[1:]) / 2
        traces.append(go.Scatter(x=centres.tolist(), y=[float(c) for c in counts], mode="lines", name=str(name),
                                 line=dict(shape="hvh", dash=dash.get(name))))
    fig = go.Figure(traces)
    fig.update_xaxes(title="log10 of the share of tokens a feature fires on")
    fig.update_yaxes(title="features")
    return _finish(fig, title, height)


def tradeoff_figure(df: pd.DataFrame, *, x: str, y: str, group: str, label: str | None = None,
                    title: str | None = None, xlabel: str = "", ylabel: str = "", log_x: bool = False,
                    height: int | None = 450) -> go.Figure:
    """A trade-off plot: one marker-and-line series per value of ``group`` (sorted by ``x``; a group
    of one point is a larger diamond), ``label`` as the hover text."""
    traces = []
    for name, sub in df.groupby(group, sort=False):
        sub = sub.sort_values(x)
        text = None if label is None else [str(t) for t in sub[label]]
        mode = "lines+markers" if len(sub) > 1 else "markers"
        traces.append(go.Scatter(x=sub[x].astype(float).tolist(), y=sub[y].astype(float).tolist(), mode=mode,
                                 name=str(name), text=text,
                                 marker=dict(size=10 if len(sub) == 1 else 7,
                                             symbol="diamond" if len(sub) == 1 else "circle")))
    fig = go.Figure(traces)
    fig.update_xaxes(title=xlabel or x, type="log" if log_x else None)
    fig.update_yaxes(title=ylabel or y)
    return _finish(fig, title, height)


def distributions_figure(values: Mapping[str, Sequence[float]], *, bins: int = 50, value_range: tuple[float, float] | None = None,
                         title: str | None = None, xlabel: str = "", ylabel: str = "share", height: int | None = 420,
                         dash: Mapping[str, str] | None = None) -> go.Figure:
    """Several distributions on one axis, each as a step line of bin shares (binned here with numpy,
    common bins: the page stores ``bins`` numbers per series, not every value)."""
    arrays = {k: np.asarray(torch.as_tensor(v).float().numpy() if not isinstance(v, np.ndarray) else v, dtype=np.float64).ravel()
              for k, v in values.items()}
    arrays = {k: a[~np.isnan(a)] for k, a in arrays.items()}
    if not arrays or not any(a.size for a in arrays.values()):
        raise ValueError("no values to draw")
    if value_range is None:
        lo = min(float(a.min()) for a in arrays.values() if a.size)
        hi = max(float(a.max()) for a in arrays.values() if a.size)
        value_range = (lo, hi if hi > lo else lo + 1.0)
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    hists = {k: (np.histogram(a, bins=edges)[0] / max(a.size, 1), edges) for k, a in arrays.items()}
    fig = density_figure(hists, title=title, height=height, dash=dash)
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel)
    return fig


CURVE_TITLES = {"loss": "loss (log scale)", "mse": "MSE (log scale)", "fve": "variance explained (batch)", "l0": "L0",
                "dead_fraction": "dead features", "val_fve": "held-out variance explained"}


def curves_figure(histories: Sequence[dict] | Mapping[str, Sequence[dict]], keys: Sequence[str],
                  *, x: str = "tokens", title: str | None = None, height: int | None = None,
                  log_y: Sequence[str] = ("loss", "mse")) -> go.Figure:
    """Training curves: one panel per key of ``keys``, against ``x``; ``histories`` is one history
    (a list of rows) or {name: history} for several runs on the same panels. Rows without a key
    are skipped on its panel (e.g. ``val_fve``, logged at evaluation steps only). Panels of the
    keys in ``log_y`` have a logarithmic y axis (a loss spans orders of magnitude)."""
    from plotly.subplots import make_subplots

    if not isinstance(histories, Mapping):
        histories = {"": histories}
    keys = list(keys)
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[CURVE_TITLES.get(k, k) for k in keys],
                        horizontal_spacing=0.12, vertical_spacing=0.18)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for j, (name, history) in enumerate(histories.items()):
        color = palette[j % len(palette)]
        for i, key in enumerate(keys):
            pts = [(r[x], r[key]) for r in history if key in r and r[key] is not None]
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[float(p[1]) for p in pts], mode="lines+markers" if len(pts) < 8 else "lines",
                                     name=str(name), legendgroup=str(name), showlegend=bool(name) and i == 0,
                                     line=dict(color=color)), row=i // cols + 1, col=i % cols + 1)
    for i, key in enumerate(keys):
        fig.update_xaxes(title_text=x if i // cols == rows - 1 else None, row=i // cols + 1, col=i % cols + 1)
        if key in log_y:
            fig.update_yaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    return _finish(fig, title, height if height is not None else 260 * rows + 80)
