"""Tests for interp_lib.evals.absorption (SAEBench's feature-absorption definitions) and
interp_lib.evals.first_letter_absorption (the pipeline from a model and an SAE to the scores), on constructed cases
whose answers are known by hand."""
import math
import random
import string

import pytest
import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals import first_letter_absorption as fl
from interp_lib.evals.absorption import absorption, absorption_scores, split_features


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


# --------------------------------------------------------------------------------------------
# interp_lib.evals.first_letter_absorption: the pipeline from a model and an SAE to the scores
# --------------------------------------------------------------------------------------------
class _ByteLevelTokenizer:
    """Just enough of a Hugging Face tokenizer: GPT-2's "Ġ" and SentencePiece's "▁" spaces."""

    vocab = {"Ġcat": 0, "cat": 1, "ĠCat": 2, "Ġ123": 3, "Ġcaf\u00e9": 4, "Ġ": 5, "c-a": 6,
             "\u2581dog": 7, "<|endoftext|>": 8, "ĠcatĠdog": 9, "Ġa": 10, "ĠX": 11}

    def get_vocab(self):
        return dict(self.vocab)

    def convert_tokens_to_string(self, tokens):
        (token,) = tokens
        return token.replace("Ġ", " ").replace("\u2581", "")  # SentencePiece drops a first space


def test_alpha_words_keeps_letters_only_with_an_optional_leading_space():
    words = fl.alpha_words(_ByteLevelTokenizer())
    assert words == [(0, " cat"), (1, "cat"), (2, " Cat"), (7, " dog"), (10, " a"), (11, " X")]
    assert [fl._label(w) for _, w in words] == [2, 2, 2, 3, 0, 23]


def test_harvest_reads_the_word_as_the_full_saebench_prompt_does(tiny_gpt2):
    """The shared-prefix key-value cache gives the activation that the whole ICL prompt, run at
    once, has at SAEBench's position -6 (the word; the template adds 5 tokens here)."""
    model, hook = tiny_gpt2, "blocks.1.hook_resid_pre"
    vocab = fl.alpha_words(model.tokenizer)
    assert "cat" in [t for _, t in vocab] and not any(t in ("<unk>", ".", "1") for _, t in vocab)
    words, pool = vocab[:5], [t for _, t in vocab]
    with torch.no_grad():
        got = fl._word_acts(model, hook, words, pool, n_icl=3, batch_size=2,
                            rng=random.Random(0), bar=type("B", (), {"update": lambda s, n: 0})())
    rng = random.Random(0)
    for start in range(0, 5, 2):
        chunk = words[start : start + 2]
        drawn = rng.sample(pool, 3 + len(chunk))
        examples = [e for e in drawn if e not in {t for _, t in chunk}][:3]
        for j, (_, word) in enumerate(chunk):
            prompt = fl._icl_prefix(examples) + fl.TEMPLATE.format(word=word)
            _, cache = model.run_with_cache(prompt, names_filter=hook)
            torch.testing.assert_close(got[start + j], cache[hook][0, -6], atol=1e-5, rtol=1e-5)
    data = fl.first_letter_activations(model, hook, n_words=15, test_fraction=0.4, n_icl=3,
                                       batch_size=4)
    assert (len(data.train_words), len(data.test_words)) == (9, 6)
    assert data.train_acts.shape == (9, 32) and data.absorption_acts.shape == (6, 32)
    assert not set(data.train_words) & set(data.test_words)
    with pytest.raises(InvalidArgumentError, match="n_words"):
        fl.first_letter_activations(model, hook, n_words=8, n_icl=3)


class _PlantedSAE(torch.nn.Module):
    """A ReLU SAE on ``[letters e_0..e_25 | token dims t_0, t_1 | noise]``: latent i reads and
    writes letter i; latent 26 + j is the token latent of absorbed word j, decoder
    (e_s + t_j) / sqrt 2, and it switches latent s (starts with S) off on that word."""

    def __init__(self, d: int):
        super().__init__()
        s = string.ascii_lowercase.index("s")
        self.W_enc = torch.zeros(d, 28)
        self.W_enc[:26, :26] = torch.eye(26)
        self.W_dec = torch.zeros(28, d)
        self.W_dec[:26, :26] = torch.eye(26)
        for j in range(2):
            self.W_enc[26 + j, 26 + j] = math.sqrt(2)
            self.W_enc[26 + j, s] = -10.0
            self.W_dec[26 + j, [s, 26 + j]] = 1 / math.sqrt(2)

    def encode(self, x):
        return torch.relu(x @ self.W_enc)


def _planted_data(d=36, per_letter=12, n_test=4, seed=0):
    """Each letter: ``per_letter`` words, activation 3 e_letter + small noise; the first two test
    S-words also carry 3 t_j (their own token direction)."""
    g = torch.Generator().manual_seed(seed)
    rows = {"train": ([], []), "test": ([], [])}
    for i, letter in enumerate(string.ascii_lowercase):
        for n in range(per_letter):
            x = torch.zeros(d)
            x[i] = 3.0
            x[28:] = 0.1 * torch.randn(d - 28, generator=g)
            split = "test" if n < n_test else "train"
            if letter == "s" and n < 2:
                x[26 + n] = 3.0
            rows[split][0].append(f"{letter}{'xyz'[n % 3]}{n}")
            rows[split][1].append(x)
    (trw, tra), (tew, tea) = rows["train"], rows["test"]
    tea = torch.stack(tea)
    return fl.FirstLetterData("blocks.0.hook_resid_pre", trw, torch.stack(tra), tew, tea, tea)


def test_letter_probe_reads_planted_letters():
    probe = _planted_data().probe
    assert probe.accuracy == 1.0 and (probe.f1 == 1.0).all()
    assert probe.weight.shape == (26, 36) and probe.test_scores.shape == (26 * 4, 26)


def test_readable_letters_counts_what_the_probe_reads():
    """Planted letters: all 26 read; activations that carry no letter (a model that does not
    know its words' spelling, as the rehearsal's random GPT-2): too few, and the absorption
    refuses with a pointer to the count rather than scoring noise."""
    data = _planted_data()
    assert data.readable_letters() == 26 and data.readable_letters(min_probe_f1=1.0) == 0
    g = torch.Generator().manual_seed(1)
    noise = fl.FirstLetterData(
        data.hook,
        data.train_words,
        torch.randn(data.train_acts.shape, generator=g),
        data.test_words,
        *[torch.randn(data.test_acts.shape, generator=g)] * 2,
    )
    assert noise.readable_letters() < fl.MIN_LETTERS
    with pytest.raises(InvalidArgumentError, match="readable_letters"):
        fl.first_letter_absorption(noise, _PlantedSAE(36))


def test_planted_absorption_of_starts_with_s():
    """Two of the four test S-words are absorbed (their token latent fires instead of the S
    latent): letter s scores 2/4 for both measures, every other letter 0."""
    data = _planted_data()
    r = fl.first_letter_absorption(data, _PlantedSAE(36))
    t = r.per_letter
    assert t.loc["s", "main_latents"] == [18] and t.loc["a", "main_latents"] == [0]
    assert (t["true_positives"] == 4).all() and t["counted"].all()
    assert t.loc["s", "absorption_fraction"] == pytest.approx(0.5)
    assert t.loc["s", "full_absorption_rate"] == pytest.approx(0.5) and t.loc["s", "n_full"] == 2
    assert (t.drop("s")[["absorption_fraction", "full_absorption_rate"]] == 0).all().all()
    assert r.mean_absorption_fraction == pytest.approx(0.5 / 26)
    assert r.full_absorption_rate == pytest.approx(0.5 / 26)
    assert (r.probe_accuracy, r.probe_f1, r.n_train_words, r.n_test_words) == (1.0, 1.0, 208, 104)
    with pytest.raises(InvalidArgumentError, match="min_letters"):
        fl.first_letter_absorption(data, _PlantedSAE(36), min_letters=27)
    with pytest.raises(InvalidArgumentError, match="36 wide"):
        fl.first_letter_absorption(data, _PlantedSAE(40))
    with pytest.raises(InvalidArgumentError, match="max_k"):
        fl.first_letter_absorption(data, _PlantedSAE(36), max_k=29)


def test_balanced_logistic_matches_the_lbfgs_probe_on_balanced_data():
    """On classes of equal size the balanced weights are all 1: the batched Newton solution is
    logistic_probe's (scikit-learn's objective), so their test predictions agree."""
    from interp_lib.evals.saebench import logistic_probe

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.8 * torch.randn(200, generator=g) > 0).long()
    y[torch.randperm(200, generator=g)[:100]] = 1 - y[torch.randperm(200, generator=g)[:100]]
    y = torch.cat([torch.ones(100), torch.zeros(100)]).long()[torch.randperm(200, generator=g)]
    x = x + 0.7 * (2 * y[:, None] - 1) * torch.tensor([1.0, 0.3, 0.0])
    w = fl._balanced_logistic(x[None], y[None].double())[0]
    tx = torch.randn(500, 3, generator=g)
    ours = ((tx.double() @ w[:3] + w[3]) > 0).double()
    acc = logistic_probe(x, y, tx, torch.ones(500))  # fraction predicted positive
    assert float(ours.mean()) == pytest.approx(acc, abs=1e-9)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # a second thread stalls the small batches on a busy CPU
def test_first_letter_absorption_on_the_real_model_and_shipped_sae(smollm):
    """Smoke run: SmolLM2-135M and the shipped middle-layer SAE, a few hundred words."""
    from interp_lib import load_sae
    from interp_lib.model import hooks, profiles

    sae = load_sae(*profiles.PROFILES["embedded"].main_sae)
    data = fl.first_letter_activations(smollm, hooks.sae_hook(sae), n_words=400)
    assert data.train_acts.shape == (320, 576) and data.absorption_acts.shape == (80, 576)
    assert torch.isfinite(data.train_acts).all() and torch.isfinite(data.absorption_acts).all()
    r = fl.first_letter_absorption(data, sae, min_letters=1)
    assert 0.3 < r.probe_accuracy <= 1
    assert 0 <= r.mean_absorption_fraction <= 1 and 0 <= r.full_absorption_rate <= 1
    assert list(r.per_letter.index) == list(string.ascii_lowercase)


def _saebench_prompting():
    """sae-bench's vocab and prompting modules (plain Python: no scikit-learn needed), or skip.
    E.g. ``pip download sae-bench==0.6.0 --no-deps``, unpacked into a folder on ``PYTHONPATH``."""
    vocab = pytest.importorskip("sae_bench.evals.absorption.vocab")
    prompting = pytest.importorskip("sae_bench.evals.absorption.prompting")
    return vocab, prompting


def test_words_and_prompts_equal_sae_bench(tiny_gpt2):
    vocab, prompting = _saebench_prompting()
    for tok in (_ByteLevelTokenizer(), tiny_gpt2.tokenizer):
        assert sorted(t for _, t in fl.alpha_words(tok)) == sorted(vocab.get_alpha_tokens(tok))
    examples = [" cat", "Dog", " x", " Zebra"]
    for word in (" short", "Sun", " a"):
        theirs = prompting.create_icl_prompt(
            word, examples, base_template=fl.TEMPLATE, max_icl_examples=len(examples),
            shuffle_examples=False, prepend_separator_to_first_example=True,
        )
        assert theirs.base == fl._icl_prefix(examples) + fl.TEMPLATE.format(word=word)
        assert vocab.LETTERS.index(theirs.answer.strip().lower()) == fl._label(word)


@pytest.mark.slow
def test_alpha_words_of_the_real_tokenizer_equal_sae_bench(smollm):
    vocab, _ = _saebench_prompting()
    ours = [t for _, t in fl.alpha_words(smollm.tokenizer)]
    assert sorted(ours) == sorted(vocab.get_alpha_tokens(smollm.tokenizer))
    assert len(ours) > 40_000


def test_balanced_logistic_equals_scikit_learn():
    """SAEBench's k-probe is ``LogisticRegression(max_iter=500, class_weight="balanced")``: on
    sparse latents (many all-zero rows, which the solver merges), unbalanced classes, 26 problems
    at once, the batched Newton solution is scikit-learn's. Skips without scikit-learn."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    b, n, k = 26, 300, 4
    y = (torch.rand(b, n, generator=g) < 0.1).double()
    x = torch.rand(b, n, k, generator=g) * (torch.rand(b, n, k, generator=g) < 0.15)
    x = x + 0.8 * y[..., None] * (torch.rand(b, n, k, generator=g) < 0.5)
    ours = fl._balanced_logistic(x, y)
    for i in range(b):
        sk = linear_model.LogisticRegression(max_iter=500, class_weight="balanced", tol=1e-10)
        sk.fit(x[i].numpy(), y[i].numpy())
        theirs = torch.tensor([*sk.coef_[0], sk.intercept_[0]], dtype=torch.float64)
        torch.testing.assert_close(ours[i], theirs, atol=1e-5, rtol=1e-4)
