"""PSNR and SSIM with the conventions of the SR literature (the MATLAB evaluation scripts).

What every "Bicubic 33.66 / 0.9299" table assumes:

- RGB images are compared on the BT.601 luma Y in [16, 235] (MATLAB ``rgb2ycbcr``), not
  rounded; a single-channel image is compared as it is, on [0, 255];
- ``shave`` pixels (the scale factor) are cut from every border first;
- PSNR = 10 log10(255^2 / MSE) per image, averaged over images by the caller;
- SSIM is Wang et al.'s ``ssim_index.m`` (IEEE TIP 2004, eq. 13): an 11x11 Gaussian window
  with sigma 1.5, only the 'valid' positions (no padding), C1 = (0.01 * 255)^2,
  C2 = (0.03 * 255)^2, on [0, 255] values, the map averaged.

Everything runs in float64 on the inputs' device and is batched over ``B``.
"""

from __future__ import annotations

import math

import torch

_PEAK = 255.0
# BT.601 Y for R, G, B in [0, 1] (MATLAB rgb2ycbcr, whose coefficients are those /255 applied
# to [0, 255] RGB): Y = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5

#: The "Bicubic" rows SR papers print, Y-PSNR (dB) / SSIM by (dataset, scale), e.g. EDSR's and
#: RCAN's tables (../shared/datasets/README.md); what these conventions reproduce.
PUBLISHED_BICUBIC: dict[tuple[str, int], tuple[float, float]] = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of an RGB image.

    Args:
        img: ``(B, 3, H, W)`` RGB in ``[0, 1]``.

    Returns:
        ``(B, 1, H, W)`` Y in ``[16, 235]`` (the [0, 255] scale), same dtype, not rounded.
    """
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects (B, 3, H, W), got shape {tuple(img.shape)}")
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    return 16.0 + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b


def _prepare(
    sr: torch.Tensor, hr: torch.Tensor, shave: int, y_channel: bool, min_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes, shave borders, go to float64 on [0, 255] (Y if asked and RGB)."""
    if sr.shape != hr.shape:
        raise ValueError(
            f"sr and hr must have the same shape, got sr {tuple(sr.shape)} and hr {tuple(hr.shape)}"
        )
    if sr.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(sr.shape)}")
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    height, width = sr.shape[-2] - 2 * shave, sr.shape[-1] - 2 * shave
    if height < min_size or width < min_size:
        raise ValueError(
            f"images of shape {tuple(sr.shape)} are too small for shave={shave}: "
            f"{height}x{width} left, need at least {min_size}x{min_size}"
        )
    out = []
    for img in (sr, hr):
        img = img[..., shave : shave + height, shave : shave + width].to(torch.float64)
        if y_channel and img.shape[1] == 3:
            out.append(rgb_to_y(img))
        elif y_channel and img.shape[1] != 1:
            raise ValueError(f"y_channel=True needs 1 or 3 channels, got {img.shape[1]}")
        else:
            out.append(img * _PEAK)
    return out[0], out[1]


def psnr(
    sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_channel: bool = True
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(255^2 / MSE), in dB.

    Args:
        sr: ``(B, C, H, W)`` restored images in ``[0, 1]`` (quantize first to score 8-bit
            output, as the literature does).
        hr: ``(B, C, H, W)`` references in ``[0, 1]``.
        shave: pixels removed from every border before comparing (the scale factor, by
            convention). Default 0.
        y_channel: compare RGB images on BT.601 Y (default). Single-channel images are always
            compared as they are. With ``False``, the MSE runs over all channels.

    Returns:
        ``(B,)`` float64 PSNR in dB; ``inf`` for identical images (MSE = 0).

    Raises:
        ValueError: the shapes differ, are not 4-D, or nothing is left after shaving.
    """
    sr, hr = _prepare(sr, hr, shave, y_channel, min_size=1)
    mse = (sr - hr).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(_PEAK**2 / mse)


def _gaussian_taps() -> list[float]:
    """Normalised 1-D Gaussian; its outer product is MATLAB's fspecial('gaussian', 11, 1.5)."""
    half = (_SSIM_SIZE - 1) / 2
    g = [math.exp(-((k - half) ** 2) / (2 * _SSIM_SIGMA**2)) for k in range(_SSIM_SIZE)]
    return [v / sum(g) for v in g]


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """'valid' 11x11 Gaussian filtering of ``(..., H, W)`` as two separable 1-D passes.

    Shifted in-place multiply-adds: on CPU, float64 ``conv2d`` is about 10x slower.
    """
    taps = _gaussian_taps()
    for dim in (-2, -1):
        length = x.shape[dim] - _SSIM_SIZE + 1
        out = x.narrow(dim, 0, length) * taps[0]
        for k in range(1, _SSIM_SIZE):
            out.add_(x.narrow(dim, k, length), alpha=taps[k])
        x = out
    return x


def ssim(
    sr: torch.Tensor, hr: torch.Tensor, shave: int = 0, y_channel: bool = True
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004, MATLAB ``ssim_index.m``).

    Args:
        sr: ``(B, C, H, W)`` restored images in ``[0, 1]``.
        hr: ``(B, C, H, W)`` references in ``[0, 1]``.
        shave: pixels removed from every border first. Default 0.
        y_channel: compare RGB images on BT.601 Y (default); single-channel images are always
            compared as they are. With ``False``, SSIM is computed per channel and averaged.

    Returns:
        ``(B,)`` float64 mean SSIM over the valid region (and channels); 1 for identical images.

    Raises:
        ValueError: the shapes differ, are not 4-D, or fewer than 11x11 pixels remain.
    """
    sr, hr = _prepare(sr, hr, shave, y_channel, min_size=_SSIM_SIZE)
    x, y = sr, hr
    c1, c2 = (0.01 * _PEAK) ** 2, (0.03 * _PEAK) ** 2
    # Local means and second moments, the five maps filtered in one go: (5, B, C, h, w).
    stats = _filter_valid(torch.stack([x, y, x * x, y * y, x * y]))
    mu_x, mu_y, xx, yy, xy = stats.unbind(dim=0)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)
