"""ITER's loss terms by hand, the GAN-free pixel gradient path and the codebook statistics."""

from __future__ import annotations

import math

import pytest
import torch

from zoomsr.losses.ssim import SSIMLoss, ssim_rgb
from zoomsr.losses.token import ClassBalancedCrossEntropy, WeightedTokenCrossEntropy
from zoomsr.modules.codebook import CodebookUsage


def test_class_balanced_ce_weights_by_effective_number():
    # 3 samples of class 1, 1 of class 0, beta = 0.5: w0 = 0.5/0.5 = 1, w1 = 0.5/0.875 = 4/7;
    # normalized to sum 2: w0 = 14/11, w1 = 8/11. CE with weights = sum w_y ce / sum w_y.
    logits = torch.zeros(1, 4, 2)
    logits[0, :, 1] = torch.tensor([1.0, 2.0, 0.0, -1.0])
    target = torch.tensor([[1, 1, 1, 0]])
    out = {"l": logits, "t": target}
    got = ClassBalancedCrossEntropy("l", "t", beta=0.5, eps=0.0)(out)
    ce = [math.log(1 + math.exp(-z)) for z in (1.0, 2.0, 0.0)] + [math.log(1 + math.exp(-1.0))]
    w = [8 / 11] * 3 + [14 / 11]
    assert got.item() == pytest.approx(sum(a * b for a, b in zip(w, ce)) / sum(w), rel=1e-5)


def test_refiner_ce_weights_each_sample_by_its_hidden_fraction():
    logits = torch.zeros(2, 3, 4)  # uniform over 4 codes: CE = log 4 everywhere
    out = {
        "refine_logits": logits,
        "hr_tokens": torch.zeros(2, 3, dtype=torch.long),
        "refine_weight": torch.tensor([1.0, 0.25]),
    }
    assert WeightedTokenCrossEntropy()(out).item() == pytest.approx(math.log(4) * 0.625)


def test_ssim_loss_is_zero_on_equal_images_and_grows_with_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 24)
    assert SSIMLoss()({"recon": x, "hr": x}).item() == pytest.approx(0.0, abs=1e-6)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert 0.1 < SSIMLoss()({"recon": noisy, "hr": x}).item() < 1.0
    assert ssim_rgb(x, x).shape == (2,)


def test_codebook_usage_perplexity_and_dead_codes():
    usage = CodebookUsage(size=4, window=2)
    first = usage.update(torch.tensor([0, 1, 2, 3]))
    assert first["perplexity"] == pytest.approx(4.0) and first["dead"] == 0
    assert usage.update(torch.tensor([0, 0]))["perplexity"] == pytest.approx(1.0)
    third = usage.update(torch.tensor([0, 1]))  # codes 2, 3 unused for 2 steps
    assert third["dead"] == 2 and third["used"] == 0.5
