"""The zoom engine: the one object ``infer.py``, every evaluation protocol and the web UI run.

Two modes, one object each, built only from the ``zoom`` config group:

- :class:`~zoomsr.zoom.chain.ChainEngine` (``zoom=chain``): Chain-of-Zoom into the centre (or a
  point) of an image, step for step as CoZ's ``inference_coz.py``;
- :class:`~zoomsr.zoom.full.FullImageEngine` (``zoom=full``): the whole image, tiled, in
  ``steps`` steps (``steps=1``: single-step SR).

Use::

    engine = build_engine(cfg.zoom, backbone, prompt_source, device="cuda")
    for step in engine.iter_steps(image, "photo", prompts=None, seed=0):
        step.index, step.input, step.output, step.box, step.magnification, step.prompts

``image`` is ``(3, H, W)`` in [0, 1]; ``name`` is passed explicitly (the prompt source looks the
per-image user text up by it); ``prompts`` overrides the prompt source's text per step
(``{k: text}`` or a list, step 1 first); ``seed`` (default the engine's) seeds step ``k`` with
``seed + k``. Every :class:`ZoomStep` holds CPU tensors ``(3, h, w)`` in [0, 1]. Callers differ
only in what goes in and what they write out: the same settings, image and seed give the same
step images bit for bit, whoever calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.instantiate import instantiate_user
from zoomsr.zoom.chain import MODEL_FREE, REC_TYPES, ChainEngine
from zoomsr.zoom.full import FullImageEngine
from zoomsr.zoom.step import PromptFn, PromptOverrides, ZoomResult, ZoomStep

__all__ = [
    "MODEL_FREE",
    "REC_TYPES",
    "ChainEngine",
    "Engine",
    "FullImageEngine",
    "PromptFn",
    "PromptOverrides",
    "ZoomResult",
    "ZoomStep",
    "build_engine",
    "needs_backbone",
]

Engine = ChainEngine | FullImageEngine


def needs_backbone(zoom_cfg: Mapping[str, Any]) -> bool:
    """Whether the ``zoom`` config runs a model (False for the model-free chain types), so a
    caller loads a checkpoint only when it is needed."""
    return str(zoom_cfg.get("rec_type", "")) not in MODEL_FREE


def build_engine(
    zoom_cfg: Mapping[str, Any],
    backbone: Backbone | None = None,
    prompt_source: PromptFn | None = None,
    device: torch.device | str = "cpu",
    **overrides: Any,
) -> Engine:
    """The ``zoom`` group's engine (``_target_`` ChainEngine or FullImageEngine) on ``backbone``
    and ``prompt_source``; ``overrides`` replace config values (a protocol's ``steps``).

    Raises:
        ZoomSRError: a bad value in the config (unwrapped from Hydra's exception).
    """
    factory = instantiate_user(zoom_cfg, _partial_=True)
    engine = factory(backbone=backbone, prompt_source=prompt_source, device=device, **overrides)
    if not isinstance(engine, ChainEngine | FullImageEngine):
        raise ZoomSRError(f"zoom._target_ must be a zoomsr zoom engine, got {type(engine)}.")
    return engine
