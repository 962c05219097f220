"""Where a chain zooms: preprocessing of the input and the crop window of each step.

Coordinates: a zoom target is a point ``(x, y)`` in normalized coordinates of the
preprocessed image (``0`` left/top, ``1`` right/bottom). A step's crop is centred on the
target's position in the image it cuts from, then clamped inside that image, so a target near
an edge still gets a full-size crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from zoomsr.errors import ZoomSRError
from zoomsr.zoom.resize import pil_resize

#: ``(top, left, height, width)`` in pixels.
Window = tuple[int, int, int, int]


def preprocess(
    img: torch.Tensor, process_size: int, resize: bool = True, center_crop: bool = True
) -> torch.Tensor:
    """CoZ's ``resize_and_center_crop``: short side to ``process_size`` with PIL's Lanczos
    (sides ``int(side * process_size / short side)``), then the centre square.

    Args:
        img: ``(3, H, W)`` in [0, 1].
        process_size: side of the working square (default 512 in the chain).
        resize: scale so that the short side is ``process_size`` (up or down); an image whose
            short side already is ``process_size`` is left as it is.
        center_crop: cut the centre ``process_size`` square (left ``(W - P) // 2``).

    Returns:
        ``(3, H', W')`` in [0, 1].

    Raises:
        ZoomSRError: ``center_crop`` without ``resize`` on an image smaller than the crop.
    """
    h, w = img.shape[-2:]
    if resize and min(h, w) != process_size:
        ratio = process_size / min(w, h)
        # CoZ's int() sides; never below P (PIL would pad a short crop with black)
        size = (max(process_size, int(h * ratio)), max(process_size, int(w * ratio)))
        img = pil_resize(img, size, "lanczos")
    if center_crop:
        h, w = img.shape[-2:]
        if min(h, w) < process_size:
            raise ZoomSRError(
                f"image is {w}x{h}, smaller than the {process_size}x{process_size} crop: "
                "set zoom.resize=true or a smaller zoom.process_size."
            )
        top, left = (h - process_size) // 2, (w - process_size) // 2
        img = img[..., top : top + process_size, left : left + process_size]
    return img


def zoom_point(
    box: Sequence[float] | None = None, point: Sequence[float] | None = None
) -> tuple[float, float]:
    """The normalized zoom target: the centre of ``box`` ``[x0, y0, x1, y1]``, or ``point``
    ``[x, y]``, or the image centre when both are None.

    Raises:
        ZoomSRError: both given, a wrong length, or coordinates outside ``[0, 1]`` / empty box.
    """
    if box is not None and point is not None:
        raise ZoomSRError("give zoom.box or zoom.point, not both.")
    if box is not None:
        box = [float(v) for v in box]
        if len(box) != 4:
            raise ZoomSRError(f"zoom.box must be [x0, y0, x1, y1] in [0, 1], got {box}.")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ZoomSRError(
                f"zoom.box {box} is outside the image or empty: need 0 <= x0 < x1 <= 1 and "
                "0 <= y0 < y1 <= 1 (normalized coordinates of the preprocessed image)."
            )
        return (x0 + x1) / 2, (y0 + y1) / 2
    if point is not None:
        point = [float(v) for v in point]
        if len(point) != 2 or not all(0 <= v <= 1 for v in point):
            raise ZoomSRError(f"zoom.point must be [x, y] with both in [0, 1], got {point}.")
        return point[0], point[1]
    return 0.5, 0.5


def crop_window(
    size: tuple[int, int], crop: tuple[int, int], centre: tuple[float, float]
) -> Window:
    """The ``crop`` ``(h, w)`` window of an image of ``size`` ``(H, W)`` centred on ``centre``
    ``(y, x)`` (pixels, continuous), clamped inside the image.

    The centre of the image gives ``((H - h) // 2, (W - w) // 2)``, PIL's and CoZ's centre crop.
    """
    (big_h, big_w), (h, w) = size, crop
    if not (1 <= h <= big_h and 1 <= w <= big_w):
        raise ZoomSRError(f"a {w}x{h} crop does not fit a {big_w}x{big_h} image.")
    top = min(max(math.floor(centre[0] - h / 2), 0), big_h - h)
    left = min(max(math.floor(centre[1] - w / 2), 0), big_w - w)
    return top, left, h, w


def cut(img: torch.Tensor, window: Window) -> torch.Tensor:
    """``img[..., top:top+h, left:left+w]``."""
    top, left, h, w = window
    return img[..., top : top + h, left : left + w]
