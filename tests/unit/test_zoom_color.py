"""Colour alignment: AdaIN and wavelet, against answers known in closed form."""

from __future__ import annotations

import pytest
import torch

from zoomsr.zoom.color import adain, align_colors, wavelet_align, wavelet_blur, wavelet_decompose


def test_adain_gives_reference_mean_and_std_per_channel():
    g = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    style = 0.3 + 0.1 * torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    out = adain(content, style, eps=0.0)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), style.mean(dim=(-2, -1)))
    # CoZ's (StableSR's) statistics: the unbiased std of both images
    torch.testing.assert_close(out.std(dim=(-2, -1)), style.std(dim=(-2, -1)))
    # An affine map per channel: the normalised content is unchanged.
    z = (content - content.mean(dim=(-2, -1), keepdim=True)) / content.std(
        dim=(-2, -1), keepdim=True, unbiased=False
    )
    zo = (out - out.mean(dim=(-2, -1), keepdim=True)) / out.std(
        dim=(-2, -1), keepdim=True, unbiased=False
    )
    torch.testing.assert_close(z, zo)


def test_adain_of_a_flat_output_takes_the_reference_mean():
    out = adain(torch.full((1, 3, 8, 8), 0.2), torch.full((1, 3, 4, 4), 0.7))
    torch.testing.assert_close(out, torch.full((1, 3, 8, 8), 0.7))


def test_wavelet_blur_kernel_and_dilation():
    img = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    img[..., 4] = 1.0  # an impulse: the blur's row is the kernel [1, 2, 1] / 4 with holes
    row = wavelet_blur(img, dilation=2)[0, 0, 0]
    want = torch.zeros(9, dtype=torch.float64)
    want[[2, 4, 6]] = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(row, want)  # vertical pass on one row: replicate pad, sums to 1


def test_wavelet_of_constant_image_is_all_low():
    img = torch.full((1, 3, 16, 16), 0.42, dtype=torch.float64)
    high, low = wavelet_decompose(img, levels=5)
    torch.testing.assert_close(low, img)
    torch.testing.assert_close(high, torch.zeros_like(img))


@pytest.mark.parametrize("levels", [1, 3, 5])
def test_wavelet_low_plus_high_is_the_image(levels):
    img = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    high, low = wavelet_decompose(img, levels)
    torch.testing.assert_close(high + low, img)
    assert high.abs().max() > 0.05  # a random image has detail


def test_wavelet_align_identity_and_colour_transfer():
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(wavelet_align(img, img), img)
    # A colour cast (a constant) is low frequency: alignment to the uncast image removes it.
    torch.testing.assert_close(wavelet_align(img + 0.1, img), img)


def test_align_colors_dispatch_and_clamp():
    out = torch.rand(1, 3, 8, 8)
    assert align_colors(out, out, "none") is out
    assert align_colors(out, 2 * out + 1, "adain").max() <= 1.0
    with pytest.raises(ValueError, match="unknown colour alignment"):
        align_colors(out, out, "hist")
