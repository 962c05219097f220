"""evaluate.py with metric suites: the StableSR test-crop layout scored as OSEDiff scores it
(PSNR/SSIM equal pyiqa's on the saved outputs), the conventions in metrics.json, BasicSR's
suite on the published bicubic table, missing learned weights at start-up, one line each."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from zoomsr.data.io import load_image
from zoomsr.errors import user_message
from zoomsr.metrics.fidelity import PUBLISHED_BICUBIC
from zoomsr.metrics.weights import METRIC_WEIGHTS
from zoomsr.tasks import evaluate


@pytest.fixture
def stablesr_root(bench, tmp_path):
    """Four RealSR x4 pairs arranged as StableSR's test sets are: test_LR/ and test_HR/."""
    root = tmp_path / "DrealSRVal_crop128"
    for sub, src in (("test_LR", "LR_x4"), ("test_HR", "HR")):
        (root / sub).mkdir(parents=True)
        for f in sorted((bench / "RealSR_subset" / src).glob("*.png"))[:4]:
            (root / sub / f.name).symlink_to(f)
    return root


def _evaluate(compose_cfg, out, *overrides):
    cfg = compose_cfg("evaluate", [f"out_dir={out}", "logger=csv", "backbone=bicubic", *overrides])
    return evaluate.run(cfg)


def test_osediff_suite_on_stablesr_crops_equals_pyiqa(compose_cfg, stablesr_root, tmp_path):
    import pyiqa

    result = _evaluate(
        compose_cfg, tmp_path / "out", "protocol=paired", "data=drealsr_crops",
        f"data.root={stablesr_root}", "metrics=osediff", "metrics.only=[psnr,ssim]",
        "save_images=true",
    )  # fmt: skip
    assert list(result) == ["x4", "suite"] and result["x4"]["n_images"] == 4
    suite = result["suite"]
    assert suite["name"] == "osediff" and suite["metrics"] == ["psnr", "ssim"]
    assert (suite["fidelity"], suite["color_space"], suite["crop_border"]) == ("pyiqa", "ycbcr", 0)
    assert suite["round_8bit"] is True and suite["align"] == "none"
    assert suite["align_by"] == "the zoom engine"
    assert "rounded to integers" in suite["fidelity_conventions"]["ssim"]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["suite"] == suite

    # OSEDiff's test_metrics.py on the outputs zoomsr wrote: pyiqa, Y of YCbCr, no crop
    opts = {"test_y_channel": True, "color_space": "ycbcr", "device": "cpu"}
    psnr, ssim = pyiqa.create_metric("psnr", **opts), pyiqa.create_metric("ssim", **opts)
    want = {"psnr": [], "ssim": []}
    for name, entry in result["x4"]["images"].items():
        sr = load_image(tmp_path / "out" / "images" / "x4" / f"{name}.png")[None].float()
        hr = load_image(stablesr_root / "test_HR" / f"{name}.png")[None].float()
        want["psnr"].append(psnr(sr, hr).item())
        want["ssim"].append(ssim(sr, hr).item())
        assert entry["psnr"] == pytest.approx(want["psnr"][-1], abs=1e-4)
        assert entry["ssim"] == pytest.approx(want["ssim"][-1], abs=1e-5)
    assert result["x4"]["psnr"] == pytest.approx(np.mean(want["psnr"]), abs=1e-4)
    assert result["x4"]["ssim"] == pytest.approx(np.mean(want["ssim"]), abs=1e-5)


def test_basicsr_suite_reproduces_the_published_bicubic_row(compose_cfg, bench, tmp_path):
    result = _evaluate(compose_cfg, tmp_path, f"data.hr_dir={bench / 'Set5' / 'HR'}",
                       "scales=[4]", "metrics=basicsr")  # fmt: skip
    want_psnr, want_ssim = PUBLISHED_BICUBIC[("Set5", 4)]  # the tolerance of the benchmark test
    assert abs(result["x4"]["psnr"] - want_psnr) <= 0.02
    assert abs(result["x4"]["ssim"] - want_ssim) <= 0.002
    assert result["suite"]["crop_border"] == "protocol.shave"  # the benchmark's: the scale
    assert result["suite"]["fidelity"] == "basicsr"


def test_align_is_applied_before_scoring_and_recorded(compose_cfg, stablesr_root, tmp_path):
    common = ["protocol=paired", "data=drealsr_crops", f"data.root={stablesr_root}",
              "metrics=osediff", "metrics.only=[psnr]", "save_images=true"]  # fmt: skip
    plain = _evaluate(compose_cfg, tmp_path / "plain", *common)
    fixed = _evaluate(compose_cfg, tmp_path / "adain", *common, "metrics.align=adain")
    assert (fixed["suite"]["align"], fixed["suite"]["align_by"]) == ("adain", "metrics.align")
    name = sorted(fixed["x4"]["images"])[0]
    sr = load_image(tmp_path / "adain" / "images" / "x4" / f"{name}.png")
    lr = load_image(stablesr_root / "test_LR" / f"{name}.png")
    # AdaIN gave the output the LR's per-channel mean (to 8-bit rounding)
    torch.testing.assert_close(sr.mean((1, 2)), lr.mean((1, 2)), atol=2e-3, rtol=0)
    assert fixed["x4"]["psnr"] != plain["x4"]["psnr"]


def test_stablesr_layout_error_names_the_folders(compose_cfg, tmp_path):
    (tmp_path / "crops" / "LR").mkdir(parents=True)
    with pytest.raises(Exception) as err:  # noqa: B017 (Hydra wraps it; the CLI shows this:)
        _evaluate(compose_cfg, tmp_path / "o", "protocol=paired", "data=realsr_crops",
                  f"data.root={tmp_path / 'crops'}")  # fmt: skip
    assert "has no test_LR/, test_HR/ folder" in user_message(err.value)
    assert "sub-folders found: ['LR']" in user_message(err.value)


def test_osediff_without_weights_fails_in_seconds_one_line_per_file(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "empty"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "metrics=osediff", "protocol=paired",
         "data=drealsr_crops", f"data.root={tmp_path}", f"out_dir={tmp_path / 'o'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    files = [f for m in ("lpips", "dists", "clipiqa", "niqe", "musiq", "maniqa_pipal",
                         "fid_pyiqa") for f in METRIC_WEIGHTS[m]]  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if "not found at" in line]
    assert len(lines) == len(files) == 8
    for f in files:
        path = tmp_path / "empty" / "hub" / f.folder / f.name
        assert sum(f"'{f.name}' not found at {path}" in line for line in lines) == 1
    assert not (tmp_path / "o" / "results.jsonl").exists()  # no image was touched
    assert elapsed < 60  # start-up only: nothing is built or read (seconds on an idle machine)


@pytest.mark.slow  # a fresh interpreter runs a whole evaluation (the rewrite: a unit test)
def test_bare_metric_list_still_works_on_the_command_line(bench, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "metrics=[psnr_y]", "scales=[4]",
         f"data.hr_dir={bench / 'Set5' / 'HR'}", f"out_dir={tmp_path}", "logger=csv"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "read as 'metrics.names=[psnr_y]'" in proc.stderr
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert abs(saved["x4"]["psnr_y"] - PUBLISHED_BICUBIC[("Set5", 4)][0]) <= 0.02
    assert saved["suite"]["metrics"] == ["psnr_y"]


def test_compare_puts_a_run_beside_a_published_row(compose_cfg, bench, tmp_path, capsys):
    from zoomsr import reporting

    _evaluate(compose_cfg, tmp_path / "run", f"data.hr_dir={bench / 'Set5' / 'HR'}",
              "scales=[4]")  # fmt: skip
    assert reporting.main([str(tmp_path / "run"), "--published", "bicubic_set5_x4",
                           "--out", str(tmp_path)]) == 0  # fmt: skip
    table = (tmp_path / "published.md").read_text()
    assert "run suite: default; row suite: default\n" in table and "EDSR" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[5:]}
    assert rows["psnr_y"].split("|")[3].strip() == "28.42" and rows["psnr_y"].endswith("| = |")
    assert rows["ssim_y"].endswith("| = |")

    # a row of one's own, off by 0.5 dB and under another suite: marked, and said so
    (tmp_path / "rows.yaml").write_text(
        "mine:\n  method: Mine\n  suite: osediff\n  scale: 4\n  source: my table\n"
        "  metrics: {psnr_y: 28.93, lpips: 0.2}\n"
    )
    code = reporting.main([str(tmp_path / "run"), "--published", "mine", "--published-file",
                           str(tmp_path / "rows.yaml"), "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "different conventions: not comparable" in out
    assert "| psnr_y | 28.4290 | 28.93 | -0.5010 | worse |" in out
    assert "| lpips | – | 0.2 | – | not in run |" in out
    assert reporting.main([str(tmp_path / "run"), "--published", "nope"]) == 2
