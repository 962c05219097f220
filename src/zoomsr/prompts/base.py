"""The prompt-source contract: the views a zoom step can see -> one text per image.

A source is an ``nn.Module`` so the zoom chain's memory modes can move it (and the model inside)
on and off the accelerator like a backbone (``zoomsr.zoom.memory.ModelPlacer``). Calling it
matches the engine's ``PromptFn``: ``source(views, step, names) -> list[str]``, where ``views`` are
``(B, 3, h, w)`` tensors in [0, 1], widest first: one view (``recursive``: the zoomed input) or
two (``recursive_multiscale``: the previous, wider output and the zoomed view; CoZ Sec. 3.2).

Every source also takes the user's own text (``user_text``, or a per-image ``user_file``),
joined to what the model made the way CoZ's ``inference_coz.py`` does: ``"{generated}, {user},"``
(the user text alone when nothing was generated).

Model-backed sources (``uses_model``) load their model lazily, on the first view that is not in
the prompt cache: a run whose prompts are all cached never loads (or moves) the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from zoomsr.data.io import to_uint8
from zoomsr.errors import ZoomSRError
from zoomsr.prompts.cache import PromptCache, view_key

log = logging.getLogger("zoomsr")

#: CoZ's instruction for one view (``rec_type=recursive``).
SINGLE_VIEW_INSTRUCTION = "What is in this image? Give me a set of words."
#: CoZ's instruction for two views (``rec_type=recursive_multiscale``): wider view, then zoom.
MULTI_VIEW_INSTRUCTION = (
    "The second image is a zoom-in of the first image. Based on this knowledge, what is in "
    "the second image? Give me a set of words."
)


def combine_prompt(generated: str, user: str | None) -> str:
    """CoZ's join of a generated prompt and the user's text: ``"{generated}, {user},"``."""
    generated, user = generated.strip(), (user or "").strip()
    if generated and user:
        return f"{generated}, {user},"
    return generated or user


def to_pil(image: torch.Tensor) -> Image.Image:
    """``(3, h, w)`` in [0, 1] -> 8-bit RGB PIL image (the pixels the cache key hashes)."""
    return Image.fromarray(to_uint8(image.detach().float()).permute(1, 2, 0).cpu().numpy())


def check_views(views: Sequence[torch.Tensor]) -> int:
    """The batch size of ``views``; a clear error for anything but 1 or 2 ``(B, 3, h, w)``."""
    if not 1 <= len(views) <= 2:
        raise ZoomSRError(f"a prompt source takes 1 or 2 views per image, got {len(views)}.")
    sizes = {v.shape[0] for v in views}
    if any(v.ndim != 4 or v.shape[1] != 3 for v in views) or len(sizes) != 1:
        shapes = [tuple(v.shape) for v in views]
        raise ZoomSRError(f"prompt views must be (B, 3, h, w) with one B, got {shapes}.")
    return sizes.pop()


class UserText:
    """The user's text: one ``text`` for every image, or per image from ``file``.

    Args:
        text: used for every image (and for images the file does not name).
        file: a JSON object ``{"<image name or stem>": "text", ...}``, or a folder of
            ``<stem>.txt`` files.
    """

    def __init__(self, text: str | None = None, file: str | None = None) -> None:
        self.text, self.mapping = text, {}
        if file:
            self.mapping = self._read(Path(file).expanduser())
        self._warned = False

    @staticmethod
    def _read(path: Path) -> dict[str, str]:
        if path.is_dir():
            return {p.stem: p.read_text(encoding="utf-8").strip() for p in path.glob("*.txt")}
        if not path.is_file():
            raise ZoomSRError(
                f"prompt file not found: '{path}'. Give a JSON file {{name: text}} or a folder "
                "of <name>.txt files (prompt.user_file=...)."
            )
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ZoomSRError(f"prompt file '{path}' is not valid JSON: {err}") from err
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ZoomSRError(f"prompt file '{path}' must hold one JSON object {{name: text}}.")
        by_stem = {Path(k).stem: v for k, v in mapping.items()}  # "a.png" also answers "a"
        return by_stem | mapping

    def for_names(self, names: Sequence[str] | None, n: int) -> list[str | None]:
        """The text of each of ``n`` images (``names`` may be None: the fixed text)."""
        if not self.mapping or names is None:
            return [self.text] * n
        texts = []
        for name in names:
            text = self.mapping.get(name, self.mapping.get(Path(name).stem))
            if text is None and not self._warned:
                log.warning("no prompt for image '%s' in the prompt file: using user_text", name)
                self._warned = True
            texts.append(self.text if text is None else text)
        return texts


class PromptSource(nn.Module):
    """Base of every prompt source. Subclasses implement :meth:`describe`; model-backed ones
    set ``uses_model = True``, :meth:`settings` and load their model in :meth:`load_model`.

    Args:
        user_text: the user's text, joined after the generated prompt (CoZ's ``--prompt``).
        user_file: per-image user text (see :class:`UserText`).
        cache: JSONL file of generated prompts (model-backed sources only); None: no cache.
    """

    #: True when a model makes the prompts: they are cached and the model is loaded lazily.
    uses_model: bool = False

    def __init__(
        self, user_text: str | None = None, user_file: str | None = None, cache: str | None = None
    ) -> None:
        super().__init__()
        self.user = UserText(user_text, user_file)
        self.cache = PromptCache(cache) if cache and self.uses_model else None
        # An empty buffer that follows .to(): a lazily loaded model goes where the source is.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.model_calls = 0  # images the model described (cache misses)
        self._net: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def settings(self) -> dict:
        """What determines the generated text (the cache key's settings part)."""
        return {"source": type(self).__name__}

    def load_model(self) -> nn.Module:
        """Build the model (model-backed sources); called once, on the first cache miss."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> PromptSource:
        """Stays in eval mode (no dropout) even inside a module Lightning puts in training."""
        return super().train(False)

    @property
    def net(self) -> nn.Module:
        """The model, loaded on first use onto the source's device, frozen, in eval mode."""
        if self._net is None:
            self._net = self.load_model().to(self.device).eval().requires_grad_(False)
        return self._net

    def describe(self, views: list[torch.Tensor], step: int) -> list[str]:
        """The generated text of each image (no user text), ``views`` as in :meth:`forward`."""
        return [""] * views[0].shape[0]

    def forward(
        self, views: list[torch.Tensor], step: int = 0, names: Sequence[str] | None = None
    ) -> list[str]:
        """One prompt per image.

        Args:
            views: 1 or 2 tensors ``(B, 3, h, w)`` in [0, 1], widest first.
            step: the zoom step (1-based in a chain; 0 outside one).
            names: the images' names, for the per-image user file (None: ``user_text``).

        Returns:
            ``B`` strings.
        """
        n = check_views(views)
        generated = self._generated(views, step) if self.uses_model else self.describe(views, step)
        user = self.user.for_names(names, n)
        return [combine_prompt(g, u) for g, u in zip(generated, user)]

    def _generated(self, views: list[torch.Tensor], step: int) -> list[str]:
        """Cached texts where the cache has them; the model describes the rest in one call."""
        n = views[0].shape[0]
        if self.cache is None:
            keys, texts = [None] * n, [None] * n
        else:
            settings = self.settings()
            keys = [view_key(settings, [v[i] for v in views]) for i in range(n)]
            texts = [self.cache.get(k) for k in keys]
        missing = [i for i, t in enumerate(texts) if t is None]
        if missing:
            index = torch.tensor(missing, device=views[0].device)
            with torch.no_grad():
                made = self.describe([v.index_select(0, index) for v in views], step)
            self.model_calls += len(missing)
            for i, text in zip(missing, made):
                texts[i] = " ".join(text.split())  # one line, single spaces
                if self.cache is not None:
                    self.cache.put(keys[i], texts[i], type(self).__name__)
        return texts
