"""Tests of the feature pages: their data and its cache (interp_lib.features.stats), token pieces
(interp_lib.model.tokens), the link scanner and HTML (interp_lib.site.feature_pages), on a tiny GPT-2 and a
random SAE; and (marker book_html) the feature pages of the built site."""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.features import stats as fs
from interp_lib.model.tokens import merge_pieces, token_strings
from interp_lib.sae import zoo
from interp_lib.sae.zoo import BOOK_URL, feature_slug, feature_url
from interp_lib.site import dashboards as fd
from interp_lib.site import feature_pages as fp

from .conftest import make_sae

HOOK = "blocks.1.hook_resid_pre"
RELEASE, SAE_ID = "smollm2-135m-res", "blocks.15.hook_resid_pre"  # names for the URLs only
SLUG = feature_slug(RELEASE, SAE_ID)
TEXTS = [
    "the cat sat on the mat . the dog sat on the cat .",
    "def x ( y ) : return x + 1",
    "import print hello world , hello world .",
    "the a cat dog sat on mat def return x y import print hello world . , ( ) : = + 1 2 3",
    "print ( hello ) = 1 + 2 + 3 . the dog sat .",
] * 6


@pytest.fixture(scope="module")
def setup(tiny_gpt2):
    from interp_lib import data
    from interp_lib.model.activations import harvest

    torch.manual_seed(0)
    tokens = data.tokenize_corpus(tiny_gpt2.tokenizer, TEXTS, ctx_len=16)
    sae = make_sae(tiny_gpt2.cfg.d_model, 48, HOOK, k=6)
    acts = harvest(tiny_gpt2, [HOOK], tokens, progress=False)[HOOK].float()
    return tiny_gpt2, sae, tokens, acts


@pytest.fixture(scope="module")
def computed(setup):
    model, sae, tokens, acts = setup
    return fs.compute_feature_data(model, sae, acts, tokens)


def _dense(sae, acts):
    with torch.inference_mode():
        return sae.encode(acts).float()


def test_statistics_match_a_dense_computation(setup, computed):
    model, sae, tokens, acts = setup
    d = computed
    dense = _dense(sae, acts)
    assert d.n_massive == 0 and d.n_tokens == acts.shape[0] == tokens.shape[0] * (tokens.shape[1] - 1)
    np.testing.assert_allclose(d.density, (dense > 0).float().mean(0).numpy(), atol=1e-7)
    np.testing.assert_allclose(d.max_act, dense.max(0).values.clamp(min=0).numpy(), rtol=1e-6)
    fired = dense > 0
    mean = torch.where(fired.sum(0) > 0, (dense * fired).sum(0) / fired.sum(0).clamp(min=1), torch.zeros(dense.shape[1]))
    np.testing.assert_allclose(d.mean_act, mean.numpy(), rtol=1e-5)
    assert (d.hist.sum(1) == fired.sum(0).numpy()).all()
    per_ctx = dense.view(tokens.shape[0], tokens.shape[1] - 1, -1)
    assert (d.n_contexts == (per_ctx > 0).any(1).sum(0).numpy()).all()
    later = per_ctx[:, 1:].reshape(-1, dense.shape[1]).max(0).values.clamp(min=0)
    np.testing.assert_allclose(d.max_later, later.numpy(), rtol=1e-6)
    assert d.density.max() > 0 and (d.max_act > 0).sum() > 10


def test_top_examples_are_the_argmax_windows(setup, computed):
    model, sae, tokens, acts = setup
    d = computed
    n_ctx, ctx_len = tokens.shape
    per_ctx = _dense(sae, acts).view(n_ctx, ctx_len - 1, -1)  # [ctx, position - 1, feature]
    ctx_max = per_ctx.max(1).values  # [ctx, feature]
    checked = 0
    for f in np.flatnonzero(d.max_act > 0):
        n_fire = int((ctx_max[:, f] > 0).sum())
        n_top = min(fs.N_TOP, n_fire)
        assert (d.ex_ctx[f, :n_top] >= 0).all() and (d.ex_ctx[f, n_top:fs.N_TOP] == -1).all()
        # the top examples: the contexts with the largest maxima, in decreasing order
        want = np.sort(ctx_max[:, f].numpy())[::-1][:n_top]
        np.testing.assert_allclose(d.ex_max[f, :n_top], want, rtol=1e-6)
        assert d.ex_max[f, 0] == pytest.approx(float(d.max_act[f]))
        for e in range(fs.N_TOP + fs.N_SPREAD):
            c = int(d.ex_ctx[f, e])
            if c < 0:
                continue
            col = per_ctx[c, :, f]
            p = int(d.ex_pos[f, e])
            assert p == int(torch.nonzero(col == col.max())[0]) + 1, "the first position of the context's maximum"
            assert d.ex_max[f, e] == pytest.approx(float(col.max()))
            ids, values, peak = d.window(f, e)
            lo = p - peak
            assert ids == tokens[c, lo:lo + len(ids)].tolist() and lo >= 1
            assert peak <= fs.PAGE_BEFORE and len(ids) - peak - 1 <= fs.PAGE_AFTER
            np.testing.assert_allclose(values, col[lo - 1:lo - 1 + len(ids)].numpy(), rtol=1e-2, atol=1e-3)
            assert values[peak] == max(values)
            checked += 1
        spread = [int(c) for c in d.ex_ctx[f, fs.N_TOP:] if c >= 0]
        assert len(set(spread)) == len(spread) and not set(spread) & set(d.ex_ctx[f, :fs.N_TOP].tolist())
        assert len(spread) == min(fs.N_SPREAD, max(0, n_fire - fs.N_TOP))
    assert checked > 50


def test_logit_lens_matches_feature_logit_lens(setup, computed):
    from interp_lib.interventions.logit_lens import feature_logit_lens

    model, sae, _, _ = setup
    k = min(fs.N_LOGITS, model.cfg.d_vocab)
    for f in (0, 7, 31):
        lens = feature_logit_lens(model, sae, f, k)
        np.testing.assert_allclose(computed.lens_up_val[f], [v for _, v in lens.promoted], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(computed.lens_down_val[f], [v for _, v in lens.suppressed], rtol=1e-4, atol=1e-5)
        assert model.to_str_tokens(torch.tensor(computed.lens_up[f][:3])) == [s for s, _ in lens.promoted[:3]]


def test_cofiring_is_the_jaccard_index_of_fired_tokens(setup, computed):
    _, sae, _, acts = setup
    fired = (_dense(sae, acts) > 0).float()
    both = fired.T @ fired
    count = fired.sum(0)
    jaccard = both / (count[:, None] + count[None, :] - both).clamp(min=1)
    jaccard.fill_diagonal_(0)
    checked = 0
    for f in np.flatnonzero(computed.max_act > 0):
        ids = [int(g) for g in computed.cofire[f] if g >= 0]
        assert f not in ids and len(set(ids)) == len(ids)
        np.testing.assert_allclose(computed.cofire_val[f, :len(ids)], jaccard[f, ids].numpy(), rtol=1e-5)
        # nothing left out scores higher than the last one listed
        want = np.sort(jaccard[f].numpy())[::-1][:len(ids)]
        np.testing.assert_allclose(computed.cofire_val[f, :len(ids)], want, rtol=1e-5)
        if len(ids) < fs.N_COFIRE:
            assert int((jaccard[f] > 0).sum()) == len(ids)
        checked += 1
    assert checked > 10


def test_logit_lens_histogram_covers_the_vocabulary(setup, computed):
    from interp_lib.interventions.logit_lens import direct_logits

    model, sae, _, _ = setup
    assert (computed.lens_hist.sum(1) == model.cfg.d_vocab).all()
    for f in (0, 7, 31):
        logits = direct_logits(model, sae.W_dec[f].detach().float())
        assert computed.lens_lo[f] == pytest.approx(float(logits.min()), rel=1e-5)
        assert computed.lens_hi[f] == pytest.approx(float(logits.max()), rel=1e-5)
        assert computed.lens_hi[f] == pytest.approx(float(computed.lens_up_val[f, 0]), rel=1e-5)
        edges = np.linspace(computed.lens_lo[f], computed.lens_hi[f], fs.N_BINS + 1)
        want, _ = np.histogram(logits.numpy(), bins=edges)
        assert np.abs(computed.lens_hist[f] - want).sum() <= 2, "same bins as numpy (edges may round)"


def test_massive_tokens_are_left_out(setup):
    model, sae, tokens, acts = setup
    acts = acts.clone()
    acts[5] *= 50.0  # one token with a huge norm: an attention sink
    d = fs.compute_feature_data(model, sae, acts, tokens)
    dense = _dense(sae, acts)
    assert d.n_massive == 1 and d.n_tokens == acts.shape[0] - 1
    fired_sink = dense[5] > 0
    assert (d.sink_count == fired_sink.numpy().astype(int)).all()
    np.testing.assert_allclose(d.sink_max, dense[5].clamp(min=0).numpy(), rtol=1e-6)
    rest = torch.cat([dense[:5], dense[6:]])
    np.testing.assert_allclose(d.max_act, rest.max(0).values.clamp(min=0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(d.density, (rest > 0).float().mean(0).numpy(), atol=1e-7)


def test_spread_ranks():
    ranks = fs._spread_ranks(torch.tensor([0, 10, 12, 30, 110]), 10, 5)
    assert ranks[0].tolist() == [-1] * 5 and ranks[1].tolist() == [-1] * 5
    assert ranks[2].tolist() == [10, 11, -1, -1, -1]
    assert ranks[3].tolist() == [12, 16, 20, 24, 28]
    assert all(10 <= r < 110 for r in ranks[4].tolist()) and ranks[4].tolist() == sorted(set(ranks[4].tolist()))


def test_top_features_rule(computed):
    top = fs.top_features(computed, n=5, min_density=0.01)
    assert len(top) == 5 and all(computed.density[f] >= 0.01 for f in top)
    later = computed.max_later[top]
    assert (np.diff(later) <= 0).all()
    others = [f for f in range(computed.d_sae) if f not in top and computed.density[f] >= 0.01]
    assert all(computed.max_later[f] <= later.min() for f in others)


# ---------------------------------------------------------------------------------------------
# The cache


def test_cache_is_reused_and_a_corrupt_file_recomputed(setup, tmp_path):
    model, sae, tokens, _ = setup
    loads = []

    def load():
        loads.append(1)
        return model

    src = fs.SAESource(RELEASE, SAE_ID, sae)
    first = fs.feature_data([src], tokens, model_id="tiny", model=load, cache=tmp_path)[SLUG]
    files = list(tmp_path.glob("*.npz"))
    assert len(loads) == 1 and len(files) == 1 and files[0].name.startswith(SLUG + "--")
    assert not list(tmp_path.glob(".*")), "no temporary file left behind"

    again = fs.feature_data([src], tokens, model_id="tiny", model=load, cache=tmp_path)[SLUG]
    assert len(loads) == 1, "the cached data was not reused"
    for name in (f for f in fs.FeatureData._fields if f != "hook"):
        np.testing.assert_array_equal(np.asarray(getattr(again, name)), np.asarray(getattr(first, name)))

    raw = files[0].read_bytes()
    files[0].write_bytes(raw[: len(raw) // 2])  # truncated
    fs.feature_data([src], tokens, model_id="tiny", model=load, cache=tmp_path)
    assert len(loads) == 2
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64  # flipped bytes inside an array
    files[0].write_bytes(bytes(raw))
    redone = fs.feature_data([src], tokens, model_id="tiny", model=load, cache=tmp_path)[SLUG]
    assert len(loads) == 3
    np.testing.assert_array_equal(redone.ex_acts, first.ex_acts)
    assert fs.load_feature_data(files[0], files[0].stem.rsplit("--", 1)[1]) is not None


def test_cache_key_follows_weights_tokens_and_model(setup, tmp_path):
    model, sae, tokens, _ = setup
    key = fs.cache_key("tiny", HOOK, sae, tokens)
    assert key == fs.cache_key("tiny", HOOK, sae, tokens.clone())
    other = make_sae(sae.cfg.d_in, sae.cfg.d_sae, HOOK, k=6, seed=1)
    assert fs.cache_key("tiny", HOOK, other, tokens) != key
    assert fs.cache_key("tiny", HOOK, sae, tokens[:-1]) != key
    assert fs.cache_key("other", HOOK, sae, tokens) != key
    # a retrained SAE replaces the old cache file of the same slug
    src = fs.SAESource(RELEASE, SAE_ID, sae)
    fs.feature_data([src], tokens, model_id="tiny", model=model, cache=tmp_path)
    fs.feature_data([fs.SAESource(RELEASE, SAE_ID, other)], tokens, model_id="tiny", model=model, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1


# ---------------------------------------------------------------------------------------------
# Links and HTML


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_scan_feature_links(tmp_path):
    rel = feature_url(RELEASE, SAE_ID, 12, base="..")
    _write(tmp_path / "book" / "ch1.html",
           f'<html><head><title>1. First look &#8212; Sparse autoencoders</title></head><body>'
           f'<a href="{rel}">12</a> <a href="{feature_url(RELEASE, SAE_ID, 3)}">3</a> '
           f'<a href="{rel}#top">again</a> <a href="../features/nope--x/4.html">4</a>'
           f'<a href="../features/{SLUG}/index.html">index</a></body></html>')
    _write(tmp_path / "index.html", f'<title>Home</title><a href="features/{SLUG}/12.html">x</a>')
    _write(tmp_path / "features" / SLUG / "5.html", f'<a href="../{SLUG}/6.html">a feature page itself</a>')
    _write(tmp_path / "_static" / "x.html", f'<a href="features/{SLUG}/7.html">static</a>')
    links = fp.scan_feature_links(tmp_path)
    assert set(links) == {(SLUG, 12), (SLUG, 3), ("nope--x", 4)}
    assert [(link.page, link.title) for link in links[(SLUG, 12)]] == [("book/ch1.html", "1. First look"), ("index.html", "Home")]
    assert BOOK_URL.startswith("https://")


def test_token_strings_and_merge(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    ids = tok("the cat sat", add_special_tokens=False)["input_ids"]
    pieces = token_strings(tok, ids)
    assert "".join(pieces).strip() == tok.decode(ids).strip() and len(pieces) == len(ids)
    # '' pieces (bytes of one character) fold into the token that completes it; the peak follows
    assert merge_pieces(["a", "", "", "é", "b"], [1.0, 5.0, 0.0, 2.0, 3.0], 1) == (["a", "é", "b"], [1.0, 5.0, 3.0], 1)
    assert merge_pieces(["a", "b"], [1.0, 2.0], 1) == (["a", "b"], [1.0, 2.0], 1)
    # a '' piece at the end (a window cut inside a character) stays a cell of its own
    assert merge_pieces(["a", ""], [1.0, 2.0], 1) == (["a", ""], [1.0, 2.0], 1)


class _ByteTokenizer:
    """One token per UTF-8 byte, as a byte-level BPE splits a rare character."""

    def decode(self, ids, **kwargs):
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def test_split_characters_show_on_the_token_that_completes_them():
    ids = list("a\u2615b".encode())  # the coffee cup is three bytes
    pieces = token_strings(_ByteTokenizer(), ids)
    assert pieces == ["a", "", "", "\u2615", "b"]
    assert merge_pieces(pieces, [0.0, 3.0, 1.0, 2.0, 0.5], 2) == (["a", "\u2615", "b"], [0.0, 3.0, 0.5], 1)


def test_pages_html(setup, computed):
    model, sae, tokens, _ = setup
    src = fs.SAESource(RELEASE, SAE_ID, sae)
    linked = int(np.flatnonzero(computed.max_act > 0)[0])
    links = {(SLUG, linked): [fp.Link("book/01_first_look.html", "1. First look")]}
    pages = fp.build_pages({SLUG: computed}, [src], model.tokenizer, links, missing=[("smollm2-135m-mlp", "blocks.15.hook_mlp_out")])
    by_name = {p.pagename: p for p in pages}
    top = fs.top_features(computed)
    assert set(by_name) == {f"features/{SLUG}/{f}" for f in {linked, *top}} | {f"features/{SLUG}/index", "features/index"}
    # where a chapter page's link points (chapters live at book/<chapter>.html)
    url = feature_url(RELEASE, SAE_ID, linked, base="..")
    assert posixpath.normpath(posixpath.join("book", url)) == f"features/{SLUG}/{linked}.html"
    body = by_name[f"features/{SLUG}/{linked}"].body
    assert "Top activations" in body and "Logit lens" in body and "Activation histogram" in body
    assert "plotly-graph-div" in body and "Plotly.newPlot" in body and "<script src" not in body
    shaded = re.findall(r"background: rgba\(230, 97, 0, ([0-9.]+)\)", body)
    assert shaded and max(map(float, shaded)) == 1.0, "the peak token is drawn at full colour"
    assert 'href="../../book/01_first_look.html"' in body and 'href="index.html"' in body
    assert 'href="../index.html"' in body and 'href="../../index.html"' in body
    assert f"{computed.density[linked]:.2%}" in body or f"{computed.density[linked]:.3%}" in body
    index = by_name[f"features/{SLUG}/index"].body
    assert all(f'href="{f}.html"' in index for f in top) and "book" in index and "rule #1" in index
    site = by_name["features/index"].body
    assert f'href="{SLUG}/index.html"' in site and "blocks.15.hook_mlp_out" in site


def test_site_pages_end_to_end(setup, tmp_path):
    model, sae, tokens, _ = setup
    html = tmp_path / "html"
    _write(html / "book" / "ch.html", f'<title>Ch</title><a href="{feature_url(RELEASE, SAE_ID, 2, base="..")}">2</a>'
                                      f'<a href="{feature_url(RELEASE, SAE_ID, 999, base="..")}">999</a>'
                                      f'<a href="{feature_url("smollm2-135m-mlp", "blocks.15.hook_mlp_out", 1, base="..")}">m</a>')
    pages, problems = fp.site_pages(html, sources=[fs.SAESource(RELEASE, SAE_ID, sae)], model=model, tokens=tokens,
                                    cache=tmp_path / "cache")
    names = {p.pagename for p in pages}
    assert f"features/{SLUG}/2" in names and f"features/{SLUG}/999" not in names
    assert len(problems) == 2 and any("999" in p and "48 features" in p for p in problems)
    assert any("not in this checkout" in p for p in problems)
    assert {f"features/{fd.DASHBOARD}", f"features/{fd.SEARCH}"} <= names
    stubs = {int(p.stem) for p in (html / "features" / SLUG).glob("*.html")}
    full = {int(n.rsplit("/", 1)[1]) for n in names if n.rsplit("/", 1)[1].isdigit()}
    assert stubs | full == set(range(48)) and not stubs & full
    written = fp.write_pages(pages, tmp_path / "out", plotly_js="_static/plotly.min.js")
    page = (tmp_path / "out" / "features" / SLUG / "2.html").read_text()
    assert len(written) == len(pages) and '<script src="../../_static/plotly.min.js">' in page


# ---------------------------------------------------------------------------------------------
# Dashboards: every feature, from data files (interp_lib.site.dashboards)


@pytest.fixture(scope="module")
def dashboards(setup, computed, tmp_path_factory):
    model, sae, _, _ = setup
    other = make_sae(sae.cfg.d_in, 32, HOOK, k=4, seed=3)
    sources = [fs.SAESource(RELEASE, SAE_ID, sae), fs.SAESource("smollm2-135m-mlp", "blocks.15.hook_mlp_out", other)]
    other_data = fs.compute_feature_data(model, other, setup[3], setup[2])
    out = tmp_path_factory.mktemp("dash") / "features"
    full = {(SLUG, 3)}
    summary = fd.write_dashboards(out, {SLUG: computed, sources[1].slug: other_data}, sources, model.tokenizer,
                                  full_pages=full)
    return out, sources, other_data, summary


def test_dashboard_numbers_are_the_feature_data(setup, computed, dashboards):
    model, sae, tokens, _ = setup
    out, _, _, summary = dashboards
    assert summary["files"] > computed.d_sae and summary["bytes"] > 0
    for f in range(computed.d_sae):
        rec = fd.dashboard_record(out, SLUG, f)
        assert rec["density"] == pytest.approx(float(computed.density[f]), rel=1e-3)
        assert rec["max"] == pytest.approx(float(computed.max_act[f]), rel=1e-3)
        assert rec["hist"] == computed.hist[f].tolist() and rec["lens_hist"] == computed.lens_hist[f].tolist()
        assert rec["contexts"] == int(computed.n_contexts[f])
        np.testing.assert_allclose([v for _, v in rec["up"]], computed.lens_up_val[f], rtol=1e-3)
        assert [t for t, _ in rec["up"]] == model.to_str_tokens(torch.tensor(computed.lens_up[f]))
        for e, ex in enumerate(rec["examples"]):
            if computed.ex_ctx[f, e] < 0:
                assert ex is None
                continue
            assert ex[:2] == [int(computed.ex_ctx[f, e]), int(computed.ex_pos[f, e])]
            # what the viewer shades and shows on hover: within half a step of 1/255 of the maximum
            np.testing.assert_allclose(fd.window_activations(rec, e), computed.ex_acts[f, e].astype(np.float32),
                                       atol=float(computed.max_act[f]) / 500 + 1e-3)
        cofire = [g for g, _ in rec["cofire"]]
        assert cofire == [int(g) for g in computed.cofire[f] if g >= 0]


def test_dashboard_neighbours_are_the_decoder_cosines(setup, dashboards):
    _, sae, _, _ = setup
    out, sources, _, _ = dashboards
    w = sae.W_dec.detach().float()
    w = w / w.norm(dim=1, keepdim=True)
    v = sources[1].sae.W_dec.detach().float()
    v = v / v.norm(dim=1, keepdim=True)
    cos = w @ w.T
    cos.fill_diagonal_(-2)
    across = w @ v.T
    same = torch.diagonal(across).clone()
    across.fill_diagonal_(-2)  # the same-numbered feature shares its starting direction: left out
    for f in (0, 5, 47):
        rec = fd.dashboard_record(out, SLUG, f)
        ids = [g for g, _ in rec["near"]]
        assert ids == cos[f].topk(fd.N_NEIGHBOURS).indices.tolist() and f not in ids
        np.testing.assert_allclose([c for _, c in rec["near"]], cos[f, ids].numpy(), atol=1e-3)
        [(which, g, c, *own)] = rec["best"]
        assert which == 1 and g == int(across[f].argmax()) and c == pytest.approx(float(across[f].max()), abs=1e-3)
        assert g != f and own == ([pytest.approx(float(same[f]), abs=1e-3)] if f < 32 else [])


def test_every_feature_has_a_stable_address(dashboards, computed):
    out, sources, other_data, _ = dashboards
    for src, n in ((sources[0], computed.d_sae), (sources[1], other_data.d_sae)):
        stubs = {int(p.stem) for p in (out / src.slug).glob("*.html")}
        want = set(range(n)) - ({3} if src.slug == SLUG else set())
        assert stubs == want, "a stable page for every feature without a full page, none beyond"
    stub = (out / SLUG / "7.html").read_text()
    assert f'location.replace("../{fd.DASHBOARD}.html#{SLUG}/7")' in stub and len(stub) < 300
    site = fd.read_data_file(out / fd.SITE_DATA)[1][0]
    assert [s["slug"] for s in site["saes"]] == [s.slug for s in sources]
    assert site["saes"][0]["full_pages"] == [3] and site["saes"][0]["d_sae"] == computed.d_sae
    # the shipped SAEs these two are named after were each trained from their own seed
    seeds = [zoo.training_recipe(src.release, src.sae_id).get("seed") for src in sources]
    assert None not in seeds and len(set(seeds)) == 2 and "its own seed" in site["start_note"]
    assert (out / fd.SCRIPT).read_text() == (Path(fd.__file__).parent / fd.SCRIPT).read_text()


def test_start_note_follows_the_seeds():
    """Same-numbered features share a start only where seeds repeat; unknown seeds say so."""
    assert "its own seed" in fd.start_note([1, 2, 3]) and "same seed" not in fd.start_note([1, 2])
    assert "same seed" in fd.start_note([0, 0, 1]) and "same random direction" in fd.start_note([0, 0])
    assert "not recorded" in fd.start_note([1, None])


def test_token_index_finds_the_peak_tokens(setup, computed, dashboards):
    model, _, tokens, _ = setup
    out = dashboards[0]
    name, (slug, index) = fd.read_data_file(out / SLUG / fd.DATA_DIR / "search.js")
    assert name == "tokens" and slug == SLUG
    f = int(np.flatnonzero(computed.max_act > 0)[0])
    ctx, pos = int(computed.ex_ctx[f, 0]), int(computed.ex_pos[f, 0])
    key = fd._peak_key(model.to_str_tokens(tokens[ctx, pos:pos + 1])[0])
    assert f in [hit[0] for hit in index[key]]
    for hits in index.values():  # ranked: most top examples peaking on the token first
        assert [(-h[1], -h[2]) for h in hits] == sorted((-h[1], -h[2]) for h in hits)
    counted = sum(h[1] for hits in index.values() for h in hits)
    assert counted == int((computed.ex_ctx[:, :fs.N_TOP] >= 0).sum()), "every top example indexed once"


def test_dashboard_record_refuses_unknown_features(dashboards):
    out = dashboards[0]
    with pytest.raises(InvalidArgumentError, match="choose one of"):
        fd.dashboard_record(out, "nope--x", 1)
    with pytest.raises(InvalidArgumentError, match="no dashboard"):
        fd.dashboard_record(out, SLUG, 48)
    with pytest.raises(InvalidArgumentError, match="no dashboard"):
        fd.dashboard_record(out, SLUG, -1)


# ---------------------------------------------------------------------------------------------
# The built site (make book-tests)

HTML = Path(__file__).resolve().parent.parent / "_build" / "html"


@pytest.fixture(scope="module")
def site():
    if not (HTML / fp.FEATURES_DIR / "index.html").is_file():
        if os.environ.get("INTERP_REQUIRE_BOOK_HTML") == "1" and os.environ.get(fp.ENV_DISABLE, "1") != "0":
            pytest.fail(f"no feature pages in {HTML} (make book)")
        pytest.skip("book not built with feature pages (make book)")
    return HTML


@pytest.mark.book_html
def test_every_feature_link_of_the_site_has_its_page(site):
    links = fp.scan_feature_links(site)
    dead = [f"{f}/{n}" for (f, n) in links if not (site / fp.FEATURES_DIR / f / f"{n}.html").is_file()]
    assert not dead, f"links to feature pages that were not built: {dead}"
    for slug in {s for s, _ in links}:
        assert (site / fp.FEATURES_DIR / slug / "index.html").is_file()


@pytest.mark.book_html
def test_feature_pages_are_clean_and_local(site):
    import plotly
    from bs4 import BeautifulSoup

    pages = sorted((site / fp.FEATURES_DIR).rglob("*.html"))
    assert len(pages) > 2
    for page in pages:
        text = page.read_text(encoding="utf-8")
        soup = BeautifulSoup(text, "html.parser")
        remote = [s["src"] for s in soup.find_all("script", src=True) if re.match(r"(https?:)?//", s["src"])]
        remote += [x["href"] for x in soup.find_all("link", href=True)
                   if "stylesheet" in (x.get("rel") or []) and re.match(r"(https?:)?//", x["href"])]
        assert not remote, f"{page}: needs the network: {remote}"
        scripts = re.findall(r'<script[^>]*\bsrc="([^"]*plotly[^"]*)"', text)
        if 'class="plotly-graph-div' in text:
            assert len(scripts) == 1, f"{page}: {len(scripts)} plotly.js scripts"
            assert (page.parent / scripts[0].split("?")[0]).resolve().name == f"plotly-{plotly.__version__}.min.js"
            assert (page.parent / scripts[0].split("?")[0]).resolve().is_file()
        else:
            assert not scripts
        assert "Traceback" not in text and "cdn.plot.ly" not in text
        for a in soup.find_all("a", href=True):  # every relative link of a feature page resolves
            href = a["href"].split("#")[0].split("?")[0]
            if href and not re.match(r"[a-z]+:", href):
                assert (page.parent / href).resolve().exists(), f"{page}: dead link {a['href']}"


@pytest.mark.slow
def test_real_model_token_strings_and_logit_lens(smollm):
    from interp_lib.interventions.logit_lens import feature_logit_lens
    from interp_lib.sae.zoo import load_sae

    text = "Café ☕ naïve: x = 1"
    ids = smollm.tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = token_strings(smollm.tokenizer, ids)
    assert "".join(pieces) == text and len(pieces) == len(ids)
    try:
        sae = load_sae("smollm2-135m-res", "blocks.15.hook_resid_pre")
    except FileNotFoundError:
        pytest.skip("the shipped layer-15 SAE is not in this checkout")
    up, _, _, down_val, *_ = fs.logit_lens_all(smollm, sae, k=5)
    for f in (0, 1000):
        lens = feature_logit_lens(smollm, sae, f, 5)
        assert smollm.to_str_tokens(up[f]) == [s for s, _ in lens.promoted]
        np.testing.assert_allclose(down_val[f].numpy(), [v for _, v in lens.suppressed], rtol=1e-4)


@pytest.mark.book_html
def test_dashboards_show_the_library_numbers(site, smollm):
    """Seeded random dashboards of the built site, in every SAE: the activations their examples
    show are what encode_texts gives on those held-out contexts (attention sinks, which the pages
    leave out, aside), and their logit lens is feature_logit_lens's."""
    import random

    from interp_lib.interventions.logit_lens import feature_logit_lens
    from interp_lib.model.encoding import encode_texts
    from interp_lib.model.hooks import sae_hook
    from interp_lib.model.massive import PAGE_FACTOR, typical_rows
    from interp_lib.sae.zoo import load_sae

    features = site / fp.FEATURES_DIR
    saes = fd.read_data_file(features / fd.SITE_DATA)[1][0]["saes"]
    rng = random.Random(17)
    picked = {s["slug"]: rng.sample(range(s["d_sae"]), 2) for s in saes}
    loaded = {s["slug"]: load_sae(s["release"], s["sae_id"]) for s in saes}
    contexts = fd.read_data_file(features / saes[0]["slug"] / fd.DATA_DIR / "contexts.js")[1][1]
    cases, needed = [], set()
    for slug, fs_ in picked.items():
        for f in fs_:
            rec = fd.dashboard_record(features, slug, f)
            lens = feature_logit_lens(smollm, loaded[slug], f, len(rec["up"]))
            assert [t for t, _ in rec["up"]] == [t for t, _ in lens.promoted]
            assert [t for t, _ in rec["down"]] == [t for t, _ in lens.suppressed]
            np.testing.assert_allclose([v for _, v in rec["up"]], [v for _, v in lens.promoted], rtol=1e-3)
            np.testing.assert_allclose([v for _, v in rec["down"]], [v for _, v in lens.suppressed], rtol=1e-3)
            # the strongest example and one from the first and the last quantile group (each
            # context is a forward pass of the model: a few dozen keep the test short)
            for e in (0, fs.N_TOP, fs.N_TOP + fs.N_SPREAD - 1):
                if rec["examples"][e] is not None:
                    cases.append((slug, f, rec, e))
                    needed.add(rec["examples"][e][0])
    order = sorted(needed)
    enc = encode_texts(smollm, loaded, ["".join(contexts[c]) for c in order])
    checked = 0
    for slug, f, rec, e in cases:
        ctx, pos, peak = rec["examples"][e]
        i = order.index(ctx)
        got = enc.encoded[slug]
        if got.tokens[i] != contexts[ctx]:
            continue  # this context's text does not tokenize back to the same tokens
        acts = got.acts[i][:, f].numpy()
        raw = enc.hook_acts[sae_hook(loaded[slug])][i]
        typical = typical_rows(raw, PAGE_FACTOR).numpy()
        lo, hi = max(1, pos - fs.PAGE_BEFORE), min(len(contexts[ctx]) + 1, pos + fs.PAGE_AFTER + 1)
        shown = fd.window_activations(rec, e)[lo - pos + fs.PAGE_BEFORE: hi - pos + fs.PAGE_BEFORE]
        want = np.where(typical[lo - 1: hi - 1], acts[lo - 1: hi - 1], 0.0)
        assert peak == pytest.approx(float(acts[pos - 1]), rel=0.02, abs=0.02), (slug, f, e)
        np.testing.assert_allclose(shown, want, atol=rec["max"] / 500 + 0.02 * rec["max"] + 0.02,
                                   err_msg=f"{slug}/{f} example {e}")
        checked += 1
    assert checked >= 0.8 * len(cases) and checked >= 15, (checked, len(cases))


def _token_strings_whole_prefix(tokenizer, ids):
    """The definition token_strings keeps: each token's text off the whole decoded prefix."""
    out, prev = [], ""
    for i in range(len(ids)):
        cur = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=False,
                               clean_up_tokenization_spaces=False).rstrip("\ufffd")
        out.append(cur[len(prev):] if cur.startswith(prev) else tokenizer.decode(
            [ids[i]], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        prev = cur
    return out


@pytest.mark.slow
def test_token_strings_window_equals_the_whole_prefix(smollm, tiny_gpt2):
    """The windowed decode gives each token the text the whole-prefix decode gives it, on text
    with characters split over byte tokens (CJK, emoji, accents), code, and a special token."""
    text = ("Café ☕ naïve: x = 1\n日本語の文章です。🐕‍🦺 Straße — «ça» 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 "
            "def f(x):\n    return x ** 2  # ☃☃☃ ") * 3
    for tok in (smollm.tokenizer, tiny_gpt2.tokenizer):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = [tok.bos_token_id or 0, *ids]
        assert token_strings(tok, ids) == _token_strings_whole_prefix(tok, ids)
        # a window that starts inside a character (the first ids cut off) agrees too
        assert token_strings(tok, ids[5:]) == _token_strings_whole_prefix(tok, ids[5:])
    ids = list("a\u2615b\u00e9\U0001F415".encode()) * 4
    assert token_strings(_ByteTokenizer(), ids) == _token_strings_whole_prefix(_ByteTokenizer(), ids)
