"""Metrics selected by name (``metrics=[psnr_y, ssim_y, lpips, fid, niqe]``), batched.

Three kinds:

- full-reference, per image (``sr`` vs ``hr``): ``psnr_y``, ``ssim_y``, ``psnr``, ``ssim``
  (:mod:`zoomsr.metrics.fidelity`, the literature's MATLAB conventions), ``lpips`` (AlexNet),
  ``lpips_vgg`` (the ``lpips`` package);
- no-reference, per image (``sr`` alone): ``niqe``, ``musiq``, ``maniqa``, ``clipiqa`` (pyiqa);
- set-level: ``fid`` (torch-fidelity's Inception features, one distance per scale).

Weight files are checked when the suite is made (milliseconds, no import of the libraries); the
networks are built on the evaluation device the first time they are used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from zoomsr.errors import ZoomSRError
from zoomsr.metrics.fidelity import psnr, ssim
from zoomsr.metrics.weights import check_weights

MetricFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

#: name -> fn(sr, hr, shave) -> (B,) values. ``_y`` compares the BT.601 luma (the literature's
#: convention); without it, all RGB channels. Gray images are always compared as they are.
FULL_REFERENCE: dict[str, MetricFn] = {
    "psnr_y": lambda sr, hr, shave: psnr(sr, hr, shave=shave, y_channel=True),
    "ssim_y": lambda sr, hr, shave: ssim(sr, hr, shave=shave, y_channel=True),
    "psnr": lambda sr, hr, shave: psnr(sr, hr, shave=shave, y_channel=False),
    "ssim": lambda sr, hr, shave: ssim(sr, hr, shave=shave, y_channel=False),
}
LEARNED_FULL_REFERENCE = ("lpips", "lpips_vgg")
NO_REFERENCE = ("niqe", "musiq", "maniqa", "clipiqa")
SET_METRICS = ("fid",)
ALL_METRICS = (*FULL_REFERENCE, *LEARNED_FULL_REFERENCE, *NO_REFERENCE, *SET_METRICS)

#: metrics where a smaller value is better (the rest: larger is better)
LOWER_IS_BETTER = frozenset({"lpips", "lpips_vgg", "niqe", "fid"})


def build_metric(name: str, device: torch.device | str = "cpu") -> nn.Module:
    """The network-backed metric ``name`` with its published weights, on ``device``."""
    if name in LEARNED_FULL_REFERENCE:
        from zoomsr.metrics.perceptual import LPIPS

        return LPIPS("alex" if name == "lpips" else "vgg").to(device)
    if name in NO_REFERENCE:
        from zoomsr.metrics.no_reference import NoReference

        return NoReference(name, device=device)
    from zoomsr.metrics.fid import FID

    return FID().to(device)


def _shave(img: torch.Tensor, shave: int) -> torch.Tensor:
    return img[..., shave : img.shape[-2] - shave, shave : img.shape[-1] - shave] if shave else img


class MetricSuite:
    """The metrics of one evaluation, checked by name (and weight files) before any work starts.

    Args:
        names: metric names, e.g. ``["psnr_y", "ssim_y", "lpips", "fid"]``.
        device: where the learned metrics run (default CPU).
        models: ready metric modules by name, used instead of building them (tests inject
            ones with tiny random networks); their weights are not checked.
    """

    def __init__(
        self,
        names: list[str],
        device: torch.device | str = "cpu",
        models: dict[str, nn.Module] | None = None,
    ) -> None:
        names = list(names)
        unknown = [n for n in names if n not in ALL_METRICS]
        if unknown:
            raise ZoomSRError(
                f"unknown metric(s) {unknown}; available: {sorted(ALL_METRICS)}. "
                "Example: metrics=[psnr_y,ssim_y,lpips]"
            )
        if not names:
            raise ZoomSRError("metrics is empty; example: metrics=[psnr_y,ssim_y]")
        self.models: dict[str, nn.Module] = dict(models or {})
        check_weights([n for n in names if n not in FULL_REFERENCE and n not in self.models])
        self.device = torch.device(device)
        #: per-image metrics, in the order given; set metrics (FID) are in ``set_names``
        self.names = [n for n in names if n not in SET_METRICS]
        self.set_names = [n for n in names if n in SET_METRICS]
        self.full_reference = [n for n in self.names if n not in NO_REFERENCE]
        self.no_reference = [n for n in self.names if n in NO_REFERENCE]

    def model(self, name: str) -> nn.Module:
        """The metric module of ``name``, built on first use."""
        if name not in self.models:
            self.models[name] = build_metric(name, self.device)
        return self.models[name]

    @torch.no_grad()
    def __call__(
        self, sr: torch.Tensor, hr: torch.Tensor | None, shave: int = 0
    ) -> dict[str, list[float]]:
        """Per-image values of each metric.

        Args:
            sr: ``(B, C, H, W)`` in [0, 1].
            hr: ``(B, C, H, W)`` in [0, 1], or None where there is no reference: then only the
                no-reference metrics are computed.
            shave: border pixels left out of the full-reference comparison.

        Returns:
            ``{name: [B floats]}``.
        """
        out: dict[str, list[float]] = {}
        for name in self.full_reference if hr is not None else []:
            if name in FULL_REFERENCE:
                values = FULL_REFERENCE[name](sr, hr, shave)
            else:
                values = self.model(name)(_shave(sr, shave), _shave(hr, shave))
            out[name] = values.double().tolist()
        for name in self.no_reference:
            out[name] = self.model(name)(sr).double().tolist()
        return out

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Set-metric features of ``(B, C, H, W)`` images in [0, 1]: ``{"fid": (B, D)}``."""
        return {name: self.model(name).features(images) for name in self.set_names}

    def distance(self, name: str, a: torch.Tensor, b: torch.Tensor) -> float:
        """The set metric ``name`` between two feature sets."""
        from zoomsr.metrics.fid import FID

        return FID.distance(a, b)
