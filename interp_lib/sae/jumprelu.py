"""The JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead"; the Gemma Scope SAEs).

A ReLU SAE whose every latent has its own learned threshold ``theta_i``: below it the latent is
off, above it the latent passes its pre-activation unchanged. The threshold makes the
activation a *jump* (from 0 to ``theta_i``), so small spurious activations cost nothing in the
reconstruction, and sparsity is paid for with an L0 penalty (how many latents fire) instead of
an L1 penalty (how strongly), which shrinks activations.

Both the jump and the L0 count are step functions of ``theta``, whose derivative is zero almost
everywhere. Training gives ``theta`` a gradient with a *straight-through estimator*: in the
backward pass the Dirac delta of the step is replaced by a rectangle kernel of width
``bandwidth`` (``epsilon`` in the paper), :class:`JumpReLUFunction` and :class:`StepFunction`.
This follows SAELens 6 (``sae_lens.saes.jumprelu_sae``), which the saved files are loaded by:
the threshold is trained directly (not its log) and kept non-negative by the trainer
(:meth:`JumpReLUSAE.clamp_threshold_`), and the L0 penalty is the ``"step"`` one (DeepMind's) or
the ``"tanh"`` one (Anthropic's, ``sum_i tanh(c * f_i * ||W_dec_i||)``, smooth in ``f``).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from interp_lib.errors import InvalidArgumentError
from interp_lib.sae.homebrew import _SAEBase

__all__ = ["JumpReLUSAE", "JumpReLUOutput", "JumpReLUFunction", "StepFunction", "SPARSITY_LOSSES"]

SPARSITY_LOSSES = ("step", "tanh")
"""The L0 penalties a JumpReLU SAE can train with (SAELens's ``jumprelu_sparsity_loss_mode``)."""


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel ``K(u) = 1 if -1/2 < u < 1/2 else 0`` (shape and dtype of ``u``)."""
    return ((u > -0.5) & (u < 0.5)).to(u)


class StepFunction(torch.autograd.Function):
    """``H(z - theta)``, the Heaviside step, with a straight-through gradient for ``theta``.

    Forward: ``[batch, d_sae]`` 0/1. Backward (Rajamanoharan et al. 2024, eq. 11):
    ``d/d theta = -(1 / eps) K((z - theta) / eps)``, summed over the batch; no gradient to ``z``
    (DeepMind's choice: the encoder learns from the reconstruction only).
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        """``z: [batch, d_sae]``, ``theta: [d_sae]`` -> ``[batch, d_sae]``."""
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        """Gradient for ``theta`` only."""
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        g_theta = -(1.0 / eps) * rectangle((z - theta) / eps) * grad
        return None, g_theta.sum(dim=0), None


class JumpReLUFunction(torch.autograd.Function):
    """``JumpReLU_theta(z) = z * H(z - theta)``, with a straight-through gradient for ``theta``.

    Forward: ``[batch, d_sae]``. Backward (Rajamanoharan et al. 2024, eq. 12):
    ``d/dz = H(z - theta)`` (exact away from the jump) and
    ``d/d theta = -(theta / eps) K((z - theta) / eps)``, summed over the batch.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        """``z: [batch, d_sae]``, ``theta: [d_sae]`` -> ``[batch, d_sae]``."""
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta).to(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        """Gradients for ``z`` and ``theta``."""
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        g_z = (z > theta).to(grad) * grad
        g_theta = -(theta / eps) * rectangle((z - theta) / eps) * grad
        return g_z, g_theta.sum(dim=0), None


class JumpReLUOutput(NamedTuple):
    """What :meth:`JumpReLUSAE.forward` returns."""

    x_hat: Tensor
    """``[batch, d_in]`` reconstruction (normalised scale)."""
    latents: Tensor
    """``[batch, d_sae]`` latent activations: 0, or above the latent's threshold."""
    mse: Tensor
    """Scalar: squared error summed over ``d_in``, averaged over the batch."""
    sparsity: Tensor
    """Scalar: the L0 penalty, batch-averaged: the count of active latents (``"step"``, whose
    value *is* the L0) or ``sum_i tanh(c * f_i)`` (``"tanh"``)."""
    loss: Tensor
    """Scalar: ``mse + l0_coeff * sparsity``, what training minimises."""


class JumpReLUSAE(_SAEBase):
    """A JumpReLU sparse autoencoder (Rajamanoharan et al. 2024).

    .. math::

        z = (x - b_{dec}) W_{enc}^\\top + b_{enc} \\qquad
        f = z \\odot H(z - \\theta) \\qquad
        \\hat x = f\\, W_{dec} + b_{dec}

    Shapes: ``x, x_hat: [batch, d_in]``; ``z, f: [batch, d_sae]``; ``W_enc, W_dec: [d_sae, d_in]``
    (one row per latent); ``b_enc, theta: [d_sae]``; ``b_dec: [d_in]``. ``H`` is the Heaviside
    step; ``theta >= 0``, so ``f`` is also ``ReLU(z) * H(z - theta)``, which is how SAELens's
    ``JumpReLUSAE`` computes it.

    Loss: ``||x - x_hat||^2 + l0_coeff * ||f||_0`` (per token, batch-averaged), the L0 made
    trainable by the straight-through estimators above (``sparsity_loss="step"``), or
    ``sum_i tanh(tanh_scale * f_i)`` in its place (``"tanh"``). Decoder rows are held at unit
    norm, as for the other SAEs of the library (so the ``||W_dec_i||`` of the tanh penalty is 1).
    """

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        l0_coeff: float = 1.0,
        bandwidth: float = 0.05,
        init_threshold: float = 0.01,
        sparsity_loss: Literal["step", "tanh"] = "step",
        tanh_scale: float = 4.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__(d_in, d_sae)
        if sparsity_loss not in SPARSITY_LOSSES:
            raise InvalidArgumentError(
                f"sparsity_loss must be one of {SPARSITY_LOSSES}, got {sparsity_loss!r}"
            )
        if not bandwidth > 0 or not init_threshold >= 0:
            raise InvalidArgumentError(
                f"need bandwidth > 0 and init_threshold >= 0, got {bandwidth} and {init_threshold}"
            )
        self.l0_coeff, self.bandwidth = l0_coeff, bandwidth
        self.sparsity_loss, self.tanh_scale = sparsity_loss, tanh_scale
        self._tied_init_(generator)
        self.threshold = nn.Parameter(torch.full((d_sae,), float(init_threshold)))

    def preacts(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` pre-activations ``z``."""
        return self.encoder(x - self.b_dec)

    def encode(self, x: Tensor) -> Tensor:
        """``[batch, d_in] -> [batch, d_sae]`` latent activations (the plain forward, no STE)."""
        z = self.preacts(x)
        return z * (z > self.threshold)

    def decode(self, latents: Tensor) -> Tensor:
        """``[batch, d_sae] -> [batch, d_in]`` reconstruction."""
        return latents @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> JumpReLUOutput:
        """Encode, decode and score ``x: [batch, d_in]`` (see :class:`JumpReLUOutput`), with the
        straight-through estimators in the graph."""
        z = self.preacts(x)
        latents = JumpReLUFunction.apply(z, self.threshold, self.bandwidth)
        x_hat = self.decode(latents)
        mse = (x_hat - x).pow(2).sum(dim=-1).mean()
        if self.sparsity_loss == "step":
            sparsity = StepFunction.apply(z, self.threshold, self.bandwidth).sum(dim=-1).mean()
        else:
            sparsity = torch.tanh(self.tanh_scale * latents).sum(dim=-1).mean()
        return JumpReLUOutput(x_hat, latents, mse, sparsity, mse + self.l0_coeff * sparsity)

    @torch.no_grad()
    def clamp_threshold_(self) -> None:
        """Project the thresholds back to ``>= 0`` (call after each optimiser step; below 0 the
        gate would pass negative pre-activations)."""
        self.threshold.clamp_(min=0.0)

    @torch.no_grad()
    def init_threshold_for_l0_(self, x: Tensor, l0: float) -> None:
        """Set every threshold to the one value at which the SAE fires ``l0`` latents per row of
        ``x: [n, d_in]`` on average (a quantile of the pre-activations)."""
        if not 0 < l0 < self.d_sae:
            raise InvalidArgumentError(f"need 0 < l0 < d_sae={self.d_sae}, got {l0}")
        z = self.preacts(x[:4096]).flatten().float()
        value = z.kthvalue(max(1, round((1 - l0 / self.d_sae) * z.numel()))).values
        self.threshold.fill_(max(float(value), 0.0))
