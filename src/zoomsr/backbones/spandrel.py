"""Any pretrained SR network that the ``spandrel`` library recognizes, as a zoomsr backbone.

spandrel (github.com/chaiNNer-org/spandrel) detects the architecture of a bare state dict
(Real-ESRGAN's RRDBNet, SwinIR, HAT, DAT, OmniSR, SPAN, ...) and builds the network with its
scale. This backbone reads the weight file itself, safely (``safetensors``, or
``torch.load(weights_only=True)`` for ``.pth``/``.pt``/``.ckpt``: nothing is unpickled as code),
hands the state dict to spandrel, and runs the model through the zoomsr contract: ``upscale``
takes and returns ``(B, 3, H, W)`` in [0, 1], so ``evaluate.py``, every chain mode of
``infer.py`` and the UI use it like any other backbone.

    python evaluate.py backbone=spandrel backbone.path=RealESRGAN_x4plus.pth data=set5 scales=[4]

Each image goes through spandrel's own call (its padding to the architecture's size rules, its
clamp to [0, 1]); ``tile_size`` cuts large inputs into overlapping tiles
(:func:`zoomsr.zoom.tiling.tiled_upscale`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError

#: File suffixes read as weights: safetensors, else ``torch.load(weights_only=True)``.
SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def weight_file(path: str | Path) -> Path:
    """``path`` if it is an existing weight file, else a ZoomSRError naming it."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ZoomSRError(
            f"spandrel model file not found: '{p}' (backbone.path). Pass a .pth or "
            ".safetensors of a pretrained SR network (e.g. RealESRGAN_x4plus.pth)."
        )
    if p.suffix.lower() not in SUFFIXES:
        raise ZoomSRError(f"'{p}': not a weight file ({', '.join(SUFFIXES)}).")
    return p


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weight file, read without running code from it.

    Raises:
        ZoomSRError: the file is missing, of another kind, or not a dict of tensors.
    """
    p = weight_file(path)
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code in it, a truncated or foreign file
        raise ZoomSRError(f"cannot read '{p}' safely as model weights: {err}") from err
    if not isinstance(state, dict):
        raise ZoomSRError(f"'{p}' holds a {type(state).__name__}, not a state dict.")
    return state


def load_descriptor(path: str | Path):
    """spandrel's ``ImageModelDescriptor`` of the file's network, in eval mode on the CPU.

    Raises:
        ZoomSRError: spandrel recognizes no architecture in the file, or one that is not an
            image-to-image network (inpainting takes a mask).
    """
    import spandrel

    state = spandrel.canonicalize_state_dict(read_state_dict(path))
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ZoomSRError(
            f"'{path}': spandrel recognizes no architecture in this file (supported: "
            "github.com/chaiNNer-org/spandrel#model-architecture-support)."
        ) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ZoomSRError(
            f"'{path}' is a {descriptor.architecture.name} {descriptor.purpose} model, not an "
            "image-to-image SR network."
        )
    return descriptor.eval()


class _Whole(Backbone):
    """The untiled call of a :class:`Spandrel`, for the tiler (which calls ``upscale``)."""

    is_learned = False

    def __init__(self, outer: Spandrel):
        super().__init__()
        self.scale, self._outer = outer.scale, [outer]  # a list: not a registered submodule

    def _upscale(self, lr: torch.Tensor, prompts, generator) -> torch.Tensor:
        return self._outer[0].upscale_whole(lr)


class Spandrel(Backbone):
    """A pretrained network from a weight file that spandrel detects.

    Args:
        path: the ``.pth`` / ``.safetensors`` file (required).
        scale: the expected factor; None takes the model's. A different value is an error
            (the factor is the network's, not a setting).
        tile_size: LR tile side for large inputs (None: whole images). Architectures that
            tile internally (spandrel's ``ModelTiling.INTERNAL``) are never tiled here.
        tile_overlap: LR pixels shared by neighbouring tiles (default 16).

    Attributes:
        descriptor: spandrel's model descriptor (``architecture.name``, ``scale``, ...).
    """

    is_learned = False  # pretrained and frozen: nothing to train, no checkpoint needed

    def __init__(
        self,
        path: str,
        scale: int | None = None,
        tile_size: int | None = None,
        tile_overlap: int = 16,
    ):
        super().__init__()
        if tile_size is not None and not 0 <= tile_overlap < tile_size:
            raise ZoomSRError(
                f"backbone.tile_overlap={tile_overlap} must be in [0, tile_size={tile_size})."
            )
        self.path = str(path)
        self.descriptor = load_descriptor(path)
        if scale is not None and int(scale) != self.descriptor.scale:
            raise ZoomSRError(
                f"'{path}' is a x{self.descriptor.scale} {self.descriptor.architecture.name} "
                f"model; x{scale} was asked for. Use scale={self.descriptor.scale} "
                f"(evaluate.py: scales=[{self.descriptor.scale}])."
            )
        self.scale = self.descriptor.scale
        self.net: nn.Module = self.descriptor.model  # registered: .to(device) moves it
        self.net.requires_grad_(False)
        self.tile_size, self.tile_overlap = tile_size, tile_overlap

    @classmethod
    def check_weights(cls, config) -> None:
        """Start-up check (:mod:`zoomsr.tasks.preflight`): ``backbone.path`` is a weight file."""
        weight_file(config.path)

    @property
    def architecture(self) -> str:
        """spandrel's name of the detected architecture, e.g. ``ESRGAN``, ``SwinIR``."""
        return self.descriptor.architecture.name

    def train(self, mode: bool = True) -> Spandrel:
        """The network stays in eval mode: it is pretrained and frozen."""
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def upscale_whole(self, lr: torch.Tensor) -> torch.Tensor:
        """spandrel's own call on each image of ``lr`` ``(B, C, h, w)`` in [0, 1].

        A gray image through an RGB network goes in as RGB and comes back as the mean of the
        output channels. Returns ``(B, C, h * scale, w * scale)`` in [0, 1].
        """
        want = self.descriptor.input_channels
        gray = lr.shape[1] == 1 and want == 3
        if lr.shape[1] != want and not gray:
            raise ZoomSRError(
                f"'{self.path}' takes {want}-channel images; got {lr.shape[1]} channels."
            )
        x = lr.expand(-1, 3, -1, -1) if gray else lr
        dtype = next(self.net.parameters()).dtype
        outs = [self.descriptor(img[None].to(dtype)) for img in x]
        sr = torch.cat(outs).to(lr.dtype)
        return sr.mean(1, keepdim=True) if gray else sr

    def _upscale(
        self, lr: torch.Tensor, prompts: list[str] | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B, 3, h, w)`` in [0, 1] -> ``(B, 3, h * scale, w * scale)`` in [0, 1]
        (:meth:`Backbone.upscale`); prompts are ignored. Tiled when ``tile_size`` is set and the
        input is larger."""
        import spandrel

        internal = self.descriptor.tiling == spandrel.ModelTiling.INTERNAL
        h, w = lr.shape[-2:]
        if self.tile_size is None or internal or (h <= self.tile_size and w <= self.tile_size):
            return self.upscale_whole(lr)
        from zoomsr.zoom.tiling import tiled_upscale

        return tiled_upscale(_Whole(self), lr, self.tile_size, self.tile_overlap)
