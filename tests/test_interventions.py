"""Tests for the interventions: steering, ablation, attribution and the logit lens.

Modules interp_lib.interventions.steering, .attribution and .logit_lens, with the shared input checks of
interp_lib.interventions.checks.

Fast tests use the tiny GPT-2 fixture and SAEs whose outcome is known; one slow test steers the
real SmolLM2 with a real SAE.
"""

from __future__ import annotations

import pytest
import torch

from interp_lib.interventions import attribution, logit_lens, steering
from interp_lib.interventions import checks as interventions
from interp_lib.model.hooks import sae_hook

from .conftest import make_sae

HOOK = "blocks.1.hook_resid_pre"
LINEAR_HOOK = "ln_final.hook_normalized"  # after the final norm: the path to the logits is linear
TEXT = "the cat sat on the mat . the dog sat on the mat"


@pytest.fixture(scope="module")
def sae(tiny_gpt2):
    return make_sae(tiny_gpt2.cfg.d_model, 64, HOOK, k=None, seed=1)


def relu_sae(model, hook: str, *, seed: int = 0, dead: int | None = None):
    """A random ReLU SAE; ``dead`` gets a large negative bias so it never fires."""
    s = make_sae(model.cfg.d_model, 48, hook, k=None, seed=seed)
    with torch.no_grad():
        s.W_enc.mul_(3.0)
        s.b_enc.fill_(0.05)
        if dead is not None:
            s.b_enc[dead] = -1e4
    return s


def test_strength_zero_changes_nothing(tiny_gpt2, sae):
    tokens = tiny_gpt2.to_tokens(TEXT)
    clean = tiny_gpt2(tokens)
    with steering.steering(tiny_gpt2, sae, 3, 0.0):
        steered = tiny_gpt2(tokens)
    assert torch.equal(clean, steered)
    assert steering.generate_steered(tiny_gpt2, sae, 3, 0.0, "the cat", max_new_tokens=6) == \
        steering.generate(tiny_gpt2, "the cat", max_new_tokens=6, seed=0, temperature=0.0)


def test_steering_adds_exact_vector_from_position_1(tiny_gpt2, sae):
    tokens = tiny_gpt2.to_tokens(TEXT)
    _, clean = tiny_gpt2.run_with_cache(tokens, names_filter=HOOK)
    with tiny_gpt2.hooks(fwd_hooks=steering.steering_hooks(tiny_gpt2, sae, 5, 2.5)):
        _, steered = tiny_gpt2.run_with_cache(tokens, names_filter=HOOK)  # cached after the steering hook
    diff = steered[HOOK] - clean[HOOK]
    direction = sae.W_dec[5].detach() / sae.W_dec[5].detach().norm()
    assert torch.equal(diff[:, 0], torch.zeros_like(diff[:, 0]))  # BOS never steered
    torch.testing.assert_close(diff[0, 1:], (2.5 * direction).expand_as(diff[0, 1:]), atol=1e-5, rtol=0)
    # ref_norm: strength becomes a multiple of it
    torch.testing.assert_close(steering.steering_vector(sae, 5, 0.5, ref_norm=4.0), 2.0 * direction, atol=1e-6, rtol=0)


def test_steered_generation_same_with_and_without_kv_cache(tiny_gpt2, sae):
    plain = steering.generate_steered(tiny_gpt2, sae, 7, 0.0, "the cat", max_new_tokens=8)
    cached = steering.generate_steered(tiny_gpt2, sae, 7, 40.0, "the cat", max_new_tokens=8)
    uncached = steering.generate_steered(tiny_gpt2, sae, 7, 40.0, "the cat", max_new_tokens=8, use_past_kv_cache=False)
    assert cached == uncached  # every new token is steered under the cache too, BOS never
    assert cached != plain


def test_steering_before_first_attention_refuses_kv_cache(tiny_gpt2):
    early = make_sae(tiny_gpt2.cfg.d_model, 16, "blocks.0.hook_resid_pre", k=None)
    with pytest.raises(RuntimeError, match="use_past_kv_cache=False"):
        steering.generate_steered(tiny_gpt2, early, 0, 5.0, "the cat", max_new_tokens=3)
    assert isinstance(steering.generate_steered(tiny_gpt2, early, 0, 5.0, "the cat", max_new_tokens=3, use_past_kv_cache=False), str)


def test_ablating_nothing_is_the_identity(tiny_gpt2, sae):
    tokens = tiny_gpt2.to_tokens([TEXT, TEXT.replace("cat", "dog")])
    res = attribution.ablate_features(tiny_gpt2, sae, [], tokens, target_tokens=["mat"])
    torch.testing.assert_close(res.loss_after, res.loss_before, atol=1e-5, rtol=0)
    assert res.loss_before.shape == (2, tokens.shape[1] - 1)
    assert res.logit_change.abs().max() < 1e-5


def test_ablating_a_silent_feature_changes_nothing(tiny_gpt2):
    s = relu_sae(tiny_gpt2, HOOK, dead=11)
    tokens = tiny_gpt2.to_tokens(TEXT)
    res = attribution.ablate_features(tiny_gpt2, s, 11, tokens)
    assert res.acts.abs().max() == 0
    torch.testing.assert_close(res.loss_after, res.loss_before, atol=1e-5, rtol=0)
    mean = attribution.ablate_features(tiny_gpt2, s, 11, tokens, mode="mean", mean_acts=torch.zeros(5, 48))
    torch.testing.assert_close(mean.loss_after, mean.loss_before, atol=1e-5, rtol=0)


def test_ablation_removes_exactly_the_feature_contribution(tiny_gpt2):
    s = relu_sae(tiny_gpt2, HOOK)
    tokens = tiny_gpt2.to_tokens(TEXT)
    _, cache = tiny_gpt2.run_with_cache(tokens, names_filter=HOOK)
    acts = s.encode(cache[HOOK][:, 1:]).detach()
    f = int(acts[0].sum(0).argmax())
    assert acts[0, :, f].abs().sum() > 0
    means = torch.full((48,), 0.3)

    for mode, target in (("zero", 0.0), ("mean", 0.3)):
        def manual(act, hook, target=target):
            out = act.clone()
            out[:, 1:] += (target - acts[..., f : f + 1]) * s.W_dec[f].detach()
            return out

        want = tiny_gpt2.run_with_hooks(tokens, fwd_hooks=[(HOOK, manual)])
        res = attribution.ablate_features(tiny_gpt2, s, f, tokens, mode=mode, mean_acts=means if mode == "mean" else None,
                                 target_tokens=["mat", "dog"])
        ids = [interventions.token_id(tiny_gpt2, "mat"), interventions.token_id(tiny_gpt2, "dog")]
        torch.testing.assert_close(res.logits_after, want[..., ids].detach(), atol=1e-4, rtol=0)
        assert res.mean_loss_change != 0
    with pytest.raises(ValueError, match="mean_acts"):
        attribution.ablate_features(tiny_gpt2, s, f, tokens, mode="mean")
    with pytest.raises(ValueError, match="48"):
        attribution.ablate_features(tiny_gpt2, s, f, tokens, mode="mean", mean_acts=torch.zeros(47))


def test_ablation_at_chosen_positions_and_mean_from_activations(tiny_gpt2):
    s = relu_sae(tiny_gpt2, HOOK, seed=5)
    tokens = tiny_gpt2.to_tokens(TEXT)
    res = attribution.ablate_features(tiny_gpt2, s, list(range(48)), tokens, positions=[6], target_tokens=["mat"])
    change = res.logit_change[0, :, 0].abs()
    assert change[:6].max() < 1e-5 and change[6] > 1e-4  # causal: only positions >= 6 move
    means = attribution.mean_feature_acts(tiny_gpt2, s, tokens)
    assert means.shape == (48,) and (means >= 0).all()
    by_rows = attribution.ablate_features(tiny_gpt2, s, [0, 1], tokens, mode="mean", mean_acts=means[None].repeat(3, 1))
    by_mean = attribution.ablate_features(tiny_gpt2, s, [0, 1], tokens, mode="mean", mean_acts=means)
    torch.testing.assert_close(by_rows.loss_after, by_mean.loss_after)
    with pytest.raises(ValueError, match="positions"):
        attribution.ablate_features(tiny_gpt2, s, 0, tokens, positions=[0])


def test_attribution_on_linear_path_matches_ablation(tiny_gpt2):
    s = relu_sae(tiny_gpt2, LINEAR_HOOK, seed=3)
    df = attribution.verify_attribution(tiny_gpt2, s, TEXT, "mat", baseline_token="dog", position=-2, n=6)
    assert len(df) == 6 and (df["attribution"].abs().diff().dropna() <= 1e-6).all()
    assert df["actual_change"].to_numpy() == pytest.approx(df["predicted_change"].to_numpy(), abs=1e-4, rel=1e-4)
    together = df.attrs["together"]
    assert together["actual_change"] == pytest.approx(together["predicted_change"], abs=1e-4)
    # the splice keeps the forward pass: the recorded metric is the clean one
    logits = tiny_gpt2(tiny_gpt2.to_tokens(TEXT))[0, -2]
    mat, dog = interventions.token_id(tiny_gpt2, "mat"), interventions.token_id(tiny_gpt2, "dog")
    clean = (logits[mat] - logits[dog]).item()
    assert df.attrs["metric"] == pytest.approx(clean, abs=1e-4)


def test_attribution_through_the_model_is_a_first_order_estimate(tiny_gpt2):
    s = relu_sae(tiny_gpt2, HOOK, seed=4)
    df = attribution.attribute_features(tiny_gpt2, s, TEXT, "mat")
    assert set(df.columns) >= {"feature", "attribution", "attribution_at_position", "activation"}
    assert (df["max_activation"] > 0).all()
    # scaling a feature by (1 - eps) changes the metric by about -eps * attribution
    f, attr = int(df.loc[0, "feature"]), float(df.loc[0, "attribution"])
    tokens = tiny_gpt2.to_tokens(TEXT)
    mat = interventions.token_id(tiny_gpt2, "mat")
    eps = 1e-3

    def shrink(act, hook):
        feats = s.encode(act[:, 1:])
        delta = -eps * feats[..., f : f + 1] * s.W_dec[f]
        return torch.cat([act[:, :1], act[:, 1:] + delta], dim=1)

    with torch.no_grad():
        base = tiny_gpt2(tokens)[0, -1, mat].item()
        moved = tiny_gpt2.run_with_hooks(tokens, fwd_hooks=[(HOOK, shrink)])[0, -1, mat].item()
    assert (moved - base) == pytest.approx(-eps * attr, rel=0.05, abs=1e-6)


def test_logit_lens_is_the_decoder_row_times_unembedding(tiny_gpt2):
    s = make_sae(tiny_gpt2.cfg.d_model, 8, HOOK, k=None, seed=2)
    with torch.no_grad():
        s.W_dec.sub_(s.W_dec.mean(-1, keepdim=True))  # zero-mean rows: LayerNorm's centring is a no-op
    lens = logit_lens.feature_logit_lens(tiny_gpt2, s, 4, k=5)
    raw = s.W_dec[4].detach() @ tiny_gpt2.W_U.detach()
    top = raw.topk(5)
    assert [t for t, _ in lens.promoted] == tiny_gpt2.to_str_tokens(top.indices)
    assert [v for _, v in lens.promoted] == pytest.approx(top.values.tolist(), abs=1e-5)
    bottom = (-raw).topk(5)
    assert [t for t, _ in lens.suppressed] == tiny_gpt2.to_str_tokens(bottom.indices)
    promoted, suppressed = lens  # unpacks as a pair
    assert promoted[0][1] >= promoted[-1][1] and suppressed[0][1] <= suppressed[-1][1]


def test_features_for_tokens_finds_the_feature_that_writes_the_token(tiny_gpt2):
    s = make_sae(tiny_gpt2.cfg.d_model, 8, HOOK, k=None, seed=6)
    mat = interventions.token_id(tiny_gpt2, "mat")
    with torch.no_grad():
        s.W_dec[5] = tiny_gpt2.W_U[:, mat] - tiny_gpt2.W_U[:, mat].mean()  # the direction that says "mat"
    df = logit_lens.features_for_tokens(tiny_gpt2, s, ["mat"], top=3)
    assert df.loc[0, "feature"] == 5 and df.loc[0, "rank"] == 0
    assert logit_lens.feature_logit_lens(tiny_gpt2, s, 5, k=1).promoted[0][0] == "mat"


def test_bad_inputs_raise(tiny_gpt2, sae):
    for bad in (64, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"0\.\.63"):
            steering.steering_vector(sae, bad, 1.0)
    with pytest.raises(ValueError, match=r"feature 64 is out of range.*64 features"):
        logit_lens.feature_logit_lens(tiny_gpt2, sae, 64)
    with pytest.raises(ValueError, match=r"0\.\.63"):
        attribution.ablate_features(tiny_gpt2, sae, [1, 99], TEXT)
    with pytest.raises(ValueError, match=r"0\.\.63"):
        steering.generate_steered(tiny_gpt2, sae, 100, 1.0, "the cat")
    wide = make_sae(16, 32, HOOK, k=None)
    for call in (lambda: steering.steering_hooks(tiny_gpt2, wide, 0, 1.0),
                 lambda: attribution.ablate_features(tiny_gpt2, wide, 0, TEXT),
                 lambda: attribution.attribute_features(tiny_gpt2, wide, TEXT, "mat"),
                 lambda: logit_lens.feature_logit_lens(tiny_gpt2, wide, 0)):
        with pytest.raises(ValueError, match=r"d_in=16.*32"):
            call()
    with pytest.raises(ValueError, match="not one"):
        attribution.attribute_features(tiny_gpt2, sae, TEXT, "mat dog")
    with pytest.raises(ValueError, match="position 0 is BOS"):
        attribution.attribute_features(tiny_gpt2, sae, TEXT, "mat", position=0)
    with pytest.raises(ValueError, match="out of range"):
        interventions.token_id(tiny_gpt2, 10**6)
    with pytest.raises(ValueError, match="strength"):
        steering.steering_vector(sae, 0, float("nan"))
    with pytest.raises(ValueError, match="mode"):
        attribution.ablate_features(tiny_gpt2, sae, 0, TEXT, mode="resample")


@pytest.mark.slow
def test_steering_the_real_model_raises_the_concept(smollm):
    """A real SAE: a feature whose logit lens promotes a word raises that word's probability
    through the whole model and changes the text, at a bounded cost in fluency."""
    torch.set_num_threads(1)
    from interp_lib import load_sae

    try:
        sae = load_sae("smollm2-135m-res", "blocks.15.hook_resid_pre")
    except FileNotFoundError:
        pytest.skip("the zoo SAE smollm2-135m-res/blocks.15.hook_resid_pre is not trained into this checkout yet")
    # the first of these words that a feature's logit lens promotes (top 10) is the concept
    # (chapter 5 picks it by its own rule); the lens reads the direct path only, so the steering
    # below, through every later layer, is a real test of the choice
    def promotes(feature, word):
        promoted, _ = logit_lens.feature_logit_lens(smollm, sae, feature, k=10)
        return any(t.strip().lower() == word for t, _ in promoted)

    spellings = {w: [f" {w}", f" {w}s", f" {w.capitalize()}"] for w in ["problem", "thing", "matter"]}
    found = next(((spellings[w], int(f)) for w in spellings
                  for f in logit_lens.features_for_tokens(smollm, sae, spellings[w], top=5)["feature"]
                  if promotes(int(f), w)), None)
    assert found, "no feature of the shipped layer-15 SAE promotes problem, thing or matter"
    concept, feature = found
    # strength 1 (one typical activation norm) raises the word by orders of magnitude
    hook = sae_hook(sae)
    ref = steering.typical_norm(smollm, sae, steering.NEUTRAL_TEXTS[:2])
    vectors = {"none": torch.zeros(smollm.cfg.d_model),
               "feature +1": steering.steering_vector(sae, feature, 1.0, ref_norm=ref)}
    prompts = ["Yesterday we talked about", "I went to the"]
    probs = steering.concept_probability(smollm, hook, vectors, prompts, concept).mean()
    assert probs["feature +1"] > 10 * probs["none"], (concept, feature)
    plain = steering.generate(smollm, prompts[0], max_new_tokens=10)
    steered = steering.generate_steered(smollm, sae, feature, 1.0, prompts[0], max_new_tokens=10,
                                        ref_norm=ref)
    assert steered != plain
    # steering costs some fluency, not all of it (about 3 nats for "thing" at strength 1)
    loss = steering.text_loss(smollm, hook, vectors, steering.NEUTRAL_TEXTS[:2]).mean()
    assert 0 < loss["feature +1"] - loss["none"] < 3


def test_add_at_positions_takes_one_vector_per_row(tiny_gpt2, sae):
    tokens = tiny_gpt2.to_tokens([TEXT, TEXT])
    _, clean = tiny_gpt2.run_with_cache(tokens, names_filter=HOOK)
    vecs = torch.stack([torch.zeros(tiny_gpt2.cfg.d_model), torch.arange(32.0)])
    with tiny_gpt2.hooks(fwd_hooks=steering.add_at_positions(HOOK, vecs)):
        _, steered = tiny_gpt2.run_with_cache(tokens, names_filter=HOOK)
    diff = steered[HOOK] - clean[HOOK]
    assert diff[0].abs().max() == 0 and diff[1, 0].abs().max() == 0  # row 0 untouched, BOS too
    torch.testing.assert_close(diff[1, 1:], vecs[1].expand_as(diff[1, 1:]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected an activation"):
        with tiny_gpt2.hooks(fwd_hooks=steering.add_at_positions(HOOK, vecs[:1].repeat(3, 1))):
            tiny_gpt2(tokens)


def test_conditions_in_one_batch_match_one_at_a_time(tiny_gpt2, sae):
    prompts = ["the cat", "the dog sat on", "a cat sat"]
    push = steering.steering_vector(sae, 7, 40.0)
    own = torch.randn(len(prompts), tiny_gpt2.cfg.d_model)  # one vector per prompt
    conds = {"none": torch.zeros_like(push), "push": push, "own": own}
    probs = steering.concept_probability(tiny_gpt2, HOOK, conds, prompts, ["mat", "dog"],
                                         batch_size=4)
    assert list(probs.columns) == ["none", "push", "own"] and list(probs.index) == prompts
    ids = [interventions.token_id(tiny_gpt2, t) for t in ["mat", "dog"]]
    for i, p in enumerate(prompts):
        for name, vec in (("none", push * 0), ("push", push), ("own", own[i])):
            with tiny_gpt2.hooks(fwd_hooks=steering.add_at_positions(HOOK, vec)):
                want = tiny_gpt2(tiny_gpt2.to_tokens(p))[0, -1].softmax(-1)[ids].sum()
            assert probs.loc[p, name] == pytest.approx(float(want.detach()), abs=1e-5)
    dists = steering.next_token_probs(tiny_gpt2, HOOK, conds, prompts, batch_size=2)
    assert dists.shape == (3, len(prompts), tiny_gpt2.cfg.d_vocab)
    for i, p in enumerate(prompts):
        with tiny_gpt2.hooks(fwd_hooks=steering.add_at_positions(HOOK, own[i])):
            want = tiny_gpt2(tiny_gpt2.to_tokens(p))[0, -1].softmax(-1)
        torch.testing.assert_close(dists[2, i], want.detach(), atol=1e-6, rtol=1e-4)
        for c, name in enumerate(conds):
            assert float(dists[c, i, ids].sum()) == pytest.approx(probs.loc[p, name], abs=1e-6)
    texts = [TEXT, "the cat sat", "hello world . print ( x )"]
    loss = steering.text_loss(tiny_gpt2, HOOK, {"none": push * 0, "push": push}, texts,
                              batch_size=4)
    for i, t in enumerate(texts):
        for name, vec in (("none", push * 0), ("push", push)):
            with tiny_gpt2.hooks(fwd_hooks=steering.add_at_positions(HOOK, vec)):
                want = tiny_gpt2(tiny_gpt2.to_tokens(t), return_type="loss",
                                 loss_per_token=True)[0, 1:].mean()
            assert loss.loc[i, name] == pytest.approx(float(want.detach()), abs=1e-5)


def test_steered_generations_greedy_is_generate_and_samples_share_seeds(tiny_gpt2, sae):
    prompts = ["the cat", "the dog sat on"]
    push = steering.steering_vector(sae, 7, 40.0)
    kw = dict(n_samples=3, max_new_tokens=6, concept_strings=["mat"], batch_size=5)
    both = steering.steered_generations(tiny_gpt2, HOOK, {"none": push * 0, "push": push},
                                        prompts, **kw)
    assert len(both) == 2 * 2 * 4 and list(both.columns) == [
        "condition", "prompt", "sample", "text", "mentions"]
    for p in prompts:
        greedy = both.query("sample == -1 and prompt == @p").set_index("condition").text
        assert greedy["none"] == steering.generate(tiny_gpt2, p, max_new_tokens=6)
        assert greedy["push"] == steering.generate_steered(tiny_gpt2, sae, 7, 40.0, p,
                                                           max_new_tokens=6)
    alone = steering.steered_generations(tiny_gpt2, HOOK, {"none": push * 0}, prompts, **kw)
    # the same seed per (prompt, sample) whatever else shares the batch: reproducible
    assert list(alone.text) == list(both.query("condition == 'none'").text)
    assert both.query("sample >= 0").text.nunique() > 2  # samples differ
    assert (both.mentions == both.text.str.lower().str.contains("mat")).all()


def test_attribution_agreement_runs_verify_on_each_prompt(tiny_gpt2):
    s = relu_sae(tiny_gpt2, LINEAR_HOOK, seed=3)
    prompts = [TEXT, "the dog sat on the", "hello world . print ("]
    df = attribution.attribution_agreement(tiny_gpt2, s, prompts, n=4)
    assert list(df.columns[:2]) == ["prompt", "target"] and len(df) == 12
    # on the linear path the estimate is exact, so the real ablations agree with it
    assert df["actual_change"].to_numpy() == pytest.approx(df["predicted_change"].to_numpy(), abs=1e-4)
    # the default target is the model's own top next token
    top = int(tiny_gpt2(tiny_gpt2.to_tokens(prompts[1]))[0, -1].argmax())
    assert df.query("prompt == @prompts[1]").target.iloc[0] == tiny_gpt2.to_str_tokens(torch.tensor([top]))[0]
    one = attribution.verify_attribution(tiny_gpt2, s, prompts[1], top, n=4)
    assert df.query("prompt == @prompts[1]").feature.tolist() == one.feature.tolist()
    together = df.attrs["together"]
    assert list(together.prompt) == prompts
    assert together.actual_change.to_numpy() == pytest.approx(together.predicted_change.to_numpy(), abs=1e-4)
    with pytest.raises(ValueError, match="targets"):
        attribution.attribution_agreement(tiny_gpt2, s, prompts, targets=["mat"])


def test_batched_verification_equals_one_ablation_at_a_time(tiny_gpt2):
    s = relu_sae(tiny_gpt2, HOOK, seed=4)  # through the model: not linear
    df = attribution.verify_attribution(tiny_gpt2, s, TEXT, "mat", n=4)
    for f, actual in zip(df.feature, df.actual_change):
        res = attribution.ablate_features(tiny_gpt2, s, int(f), TEXT, target_tokens=["mat"])
        assert actual == pytest.approx(float(res.logit_change[0, -1, 0]), abs=1e-4)
    both = attribution.ablate_features(tiny_gpt2, s, df.feature.tolist(), TEXT, target_tokens=["mat"])
    assert df.attrs["together"]["actual_change"] == pytest.approx(float(both.logit_change[0, -1, 0]), abs=1e-4)
