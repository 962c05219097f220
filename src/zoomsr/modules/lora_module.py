"""LoRAModule: SRModule for adapter backbones (SD3 LoRA), with the VSD regularizer's own loss
and optimizer group, and a diffusers-readable LoRA export at the end of training."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.modules.sr_module import OptimizerFactory, SRModule


class LoRAModule(SRModule):
    """Trains a backbone's adapters; with VSD also its regularizer adapter.

    The regularizer's diffusion loss (``regularizer_loss``) is added to the summed loss as the
    term ``train/regularizer``. Its gradient reaches only the regularizer adapter (its input
    latent is detached) and the generator's terms reach only the generator (the regularizer's
    predictions in the VSD term carry no graph), so one backward pass gives each adapter exactly
    the gradient of its own objective, as CoZ's two backward passes do. The regularizer has its
    own optimizer parameter group (``regularizer_lr``; AdamW updates every parameter
    independently, so a group is an optimizer of its own) and its gradient norm is clipped on
    its own (``trainer.gradient_clip_val``), as CoZ clips each model separately.

    At the end of training the generator adapter (EMA weights) is exported to
    ``<run>/lora/pytorch_lora_weights.safetensors`` (diffusers' ``load_lora_weights`` layout).

    Args:
        backbone, losses, optimizer: as :class:`SRModule`; ``kwargs`` are SRModule's others
            (scheduler, ema_decay, panels, backbone_config, ...).
        regularizer_loss: the regularizer adapter's objective (None: no VSD).
        regularizer_lr: learning rate of the regularizer group (None: the optimizer's).
    """

    def __init__(
        self,
        backbone: Backbone,
        losses: dict[str, nn.Module],
        optimizer: OptimizerFactory,
        regularizer_loss: nn.Module | None = None,
        regularizer_lr: float | None = None,
        **kwargs,
    ) -> None:
        if regularizer_loss is not None and _regularizer_params(backbone):
            losses = {**losses, "regularizer": regularizer_loss}
        super().__init__(backbone, losses, optimizer, **kwargs)
        self.regularizer_lr = regularizer_lr

    def configure_optimizers(self):
        reg = _regularizer_params(self.backbone)
        reg_ids = {id(p) for p in reg}
        gen = [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in reg_ids]
        groups = [{"params": gen, "name": "generator"}]
        if reg:
            extra = {} if self.regularizer_lr is None else {"lr": self.regularizer_lr}
            groups.append({"params": reg, "name": "regularizer", **extra})
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip each group (generator, regularizer) by its own norm, as CoZ does."""
        if not gradient_clip_val:
            return
        for group in optimizer.param_groups:
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(group["params"], gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(group["params"], gradient_clip_val)

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.default_root_dir) / "lora"
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            self.backbone.export_lora(folder)


def _regularizer_params(backbone: Backbone) -> list[nn.Parameter]:
    return list(backbone.regularizer_parameters())
