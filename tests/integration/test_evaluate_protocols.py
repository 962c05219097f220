"""evaluate.py protocols zoom_full, zoom_center and paired; resume; FID per scale; compare;
missing weights at start-up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from zoomsr import reporting
from zoomsr.backbones.interp import Bicubic
from zoomsr.data.bicubic import BicubicDegradation
from zoomsr.data.datasets import modcrop
from zoomsr.data.io import load_image, quantize
from zoomsr.errors import ZoomSRError
from zoomsr.metrics import suite as suite_module
from zoomsr.metrics.fidelity import psnr
from zoomsr.metrics.weights import METRIC_WEIGHTS
from zoomsr.tasks import evaluate


def _cfg(compose_cfg, out, *overrides):
    return compose_cfg("evaluate", [f"out_dir={out}", "logger=csv", "backbone=bicubic", *overrides])


def test_zoom_full_x4_is_the_benchmark_and_x16_chains_two_steps(compose_cfg, bench, tmp_path):
    hr_dir = bench / "Set5" / "HR"
    zoom = evaluate.run(
        _cfg(
            compose_cfg,
            tmp_path / "z",
            "protocol=zoom_full",
            "scales=[4,16]",
            f"data.hr_dir={hr_dir}",
        )
    )
    bench_x4 = evaluate.run(
        _cfg(compose_cfg, tmp_path / "b", "scales=[4]", f"data.hr_dir={hr_dir}")
    )
    assert zoom["x4"] == bench_x4["x4"]  # means and every image, exactly
    assert zoom["x16"]["n_images"] == 5 and zoom["x16"]["psnr_y"] < zoom["x4"]["psnr_y"] - 3

    # x16 by hand: LR = round8(imresize(HR, 1/16)), then two x4 MATLAB-bicubic steps, 16 px shaved
    hr = modcrop(load_image(hr_dir / "bird.png"), 16)[None]
    sr = Bicubic(4).upscale(Bicubic(4).upscale(BicubicDegradation(16)(hr)))
    want = psnr(quantize(sr), hr, shave=16).item()
    assert zoom["x16"]["images"]["bird"]["psnr_y"] == pytest.approx(want, abs=1e-9)


class CountingBicubic:
    """Counts backbone calls while keeping Bicubic's result."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = Bicubic._upscale

        def upscale(net, lr, prompts, generator):
            self.calls += 1
            return real(net, lr, prompts, generator)

        monkeypatch.setattr(Bicubic, "_upscale", upscale)


@pytest.fixture
def tiny_fid(tmp_path, monkeypatch):
    """FID's real code path (features per image, torch-fidelity's distance per scale) with a
    tiny random extractor in place of Inception; the weight check sees a placeholder file."""
    from zoomsr.metrics.fid import FID

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    path = METRIC_WEIGHTS["fid"][0].path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    real = suite_module.build_metric
    monkeypatch.setattr(
        suite_module, "build_metric", lambda n, d="cpu", *a: FID(net) if n == "fid" else real(n, d)
    )


def _kill_after(out, n_rows):
    """Leave the first ``n_rows`` rows and half a line, as a run killed while writing."""
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:n_rows]) + '\n{"scale": 4, "ima')
    (out / "metrics.json").unlink()


@pytest.mark.parametrize(
    "protocol, extra, calls_per_image",
    [
        ("zoom_full", ["scales=[4,16]"], {4: 1, 16: 2}),
        (
            "zoom_center",
            ["scales=[1,4,16]", "zoom.process_size=64", "protocol.fid_patch=16"],
            None,
        ),
    ],
)
def test_killed_run_recomputes_only_missing_images_and_gives_the_same_metrics(
    compose_cfg, bench, tmp_path, monkeypatch, tiny_fid, protocol, extra, calls_per_image
):
    out = tmp_path / "run"
    overrides = [f"protocol={protocol}", f"data.hr_dir={bench / 'Set5' / 'HR'}", *extra]
    overrides.append("metrics.names=[psnr_y,ssim_y,fid]")
    first = evaluate.run(_cfg(compose_cfg, out, *overrides))
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 if protocol == "zoom_full" else len(rows) == 15

    _kill_after(out, 7)
    kept = {(r["scale"], r["image"]) for r in rows[:7]}
    counter = CountingBicubic(monkeypatch)
    second = evaluate.run(_cfg(compose_cfg, out, *overrides))
    assert second == first  # FID included: the kept images' features were on disk
    redone = [r for r in rows if (r["scale"], r["image"]) not in kept]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 7 + len(redone) and all(json.loads(x) for x in lines)  # cut line gone
    if calls_per_image:  # each missing (scale, image) runs its own chain
        assert counter.calls == sum(calls_per_image[r["scale"]] for r in redone)
    else:  # an image with a missing magnification reruns its 2-step chain once
        assert counter.calls == 2 * len({r["image"] for r in redone})
    for scale in ("x1", "x4") if protocol == "zoom_center" else ("x4", "x16"):
        assert np.isfinite(first[scale]["fid"])
    if protocol == "zoom_center":  # no HR patches at x16: a 512 px HR is 32 px at that zoom
        assert first["x16"]["fid"] is None


def test_zoom_center_reference_only_where_the_hr_holds_the_detail(compose_cfg, bench, tmp_path):
    result = evaluate.run(
        _cfg(
            compose_cfg, tmp_path, "protocol=zoom_center", "scales=[1,4,16]",
            "zoom.process_size=64", f"data.hr_dir={bench / 'Set5' / 'HR'}",
        )
    )  # fmt: skip
    # Set5 short sides 228..512 px -> centre squares of 192..512: at x4 the HR crop is 48..128 px
    # (a reference only where >= 64), at x16 12..32 px (never).
    x4 = result["x4"]["images"]
    assert x4["baby"]["psnr_y"] is not None and x4["woman"]["psnr_y"] is None
    assert all(v["psnr_y"] is None for v in result["x16"]["images"].values())
    assert result["x16"]["psnr_y"] is None and result["x16"]["n_images"] == 5
    assert result["x1"]["ssim_y"] == pytest.approx(1.0)  # step 0 is the input itself
    assert (tmp_path / "panels" / "x16" / "baby.png").is_file()


def test_paired_protocol_on_real_pairs(compose_cfg, bench, tmp_path):
    result = evaluate.run(
        _cfg(compose_cfg, tmp_path, "protocol=paired", "data=realsr", "scales=[4]")
    )
    assert result["x4"]["n_images"] == 20
    name = sorted(result["x4"]["images"])[0]
    hr = load_image(bench / "RealSR_subset" / "HR" / f"{name}.png")[None]
    lr = load_image(bench / "RealSR_subset" / "LR_x4" / f"{name}.png")[None]
    want = psnr(quantize(Bicubic(4).upscale(lr)), hr, shave=0).item()
    assert result["x4"]["images"][name]["psnr_y"] == pytest.approx(want, abs=1e-9)


def test_compare_puts_runs_in_one_table_and_plot(compose_cfg, bench, tmp_path, capsys):
    for backbone in ("bicubic", "nearest"):
        evaluate.run(
            _cfg(compose_cfg, tmp_path / backbone, f"backbone={backbone}", "scales=[2,4]",
                 f"data.hr_dir={bench / 'Set5' / 'HR'}")
        )  # fmt: skip
    code = reporting.main(
        [str(tmp_path / "bicubic"), str(tmp_path / "nearest"), "--out", str(tmp_path)]
    )
    assert code == 0
    table = (tmp_path / "compare.md").read_text().splitlines()
    assert table[0] == "| run | scale | psnr_y | ssim_y | images |"
    assert [line.split("|")[1:3] for line in table[2:]] == [
        [" bicubic ", " x2 "], [" bicubic ", " x4 "], [" nearest ", " x2 "], [" nearest ", " x4 "]
    ]  # fmt: skip
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_missing_metric_weights_fail_before_any_work(compose_cfg, bench, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cfg = _cfg(compose_cfg, tmp_path / "out", f"data.hr_dir={bench / 'Set5' / 'HR'}",
               "metrics.names=[psnr_y,lpips,fid]")  # fmt: skip
    with pytest.raises(ZoomSRError) as err:
        evaluate.run(cfg)
    message = str(err.value)
    assert "alexnet-owt-7be5be79.pth' not found at" in message
    assert "weights-inception-2015-12-05-6726825d.pth' not found at" in message
    assert not (tmp_path / "out").exists()
