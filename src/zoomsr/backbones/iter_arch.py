"""ITER's networks (Chen et al., AAAI 2024, arXiv:2312.05616; github.com/chaofengc/ITER), with
the module names and tensor shapes of ITER's release so that its checkpoints load 1:1.

Read top to bottom:

- Swin layers (Liu et al. 2021; SwinIR's RSTB, Liang et al. 2021) as ITER uses them:
  :class:`WindowAttention` (relative position bias), :class:`SwinBlock` (pre-norm; every
  second block shifted by half a window with the ``-100`` mask of the wrap-around band; an MLP
  with a squeeze-excitation gate over all positions, ITER's change to SwinIR), :class:`RSTB`
  (blocks + 3x3 conv + residual), :class:`SwinLayers` (3x3 conv in, RSTBs, 3x3 conv out,
  residual).
- The Swin-VQGAN (:class:`SwinVQGAN`): taming's conv encoder/decoder (``nf * ch_mult``
  channels, ``res_blocks`` pre-activation ResBlocks per level, GroupNorm(32, eps 1e-6), swish,
  asymmetric-pad stride-2 conv down, nearest x2 + conv up) with one :class:`SwinLayers` in the
  middle of each, and a codebook (:class:`VectorQuantizer`) of ``n_embed`` codes of width
  ``embed_dim``. Images enter in [0, 1] (mapped to [-1, 1] inside) and leave in [0, 1].
- :class:`LQEncoder`: the LR image itself (in [0, 1]) -> token logits on the HR token grid:
  ``log2(8 / scale)`` stride-2 levels (conv + 2 ResBlocks with LeakyReLU), a 1x1 conv to
  ``embed_dim``, two RSTBs and a 1x1 conv to the ``n_embed`` logits.
- :class:`SwinModel`: the refinement and evaluation networks. Token maps enter one-hot
  ``(B, C, h, w)``; a bias-free 1x1 conv embeds each of the two inputs, another mixes them,
  then ``4 x 6`` Swin blocks and GroupNorm-SiLU-1x1 conv to the outputs (``n_embed`` token
  logits for the refiner, 2 classes "wrong / right" for the evaluator).

Notation: ``B`` batch, ``C`` channels, ``h x w`` the token grid (image / 8), ``N = h w``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Swin layers
# ---------------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws, ws, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def window_merge(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws, ws, C)`` -> ``(B, H, W, C)``."""
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Swin's SW-MSA mask ``(nW, ws*ws, ws*ws)``: 0 within a region, -100 across regions.

    After rolling the map by ``-shift``, the last window row/column holds pixels from up to
    three regions of the unrolled map (split at ``-ws`` and ``-shift``); they may not attend
    each other (Swin Sec. 3.2, "efficient batch computation for shifted configuration").
    """
    region = torch.zeros(1, h, w, 1)
    bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[:, rows, cols, :] = label
            label += 1
    windows = window_partition(region, ws).view(-1, ws * ws)  # (nW, ws*ws)
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a ``ws x ws`` window with a learned relative position
    bias (Swin Eq. 4: ``softmax(Q K^T / sqrt(d) + B) V``), ``B`` read from a
    ``(2 ws - 1)^2 x heads`` table."""

    def __init__(self, dim: int, ws: int, heads: int):
        super().__init__()
        self.dim, self.ws, self.heads = dim, ws, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, N)
        rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2ws-2]
        self.register_buffer("relative_position_index", rel[0] * (2 * ws - 1) + rel[1])
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B * nW, N, C)``, ``mask`` ``(nW, N, N)`` of 0 / -100 -> ``(B * nW, N, C)``."""
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]  # (B*nW, heads, N, d)
        attn = q @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.heads, n, n)
        out = attn.softmax(dim=-1) @ v  # (B*nW, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """fc1 - GELU - squeeze-excitation gate - fc2. The gate (ITER's addition to SwinIR) scales
    the hidden channels by ``sigmoid(W2 silu(W1 mean_N(x)))``, the mean over all positions of
    the image."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.attn = nn.Sequential(
            nn.Linear(hidden, hidden // 16),
            nn.SiLU(),
            nn.Linear(hidden // 16, hidden),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        x = self.act(self.fc1(x))
        return self.fc2(x * self.attn(x.mean(dim=1, keepdim=True)))


class SwinBlock(nn.Module):
    """One Swin transformer block on a ``(B, N, C)`` sequence of an ``h x w`` map.

    ``resolution`` is the map size the block is built for (SwinIR's ``input_resolution``): when
    its shorter side is at most ``window`` the window shrinks to it and nothing is shifted.
    At that size the shift mask is a stored buffer (``attn_mask``); other sizes compute it.
    """

    def __init__(
        self, dim: int, resolution: tuple[int, int], heads: int, window: int, shift: int
    ) -> None:
        super().__init__()
        self.resolution = tuple(resolution)
        if min(self.resolution) <= window:
            window, shift = min(self.resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * 4.0))
        mask = shifted_window_mask(*self.resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x).view(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(y, ws).view(-1, ws * ws, c)  # (B*nW, ws*ws, C)
        mask = self.attn_mask
        if s and tuple(size) != self.resolution:
            mask = shifted_window_mask(h, w, ws, s).to(x)
        y = window_merge(self.attn(windows, mask).view(-1, ws, ws, c), ws, h, w)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """``depth`` Swin blocks, alternately unshifted and shifted by ``window // 2``."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinBlock(dim, resolution, heads, window, 0 if i % 2 == 0 else window // 2)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size)
        return x


class RSTB(nn.Module):
    """Residual Swin transformer block (SwinIR Sec. 3.2): Swin blocks, a 3x3 conv, a skip."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, heads: int, window: int):
        super().__init__()
        self.residual_group = SwinGroup(dim, resolution, depth, heads, window)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B, N, C)`` -> ``(B, N, C)``."""
        b, n, c = x.shape
        y = self.residual_group(x, size).transpose(1, 2).reshape(b, c, *size)
        return self.conv(y).flatten(2).transpose(1, 2) + x


class SwinLayers(nn.Module):
    """``(B, C, h, w)`` -> same: 3x3 conv to ``swin_dim``, ``blocks`` RSTBs of ``depth`` Swin
    blocks, 3x3 conv back, plus the input.

    Args:
        dim: channels in and out. swin_dim: width inside. blocks, depth: RSTBs, blocks per RSTB.
        window: attention window (8). heads: attention heads (8).
        resolution: the token grid the layers are built for (32 x 32, ITER's 256 px crops).
    """

    def __init__(
        self,
        dim: int,
        swin_dim: int = 256,
        blocks: int = 1,
        depth: int = 6,
        window: int = 8,
        heads: int = 8,
        resolution: tuple[int, int] = (32, 32),
    ) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(dim, swin_dim, 3, 1, 1)
        self.swin_blks = nn.ModuleList(
            [RSTB(swin_dim, tuple(resolution), depth, heads, window) for _ in range(blocks)]
        )
        self.conv_out = nn.Conv2d(swin_dim, dim, 3, 1, 1)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x_in)
        b, c, h, w = x.shape
        x = x.reshape(b, c, h * w).transpose(1, 2)  # (B, N, C)
        for rstb in self.swin_blks:
            x = rstb(x, (h, w))
        return self.conv_out(x.transpose(1, 2).reshape(b, c, h, w)) + x_in


# ---------------------------------------------------------------------------------------------
# Swin-VQGAN
# ---------------------------------------------------------------------------------------------


def group_norm(channels: int) -> nn.GroupNorm:
    """taming's Normalize as ITER writes it: 32 groups (``C // 4`` below 32 channels), eps 1e-6."""
    return nn.GroupNorm(32 if channels >= 32 else channels // 4, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-activation residual block (norm-swish-conv twice), 1x1 conv on the skip when the
    width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.conv_out = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.silu(self.norm1(x)))
        y = self.conv2(F.silu(self.norm2(y)))
        return y + (x if self.conv_out is None else self.conv_out(x))


class Downsample(nn.Module):
    """Pad right/bottom by one, 3x3 conv with stride 2 (taming)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SwinEncoder(nn.Module):
    """Image ``(B, 3, H, W)`` in [-1, 1] -> latent ``(B, embed_dim, H / 2^(L-1), ...)``.

    ``blocks``: conv_in; per level ``res_blocks`` ResBlocks (+ Downsample but the last); a
    ResBlock, SwinLayers, a ResBlock; GroupNorm; conv to ``embed_dim`` (no activation between
    the norm and the conv, as ITER).
    """

    def __init__(
        self, nf: int, ch_mult: list[int], res_blocks: int, embed_dim: int, swin: dict
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
        c = nf
        for level, mult in enumerate(ch_mult):
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, nf * mult))
                c = nf * mult
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(c))
        blocks += [ResBlock(c, c), SwinLayers(c, **swin), ResBlock(c, c)]
        blocks += [group_norm(c), nn.Conv2d(c, embed_dim, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class SwinDecoder(nn.Module):
    """Latent ``(B, embed_dim, h, w)`` -> image ``(B, 3, h 2^(L-1), ...)`` in about [-1, 1]."""

    def __init__(
        self, nf: int, ch_mult: list[int], res_blocks: int, embed_dim: int, swin: dict
    ) -> None:
        super().__init__()
        c = nf * ch_mult[-1]
        blocks: list[nn.Module] = [nn.Conv2d(embed_dim, c, 3, 1, 1)]
        blocks += [ResBlock(c, c), SwinLayers(c, **swin), ResBlock(c, c)]
        for level in reversed(range(len(ch_mult))):
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, nf * ch_mult[level]))
                c = nf * ch_mult[level]
            if level != 0:
                blocks.append(Upsample(c))
        blocks += [group_norm(c), nn.Conv2d(c, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with a straight-through gradient (VQ-VAE, van den Oord et al. 2017).

    The loss on ``z`` (encoder output) and its codes ``e``:

    - ``legacy`` (taming's default, which ITER keeps): ``||sg[e] - z||^2 + beta ||e - sg[z]||^2``
      (commitment weight 1, codebook term weighted ``beta``);
    - ``vqvae`` (VQ-VAE Eq. 3): ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``.
    """

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25, legacy: bool = True):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta, self.legacy = n_embed, embed_dim, beta, legacy
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> nearest code ``(B, h, w)`` by ``|z|^2 + |e|^2 - 2 z.e``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.embed_dim)
        e = self.embedding.weight
        dist = (flat**2).sum(1, keepdim=True) + (e**2).sum(1) - 2.0 * flat @ e.t()
        return dist.argmin(1).view(z.shape[0], *z.shape[2:])

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` int -> codes ``(B, C, h, w)``."""
        return self.embedding(idx).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> ``z_q`` (straight-through), the VQ loss (scalar), indices ``(B, h, w)``."""
        idx = self.indices(z)
        e = self.embed(idx)
        commit, codebook = torch.mean((e.detach() - z) ** 2), torch.mean((e - z.detach()) ** 2)
        loss = commit + self.beta * codebook if self.legacy else codebook + self.beta * commit
        return z + (e - z).detach(), loss, idx


class SwinVQGAN(nn.Module):
    """ITER's Swin-VQGAN (``VQModel``); images in [0, 1] at its methods.

    Args:
        nf, ch_mult, res_blocks: conv widths ``nf * ch_mult[i]`` and ResBlocks per level
            (128, [1, 2, 2, 4], 2 in ITER: 8x downsampling).
        n_embed, embed_dim: codebook size and code width (512, 128).
        beta, legacy: the quantizer loss (0.25, taming's legacy weighting).
        swin_dim, swin_blocks, swin_depth, window, heads, resolution: the SwinLayers in the
            encoder's and decoder's middle (256, 1, 6, 8, 8, 32 x 32 tokens).
    """

    def __init__(
        self,
        nf: int = 128,
        ch_mult: tuple[int, ...] = (1, 2, 2, 4),
        res_blocks: int = 2,
        n_embed: int = 512,
        embed_dim: int = 128,
        beta: float = 0.25,
        legacy: bool = True,
        swin_dim: int = 256,
        swin_blocks: int = 1,
        swin_depth: int = 6,
        window: int = 8,
        heads: int = 8,
        resolution: int = 32,
    ) -> None:
        super().__init__()
        swin = {
            "swin_dim": swin_dim, "blocks": swin_blocks, "depth": swin_depth,
            "window": window, "heads": heads, "resolution": (resolution, resolution),
        }  # fmt: skip
        self.factor = 2 ** (len(ch_mult) - 1)
        self.encoder = SwinEncoder(nf, list(ch_mult), res_blocks, embed_dim, swin)
        self.decoder = SwinDecoder(nf, list(ch_mult), res_blocks, embed_dim, swin)
        self.quantize = VectorQuantizer(n_embed, embed_dim, beta, legacy)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> ``z_q``, VQ loss, indices ``(B, H/8, W/8)``."""
        return self.quantize(self.encoder(img.clamp(0, 1) * 2 - 1))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, C, h, w)`` -> image in [0, 1] (clamped, as ITER)."""
        return ((self.decoder(z_q) + 1) / 2).clamp(0, 1)

    def decode_indices(self, idx: torch.Tensor) -> torch.Tensor:
        """Token map ``(B, h, w)`` int -> image in [0, 1]."""
        return self.decode(self.quantize.embed(idx))

    def decode_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """(Soft) one-hot tokens ``(B, n_embed, h, w)`` -> image: ``onehot^T @ codebook``.

        The codebook is read detached (ITER's ``weight.data``): gradients reach the tokens only.
        """
        codes = self.quantize.embedding.weight.detach()
        return self.decode(torch.einsum("bkhw,kc->bchw", onehot.to(codes), codes))

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction in [0, 1], VQ loss, indices."""
        z_q, loss, idx = self.encode(img)
        return self.decode(z_q), loss, idx


# ---------------------------------------------------------------------------------------------
# LQ encoder and the demasking networks
# ---------------------------------------------------------------------------------------------


class _Norm(nn.Module):
    """A holder that gives the norm ITER's key name (``….norm.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class LQResBlock(nn.Module):
    """The LQ encoder's residual block: (GroupNorm(32) - LeakyReLU(0.2) - 3x3 conv) x 2 + skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            _Norm(channels), nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, 1, 1),
            _Norm(channels), nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class LQEncoder(nn.Module):
    """LR ``(B, 3, h, w)`` in [0, 1] -> token logits ``(B, n_embed, h * s / 8, w * s / 8)``.

    Args:
        downsamples: ``log2(8 / scale)`` stride-2 levels (2 for x2, 1 for x4), each doubling
            the width from ``channels`` (64).
        embed_dim: width of the Swin part (the VQGAN's code width, 128).
        n_embed: codebook size (the logits' channels).
        swin_blocks, swin_depth, window, heads, resolution: its SwinLayers (2 RSTBs of 6).
    """

    def __init__(
        self,
        downsamples: int,
        embed_dim: int = 128,
        n_embed: int = 512,
        channels: int = 64,
        swin_blocks: int = 2,
        swin_depth: int = 6,
        window: int = 8,
        heads: int = 8,
        resolution: int = 32,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, 1, 1)]
        c = channels
        for _ in range(downsamples):
            layers.append(
                nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), LQResBlock(2 * c), LQResBlock(2 * c))
            )
            c *= 2
        layers.append(nn.Conv2d(c, embed_dim, 1))
        layers.append(
            SwinLayers(
                embed_dim, embed_dim, swin_blocks, swin_depth, window, heads,
                (resolution, resolution),
            )
        )  # fmt: skip
        layers.append(nn.Conv2d(embed_dim, n_embed, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.model(lr)


class SwinModel(nn.Module):
    """The refinement / evaluation network on two one-hot maps ``(B, in_channels, h, w)``:
    ``combine([code_emb(a), code_emb(b)])`` (bias-free 1x1 convs, shared embedding), SwinLayers,
    GroupNorm - SiLU - 1x1 conv -> ``(B, out_channels, h, w)``.

    Args:
        dim: width (256). in_channels: one-hot width (``n_embed`` or ``n_embed + 1``).
        out_channels: ``n_embed`` (refiner logits) or 2 (evaluator classes).
        blocks, depth, window, heads, resolution: its SwinLayers (4 RSTBs of 6 Swin blocks).
    """

    def __init__(
        self,
        dim: int,
        in_channels: int,
        out_channels: int,
        blocks: int = 4,
        depth: int = 6,
        window: int = 8,
        heads: int = 8,
        resolution: int = 32,
    ) -> None:
        super().__init__()
        self.code_emb = nn.Conv2d(in_channels, dim, 1, bias=False)
        self.combine = nn.Conv2d(2 * dim, dim, 1, bias=False)
        self.swin_layers = SwinLayers(
            dim, dim, blocks, depth, window, heads, (resolution, resolution)
        )
        self.conv_out = nn.Sequential(group_norm(dim), nn.SiLU(), nn.Conv2d(dim, out_channels, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        h = self.combine(torch.cat([self.code_emb(a), self.code_emb(b)], dim=1))
        return self.conv_out(self.swin_layers(h))


class TokenRefine(nn.Module):
    """Holder of ITER's two demasking networks under their release names.

    - ``token_crit_net`` (the evaluator): ``[tokens, init tokens]`` one-hot -> 2-class logits
      (class 1: "this token is right").
    - ``token_refine_net`` (the refiner): ``[init one-hot + (1 - init mask),
      visible one-hot + (1 - mask)]`` (the extra channel flags hidden positions) -> token logits.
    """

    def __init__(self, n_embed: int, dim: int = 256, **swin):
        super().__init__()
        self.token_crit_net = SwinModel(dim, n_embed, 2, **swin)
        self.token_refine_net = SwinModel(dim, n_embed + 1, n_embed, **swin)
