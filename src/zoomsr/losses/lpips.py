"""LPIPS (Zhang et al. 2018) between two named training outputs, as OSEDiff's perceptual term."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoomsr.errors import ZoomSRError

#: torchvision's ImageNet weights LPIPS builds on (the package ships only its linear heads).
BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def backbone_weights(net: str) -> Path:
    """Where torchvision looks for ``net``'s weights: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


class LPIPSLoss(nn.Module):
    """``weight * mean LPIPS(pred, target)`` (OSEDiff Eq. 7's perceptual term, weight 2).

    Args:
        pred, target: keys of ``(B, 3, H, W)`` images in [-1, 1] in the backbone's outputs.
        net: LPIPS feature network, ``vgg`` as OSEDiff/CoZ.
        weight: multiplier in the summed loss (default 2, OSEDiff's lambda_lpips).
        random_backbone: use a random-initialized feature network (tests, ``debug=tiny``) instead
            of torchvision's ImageNet weights; LPIPS is then not a perceptual metric.

    Raises:
        ZoomSRError: the ImageNet weights are not in ``$TORCH_HOME`` (checked, never downloaded).
    """

    def __init__(
        self,
        pred: str = "sr",
        target: str = "hr",
        net: Literal["vgg", "alex", "squeeze"] = "vgg",
        weight: float = 2.0,
        random_backbone: bool = False,
    ) -> None:
        super().__init__()
        import lpips

        if net not in BACKBONE_FILES:
            raise ZoomSRError(f"LPIPS net must be one of {list(BACKBONE_FILES)}, got {net!r}")
        if not random_backbone and not backbone_weights(net).is_file():
            raise ZoomSRError(
                f"LPIPS needs torchvision's {net} weights at '{backbone_weights(net)}': copy "
                f"{BACKBONE_FILES[net]} there (or set TORCH_HOME to a folder with "
                "hub/checkpoints/), or pass loss.lpips.random_backbone=true for a wiring test."
            )
        self.pred, self.target, self.weight = pred, target, weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random backbone is the same one in every run
            self.net = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False)
        self.net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        super().train(mode)
        self.net.eval()  # a fixed metric: no dropout in its heads
        return self

    def forward(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for key in (self.pred, self.target):
            if key not in outputs:
                raise KeyError(f"loss needs '{key}', backbone gave {sorted(outputs)}")
        pred, target = outputs[self.pred].float(), outputs[self.target].float()
        return self.weight * self.net(pred, target).mean()
