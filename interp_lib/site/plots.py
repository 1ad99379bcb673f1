"""Plotly figures for the book, and the set-up that makes them work on the static site.

Every chapter starts with one hidden cell::

    from interp_lib.site import plots
    plots.setup()

`setup()` does three things, all deliberate and all listed here:

1. Plotly output. While the book is being built (env ``INTERP_BOOK_BUILD=1``, which the book's
   Sphinx extension and the Makefile set) figures are emitted as a bare ``<div>`` plus the
   ``Plotly.newPlot`` call, as ``text/html``: no copy of plotly.js inside the page and no CDN.
   The site serves ``_static/plotly-<version>.min.js`` (copied from this very plotly package)
   once, on the pages that have a figure. Outside a build (a reader's Jupyter, Colab, VS Code)
   plotly's own default renderer is left alone, because it knows how to load plotly.js there.
2. Progress bars. Use ``tqdm.auto``; builds run with ``TQDM_DISABLE=1`` so bars show in a
   reader's notebook but leave nothing in the built pages. tqdm itself honours that variable
   only for its text bars, not for the notebook (widget) bars that ``tqdm.auto`` picks in a
   kernel, so `setup()` makes every tqdm bar honour it (a saved widget would need require.js
   and a CDN on the page, and require.js hides ``window.Plotly``).
3. Noise. The known-noisy warnings and log lines of the libraries we use are silenced by name
   (`QUIET_WARNINGS`, `QUIET_LOGGERS`). Anything else that reaches stderr fails the book build
   (``stderr_output: warn`` + ``-W``): new noise must be looked at, then silenced here on purpose.

The figure helpers (`bar`, `grouped_bar`, `heatmap`, `histogram`, `line`, `scatter`) give the book
one
look; `density_figure`, `tradeoff_figure`, `distributions_figure` and `curves_figure` draw SAE
comparisons and training curves, and `LiveCurves` redraws those curves while a trainer runs.
`token_highlights` and `html_table` return plain HTML (inline styles, no script), which the
static site shows as it is.
"""

from __future__ import annotations

import html
import logging
import math
import os
import time
import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.io._base_renderers import MimetypeRenderer
from plotly.subplots import make_subplots
from tqdm import std

from interp_lib.errors import InvalidArgumentError
from interp_lib.features.analysis import top_activating
from interp_lib.model.tokens import merge_pieces

__all__ = [
    "RENDERER",
    "TEMPLATE",
    "PLOTLY_CONFIG",
    "QUIET_WARNINGS",
    "QUIET_LOGGERS",
    "StaticSiteRenderer",
    "building_book",
    "setup",
    "silence_progress_bars",
    "bar",
    "heatmap",
    "histogram",
    "line",
    "scatter",
    "grouped_bar",
    "binned_histogram",
    "token_highlights",
    "feature_examples",
    "html_table",
    "LiveCurves",
    "density_figure",
    "distributions_figure",
    "tradeoff_figure",
    "curves_figure",
]

#: Name under which the static-site renderer is registered with plotly.io.
RENDERER = "interp_book"
#: Plotly template used by every figure of the book.
TEMPLATE = "plotly_white"
#: Plotly config passed to every figure (mode bar without the plotly logo, responsive width).
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

#: (category, message regex) pairs of warnings that are known, understood and not for readers.
QUIET_WARNINGS: list[tuple[type[Warning], str]] = [
    # TransformerLens 3.x announces that HookedTransformer goes away in 4.0.
    (DeprecationWarning, r".*(HookedTransformer|TransformerBridge).*"),
    (UserWarning, r".*(HookedTransformer|TransformerBridge).*"),
    # tqdm's notebook bars without ipywidgets front-end; harmless.
    (Warning, r"IProgress not found.*"),
]
#: Loggers that chat at INFO/WARNING level during normal use.
QUIET_LOGGERS = [
    "transformers",
    "transformer_lens",
    "sae_lens",
    "huggingface_hub",
    "datasets",
    "gguf",
]


def building_book() -> bool:
    """True while the book's pages are being executed (``INTERP_BOOK_BUILD=1``)."""
    return _env_true("INTERP_BOOK_BUILD")


class StaticSiteRenderer(MimetypeRenderer):
    """Renders a figure as ``text/html``: a div and its ``Plotly.newPlot`` script, no plotly.js.

    The page must load plotly.js itself (the book's Sphinx extension adds it to every page
    that contains a ``plotly-graph-div``).
    """

    def __init__(self, config: dict | None = None, default_height: str = "450px"):
        self.config = dict(PLOTLY_CONFIG if config is None else config)
        self.default_height = default_height

    def to_mimebundle(self, fig_dict):  # called by plotly for fig.show() and _repr_mimebundle_
        html = pio.to_html(
            fig_dict,
            config=self.config,
            auto_play=False,
            include_plotlyjs=False,
            include_mathjax=False,
            full_html=False,
            default_width="100%",
            default_height=self.default_height,
            validate=False,
        )
        return {"text/html": html}


pio.renderers[RENDERER] = StaticSiteRenderer()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def silence_progress_bars() -> None:
    """Make every tqdm bar (text or notebook widget) disabled, whatever the caller passes.

    Patches tqdm's base class, so it also reaches bars of modules imported before this call.
    """
    if getattr(std.tqdm, "_interp_lib_silenced", False):
        return
    original = std.tqdm.__init__

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        original(self, *args, **kwargs)

    std.tqdm.__init__ = __init__
    std.tqdm._interp_lib_silenced = True


def setup(static: bool | None = None, quiet: bool = True) -> None:
    """Prepare a chapter's kernel: plotly renderer and template, quiet libraries.

    static: force (True) or forbid (False) the static-site renderer; default: `building_book()`.
    quiet: silence the warnings and loggers listed in `QUIET_WARNINGS` / `QUIET_LOGGERS`.
    """
    if static is None:
        static = building_book()
    pio.templates.default = TEMPLATE
    if static:
        pio.renderers.default = RENDERER
    if _env_true("TQDM_DISABLE"):
        silence_progress_bars()
    if quiet:
        # Read by these libraries at import time, so set them before they are imported.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        for category, message in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def _finish(
    fig: go.Figure,
    title: str | None,
    height: int | None,
    *,
    xlabel: str | None = None,
    ylabel: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
) -> go.Figure:
    """The book's look: title, template, margins, height, and the axes' titles and log scales."""
    if xlabel is not None:
        fig.update_xaxes(title=xlabel, type="log" if log_x else None)
    if ylabel is not None:
        fig.update_yaxes(title=ylabel, type="log" if log_y else None)
    fig.update_layout(
        title=title, template=TEMPLATE, margin=dict(l=60, r=20, t=60 if title else 20, b=50)
    )
    if height is not None:
        fig.update_layout(height=height)
    return fig


def bar(
    x: Sequence,
    y: Sequence,
    *,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    color: Sequence | None = None,
    height: int | None = 400,
    **trace,
) -> go.Figure:
    """A bar chart (categorical or numeric x)."""
    fig = go.Figure(go.Bar(x=list(x), y=list(y), marker_color=color, **trace))
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel)


def heatmap(
    z,
    *,
    x: Sequence | None = None,
    y: Sequence | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    colorscale: str = "Blues",
    zmid: float | None = None,
    colorbar_title: str = "",
    height: int | None = None,
    **trace,
) -> go.Figure:
    """A heatmap of a 2-D array (rows = y, columns = x)."""
    z = [list(map(float, row)) for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=None if x is None else list(x),
            y=None if y is None else list(y),
            colorscale=colorscale,
            zmid=zmid,
            colorbar=dict(title=colorbar_title),
            **trace,
        )
    )
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel, autorange="reversed")
    if height is None:
        height = max(300, min(900, 120 + 22 * len(z)))
    return _finish(fig, title, height)


def histogram(
    values: Sequence,
    *,
    nbins: int = 50,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "count",
    log_y: bool = False,
    height: int | None = 400,
    **trace,
) -> go.Figure:
    """A histogram of one sequence of numbers."""
    fig = go.Figure(go.Histogram(x=list(map(float, values)), nbinsx=nbins, **trace))
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel, log_y=log_y)


def line(
    x: Sequence,
    ys: dict[str, Sequence],
    *,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    log_y: bool = False,
    height: int | None = 400,
) -> go.Figure:
    """One line per entry of `ys` (name -> values), sharing `x`."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(v), mode="lines", name=k) for k, v in ys.items()])
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel, log_x=log_x, log_y=log_y)


def scatter(
    x: Sequence,
    y: Sequence,
    *,
    text: Sequence | None = None,
    color: Sequence | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    log_y: bool = False,
    height: int | None = 450,
    **trace,
) -> go.Figure:
    """A scatter plot; `text` becomes the hover label of each point."""
    fig = go.Figure(
        go.Scatter(
            x=list(x),
            y=list(y),
            mode="markers",
            text=None if text is None else list(text),
            marker=dict(color=None if color is None else list(color)),
            **trace,
        )
    )
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel, log_x=log_x, log_y=log_y)


def binned_histogram(
    values,
    *,
    nbins: int = 60,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "count",
    log_y: bool = False,
    height: int | None = 400,
) -> go.Figure:
    """A histogram binned here (numpy), so the page stores ``nbins`` bars instead of every value."""
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not arr.size:
        raise InvalidArgumentError("no values to bin")
    counts, edges = np.histogram(arr, bins=nbins)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(
        go.Bar(
            x=centres.tolist(),
            y=counts.tolist(),
            width=float(edges[1] - edges[0]),
            customdata=np.stack([edges[:-1], edges[1:]], 1).tolist(),
            hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:,}<extra></extra>",
        )
    )
    fig.update_layout(bargap=0)
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel, log_y=log_y)


def grouped_bar(
    x: Sequence,
    series: dict[str, Sequence],
    *,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    height: int | None = 420,
) -> go.Figure:
    """Bars grouped by `x`, one bar per entry of `series` (name -> values) in each group."""
    fig = go.Figure(
        [go.Bar(x=list(x), y=list(map(float, v)), name=str(k)) for k, v in series.items()]
    )
    fig.update_layout(barmode="group", legend_title_text="")
    return _finish(fig, title, height, xlabel=xlabel, ylabel=ylabel)


#: Colour of the token highlights (red, green, blue); the opacity carries the activation.
HIGHLIGHT_RGB = (230, 97, 0)


def _token_span(token: str, value: float, vmax: float) -> str:
    alpha = 0.0 if vmax <= 0 or value <= 0 else min(1.0, value / vmax)
    shown = token.replace("\n", "\u21b5\n")  # a visible return sign, then the line break itself
    tip = f"{token!r}: {value:.2f}"
    style = (
        f"background: rgba({HIGHLIGHT_RGB[0]}, {HIGHLIGHT_RGB[1]}, {HIGHLIGHT_RGB[2]}, {alpha:.2f})"
    )
    if alpha > 0:
        style += "; border-bottom: 1px solid #b34700"
    return f'<span title="{html.escape(tip)}" style="{style}">{html.escape(shown)}</span>'


def token_highlights(
    rows: Sequence[tuple[str, Sequence[str], Sequence[float]]],
    *,
    vmax: float | None = None,
    caption: str | None = None,
    caption_url: str | None = None,
):
    """Texts as tokens shaded by one feature's activation: rows of (label, tokens, activations).

    Returns an ``IPython.display.HTML`` with inline styles only (it works on the static site);
    hovering a token shows its activation. ``vmax`` (default: the largest activation shown) is
    the activation drawn at full colour. ``caption`` heads the block, as a link if ``caption_url``.
    """
    from IPython.display import HTML  # optional dependency: only notebooks display HTML

    rows = [
        (str(label), list(tokens), [float(v) for v in values]) for label, tokens, values in rows
    ]
    for label, tokens, values in rows:
        if len(tokens) != len(values):
            raise InvalidArgumentError(
                f"{label!r}: {len(tokens)} tokens but {len(values)} activations"
            )
    if vmax is None:
        vmax = max((max(values, default=0.0) for _, _, values in rows), default=0.0)
    parts = [
        '<div class="interp-tokens" '
        'style="font-family: monospace; font-size: 0.85em; line-height: 1.7">'
    ]
    if caption:
        head = html.escape(caption)
        if caption_url:
            head = f'<a href="{html.escape(caption_url)}">{head}</a>'
        parts.append(f'<div style="font-family: sans-serif; margin-bottom: 0.4em">{head}</div>')
    for label, tokens, values in rows:
        body = "".join(_token_span(t, v, vmax) for t, v in zip(tokens, values))
        parts.append(
            '<div style="margin: 0.3em 0; padding: 0.3em 0.5em; border-left: 3px solid #ddd">'
            '<div style="font-family: sans-serif; color: #555; font-size: 0.9em">'
            f"{html.escape(label)}</div>"
            f'<div style="white-space: pre-wrap; word-break: break-word">{body}</div></div>'
        )
    parts.append("</div>")
    return HTML("".join(parts))


def feature_examples(
    enc,
    feature: int,
    n: int = 5,
    *,
    labels: Sequence[str] | None = None,
    url: str | None = None,
    vmax: float | None = None,
):
    """The ``n`` texts of ``enc`` (an ``analysis.Encoded``) on which ``feature`` is strongest,
    tokens shaded by it."""
    feature = int(feature)
    top = top_activating(enc, feature, n)
    rows = []
    for i, act, token in zip(top.text.tolist(), top.max_act.tolist(), top.token.tolist()):
        name = labels[i] if labels is not None else f"text {i}"
        tokens, values, _ = merge_pieces(enc.tokens[i], enc.acts[i][:, feature].tolist())
        rows.append((f"{name} \u00b7 max {act:.2f} on {token!r}", tokens, values))
    if not rows:
        return token_highlights(
            [], caption=f"feature {feature} is not active on any of these texts", caption_url=url
        )
    return token_highlights(rows, vmax=vmax, caption=f"feature {feature}", caption_url=url)


def html_table(
    df,
    *,
    links: dict[str, Sequence[str]] | None = None,
    floatfmt: str = "{:.2f}",
    index: bool = False,
):
    """A pandas DataFrame as an HTML table; `links` maps a column to one URL per row (the cell
    becomes a
    link; a URL of None leaves that cell plain)."""
    from IPython.display import HTML  # optional dependency: only notebooks display HTML

    links = links or {}
    for col, urls in links.items():
        if col not in df.columns:
            raise InvalidArgumentError(
                f"links names column {col!r}, which the table does not have: {list(df.columns)}"
            )
        if len(urls) != len(df):
            raise InvalidArgumentError(f"links[{col!r}] has {len(urls)} URLs for {len(df)} rows")

    def cell(value) -> str:
        if isinstance(value, float):
            return floatfmt.format(value)
        return html.escape(str(value))

    head = ([html.escape(str(df.index.name or ""))] if index else []) + [
        html.escape(str(c)) for c in df.columns
    ]
    lines = [
        '<table class="interp-table dataframe">',
        "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    columns = {col: df[col].tolist() for col in df.columns}  # plain Python values, dtype by column
    for i, idx in enumerate(df.index.tolist()):
        cells = [cell(idx)] if index else []
        for col in df.columns:
            text = cell(columns[col][i])
            if col in links and links[col][i] is not None:
                text = f'<a href="{html.escape(str(links[col][i]))}">{text}</a>'
            cells.append(text)
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    return HTML("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# SAE comparisons and training curves


class LiveCurves:
    """A training callback that redraws curves while the trainer runs.

    Pass it as ``callback=`` to :func:`interp_lib.training.trainer.train_sae` / ``train_saelens``:
    it keeps every history row (``.rows``) and, in an interactive notebook, redraws
    :func:`curves_figure`
    of ``keys`` at most every ``every_s`` seconds. While the book is built (see
    :func:`building_book`) it only collects; call :meth:`figure` afterwards.
    """

    def __init__(
        self,
        keys: Sequence[str] = ("loss", "fve", "l0", "dead_fraction"),
        *,
        title: str | None = None,
        every_s: float = 2.0,
        live: bool | None = None,
    ):
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
        from IPython.display import display  # IPython only where a notebook draws live

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)

    def figure(self) -> go.Figure:
        """The curves of every row so far."""
        return curves_figure(self.rows, self.keys, title=self.title)


def density_figure(
    histograms: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str | None = None,
    height: int | None = 420,
    dash: Mapping[str, str] | None = None,
) -> go.Figure:
    """Feature-density histograms as lines: {name: (counts, bin_edges)} over log10 firing frequency
    (e.g. from :func:`interp_lib.evals.metrics.log_density_histogram` or a metrics.json)."""
    dash = dash or {}
    traces = []
    for name, (counts, edges) in histograms.items():
        edges = np.asarray(edges, dtype=float)
        centres = (edges[:-1] + edges[1:]) / 2
        traces.append(
            go.Scatter(
                x=centres.tolist(),
                y=[float(c) for c in counts],
                mode="lines",
                name=str(name),
                line=dict(shape="hvh", dash=dash.get(name)),
            )
        )
    fig = go.Figure(traces)
    fig.update_xaxes(title="log10 of the share of tokens a feature fires on")
    fig.update_yaxes(title="features")
    return _finish(fig, title, height)


def tradeoff_figure(
    df: pd.DataFrame,
    *,
    x: str,
    y: str,
    group: str,
    label: str | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    log_x: bool = False,
    height: int | None = 450,
    y_range: tuple[str, str] | None = None,
) -> go.Figure:
    """A trade-off plot: one marker-and-line series per value of ``group`` (sorted by ``x``; a group
    of one point is a larger diamond), ``label`` as the hover text. ``y_range``: two columns
    (low, high) drawn as an error bar on each point (e.g. the range over seeds)."""
    traces = []
    for name, sub in df.groupby(group, sort=False):
        sub = sub.sort_values(x)
        text = None if label is None else [str(t) for t in sub[label]]
        mode = "lines+markers" if len(sub) > 1 else "markers"
        error_y = None
        if y_range is not None:
            yv = sub[y].astype(float)
            error_y = dict(
                type="data",
                symmetric=False,
                array=(sub[y_range[1]].astype(float) - yv).tolist(),
                arrayminus=(yv - sub[y_range[0]].astype(float)).tolist(),
                thickness=1.2,
                width=3,
            )
        traces.append(
            go.Scatter(
                x=sub[x].astype(float).tolist(),
                y=sub[y].astype(float).tolist(),
                mode=mode,
                name=str(name),
                text=text,
                error_y=error_y,
                marker=dict(
                    size=10 if len(sub) == 1 else 7, symbol="diamond" if len(sub) == 1 else "circle"
                ),
            )
        )
    fig = go.Figure(traces)
    return _finish(fig, title, height, xlabel=xlabel or x, ylabel=ylabel or y, log_x=log_x)


def distributions_figure(
    values: Mapping[str, Sequence[float]],
    *,
    bins: int = 50,
    value_range: tuple[float, float] | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "share",
    height: int | None = 420,
    dash: Mapping[str, str] | None = None,
) -> go.Figure:
    """Several distributions on one axis, each as a step line of bin shares (binned here with numpy,
    common bins: the page stores ``bins`` numbers per series, not every value)."""
    arrays = {
        k: np.asarray(
            torch.as_tensor(v).float().numpy() if not isinstance(v, np.ndarray) else v,
            dtype=np.float64,
        ).ravel()
        for k, v in values.items()
    }
    arrays = {k: a[~np.isnan(a)] for k, a in arrays.items()}
    if not arrays or not any(a.size for a in arrays.values()):
        raise InvalidArgumentError("no values to draw")
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


CURVE_TITLES = {
    "loss": "loss (log scale)",
    "mse": "MSE (log scale)",
    "fve": "variance explained (batch)",
    "l0": "L0",
    "dead_fraction": "dead features",
    "val_fve": "held-out variance explained",
}


def curves_figure(
    histories: Sequence[dict] | Mapping[str, Sequence[dict]],
    keys: Sequence[str],
    *,
    x: str = "tokens",
    title: str | None = None,
    height: int | None = None,
    log_y: Sequence[str] = ("loss", "mse"),
) -> go.Figure:
    """Training curves: one panel per key of ``keys``, against ``x``; ``histories`` is one history
    (a list of rows) or {name: history} for several runs on the same panels. Rows without a key
    are skipped on its panel (e.g. ``val_fve``, logged at evaluation steps only). Panels of the
    keys in ``log_y`` have a logarithmic y axis (a loss spans orders of magnitude)."""
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    keys = list(keys)
    cols = min(len(keys), 2)
    rows = math.ceil(len(keys) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[CURVE_TITLES.get(k, k) for k in keys],
        horizontal_spacing=0.12,
        vertical_spacing=0.18,
    )
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
    ]
    for j, (name, history) in enumerate(histories.items()):
        color = palette[j % len(palette)]
        for i, key in enumerate(keys):
            pts = [(r[x], r[key]) for r in history if key in r and r[key] is not None]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[float(p[1]) for p in pts],
                    mode="lines+markers" if len(pts) < 8 else "lines",
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=bool(name) and i == 0,
                    line=dict(color=color),
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    for i, key in enumerate(keys):
        fig.update_xaxes(
            title_text=x if i // cols == rows - 1 else None, row=i // cols + 1, col=i % cols + 1
        )
        if key in log_y:
            fig.update_yaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    return _finish(fig, title, height if height is not None else 260 * rows + 80)
