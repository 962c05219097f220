"""LPIPS and FID through their libraries' code paths, with tiny injected networks whose values
can be worked out by hand; the weights registry's errors; batched equals one by one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.fid import FID
from zoomsr.metrics.perceptual import LPIPS, build_lpips
from zoomsr.metrics.suite import MetricSuite
from zoomsr.metrics.weights import METRIC_WEIGHTS

# lpips.ScalingLayer's constants (the package maps [-1, 1] inputs with them, v0.1)
SHIFT = np.array([-0.030, -0.088, -0.188])[:, None, None]
SCALE = np.array([0.458, 0.448, 0.450])[:, None, None]


class TinyTrunk(nn.Module):
    """Two feature maps: a 1x1 conv with ReLU, then 2x2 average pooling and another 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 1, bias=False)
        self.b = nn.Conv2d(4, 2, 1, bias=False)

    def forward(self, x):
        f1 = torch.relu(self.a(x))
        return [f1, self.b(nn.functional.avg_pool2d(f1, 2))]


def tiny_lpips() -> nn.Module:
    """The package's LPIPS module, its trunk swapped for TinyTrunk and linear heads to match."""
    import lpips

    model = build_lpips("alex", pretrained_trunk=False)
    model.net = TinyTrunk()
    model.chns, model.L = [4, 2], 2
    model.lins = nn.ModuleList([lpips.NetLinLayer(c, use_dropout=False) for c in model.chns])
    with torch.no_grad():
        model.lins[0].model[0].weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1, 1))
        model.lins[1].model[0].weight.copy_(torch.tensor([0.5, 1.5]).view(1, 2, 1, 1))
    return model.eval()


def lpips_by_hand(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Zhang et al. 2018, eq. 1 in NumPy: sum over layers of the spatial mean of
    w . (f(x)/|f(x)| - f(y)/|f(y)|)^2, on inputs mapped [0,1] -> [-1,1] -> (v - shift) / scale."""
    wa = model.net.a.weight.detach().double().numpy()[:, :, 0, 0]
    wb = model.net.b.weight.detach().double().numpy()[:, :, 0, 0]
    lin = [m.model[0].weight.detach().double().numpy().ravel() for m in model.lins]

    def feats(img):
        v = ((2 * img - 1) - SHIFT) / SCALE
        f1 = np.maximum(np.einsum("oc,chw->ohw", wa, v), 0)
        c, h, w = f1.shape
        pooled = f1.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        return [f1, np.einsum("oc,chw->ohw", wb, pooled)]

    total = 0.0
    for fx, fy, w in zip(feats(x), feats(y), lin):
        nx = fx / (np.sqrt((fx**2).sum(0, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy**2).sum(0, keepdims=True)) + 1e-10)
        total += np.einsum("c,chw->hw", w, (nx - ny) ** 2).mean()
    return total


def test_lpips_of_identical_images_is_zero_with_the_real_alexnet_trunk():
    torch.manual_seed(1)
    metric = LPIPS(model=build_lpips("alex", pretrained_trunk=False))
    img = torch.rand(2, 3, 64, 64)
    assert metric(img, img).tolist() == [0.0, 0.0]
    assert (metric(img, img.flip(-1)) > 0).all()


def test_lpips_with_a_tiny_trunk_equals_the_hand_computation():
    model = tiny_lpips()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 8, 8, generator=g)
    got = LPIPS(model=model)(x, y)
    want = [lpips_by_hand(model, x[i].double().numpy(), y[i].double().numpy()) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_lpips_trunk_is_read_from_torch_home(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ZoomSRError, match=r"alexnet-owt-7be5be79\.pth' not found at .*checkpoints"):
        LPIPS("alex")
    state = torchvision.models.alexnet().state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    metric = LPIPS("alex")
    assert torch.equal(metric.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").weight, state["features.10.weight"])


def tiny_extractor() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def test_fid_of_a_set_with_itself_is_zero():
    fid = FID(tiny_extractor())
    feats = fid.features(torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(4)))
    assert feats.shape == (40, 24)
    assert abs(FID.distance(feats, feats)) < 1e-6
    other = fid.features(torch.rand(40, 3, 16, 16) * 0.5)
    assert FID.distance(feats, other) > 1e-3


def frechet(mu1, s1, mu2, s2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, eq. 6)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_between_gaussian_features_matches_the_closed_form():
    # The extractor reads a (3, 1, 1) "image" as its 3-d feature vector.
    fid = FID(nn.Flatten())
    rng = np.random.default_rng(5)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.0])
    a = rng.normal(size=(3, 3))
    s1, s2 = np.diag([1.0, 2.0, 0.5]), a @ a.T + 0.1 * np.eye(3)
    n = 20000
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    fx = fid.features(torch.from_numpy(x).view(n, 3, 1, 1))
    fy = fid.features(torch.from_numpy(y).view(n, 3, 1, 1))
    got = FID.distance(fx, fy)
    # exactly the formula on the sample statistics ...
    sample = frechet(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert got == pytest.approx(sample, rel=1e-8)
    # ... and, with 20000 samples, the population's closed form to sampling error
    assert got == pytest.approx(frechet(mu1, s1, mu2, s2), abs=0.05)


def test_suite_batched_equals_one_image_at_a_time():
    models = {"lpips": LPIPS(model=tiny_lpips()), "fid": FID(tiny_extractor())}
    suite = MetricSuite(["psnr_y", "lpips", "fid"], models=models)
    assert suite.names == ["psnr_y", "lpips"] and suite.set_names == ["fid"]
    g = torch.Generator().manual_seed(6)
    sr, hr = torch.rand(4, 3, 24, 24, generator=g), torch.rand(4, 3, 24, 24, generator=g)
    batched = suite(sr, hr, shave=2)
    single = [suite(sr[i : i + 1], hr[i : i + 1], shave=2) for i in range(4)]
    for name in suite.names:
        np.testing.assert_allclose(batched[name], [s[name][0] for s in single], rtol=1e-6)
    feats = suite.features(sr)["fid"]
    one = torch.cat([suite.features(sr[i : i + 1])["fid"] for i in range(4)])
    torch.testing.assert_close(feats, one, rtol=1e-5, atol=1e-6)
    assert set(suite(sr, None)) == set()  # no reference: no full-reference metric


@pytest.mark.parametrize("metric", sorted(METRIC_WEIGHTS))
def test_missing_weights_name_the_file_and_the_place(metric, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(ZoomSRError) as err:  # fid_pyiqa: the file of metrics.fid=pyiqa
        if metric == "fid_pyiqa":
            MetricSuite(["psnr_y", "fid"], fid="pyiqa")
        else:
            MetricSuite(["psnr_y", metric])
    for f in METRIC_WEIGHTS[metric]:
        assert f"'{f.name}' not found at {tmp_path / 'th' / 'hub' / f.folder / f.name}" in str(
            err.value
        )


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(ZoomSRError, match=r"unknown metric\(s\) \['lpip'\].*'clipiqa'.*'fid'"):
        MetricSuite(["lpip"])
