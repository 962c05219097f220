"""Plain NumPy reference for the SR evaluation conventions, one image at a time.

A cross-check of ``zoomsr.data.imresize`` and ``zoomsr.metrics.fidelity``, written
independently of them and formulated differently on purpose:

- resize weights are computed output pixel by output pixel in a Python loop, with 0-based
  centres ``(j + 0.5) / scale - 0.5`` and the taps every input pixel closer than the kernel's
  half-support (zoomsr vectorises MATLAB's 1-based ``contributions`` instead), and borders
  are mirrored by reflecting each index until it lands inside;
- Y is computed on [0, 255] RGB with the /255 coefficients (zoomsr folds them for [0, 1]);
- SSIM filters with the full 2-D 11x11 window (scipy.ndimage) and crops to the valid part
  (zoomsr does two separable 'valid' 1-D convolutions).

Images are float64 arrays ``(H, W)`` or ``(H, W, C)`` in [0, 1]. No torch import.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def load_png(path: str | Path) -> np.ndarray:
    """An 8-bit file as float64 in [0, 1]: ``(H, W)`` for gray, ``(H, W, 3)`` for colour."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("L") if img.mode == "L" else img.convert("RGB"))
    return arr.astype(np.float64) / 255.0


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def keys_cubic(t: float) -> float:
    """Keys (1981) cubic convolution kernel with a = -0.5."""
    t = abs(t)
    if t <= 1.0:
        return 1.5 * t**3 - 2.5 * t**2 + 1.0
    if t <= 2.0:
        return -0.5 * t**3 + 2.5 * t**2 - 4.0 * t + 2.0
    return 0.0


def _mirror(i: int, n: int) -> int:
    """Symmetric padding with the edge pixel repeated: -1 -> 0, n -> n - 1."""
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - 1 - i
    return i


def _resize_axis0(img: np.ndarray, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    """Resize along axis 0, computing each output row's weights on its own."""
    n = img.shape[0]
    stretch = scale if (antialias and scale < 1.0) else 1.0
    half_support = 2.0 / stretch
    out = np.empty((out_len,) + img.shape[1:], dtype=np.float64)
    for j in range(out_len):
        centre = (j + 0.5) / scale - 0.5
        taps = range(math.floor(centre - half_support), math.ceil(centre + half_support) + 1)
        weights = np.array([stretch * keys_cubic(stretch * (centre - t)) for t in taps])
        weights /= weights.sum()
        rows = [_mirror(t, n) for t in taps]
        out[j] = np.tensordot(weights, img[rows], axes=(0, 0))
    return out


def imresize(img: np.ndarray, scale: float, quantize_passes: bool = False) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` on a float64 ``(H, W[, C])`` image in [0, 1].

    With ``quantize_passes`` the image is treated as uint8, as MATLAB does for ``imread``
    output: every 1-D pass is saturated and rounded half away from zero to 8 bits.
    """
    x = np.rint(img * 255.0) if quantize_passes else img.astype(np.float64)
    out_h = math.ceil(round(img.shape[0] * scale, 9))
    out_w = math.ceil(round(img.shape[1] * scale, 9))
    # Same scale on both axes, so MATLAB resizes rows (axis 0) first.
    for axis, out_len in ((0, out_h), (1, out_w)):
        x = np.moveaxis(_resize_axis0(np.moveaxis(x, axis, 0), out_len, scale, True), 0, axis)
        if quantize_passes:
            x = np.floor(np.clip(x, 0.0, 255.0) + 0.5)
    return x / 255.0 if quantize_passes else x


def quantize(img: np.ndarray) -> np.ndarray:
    """Round [0, 1] values to 8-bit levels (half away from zero), staying in float."""
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5) / 255.0


def to_y(img: np.ndarray) -> np.ndarray:
    """[0, 1] image -> the [0, 255] plane that is compared: BT.601 Y for RGB, itself for gray."""
    if img.ndim == 2:
        return img * 255.0
    rgb = img * 255.0
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def _shave(plane: np.ndarray, shave: int) -> np.ndarray:
    return plane[shave : plane.shape[0] - shave, shave : plane.shape[1] - shave]


def psnr(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Y-channel PSNR in dB of two [0, 1] images after shaving ``shave`` border pixels."""
    diff = _shave(to_y(sr), shave) - _shave(to_y(hr), shave)
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``: 2-D, normalised to sum 1."""
    r = np.arange(size) - (size - 1) / 2.0
    xx, yy = np.meshgrid(r, r)
    w = np.exp(-(xx**2 + yy**2) / (2.0 * sigma**2))
    return w / w.sum()


def ssim(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """Wang et al.'s ``ssim_index.m`` on the Y plane (or the gray plane), 'valid' region."""
    x = _shave(to_y(sr), shave)
    y = _shave(to_y(hr), shave)
    win = gaussian_window()
    m = win.shape[0] // 2

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate(a, win, mode="constant")[m:-m, m:-m]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x * mu_x
    syy = filt(y * y) - mu_y * mu_y
    sxy = filt(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def bicubic_baseline(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB-made LR and bicubic SR of a modcropped HR image (both on the 8-bit grid)."""
    lr = imresize(hr, 1.0 / scale, quantize_passes=True)
    sr = imresize(lr, float(scale), quantize_passes=True)
    return lr, sr
