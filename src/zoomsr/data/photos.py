"""Real photographs that ship inside scikit-image, as a train/val pair of HR folders.

The quickstart (``make demo``) trains on them, so it runs on a fresh machine with no download.
Only files bundled in the installed ``skimage/data`` folder are read, by path: never through
``skimage.data.<name>()``, whose pooch fetcher may try the network for images not bundled.

The split is fixed by name and never changes with the seed:

- **val** (held out, never trained on): ``chelsea`` (a cat), ``coffee`` (a cup on a table) and
  ``rocket`` (a launch pad with trees): three unrelated scenes, 300 to 640 px wide.
- **train** (11): colour ``astronaut``, ``ihc`` (stained tissue), ``motorcycle_left`` and
  ``motorcycle_right`` (a stereo pair, both on this side so no view of a scene leaks into val);
  gray ``brick``, ``camera``, ``coins``, ``grass``, ``gravel``, ``moon``, ``text`` (written as
  8-bit gray PNGs; training reads them as RGB).

Left out on purpose: ``hubble_deep_field`` and ``retina`` (mostly black: their crops teach little
about everyday photos, yet would be 2 of every 13 draws), the synthetic or binary images
(``color``, ``logo``, ``horse``, ``phantom``, the chessboards), ``clock_motion`` (synthetic
motion blur), ``page`` (a document scan), ``cell`` and ``microaneurysms`` (nearly flat, tiny).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from zoomsr.data.datamodule import SRDataModule
from zoomsr.data.datasets import BenchmarkDataset, Degradation, HRFolderDataset
from zoomsr.data.io import load_image
from zoomsr.data.sampler import PositionalDataset
from zoomsr.errors import ZoomSRError

Split = Literal["train", "val"]

#: file in ``skimage/data`` -> split. Order is irrelevant: folders are read sorted by name.
PHOTOS: dict[str, Split] = {
    "astronaut.png": "train",
    "motorcycle_left.png": "train",
    "motorcycle_right.png": "train",
    "ihc.png": "train",
    "camera.png": "train",
    "moon.png": "train",
    "coins.png": "train",
    "brick.png": "train",
    "grass.png": "train",
    "gravel.png": "train",
    "text.png": "train",
    "chelsea.png": "val",
    "coffee.png": "val",
    "rocket.jpg": "val",
}


def skimage_data_dir() -> Path:
    """The installed ``skimage/data`` folder (found without importing ``skimage.data``)."""
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def photo_names(split: Split) -> list[str]:
    """Stems of the photos of ``split``, sorted (the order the folders list them in)."""
    return sorted(Path(name).stem for name, s in PHOTOS.items() if s == split)


def export_photos(root: str | Path, overwrite: bool = False) -> dict[Split, Path]:
    """Write the bundled photos as PNGs into ``root/train`` and ``root/val``.

    Files already there are kept (unless ``overwrite``), so calling it again is cheap. Each
    file is written to a temporary name and renamed, so a concurrent reader never sees half a
    PNG. Colour photos are saved as RGB, gray ones as 8-bit gray; pixel values are unchanged
    (the JPEGs are decoded once and stored losslessly).

    Returns:
        ``{"train": root/train, "val": root/val}``.

    Raises:
        ZoomSRError: a listed photo is missing from the installed scikit-image.
    """
    src_dir, root = skimage_data_dir(), Path(root).expanduser()
    folders: dict[Split, Path] = {"train": root / "train", "val": root / "val"}
    for name, split in PHOTOS.items():
        dst = folders[split] / f"{Path(name).stem}.png"
        if dst.is_file() and not overwrite:
            continue
        src = src_dir / name
        if not src.is_file():
            raise ZoomSRError(
                f"scikit-image photo '{name}' not found in '{src_dir}'; reinstall scikit-image "
                "(pip install --force-reinstall scikit-image), which bundles it."
            )
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            img = img.convert("L" if img.mode in ("L", "I;16", "1") else "RGB")
            tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.png")
            img.save(tmp)
        tmp.replace(dst)
    return folders


def photos_ready(root: str | Path) -> bool:
    """Whether every photo of the split already sits under ``root``."""
    root = Path(root).expanduser()
    return all((root / split / f"{Path(n).stem}.png").is_file() for n, split in PHOTOS.items())


class DecodedPhotos(HRFolderDataset):
    """:class:`HRFolderDataset` that decodes each photo once and keeps it (the 11 training
    photos take ~30 MB as float32). Decoding a PNG for every crop costs ~25 ms, as much as a
    quickstart training step spends on 3 crops; cached, a crop costs ~3 ms.

    Items and random draws are exactly those of :class:`HRFolderDataset` (same crop, flip and
    degradation for the same RNG state); only the file reads are saved.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._decoded: dict[Path, torch.Tensor] = {}

    def _load(self, path: Path) -> torch.Tensor:
        if path not in self._decoded:
            self._decoded[path] = load_image(path)
        return self._decoded[path]


class SkimagePhotos(SRDataModule):
    """:class:`SRDataModule` over scikit-image's bundled photos, exported to ``root`` first.

    Trains on random crops of ``root/train`` and validates on the whole (or centre-cropped)
    held-out photos of ``root/val`` (see the module docstring for the split). Evaluation
    (:meth:`benchmark_dataset`, used by ``evaluate.py data=skimage_photos``) reads the held-out
    photos too, never the training ones.

    Args:
        root: folder to export into (``root/train``, ``root/val``); created when missing.
        scale, crop_size, val_crop_size, val_max_images, batch_size, num_workers, repeat,
            augment, degradation, seed: as in :class:`SRDataModule` (the LR is always made
            from the HR: there are no given LR files).
    """

    def __init__(
        self,
        root: str,
        scale: int = 4,
        crop_size: int = 128,
        val_crop_size: int | None = None,
        val_max_images: int | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        repeat: int = 1,
        augment: bool = True,
        degradation: Degradation | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root).expanduser()
        super().__init__(
            hr_dir=str(self.root / "train"),
            val_hr_dir=str(self.root / "val"),
            scale=scale,
            crop_size=crop_size,
            val_crop_size=val_crop_size,
            val_max_images=val_max_images,
            batch_size=batch_size,
            num_workers=num_workers,
            repeat=repeat,
            augment=augment,
            degradation=degradation,
            seed=seed,
        )

    def prepare_data(self) -> None:
        export_photos(self.root)

    def setup(self, stage: str | None = None) -> None:
        # prepare_data runs on one process per node only; a rank on a node without the
        # folder (or a direct setup() call) exports it here instead.
        if not photos_ready(self.root):
            export_photos(self.root)
        if stage in ("fit", None) and self.train_set is None:
            photos = DecodedPhotos(
                self.hr_dir,
                self.scale,
                self.crop_size,
                self.degradation,
                self.augment,
                self.repeat,
            )
            self.train_set = PositionalDataset(photos, self.seed)
        super().setup(stage)

    def benchmark_dataset(self, scale: int) -> BenchmarkDataset:
        """Whole held-out photos (``root/val``) at ``scale``, LR by MATLAB bicubic."""
        if not photos_ready(self.root):
            export_photos(self.root)
        return BenchmarkDataset(self.root / "val", scale)
