"""MATLAB-exact imresize: known answers, and the official MATLAB-made LR files of Set5/Set14."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image, to_uint8

# The module itself (its private helpers and switches), robust to data/__init__ re-exports.
imresize_module = importlib.import_module("zoomsr.data.imresize")
SCALES = (2, 3, 4)


# Many small tensor ops: one torch thread (see tests/conftest.py::single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


def _modcrop(img: torch.Tensor, s: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    return img[..., : h - h % s, : w - w % s]


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2.0, 3.0])
@pytest.mark.parametrize("quantize_passes", [False, True])
def test_constant_image_stays_constant(scale, quantize_passes):
    img = torch.full((3, 12, 17), 100 / 255)
    out = imresize(img, scale, quantize_passes=quantize_passes)
    torch.testing.assert_close(out, torch.full_like(out, 100 / 255), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [((10, 11), 2.0, (20, 22)), ((10, 11), 1 / 3, (4, 4)), ((255, 256), 1 / 3, (85, 86))],
)
def test_output_size_is_ceil(size, scale, expected):
    # 255 * (1/3) is 85.00000000000001 in floating point: MATLAB's answer is still 85.
    assert imresize(torch.rand(1, *size), scale).shape == (1, *expected)


def test_out_size_sets_each_dimension():
    img = torch.rand(2, 3, 20, 30)
    assert imresize(img, out_size=(7, 45)).shape == (2, 3, 7, 45)


def test_upscaling_reproduces_a_linear_ramp_away_from_borders():
    # Keys' kernel reproduces linear functions: output pixel x (1-based) samples the input at
    # u = x / s + (1 - 1 / s) / 2, so a ramp with value i at pixel i must give exactly u.
    s = 3.0
    ramp = torch.arange(1, 21, dtype=torch.float64).repeat(1, 20, 1)  # (1, 20, 20), value = col
    out = imresize(ramp, s)
    u = torch.arange(1, 61, dtype=torch.float64) / s + 0.5 * (1 - 1 / s)
    torch.testing.assert_close(out[0, 10, 6:-6], u[6:-6], rtol=0, atol=1e-12)


def test_scale_one_is_identity():
    img = torch.rand(3, 9, 13, dtype=torch.float64)
    torch.testing.assert_close(imresize(img, 1.0), img, rtol=0, atol=1e-15)


def test_batched_equals_per_image_and_keeps_dtype():
    batch = torch.rand(3, 3, 24, 20)
    out = imresize(batch, 1 / 3)
    assert out.dtype == torch.float32
    for b in range(3):
        torch.testing.assert_close(out[b], imresize(batch[b], 1 / 3), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2.0, 3.0, 8.0])
def test_all_three_strategies_agree(monkeypatch, scale):
    # Integer factors take the strided periodic path; disabling it leaves the dense matmul,
    # and a zero matrix budget leaves the tap-by-tap gather used for very long lines.
    img = torch.rand(2, 3, 21, 34, dtype=torch.float64)
    periodic = imresize(img, scale)
    monkeypatch.setattr(imresize_module, "_MAX_PERIOD", 0)
    dense = imresize(img, scale)
    monkeypatch.setattr(imresize_module, "_DENSE_MAX_ENTRIES", 0)
    gathered = imresize(img, scale)
    torch.testing.assert_close(periodic, dense, rtol=0, atol=1e-13)
    torch.testing.assert_close(gathered, dense, rtol=0, atol=1e-13)


@pytest.mark.parametrize("out_width", [51, 50])
def test_non_integer_factors_reproduce_a_ramp(out_width):
    # 51/34 = 3/2 has period 3 (periodic path); 50/34 = 25/17 has none (dense path). Keys'
    # kernel reproduces linear functions at any sampling phase.
    ramp = torch.arange(1, 35, dtype=torch.float64).repeat(1, 8, 1)  # (1, 8, 34)
    scale = out_width / 34
    weights, first = imresize_module._contributions(34, out_width, scale, True)
    assert (imresize_module._find_period(weights, first) is None) == (out_width == 50)
    out = imresize(ramp, out_size=(8, out_width))
    u = torch.arange(1, out_width + 1, dtype=torch.float64) / scale + 0.5 * (1 - 1 / scale)
    torch.testing.assert_close(out[0, 4, 4:-4], u[4:-4], rtol=0, atol=1e-12)


def test_quantize_passes_rounds_half_away_from_zero():
    # x2 upscaling weights are multiples of 1/128, so integer levels give exact .5 ties.
    # A single pass (rows have scale 1) must round them up, like MATLAB's cast to uint8,
    # not to even like torch.round.
    levels = torch.randint(0, 256, (1, 32, 32), generator=torch.Generator().manual_seed(0))
    exact = imresize(levels.double(), out_size=(32, 64))
    ties = (exact - exact.floor()) == 0.5
    assert ties.sum() > 10
    got = imresize(levels.double() / 255, out_size=(32, 64), quantize_passes=True) * 255
    expected = torch.floor(exact.clamp(0, 255) + 0.5)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_bad_arguments_raise():
    img = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 2.0, out_size=(16, 16))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        imresize(torch.rand(8, 8), 2.0)
    with pytest.raises(TypeError, match="float"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 2.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    img = torch.rand(2, 3, 40, 52)
    for s in (1 / 4, 3.0):
        cpu = imresize(img, s, quantize_passes=True)
        gpu = imresize(img.cuda(), s, quantize_passes=True)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_matches_official_matlab_lr_files(bench, name):
    """imresize(HR, 1/s) with MATLAB's uint8 semantics reproduces every official LR file."""
    for s in SCALES:
        equal = total = 0
        for hr_path in sorted((bench / name / "HR").glob("*.png")):
            hr = _modcrop(load_image(hr_path, keep_gray=True), s)
            lr_path = bench / name / "LR_bicubic" / f"X{s}" / f"{hr_path.stem}x{s}.png"
            official = to_uint8(load_image(lr_path, keep_gray=True)).int()
            ours = to_uint8(imresize(hr, 1 / s, quantize_passes=True)).int()
            # bridge.png is gray and so are its x2-x4 LR files: channels must match too.
            assert ours.shape == official.shape, (lr_path.name, ours.shape, official.shape)
            assert ours.shape[-2:] == (math.ceil(hr.shape[-2] / s), math.ceil(hr.shape[-1] / s))
            diff = (ours - official).abs()
            assert diff.max() <= 1, (lr_path.name, int(diff.max()))
            equal += int((diff == 0).sum())
            total += diff.numel()
        # Measured: 100% at every scale (bit-exact). The margin allows for other CPUs' FMA use.
        assert equal / total >= 0.9999, (name, s, equal / total)
