"""Pictures of a zoom result: all scales side by side, and each step's box on the original."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from zoomsr.data.imresize import imresize
from zoomsr.data.io import to_uint8
from zoomsr.zoom.step import ZoomResult

_COLOURS = ["#ff3b30", "#ffcc00", "#34c759", "#00c7be", "#007aff", "#af52de", "#ff2d55"]


def _pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(img.detach().cpu()).permute(1, 2, 0).numpy())


def strip(result: ZoomResult, height: int | None = None, gap: int = 4) -> Image.Image:
    """Every scale's output, left to right (step 0 first), each resized to ``height`` (default:
    step 0's height) keeping its aspect, on white with ``gap`` pixels between."""
    height = height or result.steps[0].output.shape[-2]
    tiles = []
    for step in result.steps:
        out = step.output
        if out.shape[-2] != height:
            width = max(1, round(out.shape[-1] * height / out.shape[-2]))
            out = imresize(out, out_size=(height, width)).clamp(0, 1)
        tiles.append(_pil(out))
    canvas = Image.new(
        "RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), "white"
    )
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + gap
    return canvas


def overview(result: ZoomResult, line: int = 2) -> Image.Image:
    """Step 0 (the preprocessed input) with each later step's box outlined, one colour a step."""
    base = _pil(result.steps[0].output)
    draw = ImageDraw.Draw(base)
    w, h = base.size
    for step in result.steps[1:]:
        x0, y0, x1, y1 = step.box
        box = [x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1)]
        draw.rectangle(box, outline=_COLOURS[(step.index - 1) % len(_COLOURS)], width=line)
    return base
