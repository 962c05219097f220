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

The real score is classifier-free guided with a negative prompt (OSEDiff's
``distribution_matching_loss``): ``x0_real`` comes from ``v_neg + s (v_cond - v_neg)``; the fake
score sees the prompt alone. :class:`VSDSettings` holds those choices; the backbone reads them
from the loss term (the module hands them over) and draws the VSD noise level in ``[t_min,
t_max)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoomsr.errors import ZoomSRError

#: OSEDiff's negative prompt for the guided real score (``scripts/train/train_osediff.sh``,
#: ``--neg_prompt``; ``train_osediff.py`` feeds it to ``distribution_matching_loss``).
OSEDIFF_NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
    "signature, jpeg artifacts, deformed, lowres, over-smooth"
)


@dataclass(frozen=True)
class VSDSettings:
    """How the two scores of VSD are queried.

    Args:
        guidance_scale: CFG scale ``s`` of the real score (OSEDiff ``--cfg_vsd=7.5``, the default
            of ``train_osediff.py`` and of ``train_osediff.sh``). 1 disables the guidance (one
            forward, the conditional score: what CoZ's released ``osediff_sd3.py`` does).
        negative_prompt: the real score's unconditional branch (OSEDiff's ``--neg_prompt``).
        t_min, t_max: the VSD noise level is the ``k``-th of the scheduler's 1000 training
            steps ordered from least to most noisy, ``k`` uniform in ``[t_min, t_max)`` (OSEDiff:
            ``torch.randint(20, 980)`` in ``osediff.py``; CoZ's ``osediff_sd3.py``: all 1000).
            The regularizer's own loss always draws over all steps, as both do.
    """

    guidance_scale: float = 7.5
    negative_prompt: str = OSEDIFF_NEGATIVE_PROMPT
    t_min: int = 20
    t_max: int = 980

    def __post_init__(self) -> None:
        if not 0 <= self.t_min < self.t_max <= 1000:
            raise ZoomSRError(
                f"loss.vsd.t_min/t_max must satisfy 0 <= t_min < t_max <= 1000, "
                f"got {self.t_min} and {self.t_max}"
            )
        if self.guidance_scale < 0:
            raise ZoomSRError(f"loss.vsd.guidance_scale must be >= 0, got {self.guidance_scale}")


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
        guidance_scale, negative_prompt, t_min, t_max: how the backbone queries the scores
            (:class:`VSDSettings`, OSEDiff's defaults: 7.5, its negative prompt, 20 and 980).
    """

    def __init__(
        self,
        latent: str = "latent",
        real: str = "x0_real",
        fake: str = "x0_fake",
        weight: float = 1.0,
        eps: float = 1e-8,
        guidance_scale: float = 7.5,
        negative_prompt: str = OSEDIFF_NEGATIVE_PROMPT,
        t_min: int = 20,
        t_max: int = 980,
    ) -> None:
        super().__init__()
        self.latent, self.real, self.fake, self.weight, self.eps = latent, real, fake, weight, eps
        self.settings = VSDSettings(guidance_scale, negative_prompt, t_min, t_max)

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        z0 = _get(outputs, self.latent)
        real, fake = _get(outputs, self.real).detach(), _get(outputs, self.fake).detach()
        dims = list(range(1, z0.ndim))
        # DMD Sec. 3.3: normalize by the mean distance of z0 to the real model's x0-prediction.
        w = (z0.detach() - real).abs().mean(dim=dims, keepdim=True).clamp_min(self.eps)
        grad = (fake - real) / w
        return self.weight * F.mse_loss(z0, (z0 - grad).detach())

    @torch.no_grad()
    def diagnostics(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What tells a healthy VSD run from a broken one (OSEDiff #31/#70/#76):

        ``gap``: mean ``|x0_fake - x0_real|``, the raw score difference (it should shrink only
        as the generator's outputs look real); ``norm``: DMD's normalizer mean ``|z0 - x0_real|``;
        ``grad``: mean ``|g|``, the per-element gradient the generator gets before ``2/N``;
        ``cos``: the cosine between ``g`` and ``z0 - x0_real``; while the fake score tracks the
        generator (``x0_fake ~ z0``) it is near +1 and a descent step moves ``z0`` towards the
        real score's x0; a sign bug shows as a negative value.
        """
        z0 = _get(outputs, self.latent)
        real, fake = _get(outputs, self.real), _get(outputs, self.fake)
        dims = list(range(1, z0.ndim))
        norm = (z0 - real).abs().mean(dim=dims, keepdim=True).clamp_min(self.eps)
        g = (fake - real) / norm
        cos = F.cosine_similarity(g.flatten(1), (z0 - real).flatten(1), dim=1)
        return {
            "gap": (fake - real).abs().mean(),
            "norm": norm.mean(),
            "grad": g.abs().mean(),
            "cos": cos.mean(),
        }


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
