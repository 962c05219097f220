"""Memory modes of a chain: every model resident on the device, or only the running one.

``swap`` keeps idle models on the CPU and moves a model to the device just for its call (a
VLM prompt source and an SD3 backbone together exceed one GPU otherwise; CoZ's
``efficient_memory``). ``plain`` moves each model once and leaves it there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

MemoryMode = Literal["plain", "swap"]


def release_memory(device: torch.device | None = None) -> None:
    """Hand freed memory back: collect cycles, empty the CUDA cache (``device`` CUDA or None
    with CUDA up), and on glibc ``malloc_trim(0)`` so the freed CPU heap leaves the process
    (weights of up to 32 MB per tensor live on the heap, not in their own mappings)."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)


class ModelPlacer:
    """Puts models where the memory mode wants them.

    Args:
        device: where models run.
        mode: ``plain`` (all resident) or ``swap`` (CPU when idle).
    """

    def __init__(self, device: torch.device | str, mode: MemoryMode = "plain") -> None:
        if mode not in ("plain", "swap"):
            raise ValueError(f"unknown memory mode '{mode}': plain | swap")
        self.device, self.mode = torch.device(device), mode

    def setup(self, *models: nn.Module | None) -> None:
        """Initial placement: the device (plain) or the CPU (swap)."""
        target = self.device if self.mode == "plain" else torch.device("cpu")
        for model in models:
            if model is not None:
                model.to(target)

    @contextmanager
    def running(self, model: nn.Module | None) -> Iterator[None]:
        """Within the block ``model`` is on the device; in swap mode it goes back to the CPU
        after (and the CUDA cache is emptied so the next model finds the memory free)."""
        if model is None or self.mode == "plain":
            yield
            return
        model.to(self.device)
        try:
            yield
        finally:
            model.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
