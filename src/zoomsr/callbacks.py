"""Lightning callbacks of zoomsr's own."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl


class FinalCheckpoint(pl.Callback):
    """Write ``<dirpath>/last.ckpt`` when training ends, so the steps after the last periodic
    save are kept (ModelCheckpoint saves every N steps only).

    Args:
        dirpath: checkpoint folder (the train task fills in ``<run>/checkpoints``).
        filename: file name (default ``last.ckpt``, the one resume and evaluate use).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath, self.filename = dirpath, filename

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.dirpath is None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        # A full checkpoint (optimizer, loops, EMA): resuming from it must be exact.
        trainer.save_checkpoint(str(Path(self.dirpath) / self.filename), weights_only=False)
