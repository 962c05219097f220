"""Tag prompts: an image tagger's labels for the zoomed view, as ``"tag1, tag2, ..."``.

OSEDiff and CoZ prompt with DAPE, a degradation-aware fine-tune of the RAM tagger (Recognize
Anything). With ``ram_path`` (and optionally ``dape_path``) set, those weights are used through
the ``ram`` package (the recognize-anything repository; DAPE needs the ``ram.models.ram_lora``
module that the SeeSR/OSEDiff/CoZ repositories ship). Otherwise any transformers image
classifier (``model``: a folder or a cached Hub id) gives its ``top_k`` labels.

The tagger sees the zoomed view only (the last view), as DAPE sees the LR input in CoZ.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.prompts.base import PromptSource, to_pil
from zoomsr.prompts.hub import resolve_pretrained

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clean_label(label: str) -> str:
    """``"tabby, tabby cat"`` -> ``"tabby"``; ``"golden_retriever"`` -> ``"golden retriever"``."""
    return label.split(",")[0].replace("_", " ").strip()


class TagPrompt(PromptSource):
    """Comma-separated tags of each image's zoomed view.

    Args:
        model: a transformers image classifier (folder or cached Hub id); used when
            ``ram_path`` is None. Default ``google/vit-base-patch16-224`` (ImageNet labels).
        top_k: at most this many labels per image (default 5), best first.
        min_score: drop labels whose probability is below this (softmax, or sigmoid for a
            multi-label classifier); default 0.
        ram_path: RAM weights (``ram_swin_large_14m.pth``): use RAM (or DAPE) instead.
        dape_path: DAPE's fine-tuned weights on top of RAM (``DAPE.pth``); needs ``ram_path``.
        image_size: RAM's input side (384).
        user_text, user_file, cache: see :class:`~zoomsr.prompts.base.PromptSource`.
    """

    uses_model = True

    def __init__(
        self,
        model: str = "google/vit-base-patch16-224",
        top_k: int = 5,
        min_score: float = 0.0,
        ram_path: str | None = None,
        dape_path: str | None = None,
        image_size: int = 384,
        user_text: str | None = None,
        user_file: str | None = None,
        cache: str | None = None,
    ) -> None:
        super().__init__(user_text, user_file, cache)
        if top_k < 1:
            raise ZoomSRError(f"prompt.top_k must be >= 1, got {top_k}.")
        self.top_k, self.min_score, self.image_size = top_k, min_score, image_size
        self.ram_path = self.dape_path = self.model_path = None
        if dape_path and not ram_path:
            raise ZoomSRError("prompt.dape_path needs prompt.ram_path (DAPE fine-tunes RAM).")
        if ram_path:
            self.ram_path = _existing_file(ram_path, "prompt.ram_path")
            self.dape_path = _existing_file(dape_path, "prompt.dape_path") if dape_path else None
        else:
            self.model_path = resolve_pretrained(model, "image tagger", "prompt.model")
        self.processor = None

    def settings(self) -> dict:
        files = [p for p in (self.ram_path, self.dape_path) if p is not None]
        return {
            "source": "tags",
            "model": str(self.model_path.resolve()) if self.model_path else None,
            "ram": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
            "top_k": self.top_k,
            "min_score": self.min_score,
            "image_size": self.image_size,
        }

    def load_model(self) -> nn.Module:
        if self.ram_path is not None:
            return self._load_ram()
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        try:
            self.processor = AutoImageProcessor.from_pretrained(self.model_path)
            return AutoModelForImageClassification.from_pretrained(self.model_path)
        except (OSError, ValueError, KeyError) as err:
            raise ZoomSRError(f"cannot load the tagger from '{self.model_path}': {err}") from err

    def _load_ram(self) -> nn.Module:
        try:
            if self.dape_path is not None:
                from ram.models.ram_lora import ram
            else:
                from ram.models import ram
        except ImportError as err:
            raise ZoomSRError(
                "RAM/DAPE tags need the `ram` package of the recognize-anything repository "
                "(github.com/xinyu1205/recognize-anything; DAPE: the ram folder of the "
                "SeeSR/OSEDiff repositories) on PYTHONPATH, or leave prompt.ram_path=null to "
                f"tag with a transformers classifier ({err})."
            ) from err
        extra = {"pretrained_condition": str(self.dape_path)} if self.dape_path else {}
        return ram(pretrained=str(self.ram_path), image_size=self.image_size, vit="swin_l", **extra)

    def describe(self, views: list[torch.Tensor], step: int) -> list[str]:
        view = views[-1]
        net = self.net
        if self.ram_path is not None:
            return self._ram_tags(net, view)
        inputs = self.processor(images=[to_pil(v) for v in view], return_tensors="pt")
        logits = net(**inputs.to(self.device)).logits.float()
        multi = getattr(net.config, "problem_type", None) == "multi_label_classification"
        scores = logits.sigmoid() if multi else logits.softmax(-1)
        top = scores.topk(min(self.top_k, scores.shape[-1]), dim=-1)
        prompts = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist()):
            labels = [
                clean_label(net.config.id2label[i])
                for v, i in zip(values, indices)
                if v >= self.min_score
            ]
            prompts.append(", ".join(dict.fromkeys(labels)))  # unique, best first
        return prompts

    def _ram_tags(self, net: nn.Module, view: torch.Tensor) -> list[str]:
        """RAM's input as CoZ prepares it: 384x384, ImageNet-normalized; tags ``a | b``."""
        from ram import inference_ram

        x = F.interpolate(view.float(), size=(self.image_size,) * 2, mode="bicubic").clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        prompts = []
        for image in (x - mean) / std:
            tags = inference_ram(image[None], net)[0]
            prompts.append(", ".join(t.strip() for t in tags.split("|") if t.strip()))
        return prompts


def _existing_file(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ZoomSRError(f"{key}: file not found: '{p}'.")
    return p
