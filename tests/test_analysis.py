"""interp_lib.features.analysis feature statistics, interp_lib.model.encoding, and plots' HTML helpers, on small hand-made arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp_lib.features import analysis as A
from interp_lib.model import encoding as E
from interp_lib.model.massive import massive_tokens
from interp_lib.model.tokens import readable_tokens
from interp_lib.site import plots

# 6 texts x 5 features; categories a, a, a, b, b, c.
#   f0: everywhere, weak          f1: one text, very strong (text 4)
#   f2: strong on all of a        f3: never fires
#   f4: strong in b, weak once in a
POOLED = np.array([
    [1.0, 0.0, 4.0, 0.0, 0.5],
    [1.0, 0.0, 5.0, 0.0, 0.0],
    [1.0, 0.0, 3.0, 0.0, 0.0],
    [1.0, 0.0, 0.0, 0.0, 6.0],
    [2.0, 9.0, 0.0, 0.0, 5.0],
    [1.0, 0.0, 1.0, 0.0, 0.0],
])
CATS = ["a", "a", "a", "b", "b", "c"]


def test_feature_frequency_counts_texts_above_threshold():
    np.testing.assert_allclose(A.feature_frequency(POOLED), [1, 1 / 6, 4 / 6, 0, 3 / 6])
    np.testing.assert_allclose(A.feature_frequency(POOLED, threshold=1.0), [1 / 6, 1 / 6, 3 / 6, 0, 2 / 6])
    # torch input gives the same answer
    np.testing.assert_allclose(A.feature_frequency(torch.tensor(POOLED)), A.feature_frequency(POOLED))


def test_strong_is_relative_to_each_features_max():
    thr = A.strong_thresholds(POOLED, 0.5)
    np.testing.assert_allclose(thr[[0, 1, 2, 4]], [1.0, 4.5, 2.5, 3.0])
    assert np.isinf(thr[3])  # a feature that never fires has no strong texts
    mask = A.strong_mask(POOLED, 0.5)
    assert mask[:, 0].all()  # 1.0 >= 0.5 * 2.0
    assert mask[:, 2].tolist() == [True, True, True, False, False, False]
    assert mask[:, 4].tolist() == [False, False, False, True, True, False]
    assert not mask[:, 3].any()
    with pytest.raises(ValueError):
        A.strong_thresholds(POOLED, 0.0)


def test_strongest_features():
    df = A.strongest_features(POOLED, n=3)
    assert df.feature.tolist() == [1, 4, 2]
    assert df.max_act.tolist() == [9.0, 6.0, 5.0]
    assert df.text.tolist() == [4, 3, 1]
    assert df.n_active.tolist() == [1, 3, 4]
    # features that never fire are not listed even if n asks for them
    assert 3 not in A.strongest_features(POOLED, n=5).feature.tolist()


def test_frequent_features_breaks_ties_by_strength():
    df = A.frequent_features(POOLED, n=3)
    assert df.feature.tolist() == [0, 2, 4]
    assert df.n_active.tolist() == [6, 4, 3]
    assert df.frequency.iloc[0] == pytest.approx(1.0)
    assert df.text.tolist() == [4, 1, 3]  # where each one is strongest
    tie = np.array([[1.0, 2.0], [1.0, 2.0]])
    assert A.frequent_features(tie, n=2).feature.tolist() == [1, 0]


def test_selective_features_are_strong_and_rare():
    df = A.selective_features(POOLED, n=2, min_max=5.0)
    assert df.feature.tolist() == [1, 4]  # f1: 1 text; f4: 3 texts; f2 (max 5) is active on 4
    assert df.n_active.tolist() == [1, 3]
    # the default bar is a quantile of the maxima: with quantile 1 only the strongest qualifies
    assert A.selective_features(POOLED, quantile=1.0).feature.tolist() == [1]


def test_specialist_scores_inside_minus_outside():
    scores = A.specialist_scores(POOLED, CATS)
    assert list(scores.columns) == ["a", "b", "c"]
    assert scores.loc[2].tolist() == [3, -3, -3]
    assert scores.loc[4].tolist() == [-2, 2, -2]
    assert scores.loc[0].tolist() == [3 - 3, 2 - 4, 1 - 5]
    assert scores.loc[3].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="categories"):
        A.specialist_scores(POOLED, CATS[:-1])


def test_category_specialists():
    df = A.category_specialists(POOLED, CATS).set_index("category")
    assert df.loc["a", "feature"] == 2 and df.loc["a", "score"] == 3 and df.loc["a", "specialist"]
    assert df.loc["a", "inside"] == 3 and df.loc["a", "outside"] == 0
    assert df.loc["b", "feature"] == 4 and df.loc["b", "specialist"]  # 2 of 2 texts, needs 1
    # c: one text; f0 and f2 are strong there but also elsewhere; no feature scores >= 1
    assert not df.loc["c", "specialist"]
    strict = A.category_specialists(POOLED, CATS, min_score=3).set_index("category")
    assert strict.specialist.tolist() == [True, False, False]


def test_category_means():
    df = A.category_means(POOLED, CATS, [2, 4])
    assert df.loc[2].tolist() == pytest.approx([4.0, 0.0, 1.0])
    assert df.loc[4, "b"] == pytest.approx(5.5)


def test_features_for_concept_composite_and_contrast():
    concept = np.array([[3.0, 1.0, 0.0], [3.0, 1.0, 2.0], [3.0, 1.0, 0.0], [3.0, 1.0, 0.0]])
    df = A.features_for_concept(concept, n=3)
    assert df.feature.tolist() == [0, 1, 2]
    assert df.composite.tolist() == pytest.approx([3.0, 1.0, 0.25 * 0.5])
    # against a background on which f0 is just as common, f1 and f2 become the concept's features
    background = np.array([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    df = A.features_for_concept(concept, background, n=3)
    assert df.feature.tolist() == [1, 2]
    assert df.score.tolist() == pytest.approx([1.0, 0.125])
    with pytest.raises(ValueError):
        A.features_for_concept(concept, np.zeros((2, 4)))


def test_category_common_features():
    df = A.category_common_features(POOLED, CATS, n=2)
    assert df[df.category == "a"].feature.tolist() == [2, 0]
    assert df[df.category == "b"].feature.tolist() == [4, 0]
    assert df[df.category == "c"].feature.tolist() == [0, 2]


def test_coactivation_is_jaccard():
    acts = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 0]], dtype=float)
    jac = A.coactivation(acts, [0, 1, 2])
    assert jac.loc[0, 1] == pytest.approx(2 / 4)
    assert jac.loc[1, 2] == pytest.approx(1 / 3)
    assert jac.loc[0, 2] == 0
    assert np.allclose(np.diag(jac), 1) and np.allclose(jac.values, jac.values.T)


def _enc():
    acts = [torch.tensor([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 5.0]])]
    tokens = [["x", "y", "z"], ["u", "v"]]
    return E.Encoded(["xyz", "uv"], tokens, acts, torch.stack([a.max(0).values for a in acts]),
                     torch.stack([a.mean(0) for a in acts]))


def test_top_activating_finds_text_and_token():
    df = A.top_activating(_enc(), 0, n=5)
    assert df.text.tolist() == [0, 1]
    assert df.token.tolist() == ["y", "u"] and df.position.tolist() == [1, 0]
    assert A.top_activating(_enc(), 1, n=1).text.tolist() == [1]


def test_massive_tokens_and_mask_tokens():
    acts = [torch.tensor([[100.0, 0.0], [1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]
    masks = massive_tokens(acts, factor=5.0)
    assert [m.tolist() for m in masks] == [[True, False, False], [False, False]]
    enc = E.mask_tokens(_enc(), masks)
    assert enc.tokens == [["x", "y", "z"], ["u", "v"]]  # positions unchanged
    assert enc.acts[0][0].tolist() == [0.0, 0.0] and enc.acts[0][1].tolist() == [3.0, 0.0]
    # the masked token (which alone carried feature 1 in text 0) is out of the max and the mean
    assert enc.max[0].tolist() == [3.0, 0.0] and enc.mean[0].tolist() == [2.0, 0.0]
    assert enc.max[1].tolist() == [2.0, 5.0]
    assert _enc().acts[0][0].tolist() == [0.0, 1.0]  # the input is not modified
    with pytest.raises(ValueError):
        E.mask_tokens(_enc(), masks[:1])
    with pytest.raises(ValueError):
        E.mask_tokens(_enc(), [torch.zeros(2, dtype=torch.bool), masks[1]])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="matrix"):
        A.feature_frequency(np.zeros(3))
    with pytest.raises(ValueError):
        A.strongest_features(np.zeros((0, 3)))


def test_token_highlights_html():
    html = plots.token_highlights([("text 1", ["a<", "\nb"], [0.0, 2.0])], caption="feature 7").data
    assert "a&lt;" in html and "<script" not in html
    assert "rgba(230, 97, 0, 1.00)" in html and "rgba(230, 97, 0, 0.00)" in html
    assert "\u21b5\nb" in html and "feature 7" in html
    with pytest.raises(ValueError):
        plots.token_highlights([("t", ["a"], [1.0, 2.0])])


def test_html_table_links_and_plain_ints():
    df = pd.DataFrame({"feature": [3, 12], "act": [0.5, 1.25]})
    html = plots.html_table(df, links={"feature": ["u/3.html", "u/12.html"]}).data
    assert '<a href="u/3.html">3</a>' in html and "<td>1.25</td>" in html
    with pytest.raises(ValueError):
        plots.html_table(df, links={"nope": ["x", "y"]})


def test_grouped_bar():
    fig = plots.grouped_bar(["a", "b"], {"f1": [1, 2], "f2": [3, 4]})
    assert len(fig.data) == 2 and fig.layout.barmode == "group"


def test_feature_examples_shows_top_texts_first():
    html = plots.feature_examples(_enc(), 0, n=5, labels=["first", "second"], url="f/0.html").data
    assert html.index("first") < html.index("second")
    assert '<a href="f/0.html">feature 0</a>' in html
    assert "max 3.00 on &#x27;y&#x27;" in html
    empty = plots.feature_examples(_enc(), 1, n=1).data
    assert "second" not in empty and "text 1" in empty


def test_binned_histogram_stores_bins_not_values():
    values = torch.cat([torch.zeros(10_000), torch.linspace(1, 2, 100)])
    fig = plots.binned_histogram(values, nbins=10, log_y=True)
    assert len(fig.data[0].y) == 10 and sum(fig.data[0].y) == 10_100
    assert fig.data[0].y[0] == 10_000
    assert fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError):
        plots.binned_histogram([])


class _FakeTokenizer:
    """Offsets as a byte-level BPE gives them: the two pieces of 'é' share its span."""

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        assert text == "café!"
        return {"offset_mapping": [(0, 3), (3, 4), (3, 4), (4, 5)]}


class _TrimmedTokenizer:
    """Offsets that leave the spaces out (trim_offsets), as some tokenizers give them."""

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        assert text == "a cat sat"
        return {"offset_mapping": [(0, 1), (2, 5), (6, 9)]}


def test_readable_tokens_show_a_split_character_once():
    assert readable_tokens(_FakeTokenizer(), "café!") == ["caf", "", "é", "!"]
    assert readable_tokens(_TrimmedTokenizer(), "a cat sat") == ["a", " cat", " sat"]
    enc = E.Encoded(["café!"], [["caf", "\ufffd", "\ufffd", "!"]], [torch.tensor([[0.0], [0.0], [2.0], [1.0]])],
                    torch.tensor([[2.0]]), torch.tensor([[0.75]]))
    enc = E.with_readable_tokens(enc, _FakeTokenizer())
    assert enc.tokens == [["caf", "", "é", "!"]]
    # the peak is on the second piece of "é": reported as "é", and shown once with the group's max
    assert A.top_activating(enc, 0).token.tolist() == ["é"]
    assert A.feature_peaks(enc, [0], [0]).to_dict("records") == [
        {"feature": 0, "text": 0, "position": 2, "token": "é", "activation": 2.0}]
    html = plots.feature_examples(enc, 0).data
    assert ">é</span>" in html and "rgba(230, 97, 0, 1.00)" in html and "\ufffd" not in html


HOOK = "blocks.1.hook_resid_pre"
TEXTS = ["the cat sat on the mat", "hello", "def x ( y ) : return y + 1", "a dog"]


def test_hook_activations_batched_equals_one_text_at_a_time(tiny_gpt2):
    acts = E.hook_activations(tiny_gpt2, HOOK, TEXTS, batch_size=3)  # mixed lengths in a batch
    with_bos = E.hook_activations(tiny_gpt2, HOOK, TEXTS, drop_bos=False, batch_size=1)
    for text, a, b in zip(TEXTS, acts, with_bos):
        toks = tiny_gpt2.to_tokens(text)
        _, cache = tiny_gpt2.run_with_cache(toks, names_filter=HOOK)
        ref = cache[HOOK][0]
        assert a.shape == (toks.shape[1] - 1, 32) and b.shape == (toks.shape[1], 32)
        torch.testing.assert_close(a, ref[1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b, ref, atol=1e-5, rtol=1e-5)


def test_encode_activations_matches_encode_texts(tiny_gpt2):
    from .conftest import make_sae

    sae = make_sae(32, 64, HOOK, k=3)
    ref = E.encode_texts(tiny_gpt2, sae, TEXTS)
    tokens = E.text_tokens(tiny_gpt2, TEXTS)
    assert [len(t) for t in tokens] == [len(t) for t in ref.tokens]
    enc = E.encode_activations(sae, E.hook_activations(tiny_gpt2, HOOK, TEXTS), tokens, TEXTS)
    for a, b in zip(enc.acts, ref.acts):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.max, ref.max, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc.mean, ref.mean, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        E.encode_activations(sae, E.hook_activations(tiny_gpt2, HOOK, TEXTS), [t[:-1] for t in tokens], TEXTS)


def test_encode_texts_batched_equals_one_text_at_a_time(tiny_gpt2):
    """Texts of mixed lengths in one padded batch give each text what it gets alone, in the
    order given (the batches are grouped by length, not by position)."""
    from .conftest import make_sae

    sae = make_sae(32, 64, HOOK, k=3)
    alone = E.encode_texts(tiny_gpt2, sae, TEXTS, batch_size=1)
    together = E.encode_texts(tiny_gpt2, sae, TEXTS, batch_size=3)
    assert together.tokens == alone.tokens and together.texts == alone.texts
    for a, b in zip(together.acts, alone.acts):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.max, alone.max, atol=1e-5, rtol=1e-5)


def test_distinct_common_features():
    assert A.distinct_common_features(POOLED, CATS, n=1) == A.category_common_features(POOLED, CATS, n=1).feature.nunique()


def test_pair_counts_and_jaccard_against_independence():
    # text 0: features 0 and 1 on the same two of four tokens; text 1: on different tokens
    acts = [
        torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    ]
    counts = A.pair_counts(acts, [0, 1])
    assert counts.shape == (2, 1, 3)
    np.testing.assert_allclose(counts[:, 0], [[2, 2, 1.0], [0, 2, 0.5]])
    assert A.jaccard_of_counts(counts) == pytest.approx(2 / 4)
    # independence: 1.5 expected together, union 6 - 1.5
    assert A.jaccard_of_counts(counts, independent=True) == pytest.approx(1.5 / 4.5)
    # agrees with coactivation over all tokens
    jac = A.coactivation(torch.cat(acts), [0, 1, 2])
    assert A.jaccard_of_counts(A.pair_counts(acts, [0, 1, 2])) == pytest.approx(
        jac.to_numpy()[np.triu_indices(3, 1)].mean())


def test_concept_null_planted_concept_beats_random_texts():
    rng = np.random.default_rng(0)
    background = rng.exponential(size=(70, 50)) * (rng.random((70, 50)) < 0.3)
    concept = rng.exponential(size=(5, 50)) * (rng.random((5, 50)) < 0.3)
    assert A.concept_null(concept, background).p_value > 0.05
    concept[:, 7] = 4.0  # a feature of the concept: strong on every example, rare elsewhere
    background[:, 7] = 0.0
    null = A.concept_null(concept, background)
    assert null.observed == pytest.approx(A.features_for_concept(concept, background, n=1).score.iloc[0])
    assert null.p_value < 0.01
