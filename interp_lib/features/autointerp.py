"""Automated interpretability: a language model explains a feature, and the explanation is scored.

Two steps, after Bills et al. (2023) and the *detection* score of Paulo et al. (2024):

1. **Explain.** Show the explainer model a feature's top-activating examples from the training side
   of the corpus, the token where the feature peaks marked ``<<like this>>``, and ask it (through
   its chat template, greedy decoding) what the marked tokens have in common: :func:`explain`.
2. **Score by detection.** On held-out text (files never trained on), take windows where the
   feature fires (positives) and windows where it does not fire at all (negatives), ask the model
   whether each window matches the explanation, and read ``logit(Yes) - logit(No)`` at the first
   token of its answer (:func:`detection_scores`). The score of the explanation is the AUROC of
   that number against the truth (:func:`auroc`): 0.5 is chance, 1 is perfect.

A score means little on its own: :func:`derangement` gives every feature another feature's
explanation, the baseline that the real explanations have to beat, and :func:`token_explanation`
a control that needs no explainer. :func:`auroc_table` turns scored windows into one AUROC per
feature and explanation.

Feature splitting (Bricken et al., 2023), the other question of the book's last chapter, reads a
narrow and a wide SAE side by side: :func:`split_families` lists the narrow features that several
wide ones correlate with best, and how those wide features share the narrow one's tokens;
:func:`family_table` shows one family.

Everything works on :class:`CorpusActs`, the sparse feature activations of a tokenised corpus
(:func:`corpus_acts`), with position 0 (BOS) and tokens of massive activation norm (attention sinks,
see :data:`interp_lib.model.massive.PAGE_FACTOR`) left out, as everywhere in the book.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, Sequence

import torch

from interp_lib.errors import InvalidArgumentError
from interp_lib.features.stats import sparse_encode
from interp_lib.model.fast_forward import fast_forward_for, fast_forward_supported
from interp_lib.model.massive import PAGE_FACTOR, typical_rows
from interp_lib.model.tokens import token_strings

__all__ = [
    "CorpusActs",
    "Window",
    "corpus_acts",
    "select_features",
    "widen_band",
    "top_windows",
    "spread_windows",
    "negative_windows",
    "window_text",
    "chat_prompt",
    "explain_prompt",
    "explain",
    "explain_many",
    "generate_greedy",
    "detection_prompt",
    "detection_scores",
    "derangement",
    "top_token",
    "token_explanation",
    "names_token",
]

MARK = ("<<", ">>")
"""How the token where a feature peaks is marked in the examples the explainer sees."""
EXPLAIN_BEFORE, EXPLAIN_AFTER = 12, 3
"""Tokens shown before and after the peak token (explanation examples and detection windows)."""


class CorpusActs(NamedTuple):
    """The non-zero feature activations of one SAE over a tokenised corpus, as sparse triples."""

    tokens: torch.Tensor
    """[n_ctx, ctx_len] token ids, BOS at position 0."""
    rows: torch.Tensor
    """Row of each activation: ``ctx * (ctx_len - 1) + pos - 1`` (position 0 is never scored)."""
    feats: torch.Tensor
    """Feature of each activation."""
    vals: torch.Tensor
    """Its value (> 0)."""
    d_sae: int
    n_scored: int
    """Tokens scored: positions >= 1, minus the massive-norm ones."""

    @property
    def n_ctx(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def ctx_len(self) -> int:
        return int(self.tokens.shape[1])

    def density(self) -> torch.Tensor:
        """[d_sae] share of scored tokens on which each feature fires."""
        return torch.bincount(self.feats, minlength=self.d_sae).double() / max(self.n_scored, 1)

    def n_contexts(self) -> torch.Tensor:
        """[d_sae] number of contexts in which each feature fires at least once."""
        ctx = self.rows // (self.ctx_len - 1)
        pairs = torch.unique(self.feats * self.n_ctx + ctx)
        return torch.bincount(pairs // self.n_ctx, minlength=self.d_sae)

    def dense(self, feature: int) -> torch.Tensor:
        """[n_ctx, ctx_len] activations of one feature (0 at position 0 and where it does not
        fire)."""
        keep = self.feats == int(feature)
        out = torch.zeros(self.n_ctx, self.ctx_len)
        rows = self.rows[keep]
        out[rows // (self.ctx_len - 1), rows % (self.ctx_len - 1) + 1] = self.vals[keep]
        return out


@torch.inference_mode()
def corpus_acts(
    sae, acts: torch.Tensor, tokens: torch.Tensor, *, massive_factor: float = PAGE_FACTOR
) -> CorpusActs:
    """Encode ``acts`` [n_ctx * (ctx_len - 1), d_in] (what activations.harvest returns for
    ``tokens``) with ``sae``."""
    n_ctx, ctx_len = tokens.shape
    if acts.shape[0] != n_ctx * (ctx_len - 1):
        raise InvalidArgumentError(
            f"{acts.shape[0]} activation rows for {n_ctx} contexts of {ctx_len} "
            f"tokens (expected {n_ctx * (ctx_len - 1)}: position 0 left out)"
        )
    typical = typical_rows(acts, massive_factor)
    rows, feats, vals = sparse_encode(sae, acts)
    keep = typical[rows]
    return CorpusActs(
        tokens, rows[keep], feats[keep], vals[keep], int(sae.cfg.d_sae), int(typical.sum())
    )


def _eligible(
    density: torch.Tensor, n_contexts: torch.Tensor, band: tuple[float, float], min_contexts: int
) -> torch.Tensor:
    """[n_eligible] features with ``band[0] <= density < band[1]`` in ``min_contexts`` contexts."""
    return torch.nonzero(
        (density >= band[0]) & (density < band[1]) & (n_contexts >= min_contexts)
    ).flatten()


def widen_band(
    density: torch.Tensor,
    n_contexts: torch.Tensor,
    *,
    band: tuple[float, float],
    min_contexts: int,
    n: int,
    factor: float = 2.0,
) -> tuple[float, float]:
    """``band`` if at least ``n`` features are eligible in it, else the band widened by ``factor``
    on each side (lower bound divided, upper multiplied, capped at 1) until ``n`` are."""
    if not 0 <= band[0] < band[1] or factor <= 1 or n < 1:
        raise InvalidArgumentError(
            f"band={band!r}, factor={factor!r}, n={n!r}: need 0 <= band[0] < band[1], "
            "factor > 1 and n >= 1"
        )
    lo, hi = band
    while len(_eligible(density, n_contexts, (lo, hi), min_contexts)) < n:
        if lo == 0 and hi > 1:
            raise InvalidArgumentError(
                f"only {len(_eligible(density, n_contexts, (lo, hi), min_contexts))} features "
                f"fire in at least min_contexts={min_contexts} contexts, {n} wanted"
            )
        lo, hi = (lo / factor if lo > 1e-9 else 0.0), hi * factor
    return lo, hi


def select_features(
    density: torch.Tensor,
    n_contexts: torch.Tensor,
    *,
    band: tuple[float, float],
    min_contexts: int,
    n: int,
    seed: int = 0,
) -> list[int]:
    """``n`` features drawn at random (seeded) among those with ``band[0] <= density < band[1]``
    and firing in at least ``min_contexts`` contexts (of another sample, e.g. held-out text)."""
    eligible = _eligible(density, n_contexts, band, min_contexts)
    if len(eligible) < n:
        raise InvalidArgumentError(
            f"only {len(eligible)} features are eligible in band={band!r}, {n} wanted "
            "(widen_band finds a band with enough)"
        )
    g = torch.Generator().manual_seed(seed)
    pick = eligible[torch.randperm(len(eligible), generator=g)[:n]]
    return sorted(int(f) for f in pick)


class Window(NamedTuple):
    """A place in the corpus: context, position of the token shown as the centre, activation
    there."""

    ctx: int
    pos: int
    act: float


def _context_peaks(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contexts where the feature fires, sorted by their maximum (descending), with peak
    positions."""
    cmax, cpos = dense.max(dim=1)
    order = torch.argsort(cmax, descending=True, stable=True)
    order = order[cmax[order] > 0]
    return order, cpos[order], cmax[order]


def top_windows(dense: torch.Tensor, n: int) -> list[Window]:
    """The ``n`` contexts with the largest activation of the feature (``dense`` [n_ctx, ctx_len]),
    one window each at its peak."""
    ctx, pos, val = _context_peaks(dense)
    return [Window(int(c), int(p), float(v)) for c, p, v in zip(ctx[:n], pos[:n], val[:n])]


def spread_windows(dense: torch.Tensor, n: int) -> list[Window]:
    """``n`` contexts where the feature fires, at evenly spaced ranks of their maxima (strong to
    weak), one window each at its peak."""
    ctx, pos, val = _context_peaks(dense)
    m = len(ctx)
    if m <= n:
        ranks = list(range(m))
    else:
        ranks = [((2 * j + 1) * m) // (2 * n) for j in range(n)]
    return [Window(int(ctx[r]), int(pos[r]), float(val[r])) for r in ranks]


def negative_windows(
    dense: torch.Tensor,
    n: int,
    *,
    before: int = EXPLAIN_BEFORE,
    after: int = EXPLAIN_AFTER,
    seed: int = 0,
) -> list[Window]:
    """``n`` random windows (seeded, distinct contexts) in which the feature is zero on every
    token."""
    n_ctx, ctx_len = dense.shape
    g = torch.Generator().manual_seed(seed)
    out: list[Window] = []
    for c in torch.randperm(n_ctx, generator=g).tolist():
        lo_pos = 1 + before
        hi_pos = ctx_len - 1 - after
        if hi_pos < lo_pos:
            lo_pos = hi_pos = max(1, ctx_len - 1 - after)
        p = int(torch.randint(lo_pos, hi_pos + 1, (1,), generator=g))
        lo, hi = max(1, p - before), min(ctx_len, p + after + 1)
        if (dense[c, lo:hi] == 0).all():
            out.append(Window(c, p, 0.0))
            if len(out) == n:
                break
    return out


def _show(piece: str) -> str:
    return piece.replace("\n", "\\n")


def window_text(
    tokenizer,
    tokens: torch.Tensor,
    window: Window,
    *,
    before: int = EXPLAIN_BEFORE,
    after: int = EXPLAIN_AFTER,
    mark: bool = True,
) -> str:
    """The text of a window (never BOS); with ``mark``, its centre token inside :data:`MARK`;
    newlines shown as ``\\n``."""
    ctx_len = tokens.shape[1]
    lo, hi = max(1, window.pos - before), min(ctx_len, window.pos + after + 1)
    pieces = token_strings(tokenizer, tokens[window.ctx, lo:hi].tolist())
    centre = window.pos - lo
    if mark:
        pieces[centre] = f"{MARK[0]}{pieces[centre]}{MARK[1]}"
    return _show("".join(pieces))


def chat_prompt(tokenizer, user: str, *, answer_prefix: str = "") -> str:
    """``user`` as one user turn in the tokenizer's chat template, ready for the answer (plain
    ``User:/Assistant:`` lines if the tokenizer has no template); ``answer_prefix`` starts the
    answer."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
    else:
        text = f"User: {user}\nAssistant:" + (" " if answer_prefix else "")
    return text + answer_prefix


def _ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt that carries its own special tokens (none added; BOS first if the
    template has none)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


EXPLAIN_INSTRUCTIONS = (
    "Below are short excerpts of text. In each one, a single token is marked like <<this>>. "
    "The marked tokens are where one hidden feature of a language model is most active."
    "\n\n{examples}\n\n"
    "What do the marked tokens have in common? Answer with one short sentence."
)
EXPLAIN_PREFIX = "The marked tokens are"
"""The explainer's answer is started with these words (the explanation is what follows them), which
keeps a small model on the task and its answer to one line."""


def explain_prompt(tokenizer, examples: Sequence[str]) -> str:
    """The explainer's prompt for a feature's examples (each marked by :func:`window_text`)."""
    listed = "\n".join(f"{i + 1}. {e}" for i, e in enumerate(examples))
    return chat_prompt(
        tokenizer, EXPLAIN_INSTRUCTIONS.format(examples=listed), answer_prefix=EXPLAIN_PREFIX
    )


def _explanation_text(tok, new: list[int]) -> str:
    """The explanation in the generated ids ``new``: cut at the first stop token, line or sentence
    end, after :data:`EXPLAIN_PREFIX`."""
    for stop in {tok.eos_token_id, getattr(tok, "pad_token_id", None)} - {None}:
        if stop in new:
            new = new[: new.index(stop)]
    text = tok.decode(new).split("\n")[0].strip()
    if "." in text:  # one sentence
        text = text[: text.index(".") + 1]
    return f"{EXPLAIN_PREFIX} {text}".strip()


@torch.inference_mode()
def generate_greedy(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids, cut before the first end-of-sequence token),
    up to ``batch_size`` prompts at once: left-padded, the pads masked and the positions counted
    from each prompt's first token, as ``model.generate`` does for a batch."""
    tok = model.tokenizer
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    if pad is None:  # nothing to pad with: one prompt at a time
        batch_size = 1
    out: list[list[int]] = [[] for _ in prompts]
    # Similar lengths share a batch (less padding); the answers keep the prompts' order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    side = tok.padding_side
    tok.padding_side = "left"  # where generate() looks for the pads it masks
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad if pad is not None else 0, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - len(prompts[i]) :] = torch.tensor(list(prompts[i]))
            gen = model.generate(
                ids.to(model.cfg.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_past_kv_cache=True,
                verbose=False,
                return_type="tokens",
                stop_at_eos=eos is not None,
            )
            for r, i in enumerate(idx):
                new = gen[r, width:].tolist()
                out[i] = new[: new.index(eos)] if eos in new else new
    finally:
        tok.padding_side = side
    return out


def explain_many(
    model,
    examples: Sequence[Sequence[str]],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 16,
) -> list[str]:
    """One explanation per feature (``examples[i]``: the marked examples of feature i), the same
    greedy decoding as :func:`explain` run for up to ``batch_size`` features at once."""
    tok = model.tokenizer
    prompts = [_ids(tok, explain_prompt(tok, ex)) for ex in examples]
    new = generate_greedy(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [_explanation_text(tok, n) for n in new]


def explain(model, examples: Sequence[str], *, max_new_tokens: int = 24) -> str:
    """One-line explanation of a feature from its marked examples: greedy decoding, cut at the
    first line or sentence end."""
    return explain_many(model, [examples], max_new_tokens=max_new_tokens)[0]


DETECT_INSTRUCTIONS = (
    'A hidden feature of a language model is described like this: "{explanation}"\n\n'
    "Text: {text}\n\nDoes the description fit something in the text? Answer Yes or No."
)


def detection_prompt(tokenizer, explanation: str, text: str) -> str:
    """The scorer's prompt: does ``text`` (an unmarked window) match ``explanation``?"""
    return chat_prompt(tokenizer, DETECT_INSTRUCTIONS.format(explanation=explanation, text=text))


def answer_ids(tokenizer, answers: tuple[str, str] = ("Yes", "No")) -> tuple[int, int]:
    """Token ids of the two answers (each must be a single token)."""
    out = []
    for a in answers:
        ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InvalidArgumentError(f"answer {a!r} is {len(ids)} tokens, not one")
        out.append(ids[0])
    return out[0], out[1]


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all ``prompts`` share, leaving every prompt at least its last
    token."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(max(n, 0)):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(n, 0)


def _prefix_cache(model, prefix: Sequence[int]):
    """Keys and values of ``prefix`` (one forward pass), frozen, for prompts that continue it."""
    from transformer_lens import TransformerLensKeyValueCache

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    model(
        torch.tensor([list(prefix)], device=model.cfg.device),
        stop_at_layer=model.cfg.n_layers,
        past_kv_cache=cache,
        attention_mask=torch.ones(1, len(prefix), dtype=torch.long),
    )
    cache.freeze()
    return cache


def _expanded(cache, batch: int):
    """A frozen copy of a batch-1 ``cache`` seen by ``batch`` prompts (views, no copies)."""
    from transformer_lens import TransformerLensKeyValueCache, TransformerLensKeyValueCacheEntry

    return TransformerLensKeyValueCache(
        [
            TransformerLensKeyValueCacheEntry(
                e.past_keys.expand(batch, -1, -1, -1), e.past_values.expand(batch, -1, -1, -1), True
            )
            for e in cache.entries
        ],
        cache.previous_attention_mask.expand(batch, -1),
        True,
    )


@torch.inference_mode()
def detection_scores(
    model,
    explanation: str | Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    answers: tuple[str, str] = ("Yes", "No"),
    engine: Literal["auto", "transformer_lens"] = "auto",
) -> torch.Tensor:
    """[len(texts)] ``logit(answers[0]) - logit(answers[1])`` at the first answer token, one prompt
    per text (``explanation``: one for all texts or one per text). The tokens all prompts begin with
    (chat template, instructions) are run once and their keys and values reused; the rest is
    batched, padded at the end (harmless to a causal model read at each prompt's own last
    position). ``engine="auto"`` runs the lean Llama forward
    (:meth:`interp_lib.model.fast_forward.LlamaHarvestForward.continuations`, the same scores within
    fp32 rounding) where it applies; ``"transformer_lens"`` always runs TransformerLens with a
    key-value cache of the shared tokens."""
    if engine not in ("auto", "transformer_lens"):
        raise InvalidArgumentError(f"engine must be 'auto' or 'transformer_lens', got {engine!r}")
    tok = model.tokenizer
    texts = list(texts)
    expl = [explanation] * len(texts) if isinstance(explanation, str) else list(explanation)
    if len(expl) != len(texts):
        raise InvalidArgumentError(f"{len(expl)} explanations for {len(texts)} texts")
    yes, no = answer_ids(tok, answers)
    out = torch.zeros(len(texts))
    if not texts:
        return out
    prompts = [_ids(tok, detection_prompt(tok, e, t)) for e, t in zip(expl, texts)]
    shared = _common_prefix(prompts)
    last_block = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    lean = (
        fast_forward_for(model)
        if engine == "auto" and shared and fast_forward_supported(model, [last_block])
        else None
    )
    prefix = torch.tensor(prompts[0][:shared], device=model.cfg.device)
    cache = _prefix_cache(model, prompts[0][:shared]) if shared and lean is None else None
    rest = [p[shared:] for p in prompts]
    order = sorted(range(len(rest)), key=lambda i: len(rest[i]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(len(rest[i]) for i in idx)
        batch = torch.full((len(idx), width), pad, dtype=torch.long)
        for r, i in enumerate(idx):
            batch[r, : len(rest[i])] = torch.tensor(rest[i])
        batch = batch.to(model.cfg.device)
        if lean is not None:
            resid = lean.continuations(prefix, batch)
        else:
            kw = {}
            if cache is not None:  # every position attends (the pads come after the answer)
                kw = dict(
                    past_kv_cache=_expanded(cache, len(idx)),
                    attention_mask=torch.ones(len(idx), width, dtype=torch.long),
                )
            resid = model(batch, stop_at_layer=model.cfg.n_layers, **kw)
        # Only the answer position needs logits: unembed one row per prompt, not every position.
        last = torch.tensor([len(rest[i]) - 1 for i in idx], device=resid.device)
        answer = resid[torch.arange(len(idx)), last][:, None]
        final = model.unembed(model.ln_final(answer))[:, 0].float().cpu()
        out[torch.tensor(idx)] = final[:, yes] - final[:, no]
    return out


def derangement(n: int, shift: int = 1) -> list[int]:
    """A permutation of ``range(n)`` that moves every element (a cyclic shift): whose explanation
    each feature gets in the baseline."""
    if n < 2 or shift % n == 0:
        raise InvalidArgumentError(
            "a derangement needs n >= 2 and a shift that is not a multiple of n"
        )
    return [(i + shift) % n for i in range(n)]


def top_token(tokenizer, tokens: torch.Tensor, windows: Sequence[Window]) -> tuple[str, float]:
    """The token seen most often at the windows' centres (stripped of spaces; ties: the first
    seen) and the share of the windows centred on it (1.0: a one-token feature)."""
    if not windows:
        raise InvalidArgumentError("need at least one window")
    pieces = [token_strings(tokenizer, [int(tokens[w.ctx, w.pos])])[0] for w in windows]
    counts: dict[str, int] = {}
    for piece in pieces:
        counts[piece.strip() or piece] = counts.get(piece.strip() or piece, 0) + 1
    word = max(counts, key=counts.get)
    return word, counts[word] / len(pieces)


def token_explanation(tokenizer, tokens: torch.Tensor, windows: Sequence[Window]) -> str:
    """A control explanation that needs no explainer: the token seen most often at the windows'
    centres (:func:`top_token`), as ``'The marked tokens are the token "x".'``. On a feature that
    fires on one token it is close to a perfect explanation, so it tells how well the scorer can
    score at all."""
    word, _ = top_token(tokenizer, tokens, windows)
    return f'{EXPLAIN_PREFIX} the token "{_show(word)}".'


def names_token(explanation: str, word: str) -> bool:
    """Whether ``explanation`` names ``word``: case-insensitive, as a whole word if it has letters
    or digits (``"cat"`` is not named by ``"category"``), as it is otherwise (punctuation); the
    prefix the explainer was given does not count."""
    body = explanation.removeprefix(EXPLAIN_PREFIX).lower()
    word = word.strip().lower()
    if not word:
        return False
    if not any(c.isalnum() for c in word):
        return word in body
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", body) is not None
