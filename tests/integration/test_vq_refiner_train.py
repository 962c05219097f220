"""vq_refiner end to end on the CPU: train (debug=tiny_vq_refiner) -> checkpoint -> evaluate ->
infer, and the two-stage path (VQGAN stage, then ITER on its checkpoint) with its clear errors."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

from tests.conftest import ROOT
from zoomsr.checkpoint import load_backbone, read_checkpoint
from zoomsr.data.io import load_image
from zoomsr.errors import ZoomSRError, user_message
from zoomsr.tasks import evaluate, infer, preflight, train


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six 48x48 crops of scikit-image's bundled photos (real image statistics, no download)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for i, img in enumerate([data.astronaut(), data.coffee(), data.chelsea()]):
        for j, (y, x) in enumerate([(100, 120), (200, 60)]):
            Image.fromarray(np.ascontiguousarray(img[y : y + 48, x : x + 48])).save(
                folder / f"p{i}{j}.png"
            )
    return folder


def tiny(photos, out, experiment="vq_refiner_x4", *extra):
    return [
        f"experiment={experiment}",
        "debug=tiny_vq_refiner",
        f"data.hr_dir={photos}",
        "trainer.max_steps=3",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"out_dir={out}",
        *extra,
    ]


def test_train_checkpoint_evaluate_infer(compose_cfg, photos, tmp_path):
    cfg = compose_cfg(
        "train", tiny(photos, tmp_path / "run", "vq_refiner_x4", f"data.val_hr_dir={photos}")
    )
    preflight.check(cfg)
    result = train.run(cfg)
    assert np.isfinite(result["train/loss"]) and "val/psnr_y" in result
    assert {"train/lq_ce", "train/refine_ce", "train/eval_bce"} <= set(result)
    ckpt = read_checkpoint(result["last_ckpt"])
    assert ckpt["global_step"] == 3
    # Only the ITER networks are saved; the frozen VQGAN comes back from `seed`.
    assert {k.split(".")[1] for k in ckpt["state_dict"]} == {"lq_encoder", "refiner", "evaluator"}
    assert "_target_: zoomsr.backbones.vq_refiner.VQRefiner" in ckpt["zoomsr"]["backbone_config"]

    backbone = load_backbone(result["last_ckpt"])
    ema = ckpt["ema"]["shadow"]
    torch.testing.assert_close(
        backbone.state_dict()["refiner.head.weight"], ema["refiner.head.weight"]
    )
    lr = torch.rand(1, 3, 12, 12)
    assert backbone.upscale(lr).shape == (1, 3, 48, 48)

    metrics = evaluate.run(
        compose_cfg(
            "evaluate",
            [
                f"ckpt={result['last_ckpt']}",
                f"data.hr_dir={photos}",
                "scales=[4]",
                f"out_dir={tmp_path / 'eval'}",
                "logger=csv",
            ],
        )
    )
    assert metrics["x4"]["n_images"] == 6 and 0 < metrics["x4"]["psnr_y"] < 60

    src = photos / "p00.png"
    out = infer.run(
        compose_cfg(
            "infer",
            [
                f"ckpt={result['last_ckpt']}",
                f"input={src}",
                "zoom=full",
                f"out_dir={tmp_path / 'i'}",
            ],
        )
    )
    assert [p.rsplit("/", 1)[-1] for p in out["outputs"]] == ["p00_x4.png"]
    assert load_image(out["outputs"][0]).shape == (3, 192, 192)


def test_vqgan_stage_then_iter_stage_on_its_checkpoint(compose_cfg, photos, tmp_path):
    stage1 = train.run(compose_cfg("train", tiny(photos, tmp_path / "vq", "vq_refiner_x4_vqgan")))
    assert {"train/recon_l1", "train/vq"} <= set(stage1)
    vq_ckpt = tmp_path / "vqgan.ckpt"
    (tmp_path / "vq" / "checkpoints" / "last.ckpt").rename(vq_ckpt)
    vq_ema = read_checkpoint(vq_ckpt)["ema"]["shadow"]
    assert vq_ema and all(k.startswith("vqgan.") for k in vq_ema)

    # Stage 2 starts from stage 1's (EMA) VQGAN, whatever its own seed.
    cfg = compose_cfg(
        "train",
        tiny(
            photos, tmp_path / "iter", "vq_refiner_x4", f"backbone.vqgan_ckpt={vq_ckpt}", "seed=5"
        ),
    )
    preflight.check(cfg)
    stage2 = train.run(cfg)
    backbone = load_backbone(stage2["last_ckpt"])
    for k, v in vq_ema.items():
        torch.testing.assert_close(backbone.state_dict()[k], v.float(), msg=k)

    # The rebuilt backbone needs stage 1's file: without it, one clear error naming it (Hydra
    # wraps it; the entry points print the ZoomSRError's message alone and exit with 2).
    vq_ckpt.rename(tmp_path / "moved.ckpt")
    with pytest.raises(Exception) as info:
        load_backbone(stage2["last_ckpt"])
    assert re.match(r"VQGAN weights not found: '.*vqgan\.ckpt'", user_message(info.value) or "")
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt={stage2['last_ckpt']}", f"data.hr_dir={photos}"]
        + ["scales=[4]", f"hydra.run.dir={tmp_path / 'e'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().startswith("zoomsr error: VQGAN weights not found: '")
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(ZoomSRError, match="VQGAN weights not found"):
        preflight.check(cfg)
    # vq_refiner_x4 without debug=tiny_vq_refiner insists on stage 1's weights.
    bare = compose_cfg("train", ["experiment=vq_refiner_x4", f"data.hr_dir={photos}"])
    with pytest.raises(MissingMandatoryValue, match="vqgan_ckpt"):
        preflight.check(bare)
