"""One backbone step on an image of any size: padding to ``size_multiple`` and tiling.

Tiles overlap by ``overlap`` LR pixels. Each tile's output is weighted by a ramp that is 0 on
the outer quarter of every overlap next to an inner tile edge (context only: that band is
where a tile's output differs from the whole image's, padding standing in for neighbours),
then rises as a raised cosine to 1 over the rest of the overlap; edges on the image border
keep weight 1. Weights are normalised by their sum, so an operator whose output depends only
on the inputs within ``overlap // 4`` LR pixels (bicubic: 2) gives exactly the untiled result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError


def check_tiles(tile_size: int | None, tile_overlap: int) -> None:
    """Raise :class:`ZoomSRError` unless ``0 <= tile_overlap < tile_size`` (or no tiling)."""
    if tile_size is not None and not 0 <= tile_overlap < tile_size:
        raise ZoomSRError(
            f"zoom.tile_overlap={tile_overlap} must be in [0, zoom.tile_size={tile_size})."
        )


def upscale_padded(
    backbone: Backbone, lr: torch.Tensor, prompts: list[str] | None = None
) -> torch.Tensor:
    """``(B, 3, h, w)`` in [0, 1] -> ``(B, 3, h*s, w*s)`` in [0, 1]; pads by reflection to the
    backbone's ``size_multiple`` and crops back."""
    h, w = lr.shape[-2:]
    m = backbone.size_multiple
    pad_h, pad_w = (-h) % m, (-w) % m
    x = lr
    if pad_h or pad_w:
        mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    with torch.no_grad():
        sr = backbone.upscale(x, prompts)
    s = backbone.scale
    return sr[..., : h * s, : w * s].clamp(0, 1)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``[0, length)``, consecutive ones
    overlapping by at least ``overlap``; the last one ends at ``length``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def ramp(size: int, overlap: int, lo_inner: bool, hi_inner: bool) -> torch.Tensor:
    """1-D weights ``(size,)`` of one tile: zero on ``overlap // 4`` pixels at an inner edge,
    raised cosine up to 1 over the rest of ``overlap``, 1 elsewhere and at image borders."""
    margin = overlap // 4
    d = torch.arange(size, dtype=torch.float64)
    rise = overlap - margin
    up = torch.sin(0.5 * math.pi * ((d - margin + 0.5) / rise).clamp(0, 1)) ** 2
    up = torch.where(d < margin, torch.zeros_like(up), up)
    w = torch.ones(size, dtype=torch.float64)
    if lo_inner:
        w = w * up
    if hi_inner:
        w = w * up.flip(0)
    return w


def tiled_upscale(
    backbone: Backbone,
    lr: torch.Tensor,
    tile_size: int | None,
    overlap: int = 32,
    prompts: list[str] | None = None,
) -> torch.Tensor:
    """One step over ``(B, 3, h, w)`` in tiles of ``tile_size`` LR pixels (None or larger than
    the image: one call), blended as the module docstring says.

    Returns:
        ``(B, 3, h*s, w*s)`` in [0, 1].
    """
    h, w = lr.shape[-2:]
    if tile_size is None or (h <= tile_size and w <= tile_size):
        return upscale_padded(backbone, lr, prompts)
    if not 0 <= overlap < tile_size:
        raise ValueError(f"tile_overlap must be in [0, tile_size), got {overlap}")
    s = backbone.scale
    out = torch.zeros(*lr.shape[:-2], h * s, w * s, dtype=torch.float64, device=lr.device)
    total = torch.zeros(h * s, w * s, dtype=torch.float64, device=lr.device)
    ys, xs = tile_starts(h, tile_size, overlap), tile_starts(w, tile_size, overlap)
    for y in ys:
        th = min(tile_size, h)
        wy = ramp(th * s, overlap * s, y > 0, y + th < h)
        for x in xs:
            tw = min(tile_size, w)
            wx = ramp(tw * s, overlap * s, x > 0, x + tw < w)
            weight = (wy[:, None] * wx[None, :]).to(lr.device)
            sr = upscale_padded(backbone, lr[..., y : y + th, x : x + tw], prompts)
            out[..., y * s : (y + th) * s, x * s : (x + tw) * s] += sr.double() * weight
            total[y * s : (y + th) * s, x * s : (x + tw) * s] += weight
    return (out / total).to(lr.dtype).clamp(0, 1)
