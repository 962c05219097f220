"""Metric suites against the libraries themselves: PSNR/SSIM under metrics=osediff equal pyiqa's
own ``psnr``/``ssim``; under metrics=basicsr they equal BasicSR's conventions (re-stated below
from its documentation); the learned pyiqa metrics run through the real classes with random
weights; pyiqa's clean-fid features are reproduced image by image."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from tests.conftest import bench_dir
from zoomsr.backbones.interp import Bicubic
from zoomsr.data.io import load_image, quantize
from zoomsr.errors import ZoomSRError
from zoomsr.metrics import conventions
from zoomsr.metrics.suite import MetricSuite, rewrite_bare_metric_list


@pytest.fixture(scope="module")
def realsr_pairs():
    """Two RealSR x4 pairs: the bicubic output (8-bit) and its HR, centre 256 px,
    (2, 3, 256, 256)."""
    root = bench_dir() / "RealSR_subset"
    names = sorted(p.name for p in (root / "HR").glob("*.png"))[:2]
    hr = torch.stack([load_image(root / "HR" / n) for n in names])[..., 128:384, 128:384]
    lr = torch.stack([load_image(root / "LR_x4" / n) for n in names])[..., 32:96, 32:96]
    return quantize(Bicubic(4).upscale(lr)).float(), hr.float()


@pytest.mark.parametrize("color_space", ["ycbcr", "yiq", "rgb"])
def test_pyiqa_flavour_equals_pyiqa_psnr_and_ssim(realsr_pairs, color_space):
    import pyiqa

    sr, hr = realsr_pairs
    y = color_space != "rgb"
    opts = {"test_y_channel": y, "crop_border": 0, "device": "cpu"}
    if y:
        opts["color_space"] = color_space
    want_psnr = pyiqa.create_metric("psnr", **opts)(sr, hr).double()
    want_ssim = pyiqa.create_metric("ssim" if y else "ssimc", **opts)(sr, hr).double()
    got_psnr = conventions.psnr(sr, hr, 0, "pyiqa", color_space)
    got_ssim = conventions.ssim(sr, hr, 0, "pyiqa", color_space)
    np.testing.assert_allclose(got_psnr.numpy(), want_psnr.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got_ssim.numpy(), want_ssim.numpy(), rtol=0, atol=1e-5)


def test_osediff_suite_scores_as_pyiqa_and_differs_from_matlab(realsr_pairs):
    import pyiqa

    sr, hr = realsr_pairs
    suite = MetricSuite(["psnr", "ssim"], name="osediff", fidelity="pyiqa", color_space="ycbcr",
                        crop_border=0)  # fmt: skip
    got = suite(sr, hr, shave=4)  # crop_border=0 replaces the protocol's shave
    opts = {"test_y_channel": True, "color_space": "ycbcr", "device": "cpu"}
    want = pyiqa.create_metric("ssim", **opts)(sr, hr).double().numpy()
    np.testing.assert_allclose(got["ssim"], want, atol=1e-5)
    want = pyiqa.create_metric("psnr", **opts)(sr, hr).double().numpy()
    np.testing.assert_allclose(got["psnr"], want, atol=1e-4)
    # pyiqa rounds Y to integers and clamps the cs map before SSIM: a real difference
    matlab = conventions.ssim(sr, hr, 0, "matlab", "ycbcr").numpy()
    assert np.abs(matlab - np.asarray(got["ssim"])).max() > 1e-4


# --- BasicSR, re-stated from its documentation (basicsr.metrics.calculate_psnr/ssim) ---------
def _basicsr_y(img: np.ndarray) -> np.ndarray:
    """to_y_channel: [0, 255] HWC RGB -> float32 [0, 1] -> bgr2ycbcr(y_only) -> * 255."""
    x = img.astype(np.float32) / 255.0
    y = np.dot(x, np.array([65.481, 128.553, 24.966], dtype=np.float32)) + 16.0
    return (y / 255.0)[..., None] * 255.0


def _basicsr_psnr(a: np.ndarray, b: np.ndarray, border: int, y: bool) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    if y:
        a, b = _basicsr_y(a), _basicsr_y(b)
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 * 255.0 / mse)


def _basicsr_ssim(a: np.ndarray, b: np.ndarray, border: int, y: bool) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    if y:
        a, b = _basicsr_y(a), _basicsr_y(b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    k = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(k / k.sum(), k / k.sum())  # cv2.getGaussianKernel(11, 1.5) outer product

    def filt(x):  # cv2.filter2D(x, -1, window)[5:-5, 5:-5]: the 'valid' part
        return scipy.ndimage.correlate(x, window, mode="reflect")[5:-5, 5:-5]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssims = []
    for i in range(a.shape[2]):
        x, z = a[..., i], b[..., i]
        mx, mz = filt(x), filt(z)
        vx, vz, cov = filt(x * x) - mx**2, filt(z * z) - mz**2, filt(x * z) - mx * mz
        m = ((2 * mx * mz + c1) * (2 * cov + c2)) / ((mx**2 + mz**2 + c1) * (vx + vz + c2))
        ssims.append(m.mean())
    return float(np.mean(ssims))


@pytest.mark.parametrize("y", [True, False])
def test_basicsr_suite_equals_basicsr_conventions(realsr_pairs, y):
    sr, hr = realsr_pairs
    suite = MetricSuite(["psnr", "ssim"], name="basicsr", fidelity="basicsr",
                        color_space="ycbcr" if y else "rgb")  # fmt: skip
    got = suite(sr, hr, shave=4)  # crop_border=None: the protocol's shave
    for i in range(len(sr)):
        a = (sr[i].permute(1, 2, 0).double().numpy() * 255).round()
        b = (hr[i].permute(1, 2, 0).double().numpy() * 255).round()
        assert got["psnr"][i] == pytest.approx(_basicsr_psnr(a, b, 4, y), abs=1e-6)
        assert got["ssim"][i] == pytest.approx(_basicsr_ssim(a, b, 4, y), abs=1e-7)


def test_only_keeps_a_subset_and_names_what_is_not_in_the_suite():
    suite = MetricSuite(["psnr", "ssim", "lpips"], only=["ssim"], name="osediff")
    assert suite.names == ["ssim"]
    with pytest.raises(ZoomSRError, match=r"metrics.only=\['psnr_y'\]: \['psnr_y'\] not in the "):
        MetricSuite(["psnr", "ssim"], only=["psnr_y"], name="osediff")
    with pytest.raises(ZoomSRError, match=r"metrics.color_space=yiq is pyiqa's"):
        MetricSuite(["psnr"], color_space="yiq")


def test_bare_metric_list_is_read_as_metrics_names(capsys):
    argv = ["evaluate.py", "metrics=[psnr_y,lpips]", "data=set5"]
    assert rewrite_bare_metric_list(argv) == ["evaluate.py", "metrics.names=[psnr_y,lpips]",
                                              "data=set5"]  # fmt: skip
    assert "metrics= now picks a suite" in capsys.readouterr().err


# --- learned metrics: the real pyiqa classes, random weights, our weights_only loaders -------
def test_dists_random_weights_batched_and_the_loader(tmp_path, monkeypatch):
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa
    from zoomsr.metrics.weights import METRIC_WEIGHTS

    torch.manual_seed(0)
    model = build_pyiqa("dists", pretrained=False)
    assert type(model.net).__name__ == "DISTS"
    metric = PyiqaMetric("dists", model=model)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    batched = metric(x, y)
    single = torch.cat([metric(x[i : i + 1], y[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(batched.numpy(), single.numpy(), rtol=1e-5)
    assert metric(x, x).abs().max() < 1e-6 and (batched > 0).all()  # DISTS(x, x) = 0

    # the published files, as placed: VGG16 trunk (torchvision layout) + alpha/beta
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    vgg, heads = METRIC_WEIGHTS["dists"]
    for f in (vgg, heads):
        f.path.parent.mkdir(parents=True, exist_ok=True)
    # torchvision's features.i are DISTS's stageK.i: write the trunk in torchvision's layout
    trunk = {"features." + k.split(".", 1)[1]: torch.randn_like(v)
             for k, v in model.net.named_parameters() if k.startswith("stage")}  # fmt: skip
    torch.save(trunk, vgg.path)
    torch.save({"alpha": model.net.alpha * 0 + 0.5, "beta": model.net.beta * 0 + 0.25}, heads.path)
    loaded = build_pyiqa("dists").net
    assert torch.equal(loaded.stage1[0].weight, trunk["features.0.weight"])
    assert torch.equal(loaded.state_dict()["stage5.28.weight"], trunk["features.28.weight"])
    assert float(loaded.alpha.flatten()[0]) == 0.5 and float(loaded.beta.flatten()[0]) == 0.25


@pytest.mark.parametrize("name", ["topiq_fr", "topiq_nr"])
def test_topiq_random_weights_batched_and_the_loader(name, tmp_path, monkeypatch):
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa
    from zoomsr.metrics.weights import METRIC_WEIGHTS

    torch.manual_seed(0)
    model = build_pyiqa(name, pretrained=False)
    assert type(model.net).__name__ == "CFANet"
    metric = PyiqaMetric(name, model=model)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 96, 96, generator=g), torch.rand(2, 3, 96, 96, generator=g)
    ref = (y,) if name == "topiq_fr" else ()
    batched = metric(x, *ref)
    single = torch.cat([metric(x[i : i + 1], *(r[i : i + 1] for r in ref)) for i in range(2)])
    assert batched.shape == (2,)
    np.testing.assert_allclose(batched.numpy(), single.numpy(), rtol=1e-4)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = METRIC_WEIGHTS[name][0].path
    path.parent.mkdir(parents=True)
    torch.save({"params": model.net.state_dict()}, path)  # pyiqa's checkpoints: under "params"
    loaded = build_pyiqa(name).net
    key = next(k for k in loaded.state_dict() if k.endswith("weight"))
    assert torch.equal(loaded.state_dict()[key], model.net.state_dict()[key])


@pytest.mark.slow  # a ViT-B/8 on 224 px crops: ~30 s on a shared 2-core CPU
def test_maniqa_pipal_is_the_pipal_variant_through_the_real_class():
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa

    torch.manual_seed(0)
    model = build_pyiqa("maniqa_pipal", pretrained=False)
    assert model.metric_name == "maniqa-pipal" and type(model.net).__name__ == "MANIQA"
    model.net.test_sample = 2  # pyiqa averages 20 uniform 224 crops; 2 keep the test short
    value = PyiqaMetric("maniqa_pipal", model=model)(torch.rand(1, 3, 224, 224))
    assert value.shape == (1,) and torch.isfinite(value).all()


def test_clean_fid_features_equal_pyiqa_folder_features(tmp_path):
    """zoomsr's per-image clean-fid features (batched tensors) = pyiqa's folder pipeline (PNG
    files through its ResizeDataset) on the same random Inception."""
    from PIL import Image
    from pyiqa.archs.fid_arch import get_folder_features

    from zoomsr.data.io import save_image
    from zoomsr.metrics.fid import FID, CleanInceptionFeatures

    torch.manual_seed(0)
    extractor = CleanInceptionFeatures(pretrained=False)
    g = torch.Generator().manual_seed(3)
    images = quantize(torch.rand(2, 3, 80, 112, generator=g))
    for i, img in enumerate(images):
        save_image(img, tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").size == (112, 80)
    want = get_folder_features(str(tmp_path), extractor.net, num_workers=0, batch_size=2,
                               device=torch.device("cpu"), verbose=False)  # fmt: skip
    fid = FID(extractor, impl="pyiqa")
    got = fid.features(images)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-5)
    assert fid.set_distance(got, got) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow  # CLIP RN50 with its text transformer, full size
def test_clipiqa_random_rn50_through_the_real_class():
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa

    torch.manual_seed(0)
    model = build_pyiqa("clipiqa", pretrained=False)
    assert type(model.net).__name__ == "CLIPIQA"
    assert type(model.net.clip_model[0].visual).__name__ == "ModifiedResNet"  # RN50's trunk
    metric = PyiqaMetric("clipiqa", model=model)
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    single = torch.cat([metric(x[i : i + 1]) for i in range(2)])
    np.testing.assert_allclose(metric(x).numpy(), single.numpy(), rtol=1e-5)
