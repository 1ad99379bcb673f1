"""The sparse kernels behind the TopK-style SAEs: products with a sparse latent pattern.

A TopK SAE keeps ``k`` of ``d_sae`` latents per token, so its latent matrix ``A: [batch, d_sae]``
has only ``k`` non-zeros per row (BatchTopK: ``k`` per row on average). Two autograd functions
use that instead of dense products:

* :func:`select_preacts`: the chosen pre-activations (``[batch, k]``, or ``[nnz]`` for a ragged
  pattern), whose backward sends gradients only into the chosen encoder rows (``W_enc``,
  ``b_enc``, ``b_dec``, ``x``).
* :func:`sparse_decode`: the chosen activations -> ``[batch, d_in]`` reconstruction
  (``sum_j acts[b, j] * W_dec[idx[b, j]]``), forward and backward sparse.

Both take a :class:`SparsePattern` (which latents, row by row, each row ascending), which builds
the compressed-sparse-row (CSR) layouts once per batch. On CPU this is several times cheaper
than the dense matrix products; :meth:`~interp_lib.sae.homebrew.TopKSAE.forward_dense` and
:meth:`~interp_lib.sae.batchtopk.BatchTopKSAE.forward_dense` are the dense references they must
agree with. (The same split as OpenAI's ``sparse_autoencoder``: ``model.py`` for the maths,
``kernels.py`` for the fast products.)
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparsePattern", "csr_mm", "largest_entries", "select_preacts", "sparse_decode"]


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


def largest_entries(m: Tensor, n: int) -> Tensor:
    """Where the ``n`` largest entries of a matrix ``m: [rows, cols]`` are: ``[n]`` flat indices
    (``row * cols + col``), ascending. Ties are broken arbitrarily, as by ``torch.topk``.

    ``m.flatten().topk(n)`` over a whole batch costs far more than the same ``n`` picked row by
    row (280 ms for 4096 x 4608 with n = 32 * 4096 on this project's 2-core CPU). Instead a
    strided sample (every ``3 n / 512``-th entry) proposes a threshold expected to let 1.5 ``n``
    entries through; the entries at or above it are gathered and the top ``n`` taken among
    them (21-25 ms there). That is exact whenever at least ``n`` entries pass (counted);
    otherwise (rare) the whole matrix goes through ``topk``.
    """
    flat = m.reshape(-1)
    if n <= 0 or n >= flat.numel():
        return torch.arange(min(max(n, 0), flat.numel()), device=m.device)
    passed = (flat >= _proposed_threshold(flat, n, m.shape[-1])).nonzero().squeeze(1)  # ascending
    if passed.numel() < n:
        return flat.topk(n, sorted=False).indices.sort().values
    values = flat[passed]
    top = values.topk(n, sorted=False)
    kept = passed[values >= top.values.min()]  # still ascending
    if kept.numel() == n:
        return kept
    return passed[top.indices.sort().values]  # ties at the n-th value


def _proposed_threshold(flat: Tensor, n: int, cols: int) -> Tensor:
    """A value about 1.5 ``n`` entries of ``flat`` reach: the ``r``-th largest of a strided
    sample, ``r`` about 256 (its relative spread about 1 / 16, so at least ``n`` pass almost
    always); ``cols``: the row length, to which the stride is made coprime so that the sample
    does not keep to a few columns."""
    stride = max(1, 3 * n // 512)
    while math.gcd(stride, cols) > 1:
        stride += 1
    sample = flat[::stride]
    return sample.topk(min(sample.numel(), -(-3 * n // (2 * stride))), sorted=False).values.min()


class SparsePattern:
    """Which latents are active in which token, as a ``[batch, d_sae]`` matrix in compressed
    sparse rows: token ``b``'s latents are ``col[crow[b] : crow[b + 1]]``, ascending.

    TopK keeps ``k`` latents in every row (``SparsePattern(indices [batch, k], d_sae)``);
    BatchTopK keeps a different number per row (:meth:`from_rows`). The products the SAEs need
    are ``A @ W`` (decode), ``A^T @ X`` (weight gradients) and "``X @ W^T`` only at the
    non-zeros" (gradients of the chosen activations); this class builds the CSR layouts of the
    matrix and its transpose once per batch. Values come as ``[batch, k]`` (fixed ``k``) or
    ``[nnz]``, in the order of ``col``; results of the products keep that shape.
    """

    def __init__(self, indices: Tensor, d_sae: int):
        self.indices = indices  # [batch, k], int64, ascending along k
        batch, k = indices.shape
        crow = torch.arange(0, batch * k + 1, k, device=indices.device)
        self._layout(crow, indices.reshape(-1), d_sae)

    @classmethod
    def from_rows(
        cls, crow: Tensor, col: Tensor, d_sae: int, rows: Tensor | None = None
    ) -> SparsePattern:
        """A pattern with any number of latents per row: ``crow: [batch + 1]`` offsets into
        ``col: [nnz]`` (int64, ascending within each row); ``rows: [nnz]`` each non-zero's row,
        if known; ``indices`` is then ``None``."""
        pattern = cls.__new__(cls)
        pattern.indices = None
        pattern._layout(crow, col, d_sae, rows)
        return pattern

    def _layout(self, crow: Tensor, col: Tensor, d_sae: int, rows: Tensor | None = None) -> None:
        self.crow, self.col, self.d_sae = crow, col, d_sae
        self.batch, self.nnz = crow.numel() - 1, col.numel()
        self._t: tuple[Tensor, Tensor, Tensor] | None = None
        self._order: tuple[Tensor, Tensor] | None = None
        self._rows = rows

    def rows(self) -> Tensor:
        """``[nnz]`` the token (row) of every non-zero."""
        if self._rows is None:
            counts = self.crow.diff()
            batch = torch.arange(self.batch, device=counts.device)
            self._rows = torch.repeat_interleave(batch, counts, output_size=self.nnz)
        return self._rows

    def csr(self, values: Tensor) -> Tensor:
        """``values`` (``[batch, k]`` or ``[nnz]``) -> sparse CSR ``[batch, d_sae]``."""
        return _csr(self.crow, self.col, values.reshape(-1), (self.batch, self.d_sae))

    def _by_latent(self) -> tuple[Tensor, Tensor]:
        """(``order [nnz]``: the non-zeros sorted by latent, stably; ``crow [d_sae + 1]``: where
        each latent's run starts in that order), computed once per batch."""
        if self._order is None:
            order = torch.sort(self.col, stable=True).indices
            crow = torch.zeros(self.d_sae + 1, dtype=torch.int64, device=self.col.device)
            crow[1:] = torch.bincount(self.col, minlength=self.d_sae).cumsum(0)
            self._order = (order, crow)
        return self._order

    def csr_t(self, values: Tensor) -> Tensor:
        """``values`` (``[batch, k]`` or ``[nnz]``) -> sparse CSR of the transpose,
        ``[d_sae, batch]``."""
        if self._t is None:  # shared by all backwards of the batch
            order, crow = self._by_latent()
            self._t = (order, crow, self.rows()[order])
        order, crow, rows = self._t
        return _csr(crow, rows, values.reshape(-1)[order], (self.d_sae, self.batch))

    def sampled_matmul(self, a: Tensor, b_t: Tensor) -> Tensor:
        """``(a @ b_t.T)`` at the pattern's non-zeros only: ``a: [batch, n]``, ``b_t: [d_sae, n]``
        -> ``[batch, k]`` (``[nnz]`` for :meth:`from_rows`). Costs ``nnz * n`` instead of
        ``batch * d_sae * n``."""
        zeros = torch.zeros(self.nnz, dtype=a.dtype, device=a.device)
        out = torch.sparse.sampled_addmm(self.csr(zeros), a, b_t.T, beta=0.0).values()
        return out if self.indices is None else out.view(self.indices.shape)

    def by_slices(self, bounds: Sequence[int]) -> SparsePattern:
        """The same non-zeros, each row cut into one row per slice of latents: row
        ``b * J + j`` holds row ``b``'s latents in ``bounds[j - 1] .. bounds[j] - 1`` (``bounds``
        ascending, the last ``d_sae``; ``J = len(bounds)``), over a ``[batch * J, d_sae]``
        matrix. A row's latents ascend, so each slice is a contiguous run: values keep their
        order."""
        edges = torch.as_tensor(bounds, dtype=self.col.dtype, device=self.col.device)
        n = len(bounds)
        segment = self.rows() * n + torch.bucketize(self.col, edges, right=True)
        crow = torch.zeros(self.batch * n + 1, dtype=torch.int64, device=self.col.device)
        crow[1:] = torch.bincount(segment, minlength=self.batch * n).cumsum(0)
        parts = SparsePattern.from_rows(crow, self.col, self.d_sae, rows=segment)
        parts._order = self._by_latent()  # the same latents: the same order by latent
        return parts


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
    ``values: [batch, k]`` at ``pattern.indices: [batch, k]`` (or ``[nnz]`` in the order of
    ``pattern.col``); returns the same shape.
    """
    return _SelectPreacts.apply(x, b_dec, W_enc, b_enc, values, pattern)


class _SparseDecode(torch.autograd.Function):
    """``x_hat[b] = sum_j acts[b, j] * W_dec[idx[b, j]]``, forward and backward sparse."""

    @staticmethod
    def forward(ctx, acts, W_dec, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(acts, W_dec)
        return F.embedding_bag(
            pattern.col,
            W_dec,
            pattern.crow,
            mode="sum",
            per_sample_weights=acts.reshape(-1),
            include_last_offset=True,
        )

    @staticmethod
    def backward(ctx, grad_out):
        acts, W_dec = ctx.saved_tensors
        pat: SparsePattern = ctx.pattern
        grad_out = grad_out.contiguous()
        g_acts = g_W = None
        if ctx.needs_input_grad[0]:
            g_acts = pat.sampled_matmul(grad_out, W_dec)  # shaped as acts
        if ctx.needs_input_grad[1]:
            g_W = csr_mm(pat.csr_t(acts), grad_out)  # [d_sae, d_in]
        return g_acts, g_W, None


def sparse_decode(acts: Tensor, W_dec: Tensor, pattern: SparsePattern) -> Tensor:
    """Activations at ``pattern``'s non-zeros (``[batch, k]`` or ``[nnz]``) -> ``[batch, d_in]``
    (no bias).

    ``W_dec: [d_sae, d_in]``; the result is ``acts`` scattered into ``[batch, d_sae]`` times
    ``W_dec``, computed without building that matrix.
    """
    return _SparseDecode.apply(acts, W_dec, pattern)
