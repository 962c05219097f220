"""Datasets over image folders.

- :class:`HRFolderDataset`: training crops of HR images, degraded on the fly.
- :class:`PairedFolderDataset`: real LR/HR pairs (RealSR-style), aligned crops.
- :class:`BenchmarkDataset`: whole images for evaluation at one scale, the literature's way
  (HR cropped to a multiple of the scale; LR made by MATLAB bicubic or read from files).

Items are dicts: ``{"lr": (C, h, w), "hr": (C, h*s, w*s), "name": str}``, floats in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from zoomsr.data.bicubic import BicubicDegradation
from zoomsr.data.io import list_images, load_image
from zoomsr.errors import ZoomSRError
from zoomsr.runfolder import unique_names

Degradation = Callable[..., torch.Tensor]


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop ``(..., H, W)`` at the bottom/right so both sides are multiples of ``scale``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size x size`` crop of ``(..., H, W)`` (the whole side where it is smaller)."""
    h, w = img.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[..., top : top + size, left : left + size]


def random_flip_rot(*imgs: torch.Tensor, generator: torch.Generator | None = None):
    """The same random horizontal flip, vertical flip and transpose applied to every image."""
    hflip, vflip, rot = (torch.rand(3, generator=generator) < 0.5).tolist()
    out = []
    for img in imgs:
        if hflip:
            img = img.flip(-1)
        if vflip:
            img = img.flip(-2)
        if rot:
            img = img.transpose(-1, -2)
        out.append(img.contiguous())
    return out


class HRFolderDataset(Dataset):
    """Random HR crops with flips, and their LR made on the fly by ``degradation``.

    Args:
        hr_dir: folder of HR images (any size >= ``crop_size``).
        scale: zoom factor; ``crop_size`` must be a multiple of it.
        crop_size: HR crop side in pixels (default 128).
        degradation: callable ``(1, 3, H, W) -> (1, 3, H/scale, W/scale)``; MATLAB bicubic
            when None.
        augment: random flips and transposes (default True).
        repeat: how many times each image appears per epoch (for tiny folders).
    """

    def __init__(
        self,
        hr_dir: str | Path,
        scale: int = 4,
        crop_size: int = 128,
        degradation: Degradation | None = None,
        augment: bool = True,
        repeat: int = 1,
    ) -> None:
        if crop_size % scale:
            raise ZoomSRError(f"crop_size={crop_size} must be a multiple of scale={scale}.")
        self.files = list_images(hr_dir, "HR folder")
        self.scale, self.crop_size, self.augment, self.repeat = scale, crop_size, augment, repeat
        self.degradation = degradation or BicubicDegradation(scale)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def _load(self, path: Path) -> torch.Tensor:
        """The HR image of ``path``; subclasses may cache it."""
        return load_image(path)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index % len(self.files)]
        hr = self._load(path)
        h, w = hr.shape[-2:]
        if min(h, w) < self.crop_size:
            raise ZoomSRError(f"'{path}' is {w}x{h}, smaller than crop_size={self.crop_size}.")
        # Crops, flips and degradation all draw from torch's RNG, which Lightning seeds per
        # worker (seed_everything(workers=True)), so a seed fixes the whole data stream.
        top = int(torch.randint(0, h - self.crop_size + 1, ()))
        left = int(torch.randint(0, w - self.crop_size + 1, ()))
        hr = hr[:, top : top + self.crop_size, left : left + self.crop_size]
        if self.augment:
            (hr,) = random_flip_rot(hr)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        lr = self.degradation(hr[None], generator=generator)[0]
        return {"lr": lr, "hr": hr, "name": path.stem}


def _lr_folder(lr_dir: Path, scale: int) -> Path:
    """The folder holding LR files of ``scale``: ``lr_dir`` with ``{scale}`` filled, or its
    ``X{scale}`` / ``x{scale}`` subfolder (the EDSR benchmark layout), or ``lr_dir`` itself."""
    text = str(lr_dir)
    if "{scale}" in text:
        return Path(text.format(scale=scale))
    for sub in (f"X{scale}", f"x{scale}"):
        if (lr_dir / sub).is_dir():
            return lr_dir / sub
    return lr_dir


def match_lr_file(lr_files: list[Path], stem: str, scale: int) -> Path | None:
    """The LR file of HR ``stem``: same stem, or the stem with an ``x{scale}`` suffix."""
    pattern = re.compile(rf"^{re.escape(stem)}(_?[xX]{scale}|_LR{scale}|_LR)?$")
    for f in lr_files:
        if pattern.match(f.stem):
            return f
    return None


class BenchmarkDataset(Dataset):
    """Whole images for single-step evaluation at ``scale`` (benchmark protocol).

    HR is cropped to a multiple of ``scale``. LR is read from ``lr_dir`` when given (EDSR
    layout ``lr_dir/X{s}/{stem}x{s}.png``, or any folder with matching stems), else made as
    MATLAB ``imresize(hr, 1/scale)`` rounded to 8 bits. Gray images stay single-channel.

    Args:
        hr_dir: folder of HR images.
        scale: zoom factor.
        lr_dir: optional folder of given LR images (``{scale}`` in the path is filled in).
        max_images: use only the first N images (sorted by name).
        crop_size: optional centre crop of the HR (after modcrop), e.g. for quick validation.
        keep_gray: keep single-channel images as they are (the literature's convention).
    """

    def __init__(
        self,
        hr_dir: str | Path,
        scale: int,
        lr_dir: str | Path | None = None,
        max_images: int | None = None,
        crop_size: int | None = None,
        keep_gray: bool = True,
    ) -> None:
        self.files = list_images(hr_dir, "HR folder")[:max_images]
        self.names = unique_names(self.files)  # unique even for x.png + x.jpg (row keys)
        self.scale, self.crop_size, self.keep_gray = scale, crop_size, keep_gray
        self.lr_files: list[Path | None] = [None] * len(self.files)
        if lr_dir is not None and crop_size is not None:
            raise ZoomSRError("crop_size cannot be combined with given LR files (lr_dir).")
        if lr_dir is not None:
            folder = _lr_folder(Path(lr_dir).expanduser(), scale)
            candidates = list_images(folder, f"LR folder for x{scale}")
            for i, f in enumerate(self.files):
                self.lr_files[i] = match_lr_file(candidates, f.stem, scale)
                if self.lr_files[i] is None:
                    raise ZoomSRError(
                        f"no LR file for '{f.name}' in '{folder}' (looked for '{f.stem}.*' "
                        f"and '{f.stem}x{scale}.*')."
                    )
        self._degrade = BicubicDegradation(scale)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        hr = modcrop(load_image(self.files[index], keep_gray=self.keep_gray), self.scale)
        if self.crop_size is not None:
            hr = modcrop(center_crop(hr, self.crop_size), self.scale)
        lr_path = self.lr_files[index]
        if lr_path is None:
            lr = self._degrade(hr)
        else:
            lr = load_image(lr_path, keep_gray=self.keep_gray)
            if lr.shape[0] != hr.shape[0]:  # a gray HR with an RGB LR file or the reverse
                lr = lr.mean(0, keepdim=True) if lr.shape[0] == 3 else lr.expand(3, -1, -1)
            expect = (hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
            if tuple(lr.shape[-2:]) != expect:
                raise ZoomSRError(
                    f"LR '{lr_path}' is {lr.shape[-1]}x{lr.shape[-2]}, but HR "
                    f"'{self.files[index].name}' cropped to a multiple of {self.scale} needs "
                    f"{expect[1]}x{expect[0]}. Is it the x{self.scale} LR of that image?"
                )
        return {"lr": lr, "hr": hr, "name": self.names[index]}


class PairedFolderDataset(Dataset):
    """Real LR/HR pairs sharing a file name (RealSR-style), with aligned random crops.

    Args:
        hr_dir: folder of HR images.
        lr_dir: folder of LR images, each ``1/scale`` the size of its HR.
        scale: zoom factor between the pairs.
        crop_size: HR crop side for training, or None for whole images.
        augment: random flips and transposes.
    """

    def __init__(
        self,
        hr_dir: str | Path,
        lr_dir: str | Path,
        scale: int = 4,
        crop_size: int | None = None,
        augment: bool = False,
    ) -> None:
        self.hr_files = list_images(hr_dir, "HR folder")
        self.names = unique_names(self.hr_files)  # unique even for x.png + x.jpg (row keys)
        lr_files = list_images(_lr_folder(Path(lr_dir), scale), "LR folder")
        self.lr_files = []
        for f in self.hr_files:
            match = match_lr_file(lr_files, f.stem, scale)
            if match is None:
                raise ZoomSRError(f"no LR image for '{f.name}' in '{lr_dir}'.")
            self.lr_files.append(match)
        self.scale, self.crop_size, self.augment = scale, crop_size, augment

    def __len__(self) -> int:
        return len(self.hr_files)

    def __getitem__(self, index: int) -> dict:
        s = self.scale
        hr, lr = load_image(self.hr_files[index]), load_image(self.lr_files[index])
        hr = hr[:, : lr.shape[-2] * s, : lr.shape[-1] * s]
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * s, lr.shape[-1] * s):
            raise ZoomSRError(
                f"pair '{self.hr_files[index].name}': HR {tuple(hr.shape[-2:])} is not "
                f"{s}x LR {tuple(lr.shape[-2:])}."
            )
        if self.crop_size is not None:
            c = self.crop_size // s
            top = int(torch.randint(0, lr.shape[-2] - c + 1, ()))
            left = int(torch.randint(0, lr.shape[-1] - c + 1, ()))
            lr = lr[:, top : top + c, left : left + c]
            hr = hr[:, top * s : (top + c) * s, left * s : (left + c) * s]
        if self.augment:
            lr, hr = random_flip_rot(lr, hr)
        return {"lr": lr, "hr": hr, "name": self.names[index]}
