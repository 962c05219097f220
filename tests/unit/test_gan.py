"""The shared GAN pieces: hinge / non-saturating terms by hand, the patch discriminator's
layout (pix2pix's 70x70 PatchGAN) and its gradients."""

from __future__ import annotations

import math

import pytest
import torch

from zoomsr.losses.gan import DiscriminatorGANLoss, GeneratorGANLoss
from zoomsr.nets.discriminator import PatchDiscriminator


def test_hinge_terms_match_hand_computation():
    # real logits [2, 0.5]: relu(1 - x) = [0, 0.5] -> 0.25; fake [-2, 0]: relu(1 + x) = [0, 1]
    # -> 0.5; L_D = 0.75. Generator: -mean(fake) = 1, times weight 0.1.
    out = {"d_real": torch.tensor([2.0, 0.5]), "d_fake": torch.tensor([-2.0, 0.0])}
    assert DiscriminatorGANLoss()(out).item() == pytest.approx(0.75)
    assert GeneratorGANLoss(weight=0.1)(out).item() == pytest.approx(0.1)


def test_non_saturating_terms_match_hand_computation():
    out = {"d_real": torch.tensor([0.0]), "d_fake": torch.tensor([0.0])}
    # D(x) = D(G(z)) = 1/2: L_D = -log(1/2) - log(1/2); L_G = -log(1/2).
    d = DiscriminatorGANLoss(kind="non_saturating")(out)
    g = GeneratorGANLoss(kind="non_saturating", weight=1.0)(out)
    assert d.item() == pytest.approx(2 * math.log(2))
    assert g.item() == pytest.approx(math.log(2))


def test_generator_gradient_pushes_fake_logits_up():
    fake = torch.zeros(2, 1, 3, 3, requires_grad=True)
    GeneratorGANLoss(weight=0.5)({"d_fake": fake}).backward()
    torch.testing.assert_close(fake.grad, torch.full_like(fake, -0.5 / 18))


def test_bad_kind_and_missing_key_are_named():
    with pytest.raises(ValueError, match="hinge"):
        GeneratorGANLoss(kind="wgan")
    with pytest.raises(KeyError, match="d_real"):
        DiscriminatorGANLoss()({"d_fake": torch.zeros(1)})


def test_patch_discriminator_is_the_70px_patchgan():
    d = PatchDiscriminator(ndf=64, n_layers=3)
    # pix2pix's sequential: 3->64 s2, 64->128 s2 +BN, 128->256 s2 +BN, 256->512 s1 +BN, 512->1.
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "main.0.weight": (64, 3, 4, 4),
        "main.2.weight": (128, 64, 4, 4),
        "main.3.weight": (128,),
        "main.5.weight": (256, 128, 4, 4),
        "main.6.weight": (256,),
        "main.8.weight": (512, 256, 4, 4),
        "main.9.weight": (512,),
        "main.11.weight": (1, 512, 4, 4),
    }
    assert "main.2.bias" not in d.state_dict()  # no bias before BatchNorm
    # 256 px -> 128 -> 64 -> 32 -> 31 -> 30 logits; each sees a 70x70 patch.
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    x = torch.zeros(1, 3, 140, 140, requires_grad=True)
    d.eval()(x)[0, 0, 7, 7].backward()  # an inner logit: no padding in its view
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    assert rows.max().item() - rows.min().item() + 1 == 70


@pytest.mark.parametrize("norm", ["batch", "group", "none", "spectral"])
def test_patch_discriminator_norms_train(norm):
    torch.manual_seed(0)
    d = PatchDiscriminator(ndf=8, n_layers=2, norm=norm)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) - 1.0
    loss = DiscriminatorGANLoss()
    first = loss({"d_real": d(real), "d_fake": d(fake)}).item()
    for _ in range(5):
        opt.zero_grad()
        loss({"d_real": d(real), "d_fake": d(fake)}).backward()
        opt.step()
    assert loss({"d_real": d(real), "d_fake": d(fake)}).item() < first


def test_patch_discriminator_rejects_bad_norm():
    with pytest.raises(ValueError, match="norm"):
        PatchDiscriminator(norm="layer")
