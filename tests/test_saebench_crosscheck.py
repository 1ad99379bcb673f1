"""interp_lib's SAEBench metrics against sae-bench's own code, where both can run on the same
numbers. sae-bench is not a dependency of the project (it pins numpy < 2 and pulls openai,
torchvision, ...): these tests skip unless its source and scikit-learn are importable, e.g.
``pip download sae-bench==0.6.0 --no-deps`` unpacked into a folder, ``pip install --target DIR
scikit-learn beartype jaxtyping einops``, and both folders appended to ``PYTHONPATH``."""
import pytest
import torch

from interp_lib.evals.absorption import absorption
from interp_lib.evals.saebench import sparse_probing, top_k_mean_diff

pytest.importorskip("sklearn")
pytest.importorskip("beartype")
pytest.importorskip("jaxtyping")
probe_training = pytest.importorskip("sae_bench.evals.sparse_probing.probe_training")
calculator_module = pytest.importorskip("sae_bench.evals.absorption.feature_absorption_calculator")


def _two_classes(n, seed):
    g = torch.Generator().manual_seed(seed)
    acts, lat = {}, {}
    for c, name in enumerate(["pos", "neg"]):
        acts[name] = torch.randn(n, 16, generator=g) + (c * 0.8) * torch.linspace(-1, 1, 16)
        lat[name] = (torch.randn(n, 64, generator=g) + c * 0.5 * (torch.arange(64) % 7 == 0)).relu()
    return acts, lat


def test_sparse_probing_equals_sae_bench():
    """Two classes of equal size: sae-bench's balanced one-vs-rest set is then the same rows as
    ours (in another order), so every accuracy must agree exactly."""
    tr_a, tr_l = _two_classes(200, 1)
    te_a, te_l = _two_classes(100, 2)
    ours = sparse_probing(tr_a, te_a, tr_l, te_l, k_values=(1, 2, 5))

    def theirs(tr, te, cls, k):  # sae-bench's steps one by one (its wrapper trips on jaxtyping)
        x, y = probe_training.prepare_probe_data(tr, cls)
        tx, ty = probe_training.prepare_probe_data(te, cls)
        if k is not None:
            mask = probe_training.get_top_k_mean_diff_mask(x, y, k)
            x = probe_training.apply_topk_mask_reduce_dim(x, mask)
            tx = probe_training.apply_topk_mask_reduce_dim(tx, mask)
        return probe_training.train_sklearn_probe(x, y, tx, ty)[1]

    for kind, tr, te in (("llm", tr_a, te_a), ("sae", tr_l, te_l)):
        for k in (None, 1, 2, 5):
            col = ("dense" if kind == "llm" else "sae") if k is None else f"{kind}_top_{k}"
            for cls in ("pos", "neg"):
                assert ours.per_class.loc[cls, col] == pytest.approx(theirs(tr, te, cls, k)), (col, cls)
    x = torch.cat([tr_l["pos"], tr_l["neg"]])
    y = torch.cat([torch.ones(200), torch.zeros(200)]).int()
    for k in (1, 2, 5, 10):
        mask = probe_training.get_top_k_mean_diff_mask(x, y, k)
        assert set((~mask).nonzero().flatten().tolist()) == set(top_k_mean_diff(x, y.long(), k).tolist())


class _StubModel:
    """Just enough of a HookedTransformer for sae-bench's calculator: a fixed activation per word."""

    def __init__(self, acts_by_word, hook, length=6):
        self.acts, self.hook, self.length = acts_by_word, hook, length

    def to_tokens(self, text):
        return torch.zeros(1, self.length, dtype=torch.long)

    def run_with_cache(self, prompts, names_filter):
        out = torch.zeros(len(prompts), self.length, next(iter(self.acts.values())).shape[0])
        for i, prompt in enumerate(prompts):
            out[i, -2] = self.acts[prompt.split("\n")[-1][: -len(":")]]
        return None, {self.hook: out}


class _StubSAE:
    def __init__(self, W_enc, b_enc, W_dec):
        self.W_enc, self.b_enc, self.W_dec, self.device = W_enc, b_enc, W_dec, "cpu"

    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)


def test_absorption_equals_sae_bench():
    """A random SAE whose decoder leans towards the probe direction, 300 words: the absorption
    fraction and full absorption of every word agree with sae-bench's calculator."""
    g = torch.Generator().manual_seed(0)
    d_in, d_sae, n = 16, 64, 300
    p = torch.randn(d_in, generator=g)
    W_dec = torch.randn(d_sae, d_in, generator=g) + 0.3 * torch.randn(d_sae, 1, generator=g) * p / p.norm()
    main = [int(i) for i in torch.nn.functional.cosine_similarity(W_dec, p[None]).topk(2).indices]
    W_enc = 0.3 * W_dec.T.clone()
    W_enc[:, main] *= 0.3  # the main latents fire weakly: partial and full absorption both occur
    b_enc = -1.0 * torch.ones(d_sae)
    words = [f"w{i}" for i in range(n)]
    acts = torch.randn(n, d_in, generator=g) + 3 * p / p.norm()
    model = _StubModel(dict(zip(words, acts)), "blocks.0.hook_resid_post")
    sae = _StubSAE(W_enc, b_enc, W_dec)
    calc = calculator_module.FeatureAbsorptionCalculator(model=model, icl_word_list=["a", "b", "c"],
                                                         max_icl_examples=2, batch_size=50)
    theirs = calc.calculate_absorption(sae, words, p, main, layer=0, show_progress=False)
    ours = absorption(acts, sae.encode(acts), W_dec, p, main)
    got_fraction = torch.tensor([w.absorption_fraction for w in theirs.word_results], dtype=torch.float64)
    got_full = [w.is_full_absorption for w in theirs.word_results]
    partial = (ours.fraction > 0) & (ours.fraction < 1)
    assert partial.sum() > 20 and (ours.fraction == 1).sum() > 20 and (ours.fraction == 0).sum() > 5
    assert 20 < ours.full.sum() < n  # every branch is exercised, and 3 absorbers (not 2) matter
    torch.testing.assert_close(ours.fraction, got_fraction, rtol=1e-4, atol=1e-5)
    assert ours.full.tolist() == got_full
