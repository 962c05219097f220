"""MATLAB-exact bicubic ``imresize`` in torch.

Every SR paper makes its LR images, and its "Bicubic" baseline, with MATLAB's
``imresize(img, scale, 'bicubic')``. PIL, OpenCV and ``F.interpolate`` all differ from it by
more than a grey level (no antialiasing, other border handling, other kernel), which moves
PSNR by tenths of a dB. This module reproduces MATLAB's algorithm (``imresize.m``,
subfunctions ``contributions`` and ``cubic``):

- Keys cubic kernel with a = -0.5, support [-2, 2];
- when shrinking (scale < 1) with antialiasing, the kernel is stretched by 1/scale and scaled
  by ``scale``: ``h(x) = scale * cubic(scale * x)``, support 4/scale;
- output pixel ``x`` (1-based) maps to input coordinate ``u = x / scale + 0.5 * (1 - 1/scale)``
  and reads the ``ceil(support) + 2`` input pixels from ``floor(u - support/2)`` on; the
  weights are normalised to sum to 1 per output pixel;
- out-of-range indices are mirrored with edge repetition (``aux = [1:n, n:-1:1]``, MATLAB's
  symmetric padding);
- output size ``ceil(scale * size)``; the dimension with the smaller scale is resized first.

MATLAB returns its input's class after *each* 1-D pass: a double image is never rounded, but
a uint8 image (what ``imread`` gives, hence what made every published LR file) is clipped to
[0, 255] and rounded half away from zero after the first pass too. The two differ a lot: on
Set5/Set14, resizing the float image and rounding once reproduces only 85-95% of the pixels
of the official ``LR_bicubic`` files, and where cubic overshoot clips (ppt3, comic) by up to
12 grey levels; ``quantize_passes=True`` follows the uint8 path and reproduces every pixel
of every x2/x3/x4 file exactly (integer factors accumulate the taps in order, as MATLAB's
loop does, so even exact .5 ties come out the same).
"""

from __future__ import annotations

import math

import torch

# Above this many matrix entries (32 MB in float64) a 1-D pass accumulates tap by tap.
_DENSE_MAX_ENTRIES = 1 << 22
# Longest weight period looked for (x8 enlarging has period 8).
_MAX_PERIOD = 8


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel, a = -0.5 (MATLAB ``imresize>cubic``)."""
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def _contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap weights and first tap of every output pixel along one dimension.

    Mirrors MATLAB ``imresize>contributions`` in float64 on the CPU.

    Returns:
        ``weights`` float64 ``(out_length, P)`` whose rows sum to 1, with
        ``P = ceil(kernel_width) + 2``, and ``first`` int64 ``(out_length,)``: output ``j``
        reads inputs ``first[j] + p`` (0-based, may fall outside ``[0, in_length)``).
    """
    kernel_width = 4.0
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output centre
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    dist = u[:, None] - (left[:, None] + torch.arange(taps, dtype=torch.float64))
    weights = scale * _cubic(scale * dist) if shrink_aa else _cubic(dist)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights, left.long() - 1


def _mirror(index: torch.Tensor, length: int) -> torch.Tensor:
    """Symmetric padding of 0-based indices: MATLAB's ``aux = [1:n, n:-1:1]``, periodically."""
    wrapped = torch.remainder(index, 2 * length)
    return torch.where(wrapped < length, wrapped, 2 * length - 1 - wrapped)


def _find_period(weights: torch.Tensor, first: torch.Tensor) -> tuple[int, int] | None:
    """``(q, step)`` if output ``j + q`` uses the weights of ``j`` on taps ``step`` further.

    Integer factors are periodic: shrinking by s gives ``(1, s)``, enlarging ``(s, 1)``.
    """
    out_length, taps = weights.shape
    for q in range(1, min(_MAX_PERIOD, out_length - 1) + 1):
        if out_length % q:
            continue
        step = int(first[q] - first[0])
        expected_first = first[:q] + step * torch.arange(out_length // q)[:, None]
        # Not exact equality: 1/3 is inexact, so x3 weights repeat only to ~1e-16.
        same_weights = (weights.view(-1, q, taps) - weights[:q]).abs().max() <= 1e-12
        if same_weights and torch.equal(first.view(-1, q), expected_first):
            return q, step
    return None


def _pad_symmetric(img: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """Mirror-pad ``lo`` / ``hi`` pixels along ``dim``, the edge pixel repeated (MATLAB's
    'symmetric'; torch's 'reflect' skips the edge)."""
    length = img.shape[dim]
    if lo <= length and hi <= length:  # one reflection: flipped slices, a plain concatenation
        parts = [img.narrow(dim, 0, lo).flip(dim), img, img.narrow(dim, length - hi, hi).flip(dim)]
        return torch.cat(parts, dim=dim)
    index = _mirror(torch.arange(-lo, length + hi), length)
    return img.index_select(dim, index.to(img.device))


def _resize_periodic(
    img: torch.Tensor, dim: int, weights: torch.Tensor, first: torch.Tensor, q: int, step: int
) -> torch.Tensor:
    """Resize along ``dim`` when weights repeat with period ``q``: strided slices, no gather.

    After mirror-padding, output ``k * q + r`` is ``sum_p w[r, p] * padded[start_r + p +
    k * step]``: a few in-place multiply-adds on strided views per phase ``r``.
    """
    in_length = img.shape[dim]
    count, taps = weights.shape[0] // q, weights.shape[1]
    lo = max(0, -int(first.min()))
    hi = max(0, int(first.max()) + taps - in_length)
    padded = _pad_symmetric(img, dim, lo, hi)
    phases = []
    for r in range(q):
        acc = None
        for p in range(taps):
            w = float(weights[r, p])
            if w == 0.0:
                continue
            start = int(first[r]) + lo + p
            window = [slice(None)] * img.ndim
            window[dim] = slice(start, start + step * (count - 1) + 1, step)
            src = padded[tuple(window)]
            acc = src * w if acc is None else acc.add_(src, alpha=w)
        phases.append(acc)
    if q == 1:
        return phases[0]
    return torch.stack(phases, dim=dim).flatten(dim - 1, dim)  # output index k * q + r


def _resize_along(
    img: torch.Tensor, dim: int, weights: torch.Tensor, first: torch.Tensor
) -> torch.Tensor:
    """Resize ``img`` along ``dim`` (-2: rows, -1: columns) with per-output-pixel taps.

    Integer factors take the periodic path. Otherwise, short lines use a dense ``(out, in)``
    matrix and one matmul, which BLAS runs faster than a gather at image sizes; long lines
    accumulate tap by tap so memory stays at one output image.
    """
    period = _find_period(weights, first)
    if period is not None:
        return _resize_periodic(img, dim, weights, first, *period)
    out_length, taps = weights.shape
    in_length = img.shape[dim]
    indices = _mirror(first[:, None] + torch.arange(taps), in_length)
    weights, indices = weights.to(img.device), indices.to(img.device)
    if out_length * in_length <= _DENSE_MAX_ENTRIES:
        # Mirrored borders can send two taps to one pixel: scatter_add sums them.
        matrix = torch.zeros(out_length, in_length, dtype=img.dtype, device=img.device)
        matrix.scatter_add_(1, indices, weights)
        return matrix @ img if dim == -2 else img @ matrix.T
    shape = list(img.shape)
    shape[dim] = out_length
    out = torch.zeros(shape, dtype=img.dtype, device=img.device)
    column = weights if dim == -1 else weights[:, None, :]  # broadcast over the other axis
    for p in range(taps):
        out.addcmul_(img.index_select(dim, indices[:, p]), column[..., p])
    return out


def _output_length(in_length: int, scale: float) -> int:
    # MATLAB: ceil(scale * size). Round first so that 255 * (1/3) = 85.00000000000001 gives 85.
    return math.ceil(round(in_length * scale, 9))


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """Saturate to [0, 255] and round half away from zero, like MATLAB's cast to uint8.

    ``torch.round`` rounds half to even: x2 weights are dyadic, exact .5 ties are common, and
    half-to-even leaves 0.2-0.3% of the x2 LR pixels one level away from MATLAB's files.
    """
    return x.clamp_(0.0, 255.0).add_(0.5).floor_()  # in place: x is a fresh pass output


def imresize(
    img: torch.Tensor,
    scale: float | None = None,
    out_size: tuple[int, int] | None = None,
    antialiasing: bool = True,
    quantize_passes: bool = False,
) -> torch.Tensor:
    """Bicubic resize exactly as MATLAB's ``imresize(img, scale, 'bicubic')``.

    Args:
        img: float image ``(C, H, W)`` or batch ``(B, C, H, W)`` in ``[0, 1]``, any device.
        scale: resize factor for both dimensions, e.g. ``1/4`` to shrink by 4 or ``2`` to
            enlarge; the output is ``(ceil(H * scale), ceil(W * scale))``.
        out_size: ``(H_out, W_out)`` instead of ``scale``; each dimension then uses its own
            factor ``out / in``, as MATLAB does. Give exactly one of ``scale`` and ``out_size``.
        antialiasing: widen the kernel by ``1/scale`` when shrinking (MATLAB's default).
        quantize_passes: behave as MATLAB does on a uint8 image: snap the input to the 8-bit
            grid, then clip and round (half away from zero) after each of the two 1-D passes.
            Use it to reproduce MATLAB-made LR images and bicubic baselines. Default ``False``:
            MATLAB's behaviour on a double image, nothing rounded or clipped.

    Returns:
        The resized image, same leading shape, dtype and device as ``img``. With the default,
        values are neither rounded nor clipped (cubic overshoot can leave ``[0, 1]``): quantize
        afterwards. With ``quantize_passes`` they are on the 8-bit grid ``k / 255``.

    The arithmetic runs in float64 (float32 on MPS, which has no float64): with rounded
    passes, float32 moves 0.2% of the Set5/Set14 pixels to the neighbouring grey level.
    """
    if img.ndim not in (3, 4):
        raise ValueError(
            f"imresize expects (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}"
        )
    if not img.is_floating_point():
        raise TypeError(f"imresize expects a float image in [0, 1], got dtype {img.dtype}")
    if (scale is None) == (out_size is None):
        raise ValueError("imresize needs exactly one of `scale` and `out_size`")
    in_h, in_w = img.shape[-2:]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_h, out_w = _output_length(in_h, scale), _output_length(in_w, scale)
    else:
        out_h, out_w = (int(v) for v in out_size)
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"out_size must be positive, got {out_size}")
        scales = (out_h / in_h, out_w / in_w)

    work_dtype = torch.float32 if img.device.type == "mps" else torch.float64
    out = img.to(work_dtype)
    if quantize_passes:  # work on integer levels so that exact .5 ties stay exact
        out = (out * 255.0).round_()
    # MATLAB resizes the dimension with the smaller scale first (rows on ties). The order
    # matters once passes are rounded: the other order matches MATLAB's files on only ~82%.
    order = (0, 1) if scales[0] <= scales[1] else (1, 0)
    lengths = ((in_h, out_h), (in_w, out_w))
    for d in order:
        weights, first = _contributions(*lengths[d], scales[d], antialiasing)
        out = _resize_along(out, d - 2, weights.to(work_dtype), first)
        if quantize_passes:
            out = _round_uint8(out)
    if quantize_passes:
        out = out / 255.0
    return out.to(img.dtype)
