"""The BatchTopK SAE (Bussmann, Leask and Nanda 2024, "BatchTopK Sparse Autoencoders").

TopK asks every token to use exactly ``k`` latents. BatchTopK asks a *batch* of ``B`` tokens to
use ``k * B`` latents between them: the ``k * B`` largest activations of the whole
``[B, d_sae]`` matrix are kept. A hard token can use more latents than an easy one, and the
average L0 is still ``k``.

That rule needs a batch, which inference does not have. So during training the SAE tracks one
number, the threshold ``theta``: an exponential moving average (rate ``threshold_lr``) of the
smallest activation the batch rule kept. SAELens starts that average at 0, which biases it low
for the first few hundred steps (after 29 steps at rate 0.01 it is a quarter of its target, and
an SAE saved then fires on ~1,000 latents a token); here the average is bias-corrected as Adam's
moments are (divided by ``1 - (1 - rate)^t``), so it is unbiased from the first step and the
same in the limit. At inference every latent whose pre-activation
exceeds ``theta`` fires: a JumpReLU with one threshold shared by all latents. That is also how
SAELens ships a BatchTopK SAE (``BatchTopKTrainingSAE`` saves a ``"jumprelu"`` SAE whose
threshold is ``theta`` for every latent), so :func:`interp_lib.sae.saelens_format.save_saelens`
writes it that way, and ``sae_lens.SAE.load_from_disk`` reads it as a ``JumpReLUSAE``.

Dead latents get the AuxK loss, as in TopK. Training runs through the same sparse kernels as
TopK (:mod:`interp_lib.sae.kernels`; a row keeps any number of latents): one dense product chooses
the ``k * B`` entries, everything after it touches only them. :meth:`BatchTopKSAE.forward_dense`
is the same step in plain dense torch, the reference they are tested against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.homebrew import _KSparseSAE, dense_auxk
from interp_lib.sae.kernels import SparsePattern, largest_entries, sparse_decode

__all__ = ["BatchTopKSAE", "BatchTopKOutput", "batch_topk", "batch_topk_pattern"]


def batch_topk(pre: Tensor, k: float) -> Tensor:
    """Keep the ``int(k * batch)`` largest entries of ``ReLU(pre)`` over the whole batch.

    ``pre: [batch, d_sae]`` -> ``[batch, d_sae]``, zero outside the kept entries (a row may keep
    more or fewer than ``k``; the batch keeps ``k`` per row on average). Gradients flow to the
    kept entries of ``pre``.
    """
    acts = F.relu(pre)
    flat = acts.flatten()
    n_keep = min(flat.numel(), int(k * pre.shape[0]))
    idx = flat.topk(n_keep, sorted=False).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(0, idx, True)
    return acts * mask.view_as(acts)


def batch_topk_pattern(pre: Tensor, k: float) -> tuple[Tensor, SparsePattern]:
    """The entries :func:`batch_topk` keeps, sparse: (their pre-activations ``[nnz]``, where
    they are), ``nnz = int(k * batch)``, rows and then columns ascending.

    ``pre: [batch, d_sae]`` (read, not differentiated). When fewer than ``nnz`` entries are
    positive, the rest of the kept entries are non-positive ones, which ReLU makes 0, as the
    zeros :func:`batch_topk` keeps.
    """
    batch, d_sae = pre.shape
    where = largest_entries(pre, min(pre.numel(), int(k * batch)))  # row-major order
    rows = torch.div(where, d_sae, rounding_mode="floor")
    crow = torch.zeros(batch + 1, dtype=torch.int64, device=pre.device)
    crow[1:] = torch.bincount(rows, minlength=batch).cumsum(0)
    pattern = SparsePattern.from_rows(crow, where - rows * d_sae, d_sae, rows=rows)
    return pre.reshape(-1)[where], pattern


class BatchTopKOutput(NamedTuple):
    """What :meth:`BatchTopKSAE.forward` returns."""

    x_hat: Tensor
    """``[batch, d_in]`` reconstruction (normalised scale)."""
    latents: Tensor
    """``[batch, d_sae]`` latent activations: the batch rule while training, the threshold in
    eval mode (``sae.eval()``). Without gradient from :meth:`BatchTopKSAE.forward` in training
    mode (the loss flows through the sparse kernels)."""
    mse: Tensor
    """Scalar: squared error summed over ``d_in``, averaged over the batch."""
    auxk: Tensor
    """Scalar: the AuxK loss (0 when no ``dead_mask`` was given or nothing is dead)."""
    loss: Tensor
    """Scalar: ``mse + auxk_coeff * auxk``, what training minimises."""


class BatchTopKSAE(_KSparseSAE):
    """A BatchTopK sparse autoencoder (Bussmann et al. 2024).

    .. math::

        z = (x - b_{dec}) W_{enc}^\\top + b_{enc} \\qquad
        f = \\mathrm{BatchTopK}_{kB}\\big(\\mathrm{ReLU}(z)\\big)
        \\;\\text{(training)}, \\quad
        f = z \\odot H(z - \\theta) \\;\\text{(inference)} \\qquad
        \\hat x = f\\, W_{dec} + b_{dec}

    ``BatchTopK_{kB}`` keeps the ``k * B`` largest entries of the ``[B, d_sae]`` matrix
    (:func:`batch_topk`). At every training forward ``m <- (1 - r) m + r * min(kept f > 0)``
    (``r = threshold_lr``, ``m`` from 0, as SAELens) and ``theta = m / (1 - (1 - r)^t)`` after
    ``t`` updates (scalar buffers, float64). Shapes as in :class:`~interp_lib.sae.homebrew.ReluSAE`;
    ``k`` may be fractional.

    Loss: ``||x - x_hat||^2`` (per token, batch-averaged) plus ``auxk_coeff`` times the AuxK loss
    of the latents in ``dead_mask``. Decoder rows are held at unit norm.
    """

    architecture = "jumprelu"  # how SAELens saves it (inference: one shared threshold)
    training_architecture = "batchtopk"  # SAELens's name for its trainer

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: float = 32,
        auxk_coeff: float = 1 / 32,
        k_aux: int | None = None,
        threshold_lr: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        if not 0 < threshold_lr <= 1:
            raise InvalidArgumentError(f"need 0 < threshold_lr <= 1, got {threshold_lr}")
        super().__init__(d_in, d_sae, k, auxk_coeff, k_aux, generator)
        self.threshold_lr = threshold_lr
        self.register_buffer("theta", torch.zeros((), dtype=torch.float64))
        self.register_buffer("theta_avg", torch.zeros((), dtype=torch.float64))
        self.register_buffer("theta_updates", torch.zeros((), dtype=torch.long))

    @property
    def threshold(self) -> Tensor:
        """``[d_sae]`` the inference threshold of every latent (all equal to ``theta``)."""
        return self.theta.to(self.b_enc.dtype).expand(self.d_sae)

    def preacts(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` pre-activations ``z``."""
        return self.encoder(x - self.b_dec)

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` latents by the inference rule (``z > theta``), as
        the saved SAE computes them."""
        z = self.preacts(x)
        return F.relu(z) * (z > self.threshold)

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` reconstruction."""
        return latents @ self.W_dec + self.b_dec

    def _activate(self, z: Tensor) -> Tensor:
        """``[batch, d_sae]`` latents from pre-activations: the batch rule in training mode (and
        the threshold update), the shared threshold in eval mode."""
        if not self.training:
            return F.relu(z) * (z > self.threshold)
        latents = batch_topk(z, self.k)
        self.update_threshold_(latents)
        return latents

    @torch.no_grad()
    def update_threshold_(self, latents: Tensor) -> None:
        """Move ``theta`` towards the smallest positive activation in ``latents: [batch, d_sae]``
        (the bias-corrected moving average of the class docstring)."""
        kept = latents[latents > 0]
        if kept.numel():
            lr = self.threshold_lr
            self.theta_avg.mul_(1 - lr).add_(lr * kept.min().double())
            self.theta_updates += 1
            self.theta.copy_(self.theta_avg / (1 - (1 - lr) ** int(self.theta_updates)))

    def _select(self, x: Tensor, pre: Tensor) -> tuple[Tensor, SparsePattern]:
        """The batch rule's kept entries of ``pre`` (``[nnz]`` activations, their pattern),
        re-attached to autograd through the sparse backward; moves the threshold."""
        vals, pattern = batch_topk_pattern(pre, self.k)
        acts = self._attach(x, vals, pattern)
        self.update_threshold_(acts.detach())
        return acts, pattern

    @staticmethod
    def _scatter(acts: Tensor, pattern: SparsePattern) -> Tensor:
        """``[nnz]`` activations at ``pattern`` -> the ``[batch, d_sae]`` matrix (no gradient)."""
        return pattern.csr(acts.detach()).to_dense()

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> BatchTopKOutput:
        """Encode, decode and score ``x: [batch, d_in]`` (see :class:`BatchTopKOutput`).
        ``dead_mask: [d_sae]`` bool marks the latents AuxK should train (``None``: no AuxK).

        In training mode through the sparse kernels (one dense product chooses the kept
        entries); in eval mode, the threshold rule as :meth:`forward_dense`. Same result as
        :meth:`forward_dense` (up to rounding)."""
        if not self.training:
            return self.forward_dense(x, dead_mask)
        pre = self._preacts(x, out=self._workspace(x))  # never leaves this method
        acts, pattern = self._select(x, pre)
        x_hat = sparse_decode(acts, self.W_dec, pattern) + self.b_dec
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        auxk = self._auxk_loss(x, x_hat, dead_mask)
        latents = self._scatter(acts, pattern)
        return BatchTopKOutput(x_hat, latents, mse, auxk, mse + self.auxk_coeff * auxk)

    def forward_dense(self, x: Tensor, dead_mask: Tensor | None = None) -> BatchTopKOutput:
        """:meth:`forward` in plain dense torch (the full ``[batch, d_sae]`` latents, autograd
        through dense products): the readable reference."""
        z = self.preacts(x)
        latents = self._activate(z)
        x_hat = self.decode(latents)
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        auxk = dense_auxk(x, x_hat, z, self.W_dec, dead_mask, self.k_aux)
        return BatchTopKOutput(x_hat, latents, mse, auxk, mse + self.auxk_coeff * auxk)
