"""VAR's multi-scale VQVAE tokenizer (Tian et al. 2024, arXiv:2404.02905), as released with
``vae_ch160v4096z32.pth`` (github.com/FoundationVision/VAR, ``models/vqvae.py``).

Read top to bottom:

- the autoencoder: an LDM-style (vq-f16) conv encoder and decoder, ``ch = 160`` at the first
  level, widths ``ch * ch_mult`` with ``ch_mult = (1, 1, 2, 2, 4)``, two ResNet blocks per level
  (three on the way up), self-attention in every block of the deepest level and in the middle,
  GroupNorm(32, eps 1e-6), SiLU, a 1x1 ``nin_shortcut`` where widths change, downsampling by a
  stride-2 conv after zero padding right and bottom, nearest-x2 upsampling then a conv; x16 in all.
  3x3 ``quant_conv`` / ``post_quant_conv`` (Cvae = 32 channels) around the quantizer.
- :class:`VARQuantizer`: the multi-scale residual quantizer (VAR Alg. 1-2) with one codebook of
  ``V = 4096`` codes, on the scales ``patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)``. Scale ``k``
  quantizes the area-downsampled residual, its codes are upsampled (bicubic) to the grid and
  refined by ``phi``, ``phi(h) = (1 - r) h + r conv3x3(h)`` with ``r = 0.5``. Four phi convs are
  shared over the ten scales: scale ``k`` of ``K`` uses the conv whose "tick" is nearest to
  ``k / (K - 1)``, ticks ``linspace(1/12, 11/12, 4)`` (VAR's ``PhiPartiallyShared``).
- :class:`VARVQVAE`: the whole tokenizer. :meth:`~VARVQVAE.encode_tokens` turns images in
  [-1, 1] into one token tensor per scale (VAR's ``idx_Bl`` lists: smallest scale first,
  ``(B, h_k * w_k)`` row-major), :meth:`~VARVQVAE.decode_tokens` turns them back into images.

Module and parameter names are VAR's, so its released state dict loads as it is
(``zoomsr import-var`` checks every key); the arithmetic follows VAR's operation for operation
(distances by ``addmm``, attention by ``bmm`` with the ``C^-1/2`` factor), so the token maps are
the same, not merely close: a nearest-code search flips on the last bit of a near tie.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: VAR's scales of the released tokenizer (and of VAR-d16..d30 at 256 px).
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


# ---------------------------------------------------------------------------------------------
# The autoencoder
# ---------------------------------------------------------------------------------------------


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, GroupNorm -> SiLU -> dropout -> conv3x3, plus the input
    (through a 1x1 ``nin_shortcut`` when the widths differ)."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_ch, H, W)`` -> ``(B, out_ch, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, residual; one 1x1 conv makes
    q, k and v (the three ``C``-channel thirds of its output)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.scale = int(channels) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h, w).unbind(1)
        q = q.reshape(b, c, h * w).permute(0, 2, 1).contiguous()  # (B, HW, C)
        k = k.reshape(b, c, h * w).contiguous()  # (B, C, HW)
        attn = F.softmax(torch.bmm(q, k).mul_(self.scale), dim=2)  # (B, HW_q, HW_k)
        attn = attn.permute(0, 2, 1).contiguous()  # (B, HW_k, HW_q)
        out = torch.bmm(v.reshape(b, c, h * w).contiguous(), attn)  # (B, C, HW_q)
        return x + self.proj_out(out.reshape(b, c, h, w))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 conv (halves H and W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Level(nn.Module):
    """One resolution: ``block`` (ResBlocks), ``attn`` (one AttnBlock per block, or none) and
    optionally ``downsample`` / ``upsample``."""

    def __init__(self, widths: list[tuple[int, int]], with_attn: bool, dropout: float, groups: int):
        super().__init__()
        self.block = nn.ModuleList([ResBlock(i, o, dropout, groups) for i, o in widths])
        self.attn = nn.ModuleList([AttnBlock(o, groups) for _, o in widths] if with_attn else [])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[j](h)
        return h


class _Middle(nn.Module):
    """ResBlock -> AttnBlock (or identity) -> ResBlock at the lowest resolution."""

    def __init__(self, ch: int, with_attn: bool, dropout: float, groups: int):
        super().__init__()
        self.block_1 = ResBlock(ch, ch, dropout, groups)
        self.attn_1 = AttnBlock(ch, groups) if with_attn else nn.Identity()
        self.block_2 = ResBlock(ch, ch, dropout, groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image ``(B, 3, H, W)`` in [-1, 1] -> latent ``(B, z_channels, H / f, W / f)``,
    ``f = 2 ** (len(ch_mult) - 1)``."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        dropout: float = 0.0,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        groups: int = 32,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        width, last = ch, len(ch_mult) - 1
        for i, mult in enumerate(ch_mult):
            out = ch * mult
            widths = [(width if j == 0 else out, out) for j in range(num_res_blocks)]
            level = _Level(widths, using_sa and i == last, dropout, groups)
            width = out
            if i != last:
                level.downsample = Downsample(width)
            self.down.append(level)
        self.mid = _Middle(width, using_mid_sa, dropout, groups)
        self.norm_out = _norm(width, groups)
        self.conv_out = nn.Conv2d(width, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``(B, z_channels, h, w)`` -> image ``(B, 3, h * f, w * f)`` (unclamped); level
    ``i`` of ``up`` is the encoder's level ``i``, run from the deepest, ``num_res_blocks + 1``
    blocks each."""

    def __init__(
        self,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        z_channels: int,
        dropout: float = 0.0,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        groups: int = 32,
    ):
        super().__init__()
        last = len(ch_mult) - 1
        width = ch * ch_mult[last]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = _Middle(width, using_mid_sa, dropout, groups)
        levels: list[_Level] = []
        for i in reversed(range(len(ch_mult))):
            out = ch * ch_mult[i]
            widths = [(width if j == 0 else out, out) for j in range(num_res_blocks + 1)]
            level = _Level(widths, using_sa and i == last, dropout, groups)
            width = out
            if i != 0:
                level.upsample = Upsample(width)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(width, groups)
        self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------
# The multi-scale residual quantizer
# ---------------------------------------------------------------------------------------------


class Phi(nn.Conv2d):
    """``phi(h) = (1 - r) h + r conv3x3(h)`` (VAR Sec. 3.3); its weights are the conv's own."""

    def __init__(self, dim: int, ratio: float):
        super().__init__(dim, dim, 3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1.0 - self.ratio) + super().forward(h).mul_(self.ratio)


class _SharedPhi(nn.Module):
    """One phi for every scale (VAR ``share_quant_resi = 1``: key ``qresi``)."""

    def __init__(self, phi: nn.Module):
        super().__init__()
        self.qresi = phi


class _PartiallySharedPhi(nn.Module):
    """``K`` phis shared over the scales (VAR ``share_quant_resi = K > 1``: keys ``qresi_ls.i``)."""

    def __init__(self, phis: list[nn.Module]):
        super().__init__()
        self.qresi_ls = nn.ModuleList(phis)


def phi_ticks(k: int) -> np.ndarray:
    """VAR's positions in [0, 1] of ``k`` phis: ``linspace(1/3k, 1 - 1/3k)`` for 4, else
    ``linspace(1/2k, 1 - 1/2k)`` (float64, as numpy computes them)."""
    if k == 4:
        return np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k)
    return np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)


def phi_index(scale: int, num_scales: int, k: int) -> int:
    """The phi of scale ``scale`` (0-based) of ``num_scales``: the nearest tick to
    ``scale / (num_scales - 1)``, in float64 as VAR computes it. With VAR's 10 scales and 4
    phis this is ``[0, 0, 1, 1, 1, 2, 2, 3, 3, 3]``; scale 2 is a tie in exact arithmetic (5/36
    either side) that float64 rounding gives to phi 1, so the rule must be computed VAR's way."""
    at = scale / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(phi_ticks(k) - at)))


class VARQuantizer(nn.Module):
    """VAR's ``VectorQuantizer2`` without the training-time bookkeeping: one codebook, the
    scales ``patch_nums`` and the (shared) phi convs.

    Args:
        vocab_size: ``V`` (4096).
        dim: code width ``Cvae`` (32).
        patch_nums: scale sides, smallest first; the last is the latent grid of a square input
            of side ``patch_nums[-1] * 16``.
        quant_resi: ``r`` of :class:`Phi` (0.5); ``|r| <= 1e-6``: no phi (identity).
        share_quant_resi: phi convs: ``0`` one per scale, ``1`` one for all, ``K > 1`` shared by
            VAR's tick rule (4 in the release).
        beta: commitment weight of :meth:`forward`'s loss (0.25).
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        dim: int = 32,
        patch_nums: Sequence[int] = VAR_PATCH_NUMS,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        beta: float = 0.25,
    ):
        super().__init__()
        self.vocab_size, self.dim, self.beta = vocab_size, dim, beta
        self.patch_nums = [int(p) for p in patch_nums]
        n = len(self.patch_nums)

        def make() -> nn.Module:
            return Phi(dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()

        if share_quant_resi == 0:
            self.quant_resi: nn.Module = nn.ModuleList([make() for _ in range(n)])
            bank, k = list(self.quant_resi), n
        elif share_quant_resi == 1:
            self.quant_resi = _SharedPhi(make())
            bank, k = [self.quant_resi.qresi], 1
        else:
            self.quant_resi = _PartiallySharedPhi([make() for _ in range(share_quant_resi)])
            bank, k = list(self.quant_resi.qresi_ls), share_quant_resi
        # phi of each scale, resolved once (a plain list: the modules are registered above)
        self._phis = [bank[0] if k == 1 else bank[phi_index(s, n, k)] for s in range(n)]
        self.phi_of_scale = [0 if k == 1 else phi_index(s, n, k) for s in range(n)]
        # VAR's per-scale code-usage statistic (training only); kept so its state dict loads.
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(n, vocab_size))
        self.embedding = nn.Embedding(vocab_size, dim)

    def token_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """``[(h_k, w_k)]`` of an ``h x w`` latent: the last scale is the grid itself, scale ``k``
        ``round(h p_k / p_last)`` (at least 1): VAR's ``p_k x p_k`` on its own grid."""
        last = self.patch_nums[-1]
        shapes = [
            (max(1, round(h * p / last)), max(1, round(w * p / last))) for p in self.patch_nums
        ]
        shapes[-1] = (h, w)
        return shapes

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` -> ``(N,)`` index of the nearest code in squared L2:
        ``||z||^2 + ||e||^2 - 2 z.e``, summed in VAR's order."""
        codes = self.embedding.weight.data
        d = torch.sum(z.square(), dim=1, keepdim=True) + torch.sum(codes.square(), dim=1)
        d.addmm_(z, codes.T, alpha=-2, beta=1)  # (N, V)
        return torch.argmin(d, dim=1)

    def _codes_up(
        self, idx: torch.Tensor, k: int, size: tuple[int, int], last: bool, contiguous: bool
    ) -> torch.Tensor:
        """``phi_k(up(embed(idx)))``: ``(B, h_k, w_k)`` -> ``(B, C, H, W)``.

        The codes keep VAR's channels-last layout; VAR's encoder path makes the upsampled map
        contiguous before phi and its decoder path does not, which changes the conv kernel and
        so the last bits: ``contiguous`` follows the path (encode True, decode False).
        """
        h = self.embedding(idx).permute(0, 3, 1, 2)  # (B, C, h_k, w_k), strides of (B, h, w, C)
        if not last:
            h = F.interpolate(h, size=size, mode="bicubic")
        return self._phis[k](h.contiguous() if contiguous else h)

    def quantize(self, f: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The token maps ``[(B, h_k, w_k)]`` of a latent ``f`` ``(B, C, H, W)`` and the running
        sums ``f_hat_k`` after each scale (VAR Alg. 1)."""
        b, c, height, width = f.shape
        shapes = self.token_shapes(height, width)
        rest, f_hat = f.detach().clone(), torch.zeros_like(f)
        tokens, sums = [], []
        for k, (ph, pw) in enumerate(shapes):
            last = k == len(shapes) - 1
            z = rest if last else F.interpolate(rest, size=(ph, pw), mode="area")
            idx = self.nearest(z.permute(0, 2, 3, 1).reshape(-1, c)).view(b, ph, pw)
            h = self._codes_up(idx, k, (height, width), last, contiguous=True)
            f_hat.add_(h)
            rest.sub_(h)
            tokens.append(idx)
            sums.append(f_hat.clone())
        return tokens, sums

    def decode(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """``f_hat`` ``(B, C, H, W)`` of token maps ``[(B, h_k, w_k)]`` (VAR Alg. 2)."""
        height, width = tokens[-1].shape[-2:]
        # a contiguous sum, whatever the layout of the parts (it sets post_quant_conv's kernel)
        f_hat = self.embedding.weight.new_zeros(tokens[0].shape[0], self.dim, height, width)
        for k, idx in enumerate(tokens):
            f_hat.add_(self._codes_up(idx, k, (height, width), k == len(tokens) - 1, False))
        return f_hat

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Training: ``f_hat`` with straight-through gradients, the token maps, and VAR's loss,
        the mean over scales of ``beta ||sg[f_hat_k] - f||^2 + ||f_hat_k - sg[f]||^2``.

        Unlike VAR (whose codebook gets gradients through ``f_hat``), the codes here are the
        nearest ones, so the second term trains the codebook only through ``phi``.
        """
        tokens, sums = self.quantize(f.float())
        target = f.detach().float()
        loss = sum(self.beta * F.mse_loss(s, f.float()) + F.mse_loss(s, target) for s in sums)
        f_hat = (sums[-1].detach() - target).add(f.float())  # straight-through estimator
        return f_hat, tokens, loss / len(sums)


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------


class VARVQVAE(nn.Module):
    """VAR's VQVAE: encoder -> 3x3 ``quant_conv`` -> :class:`VARQuantizer` ->
    3x3 ``post_quant_conv`` -> decoder. Images are in [-1, 1].

    Args (defaults: the released ``vae_ch160v4096z32.pth``):
        vocab_size: ``V`` (4096).  z_channels: ``Cvae`` (32).  ch: first-level width (160).
        ch_mult: level widths over ``ch`` (``(1, 1, 2, 2, 4)``: x16).
        num_res_blocks: ResBlocks per encoder level (2; the decoder has one more).
        patch_nums: the scales (:data:`VAR_PATCH_NUMS`).
        quant_resi, share_quant_resi, beta: of :class:`VARQuantizer` (0.5, 4, 0.25).
        quant_conv_ks: kernel of the two quant convs (3).
        dropout: in every ResBlock (0).
        using_sa, using_mid_sa: attention at the deepest level / in the middle (True, True).
        groups: GroupNorm groups (32).

    Attributes:
        factor: image pixels per latent position (16).
        codebook_size: ``V``.
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        z_channels: int = 32,
        ch: int = 160,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        patch_nums: Sequence[int] = VAR_PATCH_NUMS,
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        beta: float = 0.25,
        quant_conv_ks: int = 3,
        dropout: float = 0.0,
        using_sa: bool = True,
        using_mid_sa: bool = True,
        groups: int = 32,
    ):
        super().__init__()
        net = dict(
            ch=ch, ch_mult=tuple(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
            dropout=dropout, using_sa=using_sa, using_mid_sa=using_mid_sa, groups=groups,
        )  # fmt: skip
        self.encoder = Encoder(**net)
        self.decoder = Decoder(**net)
        self.quantize = VARQuantizer(
            vocab_size, z_channels, patch_nums, quant_resi, share_quant_resi, beta
        )
        pad = quant_conv_ks // 2
        self.quant_conv = nn.Conv2d(z_channels, z_channels, quant_conv_ks, padding=pad)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, quant_conv_ks, padding=pad)
        self.factor = 2 ** (len(ch_mult) - 1)
        self.codebook_size = vocab_size

    def token_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """Token map shapes of an image of ``height x width`` pixels (multiples of ``factor``)."""
        return self.quantize.token_shapes(height // self.factor, width // self.factor)

    def latent(self, img: torch.Tensor) -> torch.Tensor:
        """``f = quant_conv(encoder(img))``, ``(B, Cvae, H / 16, W / 16)``."""
        return self.quant_conv(self.encoder(img))

    @torch.no_grad()
    def encode_tokens(self, img: torch.Tensor) -> list[torch.LongTensor]:
        """The tokens of images ``img`` ``(B, 3, H, W)`` in [-1, 1], ``H, W`` multiples of 16.

        Returns:
            One ``(B, h_k * w_k)`` int64 tensor per scale, smallest first, each map row-major:
            VAR's ``img_to_idxBl`` exactly (for a 256 x 256 image ``h_k = w_k = patch_nums[k]``).
            :meth:`token_maps` gives the same as ``(B, h_k, w_k)`` maps.
        """
        return [t.flatten(1) for t in self.token_maps(img)]

    @torch.no_grad()
    def token_maps(self, img: torch.Tensor) -> list[torch.LongTensor]:
        """As :meth:`encode_tokens`, as ``(B, h_k, w_k)`` maps (the vq_refiner's convention)."""
        return self.quantize.quantize(self.latent(img))[0]

    def decode_tokens(self, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] (clamped, as VAR's ``idxBl_to_img``) from token
        maps: ``(B, h_k, w_k)`` each, or VAR's flat ``(B, p_k ** 2)`` (square scales)."""
        maps = []
        for t in tokens:
            if t.dim() == 2:
                side = math.isqrt(t.shape[1])
                t = t.reshape(t.shape[0], side, side)
            maps.append(t)
        return self.decoder(self.post_quant_conv(self.quantize.decode(maps))).clamp(-1.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, img: torch.Tensor) -> torch.Tensor:
        """``decode_tokens(encode_tokens(img))``: the tokenizer's round trip, ``(B, 3, H, W)`` in
        [-1, 1] (VAR's ``img_to_reconstructed_img(img, last_one=True)``)."""
        return self.decode_tokens(self.token_maps(img))

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Training: ``img`` in [-1, 1] -> (reconstruction, token maps, quantizer loss)."""
        f_hat, tokens, loss = self.quantize(self.latent(img))
        return self.decoder(self.post_quant_conv(f_hat)), tokens, loss

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # VAR's code-usage statistic has one row per scale of the run that trained it; another
        # number of scales keeps ours (it is a training statistic, not a weight), as VAR does.
        key = prefix + "quantize.ema_vocab_hit_SV"
        ours = self.quantize.ema_vocab_hit_SV
        if key in state_dict and state_dict[key].shape != ours.shape:
            state_dict[key] = ours.clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def var_tokenizer(
    channels: Sequence[int],
    blocks: int,
    groups: int,
    embed_dim: int,
    codebook_size: int,
    patch_nums: Sequence[int],
    beta: float = 0.25,
) -> VARVQVAE:
    """A :class:`VARVQVAE` from the ``vq_refiner`` backbone's VQGAN keys (``tokenizer: var``):
    ``channels`` are the level widths ``ch * ch_mult`` (VAR's: ``[160, 160, 320, 320, 640]``),
    ``blocks`` the ResBlocks per level, ``embed_dim`` = Cvae, ``codebook_size`` = V."""
    ch = int(channels[0])
    if any(int(c) % ch for c in channels):
        raise ValueError(f"tokenizer=var: channels must be multiples of the first, got {channels}")
    return VARVQVAE(
        vocab_size=codebook_size, z_channels=embed_dim, ch=ch,
        ch_mult=[int(c) // ch for c in channels], num_res_blocks=blocks,
        patch_nums=patch_nums, beta=beta, groups=groups,
    )  # fmt: skip
