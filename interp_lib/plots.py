"""Plotly figures for the book, and the set-up that makes them work on the static site.

Every chapter starts with one hidden cell::

    from interp_lib import plots
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

The figure helpers (`bar`, `heatmap`, `histogram`, `line`, `scatter`) give the book one look.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

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
QUIET_LOGGERS = ["transformers", "transformer_lens", "sae_lens", "huggingface_hub", "datasets", "gguf"]


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
    from tqdm import std

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


def _finish(fig: go.Figure, title: str | None, height: int | None) -> go.Figure:
    fig.update_layout(title=title, template=TEMPLATE, margin=dict(l=60, r=20, t=60 if title else 20, b=50))
    if height is not None:
        fig.update_layout(height=height)
    return fig


def bar(x: Sequence, y: Sequence, *, title: str | None = None, xlabel: str = "", ylabel: str = "",
        color: Sequence | None = None, height: int | None = 400, **trace) -> go.Figure:
    """A bar chart (categorical or numeric x)."""
    fig = go.Figure(go.Bar(x=list(x), y=list(y), marker_color=color, **trace))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel)
    return _finish(fig, title, height)


def heatmap(z, *, x: Sequence | None = None, y: Sequence | None = None, title: str | None = None,
            xlabel: str = "", ylabel: str = "", colorscale: str = "Blues", zmid: float | None = None,
            colorbar_title: str = "", height: int | None = None, **trace) -> go.Figure:
    """A heatmap of a 2-D array (rows = y, columns = x)."""
    z = [list(map(float, row)) for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=None if x is None else list(x), y=None if y is None else list(y),
                               colorscale=colorscale, zmid=zmid,
                               colorbar=dict(title=colorbar_title), **trace))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel, autorange="reversed")
    if height is None:
        height = max(300, min(900, 120 + 22 * len(z)))
    return _finish(fig, title, height)


def histogram(values: Sequence, *, nbins: int = 50, title: str | None = None, xlabel: str = "",
              ylabel: str = "count", log_y: bool = False, height: int | None = 400, **trace) -> go.Figure:
    """A histogram of one sequence of numbers."""
    fig = go.Figure(go.Histogram(x=list(map(float, values)), nbinsx=nbins, **trace))
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel, type="log" if log_y else None)
    return _finish(fig, title, height)


def line(x: Sequence, ys: dict[str, Sequence], *, title: str | None = None, xlabel: str = "",
         ylabel: str = "", log_x: bool = False, log_y: bool = False, height: int | None = 400) -> go.Figure:
    """One line per entry of `ys` (name -> values), sharing `x`."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(v), mode="lines", name=k) for k, v in ys.items()])
    fig.update_xaxes(title=xlabel, type="log" if log_x else None)
    fig.update_yaxes(title=ylabel, type="log" if log_y else None)
    return _finish(fig, title, height)


def scatter(x: Sequence, y: Sequence, *, text: Sequence | None = None, color: Sequence | None = None,
            title: str | None = None, xlabel: str = "", ylabel: str = "", log_x: bool = False,
            log_y: bool = False, height: int | None = 450, **trace) -> go.Figure:
    """A scatter plot; `text` becomes the hover label of each point."""
    fig = go.Figure(go.Scatter(x=list(x), y=list(y), mode="markers", text=None if text is None else list(text),
                               marker=dict(color=None if color is None else list(color)), **trace))
    fig.update_xaxes(title=xlabel, type="log" if log_x else None)
    fig.update_yaxes(title=ylabel, type="log" if log_y else None)
    return _finish(fig, title, height)
