"""PSNR / SSIM: known answers, and the published "Bicubic" rows of SR papers on Set5/Set14."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image
from zoomsr.metrics import psnr, rgb_to_y, ssim
from zoomsr.metrics.fidelity import PUBLISHED_BICUBIC

PSNR_AT_MSE_1 = 10 * math.log10(255**2)  # 48.1308 dB


# Many small tensor ops: one torch thread (see tests/conftest.py::single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def test_rgb_to_y_known_values():
    rgb = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).T
    y = rgb_to_y(rgb.reshape(1, 3, 5, 1).double()).flatten()
    expected = torch.tensor([16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], dtype=torch.float64)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    assert rgb_to_y(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)


def test_psnr_of_one_grey_level_in_y():
    hr = torch.rand(2, 3, 16, 16, dtype=torch.float64) * 0.5
    # R, G and B up by 1/219 raise Y by (65.481 + 128.553 + 24.966) / 219 = 1 level exactly.
    sr = hr + 1 / 219
    torch.testing.assert_close(psnr(sr, hr), torch.full((2,), PSNR_AT_MSE_1, dtype=torch.float64))
    assert abs(PSNR_AT_MSE_1 - 48.13) < 0.001


def test_psnr_all_channels_without_y():
    hr = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 0.9
    sr = hr.clone()
    sr[:, 0] += 3 / 255  # MSE = 9 on one channel of three -> 3
    got = psnr(sr, hr, y_channel=False)
    torch.testing.assert_close(
        got, torch.tensor([10 * math.log10(255**2 / 3)], dtype=torch.float64)
    )


def test_gray_images_are_compared_as_they_are():
    hr = torch.rand(3, 1, 20, 20)
    sr = (hr + 2 / 255).double()
    expected = torch.full((3,), 10 * math.log10(255**2 / 4), dtype=torch.float64)
    torch.testing.assert_close(psnr(sr, hr.double()), expected)
    torch.testing.assert_close(psnr(sr, hr), psnr(sr, hr, y_channel=False))
    torch.testing.assert_close(ssim(sr, hr), ssim(sr, hr, y_channel=False))


def test_identical_images():
    img = torch.rand(2, 3, 32, 32)
    assert torch.isinf(psnr(img, img)).all()
    torch.testing.assert_close(ssim(img, img), torch.ones(2, dtype=torch.float64))


def test_ssim_of_two_constant_images():
    # Flat images: sigma = 0 everywhere, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly.
    a, b = 100.0, 130.0
    x = torch.full((1, 1, 15, 15), a / 255, dtype=torch.float64)
    y = torch.full((1, 1, 15, 15), b / 255, dtype=torch.float64)
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    torch.testing.assert_close(ssim(x, y), torch.tensor([expected], dtype=torch.float64))


def test_ssim_is_lower_for_noisier_images():
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 40, 40, generator=g)
    noise = torch.randn(1, 3, 40, 40, generator=g)
    values = [ssim(hr + sigma * noise, hr).item() for sigma in (0.01, 0.05, 0.2)]
    assert 1 > values[0] > values[1] > values[2]


def test_shave_removes_borders():
    hr = torch.rand(2, 3, 30, 30)
    sr = hr.clone()
    sr[..., :4, :] = 0  # damage a 4-pixel band at the top ...
    sr[..., :, -4:] = 1  # ... and on the right
    assert torch.isinf(psnr(sr, hr, shave=4)).all()
    assert torch.isfinite(psnr(sr, hr, shave=3)).all()
    torch.testing.assert_close(ssim(sr, hr, shave=4), torch.ones(2, dtype=torch.float64))
    inner = (..., slice(3, -3), slice(3, -3))
    torch.testing.assert_close(ssim(sr, hr, shave=3), ssim(sr[inner], hr[inner]))
    torch.testing.assert_close(psnr(sr, hr, shave=3), psnr(sr[inner], hr[inner]))


def test_batched_equals_per_image():
    sr, hr = torch.rand(3, 3, 24, 24), torch.rand(3, 3, 24, 24)
    for metric in (psnr, ssim):
        batched = metric(sr, hr, shave=2)
        assert batched.shape == (3,) and batched.dtype == torch.float64
        single = torch.cat([metric(sr[i : i + 1], hr[i : i + 1], shave=2) for i in range(3)])
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_bad_inputs_raise_clear_errors():
    a, b = torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 24)
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=r"\(1, 3, 20, 20\).*\(1, 3, 20, 24\)"):
            metric(a, b)
    with pytest.raises(ValueError, match="too small"):
        ssim(a, a, shave=5)  # 10x10 left, SSIM needs 11x11
    with pytest.raises(ValueError, match="1 or 3 channels"):
        psnr(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        psnr(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


@functools.cache
def _bicubic_scores(folder: Path, scale: int, official_lr: bool) -> tuple[float, float]:
    """Mean Y-PSNR / SSIM of MATLAB-bicubic x``scale`` on one benchmark set."""
    psnrs, ssims = [], []
    for hr_path in sorted((folder / "HR").glob("*.png")):
        hr = load_image(hr_path, keep_gray=True)
        h, w = hr.shape[-2:]
        hr = hr[None, :, : h - h % scale, : w - w % scale]
        if official_lr:
            lr_path = folder / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png"
            lr = load_image(lr_path, keep_gray=True)[None]
            assert lr.shape[1] == hr.shape[1], lr_path  # gray HR (bridge) has gray LR files
        else:
            lr = imresize(hr, 1 / scale, quantize_passes=True)
        sr = imresize(lr, scale, quantize_passes=True)
        psnrs.append(psnr(sr, hr, shave=scale).item())
        ssims.append(ssim(sr, hr, shave=scale).item())
    return sum(psnrs) / len(psnrs), sum(ssims) / len(ssims)


@pytest.mark.parametrize("official_lr", [False, True], ids=["from_hr", "official_lr"])
@pytest.mark.parametrize(("name", "scale"), list(PUBLISHED_BICUBIC))
def test_reproduces_published_bicubic_table(bench, name, scale, official_lr):
    got_psnr, got_ssim = _bicubic_scores(bench / name, scale, official_lr)
    want_psnr, want_ssim = PUBLISHED_BICUBIC[name, scale]
    assert abs(got_psnr - want_psnr) <= 0.02, (got_psnr, want_psnr)
    assert abs(got_ssim - want_ssim) <= 0.002, (got_ssim, want_ssim)
