"""Sparse autoencoders from scratch, written to be read.

Two models, each a small class of its own:

* :class:`ReluSAE`: the original recipe (Bricken et al. 2023, "Towards Monosemanticity"):
  an encoder ``Linear`` + ReLU, a decoder ``Linear``, trained with
  ``loss = MSE + l1_coeff * L1``.
* :class:`TopKSAE`: Gao et al. 2024, "Scaling and evaluating sparse autoencoders": keep the
  ``k`` largest pre-activations of every token, zero the rest. Sparsity is set directly by
  ``k``, so there is no L1 term to tune. Because only ``k`` of ``d_sae`` latents are non-zero,
  the decoder and the encoder's backward pass are computed *sparsely* by the kernels in
  :mod:`interp_lib.sae.kernels`: on CPU that is several times cheaper than the dense matrix
  products. :meth:`TopKSAE.forward_dense` is the same forward pass in plain dense torch, the
  reference to read (and to test the kernels against).

Today's variants each have a module of their own, built on the same base and conventions:
:mod:`interp_lib.sae.jumprelu` (learned thresholds, Rajamanoharan et al. 2024),
:mod:`interp_lib.sae.batchtopk` (top ``k x batch`` over the batch, Bussmann et al. 2024) and
:mod:`interp_lib.sae.matryoshka` (nested prefixes of the dictionary, Bussmann et al. 2025).

Conventions shared by all (and by SAELens, so saving is a copy):

* ``x``: ``[batch, d_in]`` activations, already multiplied by the input-normalisation ``scale``
  (:func:`input_scale`) so that their mean norm is ``sqrt(d_in)``. The SAE never sees raw
  activations; :func:`interp_lib.sae.saelens_format.save_saelens` folds ``scale`` into the
  weights for shipping.
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

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.kernels import SparsePattern, select_preacts, sparse_decode

__all__ = [
    "ReluSAE",
    "TopKSAE",
    "ReluOutput",
    "TopKOutput",
    "dense_auxk",
    "auxk_of_dead",
    "geometric_median",
    "initial_b_dec",
    "input_scale",
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
    diff = torch.empty_like(points)  # one [n, d] buffer for every iteration, no fresh pages
    for _ in range(n_iter):
        w = torch.sub(points, median, out=diff).norm(dim=-1).clamp_min_(eps).reciprocal_()
        new = (w @ points) / w.sum()
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
    raise InvalidArgumentError(f"unknown b_dec init method {method!r}")


def dense_auxk(
    x: Tensor, x_hat: Tensor, pre: Tensor, W_dec: Tensor, dead_mask: Tensor | None, k_aux: int
) -> Tensor:
    """The AuxK loss (Gao et al. 2024, appendix A.2) from the full pre-activations.

    ``x, x_hat: [batch, d_in]``; ``pre: [batch, d_sae]`` pre-activations; ``W_dec: [d_sae, d_in]``;
    ``dead_mask: [d_sae]`` bool (``None``: no AuxK). Only the dead latents' columns take part
    (:func:`auxk_of_dead`); 0 when nothing is dead.
    """
    if dead_mask is None or not bool(dead_mask.any()):
        return x.new_zeros(())
    dead = dead_mask.nonzero().squeeze(1)  # [n_dead]
    return auxk_of_dead(x, x_hat, pre[:, dead], W_dec[dead], k_aux)


def auxk_of_dead(
    x: Tensor, x_hat: Tensor, dead_pre: Tensor, dead_W_dec: Tensor, k_aux: int
) -> Tensor:
    """AuxK on the dead latents alone.

    ``x, x_hat: [batch, d_in]``; ``dead_pre: [batch, n_dead]`` the dead latents'
    pre-activations; ``dead_W_dec: [n_dead, d_in]`` their decoder rows.

    The residual ``e = x - x_hat`` (no gradient) is reconstructed by the top
    ``min(k_aux, n_dead)`` of the dead latents' pre-activations, ReLU'd and decoded without
    bias; returns the scalar ``||e - e_hat||^2`` (summed over ``d_in``, batch-averaged) times
    ``min(n_dead / k_aux, 1)`` (as in EleutherAI's sparsify and SAELens). Dense products over
    the ``n_dead`` columns: on a CPU a dense matmul runs about 20x more FLOP/s than a sparse one,
    so this beats the sparse kernels for any number of dead latents when ``k_aux = d_in / 2``.
    """
    n_dead = dead_pre.shape[1]
    e = (x - x_hat).detach()  # the residual the dead latents are asked to explain
    vals, idx = dead_pre.topk(min(k_aux, n_dead), dim=-1)
    e_hat = torch.zeros_like(dead_pre).scatter(-1, idx, F.relu(vals)) @ dead_W_dec
    return (e_hat - e).pow(2).sum(dim=-1).mean() * min(n_dead / k_aux, 1.0)


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

    @property
    def W_enc(self) -> Tensor:
        """``[d_sae, d_in]`` encoder weight (one row per latent; ``self.encoder`` is each
        subclass's ``nn.Linear(d_in, d_sae)``)."""
        return self.encoder.weight

    @property
    def b_enc(self) -> Tensor:
        """``[d_sae]`` encoder bias."""
        return self.encoder.bias

    def _init_weights(self, generator: torch.Generator | None) -> Tensor:
        """Random unit-norm rows ``[d_sae, d_in]`` for the decoder (the encoder starts as its
        transpose, as in Gao et al.: every latent starts by reading what it writes)."""
        w = torch.randn(self.d_sae, self.d_in, generator=generator)
        return w / w.norm(dim=-1, keepdim=True)

    def _tied_init_(self, generator: torch.Generator | None) -> None:
        """Create ``self.encoder`` (``nn.Linear(d_in, d_sae)``, zero bias) and ``self.W_dec``
        from the same random unit-norm rows (:meth:`_init_weights`): every latent starts by
        reading what it writes, two separate parameters from then on."""
        w = self._init_weights(generator)
        self.encoder = nn.Linear(self.d_in, self.d_sae)
        with torch.no_grad():
            self.encoder.weight.copy_(w)
            self.encoder.bias.zero_()
        self.W_dec = nn.Parameter(w.clone())

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

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        l1_coeff: float = 5.0,
        tied: bool = False,
        enc_init_norm: float = 0.1,
        generator: torch.Generator | None = None,
    ):
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

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` latent activations."""
        return F.relu(self.encoder(x - self.b_dec))

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` reconstruction."""
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> ReluOutput:
        """Encode, decode and score ``x: [batch, d_in]`` (see :class:`ReluOutput`)."""
        latents = self.encode(x)
        x_hat = self.decode(latents)
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        l1 = latents.sum(dim=-1).mean()  # latents >= 0, so |f| = f
        return ReluOutput(x_hat, latents, mse, l1, mse + self.l1_coeff * l1)

    @torch.no_grad()
    def resample_dead_(
        self,
        dead: Tensor,
        x: Tensor,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
        enc_scale: float = 0.2,
    ) -> int:
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
        pick = torch.multinomial(
            err / err.sum(), n_dead, replacement=n_dead > len(x), generator=generator
        )
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
# What the k-sparse SAEs share (TopK here, BatchTopK and Matryoshka in their own modules)
# --------------------------------------------------------------------------------------------
class _KSparseSAE(_SAEBase):
    """An SAE that keeps about ``k`` latents a token: one dense product chooses them, and the
    sparse kernels (:mod:`interp_lib.sae.kernels`) do everything after it, gradients included.
    Latents that stopped firing get the AuxK loss (:meth:`_auxk_loss`).

    Sets ``k``, ``auxk_coeff``, ``k_aux`` (default ``d_in / 2``) and tied initial weights.
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: float,
        auxk_coeff: float,
        k_aux: int | None,
        generator: torch.Generator | None,
    ):
        super().__init__(d_in, d_sae)
        if not 0 < k <= d_sae:
            raise InvalidArgumentError(f"need 0 < k <= d_sae, got k={k}, d_sae={d_sae}")
        self.k, self.auxk_coeff = k, auxk_coeff
        self.k_aux = k_aux if k_aux is not None else d_in // 2
        self._tied_init_(generator)
        self._pre_buffer: Tensor | None = None  # see _workspace

    def train(self, mode: bool = True) -> _KSparseSAE:
        """As :meth:`torch.nn.Module.train`; leaving training frees the step's workspace."""
        if not mode:
            self._pre_buffer = None
        return super().train(mode)

    def _preacts(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Dense ``[batch, d_sae]`` pre-activations, without autograd (the one dense matmul),
        written into ``out`` when given."""
        with torch.no_grad():
            return torch.addmm(self.b_enc, x - self.b_dec, self.W_enc.T, out=out)

    def _workspace(self, x: Tensor) -> Tensor | None:
        """A ``[batch, d_sae]`` buffer reused by every training step of the same batch shape.

        A fresh 75 MB matrix per step costs the page faults of new memory on every step (about
        a quarter of the dense matmul's time on a 2-core CPU); ``None`` outside training.
        """
        if not self.training:
            return None
        shape = (x.shape[0], self.d_sae)
        buf = self._pre_buffer
        if buf is None or buf.shape != shape or buf.dtype != x.dtype or buf.device != x.device:
            buf = self._pre_buffer = torch.empty(shape, dtype=x.dtype, device=x.device)
        return buf

    def _attach(self, x: Tensor, vals: Tensor, pattern: SparsePattern) -> Tensor:
        """The chosen pre-activations ``vals`` (at ``pattern``), ReLU'd and re-attached to
        autograd through the sparse backward (:func:`~interp_lib.sae.kernels.select_preacts`)."""
        return F.relu(select_preacts(x, self.b_dec, self.W_enc, self.b_enc, vals, pattern))

    def _auxk_loss(self, x: Tensor, x_hat: Tensor, dead_mask: Tensor | None) -> Tensor:
        """AuxK (Gao et al. 2024, appendix A.2) on the dead latents (:func:`auxk_of_dead`).

        The dead latents' pre-activations are recomputed with gradient, ``[batch, n_dead]``:
        a dense product over those columns only. Gao et al. divide both this and the main MSE
        by the same constant; leaving both un-normalised is the same objective.
        """
        if dead_mask is None or not bool(dead_mask.any()):
            return x.new_zeros(())
        dead = dead_mask.nonzero().squeeze(1)  # [n_dead]
        dead_pre = torch.addmm(self.b_enc[dead], x - self.b_dec, self.W_enc[dead].T)
        return auxk_of_dead(x, x_hat, dead_pre, self.W_dec[dead], self.k_aux)


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


class TopKSAE(_KSparseSAE):
    """A TopK sparse autoencoder (Gao et al. 2024).

    .. math::

        f = \\mathrm{ReLU}\\Big(\\mathrm{TopK}_k\\big((x - b_{dec}) W_{enc}^\\top
        + b_{enc}\\big)\\Big) \\qquad \\hat x = f\\, W_{dec} + b_{dec}

    ``TopK_k`` keeps the ``k`` largest entries of each row and zeroes the rest, so every token
    has at most ``k`` active latents. Shapes as in :class:`ReluSAE`.

    Loss: ``||x - x_hat||^2`` (per token, batch-averaged) plus ``auxk_coeff`` times the AuxK
    loss: latents that have not fired for a while ("dead", tracked by the trainer and passed
    in as ``dead_mask``) are asked to reconstruct the residual ``x - x_hat`` with their own
    top ``k_aux`` pre-activations; that gives them gradient and brings most of them back.
    """

    architecture = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int = 32,
        auxk_coeff: float = 1 / 32,
        k_aux: int | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(d_in, d_sae, k, auxk_coeff, k_aux, generator)

    def _select(self, x: Tensor, pre: Tensor, k: int) -> tuple[Tensor, SparsePattern]:
        """Top ``k`` of ``pre`` per row, re-attached to autograd through the sparse backward."""
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        idx, order = idx.sort(dim=-1)  # CSR wants ascending column indices
        vals = vals.gather(-1, order)
        pattern = SparsePattern(idx, self.d_sae)
        return self._attach(x, vals, pattern), pattern

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[batch, d_in]`` -> (``top_acts [batch, k]``, ``top_indices [batch, k]``)."""
        acts, pattern = self._select(x, self._preacts(x), self.k)
        return acts, pattern.indices

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` dense latent activations (at most k non-zero)."""
        acts, idx = self.encode_sparse(x)
        dense = torch.zeros(x.shape[0], self.d_sae, dtype=acts.dtype, device=acts.device)
        return dense.scatter_(-1, idx, acts)

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` (dense; for analysis, not training)."""
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> TopKOutput:
        """Encode, decode and score ``x: [batch, d_in]`` with the sparse kernels (the fast path).

        ``dead_mask: [d_sae]`` bool marks the latents AuxK should train (``None``: no AuxK).
        One dense matmul chooses the top ``k``; everything after it, gradients included, touches
        only the chosen ``[batch, k]`` entries. Same result as :meth:`forward_dense`.
        """
        pre = self._preacts(x, out=self._workspace(x))  # never leaves this method
        acts, pattern = self._select(x, pre, self.k)
        x_hat = sparse_decode(acts, self.W_dec, pattern) + self.b_dec
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        auxk = self._auxk_loss(x, x_hat, dead_mask)
        return TopKOutput(x_hat, acts, pattern.indices, mse, auxk, mse + self.auxk_coeff * auxk)

    def forward_dense(self, x: Tensor, dead_mask: Tensor | None = None) -> TopKOutput:
        """:meth:`forward` written with plain dense torch ops: the readable reference.

        Builds the full ``[batch, d_sae]`` latent matrix and lets autograd differentiate it, so
        it costs ``batch * d_sae * d_in`` in the decoder and in every backward product, where
        :meth:`forward` pays ``batch * k * d_in``. Same outputs and gradients (up to rounding).
        """
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc  # [batch, d_sae]
        vals, idx = pre.topk(self.k, dim=-1)  # [batch, k]
        idx, order = idx.sort(dim=-1)  # ascending, as forward returns them
        top_acts = F.relu(vals.gather(-1, order))
        latents = torch.zeros_like(pre).scatter(-1, idx, top_acts)  # [batch, d_sae], <= k non-zero
        x_hat = latents @ self.W_dec + self.b_dec
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        auxk = dense_auxk(x, x_hat, pre, self.W_dec, dead_mask, self.k_aux)
        return TopKOutput(x_hat, top_acts, idx, mse, auxk, mse + self.auxk_coeff * auxk)
