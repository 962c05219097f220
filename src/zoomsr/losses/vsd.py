"""Variational score distillation / distribution matching, and its regularizer's own loss.

The generator's one-step latent ``z0 = G(x_lr)`` is pushed towards the frozen diffusion model's
distribution of natural latents (OSEDiff, Wu et al. 2024, Eq. 5-6: VSD in latent space).
ProlificDreamer (Wang et al. 2023, Eq. 8) gives the gradient

    grad_theta L_VSD = E_{t, eps}[ w(t) (eps_fake(z_t; t, c) - eps_real(z_t; t, c)) dz0/dtheta ],

with ``z_t`` a noised ``z0``, ``eps_real`` the frozen model and ``eps_fake`` a LoRA
"regularizer" fine-tuned on the generator's own outputs. In the x0-parametrization of DMD
(Yin et al. 2024, Eq. 7 and Sec. 3.3, the form CoZ uses) with DMD's normalization
``w = 1 / mean|z0 - x0_real|`` the per-element gradient is

    g = (x0_fake - x0_real) / mean_{C,H,W} |z0 - x0_real|,

applied through the surrogate ``mean (z0 - sg(z0 - g))^2``, whose gradient is ``2 g / N``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _get(outputs: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in outputs:
        raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
    return outputs[key].float()


class VSDLoss(nn.Module):
    """``weight * mean (z0 - sg(z0 - g))^2`` with ``g`` the DMD-normalized score difference.

    Args:
        latent: key of the generator's latent ``z0`` ``(B, c, h, w)`` (with grad).
        real: key of the frozen model's x0-prediction at ``z_t`` (no grad).
        fake: key of the regularizer's x0-prediction at the same ``z_t`` (no grad).
        weight: multiplier in the summed loss (default 1, CoZ's lambda_vsd).
        eps: guards the normalization against a zero distance.
    """

    def __init__(
        self,
        latent: str = "latent",
        real: str = "x0_real",
        fake: str = "x0_fake",
        weight: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.latent, self.real, self.fake, self.weight, self.eps = latent, real, fake, weight, eps

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        z0 = _get(outputs, self.latent)
        real, fake = _get(outputs, self.real).detach(), _get(outputs, self.fake).detach()
        dims = list(range(1, z0.ndim))
        # DMD Sec. 3.3: normalize by the mean distance of z0 to the real model's x0-prediction.
        w = (z0.detach() - real).abs().mean(dim=dims, keepdim=True).clamp_min(self.eps)
        grad = (fake - real) / w
        return self.weight * F.mse_loss(z0, (z0 - grad).detach())


class RegularizerLoss(nn.Module):
    """The regularizer adapter's own objective: the diffusion loss on the generator's latents.

    ProlificDreamer Eq. 9 (VSD's particle-score update) trains the LoRA score on ``sg(z0)`` with
    the model's usual loss; for SD3's rectified flow in x0 form (CoZ):
    ``weight * mean (x0_reg(z_t) - sg(z0))^2``. Its gradient reaches the regularizer only, as
    ``z0`` is detached, so it can be summed with the generator's terms in one backward pass.

    Args:
        pred: key of the regularizer's x0-prediction ``(B, c, h, w)``.
        target: key of ``sg(z0)``.
        weight: multiplier (default 1, CoZ's lambda_vsd_lora).
    """

    def __init__(self, pred: str = "reg_x0", target: str = "reg_target", weight: float = 1.0):
        super().__init__()
        self.pred, self.target, self.weight = pred, target, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * F.mse_loss(
            _get(outputs, self.pred), _get(outputs, self.target).detach()
        )
