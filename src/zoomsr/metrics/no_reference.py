"""No-reference quality metrics through pyiqa (Chen et al., IQA-PyTorch), as SR papers compute
them (OSEDiff, Chain-of-Zoom): NIQE, MUSIQ (KonIQ), MANIQA (KonIQ), CLIP-IQA (RN50).

pyiqa's own ``create_metric`` builds each network; the learned weights are then loaded here
with ``torch.load(weights_only=True)`` (pyiqa would unpickle and download). ``$TORCH_HOME`` is
read by pyiqa when it is imported, so it is imported only here, after the weights were checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.weights import check_weights, weight_path

#: zoomsr name -> (pyiqa name, lower is better)
PYIQA_NAMES: dict[str, tuple[str, bool]] = {
    "niqe": ("niqe", True),
    "musiq": ("musiq", False),
    "maniqa": ("maniqa", False),
    "clipiqa": ("clipiqa", False),
}


@contextlib.contextmanager
def _vit_without_download() -> Iterator[None]:
    """MANIQA builds timm's ``vit_base_patch8_224`` with ``pretrained=True``; its checkpoint
    then overwrites every weight of it (``vit.*`` included, strict load), so the ImageNet
    weights would be fetched only to be replaced. Build the ViT randomly initialised instead."""
    import timm

    original = timm.create_model

    def random_init(*args, **kwargs):
        return original(*args, **{**kwargs, "pretrained": False})

    timm.create_model = random_init
    try:
        yield
    finally:
        timm.create_model = original


def _load_state(net: nn.Module, metric: str) -> None:
    from pyiqa.archs.arch_util import clean_state_dict

    path = weight_path(metric)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ZoomSRError(f"cannot read {metric} weights '{path}' as a state dict: {err}") from err
    if isinstance(state, dict) and "params" in state and isinstance(state["params"], dict):
        state = state["params"]
    net.load_state_dict(clean_state_dict(state), strict=True)


def build_pyiqa(name: str, device: torch.device | str = "cpu", pretrained: bool = True):
    """pyiqa's inference model of ``name`` (a key of :data:`PYIQA_NAMES`) on ``device``.

    ``pretrained=False`` keeps the learned networks randomly initialised (tests); NIQE always
    reads its parameter file.
    """
    if pretrained or name == "niqe":
        check_weights([name])
    import pyiqa

    kwargs: dict = {}
    if name == "niqe":
        kwargs["pretrained_model_path"] = str(weight_path("niqe"))
    elif name in ("musiq", "maniqa"):
        kwargs["pretrained"] = False  # loaded below, without unpickling
    guard = _vit_without_download() if name == "maniqa" else contextlib.nullcontext()
    with guard:
        if name == "clipiqa" and not pretrained:
            raise ZoomSRError("clipiqa has no random-initialised mode (its CLIP is one file).")
        model = pyiqa.create_metric(PYIQA_NAMES[name][0], device=torch.device(device), **kwargs)
    if pretrained and name in ("musiq", "maniqa"):
        _load_state(model.net, name)
        model.net.to(device).eval()
    return model


class NoReference(nn.Module):
    """One no-reference metric, scored per image on batches.

    Args:
        name: ``niqe`` | ``musiq`` | ``maniqa`` | ``clipiqa``.
        model: a pyiqa inference model to use instead of building one (tests).
        device: where the network runs.
    """

    kind = "no_reference"

    def __init__(
        self, name: str, model: nn.Module | None = None, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.name = name
        self.lower_better = PYIQA_NAMES[name][1]
        self.model = model if model is not None else build_pyiqa(name, device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B,)`` float64 scores."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        device = self.model.dummy_param.device
        return self.model(images.to(device).float().clamp(0, 1)).flatten().double().cpu()
