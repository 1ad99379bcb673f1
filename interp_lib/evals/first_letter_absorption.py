"""First-letter feature absorption end to end, as SAEBench's ``absorption_first_letter`` eval
runs it (code: github.com/adamkarvonen/SAEBench, ``sae_bench/evals/absorption/``, 0.6.0), on
the model's own vocabulary. :mod:`interp_lib.evals.absorption` holds the per-word maths; this module
makes its inputs from a model and an SAE.

Two steps, so that many SAEs on one hook share one model pass:

* :func:`first_letter_activations` (once per model and hook): the words, the ICL prompts, the
  model's activation at each word, and (cached on first use) the model's letter probe;
* :func:`first_letter_absorption` (per SAE, a few CPU seconds): k-sparse probes on the SAE's
  latents, each letter's main latents, and the absorption scores.

**Where it follows SAEBench** (file names under ``sae_bench/evals/absorption/``):

* words: ``vocab.py: get_alpha_tokens``: every vocabulary token whose text is an optional leading
  space followed by ASCII letters only, either case; the label is the first letter lowercased
  (``probing.py: create_dataset_probe_training``); shuffled, 80 % train, 20 % test;
* prompts: ``prompting.py: create_icl_prompt`` with ``eval_config.py``'s template ``"{word} has
  the first letter:"``, 10 ICL examples ``"{ex} has the first letter: {EX[0]}"`` joined and
  preceded by ``"\\n"`` (``prepend_separator_to_first_example``), ICL examples drawn from the
  same split, never the word itself; the activation is read at the word's own token (SAEBench's
  ``prompt_token_pos = -6`` counts back to it from the end of the template; here the word is the
  last token run, so no position depends on the tokenizer);
* the model's probe: ``probing.py: train_multi_probe`` as ``common.py: train_and_save_probes``
  calls it: 26 one-vs-rest logistic probes, ``BCEWithLogitsLoss`` with ``pos_weight`` =
  negatives / positives, Adam, lr 1e-2 decaying exponentially to 1e-5 over 50 epochs, weight
  decay 1e-4, batch 64; a word counts for a letter if its probe logit is > 0
  (``k_sparse_probing.py: build_metrics_df``);
* k-sparse probes (``k_sparse_probing.py: train_k_sparse_probes``): an L1-penalised multi-probe
  on the SAE's latents of the training words (the same Adam recipe, L1 0.01, weight decay 1e-6,
  batch 4096, 50 epochs), then per letter and ``k = 1 .. 10`` its ``k`` largest positive
  weights, a logistic regression on those latents alone (scikit-learn's
  ``LogisticRegression(class_weight="balanced")``, C = 1), its F1 on the test words (logit > 0);
  the main latents are those of :func:`~interp_lib.evals.absorption.split_features` (F1 jump 0.03);
* absorption (``feature_absorption.py``, ``feature_absorption_calculator.py``): on the test
  words the probe gets right, each prompted afresh with 10 ICL examples from the whole
  alphabetic vocabulary; :func:`~interp_lib.evals.absorption.absorption` per word and
  :func:`~interp_lib.evals.absorption.absorption_scores` over the letters whose probe F1 exceeds
  0.6,
  at least 20 such letters (``eval_config.py: min_GT_probe_f1, min_feats_for_eval``; ``main.py``).

**Where it deviates, and why:**

* *Fewer words.* SAEBench prompts every alphabetic token (tens of thousands, a GPU job);
  ``n_words`` (default 3000) are drawn at random from them, which keeps a CPU harvest to seconds
  (a minute or two through TransformerLens). Rare letters (q, x, y, z) then have few test
  words; the F1 > 0.6 filter applies as in SAEBench, and usually leaves out those letters.
* *The SAE's own hook.* SAEBench reads ``blocks.{sae.cfg.hook_layer}.hook_resid_post`` whatever
  the SAE reads (``main.py``, ``common.py``, ``feature_absorption_calculator.py``); here the
  model's probe and the SAE both read the hook the activations were harvested at (for a
  ``hook_resid_pre`` SAE, SAEBench's probe would sit one block later than the SAE).
* *One ICL draw per batch.* SAEBench draws the 10 ICL examples afresh for every word. Here the
  words of a batch share one draw (a fresh draw per batch, none of the batch's words in it), so
  the shared prefix runs through the model once and each word adds one token: its own
  (attention is causal, so the template's tokens after the word cannot change the activation
  read at the word). On a Llama model the lean forward reads the words
  (:meth:`~interp_lib.model.fast_forward.LlamaHarvestForward.after_prefix`: the prefix's keys shared
  by one product; 600 words in about a second on two cores), elsewhere TransformerLens's key-value
  cache (its rows copied per word, about 14 times slower).
* *Ten steps per epoch for the L1 probe.* With all its words in one batch of 4096, SAEBench's 50
  epochs would be 50 Adam steps, too few to move the weights past their random start (the top-k
  latents would be chosen by the initialisation); each epoch takes the ten full-batch steps
  SAEBench takes on a whole vocabulary (:data:`L1_STEPS_PER_EPOCH`), 500 in all. The latents
  stay sparse (CSR products), so this costs about a CPU second.
* *The logistic regressions on k latents* are solved by batched Newton steps in float64 (all 26
  letters at once) instead of 260 scikit-learn fits: the same objective (L2, C = 1, balanced
  class weights, intercept not penalised), the same optimum to within scikit-learn's tolerance,
  and no scikit-learn dependency (as :func:`interp_lib.evals.saebench.logistic_probe`).
"""

from __future__ import annotations

import random
import string
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, NamedTuple

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interp_lib.errors import InvalidArgumentError
from interp_lib.evals.absorption import absorption, absorption_scores, split_features

__all__ = [
    "LETTERS",
    "TEMPLATE",
    "MIN_PROBE_F1",
    "MIN_LETTERS",
    "alpha_words",
    "LetterProbe",
    "FirstLetterData",
    "first_letter_activations",
    "train_letter_probe",
    "KSparse",
    "k_sparse_probes",
    "FirstLetterAbsorption",
    "first_letter_absorption",
]

LETTERS = string.ascii_lowercase
TEMPLATE = "{word} has the first letter:"
"""SAEBench's ``prompt_template``; the answer is ``" " + first letter, upper case``."""
MIN_PROBE_F1 = 0.6
"""SAEBench's ``min_GT_probe_f1``: a letter is scored only where the model's probe reads it
with an F1 above this."""
MIN_LETTERS = 20
"""SAEBench's ``min_feats_for_eval``: fewer letters above :data:`MIN_PROBE_F1`, no score."""
_ALPHA = frozenset(string.ascii_letters)


def alpha_words(tokenizer) -> list[tuple[int, str]]:
    """``(token id, text)`` of every vocabulary token whose text is an optional leading space
    then ASCII letters only (SAEBench's ``get_alpha_tokens``), in token-id order."""
    out = []
    for token, tid in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        text = tokenizer.convert_tokens_to_string([token])
        if token.startswith("\u2581") and not text.startswith(" "):  # SentencePiece's space
            text = " " + text
        body = text[1:] if text.startswith(" ") else text
        if body and all(c in _ALPHA for c in body):
            out.append((tid, text))
    return out


def _label(word: str) -> int:
    return LETTERS.index(word.strip()[0].lower())


def _icl_prefix(examples: list[str]) -> str:
    """SAEBench's ICL prompt up to the word: ``"\\n" + lines + "\\n"``."""
    lines = [TEMPLATE.format(word=ex) + " " + ex.strip()[0].upper() for ex in examples]
    return "\n" + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The model's pass: activations at the words, shared by every SAE on the hook
# --------------------------------------------------------------------------------------------
class LetterProbe(NamedTuple):
    """The model's 26 one-vs-rest first-letter probes and how they do on the test words."""

    weight: Tensor
    """``[26, d_in]``: letter ``i``'s probe direction is row ``i``."""
    bias: Tensor
    """``[26]``."""
    test_scores: Tensor
    """``[n_test, 26]`` logits on the test words (probe-evaluation prompts)."""
    f1: Tensor
    """``[26]`` float64: F1 of "logit > 0" per letter on the test words."""
    accuracy: float
    """26-way accuracy (the largest logit names the letter) on the test words."""


@dataclass(eq=False)
class FirstLetterData:
    """What :func:`first_letter_activations` harvests, for any number of SAEs on ``hook``."""

    hook: str
    """The hook the activations were read at."""
    train_words: list[str]
    """Words the probes are trained on."""
    train_acts: Tensor = field(repr=False)
    """``[n_train, d_in]`` activation at each training word."""
    test_words: list[str]
    """Held-out words: probes are scored, and absorption measured, on these."""
    test_acts: Tensor = field(repr=False)
    """``[n_test, d_in]`` activation at each test word, ICL examples from the test words."""
    absorption_acts: Tensor = field(repr=False)
    """``[n_test, d_in]`` the test words prompted afresh, ICL examples from the whole
    alphabetic vocabulary (SAEBench's absorption calculator)."""
    seed: int = 42
    """Seed of the word draw, the prompts and the probe's training."""

    @property
    def train_labels(self) -> Tensor:
        """``[n_train]`` letter index (0 = a) of each training word."""
        return torch.tensor([_label(w) for w in self.train_words])

    @property
    def test_labels(self) -> Tensor:
        """``[n_test]`` letter index of each test word."""
        return torch.tensor([_label(w) for w in self.test_words])

    @cached_property
    def probe(self) -> LetterProbe:
        """The model's letter probe, trained on first use and kept (:func:`train_letter_probe`)."""
        return train_letter_probe(self)

    def readable_letters(self, min_probe_f1: float = MIN_PROBE_F1) -> int:
        """How many letters the model's probe reads with F1 above ``min_probe_f1`` (the letters
        absorption is scored on; :func:`first_letter_absorption` wants ``min_letters``)."""
        return int((self.probe.f1 > min_probe_f1).sum())


def _prefix_cache(model, prefix: Tensor, batch: int, stop: int):
    """A frozen key-value cache of ``prefix: [pos]`` run once, shared by ``batch`` rows."""
    from transformer_lens import TransformerLensKeyValueCache as HookedTransformerKeyValueCache

    cache = HookedTransformerKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    model(prefix[None], past_kv_cache=cache, stop_at_layer=stop)
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.expand(batch, -1, -1, -1)
        entry.past_values = entry.past_values.expand(batch, -1, -1, -1)
    cache.previous_attention_mask = cache.previous_attention_mask.expand(batch, -1)
    cache.freeze()
    return cache


def _word_acts(
    model,
    hook: str,
    words: list[tuple[int, str]],
    pool: list[str],
    n_icl: int,
    batch_size: int,
    rng: random.Random,
    bar,
) -> Tensor:
    """``[len(words), d]`` activation at each word's token after a fresh ICL prefix per batch
    (``words``: ``(token id, text)``; ICL examples drawn from ``pool``, never a batch's word).

    Attention is causal, so the template's tokens after the word (`` has the first letter:``)
    cannot change the activation at the word: only the word's own token is run (by the lean
    Llama forward's ``after_prefix`` where it applies, else through TransformerLens's key-value
    cache)."""
    from interp_lib.model.fast_forward import fast_forward_for, fast_forward_supported
    from interp_lib.model.hooks import stop_layer

    stop = stop_layer([hook])
    lean = fast_forward_for(model) if fast_forward_supported(model, [hook]) else None
    batch_size = max(1, min(batch_size, len(pool) - n_icl))  # leave n_icl examples to draw
    out = []
    for start in range(0, len(words), batch_size):
        chunk = words[start : start + batch_size]
        banned = {text for _, text in chunk}
        drawn = rng.sample(pool, min(len(pool), n_icl + len(chunk)))
        examples = [ex for ex in drawn if ex not in banned][:n_icl]
        prefix = model.to_tokens(_icl_prefix(examples))[0]
        tokens = torch.tensor([tid for tid, _ in chunk], device=model.cfg.device)
        if lean is not None:  # the lean Llama forward: the prefix's keys shared, not copied
            out.append(lean.after_prefix(prefix, tokens, [hook])[hook].cpu())
        else:
            cache = _prefix_cache(model, prefix, len(chunk), stop)
            _, acts = model.run_with_cache(
                tokens[:, None], names_filter=hook, stop_at_layer=stop, past_kv_cache=cache
            )
            out.append(acts[hook][:, 0].float().cpu())
        bar.update(len(chunk))
    return torch.cat(out)


@torch.no_grad()
def first_letter_activations(
    model,
    hook: str,
    n_words: int = 3000,
    *,
    test_fraction: float = 0.2,
    n_icl: int = 10,
    batch_size: int = 256,
    seed: int = 42,
) -> FirstLetterData:
    """Draw ``n_words`` alphabetic tokens, prompt each with SAEBench's ICL template and read the
    model's ``[d_in]`` activation at the word at ``hook`` (module doc). One pass for all SAEs."""
    from interp_lib.model.hooks import check_hooks

    check_hooks(model, hook)
    vocab = alpha_words(model.tokenizer)
    if not 0 < test_fraction < 1:
        raise InvalidArgumentError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    n_train = int(n_words * (1 - test_fraction))
    if not (min(n_train, n_words - n_train) > n_icl and n_words <= len(vocab)):
        raise InvalidArgumentError(
            f"n_words={n_words} must be at most {len(vocab)} (the model's alphabetic tokens) and "
            f"leave more than n_icl={n_icl} words in each of the train and test splits "
            f"(test_fraction={test_fraction})"
        )
    rng = random.Random(seed)
    chosen = rng.sample(vocab, n_words)
    train, test = chosen[:n_train], chosen[n_train:]
    texts = [[t for _, t in part] for part in (train, test, vocab)]
    with tqdm(total=len(train) + 2 * len(test), desc="first-letter prompts", leave=False) as bar:
        runs = [
            _word_acts(model, hook, part, pool, n_icl, batch_size, rng, bar)
            for part, pool in ((train, texts[0]), (test, texts[1]), (test, texts[2]))
        ]
    return FirstLetterData(hook, texts[0], runs[0], texts[1], runs[1], runs[2], seed)


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------
def _multi_probe(
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    weight_decay: float,
    l1: float,
    seed: int,
    epochs: int = 50,
    lr: float = 1e-2,
    end_lr: float = 1e-5,
    min_steps_per_epoch: int = 1,
):
    """SAEBench's ``train_multi_probe``: ``x: [n, d]``, one-hot ``y: [n, c]`` -> ``(W [c, d],
    b [c])``, one-vs-rest logistic probes by Adam on ``BCEWithLogitsLoss(pos_weight)`` (+ ``l1``
    times the mean over probes of ``|W_c|_1``). The gradient is written out, so that sparse
    latents can stay sparse (a full batch of them costs a few sparse products). Where the data
    fit in one batch, each epoch takes ``min_steps_per_epoch`` full-batch steps."""
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape
    c = y.shape[1]
    y = y.float()
    pos_weight = (n - y.sum(0)) / y.sum(0).clamp(min=1)
    bound = d**-0.5  # nn.Linear's initialisation, from a seeded generator
    W = torch.empty(c, d).uniform_(-bound, bound, generator=gen)
    b = torch.empty(c).uniform_(-bound, bound, generator=gen)
    P = torch.cat([W, b[:, None]], dim=1)  # [c, d + 1]: the bias is a column of ones in x
    x = torch.cat([x, torch.ones(n, 1)], dim=1)
    l1_grad = torch.full_like(P, l1 / c)  # d/dP of l1 * mean_c |W_c|_1, times sign(P)
    l1_grad[:, -1] = 0.0
    full = batch_size >= n
    xs, xt = x, x.T
    if full and float((x != 0).double().mean()) < 0.1:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is what we want
            warnings.simplefilter("ignore", UserWarning)
            xs, xt = x.to_sparse_csr(), x.T.contiguous().to_sparse_csr()
    # torch.optim.Adam (L2 weight decay added to the gradient), written out on one tensor
    m, v, beta1, beta2, step = torch.zeros_like(P), torch.zeros_like(P), 0.9, 0.999, 0
    gamma = (end_lr / lr) ** (1 / epochs)  # ExponentialLR, stepped once per epoch
    starts = [0] * min_steps_per_epoch if full else range(0, n, batch_size)
    for epoch in range(epochs):
        order = None if full else torch.randperm(n, generator=gen)
        for start in starts:
            idx = None if full else order[start : start + batch_size]
            xb, xbt, yb = (xs, xt, y) if full else (x[idx], x[idx].T, y[idx])
            if not full or step == 0:  # d/dz of the loss is slope * sigmoid(z) - offset
                slope = (pos_weight * yb + 1 - yb) / yb.numel()  # (mean over batch and probes)
                offset = pos_weight * yb / yb.numel()
            g = torch.sigmoid(xb @ P.T).mul_(slope).sub_(offset)
            grad = (xbt @ g).T + l1_grad * P.sign() + weight_decay * P
            step += 1
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / (1 - beta2**step) ** 0.5).add_(1e-8)
            P.addcdiv_(m, denom, value=-lr * gamma**epoch / (1 - beta1**step))
    return P[:, :-1], P[:, -1]


@contextmanager
def _one_thread() -> Iterator[None]:
    """The letter probe's batch-64 steps are many small products: one thread runs them as fast
    as two, and a busy CPU does not make a second thread stall them (the thread count is
    restored afterwards). The k-sparse probes' CSR products are bigger and run 1.3-1.6x faster
    on two threads (same results), so they keep the caller's threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _f1(pred: Tensor, truth: Tensor) -> Tensor:
    """F1 along the last dimension of boolean ``pred`` and ``truth`` (0 where undefined)."""
    tp = (pred & truth).sum(-1).double()
    denom = pred.sum(-1).double() + truth.sum(-1).double()
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))


@_one_thread()
def train_letter_probe(data: FirstLetterData) -> LetterProbe:
    """SAEBench's first-letter probe on the model's activations (module doc): 26 probes at once."""
    y = torch.nn.functional.one_hot(data.train_labels, len(LETTERS))
    w, b = _multi_probe(
        data.train_acts, y, batch_size=64, weight_decay=1e-4, l1=0.0, seed=data.seed
    )
    scores = data.test_acts @ w.T + b
    truth = torch.nn.functional.one_hot(data.test_labels, len(LETTERS)).bool()
    f1 = _f1((scores > 0).T, truth.T)
    accuracy = float((scores.argmax(-1) == data.test_labels).double().mean())
    return LetterProbe(w, b, scores, f1, accuracy)


def _balanced_logistic(
    x: Tensor, y: Tensor, C: float = 1.0, iters: int = 50, start: Tensor | None = None
) -> Tensor:
    """Batched ``LogisticRegression(class_weight="balanced", C=C)``: ``x: [b, n, k]``,
    ``y: [b, n]`` in {0, 1} -> ``[b, k + 1]`` (weights, intercept), by damped Newton steps from
    ``start`` (default 0).

    Rows whose features are all 0 differ only in their label: each class's such rows are merged
    into one row carrying their summed weight (the same objective, on far fewer rows for sparse
    latents)."""
    x, y = x.double(), y.double()
    n_pos = y.sum(-1, keepdim=True).clamp(min=1)
    n_neg = (1 - y).sum(-1, keepdim=True).clamp(min=1)
    sw = C * torch.where(y > 0, y.shape[1] / (2 * n_pos), y.shape[1] / (2 * n_neg))
    active = x.ne(0).any(dim=-1)  # [b, n]
    idle = sw * ~active
    merged_sw = torch.stack([(idle * y).sum(-1), (idle * (1 - y)).sum(-1)], dim=-1)  # [b, 2]
    order = active.double().argsort(dim=-1, descending=True, stable=True)
    order = order[:, : int(active.sum(-1).max())]  # each row's active rows first, then padding
    b, k = x.shape[0], x.shape[-1]
    x = torch.cat([x.gather(1, order[..., None].expand(-1, -1, k)), x.new_zeros(b, 2, k)], 1)
    y = torch.cat([y.gather(1, order), y.new_tensor([1.0, 0.0]).expand(b, 2)], dim=1)
    sw = torch.cat([sw.gather(1, order) * active.gather(1, order), merged_sw], dim=1)
    x = torch.cat([x, torch.ones(*x.shape[:2], 1, dtype=torch.float64)], dim=-1)
    s = 2 * y - 1
    reg = torch.ones(x.shape[-1], dtype=torch.float64)
    reg[-1] = 0.0  # the intercept is not penalised

    def objective(w):
        z = (x @ w[..., None])[..., 0]
        return 0.5 * (reg * w * w).sum(-1) + (sw * torch.nn.functional.softplus(-s * z)).sum(-1)

    w = torch.zeros(x.shape[0], x.shape[-1], dtype=torch.float64) if start is None else start
    f = objective(w)
    for _ in range(iters):
        z = (x @ w[..., None])[..., 0]
        p = torch.sigmoid(s * z)
        grad = reg * w - (x * (sw * s * (1 - p))[..., None]).sum(1)
        hess = (x * (sw * p * (1 - p))[..., None]).transpose(1, 2) @ x
        hess = hess + torch.diag_embed(reg.expand_as(w) + 1e-10)
        step = torch.linalg.solve(hess, grad[..., None])[..., 0]
        t = torch.ones(len(w), dtype=torch.float64)
        for _ in range(20):  # backtrack where the full step does not lower the objective
            f_new = objective(w - t[:, None] * step)
            worse = f_new > f + 1e-12
            if not worse.any():
                break
            t = torch.where(worse, t / 2, t)
        w, f = w - t[:, None] * step, torch.minimum(f_new, f)
        if (t[:, None] * step).abs().max() < 1e-7:
            break
    return w


class KSparse(NamedTuple):
    """k-sparse probes on an SAE's latents, per letter and ``k``."""

    feature_ids: Tensor
    """``[26, max_k]``: the latents by decreasing L1-probe weight; the k-probe uses the first k."""
    f1: Tensor
    """``[26, max_k]`` float64: the k-probe's F1 on the test words."""


L1_STEPS_PER_EPOCH = 10
"""Adam steps per epoch of the L1 probe on latents, as SAEBench takes them on SmolLM2's whole
alphabetic vocabulary (80 % of 47,078 words in batches of 4096)."""


def k_sparse_probes(
    train_latents: Tensor,
    train_labels: Tensor,
    test_latents: Tensor,
    test_labels: Tensor,
    max_k: int = 10,
    seed: int = 42,
) -> KSparse:
    """SAEBench's k-sparse probing on latents ``[n, d_sae]`` with letter labels ``[n]``."""
    y = torch.nn.functional.one_hot(train_labels, len(LETTERS))
    w, _ = _multi_probe(
        train_latents.float(),
        y,
        batch_size=4096,
        weight_decay=1e-6,
        l1=0.01,
        seed=seed,
        min_steps_per_epoch=L1_STEPS_PER_EPOCH,
    )
    ids = w.topk(max_k, dim=-1).indices  # [26, max_k]
    letters = torch.arange(len(LETTERS))
    ytr = (train_labels[None] == letters[:, None]).double()  # [26, n_train]
    truth = test_labels[None] == letters[:, None]
    f1 = torch.zeros(len(LETTERS), max_k, dtype=torch.float64)
    wk = torch.zeros(len(LETTERS), 1, dtype=torch.float64)
    for k in range(1, max_k + 1):
        xtr = train_latents.T[ids[:, :k]].transpose(1, 2)  # [26, n_train, k]
        start = torch.cat([wk[:, :-1], torch.zeros(len(LETTERS), 1), wk[:, -1:]], dim=1)
        wk = _balanced_logistic(xtr, ytr, start=start.double())  # warm start from k - 1
        xte = test_latents.T[ids[:, :k]].transpose(1, 2).double()
        scores = (xte @ wk[:, :k, None])[..., 0] + wk[:, k:]
        f1[:, k - 1] = _f1(scores > 0, truth)
    return KSparse(ids, f1)


# --------------------------------------------------------------------------------------------
# Absorption per SAE
# --------------------------------------------------------------------------------------------
class FirstLetterAbsorption(NamedTuple):
    """What :func:`first_letter_absorption` returns for one SAE."""

    mean_absorption_fraction: float
    """SAEBench's ``mean_absorption_fraction_score``: per letter, the absorption fractions summed
    over the probe's true positives and divided by their number; averaged over letters."""
    full_absorption_rate: float
    """SAEBench's ``mean_full_absorption_score``: the same with full absorption (0 or 1)."""
    per_letter: pd.DataFrame
    """One row per letter: ``probe_f1``, ``true_positives``, ``main_latents``, ``sparse_f1`` (of
    the k-probe on the main latents), ``absorption_fraction``, ``full_absorption_rate``,
    ``n_full``, ``counted`` (probe F1 above the threshold: in the scores)."""
    probe_accuracy: float
    """The model's probe: 26-way accuracy on the test words."""
    probe_f1: float
    """The model's probe: F1 per letter, averaged over the 26 letters."""
    n_train_words: int
    """Words the probes were trained on."""
    n_test_words: int
    """Held-out words; absorption is measured on the probe's true positives among them."""


def first_letter_absorption(
    data: FirstLetterData,
    sae,
    *,
    max_k: int = 10,
    f1_jump_threshold: float = 0.03,
    min_probe_f1: float = MIN_PROBE_F1,
    min_letters: int = MIN_LETTERS,
) -> FirstLetterAbsorption:
    """SAEBench's first-letter absorption of ``sae`` (an SAE reading ``data.hook``) from the
    harvested ``data``: k-sparse probes, main latents, absorption per letter (module doc)."""
    d_sae, d_in = sae.W_dec.shape
    if d_in != data.train_acts.shape[1]:
        raise InvalidArgumentError(
            f"sae reads {d_in}-wide activations, but data were harvested at {data.hook}, "
            f"{data.train_acts.shape[1]} wide: harvest at the SAE's hook (hooks.sae_hook(sae))"
        )
    if not 1 <= max_k <= d_sae:
        raise InvalidArgumentError(f"max_k must lie in [1, {d_sae}] (the SAE's width), got {max_k}")
    probe = data.probe
    dtype = sae.W_dec.dtype
    device = sae.W_dec.device

    def encode(acts: Tensor) -> Tensor:
        with torch.no_grad():
            return sae.encode(acts.to(device, dtype)).float().cpu()

    train_latents, test_latents = encode(data.train_acts), encode(data.test_acts)
    absorption_latents = encode(data.absorption_acts)
    sparse = k_sparse_probes(
        train_latents,
        data.train_labels,
        test_latents,
        data.test_labels,
        max_k=max_k,
        seed=data.seed,
    )
    labels = data.test_labels
    W_dec = sae.W_dec.detach().double().cpu()
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # only cosines are used
    rows, results = {}, {}
    for i, letter in enumerate(LETTERS):
        f1_by_k = [
            (float(sparse.f1[i, k]), sparse.feature_ids[i, : k + 1].tolist()) for k in range(max_k)
        ]
        main = split_features(f1_by_k, f1_jump_threshold)
        tp = ((labels == i) & (probe.test_scores[:, i] > 0)).nonzero()[:, 0]
        row = {
            "probe_f1": float(probe.f1[i]),
            "true_positives": len(tp),
            "main_latents": main,
            "sparse_f1": float(sparse.f1[i, len(main) - 1]),
            "absorption_fraction": float("nan"),
            "full_absorption_rate": float("nan"),
            "n_full": 0,
            "counted": bool(probe.f1[i] > min_probe_f1),
        }
        if len(tp):
            # the latents silent on all these words project 0 and cannot absorb: leave them out
            f = absorption_latents[tp]
            keep = f.gt(0).any(dim=0)
            keep[main] = True
            ids = keep.nonzero()[:, 0]
            local = torch.searchsorted(ids, torch.tensor(main)).tolist()
            r = absorption(data.absorption_acts[tp], f[:, ids], W_dec[ids], probe.weight[i], local)
            row.update(
                absorption_fraction=float(r.fraction.sum()) / len(tp),
                full_absorption_rate=float(r.full.double().sum()) / len(tp),
                n_full=int(r.full.sum()),
            )
            if row["counted"]:
                results[letter] = (r, len(tp))
        rows[letter] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    if len(results) < min_letters:
        raise InvalidArgumentError(
            f"the model's probe reads only {len(results)} letters with F1 > {min_probe_f1} at "
            f"{data.hook}, fewer than min_letters={min_letters}: harvest more words (n_words) or "
            "lower min_letters; check first with data.readable_letters()"
        )
    scores = absorption_scores(results)
    return FirstLetterAbsorption(
        scores["mean_absorption_fraction"],
        scores["full_absorption_rate"],
        table,
        probe.accuracy,
        float(probe.f1.mean()),
        len(data.train_words),
        len(data.test_words),
    )
