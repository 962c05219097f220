"""Non-learned baselines through the backbone contract: MATLAB bicubic and nearest neighbour."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoomsr.backbones.base import Backbone
from zoomsr.data.imresize import imresize


class _Interpolation(Backbone):
    is_learned = False

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = scale


class Bicubic(_Interpolation):
    """SR = MATLAB ``imresize(lr, scale, 'bicubic')`` on an 8-bit image (rounded after each
    1-D pass, as MATLAB does for uint8): the "Bicubic" row of SR papers.

    Args:
        scale: upscaling factor (default 4).
    """

    def _upscale(
        self, lr: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B, C, h, w)`` in [0, 1] -> ``(B, C, h*scale, w*scale)``, clamped to [0, 1]."""
        return imresize(lr, scale=self.scale, quantize_passes=True).clamp(0, 1)


class Nearest(_Interpolation):
    """SR = pixel replication (nearest neighbour), the floor of any comparison.

    Args:
        scale: integer upscaling factor (default 4).
    """

    def _upscale(
        self, lr: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B, C, h, w)`` in [0, 1] -> ``(B, C, h*scale, w*scale)``."""
        return F.interpolate(lr, scale_factor=self.scale, mode="nearest-exact")
