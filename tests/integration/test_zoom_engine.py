"""One engine for infer.py and evaluate.py: the same image, settings and seed give the same step
images bit for bit; P x P steps for any P; the remote VLM receives the zoomed view at P x P;
align in every protocol, recorded in metrics.json."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from zoomsr.data.io import load_image, save_image
from zoomsr.tasks import evaluate, infer

from ..unit.test_prompts_remote import Server, decode_image


def _image(folder, side=64, name="im"):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 6, side), torch.linspace(0, 6, side), indexing="ij")
    img = 0.5 + 0.3 * torch.stack([torch.sin(yy * xx / 3), torch.cos(yy), torch.sin(2 * xx)])
    save_image((img + 0.1 * torch.rand(3, side, side, generator=g)).clamp(0, 1),
               folder / f"{name}.png")  # fmt: skip
    return folder


ZOOM = ["zoom.rec_type=recursive", "zoom.process_size=64", "align=adain", "seed=7"]


def test_infer_and_zoom_center_give_bit_identical_steps(compose_cfg, tmp_path):
    src = _image(tmp_path / "in")
    infer.run(compose_cfg("infer", [f"input={src}", f"out_dir={tmp_path / 'inf'}", *ZOOM,
                                    "backbone=bicubic", "zoom.steps=2", "prompt=manual",
                                    "prompt.user_text=a wall"]))  # fmt: skip
    result = evaluate.run(
        compose_cfg(
            "evaluate",
            [
                f"out_dir={tmp_path / 'ev'}",
                "protocol=zoom_center",
                "data=folder",
                f"data.hr_dir={src}",
                "scales=[1,4,16]",
                "save_images=true",
                "logger=csv",
                "prompt=manual",
                "prompt.user_text=a wall",
                *ZOOM,
            ],
        )  # fmt: skip
    )
    for k, mag in ((1, 4), (2, 16)):
        a = np.asarray(Image.open(tmp_path / "inf" / "im" / f"step{k}_output.png"))
        b = np.asarray(Image.open(tmp_path / "ev" / "images" / f"x{mag}" / "im.png"))
        assert a.shape == (64, 64, 3) and np.array_equal(a, b)
    assert result["x4"]["align"] == "adain"


def test_infer_bicubic_510_writes_510_px_steps(compose_cfg, tmp_path):
    src = _image(tmp_path / "in", side=600)
    infer.run(compose_cfg("infer", [f"input={src}", f"out_dir={tmp_path / 'out'}",
                                    "backbone=bicubic", "zoom.process_size=510",
                                    "zoom.steps=2"]))  # fmt: skip
    for k in (1, 2):
        for part in ("input", "output"):
            size = Image.open(tmp_path / "out" / "im" / f"step{k}_{part}.png").size
            assert size == (510, 510)


def test_remote_vlm_receives_the_zoomed_view_at_process_size(compose_cfg, tmp_path):
    src = _image(tmp_path / "in", side=96)
    server = Server(reply="stone, moss")
    try:
        result = infer.run(
            compose_cfg(
                "infer",
                [
                    f"input={src}",
                    f"out_dir={tmp_path / 'out'}",
                    "backbone=bicubic",
                    "zoom.process_size=96",
                    "zoom.steps=2",
                    "prompt=remote_vlm",
                    f"prompt.base_url={server.url}",
                    "prompt.cache=null",
                ],
            )  # fmt: skip
        )
    finally:
        server.close()
    assert result["prompt_model_calls"] == 2
    folder = tmp_path / "out" / "im"
    for k, request in enumerate(server.requests, start=1):
        wider, zoomed = request["body"]["messages"][1]["content"][:2]
        assert decode_image(zoomed).shape == (96, 96, 3)  # the crop upsampled to P, as CoZ
        np.testing.assert_array_equal(
            decode_image(zoomed), np.asarray(Image.open(folder / f"step{k}_input.png"))
        )
        prev = "step0.png" if k == 1 else f"step{k - 1}_output.png"
        np.testing.assert_array_equal(decode_image(wider), np.asarray(Image.open(folder / prev)))
    steps = json.loads((folder / "prompts.json").read_text())["steps"]
    assert steps[1]["prompts"] == ["stone, moss"]


def test_benchmark_records_align_and_applies_it(compose_cfg, bench, tmp_path):
    runs = {}
    for align in ("none", "wavelet"):
        runs[align] = evaluate.run(
            compose_cfg(
                "evaluate",
                [
                    f"out_dir={tmp_path / align}",
                    "backbone=bicubic",
                    "protocol=benchmark",
                    "data=set5",
                    "scales=[4]",
                    f"align={align}",
                    "logger=csv",
                ],
            )  # fmt: skip
        )
    saved = json.loads((tmp_path / "wavelet" / "metrics.json").read_text())
    assert saved["x4"]["align"] == "wavelet" and runs["none"]["x4"]["align"] == "none"
    assert runs["wavelet"]["x4"]["psnr_y"] != runs["none"]["x4"]["psnr_y"]
    assert abs(runs["wavelet"]["x4"]["psnr_y"] - runs["none"]["x4"]["psnr_y"]) < 1.0
    assert load_image(tmp_path / "wavelet" / "panels" / "x4" / "baby.png").shape[0] == 3
