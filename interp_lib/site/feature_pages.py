"""Feature pages: one static HTML page per selected feature of the project's own SAEs (like
Neuronpedia's), their index pages, and the site orchestration.

The book links a feature number to ``features/<slug>/<feature>.html``
(:func:`interp_lib.feature_url`, ``base=".."``); the book's Sphinx extension calls
:func:`site_pages` at the end of every HTML build, so the pages are part of the site, in its theme.
The data (computed and cached by :mod:`interp_lib.features.stats`) is rendered here: top examples,
each token shaded by the activation (one scale per page: the feature's maximum), a Plotly
histogram of the non-zero activations, the density and the logit lens.

**Which features get a page:** every feature that a built page of the book links to (the built HTML
is scanned for ``features/<slug>/<n>.html``: no registry to keep in sync), plus, per SAE, those of
:func:`interp_lib.features.stats.top_features`. The index pages state that rule.

**Every feature** of every shipped SAE also gets a dashboard, rendered in the browser from
sharded data files (:mod:`interp_lib.site.dashboards`, written by :func:`site_pages`); its
stable address is the same ``features/<slug>/<n>.html``. That module also says why the
``sae-dashboard`` package is not used.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.heldout import heldout_tokens
from interp_lib.features.stats import (
    CTX_LEN,
    N_BINS,
    N_SPREAD,
    N_TOKENS,
    N_TOP,
    PAGE_AFTER,
    PAGE_BEFORE,
    PAGE_FACTOR,
    TOP_MIN_DENSITY,
    TOP_N,
    FeatureData,
    SAESource,
    feature_data,
    loaded_model_id,
    model_id,
    shipped_sources,
    top_features,
)
from interp_lib.model.loading import EMBEDDED_MODELS, embedded_model_dir, load_model
from interp_lib.model.tokens import merge_pieces, token_strings, token_strings_each
from interp_lib.sae.zoo import RELEASES, feature_slug, list_saes, recorded_metrics
from interp_lib.site import dashboards as feature_dashboards
from interp_lib.site.plots import (
    QUIET_WARNINGS,
    StaticSiteRenderer,
    bar,
    html_table,
    token_highlights,
)

FEATURES_DIR = "features"
ENV_DISABLE = "INTERP_FEATURE_PAGES"
"""Set to 0 to build the book without feature pages (quicker iterations on the chapters)."""


# ----------------------------------------------------------------------------------------------
# Which features: links in the built site


_LINK = re.compile(
    r'href="(?P<url>[^"#?]*?\b'
    + FEATURES_DIR
    + r'/(?P<slug>[^/"]+)/(?P<feature>\d+)\.html)(?:[#?][^"]*)?"'
)
_TITLE = re.compile(r"<title>(.*?)</title>", re.S)


class Link(NamedTuple):
    """A page of the built site that links to a feature page."""

    page: str
    """Path of the linking page under the site root (``book/01_first_look.html``)."""
    title: str


def scan_feature_links(html_dir: Path) -> dict[tuple[str, int], list[Link]]:
    """Every ``features/<slug>/<n>.html`` that a built page (outside features/) links to, with the
    pages linking to it: {(slug, feature): [Link, ...]} (absolute links to the published book count
    too)."""
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
        if title:
            title = html.unescape(re.sub(r"<[^>]+>", "", title.group(1)))
            title = title.split(" \u2014 ")[0].strip()
        else:
            title = rel.stem
        for hit in sorted(hits):
            found.setdefault(hit, []).append(Link(rel.as_posix(), title))
    return found


# ----------------------------------------------------------------------------------------------
# HTML


class Page(NamedTuple):
    """One page of the site: its Sphinx page name (path under the site root, no ``.html``), title,
    body."""

    pagename: str
    title: str
    body: str


def _fmt_density(d: float) -> str:
    return f"{d:.2%}" if d >= 1e-3 else f"{d:.3%}"


def _table(
    rows: list[dict], links: dict[str, list[str]] | None = None, floatfmt: str = "{:.2f}"
) -> str:
    return html_table(pd.DataFrame(rows), links=links, floatfmt=floatfmt).data


def _histogram(data: FeatureData, feature: int) -> str:
    counts = data.hist[feature].astype(int)
    edges = np.linspace(0.0, float(data.max_act[feature]), N_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = bar(
        centres.tolist(),
        counts.tolist(),
        xlabel="activation",
        ylabel="tokens",
        height=300,
        width=float(edges[1] - edges[0]),
        customdata=np.stack([edges[:-1], edges[1:]], 1).tolist(),
        hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:,} tokens<extra></extra>",
    )
    fig.update_layout(bargap=0, margin=dict(l=60, r=20, t=20, b=50))
    return StaticSiteRenderer(default_height="300px").to_mimebundle(fig.to_dict())["text/html"]


def _examples(data: FeatureData, feature: int, tokenizer, which: range, strings: dict) -> str:
    rows = []
    for e in which:
        if data.ex_ctx[feature, e] < 0:
            continue
        ids, acts, peak = data.window(feature, e)
        key = tuple(ids)
        if key not in strings:
            strings[key] = token_strings(tokenizer, ids)
        toks, acts, peak = merge_pieces(strings[key], acts, peak)
        shown = [t.replace("\n", "\u21b5") for t in toks]  # one line per example: a return sign
        where = int(data.ex_pos[feature, e])
        where = f"token {where}" + (" (the first after BOS)" if where == 1 else "")
        label = (
            f"max {data.ex_max[feature, e]:.2f} on {toks[peak]!r} \u00b7 held-out context "
            f"{int(data.ex_ctx[feature, e])}, {where}"
        )
        rows.append((label, shown, acts))
    if not rows:
        return "<p>None.</p>"
    return token_highlights(rows, vmax=float(data.max_act[feature])).data


def feature_page(
    data: FeatureData,
    feature: int,
    *,
    release: str,
    sae_id: str,
    tokenizer,
    linked_from: Sequence[Link] = (),
    neighbours: tuple[int | None, int | None] = (None, None),
    reason: str = "",
    strings: dict | None = None,
) -> Page:
    """The page of one feature (body HTML for the site's page template; links relative to its
    folder)."""
    f = int(feature)
    if not 0 <= f < data.d_sae:
        raise InvalidArgumentError(f"feature {f} out of range 0..{data.d_sae - 1}")
    strings = {} if strings is None else strings
    slug = feature_slug(release, sae_id)
    title = f"Feature {f} \u00b7 {release} / {sae_id}"
    esc = html.escape
    prev_f, next_f = neighbours
    nav = [
        '<a href="../../index.html">the book</a>',
        '<a href="../index.html">all SAEs</a>',
        '<a href="index.html">all pages of this SAE</a>',
        f'<a href="../{feature_dashboards.DASHBOARD}.html#{slug}/{f}">its dashboard (examples by '
        "quantile, nearest and co-firing features)</a>",
    ]
    if prev_f is not None:
        nav.append(f'<a href="{prev_f}.html">\u2190 feature {prev_f}</a>')
    if next_f is not None:
        nav.append(f'<a href="{next_f}.html">feature {next_f} \u2192</a>')
    parts = [
        f'<section id="feature-{f}" class="interp-feature-page">',
        f"<h1>Feature {f}</h1>",
        f"<p><code>{esc(release)}</code> / <code>{esc(sae_id)}</code> \u00b7 "
        + " \u00b7 ".join(nav)
        + "</p>",
    ]
    n_fire = int(round(float(data.density[f]) * data.n_tokens))
    n_ctx = data.tokens.shape[0]
    if data.max_act[f] > 0:
        parts.append(
            f"<p>Fires on <strong>{_fmt_density(float(data.density[f]))}</strong> of "
            f"{data.n_tokens:,} held-out tokens ({n_fire:,} tokens, in {int(data.n_contexts[f])} "
            f"of {n_ctx} contexts). Largest activation <strong>{data.max_act[f]:.2f}</strong>; "
            f"mean activation where it fires {data.mean_act[f]:.2f}.</p>"
        )
    else:
        parts.append(
            f"<p>This feature does not fire on any of the {data.n_tokens:,} held-out tokens.</p>"
        )
    if data.sink_count[f] > 0:
        parts.append(
            f"<p>Left out here: the {data.n_massive:,} held-out tokens whose activation at this "
            f"hook has more than {PAGE_FACTOR:g} times the median norm (attention sinks, which "
            "the chapters leave out too: the SAE gives them absurd activations). This feature "
            f"fires on {int(data.sink_count[f]):,} of them, up to {data.sink_max[f]:.1f}.</p>"
        )
    if linked_from:
        links = ", ".join(
            f'<a href="../../{esc(link.page)}">{esc(link.title)}</a>' for link in linked_from
        )
        parts.append(f"<p>Linked from: {links}.</p>")
    if reason:
        parts.append(f"<p><em>{esc(reason)}</em></p>")
    if data.max_act[f] > 0:
        parts.append(
            f'<section id="top-examples"><h2>Top activations</h2><p>The {N_TOP} held-out contexts '
            f"where it fires most strongly, {PAGE_BEFORE} tokens before the peak and {PAGE_AFTER} "
            "after it; "
            f"the shade is the activation (full colour: {data.max_act[f]:.2f}); hover over a token "
            "for its value.</p>"
        )
        parts.append(_examples(data, f, tokenizer, range(N_TOP), strings) + "</section>")
        if (data.ex_ctx[f, N_TOP:] >= 0).any():
            parts.append(
                '<section id="spread-examples"><h2>Weaker activations</h2><p>Contexts '
                "taken at evenly spaced ranks among the other contexts it fires in (same "
                "colour scale).</p>"
            )
            parts.append(
                _examples(data, f, tokenizer, range(N_TOP, N_TOP + N_SPREAD), strings)
                + "</section>"
            )
        parts.append(
            '<section id="histogram"><h2>Activation histogram</h2><p>Its non-zero '
            "activations on the held-out tokens.</p>" + _histogram(data, f) + "</section>"
        )
    up = token_strings_each(tokenizer, data.lens_up[f])
    down = token_strings_each(tokenizer, data.lens_down[f])
    parts.append(
        '<section id="logit-lens"><h2>Logit lens</h2><p>The tokens its decoder direction '
        "pushes up and down through the direct path to the unembedding (<code>W_dec[f] @ "
        "W_U</code>, in logits per unit of activation, before the final norm).</p>"
    )
    lens = [
        {
            "promoted": repr(u),
            "\u0394 logit": float(uv),
            "suppressed": repr(d),
            "\u0394 logit ": float(dv),
        }
        for u, uv, d, dv in zip(up, data.lens_up_val[f], down, data.lens_down_val[f])
    ]
    parts.append(_table(lens, floatfmt="{:+.3f}") + "</section>")
    parts.append(
        '<p class="interp-feature-source">Computed on the held-out split of the book\'s offline '
        f"corpus ({data.n_tokens:,} tokens in {n_ctx} contexts; position 0 and "
        f"{data.n_massive:,} massive-norm tokens left out), by <code>interp_lib.features.stats"
        f"</code>. Page: <code>{FEATURES_DIR}/{esc(slug)}/{f}.html</code>.</p>"
    )
    parts.append("</section>")
    return Page(f"{FEATURES_DIR}/{slug}/{f}", title, "\n".join(parts))


def _rule_text() -> str:
    return (
        f"the {TOP_N} features with the largest activation on a token after the first of its "
        "context (many features peak on the first token after BOS, whose activations are "
        f"unusual) among those that fire on at least {TOP_MIN_DENSITY:.1%} of the held-out "
        "tokens"
    )


def sae_index_page(
    data: FeatureData,
    features: Sequence[int],
    *,
    release: str,
    sae_id: str,
    tokenizer,
    reasons: dict[int, str],
    metrics: dict | None = None,
) -> Page:
    """The index of one SAE's feature pages."""
    slug = feature_slug(release, sae_id)
    esc = html.escape
    rows = []
    for f in features:
        peak = ""
        if data.ex_ctx[f, 0] >= 0:
            ids, _, p = data.window(f, 0)
            peak = repr(token_strings(tokenizer, ids)[p])
        promotes = " ".join(repr(t) for t in token_strings_each(tokenizer, data.lens_up[f][:3]))
        rows.append(
            {
                "feature": f,
                "density": _fmt_density(float(data.density[f])),
                "max act": float(data.max_act[f]),
                "peak token": peak,
                "promotes": promotes,
                "why": reasons.get(f, ""),
            }
        )
    parts = [
        f'<section id="sae-{esc(slug)}"><h1>Feature pages: {esc(release)} / {esc(sae_id)}</h1>',
        '<p><a href="../../index.html">The book</a> \u00b7 '
        '<a href="../index.html">all SAEs</a> \u00b7 '
        f'<a href="../{feature_dashboards.SEARCH}.html">find a feature</a></p>',
        f"<p>Every one of its {data.d_sae:,} features has a dashboard at "
        f"<code>{FEATURES_DIR}/{esc(slug)}/&lt;n&gt;.html</code>. "
        f"{len(features)} of them also have a full page: every feature the "
        f"book links to (<em>book</em> below), and {_rule_text()} (<em>rule #n</em>: its "
        f"rank). Measured on {data.n_tokens:,} held-out tokens ({data.n_massive:,} more, "
        f"with more than {PAGE_FACTOR:g} times the median activation norm, left out); "
        f"{int((data.max_act > 0).sum()):,} features fire on them.</p>",
    ]
    if metrics:
        keys = [
            ("l0", "L0", "{:.1f}"),
            ("fve", "variance explained", "{:.3f}"),
            ("ce_recovered", "CE-loss recovered", "{:.3f}"),
            ("ce_increase", "loss increase (nats)", "{:.3f}"),
        ]
        shown = [
            f"{label} {fmt.format(metrics[k])}"
            for k, label, fmt in keys
            if isinstance(metrics.get(k), (int, float))
        ]
        if shown:
            parts.append("<p>Quality on held-out text: " + ", ".join(shown) + ".</p>")
    if rows:
        parts.append(_table(rows, links={"feature": [f"{f}.html" for f in features]}))
    parts.append("</section>")
    return Page(
        f"{FEATURES_DIR}/{slug}/index",
        f"Feature pages \u00b7 {release} / {sae_id}",
        "\n".join(parts),
    )


def site_index_page(
    entries: Sequence[dict], missing: Sequence[tuple[str, str]] = (), n_tokens: int = N_TOKENS
) -> Page:
    """The overall index: one row per SAE (dicts with release, sae_id, then any columns to show)."""
    parts = [
        '<section id="feature-pages"><h1>Feature pages</h1>',
        '<p><a href="../index.html">Back to the book</a> \u00b7 '
        f'<a href="{feature_dashboards.SEARCH}.html">find a feature</a> (by number, by token, '
        "by similarity).</p>",
        "<p>Every feature of the book's own SAEs on SmolLM2-135M has a dashboard at "
        f"<code>{FEATURES_DIR}/&lt;release&gt;--&lt;sae_id&gt;/&lt;n&gt;.html</code>: its density "
        "and activation histogram, its top examples and examples from each quantile of its "
        "range, the logit lens with its histogram, its nearest features by decoder cosine (in "
        "its SAE and the best match in the others) and the features it fires with. "
        "Some features also have a full page: its top-activating "
        "held-out examples with each token shaded by the activation, a histogram of its "
        "activations, its density (the share of tokens it fires on) and the tokens its "
        "decoder direction promotes and suppresses (logit lens). A feature has a page if the "
        f"book links to it, or if it is one of {_rule_text()} (per SAE). Everything is "
        f"measured on {n_tokens:,} tokens of the held-out split of the book's offline corpus "
        "(position 0 left out), text the SAEs never saw in training, also leaving out, as the "
        "chapters do, the tokens whose activation norm at the SAE's hook is more than "
        f"{PAGE_FACTOR:g} times the median (attention sinks).</p>",
    ]
    if entries:
        links = {
            "sae_id": [f"{feature_slug(e['release'], e['sae_id'])}/index.html" for e in entries]
        }
        parts.append(_table(list(entries), links=links, floatfmt="{:.3f}"))
    else:
        parts.append(
            "<p>No SAE of the project is in this checkout yet, so there are no feature pages.</p>"
        )
    if missing:
        parts.append(
            "<p>Not in this checkout (no pages): "
            + ", ".join(f"<code>{html.escape(r)} / {html.escape(s)}</code>" for r, s in missing)
            + ".</p>"
        )
    parts.append("</section>")
    return Page(f"{FEATURES_DIR}/index", "Feature pages", "\n".join(parts))


def build_pages(
    datas: dict[str, FeatureData],
    sources: Sequence[SAESource],
    tokenizer,
    links: dict[tuple[str, int], list[Link]],
    *,
    missing: Sequence[tuple[str, str]] = (),
    metrics: dict[str, dict] | None = None,
) -> list[Page]:
    """All pages: per SAE the linked features and the top features by the rule, its index, and
    the overall index."""
    pages, entries = [], []
    for src in sources:
        data = datas[src.slug]
        linked = {f for (slug, f) in links if slug == src.slug and 0 <= f < data.d_sae}
        rank = {f: r for r, f in enumerate(top_features(data), 1)}
        features = sorted(linked | set(rank))
        reasons = {
            f: ", ".join(
                (["book"] if f in linked else []) + ([f"rule #{rank[f]}"] if f in rank else [])
            )
            for f in features
        }
        strings: dict = {}
        for i, f in enumerate(features):
            why = (["the book links to it"] if f in linked else []) + (
                [f"it is number {rank[f]} of this SAE's top features by the rule on the index page"]
                if f in rank
                else []
            )
            neighbours = (
                features[i - 1] if i else None,
                features[i + 1] if i + 1 < len(features) else None,
            )
            pages.append(
                feature_page(
                    data,
                    f,
                    release=src.release,
                    sae_id=src.sae_id,
                    tokenizer=tokenizer,
                    linked_from=links.get((src.slug, f), []),
                    neighbours=neighbours,
                    reason="Why this page: " + " and ".join(why) + ".",
                    strings=strings,
                )
            )
        pages.append(
            sae_index_page(
                data,
                features,
                release=src.release,
                sae_id=src.sae_id,
                tokenizer=tokenizer,
                reasons=reasons,
                metrics=(metrics or {}).get(src.slug),
            )
        )
        quality = (metrics or {}).get(src.slug) or {}
        entries.append(
            {
                "release": src.release,
                "sae_id": src.sae_id,
                "features": data.d_sae,
                "fire on held-out": int((data.max_act > 0).sum()),
                "pages": len(features),
                **{
                    label: float(quality[k])
                    for k, label in (("l0", "L0"), ("ce_recovered", "CE-loss recovered"))
                    if isinstance(quality.get(k), (int, float))
                },
            }
        )
    n_tokens = N_TOKENS
    if datas:
        shape = next(iter(datas.values())).tokens.shape
        n_tokens = shape[0] * (shape[1] - 1)
    pages.append(site_index_page(entries, missing, n_tokens))
    return pages


# ----------------------------------------------------------------------------------------------
# The whole site (what the book's Sphinx extension calls)


def _tokenizer_holder(model_name: str) -> SimpleNamespace:
    """An object with the model's ``.tokenizer`` (enough for
    :func:`interp_lib.evals.heldout.heldout_tokens`)."""
    folder = embedded_model_dir(model_name) if model_name in EMBEDDED_MODELS else model_name
    return SimpleNamespace(tokenizer=AutoTokenizer.from_pretrained(str(folder)))


def _link_problems(
    links: dict[tuple[str, int], list[Link]], sources: Sequence[SAESource]
) -> list[str]:
    """The links to feature pages that cannot exist (unknown SAE, SAE not here, feature out of
    range), one line each."""
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
            problems.append(
                f"{pages} links to {target}: the SAE has {present[slug].sae.cfg.d_sae} features"
            )
    return problems


def site_pages(
    html_dir: Path,
    *,
    sources: Sequence[SAESource] | None = None,
    model=None,
    model_name: str | None = None,
    tokens: torch.Tensor | None = None,
    n_tokens: int = N_TOKENS,
    cache: Path | None = None,
    dashboards: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[list[Page], list[str]]:
    """Every feature page of the built site under ``html_dir``: (pages, problems); with
    ``dashboards``, also writes every feature's dashboard data and stable-address page under
    ``html_dir/features`` (:func:`interp_lib.site.dashboards.write_dashboards`) and adds the
    viewer and search pages.

    By default: the project's SAEs present in this checkout
    (:func:`interp_lib.features.stats.shipped_sources`), the model of their releases (loaded only if
    some SAE's data is not cached yet), ``n_tokens`` held-out tokens. ``problems`` lists links of
    the built pages to feature pages that cannot exist (an SAE not in this checkout, a feature
    number out of range): dead links, which the book build reports as warnings.
    """
    t0 = time.monotonic()
    missing: list[tuple[str, str]] = []
    if sources is None:
        sources, missing = shipped_sources()
    sources = list(sources)
    links = scan_feature_links(html_dir)
    problems = _link_problems(links, sources)
    names = {RELEASES[src.release].model for src in sources if src.release in RELEASES}
    if model_name is None and model is None:
        if len(names) > 1:
            raise InvalidArgumentError(
                "feature pages for SAEs of several models at once are not supported: "
                f"{sorted(names)}"
            )
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
            mid = model_id(model_name) if model is None else loaded_model_id(model)
            load = model if model is not None else (lambda: load_model(model_name))
            datas = feature_data(sources, tokens, model_id=mid, model=load, cache=cache, log=log)
    metrics = {}
    for src in sources:
        try:
            metrics[src.slug] = recorded_metrics(src.release, src.sae_id)
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            metrics[src.slug] = {}
    pages = build_pages(datas, sources, tokenizer, links, missing=missing, metrics=metrics)
    if dashboards and sources:
        t1 = time.monotonic()
        full = {
            (parts[1], int(parts[2]))
            for parts in (p.pagename.split("/") for p in pages)
            if len(parts) == 3 and parts[2].isdigit()
        }
        written = feature_dashboards.write_dashboards(
            Path(html_dir) / FEATURES_DIR, datas, sources, tokenizer, full_pages=full
        )
        pages += [Page(*page) for page in feature_dashboards.viewer_pages(FEATURES_DIR)]
        log(
            f"feature dashboards: {written['files']:,} files, {written['bytes'] / 1e6:.1f} MB "
            f"in {time.monotonic() - t1:.0f} s"
        )
    log(
        f"feature pages: {len(pages)} pages for {len(sources)} SAE(s) in "
        f"{time.monotonic() - t0:.0f} s"
    )
    return pages, problems


_SHELL = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>{head}
<style>body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; }}
table.interp-table {{ border-collapse: collapse; }}
table.interp-table td, table.interp-table th {{ padding: 0.2em 0.6em;
  border-bottom: 1px solid #ddd; }}
</style>
</head><body>
{body}
</body></html>
"""


def write_pages(
    pages: Sequence[Page], out_dir: Path, *, plotly_js: str | None = None
) -> list[Path]:
    """Write ``pages`` as standalone HTML files under ``out_dir`` (outside the book, e.g. for a
    quick look).

    ``plotly_js``: path of plotly.js relative to ``out_dir`` (each page's script tag points there);
    the book build itself renders the pages with the site's theme instead
    (book/_ext/interp_book.py).
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
        path.write_text(
            _SHELL.format(title=html.escape(page.title), head=head, body=page.body),
            encoding="utf-8",
        )
        written.append(path)
    return written
