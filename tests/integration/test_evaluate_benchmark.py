"""evaluate.py, benchmark protocol: the published bicubic tables, files written, resume."""

from __future__ import annotations

import json

import pytest

from zoomsr.backbones.interp import Bicubic
from zoomsr.metrics.fidelity import PUBLISHED_BICUBIC
from zoomsr.tasks import evaluate


@pytest.mark.parametrize("official_lr", [False, True], ids=["from_hr", "official_lr"])
@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_bicubic_reproduces_published_tables(compose_cfg, bench, tmp_path, name, official_lr):
    overrides = [
        "backbone=bicubic",
        "data=folder",
        f"data.hr_dir={bench / name / 'HR'}",
        "scales=[2,3,4]",
        f"out_dir={tmp_path}",
        "logger=csv",
    ]
    if official_lr:
        overrides.append(f"data.lr_dir={bench / name / 'LR_bicubic'}")
    metrics = evaluate.run(compose_cfg("evaluate", overrides))

    n_images = {"Set5": 5, "Set14": 14}[name]
    for scale in (2, 3, 4):
        psnr_pub, ssim_pub = PUBLISHED_BICUBIC[name, scale]
        got = metrics[f"x{scale}"]
        assert got["n_images"] == n_images
        assert abs(got["psnr_y"] - psnr_pub) <= 0.02, (scale, got)
        assert abs(got["ssim_y"] - ssim_pub) <= 0.002, (scale, got)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics


def test_evaluate_writes_reports_and_wandb_run(compose_cfg, bench, tmp_path):
    cfg = compose_cfg(
        "evaluate",
        [
            f"data.hr_dir={bench / 'Set5' / 'HR'}",
            "scales=[2,4]",
            f"out_dir={tmp_path}",
            "backbone=nearest",
        ],
    )
    metrics = evaluate.run(cfg)
    assert set(metrics) == {"x2", "x4", "suite"}  # per scale, and how they were computed
    assert metrics["x2"]["psnr_y"] > metrics["x4"]["psnr_y"]  # a larger zoom is harder
    rows = (tmp_path / "per_image.csv").read_text().splitlines()
    assert rows[0] == "scale,image,psnr_y,ssim_y" and len(rows) == 1 + 2 * 5
    table = (tmp_path / "metrics.md").read_text()
    assert "| x2 |" in table and "| x4 |" in table
    assert (tmp_path / "metrics.png").stat().st_size > 1000
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].rglob("*.wandb"))
    assert "eval/x4/psnr_y" in (tmp_path / "csv" / "version_0" / "metrics.csv").read_text()


def test_evaluate_resumes_and_skips_done_images(compose_cfg, bench, tmp_path, monkeypatch):
    overrides = [
        f"data.hr_dir={bench / 'Set5' / 'HR'}",
        "scales=[2,3]",
        f"out_dir={tmp_path}",
        "logger=csv",
    ]
    first = evaluate.run(compose_cfg("evaluate", overrides))
    # Simulate a run killed after 6 of its 10 images (and a half-written last line).
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:6]) + '\n{"scale": 3, "ima')

    calls = []
    real_upscale = Bicubic._upscale
    monkeypatch.setattr(Bicubic, "_upscale", lambda *args: calls.append(1) or real_upscale(*args))
    second = evaluate.run(compose_cfg("evaluate", overrides))
    assert len(calls) == 4
    assert second == first
