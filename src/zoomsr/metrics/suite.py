"""Metrics selected by name (``metrics=[psnr_y, ssim_y]``), computed per image in batches."""

from __future__ import annotations

from collections.abc import Callable

import torch

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.fidelity import psnr, ssim

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

#: name -> fn(sr, hr, shave) -> (B,) values. ``_y`` compares the BT.601 luma (the literature's
#: convention); without it, all RGB channels. Gray images are always compared as they are.
FULL_REFERENCE: dict[str, MetricFn] = {
    "psnr_y": lambda sr, hr, shave: psnr(sr, hr, shave=shave, y_channel=True),
    "ssim_y": lambda sr, hr, shave: ssim(sr, hr, shave=shave, y_channel=True),
    "psnr": lambda sr, hr, shave: psnr(sr, hr, shave=shave, y_channel=False),
    "ssim": lambda sr, hr, shave: ssim(sr, hr, shave=shave, y_channel=False),
}


class MetricSuite:
    """The metrics of one evaluation, checked by name before any work starts.

    Args:
        names: metric names, e.g. ``["psnr_y", "ssim_y"]``.
    """

    def __init__(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in FULL_REFERENCE]
        if unknown:
            raise ZoomSRError(
                f"unknown metric(s) {unknown}; available: {sorted(FULL_REFERENCE)}. "
                "Example: metrics=[psnr_y,ssim_y]"
            )
        if not names:
            raise ZoomSRError("metrics is empty; example: metrics=[psnr_y,ssim_y]")
        self.names = list(names)

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor, shave: int) -> dict[str, list[float]]:
        """``sr``, ``hr``: ``(B, C, H, W)`` in [0, 1] -> per-image values of each metric."""
        return {n: FULL_REFERENCE[n](sr, hr, shave).double().tolist() for n in self.names}
