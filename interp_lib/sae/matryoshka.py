"""The Matryoshka SAE (Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka
Sparse Autoencoders"; Nabeshima 2024).

One dictionary, read as a set of nested dictionaries: its first ``m_1`` latents, its first
``m_2 > m_1``, ..., all ``d_sae``. Each prefix must reconstruct the input *on its own* (the
latents outside it set to zero), and the loss sums the reconstruction errors of all prefixes.
The first latents are then pushed to carry the broad, frequent concepts (they must do alone),
and the later ones refine them. That is the cure for *feature absorption*: in a plain SAE a
specific latent ("the token 'short'") can swallow part of a general one ("starts with S")
because that saves an active latent; here the general latent is needed by the small prefix
and cannot give its job away.

The activation is BatchTopK, as in SAELens's ``MatryoshkaBatchTopKTrainingSAE``, and like it
the SAE is shipped as a ``"jumprelu"`` SAE with one shared threshold (the prefixes only shape
training; at inference it is one dictionary). Training runs through BatchTopK's sparse kernels
(one sparse decode gives every prefix); :meth:`MatryoshkaSAE.forward_dense` is the dense
reference.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.batchtopk import BatchTopKSAE
from interp_lib.sae.homebrew import dense_auxk
from interp_lib.sae.kernels import SparsePattern, sparse_decode

__all__ = ["MatryoshkaSAE", "MatryoshkaOutput", "nested_widths"]


def nested_widths(widths: Sequence[int], d_sae: int) -> tuple[int, ...]:
    """The prefix widths, strictly increasing and ending at ``d_sae`` (appended if missing);
    :class:`~interp_lib.errors.InvalidArgumentError` otherwise."""
    w = [int(m) for m in widths]
    if w and w[-1] != d_sae:
        w.append(d_sae)
    if not w or any(m < 1 for m in w) or any(a >= b for a, b in zip(w, w[1:])) or w[-1] != d_sae:
        raise InvalidArgumentError(
            f"matryoshka widths must be positive, strictly increasing and at most d_sae={d_sae}, "
            f"got {list(widths)}"
        )
    return tuple(w)


class MatryoshkaOutput(NamedTuple):
    """What :meth:`MatryoshkaSAE.forward` returns."""

    x_hat: Tensor
    """``[batch, d_in]`` reconstruction by the whole dictionary (normalised scale)."""
    latents: Tensor
    """``[batch, d_sae]`` latent activations (BatchTopK while training, threshold in eval;
    without gradient from :meth:`MatryoshkaSAE.forward` in training mode)."""
    mse: Tensor
    """Scalar: squared error of the whole dictionary, summed over ``d_in``, batch-averaged."""
    prefix_mse: Tensor
    """``[n_levels]``: the same error of each prefix ``widths[j]`` alone (the last is ``mse``)."""
    auxk: Tensor
    """Scalar: the AuxK loss of the whole dictionary (0 when nothing is dead)."""
    loss: Tensor
    """Scalar: ``prefix_mse.sum() + auxk_coeff * auxk``, what training minimises."""


class MatryoshkaSAE(BatchTopKSAE):
    """A Matryoshka BatchTopK sparse autoencoder.

    .. math::

        f = \\mathrm{BatchTopK}_{kB}\\big(\\mathrm{ReLU}((x - b_{dec}) W_{enc}^\\top
        + b_{enc})\\big) \\qquad
        \\hat x_{(j)} = f_{[:m_j]}\\, W_{dec[:m_j]} + b_{dec}

    for the prefix widths ``m_1 < ... < m_J = d_sae`` (``widths``); ``x_hat = x_hat_(J)``.
    Shapes as in :class:`~interp_lib.sae.batchtopk.BatchTopKSAE`; ``f_[:m]`` is ``[batch, m]`` and
    ``W_dec[:m]`` is ``[m, d_in]``.

    Loss: ``sum_j ||x - x_hat_(j)||^2`` (per token, batch-averaged) plus ``auxk_coeff`` times the
    AuxK loss of the whole dictionary (SAELens's default, ``use_matryoshka_aux_loss=False``).
    Inference and saving are BatchTopK's: one shared threshold ``theta``.
    """

    training_architecture = "matryoshka_batchtopk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        widths: Sequence[int],
        k: float = 32,
        auxk_coeff: float = 1 / 32,
        k_aux: int | None = None,
        threshold_lr: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__(d_in, d_sae, k, auxk_coeff, k_aux, threshold_lr, generator)
        self.widths = nested_widths(widths, d_sae)

    def prefix_reconstructions(self, latents: Tensor) -> list[Tensor]:
        """``[batch, d_sae]`` latents -> one ``[batch, d_in]`` reconstruction per prefix width,
        each built on the previous one
        (``x_hat_(j) = x_hat_(j-1) + f_[m_{j-1}:m_j] W_dec[...]``)."""
        sizes = [b - a for a, b in zip((0, *self.widths[:-1]), self.widths)]
        # split, not slicing: its backward joins the pieces' gradients in one copy
        blocks = zip(latents.split(sizes, dim=1), self.W_dec.split(sizes, dim=0))
        out, x_hat = [], self.b_dec.expand(latents.shape[0], -1)
        for f, w in blocks:
            x_hat = x_hat + f @ w
            out.append(x_hat)
        return out

    def sparse_prefix_reconstructions(self, acts: Tensor, pattern: SparsePattern) -> list[Tensor]:
        """:meth:`prefix_reconstructions` from the sparse latents (``acts: [nnz]`` at
        ``pattern``): one sparse decode of every (token, slice of the dictionary) pair, then a
        running sum over the slices."""
        parts = sparse_decode(acts, self.W_dec, pattern.by_slices(self.widths))
        out, x_hat = [], self.b_dec
        for part in parts.view(pattern.batch, len(self.widths), self.d_in).unbind(dim=1):
            x_hat = x_hat + part
            out.append(x_hat)
        return out

    def _score(self, x: Tensor, recons: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(``prefix_mse [n_levels]``, ``x_hat``: the last of ``recons``)."""
        prefix_mse = torch.stack([(r - x).pow(2).sum(dim=-1).mean() for r in recons])
        return prefix_mse, recons[-1]

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> MatryoshkaOutput:
        """Encode, decode and score ``x: [batch, d_in]`` (see :class:`MatryoshkaOutput`).
        ``dead_mask: [d_sae]`` bool marks the latents AuxK should train (``None``: no AuxK).

        In training mode through the sparse kernels; in eval mode as :meth:`forward_dense`.
        Same result as :meth:`forward_dense` (up to rounding)."""
        if not self.training:
            return self.forward_dense(x, dead_mask)
        pre = self._preacts(x, out=self._workspace(x))  # never leaves this method
        acts, pattern = self._select(x, pre)
        prefix_mse, x_hat = self._score(x, self.sparse_prefix_reconstructions(acts, pattern))
        auxk = self._auxk_loss(x, x_hat, dead_mask)
        loss = prefix_mse.sum() + self.auxk_coeff * auxk
        latents = self._scatter(acts, pattern)
        return MatryoshkaOutput(x_hat, latents, prefix_mse[-1], prefix_mse, auxk, loss)

    def forward_dense(self, x: Tensor, dead_mask: Tensor | None = None) -> MatryoshkaOutput:
        """:meth:`forward` in plain dense torch: the readable reference."""
        z = self.preacts(x)
        latents = self._activate(z)
        prefix_mse, x_hat = self._score(x, self.prefix_reconstructions(latents))
        auxk = dense_auxk(x, x_hat, z, self.W_dec, dead_mask, self.k_aux)
        loss = prefix_mse.sum() + self.auxk_coeff * auxk
        return MatryoshkaOutput(x_hat, latents, prefix_mse[-1], prefix_mse, auxk, loss)
