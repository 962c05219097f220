"""SR3 backbone: U-Net shapes, noise schedule, training draw, samplers, checkpointing, errors."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from zoomsr.backbones.sr3 import SR3, GaussianDiffusion, SelfAttention, SR3UNet

CONF = Path(__file__).resolve().parents[2] / "conf" / "backbone" / "sr3.yaml"
TINY = dict(inner_channel=16, channel_mults=[1, 2], attn_res=[8], res_blocks=1, norm_groups=8)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convolutions are dominated by thread hand-offs; one thread is several times faster.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_sr3(**overrides) -> SR3:
    kwargs = dict(scale=2, image_size=16, n_timestep=20, sample_steps=20, seed=0, **TINY)
    kwargs.update(overrides)
    return SR3(**kwargs)


# --- U-Net ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(16, 16), (16, 32)])
def test_unet_output_shape(size):
    net = SR3UNet(image_size=16, **TINY)
    out = net(torch.randn(2, 6, *size), torch.rand(2))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("attn_res", "expected"), [([], 1), ([16], 1 + 2 + 3), ([32, 16], 11)])
def test_attention_at_configured_resolution(attn_res, expected):
    # Image 32, mults [1, 2]: level 0 is 32 px, level 1 is 16 px. A level holds res_blocks = 2
    # blocks down and 3 up; the middle always adds one attention block.
    net = SR3UNet(
        inner_channel=16,
        channel_mults=[1, 2],
        attn_res=attn_res,
        res_blocks=2,
        norm_groups=8,
        image_size=32,
    )
    attns = [m for m in net.modules() if isinstance(m, SelfAttention)]
    assert len(attns) == expected
    if attn_res == [16]:  # all at level 1 (16 * 2 channels), none at level 0
        assert {a.qkv.in_channels for a in attns} == {32}


def test_attention_runs_on_the_fused_kernel_and_matches_the_formula():
    # Only the fused (flash) kernel keeps memory linear in H * W: on a whole 512 px image the
    # math fallback built a 65536^2 matrix and was OOM-killed. Forcing the fused backend makes
    # a layout it cannot take an error here instead of a silent 17 GB allocation.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attn = SelfAttention(16, 8)
    x = torch.randn(2, 16, 6, 5)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.no_grad():
        got = attn(x)
    qkv = attn.qkv(attn.norm(x)).flatten(2)  # (B, 3C, HW)
    q, k, v = qkv.chunk(3, dim=1)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(16), dim=-1)  # (B, HW, HW)
    want = x + attn.proj((v @ weights.transpose(1, 2)).reshape(2, 16, 6, 5))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _forward_counting_saved(net: SR3UNet, x: torch.Tensor, gamma: torch.Tensor):
    """A scalar loss, and how many tensors autograd kept for its backward."""
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        loss = net(x, gamma).square().mean()
    return loss, len(packed)


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    kwargs = dict(image_size=16, dropout=0.1, **TINY)
    plain, ckpt = SR3UNet(**kwargs), SR3UNet(gradient_checkpointing=True, **kwargs)
    ckpt.load_state_dict(plain.state_dict())
    x, gamma = torch.randn(2, 6, 16, 16), torch.rand(2)
    grads, saved = [], []
    for net in (plain, ckpt):
        torch.manual_seed(1)  # same dropout masks; checkpointing must replay them
        loss, n_saved = _forward_counting_saved(net, x, gamma)
        loss.backward()
        grads.append([p.grad for p in net.parameters()])
        saved.append(n_saved)
    for g_plain, g_ckpt in zip(*grads):
        torch.testing.assert_close(g_ckpt, g_plain, rtol=1e-5, atol=1e-6)
    assert saved[1] < saved[0] / 2  # the blocks' activations were not kept for backward


# --- diffusion ------------------------------------------------------------------------------


def test_gamma_schedule_is_monotone_from_one():
    diff = GaussianDiffusion(2000, 1e-6, 1e-2)
    assert diff.gammas.shape == (2001,)
    assert diff.gammas[0].item() == 1.0
    assert (diff.gammas[1:] < diff.gammas[:-1]).all()
    torch.testing.assert_close(diff.betas[[1, -1]], torch.tensor([1e-6, 1e-2], dtype=torch.float64))
    # ~all signal is gone at T: alpha_bar_T = prod(1 - beta) ~ exp(-sum beta) ~ exp(-10)
    assert diff.alpha_bar[-1].item() == pytest.approx(math.exp(-10.0), rel=0.05)


def test_posterior_variance_matches_hand_computation():
    diff = GaussianDiffusion(10, 1e-4, 0.2)
    t = 4
    betas = [1e-4 + (0.2 - 1e-4) * i / 9 for i in range(10)]  # beta_1 .. beta_10
    abar = [math.prod(1 - b for b in betas[:k]) for k in range(11)]  # abar_0 = 1
    expected = betas[t - 1] * (1 - abar[t - 1]) / (1 - abar[t])
    assert diff.posterior_variance(t) == pytest.approx(expected, rel=1e-9)
    assert diff.posterior_variance(1) == 0.0  # the last step adds no noise


def test_training_draw_lies_between_adjacent_levels():
    diff = GaussianDiffusion(50, 1e-4, 0.05)
    gamma, t = diff.sample_noise_level(20000, generator=torch.Generator().manual_seed(0))
    lo, hi = diff.gammas[t].float(), diff.gammas[t - 1].float()
    assert ((gamma >= lo - 1e-7) & (gamma <= hi + 1e-7)).all()
    assert set(t.tolist()) == set(range(1, 51))
    # uniform within the interval: the relative position has mean 1/2 and fills [0, 1]
    pos = (gamma - lo) / (hi - lo)
    assert pos.mean().item() == pytest.approx(0.5, abs=0.02)
    assert pos.min().item() < 0.01 and pos.max().item() > 0.99


def test_q_sample_endpoints():
    y0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(GaussianDiffusion.q_sample(y0, torch.ones(2), eps), y0)
    torch.testing.assert_close(GaussianDiffusion.q_sample(y0, torch.zeros(2), eps), eps)


def test_ddim_with_eta_one_is_the_ddpm_step():
    diff = GaussianDiffusion(100, 1e-4, 0.05)
    x_t, eps, noise = (torch.randn(1, 3, 8, 8, dtype=torch.float64) * 0.5 for _ in range(3))
    for t, s in [(100, 75), (10, 9)]:
        ddpm = diff.ddpm_step(x_t, eps, t, s, noise)
        torch.testing.assert_close(diff.ddim_step(x_t, eps, t, s, 1.0, noise), ddpm)


def test_timesteps_are_evenly_spaced_and_end_at_zero():
    pairs = GaussianDiffusion(2000).timesteps(4)
    assert pairs == [(2000, 1500), (1500, 1000), (1000, 500), (500, 0)]
    assert GaussianDiffusion(20).timesteps(20)[-1] == (1, 0)


# --- the backbone ---------------------------------------------------------------------------


def test_training_outputs_keys_and_shapes():
    model = tiny_sr3()
    out = model.training_outputs(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 16, 16))
    assert set(out) == {"eps_pred", "eps"}
    assert out["eps_pred"].shape == out["eps"].shape == (3, 3, 16, 16)
    assert out["eps_pred"].requires_grad and not out["eps"].requires_grad
    with pytest.raises(ValueError, match="not LR"):
        model.training_outputs(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 24, 24))


def _fixed_draw_loss(model: SR3, lr: torch.Tensor, hr: torch.Tensor) -> float:
    """The L1 on eps over the same 8 noise draws per image every time it is called."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(123)
        out = model.training_outputs(lr.repeat(8, 1, 1, 1), hr.repeat(8, 1, 1, 1))
        return F.l1_loss(out["eps_pred"], out["eps"]).item()


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny_sr3(n_timestep=2000)
    hr = torch.rand(4, 3, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = _fixed_draw_loss(model, lr, hr)
    for _ in range(100):
        out = model.training_outputs(lr, hr)
        loss = F.l1_loss(out["eps_pred"], out["eps"])  # SR3 Eq. 6 with p = 1
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _fixed_draw_loss(model, lr, hr)
    assert after < 0.5 * before, (before, after)  # ~0.89 -> ~0.32


@pytest.mark.parametrize(
    "overrides",
    [
        dict(sampler="ddpm"),
        dict(sampler="ddpm", sample_steps=5),
        dict(sampler="ddim", ddim_eta=1.0),
    ],
)
def test_sampler_shape_and_reproducibility(overrides):
    model = tiny_sr3(**dict(dict(sample_steps=10), **overrides))
    lr = torch.rand(2, 3, 8, 12)
    sr_a = model.upscale(lr, generator=torch.Generator().manual_seed(1))
    sr_b = model.upscale(lr, generator=torch.Generator().manual_seed(1))
    sr_c = model.upscale(lr, generator=torch.Generator().manual_seed(2))
    assert sr_a.shape == (2, 3, 16, 24)
    assert sr_a.min() >= 0.0 and sr_a.max() <= 1.0
    torch.testing.assert_close(sr_a, sr_b, rtol=0, atol=0)
    assert (sr_a - sr_c).abs().max() > 1e-3


def test_ddim_eta_zero_is_deterministic_given_the_start():
    lr = torch.rand(1, 3, 8, 8)
    cond = F.interpolate(lr, scale_factor=2, mode="bicubic") * 2 - 1
    x_t = torch.randn(1, 3, 16, 16)
    outs = {}
    for sampler in ("ddim", "ddpm"):
        model = tiny_sr3(sampler=sampler, sample_steps=5)
        outs[sampler] = [
            model.sample(cond, generator=torch.Generator().manual_seed(s), x_t=x_t) for s in (0, 1)
        ]
    torch.testing.assert_close(outs["ddim"][0], outs["ddim"][1], rtol=0, atol=0)
    assert (outs["ddpm"][0] - outs["ddpm"][1]).abs().max() > 1e-3  # DDPM adds fresh noise


def test_seed_fixes_weights_and_samples_and_mode_is_kept():
    a, b = tiny_sr3(seed=3, sample_steps=4), tiny_sr3(seed=3, sample_steps=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    lr = torch.rand(1, 3, 8, 8)
    assert a.training
    torch.testing.assert_close(a.upscale(lr), b.upscale(lr), rtol=0, atol=0)
    assert a.training  # sampling ran in eval mode and restored the mode


def test_trainable_state_round_trip():
    src, dst = tiny_sr3(seed=0, sample_steps=3), tiny_sr3(seed=1, sample_steps=3)
    state = src.trainable_state_dict()
    assert len(state) == len(list(src.parameters()))
    dst.load_trainable_state_dict(state)
    lr, gen = torch.rand(1, 3, 8, 8), lambda: torch.Generator().manual_seed(0)
    torch.testing.assert_close(dst.upscale(lr, generator=gen()), src.upscale(lr, generator=gen()))


def test_progress_bar_only_on_request(capsys):
    model, lr = tiny_sr3(sample_steps=3), torch.rand(1, 3, 8, 8)
    model.upscale(lr)
    assert "SR3" not in capsys.readouterr().err
    model.upscale(lr, progress=True)
    assert "SR3 ddpm" in capsys.readouterr().err


def test_non_divisible_size_is_a_clear_error():
    model = tiny_sr3(channel_mults=[1, 2, 2])  # HR sides must be multiples of 4
    assert model.upscale(torch.rand(1, 3, 5, 8)).shape == (1, 3, 10, 16)  # padded, cropped back
    with pytest.raises(ValueError, match=r"divisible by 4"):
        model.training_outputs(torch.rand(1, 3, 5, 8), torch.rand(1, 3, 10, 16))


@pytest.mark.parametrize(
    ("mults", "scale", "multiple"),
    [([1, 2], 2, 1), ([1, 2, 2], 2, 2), ([1, 2, 4, 8], 4, 2), ([1, 2, 4, 8], 3, 8)],
)
def test_size_multiple_is_the_lr_side_that_makes_the_hr_side_fit(mults, scale, multiple):
    model = tiny_sr3(channel_mults=mults, scale=scale, sample_steps=1)
    assert model.size_multiple == multiple
    lr = torch.rand(1, 3, 2 * multiple, 3 * multiple)
    assert model.upscale(lr).shape == (1, 3, 2 * multiple * scale, 3 * multiple * scale)
    odd = torch.rand(1, 3, 2 * multiple + 1, 3)  # padded to the multiple and cropped back
    assert model.upscale(odd).shape == (1, 3, (2 * multiple + 1) * scale, 3 * scale)


@pytest.mark.parametrize(
    "overrides",
    [dict(sampler="euler"), dict(sample_steps=21), dict(sample_steps=0), dict(linear_end=1.5)],
)
def test_bad_config_is_a_clear_error(overrides):
    with pytest.raises(ValueError):
        tiny_sr3(**overrides)


def test_yaml_keys_are_the_init_arguments():
    cfg = OmegaConf.load(CONF)
    assert cfg._target_ == "zoomsr.backbones.sr3.SR3"
    params = inspect.signature(SR3.__init__).parameters
    assert set(cfg) - {"_target_"} == set(params) - {"self"}
    root = OmegaConf.create({"scale": 8, "backbone": cfg})
    assert root.backbone.scale == 8
    for key, value in OmegaConf.to_container(cfg).items():
        if key not in ("_target_", "scale"):
            assert value == params[key].default or params[key].default is None, key


# --- residual diffusion (SRDiff), off by default ---------------------------------------------


def _unet_inputs(model: SR3) -> list[torch.Tensor]:
    """Every input the U-Net receives from now on, as ``(B, 6, H, W)`` tensors."""
    seen: list[torch.Tensor] = []
    model.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    return seen


@pytest.mark.parametrize(("residual", "scale"), [(False, 1.0), (True, 1.0), (True, 2.5)])
def test_training_noises_the_image_or_the_scaled_residual(residual, scale):
    model = tiny_sr3(residual=residual, residual_scale=scale)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    seeds = torch.tensor([5, 9])
    seen = _unet_inputs(model)
    out = model.training_outputs(lr, hr, seeds=seeds)
    gamma, eps = model._seeded_draws(seeds, hr)
    cond = F.interpolate(lr, size=(16, 16), mode="bicubic").clamp(0, 1) * 2 - 1
    y0 = (hr * 2 - 1 - cond) * scale if residual else hr * 2 - 1
    g = gamma[:, None, None, None]
    torch.testing.assert_close(seen[0][:, :3], cond)
    torch.testing.assert_close(seen[0][:, 3:], g * y0 + (1 - g**2).sqrt() * eps)
    torch.testing.assert_close(out["eps"], eps)


def test_residual_target_round_trips_to_the_image():
    model = tiny_sr3(residual=True, residual_scale=3.0)
    hr = torch.rand(2, 3, 16, 16)
    cond = torch.rand(2, 3, 16, 16) * 2 - 1
    back = model.from_model_range(model._from_target(model._target(hr, cond), cond))
    torch.testing.assert_close(back, hr)


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_residual_sample_stays_within_its_clamp_of_bicubic(scale):
    # The sampler clamps x0 to [-1, 1] and the last step returns it, so whatever the network
    # (here untrained), SR = bicubic + residual with |residual| <= 1 / scale in [-1, 1] units.
    model = tiny_sr3(residual=True, residual_scale=scale, sample_steps=3)
    lr = torch.rand(2, 3, 8, 8)
    bicubic = F.interpolate(lr, size=(16, 16), mode="bicubic").clamp(0, 1)
    sr = model.upscale(lr)
    assert sr.shape == (2, 3, 16, 16) and sr.min() >= 0 and sr.max() <= 1
    assert (sr - bicubic).abs().max() <= 0.5 / scale + 1e-6
    plain = tiny_sr3(sample_steps=3).upscale(lr)  # the image itself: no such bound
    assert (plain - bicubic).abs().max() > 0.5 / 4.0


def test_residual_model_learns_the_detail_bicubic_misses():
    # One image, a tiny net, 300 steps: its samples' MSE is 0.35-0.44x bicubic's over seeds 0-3
    # (150 steps gave 0.55-0.88x: too close to the bound for a test that must not flake).
    torch.manual_seed(0)
    model = tiny_sr3(
        residual=True,
        residual_scale=1.5,
        n_timestep=100,
        linear_end=0.05,
        sampler="ddim",
        sample_steps=2,
    )
    x = torch.linspace(0, 6 * math.pi, 16)
    hr = (0.5 + 0.4 * torch.sin(x[None, :] + x[:, None] ** 1.2)).expand(1, 3, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    bicubic = F.interpolate(lr, size=(16, 16), mode="bicubic").clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(300):
        out = model.training_outputs(lr.repeat(8, 1, 1, 1), hr.repeat(8, 1, 1, 1))
        loss = F.l1_loss(out["eps_pred"], out["eps"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    err_sr = F.mse_loss(model.upscale(lr, generator=torch.Generator().manual_seed(0)), hr)
    assert err_sr < 0.75 * F.mse_loss(bicubic, hr), (err_sr, F.mse_loss(bicubic, hr))


def test_bad_residual_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="residual_scale"):
        tiny_sr3(residual=True, residual_scale=0.0)
