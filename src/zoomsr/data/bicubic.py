"""The classic SR degradation: MATLAB-style bicubic downscaling, rounded to 8 bits."""

from __future__ import annotations

import torch

from zoomsr.data.imresize import imresize
from zoomsr.data.io import quantize


class BicubicDegradation:
    """LR = round8(imresize(HR, 1/scale)): the degradation behind every published SR table.

    Args:
        scale: integer downscaling factor (default 4). HR sides must be multiples of it.
    """

    def __init__(self, scale: int = 4) -> None:
        if scale < 1:
            raise ValueError(f"degradation scale must be >= 1, got {scale}")
        self.scale = scale

    def __call__(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` or ``(C, H, W)`` in [0, 1] -> LR at ``1/scale``, 8-bit levels."""
        # MATLAB on a uint8 image rounds after each 1-D pass: bit-exact with the official LR files.
        return quantize(imresize(hr, scale=1.0 / self.scale, quantize_passes=True))
