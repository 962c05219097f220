"""SSIM as a loss (ITER's stage-1 ``struct_opt``: pyiqa's ``ssimc`` with ``as_loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim_rgb(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM per image over the RGB channels (Wang et al. 2004, Eq. 13; an 11x11 Gaussian
    window of sigma 1.5 without padding, K1 = 0.01, K2 = 0.03): ``(B, C, H, W)`` -> ``(B,)``.
    Differentiable; inputs in [0, ``data_range``], no rounding or Y conversion."""
    g = _gaussian().to(x)
    c = x.shape[1]
    kh, kw = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


class SSIMLoss(nn.Module):
    """``weight * (1 - mean SSIM(pred, target))`` on images in [0, 1].

    Args:
        pred, target: keys of ``(B, 3, H, W)`` images in [0, 1] (at least 11 px a side).
        weight: multiplier (ITER's stage 1: 1).
    """

    def __init__(self, pred: str = "recon", target: str = "hr", weight: float = 1.0):
        super().__init__()
        self.pred, self.target, self.weight = pred, target, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for key in (self.pred, self.target):
            if key not in outputs:
                raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
        pred, target = outputs[self.pred].float(), outputs[self.target].float()
        return self.weight * (1.0 - ssim_rgb(pred, target).mean())
