"""infer.py with the zoom chain: the files per image, bad input, resume, and a trained SR3."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.backbones.interp import Bicubic
from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image, quantize, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.tasks import infer, train

from .test_train import photos, tiny  # noqa: F401  (photos is a fixture)

CHAIN_FILES = {
    "step0.png",
    "step1_input.png",
    "step1_output.png",
    "step2_input.png",
    "step2_output.png",
    "prompts.json",
    "strip.png",
    "overview.png",
}


def _inputs(folder, sizes=((48, 64), (40, 40))):
    for i, (h, w) in enumerate(sizes):
        save_image(
            torch.rand(3, h, w, generator=torch.Generator().manual_seed(i)), folder / f"im{i}.png"
        )
    return folder


def _chain_cfg(compose_cfg, src, out, *extra):
    return compose_cfg(
        "infer",
        [
            f"input={src}",
            f"out_dir={out}",
            "backbone=bicubic",
            "zoom.process_size=32",
            "zoom.steps=2",
            *extra,
        ],
    )


def _pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1) / 255.0


def test_chain_writes_every_step_prompts_strip_and_overview(compose_cfg, tmp_path):
    src = _inputs(tmp_path / "in")
    result = infer.run(_chain_cfg(compose_cfg, src, tmp_path / "out", "zoom.rec_type=bicubic"))
    assert [p.rsplit("/", 1)[-1] for p in result["outputs"]] == ["im0", "im1"]
    folder = tmp_path / "out" / "im0"
    assert {p.name for p in folder.iterdir()} == CHAIN_FILES
    # CoZ's preprocessing, computed independently with PIL: 64x48 -> int(64 * 32/48) = 42 x 32
    # by Lanczos, centre 32 square (left (42 - 32) // 2 = 5).
    first = Image.open(src / "im0.png").convert("RGB").resize((42, 32), Image.LANCZOS)
    first = first.crop((5, 0, 37, 32))
    torch.testing.assert_close(load_image(folder / "step0.png"), _pil(first))
    # CoZ's bicubic step 1: the original's centre 32 // 4 = 8 px, one PIL bicubic resize to 32.
    want = first.crop((12, 12, 20, 20)).resize((32, 32), Image.BICUBIC)
    torch.testing.assert_close(load_image(folder / "step1_output.png"), _pil(want))
    want = first.crop((15, 15, 17, 17)).resize((32, 32), Image.BICUBIC)  # step 2: 32 // 16 = 2
    torch.testing.assert_close(load_image(folder / "step2_output.png"), _pil(want))
    meta = json.loads((folder / "prompts.json").read_text())
    assert meta["rec_type"] == "bicubic" and meta["process_size"] == 32
    assert [s["magnification"] for s in meta["steps"]] == [1, 4, 16]
    assert meta["steps"][1]["box"] == [0.375, 0.375, 0.625, 0.625]
    assert meta["steps"][2]["prompts"] is None
    assert Image.open(folder / "strip.png").size == (3 * 32 + 2 * 4, 32)
    overview = Image.open(folder / "overview.png").convert("RGB")
    assert overview.size == (32, 32)
    assert overview.getpixel((12, 12)) == (255, 59, 48)  # step 1's box outline, in red


def test_bad_box_is_a_clear_error(compose_cfg, tmp_path):
    src = _inputs(tmp_path / "in")
    cfg = _chain_cfg(compose_cfg, src, tmp_path / "out", "zoom.box=[0.5,0.5,1.5,0.9]")
    with pytest.raises(ZoomSRError, match="outside the image"):
        infer.run(cfg)


def test_skips_non_images_keeps_finished_and_resumes(compose_cfg, tmp_path, caplog):
    src = _inputs(tmp_path / "in", sizes=((48, 48), (20, 20), (40, 40)))
    (src / "notes.txt").write_text("not an image")
    (src / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    # Without resizing, im1 (20 px) is smaller than the 32 px crop: it fails, the others finish.
    cfg = _chain_cfg(compose_cfg, src, out, "zoom.resize=false")
    with (
        caplog.at_level(logging.WARNING, logger="zoomsr"),
        pytest.raises(
            ZoomSRError, match=r"1 image\(s\) failed \(im1.png: image is 20x20, smaller than"
        ),
    ):
        infer.run(cfg)
    assert "notes.txt" in caplog.text and "broken.png" in caplog.text
    # no partial folder left; the job's fingerprint and the lock file beside the outputs
    assert sorted(p.name for p in out.iterdir()) == [
        ".zoomsr.lock",
        "im0",
        "im2",
        "zoomsr_job.json",
    ]
    stamp = (out / "im0" / "strip.png").stat().st_mtime_ns
    with pytest.raises(ZoomSRError, match=r"1 image\(s\) failed \(im1.png"):
        infer.run(cfg)  # the same job resumes: im0 and im2 are kept
    assert (out / "im0" / "strip.png").stat().st_mtime_ns == stamp  # not redone
    # Other settings are another job: refused, not mixed with the old outputs.
    cfg = _chain_cfg(compose_cfg, src, out, "zoom.resize=true")
    with pytest.raises(ZoomSRError, match=r"holds results of another job \(different zoom\)"):
        infer.run(cfg)
    result = infer.run(_chain_cfg(compose_cfg, src, out, "zoom.resize=true", "overwrite=true"))
    assert [p.rsplit("/", 1)[-1] for p in result["outputs"]] == ["im0", "im1", "im2"]
    assert result["skipped"] == [str(src / "broken.png")]


def test_full_image_tiled_multi_step(compose_cfg, tmp_path):
    src = _inputs(tmp_path / "in", sizes=((20, 24),))
    cfg = compose_cfg(
        "infer",
        [
            f"input={src}",
            f"out_dir={tmp_path / 'out'}",
            "zoom=full",
            "backbone=bicubic",
            "scale=2",
            "zoom.steps=2",
            "zoom.tile_size=16",
            "zoom.tile_overlap=12",
        ],
    )
    result = infer.run(cfg)
    assert [p.rsplit("/", 1)[-1] for p in result["outputs"]] == ["im0_x2.png", "im0_x4.png"]
    lr = load_image(src / "im0.png")
    x2 = imresize(lr, scale=2, quantize_passes=True).clamp(0, 1)
    x4 = imresize(x2, scale=2, quantize_passes=True).clamp(0, 1)
    torch.testing.assert_close(load_image(result["outputs"][1]), quantize(x4))


@pytest.fixture(scope="module")
def sr3_ckpt(photos, tmp_path_factory):  # noqa: F811
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    out = tmp_path_factory.mktemp("sr3run")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=tiny(photos, out, "trainer.max_steps=1"))
    return train.run(cfg)["last_ckpt"]


@pytest.mark.parametrize("memory", ["plain", "swap"])
def test_chain_with_trained_sr3(compose_cfg, sr3_ckpt, tmp_path, memory):
    src = _inputs(tmp_path / "in", sizes=((40, 40),))
    cfg = compose_cfg(
        "infer",
        [
            f"input={src}",
            f"out_dir={tmp_path / 'out'}",
            f"ckpt={sr3_ckpt}",
            "device=cpu",
            "zoom.process_size=32",
            "zoom.steps=2",
            f"zoom.memory={memory}",
            "zoom.align=wavelet",
        ],
    )
    infer.run(cfg)
    folder = tmp_path / "out" / "im0"
    assert {p.name for p in folder.iterdir()} == CHAIN_FILES
    out1 = load_image(folder / "step1_output.png")
    assert out1.shape == (3, 32, 32) and out1.std() > 0
    # CoZ's view of step 2: the centre 8 px of step 1's output, PIL-bicubic to 32 x 32
    step1 = Image.open(folder / "step1_output.png").convert("RGB")
    view = step1.crop((12, 12, 20, 20)).resize((32, 32), Image.BICUBIC)
    torch.testing.assert_close(load_image(folder / "step2_input.png"), _pil(view))
    if memory == "swap":  # same seed, same numbers, whatever the memory mode
        plain = compose_cfg("infer", [*cfg_overrides(src, tmp_path / "plain", sr3_ckpt)])
        infer.run(plain)
        torch.testing.assert_close(
            load_image(tmp_path / "plain" / "im0" / "step2_output.png"),
            load_image(folder / "step2_output.png"),
        )


def cfg_overrides(src, out, ckpt):
    return [
        f"input={src}",
        f"out_dir={out}",
        f"ckpt={ckpt}",
        "device=cpu",
        "zoom.process_size=32",
        "zoom.steps=2",
        "zoom.memory=plain",
        "zoom.align=wavelet",
    ]


@pytest.mark.parametrize("name", ["chain", "full"])
def test_zoom_yaml_keys_are_the_init_arguments(compose_cfg, tmp_path, name):
    import inspect

    from hydra.utils import get_class, instantiate

    cfg = compose_cfg("infer", [f"input={tmp_path}", f"zoom={name}"])
    keys = set(cfg.zoom) - {"_target_"}
    params = set(inspect.signature(get_class(cfg.zoom._target_).__init__).parameters)
    assert keys == params - {"self", "backbone", "prompt_source", "device"}  # from the task
    engine = instantiate(cfg.zoom, backbone=Bicubic(4))
    assert type(engine).__name__ == cfg.zoom._target_.rsplit(".", 1)[-1]
