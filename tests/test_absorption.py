"""Tests for interp_lib.absorption: SAEBench's feature-absorption definitions on constructed
cases whose answers are known by hand."""
import math

import pytest
import torch

from interp_lib.absorption import absorption, absorption_scores, split_features
from interp_lib.errors import InvalidArgumentError


def _case():
    """Probe direction e0. Latent 0: the main "starts with S" latent (decoder e0). Latent 1: a
    token latent that also writes S (decoder (e0 + e1) / sqrt 2, cosine 0.71). Latent 2: unrelated
    (decoder e2)."""
    s = 1 / math.sqrt(2)
    W_dec = torch.tensor([[1.0, 0, 0, 0], [s, s, 0, 0], [0, 0, 1.0, 0]])
    p = torch.tensor([2.0, 0, 0, 0])  # any norm
    latents = torch.tensor([
        [3.0, 0.0, 0.0],  # main latent fires fully: no absorption
        [0.0, 3.0 / s, 0.0],  # main silent, latent 1 carries it all: full absorption
        [1.0, 2.0 / s, 0.0],  # main carries 1 of 3, latent 1 the other 2: fraction 2/3
        [0.0, 0.0, 5.0],  # main silent, nothing aligned fires: not absorption
        [0.0, 0.5 / s, 0.0],  # main silent, latent 1 carries only 0.5 of 3 (< 0.4): not absorption
    ])
    acts = torch.tensor([[3.0, 0, 0, 0], [3.0, 3.0, 0, 0], [3.0, 2.0, 0, 0], [3.0, 0, 5.0, 0],
                         [3.0, 0.5, 0, 0]])
    return acts, latents, W_dec, p


def test_absorption_on_a_constructed_case():
    acts, latents, W_dec, p = _case()
    r = absorption(acts, latents, W_dec, p, main_ids=[0])
    torch.testing.assert_close(r.probe_projection, torch.full((5,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(r.fraction, torch.tensor([0.0, 1.0, 2 / 3, 0.0, 0.0], dtype=torch.float64))
    assert r.full.tolist() == [False, True, False, False, False]
    # with latent 1 counted as a main latent, nothing is absorbed any more
    r2 = absorption(acts, latents, W_dec, p, main_ids=[0, 1])
    assert (r2.fraction == 0).all() and not r2.full.any()


def test_absorption_scores_average_over_letters_per_true_positive():
    acts, latents, W_dec, p = _case()
    r = absorption(acts, latents, W_dec, p, main_ids=[0])
    scores = absorption_scores({"s": (r, 5), "t": (r, 10)})
    # letter s: (0 + 1 + 2/3) / 5; letter t: the same sums over 10 true positives
    assert scores["mean_absorption_fraction"] == pytest.approx(((5 / 3) / 5 + (5 / 3) / 10) / 2)
    assert scores["full_absorption_rate"] == pytest.approx((1 / 5 + 1 / 10) / 2)
    with pytest.raises(InvalidArgumentError):
        absorption_scores({"s": (r, 0)})


def test_split_features_follows_the_f1_jumps():
    f1 = [(0.60, [4]), (0.70, [4, 9]), (0.72, [4, 9, 1]), (0.90, [4, 9, 1, 2])]
    assert split_features(f1) == [4, 9]  # 0.70 -> 0.72 is not a jump of more than 0.03
    assert split_features(f1, f1_jump_threshold=0.01) == [4, 9, 1, 2]
    assert split_features([(0.5, [3])]) == [3]
