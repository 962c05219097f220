"""Tiled upscaling equals the untiled upscale for a local linear operator (bicubic)."""

from __future__ import annotations

import pytest
import torch

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic
from zoomsr.zoom.tiling import ramp, tile_starts, tiled_upscale


def _image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth plus noise, inside (0.1, 0.9) so bicubic overshoot is never clamped.
    yy, xx = torch.meshgrid(torch.linspace(0, 3, h), torch.linspace(0, 3, w), indexing="ij")
    base = 0.5 + 0.2 * torch.sin(yy * 2 + xx)
    return (base + 0.05 * torch.rand(1, 3, h, w, generator=g)).double()


def test_tile_starts_cover_and_overlap():
    assert tile_starts(10, 16, 4) == [0]
    starts = tile_starts(50, 16, 4)
    assert starts[0] == 0 and starts[-1] == 34
    assert all(b - a <= 12 for a, b in zip(starts, starts[1:]))


def test_ramp_zero_margin_then_one():
    w = ramp(32, 16, lo_inner=True, hi_inner=False)
    assert torch.all(w[:4] == 0) and torch.all(w[16:] == 1) and torch.all(w[4:16] > 0)
    assert torch.all(w[1:] >= w[:-1])


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(40, 52, 16, 12), (37, 29, 20, 16)])
def test_tiled_bicubic_equals_untiled(h, w, tile, overlap):
    bicubic = Bicubic(scale=4)
    lr = _image(h, w)
    whole = bicubic.upscale(lr)
    tiled = tiled_upscale(bicubic, lr, tile_size=tile, overlap=overlap)
    assert tiled.shape == whole.shape == (1, 3, 4 * h, 4 * w)
    torch.testing.assert_close(tiled, whole, atol=1e-12, rtol=0)


def test_tiles_without_context_margin_differ_at_seams():
    """The zero margin matters: with overlap 4 (margin 1 LR px) seams show up."""
    bicubic = Bicubic(scale=4)
    lr = _image(40, 40)
    diff = (tiled_upscale(bicubic, lr, 16, overlap=4) - bicubic.upscale(lr)).abs().max()
    assert diff > 1e-4


class _Multiple8(Backbone):
    """Nearest x2 that refuses sides not divisible by 8 (a U-Net's constraint)."""

    is_learned, scale, size_multiple = False, 2, 8

    def _upscale(self, lr, prompts, generator):
        assert lr.shape[-1] % 8 == 0 and lr.shape[-2] % 8 == 0
        return lr.repeat_interleave(2, -1).repeat_interleave(2, -2)


def test_padding_to_size_multiple_is_cropped_back():
    lr = torch.rand(1, 3, 13, 21)
    out = _Multiple8().upscale(lr)  # Backbone.upscale pads to size_multiple and crops back
    torch.testing.assert_close(out, lr.repeat_interleave(2, -1).repeat_interleave(2, -2))
    tiled = tiled_upscale(_Multiple8(), lr, tile_size=12, overlap=8)
    torch.testing.assert_close(tiled, out)
