"""Adversarial loss terms on a discriminator's logits, as small named-output losses.

The module that owns the discriminator puts its logits into the outputs dict (``d_real`` on
real images, ``d_fake`` on generated ones) and sums these terms like any other loss:

- hinge (Lim & Ye 2017; Miyato et al. 2018, Eq. 16-17; taming-transformers and ITER's
  ``gan_type: hinge``): ``L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` and
  ``L_G = -E[D(G(z))]``.
- non-saturating (Goodfellow et al. 2014, Sec. 3): ``L_D = E[softplus(-D(x))] +
  E[softplus(D(G(z)))]`` (binary cross-entropy on logits) and ``L_G = E[softplus(-D(G(z)))]``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GANKind = Literal["hinge", "non_saturating"]
_KINDS = ("hinge", "non_saturating")


def _get(outputs: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in outputs:
        raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
    return outputs[key].float()


def _check(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"GAN loss kind must be one of {list(_KINDS)}, got {kind!r}")


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: GANKind) -> torch.Tensor:
    """The discriminator's loss on its logits for real and generated images (any shape)."""
    _check(kind)
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake: torch.Tensor, kind: GANKind) -> torch.Tensor:
    """The generator's loss on the discriminator's logits for its images (any shape)."""
    _check(kind)
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


class GeneratorGANLoss(nn.Module):
    """``weight * L_G(D(G(z)))``; its gradient must reach the generator only (the module
    freezes the discriminator or steps only the generator's optimizer with it).

    Args:
        fake: key of the discriminator's logits on generated images, e.g. ``(B, 1, h, w)``.
        kind: ``hinge`` (ITER, taming) or ``non_saturating``.
        weight: multiplier in the summed loss (ITER's release: 0.1).
    """

    def __init__(self, fake: str = "d_fake", kind: GANKind = "hinge", weight: float = 0.1):
        super().__init__()
        _check(kind)
        self.fake, self.kind, self.weight = fake, kind, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weight * generator_loss(_get(outputs, self.fake), self.kind)


class DiscriminatorGANLoss(nn.Module):
    """``weight * L_D(D(x), D(sg(G(z))))``, the discriminator's own objective.

    Args:
        real: key of the discriminator's logits on real images.
        fake: key of its logits on detached generated images.
        kind: ``hinge`` or ``non_saturating``.
        weight: multiplier (default 1; ITER's discriminator loss is unweighted).
    """

    def __init__(
        self,
        real: str = "d_real",
        fake: str = "d_fake",
        kind: GANKind = "hinge",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        _check(kind)
        self.real, self.fake, self.kind, self.weight = real, fake, kind, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        real, fake = _get(outputs, self.real), _get(outputs, self.fake)
        return self.weight * discriminator_loss(real, fake, self.kind)
