"""Feature dashboards: every feature of every shipped SAE, drawn in the browser from sharded data.

The feature pages (:mod:`interp_lib.site.feature_pages`) are full HTML pages for the ~230 features
the book links to or ranks; a page per feature for all 23,040 features of the shipped SAEs would be
about a gigabyte in the site's theme. Instead the build writes, per SAE, the statistics of every
feature (:class:`interp_lib.features.stats.FeatureData`, with the decoder-cosine neighbours computed
here) as small JavaScript data files of :data:`SHARD_SIZE` features each, loaded on demand by one
viewer page, ``features/dashboard.html#<slug>/<n>``, in the site's theme. The stable address of a
feature, ``features/<slug>/<n>.html`` (:func:`interp_lib.feature_url`), is the full page where
there is one and otherwise a tiny page that forwards to the viewer; ``features/search.html`` finds
features by number, by the tokens their top examples peak on, and by decoder similarity.

The data files are ``.js`` (each calls ``interpDash.add(...)``), not JSON: pages opened from
``file://`` may load scripts but not fetch files. Example activations are stored as bytes relative
to the feature's largest activation (the colour scale; at most ``max / 510`` off), base64-encoded;
every other number as computed.

**Why not ``sae-dashboard``** (the Neuronpedia pipeline, PyPI): ``pip install --dry-run
sae-dashboard`` (0.8.0) in the project's environment would replace transformer-lens 3.9 by 2.17,
transformers 5 by 4.56, numpy by 1.26 and torch 2.13 (CPU) by 2.14 with the CUDA packages, and add
``datasets``, ``nnsight``, ``wandb``: it cannot run beside sae-lens 6.54 here, and it writes one
self-contained HTML file per feature, not pages of this site.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from interp_lib.errors import DamagedFileError, InvalidArgumentError
from interp_lib.features.similarity import decoder_directions
from interp_lib.features.stats import (
    N_BINS,
    N_QUANTILES,
    N_SPREAD,
    N_TOP,
    PAGE_AFTER,
    PAGE_BEFORE,
    WIDTH,
    FeatureData,
    SAESource,
)
from interp_lib.files import atomic_dir
from interp_lib.model.tokens import token_strings
from interp_lib.sae.zoo import training_recipe

DASHBOARD = "dashboard"
"""The viewer page: ``features/dashboard.html#<slug>/<n>``."""
SEARCH = "search"
"""The search page: ``features/search.html#token=<text>`` (or ``number=`` / ``like=<slug>/<n>``)."""
SHARD_SIZE = 64
"""Features per data file (about 0.14 MB each: what a dashboard loads besides the contexts)."""
N_NEIGHBOURS = 10
"""Nearest features by decoder cosine shown per feature (same SAE)."""
DATA_DIR = "data"
SCRIPT = "feature_dashboard.js"
SITE_DATA = "dashboards.js"
_JS_SOURCE = Path(__file__).parent / SCRIPT


class Neighbours(NamedTuple):
    """Decoder-cosine neighbours of every feature of one SAE."""

    ids: np.ndarray
    """[d_sae, N_NEIGHBOURS] nearest other features of the same SAE."""
    cos: np.ndarray
    """[d_sae, N_NEIGHBOURS] their cosine."""
    best: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    """Per other SAE (slug): ([d_sae] its feature with the largest cosine other than the one with
    the same number, [d_sae] that cosine, [d_sae] the cosine with the same-numbered feature)."""


@torch.inference_mode()
def decoder_neighbours(
    sources: Sequence[SAESource], k: int = N_NEIGHBOURS
) -> dict[str, Neighbours]:
    """For each SAE: its features' nearest features by decoder cosine, in it and (best match) in
    each other SAE of the same width.

    SAEs of the same shape trained from the same seed start with feature ``n`` in the same random
    direction, so, as in chapter 3 (:func:`interp_lib.features.similarity.best_matches` with
    ``exclude_same``), the best match leaves the same-numbered feature out and its cosine is given
    on its own (:func:`start_note` says which case the shipped SAEs are). One product of two SAEs'
    directions serves both directions of the match.
    """
    units = {src.slug: decoder_directions(src.sae) for src in sources}
    slugs = list(units)
    near, best = {}, {slug: {} for slug in slugs}
    for i, a in enumerate(slugs):
        u = units[a]
        same = u @ u.T
        same.fill_diagonal_(-2.0)
        top = same.topk(min(k, u.shape[0] - 1), dim=1)
        near[a] = (top.indices.numpy(), top.values.numpy())
        for b in slugs[i + 1 :]:
            v = units[b]
            if v.shape[1] != u.shape[1] or min(u.shape[0], v.shape[0]) < 2:
                continue
            sims = u @ v.T
            n = min(u.shape[0], v.shape[0])
            own = torch.diagonal(sims).clone()
            sims[torch.arange(n), torch.arange(n)] = -torch.inf
            for x, y, m, d in (
                (a, b, sims.max(dim=1), u.shape[0]),
                (b, a, sims.max(dim=0), v.shape[0]),
            ):
                same_n = torch.full((d,), float("nan"))
                same_n[:n] = own
                best[x][y] = (m.indices.numpy(), m.values.numpy(), same_n.numpy())
    return {slug: Neighbours(*near[slug], best[slug]) for slug in slugs}


def start_note(seeds: Sequence[int | None]) -> str:
    """What the dashboards say of same-numbered features across SAEs, from the SAEs' training
    seeds (``None``: not recorded, e.g. a pretrained SAE)."""
    rule = (
        "as in chapter 3, the best match leaves the same-numbered feature out, and its cosine is "
        "given after it"
    )
    if any(seed is None for seed in seeds):
        return (
            f"Whether these SAEs started from the same random dictionary is not recorded; {rule}."
        )
    if len(set(seeds)) == len(seeds):
        return (
            "Each of these SAEs was trained from its own seed, so feature numbers mean nothing "
            f"across them; {rule}, for comparison."
        )
    return (
        "Some of these SAEs were trained from the same seed, so feature n of two of them starts "
        f"from the same random direction: {rule}."
    )


def _rounded(a: np.ndarray, digits: int = 4) -> list:
    """``a`` as (nested) lists of floats rounded to ``digits`` significant digits (the data files'
    precision)."""
    a = np.asarray(a, np.float64)
    finite = np.isfinite(a) & (a != 0)
    mag = np.floor(np.log10(np.abs(a, where=finite, out=np.ones_like(a))))
    scale = 10.0 ** (digits - 1 - mag)
    return np.where(finite, np.round(a * scale) / scale, a).tolist()


def feature_records(
    data: FeatureData,
    features: range,
    neighbours: Neighbours,
    slugs: Sequence[str],
    vocab: dict[int, str],
) -> list[dict]:
    """What the dashboards of ``features`` show (the JSON objects of a data file); ``vocab``: the
    text of every token id of their logit lens."""
    f = np.arange(features.start, features.stop)
    vmax = data.max_act[f].astype(np.float32)
    scaled = data.ex_acts[f].astype(np.float32) / np.where(vmax > 0, vmax, 1)[:, None, None]
    scaled = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    r = {
        name: _rounded(getattr(data, name)[f])
        for name in ("density", "max_act", "mean_act", "sink_max", "ex_max", "lens_lo", "lens_hi")
    }
    r |= {name: _rounded(getattr(data, name)[f]) for name in ("lens_up_val", "lens_down_val")}
    r["near"] = _rounded(neighbours.cos[f], 3)
    r["cofire"] = _rounded(data.cofire_val[f], 3)
    best = [
        (slugs.index(other), ids[f].tolist(), _rounded(cos[f], 3), _rounded(same[f], 3))
        for other, (ids, cos, same) in neighbours.best.items()
    ]
    records = []
    for i, g in enumerate(f.tolist()):
        ctx, pos = data.ex_ctx[g].tolist(), data.ex_pos[g].tolist()
        records.append(
            {
                "density": r["density"][i],
                "max": r["max_act"][i],
                "mean": r["mean_act"][i],
                "contexts": int(data.n_contexts[g]),
                "sinks": [int(data.sink_count[g]), r["sink_max"][i]],
                "hist": data.hist[g].tolist(),
                "examples": [
                    [c, p, m] if c >= 0 else None for c, p, m in zip(ctx, pos, r["ex_max"][i])
                ],
                "acts": base64.b64encode(scaled[i].tobytes()).decode("ascii"),
                "up": [
                    [vocab[t], v] for t, v in zip(data.lens_up[g].tolist(), r["lens_up_val"][i])
                ],
                "down": [
                    [vocab[t], v] for t, v in zip(data.lens_down[g].tolist(), r["lens_down_val"][i])
                ],
                "lens_hist": data.lens_hist[g].tolist(),
                "lens_range": [r["lens_lo"][i], r["lens_hi"][i]],
                "near": [[h, c] for h, c in zip(neighbours.ids[g].tolist(), r["near"][i])],
                "best": [
                    [k, ids[i], cos[i]] + ([same[i]] if np.isfinite(same[i]) else [])
                    for k, ids, cos, same in best
                ],
                "cofire": [
                    [h, j] for h, j in zip(data.cofire[g].tolist(), r["cofire"][i]) if h >= 0
                ],
            }
        )
    return records


def _js(call: str, *args) -> str:
    return (
        f"interpDash.{call}("
        + ",".join(json.dumps(a, separators=(",", ":")) for a in args)
        + ");\n"
    )


def _peak_key(token: str) -> str:
    """How the search compares tokens: stripped, lower case; whitespace tokens as they are."""
    return token.strip().lower() or token


def context_strings(data: FeatureData, tokenizer) -> list[list[str]]:
    """The text of every token of the held-out contexts, positions 1.. (what the examples show)."""
    return [token_strings(tokenizer, row[1:].tolist()) for row in data.tokens]


def _peak_token(strings: list[list[str]], ctx: int, pos: int) -> str:
    """The text at position ``pos`` (>= 1) of a context; a byte piece ('') reads as the character
    it starts."""
    row = strings[ctx]
    for s in row[pos - 1 :]:
        if s:
            return s
    return ""


def token_index(data: FeatureData, strings: list[list[str]]) -> dict[str, list[list]]:
    """{token key: [[feature, top examples peaking on it, largest activation there], ...]}, best
    first: what the search by token reads."""
    index: dict[str, dict[int, list]] = {}
    peaks = _rounded(data.ex_max[:, :N_TOP])
    ctxs, poss = data.ex_ctx[:, :N_TOP].tolist(), data.ex_pos[:, :N_TOP].tolist()
    for f in np.flatnonzero(data.max_act > 0).tolist():
        for ctx, pos, peak in zip(ctxs[f], poss[f], peaks[f]):
            if ctx < 0:
                break
            key = _peak_key(_peak_token(strings, ctx, pos))
            hit = index.setdefault(key, {}).setdefault(f, [f, 0, 0.0])
            hit[1] += 1
            hit[2] = max(hit[2], peak)
    return {key: sorted(hits.values(), key=lambda h: (-h[1], -h[2])) for key, hits in index.items()}


def token_vocab(tokenizer, *ids: np.ndarray) -> dict[int, str]:
    """{token id: its text decoded on its own} for every id in ``ids`` (one batch decode)."""
    unique = np.unique(np.concatenate([np.asarray(a).ravel() for a in ids])).tolist()
    texts = tokenizer.batch_decode(
        [[i] for i in unique], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return dict(zip(unique, texts))


def stub_page(slug: str, feature: int) -> str:
    """The page at a feature's stable address when it has no full page: forwards to the viewer."""
    target = f"../{DASHBOARD}.html#{slug}/{feature}"
    return (
        f'<!DOCTYPE html><meta charset="utf-8"><title>Feature {feature}</title>'
        f"<script>location.replace({json.dumps(target)})</script>"
        f'<a href="{html.escape(target)}">Feature {feature}: its dashboard</a>\n'
    )


def write_dashboards(
    features_dir: Path,
    datas: dict[str, FeatureData],
    sources: Sequence[SAESource],
    tokenizer,
    *,
    full_pages: set[tuple[str, int]] = frozenset(),
) -> dict:
    """Write every SAE's dashboard data, the stable-address pages of features without a full page
    (``full_pages``: (slug, n) that have one) and the viewer's script under ``features_dir``.

    Returns a summary: files and bytes written.
    """
    features_dir = Path(features_dir)
    slugs = [src.slug for src in sources]
    neighbours = decoder_neighbours(sources)
    site = {
        "saes": [],
        "n_top": N_TOP,
        "n_spread": N_SPREAD,
        "n_quantiles": N_QUANTILES,
        "before": PAGE_BEFORE,
        "after": PAGE_AFTER,
        "width": WIDTH,
        "bins": N_BINS,
        "shard_size": SHARD_SIZE,
        "start_note": start_note(
            [training_recipe(src.release, src.sae_id).get("seed") for src in sources]
        ),
    }
    n_files = n_bytes = 0
    strings_by_tokens: dict[bytes, list[list[str]]] = {}
    for src in sources:
        data = datas[src.slug]
        key = data.tokens.tobytes()
        if key not in strings_by_tokens:
            strings_by_tokens[key] = context_strings(data, tokenizer)
        strings = strings_by_tokens[key]
        slug_dir = features_dir / src.slug
        with atomic_dir(slug_dir / DATA_DIR) as tmp:
            files = {"contexts.js": _js("contexts", src.slug, strings)}
            files["search.js"] = _js("tokens", src.slug, token_index(data, strings))
            vocab = token_vocab(tokenizer, data.lens_up, data.lens_down)
            for start in range(0, data.d_sae, SHARD_SIZE):
                records = feature_records(
                    data,
                    range(start, min(start + SHARD_SIZE, data.d_sae)),
                    neighbours[src.slug],
                    slugs,
                    vocab,
                )
                files[f"shard-{start // SHARD_SIZE}.js"] = _js("shard", src.slug, start, records)
            for name, text in files.items():
                (tmp / name).write_text(text, encoding="utf-8")
                n_files += 1
                n_bytes += len(text.encode("utf-8"))
        for f in range(data.d_sae):
            if (src.slug, f) not in full_pages:
                text = stub_page(src.slug, f)
                (slug_dir / f"{f}.html").write_text(text, encoding="utf-8")
                n_files += 1
                n_bytes += len(text)
        site["saes"].append(
            {
                "slug": src.slug,
                "release": src.release,
                "sae_id": src.sae_id,
                "d_sae": data.d_sae,
                "n_tokens": data.n_tokens,
                "n_massive": data.n_massive,
                "n_contexts": int(data.tokens.shape[0]),
                "full_pages": sorted(f for s, f in full_pages if s == src.slug),
            }
        )
    for name, text in ((SITE_DATA, _js("site", site)), (SCRIPT, _JS_SOURCE.read_text("utf-8"))):
        (features_dir / name).write_text(text, encoding="utf-8")
        n_files += 1
        n_bytes += len(text.encode("utf-8"))
    return {"files": n_files, "bytes": n_bytes}


_CALL = re.compile(r"^interpDash\.(\w+)\((.*)\);\s*$", re.S)


def read_data_file(path: Path) -> tuple[str, list]:
    """(call name, arguments) of one data file written by :func:`write_dashboards`."""
    m = _CALL.match(Path(path).read_text(encoding="utf-8"))
    if not m:
        raise DamagedFileError(path, "not a dashboard data file", "rebuild the site (make book)")
    return m.group(1), json.loads(f"[{m.group(2)}]")


def dashboard_record(features_dir: Path, slug: str, feature: int) -> dict:
    """The data the dashboard of ``feature`` shows, read back from the written files (for tests and
    scripts)."""
    folder = Path(features_dir) / slug / DATA_DIR
    if not folder.is_dir():
        known = sorted(p.parent.name for p in Path(features_dir).glob(f"*/{DATA_DIR}"))
        raise InvalidArgumentError(f"slug {slug!r} has no dashboards; choose one of {known}")
    shard = folder / f"shard-{int(feature) // SHARD_SIZE}.js"
    if feature < 0 or not shard.is_file():
        raise InvalidArgumentError(f"feature {feature} has no dashboard in {slug}")
    _, (_, start, records) = read_data_file(shard)
    if not 0 <= feature - start < len(records):
        raise InvalidArgumentError(f"feature {feature} has no dashboard in {slug}")
    return records[feature - start]


def window_activations(record: dict, example: int) -> np.ndarray:
    """[WIDTH] activations of one example's window as the dashboard shows them (decoded bytes)."""
    raw = np.frombuffer(base64.b64decode(record["acts"]), np.uint8).reshape(-1, WIDTH)
    return raw[example].astype(np.float32) / 255 * record["max"]


_STYLE = """<style>
.interp-tokens { font-family: monospace; font-size: 0.85em; line-height: 1.7; }
.interp-example { margin: 0.3em 0; padding: 0.3em 0.5em; border-left: 3px solid #ddd; }
.interp-example-label { font-family: sans-serif; font-size: 0.9em;
  color: var(--pst-color-text-muted, #555); }
.interp-example-tokens { white-space: pre-wrap; word-break: break-word; }
.interp-error { color: var(--pst-color-danger, #b00); }
#search-form label { margin-right: 1em; }
</style>
"""

_VIEWER_BODY = (
    _STYLE
    + """<section id="feature-dashboard" class="interp-dashboard">
<h1 id="dash-title">Feature dashboard</h1>
<p><a href="../index.html">the book</a> \u00b7 <a href="index.html">all SAEs</a> \u00b7
<a href="search.html">find a feature</a></p>
<div id="dash" data-state="loading"><p>Loading\u2026 (this page needs JavaScript).</p></div>
</section>
<script src="feature_dashboard.js"></script>
<script src="dashboards.js"></script>
"""
)

_SEARCH_BODY = (
    _STYLE
    + """<section id="feature-search" class="interp-dashboard">
<h1>Find a feature</h1>
<p><a href="../index.html">the book</a> \u00b7 <a href="index.html">all SAEs</a></p>
<p>Every feature of every SAE of the book has a dashboard. Find one by its number, by a token
(the features whose top examples peak on tokens matching it, most such examples first), or by
similarity to a feature (its nearest features by decoder cosine, in its SAE and the best match in
the others). Everything runs in this page: no server.</p>
<form id="search-form">
<label>SAE <select id="q-sae"></select></label>
<label>mode <select id="q-mode"><option value="number">feature number</option>
<option value="token">token</option>
<option value="like">similar to feature</option></select></label>
<label>query <input id="q-text" type="text" size="16"></label>
<button type="submit">find</button>
</form>
<div id="dash" data-state="idle"></div>
</section>
<script src="feature_dashboard.js"></script>
<script src="dashboards.js"></script>
"""
)


def viewer_pages(folder: str) -> list[tuple[str, str, str]]:
    """(pagename, title, body) of the viewer and the search page in ``folder`` (the features
    folder of the site), for the site's page template."""
    return [
        (f"{folder}/{DASHBOARD}", "Feature dashboard", _VIEWER_BODY),
        (f"{folder}/{SEARCH}", "Find a feature", _SEARCH_BODY),
    ]
