"""Training end to end on a tiny SR3: checkpoints, resume, DDP, accumulation, bf16, multirun."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import ROOT
from zoomsr.checkpoint import load_backbone, read_checkpoint
from zoomsr.tasks import evaluate, train

TINY_SR3 = [
    "backbone.inner_channel=8",
    "backbone.channel_mults=[1,2]",
    "backbone.attn_res=[]",
    "backbone.res_blocks=1",
    "backbone.norm_groups=4",
    "backbone.n_timestep=100",
    "backbone.sampler=ddim",
    "backbone.sample_steps=4",
]


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


def tiny(photos, out, *extra):
    return [
        f"data.hr_dir={photos}",
        "data.crop_size=16",
        "data.batch_size=4",
        "data.num_workers=0",
        *TINY_SR3,
        "trainer=cpu",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "module.ema_decay=0.9",
        "logger=csv",
        f"out_dir={out}",
        *extra,
    ]


def params_of(ckpt_path):
    return read_checkpoint(ckpt_path)["state_dict"]


def loss_curve(run_dir) -> dict[int, float]:
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]
        }


def assert_same_params(a: dict, b: dict, atol: float = 0.0):
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0 if atol == 0 else 1e-5, msg=k)


def test_train_checkpoint_evaluate(compose_cfg, photos, tmp_path):
    out = tmp_path / "run"
    result = train.run(
        compose_cfg(
            "train", tiny(photos, out, f"data.val_hr_dir={photos}", "data.val_max_images=2")
        )
    )
    assert np.isfinite(result["train/loss"]) and "val/psnr_y" in result
    ckpt = read_checkpoint(result["last_ckpt"])
    assert ckpt["global_step"] == 4
    # Trainable weights only, their EMA, and the backbone's config (safe to load).
    assert set(ckpt["state_dict"]) == {f"backbone.{k}" for k in ckpt["ema"]["shadow"]}
    assert "_target_: zoomsr.backbones.sr3.SR3" in ckpt["zoomsr"]["backbone_config"]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("best-step0000004"), names
    assert names[1] == "last.ckpt"  # one last.ckpt, no last-v1.ckpt beside it
    panels = sorted((out / "samples").glob("step*.png"))
    assert [p.name for p in panels] == ["step0000002.png", "step0000004.png"]
    assert Image.open(panels[0]).size == (3 * 48, 2 * (48 + 4))  # LR | SR | HR, 2 images

    backbone = load_backbone(result["last_ckpt"])
    # The EMA weights come back, not the raw ones.
    ema = read_checkpoint(result["last_ckpt"])["ema"]["shadow"]
    torch.testing.assert_close(
        backbone.state_dict()["unet.out_conv.weight"], ema["unet.out_conv.weight"]
    )
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


def test_evaluate_rejects_other_scale_for_checkpoint(compose_cfg, photos, tmp_path):
    result = train.run(compose_cfg("train", tiny(photos, tmp_path / "run", "trainer.max_steps=1")))
    from zoomsr.errors import ZoomSRError

    with pytest.raises(ZoomSRError, match=r"x4 model; scales=\[2\]"):
        evaluate.run(
            compose_cfg(
                "evaluate",
                [
                    f"ckpt={result['last_ckpt']}",
                    f"data.hr_dir={photos}",
                    "scales=[2]",
                    f"out_dir={tmp_path / 'e'}",
                    "logger=csv",
                ],
            )
        )


def test_resume_continues_the_same_loss_curve(compose_cfg, photos, tmp_path):
    keep_all = [
        "callbacks.last.save_top_k=-1",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
    ]
    full = train.run(compose_cfg("train", tiny(photos, tmp_path / "full", *keep_all)))
    step3 = tmp_path / "full" / "checkpoints" / "step0000003.ckpt"
    assert step3.exists()
    resumed = train.run(
        compose_cfg("train", tiny(photos, tmp_path / "resumed", *keep_all, f"ckpt_path={step3}"))
    )
    curve_full, curve_resumed = loss_curve(tmp_path / "full"), loss_curve(tmp_path / "resumed")
    assert sorted(curve_resumed) == [3, 4, 5]  # the resumed run starts after the saved step
    for step, loss in curve_resumed.items():
        assert loss == pytest.approx(curve_full[step], abs=1e-6), step
    assert_same_params(params_of(full["last_ckpt"]), params_of(resumed["last_ckpt"]))
    ema_full = read_checkpoint(full["last_ckpt"])["ema"]
    ema_resumed = read_checkpoint(resumed["last_ckpt"])["ema"]
    assert ema_full["num_updates"] == ema_resumed["num_updates"] == 6
    assert_same_params(ema_full["shadow"], ema_resumed["shadow"])


# Equality tests use SGD: Adam's first steps are ~lr*sign(grad), which turns float rounding in
# near-zero gradients into lr-sized differences and would hide what is being compared.
SGD = ["optim=sgd", "optim.lr=0.05"]


def test_gradient_accumulation_equals_larger_batch(compose_cfg, photos, tmp_path):
    big = train.run(
        compose_cfg("train", tiny(photos, tmp_path / "big", "trainer.max_steps=2", *SGD))
    )
    acc = train.run(
        compose_cfg(
            "train",
            tiny(
                photos,
                tmp_path / "acc",
                "trainer.max_steps=2",
                "data.batch_size=2",
                "trainer.accumulate_grad_batches=2",
                *SGD,
            ),
        )
    )
    assert_same_params(params_of(big["last_ckpt"]), params_of(acc["last_ckpt"]), atol=1e-6)


def test_gradient_checkpointing_gives_the_same_training(compose_cfg, photos, tmp_path):
    plain = train.run(
        compose_cfg("train", tiny(photos, tmp_path / "a", "trainer.max_steps=2", *SGD))
    )
    ckpt = train.run(
        compose_cfg(
            "train",
            tiny(
                photos,
                tmp_path / "b",
                "trainer.max_steps=2",
                *SGD,
                "backbone.gradient_checkpointing=true",
            ),
        )
    )
    assert_same_params(params_of(plain["last_ckpt"]), params_of(ckpt["last_ckpt"]), atol=1e-6)


def test_bf16_mixed_trains(compose_cfg, photos, tmp_path):
    result = train.run(
        compose_cfg("train", tiny(photos, tmp_path / "bf16", "trainer.precision=bf16-mixed"))
    )
    assert np.isfinite(result["train/loss"])
    start = load_backbone(result["last_ckpt"], use_ema=False).state_dict()
    assert all(v.dtype == torch.float32 for v in start.values())  # master weights stay fp32
    assert len(loss_curve(tmp_path / "bf16")) == 4


def test_ddp_two_processes_equal_one_process_with_same_global_batch(compose_cfg, photos, tmp_path):
    single = train.run(
        compose_cfg("train", tiny(photos, tmp_path / "one", "trainer.max_steps=3", *SGD))
    )
    ddp = train.run(
        compose_cfg(
            "train",
            tiny(
                photos,
                tmp_path / "ddp",
                "trainer.max_steps=3",
                "data.batch_size=2",
                *SGD,
                "trainer=ddp",
                "trainer.strategy=ddp_spawn",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "trainer.precision=32-true",
            ),
        )
    )
    ckpt = read_checkpoint(ddp["last_ckpt"])
    assert ckpt["global_step"] == 3
    assert_same_params(params_of(single["last_ckpt"]), ckpt["state_dict"], atol=1e-5)


def test_multirun_makes_one_complete_run_per_job(photos, tmp_path):
    args = tiny(photos, tmp_path / "sweep", "trainer.max_steps=2", "logger=default")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", *args, "optim.lr=1e-4,3e-4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, lr in [("0", 1e-4), ("1", 3e-4)]:
        run = tmp_path / "sweep" / job
        assert (run / "checkpoints" / "last.ckpt").exists()
        assert f"lr: {lr}" in (run / "config.yaml").read_text()
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1


def test_infer_with_checkpoint_pads_odd_sizes(compose_cfg, photos, tmp_path):
    from zoomsr.data.io import load_image, save_image
    from zoomsr.tasks import infer

    result = train.run(compose_cfg("train", tiny(photos, tmp_path / "run", "trainer.max_steps=1")))
    save_image(torch.rand(3, 13, 11), tmp_path / "odd.png")  # not a multiple of the U-Net's 2
    out = infer.run(
        compose_cfg(
            "infer",
            [
                f"ckpt={result['last_ckpt']}",
                f"input={tmp_path / 'odd.png'}",
                f"out_dir={tmp_path / 'inf'}",
                "zoom=full",
            ],
        )
    )
    assert load_image(out["outputs"][0]).shape == (3, 52, 44)
