"""interp_lib.zoo: listing, paths, loading from disk, hub fallbacks, feature links."""

from __future__ import annotations

import pytest
import torch

import interp_lib.zoo as zoo
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

    import interp_lib.models as models

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
    from interp_lib import profiles

    pairs = set(list_saes())
    for profile in profiles.PROFILES.values():
        for pair in (profile.main_sae, *profile.all_saes):
            assert pair in pairs, pair
    monkeypatch.setenv("INTERP_PROFILE", "gpt2")
    assert profiles.current().model == "gpt2-small"
    monkeypatch.setenv("INTERP_PROFILE", "nope")
    with pytest.raises(ValueError, match="embedded"):
        profiles.current()
