"""One LightningDataModule over zoomsr's image folders."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from zoomsr.data.datasets import (
    BenchmarkDataset,
    Degradation,
    HRFolderDataset,
    PairedFolderDataset,
)
from zoomsr.data.sampler import PositionalDataset, StepSampler
from zoomsr.errors import ZoomSRError


class SRDataModule(pl.LightningDataModule):
    """Training crops from ``hr_dir`` (degraded on the fly, or paired with ``lr_dir``) and
    whole-image validation on ``val_hr_dir``. Evaluation reads ``hr_dir`` (and ``lr_dir``)
    through :meth:`benchmark_dataset`.

    Args:
        hr_dir: HR images: the training set when training, the evaluated set when evaluating.
        lr_dir: LR images paired with ``hr_dir`` by file name (real pairs, or official LR
            files for evaluation); None makes LR from HR with ``degradation``.
        val_hr_dir: HR images for validation (None: no validation).
        val_lr_dir: LR images paired with ``val_hr_dir``; None makes them with MATLAB bicubic.
        scale: zoom factor (default 4).
        crop_size: HR training crop side (default 128).
        val_crop_size: optional centre crop of validation HR images (sampling is costly).
        val_max_images: validate on the first N images only.
        batch_size: training images per step per device (default 16).
        num_workers: DataLoader worker processes (default 2).
        repeat: times each training image appears per epoch (for small folders).
        augment: random flips/transposes of training crops.
        degradation: LR maker for training, e.g. Real-ESRGAN; MATLAB bicubic when None.
        seed: fixes the training stream: sample ``p`` is the same crop, flip and degradation
            on any number of devices and after a resume (see ``zoomsr.data.sampler``).
    """

    def __init__(
        self,
        hr_dir: str | None = None,
        lr_dir: str | None = None,
        val_hr_dir: str | None = None,
        val_lr_dir: str | None = None,
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
        super().__init__()
        self.hr_dir, self.lr_dir = hr_dir, lr_dir
        self.val_hr_dir, self.val_lr_dir = val_hr_dir, val_lr_dir
        self.scale, self.crop_size, self.val_crop_size = scale, crop_size, val_crop_size
        self.val_max_images, self.batch_size, self.num_workers = (
            val_max_images,
            batch_size,
            num_workers,
        )
        self.repeat, self.augment, self.degradation = repeat, augment, degradation
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _require(self, key: str) -> str:
        value = getattr(self, key)
        if value is None:
            raise ZoomSRError(f"data.{key} is not set: pass data.{key}=/path/to/images.")
        return str(Path(value).expanduser())

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            hr_dir = self._require("hr_dir")
            if self.lr_dir is not None:
                dataset = PairedFolderDataset(
                    hr_dir, self.lr_dir, self.scale, self.crop_size, self.augment
                )
            else:
                dataset = HRFolderDataset(
                    hr_dir,
                    self.scale,
                    self.crop_size,
                    self.degradation,
                    self.augment,
                    self.repeat,
                )
            self.train_set = PositionalDataset(dataset, self.seed)
        if stage in ("fit", "validate", None) and self.val_set is None and self.val_hr_dir:
            self.val_set = BenchmarkDataset(
                self._require("val_hr_dir"),
                self.scale,
                self.val_lr_dir,
                self.val_max_images,
                self.val_crop_size,
                keep_gray=False,
            )

    def benchmark_dataset(self, scale: int) -> BenchmarkDataset:
        """Whole images of ``hr_dir`` (with ``lr_dir`` LR files when given) at ``scale``."""
        return BenchmarkDataset(self._require("hr_dir"), scale, self.lr_dir)

    def train_dataloader(self) -> DataLoader:
        """An endless, position-indexed stream (train by ``trainer.max_steps``). On resume it
        starts at the first sample the restored step has not consumed."""
        rank, world, start = 0, 1, 0
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        sampler = StepSampler(self.batch_size, rank, world, start_batch=start)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        # Validation images may differ in size: one at a time.
        return DataLoader(self.val_set or [], batch_size=1, num_workers=0)
