"""Sparse autoencoders from scratch, written to be read.

Two models, each a small class of its own:

* :class:`ReluSAE`: the original recipe (Bricken et al. 2023, "Towards Monosemanticity"):
  an encoder ``Linear`` + ReLU, a decoder ``Linear``, trained with
  ``loss = MSE + l1_coeff * L1``.
* :class:`TopKSAE`: Gao et al. 2024, "Scaling and evaluating sparse autoencoders": keep the
  ``k`` largest pre-activations of every token, zero the rest. Sparsity is set directly by
  ``k``, so there is no L1 term to tune. Because only ``k`` of ``d_sae`` latents are non-zero,
  the decoder and the encoder's backward pass are computed *sparsely* (see
  :func:`sparse_decode` and :func:`select_preacts`): on CPU that is several times cheaper
  than the dense matrix products.

A third variant (BatchTopK, JumpReLU) is left out on purpose: each would add one more training
device (a batch-level threshold to estimate; a straight-through estimator for a step function)
without a new idea the book needs beyond TopK. SAELens ships both for readers who want them.

Conventions shared by both (and by SAELens, so saving is a copy):

* ``x``: ``[batch, d_in]`` activations, already multiplied by the input-normalisation ``scale``
  (:func:`input_scale`) so that their mean norm is ``sqrt(d_in)``. The SAE never sees raw
  activations; :func:`save_saelens` folds ``scale`` into the weights for shipping.
* ``W_enc``: the encoder is an ``nn.Linear(d_in, d_sae)``; its weight is ``[d_sae, d_in]``,
  one row per latent (SAELens stores the transpose, ``[d_in, d_sae]``).
* ``W_dec``: ``[d_sae, d_in]``, one row per latent: latent ``i`` writes the direction
  ``W_dec[i]`` into the reconstruction. Rows are kept at unit norm during training
  (:meth:`normalize_decoder_` after every optimiser step, :meth:`project_decoder_grad_`
  before it), so a latent's activation *is* the length of what it writes.
* ``b_dec``: ``[d_in]``, subtracted from the input before encoding and added back after
  decoding (the "pre-encoder bias"); initialise it from data with :meth:`init_b_dec_`.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ReluSAE",
    "TopKSAE",
    "ReluOutput",
    "TopKOutput",
    "SparsePattern",
    "select_preacts",
    "sparse_decode",
    "geometric_median",
    "initial_b_dec",
    "input_scale",
    "save_saelens",
    "load_saelens_as_homebrew",
]


# --------------------------------------------------------------------------------------------
# Input normalisation and the decoder-bias initialisation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def input_scale(acts: Tensor, max_rows: int = 200_000) -> float:
    """The factor ``s`` that gives the activations a mean norm of ``sqrt(d_in)``.

    ``acts``: ``[n, d_in]`` raw activations (any float dtype). Returns ``s`` with
    ``mean_i ||s * acts_i|| = sqrt(d_in)``. Every row counts (the caller has already left
    out position 0, the attention sink); at most ``max_rows`` evenly spaced rows are used.
    """
    n, d_in = acts.shape
    step = max(1, n // max_rows)
    norms = acts[::step].float().norm(dim=-1)
    return float(math.sqrt(d_in) / norms.mean())


@torch.no_grad()
def geometric_median(points: Tensor, n_iter: int = 30, eps: float = 1e-6) -> Tensor:
    """The point minimising the summed *distance* (not squared distance) to ``points``.

    ``points``: ``[n, d]``. Weiszfeld's algorithm: repeatedly take the mean weighted by
    ``1 / distance``. Less pulled by outliers than the mean; Bricken et al. (and SAELens
    before version 6) initialise ``b_dec`` with it. Returns ``[d]`` (float32).
    """
    points = points.float()
    median = points.mean(dim=0)
    for _ in range(n_iter):
        w = 1.0 / (points - median).norm(dim=-1).clamp_min(eps)
        new = (w[:, None] * points).sum(dim=0) / w.sum()
        if (new - median).norm() <= eps * max(1.0, float(median.norm())):
            return new
        median = new
    return median


@torch.no_grad()
def initial_b_dec(x: Tensor, method: str = "geometric_median", max_rows: int = 32_768) -> Tensor:
    """A starting ``b_dec`` from data ``x: [n, d_in]``: ``"geometric_median"``, ``"mean"`` or
    ``"zeros"``. Starting at the centre of the data means the latents only have to explain
    deviations from it. Returns ``[d_in]`` float32."""
    x = x[:max_rows].float()
    if method == "geometric_median":
        return geometric_median(x)
    if method == "mean":
        return x.mean(dim=0)
    if method == "zeros":
        return x.new_zeros(x.shape[-1])
    raise ValueError(f"unknown b_dec init method {method!r}")


# --------------------------------------------------------------------------------------------
# The shared base: decoder bias, unit-norm decoder rows
# --------------------------------------------------------------------------------------------
class _SAEBase(nn.Module):
    """What both SAEs share: sizes, ``b_dec``, and the unit-norm decoder constraint."""

    architecture = "base"  # SAELens's name for the architecture (written into cfg.json)

    def __init__(self, d_in: int, d_sae: int):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def _init_weights(self, generator: torch.Generator | None) -> Tensor:
        """Random unit-norm rows ``[d_sae, d_in]`` for the decoder (the encoder starts as its
        transpose, as in Gao et al.: every latent starts by reading what it writes)."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator)
        return w / w.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def init_b_dec_(self, x: Tensor, method: str = "geometric_median") -> None:
        """Set ``b_dec`` from (normalised) data ``x: [n, d_in]`` (see :func:`initial_b_dec`)."""
        self.b_dec.copy_(initial_b_dec(x, method).to(self.b_dec))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm (call after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from ``W_dec.grad`` the component parallel to each row (call before the step).

        With unit-norm rows, a gradient along the row would only change its length, which
        :meth:`normalize_decoder_` undoes; removing it keeps Adam's moments meaningful.
        """
        g = self.W_dec.grad
        if g is None:
            return
        w = self.W_dec
        g.sub_((g * w).sum(dim=-1, keepdim=True) * w)

    def decoder_norms(self) -> Tensor:
        """``[d_sae]`` norms of the decoder rows (1 while the constraint holds)."""
        return self.W_dec.norm(dim=-1)


# --------------------------------------------------------------------------------------------
# ReLU SAE
# --------------------------------------------------------------------------------------------
class ReluOutput(NamedTuple):
    """What :meth:`ReluSAE.forward` returns."""

    x_hat: Tensor
    """``[batch, d_in]`` reconstruction (normalised scale)."""
    latents: Tensor
    """``[batch, d_sae]`` latent activations (non-negative, mostly zero)."""
    mse: Tensor
    """Scalar: squared error summed over ``d_in``, averaged over the batch."""
    l1: Tensor
    """Scalar: ``sum_i |latents_i|`` averaged over the batch (decoder rows have unit norm, so
    this equals the decoder-norm-weighted L1 of Anthropic's April 2024 update)."""
    loss: Tensor
    """Scalar: ``mse + l1_coeff * l1``, what training minimises."""


class ReluSAE(_SAEBase):
    """A ReLU sparse autoencoder.

    .. math::

        f = \\mathrm{ReLU}\\big((x - b_{dec}) W_{enc}^\\top + b_{enc}\\big) \\qquad
        \\hat x = f\\, W_{dec} + b_{dec}

    Shapes: ``x, x_hat: [batch, d_in]``; ``f: [batch, d_sae]``; ``W_enc, W_dec: [d_sae, d_in]``
    (one row per latent); ``b_enc: [d_sae]``; ``b_dec: [d_in]``.

    Loss: ``||x - x_hat||^2 + l1_coeff * ||f||_1`` (per token, batch-averaged), with the rows of
    ``W_dec`` held at unit norm so the L1 term cannot be dodged by shrinking ``f`` and growing
    ``W_dec``. ``tied=True`` uses one matrix for both (``W_dec is encoder.weight``).

    Dead latents are revived by :meth:`resample_dead_` (Bricken et al. 2023), called by the
    trainer a few times early in training.
    """

    architecture = "standard"

    def __init__(self, d_in: int, d_sae: int, l1_coeff: float = 5.0, tied: bool = False,
                 enc_init_norm: float = 0.1, generator: torch.Generator | None = None):
        super().__init__(d_in, d_sae)
        self.l1_coeff, self.tied = l1_coeff, tied
        w = self._init_weights(generator)
        self.encoder = nn.Linear(d_in, d_sae)  # weight: [d_sae, d_in] = W_enc, bias: b_enc
        with torch.no_grad():
            # Untied, the encoder starts as a small copy of the decoder (norm enc_init_norm):
            # about half the latents are positive at first, and at full size their sum would
            # overshoot the input several times over.
            self.encoder.weight.copy_(w if tied else w * enc_init_norm)
            self.encoder.bias.zero_()
        # Tying: literally the same Parameter in two places, so gradients from both uses add up.
        self.W_dec = self.encoder.weight if tied else nn.Parameter(w.clone())

    @property
    def W_enc(self) -> Tensor:
        """``[d_sae, d_in]`` encoder weight (one row per latent)."""
        return self.encoder.weight

    @property
    def b_enc(self) -> Tensor:
        return self.encoder.bias

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` latent activations."""
        return F.relu(self.encoder(x - self.b_dec))

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` reconstruction."""
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> ReluOutput:
        latents = self.encode(x)
        x_hat = self.decode(latents)
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        l1 = latents.sum(dim=-1).mean()  # latents >= 0, so |f| = f
        return ReluOutput(x_hat, latents, mse, l1, mse + self.l1_coeff * l1)

    @torch.no_grad()
    def resample_dead_(self, dead: Tensor, x: Tensor, optimizer: torch.optim.Optimizer | None = None,
                       generator: torch.Generator | None = None, enc_scale: float = 0.2) -> int:
        """Re-initialise dead latents on inputs the SAE reconstructs badly (Bricken et al. 2023).

        ``dead: [d_sae]`` bool; ``x: [n, d_in]`` a sample of normalised inputs. For each dead
        latent, draw an input with probability proportional to its squared reconstruction
        error, point the decoder row at it (unit norm), set the encoder row to the same
        direction scaled to ``enc_scale`` times the mean alive encoder-row norm, zero its
        encoder bias, and reset the Adam moments of those rows. Returns how many were
        resampled.
        """
        idx = dead.nonzero().squeeze(-1)
        n_dead = idx.numel()
        if n_dead == 0:
            return 0
        err = torch.cat([(self(xc).x_hat - xc).pow(2).sum(dim=-1) for xc in x.split(4096)])
        pick = torch.multinomial(err / err.sum(), n_dead, replacement=n_dead > len(x), generator=generator)
        direction = x[pick] - self.b_dec
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        alive = ~dead
        enc_norm = self.W_enc[alive].norm(dim=-1).mean() if alive.any() else torch.tensor(1.0)
        self.W_dec[idx] = direction
        if not self.tied:
            self.W_enc[idx] = direction * enc_norm * enc_scale
        self.b_enc[idx] = 0.0
        if optimizer is not None:
            for p, rows in ((self.W_dec, idx), (self.W_enc, idx), (self.b_enc, idx)):
                state = optimizer.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key][rows] = 0.0
        return n_dead


# --------------------------------------------------------------------------------------------
# Sparse kernels for TopK: gradients only through the k chosen latents of each token
# --------------------------------------------------------------------------------------------
def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch calls all of sparse CSR "beta"; we use its stable core
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


class SparsePattern:
    """Which latents are active in which token: ``indices: [batch, k]`` (each row sorted).

    Seen as a ``[batch, d_sae]`` matrix with ``k`` non-zeros per row, the sparse products the
    TopK SAE needs are ``A @ W`` (decode), ``A^T @ X`` (weight gradients) and "``X @ W^T``
    only at the non-zeros" (gradients of the chosen activations). This class builds the
    compressed-sparse-row (CSR) layouts of the matrix and its transpose once per batch.
    """

    def __init__(self, indices: Tensor, d_sae: int):
        self.indices = indices  # [batch, k], int64, ascending along k
        self.batch, self.k = indices.shape
        self.d_sae = d_sae
        dev = indices.device
        self.crow = torch.arange(0, self.batch * self.k + 1, self.k, device=dev)
        self.col = indices.reshape(-1)
        self._t: tuple[Tensor, Tensor, Tensor] | None = None

    def csr(self, values: Tensor) -> Tensor:
        """``values: [batch, k]`` -> sparse CSR ``[batch, d_sae]``."""
        return _csr(self.crow, self.col, values.reshape(-1), (self.batch, self.d_sae))

    def csr_t(self, values: Tensor) -> Tensor:
        """``values: [batch, k]`` -> sparse CSR of the transpose, ``[d_sae, batch]``."""
        if self._t is None:  # sort the non-zeros by latent, once per batch (shared by all backwards)
            order = torch.sort(self.col, stable=True).indices
            rows = torch.div(order, self.k, rounding_mode="floor")
            counts = torch.bincount(self.col, minlength=self.d_sae)
            crow = torch.zeros(self.d_sae + 1, dtype=torch.int64, device=self.col.device)
            crow[1:] = counts.cumsum(0)
            self._t = (order, crow, rows)
        order, crow, rows = self._t
        return _csr(crow, rows, values.reshape(-1)[order], (self.d_sae, self.batch))

    def sampled_matmul(self, a: Tensor, b_t: Tensor) -> Tensor:
        """``(a @ b_t.T)`` at the pattern's non-zeros only: ``a: [batch, n]``, ``b_t: [d_sae, n]``
        -> ``[batch, k]``. Costs ``batch * k * n`` instead of ``batch * d_sae * n``."""
        zeros = torch.zeros(self.batch * self.k, dtype=a.dtype, device=a.device)
        out = torch.sparse.sampled_addmm(self.csr(zeros), a, b_t.T, beta=0.0)
        return out.values().view(self.batch, self.k)


class _SelectPreacts(torch.autograd.Function):
    """Pre-activations of the chosen latents, with a sparse backward.

    Forward: the values were already computed by the dense encoder matmul (which must look at
    every latent to choose the top k); this just hands them on. Backward: the gradient reaches
    only the chosen ``[batch, k]`` entries, so ``grad W_enc = G^T (x - b_dec)`` and
    ``grad b_enc`` touch ``batch * k`` rows instead of a dense ``[batch, d_sae]`` matrix.
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, values, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(x, b_dec, W_enc)
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        x, b_dec, W_enc = ctx.saved_tensors
        pat: SparsePattern = ctx.pattern
        grad = grad.contiguous()
        g_x = g_bdec = g_W = g_b = None
        if ctx.needs_input_grad[2]:
            g_W = pat.csr_t(grad) @ (x - b_dec)  # [d_sae, d_in]
        per_latent = torch.zeros(pat.d_sae, dtype=grad.dtype, device=grad.device)
        per_latent.index_add_(0, pat.col, grad.reshape(-1))  # sum over the batch, per latent
        if ctx.needs_input_grad[3]:
            g_b = per_latent
        if ctx.needs_input_grad[1]:
            g_bdec = -(per_latent @ W_enc)  # d/d b_dec of (x - b_dec) W_enc^T, summed over batch
        if ctx.needs_input_grad[0]:
            g_x = pat.csr(grad) @ W_enc
        return g_x, g_bdec, g_W, g_b, None, None


def select_preacts(x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, values: Tensor,
                   pattern: SparsePattern) -> Tensor:
    """``values[b, j] = (x[b] - b_dec) . W_enc[idx[b, j]] + b_enc[idx[b, j]]`` (given, already
    computed) with gradients flowing sparsely into ``W_enc``, ``b_enc``, ``b_dec`` (and ``x``)."""
    return _SelectPreacts.apply(x, b_dec, W_enc, b_enc, values, pattern)


class _SparseDecode(torch.autograd.Function):
    """``x_hat[b] = sum_j acts[b, j] * W_dec[idx[b, j]]``, forward and backward sparse."""

    @staticmethod
    def forward(ctx, acts, W_dec, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(acts, W_dec)
        return F.embedding_bag(pattern.indices, W_dec, per_sample_weights=acts, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        acts, W_dec = ctx.saved_tensors
        pat: SparsePattern = ctx.pattern
        grad_out = grad_out.contiguous()
        g_acts = g_W = None
        if ctx.needs_input_grad[0]:
            g_acts = pat.sampled_matmul(grad_out, W_dec)  # [batch, k]
        if ctx.needs_input_grad[1]:
            g_W = pat.csr_t(acts) @ grad_out  # [d_sae, d_in]
        return g_acts, g_W, None


def sparse_decode(acts: Tensor, W_dec: Tensor, pattern: SparsePattern) -> Tensor:
    """``[batch, k]`` activations at ``pattern.indices`` -> ``[batch, d_in]`` (no bias)."""
    return _SparseDecode.apply(acts, W_dec, pattern)


# --------------------------------------------------------------------------------------------
# TopK SAE
# --------------------------------------------------------------------------------------------
class TopKOutput(NamedTuple):
    """What :meth:`TopKSAE.forward` returns (latents kept sparse, as in EleutherAI's sparsify)."""

    x_hat: Tensor
    """``[batch, d_in]`` reconstruction (normalised scale)."""
    top_acts: Tensor
    """``[batch, k]`` activations of the chosen latents (ReLU'd, so some may be 0)."""
    top_indices: Tensor
    """``[batch, k]`` which latents were chosen (ascending along ``k``)."""
    mse: Tensor
    """Scalar: squared error summed over ``d_in``, averaged over the batch."""
    auxk: Tensor
    """Scalar: the AuxK loss (0 when no ``dead_mask`` was given or nothing is dead)."""
    loss: Tensor
    """Scalar: ``mse + auxk_coeff * auxk``, what training minimises."""


class TopKSAE(_SAEBase):
    """A TopK sparse autoencoder (Gao et al. 2024).

    .. math::

        f = \\mathrm{ReLU}\\Big(\\mathrm{TopK}_k\\big((x - b_{dec}) W_{enc}^\\top + b_{enc}\\big)\\Big)
        \\qquad \\hat x = f\\, W_{dec} + b_{dec}

    ``TopK_k`` keeps the ``k`` largest entries of each row and zeroes the rest, so every token
    has at most ``k`` active latents. Shapes as in :class:`ReluSAE`.

    Loss: ``||x - x_hat||^2`` (per token, batch-averaged) plus ``auxk_coeff`` times the AuxK
    loss: latents that have not fired for a while ("dead", tracked by the trainer and passed
    in as ``dead_mask``) are asked to reconstruct the residual ``x - x_hat`` with their own
    top ``k_aux`` pre-activations; that gives them gradient and brings most of them back.
    """

    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, k: int = 32, auxk_coeff: float = 1 / 32,
                 k_aux: int | None = None, generator: torch.Generator | None = None):
        super().__init__(d_in, d_sae)
        if not 0 < k <= d_sae:
            raise ValueError(f"need 0 < k <= d_sae, got k={k}, d_sae={d_sae}")
        self.k, self.auxk_coeff = k, auxk_coeff
        self.k_aux = k_aux if k_aux is not None else d_in // 2
        w = self._init_weights(generator)
        self.encoder = nn.Linear(d_in, d_sae)
        with torch.no_grad():
            self.encoder.weight.copy_(w)
            self.encoder.bias.zero_()
        self.W_dec = nn.Parameter(w.clone())

    @property
    def W_enc(self) -> Tensor:
        """``[d_sae, d_in]`` encoder weight (one row per latent)."""
        return self.encoder.weight

    @property
    def b_enc(self) -> Tensor:
        return self.encoder.bias

    def _preacts(self, x: Tensor) -> Tensor:
        """Dense ``[batch, d_sae]`` pre-activations, without autograd (the one dense matmul)."""
        with torch.no_grad():
            return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T)

    def _select(self, x: Tensor, pre: Tensor, k: int) -> tuple[Tensor, SparsePattern]:
        """Top ``k`` of ``pre`` per row, re-attached to autograd through the sparse backward."""
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        idx, order = idx.sort(dim=-1)  # CSR wants ascending column indices
        vals = vals.gather(-1, order)
        pattern = SparsePattern(idx, self.d_sae)
        vals = select_preacts(x, self.b_dec, self.W_enc, self.b_enc, vals, pattern)
        return F.relu(vals), pattern

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch, d_in]`` -> (``top_acts [batch, k]``, ``top_indices [batch, k]``)."""
        acts, pattern = self._select(x, self._preacts(x), self.k)
        return acts, pattern.indices

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` dense latent activations (at most k non-zero)."""
        acts, idx = self.encode_sparse(x)
        return torch.zeros(x.shape[0], self.d_sae, dtype=acts.dtype, device=acts.device).scatter_(-1, idx, acts)

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` (dense; for analysis, not training)."""
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TopKOutput:
        pre = self._preacts(x)
        acts, pattern = self._select(x, pre, self.k)
        x_hat = sparse_decode(acts, self.W_dec, pattern) + self.b_dec
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        auxk = self._auxk_loss(x, pre, x_hat, dead_mask)
        return TopKOutput(x_hat, acts, pattern.indices, mse, auxk, mse + self.auxk_coeff * auxk)

    def _auxk_loss(self, x: Tensor, pre: Tensor, x_hat: Tensor, dead_mask: Tensor | None) -> Tensor:
        """AuxK (Gao et al. 2024, appendix A.2).

        The residual ``e = x - x_hat`` (no gradient) is reconstructed by the top ``k_aux``
        pre-activations *among dead latents*, decoded without bias:
        ``aux = ||e - e_hat||^2`` per token, batch-averaged, and scaled down by
        ``n_dead / k_aux`` when fewer than ``k_aux`` latents are dead (as in EleutherAI's
        sparsify and SAELens). Gao et al. divide both this and the main MSE by the same
        constant; leaving both un-normalised is the same objective.
        """
        zero = x.new_zeros(())
        if dead_mask is None:
            return zero
        n_dead = int(dead_mask.sum())
        if n_dead == 0:
            return zero
        k_aux = min(self.k_aux, n_dead)
        e = (x - x_hat).detach()
        aux_pre = pre.masked_fill(~dead_mask, -torch.inf)
        acts, pattern = self._select(x, aux_pre, k_aux)
        e_hat = sparse_decode(acts, self.W_dec, pattern)
        return (e_hat - e).pow(2).sum(dim=-1).mean() * min(n_dead / self.k_aux, 1.0)


# --------------------------------------------------------------------------------------------
# Saving in SAELens's format (scale folded into the weights)
# --------------------------------------------------------------------------------------------
def folded_weights(sae: ReluSAE | TopKSAE, scale: float) -> dict[str, Tensor]:
    """The SAE's weights in SAELens's layout, rewritten to take *raw* activations.

    Our SAE sees ``x_n = s * x`` (``s = scale``). With ``W_enc`` as SAELens stores it
    (``[d_in, d_sae]``):

    * pre-activations: ``(s x - b_dec) W_enc + b_enc = (x - b_dec / s) (s W_enc) + b_enc``
    * reconstruction in raw units: ``x_hat_n / s = f (W_dec / s) + b_dec / s``

    So ``W_enc' = s W_enc``, ``W_dec' = W_dec / s``, ``b_dec' = b_dec / s`` (the same vector
    in both places, as SAELens requires) and ``b_enc`` unchanged: the latents are identical,
    the reconstruction comes out in raw units. (Decoder rows then have norm ``1/s``.)
    """
    s = float(scale)
    return {
        "W_enc": (sae.W_enc.detach().T * s).contiguous(),
        "b_enc": sae.b_enc.detach().clone(),
        "W_dec": (sae.W_dec.detach() / s).contiguous(),
        "b_dec": (sae.b_dec.detach() / s).contiguous(),
    }


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _saelens_version() -> str:
    try:
        from importlib.metadata import version

        return version("sae-lens")
    except Exception:  # sae-lens not installed: the format is SAELens 6's
        return "6.0.0"


def save_saelens(sae: ReluSAE | TopKSAE, path: str | os.PathLike, *, hook_name: str, model_name: str,
                 scale: float, dataset: str = "", dtype: str = "float32", load_dtype: str = "float32",
                 context_size: int | None = None, extra_metadata: dict | None = None,
                 history: list[dict] | None = None, metrics: dict | None = None) -> Path:
    """Write ``sae`` in SAELens 6's on-disk format so ``sae_lens.SAE.load_from_disk(path)``
    works on *raw* activations.

    Files: ``cfg.json``, ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``,
    ``W_dec [d_sae, d_in]``, ``b_dec``; ``scale`` folded in by :func:`folded_weights`) and
    ``training_log.json`` (scale, metrics, history, metadata).

    ``dtype``: how the weights are *stored*: ``"float32"``, or ``"float16"`` / ``"bfloat16"`` to
    ship half the bytes. ``load_dtype``: the ``dtype`` written into ``cfg.json``, i.e. what
    ``load_from_disk`` gives by default (SAELens casts the stored tensors to it). The default
    ``"float32"`` loads cleanly on any machine and takes fp32 activations; pass
    ``load_from_disk(path, dtype="float16")`` to run in half precision. Returns the folder.
    """
    from safetensors.torch import save_file

    for name, value in (("dtype", dtype), ("load_dtype", load_dtype)):
        if value not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {value!r}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tdtype = getattr(torch, dtype)
    weights = {k: v.to("cpu", tdtype).contiguous() for k, v in folded_weights(sae, scale).items()}

    metadata = {
        # SAELens treats a config without a 6.x version as pre-6.0 and rewrites it on load.
        "sae_lens_version": _saelens_version(),
        "sae_lens_training_version": None,
        "model_name": model_name,
        "hook_name": hook_name,
        "hook_head_index": None,
        "prepend_bos": True,
        "dataset_path": dataset,
        "context_size": context_size,
        "input_scale_folded": float(scale),
        "weights_dtype": dtype,
        "trained_with": "interp_lib",
        **(extra_metadata or {}),
    }
    cfg: dict[str, Any] = {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": load_dtype,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if isinstance(sae, TopKSAE):
        cfg["k"] = sae.k
        cfg["rescale_acts_by_decoder_norm"] = False
    save_file(weights, str(out / "sae_weights.safetensors"))
    (out / "cfg.json").write_text(json.dumps(_to_jsonable(cfg), indent=2) + "\n")
    log = {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "scale": float(scale),
        "hook_name": hook_name,
        "model_name": model_name,
        "metrics": metrics or {},
        "history": history or [],
        "metadata": metadata,
    }
    if isinstance(sae, TopKSAE):
        log["k"] = sae.k
    else:
        log["l1_coeff"] = sae.l1_coeff
    (out / "training_log.json").write_text(json.dumps(_to_jsonable(log), indent=1) + "\n")
    return out


def load_saelens_as_homebrew(path: str | os.PathLike) -> tuple[ReluSAE | TopKSAE, float]:
    """Inverse of :func:`save_saelens`: ``(sae, scale)`` with the scale unfolded again
    (needs ``training_log.json`` or ``metadata.input_scale_folded``; scale 1.0 otherwise)."""
    from safetensors.torch import load_file

    p = Path(path)
    cfg = json.loads((p / "cfg.json").read_text())
    scale = float(cfg.get("metadata", {}).get("input_scale_folded", 1.0))
    w = {k: v.float() for k, v in load_file(str(p / "sae_weights.safetensors")).items()}
    if cfg["architecture"] == "topk":
        sae: ReluSAE | TopKSAE = TopKSAE(cfg["d_in"], cfg["d_sae"], k=cfg["k"])
    elif cfg["architecture"] == "standard":
        sae = ReluSAE(cfg["d_in"], cfg["d_sae"])
    else:
        raise ValueError(f"unsupported architecture {cfg['architecture']!r}")
    with torch.no_grad():
        sae.encoder.weight.copy_(w["W_enc"].T / scale)
        sae.encoder.bias.copy_(w["b_enc"])
        sae.W_dec.copy_(w["W_dec"] * scale)
        sae.b_dec.copy_(w["b_dec"] * scale)
    return sae, scale
