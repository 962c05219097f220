"""The zoom chain with model-free backbones: crops, boxes, prompts, seeds, memory modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from zoomsr.backbones.interp import Bicubic, Nearest
from zoomsr.data.imresize import imresize
from zoomsr.data.io import quantize, to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.chain import ZoomChain
from zoomsr.zoom.memory import ModelPlacer
from zoomsr.zoom.region import crop_window, preprocess


def _photo(h=64, w=64, seed=0):
    """An 8-bit image (exactly representable, so PIL crops compare exactly)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 4, h), torch.linspace(0, 4, w), indexing="ij")
    img = 0.5 + 0.25 * torch.stack([torch.sin(yy + xx), torch.cos(yy), torch.sin(xx * 2)])
    return quantize(img + 0.1 * torch.rand(3, h, w, generator=g))


def _pil_crop(img, left, top, size):
    """Independent crop through PIL, back to a float tensor."""
    pil = Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy())
    arr = torch.from_numpy(np.array(pil.crop((left, top, left + size, top + size))))
    return arr.permute(2, 0, 1).float() / 255.0


def _matlab_x4(img):
    """MATLAB ``imresize(im2uint8(img), 4)``: what the Bicubic backbone promises."""
    return imresize(img, scale=4, quantize_passes=True).clamp(0, 1)


def test_onestep_bicubic_is_bicubic_of_the_hand_computed_crop():
    img = _photo()
    result = ZoomChain("onestep", steps=2, process_size=64).run(img, Bicubic(4))
    assert [s.magnification for s in result.steps] == [1, 4, 16]
    # Step 1: the centre 16 px (64 / 4) at (24, 24), upscaled x4 once.
    crop1 = _pil_crop(img, 24, 24, 16)
    torch.testing.assert_close(result.steps[1].input, crop1)
    torch.testing.assert_close(result.steps[1].output, _matlab_x4(crop1))
    # Step 2: the centre 4 px (64 / 16) at (30, 30) of the original, resized to the model's
    # 16 px input (CoZ resizes to process size), then x4.
    crop2 = _pil_crop(img, 30, 30, 4)
    view2 = imresize(crop2, out_size=(16, 16)).clamp(0, 1)
    torch.testing.assert_close(result.steps[2].input, view2)
    torch.testing.assert_close(result.steps[2].output, _matlab_x4(view2))
    assert result.steps[1].box == (24 / 64, 24 / 64, 40 / 64, 40 / 64)
    assert result.steps[2].box == (30 / 64, 30 / 64, 34 / 64, 34 / 64)


def test_recursive_chains_centre_crops_of_the_previous_output():
    img = _photo()
    result = ZoomChain("recursive", steps=3, process_size=64).run(img, Bicubic(4))
    prev = img
    for step in result.steps[1:]:
        assert step.output.shape == (3, 64, 64)
        torch.testing.assert_close(step.input, prev[:, 24:40, 24:40])
        torch.testing.assert_close(step.output, _matlab_x4(step.input))
        prev = step.output
    boxes = [s.box for s in result.steps]
    assert boxes[2] == (30 / 64, 30 / 64, 34 / 64, 34 / 64)
    assert boxes[3] == (31.5 / 64, 31.5 / 64, 32.5 / 64, 32.5 / 64)


@pytest.mark.parametrize(("rec_type", "interp"), [("bicubic", Bicubic), ("nearest", Nearest)])
def test_model_free_types_need_no_backbone(rec_type, interp):
    img = _photo()
    result = ZoomChain(rec_type, steps=2, process_size=64).run(img)
    want = ZoomChain("recursive", steps=2, process_size=64).run(img, interp(4))
    for a, b in zip(result.steps, want.steps):
        torch.testing.assert_close(a.output, b.output)
    assert all(s.prompts is None for s in result.steps)


def test_box_is_followed_and_clamped():
    img = _photo()
    # Centre of the box at (56, 56): step 1 cuts rows/cols 48:64 (clamped), step 2 follows the
    # point inside that output: (56 - 48) * 4 = 32 -> 24:40 of it = 54:58 of the original.
    result = ZoomChain("recursive", steps=2, process_size=64, box=[0.75, 0.75, 1.0, 1.0]).run(
        img, Bicubic(4)
    )
    torch.testing.assert_close(result.steps[1].input, img[:, 48:64, 48:64])
    assert result.steps[1].box == (0.75, 0.75, 1.0, 1.0)
    assert result.steps[2].box == (54 / 64, 54 / 64, 58 / 64, 58 / 64)
    corner = ZoomChain("onestep", steps=2, process_size=64, point=[0.0, 0.0]).run(img, Bicubic(4))
    assert [s.box[:2] for s in corner.steps] == [(0.0, 0.0)] * 3


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"box": [0.5, 0.5, 0.4, 0.9]}, "outside the image or empty"),
        ({"box": [0.0, 0.0, 1.2, 1.0]}, "outside the image or empty"),
        ({"box": [0.1, 0.2, 0.3]}, r"\[x0, y0, x1, y1\]"),
        ({"point": [0.5, -0.1]}, "zoom.point"),
        ({"box": [0, 0, 1, 1], "point": [0.5, 0.5]}, "not both"),
        ({"rec_type": "zoomy"}, "rec_type"),
        ({"steps": 0}, "steps"),
        ({"tile_size": 16, "tile_overlap": 16}, "tile_overlap"),
        ({"align": "histogram"}, "align"),
        ({"memory": "disk"}, "memory"),
    ],
)
def test_bad_settings_raise(kw, message):
    with pytest.raises(ZoomSRError, match=message):
        ZoomChain(**kw)


def test_image_smaller_than_the_crop_and_too_many_steps():
    with pytest.raises(ZoomSRError, match="smaller than the 64x64 crop"):
        ZoomChain("recursive", process_size=64, resize=False).run(_photo(40, 80), Bicubic(4))
    with pytest.raises(ZoomSRError, match="fewer zoom.steps"):
        ZoomChain("onestep", steps=4, process_size=64).run(_photo(), Bicubic(4))
    with pytest.raises(ZoomSRError, match="needs a backbone"):
        ZoomChain("recursive", process_size=64).run(_photo())
    with pytest.raises(ZoomSRError, match="zoom.upscale=2"):
        ZoomChain("recursive", upscale=2).run(_photo(), _Noisy())


def test_preprocess_short_side_then_centre_crop():
    img = _photo(48, 80)
    out = preprocess(img, 32)
    want = imresize(img, out_size=(32, 53)).clamp(0, 1)[:, :, 10:42]
    torch.testing.assert_close(out, want)
    assert preprocess(img, 32, resize=False, center_crop=True).shape == (3, 32, 32)
    assert crop_window((64, 64), (16, 16), (32.0, 32.0)) == (24, 24, 16, 16)


class _Noisy(Nearest):
    """Nearest x4 plus noise from the global RNG: a stand-in for a sampler's randomness."""

    is_learned = True

    def __init__(self):
        super().__init__(4)
        self.calls: list[tuple] = []

    def upscale(self, lr, prompts=None):
        self.calls.append(("run", prompts))
        return super().upscale(lr) + 0.1 * torch.rand_like(F.pad(lr, (0, 0)).repeat(1, 1, 4, 4))

    def to(self, *args, **kwargs):
        self.calls.append(("to", str(torch.device(args[0]))))
        return super().to(*args, **kwargs)


def test_seed_makes_the_chain_reproducible():
    img = _photo()
    runs = [
        ZoomChain("recursive", steps=2, process_size=64, seed=s).run(img, _Noisy())
        for s in (3, 3, 4)
    ]
    torch.testing.assert_close(runs[0].steps[2].output, runs[1].steps[2].output)
    assert not torch.equal(runs[0].steps[2].output, runs[2].steps[2].output)


class _Prompter(torch.nn.Module):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, views, step):
        self.log.append(("prompt", [tuple(v.shape[-2:]) for v in views]))
        return [f"zoom {step}"]

    def to(self, *args, **kwargs):
        self.log.append(("prompt.to", str(torch.device(args[0]))))
        return super().to(*args, **kwargs)


@pytest.mark.parametrize("rec_type", ["recursive_multiscale", "recursive", "onestep"])
def test_prompts_see_the_views_and_are_recorded(rec_type):
    log: list = []
    chain = ZoomChain(rec_type, steps=2, process_size=64)
    result = chain.run(_photo(), _Noisy(), prompt_fn=_Prompter(log))
    views = [entry[1] for entry in log if entry[0] == "prompt"]
    want = [(64, 64), (16, 16)] if rec_type == "recursive_multiscale" else [(16, 16)]
    assert views == [want, want]
    assert [s.prompts for s in result.steps] == [None, ["zoom 1"], ["zoom 2"]]
    assert result.prompts[2] == {
        "step": 2,
        "box": list(result.steps[2].box),
        "magnification": 16,
        "prompts": ["zoom 2"],
    }


def test_swap_moves_only_the_running_model_to_the_device():
    backbone = _Noisy()
    log = backbone.calls
    ZoomChain("recursive", steps=2, process_size=64, memory="swap").run(
        _photo(), backbone, prompt_fn=_Prompter(log)
    )
    step = [
        ("prompt.to", "cpu"),
        ("prompt", [(16, 16)]),
        ("prompt.to", "cpu"),
        ("to", "cpu"),
        ("run", ["zoom 1"]),
        ("to", "cpu"),
    ]
    assert log[:2] == [("to", "cpu"), ("prompt.to", "cpu")]  # setup: both idle on the CPU
    assert log[2:8] == step
    assert len(log) == 2 + 2 * len(step)
    backbone.calls.clear()
    ZoomChain("recursive", steps=2, process_size=64, memory="plain").run(_photo(), backbone)
    assert [c for c in backbone.calls if c[0] == "to"] == [("to", "cpu")]  # placed once


class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.moves: list[str] = []

    def to(self, device):  # a mocked device: record, do not move
        self.moves.append(str(device))
        return self


def test_model_placer_swap_and_plain_with_a_mocked_device():
    placer, model = ModelPlacer("cuda:1", "swap"), _Recorder()
    placer.setup(model)
    with placer.running(model):
        assert model.moves[-1] == "cuda:1"
    assert model.moves == ["cpu", "cuda:1", "cpu"]
    plain, model = ModelPlacer("cuda:1", "plain"), _Recorder()
    plain.setup(model)
    with plain.running(model):
        pass
    assert model.moves == ["cuda:1"]
