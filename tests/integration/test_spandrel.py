"""backbone=spandrel: random networks built by spandrel's own architecture classes (Real-ESRGAN's
RRDBNet, SwinIR), saved as files, through evaluate.py and every chain mode of infer.py; the
output must equal spandrel's own call on the same LR."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import ROOT
from zoomsr.data.bicubic import BicubicDegradation
from zoomsr.data.datasets import modcrop
from zoomsr.data.io import load_image, quantize, save_image
from zoomsr.errors import ZoomSRError, user_message
from zoomsr.metrics.fidelity import psnr
from zoomsr.tasks import evaluate, infer

spandrel = pytest.importorskip("spandrel")


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights big enough that the output is not a constant after spandrel's clamp."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def _realesrgan_layout(old: dict) -> dict:
    """spandrel's ESRGAN keys (``model.N``) -> Real-ESRGAN's RRDBNet keys (``conv_first``,
    ``body.i.rdbj.convk``, ...), x4, wrapped in ``params_ema`` as RealESRGAN_x4plus.pth is."""
    fixed = {"model.0.": "conv_first.", "model.3.": "conv_up1.", "model.6.": "conv_up2.",
             "model.8.": "conv_hr.", "model.10.": "conv_last."}  # fmt: skip
    new = {}
    for key, value in old.items():
        m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)$", key)
        if m:
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif re.match(r"model\.1\.sub\.\d+\.(weight|bias)$", key):
            new["conv_body." + key.rsplit(".", 1)[1]] = value
        else:
            prefix = next(p for p in fixed if key.startswith(p))
            new[fixed[prefix] + key[len(prefix) :]] = value
    return {"params_ema": new}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    folder = tmp_path_factory.mktemp("spandrel")
    torch.manual_seed(0)
    rrdb = _randomize(ESRGAN(num_filters=16, num_blocks=1, scale=4), 1)
    torch.save(_realesrgan_layout(rrdb.state_dict()), folder / "RealESRGAN_tiny_x4.pth")
    swin = SwinIR(
        img_size=16, embed_dim=24, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2.0,
        upscale=2, upsampler="pixelshuffle", resi_connection="1conv",
    )  # fmt: skip
    _randomize(swin, 2)
    state = {k: v.contiguous() for k, v in swin.state_dict().items()}
    save_file(state, folder / "swinir_x2.safetensors")
    return {
        "ESRGAN": (folder / "RealESRGAN_tiny_x4.pth", 4),
        "SwinIR": (folder / "swinir_x2.safetensors", 2),
    }


def _own_call(path, lr: torch.Tensor) -> torch.Tensor:
    """spandrel's own loader and call, image by image."""
    descriptor = spandrel.ModelLoader().load_from_file(str(path)).eval()
    with torch.no_grad():
        return torch.cat([descriptor(x[None]) for x in lr])


def _hr_folder(path, n=2, size=32):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = torch.rand(3, size, size + 8, generator=torch.Generator().manual_seed(i))
        save_image(img, path / f"im{i}.png")
    return path


@pytest.mark.parametrize("arch", ["ESRGAN", "SwinIR"])
def test_evaluate_through_spandrel_equals_spandrels_own_call(compose_cfg, models, tmp_path, arch):
    path, scale = models[arch]
    hr_dir = _hr_folder(tmp_path / "hr")
    cfg = compose_cfg(
        "evaluate",
        [f"out_dir={tmp_path / 'out'}", "logger=csv", "backbone=spandrel",
         f"backbone.path={path}", f"data.hr_dir={hr_dir}", f"scales=[{scale}]",
         "save_images=true", "device=cpu"],
    )  # fmt: skip
    result = evaluate.run(cfg)
    for name in ("im0", "im1"):
        hr = modcrop(load_image(hr_dir / f"{name}.png"), scale)[None]
        lr = BicubicDegradation(scale)(hr)
        own = quantize(_own_call(path, lr))
        assert own.std() > 0.02  # a real image, not a clamped constant
        saved = load_image(tmp_path / "out" / "images" / f"x{scale}" / f"{name}.png")
        assert torch.equal(quantize(saved[None]), own), name
        want = psnr(own, hr, shave=scale, y_channel=True).item()
        assert result[f"x{scale}"]["images"][name]["psnr_y"] == pytest.approx(want, abs=1e-9)


def test_backbone_scale_tiling_and_batch(models):
    from zoomsr.backbones.spandrel import Spandrel

    path, _ = models["ESRGAN"]
    net = Spandrel(str(path))
    assert (net.scale, net.architecture, net.is_learned) == (4, "ESRGAN", False)
    lr = torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(5))
    own = _own_call(path, lr)
    assert torch.equal(net.upscale(lr), own)
    tiled = Spandrel(str(path), tile_size=12, tile_overlap=8).upscale(lr)
    assert tiled.shape == own.shape and (tiled - own).abs().mean() < 0.01
    with pytest.raises(ZoomSRError, match=r"is a x4 ESRGAN model; x2 was asked for"):
        Spandrel(str(path), scale=2)


@pytest.mark.parametrize("rec_type", ["recursive_multiscale", "recursive", "onestep"])
def test_every_chain_mode_of_infer(compose_cfg, models, tmp_path, rec_type):
    path, _ = models["ESRGAN"]
    src = tmp_path / "in"
    src.mkdir()
    save_image(torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0)), src / "a.png")
    cfg = compose_cfg(
        "infer",
        [f"input={src}", f"out_dir={tmp_path / 'out'}", "backbone=spandrel",
         f"backbone.path={path}", "zoom.process_size=16", "zoom.steps=2",
         f"zoom.rec_type={rec_type}", "device=cpu"],
    )  # fmt: skip
    infer.run(cfg)
    out = tmp_path / "out" / "a"
    step1, step2 = load_image(out / "step1_output.png"), load_image(out / "step2_output.png")
    assert step1.shape == step2.shape == (3, 16, 16)
    if rec_type == "recursive":  # step 1: one model call at x4 on the centre 16 // 4 px crop
        x = load_image(out / "step0.png")[:, 6:10, 6:10]  # (step1_input.png: CoZ's 16 px view)
        own = quantize(_own_call(path, x[None].float()))
        assert (own[0] - step1).abs().max() <= 1 / 255 + 1e-6


def test_unrecognized_file_is_one_line_exit_2(compose_cfg, tmp_path):
    bad = tmp_path / "not_a_model.pth"
    torch.save({"foo.weight": torch.randn(3, 3)}, bad)
    cfg = compose_cfg(
        "evaluate",
        [f"out_dir={tmp_path / 'o'}", "logger=csv", "backbone=spandrel",
         f"backbone.path={bad}", f"data.hr_dir={_hr_folder(tmp_path / 'hr', 1)}", "scales=[4]"],
    )  # fmt: skip
    with pytest.raises(Exception) as exc:
        evaluate.run(cfg)
    assert "spandrel recognizes no architecture in this file" in user_message(exc.value)
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "backbone=spandrel", f"backbone.path={bad}",
         f"data.hr_dir={tmp_path / 'hr'}", "scales=[4]", f"out_dir={tmp_path / 'o2'}",
         "logger=csv"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("zoomsr error: ") and str(bad) in lines[-1]
    assert "Traceback" not in proc.stderr


def test_pickled_code_is_refused(tmp_path):
    from zoomsr.backbones.spandrel import Spandrel

    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": ZoomSRError("x")}, evil)  # an arbitrary class
    with pytest.raises(ZoomSRError, match=r"cannot read .*evil\.pth' safely"):
        Spandrel(str(evil))


def test_import_spandrel_pointer_checkpoint_loads_and_is_offered_by_the_ui(models, tmp_path):
    from zoomsr.checkpoint import load_backbone
    from zoomsr.cli import main
    from zoomsr.ui.engine import peek_checkpoint

    path, _ = models["SwinIR"]
    assert main(["import-spandrel", "--model", str(path), "--out", str(tmp_path)]) == 0
    ckpt = tmp_path / "swinir_x2.ckpt"
    assert ckpt.stat().st_size < 10_000  # a reference to the file, not a copy of the weights
    net = load_backbone(ckpt)
    lr = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(7))
    assert net.scale == 2 and torch.equal(net.upscale(lr), _own_call(path, lr))
    choice = peek_checkpoint(ckpt)
    assert choice.error is None and choice.scale == 2 and "Spandrel" in choice.label
