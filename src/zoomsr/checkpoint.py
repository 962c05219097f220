"""Loading a trained backbone from a zoomsr checkpoint, without unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZoomSRError(
            f"checkpoint not found: '{path}'. Training runs keep theirs in "
            "runs/train/<run>/checkpoints/ (last.ckpt, best-*.ckpt)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with foreign objects, or not a checkpoint at all
        raise ZoomSRError(f"cannot read checkpoint '{path}' safely: {err}") from err


def load_backbone(
    path: str | Path, device: torch.device | str = "cpu", use_ema: bool = True
) -> Backbone:
    """Rebuild the backbone a training run saved, with its EMA weights by default.

    Raises:
        ZoomSRError: the file is missing, unreadable, or not a zoomsr training checkpoint.
    """
    ckpt = read_checkpoint(path)
    text = (ckpt.get("zoomsr") or {}).get("backbone_config")
    config = OmegaConf.create(text) if isinstance(text, str) else None
    if config is None or "_target_" not in config:
        raise ZoomSRError(f"'{path}' is not a zoomsr training checkpoint (no backbone config).")
    # The config names a class to build: accept zoomsr's own backbones only, so a crafted
    # checkpoint cannot make us call an arbitrary function.
    if not str(config["_target_"]).startswith("zoomsr.backbones."):
        raise ZoomSRError(f"'{path}' names a backbone outside zoomsr: {config['_target_']}")
    backbone: Backbone = instantiate(config)
    if use_ema and "ema" in ckpt:
        state = ckpt["ema"]["shadow"]
    else:
        prefix = "backbone."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    backbone.load_trainable_state_dict(state)
    return backbone.to(device).eval()
