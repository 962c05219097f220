"""Full-image zoom: the whole image upscaled by ``u ** steps`` in ``steps`` tiled backbone steps
(DESIGN.md, protocol 2). With ``steps=1`` it is plain single-step super-resolution, the
``benchmark`` and ``paired`` protocols' step."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.color import AlignMethod, align_colors
from zoomsr.zoom.memory import MemoryMode
from zoomsr.zoom.resize import Quantize, to_8bit
from zoomsr.zoom.step import (
    EngineBase,
    PromptFn,
    ZoomStep,
    step_factor,
)


class FullImageEngine(EngineBase):
    """Upscale a whole image, step after step, each step over overlapping tiles.

    Args:
        upscale: factor of one step; None (default) takes the backbone's ``scale``.
        steps: number of steps (default 1: single-step SR, the output is ``u`` times larger).
        align: colour fix of each output against the step's input (upsampled to the output
            size, CoZ's reference): ``none`` (default) | ``adain`` | ``wavelet``.
        wavelet_levels: levels of the wavelet fix (default 5).
        tile_size: tile side in LR pixels; None (default): the whole image in one call (or the
            backbone's ``max_input_size``).
        tile_overlap: tile overlap in LR pixels (default 32).
        memory: ``plain`` (default) | ``swap``: models on the CPU when idle.
        quantize: 8-bit conversion of each output: ``none`` (default) | ``round`` | ``truncate``.
        seed: step ``k``'s draws come from a generator seeded ``seed + k`` (default 0).
        backbone, prompt_source, device: the model, the text source (sees the step's input),
            where they run.
    """

    def __init__(
        self,
        upscale: int | None = None,
        steps: int = 1,
        align: AlignMethod = "none",
        wavelet_levels: int = 5,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        memory: MemoryMode = "plain",
        quantize: Quantize = "none",
        seed: int | None = 0,
        backbone: Backbone | None = None,
        prompt_source: PromptFn | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if backbone is None:
            raise ZoomSRError("zoom=full needs a backbone (ckpt=... or backbone=bicubic).")
        u = step_factor(upscale, backbone)
        if u != backbone.scale:
            raise ZoomSRError(f"zoom.upscale={u} but the backbone upscales by {backbone.scale}.")
        super().__init__(u, steps, align, wavelet_levels, tile_size, tile_overlap, memory,
                         quantize, seed, backbone, prompt_source, device)  # fmt: skip

    def _iter(
        self, image: torch.Tensor, name: str, overrides: dict[int, str], seed: int | None
    ) -> Iterator[ZoomStep]:
        """:meth:`~zoomsr.zoom.step.EngineBase.iter_steps` over the whole image ``(C, H, W)``
        (``C`` 3, or 1: gray through an RGB model); the prompt source sees the step's input."""
        whole = (0.0, 0.0, 1.0, 1.0)
        yield ZoomStep(0, None, image.cpu(), whole, 1)
        current = image[None].to(self.device)
        for k in range(1, self.steps + 1):
            rgb = current.expand(-1, 3, -1, -1) if current.shape[1] == 1 else current
            texts = self.ask([rgb], k, name, overrides)
            out = self.run_model(current, texts, self.generator(seed, k), upsampled=False)
            if self.align != "none":
                out = align_colors(out, current, self.align, self.wavelet_levels)
            out = to_8bit(out, self.quantize)
            yield ZoomStep(k, current[0].cpu(), out[0].cpu(), whole, self.upscale**k, texts)
            current = out
