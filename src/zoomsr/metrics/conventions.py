"""PSNR and SSIM as three code bases compute them: the numbers of a paper depend on which.

The three flavours (``fidelity=`` of a metric suite, ``conf/metrics/``):

- ``matlab``: the SR literature's MATLAB scripts (:mod:`zoomsr.metrics.fidelity`): BT.601 Y in
  [16, 235] computed in float64 and not rounded; PSNR = 10 log10(255^2 / MSE); SSIM of Wang et
  al. (11x11 Gaussian, sigma 1.5, 'valid'), map averaged.
- ``basicsr``: BasicSR's ``calculate_psnr`` / ``calculate_ssim`` (``basicsr/metrics/psnr_ssim.py``,
  documented at basicsr.readthedocs.io): the same formulas on [0, 255] float64 images, but Y is
  made by ``bgr2ycbcr(img / 255, y_only=True) * 255`` on float32 input, so the luma carries
  float32 rounding before the float64 comparison; an RGB SSIM is the mean of the per-channel
  SSIMs; identical images give PSNR ``inf``.
- ``pyiqa``: IQA-PyTorch's ``psnr`` / ``ssim`` (what OSEDiff's ``test_metrics.py`` calls, with
  ``test_y_channel=True, color_space='ycbcr'``): PSNR on [0, 1] values, 10 log10(1 / (MSE +
  1e-8)), Y = ``rgb2ycbcr(x)[0]`` in float32 (in [16/255, 235/255], not rounded); SSIM on
  [0, 255] values whose Y is *rounded to integers* first, with the contrast-structure map
  clamped at 0 (``relu``) before it is multiplied in, no downsampling. ``color_space='yiq'``
  (pyiqa's own default) takes YIQ's Y = 0.299 R + 0.587 G + 0.114 B instead.

``color_space``: ``ycbcr`` (BT.601 luma), ``yiq`` (pyiqa only) or ``rgb`` (all channels).
Single-channel images are compared as they are in every flavour.
"""

from __future__ import annotations

from typing import Literal

import torch

from zoomsr.metrics.fidelity import _SSIM_SIZE, _filter_valid, rgb_to_y

Fidelity = Literal["matlab", "basicsr", "pyiqa"]
ColorSpace = Literal["rgb", "ycbcr", "yiq"]

FIDELITIES = ("matlab", "basicsr", "pyiqa")
COLOR_SPACES = ("rgb", "ycbcr", "yiq")

#: What each flavour does, written into metrics.json beside the numbers.
FIDELITY_NOTES: dict[str, dict[str, str]] = {
    "matlab": {
        "psnr": "10*log10(255^2/MSE) per image, float64",
        "ssim": "Wang et al. 2004: 11x11 Gaussian sigma 1.5, 'valid', C1=(0.01*255)^2, "
        "C2=(0.03*255)^2, float64, map mean",
        "luma": "Y = 16 + 65.481 R + 128.553 G + 24.966 B (R,G,B in [0,1]), float64, not rounded",
    },
    "basicsr": {
        "psnr": "BasicSR calculate_psnr: 10*log10(255^2/MSE), float64, inf for MSE=0",
        "ssim": "BasicSR calculate_ssim: 11x11 Gaussian sigma 1.5 'valid', float64, mean of "
        "per-channel SSIMs",
        "luma": "BasicSR to_y_channel: Y = bgr2ycbcr(img/255 float32, y_only)*255, float32 "
        "then float64, not rounded",
    },
    "pyiqa": {
        "psnr": "pyiqa psnr: 10*log10(1/(MSE+1e-8)) on [0,1] values",
        "ssim": "pyiqa ssim: [0,255] values rounded to integers, 11x11 Gaussian sigma 1.5 "
        "'valid', cs map clamped at 0 (relu), no downsampling, float64",
        "luma": "pyiqa to_y_channel: ycbcr Y = (65.481 R + 128.553 G + 24.966 B + 16)/255 "
        "(yiq: 0.299 R + 0.587 G + 0.114 B), float32",
    },
}

_YCBCR_Y = (65.481, 128.553, 24.966)
_YIQ_Y = (0.299, 0.587, 0.114)


def _luma_float32(img: torch.Tensor, weights: tuple[float, ...], offset: float) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)``: a dot product over channels in float32, as NumPy's
    ``np.dot`` (BasicSR) and ``torch.matmul`` (pyiqa) compute it from float32 images."""
    w = torch.tensor(weights, dtype=torch.float32, device=img.device)
    y = img.float().permute(0, 2, 3, 1) @ w + offset  # (B, H, W)
    return y[:, None]


def to_255(img: torch.Tensor, flavour: Fidelity, color_space: ColorSpace) -> torch.Tensor:
    """The values a flavour compares, on the [0, 255] scale, float64.

    Args:
        img: ``(B, C, H, W)`` in [0, 1]; C = 1 is used as it is.
        flavour: ``matlab`` | ``basicsr`` | ``pyiqa``.
        color_space: ``ycbcr`` | ``yiq`` (pyiqa) | ``rgb``.

    Returns:
        ``(B, 1, H, W)`` luma or ``(B, C, H, W)`` channels, float64 (not rounded).
    """
    if img.shape[1] != 3 or color_space == "rgb":
        return img.double() * 255.0
    if color_space == "yiq":
        if flavour != "pyiqa":
            raise ValueError(f"color_space=yiq is pyiqa's; fidelity={flavour} has ycbcr or rgb")
        return (_luma_float32(img, _YIQ_Y, 0.0) * 255.0).double()
    if flavour == "matlab":
        return rgb_to_y(img.double())
    if flavour == "basicsr":  # bgr2ycbcr: dot(img, w) + 16, then / 255; to_y_channel: * 255
        return (_luma_float32(img, _YCBCR_Y, 16.0) / 255.0 * 255.0).double()
    # pyiqa rgb2ycbcr: (x @ W + bias) / 255, then * data_range in float32 (255 for SSIM)
    return (_luma_float32(img, _YCBCR_Y, 16.0) / 255.0 * 255.0).double()


def _crop(img: torch.Tensor, border: int) -> torch.Tensor:
    if not border:
        return img
    return img[..., border : img.shape[-2] - border, border : img.shape[-1] - border]


def _check(sr: torch.Tensor, hr: torch.Tensor, border: int, min_size: int) -> None:
    if sr.shape != hr.shape or sr.ndim != 4:
        raise ValueError(f"sr and hr must be equal (B, C, H, W), got {tuple(sr.shape)} and "
                         f"{tuple(hr.shape)}")  # fmt: skip
    if min(sr.shape[-2:]) - 2 * border < min_size:
        raise ValueError(f"images of shape {tuple(sr.shape)} are too small for crop_border="
                         f"{border}: need {min_size} px left")  # fmt: skip


def psnr(
    sr: torch.Tensor,
    hr: torch.Tensor,
    crop_border: int = 0,
    flavour: Fidelity = "matlab",
    color_space: ColorSpace = "ycbcr",
) -> torch.Tensor:
    """PSNR per image as ``flavour`` computes it.

    Args:
        sr, hr: ``(B, C, H, W)`` in [0, 1] (8-bit values for the published numbers).
        crop_border: pixels cut from every border first.
        flavour, color_space: see the module docstring.

    Returns:
        ``(B,)`` float64 dB. ``matlab`` / ``basicsr``: ``inf`` for identical images; ``pyiqa``:
        80 dB (its ``1e-8`` MSE floor).
    """
    _check(sr, hr, crop_border, 1)
    x = to_255(_crop(sr, crop_border), flavour, color_space)
    y = to_255(_crop(hr, crop_border), flavour, color_space)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    if flavour == "pyiqa":
        return 10.0 * torch.log10(1.0 / (mse / 255.0**2 + 1e-8))
    return 10.0 * torch.log10(255.0**2 / mse)


def ssim(
    sr: torch.Tensor,
    hr: torch.Tensor,
    crop_border: int = 0,
    flavour: Fidelity = "matlab",
    color_space: ColorSpace = "ycbcr",
) -> torch.Tensor:
    """SSIM per image as ``flavour`` computes it (Wang et al. 2004, eq. 13, 'valid' 11x11
    Gaussian window, sigma 1.5, on [0, 255]).

    Returns:
        ``(B,)`` float64, the map averaged over positions and channels (equal to the mean of the
        per-channel means, BasicSR's RGB convention).
    """
    _check(sr, hr, crop_border, _SSIM_SIZE)
    x = to_255(_crop(sr, crop_border), flavour, color_space)
    y = to_255(_crop(hr, crop_border), flavour, color_space)
    if flavour == "pyiqa":  # preprocess_rgb: "use rounded uint8 value ... same as MATLAB"
        x, y = x.round(), y.round()
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    stats = _filter_valid(torch.stack([x, y, x * x, y * y, x * y]))  # (5, B, C, h, w)
    mu_x, mu_y, xx, yy, xy = stats.unbind(dim=0)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    if flavour == "pyiqa":
        cs = cs.clamp_min(0)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim_map.flatten(1).mean(dim=1)
