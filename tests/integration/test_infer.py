"""infer.py: a file or a folder, with a baseline or a checkpoint; resumes; clear errors."""

from __future__ import annotations

import pytest
import torch

from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image, quantize, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.tasks import infer


def test_bicubic_infer_equals_imresize(compose_cfg, bench, tmp_path):
    src = bench / "Set5" / "HR" / "bird.png"
    cfg = compose_cfg("infer", [f"input={src}", "scale=3", "zoom=full", f"out_dir={tmp_path}"])
    result = infer.run(cfg)
    assert [p.rsplit("/", 1)[-1] for p in result["outputs"]] == ["bird_x3.png"]
    got = load_image(result["outputs"][0])
    want = quantize(imresize(load_image(src), scale=3, quantize_passes=True))
    assert got.shape == want.shape == (3, 288 * 3, 288 * 3)
    assert torch.equal(got, want)


def test_folder_skips_non_images_and_resumes(compose_cfg, tmp_path):
    folder = tmp_path / "in"
    for i in range(3):
        save_image(torch.rand(3, 10 + i, 12), folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")
    cfg = compose_cfg(
        "infer",
        [
            f"input={folder}",
            "backbone=nearest",
            "scale=2",
            "zoom=full",
            f"out_dir={tmp_path / 'out'}",
        ],
    )
    first = infer.run(cfg)
    assert len(first["outputs"]) == 3
    assert load_image(first["outputs"][2]).shape == (3, 24, 24)
    stamp = (tmp_path / "out" / "im0_x2.png").stat().st_mtime_ns
    assert infer.run(cfg) == first
    assert (tmp_path / "out" / "im0_x2.png").stat().st_mtime_ns == stamp  # not redone


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("input=/nonexistent/x.png", "input not found"),
        ("backbone=sr3", "needs its weights"),
        ("ckpt=/nonexistent/last.ckpt", "checkpoint not found"),
    ],
)
def test_errors(compose_cfg, tmp_path, override, message):
    save_image(torch.rand(3, 8, 8), tmp_path / "a.png")
    overrides = [f"input={tmp_path / 'a.png'}", f"out_dir={tmp_path / 'o'}", override]
    with pytest.raises(ZoomSRError, match=message):
        infer.run(compose_cfg("infer", overrides))
