"""Real-ESRGAN degradation: kernels, noise, JPEG, the whole pipeline and its config."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from zoomsr.data.degradation import (
    KERNEL_TYPES,
    RealESRGANDegradation,
    add_gaussian_noise,
    add_poisson_noise,
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    jpeg_compress,
    plateau_kernel,
    random_blur_kernel,
    random_mixed_kernel,
    sinc_kernel,
)

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "degradation" / "realesrgan.yaml"

# Every random step switched off and resizes kept: only the final resize to 1/scale is left.
ALL_OFF = dict(
    blur_prob=0.0,
    second_blur_prob=0.0,
    noise_prob=0.0,
    noise_prob2=0.0,
    jpeg_prob=0.0,
    jpeg_prob2=0.0,
    final_sinc_prob=0.0,
    resize_prob=[0.0, 0.0, 1.0],
    resize_prob2=[0.0, 0.0, 1.0],
    resize_modes=["area"],
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hr(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth random image (upsampled noise), more like a photo than white noise."""
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=_gen(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "kernel",
    [
        gaussian_kernel(7, 1.2),
        gaussian_kernel(21, 3.0, 0.5, 0.7),
        generalized_gaussian_kernel(15, 2.0, 1.0, -1.0, beta=0.5),
        generalized_gaussian_kernel(9, 1.0, beta=4.0),
        plateau_kernel(11, 1.5, 0.8, 2.0, beta=1.5),
        sinc_kernel(13, math.pi / 4),
    ],
)
def test_kernels_are_normalized_and_centred(kernel: torch.Tensor) -> None:
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    # Every kernel here is point-symmetric, so correlation equals convolution.
    torch.testing.assert_close(kernel, kernel.flip(0, 1))


def test_isotropic_gaussian_matches_closed_form() -> None:
    sigma, size = 1.7, 9
    ax = torch.arange(size, dtype=torch.float64) - size // 2
    expected = torch.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    torch.testing.assert_close(gaussian_kernel(size, sigma), expected / expected.sum())


def test_anisotropic_gaussian_rotates() -> None:
    wide = gaussian_kernel(15, 3.0, 1.0, theta=0.0)  # long along x (columns)
    assert wide[7, 7 + 4] > wide[7 + 4, 7]
    torch.testing.assert_close(gaussian_kernel(15, 3.0, 1.0, theta=math.pi / 2), wide.T)


def test_generalized_and_plateau_closed_forms() -> None:
    torch.testing.assert_close(
        generalized_gaussian_kernel(11, 2.0, beta=1.0), gaussian_kernel(11, 2.0)
    )
    sigma, beta = 2.0, 1.5
    k = plateau_kernel(11, sigma, beta=beta)
    q = (3.0 / sigma) ** 2  # offset of 3 pixels along x
    assert (k[5, 5] / k[5, 8]).item() == pytest.approx(1 + q**beta)
    g = generalized_gaussian_kernel(11, sigma, beta=beta)
    assert (g[5, 8] / g[5, 5]).item() == pytest.approx(math.exp(-0.5 * q**beta))


def test_sinc_kernel_frequency_response() -> None:
    cutoff = math.pi / 3
    response = torch.fft.fft2(sinc_kernel(21, cutoff), s=(128, 128)).abs()
    freq = torch.fft.fftfreq(128, dtype=torch.float64) * 2 * math.pi  # radians per pixel
    radius = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    assert response[0, 0].item() == pytest.approx(1.0, abs=1e-9)  # unit DC gain
    # A truncated sinc ripples (Gibbs), but passes the low band and stops the high one.
    assert response[radius < 0.5 * cutoff].min() > 0.85
    assert response[radius > 1.5 * cutoff].max() < 0.1
    assert sinc_kernel(7, 1.0)[3, 3].item() > 0


@pytest.mark.parametrize("kind", KERNEL_TYPES)
def test_random_mixed_kernel_each_type(kind: str) -> None:
    kernel = random_mixed_kernel(13, [kind], [1.0], [0.2, 3.0], [0.5, 4.0], [1.0, 2.0], _gen(1))
    assert kernel.shape == (13, 13)
    assert kernel.sum().item() == pytest.approx(1.0)
    if kind.endswith("_iso") or kind == "iso":  # isotropic: symmetric under transposition
        torch.testing.assert_close(kernel, kernel.T)


def test_random_blur_kernel_sizes_and_seed() -> None:
    args = (21, list(KERNEL_TYPES), [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], [0.2, 3.0])
    sizes = {
        random_blur_kernel(*args, [0.5, 4.0], [1.0, 2.0], 0.1, _gen(s)).shape[0] for s in range(60)
    }
    assert sizes <= set(range(7, 22, 2)) and len(sizes) >= 5
    a = random_blur_kernel(*args, [0.5, 4.0], [1.0, 2.0], 0.5, _gen(3))
    b = random_blur_kernel(*args, [0.5, 4.0], [1.0, 2.0], 0.5, _gen(3))
    assert torch.equal(a, b)
    # sinc_prob=1 always gives a sinc kernel: negative side lobes, unlike the Gaussian family.
    assert random_blur_kernel(*args, [0.5, 4.0], [1.0, 2.0], 1.0, _gen(4)).min() < 0


# ------------------------------------------------------------------- noise, JPEG, filtering


def test_gaussian_noise_level_and_gray() -> None:
    img = torch.full((1, 3, 128, 128), 0.5)
    noisy = add_gaussian_noise(img, 10.0, gray=False, generator=_gen(0))
    assert (noisy - img).std().item() == pytest.approx(10 / 255, rel=0.05)
    gray = add_gaussian_noise(img, 10.0, gray=True, generator=_gen(0))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])


def test_poisson_noise_scale() -> None:
    img = (_hr(1) * 255).round() / 255
    assert torch.equal(add_poisson_noise(img, 0.0, gray=False, generator=_gen(0)), img)
    small = (add_poisson_noise(img, 0.5, gray=False, generator=_gen(0)) - img).abs().mean()
    large = (add_poisson_noise(img, 3.0, gray=False, generator=_gen(0)) - img).abs().mean()
    assert 0 < small < large
    mid = 0.25 + 0.5 * img  # away from 0 and 1, so clamping cannot break the equality
    gray = add_poisson_noise(mid, 1.0, gray=True, generator=_gen(0)) - mid
    torch.testing.assert_close(gray[:, 0], gray[:, 1], atol=1e-6, rtol=0)


def test_jpeg_quality_orders_error() -> None:
    img = _hr(1)
    err = [(jpeg_compress(img, q) - img).abs().mean().item() for q in (10, 50, 95)]
    assert err[0] > err[1] > err[2] and err[2] < 0.02
    out = jpeg_compress(img, 50)
    assert out.shape == img.shape and torch.equal(out, (out * 255).round() / 255)


def test_filter2d_on_image_smaller_than_kernel() -> None:
    flat = torch.full((1, 3, 5, 6), 0.3)
    torch.testing.assert_close(filter2d(flat, gaussian_kernel(21, 3.0)), flat)


# -------------------------------------------------------------------------------- pipeline


def test_output_shape_range_and_levels() -> None:
    degrade = RealESRGANDegradation()
    hr = _hr(3)
    lr = degrade(hr, _gen(0))
    assert lr.shape == (3, 3, 16, 16) and lr.dtype == hr.dtype
    assert lr.min() >= 0 and lr.max() <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)  # on the 8-bit grid
    assert degrade(hr[0], _gen(0)).shape == (3, 16, 16)
    assert RealESRGANDegradation(scale=2)(_hr(1, 32), _gen(0)).shape == (1, 3, 16, 16)


def test_tiny_and_odd_sized_images_survive_every_draw() -> None:
    degrade = RealESRGANDegradation()
    for seed in range(10):
        assert degrade(_hr(1, 16)[..., :15], _gen(seed)).shape == (1, 3, 4, 3)


def test_same_seed_same_output_different_seed_different() -> None:
    degrade, hr = RealESRGANDegradation(), _hr(2)
    first = degrade(hr, _gen(123))
    assert torch.equal(first, degrade(hr, _gen(123)))
    assert not torch.equal(first, degrade(hr, _gen(124)))


def test_global_rng_is_used_without_generator() -> None:
    degrade, hr = RealESRGANDegradation(), _hr(1)
    torch.manual_seed(7)
    first = degrade(hr)
    torch.manual_seed(7)
    assert torch.equal(first, degrade(hr))


def test_batch_items_draw_their_own_degradations() -> None:
    hr = _hr(1).repeat(4, 1, 1, 1)
    lr = RealESRGANDegradation()(hr, _gen(5))
    assert all(not torch.equal(lr[0], lr[i]) for i in range(1, 4))


def test_everything_off_is_a_plain_downscale() -> None:
    hr = _hr(2)
    lr = RealESRGANDegradation(**ALL_OFF)(hr, _gen(0))
    expected = F.interpolate(hr, size=(16, 16), mode="area")
    assert torch.equal(lr, (expected * 255).round() / 255)


@pytest.mark.parametrize(
    "override",
    [
        dict(blur_prob=1.0, blur_sigma=[2.0, 2.0]),
        dict(noise_prob2=1.0, noise_range2=[20.0, 20.0]),
        dict(jpeg_prob2=1.0, jpeg_range2=[30.0, 30.0]),
        dict(final_sinc_prob=1.0),
        dict(resize_prob=[1.0, 0.0, 0.0], resize_modes=["bicubic"]),
    ],
)
def test_each_step_can_be_switched_on_alone(override: dict) -> None:
    hr = _hr(1)
    plain = RealESRGANDegradation(**ALL_OFF)(hr, _gen(0))
    degraded = RealESRGANDegradation(**{**ALL_OFF, **override})(hr, _gen(0))
    assert degraded.shape == plain.shape and not torch.equal(degraded, plain)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(kernel_prob=[0.5, 0.5, 0.5, 0.0, 0.0, 0.0]), "kernel_prob"),
        (dict(kernel_list2=["iso", "box"], kernel_prob2=[0.5, 0.5]), "kernel_list2"),
        (dict(kernel_list=["iso", "aniso"]), "kernel_prob"),  # lengths differ
        (dict(blur_sigma=[3.0, 0.2]), "blur_sigma"),
        (dict(blur_sigma2=[0.0, 1.0]), "blur_sigma2"),
        (dict(resize_prob2=[0.5, 0.5]), "resize_prob2"),
        (dict(resize_range=[1.2, 1.5]), "resize_range"),
        (dict(noise_range=[5.0]), "noise_range"),
        (dict(jpeg_range2=[30.0, 120.0]), "jpeg_range2"),
        (dict(second_blur_prob=1.5), "second_blur_prob"),
        (dict(gray_noise_prob2=-0.1), "gray_noise_prob2"),
        (dict(blur_kernel_size=20), "blur_kernel_size"),
        (dict(final_sinc_kernel_size=5), "final_sinc_kernel_size"),
        (dict(resize_modes=["lanczos"]), "resize_modes"),
        (dict(scale=0), "scale"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        RealESRGANDegradation(**kwargs)


def test_invalid_input_raises() -> None:
    degrade = RealESRGANDegradation()
    with pytest.raises(ValueError, match="hr must be"):
        degrade(torch.rand(1, 4, 32, 32))
    with pytest.raises(ValueError, match="smaller than scale"):
        degrade(torch.rand(1, 3, 2, 32))


def test_config_holds_exactly_the_init_arguments_and_defaults() -> None:
    cfg = OmegaConf.load(CONFIG)
    assert OmegaConf.to_container(cfg)["scale"] == "${scale}"  # follows the run's scale
    cfg.scale = 4
    params = inspect.signature(RealESRGANDegradation.__init__).parameters
    defaults = {name: p.default for name, p in params.items() if name != "self"}
    keys = {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"}
    assert keys == defaults
    degrade = instantiate(cfg)
    assert isinstance(degrade, RealESRGANDegradation)
    assert degrade(_hr(1), _gen(0)).shape == (1, 3, 16, 16)
