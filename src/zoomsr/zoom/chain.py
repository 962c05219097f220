"""Chain-of-Zoom (Kim et al. 2025, "Chain-of-Zoom: Extreme Super-Resolution via Scale
Autoregression and Preference Alignment", Sec. 3): reach ``u ** steps`` by chaining one
backbone's ``u``x step, each step zooming into a region of the last output, guided by a fresh
prompt. Works with any :class:`~zoomsr.backbones.base.Backbone`.

The preprocessed input (step 0) is a ``P x P`` square (``P = process_size``). Step ``k``
(1-based) covers the ``1 / u**k`` window of it around the zoom target and outputs ``P x P``:

- ``recursive``: input = the ``P/u`` window of step ``k-1``'s output; the prompt source sees
  that window.
- ``recursive_multiscale``: as ``recursive``; the prompt source sees step ``k-1``'s whole
  output and the window (CoZ's multi-scale prompt, wider view first).
- ``onestep``: input = the ``P/u**k`` window of the *original*, bicubic-resized to ``P/u``
  (CoZ resizes it to the model's input size), then one backbone step.
- ``nearest`` / ``bicubic``: as ``recursive`` with pixel replication / MATLAB bicubic in place
  of the backbone; no model, no prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic, Nearest
from zoomsr.data.imresize import imresize
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.color import AlignMethod, align_colors
from zoomsr.zoom.memory import MemoryMode, ModelPlacer
from zoomsr.zoom.region import crop_window, cut, preprocess, zoom_point
from zoomsr.zoom.tiling import check_tiles, tiled_upscale

RecType = Literal["recursive_multiscale", "recursive", "onestep", "nearest", "bicubic"]
REC_TYPES: tuple[str, ...] = ("recursive_multiscale", "recursive", "onestep", "nearest", "bicubic")


class PromptFn(Protocol):
    """A prompt source: ``views`` are ``(B, 3, h, w)`` in [0, 1], widest first; returns one text
    per image. An ``nn.Module`` prompt source is offloaded in ``swap`` memory mode."""

    def __call__(self, views: list[torch.Tensor], step: int) -> list[str]: ...


@dataclass
class ZoomStep:
    """One scale of a chain. ``index`` 0 is the preprocessed input (``input`` None).

    ``input``: ``(3, h, w)`` what the backbone got; ``output``: ``(3, H, W)``; both CPU, [0, 1].
    ``box``: the region of the preprocessed image the output shows, normalized
    ``(x0, y0, x1, y1)``. ``magnification``: ``u ** index``.
    """

    index: int
    input: torch.Tensor | None
    output: torch.Tensor
    box: tuple[float, float, float, float]
    magnification: int
    prompts: list[str] | None = None


@dataclass
class ZoomResult:
    """All scales of one image, step 0 first."""

    steps: list[ZoomStep] = field(default_factory=list)

    @property
    def prompts(self) -> list[dict]:
        """``[{"step": k, "box": [...], "magnification": m, "prompts": [...]}, ...]`` (JSON)."""
        return [
            {
                "step": s.index,
                "box": list(s.box),
                "magnification": s.magnification,
                "prompts": s.prompts,
            }
            for s in self.steps
        ]


def step_factor(upscale: int | None, backbone: Backbone | None) -> int:
    """The per-step factor: ``upscale`` or the backbone's ``scale``; they must agree."""
    if backbone is not None and backbone.is_learned and upscale not in (None, backbone.scale):
        raise ZoomSRError(
            f"zoom.upscale={upscale} but the backbone upscales by {backbone.scale} per step: "
            "leave zoom.upscale=null or set it to the backbone's scale."
        )
    factor = upscale or (backbone.scale if backbone is not None else 4)
    if factor < 2:
        raise ZoomSRError(f"zoom.upscale must be >= 2, got {factor}.")
    return int(factor)


def run_step(
    backbone: Backbone,
    view: torch.Tensor,
    prompts: list[str] | None,
    placer: ModelPlacer,
    tile_size: int | None,
    tile_overlap: int,
    seed: int | None,
) -> torch.Tensor:
    """One seeded backbone call on ``(B, 3, h, w)``, with the backbone on the device only while
    it runs in swap mode. Returns ``(B, 3, h*s, w*s)`` in [0, 1]."""
    if seed is not None:
        torch.manual_seed(seed)
    with placer.running(backbone):
        return tiled_upscale(backbone, view, tile_size, tile_overlap, prompts)


def ask_prompts(
    prompt_fn: PromptFn | None, views: list[torch.Tensor], step: int, placer: ModelPlacer
) -> list[str] | None:
    """``prompt_fn(views, step)``, the prompt model on the device only meanwhile (swap)."""
    if prompt_fn is None:
        return None
    with placer.running(prompt_fn if isinstance(prompt_fn, nn.Module) else None):
        prompts = list(prompt_fn(views, step=step))
    if len(prompts) != views[0].shape[0]:
        raise ZoomSRError(f"the prompt source gave {len(prompts)} prompts for one image.")
    return prompts


class ZoomChain:
    """Chain-of-Zoom over the centre (or a chosen region) of an image.

    Args:
        rec_type: ``recursive_multiscale`` (default) | ``recursive`` | ``onestep`` |
            ``nearest`` | ``bicubic`` (see the module docstring).
        upscale: factor of one step; None (default) takes the backbone's ``scale`` (4 for the
            model-free types).
        steps: number of zoom steps (default 4: ``u**4`` = 256x).
        process_size: side ``P`` of the working square (default 512).
        resize: resize the short side to ``P`` first (default True).
        center_crop: cut the centre ``P`` square (default True).
        box: zoom into the centre of ``[x0, y0, x1, y1]`` (normalized, of the preprocessed
            image); default None: the image centre.
        point: or zoom towards ``[x, y]`` (normalized). Crops follow it, clamped inside.
        align: colour alignment of each output to its input: ``none`` (default) | ``adain`` |
            ``wavelet``.
        wavelet_levels: levels of the wavelet alignment (default 5).
        tile_size: process step inputs larger than this many LR pixels in overlapping tiles;
            None (default): whole.
        tile_overlap: overlap of the tiles in LR pixels (default 32).
        memory: ``plain`` (default, all models resident) | ``swap`` (idle models on the CPU).
        seed: torch is seeded with ``seed + k`` before step ``k`` (default 0); None: not seeded.
    """

    def __init__(
        self,
        rec_type: RecType = "recursive_multiscale",
        upscale: int | None = None,
        steps: int = 4,
        process_size: int = 512,
        resize: bool = True,
        center_crop: bool = True,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        align: AlignMethod = "none",
        wavelet_levels: int = 5,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        memory: MemoryMode = "plain",
        seed: int | None = 0,
    ) -> None:
        if rec_type not in REC_TYPES:
            raise ZoomSRError(f"zoom.rec_type must be one of {', '.join(REC_TYPES)}: {rec_type}")
        if steps < 1:
            raise ZoomSRError(f"zoom.steps must be >= 1, got {steps}.")
        if align not in ("none", "adain", "wavelet"):
            raise ZoomSRError(f"zoom.align must be none | adain | wavelet, got {align}.")
        if memory not in ("plain", "swap"):
            raise ZoomSRError(f"zoom.memory must be plain | swap, got {memory}.")
        check_tiles(tile_size, tile_overlap)
        self.target = zoom_point(box, point)  # validates early: a bad box fails before loading
        self.rec_type, self.upscale, self.steps = rec_type, upscale, steps
        self.process_size, self.resize, self.center_crop = process_size, resize, center_crop
        self.align, self.wavelet_levels = align, wavelet_levels
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.memory, self.seed = memory, seed

    @property
    def needs_model(self) -> bool:
        return self.rec_type not in ("nearest", "bicubic")

    def run(
        self,
        image: torch.Tensor,
        backbone: Backbone | None = None,
        prompt_fn: PromptFn | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> ZoomResult:
        """Zoom into ``image`` ``(3, H, W)`` in [0, 1]; ``steps + 1`` scales, step 0 first.

        Raises:
            ZoomSRError: the image is too small for the crops, or no backbone for a model type.
        """
        return ZoomResult(list(self.iter_steps(image, backbone, prompt_fn, device, progress)))

    def iter_steps(
        self,
        image: torch.Tensor,
        backbone: Backbone | None = None,
        prompt_fn: PromptFn | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> Iterator[ZoomStep]:
        """As :meth:`run`, one :class:`ZoomStep` at a time: a caller that writes each step and
        drops it holds one step's tensors whatever the number of steps."""
        u = step_factor(self.upscale, backbone if self.needs_model else None)
        if self.needs_model and backbone is None:
            raise ZoomSRError(f"zoom.rec_type={self.rec_type} needs a backbone (ckpt=...).")
        if not self.needs_model:
            backbone, prompt_fn = (Nearest if self.rec_type == "nearest" else Bicubic)(u), None
        placer = ModelPlacer(device, self.memory)
        placer.setup(backbone, prompt_fn if isinstance(prompt_fn, nn.Module) else None)
        original = preprocess(image, self.process_size, self.resize, self.center_crop)
        original = original[None].to(device)
        h0, w0 = original.shape[-2:]
        yield ZoomStep(0, None, original[0].cpu(), (0.0, 0.0, 1.0, 1.0), 1)
        # Region shown by the current image, in pixels of the original: (y0, x0, h, w).
        region = (0.0, 0.0, float(h0), float(w0))
        target = (self.target[1] * h0, self.target[0] * w0)
        current = original
        for k in tqdm(range(1, self.steps + 1), desc="zoom", leave=False, disable=not progress):
            view, region = self._view(original, current, region, target, u, k)
            views = [current, view] if self.rec_type == "recursive_multiscale" else [view]
            prompts = ask_prompts(prompt_fn, views, k, placer)
            seed = None if self.seed is None else self.seed + k
            out = run_step(backbone, view, prompts, placer, self.tile_size, self.tile_overlap, seed)
            out = align_colors(out, view, self.align, self.wavelet_levels)
            y0, x0, h, w = region
            box = (x0 / w0, y0 / h0, (x0 + w) / w0, (y0 + h) / h0)
            yield ZoomStep(k, view[0].cpu(), out[0].cpu(), box, u**k, prompts)
            current = out

    def _view(
        self,
        original: torch.Tensor,
        current: torch.Tensor,
        region: tuple[float, float, float, float],
        target: tuple[float, float],
        u: int,
        k: int,
    ) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
        """Step ``k``'s backbone input ``(1, 3, h, w)`` and the region it shows (original px)."""
        h0, w0 = original.shape[-2:]
        if self.rec_type == "onestep":
            side = (h0 // u**k, w0 // u**k)
            if min(side) < 1:
                raise ZoomSRError(
                    f"step {k} of onestep would crop {side[1]}x{side[0]} px of a {w0}x{h0} "
                    "image: use fewer zoom.steps or a larger zoom.process_size."
                )
            top, left, ch, cw = win = crop_window((h0, w0), side, target)
            view = cut(original, win)
            size = (h0 // u, w0 // u)
            if view.shape[-2:] != size:
                view = imresize(view, out_size=size).clamp(0, 1)
            return view, (float(top), float(left), float(ch), float(cw))
        h, w = current.shape[-2:]
        if min(h, w) // u < 1:
            raise ZoomSRError(f"step {k}: a {w}x{h} image has no 1/{u} crop.")
        ry, rx, rh, rw = region
        centre = ((target[0] - ry) * h / rh, (target[1] - rx) * w / rw)
        top, left, ch, cw = win = crop_window((h, w), (h // u, w // u), centre)
        new_region = (ry + top * rh / h, rx + left * rw / w, ch * rh / h, cw * rw / w)
        return cut(current, win), new_region
