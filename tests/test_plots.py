"""interp_lib.site.plots: figures for the static site, without plotly.js and without a CDN."""

from __future__ import annotations

import warnings

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from interp_lib.site import plots


@pytest.fixture
def restore_plotly():
    renderer, template = pio.renderers.default, pio.templates.default
    with warnings.catch_warnings():
        yield
    pio.renderers.default, pio.templates.default = renderer, template


def test_static_renderer_emits_a_div_without_plotly_js():
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    bundle = pio.renderers[plots.RENDERER].to_mimebundle(fig.to_dict())
    assert list(bundle) == ["text/html"]
    html = bundle["text/html"]
    assert 'class="plotly-graph-div"' in html and "Plotly.newPlot" in html
    assert "cdn.plot.ly" not in html and "<script src" not in html
    assert len(html) < 50_000, "plotly.js must not be inlined"
    assert '"displaylogo": false' in html


def test_setup_static_sets_renderer(restore_plotly):
    plots.setup(static=True)
    assert pio.renderers.default == plots.RENDERER
    assert pio.templates.default == plots.TEMPLATE
    bundle = go.Figure()._repr_mimebundle_()
    assert "text/html" in bundle and "plotly-graph-div" in bundle["text/html"]


def test_setup_outside_a_build_keeps_plotly_default(restore_plotly, monkeypatch):
    monkeypatch.delenv("INTERP_BOOK_BUILD", raising=False)
    before = pio.renderers.default
    plots.setup()
    assert pio.renderers.default == before
    assert not plots.building_book()
    monkeypatch.setenv("INTERP_BOOK_BUILD", "1")
    assert plots.building_book()


def test_setup_quiets_known_noise(restore_plotly):
    plots.setup(static=False)
    with warnings.catch_warnings(record=True) as caught:
        # setup() installed its filters into the global list; re-apply inside this context
        plots.setup(static=False)
        warnings.warn("HookedTransformer is deprecated and will be removed in 4.0", DeprecationWarning)
        warnings.warn("something new", UserWarning)
    messages = [str(w.message) for w in caught]
    assert messages == ["something new"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.bar(["a", "b"], [1, 2], title="t", xlabel="x", ylabel="y"),
        lambda: plots.heatmap([[0, 1], [2, 3]], x=["u", "v"], y=["r1", "r2"], colorbar_title="act"),
        lambda: plots.histogram([0.1, 0.2, 0.2, 0.9], nbins=5, log_y=True),
        lambda: plots.line([1, 2, 3], {"a": [1, 2, 3], "b": [3, 2, 1]}, log_x=True),
        lambda: plots.scatter([1, 2], [3, 4], text=["p", "q"], color=[0.1, 0.5]),
    ],
)
def test_helpers_make_figures(make):
    fig = make()
    assert isinstance(fig, go.Figure) and len(fig.data) >= 1
    fig.to_json()  # valid, serialisable


def test_tqdm_disable_silences_notebook_bars_too(monkeypatch):
    """tqdm ignores TQDM_DISABLE for tqdm.notebook; setup() makes every bar honour it."""
    import subprocess
    import sys

    code = (
        "from tqdm.notebook import tqdm as nb\n"  # imported before setup(), as a library would
        "from interp_lib.site import plots\n"
        "plots.setup(static=True)\n"
        "from tqdm.auto import tqdm\n"
        "assert nb(range(3)).disable and tqdm(range(3)).disable\n"
        "assert list(nb(range(3))) == [0, 1, 2]\n"
    )
    env = {**__import__("os").environ, "TQDM_DISABLE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


def test_html_table_links_and_plain_cells():
    import pandas as pd

    html = plots.html_table(pd.DataFrame({"feature": [3, 7], "x": [0.5, 1.25]}),
                            links={"feature": ["../a/3.html", None]}).data
    assert '<a href="../a/3.html">3</a>' in html and "<td>7</td>" in html and "1.25" in html
    with pytest.raises(ValueError, match="2 rows"):
        plots.html_table(pd.DataFrame({"feature": [3, 7]}), links={"feature": ["x"]})


def test_tradeoff_figure_draws_the_seed_range_as_error_bars():
    df = pd.DataFrame({"arch": ["A", "A", "B", "B"], "L0": [32, 16, 16, 32],
                       "fve": [0.7, 0.6, 0.5, 0.55], "lo": [0.65, 0.58, 0.5, 0.5],
                       "hi": [0.72, 0.6, 0.52, 0.6]})
    fig = plots.tradeoff_figure(df, x="L0", y="fve", group="arch", y_range=("lo", "hi"))
    a = fig.data[0]
    assert list(a.x) == [16, 32]  # sorted by x, the bars follow their points
    assert a.error_y.array == pytest.approx([0.0, 0.02])
    assert a.error_y.arrayminus == pytest.approx([0.02, 0.05])
    assert plots.tradeoff_figure(df, x="L0", y="fve", group="arch").data[0].error_y.array is None
