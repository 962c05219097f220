"""Colour alignment of a step's output to its reference (CoZ: the step's upsampled view).

A generative step may drift in colour; chained steps compound the drift. CoZ (and StableSR,
OSEDiff before it) corrects each output against its input, in one of two ways:

- AdaIN (Huang & Belongie 2017, eq. 8): per image and channel, normalise the output to zero
  mean and unit std, then give it the input's mean and std.
- wavelet (StableSR, Wang et al. 2023): keep the output's high frequencies and take the low
  frequencies from the input, split by an à-trous ("with holes") decomposition.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from zoomsr.data.imresize import imresize

AlignMethod = Literal["none", "adain", "wavelet"]


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match the per-channel mean and std of ``content`` to those of ``style``, as CoZ's (and
    StableSR's) ``adaptive_instance_normalization``: ``std = sqrt(var + eps)`` with the
    unbiased variance, for both images.

    Args:
        content: ``(B, C, H, W)`` (the step's output).
        style: ``(B, C, h, w)``, any size (the step's reference).
        eps: added to both variances so a flat channel stays finite.

    Returns:
        ``(B, C, H, W)`` whose channels have ``style``'s mean and std. Not clamped.
    """

    def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(*x.shape[:2], -1)
        std = (flat.var(dim=2) + eps).sqrt()[..., None, None]
        return flat.mean(dim=2)[..., None, None], std

    c_mean, c_std = mean_std(content)
    s_mean, s_std = mean_std(style)
    return (content - c_mean) / c_std * s_std + s_mean


def wavelet_blur(img: torch.Tensor, dilation: int) -> torch.Tensor:
    """Separable [1, 2, 1] / 4 blur with holes of ``dilation`` pixels, replicate padding.

    ``(B, C, H, W)`` -> ``(B, C, H, W)``; a constant image is unchanged.
    """
    c = img.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0], dtype=img.dtype, device=img.device) / 4.0
    out = F.pad(img, (dilation, dilation, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, 3).repeat(c, 1, 1, 1), dilation=dilation, groups=c)
    out = F.pad(out, (0, 0, dilation, dilation), mode="replicate")
    return F.conv2d(out, k.view(1, 1, 3, 1).repeat(c, 1, 1, 1), dilation=dilation, groups=c)


def wavelet_decompose(img: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """À-trous decomposition into high and low frequencies: ``high + low == img``.

    Level ``i`` blurs with dilation ``2 ** i``; ``high`` is the sum of the detail layers
    (each level's input minus its blur), ``low`` the last blur.

    Args:
        img: ``(B, C, H, W)``. levels: number of levels (default 5, as StableSR).

    Returns:
        ``(high, low)``, both ``(B, C, H, W)``.
    """
    high = torch.zeros_like(img)
    low = img
    for i in range(levels):
        blurred = wavelet_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_align(content: torch.Tensor, style: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The high frequencies of ``content`` plus the low frequencies of ``style``.

    Args:
        content: ``(B, C, H, W)`` (the step's output).
        style: ``(B, C, h, w)`` (the step's input); resized to ``(H, W)`` by bicubic first.

    Returns:
        ``(B, C, H, W)``, not clamped. With ``style == content`` it returns ``content``.
    """
    if style.shape[-2:] != content.shape[-2:]:
        style = imresize(style, out_size=tuple(content.shape[-2:]))
    high, _ = wavelet_decompose(content, levels)
    _, low = wavelet_decompose(style, levels)
    return high + low


def align_colors(
    output: torch.Tensor, reference: torch.Tensor, method: AlignMethod, levels: int = 5
) -> torch.Tensor:
    """Apply ``method`` (``none`` | ``adain`` | ``wavelet``); result clamped to [0, 1]."""
    if method == "none":
        return output
    if method == "adain":
        return adain(output, reference).clamp(0, 1)
    if method == "wavelet":
        return wavelet_align(output, reference, levels).clamp(0, 1)
    raise ValueError(f"unknown colour alignment '{method}': none | adain | wavelet")
