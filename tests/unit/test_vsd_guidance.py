"""VSD as OSEDiff trains it, on the tiny SD3: the guided real score, the noise-level range, the
settings' defaults and their checks, the diagnostics."""

from __future__ import annotations

import pytest
import torch

from zoomsr.backbones.sd3_lora import SD3LoRA
from zoomsr.errors import ZoomSRError
from zoomsr.losses.vsd import OSEDIFF_NEGATIVE_PROMPT, VSDLoss, VSDSettings

TINY = {"pretrained": "tiny", "max_sequence_length": 16}


@pytest.fixture(scope="module")
def backbone():
    b = SD3LoRA(**TINY, vsd=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-zero adapters: the fake score differs from the real one
        for name, p in b.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return b


def test_guided_real_score_is_the_cfg_formula_in_eps(backbone):
    """eps_real = eps_uncond + s (eps_cond - eps_uncond), with each eps from its own forward
    (eps = z_t + (1 - sigma) v for z_t = (1 - sigma) z0 + sigma eps, v = eps - z0)."""
    g = torch.Generator().manual_seed(2)
    z_t = torch.randn(2, 4, 4, 4, generator=g)
    sigma = torch.tensor([0.3, 0.8])
    t = sigma * 1000
    cond = backbone.prompt_embeddings(["a red cat", "a stone wall"], 2)
    uncond = backbone.prompt_embeddings(["blurry, lowres", "blurry, lowres"], 2)
    s = sigma.view(2, 1, 1, 1)
    with torch.no_grad(), backbone.adapter(None):
        eps_c = z_t + (1 - s) * backbone.velocity(z_t, t, *cond)
        eps_u = z_t + (1 - s) * backbone.velocity(z_t, t, *uncond)
        for scale in (7.5, 3.0):
            eps = z_t + (1 - s) * backbone.guided_velocity(z_t, t, cond, uncond, scale)
            torch.testing.assert_close(eps, eps_u + scale * (eps_c - eps_u), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(eps_c, eps_u, atol=1e-3)  # the prompts matter
        one = z_t + (1 - s) * backbone.guided_velocity(z_t, t, cond, uncond, 1.0)
        torch.testing.assert_close(one, eps_c)  # scale 1: the conditional score alone


def _outputs(backbone, settings, seed=5):
    lr = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return backbone.training_outputs(
            lr, torch.zeros(2, 3, 32, 32), ["a red cat", "a stone wall"],
            seeds=torch.tensor([seed, seed + 1]), vsd=settings,
        )  # fmt: skip


def test_training_outputs_use_the_guided_base_and_the_unguided_regularizer(backbone):
    settings = VSDSettings(guidance_scale=7.5, negative_prompt="blurry", t_min=20, t_max=980)
    out = _outputs(backbone, settings)
    z_t, t = out["vsd_zt"], out["vsd_t"]
    s = (t / 1000).view(-1, 1, 1, 1)
    cond = backbone.prompt_embeddings(["a red cat", "a stone wall"], 2)
    uncond = backbone.prompt_embeddings(["blurry"] * 2, 2)
    with torch.no_grad():
        with backbone.adapter(None):
            v_c, v_u = backbone.velocity(z_t, t, *cond), backbone.velocity(z_t, t, *uncond)
        with backbone.adapter("regularizer"):
            v_fake = backbone.velocity(z_t, t, *cond)
    torch.testing.assert_close(out["x0_real"], z_t - s * (v_u + 7.5 * (v_c - v_u)), atol=1e-4,
                               rtol=1e-4)  # fmt: skip
    torch.testing.assert_close(out["x0_fake"], z_t - s * v_fake, atol=1e-5, rtol=1e-5)
    # Another guidance scale or negative prompt changes the real score only.
    other = _outputs(backbone, VSDSettings(guidance_scale=1.0, negative_prompt="blurry"))
    assert not torch.allclose(other["x0_real"], out["x0_real"], atol=1e-3)
    torch.testing.assert_close(other["x0_fake"], out["x0_fake"])
    neg = _outputs(backbone, VSDSettings(negative_prompt="a cartoon"))
    assert not torch.allclose(neg["x0_real"], _outputs(backbone, VSDSettings())["x0_real"])


def test_noise_levels_stay_in_the_step_range(backbone):
    sig = backbone.train_sigmas.flip(0)  # least noisy first: step k has sigma sig[k]
    ts = torch.cat([_outputs(backbone, VSDSettings(t_min=20, t_max=980), s)["vsd_t"]
                    for s in range(30)])  # fmt: skip
    assert ts.min() >= sig[20] * 1000 - 1e-3 and ts.max() <= sig[979] * 1000 + 1e-3
    narrow = _outputs(backbone, VSDSettings(t_min=500, t_max=501))["vsd_t"]
    torch.testing.assert_close(narrow, (sig[500] * 1000).expand(2))


def test_defaults_are_osediffs_and_bad_values_are_named():
    loss = VSDLoss()
    assert loss.settings == VSDSettings(7.5, OSEDIFF_NEGATIVE_PROMPT, 20, 980)
    assert OSEDIFF_NEGATIVE_PROMPT.startswith("painting, oil painting") and "over-smooth" in (
        OSEDIFF_NEGATIVE_PROMPT
    )
    with pytest.raises(ZoomSRError, match="t_min/t_max"):
        VSDLoss(t_min=900, t_max=100)
    with pytest.raises(ZoomSRError, match="guidance_scale"):
        VSDLoss(guidance_scale=-1)


def test_diagnostics_on_known_values():
    z0 = torch.tensor([[[[1.0, 2.0]]]])
    real, fake = torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[0.5, 2.0]]]])
    d = VSDLoss().diagnostics({"latent": z0, "x0_real": real, "x0_fake": fake})
    assert d["gap"].item() == pytest.approx(0.75)  # mean |fake - real| = (0.5 + 1) / 2
    assert d["norm"].item() == pytest.approx(1.0)  # mean |z0 - real|
    assert d["grad"].item() == pytest.approx(0.75)
    # cos(g = [0.5, 1], z0 - real = [1, 1]) = 1.5 / (sqrt(1.25) sqrt(2))
    assert d["cos"].item() == pytest.approx(1.5 / (1.25**0.5 * 2**0.5))
