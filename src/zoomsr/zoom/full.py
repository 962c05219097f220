"""Full-image zoom: the whole image upscaled by ``u ** steps`` in ``steps`` tiled backbone steps
(DESIGN.md, protocol 2). With ``steps=1`` it is plain single-step super-resolution."""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.chain import PromptFn, ZoomResult, ZoomStep, ask_prompts, run_step, step_factor
from zoomsr.zoom.memory import MemoryMode, ModelPlacer
from zoomsr.zoom.tiling import check_tiles


class FullImage:
    """Upscale a whole image, step after step, each step over overlapping tiles.

    Args:
        upscale: factor of one step; None (default) takes the backbone's ``scale``.
        steps: number of steps (default 1: single-step SR, the output is ``u`` times larger).
        tile_size: tile side in LR pixels; None (default): the whole image in one call.
        tile_overlap: tile overlap in LR pixels (default 32).
        memory: ``plain`` (default) | ``swap``: models on the CPU when idle.
        seed: torch is seeded with ``seed + k`` before step ``k`` (default 0); None: not seeded.
    """

    def __init__(
        self,
        upscale: int | None = None,
        steps: int = 1,
        tile_size: int | None = None,
        tile_overlap: int = 32,
        memory: MemoryMode = "plain",
        seed: int | None = 0,
    ) -> None:
        if steps < 1:
            raise ZoomSRError(f"zoom.steps must be >= 1, got {steps}.")
        if memory not in ("plain", "swap"):
            raise ZoomSRError(f"zoom.memory must be plain | swap, got {memory}.")
        check_tiles(tile_size, tile_overlap)
        self.upscale, self.steps = upscale, steps
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.memory, self.seed = memory, seed

    needs_model = True

    def run(
        self,
        image: torch.Tensor,
        backbone: Backbone,
        prompt_fn: PromptFn | None = None,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> ZoomResult:
        """``image`` ``(3, H, W)`` in [0, 1] -> scales ``u**0 .. u**steps`` of the whole image."""
        u = step_factor(self.upscale, backbone)
        if u != backbone.scale:
            raise ZoomSRError(f"zoom.upscale={u} but the backbone upscales by {backbone.scale}.")
        placer = ModelPlacer(device, self.memory)
        placer.setup(backbone, prompt_fn if isinstance(prompt_fn, nn.Module) else None)
        current = image[None].to(device)
        whole = (0.0, 0.0, 1.0, 1.0)
        result = ZoomResult([ZoomStep(0, None, image.cpu(), whole, 1)])
        for k in tqdm(range(1, self.steps + 1), desc="zoom", leave=False, disable=not progress):
            prompts = ask_prompts(prompt_fn, [current], k, placer)
            seed = None if self.seed is None else self.seed + k
            out = run_step(
                backbone, current, prompts, placer, self.tile_size, self.tile_overlap, seed
            )
            result.steps.append(ZoomStep(k, current[0].cpu(), out[0].cpu(), whole, u**k, prompts))
            current = out
        return result
