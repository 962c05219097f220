"""Pixel-space (or noise-space) distances between two named training outputs."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class PixelLoss(nn.Module):
    """``weight * mean |pred - target|^p`` between two tensors of the backbone's outputs.

    SR3 (Saharia et al. 2021, Eq. 4 with p=1) regresses the noise: ``pred="eps_pred"``,
    ``target="eps"``. A regression SR model uses ``pred="sr"``, ``target="hr"``.

    Args:
        kind: ``l1`` or ``l2`` (mean squared error).
        pred: key of the prediction in the backbone's training outputs.
        target: key of the target.
        weight: multiplier in the summed loss (default 1).
    """

    def __init__(
        self,
        kind: Literal["l1", "l2"] = "l1",
        pred: str = "eps_pred",
        target: str = "eps",
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in ("l1", "l2"):
            raise ValueError(f"PixelLoss kind must be 'l1' or 'l2', got {kind!r}")
        self.kind, self.pred, self.target, self.weight = kind, pred, target, weight

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for key in (self.pred, self.target):
            if key not in outputs:
                raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
        pred, target = outputs[self.pred].float(), outputs[self.target].float()
        dist = F.l1_loss(pred, target) if self.kind == "l1" else F.mse_loss(pred, target)
        return self.weight * dist
