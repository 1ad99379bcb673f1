"""interp_lib.model.fast_forward: the lean Llama forward gives TransformerLens's activations (within fp16
rounding, in fact within fp32 rounding), and harvest falls back to TransformerLens elsewhere."""

from __future__ import annotations

import pytest
import torch

from interp_lib.model import activations as A
from interp_lib.model import fast_forward as FF

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = (
    "The capital of France is Paris, and the capital of Germany is Berlin. 🐕",
    "def mean(values):\n    return sum(values) / len(values)  # Der Hund läuft",
)
HOOKS = [
    "blocks.0.hook_resid_pre",
    "blocks.1.hook_attn_out",
    "blocks.2.hook_resid_mid",
    "blocks.3.hook_mlp_out",
    "blocks.5.hook_resid_post",
    "blocks.12.hook_resid_pre",
    "blocks.29.hook_resid_post",
]


def _real_tokens(model) -> torch.Tensor:
    """Two real texts, BOS first, cut to the same length: [2, T]."""
    rows = [model.to_tokens(t)[0] for t in TEXTS]
    n = min(len(r) for r in rows)
    tokens = torch.stack([r[:n] for r in rows])
    assert (tokens[:, 0] == model.tokenizer.bos_token_id).all() and n > 16
    return tokens


def _row_error(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (got - want).norm(dim=-1) / want.norm(dim=-1)


def _within_one_fp16_ulp(got: torch.Tensor, want: torch.Tensor) -> float:
    """Fraction of elements whose fp16 casts are equal or one fp16 step apart."""
    g, w = got.half().float(), want.half()
    step = (torch.nextafter(w.abs(), torch.tensor(float("inf"), dtype=w.dtype)) - w.abs()).float()
    return ((g - w.float()).abs() <= step).float().mean().item()


def _harvest_both(model, tokens, hooks):
    kw = dict(batch_size=2, drop_bos=False, dtype=torch.float32, progress=False)
    fast = A.harvest(model, hooks, tokens, **kw)
    slow = A.harvest(model, hooks, tokens, engine="transformer_lens", **kw)
    return fast, slow


def test_fast_forward_equals_transformer_lens(smollm):
    tokens = _real_tokens(smollm)
    assert FF.fast_forward_supported(smollm, HOOKS)
    fast, slow = _harvest_both(smollm, tokens, HOOKS)
    assert getattr(smollm, FF._ATTR, None) is not None, "harvest took the fast path"
    n = tokens.shape[1]
    for hook in HOOKS:
        err = _row_error(fast[hook], slow[hook])
        # fp16 rounding alone is ~3e-4 per row: the lean forward must be far inside that
        assert err.max() < 1e-4, (hook, err.max().item())
        assert err[0] < 1e-4 and err[n] < 1e-4, "the BOS rows agree too"
        assert _within_one_fp16_ulp(fast[hook], slow[hook]) > 0.995, hook
        # and no element is off by more than one fp16 step at its row's typical magnitude
        rms = slow[hook].pow(2).mean(-1, keepdim=True).sqrt()
        assert ((fast[hook] - slow[hook]).abs() <= rms * 2**-10).all(), hook
        assert (fast[hook].half() == slow[hook].half()).float().mean() > 0.95, hook


def test_a_wrong_rope_or_a_lost_residual_is_caught(smollm):
    """The comparison above can fail: a rotation the wrong way, or a missing residual term."""
    tokens = _real_tokens(smollm)[:1]
    hook = "blocks.3.hook_resid_pre"
    want = A.harvest(smollm, [hook], tokens, drop_bos=False, dtype=torch.float32, progress=False,
                     engine="transformer_lens")[hook]
    forward = FF.LlamaHarvestForward(smollm)
    good = forward(tokens, [hook])[hook].reshape(want.shape)
    assert _row_error(good, want).max() < 1e-4
    forward._cis = forward._rotations(tokens.shape[1], torch.device("cpu")).conj()
    wrong = forward(tokens, [hook])[hook].reshape(want.shape)
    assert _row_error(wrong[1:], want[1:]).max() > 1e-2  # position 0 has no rotation
    forward = FF.LlamaHarvestForward(smollm)
    mid = forward(tokens, ["blocks.2.hook_resid_mid"])["blocks.2.hook_resid_mid"]
    mlp = forward(tokens, ["blocks.2.hook_mlp_out"])["blocks.2.hook_mlp_out"]
    assert _row_error(mid.reshape(want.shape), want).max() > 1e-2  # resid_mid is not resid_pre
    assert _row_error((mid + mlp).reshape(want.shape), want).max() < 1e-4


def test_scratch_buffers_never_leak_into_results(smollm):
    """The forward reuses its matmul buffers across blocks and calls: what one call returned is
    not changed by the next (another batch shape, a full pass with a splice), and each call still
    equals a forward built fresh for it."""
    tokens = _real_tokens(smollm)
    hooks = ["blocks.2.hook_mlp_out", "blocks.3.hook_resid_mid", "blocks.4.hook_resid_pre"]
    forward = FF.LlamaHarvestForward(smollm)
    first = forward(tokens, hooks)
    kept = {h: v.clone() for h, v in first.items()}
    forward(tokens[:1, :9], hooks)  # another shape: the buffers are rebuilt
    forward.run(tokens, hooks, splice=("blocks.3.hook_mlp_out", lambda a: a * 3.0))
    again = forward(tokens, hooks)
    fresh = FF.LlamaHarvestForward(smollm)(tokens, hooks)
    for h in hooks:
        assert torch.equal(first[h], kept[h]), f"{h}: a later call overwrote a returned tensor"
        assert torch.equal(again[h], fresh[h]), h
    assert forward._buffers, "the forward keeps its scratch buffers"


def test_log_softmax_in_place_equals_the_functional_one():
    """run() turns its logits into log-probabilities in place: exactly F.log_softmax's values,
    in the same storage (no second vocabulary-wide matrix), rows with huge logits included."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=g) * 8
    logits[3] += 1e4
    want = torch.nn.functional.log_softmax(logits, dim=-1)
    ptr = logits.data_ptr()
    got = FF._log_softmax_(logits)
    assert got.data_ptr() == ptr and torch.equal(got, want)


def test_unsupported_hooks_and_models_fall_back(smollm, tiny_gpt2, monkeypatch):
    assert not FF.fast_forward_supported(smollm, ["blocks.0.mlp.hook_post"])
    assert not FF.fast_forward_supported(smollm, ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z"])
    assert not FF.fast_forward_supported(tiny_gpt2, ["blocks.0.hook_resid_pre"])
    from types import SimpleNamespace

    assert not FF.fast_forward_supported(SimpleNamespace(cfg=SimpleNamespace(d_model=8)),
                                         ["blocks.0.hook_resid_pre"])
    # hooks attached by the caller (steering) change TransformerLens's forward: not ours
    with smollm.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda x, hook: x)]):
        assert not FF.fast_forward_supported(smollm, ["blocks.2.hook_resid_pre"])
    assert FF.fast_forward_supported(smollm, ["blocks.2.hook_resid_pre"])
    bias = smollm.blocks[1].attn.b_O
    with torch.no_grad():
        bias[0] = 1.0  # a bias the lean forward does not add
        try:
            assert not FF.fast_forward_supported(smollm, ["blocks.2.hook_resid_pre"])
            assert FF.fast_forward_supported(smollm, ["blocks.0.hook_mlp_out"])  # block 1 unused
            # but a pass to the logits runs every block
            assert not FF.fast_forward_supported(smollm, ["blocks.0.hook_mlp_out"], to_logits=True)
        finally:
            bias.zero_()

    def refuse(model):
        raise AssertionError("the fast path was taken")

    monkeypatch.setattr(A, "fast_forward_for", refuse)
    tokens = _real_tokens(smollm)[:, :12]
    hooks = ["blocks.1.mlp.hook_post", "blocks.1.hook_resid_pre"]
    got = A.harvest(smollm, hooks, tokens, dtype=torch.float32, progress=False)
    _, cache = smollm.run_with_cache(tokens, names_filter=hooks)
    for h in hooks:
        assert torch.equal(got[h], cache[h][:, 1:].reshape(-1, cache[h].shape[-1]))
    g2 = A.harvest(tiny_gpt2, ["blocks.1.hook_resid_pre"], torch.zeros(2, 8, dtype=torch.long),
                   progress=False)
    assert g2["blocks.1.hook_resid_pre"].shape == (14, 32)
    with pytest.raises(ValueError, match="engine"):
        A.harvest(smollm, hooks, tokens, engine="fast", progress=False)


def test_plain_transformers_baseline_reads_the_same_stream(smollm):
    """The benchmark's plain-transformers forward stops at the same place (not after the final
    norm), so the speed comparison is like for like."""
    from interp_lib import bench
    from interp_lib.model.loading import embedded_model_dir

    tokens = _real_tokens(smollm)
    plain = bench.plain_transformers_forward(embedded_model_dir(), 4)
    got = plain(tokens)
    want = A.harvest(smollm, ["blocks.4.hook_resid_pre"], tokens, drop_bos=False,
                     dtype=torch.float32, progress=False)["blocks.4.hook_resid_pre"]
    assert _row_error(got.reshape(want.shape), want).max() < 1e-3


def _tl_pass(model, tokens, hook=None, fn=None):
    """TransformerLens's (log_softmax(logits), loss_per_token), with ``fn`` spliced at ``hook``."""
    hooks = [] if hook is None else [(hook, lambda act, hook: fn(act))]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        logits, loss = model(tokens, return_type="both", loss_per_token=True)
    return logits.log_softmax(-1), loss


def _assert_same_pass(lean, want, what):
    """Log-probs within 5e-4 nats, losses within 2e-4 (fp32 rounding gives ~5e-5 and ~2e-5)."""
    log_probs, loss = want
    assert lean.log_probs.shape == log_probs.shape and lean.loss.shape == loss.shape, what
    assert (lean.log_probs - log_probs).abs().max() < 5e-4, what
    assert (lean.loss - loss).abs().max() < 2e-4, what


def test_lean_log_probs_and_loss_equal_transformer_lens(smollm):
    """A clean pass, one from block 20's stream (start_at_layer) and spliced passes give
    TransformerLens's next-token log-probabilities and per-token loss; a splice one position off
    (the BOS row too) is caught."""
    from interp_lib.sae import zoo

    tokens = _real_tokens(smollm)
    assert FF.fast_forward_supported(smollm, ["blocks.15.hook_mlp_out"], to_logits=True)
    forward = FF.LlamaHarvestForward(smollm)
    hooks = ["blocks.20.hook_resid_pre", "blocks.15.hook_mlp_out"]
    clean = forward.run(tokens, hooks)
    _assert_same_pass(clean, _tl_pass(smollm, tokens), "clean")
    with torch.inference_mode():
        _, cache = smollm.run_with_cache(tokens, names_filter=hooks)
    for h in hooks:
        assert _row_error(clean.cache[h], cache[h]).max() < 1e-4, h
    resid = cache["blocks.20.hook_resid_pre"].clone()
    resid[:, 1:] *= 0.5
    with torch.inference_mode():
        logits, loss = smollm(resid, start_at_layer=20, tokens=tokens, return_type="both",
                              loss_per_token=True)
    _assert_same_pass(forward.run(tokens, start_at_layer=20, resid=resid),
                      (logits.log_softmax(-1), loss), "start_at_layer")

    sae = zoo.load_sae("smollm2-135m-mlp", "blocks.15.hook_mlp_out")

    def reconstruct(act):  # positions >= 1 only, as metrics.evaluate splices
        act = act.clone()
        act[:, 1:] = sae.decode(sae.encode(act[:, 1:]))
        return act

    want = _tl_pass(smollm, tokens, "blocks.15.hook_mlp_out", reconstruct)
    _assert_same_pass(forward.run(tokens, splice=("blocks.15.hook_mlp_out", reconstruct)), want,
                      "spliced")
    for hook, fn in [("blocks.3.hook_attn_out", lambda a: a * 0.5),
                     ("blocks.7.hook_resid_mid", lambda a: a * 0.9),
                     ("blocks.9.hook_resid_post", lambda a: a.flip(-1)),
                     ("blocks.29.hook_resid_post", lambda a: a * 2.0)]:
        _assert_same_pass(forward.run(tokens, splice=(hook, fn)),
                          _tl_pass(smollm, tokens, hook, fn), hook)
    off = forward.run(tokens, splice=("blocks.15.hook_mlp_out",
                                      lambda act: sae.decode(sae.encode(act))))
    with pytest.raises(AssertionError):
        _assert_same_pass(off, want, "the BOS row spliced too")
    with pytest.raises(ValueError, match="before block"):
        forward.run(tokens, ["blocks.2.hook_mlp_out"], start_at_layer=20, resid=resid)


def _same_metrics(got, want, rel=1e-4):
    """Every SAEMetrics field: counts exactly, the rest within ``rel`` (1e-6 is typical)."""
    for field in ("l0", "dead_fraction", "dense_fraction", "n_tokens"):
        assert getattr(got, field) == getattr(want, field), field
    assert (got.density == want.density).all()
    # ce_recovered divides by ce_zero - ce_clean: where zeroing barely changes the loss (a random
    # SAE at block 3's attention) it keeps only the precision of that small difference
    conditioning = max(1.0, abs(want.ce_zero) / abs(want.ce_zero - want.ce_clean))
    for field, value in want.summary().items():
        tol = rel * conditioning if field == "ce_recovered" else rel
        # ce_increase = ce_sae - ce_clean, two losses of about 3 nats: where the SAE barely changes
        # the loss (0.0018 nats for the MLP SAE) it keeps only their absolute precision, each loss
        # within 1e-5 of its own size (seen: 1.4e-6 apart)
        atol = max(1e-6, 1e-5 * abs(want.ce_clean)) if field == "ce_increase" else 1e-6
        assert getattr(got, field) == pytest.approx(value, rel=tol, abs=atol), field


def test_evaluate_lean_equals_transformer_lens(smollm, monkeypatch):
    """metrics.evaluate through the lean forward (shipped SAEs at a resid_pre and an mlp_out hook,
    random ones at resid_post and attn_out) gives what it gives through TransformerLens."""
    from interp_lib.evals import metrics as M
    from interp_lib.sae import zoo

    from .conftest import make_sae

    saes = {
        "res": zoo.load_sae("smollm2-135m-res", "blocks.5.hook_resid_pre"),
        "mlp": zoo.load_sae("smollm2-135m-mlp", "blocks.15.hook_mlp_out"),
        "post": make_sae(576, 1152, "blocks.9.hook_resid_post", k=16),
        "attn": make_sae(576, 1152, "blocks.3.hook_attn_out", k=16, seed=1),
    }
    tokens = _real_tokens(smollm)
    used = []
    monkeypatch.setattr(M, "fast_forward_for", lambda m: used.append(m) or FF.fast_forward_for(m))
    want = M.evaluate(smollm, saes, tokens, engine="transformer_lens", progress=False)
    assert not used
    got = M.evaluate(smollm, saes, tokens, progress=False)
    assert used, "evaluate took the lean path"
    for name in saes:
        _same_metrics(got[name], want[name])
    assert got["res"].kl_div > 1e-3 and got["res"].fve < 0.999  # a real splice, not a no-op
    # the comparison can fail: block 5 restarted from block 4's stream (a block lost)
    monkeypatch.setattr(M, "_restart", lambda hook: (5, "blocks.4.hook_resid_pre"))
    off = M.evaluate(smollm, {"res": saes["res"]}, tokens, progress=False)
    with pytest.raises(AssertionError):
        _same_metrics(off["res"], want["res"])
    with pytest.raises(ValueError, match="'auto' or 'transformer_lens'"):
        M.evaluate(smollm, saes, tokens, engine="lean", progress=False)


def test_continuations_equal_transformer_lens_on_whole_sequences(smollm):
    """Rows of tokens after one shared prefix, run to the last block: TransformerLens's stream at
    the same positions of prefix + row, the rows of different lengths padded at the end; a row
    attending to the wrong keys (no prefix, or another row) is caught."""
    prefix = smollm.to_tokens("Answer Yes or No. Does the text mention an animal?")[0]
    rows = [smollm.to_tokens(t, prepend_bos=False)[0] for t in (" The dog barked.", " Taxes rose.")]
    T = max(len(r) for r in rows)
    batch = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, : len(r)] = r
    last = f"blocks.{smollm.cfg.n_layers - 1}.hook_resid_post"
    got = FF.fast_forward_for(smollm).continuations(prefix, batch)
    assert got.shape == (2, T, smollm.cfg.d_model)
    P = len(prefix)
    for i, r in enumerate(rows):
        with torch.no_grad():
            _, cache = smollm.run_with_cache(torch.cat([prefix, r])[None], names_filter=[last])
        want = cache[last][0, P:]
        assert _row_error(got[i, : len(r)], want).max() < 1e-4, i
    alone = FF.fast_forward_for(smollm)(batch[:1], [last])[last][0]  # the row with no prefix
    assert _row_error(alone[: len(rows[0])], got[0, : len(rows[0])]).min() > 1e-2
    with pytest.raises(ValueError, match="prefix must be"):
        FF.fast_forward_for(smollm).continuations(prefix[:0], batch)


def test_after_prefix_equals_transformer_lens_on_whole_sequences(smollm):
    """Each token after a shared prefix, on its own: the activations TransformerLens gives at the
    last position of prefix + token, at every kind of hook; a token never sees another row."""
    prefix = smollm.to_tokens("A list of words: apple, Banana, cherry, dog and")[0]
    tokens = torch.tensor([1000, 2000, 3000, 4567, 12345])
    got = FF.fast_forward_for(smollm).after_prefix(prefix, tokens, HOOKS[:6])
    seqs = torch.cat([prefix.expand(len(tokens), -1), tokens[:, None]], dim=1)
    with torch.no_grad():
        _, cache = smollm.run_with_cache(seqs, names_filter=HOOKS[:6])
    for hook in HOOKS[:6]:
        assert got[hook].shape == (len(tokens), smollm.cfg.d_model)
        assert _row_error(got[hook], cache[hook][:, -1]).max() < 1e-5, hook
    alone = FF.fast_forward_for(smollm).after_prefix(prefix, tokens[2:3], HOOKS[5:6])
    torch.testing.assert_close(alone[HOOKS[5]][0], got[HOOKS[5]][2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="prefix must be"):
        FF.fast_forward_for(smollm).after_prefix(prefix[None], tokens, HOOKS[:1])


def test_first_letter_words_read_the_same_through_both_engines(smollm, monkeypatch):
    """first_letter's word activations: the lean shared-prefix path equals TransformerLens's
    key-value-cache path (same words, same ICL draws)."""
    import random

    from tqdm.auto import tqdm

    from interp_lib.evals import first_letter_absorption as fl

    vocab = fl.alpha_words(smollm.tokenizer)
    words, pool = vocab[:40], [t for _, t in vocab[40:400]]
    hook = "blocks.12.hook_resid_pre"

    def run():
        with tqdm(disable=True) as bar:
            return fl._word_acts(smollm, hook, words, pool, 10, 16, random.Random(3), bar)

    lean = run()
    monkeypatch.setattr(FF, "fast_forward_supported", lambda *a, **k: False)
    slow = run()
    assert lean.shape == slow.shape == (40, smollm.cfg.d_model)
    assert _row_error(lean, slow).max() < 1e-5
