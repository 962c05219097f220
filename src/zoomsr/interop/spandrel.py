"""``zoomsr import-spandrel``: a pretrained SR network spandrel detects -> a zoomsr checkpoint.

The checkpoint references the weight file by path (frozen pretrained weights are not copied)
and holds no weights of its own: ``evaluate.py ckpt=``, ``infer.py ckpt=`` and ``zoomsr ui
--ckpt`` then offer the network like any trained backbone. ``backbone=spandrel
backbone.path=FILE`` does the same without a checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoomsr.backbones.spandrel import Spandrel
from zoomsr.errors import exit_on_user_error


def import_spandrel(
    model: str | Path, out: str | Path, tile_size: int | None = None, tile_overlap: int = 16
) -> Path:
    """Check that spandrel detects ``model`` and write ``out/<stem>.ckpt``; returns its path."""
    path = Path(model).expanduser().resolve()
    backbone = Spandrel(str(path), tile_size=tile_size, tile_overlap=tile_overlap)
    config = {
        "_target_": "zoomsr.backbones.spandrel.Spandrel",
        "path": str(path),
        "scale": backbone.scale,
        "tile_size": tile_size,
        "tile_overlap": tile_overlap,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / f"{path.stem}.ckpt"
    torch.save(
        {
            "state_dict": {},  # the network is read from `path` at every load
            "global_step": 0,
            "zoomsr": {
                "backbone_config": OmegaConf.to_yaml(OmegaConf.create(config)),
                "architecture": backbone.architecture,
            },
        },
        ckpt,
    )
    return ckpt


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr import-spandrel",
        description="Write a zoomsr checkpoint OUT/<name>.ckpt that loads a pretrained SR network "
        "spandrel detects (Real-ESRGAN, SwinIR, HAT, DAT, ...) from its file.",
    )
    parser.add_argument("--model", required=True, help="the .pth / .safetensors weight file")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tile-size", type=int, default=None, help="LR tile side (default none)")
    parser.add_argument("--tile-overlap", type=int, default=16)
    args = parser.parse_args(argv)
    ckpt = import_spandrel(args.model, args.out, args.tile_size, args.tile_overlap)
    print(f"[zoomsr] wrote {ckpt}; e.g. zoomsr ui --ckpt {ckpt}, or python infer.py ckpt={ckpt}")
    return 0
