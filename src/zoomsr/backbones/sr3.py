"""SR3: image super-resolution via iterative refinement (Saharia et al. 2021, arXiv:2104.07636).

Three pieces, read top to bottom:

- :class:`SR3UNet`, the denoiser ``f(x, y_noisy, gamma) -> eps``. The LR image, upsampled to the
  HR size with bicubic, is concatenated to the noisy image on the channel axis (6 channels in,
  3 out). The noise level ``gamma`` is embedded by a sinusoidal encoding and an MLP and added to
  the features of every ResNet block (an additive FiLM).
- :class:`GaussianDiffusion`, the weightless arithmetic: the linear beta schedule, the training
  draw of a continuous noise level, and one step of the DDPM (ancestral) or DDIM sampler.
- :class:`SR3`, the :class:`~zoomsr.backbones.base.Backbone` that joins them.

Two U-Net variants (``variant``): ``"zoomsr"`` (the default, as above) and ``"janspiry"``, the
network of Janspiry's public SR3 (github.com/Janspiry/Image-Super-Resolution-via-Iterative-
Refinement, ``model/sr3_modules/unet.py``), whose released checkpoints ``zoomsr import-sr3``
converts. They differ in five switches of :class:`SR3UNet` (:data:`UNET_VARIANTS`): the noise
level enters the encoding raw (not x5000); the embedding MLP ends at ``C``, not ``4C``; the FiLM
projection is a plain Linear (no SiLU before it); a ResNet block returns ``h + skip(x)``, not
``(h + skip(x)) / sqrt(2)``; the attention's qkv conv has no bias. Janspiry conditions on the LR
upsampled by PIL's bicubic on 8-bit images (``condition="pil_bicubic_8bit"``).

One option departs from the paper, off by default: ``residual=True`` diffuses the residual
``HR - bicubic(LR)`` instead of the HR image (SRDiff, Li et al. 2022, arXiv:2104.14951),
scaled by ``residual_scale``. The network then starts from the bicubic image and only has to learn
the missing detail, which a small model learns in minutes on a CPU (the quickstart uses it).

Notation. ``alpha_bar[t] = prod_{i<=t} (1 - beta_i)`` with ``alpha_bar[0] = 1``, and the noise
level is ``gamma_t = sqrt(alpha_bar[t])`` (so ``gamma_0 = 1``): a noisy image is
``gamma * y0 + sqrt(1 - gamma^2) * eps``. The SR3 paper writes ``gamma`` for ``alpha_bar`` itself
and conditions on its square root; we name the square root ``gamma``, as its reference
implementations do, since it is the quantity the network sees. Inside, images live in [-1, 1];
at the public API they are in [0, 1].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from zoomsr.backbones.base import Backbone, seeded
from zoomsr.errors import ZoomSRError

#: WaveGrad (Chen et al. 2021), whose noise-level conditioning SR3 adopts, multiplies the level
#: by 5000 before the sinusoidal encoding: gamma lies in [0, 1], and unscaled it would only turn
#: the slowest sinusoids, leaving neighbouring levels near gamma = 1 indistinguishable.
NOISE_LEVEL_SCALE = 5000.0


class SR3ValueError(ZoomSRError, ValueError):
    """A configuration value or an input size that SR3 cannot work with."""


# ---------------------------------------------------------------------------------------------
# The U-Net
# ---------------------------------------------------------------------------------------------


#: The switches of :class:`SR3UNet` that make each variant (module docstring).
UNET_VARIANTS: dict[str, dict[str, float | int | bool]] = {
    "zoomsr": {
        "noise_level_scale": NOISE_LEVEL_SCALE,
        "emb_mult": 4,
        "film_act": True,
        "skip_rescale": True,
        "qkv_bias": True,
        "swish": False,
        "fused_attention": True,
    },
    "janspiry": {
        "noise_level_scale": 1.0,
        "emb_mult": 1,
        "film_act": False,
        "skip_rescale": False,
        "qkv_bias": False,
        # Not a different function, the same arithmetic: x * sigmoid(x) and F.silu round
        # differently (1 ulp), and an unfused softmax(q k^T / sqrt(C)) v differs from the fused
        # kernel by as much; a deep U-Net amplifies that to ~1e-5. Computed Janspiry's way, the
        # two networks agree to float rounding.
        "swish": True,
        "fused_attention": False,
    },
}


class Swish(nn.Module):
    """``x * sigmoid(x)``, computed in that order (SiLU, as Janspiry's SR3 writes it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _activation(swish: bool) -> nn.Module:
    return Swish() if swish else nn.SiLU()


def noise_level_encoding(
    gamma: torch.Tensor, dim: int, scale: float = NOISE_LEVEL_SCALE
) -> torch.Tensor:
    """Sinusoidal (Transformer-style) encoding of the continuous noise level.

    Args:
        gamma: ``(B,)`` or ``(B, 1)`` noise levels ``sqrt(alpha_bar)`` in [0, 1].
        dim: even embedding width.
        scale: ``s`` below (default :data:`NOISE_LEVEL_SCALE`; Janspiry's SR3 uses 1).

    Returns:
        ``(B, dim)`` float32: ``[sin(s * gamma * w_k), cos(s * gamma * w_k)]`` with
        ``w_k = 10000^(-k / (dim / 2))``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=gamma.device) / half)
    level = gamma.float().reshape(gamma.shape[0], -1)[:, 0]
    angles = (level if scale == 1.0 else scale * level)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, + FiLM(noise), GroupNorm -> SiLU -> dropout -> conv, + skip.

    The skip sum is rescaled by 1/sqrt(2), as SR3 does (Sec. 2.4, with BigGAN-style blocks), so
    the variance of the features does not grow with depth.

    Args:
        in_ch, out_ch: channels in and out (a 1x1 conv matches the skip when they differ).
        emb_dim: width of the noise-level embedding.
        norm_groups: GroupNorm groups; must divide ``in_ch`` and ``out_ch``.
        dropout: dropout probability before the second conv.
        film_act: SiLU before the FiLM projection (default True; False: a plain Linear).
        skip_rescale: return ``(h + skip) / sqrt(2)`` (default True; False: ``h + skip``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        norm_groups: int,
        dropout: float,
        film_act: bool = True,
        skip_rescale: bool = True,
        swish: bool = False,
    ):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.act = _activation(swish)
        self.norm1 = nn.GroupNorm(norm_groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        # Additive FiLM: the embedding is projected to one bias per channel. The Linear stays at
        # index 1 either way, so both variants share the key names.
        act = _activation(swish) if film_act else nn.Identity()
        self.noise_proj = nn.Sequential(act, nn.Linear(emb_dim, out_ch))
        self.norm2 = nn.GroupNorm(norm_groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``(B, in_ch, H, W)``, ``(B, emb_dim)`` -> ``(B, out_ch, H, W)``."""
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.noise_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        h = h + self.skip(x)
        return h / math.sqrt(2.0) if self.skip_rescale else h


class SelfAttention(nn.Module):
    """Single-head self-attention over all ``H * W`` positions, with a residual connection.

    ``softmax(q k^T / sqrt(C)) v`` with q, k, v the three ``C``-channel thirds of a 1x1 conv of
    the normalized input (``qkv_bias=False``: that conv has no bias, as in Janspiry's SR3).
    """

    def __init__(self, channels: int, norm_groups: int, qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        self.fused = fused
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        if not self.fused:  # the HW x HW matrix in memory, as Janspiry computes it
            q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h, w).unbind(1)  # (B, C, H, W)
            logits = torch.einsum("bcij,bcyx->bijyx", q, k) / math.sqrt(c)  # (B, H, W, H, W)
            attn = logits.reshape(b, h, w, h * w).softmax(-1).reshape(b, h, w, h, w)
            out = torch.einsum("bijyx,bcyx->bcij", attn, v)  # (B, C, H, W)
            return x + self.proj(out)
        # (B, 1, HW, C) with the channels contiguous: only then does the CPU dispatch pick the
        # fused (flash) kernel, whose memory is linear in HW. On a strided view it falls back
        # to the math kernel and materializes the HW x HW matrix: 17 GB at 256 x 256.
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).contiguous()
        q, k, v = qkv[:, :, None].unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class SR3Block(nn.Module):
    """A :class:`ResnetBlock`, followed by :class:`SelfAttention` at the configured resolutions."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        norm_groups: int,
        dropout: float,
        with_attn: bool,
        film_act: bool = True,
        skip_rescale: bool = True,
        qkv_bias: bool = True,
        swish: bool = False,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.res = ResnetBlock(
            in_ch, out_ch, emb_dim, norm_groups, dropout, film_act, skip_rescale, swish
        )
        self.attn = (
            SelfAttention(out_ch, norm_groups, qkv_bias, fused_attention) if with_attn else None
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``(B, in_ch, H, W)``, ``(B, emb_dim)`` -> ``(B, out_ch, H, W)``."""
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour, then a 3x3 conv (avoids checkerboards)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SR3UNet(nn.Module):
    """The SR3 denoiser: a U-Net conditioned by concatenation on the upsampled LR image.

    Level ``i`` has ``inner_channel * channel_mults[i]`` channels and ``res_blocks`` blocks on the
    way down (``res_blocks + 1`` on the way up, one per skip); every level but the last ends with
    a 2x down/up sampling. The middle has two blocks, the first with attention.

    Args:
        in_channels: 6 = 3 (bicubic LR) + 3 (noisy HR).
        out_channels: 3 (the predicted noise).
        inner_channel: channels of the first level (default 64).
        channel_mults: per-level channel multipliers (default ``[1, 2, 4, 8, 8]``).
        attn_res: resolutions, in pixels of a training image of side ``image_size``, whose blocks
            get self-attention (default ``[16]``). Attention is tied to the level, so an image of
            another size at inference uses it at the same levels.
        res_blocks: ResNet blocks per level on the way down (default 2).
        dropout: dropout probability in every ResNet block (default 0).
        norm_groups: GroupNorm groups (default 32); must divide every channel count.
        image_size: side of the training HR crop (default 128); only places the attention.
        gradient_checkpointing: recompute each block in the backward pass to save memory.
        noise_level_scale: factor on ``gamma`` before the sinusoidal encoding (default 5000,
            WaveGrad's; Janspiry: 1).
        emb_mult: the noise embedding MLP is ``Linear(C, 4C) -> SiLU -> Linear(4C, emb_mult C)``
            (default 4; Janspiry: 1).
        film_act, skip_rescale: of every :class:`ResnetBlock` (default True; Janspiry: False).
        qkv_bias: bias of the attention's qkv conv (default True; Janspiry: False).
        swish, fused_attention: compute SiLU as ``x * sigmoid(x)`` and attention unfused, to
            agree with Janspiry's arithmetic to float rounding (defaults False, True).

    :data:`UNET_VARIANTS` names the last seven for each variant.

    Input ``x``: ``(B, 6, H, W)`` in [-1, 1], the condition first (``cat([cond, y_t])``), ``H``
    and ``W`` divisible by ``2 ** (len(channel_mults) - 1)``; ``gamma``: ``(B,)`` or ``(B, 1)``
    noise levels in [0, 1] (Janspiry's denoiser takes ``(B, 1)``).
    Output: ``(B, 3, H, W)``, the predicted noise.
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        inner_channel: int = 64,
        channel_mults: list[int] | None = None,
        attn_res: list[int] | None = None,
        res_blocks: int = 2,
        dropout: float = 0.0,
        norm_groups: int = 32,
        image_size: int = 128,
        gradient_checkpointing: bool = False,
        noise_level_scale: float = NOISE_LEVEL_SCALE,
        emb_mult: int = 4,
        film_act: bool = True,
        skip_rescale: bool = True,
        qkv_bias: bool = True,
        swish: bool = False,
        fused_attention: bool = True,
    ):
        super().__init__()
        self.channel_mults = [1, 2, 4, 8, 8] if channel_mults is None else list(channel_mults)
        self.attn_res = [16] if attn_res is None else [int(r) for r in attn_res]
        self.gradient_checkpointing = gradient_checkpointing
        self.noise_level_scale = float(noise_level_scale)
        hidden, emb_dim = inner_channel * 4, inner_channel * emb_mult
        self.noise_mlp = nn.Sequential(
            nn.Linear(inner_channel, hidden), _activation(swish), nn.Linear(hidden, emb_dim)
        )
        self.inner_channel = inner_channel
        self.init_conv = nn.Conv2d(in_channels, inner_channel, 3, padding=1)
        block = functools.partial(
            SR3Block,
            emb_dim=emb_dim,
            norm_groups=norm_groups,
            dropout=dropout,
            film_act=film_act,
            skip_rescale=skip_rescale,
            qkv_bias=qkv_bias,
            swish=swish,
            fused_attention=fused_attention,
        )
        self.downs, skips, ch = self._build_down(block, inner_channel, res_blocks, image_size)
        self.mid = nn.ModuleList([block(ch, ch, with_attn=True), block(ch, ch, with_attn=False)])
        self.ups, ch = self._build_up(block, ch, skips, res_blocks, image_size)
        self.out_norm = nn.GroupNorm(norm_groups, ch)
        self.out_act = _activation(swish)
        self.out_conv = nn.Conv2d(ch, out_channels, 3, padding=1)

    def _build_down(
        self, block: Callable[..., SR3Block], inner: int, res_blocks: int, image_size: int
    ) -> tuple[nn.ModuleList, list[int], int]:
        """Down path; returns the modules, the channels of every skip, and the channels out."""
        modules, skips, ch, res = nn.ModuleList(), [inner], inner, image_size
        for level, mult in enumerate(self.channel_mults):
            for _ in range(res_blocks):
                modules.append(block(ch, inner * mult, with_attn=res in self.attn_res))
                ch = inner * mult
                skips.append(ch)
            if level < len(self.channel_mults) - 1:
                modules.append(Downsample(ch))
                skips.append(ch)
                res //= 2
        return modules, skips, ch

    def _build_up(
        self,
        block: Callable[..., SR3Block],
        ch: int,
        skips: list[int],
        res_blocks: int,
        image_size: int,
    ) -> tuple[nn.ModuleList, int]:
        """Up path, mirroring the down path; consumes ``skips`` from the end."""
        modules = nn.ModuleList()
        res = image_size // 2 ** (len(self.channel_mults) - 1)
        for level in reversed(range(len(self.channel_mults))):
            out = self.inner_channel * self.channel_mults[level]
            for _ in range(res_blocks + 1):
                modules.append(block(ch + skips.pop(), out, with_attn=res in self.attn_res))
                ch = out
            if level > 0:
                modules.append(Upsample(ch))
                res *= 2
        return modules, ch

    def _run(self, block: SR3Block, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing keeps dropout's RNG state, so gradients are unchanged.
            return checkpoint(block, x, emb, use_reentrant=False)
        return block(x, emb)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """``(B, 6, H, W)``, ``(B,)`` or ``(B, 1)`` -> ``(B, 3, H, W)``: the noise prediction
        ``eps_theta(cat([cond, y_t]), gamma)`` (SR3 Eq. 6)."""
        enc = noise_level_encoding(gamma, self.inner_channel, self.noise_level_scale)
        emb = self.noise_mlp(enc.to(x.dtype))
        h = self.init_conv(x)
        feats = [h]
        for module in self.downs:
            h = self._run(module, h, emb) if isinstance(module, SR3Block) else module(h)
            feats.append(h)
        for module in self.mid:
            h = self._run(module, h, emb)
        for module in self.ups:
            if isinstance(module, SR3Block):
                h = self._run(module, torch.cat([h, feats.pop()], dim=1), emb)
            else:
                h = module(h)
        return self.out_conv(self.out_act(self.out_norm(h)))


# ---------------------------------------------------------------------------------------------
# The diffusion
# ---------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """The linear beta schedule of SR3 and the arithmetic of training and sampling; no weights.

    The schedule is kept in float64 on the CPU and read per step as Python floats: near t = 0,
    ``1 - alpha_bar`` is ~1e-6, of which float32 keeps one digit and bf16 none.

    Args:
        n_timestep: number of discrete levels T (default 2000).
        linear_start, linear_end: ``beta_1`` and ``beta_T`` (defaults 1e-6 and 1e-2).

    Attributes:
        betas: ``(T + 1,)``, ``betas[0] = 0`` so that ``alpha_bar[0] = 1``.
        alpha_bar: ``(T + 1,)`` cumulative products of ``1 - beta``, decreasing from 1.
        gammas: ``(T + 1,)`` noise levels ``sqrt(alpha_bar)``, ``gammas[0] = 1``.
    """

    def __init__(
        self, n_timestep: int = 2000, linear_start: float = 1e-6, linear_end: float = 1e-2
    ):
        if n_timestep < 1:
            raise SR3ValueError(f"n_timestep must be >= 1, got {n_timestep}")
        if not 0.0 < linear_start <= linear_end < 1.0:
            raise SR3ValueError(
                f"need 0 < linear_start <= linear_end < 1, got {linear_start}, {linear_end}"
            )
        self.n_timestep = n_timestep
        betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64)
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alpha_bar = torch.cumprod(1.0 - self.betas, dim=0)
        self.gammas = self.alpha_bar.sqrt()

    def sample_noise_level(
        self,
        batch: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training draw of SR3 (Alg. 1, Sec. 2.4): ``t ~ U{1..T}``, ``gamma ~ U[g_t, g_t-1]``.

        Conditioning on a continuous level rather than on ``t`` lets the network serve any
        schedule at inference (fewer steps, another range) without retraining.

        Returns:
            ``gamma`` ``(B,)`` float32 on ``device``, and ``t`` ``(B,)`` int64.
        """
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(1, self.n_timestep + 1, (batch,), generator=generator, device=gen_device)
        u = torch.rand(batch, generator=generator, device=gen_device, dtype=torch.float64)
        lo, hi = self.gammas[t.cpu()], self.gammas[t.cpu() - 1]
        gamma = lo + u.cpu() * (hi - lo)
        return gamma.to(device=device, dtype=torch.float32), t.to(device)

    @staticmethod
    def q_sample(y0: torch.Tensor, gamma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """SR3 Eq. 5: ``y_noisy = gamma * y0 + sqrt(1 - gamma^2) * eps``; gamma ``(B,)``."""
        g = gamma.to(y0.dtype)[:, None, None, None]
        return g * y0 + (1.0 - g**2).clamp(min=0.0).sqrt() * eps

    def timesteps(self, steps: int) -> list[tuple[int, int]]:
        """``steps`` (t, s) pairs, s < t, evenly spaced from ``(T, .)`` down to ``(., 0)``."""
        if not 1 <= steps <= self.n_timestep:
            raise SR3ValueError(f"sample_steps must be in [1, {self.n_timestep}], got {steps}")
        levels = torch.linspace(0, self.n_timestep, steps + 1, dtype=torch.float64)
        levels = levels.round().long().tolist()
        return [(levels[i], levels[i - 1]) for i in range(steps, 0, -1)]

    def posterior_variance(self, t: int, s: int | None = None) -> float:
        """DDPM Eq. 7: ``beta~ = (1 - a_s) / (1 - a_t) * beta'``, ``beta' = 1 - a_t / a_s``.

        ``a`` is ``alpha_bar`` and ``s`` defaults to ``t - 1``, where ``beta' = beta_t``; for a
        coarser step ``beta'`` is the beta of the respaced chain (Nichol & Dhariwal 2021).
        """
        s = t - 1 if s is None else s
        a_t, a_s = self.alpha_bar[t].item(), self.alpha_bar[s].item()
        return (1.0 - a_s) / (1.0 - a_t) * (1.0 - a_t / a_s)

    def predict_x0(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SR3 Eq. 8: ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, clamped to [-1, 1].

        Returns the clamped ``x0`` and the noise re-derived from it, so that the rest of the
        step stays consistent with ``x_t`` (as in the DDIM sampler of Dhariwal & Nichol 2021).
        """
        a_t = self.alpha_bar[t].item()
        x0 = ((x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)).clamp(-1.0, 1.0)
        return x0, (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)

    def ddpm_step(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: int, s: int, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """Ancestral step ``x_t -> x_s`` from the posterior q(x_s | x_t, x0) (DDPM Eq. 6-7).

        ``mean = sqrt(a_s) beta' / (1 - a_t) x0 + sqrt(1 - beta') (1 - a_s) / (1 - a_t) x_t``,
        variance :meth:`posterior_variance`; ``noise`` ``~ N(0, I)`` is ignored when ``s = 0``.
        """
        a_t, a_s = self.alpha_bar[t].item(), self.alpha_bar[s].item()
        beta = 1.0 - a_t / a_s
        x0, _ = self.predict_x0(x_t, eps, t)
        mean = (math.sqrt(a_s) * beta / (1.0 - a_t)) * x0 + (
            math.sqrt(1.0 - beta) * (1.0 - a_s) / (1.0 - a_t)
        ) * x_t
        var = self.posterior_variance(t, s)
        return mean if noise is None or var == 0.0 else mean + math.sqrt(var) * noise

    def ddim_sigma(self, t: int, s: int, eta: float) -> float:
        """DDIM Eq. 16: ``sigma = eta * sqrt(beta~)``; 0 is deterministic, 1 is DDPM."""
        return eta * math.sqrt(self.posterior_variance(t, s))

    def ddim_step(
        self,
        x_t: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        s: int,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """DDIM Eq. 12: ``x_s = sqrt(a_s) x0 + sqrt(1 - a_s - sigma^2) eps + sigma noise``."""
        a_s = self.alpha_bar[s].item()
        sigma = self.ddim_sigma(t, s, eta)
        x0, eps = self.predict_x0(x_t, eps, t)
        x_s = math.sqrt(a_s) * x0 + math.sqrt(max(1.0 - a_s - sigma**2, 0.0)) * eps
        return x_s if noise is None or sigma == 0.0 else x_s + sigma * noise


# ---------------------------------------------------------------------------------------------
# The backbone
# ---------------------------------------------------------------------------------------------


class SR3(Backbone):
    """SR3 as a zoomsr backbone: one ``scale``x step by iterative denoising.

    Args:
        scale: upscaling factor (default 4).
        inner_channel, channel_mults, attn_res, res_blocks, dropout, norm_groups, image_size,
            gradient_checkpointing: the :class:`SR3UNet` (defaults 64, ``[1, 2, 4, 8, 8]``,
            ``[16]``, 2, 0.0, 32, 128, False). ``None`` lists take the defaults.
        n_timestep, linear_start, linear_end: the training schedule (:class:`GaussianDiffusion`;
            defaults 2000, 1e-6, 1e-2).
        sampler: ``"ddpm"`` (ancestral, stochastic) or ``"ddim"`` (``ddim_eta = 0``:
            deterministic given the starting noise), used by :meth:`upscale`.
        sample_steps: denoising steps at inference, evenly spaced over the T levels
            (default 2000, at most ``n_timestep``).
        ddim_eta: DDIM stochasticity (default 0.0).
        seed: when set, the weights are initialised from it and every :meth:`upscale` call
            without a generator draws its noise from a fresh generator seeded with it.
        residual: diffuse ``residual_scale * (HR - up(LR))`` (SRDiff) instead of the HR image;
            :meth:`upscale` adds the sampled residual back to ``up(LR)``, the same bicubic image
            the U-Net is conditioned on (default False: SR3 as published).
        residual_scale: factor on the residual (in [-1, 1] image units) before diffusion
            (default 1.0). Residuals are small (std ~0.1), so a factor > 1 gives the diffused
            signal more of the unit variance the noise schedule was made for; the sampler's
            clamp of ``x0`` to [-1, 1] then bounds the residual to ``+-1 / residual_scale``.
        variant: the U-Net's switches, ``"zoomsr"`` or ``"janspiry"`` (:data:`UNET_VARIANTS`;
            the latter loads Janspiry's released checkpoints, ``zoomsr import-sr3``).
        condition: how the LR is brought to the HR size: ``"bicubic"`` (torch, on floats;
            default) or ``"pil_bicubic_8bit"`` (the LR rounded to 8 bits, PIL's bicubic, as
            Janspiry's data preparation makes its ``sr_*`` images).

    :meth:`predict_noise` is the noise prediction on Janspiry's inputs as they are, one call of
    its ``denoise_fn`` for the ``janspiry`` variant.

    The HR side (LR side times ``scale``) must be divisible by ``2 ** (len(channel_mults) - 1)``.
    """

    is_learned = True

    refines_upsampled = True  # the U-Net denoises conditioned on the bicubic-upsampled LR
    size_error = SR3ValueError

    def __init__(
        self,
        scale: int = 4,
        inner_channel: int = 64,
        channel_mults: list[int] | None = None,
        attn_res: list[int] | None = None,
        res_blocks: int = 2,
        dropout: float = 0.0,
        norm_groups: int = 32,
        image_size: int = 128,
        n_timestep: int = 2000,
        linear_start: float = 1e-6,
        linear_end: float = 1e-2,
        sampler: Literal["ddpm", "ddim"] = "ddpm",
        sample_steps: int = 2000,
        ddim_eta: float = 0.0,
        gradient_checkpointing: bool = False,
        seed: int | None = None,
        residual: bool = False,
        residual_scale: float = 1.0,
        variant: Literal["zoomsr", "janspiry"] = "zoomsr",
        condition: Literal["bicubic", "pil_bicubic_8bit"] = "bicubic",
    ):
        super().__init__()
        if variant not in UNET_VARIANTS:
            raise SR3ValueError(f"variant must be one of {sorted(UNET_VARIANTS)}, got {variant!r}")
        if condition not in ("bicubic", "pil_bicubic_8bit"):
            raise SR3ValueError(
                f"condition must be 'bicubic' or 'pil_bicubic_8bit', got {condition!r}"
            )
        self.variant, self.condition = variant, condition
        if scale < 1:
            raise SR3ValueError(f"scale must be >= 1, got {scale}")
        if not residual_scale > 0:
            raise SR3ValueError(f"residual_scale must be > 0, got {residual_scale}")
        self.residual, self.residual_scale = residual, float(residual_scale)
        if sampler not in ("ddpm", "ddim"):
            raise SR3ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        self.scale, self.sampler, self.ddim_eta, self.seed = scale, sampler, ddim_eta, seed
        self.diffusion = GaussianDiffusion(n_timestep, linear_start, linear_end)
        self.sample_steps = sample_steps
        self.diffusion.timesteps(sample_steps)  # validates sample_steps now, not at inference
        with seeded(seed):
            self.unet = SR3UNet(
                inner_channel=inner_channel,
                channel_mults=channel_mults,
                attn_res=attn_res,
                res_blocks=res_blocks,
                dropout=dropout,
                norm_groups=norm_groups,
                image_size=image_size,
                gradient_checkpointing=gradient_checkpointing,
                **UNET_VARIANTS[variant],
            )
        # HR sides: multiples of 2 ** (len(channel_mults) - 1); LR sides that make them so
        # (Backbone.upscale pads the LR to it).
        self.multiple = self.hr_multiple = 2 ** (len(self.unet.channel_mults) - 1)
        self.size_multiple = self.multiple // math.gcd(self.multiple, scale)

    def upsample(self, lr: torch.Tensor) -> torch.Tensor:
        """The conditioning image in [0, 1]: torch's bicubic x ``scale`` (default), or with
        ``condition="pil_bicubic_8bit"`` the LR rounded to 8 bits and resized by PIL's bicubic."""
        if self.condition == "pil_bicubic_8bit":
            size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
            return pil_bicubic_8bit(lr, size)
        return super().upsample(lr)

    def _target(self, hr: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """What is diffused, ``(B, 3, H, W)``: the HR in [-1, 1], or with ``residual`` the scaled
        residual ``residual_scale * (HR - up(LR))`` (SRDiff, Sec. 3)."""
        y0 = hr * 2.0 - 1.0
        return (y0 - cond) * self.residual_scale if self.residual else y0

    def _from_target(self, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_target`: a sample ``(B, 3, H, W)`` -> the SR image in [-1, 1]."""
        return cond + y / self.residual_scale if self.residual else y

    def _training_outputs(self, lr, hr, prompts, seeds) -> dict[str, torch.Tensor]:
        """Noise the HR at a random continuous level and predict the noise (SR3 Alg. 1).

        Args:
            lr: ``(B, 3, h, w)`` in [0, 1].
            hr: ``(B, 3, h * scale, w * scale)`` in [0, 1].
            prompts: ignored (SR3 takes no text).
            seeds: ``(B,)`` per-sample seeds: each sample's level and noise then come from its
                own generator (same draws on any device count). None: the global RNG.

        Returns:
            ``{"eps_pred", "eps"}``, both ``(B, 3, H, W)``; SR3 Eq. 6 is the L1 between them.
        """
        b = hr.shape[0]
        cond = self.to_model_range(self.upsample(lr))
        if seeds is None:
            gamma, _ = self.diffusion.sample_noise_level(b, hr.device)
            eps = torch.randn_like(hr)
        else:
            gamma, eps = self._seeded_draws(seeds, hr)
        y_noisy = GaussianDiffusion.q_sample(self._target(hr, cond), gamma, eps)
        return {
            "eps_pred": self.predict_noise(torch.cat([cond, y_noisy], dim=1), gamma),
            "eps": eps,
        }

    def predict_noise(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """The noise prediction ``eps_theta(x, gamma)`` (SR3 Eq. 6).

        Args:
            x: ``(B, 6, H, W)`` = ``torch.cat([cond, y_t], 1)``: the upsampled LR and the noisy
                image (with ``residual``, the noisy scaled residual), both in [-1, 1].
            gamma: ``(B,)`` or ``(B, 1)`` noise levels ``sqrt(alpha_bar)`` in [0, 1]; Janspiry's
                ``denoise_fn`` takes ``(B, 1)``, so with ``variant="janspiry"`` this is one call
                of it on the same tensors (``zoomsr import-sr3``).

        Returns:
            ``(B, 3, H, W)``, the predicted noise.
        """
        return self.unet(x, gamma)

    def _seeded_draws(
        self, seeds: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Level and noise of each sample from a CPU generator seeded by that sample alone."""
        gammas, noises = [], []
        for seed in seeds.tolist():
            g = torch.Generator().manual_seed(int(seed))
            gammas.append(self.diffusion.sample_noise_level(1, "cpu", generator=g)[0])
            noises.append(torch.randn(hr.shape[1:], generator=g))
        gamma = torch.cat(gammas).to(hr.device)
        return gamma, torch.stack(noises).to(device=hr.device, dtype=hr.dtype)

    def _refine(
        self,
        cond: torch.Tensor,
        prompts: list[str] | None,
        generator: torch.Generator | None,
        progress: bool = False,
    ) -> torch.Tensor:
        """``sample_steps`` denoising steps of the configured sampler conditioned on the
        upsampled LR ``cond`` in [-1, 1] (:meth:`Backbone.upscale`: any LR size; prompts are
        ignored; ``generator`` drives all sampling noise, else ``seed``, else the global RNG;
        ``upscale(lr, progress=True)`` shows a tqdm bar over the steps)."""
        y = self.sample(cond, generator=generator, progress=progress)
        return self._from_target(y, cond)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        x_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The reverse process from pure noise, in eval mode (no dropout).

        Args:
            cond: ``(B, 3, H, W)`` upsampled LR in [-1, 1].
            generator: noise source, as in :meth:`upscale`.
            progress: show a tqdm bar over the steps.
            x_t: ``(B, 3, H, W)`` starting noise at level T; drawn from ``generator`` if None.

        Returns:
            ``(B, 3, H, W)`` in [-1, 1]: the HR image, or with ``residual`` the scaled residual.
        """
        with self.inference():
            x = _randn(cond.shape, generator, cond) if x_t is None else x_t.to(cond)
            pairs = self.diffusion.timesteps(self.sample_steps)
            for t, s in tqdm(pairs, desc=f"SR3 {self.sampler}", disable=not progress):
                x = self._denoise_step(cond, x, t, s, generator)
            return x.clamp(-1.0, 1.0)

    def _denoise_step(
        self, cond: torch.Tensor, x: torch.Tensor, t: int, s: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One step ``x_t -> x_s`` of the configured sampler, conditioned on ``gamma_t``."""
        gamma = torch.full((x.shape[0],), self.diffusion.gammas[t].item(), device=x.device)
        eps = self.predict_noise(torch.cat([cond, x], dim=1), gamma).to(x.dtype)
        stochastic = s > 0 and (self.sampler == "ddpm" or self.ddim_eta > 0)
        noise = _randn(x.shape, generator, x) if stochastic else None
        if self.sampler == "ddpm":
            return self.diffusion.ddpm_step(x, eps, t, s, noise)
        return self.diffusion.ddim_step(x, eps, t, s, self.ddim_eta, noise)


def pil_bicubic_8bit(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Janspiry's conditioning image: ``(B, C, h, w)`` in [0, 1] rounded to 8 bits, resized to
    ``size = (H, W)`` by PIL's ``Image.BICUBIC`` (on uint8, so rounded again), back in [0, 1].

    Janspiry's ``data/prepare_data.py`` makes the ``sr_*`` condition of each LR this way and its
    loader reads it with ``ToTensor``. Returns ``(B, C, H, W)`` on the input's device and dtype.
    """
    import numpy as np
    from PIL import Image

    u8 = (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()
    out = []
    for img in u8:
        if img.shape[0] == 3:  # an RGB image, as Janspiry's loader opens it
            pil = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), "RGB")
            out.append(np.asarray(pil.resize((size[1], size[0]), Image.BICUBIC)).transpose(2, 0, 1))
            continue
        chans = [Image.fromarray(c).resize((size[1], size[0]), Image.BICUBIC) for c in img]
        out.append(np.stack([np.asarray(c) for c in chans]))
    up = torch.from_numpy(np.stack(out)).to(device=images.device, dtype=torch.float32) / 255.0
    return up.to(images.dtype)


def _randn(
    shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """``N(0, I)`` drawn on the generator's device (so CPU seeds reproduce on GPU), then moved."""
    device = generator.device if generator is not None else like.device
    noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)
