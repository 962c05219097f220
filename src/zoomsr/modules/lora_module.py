"""LoRAModule: SRModule for adapter backbones (SD3 LoRA), with the VSD regularizer's own loss
and optimizer group, VSD diagnostics, and a diffusers-readable LoRA export at the end."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.data.io import save_image
from zoomsr.losses.vsd import VSDLoss
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

    VSD diagnostics (with a :class:`~zoomsr.losses.vsd.VSDLoss` term), every
    ``diagnostics_every`` steps: ``train/grad/<term>``, the L2 norm of the gradient each
    generator term sends into the generator (``diagnostics_wrt``: ``latent``, the gradient at the
    generator's output latent ``z0``, cheap, by the chain rule what every generator weight
    receives; ``params``, at the generator's adapter weights, one extra backward per term);
    ``train/vsd/gap`` (mean ``|x0_fake - x0_real|``), ``train/vsd/norm``, ``train/vsd/grad``,
    ``train/vsd/cos`` (see :meth:`VSDLoss.diagnostics`), ``train/vsd/t`` (mean timestep) and
    ``train/regularizer`` (the regularizer's loss, logged with every term). Every
    ``vsd_panel_every`` steps a ``z0 | z_t | x0_fake | x0_real`` panel (decoded, first sample)
    goes to ``<run>/samples/vsd_step*.png`` and W&B (``train/vsd_panel``), as CoZ's
    ``vsd_visualization``.

    Args:
        backbone, losses, optimizer: as :class:`SRModule`; ``kwargs`` are SRModule's others
            (scheduler, ema_decay, panels, backbone_config, ...).
        regularizer_loss: the regularizer adapter's objective (None: no VSD).
        regularizer_lr: learning rate of the regularizer group (None: the optimizer's).
        discriminator: a GAN discriminator on the SR and HR images in [-1, 1] (e.g.
            :class:`~zoomsr.nets.discriminator.PatchDiscriminator`); None (default): no GAN.
            With it the outputs gain ``d_fake`` (logits on ``sr``; the discriminator's weights
            take no gradient from it, so a generator term such as
            :class:`~zoomsr.losses.gan.GeneratorGANLoss` trains the generator only), ``d_real``
            (on ``hr``) and ``d_fake_sg`` (on ``sg(sr)``), and ``discriminator_loss`` (e.g.
            :class:`~zoomsr.losses.gan.DiscriminatorGANLoss` on ``d_real``/``d_fake_sg``) is
            the term ``train/discriminator``, reaching the discriminator only: one backward
            pass serves both players, each from the same discriminator state.
        discriminator_loss: the discriminator's objective (needed with ``discriminator``).
        discriminator_lr: learning rate of the discriminator's group (None: the optimizer's).
        diagnostics_every: steps between VSD diagnostics (0: never).
        diagnostics_wrt: ``latent`` | ``params`` (see above).
        vsd_panel_every: steps between VSD image panels (0: never; CoZ: 100).
    """

    def __init__(
        self,
        backbone: Backbone,
        losses: dict[str, nn.Module],
        optimizer: OptimizerFactory,
        regularizer_loss: nn.Module | None = None,
        regularizer_lr: float | None = None,
        diagnostics_every: int = 50,
        diagnostics_wrt: Literal["latent", "params"] = "latent",
        vsd_panel_every: int = 100,
        discriminator: nn.Module | None = None,
        discriminator_loss: nn.Module | None = None,
        discriminator_lr: float | None = None,
        **kwargs,
    ) -> None:
        if regularizer_loss is not None and _regularizer_params(backbone):
            losses = {**losses, "regularizer": regularizer_loss}
        if discriminator is not None:
            if discriminator_loss is None:
                raise ValueError("module.discriminator needs module.discriminator_loss")
            losses = {**losses, "discriminator": discriminator_loss}
        super().__init__(backbone, losses, optimizer, **kwargs)
        self.discriminator, self.discriminator_lr = discriminator, discriminator_lr
        if diagnostics_wrt not in ("latent", "params"):
            raise ValueError(f"diagnostics_wrt must be latent|params, got {diagnostics_wrt!r}")
        self.regularizer_lr = regularizer_lr
        self.diagnostics_every, self.diagnostics_wrt = diagnostics_every, diagnostics_wrt
        self.vsd_panel_every = vsd_panel_every
        vsd_terms = [t for t in self.losses.values() if isinstance(t, VSDLoss)]
        self.vsd_term = vsd_terms[0] if vsd_terms else None

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        extra = {} if self.vsd_term is None else {"vsd": self.vsd_term.settings}
        outputs = self.backbone.training_outputs(
            batch["lr"], batch["hr"], prompts=self.prompts(batch), seeds=batch.get("seed"),
            **extra,
        )  # fmt: skip
        if self.discriminator is not None:
            outputs |= self._discriminate(outputs)
        terms = {name: term(outputs) for name, term in self.losses.items()}
        loss = torch.stack(list(terms.values())).sum()
        bs = batch["hr"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=bs)
        if self.discriminator is not None:
            self.log_dict({"train/d_real": outputs["d_real"].mean(),
                           "train/d_fake": outputs["d_fake_sg"].mean()}, batch_size=bs)  # fmt: skip
        if self.vsd_term is not None:
            step = self.global_step
            if self.diagnostics_every and step % self.diagnostics_every == 0:
                self._log_diagnostics(outputs, terms, bs)
            if self.vsd_panel_every and step % self.vsd_panel_every == 0:
                self._log_vsd_panel(outputs)
        return loss

    def _discriminate(self, outputs: dict) -> dict[str, torch.Tensor]:
        """The discriminator's logits: ``d_fake`` with its weights frozen (gradient into the
        generator only), ``d_real`` and ``d_fake_sg`` for its own loss."""
        d = self.discriminator
        d.requires_grad_(False)
        try:
            d_fake = d(outputs["sr"])
        finally:
            d.requires_grad_(True)
        return {
            "d_fake": d_fake,
            "d_real": d(outputs["hr"]),
            "d_fake_sg": d(outputs["sr"].detach()),
        }

    # -- VSD diagnostics ---------------------------------------------------------------------
    def _log_diagnostics(self, outputs: dict, terms: dict[str, torch.Tensor], bs: int) -> None:
        """Per-term gradient norms into the generator, and the VSD score statistics."""
        names = [k for k in terms if k not in NOT_GENERATOR]
        generator = [terms[k] for k in names]
        if self.diagnostics_wrt == "latent":
            wrt = [outputs[self.vsd_term.latent]]
        else:
            reg = {id(p) for p in _regularizer_params(self.backbone)}
            wrt = [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in reg]
        norms = {}
        for name, value in zip(names, generator):
            grads = torch.autograd.grad(value, wrt, retain_graph=True, allow_unused=True)
            sq = [g.float().pow(2).sum() for g in grads if g is not None] or [value.new_zeros(())]
            norms[f"train/grad/{name}"] = torch.stack(sq).sum().sqrt()
        stats = {f"train/vsd/{k}": v for k, v in self.vsd_term.diagnostics(outputs).items()}
        stats["train/vsd/t"] = outputs["vsd_t"].float().mean()
        self.log_dict(norms | stats, batch_size=bs)

    @torch.no_grad()
    def _log_vsd_panel(self, outputs: dict) -> None:
        if not self.trainer.is_global_zero:
            return
        keys = (self.vsd_term.latent, "vsd_zt", self.vsd_term.fake, self.vsd_term.real)
        latents = torch.stack([outputs[k][0].detach().float() for k in keys])  # (4, c, h, w)
        images = (self.backbone.decode(latents).clamp(-1, 1) + 1) / 2  # (4, 3, H, W)
        panel = torch.cat(list(images), dim=-1).cpu()
        name = f"vsd_step{self.global_step:07d}.png"
        path = Path(self.trainer.default_root_dir) / "samples" / name
        save_image(panel, path)
        for lg in self.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(
                    key="train/vsd_panel",
                    images=[str(path)],
                    caption=["z0 | z_t | x0_fake (regularizer) | x0_real (guided base)"],
                    step=self.global_step,
                )

    def configure_optimizers(self):
        reg = _regularizer_params(self.backbone)
        reg_ids = {id(p) for p in reg}
        gen = [p for p in self.backbone.parameters() if p.requires_grad and id(p) not in reg_ids]
        groups = [{"params": gen, "name": "generator"}]
        if reg:
            extra = {} if self.regularizer_lr is None else {"lr": self.regularizer_lr}
            groups.append({"params": reg, "name": "regularizer", **extra})
        if self.discriminator is not None:
            extra = {} if self.discriminator_lr is None else {"lr": self.discriminator_lr}
            params = list(self.discriminator.parameters())
            groups.append({"params": params, "name": "discriminator", **extra})
        return self.with_scheduler(self.optimizer_factory(groups))

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """SRModule's trainable weights, plus the discriminator's (to resume a GAN run)."""
        state = checkpoint["state_dict"]
        super().on_save_checkpoint(checkpoint)
        if self.discriminator is not None:
            checkpoint["state_dict"] |= {
                k: v for k, v in state.items() if k.startswith("discriminator.")
            }

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.default_root_dir) / "lora"
        with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            self.backbone.export_lora(folder)


#: Terms whose gradient reaches no generator weight (their own adapters / networks only).
NOT_GENERATOR = ("regularizer", "discriminator")


def _regularizer_params(backbone: Backbone) -> list[nn.Parameter]:
    return list(backbone.regularizer_parameters())
