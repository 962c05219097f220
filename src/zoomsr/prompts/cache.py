"""Prompts kept on disk, keyed by what the model saw and how it was asked.

A key is the SHA-256 of the prompt source's settings (model, adapter, instructions, decoding)
and of every view's exact pixels after rounding to 8 bits (the bytes an image file would hold,
with the shape). So the same view under the same settings never reaches the model twice,
across runs, processes and training epochs; any change of model, adapter or instruction misses.

The file is JSON Lines, one ``{"key": ..., "prompt": ..., "source": ...}`` per line, appended
as prompts are made: an interrupted run keeps what it had, and several processes (DDP ranks)
can append to the same file (each record is one ``write`` of one line). A torn last line is
skipped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from zoomsr.data.io import to_uint8
from zoomsr.errors import ZoomSRError

log = logging.getLogger("zoomsr")

#: longest prompt kept (a VLM reply is a sentence or two; CoZ caps generation at 77 tokens)
MAX_PROMPT_CHARS = 4096


def view_key(settings: dict, views: Sequence[torch.Tensor]) -> str:
    """The cache key of one image's views under ``settings``.

    Args:
        settings: JSON-serializable description of the prompt source.
        views: ``(3, h, w)`` tensors in [0, 1] (any device), widest first.

    Returns:
        64 hex digits.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for view in views:
        pixels = to_uint8(view.detach().float()).cpu().contiguous()
        digest.update(f"|{tuple(pixels.shape)}|".encode())
        digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


class PromptCache:
    """A JSONL file of prompts by key, loaded once and appended to.

    Args:
        path: the ``.jsonl`` file (created with its folder on the first write).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise ZoomSRError(f"prompt cache '{self.path}' is a folder: give a .jsonl file path.")
        self._entries: dict[str, str] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                # Plain strings only: a line holding anything else (a mapping, a _target_) is
                # not a prompt this cache wrote; it is skipped, never used or built.
                if not (
                    isinstance(record, dict)
                    and isinstance(record.get("key"), str)
                    and isinstance(record.get("prompt"), str)
                    and len(record["prompt"]) <= MAX_PROMPT_CHARS
                ):
                    log.warning("prompt cache %s: skipping unreadable line %d", self.path, number)
                    continue
                self._entries[record["key"]] = record["prompt"]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, prompt: str, source: str = "") -> None:
        """Remember ``prompt`` under ``key`` and append it to the file."""
        self._entries[key] = prompt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "prompt": prompt, "source": source}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
