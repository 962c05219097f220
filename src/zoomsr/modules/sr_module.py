"""SRModule: trains any zoomsr backbone; validates by sampling with the EMA weights."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.data.io import quantize, save_image
from zoomsr.metrics.fidelity import psnr, ssim
from zoomsr.modules.codebook import CodebookUsage
from zoomsr.modules.ema import EMA
from zoomsr.prompts.base import PromptSource

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class SRModule(pl.LightningModule):
    """Wires a backbone and its loss terms into Lightning.

    Logs ``train/loss`` and each term as ``train/<name>``; validation logs ``val/psnr_y`` and
    ``val/ssim_y`` (Y channel, ``scale`` pixels shaved, outputs rounded to 8 bits) and an
    LR | SR | HR panel (PNG under ``<run>/samples`` and to W&B). Checkpoints keep the trainable
    weights, their EMA and the backbone's config, so ``evaluate.py ckpt=…`` rebuilds it.

    Args:
        backbone: the network being trained.
        losses: named loss terms, each ``term(outputs) -> weighted scalar``; they are summed.
        optimizer: ``params -> Optimizer`` (a Hydra ``_partial_``), over trainable params only.
        scheduler: optional ``optimizer -> LRScheduler``, stepped every optimizer step.
        ema_decay: EMA decay of the trainable weights (0 disables the EMA).
        panels: validation images shown in the sample panel.
        backbone_config: the backbone's config as YAML (with ``_target_``), kept in checkpoints.
        prompt_source: makes ``batch["prompt"]`` from the LR images when the data gives none
            (cached by content, so a repeated sample or a rerun never calls its model twice);
            None (default): the data's prompts or none.
        codebook_size: a VQ backbone's codebook size: logs ``train/codebook_perplexity``,
            ``train/codebook_dead`` (unused for ``codebook_window`` steps) and
            ``train/codebook_used`` from its ``outputs["codes"]``; None (default): nothing.
    """

    def __init__(
        self,
        backbone: Backbone,
        losses: dict[str, nn.Module],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        ema_decay: float = 0.9999,
        panels: int = 4,
        backbone_config: str | None = None,
        prompt_source: PromptSource | None = None,
        codebook_size: int | None = None,
        codebook_window: int = 100,
    ) -> None:
        super().__init__()
        if not losses:
            raise ValueError("SRModule needs at least one loss term")
        self.backbone = backbone
        self.losses = nn.ModuleDict(losses)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.ema = EMA(backbone, decay=ema_decay) if ema_decay > 0 else None
        self.panels, self.backbone_config = panels, backbone_config
        self.prompt_source = prompt_source  # a submodule: it follows the device, never trains
        self.strict_loading = False  # checkpoints hold trainable weights only
        self._panel: list[torch.Tensor] = []
        self.codebook = CodebookUsage(codebook_size, codebook_window) if codebook_size else None

    def prompts(self, batch: dict) -> list[str] | None:
        """The batch's prompts: its own ``prompt`` entry, else the prompt source's on ``lr``."""
        if "prompt" in batch or self.prompt_source is None:
            return batch.get("prompt")
        names = batch.get("name")
        return self.prompt_source([batch["lr"]], step=0, names=names)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        outputs = self.backbone.training_outputs(
            batch["lr"], batch["hr"], prompts=self.prompts(batch), seeds=batch.get("seed")
        )
        terms = {name: term(outputs) for name, term in self.losses.items()}
        loss = torch.stack(list(terms.values())).sum()
        bs = batch["hr"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        if len(terms) > 1:
            self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=bs)
        self.log_codebook(outputs, bs)
        return loss

    def log_codebook(self, outputs: dict[str, torch.Tensor], batch_size: int) -> None:
        """Codebook usage of ``outputs["codes"]`` (when ``codebook_size`` is set)."""
        if self.codebook is not None and "codes" in outputs:
            stats = self.codebook.update(outputs["codes"])
            self.log_dict(
                {f"train/codebook_{k}": v for k, v in stats.items()}, batch_size=batch_size
            )

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    def configure_optimizers(self):
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        return self.with_scheduler(self.optimizer_factory(params))

    def with_scheduler(self, optimizer: torch.optim.Optimizer):
        """``optimizer``, or Lightning's dict with the configured scheduler stepped every step."""
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- validation: sample with the EMA weights -------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._panel = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        # A fixed seed per image: validation curves show the model, not the sampler's luck.
        # The EMA weights are in only while the step samples, restored whatever happens (an
        # exception in validation leaves the training weights in place).
        ema = self.ema.applied() if self.ema is not None else nullcontext()
        with ema, torch.random.fork_rng(devices=[lr.device] if lr.is_cuda else []):
            torch.manual_seed(batch_idx)
            sr = quantize(self.backbone.upscale(lr, prompts=self.prompts(batch)).float())
        s = self.backbone.scale
        bs = hr.shape[0]
        self.log("val/psnr_y", psnr(sr, hr, shave=s).mean(), sync_dist=True, batch_size=bs)
        self.log("val/ssim_y", ssim(sr, hr, shave=s).mean(), sync_dist=True, batch_size=bs)
        if len(self._panel) < self.panels:
            up = F.interpolate(lr.float(), size=hr.shape[-2:], mode="nearest")
            self._panel.append(torch.cat([up[0], sr[0], hr[0].float()], dim=-1).cpu())

    def on_validation_epoch_end(self) -> None:
        if self._panel and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._log_panel()

    def _log_panel(self) -> None:
        rows = [F.pad(p, (0, 0, 0, 4), value=1.0) for p in self._panel]  # white gap
        width = max(r.shape[-1] for r in rows)
        grid = torch.cat([F.pad(r, (0, width - r.shape[-1])) for r in rows], dim=-2)
        path = Path(self.trainer.default_root_dir) / "samples" / f"step{self.global_step:07d}.png"
        save_image(grid, path)
        for lg in self.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(
                    key="val/panel",
                    images=[str(path)],
                    caption=["LR | SR | HR"],
                    step=self.global_step,
                )

    # -- checkpoints: trainable weights + EMA + backbone config ----------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"backbone.{k}" for k in self.backbone.trainable_state_dict()}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["zoomsr"] = {"backbone_config": self.backbone_config}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
