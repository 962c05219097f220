"""The empty prompt: every image gets ``""`` (CoZ's ``--prompt_type null`` without a prompt)."""

from __future__ import annotations

import torch

from zoomsr.prompts.base import PromptSource, check_views


class NullPrompt(PromptSource):
    """``""`` for every image, whatever the views; no model, no cache."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, views: list[torch.Tensor], step: int = 0, names=None) -> list[str]:
        return [""] * check_views(views)
