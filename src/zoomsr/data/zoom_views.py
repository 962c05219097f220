"""(wide view, zoomed view) pairs from zoom chains over an HR folder: what the prompt VLM sees
at every step of a ``recursive_multiscale`` chain, for its preference alignment (GRPO).

Each HR image goes through :class:`~zoomsr.zoom.chain.ChainEngine` (the engine ``infer.py``
runs) with a backbone (default MATLAB bicubic, no weights); a recording prompt function keeps
the two views the chain shows the prompt source at each step (CoZ's: the previous output and
the zoomed crop upsampled to ``P x P``). The pairs of an image are cached on
disk under a key of its pixels, the chain's settings and the backbone (its class, scale and
trainable weights), as prompts are: a rerun never runs the chain again.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic
from zoomsr.data.io import list_images, load_image, to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.zoom.chain import ChainEngine

#: the ``zoom`` config: ``ChainEngine`` with its settings, ``_partial_: true`` (the backbone and
#: the recording prompt function are given here)
ChainFactory = Callable[..., ChainEngine]


class ViewRecorder:
    """A chain prompt function that keeps the views it is shown and prompts nothing."""

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, views: list[torch.Tensor], step: int, names=None) -> list[str]:
        self.pairs.append((views[0][0].detach().cpu(), views[1][0].detach().cpu()))
        return [""] * views[0].shape[0]


def chain_key(image: torch.Tensor, chain: ChainEngine, backbone: Backbone) -> str:
    """Content key of an image's view pairs: pixels, chain settings and backbone."""
    h = hashlib.sha256()
    h.update(to_uint8(image).numpy().tobytes())
    settings = {**chain.settings(), "target": chain.target, "resize": chain.resize}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(f"{type(backbone).__name__}:{backbone.scale}".encode())
    for name, value in sorted(backbone.trainable_state_dict().items()):
        h.update(name.encode() + value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:32]


def chain_views(
    image: torch.Tensor, chain: ChainEngine, recorder: ViewRecorder
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``steps`` (wide ``(3, P, P)``, zoom ``(3, P, P)``) pairs, 8-bit quantized; ``chain``
    asks ``recorder`` for its prompts."""
    recorder.pairs.clear()
    with torch.no_grad():
        for _ in chain.iter_steps(image, "views"):
            pass
    return [(to_uint8(w).float() / 255, to_uint8(z).float() / 255) for w, z in recorder.pairs]


class ZoomViewPairs(Dataset):
    """Every (wide, zoom) pair of every image of ``hr_dir``; items are dicts with ``wide``
    ``(3, P, P)``, ``zoom`` ``(3, P, P)`` in [0, 1], ``name`` ``"<stem>/step<k>"``."""

    def __init__(
        self,
        hr_dir: str,
        chain: ChainFactory,
        backbone: Backbone | None = None,
        cache_dir: str | None = None,
        max_images: int | None = None,
    ) -> None:
        settings = chain.keywords if isinstance(chain, functools.partial) else {}
        rec_type = settings.get("rec_type", "recursive_multiscale")
        if rec_type != "recursive_multiscale":
            raise ZoomSRError(
                "GRPO views need data.zoom.rec_type=recursive_multiscale (the wide and the "
                f"zoomed view), got {rec_type}"
            )
        backbone = backbone or Bicubic(settings.get("upscale") or 4)
        recorder = ViewRecorder()
        chain = chain(backbone=backbone, prompt_source=recorder)
        files = list_images(hr_dir, "GRPO HR folder (data.hr_dir)")[:max_images]
        cache = Path(cache_dir).expanduser() if cache_dir else None
        self.items: list[dict] = []
        self.computed = 0  # images whose chain ran (cache misses)
        for path in files:
            image = load_image(path)
            pairs = self._cached(cache, chain_key(image, chain, backbone)) if cache else None
            if pairs is None:
                pairs = chain_views(image, chain, recorder)
                self.computed += 1
                if cache:
                    self._store(cache, chain_key(image, chain, backbone), pairs)
            for k, (wide, zoom) in enumerate(pairs, start=1):
                self.items.append({"wide": wide, "zoom": zoom, "name": f"{path.stem}/step{k}"})

    @staticmethod
    def _cached(cache: Path, key: str) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        from safetensors.torch import load_file

        file = cache / f"{key}.safetensors"
        if not file.is_file():
            return None
        t = load_file(str(file))
        n = len(t) // 2
        return [(t[f"wide{k}"].float() / 255, t[f"zoom{k}"].float() / 255) for k in range(n)]

    @staticmethod
    def _store(cache: Path, key: str, pairs) -> None:
        from safetensors.torch import save_file

        cache.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for k, (wide, zoom) in enumerate(pairs):
            tensors[f"wide{k}"] = to_uint8(wide).contiguous()
            tensors[f"zoom{k}"] = to_uint8(zoom).contiguous()
        tmp = cache / f"{key}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(cache / f"{key}.safetensors")  # atomic: a killed run leaves no half file

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class ZoomViewsDataModule(pl.LightningDataModule):
    """View pairs for GRPO (see the module docstring); shuffled with ``seed``.

    Args:
        hr_dir: the HR images.
        zoom: the chain engine's factory (``ChainEngine`` with ``_partial_: true``,
            ``rec_type=recursive_multiscale``; its ``steps``, ``process_size``, ``upscale`` set
            the views).
        backbone: the SR step of the chain (default None: MATLAB bicubic).
        cache_dir: where view pairs are cached (None: not cached).
        batch_size: pairs per training step (each gets a group of sampled prompts).
        num_workers: DataLoader workers.
        max_images: use the first N images only.
        seed: the shuffling seed.
    """

    def __init__(
        self,
        hr_dir: str,
        zoom: ChainFactory,
        backbone: Backbone | None = None,
        cache_dir: str | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.hr_dir, self.zoom, self.backbone = hr_dir, zoom, backbone
        self.cache_dir, self.max_images = cache_dir, max_images
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set: ZoomViewPairs | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = ZoomViewPairs(
                self.hr_dir, self.zoom, self.backbone, self.cache_dir, self.max_images
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            drop_last=False,
        )
