"""Tests for interp_lib.bench's measuring helpers (the full benchmark itself is `python -m interp_lib bench`)."""
import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from interp_lib import bench, bench_peers
from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.metrics import reconstruction_metrics
from interp_lib.training.trainer import TrainConfig, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")


def test_matmul_gflops_is_a_plausible_rate(monkeypatch):
    rate = bench.matmul_gflops(256, repeats=3)
    assert 0.1 < rate < 100_000
    # it really is 2 n^3 / seconds: with a clock that advances 1 s per call, n=100 gives 2e6 / 1e9
    ticks = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(ticks)))
    assert bench.matmul_gflops(100, repeats=2) == pytest.approx(2 * 100**3 / 1e9)


def smollm2_like(**overrides):
    cfg = dict(d_model=576, n_heads=9, d_head=64, n_key_value_heads=3, d_mlp=1536, gated_mlp=True)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


def test_flops_per_token_counts_each_matrix():
    cfg = smollm2_like()
    per_layer = (
        2 * (576 * 576 * 2 + 576 * 192 * 2)  # Q, O; K, V (3 key/value heads of 64)
        + 2 * 3 * 576 * 1536  # gated MLP: gate, up, down
        + 2 * 2 * 9 * 64 * 128  # scores and mixing over 128 positions
    )
    assert bench.transformer_flops_per_token(cfg, 1, 128) == per_layer
    assert bench.transformer_flops_per_token(cfg, 12, 128) == 12 * per_layer
    # about 2 x parameters per token (12 blocks of SmolLM2-135M: ~7 M weights each)
    assert 80e6 < bench.transformer_flops_per_token(cfg, 12, 128) < 95e6
    # multi-head attention (no grouped K/V) and a plain 2-matrix MLP cost more / less as they should
    mha = bench.transformer_flops_per_token(smollm2_like(n_key_value_heads=None), 1, 128)
    assert mha - per_layer == 2 * 2 * 576 * (576 - 192)
    plain = bench.transformer_flops_per_token(smollm2_like(gated_mlp=False), 1, 128)
    assert per_layer - plain == 2 * 576 * 1536
    # longer contexts cost more attention
    assert bench.transformer_flops_per_token(cfg, 1, 256) - per_layer == 2 * 2 * 9 * 64 * 128


def test_topk_train_flops_count_the_dense_encoder_and_four_sparse_products():
    # the bench's shapes: 576 -> 4608, k 32: 5.31 MFLOP in the encoder, 0.15 in the rest
    assert bench.topk_train_flops_per_token(576, 4608, 32) == 2 * 576 * 4608 + 8 * 32 * 576
    assert 5.4e6 < bench.topk_train_flops_per_token(576, 4608, 32) < 5.5e6
    # the sparse products grow with k, the encoder with the dictionary
    assert bench.topk_train_flops_per_token(576, 4608, 64) - bench.topk_train_flops_per_token(
        576, 4608, 32) == 8 * 32 * 576
    assert bench.topk_train_flops_per_token(576, 9216, 32) - bench.topk_train_flops_per_token(
        576, 4608, 32) == 2 * 576 * 4608


def test_layers_run():
    assert bench.layers_run("blocks.12.hook_resid_pre") == 12
    assert bench.layers_run("blocks.12.hook_mlp_out") == 13
    assert bench.layers_run("blocks.0.hook_resid_post") == 1
    with pytest.raises(ValueError):
        bench.layers_run("hook_embed")


def test_peak_rss_grows_with_a_big_allocation():
    before = bench.peak_rss_mb()
    assert before > 10
    big = torch.ones(64 * 2**20 // 4 * 3)  # 192 MiB, touched
    assert bench.peak_rss_mb() >= before + 100 or before > 1000
    del big


def test_bench_training_on_a_tiny_problem():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2048, 16, generator=g) @ torch.randn(16, 16, generator=g) + 4
    res = bench.bench_training(acts[:1536], acts[1536:], epochs=1, d_sae=64, k=4, batch_size=256)
    for name in ("homebrew", "saelens"):
        assert res[f"train_tokens_per_s_{name}"] > 0
        assert res[f"train_tokens_{name}"] == 6 * 256
        assert -1 < res[f"val_fve_{name}"] <= 1
        assert res[f"val_l0_{name}"] <= 4
    assert res["speedup"] == pytest.approx(res["train_tokens_per_s_homebrew"] / res["train_tokens_per_s_saelens"])
    assert res["train_config"]["d_sae"] == 64


def test_format_table_and_main(monkeypatch, tmp_path, capsys):
    fake = {
        "quick": True, "torch": "x", "threads": 2, "hook": "blocks.12.hook_resid_pre", "matmul_gflops": 100.0,
        "harvest_layers": 12, "harvest_flops_per_token": 88e6, "harvest_tokens_per_s": 1000.0,
        "harvest_gflops": 88.0, "harvest_roofline_fraction": 0.88,
        "train_config": {"d_in": 576, "d_sae": 4608, "k": 32, "batch_size": 4096, "epochs": 2, "train_rows": 65024},
        "train_tokens_homebrew": 100, "speedup": 3.0, "peak_rss_mb": 2000.0, "total_seconds": 100.0,
    }
    for name, tps in (("homebrew", 9000.0), ("saelens", 3000.0)):
        fake.update({f"train_tokens_per_s_{name}": tps, f"train_seconds_{name}": 1.0, f"val_fve_{name}": 0.9,
                     f"val_l0_{name}": 32.0, f"val_dead_fraction_{name}": 0.0})
    text = bench.format_table(fake)
    assert "3.00x" in text and "88% of the matmul rate" in text and "9,000" in text
    assert "plain transformers" not in text  # an older result without the comparison still prints
    fake.update({"harvest_batch_size": 16, "harvest_repeats": 3, "harvest_engine": "lean Llama forward",
                 "harvest_tokens_per_s_plain_transformers": 800.0, "harvest_vs_plain_transformers": 1.25,
                 "harvest_tokens_per_s_transformer_lens": 625.0, "harvest_vs_transformer_lens": 1.6})
    text = bench.format_table(fake)
    assert "harvest / plain transformers: 1.25x" in text and "harvest / TransformerLens: 1.60x" in text
    assert "batch 16, best of 3, interleaved" in text and "(lean Llama forward)" in text
    assert "88% of the matmul rate" in text  # kept, as information
    assert "ceiling" not in text  # an older result without the trainer's ceiling still prints
    fake.update({"train_flops_per_token": 5.46e6, "train_ceiling_tokens_per_s": 18_000.0,
                 "train_ceiling_fraction": 0.5})
    text = bench.format_table(fake)
    assert "ceiling 18,000 tokens/s (5.46 MFLOP/token" in text
    assert "6.0x SAELens): homebrew at 50% of it" in text

    seen = {}

    def fake_run(quick, json_path, progress=False, peers=False):
        seen.update(quick=quick, json_path=json_path)
        return fake

    monkeypatch.setattr(bench, "run_bench", fake_run)
    assert bench.main(["--quick", "--json", str(tmp_path / "b.json")]) == 0
    assert seen == {"quick": True, "json_path": str(tmp_path / "b.json")}
    assert bench.main([]) == 0 and seen["quick"] is False


def test_run_bench_writes_the_required_keys(monkeypatch, tmp_path):
    """run_bench's plumbing with the model and the trainers replaced by stand-ins."""
    import interp_lib.data as data
    import interp_lib.model.activations as activations
    import interp_lib.model.loading as models

    model = SimpleNamespace(cfg=smollm2_like(), tokenizer=None)
    for module in (models, bench):
        monkeypatch.setattr(module, "load_model", lambda name: model)
    monkeypatch.setattr(bench, "corpus_split", lambda split, sources=None: [])
    monkeypatch.setattr(data, "tokenize_corpus", lambda tok, docs, ctx_len, max_tokens: torch.zeros(2, ctx_len, dtype=torch.long))
    monkeypatch.setattr(activations, "corpus_split", lambda split, sources=None: [])
    for module in (activations, bench):  # bench imported the name: patch where it is looked up
        monkeypatch.setattr(module, "cached_activations",
                            lambda *a, n_tokens, **k: {bench.HOOK: torch.randn(512, 8)})
    monkeypatch.setattr(bench, "bench_harvest", lambda model, tokens, **k: {
        "harvest_tokens": 256, "harvest_rows": 254, "harvest_seconds": 0.5, "harvest_tokens_per_s": 512.0,
        "harvest_layers": 12, "harvest_flops_per_token": 88e6, "harvest_tokens_per_s_plain_transformers": 400.0,
        "harvest_vs_plain_transformers": 1.28, "harvest_tokens_per_s_transformer_lens": 300.0,
        "harvest_vs_transformer_lens": 512 / 300})
    monkeypatch.setattr(bench, "matmul_gflops", lambda *a, **k: 100.0)
    real_training = bench.bench_training
    monkeypatch.setattr(bench, "bench_training", lambda acts, val, **k: real_training(
        acts, val, epochs=1, d_sae=16, k=2, batch_size=128))
    path = tmp_path / "bench.json"
    res = bench.run_bench(quick=True, json_path=str(path), print_table=False)
    saved = json.loads(path.read_text())
    for key in ("train_tokens_per_s_homebrew", "train_tokens_per_s_saelens", "harvest_tokens_per_s",
                "harvest_tokens_per_s_plain_transformers", "harvest_vs_plain_transformers",
                "harvest_tokens_per_s_transformer_lens", "harvest_vs_transformer_lens",
                "harvest_roofline_fraction", "speedup", "peak_rss_mb", "matmul_gflops"):
        assert key in saved and key in res
    assert saved["harvest_roofline_fraction"] == pytest.approx(512 * 88e6 / 1e9 / 100.0)
    # the trainer's ceiling: d_in -> d_sae 16, k 2 -> 2*d_in*16 + 8*2*d_in FLOPs per token
    assert saved["train_config"]["d_in"] == 8  # the stand-in activations, not a real cache
    flops = 48 * 8
    assert saved["train_flops_per_token"] == flops
    assert saved["train_ceiling_tokens_per_s"] == pytest.approx(100e9 / flops)
    assert saved["train_ceiling_fraction"] == pytest.approx(
        saved["train_tokens_per_s_homebrew"] * flops / 100e9)



def test_bench_harvest_times_three_engines_on_the_same_tokens(smollm):
    """bench_harvest on a tiny problem: the library's harvest, TransformerLens and plain transformers."""
    tokens = smollm.to_tokens("The cat sat on the mat, and the dog sat on the log by the door.")[:, :12]
    tokens = tokens.repeat(3, 1)
    res = bench.bench_harvest(smollm, tokens, "blocks.2.hook_resid_pre", batch_size=2, repeats=1)
    assert res["harvest_engine"] == "lean Llama forward" and res["harvest_layers"] == 2
    assert res["harvest_tokens"] == 36 and res["harvest_rows"] == 33
    for name in ("plain_transformers", "transformer_lens"):
        assert res[f"harvest_tokens_per_s_{name}"] > 0
        assert res[f"harvest_vs_{name}"] == pytest.approx(
            res["harvest_tokens_per_s"] / res[f"harvest_tokens_per_s_{name}"])


# --------------------------------------------------------------------------------------------
# --peers: sparsify and dictionary_learning (interp_lib.bench_peers)
# --------------------------------------------------------------------------------------------
def hide_peers(monkeypatch, names=bench_peers.PEERS):
    """Make the peers' packages look uninstalled (find_spec finds nothing for them)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in names else real(name, *a, **k))


def pretend_peers(monkeypatch):
    """Make the peers' packages look installed (their trainers are replaced by stand-ins)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: (
        object() if name in bench_peers.PEERS else real(name, *a, **k)))


def test_peers_missing_fail_fast_with_one_line(monkeypatch, capsys):
    hide_peers(monkeypatch)  # whatever this machine has installed
    assert bench_peers.missing_peers() == list(bench_peers.PEERS)
    with pytest.raises(InvalidArgumentError, match="make bench-peers"):
        bench_peers.require_peers()

    def no_work(*a, **k):
        raise AssertionError("the bench started before checking for the peers")

    monkeypatch.setattr(bench, "matmul_gflops", no_work)
    monkeypatch.setattr(bench, "load_model", no_work)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", "--peers"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`make bench-peers` installs them" in err
    assert "dictionary-learning==0.1.0" in err and "Traceback" not in err


def tiny_acts(n=640, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) + 4


TINY = dict(arch="topk", d_sae=64, k=4, batch_size=128, epochs=1)


def stand_in_peer(acts, cfg, progress=False):
    """A PeerRun from our own trainer, standing in for a peer."""
    result = train_sae(acts, cfg, progress=False)
    return bench_peers.PeerRun(result.sae, result.scale, result.metrics, "stand-in: Adam", 0.0,
                               lambda x: result.sae.decode(result.sae.encode(x)))


def test_bench_peers_reports_a_peer_that_cannot_run_without_raising(monkeypatch):
    def broken(acts, cfg, progress=False):
        raise RuntimeError("needs a CUDA kernel\n  (line two)")

    monkeypatch.setattr(bench_peers, "TRAINERS", {"sparsify": stand_in_peer, "dictionary_learning": broken})
    pretend_peers(monkeypatch)
    acts = tiny_acts()
    res = bench_peers.bench_peers(acts[:512], acts[512:], TrainConfig(**TINY))
    assert res["peers"] == ["sparsify", "dictionary_learning"]
    assert res["peer_not_run_dictionary_learning"] == "RuntimeError: needs a CUDA kernel (line two)"
    assert res["train_tokens_sparsify"] == 4 * 128 and -1 < res["val_fve_typical_sparsify"] <= 1
    assert "peer_not_run_sparsify" not in res and res["peer_settings_sparsify"] == "stand-in: Adam"
    with pytest.raises(InvalidArgumentError, match="unknown peers"):
        bench_peers.bench_peers(acts, acts, TrainConfig(**TINY), peers=("nope",))
    # a peer whose package is missing is reported as not run, with the way to install it
    hide_peers(monkeypatch)
    res = bench_peers.bench_peers(acts[:512], acts[512:], TrainConfig(**TINY), peers=("sparsify",))
    assert "make bench-peers" in res["peer_not_run_sparsify"]


def test_bench_training_with_peers_gives_their_keys_and_ratios(monkeypatch):
    monkeypatch.setattr(bench_peers, "TRAINERS", {"sparsify": stand_in_peer,
                                                  "dictionary_learning": stand_in_peer})
    pretend_peers(monkeypatch)
    acts = tiny_acts()
    res = bench.bench_training(acts[:512], acts[512:], epochs=1, d_sae=64, k=4, batch_size=128,
                               peers=True)
    json.dumps(res)  # all of it goes to --json
    for name in bench_peers.PEERS:
        for key in ("train_tokens_per_s", "val_fve_typical", "val_dead_fraction", "speedup_vs",
                    "peer_settings", "conversion_max_abs_diff"):
            assert f"{key}_{name}" in res, (key, name)
        assert res[f"speedup_vs_{name}"] == pytest.approx(
            res["train_tokens_per_s_homebrew"] / res[f"train_tokens_per_s_{name}"])
    assert "speedup_vs_sparsify" not in bench.bench_training(
        acts[:512], acts[512:], epochs=1, d_sae=64, k=4, batch_size=128)


def test_format_table_with_peers():
    fake = {
        "quick": True, "torch": "x", "threads": 2, "hook": "blocks.12.hook_resid_pre", "matmul_gflops": 100.0,
        "harvest_layers": 12, "harvest_flops_per_token": 88e6, "harvest_tokens_per_s": 1000.0,
        "harvest_gflops": 88.0, "harvest_roofline_fraction": 0.88,
        "train_config": {"d_in": 576, "d_sae": 4608, "k": 32, "batch_size": 4096, "epochs": 2, "train_rows": 65024},
        "train_tokens_homebrew": 100, "speedup": 3.0, "peak_rss_mb": 2000.0, "total_seconds": 100.0,
        "peers": ["sparsify", "dictionary_learning"],
        "peer_not_run_dictionary_learning": "ImportError: no module named nnsight",
        "speedup_vs_sparsify": 2.5, "peer_settings_sparsify": "sparsify 1.3.3: Trainer.fit, Adam",
    }
    for name, tps in (("homebrew", 9000.0), ("saelens", 3000.0), ("sparsify", 3600.0)):
        fake.update({f"train_tokens_per_s_{name}": tps, f"train_seconds_{name}": 1.0, f"val_fve_{name}": 0.9,
                     f"val_fve_typical_{name}": 0.8, f"val_l0_{name}": 32.0, f"val_dead_fraction_{name}": 0.25})
    text = bench.format_table(fake)
    lines = text.splitlines()
    row = next(line for line in lines if line.strip().startswith("sparsify "))
    assert row.split()[1:] == ["3,600", "1.0", "0.900", "0.800", "32.0", "25.0%"]
    assert "dictionary_learning not run: ImportError: no module named nnsight" in text
    assert "speed-up homebrew / sparsify: 2.50x" in text and "speed-up homebrew / SAELens: 3.00x" in text
    assert "sparsify: sparsify 1.3.3: Trainer.fit, Adam" in text
    # the rows stay aligned with the widest peer's name
    header = next(line for line in lines if "tokens/s" in line and "val FVE" in line)
    homebrew = next(line for line in lines if line.strip().startswith("homebrew"))
    assert header.index("tokens/s") + len("tokens/s") == homebrew.index("9,000") + len("9,000")
    assert "speedup_vs" not in bench.format_table({k: v for k, v in fake.items() if k != "peers"})


def test_main_passes_peers(monkeypatch):
    seen = {}
    monkeypatch.setattr(bench, "run_bench", lambda **k: seen.update(k))
    assert bench.main(["--quick", "--peers"]) == 0 and seen["peers"] is True
    assert bench.main(["--quick"]) == 0 and seen["peers"] is False


@pytest.mark.parametrize("name", bench_peers.PEERS)
def test_each_peer_trains_and_its_converted_weights_reconstruct_as_its_forward(name):
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (make bench-peers installs it)")
    import einops.einops

    einsum = einops.einops.einsum
    acts = tiny_acts(n=512)
    cfg = TrainConfig(**TINY)
    run = bench_peers.TRAINERS[name](acts, cfg)
    assert run.metrics["train_tokens"] == 4 * 128 and run.metrics["tokens_per_s"] > 0
    assert run.sae.d_sae == 64 and run.sae.k == 4 and run.conversion_error < 1e-3
    x = tiny_acts(n=200, seed=1) * run.scale  # rows it did not train on
    with torch.no_grad():
        theirs, ours = run.own_forward(x), run.sae.decode(run.sae.encode(x))
        assert (run.sae.encode(x) > 0).sum(-1).max() <= 4
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)
    assert torch.get_float32_matmul_precision() == "highest"  # sparsify's fit() sets "high"
    assert einops.einops.einsum is einsum  # nnsight's import-time patches are undone
    assert "Adam" in run.settings and "schedule" in run.settings
    quality = reconstruction_metrics(run.sae, tiny_acts(n=256, seed=2), run.scale)
    assert 0 < quality["fve"] <= 1 and quality["l0"] <= 4
