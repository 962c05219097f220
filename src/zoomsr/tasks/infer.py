"""``infer.py``: upscale an image or a folder of images with a trained backbone or a baseline.

Writes ``<out_dir>/<name>_x<scale>.png`` per image as it goes; images already written are
skipped on a rerun, so an interrupted job resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from zoomsr.backbones.base import Backbone
from zoomsr.data.io import IMAGE_EXTENSIONS, list_images, load_image, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.tasks.common import output_dir, resolve_device, set_offline_defaults

log = logging.getLogger("zoomsr")


def load_inference_backbone(cfg: DictConfig, device: torch.device) -> Backbone:
    """The checkpoint's backbone (``ckpt=``), or the configured non-learned one."""
    if cfg.get("ckpt"):
        from zoomsr.checkpoint import load_backbone

        return load_backbone(cfg.ckpt, device=device)
    backbone = instantiate(cfg.backbone)
    if backbone.is_learned:
        raise ZoomSRError(
            "a learned backbone needs its weights: pass ckpt=<run>/checkpoints/last.ckpt"
        )
    return backbone.to(device).eval()


def upscale_image(backbone: Backbone, lr: torch.Tensor) -> torch.Tensor:
    """``(3, h, w)`` in [0, 1] -> ``(3, h*s, w*s)``; pads by reflection to the backbone's
    ``size_multiple`` and crops back."""
    h, w = lr.shape[-2:]
    m = backbone.size_multiple
    pad_h, pad_w = (-h) % m, (-w) % m
    x = lr[None]
    if pad_h or pad_w:
        x = F.pad(
            x,
            (0, pad_w, 0, pad_h),
            mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate",
        )
    with torch.no_grad():
        sr = backbone.upscale(x)
    s = backbone.scale
    return sr[0, :, : h * s, : w * s].clamp(0, 1)


def input_files(path: str) -> list[Path]:
    p = Path(path).expanduser()
    if p.is_dir():
        return list_images(p, "input folder")
    if not p.exists():
        raise ZoomSRError(f"input not found: '{p}'. Pass input=<image file or folder>.")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ZoomSRError(f"input '{p}' is not an image ({', '.join(IMAGE_EXTENSIONS)}).")
    return [p]


def run(cfg: DictConfig) -> dict:
    """Upscale ``cfg.input`` (file or folder). Returns ``{"outputs": [paths], "out_dir": …}``."""
    set_offline_defaults()
    files = input_files(cfg.input)
    out = output_dir(cfg)
    device = resolve_device(cfg.device)
    backbone = load_inference_backbone(cfg, device)
    torch.manual_seed(cfg.seed)
    outputs = []
    for path in tqdm(files, desc=f"x{backbone.scale}", unit="img", dynamic_ncols=True):
        target = out / f"{path.stem}_x{backbone.scale}.png"
        if not target.exists():
            lr = load_image(path).to(device)
            save_image(upscale_image(backbone, lr), target)
        outputs.append(str(target))
    print(f"[zoomsr] {len(outputs)} image(s) in {out}")
    return {"outputs": outputs, "out_dir": str(out)}
