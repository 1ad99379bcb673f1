"""interp_lib.sae.zoo: listing, paths, loading from disk, hub fallbacks, feature links."""

from __future__ import annotations

import json

import pytest
import torch

import interp_lib.sae.zoo as zoo
from interp_lib import HubUnavailableError, feature_url, list_saes, load_sae, sae_path

from .conftest import make_sae


def test_list_saes_has_ours_and_saelens_registry_offline():
    pairs = list(list_saes())
    assert ("smollm2-135m-res", "blocks.15.hook_resid_pre") in pairs
    assert ("smollm2-135m-mlp", "blocks.15.hook_mlp_out") in pairs
    assert ("gpt2-small-res-jb", "blocks.6.hook_resid_pre") in pairs
    assert pairs.index(("smollm2-135m-res", "blocks.5.hook_resid_pre")) == 0


def test_unknown_release_and_id_name_valid_choices():
    with pytest.raises(ValueError, match="smollm2-135m-res"):
        load_sae("no-such-release", "x")
    with pytest.raises(ValueError, match="blocks.15.hook_resid_pre"):
        sae_path("smollm2-135m-res", "blocks.99.hook_resid_pre")
    with pytest.raises(ValueError, match="Valid ids"):
        load_sae("gpt2-small-res-jb", "blocks.99.hook_resid_pre")
    with pytest.raises(ValueError):
        sae_path("gpt2-small-res-jb", "blocks.6.hook_resid_pre")  # lives on the hub


def test_missing_folder_is_file_not_found(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        load_sae(tmp_path / "nothing-here")
    monkeypatch.setattr(zoo, "SAE_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError):
        sae_path("smollm2-135m-res", "blocks.15.hook_resid_pre")


def test_load_from_folder_round_trip(tmp_path):
    sae = make_sae(16, 64, "blocks.0.hook_resid_pre", k=4)
    sae.save_model(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    x = torch.randn(5, 16)
    assert torch.allclose(loaded.encode(x), sae.encode(x))
    assert loaded.cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    assert torch.allclose(load_sae(str(tmp_path / "sae")).decode(sae.encode(x)), sae.decode(sae.encode(x)))


def test_pretrained_offline_fails_fast(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    import interp_lib.model.loading as models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=5.0: False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(HubUnavailableError, match="smollm2-135m-res"):
        load_sae("gpt2-small-res-jb", "blocks.6.hook_resid_pre")


def test_feature_urls():
    assert feature_url("gpt2-small-res-jb", "blocks.6.hook_resid_pre", 10399) == \
        "https://www.neuronpedia.org/gpt2-small/6-res-jb/10399"
    url = feature_url("smollm2-135m-res", "blocks.15.hook_resid_pre", 7, base="/book")
    assert url == "/book/features/smollm2-135m-res--blocks.15.hook_resid_pre/7.html"
    with pytest.raises(ValueError):
        feature_url("smollm2-135m-res", "blocks.15.hook_resid_pre", -1)


def test_profiles_name_real_saes(monkeypatch):
    from interp_lib.model import profiles

    pairs = set(list_saes())
    for profile in profiles.PROFILES.values():
        for pair in (profile.main_sae, *profile.all_saes):
            assert pair in pairs, pair
    monkeypatch.setenv("INTERP_PROFILE", "gpt2")
    assert profiles.current().model == "gpt2-small"
    monkeypatch.setenv("INTERP_PROFILE", "nope")
    with pytest.raises(ValueError, match="embedded"):
        profiles.current()


def test_sae_recipe_resolves_per_sae_overrides():
    from interp_lib.sae.zoo import ZOO_RECIPE, recorded_metrics, sae_recipe

    for release, sae_id in list_saes(pretrained=False):
        own = sae_recipe(sae_id)
        for key in ("train_tokens", "epochs", "batch_size", "lr", "k", "seed"):
            assert own[key] == ZOO_RECIPE["by_sae"].get(sae_id, {}).get(key, ZOO_RECIPE.get(key)), key
        assert "by_sae" not in own
        # train-zoo reproduces the shipped SAE: the recipe's corpus is the one it was trained on
        # (a new corpus source must not slip into the recipe before the zoo is retrained on it)
        recorded = recorded_metrics(release, sae_id)["recipe"]
        assert own["sources"] == recorded["sources"] == ZOO_RECIPE["sources"], sae_id
    # recipes recorded before "by_sae" (in metrics.json) carried epochs_by_sae / train_tokens_by_sae
    old = {"train_tokens": 384_000, "epochs": 3.0, "epochs_by_sae": {"blocks.20.hook_resid_pre": 6.0},
           "train_tokens_by_sae": {"blocks.20.hook_resid_pre": 10}}
    assert sae_recipe("blocks.20.hook_resid_pre", old) == {"train_tokens": 10, "epochs": 6.0, "batch_size": 4096, "lr": None}
    assert sae_recipe("blocks.5.hook_resid_pre", old)["epochs"] == 3.0


def test_bar_shortfalls_takes_the_worst_of_heldout_and_kinds():
    from interp_lib.evals.zoo_report import bar_shortfalls

    kinds = {"math": {"fve_typical": 0.8, "fve": 0.96, "ce_recovered": 0.98, "kl_div": 0.2, "l0": 64.0},
             "urls": {"fve_typical": 0.86, "fve": 0.97, "ce_recovered": 0.96, "kl_div": 0.01, "l0": 70.0}}
    m = {"fve_typical": 0.9, "fve": 0.95, "ce_recovered": 0.99, "kl_div": 0.05, "l0": 64.0,
         "dead_fraction": 0.06, "by_kind": kinds}
    r = bar_shortfalls(m)
    assert r["fve_typical"] == (0.8, "math", False)
    assert r["fve"] == (0.95, "held-out", True)
    assert r["ce_recovered"] == (0.96, "urls", False)
    assert r["kl_div"] == (0.2, "math", False)
    assert r["l0"] == (70.0, "urls", False)
    assert r["dead_fraction"] == (0.06, "held-out", False)  # the kinds carry no dead fraction
    at_bar = bar_shortfalls({**m, "by_kind": {}, "fve_typical": 0.85, "kl_div": 0.1, "dead_fraction": 0.05})
    assert all(meets for _, _, meets in at_bar.values())  # exactly at the bar meets it


def test_train_zoo_cli_tokens_override_every_budget(monkeypatch):
    import interp_lib.__main__ as cli
    import interp_lib.sae.zoo as zoo_module

    seen = {}
    monkeypatch.setattr(cli, "train_zoo", lambda *a, recipe=None, **k: seen.update(recipe=recipe) or [])
    cli.main_train_zoo(["--tokens", "5000", "--out", "/nonexistent"])
    for _, sae_id in list_saes(pretrained=False):
        assert zoo_module.sae_recipe(sae_id, {**zoo_module.ZOO_RECIPE, **seen["recipe"]})["train_tokens"] == 5000


def test_train_zoo_cli_sources_reach_the_recipe(monkeypatch, capsys):
    import interp_lib.__main__ as cli
    from interp_lib import data

    seen = {}
    monkeypatch.setattr(cli, "train_zoo", lambda *a, recipe=None, **k: seen.update(recipe=recipe) or [])
    cli.main_train_zoo(["--out", "/nonexistent"])
    assert seen["recipe"] is None  # the default corpus: the recipe as it is
    cli.main_train_zoo(["--sources", "all", "--tokens", "5000", "--out", "/nonexistent"])
    assert seen["recipe"]["sources"] == list(data.ALL_SOURCES) and seen["recipe"]["train_tokens"] == 5000
    with pytest.raises(SystemExit) as e:
        cli.main_train_zoo(["--sources", "stdlib,poems", "--out", "/nonexistent"])
    assert e.value.code == 2 and "poems" in capsys.readouterr().err


def test_corpus_split_is_built_per_set_of_sources(monkeypatch):
    import interp_lib.model.activations as activations
    from interp_lib import data

    built = []

    def fake_build(*, sources):
        built.append(sources)
        return [data.Document(f"{s} text number {i} " * 20, s, "prose", f"{s}:{i}")
                for s in sources for i in range(40)]

    monkeypatch.setattr(activations, "_SPLITS", {})
    monkeypatch.setattr(activations.data, "build_corpus", fake_build)
    default = activations.corpus_split("train")
    wide = activations.corpus_split("train", data.ALL_SOURCES)
    assert activations.corpus_split("heldout", data.ALL_SOURCES)
    assert built == [data.SOURCES, data.ALL_SOURCES]  # once per set of sources
    assert {d.source for d in default} == set(data.SOURCES)
    assert {d.source for d in wide} == set(data.ALL_SOURCES)
    monkeypatch.setattr(activations, "_SPLITS", {})
    monkeypatch.undo()
    with pytest.raises(ValueError, match="valid sources"):
        activations.corpus_split("train", ["stdlib", "poems"])
    with pytest.raises(ValueError, match="sequence of source names"):
        activations.corpus_split("train", "stdlib")


def test_train_zoo_rejects_unknown_sae_id(tmp_path):
    from interp_lib.training.zoo import train_zoo

    with pytest.raises(ValueError, match="blocks.15.hook_mlp_out"):
        train_zoo(["smollm2-135m-mlp"], sae_ids=["blocks.14.hook_mlp_out"], out_root=tmp_path)


@pytest.mark.slow
def test_train_zoo_end_to_end_on_a_tiny_recipe(tmp_path, monkeypatch, smollm):
    """train-zoo harvests, trains, saves in SAELens format and evaluates, with the SAE's own token budget."""
    import json

    from sae_lens import SAE

    import interp_lib.model.activations as activations
    import interp_lib.training.zoo as train_zoo_module
    from interp_lib.training.zoo import train_zoo

    monkeypatch.setattr(activations, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(train_zoo_module, "EVAL_KINDS", ("math", "social"))  # two of seven: time
    recipe = {"d_sae": 64, "k": 4, "train_tokens": 1024, "epochs": 1.0, "batch_size": 256, "eval_tokens": 512,
              "by_sae": {"blocks.15.hook_mlp_out": {"train_tokens": 2048, "lr": 1e-3}},
              "sources": ["licences", "maths"]}  # a corpus of the opt-in sources
    rows = train_zoo(["smollm2-135m-mlp"], recipe=recipe, out_root=tmp_path / "saes", progress=False)
    assert [r["sae_id"] for r in rows] == ["blocks.15.hook_mlp_out"]
    folder = tmp_path / "saes" / "smollm2-135m-mlp" / "blocks.15.hook_mlp_out"
    sae = SAE.load_from_disk(folder)
    assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == "blocks.15.hook_mlp_out"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_tokens"] == 4 * 127 and metrics["l0"] <= 4  # eval_tokens honoured, BOS left out
    assert metrics["recipe"]["by_sae"] == {"blocks.15.hook_mlp_out": {"train_tokens": 2048, "lr": 1e-3}}
    assert list(metrics["by_kind"]) == ["math", "social"]  # the evaluation set, kind by kind
    assert all(0 < m["n_tokens"] and m["l0"] <= 4 for m in metrics["by_kind"].values())
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["metadata"]["dataset_path"].endswith(f"{16 * 127} tokens (BOS excluded)")  # its own 2048-token budget
    assert "(sources: licences, maths)" in cfg["metadata"]["dataset_path"]
    assert "(sources: licences, maths)" in metrics["eval"]  # held out from the same corpus


def test_heldout_records_together_equal_one_at_a_time(smollm, monkeypatch):
    """The zoo's records of several SAEs with shared clean passes are each SAE's own record."""
    import interp_lib.training.zoo as train_zoo_module

    monkeypatch.setattr(train_zoo_module, "EVAL_KINDS", ("math",))  # one of seven: time
    math = train_zoo_module.evalset_tokens(smollm, "math", 128)[:2]  # two contexts: time
    monkeypatch.setattr(train_zoo_module, "evalset_tokens", lambda model, kind, ctx_len: math)
    saes = {sae_id: load_sae(release, sae_id) for release, sae_id in list_saes(pretrained=False)
            if sae_id in ("blocks.5.hook_resid_pre", "blocks.15.hook_mlp_out")}
    together = train_zoo_module.heldout_records(saes, smollm, n_tokens=256, progress=False)
    for name, sae in saes.items():
        alone = train_zoo_module.heldout_record(sae, smollm, n_tokens=256, progress=False)
        assert together[name].keys() == alone.keys()
        for key in ("l0", "fve", "ce_recovered", "kl_div", "n_tokens", "dead_fraction"):
            assert together[name][key] == pytest.approx(alone[key], rel=1e-5), key
        assert together[name]["by_kind"]["math"]["ce_recovered"] == pytest.approx(
            alone["by_kind"]["math"]["ce_recovered"], rel=1e-5)


def test_reevaluate_zoo_evaluates_each_group_once_and_rewrites_every_record(monkeypatch):
    import interp_lib.training.zoo as train_zoo_module

    calls, written = [], {}
    monkeypatch.setattr(train_zoo_module, "load_model", lambda name: name)
    monkeypatch.setattr(train_zoo_module, "load_sae", lambda release, sae_id: sae_id)
    monkeypatch.setattr(
        train_zoo_module, "heldout_records",
        lambda saes, model, **kw: calls.append((model, sorted(saes), kw["sources"]))
        or {name: {"fve": 0.5, "by_kind": {}} for name in saes})
    monkeypatch.setattr(train_zoo_module, "write_text_atomic",
                        lambda path, text: written.update({path: json.loads(text)}))
    rows = train_zoo_module.reevaluate_zoo(progress=False)
    pairs = list(list_saes(pretrained=False))
    assert len(calls) == 1 and len(calls[0][1]) == len(pairs)  # one model, one corpus: one group
    assert len(rows) == len(written) == len(pairs)
    for (release, sae_id), meta in zip(pairs, rows):
        assert (meta["release"], meta["sae_id"], meta["fve"]) == (release, sae_id, 0.5)
        assert "recipe" in meta  # the training fields are kept
