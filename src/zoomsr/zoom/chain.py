"""Chain-of-Zoom (Kim et al. 2025, "Chain-of-Zoom: Extreme Super-Resolution via Scale
Autoregression and Preference Alignment", Sec. 3), step for step as CoZ's ``inference_coz.py``:
reach ``u ** steps`` by chaining one backbone's ``u``x step, each step zooming into the centre
(or a chosen point) of the last output, guided by a fresh prompt.

Step 0 is the preprocessed input, a ``P x P`` square (``P = process_size``; PIL Lanczos, centre
crop). Step ``k`` (1-based) outputs ``P x P`` for any ``P``:

- ``recursive``: crop the ``(P // u)`` window of step ``k-1``'s output and resize it to ``P x P``
  (PIL bicubic): that *view* is what the prompt source sees, what the model refines and the
  colour reference. A backbone that upscales an LR itself (``refines_upsampled`` False) gets the
  crop, and its output is resized to ``P`` when ``u * (P // u) != P``.
- ``recursive_multiscale``: as ``recursive``; the prompt source sees step ``k-1``'s whole output
  first, then the view (CoZ's multi-scale prompt).
- ``onestep``: the view is the original's ``(P // u**k)`` window resized to ``P x P``.
- ``nearest`` / ``bicubic``: the original's ``(P // u**k)`` window resized once to ``P x P``
  with PIL's nearest / bicubic; no model, no prompts, no colour fix (CoZ's baselines).
- ``bicubic_iterated``: ``recursive`` with zoomsr's MATLAB-bicubic backbone in place of a model
  (``u``x of the crop each step); not one of CoZ's types.

A model output becomes 8-bit as CoZ's ``ToPILImage`` makes it (``quantize=truncate``), then the
colour fix (``align``) against the view, 8-bit again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.color import AlignMethod, align_colors
from zoomsr.zoom.memory import MemoryMode
from zoomsr.zoom.region import crop_window, cut, preprocess, zoom_point
from zoomsr.zoom.resize import Quantize, pil_resize, to_8bit
from zoomsr.zoom.step import (
    EngineBase,
    PromptFn,
    ZoomStep,
    step_factor,
)

RecType = Literal[
    "recursive_multiscale", "recursive", "onestep", "nearest", "bicubic", "bicubic_iterated"
]
REC_TYPES: tuple[str, ...] = (
    "recursive_multiscale", "recursive", "onestep", "nearest", "bicubic", "bicubic_iterated"
)  # fmt: skip
#: rec types that run no model (and take no prompts)
MODEL_FREE: tuple[str, ...] = ("nearest", "bicubic", "bicubic_iterated")
#: rec types that crop the original at step k (the others crop the last output)
FROM_ORIGINAL: tuple[str, ...] = ("onestep", "nearest", "bicubic")

Region = tuple[float, float, float, float]  # (y0, x0, h, w) in pixels of the step-0 image


class ChainEngine(EngineBase):
    """Chain-of-Zoom over the centre (or a chosen point) of an image.

    Args:
        rec_type: ``recursive_multiscale`` (default) | ``recursive`` | ``onestep`` |
            ``nearest`` | ``bicubic`` | ``bicubic_iterated`` (module docstring).
        upscale: factor of one step; None (default) takes the backbone's ``scale`` (4 for the
            model-free types).
        steps: number of zoom steps (default 4: ``u**4`` = 256x).
        process_size: side ``P`` of the working square (default 512).
        resize: resize the short side to ``P`` first (default True; CoZ).
        center_crop: cut the centre ``P`` square (default True; CoZ).
        box: zoom into the centre of ``[x0, y0, x1, y1]`` (normalized, of the step-0 image);
            default None: the image centre (CoZ).
        point: or zoom towards ``[x, y]`` (normalized). Crops follow it, clamped inside.
        align: colour fix of each model output against its view: ``none`` (default, CoZ's
            ``nofix``) | ``adain`` | ``wavelet``.
        wavelet_levels: levels of the wavelet fix (default 5, as CoZ).
        tile_size: refine step inputs larger than this many LR pixels in overlapping tiles;
            None (default): whole, or the backbone's ``max_input_size`` when it is smaller.
        tile_overlap: overlap of the tiles in LR pixels (default 32).
        memory: ``plain`` (default, all models resident) | ``swap`` (idle models on the CPU).
        quantize: 8-bit conversion of each model output: ``truncate`` (default, CoZ's
            ``ToPILImage``) | ``round`` | ``none``.
        seed: step ``k``'s draws come from a generator seeded ``seed + k`` (default 0); None:
            the backbone's own seed.
        backbone: the model (None for the model-free types).
        prompt_source: text for each step (None: no prompt).
        device: where the models run.
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
        quantize: Quantize = "truncate",
        seed: int | None = 0,
        backbone: Backbone | None = None,
        prompt_source: PromptFn | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if rec_type not in REC_TYPES:
            raise ZoomSRError(f"zoom.rec_type must be one of {', '.join(REC_TYPES)}: {rec_type}")
        if process_size < 1:
            raise ZoomSRError(f"zoom.process_size must be >= 1, got {process_size}.")
        self.target = zoom_point(box, point)  # validates early: a bad box fails before loading
        # No box/point: every step crops the centre of the image it cuts from, as CoZ (with
        # P % u != 0 that drifts from the original's centre by a fraction of a pixel per step).
        self.follow = box is not None or point is not None
        self.rec_type, self.process_size = rec_type, process_size
        self.resize, self.center_crop = resize, center_crop
        u = step_factor(upscale, None if rec_type in MODEL_FREE else backbone)
        if rec_type == "bicubic_iterated":
            backbone, prompt_source = Bicubic(u), None
        elif rec_type in MODEL_FREE:
            backbone, prompt_source = None, None
        elif backbone is None:
            raise ZoomSRError(f"zoom.rec_type={rec_type} needs a backbone (ckpt=...).")
        super().__init__(u, steps, align, wavelet_levels, tile_size, tile_overlap, memory,
                         quantize, seed, backbone, prompt_source, device)  # fmt: skip

    def settings(self) -> dict:
        return {"rec_type": self.rec_type, "process_size": self.process_size,
                **super().settings()}  # fmt: skip

    def _iter(
        self, image: torch.Tensor, name: str, overrides: dict[int, str], seed: int | None
    ) -> Iterator[ZoomStep]:
        """:meth:`~zoomsr.zoom.step.EngineBase.iter_steps` of the chain (module docstring);
        raises ZoomSRError when the image is too small for the crops."""
        original = preprocess(image, self.process_size, self.resize, self.center_crop)
        original = original[None].to(self.device)
        h0, w0 = original.shape[-2:]
        yield ZoomStep(0, None, original[0].cpu(), (0.0, 0.0, 1.0, 1.0), 1)
        region: Region = (0.0, 0.0, float(h0), float(w0))
        previous = original
        for k in range(1, self.steps + 1):
            crop, region = self._crop(original, previous, region, k)
            out, view, texts = self._step(crop, previous, k, name, overrides, seed)
            y0, x0, h, w = region
            box = (x0 / w0, y0 / h0, (x0 + w) / w0, (y0 + h) / h0)
            yield ZoomStep(k, view[0].cpu(), out[0].cpu(), box, self.upscale**k, texts)
            previous = out

    def _crop(
        self, original: torch.Tensor, previous: torch.Tensor, region: Region, k: int
    ) -> tuple[torch.Tensor, Region]:
        """Step ``k``'s crop ``(1, 3, h, w)`` and the region it shows (step-0 pixels): the
        ``1/u**k`` window of the original, or the ``1/u`` window of the previous output, around
        the target (CoZ: ``crop(((w - w//r)//2, (h - h//r)//2, ...))``, the centre)."""
        h0, w0 = original.shape[-2:]
        u = self.upscale
        ty, tx = self.target[1] * h0, self.target[0] * w0
        if self.rec_type in FROM_ORIGINAL:
            side = (h0 // u**k, w0 // u**k)
            if min(side) < 1:
                raise ZoomSRError(
                    f"step {k} of {self.rec_type} would crop {side[1]}x{side[0]} px of a "
                    f"{w0}x{h0} image: use fewer zoom.steps or a larger zoom.process_size."
                )
            top, left, ch, cw = win = crop_window((h0, w0), side, (ty, tx))
            return cut(original, win), (float(top), float(left), float(ch), float(cw))
        h, w = previous.shape[-2:]
        if min(h, w) // u < 1:
            raise ZoomSRError(f"step {k}: a {w}x{h} image has no 1/{u} crop.")
        ry, rx, rh, rw = region
        centre = ((ty - ry) * h / rh, (tx - rx) * w / rw) if self.follow else (h / 2, w / 2)
        top, left, ch, cw = win = crop_window((h, w), (h // u, w // u), centre)
        new = (ry + top * rh / h, rx + left * rw / w, ch * rh / h, cw * rw / w)
        return cut(previous, win), new

    def _step(
        self,
        crop: torch.Tensor,
        previous: torch.Tensor,
        k: int,
        name: str,
        overrides: dict[int, str],
        seed: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
        """``(output, view, prompts)`` of step ``k``, output and view ``(1, 3, P, P)``."""
        size = (int(previous.shape[-2]), int(previous.shape[-1]))  # every step is P x P
        if self.rec_type in ("nearest", "bicubic"):
            return pil_resize(crop, size, self.rec_type), crop, None
        if self.rec_type == "bicubic_iterated":
            out = self.run_model(crop, None, None, upsampled=False)
            return self._to_size(out, size), crop, None
        view = pil_resize(crop, size, "bicubic")  # CoZ's k_input.png
        views = [previous, view] if self.rec_type == "recursive_multiscale" else [view]
        texts = self.ask(views, k, name, overrides)
        gen = self.generator(seed, k)
        if self.backbone.refines_upsampled:
            out = self.run_model(view, texts, gen, upsampled=True)
        else:
            lr = crop
            if self.rec_type == "onestep":  # the backbone's own input size, P // u
                lr = pil_resize(crop, (size[0] // self.upscale, size[1] // self.upscale))
            out = self._to_size(self.run_model(lr, texts, gen, upsampled=False), size)
        out = to_8bit(out, self.quantize)
        if self.align != "none":
            out = to_8bit(align_colors(out, view, self.align, self.wavelet_levels), self.quantize)
        return out, view, texts

    @staticmethod
    def _to_size(out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``out`` resized to ``size`` by PIL bicubic when ``u * (P // u) != P``."""
        return out if tuple(out.shape[-2:]) == size else pil_resize(out, size, "bicubic")
