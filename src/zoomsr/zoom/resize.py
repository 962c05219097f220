"""The resizes and 8-bit conversions of Chain-of-Zoom's own inference, on tensors.

CoZ (``inference_coz.py``) works on 8-bit PIL images between steps: the input is resized with
``Image.LANCZOS``, every crop is brought to ``P x P`` with ``Image.BICUBIC`` (``Image.NEAREST``
for the nearest baseline), and a model output becomes 8-bit through torchvision's
``ToPILImage``, which truncates (``x * 255`` cast to ``uint8``) rather than rounds. These helpers
do exactly that on ``(B, C, H, W)`` / ``(C, H, W)`` float tensors in [0, 1], so the engine can
keep tensors (any device) and still give CoZ's pixels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image

Kernel = Literal["bicubic", "nearest", "lanczos"]
Quantize = Literal["truncate", "round", "none"]
_PIL = {"bicubic": Image.BICUBIC, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}


def pil_resize(
    img: torch.Tensor, size: tuple[int, int], kernel: Kernel = "bicubic"
) -> torch.Tensor:
    """PIL's resize of an image (rounded to 8 bits first) to ``size`` ``(h, w)``.

    Args:
        img: ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1], ``C`` 1 or 3.
        size: output ``(height, width)``.
        kernel: ``bicubic`` (PIL's, a = -0.5) | ``nearest`` | ``lanczos``.

    Returns:
        the same layout at ``size``, float in [0, 1] on 8-bit levels, on ``img``'s device.
    """
    if img.ndim == 4:
        return torch.stack([pil_resize(i, size, kernel) for i in img])
    array = (img.detach().float().clamp(0, 1) * 255.0 + 0.5).floor().to(torch.uint8)
    array = array.permute(1, 2, 0).cpu().numpy()
    pil = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    out = np.asarray(pil.resize((size[1], size[0]), _PIL[kernel]))
    out = torch.from_numpy(out.copy()).reshape(size[0], size[1], -1).permute(2, 0, 1)
    return (out.float() / 255.0).contiguous().to(img.device)


def to_8bit(img: torch.Tensor, mode: Quantize = "truncate") -> torch.Tensor:
    """``img`` in [0, 1] (clamped) on 8-bit levels: ``truncate`` as ``ToPILImage`` (CoZ),
    ``round`` to the nearest level (PNG writers), ``none`` unchanged but clamped."""
    img = img.clamp(0, 1)
    if mode == "none":
        return img
    if mode == "truncate":
        return torch.floor(img * 255.0) / 255.0
    if mode == "round":
        return torch.floor(img * 255.0 + 0.5) / 255.0
    raise ValueError(f"unknown 8-bit mode {mode!r}: truncate | round | none")
