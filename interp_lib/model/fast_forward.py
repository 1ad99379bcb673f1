"""A lean Llama forward pass for harvesting and evaluation, with TransformerLens's hook names.

:func:`interp_lib.model.activations.harvest` reads the residual stream of the embedded model (a
TransformerLens ``HookedTransformer``) many thousands of tokens at a time, and
:func:`interp_lib.evals.metrics.evaluate` runs the whole model once per SAE with its reconstruction
spliced in. TransformerLens runs every block through its hook points, repeats the key/value heads,
builds the full attention square, rotates queries and keys in several passes and copies the
unembedding matrix on every call; :class:`LlamaHarvestForward` computes the same activations and
next-token log-probabilities from the *same* (already processed) TransformerLens weights with
fewer, larger operations: one matmul for Q, K and V, one for gate and up, PyTorch's fused causal
attention with grouped K/V heads, RoPE as one complex multiplication, residual additions fused
into the output matmuls, and the two widest products (Q/K/V, gate/up) written into scratch
buffers kept between blocks and calls (a fresh 25 MB output per matmul pays its page faults
every time: the harvest ran about 7% slower with them on this project's 2-core machine). A
harvest stops after the deepest requested hook; a full pass can start from a given residual
stream at any block (TransformerLens's ``start_at_layer``) and replace the
activation at one hook by a function of it (a splice). :meth:`LlamaHarvestForward.after_prefix`
reads many single tokens, each after the same prefix (first-letter absorption's ICL prompts): the
prefix's keys and values are computed once and shared by one product, where a key-value cache
would be copied for every row; :meth:`LlamaHarvestForward.continuations` runs batches of token
sequences after one shared prefix to the last block (auto-interpretation's detection prompts).

It is used only where it provably computes what TransformerLens computes
(:func:`fast_forward_supported`: a Llama-architecture model in fp32 with TransformerLens's
pre-folded RMS norms, rotary positions over the whole head, no biases, no hooks attached, and only
the hooks below); everything else goes through TransformerLens. The activations, log-probabilities
and losses agree with TransformerLens's within fp32 rounding (``tests/test_fast_forward.py``).

Supported hooks: ``blocks.N.hook_resid_pre``, ``hook_attn_out``, ``hook_resid_mid``,
``hook_mlp_out``, ``hook_resid_post``.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from interp_lib.errors import InvalidArgumentError

__all__ = [
    "SUPPORTED_HOOK",
    "LeanOutput",
    "LlamaHarvestForward",
    "fast_forward_supported",
    "fast_forward_for",
]

SUPPORTED_HOOK = re.compile(
    r"^blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_resid_mid|hook_mlp_out|hook_resid_post)$"
)
"""The hook names the lean forward produces (anything else goes through TransformerLens)."""

_ATTR = "_interp_lib_fast_forward"  # where the built forward is kept on the HookedTransformer


def _config_is_plain_llama(cfg) -> bool:
    """True if ``cfg`` (a HookedTransformerConfig) describes the computation
    :class:`LlamaHarvestForward` implements, and nothing more."""
    return (
        cfg.original_architecture == "LlamaForCausalLM"
        and cfg.normalization_type == "RMSPre"  # norm weights folded into the next matrices
        and cfg.positional_embedding_type == "rotary"
        and cfg.rotary_dim == cfg.d_head
        and not cfg.rotary_adjacent_pairs
        and not getattr(cfg, "use_NTK_by_parts_rope", False)
        and cfg.act_fn == "silu"
        and cfg.gated_mlp
        and cfg.use_attn_scale
        and float(cfg.attn_scale) == float(cfg.d_head) ** 0.5
        and not cfg.parallel_attn_mlp
        and not cfg.attn_only
        and not getattr(cfg, "use_qk_norm", False)
        and not getattr(cfg, "post_embedding_ln", False)
        and not getattr(cfg, "use_normalization_before_and_after", False)
        and (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) <= 0
        and (getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0) <= 0
        and cfg.n_heads % (cfg.n_key_value_heads or cfg.n_heads) == 0
        and cfg.dtype == torch.float32
    )


def fast_forward_supported(model, hooks: Sequence[str], *, to_logits: bool = False) -> bool:
    """True if :class:`LlamaHarvestForward` gives ``model``'s TransformerLens activations at every
    hook in ``hooks`` (and, with ``to_logits``, its log-probabilities and losses), else False."""
    if not hooks or not all(SUPPORTED_HOOK.match(h) for h in hooks):
        return False
    try:
        if not _config_is_plain_llama(model.cfg):
            return False
    except AttributeError:  # not a HookedTransformer config (a stand-in, another library's)
        return False
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None and getattr(tokenizer, "padding_side", "right") == "left":
        return False  # TransformerLens would mask pad tokens
    # hooks a caller attached (steering, ablation) change TransformerLens's forward: not ours
    if any(hp._forward_hooks or hp._forward_pre_hooks for hp in model.hook_dict.values()):
        return False
    if to_logits:  # every block, then TransformerLens's RMSNormPre (weight folded into W_U)
        ln_final = type(getattr(model, "ln_final", None)).__name__
        return ln_final == "RMSNormPre" and all(_biases_are_zero(b) for b in model.blocks)
    deepest = max(int(SUPPORTED_HOOK.match(h).group(1)) for h in hooks)
    return all(_biases_are_zero(model.blocks[n]) for n in range(deepest + 1))


class _Layer:
    """One block's fused weights, all ``[out, in]`` for :func:`torch.nn.functional.linear`."""

    def __init__(self, block, perm: torch.Tensor):
        attn, mlp = block.attn, block.mlp
        n_heads, d_model, d_head = attn.W_Q.shape

        def out_in(w: torch.Tensor, rope: bool) -> torch.Tensor:  # [h, d, dh] -> [h*dh, d]
            w = w.detach()
            if rope:
                w = w[:, :, perm]
            return w.permute(0, 2, 1).reshape(-1, d_model)

        w_k = getattr(attn, "_W_K", None)
        w_v = getattr(attn, "_W_V", None)
        w_k = attn.W_K if w_k is None else w_k
        w_v = attn.W_V if w_v is None else w_v
        self.w_qkv = torch.cat(
            [out_in(attn.W_Q, True), out_in(w_k, True), out_in(w_v, False)]
        ).contiguous()
        self.w_o = attn.W_O.detach().reshape(n_heads * d_head, d_model).T.contiguous()
        self.w_gate_up = torch.cat([mlp.W_gate.detach().T, mlp.W_in.detach().T]).contiguous()
        self.w_down = mlp.W_out.detach().T.contiguous()
        self.n_kv = w_k.shape[0]
        self.key = _weights_key(block)


def _weights_key(block) -> tuple:
    """Identity and in-place version of a block's parameters (a changed weight rebuilds)."""
    return tuple((p.data_ptr(), p._version) for p in block.parameters())


def _biases_are_zero(block) -> bool:
    """True if every bias of ``block`` (``b_Q``, ``_b_K``, ``b_in``, ...) is zero."""
    return all(
        not bool(p.detach().any())
        for name, p in block.named_parameters()
        if name.rsplit(".", 1)[-1].startswith(("b_", "_b_"))
    )


class LeanOutput(NamedTuple):
    """What :meth:`LlamaHarvestForward.run` returns."""

    log_probs: torch.Tensor
    """Next-token log-probabilities, log_softmax of TransformerLens's logits [B, T, d_vocab]."""
    loss: torch.Tensor
    """TransformerLens's ``loss_per_token``: -log p(tokens[:, t + 1]) at position t [B, T - 1]."""
    cache: dict[str, torch.Tensor]
    """{hook: fp32 [B, T, d]} for the requested hooks (the value before any splice)."""


Splice = tuple[str, Callable[[torch.Tensor], torch.Tensor]]
"""(hook, fn): the activation [B, T, d] at hook is replaced by fn(activation) [B, T, d]."""


class LlamaHarvestForward:
    """A Llama model, from a TransformerLens model's processed weights.

    For tokens ``t`` [B, T] and each block n (TransformerLens has folded the RMS norms' weights
    g into the matrices that follow them, so ``rms(x) = x / sqrt(mean(x^2) + eps)``)::

        x = W_E[t]                                              blocks.0.hook_resid_pre [B, T, d]
        q, k, v = rms(x) [W_Q | W_K | W_V]                      one matmul, [B, T, (h + 2 h_kv) d_h]
        q, k = q e^{i theta p}, k e^{i theta p}                 RoPE on (j, j + d_h/2) pairs
        a = softmax(q k^T / sqrt(d_h) + causal) v W_O           hook_attn_out; grouped K/V heads
        x = x + a                                               hook_resid_mid
        m = (silu(rms(x) W_gate) * rms(x) W_in) W_out           hook_mlp_out
        x = x + m                                    hook_resid_post (= blocks.n+1.hook_resid_pre)

    and after the last block (ln_final's weight is folded into W_U)::

        log p = log_softmax(rms(x) W_U + b_U)                   [B, T, d_vocab]
        loss_t = -log p_t[t_{t+1}]                              [B, T - 1]

    Q and K columns are permuted within each head so that every RoPE pair is adjacent (one complex
    multiplication); the same permutation on both leaves ``q k^T`` unchanged. Arithmetic is fp32.
    Blocks are fused lazily, only as deep as a call needs. Calling it harvests activations (it
    stops after the deepest hook); :meth:`run` runs to the log-probabilities.
    """

    def __init__(self, model):
        cfg = model.cfg
        self.model = model
        self.d_model, self.n_heads, self.d_head = cfg.d_model, cfg.n_heads, cfg.d_head
        self.eps = float(cfg.eps)
        self.base = float(cfg.rotary_base)
        half = self.d_head // 2
        self._perm = torch.stack([torch.arange(half), torch.arange(half) + half], -1).reshape(-1)
        self._layers: list[_Layer | None] = [None] * cfg.n_layers
        self._cis: torch.Tensor | None = None
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A ``[rows, cols]`` scratch matrix reused by every block and call of the same shape:
        fresh tens-of-MB outputs per matmul cost their page faults every time."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != (rows, cols) or buf.device != like.device:
            buf = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
            self._buffers[name] = buf
        return buf

    def _layer(self, n: int) -> _Layer:
        block = self.model.blocks[n]
        layer = self._layers[n]
        if layer is None or layer.key != _weights_key(block):
            if not _biases_are_zero(block):
                raise InvalidArgumentError(
                    f"block {n} has non-zero biases: not a plain Llama block"
                )
            layer = self._layers[n] = _Layer(block, self._perm)
        return layer

    def _rotations(self, n_pos: int, device: torch.device) -> torch.Tensor:
        """e^{i theta_j p} [n_pos, 1, d_head / 2] (complex64), cached for the longest seen."""
        if self._cis is None or self._cis.shape[0] < n_pos or self._cis.device != device:
            dh = self.d_head
            inv_freq = 1.0 / self.base ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
            angles = torch.arange(max(n_pos, 128), dtype=torch.float64)[:, None] * inv_freq
            cis = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
            self._cis = cis[:, None, :].to(device)
        return self._cis[:n_pos]

    def _rms(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x * torch.rsqrt(norm.square_().mul_(1.0 / self.d_model).add_(self.eps))

    def _mlp_hidden(self, x: torch.Tensor, layer: _Layer, scratch: bool = False) -> torch.Tensor:
        """``silu(rms(x) W_gate) * rms(x) W_in`` [rows, d_mlp] for the stream ``x`` [rows, d]
        (with ``scratch``, a view into a buffer the next block overwrites)."""
        rows, two_d_mlp = x.shape[0], layer.w_gate_up.shape[0]
        out = self._buffer("gate_up", rows, two_d_mlp, x) if scratch else None
        gate_up = torch.mm(self._rms(x), layer.w_gate_up.T, out=out)  # [rows, 2 d_mlp]
        d_mlp = two_d_mlp // 2
        return F.silu(gate_up[:, :d_mlp], inplace=True).mul_(gate_up[:, d_mlp:])

    def _rotated_qkv(
        self,
        x: torch.Tensor,
        layer: _Layer,
        lead: tuple[int, ...],
        cis: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries, keys and values of the stream ``x`` [rows, d]: ``rms(x) [W_Q | W_K | W_V]``
        viewed as [*lead, h + 2 kv, d_head] (``lead`` multiplies to ``rows``), queries and keys
        rotated in place by ``cis`` (broadcast against [*lead, h + kv, d_head / 2]); into ``out``
        [rows, (h + 2 kv) d_head] when given."""
        h_q, dh = self.n_heads, self.d_head
        qkv = torch.mm(self._rms(x), layer.w_qkv.T, out=out).view(*lead, -1, dh)
        pairs = qkv[..., : h_q + layer.n_kv, :].unflatten(-1, (dh // 2, 2))
        torch.view_as_complex(pairs).mul_(cis)  # RoPE, as one complex product
        return qkv

    @staticmethod
    def _site(hook: str) -> tuple[int, str]:
        """(block, site) of a supported hook; ``blocks.N.hook_resid_post`` is (N + 1, resid_pre)."""
        match = SUPPORTED_HOOK.match(hook)
        if not match:
            raise InvalidArgumentError(f"hook {hook!r} is not one the lean Llama forward computes")
        n, site = int(match.group(1)), match.group(2)
        return (n + 1, "hook_resid_pre") if site == "hook_resid_post" else (n, site)

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations at ``hooks`` for ``tokens`` [B, T] -> {hook: fp32 [B, T, d]}."""
        if not hooks:
            raise InvalidArgumentError("need at least one hook")
        stop = max(n + (s != "hook_resid_pre") for n, s in map(self._site, hooks))
        x = self.model.W_E.detach()[tokens].reshape(-1, self.d_model)
        return self._blocks(x, tokens.shape, 0, stop, hooks, None)[1]

    @torch.inference_mode()
    def run(
        self,
        tokens: torch.Tensor,
        hooks: Sequence[str] = (),
        *,
        start_at_layer: int = 0,
        resid: torch.Tensor | None = None,
        splice: Splice | None = None,
    ) -> LeanOutput:
        """The whole model on ``tokens`` [B, T]: log-probs, loss and activations at ``hooks``.

        ``start_at_layer`` N starts from ``resid`` [B, T, d], the stream at
        ``blocks.N.hook_resid_pre`` (needed for N > 0; ``tokens`` then only give the loss's
        targets); ``splice`` (hook, fn) replaces the activation at a hook of block N or later by
        fn(activation).
        """
        B, T = tokens.shape
        if resid is not None:
            if resid.shape != (B, T, self.d_model):
                raise InvalidArgumentError(
                    f"resid must be [{B}, {T}, {self.d_model}], got {resid.shape}"
                )
            x = resid.reshape(B * T, self.d_model).clone()  # ours: updated in place
        elif start_at_layer:
            raise InvalidArgumentError(
                f"start_at_layer={start_at_layer} needs the stream there (resid)"
            )
        else:
            x = self.model.W_E.detach()[tokens].reshape(B * T, self.d_model)
        stop = self.model.cfg.n_layers
        x, cache = self._blocks(x, (B, T), start_at_layer, stop, hooks, splice)
        logits = torch.addmm(self.model.b_U.detach(), self._rms(x), self.model.W_U.detach())
        log_probs = _log_softmax_(logits).view(B, T, -1)
        loss = -log_probs[:, :-1].gather(-1, tokens[:, 1:, None].to(x.device))[..., 0]
        return LeanOutput(log_probs, loss, cache)

    def _prefix_attention(
        self, xp: torch.Tensor, layer: _Layer, cis: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One block's attention on a shared prefix ``xp`` [P, d], an ordinary causal sequence
        (``cis`` [P, 1, d_head / 2]): (``xp`` with the attention output added in place, its
        rotated keys and values [1, kv, P, d_head]) for the rows that follow it."""
        P, (h_q, dh, kv) = xp.shape[0], (self.n_heads, self.d_head, layer.n_kv)
        qkv = self._rotated_qkv(xp, layer, (1, P), cis)
        q, k, v = (t.transpose(1, 2) for t in qkv.split([h_q, kv, kv], dim=2))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h_q)
        return xp.addmm_(z.transpose(1, 2).reshape(P, h_q * dh), layer.w_o.T), k, v

    @torch.inference_mode()
    def after_prefix(
        self, prefix: torch.Tensor, tokens: torch.Tensor, hooks: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """Activations at ``hooks`` of each token of ``tokens`` [B] placed right after
        ``prefix`` [P], every row on its own -> {hook: fp32 [B, d]}: row b is
        ``self(cat(prefix, tokens[b])[None], hooks)[hook][0, -1]``, with the prefix run once.

        Each token's query attends to the prefix's keys (one product shared by all rows) and to
        its own key, nothing else: no key/value cache is copied per row."""
        if not hooks:
            raise InvalidArgumentError("need at least one hook")
        if prefix.ndim != 1 or tokens.ndim != 1 or not len(prefix):
            raise InvalidArgumentError(
                f"prefix must be [P] (P >= 1) and tokens [B], got {tuple(prefix.shape)} and "
                f"{tuple(tokens.shape)}"
            )
        stop = max(n + (s != "hook_resid_pre") for n, s in map(self._site, hooks))
        want: dict[tuple[int, str], list[str]] = {}
        for h in hooks:
            want.setdefault(self._site(h), []).append(h)
        P, B = len(prefix), len(tokens)
        h_q, dh = self.n_heads, self.d_head
        W_E = self.model.W_E.detach()
        xp, xw = W_E[prefix], W_E[tokens]  # [P, d], [B, d]: indexing copies, ours to update
        cis = self._rotations(P + 1, xw.device)  # [P + 1, 1, dh / 2]
        out: dict[str, torch.Tensor] = {}

        def keep(n: int, site: str, value: torch.Tensor) -> None:
            for name in want.get((n, site), []):
                out[name] = value.clone()

        for n in range(stop + 1):
            keep(n, "hook_resid_pre", xw)
            if n == stop:
                break
            layer = self._layer(n)
            kv = layer.n_kv
            # the prefix, as an ordinary causal sequence: its keys and values for the words
            xp, k_p, v_p = self._prefix_attention(xp, layer, cis[:P])
            k_p, v_p = k_p[0], v_p[0]  # [kv, P, dh]
            # the words, each at position P, attending to the prefix and to itself
            qkv = self._rotated_qkv(xw, layer, (B,), cis[P])
            q, k, v = qkv.split([h_q, kv, kv], dim=1)
            q = q.reshape(B, kv, h_q // kv, dh)  # query head i reads key/value head i // rep
            scores = torch.cat(
                [
                    torch.einsum("bgrd,gpd->bgrp", q, k_p),
                    torch.einsum("bgrd,bgd->bgr", q, k)[..., None],
                ],
                dim=-1,
            )
            probs = torch.softmax(scores * dh**-0.5, dim=-1)
            z = torch.einsum("bgrp,gpd->bgrd", probs[..., :P], v_p)
            z = z + probs[..., P:] * v[:, :, None, :]
            attn_out = z.reshape(B, h_q * dh) @ layer.w_o.T
            keep(n, "hook_attn_out", attn_out)
            xw = xw + attn_out
            keep(n, "hook_resid_mid", xw)
            for x, is_words in ((xp, False), (xw, True)):
                mlp_out = self._mlp_hidden(x, layer) @ layer.w_down.T
                if is_words:
                    keep(n, "hook_mlp_out", mlp_out)
                x.add_(mlp_out)
        return out

    @torch.inference_mode()
    def continuations(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The stream after the last block [B, T, d] of each row of ``tokens`` [B, T] placed
        right after ``prefix`` [P] (``blocks.{n_layers - 1}.hook_resid_post`` at positions
        P .. P + T - 1 of ``cat(prefix, tokens[b])``), with the prefix run once.

        Every row's queries attend to the prefix's keys and values (one copy, seen by all rows)
        and causally to their own: TransformerLens with a frozen key-value cache of the prefix
        computes the same. Padding a row at its end does not change its earlier positions."""
        if prefix.ndim != 1 or tokens.ndim != 2 or not len(prefix) or not tokens.shape[1]:
            raise InvalidArgumentError(
                f"prefix must be [P] (P >= 1) and tokens [B, T] (T >= 1), got "
                f"{tuple(prefix.shape)} and {tuple(tokens.shape)}"
            )
        (P,), (B, T) = prefix.shape, tokens.shape
        h_q, dh = self.n_heads, self.d_head
        W_E = self.model.W_E.detach()
        xp, x = W_E[prefix], W_E[tokens].reshape(B * T, self.d_model)  # copies: ours to update
        cis = self._rotations(P + T, x.device)
        own = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        mask = torch.cat([own.new_ones(T, P), own], dim=1)  # [T, P + T]: prefix, then causal
        for n in range(self.model.cfg.n_layers):
            layer = self._layer(n)
            kv = layer.n_kv
            xp, k_p, v_p = self._prefix_attention(xp, layer, cis[:P])
            qkv = self._rotated_qkv(x, layer, (B, T), cis[P:])
            q, k, v = (t.transpose(1, 2) for t in qkv.split([h_q, kv, kv], dim=2))
            keys = torch.cat([k_p.expand(B, -1, -1, -1), k], dim=2)  # [B, kv, P + T, dh]
            values = torch.cat([v_p.expand(B, -1, -1, -1), v], dim=2)
            z = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, enable_gqa=kv != h_q
            )
            x = x.addmm_(z.transpose(1, 2).reshape(B * T, h_q * dh), layer.w_o.T)
            xp = xp.addmm_(self._mlp_hidden(xp, layer), layer.w_down.T)
            x = x.addmm_(self._mlp_hidden(x, layer, scratch=True), layer.w_down.T)
        return x.view(B, T, self.d_model)

    def _blocks(
        self,
        x: torch.Tensor,
        shape: tuple[int, int],
        first: int,
        stop: int,
        hooks: Sequence[str],
        splice: Splice | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Blocks ``first`` .. ``stop`` - 1 on the stream ``x`` [B*T, d] -> (stream after them,
        {hook: [B, T, d]} for ``hooks``), with ``splice`` applied on the way."""
        B, T = shape
        d, h_q, dh = self.d_model, self.n_heads, self.d_head
        want: dict[tuple[int, str], list[str]] = {}
        for h in hooks:
            want.setdefault(self._site(h), []).append(h)
        spliced, fn = (self._site(splice[0]), splice[1]) if splice else (None, None)
        if any(n < first for n, _ in [*want, *([spliced] if spliced else [])]):
            raise InvalidArgumentError(f"a hook before block {first}, where this pass starts")
        cis = self._rotations(T, x.device)
        out: dict[str, torch.Tensor] = {}

        def visit(n: int, site: str, value: torch.Tensor, final: bool) -> torch.Tensor:
            """Keep the activation at (n, site) if wanted, and splice it if it is the spliced."""
            names = want.get((n, site))
            if names:
                kept = value if final else value.clone()  # x is updated in place later
                for name in names:
                    out[name] = kept.view(B, T, d)
            if (n, site) == spliced:  # a copy: it is updated in place later
                value = fn(value.view(B, T, d)).reshape(B * T, d).clone()
            return value

        for n in range(first, stop + 1):
            x = visit(n, "hook_resid_pre", x, final=n == stop)
            if n == stop:
                break
            layer = self._layer(n)
            kv = layer.n_kv
            buf = self._buffer("qkv", B * T, len(layer.w_qkv), x)
            heads = self._rotated_qkv(x, layer, (B, T), cis, out=buf)  # [B, T, h + 2 kv, dh]
            q = heads[:, :, :h_q].transpose(1, 2)
            k = heads[:, :, h_q : h_q + kv].transpose(1, 2)
            v = heads[:, :, h_q + kv :].transpose(1, 2)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h_q)
            z = z.transpose(1, 2).reshape(B * T, h_q * dh)
            if (n, "hook_attn_out") in want or (n, "hook_attn_out") == spliced:
                x = x + visit(n, "hook_attn_out", z @ layer.w_o.T, final=True)
            else:
                x = x.addmm_(z, layer.w_o.T)  # x is this call's own tensor: add in place
            x = visit(n, "hook_resid_mid", x, final=False)
            act = self._mlp_hidden(x, layer, scratch=True)
            if (n, "hook_mlp_out") in want or (n, "hook_mlp_out") == spliced:
                x = x + visit(n, "hook_mlp_out", act @ layer.w_down.T, final=True)
            else:
                x = x.addmm_(act, layer.w_down.T)
        return x, out


def _log_softmax_(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits, -1)`` written over ``logits`` [rows, vocab] (returned): one
    vocabulary-wide matrix per pass instead of two (400 MB each for 2,048 tokens of SmolLM2,
    whose fresh pages cost as much as the arithmetic). Same kernel as ``F.log_softmax``, each row
    read before it is written, so the values are identical."""
    return torch._log_softmax(logits, -1, False, out=logits)


def fast_forward_for(model) -> LlamaHarvestForward:
    """The model's :class:`LlamaHarvestForward`, built once and kept on the model."""
    forward = getattr(model, _ATTR, None)
    if forward is None:
        forward = LlamaHarvestForward(model)
        setattr(model, _ATTR, forward)  # a plain attribute, not a submodule
    return forward
