"""ITER's three stages on the CPU (debug=tiny_iter): stage 1 as a real two-optimizer GAN, the
refine stage -> checkpoint -> the backbone back, and the errors a user meets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.checkpoint import load_backbone, read_checkpoint
from zoomsr.errors import ZoomSRError
from zoomsr.tasks import preflight, train


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three 48x48 crops of scikit-image's bundled photos (no download)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for i, img in enumerate([data.astronaut(), data.coffee(), data.chelsea()]):
        crop = np.ascontiguousarray(img[100:148, 120:168])
        Image.fromarray(crop).save(folder / f"p{i}.png")
    return folder


def overrides(photos, out, experiment, *extra):
    return [
        f"experiment={experiment}", "debug=tiny_iter", f"data.hr_dir={photos}",
        "trainer.max_steps=3", "trainer.enable_progress_bar=false", "logger=csv",
        f"out_dir={out}", *extra,
    ]  # fmt: skip


def adam_steps(optimizer_state: dict) -> set[int]:
    return {int(s["step"]) for s in optimizer_state["state"].values()}


def test_stage1_gan_steps_both_optimizers(compose_cfg, photos, tmp_path, single_thread):
    cfg = compose_cfg("train", overrides(photos, tmp_path / "hq", "iter_hq_vqgan"))
    result = train.run(cfg)
    for term in ("l1", "lpips", "ssim", "vq", "gan", "d_loss", "codebook_perplexity"):
        assert np.isfinite(result[f"train/{term}"]), term
    assert 0 <= result["train/codebook_dead"] <= 16
    ckpt = read_checkpoint(result["last_ckpt"])
    assert ckpt["global_step"] == 3  # generator steps; the discriminator's are not counted
    g, d = ckpt["optimizer_states"]
    assert adam_steps(g) == {3} and adam_steps(d) == {3}
    disc = {k for k in ckpt["state_dict"] if k.startswith("discriminator.")}
    assert "discriminator.conv9.weight" in disc  # U-Net discriminator, resumable
    assert {k.split(".")[1] for k in ckpt["state_dict"] if k.startswith("backbone.")} == {"vqgan"}
    # The generator's GAN term starts late: before gan_start_step the discriminator rests.
    late = compose_cfg(
        "train",
        overrides(photos, tmp_path / "late", "iter_hq_vqgan", "module.gan_start_step=2"),
    )
    ckpt = read_checkpoint(train.run(late)["last_ckpt"])
    g, d = ckpt["optimizer_states"]
    assert adam_steps(g) == {3} and adam_steps(d) == {1}


def test_refine_stage_on_stage1_vqgan(compose_cfg, photos, tmp_path, single_thread):
    hq = train.run(
        compose_cfg(
            "train", overrides(photos, tmp_path / "hq", "iter_hq_vqgan", "trainer.max_steps=1")
        )
    )
    cfg = compose_cfg(
        "train",
        overrides(photos, tmp_path / "x4", "iter_x4", f"backbone.vqgan_ckpt={hq['last_ckpt']}"),
    )
    preflight.check(cfg)
    result = train.run(cfg)
    for term in ("lq_ce", "eval_init", "eval_refined", "refine_ce", "l1", "lpips"):
        assert np.isfinite(result[f"train/{term}"]), term
    ckpt = read_checkpoint(result["last_ckpt"])
    assert {k.split(".")[1] for k in ckpt["state_dict"]} == {"lq_encoder", "token_refine_net"}
    backbone = load_backbone(result["last_ckpt"])
    stage1 = read_checkpoint(hq["last_ckpt"])["state_dict"]
    torch.testing.assert_close(
        backbone.vqgan.quantize.embedding.weight,
        stage1["backbone.vqgan.quantize.embedding.weight"],
    )
    assert backbone.upscale(torch.rand(1, 3, 12, 12)).shape == (1, 3, 48, 48)


def test_missing_vqgan_is_one_clear_error(compose_cfg, photos, tmp_path):
    cfg = compose_cfg(
        "train", overrides(photos, tmp_path, "iter_x4", "backbone.vqgan_ckpt=/nope/last.ckpt")
    )
    with pytest.raises(ZoomSRError, match="experiment=iter_hq_vqgan"):
        preflight.check(cfg)
