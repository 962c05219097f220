"""Converters between zoomsr checkpoints and other projects' released weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoomsr.errors import ZoomSRError


def load_released(path: str | Path, name: str, hint: str = "") -> Any:
    """A released weight file through ``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers, nothing unpickled as code. A missing or unsafe file is one
    :class:`ZoomSRError`; ``name`` says what the file is ("SR3 checkpoint"), ``hint`` follows
    the missing-file line (where the file comes from)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZoomSRError(f"{name} not found: '{path}'{hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with foreign objects, or not a torch file at all
        raise ZoomSRError(f"cannot read '{path}' safely as {name}: {err}") from err


def is_tensor_dict(data: Any) -> bool:
    """True for a flat ``{name: Tensor}`` state dict."""
    return isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values())
