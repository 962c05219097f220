# ruff: noqa: B006
# (B006: the list defaults mirror conf/degradation/realesrgan.yaml; __init__ copies every one
# into tuples of floats, so no default is ever mutated or shared.)
"""Real-ESRGAN's second-order degradation (Wang et al., 2021, "Real-ESRGAN: Training
Real-World Blind Super-Resolution with Pure Synthetic Data", Sec. 3).

An HR image goes twice through blur -> random resize -> noise -> JPEG (Sec. 3.2, Fig. 2),
with independently drawn parameters per stage, then back to ``1/scale`` of its size. A 2D
sinc filter (Sec. 3.3) adds ringing and overshoot artifacts in either stage and at the end.

- Kernel functions (Sec. 3.1, Eq. 2-3 and the generalized and plateau forms after them;
  Sec. 3.3, Eq. 5) return ``(K, K)`` float64 tensors that sum to 1; the ``random_*``
  pickers draw from an explicit ``torch.Generator``.
- :class:`RealESRGANDegradation` maps HR ``(B, 3, H, W)`` in [0, 1] to LR
  ``(B, 3, H // scale, W // scale)`` on 8-bit levels; each image draws its own parameters.

Where this differs from the reference implementation (BasicSR's ``RealESRGANModel``):
JPEG is PIL's encoder at an integer quality instead of a differentiable JPEG at a real
quality; random parameters are drawn per image rather than per batch (images of one batch
then have different intermediate sizes, so they go one at a time); kernels are used at
their drawn size rather than zero-padded to 21 (which only served to stack them, and leaves
the filtered image unchanged); and the zoomsr switches ``blur_prob``, ``noise_prob(2)`` and
``jpeg_prob(2)`` default to 1, which is Real-ESRGAN.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from zoomsr.data.io import quantize

KernelType = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"
]
ResizeMode = Literal["area", "bilinear", "bicubic", "nearest"]
KERNEL_TYPES: tuple[str, ...] = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic", "nearest")
MIN_KERNEL_SIZE = 7  # Sec. 3.1: kernel sizes are drawn from {7, 9, ..., 21}.
ROTATION_RANGE = (-math.pi, math.pi)  # Sec. 3.1: rotation angle of anisotropic kernels.


# ----------------------------------------------------------------------------- random draws


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def uniform(low: float, high: float, generator: torch.Generator | None = None) -> float:
    """One draw from U[low, high) (float64), from ``generator`` or torch's global RNG."""
    u = torch.rand((), generator=generator, dtype=torch.float64, device=_rng_device(generator))
    return low + (high - low) * float(u)


def _randint(n: int, generator: torch.Generator | None) -> int:
    """One draw from ``{0, ..., n - 1}``, uniformly."""
    return int(torch.randint(n, (), generator=generator, device=_rng_device(generator)))


def choose_index(weights: Sequence[float], generator: torch.Generator | None = None) -> int:
    """Index ``i`` drawn with probability ``weights[i]`` (weights sum to 1; zeros never drawn)."""
    u, total = uniform(0.0, 1.0, generator), 0.0
    for i, w in enumerate(weights):
        total += w
        if w > 0 and u < total:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)  # u beyond a sum rounded below 1


def _draw_beta(beta_range: Sequence[float], generator: torch.Generator | None) -> float:
    """Shape β, half of the draws below 1 and half above when the range straddles 1."""
    low, high = beta_range
    if low < 1.0 < high:
        below = uniform(0.0, 1.0, generator) < 0.5
        return uniform(low, 1.0, generator) if below else uniform(1.0, high, generator)
    return uniform(low, high, generator)


# ---------------------------------------------------------------------------------- kernels


def _check_kernel(kernel_size: int, sigma_x: float, sigma_y: float, beta: float = 1.0) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigma must be > 0, got sigma_x={sigma_x}, sigma_y={sigma_y}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _grid(kernel_size: int) -> tuple[Tensor, Tensor]:
    """Pixel offsets ``(x, y)`` from the kernel centre, each ``(K, K)`` float64."""
    ax = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _mahalanobis_sq(kernel_size: int, sigma_x: float, sigma_y: float, theta: float) -> Tensor:
    """``C^T Σ^-1 C`` over the grid, ``Σ = R(θ) diag(σx², σy²) R(θ)^T`` (Sec. 3.1, Eq. 2-3)."""
    xx, yy = _grid(kernel_size)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy  # R(θ)^T C: the kernel's own axes
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(
    kernel_size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> Tensor:
    """Gaussian blur kernel ``k = exp(-½ C^T Σ^-1 C) / N`` (Sec. 3.1, Eq. 2-3).

    Isotropic when ``sigma_y`` is None (then ``sigma_y = sigma_x``), anisotropic and rotated
    by ``theta`` radians otherwise. Returns ``(K, K)`` float64 summing to 1.
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    _check_kernel(kernel_size, sigma_x, sigma_y)
    k = torch.exp(-0.5 * _mahalanobis_sq(kernel_size, sigma_x, sigma_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(
    kernel_size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
) -> Tensor:
    """Generalized Gaussian ``k = exp(-½ (C^T Σ^-1 C)^β) / N`` (Sec. 3.1, after Eq. 3).

    ``beta`` < 1 gives heavier tails, > 1 a flatter top; 1 is :func:`gaussian_kernel`.
    Returns ``(K, K)`` float64 summing to 1.
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    _check_kernel(kernel_size, sigma_x, sigma_y, beta)
    k = torch.exp(-0.5 * _mahalanobis_sq(kernel_size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def plateau_kernel(
    kernel_size: int,
    sigma_x: float,
    sigma_y: float | None = None,
    theta: float = 0.0,
    beta: float = 1.0,
) -> Tensor:
    """Plateau-shaped kernel ``k = 1 / (1 + (C^T Σ^-1 C)^β) / N`` (Sec. 3.1, after Eq. 3).

    Returns ``(K, K)`` float64 summing to 1.
    """
    sigma_y = sigma_x if sigma_y is None else sigma_y
    _check_kernel(kernel_size, sigma_x, sigma_y, beta)
    k = 1.0 / (1.0 + _mahalanobis_sq(kernel_size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def sinc_kernel(kernel_size: int, cutoff: float) -> Tensor:
    """Circular low-pass (2D sinc) kernel ``k(r) = ω_c J1(ω_c r) / (2π r)`` (Sec. 3.3, Eq. 5).

    ``cutoff`` ω_c in (0, π] radians per pixel; ``k(0) = ω_c² / (4π)``, the limit at r = 0.
    Normalised so its DC gain is 1. Returns ``(K, K)`` float64 summing to 1.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not 0 < cutoff <= math.pi:
        raise ValueError(f"cutoff must be in (0, pi], got {cutoff}")
    xx, yy = _grid(kernel_size)
    r = torch.sqrt(xx**2 + yy**2)
    r_safe = torch.where(r == 0, torch.ones_like(r), r)
    k = cutoff * torch.special.bessel_j1(cutoff * r_safe) / (2 * math.pi * r_safe)
    k = torch.where(r == 0, torch.full_like(r, cutoff**2 / (4 * math.pi)), k)
    return k / k.sum()


def random_mixed_kernel(
    kernel_size: int,
    kernel_list: Sequence[KernelType],
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """A Gaussian-family kernel of a type drawn from ``kernel_list`` with ``kernel_prob``.

    σx, σy ~ U(sigma_range) (σy = σx and θ = 0 for the ``*iso`` types), θ ~ U[-π, π],
    β from ``betag_range`` (generalized) or ``betap_range`` (plateau) (Sec. 3.1).
    Returns ``(kernel_size, kernel_size)`` float64 summing to 1.
    """
    kind = kernel_list[choose_index(kernel_prob, generator)]
    sigma_x = uniform(*sigma_range, generator)
    sigma_y, theta = sigma_x, 0.0
    if kind.endswith("aniso"):
        sigma_y = uniform(*sigma_range, generator)
        theta = uniform(*ROTATION_RANGE, generator)
    if kind.startswith("generalized"):
        beta = _draw_beta(betag_range, generator)
        return generalized_gaussian_kernel(kernel_size, sigma_x, sigma_y, theta, beta)
    if kind.startswith("plateau"):
        beta = _draw_beta(betap_range, generator)
        return plateau_kernel(kernel_size, sigma_x, sigma_y, theta, beta)
    return gaussian_kernel(kernel_size, sigma_x, sigma_y, theta)


def random_kernel_size(max_kernel_size: int, generator: torch.Generator | None = None) -> int:
    """Odd size drawn uniformly from ``{7, 9, ..., max_kernel_size}`` (Sec. 3.1)."""
    if max_kernel_size < MIN_KERNEL_SIZE:
        raise ValueError(f"max_kernel_size must be >= {MIN_KERNEL_SIZE}, got {max_kernel_size}")
    sizes = range(MIN_KERNEL_SIZE, max_kernel_size + 1, 2)
    return sizes[_randint(len(sizes), generator)]


def random_blur_kernel(
    max_kernel_size: int,
    kernel_list: Sequence[KernelType],
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    sinc_prob: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One stage's blur kernel: size from ``{7, ..., max_kernel_size}``, then a sinc kernel
    with probability ``sinc_prob`` (ω_c ~ U[π/3, π] below size 13, U[π/5, π] from 13, as in
    Real-ESRGAN), else :func:`random_mixed_kernel`. Returns ``(K, K)`` float64, K odd."""
    size = random_kernel_size(max_kernel_size, generator)
    if uniform(0, 1, generator) < sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, uniform(low, math.pi, generator))
    return random_mixed_kernel(
        size, kernel_list, kernel_prob, sigma_range, betag_range, betap_range, generator
    )


def random_sinc_kernel(max_kernel_size: int, generator: torch.Generator | None = None) -> Tensor:
    """The final sinc filter: size from ``{7, ..., max_kernel_size}``, ω_c ~ U[π/3, π]."""
    size = random_kernel_size(max_kernel_size, generator)
    return sinc_kernel(size, uniform(math.pi / 3, math.pi, generator))


# --------------------------------------------------------------------------- image operations


def filter2d(img: Tensor, kernel: Tensor) -> Tensor:
    """Filter every channel of ``img`` ``(B, C, H, W)`` with ``kernel`` ``(K, K)``, K odd.

    Reflect padding, as Real-ESRGAN; replicate padding where the image is too small to
    reflect ``K // 2`` pixels (tiny intermediate images after a strong downscale).
    """
    b, c, h, w = img.shape
    pad = kernel.shape[-1] // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    x = F.pad(img, (pad, pad, pad, pad), mode=mode)
    weight = kernel.to(img).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def rgb_to_gray(img: Tensor) -> Tensor:
    """ITU-R BT.601 luma of ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    r, g, b = img.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def add_gaussian_noise(
    img: Tensor, sigma: float, gray: bool, generator: torch.Generator | None = None
) -> Tensor:
    """``img + n``, ``n ~ N(0, (sigma/255)²)`` per pixel, the same in every channel when
    ``gray`` (Sec. 3.1, "Gaussian noise"); clamped to [0, 1]. ``img``: ``(B, 3, H, W)``."""
    b, c, h, w = img.shape
    shape = (b, 1 if gray else c, h, w)
    device = _rng_device(generator) if generator is not None else img.device
    noise = torch.randn(shape, generator=generator, dtype=img.dtype, device=device)
    return (img + noise.to(img.device) * (sigma / 255.0)).clamp(0, 1)


def add_poisson_noise(
    img: Tensor, scale: float, gray: bool, generator: torch.Generator | None = None
) -> Tensor:
    """``img + scale * (P(λ v)/v - λ)``, λ the 8-bit rounded image (its luma when ``gray``),
    v the number of distinct levels rounded up to a power of 2 (Sec. 3.1, "Poisson noise",
    following scikit-image's ``random_noise``); clamped to [0, 1]. ``img``: ``(B, 3, H, W)``."""
    base = rgb_to_gray(img) if gray else img
    base = quantize(base)  # count distinct 8-bit levels, as the reference does
    noisy = []
    for i in range(base.shape[0]):
        levels = 2.0 ** math.ceil(math.log2(max(torch.unique(base[i]).numel(), 1)))
        rate = (base[i] * levels).to(_rng_device(generator))
        noisy.append(torch.poisson(rate, generator=generator).to(img.device) / levels)
    noise = torch.stack(noisy) - base
    return (img + noise * scale).clamp(0, 1)


def jpeg_compress(img: Tensor, quality: int) -> Tensor:
    """JPEG encode/decode every image of ``(B, 3, H, W)`` in [0, 1] with PIL at ``quality``.

    Exact libjpeg (4:2:0 chroma subsampling, PIL's default) instead of the reference's
    differentiable JPEG: nothing back-propagates through the degradation, and a real codec is
    what real LR images went through. The input is rounded to 8 bits first, as a file is.
    """
    out = []
    for arr in (quantize(img) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy():
        buffer = io.BytesIO()
        Image.fromarray(arr).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()))
    return (torch.stack(out).permute(0, 3, 1, 2).to(img) / 255.0).contiguous()


def resize(img: Tensor, size: tuple[int, int], mode: ResizeMode) -> Tensor:
    """``F.interpolate`` of ``(B, C, H, W)`` to ``size`` (no antialiasing, as Real-ESRGAN)."""
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(img, size=size, mode=mode, align_corners=align)


# ---------------------------------------------------------------------------- argument checks


def _prob(name: str, value: float) -> float:
    if isinstance(value, str) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _floats(name: str, value: Sequence[float], what: str) -> tuple[float, ...]:
    try:
        if isinstance(value, str):
            raise TypeError
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def _range(
    name: str, value: Sequence[float], low: float, high: float = math.inf, open_low: bool = False
) -> tuple[float, float]:
    """``[lo, hi]`` with ``low <= lo <= hi <= high`` (``low < lo`` when ``open_low``)."""
    bounds = _floats(name, value, "a list [low, high] of two numbers")
    if len(bounds) != 2:
        raise ValueError(f"{name} must be a list [low, high] of two numbers, got {value!r}")
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"{name} must be ordered [low, high] with low <= high, got {[lo, hi]}")
    if lo < low or (open_low and lo == low) or hi > high:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ValueError(f"{name} must lie within {interval}, got {[lo, hi]}")
    return lo, hi


def _distribution(name: str, value: Sequence[float], n: int) -> tuple[float, ...]:
    probs = _floats(name, value, f"a list of {n} probabilities")
    if len(probs) != n or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(
            f"{name} must be {n} non-negative probabilities summing to 1, got {value!r}"
        )
    return probs


def _choices(name: str, value: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(str(v) for v in value)
    unknown = [v for v in names if v not in allowed]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"{name} must be distinct names from {list(allowed)}, got {value!r}")
    return names


def _kernel_size(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < MIN_KERNEL_SIZE or value % 2 == 0:
        raise ValueError(f"{name} must be an odd integer >= {MIN_KERNEL_SIZE}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Stage:
    """One degradation stage's checked settings; both stages share this form (Sec. 3.2)."""

    blur_prob: float
    blur_kernel_size: int
    kernel_list: tuple[str, ...]
    kernel_prob: tuple[float, ...]
    sinc_prob: float
    blur_sigma: tuple[float, float]
    betag_range: tuple[float, float]
    betap_range: tuple[float, float]
    resize_prob: tuple[float, ...]
    resize_range: tuple[float, float]
    noise_prob: float
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float
    jpeg_prob: float
    jpeg_range: tuple[float, float]


def _make_stage(suffix: str, v: dict[str, Any]) -> _Stage:
    """Check stage settings ``v`` (keyed by field); errors name the ``__init__`` argument."""

    def arg(field: str) -> str:
        return "second_blur_prob" if field == "blur_prob" and suffix else field + suffix

    kernel_list = _choices(arg("kernel_list"), v["kernel_list"], KERNEL_TYPES)
    resize_range = _range(arg("resize_range"), v["resize_range"], 0.0, open_low=True)
    if not resize_range[0] <= 1.0 <= resize_range[1]:
        # The up factor is drawn from [1, high], the down factor from [low, 1].
        raise ValueError(f"{arg('resize_range')} must contain 1, got {list(resize_range)}")
    return _Stage(
        blur_prob=_prob(arg("blur_prob"), v["blur_prob"]),
        blur_kernel_size=_kernel_size(arg("blur_kernel_size"), v["blur_kernel_size"]),
        kernel_list=kernel_list,
        kernel_prob=_distribution(arg("kernel_prob"), v["kernel_prob"], len(kernel_list)),
        sinc_prob=_prob(arg("sinc_prob"), v["sinc_prob"]),
        blur_sigma=_range(arg("blur_sigma"), v["blur_sigma"], 0.0, open_low=True),
        betag_range=_range(arg("betag_range"), v["betag_range"], 0.0, open_low=True),
        betap_range=_range(arg("betap_range"), v["betap_range"], 0.0, open_low=True),
        resize_prob=_distribution(arg("resize_prob"), v["resize_prob"], 3),
        resize_range=resize_range,
        noise_prob=_prob(arg("noise_prob"), v["noise_prob"]),
        gaussian_noise_prob=_prob(arg("gaussian_noise_prob"), v["gaussian_noise_prob"]),
        noise_range=_range(arg("noise_range"), v["noise_range"], 0.0),
        poisson_scale_range=_range(arg("poisson_scale_range"), v["poisson_scale_range"], 0.0),
        gray_noise_prob=_prob(arg("gray_noise_prob"), v["gray_noise_prob"]),
        jpeg_prob=_prob(arg("jpeg_prob"), v["jpeg_prob"]),
        jpeg_range=_range(arg("jpeg_range"), v["jpeg_range"], 1.0, 100.0),
    )


# ------------------------------------------------------------------------------ the pipeline


class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation, HR -> LR (Sec. 3.2, Eq. 4 with n = 2, Fig. 2).

    Stage 1: blur (a kernel of a random type, or a sinc filter with ``sinc_prob``) -> resize
    up/down/keep with ``resize_prob`` by a factor from ``resize_range`` -> Gaussian noise
    (``gaussian_noise_prob``) or Poisson noise, gray with ``gray_noise_prob`` -> JPEG at a
    quality from ``jpeg_range``. Stage 2: the same with the ``*2`` settings, blurring only
    with ``second_blur_prob``, its resize factor relative to the LR size. Final: resize to
    ``1/scale`` + a sinc filter (``final_sinc_prob``), and stage-2 JPEG, in random order
    (``final_resize_first_prob``: resize + sinc first); clamp and round to 8 bits.

    Defaults are Real-ESRGAN x4plus (``options/train_realesrgan_x4plus.yml``). Resize modes
    are drawn uniformly from ``resize_modes`` at each of the three resizes. All ranges are
    ``[low, high]`` lists; sigma/noise levels are in 8-bit units (``noise_range``) or
    pixels (``blur_sigma``). zoomsr additions (1 = always, as Real-ESRGAN): ``blur_prob``,
    ``noise_prob``/``noise_prob2`` (else no noise), ``jpeg_prob``/``jpeg_prob2`` (else no
    JPEG); ``blur_kernel_size*`` is the largest kernel, sizes drawn from ``{7, 9, ...}``.

    Raises:
        ValueError: naming the argument, for a probability outside [0, 1], a distribution
            not summing to 1, an unordered or out-of-bounds range, an unknown kernel type or
            resize mode, or an even/too small kernel size.
    """

    def __init__(
        self,
        scale: int = 4,
        *,
        # first stage (Sec. 3.1-3.2)
        blur_prob: float = 1.0,
        blur_kernel_size: int = 21,
        kernel_list: list[KernelType] = list(KERNEL_TYPES),
        kernel_prob: list[float] = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
        sinc_prob: float = 0.1,
        blur_sigma: list[float] = [0.2, 3.0],
        betag_range: list[float] = [0.5, 4.0],
        betap_range: list[float] = [1.0, 2.0],
        resize_prob: list[float] = [0.2, 0.7, 0.1],
        resize_range: list[float] = [0.15, 1.5],
        noise_prob: float = 1.0,
        gaussian_noise_prob: float = 0.5,
        noise_range: list[float] = [1.0, 30.0],
        poisson_scale_range: list[float] = [0.05, 3.0],
        gray_noise_prob: float = 0.4,
        jpeg_prob: float = 1.0,
        jpeg_range: list[float] = [30.0, 95.0],
        # second stage
        second_blur_prob: float = 0.8,
        blur_kernel_size2: int = 21,
        kernel_list2: list[KernelType] = list(KERNEL_TYPES),
        kernel_prob2: list[float] = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
        sinc_prob2: float = 0.1,
        blur_sigma2: list[float] = [0.2, 1.5],
        betag_range2: list[float] = [0.5, 4.0],
        betap_range2: list[float] = [1.0, 2.0],
        resize_prob2: list[float] = [0.3, 0.4, 0.3],
        resize_range2: list[float] = [0.3, 1.2],
        noise_prob2: float = 1.0,
        gaussian_noise_prob2: float = 0.5,
        noise_range2: list[float] = [1.0, 25.0],
        poisson_scale_range2: list[float] = [0.05, 2.5],
        gray_noise_prob2: float = 0.4,
        jpeg_prob2: float = 1.0,
        jpeg_range2: list[float] = [30.0, 95.0],
        # final step (Sec. 3.3)
        final_sinc_prob: float = 0.8,
        final_sinc_kernel_size: int = 21,
        final_resize_first_prob: float = 0.5,
        resize_modes: list[ResizeMode] = ["area", "bilinear", "bicubic"],
    ) -> None:
        if isinstance(scale, bool) or int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        self.scale = int(scale)
        self.stage1 = _make_stage("", dict(
            blur_prob=blur_prob, blur_kernel_size=blur_kernel_size, kernel_list=kernel_list,
            kernel_prob=kernel_prob, sinc_prob=sinc_prob, blur_sigma=blur_sigma,
            betag_range=betag_range, betap_range=betap_range, resize_prob=resize_prob,
            resize_range=resize_range, noise_prob=noise_prob,
            gaussian_noise_prob=gaussian_noise_prob, noise_range=noise_range,
            poisson_scale_range=poisson_scale_range, gray_noise_prob=gray_noise_prob,
            jpeg_prob=jpeg_prob, jpeg_range=jpeg_range,
        ))  # fmt: skip
        self.stage2 = _make_stage("2", dict(
            blur_prob=second_blur_prob, blur_kernel_size=blur_kernel_size2,
            kernel_list=kernel_list2, kernel_prob=kernel_prob2, sinc_prob=sinc_prob2,
            blur_sigma=blur_sigma2, betag_range=betag_range2, betap_range=betap_range2,
            resize_prob=resize_prob2, resize_range=resize_range2, noise_prob=noise_prob2,
            gaussian_noise_prob=gaussian_noise_prob2, noise_range=noise_range2,
            poisson_scale_range=poisson_scale_range2, gray_noise_prob=gray_noise_prob2,
            jpeg_prob=jpeg_prob2, jpeg_range=jpeg_range2,
        ))  # fmt: skip
        self.final_sinc_prob = _prob("final_sinc_prob", final_sinc_prob)
        self.final_sinc_kernel_size = _kernel_size("final_sinc_kernel_size", final_sinc_kernel_size)
        self.final_resize_first_prob = _prob("final_resize_first_prob", final_resize_first_prob)
        self.resize_modes = _choices("resize_modes", resize_modes, RESIZE_MODES)

    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Degrade ``hr`` ``(B, 3, H, W)`` or ``(3, H, W)``, floats in [0, 1].

        Returns LR ``(B, 3, H // scale, W // scale)`` (or ``(3, …)``), same dtype, values on
        the 8-bit grid ``k / 255``. Every image draws its own parameters from ``generator``
        (torch's global RNG when None), in batch order: one seed gives bitwise-equal output.
        """
        if hr.ndim not in (3, 4) or hr.shape[-3] != 3 or not hr.is_floating_point():
            shape = f"{hr.dtype} {tuple(hr.shape)}"
            raise ValueError(f"hr must be a float (B, 3, H, W) or (3, H, W) tensor, got {shape}")
        h, w = hr.shape[-2:]
        if min(h, w) < self.scale:
            raise ValueError(f"hr is {h}x{w}, smaller than scale={self.scale}")
        batch = hr.unsqueeze(0) if hr.ndim == 3 else hr
        work = batch if batch.dtype in (torch.float32, torch.float64) else batch.float()
        lr = [self._degrade(img[None], generator) for img in work]
        out = torch.cat(lr) if lr else work.new_empty(0, 3, h // self.scale, w // self.scale)
        out = out.to(hr.dtype)
        return out[0] if hr.ndim == 3 else out

    def _degrade(self, img: Tensor, g: torch.Generator | None) -> Tensor:
        """One image ``(1, 3, H, W)`` through both stages and the final step."""
        h, w = img.shape[-2:]
        # First stage, the classical model of Sec. 3.1 (Eq. 1): blur -> resize -> noise -> JPEG.
        x = self._blur(img, self.stage1, g)
        x = self._resize(x, (h, w), self._resize_factor(self.stage1, g), g)
        x = self._noise(x, self.stage1, g)
        x = self._jpeg(x, self.stage1, g)
        # Second stage; as in the reference, its resize factor applies to the LR size.
        x = self._blur(x, self.stage2, g)
        lr_size = (h / self.scale, w / self.scale)
        x = self._resize(x, lr_size, self._resize_factor(self.stage2, g), g)
        x = self._noise(x, self.stage2, g)
        x = self._final(x, (h // self.scale, w // self.scale), g)
        # Clamp and round to 8-bit levels, as the reference does: LR images are 8-bit files.
        return quantize(x)

    def _blur(self, x: Tensor, stage: _Stage, g: torch.Generator | None) -> Tensor:
        """Blur with a random kernel (Sec. 3.1) or a sinc filter (Sec. 3.3), w.p. blur_prob."""
        if uniform(0, 1, g) >= stage.blur_prob:
            return x
        kernel = random_blur_kernel(
            stage.blur_kernel_size, stage.kernel_list, stage.kernel_prob, stage.blur_sigma,
            stage.betag_range, stage.betap_range, stage.sinc_prob, g,
        )  # fmt: skip
        return filter2d(x, kernel)

    def _resize_factor(self, stage: _Stage, g: torch.Generator | None) -> float:
        """Up (U[1, high]), down (U[low, 1]) or keep, chosen with ``resize_prob`` (Sec. 3.1)."""
        kind = choose_index(stage.resize_prob, g)  # 0: up, 1: down, 2: keep
        low, high = stage.resize_range
        if kind == 0:
            return uniform(1.0, high, g)
        return uniform(low, 1.0, g) if kind == 1 else 1.0

    def _resize(
        self, x: Tensor, base: tuple[float, float], factor: float, g: torch.Generator | None
    ) -> Tensor:
        """Resize to ``factor * base`` (at least 1 px) with a random mode (Sec. 3.1)."""
        size = (max(1, int(base[0] * factor)), max(1, int(base[1] * factor)))
        mode = self.resize_modes[_randint(len(self.resize_modes), g)]
        if size == tuple(x.shape[-2:]):
            return x  # every mode is the identity at the same size
        return resize(x, size, mode)

    def _noise(self, x: Tensor, stage: _Stage, g: torch.Generator | None) -> Tensor:
        """Gaussian or Poisson noise, colour or gray (Sec. 3.1), w.p. ``noise_prob``."""
        if uniform(0, 1, g) >= stage.noise_prob:
            return x
        if uniform(0, 1, g) < stage.gaussian_noise_prob:
            sigma = uniform(*stage.noise_range, g)
            return add_gaussian_noise(x, sigma, uniform(0, 1, g) < stage.gray_noise_prob, g)
        scale = uniform(*stage.poisson_scale_range, g)
        return add_poisson_noise(x, scale, uniform(0, 1, g) < stage.gray_noise_prob, g)

    def _jpeg(self, x: Tensor, stage: _Stage, g: torch.Generator | None) -> Tensor:
        """JPEG at a quality from ``jpeg_range`` (Sec. 3.1), w.p. ``jpeg_prob``."""
        if uniform(0, 1, g) >= stage.jpeg_prob:
            return x
        return jpeg_compress(x, round(uniform(*stage.jpeg_range, g)))

    def _final(self, x: Tensor, size: tuple[int, int], g: torch.Generator | None) -> Tensor:
        """[resize to LR + sinc, JPEG] or [JPEG, resize to LR + sinc] (Sec. 3.3): the order
        is drawn so that both mixtures of ringing and blocking artifacts are seen."""
        use_sinc = uniform(0, 1, g) < self.final_sinc_prob
        kernel = random_sinc_kernel(self.final_sinc_kernel_size, g) if use_sinc else None
        resize_first = uniform(0, 1, g) < self.final_resize_first_prob
        if not resize_first:
            x = self._jpeg(x, self.stage2, g)
        x = self._resize(x, (float(size[0]), float(size[1])), 1.0, g)
        if kernel is not None:
            x = filter2d(x, kernel)
        if resize_first:
            x = self._jpeg(x, self.stage2, g)
        return x
