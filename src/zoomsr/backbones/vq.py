"""Vector quantizers and the small VQGAN autoencoder of the ``vq_refiner`` backbone.

- :class:`VectorQuantizer`: one codebook, nearest code per latent position, straight-through
  gradients (VQ-VAE, van den Oord et al. 2017). The codebook is learned by its loss term
  (VQ-VAE Eq. 3: ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``), not by EMA updates: the whole
  update then lives in the optimizer, checkpoints hold plain parameters, and a seeded run is
  reproducible without buffers that change outside the backward pass.
- :class:`MultiScaleResidualQuantizer`: VAR's multi-scale residual quantizer (Tian et al. 2024,
  Alg. 1). The residual of the latent map is area-downsampled to each scale of ``patch_nums``,
  quantized with the shared codebook, upsampled back, optionally passed through a small conv
  "phi", and subtracted; the quantized map is the sum of the upsampled parts.
- :class:`VQGAN`: a small conv encoder/decoder around either quantizer. It trains as a stage
  with a reconstruction loss and the quantizer loss (LPIPS optional); there is no
  discriminator (a VQ-VAE-style autoencoder with VQGAN's layout).

A token map is a list of ``(B, h_k, w_k)`` int64 tensors, one per scale (a single entry for the
plain quantizer), so the ITER networks treat both quantizers alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` vectors of width ``dim``.

    Args:
        num_codes: codebook size ``K``.
        dim: code width (the encoder's output channels).
        beta: commitment weight (VQ-VAE Eq. 3; 0.25 in VQ-VAE and VQGAN).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.codebook = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / num_codes, 1.0 / num_codes)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) of every position: ``(B, C, h, w) -> (B, h, w)``.

        ``||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2``; ``||z||^2`` is the same for every code.
        """
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        codes = self.codebook.weight.float()
        dist = (codes**2).sum(1)[None] - 2.0 * flat @ codes.t()
        return dist.argmin(1).reshape(z.shape[0], *z.shape[2:])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of a token map: ``(B, h, w)`` int -> ``(B, C, h, w)``."""
        return self.codebook(indices).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Quantize ``z`` ``(B, C, h, w)``.

        Returns:
            ``z_q`` with straight-through gradients (its value is the codes, its gradient with
            respect to ``z`` the identity), the token map ``[(B, h, w)]``, and the scalar loss
            ``||sg[z] - e||^2 + beta ||z - sg[e]||^2`` (means over elements).
        """
        idx = self.nearest(z)
        e = self.embed(idx).to(z.dtype)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        z_q = z + (e - z).detach()  # straight-through estimator (VQ-VAE Sec. 3.1)
        return z_q, [idx], loss

    def decode_tokens(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """The latent map of a token map ``[(B, h, w)]``."""
        return self.embed(tokens[0])

    def token_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Shapes of the token maps of an ``h x w`` latent: one, the latent itself."""
        return [(h, w)]


class Phi(nn.Module):
    """VAR's refinement of an upsampled scale: ``(1 - r) h + r conv3x3(h)`` (``r`` = ratio)."""

    def __init__(self, dim: int, ratio: float = 0.5):
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1.0 - self.ratio) + self.conv(h).mul(self.ratio)


class MultiScaleResidualQuantizer(nn.Module):
    """VAR's multi-scale residual quantizer with a shared codebook.

    Scale ``k`` of an ``h x w`` latent has side ``round(h * p_k / p_last)`` (at least 1) with
    ``p = patch_nums``, so the last scale is the latent grid itself and square training crops of
    side ``p_last`` get exactly VAR's ``p_k x p_k`` maps. Per scale (VAR Alg. 1)::

        z_k = area_down(residual, scale k);  idx_k = nearest(z_k)
        h_k = phi_k(up(embed(idx_k)));  f_hat += h_k;  residual -= h_k

    Args:
        num_codes, dim, beta: as :class:`VectorQuantizer` (the codebook is shared by all scales).
        patch_nums: increasing scale sides, e.g. ``[1, 2, 3, 4, 6, 8]``.
        phi: one :class:`Phi` conv per scale after upsampling (VAR shares 4 over 10 scales;
            one per scale here); False: identity.
        phi_ratio: ``r`` of :class:`Phi` (VAR: 0.5).
        upsample: ``bicubic`` (VAR) or ``nearest``.
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        patch_nums: Sequence[int] = (1, 2, 3, 4, 6, 8),
        beta: float = 0.25,
        phi: bool = True,
        phi_ratio: float = 0.5,
        upsample: str = "bicubic",
    ):
        super().__init__()
        self.patch_nums = [int(p) for p in patch_nums]
        if not self.patch_nums or sorted(self.patch_nums) != self.patch_nums:
            raise ValueError(f"patch_nums must be increasing, got {self.patch_nums}")
        if upsample not in ("bicubic", "nearest"):
            raise ValueError(f"upsample must be 'bicubic' or 'nearest', got {upsample!r}")
        self.vq = VectorQuantizer(num_codes, dim, beta)
        self.num_codes, self.dim, self.beta, self.upsample = num_codes, dim, beta, upsample
        self.phis = nn.ModuleList(
            [Phi(dim, phi_ratio) if phi else nn.Identity() for _ in self.patch_nums]
        )

    def token_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """``[(h_k, w_k)]`` of an ``h x w`` latent, one per scale."""
        last = self.patch_nums[-1]
        return [(max(1, round(h * p / last)), max(1, round(w * p / last))) for p in self.patch_nums]

    def _up(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        if self.upsample == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def forward(
        self, z: torch.Tensor, num_scales: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Quantize ``z`` ``(B, C, h, w)`` with the first ``num_scales`` scales (default all).

        Returns:
            ``f_hat`` with straight-through gradients, the token maps ``[(B, h_k, w_k)]`` and the
            loss: the mean over scales of ``||sg[z] - f_hat_k||^2 + beta ||z - sg[f_hat_k]||^2``
            with ``f_hat_k`` the running sum after scale ``k`` (as VAR's quantizer averages it).
        """
        size = tuple(z.shape[-2:])
        shapes = self.token_shapes(*size)[: num_scales or len(self.patch_nums)]
        residual, f_hat = z.detach().float(), torch.zeros_like(z, dtype=torch.float32)
        tokens, loss = [], z.new_zeros((), dtype=torch.float32)
        for k, shape in enumerate(shapes):
            z_k = residual if shape == size else F.interpolate(residual, size=shape, mode="area")
            idx = self.vq.nearest(z_k)
            h = self.phis[k](self._up(self.vq.embed(idx).float(), size))
            f_hat = f_hat + h
            residual = residual - h.detach()
            tokens.append(idx)
            loss = loss + F.mse_loss(f_hat, z.detach().float())
            loss = loss + self.beta * F.mse_loss(z.float(), f_hat.detach())
        loss = loss / len(shapes)
        z_q = z + (f_hat.to(z.dtype) - z).detach()  # straight-through estimator
        # The codebook and phi learn through the loss above; the straight-through output
        # carries the decoder's gradient to the encoder only.
        return z_q, tokens, loss

    def decode_tokens(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """The latent map ``f_hat`` of the token maps of all scales (the last is the grid)."""
        size = tuple(tokens[-1].shape[-2:])
        f_hat = 0.0
        for k, idx in enumerate(tokens):
            f_hat = f_hat + self.phis[k](self._up(self.vq.embed(idx), size))
        return f_hat

    @property
    def codebook(self) -> nn.Embedding:
        return self.vq.codebook


# ---------------------------------------------------------------------------------------------
# The VQGAN autoencoder
# ---------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a (1x1-matched) skip."""

    def __init__(self, in_ch: int, out_ch: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, in_ch),
            nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(groups, out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def conv_encoder(
    in_ch: int, channels: Sequence[int], out_ch: int, blocks: int, groups: int
) -> nn.Sequential:
    """conv -> per level ``blocks`` ResBlocks (+ stride-2 conv between levels) -> 1x1 to
    ``out_ch``: downsamples by ``2 ** (len(channels) - 1)``."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, channels[0], 3, padding=1)]
    ch = channels[0]
    for level, width in enumerate(channels):
        for _ in range(blocks):
            layers.append(ResBlock(ch, width, groups))
            ch = width
        if level < len(channels) - 1:
            layers.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
    layers += [nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 1)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """Mirror of :func:`conv_encoder`: latent ``(B, dim, h, w)`` -> image ``(B, 3, H, W)``."""

    def __init__(self, dim: int, channels: Sequence[int], blocks: int, groups: int):
        super().__init__()
        chans = list(reversed(channels))
        layers: list[nn.Module] = [nn.Conv2d(dim, chans[0], 3, padding=1)]
        ch = chans[0]
        for level, width in enumerate(chans):
            for _ in range(blocks):
                layers.append(ResBlock(ch, width, groups))
                ch = width
            if level < len(chans) - 1:
                layers += [nn.Upsample(scale_factor=2.0), nn.Conv2d(ch, ch, 3, padding=1)]
        layers += [nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQGAN(nn.Module):
    """Encoder -> quantizer -> decoder on images in [-1, 1].

    Args:
        channels: widths of the encoder levels (the decoder mirrors them); the latent grid is
            the image downsampled by ``2 ** (len(channels) - 1)``.
        blocks: ResBlocks per level.
        groups: GroupNorm groups (must divide every width).
        embed_dim: code width.
        codebook_size: ``K``.
        beta: commitment weight.
        quantizer: ``vq`` (:class:`VectorQuantizer`) or ``msrq``
            (:class:`MultiScaleResidualQuantizer` with ``patch_nums``, ``phi``, ``upsample``).
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 128, 256),
        blocks: int = 1,
        groups: int = 32,
        embed_dim: int = 64,
        codebook_size: int = 1024,
        beta: float = 0.25,
        quantizer: str = "vq",
        patch_nums: Sequence[int] = (1, 2, 3, 4, 6, 8),
        phi: bool = True,
        upsample: str = "bicubic",
    ):
        super().__init__()
        self.factor = 2 ** (len(channels) - 1)
        self.encoder = conv_encoder(3, channels, embed_dim, blocks, groups)
        self.decoder = Decoder(embed_dim, channels, blocks, groups)
        if quantizer == "vq":
            self.quantizer: nn.Module = VectorQuantizer(codebook_size, embed_dim, beta)
        elif quantizer == "msrq":
            self.quantizer = MultiScaleResidualQuantizer(
                codebook_size, embed_dim, patch_nums, beta, phi=phi, upsample=upsample
            )
        else:
            raise ValueError(f"quantizer must be 'vq' or 'msrq', got {quantizer!r}")
        self.codebook_size = codebook_size

    def token_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Token map shapes of an image of ``height x width`` pixels."""
        return self.quantizer.token_shapes(height // self.factor, width // self.factor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``x`` in [-1, 1] -> (reconstruction, token maps, quantizer loss)."""
        z_q, tokens, loss = self.quantizer(self.encoder(x))
        return self.decoder(z_q), tokens, loss

    @torch.no_grad()
    def encode_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token maps of images ``x`` in [-1, 1]."""
        return self.quantizer(self.encoder(x))[1]

    def decode_tokens(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Images in [-1, 1] (unclamped) from token maps."""
        return self.decoder(self.quantizer.decode_tokens(tokens))


def num_tokens(shapes: Sequence[tuple[int, int]]) -> int:
    """Total length of the flattened token maps of ``shapes``."""
    return sum(h * w for h, w in shapes)


def flatten_tokens(tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[(B, h_k, w_k)]`` -> ``(B, L)``, scales in order, row-major within a scale."""
    return torch.cat([t.flatten(1) for t in tokens], dim=1)


def unflatten_tokens(flat: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Inverse of :func:`flatten_tokens`."""
    sizes = [h * w for h, w in shapes]
    parts = flat.split(sizes, dim=1)
    return [p.reshape(flat.shape[0], h, w) for p, (h, w) in zip(parts, shapes, strict=True)]


def cosine_schedule(r: torch.Tensor | float) -> torch.Tensor:
    """MaskGIT's mask ratio ``gamma(r) = cos(pi r / 2)``: 1 at r=0, 0 at r=1."""
    return torch.cos(torch.as_tensor(r, dtype=torch.float64) * math.pi / 2)


def linear_schedule(r: torch.Tensor | float) -> torch.Tensor:
    """``gamma(r) = 1 - r``."""
    return 1.0 - torch.as_tensor(r, dtype=torch.float64)
