"""Learned quality metrics through pyiqa (Chen et al., IQA-PyTorch), as SR papers compute them
(OSEDiff's ``test_metrics.py``, Chain-of-Zoom):

- no-reference: NIQE, MUSIQ (KonIQ), MANIQA (KonIQ checkpoint), MANIQA-pipal (the PIPAL
  checkpoint OSEDiff's and CoZ's tables use), CLIP-IQA (RN50), TOPIQ-NR (KonIQ, ResNet-50);
- full-reference: DISTS (Ding et al. 2020), TOPIQ-FR (KADID, ResNet-50).

pyiqa's own ``create_metric`` builds each network (the real classes) with its download switches
off; the learned weights are then loaded here with ``torch.load(weights_only=True)`` (pyiqa would
unpickle and download). ``$TORCH_HOME`` is read by pyiqa when it is imported, so it is imported
only here, after the weight files were checked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.weights import check_weights, weight_path

#: zoomsr name -> (pyiqa name, lower is better, full-reference)
PYIQA_NAMES: dict[str, tuple[str, bool, bool]] = {
    "niqe": ("niqe", True, False),
    "musiq": ("musiq", False, False),
    "maniqa": ("maniqa", False, False),
    "maniqa_pipal": ("maniqa-pipal", False, False),
    "clipiqa": ("clipiqa", False, False),
    "topiq_nr": ("topiq_nr", False, False),
    "dists": ("dists", True, True),
    "topiq_fr": ("topiq_fr", False, True),
}
#: networks whose whole state dict is one pyiqa checkpoint (loaded strictly after construction)
_ONE_FILE = ("musiq", "maniqa", "maniqa_pipal", "topiq_nr", "topiq_fr")


@contextlib.contextmanager
def _no_imagenet_download() -> Iterator[None]:
    """MANIQA builds timm's ``vit_base_patch8_224`` with ``pretrained=True`` and DISTS builds
    torchvision's ``vgg16(weights='IMAGENET1K_V1')``: both would download ImageNet weights at
    construction. MANIQA's checkpoint overwrites every weight (strict load), and DISTS's VGG
    trunk is loaded below from torchvision's file, so build both randomly initialised."""
    import timm
    import torchvision

    create_model, vgg16 = timm.create_model, torchvision.models.vgg16

    def timm_random(*args, **kwargs):
        return create_model(*args, **{**kwargs, "pretrained": False})

    def vgg_random(*args, **kwargs):
        return vgg16(weights=None)

    timm.create_model, torchvision.models.vgg16 = timm_random, vgg_random
    try:
        yield
    finally:
        timm.create_model, torchvision.models.vgg16 = create_model, vgg16


@contextlib.contextmanager
def _random_clip() -> Iterator[None]:
    """CLIP-IQA loads OpenAI's RN50 from one TorchScript file; for ``pretrained=False`` build
    the same ``CLIP`` class (pyiqa's copy) with RN50's sizes, randomly initialised."""
    import pyiqa.archs.clipiqa_arch as clipiqa
    from pyiqa.archs.clip_model import CLIP

    def rn50(name: str, device: str = "cpu", *args, **kwargs) -> nn.Module:
        if name != "RN50":
            raise ZoomSRError(f"random CLIP-IQA is built for RN50 only, not {name}.")
        # RN50: embed 1024, 224 px, ResNet (3, 4, 6, 3) width 64; text 77 tokens, 49408 words,
        # a 12-layer width-512 transformer with 8 heads (OpenAI CLIP, Radford et al. 2021)
        return CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12).to(device).eval()

    original = clipiqa.load
    clipiqa.load = rn50
    try:
        yield
    finally:
        clipiqa.load = original


def _read(metric: str, index: int = 0) -> dict:
    path = weight_path(metric, index)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ZoomSRError(f"cannot read {metric} weights '{path}' as a state dict: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    from pyiqa.archs.arch_util import clean_state_dict

    return clean_state_dict(state)


def _load_dists(net: nn.Module) -> None:
    """DISTS = torchvision's VGG16 trunk (file 0, its ``features.i`` are DISTS's ``stageK.i``)
    plus the learned ``alpha``/``beta`` layer weights (file 1)."""
    vgg = _read("dists", 0)
    state = {}
    for key, _ in net.named_parameters():  # not the L2-pooling filters (fixed buffers)
        stage, _, rest = key.partition(".")
        if stage.startswith("stage") and f"features.{rest}" in vgg:
            state[key] = vgg[f"features.{rest}"]
    heads = _read("dists", 1)
    missing = {"alpha", "beta"} - set(heads)
    if missing:
        raise ZoomSRError(f"'{weight_path('dists', 1)}' lacks DISTS's {sorted(missing)}.")
    state |= {k: heads[k] for k in ("alpha", "beta")}
    net.load_state_dict(state, strict=False)  # the L2 pooling filters are fixed buffers


def build_pyiqa(name: str, device: torch.device | str = "cpu", pretrained: bool = True):
    """pyiqa's inference model of ``name`` (a key of :data:`PYIQA_NAMES`) on ``device``.

    ``pretrained=False`` keeps the learned networks randomly initialised (tests, benchmarks);
    NIQE always reads its parameter file.
    """
    if pretrained or name == "niqe":
        check_weights([name])
    import pyiqa

    kwargs: dict = {"pretrained": False} if name != "clipiqa" else {}
    if name == "niqe":
        kwargs = {"pretrained_model_path": str(weight_path("niqe"))}
    elif name.startswith("topiq"):
        kwargs["backbone_pretrain"] = False  # the checkpoint holds the ResNet-50 too
    guard = _random_clip() if name == "clipiqa" and not pretrained else contextlib.nullcontext()
    with _no_imagenet_download(), guard:
        model = pyiqa.create_metric(PYIQA_NAMES[name][0], device=torch.device(device), **kwargs)
    if pretrained and name in _ONE_FILE:
        model.net.load_state_dict(_read(name), strict=True)
    elif pretrained and name == "dists":
        _load_dists(model.net)
    return model.to(device).eval()


class PyiqaMetric(nn.Module):
    """One pyiqa metric scored per image on batches: ``forward(sr)`` for a no-reference metric,
    ``forward(sr, hr)`` for a full-reference one.

    Args:
        name: a key of :data:`PYIQA_NAMES`.
        model: a pyiqa inference model to use instead of building one (tests).
        device: where the network runs.
    """

    def __init__(
        self, name: str, model: nn.Module | None = None, device: torch.device | str = "cpu"
    ) -> None:
        super().__init__()
        self.name = name
        _, self.lower_better, full_reference = PYIQA_NAMES[name]
        self.kind = "full_reference" if full_reference else "no_reference"
        self.model = model if model is not None else build_pyiqa(name, device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] (and the references) -> ``(B,)`` float64 scores."""
        device = self.model.dummy_param.device

        def prep(x: torch.Tensor) -> torch.Tensor:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return x.to(device).float().clamp(0, 1)

        args = (prep(images),) if reference is None else (prep(images), prep(reference))
        return self.model(*args).flatten().double().cpu()
