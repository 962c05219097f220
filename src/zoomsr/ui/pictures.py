"""Pictures the page shows beside infer.py's files: the zoom map (where each step will look),
each step with the next step's region drawn, and the stitched layouts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw

from zoomsr.data.io import to_uint8
from zoomsr.zoom.engine import ZoomResult, ZoomStep
from zoomsr.zoom.panels import strip

STITCH_LAYOUTS = ("row", "column", "grid")
# Copied from zoom/panels.py (overview.png's palette), so the map and overview.png agree.
_COLOURS = ["#ff3b30", "#ffcc00", "#34c759", "#00c7be", "#007aff", "#af52de", "#ff2d55"]


def _pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(img.detach().cpu()).permute(1, 2, 0).numpy())


def relative_box(outer: Sequence[float], inner: Sequence[float]) -> tuple[float, ...]:
    """``inner`` (normalized in the preprocessed image) in coordinates of the view ``outer``."""
    x0, y0, x1, y1 = outer
    w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
    return ((inner[0] - x0) / w, (inner[1] - y0) / h, (inner[2] - x0) / w, (inner[3] - y0) / h)


def _rectangle(draw: ImageDraw.ImageDraw, box, size, colour: str, line: int) -> None:
    w, h = size
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w - 1, box[3] * h - 1
    draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=line)


def zoom_map(
    steps: list[ZoomStep], point: tuple[float, float] | None, min_side: int = 384
) -> Image.Image:
    """Step 0 with every later step's region outlined (one colour a step) and the zoom point
    marked; enlarged to at least ``min_side`` px so small process sizes stay clickable (a click
    maps back through the normalized coordinates, whatever the size)."""
    base = _pil(steps[0].output)
    if min(base.size) < min_side:
        factor = -(-min_side // min(base.size))
        base = base.resize((base.width * factor, base.height * factor), Image.NEAREST)
    draw = ImageDraw.Draw(base)
    line = max(2, base.width // 200)
    for step in steps[1:]:
        _rectangle(draw, step.box, base.size, _COLOURS[(step.index - 1) % len(_COLOURS)], line)
    px, py = point if point is not None else (0.5, 0.5)
    x, y, r = px * base.width, py * base.height, 3 * line
    draw.line([x - r, y, x + r, y], fill="white", width=line)
    draw.line([x, y - r, x, y + r], fill="white", width=line)
    return base


def with_next_region(result: ZoomResult) -> list[Image.Image]:
    """Every step's output with the region the next step zooms into drawn on it."""
    images = []
    for k, step in enumerate(result.steps):
        img = _pil(step.output)
        if k + 1 < len(result.steps):
            nxt = result.steps[k + 1]
            box = relative_box(step.box, nxt.box)
            colour = _COLOURS[(nxt.index - 1) % len(_COLOURS)]
            _rectangle(ImageDraw.Draw(img), box, img.size, colour, max(2, img.width // 128))
        images.append(img)
    return images


def stitch(result: ZoomResult, layout: str = "row", gap: int = 4) -> Image.Image:
    """All scales side by side: ``row`` (infer.py's ``strip.png``), ``column`` or ``grid``."""
    if layout == "row":
        return strip(result, gap=gap)
    tiles = [_pil(s.output) for s in result.steps]
    side = tiles[0].height
    tiles = [t if t.height == side else t.resize((side, side)) for t in tiles]
    cols = 1 if layout == "column" else max(1, round(len(tiles) ** 0.5 + 0.49))
    rows = -(-len(tiles) // cols)
    canvas = Image.new(
        "RGB", (cols * side + gap * (cols - 1), rows * side + gap * (rows - 1)), "white"
    )
    for i, tile in enumerate(tiles):
        canvas.paste(tile, ((i % cols) * (side + gap), (i // cols) * (side + gap)))
    return canvas


def to_pil(img: torch.Tensor) -> Image.Image:
    return _pil(img)
