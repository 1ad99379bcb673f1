"""Automated interpretability: windows, prompts, scores (tiny GPT-2 and hand-made activations)."""

from __future__ import annotations

import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals import evidence
from interp_lib.features import autointerp as ai
from interp_lib.features import splitting

from .conftest import make_sae

HOOK = "blocks.1.hook_resid_pre"


def _dense(n_ctx=6, ctx_len=24):
    d = torch.zeros(n_ctx, ctx_len)
    d[0, 20] = 5.0
    d[2, 5] = 3.0
    d[2, 9] = 4.0  # context 2 peaks at 9
    d[4, 12] = 1.0
    return d


def test_top_and_spread_windows_follow_context_maxima():
    d = _dense()
    top = ai.top_windows(d, 2)
    assert [(w.ctx, w.pos, w.act) for w in top] == [(0, 20, 5.0), (2, 9, 4.0)]
    spread = ai.spread_windows(d, 3)  # only 3 contexts fire: all of them, strong to weak
    assert [w.ctx for w in spread] == [0, 2, 4]
    assert ai.spread_windows(d, 1)[0].ctx == 2  # the middle rank


def test_negative_windows_are_silent_and_distinct():
    d = _dense()
    neg = ai.negative_windows(d, 3, before=4, after=2, seed=1)
    assert len(neg) == 3 and len({w.ctx for w in neg}) == 3
    for w in neg:
        assert (d[w.ctx, max(1, w.pos - 4): w.pos + 3] == 0).all()
    assert neg == ai.negative_windows(d, 3, before=4, after=2, seed=1)  # seeded


def test_corpus_acts_round_trip(tiny_gpt2):
    from interp_lib.model.activations import harvest

    sae = make_sae(32, 64, HOOK, k=4)
    tokens = torch.randint(1, tiny_gpt2.cfg.d_vocab, (3, 10))
    tokens[:, 0] = 0
    acts = harvest(tiny_gpt2, [HOOK], tokens, progress=False)[HOOK].float()
    ca = ai.corpus_acts(sae, acts, tokens, massive_factor=1e9)
    assert ca.n_scored == 3 * 9 and ca.n_ctx == 3 and ca.ctx_len == 10
    feats = sae.encode(acts)
    f = int(feats.count_nonzero(0).argmax())
    dense = ca.dense(f)
    assert (dense[:, 0] == 0).all()
    torch.testing.assert_close(dense[:, 1:].reshape(-1), feats[:, f], atol=1e-5, rtol=1e-4)
    assert ca.density()[f] == pytest.approx((feats[:, f] > 0).float().mean().item())
    assert ca.n_contexts()[f] == int((dense > 0).any(1).sum())
    with pytest.raises(ValueError, match="position 0 left out"):
        ai.corpus_acts(sae, acts[:-1], tokens)


def test_select_features_is_seeded_and_checks_supply():
    density = torch.tensor([0.0, 0.002, 0.005, 0.5, 0.003, 0.004])
    n_ctx = torch.tensor([0, 20, 20, 20, 1, 20])
    picked = ai.select_features(density, n_ctx, band=(1e-3, 1e-2), min_contexts=10, n=2, seed=3)
    assert set(picked) <= {1, 2, 5} and len(picked) == 2
    assert picked == ai.select_features(density, n_ctx, band=(1e-3, 1e-2), min_contexts=10, n=2, seed=3)
    with pytest.raises(InvalidArgumentError, match="only 3 features are eligible"):
        ai.select_features(density, n_ctx, band=(1e-3, 1e-2), min_contexts=10, n=4)


def test_widen_band_keeps_a_band_that_suffices_and_widens_one_that_does_not():
    density = torch.tensor([0.0, 0.002, 0.005, 0.5, 0.003, 0.004, 0.03])
    n_ctx = torch.tensor([0, 20, 20, 20, 1, 20, 20])
    band = (1e-3, 1e-2)
    assert ai.widen_band(density, n_ctx, band=band, min_contexts=10, n=3) == band
    # 4 wanted: 0.03 joins once the upper bound reaches 0.04 (two doublings); 0.5 stays out
    wider = ai.widen_band(density, n_ctx, band=band, min_contexts=10, n=4)
    assert wider == pytest.approx((2.5e-4, 4e-2))
    assert len(ai.select_features(density, n_ctx, band=wider, min_contexts=10, n=4)) == 4
    # 5 wanted: the feature at 0.5 joins; 6 can never be had (feature 4 is in one context)
    assert len(ai.select_features(
        density, n_ctx, band=ai.widen_band(density, n_ctx, band=band, min_contexts=10, n=5),
        min_contexts=10, n=5)) == 5
    with pytest.raises(InvalidArgumentError, match="only 5 features fire"):
        ai.widen_band(density, n_ctx, band=band, min_contexts=10, n=6)
    with pytest.raises(InvalidArgumentError, match="band"):
        ai.widen_band(density, n_ctx, band=(0.1, 0.01), min_contexts=10, n=1)


def test_window_text_marks_the_centre_and_never_shows_bos(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    tokens = tiny_gpt2.to_tokens("the cat sat on the mat", prepend_bos=True)
    w = ai.Window(0, 2, 1.0)  # centre: "cat"
    text = ai.window_text(tok, tokens, w, before=5, after=1)
    assert "<<" in text and "cat>>" in text and "<|endoftext|>" not in text
    assert "<<" not in ai.window_text(tok, tokens, w, mark=False)


def test_token_explanation_names_the_most_common_centre(tiny_gpt2):
    tokens = tiny_gpt2.to_tokens("the cat sat on the cat mat", prepend_bos=True)
    windows = [ai.Window(0, 2, 1.0), ai.Window(0, 6, 1.0), ai.Window(0, 3, 1.0)]  # cat, cat, sat
    assert ai.token_explanation(tiny_gpt2.tokenizer, tokens, windows) == 'The marked tokens are the token "cat".'
    with pytest.raises(ValueError):
        ai.token_explanation(tiny_gpt2.tokenizer, tokens, [])


def test_auroc_and_derangement():
    assert evidence.auroc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert evidence.auroc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert evidence.auroc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5  # ties count half
    assert evidence.auroc([2, 0, 1, 3], [1, 0, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="positive and one negative"):
        evidence.auroc([1, 2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        evidence.auroc([1, 2, 3], [1, 0])
    perm = ai.derangement(5)
    assert sorted(perm) == list(range(5)) and all(p != i for i, p in enumerate(perm))
    with pytest.raises(ValueError):
        ai.derangement(1)


def test_detection_scores_batching_matches_one_by_one(tiny_gpt2):
    texts = ["the cat", "the dog sat on the mat", "hello world", "x = 1 + 2", "print ( y )"]
    answers = ("cat", "dog")  # single tokens of the tiny vocabulary
    batched = ai.detection_scores(tiny_gpt2, "the cat", texts, batch_size=2, answers=answers)
    single = torch.cat([ai.detection_scores(tiny_gpt2, "the cat", [t], answers=answers) for t in texts])
    assert batched.shape == (5,)
    tok = tiny_gpt2.tokenizer
    cat, dog = ai.answer_ids(tok, answers)
    for i, text in enumerate(texts):  # the shared prefix, run once, changes no score
        ids = torch.tensor([ai._ids(tok, ai.detection_prompt(tok, "the cat", text))])
        full = tiny_gpt2(ids)[0, -1]
        assert batched[i].item() == pytest.approx((full[cat] - full[dog]).item(), abs=1e-4)
    assert ai._common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert ai._common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # the last token is always left
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)
    per_text = ai.detection_scores(tiny_gpt2, ["the cat"] * 5, texts, answers=answers)
    torch.testing.assert_close(per_text, single, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="2 explanations for 5 texts"):
        ai.detection_scores(tiny_gpt2, ["a", "b"], texts, answers=answers)
    with pytest.raises(ValueError, match="not one"):
        ai.answer_ids(tiny_gpt2.tokenizer, ("the cat", "dog"))


def test_generate_greedy_batched_equals_one_prompt_at_a_time(tiny_gpt2):
    tok = tiny_gpt2.tokenizer
    texts = ["the cat sat", "def x ( ) : return y + 1 2", "hello", "import a , the dog sat on the mat"]
    prompts = [tok(t)["input_ids"] for t in texts]
    assert len({len(p) for p in prompts}) == len(prompts)  # padding is exercised
    batched = ai.generate_greedy(tiny_gpt2, prompts, max_new_tokens=8)
    alone = []
    for p in prompts:  # the reference: TransformerLens's generate on the unpadded prompt
        gen = tiny_gpt2.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False,
                                 verbose=False, return_type="tokens")[0, len(p):].tolist()
        alone.append(gen[: gen.index(0)] if 0 in gen else gen)
    assert batched == alone
    assert any(len(a) == 8 for a in alone)  # something was generated to compare
    assert ai.generate_greedy(tiny_gpt2, prompts, max_new_tokens=8, batch_size=3) == alone
    assert tok.padding_side == "right"  # restored


@pytest.mark.slow
def test_explain_many_equals_explain_one_at_a_time(smollm):
    examples = [["    def<< __init__>>(self):", "class Foo:\n    def<< __init__>>(self, x):"],
                ["x =<< 1>>", "y = x +<< 2>>", "return<< 3>> * x"],
                ["import<< os>>"]]
    assert ai.explain_many(smollm, examples, max_new_tokens=12) == [
        ai.explain(smollm, e, max_new_tokens=12) for e in examples]


@pytest.mark.slow
def test_explain_returns_one_line_after_the_prefix(smollm):
    examples = ["    def<< __init__>>(self):", "class Foo:\\n    def<< __init__>>(self, x):"]
    out = ai.explain(smollm, examples, max_new_tokens=12)
    assert out.startswith(ai.EXPLAIN_PREFIX) and len(out) > len(ai.EXPLAIN_PREFIX) and "\n" not in out


def test_top_token_and_names_token(tiny_gpt2):
    tokens = tiny_gpt2.to_tokens("the cat sat on the cat mat", prepend_bos=True)
    windows = [ai.Window(0, 2, 1.0), ai.Window(0, 6, 1.0), ai.Window(0, 3, 1.0)]  # cat, cat, sat
    word, share = ai.top_token(tiny_gpt2.tokenizer, tokens, windows)
    assert word == "cat" and share == pytest.approx(2 / 3)
    assert ai.names_token(f"{ai.EXPLAIN_PREFIX} words like Cat and dog.", "cat")
    assert not ai.names_token(f"{ai.EXPLAIN_PREFIX} animals.", "cat")
    assert not ai.names_token(ai.EXPLAIN_PREFIX, "marked")  # the given prefix does not count
    assert not ai.names_token(f"{ai.EXPLAIN_PREFIX} a category.", "cat")  # whole words
    assert ai.names_token(f"{ai.EXPLAIN_PREFIX} a colon (:) here.", ":")


def test_auroc_table_has_one_auroc_per_feature_and_explanation():
    import pandas as pd

    windows = pd.DataFrame({
        "feature": [7] * 8,
        "explanation": ["right"] * 4 + ["wrong"] * 4,
        "score": [3, 2, 1, 0, 0, 1, 2, 3],
        "fires": [True, True, False, False] * 2,
    })
    table = evidence.auroc_table(windows)
    assert table.loc[7, "right"] == 1.0 and table.loc[7, "wrong"] == 0.0


def _split_case():
    """Narrow feature 0 split by wide 0 and 1 (one at a time); narrow 1 copied by wide 2 and 3
    (together); narrow 2 has one child, wide 4."""
    narrow = torch.zeros(8, 3)
    narrow[:4, 0] = 1.0
    narrow[4:7, 1] = 1.0
    narrow[7, 2] = 1.0
    wide = torch.zeros(8, 5)
    wide[:2, 0] = 1.0
    wide[2:4, 1] = 1.0
    wide[4:7, 2] = 1.0
    wide[4:6, 3] = 1.0
    wide[7, 4] = 1.0
    parent = torch.tensor([0, 0, 1, 1, 2])
    corr = torch.tensor([0.7, 0.7, 0.9, 0.8, 0.95])
    return narrow, wide, parent, corr, torch.ones(5, dtype=torch.bool)


def test_split_families_tell_a_split_from_copies():
    narrow, wide, parent, corr, is_child = _split_case()
    torch.testing.assert_close(splitting.children_firing(narrow, wide, 1, [2, 3]),
                               torch.tensor([2, 2, 1]))
    fam = splitting.split_families(narrow, wide, parent, is_child).set_index("parent")
    assert list(fam.index) == [0, 1]  # narrow 2 has a single child: not a family
    assert fam.loc[0, "coverage"] == 1.0 and fam.loc[0, "children firing at once"] == 1.0
    assert fam.loc[1, "children firing at once"] == pytest.approx(5 / 3)
    assert fam.loc[1, "parent fires on"] == 3
    empty = splitting.split_families(narrow, wide, parent, torch.zeros(5, dtype=torch.bool))
    assert empty.empty and list(empty.columns) == splitting.FAMILY_COLUMNS


def test_family_table_lists_the_parent_then_its_children():
    narrow, wide, parent, corr, is_child = _split_case()
    strings = [" a", " b", " c", " d", " e", " e", " f", " g"]
    table = splitting.family_table(1, narrow, wide, parent, corr, is_child, strings)
    assert list(table.feature) == ["narrow 1 (parent)", "wide 2", "wide 3"]
    assert table.loc[1, "correlation with parent"] == pytest.approx(0.9)
    assert table.loc[0, "most frequent tokens"] == "'e' 2, 'f' 1"
    assert splitting.top_tokens(wide[:, 3], strings) == "'e' 2"


def test_detection_scores_lean_equal_transformer_lens(smollm, monkeypatch):
    """On the embedded Llama model the scores come from the lean forward's continuations of the
    shared prompt start: TransformerLens's scores with a key-value cache, within fp32 rounding."""
    from interp_lib.model import fast_forward as FF

    texts = ["The dog barked at the cat.", "Interest rates rose again in March.", "A cat slept."]
    expl = ["mentions of animals", "mentions of animals", "money and finance"]
    want = ai.detection_scores(smollm, expl, texts, batch_size=2, engine="transformer_lens")
    used = []
    monkeypatch.setattr(ai, "fast_forward_for", lambda m: used.append(m) or FF.fast_forward_for(m))
    got = ai.detection_scores(smollm, expl, texts, batch_size=2)
    assert used, "the lean path was taken"
    assert torch.allclose(got, want, atol=2e-3, rtol=0), (got, want)
    assert want.abs().max() > 0.1  # real scores, not zeros
    with pytest.raises(InvalidArgumentError, match="'auto' or 'transformer_lens'"):
        ai.detection_scores(smollm, expl, texts, engine="lean")
