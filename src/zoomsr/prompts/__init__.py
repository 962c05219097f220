"""Prompt sources: the text that conditions each SR step, from the views the step can see.

``none`` (empty, CoZ's null prompt), ``manual`` (the user's text, fixed or per image), ``tags``
(an image tagger),
``vlm`` (a local vision-language model, CoZ's instructions) and ``remote_vlm`` (an
OpenAI-compatible endpoint); prompts of model-backed sources are cached on disk by view
content (:mod:`zoomsr.prompts.cache`). Config group: ``conf/prompt/``.
"""

from __future__ import annotations

from omegaconf import DictConfig

from zoomsr.errors import ZoomSRError
from zoomsr.instantiate import instantiate_user
from zoomsr.prompts.base import (
    MULTI_VIEW_INSTRUCTION,
    SINGLE_VIEW_INSTRUCTION,
    PromptSource,
    combine_prompt,
)
from zoomsr.prompts.cache import PromptCache, view_key

__all__ = [
    "MULTI_VIEW_INSTRUCTION",
    "SINGLE_VIEW_INSTRUCTION",
    "PromptCache",
    "PromptSource",
    "build_prompt_source",
    "combine_prompt",
    "view_key",
]


def build_prompt_source(node: DictConfig | None) -> PromptSource | None:
    """The ``prompt`` group's source (None when unset); its :class:`ZoomSRError` unwrapped."""
    if node is None:
        return None
    source = instantiate_user(node)
    if not isinstance(source, PromptSource):
        raise ZoomSRError(f"prompt._target_ must be a zoomsr PromptSource, got {type(source)}.")
    return source
