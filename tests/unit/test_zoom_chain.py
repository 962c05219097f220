"""The chain engine against a re-statement of Chain-of-Zoom's own inference loop
(``inference_coz.py``, written here in PIL as CoZ does it): crops, resize kernels, the views the
prompt source sees, P x P at every step, the 8-bit conversions and the colour fix; then boxes,
seeds, prompt overrides and memory modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic, Nearest
from zoomsr.data.imresize import imresize
from zoomsr.data.io import quantize, to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.metrics.fidelity import psnr
from zoomsr.zoom.chain import ChainEngine
from zoomsr.zoom.color import adain, wavelet_align
from zoomsr.zoom.memory import ModelPlacer
from zoomsr.zoom.region import crop_window, preprocess


def _photo(h=64, w=64, seed=0):
    """An 8-bit image (exactly representable, so PIL round trips are exact)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 4, h), torch.linspace(0, 4, w), indexing="ij")
    img = 0.5 + 0.25 * torch.stack([torch.sin(yy + xx), torch.cos(yy), torch.sin(xx * 2)])
    return quantize(img + 0.1 * torch.rand(3, h, w, generator=g))


def _to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(img).permute(1, 2, 0).numpy())


def _tensor(pil: Image.Image) -> torch.Tensor:  # torchvision's ToTensor
    return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).float().div(255)


def _to_pil_truncating(t: torch.Tensor) -> Image.Image:  # torchvision's ToPILImage on floats
    return Image.fromarray(t.mul(255).byte().permute(1, 2, 0).numpy())


class _Refiner(Backbone):
    """A deterministic same-size "model" on [-1, 1], as CoZ's SD3 takes its P x P input."""

    refines_upsampled = True

    def __init__(self):
        super().__init__()
        self.scale = 4
        self.calls: list = []

    def _refine(self, x, prompts, generator):
        self.calls.append(("run", prompts, tuple(x.shape[-2:])))
        return torch.tanh(1.7 * x + 0.3 * torch.sin(5 * x.flip(1)))

    def to(self, *args, **kwargs):
        self.calls.append(("to", str(torch.device(args[0]))))
        return super().to(*args, **kwargs)


def coz_chain(image, rec_type, p, u, steps, align="nofix", prompter=None):
    """CoZ's loop, restated: PIL images between steps, ``k.png`` the outputs.

    Returns the outputs (PIL), the model inputs and the prompt views of each step."""
    first = _to_pil(image)
    w, h = first.size
    scale = p / min(w, h)
    first = first.resize((int(w * scale), int(h * scale)), Image.LANCZOS)
    left, top = (first.width - p) // 2, (first.height - p) // 2
    outputs = [first.crop((left, top, left + p, top + p))]
    inputs, views = [], []
    for rec in range(steps):
        r = u ** (rec + 1) if rec_type in ("nearest", "bicubic", "onestep") else u
        src = outputs[0] if rec_type in ("nearest", "bicubic", "onestep") else outputs[rec]
        w, h = src.size
        nw, nh = w // r, h // r
        cropped = src.crop(((w - nw) // 2, (h - nh) // 2, (w + nw) // 2, (h + nh) // 2))
        if rec_type in ("nearest", "bicubic"):
            kernel = Image.NEAREST if rec_type == "nearest" else Image.BICUBIC
            outputs.append(cropped.resize((w, h), kernel))
            continue
        lq_pil = cropped.resize((w, h), Image.BICUBIC)
        inputs.append(lq_pil)
        views.append([outputs[rec], lq_pil] if rec_type == "recursive_multiscale" else [lq_pil])
        lq = _tensor(lq_pil)[None] * 2 - 1
        out = torch.tanh(1.7 * lq + 0.3 * torch.sin(5 * lq.flip(1)))  # the model
        out_pil = _to_pil_truncating(torch.clamp(out[0], -1.0, 1.0) * 0.5 + 0.5)
        if align == "adain":  # CoZ's adain_color_fix: StableSR's statistics
            target, source = _tensor(out_pil)[None], _tensor(lq_pil)[None]
            fixed = _coz_adain(target, source)
            out_pil = _to_pil_truncating(fixed[0].clamp_(0.0, 1.0))
        outputs.append(out_pil)
    return outputs, inputs, views


def _coz_adain(content, style, eps=1e-5):
    b, c = content.shape[:2]

    def mean_std(f):
        var = f.reshape(b, c, -1).var(dim=2) + eps
        return f.reshape(b, c, -1).mean(dim=2).reshape(b, c, 1, 1), var.sqrt().reshape(b, c, 1, 1)

    sm, ss = mean_std(style)
    cm, cs = mean_std(content)
    return (content - cm) / cs * ss + sm


@pytest.mark.parametrize("p", [64, 62])  # 62: not a multiple of u, CoZ stays 62 x 62
@pytest.mark.parametrize("rec_type", ["recursive_multiscale", "recursive", "onestep"])
def test_model_types_equal_coz_step_for_step(rec_type, p):
    image = _photo(80, 100)
    want, inputs, views = coz_chain(image, rec_type, p, 4, 2)
    seen = []

    def prompter(v, step, names):
        seen.append(([x[0] for x in v], names))
        return [f"zoom {step}"]

    engine = ChainEngine(rec_type, steps=2, process_size=p, backbone=_Refiner(),
                         prompt_source=prompter)  # fmt: skip
    steps = engine.run(image, "photo").steps
    for k in range(3):
        assert steps[k].output.shape == (3, p, p)
        torch.testing.assert_close(steps[k].output, _tensor(want[k]), rtol=0, atol=0)
    for k in (1, 2):  # the model's input and what the prompt source saw: CoZ's
        torch.testing.assert_close(steps[k].input, _tensor(inputs[k - 1]), rtol=0, atol=0)
        got, names = seen[k - 1]
        assert names == ["photo"] and len(got) == len(views[k - 1])
        for g, v in zip(got, views[k - 1]):
            torch.testing.assert_close(g, _tensor(v), rtol=0, atol=0)
    assert [s.prompts for s in steps] == [None, ["zoom 1"], ["zoom 2"]]


def test_adain_colour_fix_equals_coz():
    image = _photo(64, 64)
    want, _, _ = coz_chain(image, "recursive", 64, 4, 2, align="adain")
    engine = ChainEngine("recursive", steps=2, process_size=64, align="adain", backbone=_Refiner())
    for step in engine.iter_steps(image, "im"):
        torch.testing.assert_close(step.output, _tensor(want[step.index]), rtol=0, atol=0)


@pytest.mark.parametrize("rec_type", ["nearest", "bicubic"])
@pytest.mark.parametrize("p", [64, 510])
def test_baselines_are_one_resize_of_the_original_centre_crop(rec_type, p):
    image = _photo(p + 20, p + 40, seed=1)
    want, _, _ = coz_chain(image, rec_type, p, 4, 3)
    steps = ChainEngine(rec_type, steps=3, process_size=p).run(image, "im").steps
    for k in range(4):
        assert steps[k].output.shape == (3, p, p)
        torch.testing.assert_close(steps[k].output, _tensor(want[k]), rtol=0, atol=0)
    if rec_type == "bicubic":  # >= 40 dB against PIL's bicubic of the 1/u^k centre crop
        first = _to_pil(steps[0].output)
        for k in (1, 2, 3):
            side = p // 4**k
            box = ((p - side) // 2, (p - side) // 2, (p + side) // 2, (p + side) // 2)
            ref = _tensor(first.crop(box).resize((p, p), Image.BICUBIC))
            assert psnr(steps[k].output[None], ref[None], shave=0).item() >= 40


def test_bicubic_iterated_keeps_the_old_chain_of_matlab_steps():
    image = _photo()
    steps = ChainEngine("bicubic_iterated", steps=2, process_size=64).run(image, "im").steps
    crop = steps[1].output[:, 24:40, 24:40]
    want = imresize(crop, scale=4, quantize_passes=True).clamp(0, 1)
    torch.testing.assert_close(steps[2].output, quantize(want), atol=1 / 255, rtol=0)


def test_box_is_followed_and_clamped():
    img = _photo()
    engine = ChainEngine("recursive", steps=2, process_size=64, box=[0.75, 0.75, 1.0, 1.0],
                         backbone=_Refiner())  # fmt: skip
    steps = engine.run(img, "im").steps
    # Step 1 crops 16 px centred on (56, 56): clamped to [48, 64).
    assert steps[1].box == (0.75, 0.75, 1.0, 1.0)
    corner = ChainEngine("onestep", steps=2, process_size=64, point=[0.0, 0.0],
                         backbone=_Refiner()).run(img, "im")  # fmt: skip
    assert corner.steps[2].box == (0.0, 0.0, 4 / 64, 4 / 64)
    crop = _to_pil(img).crop((0, 0, 4, 4)).resize((64, 64), Image.BICUBIC)
    torch.testing.assert_close(corner.steps[2].input, _tensor(crop), rtol=0, atol=0)


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
        ({"quantize": "floor"}, "quantize"),
        ({"rec_type": "recursive"}, "needs a backbone"),
        ({"rec_type": "recursive", "upscale": 2, "backbone": _Refiner()}, "zoom.upscale=2"),
    ],
)
def test_bad_settings_raise(kw, message):
    with pytest.raises(ZoomSRError, match=message):
        ChainEngine(**{"rec_type": "bicubic", **kw})


def test_image_smaller_than_the_crop_and_too_many_steps():
    with pytest.raises(ZoomSRError, match="smaller than the 64x64 crop"):
        ChainEngine("bicubic", process_size=64, resize=False).run(_photo(40, 80), "im")
    with pytest.raises(ZoomSRError, match="fewer zoom.steps"):
        ChainEngine("bicubic", steps=4, process_size=64).run(_photo(), "im")


def test_preprocess_is_coz_lanczos_then_centre_crop():
    img = _photo(48, 80)
    pil = _to_pil(img).resize((int(80 * 32 / 48), 32), Image.LANCZOS)  # 53 x 32
    torch.testing.assert_close(preprocess(img, 32), _tensor(pil.crop((10, 0, 42, 32))))
    assert preprocess(img, 32, resize=False, center_crop=True).shape == (3, 32, 32)
    assert torch.equal(preprocess(img[:, :32, :32], 32), img[:, :32, :32])  # already P: as is
    assert crop_window((64, 64), (16, 16), (32.0, 32.0)) == (24, 24, 16, 16)


class _Noisy(Nearest):
    """Nearest x4 plus noise from the step's generator: a stand-in for a sampler."""

    is_learned = True

    def _upscale(self, lr, prompts, generator):
        out = super()._upscale(lr, prompts, generator)
        return out + 0.1 * torch.rand(out.shape, generator=generator)


def test_seed_makes_the_chain_reproducible_and_prompts_can_be_overridden():
    img = _photo()
    runs = [ChainEngine("recursive", steps=2, process_size=64, backbone=_Noisy(), seed=s)
            .run(img, "im") for s in (3, 3, 4)]  # fmt: skip
    assert torch.equal(runs[0].steps[2].output, runs[1].steps[2].output)
    assert not torch.equal(runs[0].steps[2].output, runs[2].steps[2].output)
    engine = ChainEngine("recursive", steps=2, process_size=64, backbone=_Noisy(), seed=4,
                         prompt_source=lambda v, step, names: [f"auto {step}"])  # fmt: skip
    again = engine.run(img, "im", seed=3, prompts={2: "a red door"})
    assert torch.equal(again.steps[2].output, runs[0].steps[2].output)  # seed= per run
    assert [s.prompts for s in again.steps] == [None, ["auto 1"], ["a red door"]]
    assert again.prompts[2] == {"step": 2, "box": list(again.steps[2].box),
                                "magnification": 16, "prompts": ["a red door"]}  # fmt: skip


class _Prompter(torch.nn.Module):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def forward(self, views, step, names=None):
        self.log.append(("prompt", [tuple(v.shape[-2:]) for v in views]))
        return [f"zoom {step}"]

    def to(self, *args, **kwargs):
        self.log.append(("prompt.to", str(torch.device(args[0]))))
        return super().to(*args, **kwargs)


def test_swap_moves_only_the_running_model_to_the_device():
    backbone = _Refiner()
    log = backbone.calls
    ChainEngine("recursive", steps=2, process_size=64, memory="swap", backbone=backbone,
                prompt_source=_Prompter(log)).run(_photo(), "im")  # fmt: skip
    step = [
        ("prompt.to", "cpu"),
        ("prompt", [(64, 64)]),  # the zoomed view at P x P
        ("prompt.to", "cpu"),
        ("to", "cpu"),
        ("run", ["zoom 1"], (64, 64)),
        ("to", "cpu"),
    ]
    assert log[:2] == [("to", "cpu"), ("prompt.to", "cpu")]  # setup: both idle on the CPU
    assert log[2:8] == step
    assert len(log) == 2 + 2 * len(step)
    backbone.calls.clear()
    ChainEngine("recursive", steps=2, process_size=64, backbone=backbone).run(_photo(), "im")
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


def test_wavelet_fix_with_equal_sizes_and_adain_statistics():
    out, ref = _photo(32, 32, 1)[None], _photo(32, 32, 2)[None]
    torch.testing.assert_close(adain(out, ref), _coz_adain(out, ref))
    assert wavelet_align(out, out).sub(out).abs().max() < 1e-5


def test_bicubic_backbone_in_a_model_chain_is_resized_to_p():
    engine = ChainEngine("recursive", steps=1, process_size=62, backbone=Bicubic(4))
    step = engine.run(_photo(62, 62), "im").steps[1]
    assert step.output.shape == (3, 62, 62)  # 4 * (62 // 4) = 60, brought to 62
