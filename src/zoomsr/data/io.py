"""Reading and writing images as float tensors in [0, 1].

Every image that enters zoomsr goes through :func:`load_image`, so grayscale, RGBA, palette,
16-bit and CMYK files all arrive in one of two forms: RGB ``(3, H, W)`` or, when asked to keep
it, single-channel ``(1, H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from zoomsr.errors import ZoomSRError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Sorted image files directly inside ``folder``.

    Raises:
        ZoomSRError: the folder does not exist, is not a folder, or holds no image.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ZoomSRError(
            f"{what} not found: '{folder}'. Check the path (relative paths are "
            "resolved from the directory you ran the command in)."
        )
    if not folder.is_dir():
        raise ZoomSRError(f"{what} '{folder}' is a file, not a folder of images.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ZoomSRError(
            f"{what} '{folder}' holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})."
        )
    return files


def _to_array(img: Image.Image, keep_gray: bool) -> np.ndarray:
    """PIL image of any mode -> float32 array in [0, 1], (H, W) if gray and kept else (H, W, 3).

    float32 throughout, divided in place (never a float64 copy of a whole image): ``x / 255``
    of exact integers is correctly rounded in float32 as well, so the values equal a float64
    division cast down."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float32)
        arr /= np.float32(65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0)
        np.clip(arr, 0.0, 1.0, out=arr)
        return arr if keep_gray else np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return arr if keep_gray else np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("L", "1", "LA") or (img.mode == "P" and _palette_is_gray(img)):
        gray = np.asarray(img.convert("L"))
        return _unit(gray if keep_gray else np.repeat(gray[..., None], 3, axis=2))
    if img.mode in ("RGBA", "PA", "P") and img.mode != "RGB":
        # Composite transparency over white, the way viewers show it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "RGB;16" or img.mode.startswith("RGB") and img.mode != "RGB":
        img = img.convert("RGB")
    return _unit(np.asarray(img.convert("RGB")))


def _unit(arr: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], divided in place."""
    out = arr.astype(np.float32)
    out /= np.float32(255.0)
    return out


#: Default largest image zoomsr loads, in pixels (width x height): 8192 x 8192.
DEFAULT_MAX_PIXELS = 8192 * 8192


def max_pixels() -> int | None:
    """The pixel limit: ``$ZOOMSR_MAX_PIXELS`` (``0``: no limit), else :data:`DEFAULT_MAX_PIXELS`.

    A 8192 x 8192 RGB image is 0.8 GB as float32; every zoom step holds several such tensors.
    """
    raw = os.environ.get("ZOOMSR_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ZoomSRError(
            f"ZOOMSR_MAX_PIXELS='{raw}' is not a number of pixels (e.g. 200000000; 0: no limit)."
        ) from None
    return None if value <= 0 else value


def check_size(path: Path, size: tuple[int, int], what: str = "") -> None:
    """Raise one line naming ``path`` when ``size`` (w, h) exceeds :func:`max_pixels`
    (``what``: e.g. ``"output of"`` for the size an image would be upscaled to)."""
    limit = max_pixels()
    w, h = size
    if limit is not None and w * h > limit:
        raise ZoomSRError(
            f"{what + ' ' if what else ''}image '{path}' is {w}x{h} "
            f"({w * h / 1e6:.0f} megapixels), above the limit of "
            f"{limit / 1e6:.0f} megapixels: set ZOOMSR_MAX_PIXELS={w * h} (or 0: no limit) to "
            "load it, or downscale the file."
        )


def _palette_is_gray(img: Image.Image) -> bool:
    if "transparency" in img.info:
        return False
    palette = img.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def load_image(path: str | Path, keep_gray: bool = False) -> torch.Tensor:
    """Load an image file as a float32 tensor in [0, 1].

    Args:
        path: image file of any format PIL reads; 16-bit files keep their precision.
        keep_gray: return single-channel images as ``(1, H, W)`` instead of repeating them
            to RGB. Evaluation keeps them: the literature compares a gray image as it is.

    Returns:
        ``(3, H, W)`` RGB, or ``(1, H, W)`` for a gray image when ``keep_gray``.

    Raises:
        ZoomSRError: the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise ZoomSRError(f"image not found: '{path}'.")
    try:
        # zoomsr applies its own limit (named, with its override) instead of PIL's bomb check.
        with _pil_limit_off(), Image.open(path) as img:
            check_size(path, img.size)
            img.load()
            arr = _to_array(img, keep_gray)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ZoomSRError(
            f"cannot read image '{path}': {err}. Remove or replace the file."
        ) from err
    tensor = torch.from_numpy(arr).float()
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8, rounding half away from zero like MATLAB's im2uint8
    (``torch.round`` would round half to even)."""
    return torch.floor(img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] float image to the nearest 8-bit level (half away from zero), in float."""
    return torch.floor(img.clamp(0, 1) * 255.0 + 0.5) / 255.0


def save_image(img: torch.Tensor, path: str | Path) -> Path:
    """Save a ``(C, H, W)`` float image in [0, 1] (C = 1 or 3) as an 8-bit file, atomically
    (a temporary name, then renamed: a kill never leaves a truncated file at ``path``)."""
    from zoomsr.runfolder import save_pil_atomic

    arr = to_uint8(img.detach().cpu()).permute(1, 2, 0).numpy()
    return save_pil_atomic(Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr), path)


@contextmanager
def _pil_limit_off() -> Iterator[None]:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved
