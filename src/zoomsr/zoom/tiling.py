"""One step on an image of any size in overlapping tiles (the backbone pads each tile itself).

Tiles overlap by ``overlap`` LR pixels. Each tile's output is weighted by a ramp that is 0 on
the outer quarter of every overlap next to an inner tile edge (context only: that band is
where a tile's output differs from the whole image's, padding standing in for neighbours),
then rises as a raised cosine to 1 over the rest of the overlap; edges on the image border
keep weight 1. Weights are normalised by their sum, so an operator whose output depends only
on the inputs within ``overlap // 4`` LR pixels (bicubic: 2) gives exactly the untiled result.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError


def check_tiles(tile_size: int | None, tile_overlap: int) -> None:
    """Raise :class:`ZoomSRError` unless ``0 <= tile_overlap < tile_size`` (or no tiling)."""
    if tile_size is not None and not 0 <= tile_overlap < tile_size:
        raise ZoomSRError(
            f"zoom.tile_overlap={tile_overlap} must be in [0, zoom.tile_size={tile_size})."
        )


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


def tiled(
    step: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    tile_size: int | None,
    overlap: int = 32,
) -> torch.Tensor:
    """``step`` (``(B, C, h, w)`` -> ``(B, C, h*scale, w*scale)`` in [0, 1]) over ``x`` in tiles
    of ``tile_size`` input pixels (None or larger than the image: one call), blended as the
    module docstring says.

    Returns:
        ``(B, C, h*scale, w*scale)`` in [0, 1].
    """
    h, w = x.shape[-2:]
    if tile_size is None or (h <= tile_size and w <= tile_size):
        return step(x).clamp(0, 1)
    if not 0 <= overlap < tile_size:
        raise ValueError(f"tile_overlap must be in [0, tile_size), got {overlap}")
    s = scale
    out, total = None, torch.zeros(h * s, w * s, dtype=torch.float64, device=x.device)
    ys, xs = tile_starts(h, tile_size, overlap), tile_starts(w, tile_size, overlap)
    for y in ys:
        th = min(tile_size, h)
        wy = ramp(th * s, overlap * s, y > 0, y + th < h)
        for x0 in xs:
            tw = min(tile_size, w)
            wx = ramp(tw * s, overlap * s, x0 > 0, x0 + tw < w)
            weight = (wy[:, None] * wx[None, :]).to(x.device)
            sr = step(x[..., y : y + th, x0 : x0 + tw]).clamp(0, 1)
            if out is None:  # (B, C_out, H, W): C_out from the step (gray stays gray)
                out = torch.zeros(*sr.shape[:-2], h * s, w * s, dtype=torch.float64,
                                  device=x.device)  # fmt: skip
            out[..., y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += sr.double() * weight
            total[y * s : (y + th) * s, x0 * s : (x0 + tw) * s] += weight
    return (out / total).to(x.dtype).clamp(0, 1)


def tiled_upscale(
    backbone: Backbone,
    lr: torch.Tensor,
    tile_size: int | None,
    overlap: int = 32,
    prompts: list[str] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``backbone.upscale`` over ``(B, C, h, w)`` in tiles of ``tile_size`` LR pixels.

    Returns:
        ``(B, C, h*s, w*s)`` in [0, 1].
    """
    return tiled(
        lambda t: backbone.upscale(t, prompts, generator), lr, backbone.scale, tile_size, overlap
    )
