"""PatchGAN discriminator (Isola et al. 2017, pix2pix Sec. 3.2; as taming-transformers' and
ITER's ``NLayerDiscriminator``): strided 4x4 convs that map an image ``(B, C, H, W)`` to a map
of real/fake logits ``(B, 1, h, w)``, each seeing one receptive-field patch.

Layout (``n_layers = 3``, ``ndf = 64``, the 70x70 PatchGAN): conv(C -> 64, s2) + LeakyReLU,
then ``n_layers - 1`` blocks conv(s2) + norm + LeakyReLU doubling the width up to ``8 ndf``,
one more such block with stride 1, and a stride-1 conv to one channel. Module names
(``main.0``, ``main.2``, ...) follow the pix2pix/taming ``nn.Sequential`` so their weights load.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils import spectral_norm

Norm = Literal["batch", "group", "none", "spectral"]


def _norm(kind: Norm, channels: int) -> nn.Module | None:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels, eps=1e-6)
    return None


class PatchDiscriminator(nn.Module):
    """NLayer patch discriminator.

    Args:
        in_channels: image channels (3).
        ndf: width of the first conv (64).
        n_layers: stride-2 convs (3: a 70x70 receptive field; taming's VQGAN uses 3, ITER's
            ``VQGANDiscriminator`` 4).
        norm: ``batch`` (pix2pix/taming; convs before it carry no bias), ``group``,
            ``none``, or ``spectral`` (spectral normalization on every conv but the last,
            no feature norm).
        init: ``normal`` draws conv weights from N(0, 0.02) and norm scales from
            N(1, 0.02) (taming's ``weights_init``); ``default`` keeps torch's init.
    """

    def __init__(
        self,
        in_channels: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: Norm = "batch",
        init: Literal["normal", "default"] = "normal",
    ) -> None:
        super().__init__()
        if norm not in ("batch", "group", "none", "spectral"):
            raise ValueError(f"discriminator norm must be batch|group|none|spectral, got {norm!r}")
        if n_layers < 1:
            raise ValueError(f"discriminator n_layers must be >= 1, got {n_layers}")
        sn = spectral_norm if norm == "spectral" else (lambda m: m)
        bias = norm in ("none", "spectral")
        layers: list[nn.Module] = [
            sn(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last block keeps the resolution
            layers.append(sn(nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=bias)))
            if (layer := _norm(norm, ndf * mult)) is not None:
                layers.append(layer)
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        if init == "normal":
            self.apply(_normal_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` (the generator's range, e.g. [-1, 1]) -> logits ``(B, 1, h, w)``."""
        return self.main(x)


def _normal_init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d) and hasattr(m, "weight") and not hasattr(m, "weight_orig"):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.Conv2d) and hasattr(m, "weight_orig"):
        nn.init.normal_(m.weight_orig, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class UNetDiscriminator(nn.Module):
    """U-Net discriminator with spectral normalization (Real-ESRGAN, Wang et al. 2021, Sec. 3.3;
    ITER's release ``network_d``): a logit per *pixel* ``(B, 1, H, W)``.

    conv0 (3x3), three stride-2 4x4 convs doubling the width to ``8 nf``; three bilinear x2 +
    3x3 conv steps back, each adding the encoder feature of its size (``skip``); two 3x3 convs
    and a 3x3 conv to one channel. LeakyReLU(0.2) after every conv but the last; spectral norm
    on every conv but the first and the last. H and W must be multiples of 8.
    """

    def __init__(self, in_channels: int = 3, nf: int = 64, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip

        def sn(c_in: int, c_out: int, k: int, s: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(c_in, c_out, k, s, 1, bias=False))

        self.conv0 = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.conv1, self.conv2 = sn(nf, 2 * nf, 4, 2), sn(2 * nf, 4 * nf, 4, 2)
        self.conv3 = sn(4 * nf, 8 * nf, 4, 2)
        self.conv4, self.conv5 = sn(8 * nf, 4 * nf, 3, 1), sn(4 * nf, 2 * nf, 3, 1)
        self.conv6 = sn(2 * nf, nf, 3, 1)
        self.conv7, self.conv8 = sn(nf, nf, 3, 1), sn(nf, nf, 3, 1)
        self.conv9 = nn.Conv2d(nf, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> per-pixel logits ``(B, 1, H, W)``."""
        act = nn.functional.leaky_relu
        x0 = act(self.conv0(x), 0.2)
        x1 = act(self.conv1(x0), 0.2)
        x2 = act(self.conv2(x1), 0.2)
        y = act(self.conv3(x2), 0.2)
        for conv, skip in ((self.conv4, x2), (self.conv5, x1), (self.conv6, x0)):
            y = nn.functional.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = act(conv(y), 0.2)
            y = y + skip if self.skip else y
        y = act(self.conv8(act(self.conv7(y), 0.2)), 0.2)
        return self.conv9(y)
