"""A metric suite: which metrics, computed how (``conf/metrics/``: ``default``, ``osediff``,
``coz``, ``basicsr``), batched.

Metric names:

- full-reference, per image (``sr`` vs ``hr``): ``psnr``, ``ssim`` (on the suite's
  ``color_space``), ``psnr_y``, ``ssim_y`` (always BT.601 Y), in the suite's ``fidelity`` flavour
  (:mod:`zoomsr.metrics.conventions`: ``matlab``, ``basicsr`` or ``pyiqa``); ``lpips`` (AlexNet),
  ``lpips_vgg`` (the ``lpips`` package); ``dists``, ``topiq_fr`` (pyiqa);
- no-reference, per image (``sr`` alone): ``niqe``, ``musiq``, ``maniqa`` (KonIQ checkpoint),
  ``maniqa_pipal``, ``clipiqa``, ``topiq_nr`` (pyiqa);
- set-level: ``fid``, by torch-fidelity or by pyiqa's clean-fid port (the suite's ``fid``).

The suite also says what happens to an output before it is scored (``align``: the colour fix
against its LR; ``round_8bit``) and which border is cut (``crop_border``); :meth:`conventions`
is what ``metrics.json`` records. Weight files are checked when the suite is made
(milliseconds, no import of the libraries); the networks are built on the evaluation device the
first time they are used.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch
from torch import nn

from zoomsr.data.io import quantize
from zoomsr.errors import ZoomSRError
from zoomsr.metrics import conventions
from zoomsr.metrics.conventions import ColorSpace, Fidelity
from zoomsr.metrics.weights import check_weights

FULL_REFERENCE = ("psnr", "ssim", "psnr_y", "ssim_y")
LEARNED_FULL_REFERENCE = ("lpips", "lpips_vgg", "dists", "topiq_fr")
NO_REFERENCE = ("niqe", "musiq", "maniqa", "maniqa_pipal", "clipiqa", "topiq_nr")
SET_METRICS = ("fid",)
ALL_METRICS = (*FULL_REFERENCE, *LEARNED_FULL_REFERENCE, *NO_REFERENCE, *SET_METRICS)

#: metrics where a smaller value is better (the rest: larger is better)
LOWER_IS_BETTER = frozenset({"lpips", "lpips_vgg", "dists", "niqe", "fid"})

FidImpl = Literal["torch_fidelity", "pyiqa"]
Align = Literal["none", "adain", "wavelet"]

#: what each learned metric is: library, variant, checkpoint (recorded in metrics.json)
VARIANTS: dict[str, str] = {
    "lpips": "lpips package v0.1, AlexNet trunk (alexnet-owt-7be5be79.pth) + its linear heads",
    "lpips_vgg": "lpips package v0.1, VGG16 trunk (vgg16-397923af.pth) + its linear heads",
    "dists": "pyiqa 'dists' (VGG16 vgg16-397923af.pth + DISTS_weights-f5e65c96.pth)",
    "topiq_fr": "pyiqa 'topiq_fr' (CFANet ResNet-50, KADID: cfanet_fr_kadid_res50-2c4cc61d.pth)",
    "niqe": "pyiqa 'niqe' (Y channel, niqe_modelparameters.mat)",
    "musiq": "pyiqa 'musiq' (KonIQ: musiq_koniq_ckpt-e95806b9.pth)",
    "maniqa": "pyiqa 'maniqa' (KonIQ: ckpt_koniq10k.pt)",
    "maniqa_pipal": "pyiqa 'maniqa-pipal' (PIPAL: MANIQA_PIPAL-ae6d356b.pth)",
    "clipiqa": "pyiqa 'clipiqa' (CLIP RN50.pt)",
    "topiq_nr": "pyiqa 'topiq_nr' (CFANet ResNet-50, KonIQ: cfanet_nr_koniq_res50-9a73138b.pth)",
}
FID_NOTES: dict[str, str] = {
    "torch_fidelity": "torch-fidelity FeatureExtractorInceptionV3 (2048 pool), 8-bit input, "
    "TF1 bilinear resize to 299 inside the network, float64 statistics",
    "pyiqa": "pyiqa FID (clean-fid port, mode 'clean'): 8-bit input, per-channel PIL bicubic "
    "float resize to 299x299, (x-128)/128, pt_inception-2015-12-05, numpy mean/cov",
}


def weight_key(name: str, fid: FidImpl = "torch_fidelity") -> str:
    """The :data:`~zoomsr.metrics.weights.METRIC_WEIGHTS` entry metric ``name`` reads."""
    return "fid_pyiqa" if name == "fid" and fid == "pyiqa" else name


def build_metric(
    name: str, device: torch.device | str = "cpu", fid: FidImpl = "torch_fidelity"
) -> nn.Module:
    """The network-backed metric ``name`` with its published weights, on ``device``."""
    if name in ("lpips", "lpips_vgg"):
        from zoomsr.metrics.perceptual import LPIPS

        return LPIPS("alex" if name == "lpips" else "vgg").to(device)
    if name in NO_REFERENCE or name in LEARNED_FULL_REFERENCE:
        from zoomsr.metrics.iqa import PyiqaMetric

        return PyiqaMetric(name, device=device)
    from zoomsr.metrics.fid import FID

    return FID(impl=fid).to(device)


def _shave(img: torch.Tensor, shave: int) -> torch.Tensor:
    return img[..., shave : img.shape[-2] - shave, shave : img.shape[-1] - shave] if shave else img


class MetricSuite:
    """The metrics of one evaluation and the conventions they are computed with, checked by
    name (and weight files) before any work starts. ``conf/metrics/<suite>.yaml`` holds exactly
    these arguments.

    Args:
        names: metric names, e.g. ``["psnr_y", "ssim_y", "lpips", "fid"]``.
        device: where the learned metrics run (default CPU).
        models: ready metric modules by name, used instead of building them (tests inject
            ones with tiny random networks); their weights are not checked.
        name: the suite's name, recorded (``default``, ``osediff``, ...).
        only: keep these of ``names`` (``metrics.only=[psnr,ssim]``); None keeps all.
        fidelity: how PSNR/SSIM are computed: ``matlab`` (default), ``basicsr``, ``pyiqa``.
        color_space: what ``psnr``/``ssim`` compare: ``rgb`` (default), ``ycbcr`` (BT.601 Y),
            ``yiq`` (pyiqa's Y); ``psnr_y``/``ssim_y`` always take BT.601 Y.
        crop_border: pixels cut from every border of full-reference comparisons; None
            (default) takes the protocol's ``shave`` (benchmark: the scale; paired: 0).
        round_8bit: round single-step outputs to 8 bits before scoring (default True, as
            outputs saved to PNG are).
        fid: ``torch_fidelity`` (default) or ``pyiqa`` (clean-fid's resize).
        align: colour fix of a single-step output against its LR before scoring (``adain``,
            ``wavelet``, ``none``; :func:`zoomsr.zoom.color.align_colors`); None (default)
            leaves it to the zoom engine's own ``align`` (recorded as such).
    """

    def __init__(
        self,
        names: list[str],
        device: torch.device | str = "cpu",
        models: dict[str, nn.Module] | None = None,
        name: str = "custom",
        only: list[str] | None = None,
        fidelity: Fidelity = "matlab",
        color_space: ColorSpace = "rgb",
        crop_border: int | None = None,
        round_8bit: bool = True,
        fid: FidImpl = "torch_fidelity",
        align: Align | None = None,
    ) -> None:
        names = list(names)
        unknown = [n for n in names if n not in ALL_METRICS]
        if unknown:
            raise ZoomSRError(
                f"unknown metric(s) {unknown}; available: {sorted(ALL_METRICS)}. "
                "Example: metrics.names=[psnr_y,ssim_y,lpips]"
            )
        if only is not None:
            outside = [n for n in only if n not in names]
            if outside:
                raise ZoomSRError(f"metrics.only={list(only)}: {outside} not in the {name} "
                                  f"suite's metrics {names}.")  # fmt: skip
            names = [n for n in names if n in only]
        if not names:
            raise ZoomSRError("no metrics to compute; example: metrics.names=[psnr_y,ssim_y]")
        self._check_conventions(fidelity, color_space, crop_border, fid, align)
        self.name, self.fidelity, self.color_space = name, fidelity, color_space
        self.crop_border, self.round_8bit, self.fid, self.align = (
            crop_border, round_8bit, fid, align
        )  # fmt: skip
        self.models: dict[str, nn.Module] = dict(models or {})
        learned = [n for n in names if n not in FULL_REFERENCE and n not in self.models]
        check_weights([weight_key(n, fid) for n in learned])
        self.device = torch.device(device)
        #: per-image metrics, in the order given; set metrics (FID) are in ``set_names``
        self.names = [n for n in names if n not in SET_METRICS]
        self.set_names = [n for n in names if n in SET_METRICS]
        self.full_reference = [n for n in self.names if n not in NO_REFERENCE]
        self.no_reference = [n for n in self.names if n in NO_REFERENCE]

    @staticmethod
    def _check_conventions(fidelity, color_space, crop_border, fid, align) -> None:
        choices = {
            "fidelity": (fidelity, conventions.FIDELITIES),
            "color_space": (color_space, conventions.COLOR_SPACES),
            "fid": (fid, tuple(FID_NOTES)),
            "align": (align, (None, "none", "adain", "wavelet")),
        }
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ZoomSRError(f"metrics.{key}={value!r}: choose one of {list(allowed)}.")
        if color_space == "yiq" and fidelity != "pyiqa":
            raise ZoomSRError("metrics.color_space=yiq is pyiqa's; use metrics.fidelity=pyiqa.")
        if crop_border is not None and (not isinstance(crop_border, int) or crop_border < 0):
            raise ZoomSRError(f"metrics.crop_border={crop_border!r}: an integer >= 0, or null.")

    def conventions(self, engine_align: str | None = None) -> dict:
        """Everything that decides the numbers, as metrics.json records it (``engine_align``:
        the zoom engine's colour fix, recorded where the suite leaves it to the engine)."""
        learned = [n for n in self.names if n in VARIANTS]
        return {
            "name": self.name,
            "metrics": self.names + self.set_names,
            "fidelity": self.fidelity,
            "fidelity_conventions": conventions.FIDELITY_NOTES[self.fidelity],
            "color_space": self.color_space,
            "crop_border": "protocol.shave" if self.crop_border is None else self.crop_border,
            "round_8bit": self.round_8bit,
            "align": self.align if self.align is not None else (engine_align or "none"),
            "align_by": "metrics.align" if self.align is not None else "the zoom engine",
            "fid": self.fid if self.set_names else None,
            "fid_conventions": FID_NOTES[self.fid] if self.set_names else None,
            "variants": {n: VARIANTS[n] for n in learned},
        }

    def prepare(self, sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """A single-step output as the suite scores it: colour-fixed against its LR
        (``align``), then rounded to 8 bits (``round_8bit``) or clamped to [0, 1].

        Args:
            sr: ``(B, C, H, W)``; lr: ``(B, C, h, w)``, both in [0, 1].
        """
        if self.align not in (None, "none"):
            from zoomsr.zoom.color import align_colors

            sr = align_colors(sr, lr, self.align)
        return quantize(sr) if self.round_8bit else sr.clamp(0, 1)

    def model(self, name: str) -> nn.Module:
        """The metric module of ``name``, built on first use."""
        if name not in self.models:
            self.models[name] = build_metric(name, self.device, self.fid)
        return self.models[name]

    def _fidelity(self, name: str, sr: torch.Tensor, hr: torch.Tensor, border: int):
        fn = conventions.psnr if name.startswith("psnr") else conventions.ssim
        space = "ycbcr" if name.endswith("_y") else self.color_space
        return fn(sr, hr, border, self.fidelity, space)

    @torch.no_grad()
    def __call__(
        self, sr: torch.Tensor, hr: torch.Tensor | None, shave: int = 0
    ) -> dict[str, list[float]]:
        """Per-image values of each metric.

        Args:
            sr: ``(B, C, H, W)`` in [0, 1].
            hr: ``(B, C, H, W)`` in [0, 1], or None where there is no reference: then only the
                no-reference metrics are computed.
            shave: the protocol's border; the suite's ``crop_border`` replaces it when set.

        Returns:
            ``{name: [B floats]}``.
        """
        border = shave if self.crop_border is None else self.crop_border
        out: dict[str, list[float]] = {}
        for name in self.full_reference if hr is not None else []:
            if name in FULL_REFERENCE:
                values = self._fidelity(name, sr, hr, border)
            else:
                values = self.model(name)(_shave(sr, border), _shave(hr, border))
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
        if name in self.models:  # a FID module: its own implementation's distance
            return self.models[name].set_distance(a, b)
        from zoomsr.metrics.fid import FID, pyiqa_distance

        return pyiqa_distance(a, b) if self.fid == "pyiqa" else FID.distance(a, b)


def suite_from_config(metrics, device: torch.device | str = "cpu") -> MetricSuite:
    """The suite of ``cfg.metrics`` (a ``conf/metrics/`` option) on ``device``."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    if not isinstance(metrics, DictConfig | dict) or "_target_" not in metrics:
        raise ZoomSRError(
            f"metrics={metrics}: metrics is a suite now (default, osediff, coz, basicsr); "
            f"the list goes to metrics.names=[...] (e.g. metrics.names=[psnr_y,ssim_y,lpips])."
        )
    try:
        return instantiate(metrics, device=device)
    except Exception as err:  # Hydra wraps the constructor's error: show the user's one
        if isinstance(err.__cause__, ZoomSRError):
            raise err.__cause__ from None
        raise


def rewrite_bare_metric_list(argv: list[str] | None = None) -> list[str]:
    """``metrics=[a,b]`` (the form before suites) -> ``metrics.names=[a,b]`` in ``argv``
    (default ``sys.argv``, changed in place), with one note on stderr. Hydra would otherwise
    read the list as several options of the ``metrics`` group."""
    args = sys.argv if argv is None else argv
    for i, arg in enumerate(args):
        if arg.startswith("metrics=[") or arg.startswith("+metrics=["):
            args[i] = "metrics.names=" + arg.split("=", 1)[1]
            print(f"zoomsr: '{arg}' read as '{args[i]}' (metrics= now picks a suite: "
                  "default, osediff, coz, basicsr)", file=sys.stderr)  # fmt: skip
    return args
