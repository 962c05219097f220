"""Reading and writing images as float tensors in [0, 1].

Every image that enters zoomsr goes through :func:`load_image`, so grayscale, RGBA, palette,
16-bit and CMYK files all arrive in one of two forms: RGB ``(3, H, W)`` or, when asked to keep
it, single-channel ``(1, H, W)``.
"""

from __future__ import annotations

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
    """PIL image of any mode -> float64 array in [0, 1], (H, W) if gray and kept else (H, W, 3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0)
        arr = np.clip(arr, 0.0, 1.0)
        return arr if keep_gray else np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)
        return arr if keep_gray else np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("L", "1", "LA") or (img.mode == "P" and _palette_is_gray(img)):
        gray = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        return gray if keep_gray else np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "PA", "P") and img.mode != "RGB":
        # Composite transparency over white, the way viewers show it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "RGB;16" or img.mode.startswith("RGB") and img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


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
        with Image.open(path) as img:
            img.load()
            arr = _to_array(img, keep_gray)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
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
    """Save a ``(C, H, W)`` float image in [0, 1] (C = 1 or 3) as an 8-bit file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img.detach().cpu()).permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)
    return path
