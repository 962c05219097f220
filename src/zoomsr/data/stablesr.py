"""The StableSR test crops (Wang et al. 2023, "Exploiting Diffusion Prior for Real-World Image
Super-Resolution", Sec. 4.2; hf.co/datasets/Iceclear/StableSR-TestSets), the sets the one-step
diffusion SR tables (OSEDiff, CoZ, ...) are computed on: RealSR and DRealSR x4 pairs centre-cropped
to 128 px LR / 512 px HR, and DIV2K-val crops with Real-ESRGAN degradations.

Layout, as OSEDiff ships its copies (``preset/datasets/benchmark_realsr``,
``benchmark_drealsr``): ``ROOT/test_LR/*.png`` and ``ROOT/test_HR/*.png``, pairs sharing a file
name. The crops are used as they are: no modcrop, no resize.
"""

from __future__ import annotations

from pathlib import Path

from zoomsr.data.datamodule import SRDataModule
from zoomsr.data.datasets import Degradation
from zoomsr.errors import ZoomSRError


class StableSRCrops(SRDataModule):
    """A StableSR-layout test set: ``root/<lr_folder>`` and ``root/<hr_folder>``.

    Args:
        root: the set's folder (e.g. ``StableSR-TestSets/DrealSRVal_crop128``).
        scale: LR -> HR factor of the pairs (4).
        lr_folder, hr_folder: sub-folder names (``test_LR``, ``test_HR``).
        name: the set's name, for messages (``drealsr_crops``, ...).
        batch_size, num_workers, degradation, seed: as
            :class:`~zoomsr.data.datamodule.SRDataModule` (training on the pairs is possible;
            the sets are meant for evaluation).
    """

    def __init__(
        self,
        root: str,
        scale: int = 4,
        lr_folder: str = "test_LR",
        hr_folder: str = "test_HR",
        name: str = "stablesr_crops",
        batch_size: int = 16,
        num_workers: int = 2,
        degradation: Degradation | None = None,
        seed: int = 0,
    ) -> None:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise ZoomSRError(f"data={name}: data.root '{base}' is not a folder; pass "
                              f"data.root=DIR holding {lr_folder}/ and {hr_folder}/.")  # fmt: skip
        absent = [f for f in (lr_folder, hr_folder) if not (base / f).is_dir()]
        if absent:
            found = sorted(p.name for p in base.iterdir() if p.is_dir())
            raise ZoomSRError(
                f"data={name}: '{base}' has no {'/, '.join(absent)}/ folder (StableSR layout: "
                f"{lr_folder}/ and {hr_folder}/; sub-folders found: {found}). Point data.root at "
                f"the set's folder, or set data.lr_folder / data.hr_folder."
            )
        super().__init__(
            hr_dir=str(base / hr_folder),
            lr_dir=str(base / lr_folder),
            scale=scale,
            batch_size=batch_size,
            num_workers=num_workers,
            augment=False,
            degradation=degradation,
            seed=seed,
        )
        self.root, self.name = str(base), name
