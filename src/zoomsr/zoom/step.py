"""What the two zoom engines share: a step's record, the prompts of a step, the seeded and tiled
model call, and where the models sit (memory modes). See :mod:`zoomsr.zoom.engine`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.color import AlignMethod
from zoomsr.zoom.memory import MemoryMode, ModelPlacer
from zoomsr.zoom.resize import Quantize
from zoomsr.zoom.tiling import check_tiles, tiled

log = logging.getLogger("zoomsr")

ALIGNS = ("none", "adain", "wavelet")
QUANTIZE = ("truncate", "round", "none")
#: per-step prompt overrides: ``{step: text}`` (1-based) or a list, step 1 first (None: ask)
PromptOverrides = Mapping[int, str | None] | Sequence[str | None] | None


class PromptFn(Protocol):
    """A prompt source: ``views`` are ``(B, 3, h, w)`` in [0, 1], widest first; ``names`` the
    images' names (per-image user text); returns one text per image. An ``nn.Module`` source
    is offloaded in ``swap`` memory mode."""

    def __call__(
        self, views: list[torch.Tensor], step: int, names: Sequence[str] | None = None
    ) -> list[str]: ...


@dataclass
class ZoomStep:
    """One scale of a run. ``index`` 0 is the (preprocessed) input: ``input`` None.

    ``input``: ``(3, h, w)`` what the step worked from (chain: CoZ's ``k_input.png``, the zoomed
    crop upsampled to ``P x P``; nearest/bicubic: the crop); ``output``: ``(3, H, W)``; both on
    the CPU, in [0, 1]. ``box``: the region of the step-0 image the output shows, normalized
    ``(x0, y0, x1, y1)``. ``magnification``: ``u ** index``. ``prompts``: one text per image
    (None: no prompt).
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
            {"step": s.index, "box": list(s.box), "magnification": s.magnification,
             "prompts": s.prompts}
            for s in self.steps
        ]  # fmt: skip


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


def overrides_by_step(prompts: PromptOverrides) -> dict[int, str]:
    """``{step: text}`` of per-step prompt overrides (a list is step 1 first; None skipped)."""
    if prompts is None:
        return {}
    if isinstance(prompts, Mapping):
        items = prompts.items()
    elif isinstance(prompts, str):
        raise ZoomSRError("prompts= takes one text per step (a list or {step: text}), not a str.")
    else:
        items = enumerate(prompts, start=1)
    return {int(k): str(v) for k, v in items if v is not None}


class EngineBase:
    """Settings and model handling common to :class:`~zoomsr.zoom.chain.ChainEngine` and
    :class:`~zoomsr.zoom.full.FullImageEngine` (their docstrings list the arguments)."""

    def __init__(
        self,
        upscale: int | None,
        steps: int,
        align: AlignMethod,
        wavelet_levels: int,
        tile_size: int | None,
        tile_overlap: int,
        memory: MemoryMode,
        quantize: Quantize,
        seed: int | None,
        backbone: Backbone | None,
        prompt_source: PromptFn | None,
        device: torch.device | str,
    ) -> None:
        if steps < 1:
            raise ZoomSRError(f"zoom.steps must be >= 1, got {steps}.")
        if align not in ALIGNS:
            raise ZoomSRError(f"align must be none | adain | wavelet, got {align}.")
        if memory not in ("plain", "swap"):
            raise ZoomSRError(f"zoom.memory must be plain | swap, got {memory}.")
        if quantize not in QUANTIZE:
            raise ZoomSRError(f"zoom.quantize must be truncate | round | none, got {quantize}.")
        check_tiles(tile_size, tile_overlap)
        self.upscale, self.steps = upscale, steps
        self.align, self.wavelet_levels = align, wavelet_levels
        self.tile_size, self.tile_overlap = tile_size, tile_overlap
        self.memory, self.quantize, self.seed = memory, quantize, seed
        self.backbone, self.prompt_source = backbone, prompt_source
        self.device = torch.device(device)
        self.placer = ModelPlacer(self.device, memory)
        self.placer.setup(backbone, prompt_source if isinstance(prompt_source, nn.Module) else None)
        self._told_tiles = False

    def iter_steps(
        self,
        image: torch.Tensor,
        name: str,
        *,
        prompts: PromptOverrides = None,
        seed: int | None = None,
    ) -> Iterator[ZoomStep]:
        """Run the engine on ``image`` ``(3, H, W)`` in [0, 1]: ``steps + 1`` :class:`ZoomStep`,
        step 0 first, one at a time (a caller that writes each step and drops it holds one).

        Args:
            name: the image's name (the prompt source looks its per-image user text up by it).
            prompts: per-step texts used instead of the prompt source's (``{k: text}`` or a list,
                step 1 first).
            seed: this run's seed (default: the engine's ``seed``): step ``k`` draws from a
                generator seeded ``seed + k``.
        """
        seed = self.seed if seed is None else seed
        yield from self._iter(image, name, overrides_by_step(prompts), seed)

    def run(self, image: torch.Tensor, name: str, **kw: Any) -> ZoomResult:
        """All of :meth:`iter_steps` at once."""
        return ZoomResult(list(self.iter_steps(image, name, **kw)))

    def _iter(
        self, image: torch.Tensor, name: str, overrides: dict[int, str], seed: int | None
    ) -> Iterator[ZoomStep]:
        raise NotImplementedError

    def settings(self) -> dict:
        """The engine's settings as written to ``prompts.json`` / ``metrics.json``."""
        keys = ("upscale", "steps", "align", "tile_size", "tile_overlap", "quantize", "seed")
        return {k: getattr(self, k) for k in keys}

    def ask(
        self, views: list[torch.Tensor], step: int, name: str, overrides: dict[int, str]
    ) -> list[str] | None:
        """The step's prompts: the override, else the prompt source's text for ``views`` (the
        source's model on the device only meanwhile in swap mode), else None."""
        if step in overrides:
            return [overrides[step]] * views[0].shape[0]
        source = self.prompt_source
        if source is None:
            return None
        with self.placer.running(source if isinstance(source, nn.Module) else None):
            prompts = list(source(views, step=step, names=[name] * views[0].shape[0]))
        if len(prompts) != views[0].shape[0]:
            raise ZoomSRError(f"the prompt source gave {len(prompts)} prompts for one image.")
        return prompts

    def generator(self, seed: int | None, step: int) -> torch.Generator | None:
        """Step ``k``'s generator, seeded ``seed + k`` (None: the backbone's own seed)."""
        return None if seed is None else torch.Generator().manual_seed(int(seed) + step)

    def tile_for(self, side: int) -> tuple[int | None, int]:
        """``(tile_size, overlap)`` in LR pixels for an input of ``side`` pixels: the configured
        tiles, or the backbone's :attr:`~Backbone.max_input_size` when the input is larger
        (said once in the log)."""
        limit, tile = self.backbone.max_input_size, self.tile_size
        if limit is None or (tile or side) <= limit:
            return tile, self.tile_overlap
        if tile is not None:
            raise ZoomSRError(
                f"zoom.tile_size={tile} is larger than the {limit} px a side that "
                f"{type(self.backbone).__name__} takes: set zoom.tile_size<={limit}."
            )
        if not self._told_tiles:
            log.info("inputs of %d px exceed %s's %d px: tiles of %d px", side,
                     type(self.backbone).__name__, limit, limit)  # fmt: skip
            self._told_tiles = True
        return limit, min(self.tile_overlap, limit // 2)

    def run_model(
        self,
        x: torch.Tensor,
        prompts: list[str] | None,
        generator: torch.Generator | None,
        upsampled: bool,
    ) -> torch.Tensor:
        """One backbone call: ``upsampled`` -> :meth:`Backbone.refine_upsampled` on ``x`` (the
        output size), else :meth:`Backbone.upscale` on ``x`` (the LR); tiled where needed, the
        backbone on the device only meanwhile in swap mode. ``(B, C, H, W)`` in [0, 1]."""
        net = self.backbone
        s = net.scale
        if upsampled:
            tile, overlap = self.tile_for(-(-max(x.shape[-2:]) // s))
            tile, overlap = (None if tile is None else tile * s), overlap * s

            def step(t: torch.Tensor) -> torch.Tensor:
                return net.refine_upsampled(t, prompts, generator)

            scale = 1
        else:
            tile, overlap = self.tile_for(max(x.shape[-2:]))

            def step(t: torch.Tensor) -> torch.Tensor:
                return net.upscale(t, prompts, generator)

            scale = s
        with self.placer.running(net):
            return tiled(step, x.to(self.device), scale, tile, overlap)
