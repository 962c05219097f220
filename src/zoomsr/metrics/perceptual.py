"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric") through the authors' ``lpips`` package.

The package's ``LPIPS`` module is the code path: the ImageNet trunk (AlexNet by default, VGG16
as an option) comes from torchvision's file in ``$TORCH_HOME/hub/checkpoints``, loaded here with
``torch.load(weights_only=True)`` (the package would go through torchvision's downloader),
and the learned linear heads ship inside the package. Eq. 1 of the paper:
``d(x, y) = sum_l mean_hw || w_l * (f_l(x) - f_l(y)) ||^2`` with unit-normalised features.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.weights import check_weights, weight_path

LpipsNet = Literal["alex", "vgg"]


def _load_trunk(model: nn.Module, net: LpipsNet) -> None:
    """Copy torchvision's ImageNet weights into the LPIPS trunk (its ``sliceK.i`` modules are
    torchvision's ``features.i``)."""
    metric = "lpips" if net == "alex" else "lpips_vgg"
    check_weights([metric])
    path = weight_path(metric)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ZoomSRError(f"cannot read LPIPS trunk weights '{path}': {err}") from err
    trunk = {}
    for key in model.net.state_dict():
        index = re.match(r"slice\d+\.(\d+)\.(.+)", key)
        trunk[key] = state[f"features.{index.group(1)}.{index.group(2)}"]
    model.net.load_state_dict(trunk)


def build_lpips(net: LpipsNet = "alex", pretrained_trunk: bool = True) -> nn.Module:
    """The ``lpips.LPIPS`` module with its published linear heads (v0.1).

    Args:
        net: ``alex`` (default, the paper's recommended metric) or ``vgg``.
        pretrained_trunk: load the ImageNet trunk from ``$TORCH_HOME``; False keeps it random
            (tests).
    """
    import lpips

    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if pretrained_trunk:
        _load_trunk(model, net)
    return model.eval().requires_grad_(False)


class LPIPS(nn.Module):
    """LPIPS distance per image pair, batched.

    Args:
        net: ``alex`` (default) or ``vgg``.
        model: an ``lpips.LPIPS`` module to use instead (tests inject one with a tiny trunk).
    """

    kind = "full_reference"

    def __init__(self, net: LpipsNet = "alex", model: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else build_lpips(net)

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``sr``, ``hr``: ``(B, C, H, W)`` in [0, 1] (C = 1 or 3) -> ``(B,)`` float64.

        Lower is better; 0 for identical images. Gray images are compared as RGB.
        """
        if sr.shape[1] == 1:
            sr, hr = sr.expand(-1, 3, -1, -1), hr.expand(-1, 3, -1, -1)
        device = next(self.model.parameters()).device
        # normalize=True: the package maps [0, 1] to the [-1, 1] its trunk expects.
        out = self.model(sr.to(device).float(), hr.to(device).float(), normalize=True)
        return out.flatten().double().cpu()
