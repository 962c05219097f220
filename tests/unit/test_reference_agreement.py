"""The torch metrics and imresize agree with the independent NumPy reference in benchmarks/."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import load_benchmark
from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image
from zoomsr.metrics import psnr, ssim

IMAGES = ("bird", "butterfly", "head")  # the three smallest Set5 images
SCALE = 3


# Many small tensor ops: one torch thread (see tests/conftest.py::single_thread).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reference():
    return load_benchmark("reference_numpy")


def _as_array(img: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor -> ``(H, W, C)`` (or ``(H, W)`` for gray) float64 array."""
    arr = img[0].permute(1, 2, 0).double().numpy()
    return arr[..., 0] if arr.shape[2] == 1 else arr


@pytest.mark.parametrize("stem", IMAGES)
def test_torch_matches_numpy_reference(bench, reference, stem):
    path = bench / "Set5" / "HR" / f"{stem}.png"
    hr_np = reference.modcrop(reference.load_png(path), SCALE)
    lr_np, sr_np = reference.bicubic_baseline(hr_np, SCALE)

    hr = load_image(path, keep_gray=True)[None, :, : hr_np.shape[0], : hr_np.shape[1]]
    lr = imresize(hr, 1 / SCALE, quantize_passes=True)
    sr = imresize(lr, SCALE, quantize_passes=True)

    for ours, theirs in ((lr, lr_np), (sr, sr_np)):
        assert _as_array(ours).shape == theirs.shape
        diff = np.abs(np.rint(_as_array(ours) * 255) - np.rint(theirs * 255))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.9999, (diff.max(), (diff == 0).mean())

    # The reference scores its own arrays, so this also checks the two resizers end to end.
    assert abs(psnr(sr, hr, shave=SCALE).item() - reference.psnr(sr_np, hr_np, SCALE)) <= 1e-4
    assert abs(ssim(sr, hr, shave=SCALE).item() - reference.ssim(sr_np, hr_np, SCALE)) <= 1e-6
    # Same inputs for both: the metric implementations alone.
    sr_t = torch.from_numpy(sr_np).permute(2, 0, 1)[None]
    hr_t = torch.from_numpy(hr_np).permute(2, 0, 1)[None]
    assert abs(psnr(sr_t, hr_t, shave=SCALE).item() - reference.psnr(sr_np, hr_np, SCALE)) <= 1e-9
    assert abs(ssim(sr_t, hr_t, shave=SCALE).item() - reference.ssim(sr_np, hr_np, SCALE)) <= 1e-9
