"""The sparse kernels behind :class:`~interp_lib.sae.TopKSAE`: products with a TopK pattern.

A TopK SAE keeps ``k`` of ``d_sae`` latents per token, so its latent matrix ``A: [batch, d_sae]``
has only ``k`` non-zeros per row. Two autograd functions use that instead of dense products:

* :func:`select_preacts`: the chosen pre-activations ``[batch, k]``, whose backward sends
  gradients only into the ``batch * k`` chosen encoder rows (``W_enc``, ``b_enc``, ``b_dec``,
  ``x``).
* :func:`sparse_decode`: ``[batch, k]`` activations -> ``[batch, d_in]`` reconstruction
  (``sum_j acts[b, j] * W_dec[idx[b, j]]``), forward and backward sparse.

Both take a :class:`SparsePattern` (``indices: [batch, k]``, each row ascending), which builds
the compressed-sparse-row (CSR) layouts once per batch. On CPU this is several times cheaper
than the dense matrix products; :meth:`~interp_lib.sae.TopKSAE.forward_dense` is the dense
reference they must agree with. (The same split as OpenAI's ``sparse_autoencoder``:
``model.py`` for the maths, ``kernels.py`` for the fast products.)
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparsePattern", "csr_mm", "select_preacts", "sparse_decode"]


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A sparse CSR tensor of ``size`` from ``crow: [rows + 1]``, ``col, values: [nnz]``."""
    with warnings.catch_warnings():  # torch calls all of sparse CSR "beta"; we use its stable core
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


def csr_mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a sparse CSR ``a: [m, n]`` and a dense ``b: [n, p]`` -> dense ``[m, p]``.

    Written straight into a fresh output: PyTorch's ``a @ b`` zero-fills a buffer and copies the
    result, 2-10x the cost of the product itself on a CPU (``beta=0`` ignores the uninitialised
    ``out``, NaNs included)."""
    out = torch.empty(a.shape[0], b.shape[1], dtype=b.dtype, device=b.device)
    return torch.addmm(out, a, b, beta=0.0, out=out)


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
        if self._t is None:
            # sort the non-zeros by latent, once per batch (shared by all backwards)
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
            g_W = csr_mm(pat.csr_t(grad), x - b_dec)  # [d_sae, d_in]
        per_latent = torch.zeros(pat.d_sae, dtype=grad.dtype, device=grad.device)
        per_latent.index_add_(0, pat.col, grad.reshape(-1))  # sum over the batch, per latent
        if ctx.needs_input_grad[3]:
            g_b = per_latent
        if ctx.needs_input_grad[1]:
            g_bdec = -(per_latent @ W_enc)  # d/d b_dec of (x - b_dec) W_enc^T, summed over batch
        if ctx.needs_input_grad[0]:
            g_x = csr_mm(pat.csr(grad), W_enc)
        return g_x, g_bdec, g_W, g_b, None, None


def select_preacts(
    x: Tensor, b_dec: Tensor, W_enc: Tensor, b_enc: Tensor, values: Tensor, pattern: SparsePattern
) -> Tensor:
    """``values[b, j] = (x[b] - b_dec) . W_enc[idx[b, j]] + b_enc[idx[b, j]]`` (given, already
    computed) with gradients flowing sparsely into ``W_enc``, ``b_enc``, ``b_dec`` (and ``x``).

    Shapes: ``x: [batch, d_in]``, ``b_dec: [d_in]``, ``W_enc: [d_sae, d_in]``, ``b_enc: [d_sae]``,
    ``values: [batch, k]`` at ``pattern.indices: [batch, k]``; returns ``[batch, k]``.
    """
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
            g_W = csr_mm(pat.csr_t(acts), grad_out)  # [d_sae, d_in]
        return g_acts, g_W, None


def sparse_decode(acts: Tensor, W_dec: Tensor, pattern: SparsePattern) -> Tensor:
    """``[batch, k]`` activations at ``pattern.indices`` -> ``[batch, d_in]`` (no bias).

    ``W_dec: [d_sae, d_in]``; the result is ``acts`` scattered into ``[batch, d_sae]`` times
    ``W_dec``, computed without building that matrix.
    """
    return _SparseDecode.apply(acts, W_dec, pattern)
