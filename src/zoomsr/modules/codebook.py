"""Codebook usage of a VQ model during training: why does my codebook collapse?

Per step, from the token maps a backbone reports as ``outputs["codes"]`` (int, any shape):

- ``perplexity``: ``exp(H)`` of the batch's code histogram, ``H = -sum_k p_k log p_k``; equal
  to ``K`` when all codes are used evenly, 1 when a single code is.
- ``dead``: codes not used in the last ``window`` steps (a running record of each code's last
  step of use), the usual symptom of collapse.
- ``used``: the share of the codebook used in this batch.
"""

from __future__ import annotations

import torch


class CodebookUsage:
    """Running codebook statistics for a codebook of ``size`` codes over ``window`` steps."""

    def __init__(self, size: int, window: int = 100) -> None:
        if size < 1 or window < 1:
            raise ValueError(f"codebook size and window must be >= 1, got {size}, {window}")
        self.size, self.window = size, window
        self.last_used = torch.full((size,), -(10**9), dtype=torch.long)
        self.step = 0

    def update(self, codes: torch.Tensor) -> dict[str, float]:
        """Record one step's codes; returns ``perplexity``, ``dead`` and ``used``."""
        counts = torch.bincount(codes.detach().flatten().long().cpu(), minlength=self.size)
        counts = counts[: self.size].double()
        p = counts / counts.sum().clamp_min(1.0)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        self.last_used[counts > 0] = self.step
        dead = int((self.step - self.last_used >= self.window).sum())
        self.step += 1
        return {
            "perplexity": float(entropy.exp()),
            "dead": float(dead),
            "used": float((counts > 0).double().mean()),
        }
