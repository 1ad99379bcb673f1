"""A lean Llama forward pass for harvesting, with TransformerLens's hook names.

:func:`interp_lib.activations.harvest` reads the residual stream of the embedded model (a
TransformerLens ``HookedTransformer``) many thousands of tokens at a time. TransformerLens runs
every block through its hook points, repeats the key/value heads, builds the full attention square
and rotates queries and keys in several passes; :class:`LlamaHarvestForward` computes the same
activations from the *same* (already processed) TransformerLens weights with fewer, larger
operations: one matmul for Q, K and V, one for gate and up, PyTorch's fused causal attention with
grouped K/V heads, RoPE as one complex multiplication, residual additions fused into the output
matmuls, and it stops after the deepest requested hook.

It is used only where it provably computes what TransformerLens computes
(:func:`fast_forward_supported`: a Llama-architecture model in fp32 with TransformerLens's
pre-folded RMS norms, rotary positions over the whole head, no biases, no hooks attached, and only
the hooks below); everything else goes through TransformerLens. The activations agree with
TransformerLens's within fp32 rounding, far below the fp16 rounding the library stores them in
(``tests/test_fast_forward.py``).

Supported hooks: ``blocks.N.hook_resid_pre``, ``hook_attn_out``, ``hook_resid_mid``,
``hook_mlp_out``, ``hook_resid_post``.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["SUPPORTED_HOOK", "LlamaHarvestForward", "fast_forward_supported", "fast_forward_for"]

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


def fast_forward_supported(model, hooks: Sequence[str]) -> bool:
    """True if :class:`LlamaHarvestForward` gives ``model``'s TransformerLens activations at every
    hook in ``hooks`` (else harvest falls back to TransformerLens)."""
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


class LlamaHarvestForward:
    """The first blocks of a Llama model, from a TransformerLens model's processed weights.

    For tokens ``t`` [B, T] and each block n (TransformerLens has folded the RMS norms' weights
    g into the matrices that follow them, so ``rms(x) = x / sqrt(mean(x^2) + eps)``)::

        x = W_E[t]                                              blocks.0.hook_resid_pre [B, T, d]
        q, k, v = rms(x) [W_Q | W_K | W_V]                      one matmul, [B, T, (h + 2 h_kv) d_h]
        q, k = q e^{i theta p}, k e^{i theta p}                 RoPE on (j, j + d_h/2) pairs
        a = softmax(q k^T / sqrt(d_h) + causal) v W_O           hook_attn_out; grouped K/V heads
        x = x + a                                               hook_resid_mid
        m = (silu(rms(x) W_gate) * rms(x) W_in) W_out           hook_mlp_out
        x = x + m                                    hook_resid_post (= blocks.n+1.hook_resid_pre)

    Q and K columns are permuted within each head so that every RoPE pair is adjacent (one complex
    multiplication); the same permutation on both leaves ``q k^T`` unchanged. Arithmetic is fp32.
    Blocks are fused lazily, only as deep as a call needs.
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

    def _layer(self, n: int) -> _Layer:
        block = self.model.blocks[n]
        layer = self._layers[n]
        if layer is None or layer.key != _weights_key(block):
            if not _biases_are_zero(block):
                raise ValueError(f"block {n} has non-zero biases: not a plain Llama block")
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

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, hooks: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations at ``hooks`` for ``tokens`` [B, T] -> {hook: fp32 [B, T, d]}."""
        parsed = []
        for h in hooks:
            match = SUPPORTED_HOOK.match(h)
            if not match:
                raise ValueError(f"hook {h!r} is not one the lean Llama forward computes")
            parsed.append((int(match.group(1)), match.group(2), h))
        want: dict[tuple[int, str], list[str]] = {}
        for n, site, h in parsed:
            if site == "hook_resid_post":  # the same tensor as the next block's resid_pre
                n, site = n + 1, "hook_resid_pre"
            want.setdefault((n, site), []).append(h)
        n_blocks = max(n + (0 if s == "hook_resid_pre" else 1) for n, s in want)  # blocks to run

        B, T = tokens.shape
        d, h_q, dh = self.d_model, self.n_heads, self.d_head
        cis = self._rotations(T, self.model.W_E.device)
        x = self.model.W_E.detach()[tokens].reshape(B * T, d)
        out: dict[str, torch.Tensor] = {}

        def emit(n: int, site: str, value: torch.Tensor, final: bool) -> None:
            names = want.get((n, site))
            if names:
                kept = value if final else value.clone()  # x is updated in place later
                for name in names:
                    out[name] = kept.view(B, T, d)

        for n in range(n_blocks + 1):
            emit(n, "hook_resid_pre", x, final=n == n_blocks)
            if n == n_blocks:
                break
            layer = self._layer(n)
            kv = layer.n_kv
            qkv = F.linear(self._rms(x), layer.w_qkv)  # [B*T, (h + 2 kv) dh]
            heads = qkv.view(B, T, h_q + 2 * kv, dh)
            pairs = qkv.view(B, T, h_q + 2 * kv, dh // 2, 2)[:, :, : h_q + kv]
            torch.view_as_complex(pairs).mul_(cis)  # RoPE on q and k, in place
            q = heads[:, :, :h_q].transpose(1, 2)
            k = heads[:, :, h_q : h_q + kv].transpose(1, 2)
            v = heads[:, :, h_q + kv :].transpose(1, 2)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h_q)
            z = z.transpose(1, 2).reshape(B * T, h_q * dh)
            if (n, "hook_attn_out") in want:
                attn_out = z @ layer.w_o.T
                emit(n, "hook_attn_out", attn_out, final=True)
                x = x + attn_out
            else:
                x = x.addmm_(z, layer.w_o.T)  # x is this call's own tensor: add in place
            emit(n, "hook_resid_mid", x, final=False)
            gate_up = F.linear(self._rms(x), layer.w_gate_up)  # [B*T, 2 d_mlp]
            d_mlp = gate_up.shape[1] // 2
            act = F.silu(gate_up[:, :d_mlp]).mul_(gate_up[:, d_mlp:])
            if (n, "hook_mlp_out") in want:
                mlp_out = act @ layer.w_down.T
                emit(n, "hook_mlp_out", mlp_out, final=True)
                x = x + mlp_out
            else:
                x = x.addmm_(act, layer.w_down.T)
        return out


def fast_forward_for(model) -> LlamaHarvestForward:
    """The model's :class:`LlamaHarvestForward`, built once and kept on the model."""
    forward = getattr(model, _ATTR, None)
    if forward is None:
        forward = LlamaHarvestForward(model)
        setattr(model, _ATTR, forward)  # a plain attribute, not a submodule
    return forward
