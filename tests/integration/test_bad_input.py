"""Bad input gives one clear error naming the thing, through the real entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import ROOT
from zoomsr.errors import ZoomSRError
from zoomsr.tasks import evaluate


def _folder_with_images(path, n=2, size=48):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (size, size), (40 * i, 90, 200)).save(path / f"img{i}.png")
    return path


def _run(compose_cfg, tmp_path, *overrides):
    cfg = compose_cfg("evaluate", [f"out_dir={tmp_path / 'out'}", "logger=csv", *overrides])
    return evaluate.run(cfg)


def test_unreadable_image_is_named(compose_cfg, tmp_path):
    folder = _folder_with_images(tmp_path / "hr")
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ZoomSRError, match=r"cannot read image .*broken\.png"):
        _run(compose_cfg, tmp_path, f"data.hr_dir={folder}", "scales=[2]")


def test_empty_folder(compose_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZoomSRError, match=r"holds no images"):
        _run(compose_cfg, tmp_path, f"data.hr_dir={tmp_path / 'empty'}")


def test_wrong_path(compose_cfg, tmp_path):
    with pytest.raises(ZoomSRError, match=r"HR folder not found: .*nowhere"):
        _run(compose_cfg, tmp_path, f"data.hr_dir={tmp_path / 'nowhere'}")


def test_unknown_metric(compose_cfg, tmp_path):
    folder = _folder_with_images(tmp_path / "hr")
    with pytest.raises(ZoomSRError, match=r"unknown metric\(s\) \['psnr_z'\]; available"):
        _run(compose_cfg, tmp_path, f"data.hr_dir={folder}", "metrics.names=[psnr_y,psnr_z]")


def test_missing_lr_file(compose_cfg, tmp_path):
    hr = _folder_with_images(tmp_path / "hr", n=2)
    lr = tmp_path / "lr" / "X2"
    _folder_with_images(lr, n=1, size=24)
    (lr / "img0.png").rename(lr / "img0x2.png")
    with pytest.raises(ZoomSRError, match=r"no LR file for 'img1.png'"):
        _run(
            compose_cfg,
            tmp_path,
            f"data.hr_dir={hr}",
            f"data.lr_dir={tmp_path / 'lr'}",
            "scales=[2]",
        )


def _cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_prints_one_clear_line_without_traceback(tmp_path):
    proc = _cli(f"data.hr_dir={tmp_path / 'nowhere'}", f"out_dir={tmp_path / 'o'}", "logger=csv")
    assert proc.returncode == 2
    assert "zoomsr error: HR folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_unknown_backbone_lists_choices(tmp_path):
    proc = _cli("backbone=bicubik", f"out_dir={tmp_path / 'o'}")
    assert proc.returncode != 0
    assert "Could not find 'backbone/bicubik'" in proc.stderr
    assert "bicubic" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_missing_required_value(tmp_path):
    proc = _cli(f"out_dir={tmp_path / 'o'}", "logger=csv")
    assert proc.returncode == 2
    assert "config value 'data.hr_dir' is required" in proc.stderr


def _train_cli(*args):
    """``train.py`` with ``-X importtime``: stderr also lists every module it imported."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if "import time:" in line}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=coz_lora", "data.hr_dir={tmp}", "backbone.pretrained={tmp}/sd3-medium"],
         "SD3 weights not found: folder '{tmp}/sd3-medium' does not exist"),
        (["experiment=coz_lora"], "config value 'data.hr_dir' is required"),
    ],
)  # fmt: skip
def test_train_reports_config_and_weight_errors_before_loading_lightning(
    tmp_path, overrides, message
):
    proc = _train_cli(*(o.format(tmp=tmp_path) for o in overrides), f"out_dir={tmp_path / 'o'}")
    lines = [ln for ln in proc.stderr.splitlines() if "import time:" not in ln]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert any(ln.startswith("zoomsr error: ") for ln in lines), lines
    assert message.format(tmp=tmp_path) in "\n".join(lines)
    assert "Traceback" not in proc.stderr
    assert "lightning" not in _imported(proc.stderr)  # the check ran before the heavy imports


def test_a_group_set_to_null_names_the_options(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "prompt=null", f"input={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the check finds conf/ next to the script, whatever the cwd
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'prompt=null'" in proc.stderr and "'none'" in proc.stderr and "'vlm'" in proc.stderr
