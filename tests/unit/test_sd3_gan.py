"""The GAN option of the SD3 LoRA module: each player's loss reaches only its own weights."""

from __future__ import annotations

from functools import partial

import torch

from zoomsr.backbones.sd3_lora import SD3LoRA
from zoomsr.losses.gan import DiscriminatorGANLoss, GeneratorGANLoss
from zoomsr.losses.pixel import PixelLoss
from zoomsr.modules.lora_module import LoRAModule
from zoomsr.nets.discriminator import PatchDiscriminator


def test_gan_terms_train_each_player_only():
    torch.manual_seed(0)
    backbone = SD3LoRA(pretrained="tiny", max_sequence_length=16, vae_lora=False)
    with torch.no_grad():  # non-zero adapters so the generator's path is not degenerate
        for n, p in backbone.named_parameters():
            if ".lora_" in n:
                p.normal_(0, 0.2)
    module = LoRAModule(
        backbone,
        {"l2": PixelLoss("l2", "sr", "hr"), "gan": GeneratorGANLoss(weight=0.5)},
        partial(torch.optim.AdamW, lr=1e-4),
        discriminator=PatchDiscriminator(ndf=8, n_layers=2, norm="spectral"),
        discriminator_loss=DiscriminatorGANLoss(fake="d_fake_sg"),
        discriminator_lr=2e-4,
        ema_decay=0.0,
    )
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    out = backbone.training_outputs(lr, hr, ["a", "b"], seeds=torch.tensor([1, 2]))
    out |= module._discriminate(out)
    assert out["d_fake"].shape == out["d_real"].shape == out["d_fake_sg"].shape
    assert out["d_fake"].requires_grad and all(
        p.requires_grad for p in module.discriminator.parameters()
    )
    disc = list(module.discriminator.parameters())
    gen = [p for p in backbone.parameters() if p.requires_grad]

    def grads(term: str) -> tuple[float, float]:
        module.zero_grad(set_to_none=True)
        module.losses[term](out).backward(retain_graph=True)
        norm = lambda ps: sum(float(p.grad.abs().sum()) for p in ps if p.grad is not None)  # noqa: E731
        return norm(gen), norm(disc)

    g_gen, g_disc = grads("gan")
    assert g_gen > 0 and g_disc == 0  # the generator term never moves the discriminator
    d_gen, d_disc = grads("discriminator")
    assert d_gen == 0 and d_disc > 0  # the discriminator term never moves the generator
    # Hinge: L_G = -0.5 mean D(G(z)), L_D = mean relu(1 - D(x)) + mean relu(1 + D(sg G(z))).
    torch.testing.assert_close(module.losses["gan"](out), -0.5 * out["d_fake"].mean())
    expected = torch.relu(1 - out["d_real"]).mean() + torch.relu(1 + out["d_fake_sg"]).mean()
    torch.testing.assert_close(module.losses["discriminator"](out), expected)
    groups = {g["name"]: g for g in module.configure_optimizers().param_groups}
    assert set(groups) == {"generator", "discriminator"} and groups["discriminator"]["lr"] == 2e-4
    assert {id(p) for p in groups["discriminator"]["params"]} == {id(p) for p in disc}
