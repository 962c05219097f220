"""GANModule: an SRModule with a discriminator and a second optimizer (manual optimization).

Each training step, as ITER's ``SwinVQGANModel.optimize_parameters`` and taming's VQGAN:

1. generator: the backbone's outputs; with the discriminator frozen, its logits on the
   generated image become ``outputs["d_fake"]`` for the :class:`~zoomsr.losses.gan.
   GeneratorGANLoss` term among the losses; the summed loss steps the generator's optimizer
   (then the EMA and the scheduler).
2. discriminator: its loss on ``D(real)`` and ``D(sg(fake))`` steps its own optimizer.

Before ``gan_start_step`` (ITER's ``net_d_init_iters``) both GAN parts are skipped.
``trainer.global_step`` counts generator steps (the discriminator's optimizer is stepped
directly), so ``max_steps`` and checkpoint intervals mean what they do for SRModule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.losses.gan import DiscriminatorGANLoss, GeneratorGANLoss
from zoomsr.modules.sr_module import OptimizerFactory, SchedulerFactory, SRModule


class GANModule(SRModule):
    """SRModule + adversarial training.

    Args:
        backbone, losses, optimizer, scheduler, ema_decay, panels, backbone_config,
            prompt_source, codebook_size, codebook_window: as :class:`SRModule` (``losses``
            holds the generator's terms, its GeneratorGANLoss among them).
        discriminator: the network ``(B, 3, H, W) -> logits`` (e.g.
            :class:`~zoomsr.nets.discriminator.PatchDiscriminator`).
        disc_optimizer: ``params -> Optimizer`` for it (a Hydra ``_partial_``).
        disc_loss: its objective (default hinge, :class:`DiscriminatorGANLoss`).
        fake, real: keys of the generated and the real image in the backbone's outputs.
        gan_start_step: generator steps before the GAN terms start (0).
    """

    def __init__(
        self,
        backbone: Backbone,
        losses: dict[str, nn.Module],
        optimizer: OptimizerFactory,
        discriminator: nn.Module,
        disc_optimizer: Callable[..., torch.optim.Optimizer],
        disc_loss: nn.Module | None = None,
        fake: str = "recon",
        real: str = "hr",
        gan_start_step: int = 0,
        scheduler: SchedulerFactory | None = None,
        ema_decay: float = 0.9999,
        panels: int = 4,
        backbone_config: str | None = None,
        prompt_source=None,
        codebook_size: int | None = None,
        codebook_window: int = 100,
    ) -> None:
        super().__init__(
            backbone, losses, optimizer, scheduler, ema_decay, panels, backbone_config,
            prompt_source, codebook_size, codebook_window,
        )  # fmt: skip
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.disc_optimizer_factory = disc_optimizer
        self.disc_loss = disc_loss if disc_loss is not None else DiscriminatorGANLoss()
        self.fake, self.real, self.gan_start_step = fake, real, gan_start_step

    def on_fit_start(self) -> None:
        if str(self.trainer.precision).startswith("16"):
            raise ValueError(
                "GANModule steps the discriminator outside Lightning's loss scaler: use "
                "trainer.precision=32-true or bf16-mixed, not 16-mixed"
            )

    def configure_optimizers(self):
        config = super().configure_optimizers()
        disc = self.disc_optimizer_factory(list(self.discriminator.parameters()))
        if isinstance(config, dict):
            return [config["optimizer"], disc], [config["lr_scheduler"]]
        return [config, disc]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        gan_on = self.global_step >= self.gan_start_step
        outputs = self.backbone.training_outputs(
            batch["lr"], batch["hr"], prompts=self.prompts(batch), seeds=batch.get("seed")
        )
        fake = outputs[self.fake]
        # 1. generator, the discriminator frozen (its weights get no gradient from this loss)
        self.discriminator.requires_grad_(False)
        if gan_on:
            outputs = {**outputs, "d_fake": self.discriminator(fake)}
        terms = {
            name: term(outputs)
            for name, term in self.losses.items()
            if gan_on or not isinstance(term, GeneratorGANLoss)
        }
        loss = torch.stack(list(terms.values())).sum()
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        if self.ema is not None:
            self.ema.update()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        # 2. discriminator on real and detached generated images
        bs = batch["hr"].shape[0]
        if gan_on:
            self.discriminator.requires_grad_(True)
            d_out = {
                "d_real": self.discriminator(outputs[self.real].detach()),
                "d_fake": self.discriminator(fake.detach()),
            }
            d_loss = self.disc_loss(d_out)
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.optimizer.step()  # the raw optimizer: global_step counts generator steps
            self.log_dict(
                {
                    "train/d_loss": d_loss.detach(),
                    "train/d_real": d_out["d_real"].detach().mean(),
                    "train/d_fake": d_out["d_fake"].detach().mean(),
                },
                batch_size=bs,
            )
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=bs)
        self.log_codebook(outputs, bs)
        return loss.detach()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """SRModule's trainable backbone weights + the discriminator's (to resume the GAN)."""
        disc = {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
        super().on_save_checkpoint(checkpoint)
        checkpoint["state_dict"].update(disc)
