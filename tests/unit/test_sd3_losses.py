"""The SD3 LoRA loss terms: VSD gradient by hand, the regularizer's loss, LPIPS weights."""

from __future__ import annotations

import pytest
import torch

from zoomsr.errors import ZoomSRError
from zoomsr.losses.lpips import LPIPSLoss
from zoomsr.losses.vsd import RegularizerLoss, VSDLoss


def test_vsd_gradient_matches_hand_computation():
    """z0 = [1, 2], x0_real = [0, 1], x0_fake = [0.5, 2]:
    w = mean|z0 - real| = 1, g = (fake - real) / w = [0.5, 1],
    loss = mean (z0 - sg(z0 - g))^2 = mean g^2 = 0.625, d loss / d z0 = 2 g / N = [0.5, 1]."""
    z0 = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)
    outputs = {
        "latent": z0,
        "x0_real": torch.tensor([[[[0.0, 1.0]]]]),
        "x0_fake": torch.tensor([[[[0.5, 2.0]]]]),
    }
    loss = VSDLoss(weight=1.0)(outputs)
    loss.backward()
    assert loss.item() == pytest.approx(0.625)
    torch.testing.assert_close(z0.grad, torch.tensor([[[[0.5, 1.0]]]]))
    z0.grad = None
    (VSDLoss(weight=3.0)(outputs)).backward()  # the weight scales the gradient
    torch.testing.assert_close(z0.grad, torch.tensor([[[[1.5, 3.0]]]]))


def test_vsd_normalizes_per_sample_and_vanishes_when_scores_agree():
    z0 = torch.zeros(2, 1, 1, 2, requires_grad=True)
    real = torch.tensor([[[[1.0, 1.0]]], [[[4.0, 4.0]]]])  # mean distances 1 and 4
    fake = real + 1.0
    VSDLoss()({"latent": z0, "x0_real": real, "x0_fake": fake}).backward()
    # g = 1 / w per sample: 1 and 0.25; gradient 2 g / N with N = 4.
    torch.testing.assert_close(z0.grad[:, 0, 0, 0], torch.tensor([0.5, 0.125]))
    z0.grad = None
    VSDLoss()({"latent": z0, "x0_real": real, "x0_fake": real}).backward()
    assert z0.grad.abs().sum() == 0


def test_regularizer_loss_trains_the_prediction_not_the_generator():
    pred = torch.tensor([1.0, 3.0], requires_grad=True)
    target = torch.tensor([0.0, 1.0], requires_grad=True)
    loss = RegularizerLoss(weight=2.0)({"reg_x0": pred, "reg_target": target})
    loss.backward()
    assert loss.item() == pytest.approx(2.0 * (1 + 4) / 2)
    torch.testing.assert_close(pred.grad, torch.tensor([2.0, 4.0]))  # 2 * 2 (p - t) / 2
    assert target.grad is None


def test_lpips_without_imagenet_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ZoomSRError, match="vgg16-397923af.pth.*random_backbone=true"):
        LPIPSLoss(net="vgg")


def test_lpips_random_backbone_is_a_seeded_distance():
    a, b = LPIPSLoss(random_backbone=True), LPIPSLoss(random_backbone=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    same = a({"sr": x, "hr": x})
    assert same.abs().item() < 1e-6
    d = a({"sr": y, "hr": x})
    assert d.item() > 0 and d.item() == pytest.approx(b({"sr": y, "hr": x}).item())
    assert not any(p.requires_grad for p in a.parameters())
