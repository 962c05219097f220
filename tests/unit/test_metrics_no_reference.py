"""The no-reference metrics through pyiqa: NIQE offline from the shared parameter file, MUSIQ's
real network (random weights) batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, bench_dir
from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image
from zoomsr.errors import ZoomSRError
from zoomsr.metrics import weights
from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa
from zoomsr.metrics.suite import MetricSuite

NIQE_NPZ = ROOT.parent / "shared" / "weights" / "niqe_pris_params.npz"


def test_niqe_runs_offline_from_the_placed_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ZoomSRError, match=r"niqe_modelparameters\.mat' not found"):
        MetricSuite(["niqe"])
    assert weights.main(["--niqe-npz", str(NIQE_NPZ)]) == 0
    assert (tmp_path / "hub" / "pyiqa" / "niqe_modelparameters.mat").is_file()

    suite = MetricSuite(["niqe"])
    baby = load_image(bench_dir() / "Set5" / "HR" / "baby.png")[None]  # 512 x 512
    assert baby.shape[-1] >= 192
    sharp = suite(baby, None)["niqe"][0]
    blurred = imresize(imresize(baby, scale=0.25), scale=4).clamp(0, 1)
    # Natural photographs score about 2-6; a x4 bicubic blur moves away from the pristine model.
    assert 1.0 < sharp < 8.0
    assert suite(blurred, None)["niqe"][0] > sharp + 1.0


def test_musiq_network_scores_a_batch_like_single_images():
    torch.manual_seed(0)
    metric = PyiqaMetric("musiq", model=build_pyiqa("musiq", pretrained=False))
    images = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    batched = metric(images)
    single = [metric(images[i : i + 1]).item() for i in range(3)]
    assert batched.shape == (3,)
    np.testing.assert_allclose(batched.numpy(), single, rtol=1e-5)
