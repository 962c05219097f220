"""``evaluate.py``: benchmark protocol (single-step SR at each scale, Y-PSNR/SSIM, shave s).

Writes, as it goes, ``results.jsonl`` (one row per image and scale; a rerun skips rows already
there), then ``metrics.json``, ``per_image.csv``, ``metrics.md``, ``metrics.png`` and the same
numbers to the configured loggers (W&B offline by default).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from zoomsr.backbones.base import Backbone
from zoomsr.data.io import quantize
from zoomsr.errors import ZoomSRError
from zoomsr.metrics.suite import MetricSuite
from zoomsr.reporting import ResultLog, summarize, write_reports
from zoomsr.tasks.common import (
    build_loggers,
    close_wandb,
    output_dir,
    resolve_device,
    set_offline_defaults,
)

log = logging.getLogger("zoomsr")

PROTOCOLS = ("benchmark",)


def backbone_factory(cfg: DictConfig, device: torch.device) -> Callable[[int], Backbone]:
    """A function ``scale -> backbone``. Non-learned backbones are built at every scale; a
    trained one (``ckpt=``) exists at its own scale only."""
    if cfg.get("ckpt"):
        from zoomsr.checkpoint import load_backbone

        backbone = load_backbone(cfg.ckpt, device=device)

        def trained(scale: int) -> Backbone:
            if scale != backbone.scale:
                raise ZoomSRError(
                    f"the checkpoint '{cfg.ckpt}' is a x{backbone.scale} model; "
                    f"scales={list(cfg.scales)} asks for x{scale}. Use scales=[{backbone.scale}]."
                )
            return backbone

        return trained

    def baseline(scale: int) -> Backbone:
        net = instantiate(cfg.backbone, scale=scale)
        if net.is_learned:
            raise ZoomSRError(
                f"backbone={type(net).__name__} is learned: evaluate a trained checkpoint with "
                "ckpt=runs/<run>/checkpoints/last.ckpt (or use backbone=bicubic / nearest)."
            )
        return net.to(device).eval()

    return baseline


def _upscale(backbone: Backbone, lr: torch.Tensor) -> torch.Tensor:
    """Run one step; a gray image goes through a learned RGB model as RGB and comes back gray."""
    if lr.shape[1] == 1 and backbone.is_learned:
        return backbone.upscale(lr.expand(-1, 3, -1, -1)).mean(1, keepdim=True)
    return backbone.upscale(lr)


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.backbone`` (or ``cfg.ckpt``) on ``cfg.data`` at ``cfg.scales``.

    Returns:
        ``{"x2": {"psnr_y": …, "ssim_y": …, "n_images": N}, …}``, as in ``metrics.json``.
    """
    set_offline_defaults()
    if cfg.protocol not in PROTOCOLS:
        raise ZoomSRError(f"unknown protocol '{cfg.protocol}'; available: {list(PROTOCOLS)}.")
    suite = MetricSuite(list(cfg.metrics))
    scales = [int(s) for s in cfg.scales]
    if not scales or min(scales) < 1:
        raise ZoomSRError(f"scales must be a list of integers >= 1, got {scales}.")
    out = output_dir(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = instantiate(cfg.data)
    rows = benchmark(backbone_factory(cfg, device), data, scales, suite, out, device)
    summary = summarize(rows, suite.names)
    paths = write_reports(out, rows, summary, suite.names)
    _log_to_loggers(cfg, out, summary, rows, suite.names)
    log.info("metrics:\n%s", paths["markdown"].read_text())
    print(f"[zoomsr] results in {out} (metrics.json, per_image.csv, metrics.md, metrics.png)")
    return summary


def benchmark(
    make_backbone: Callable[[int], Backbone],
    data,
    scales: list[int],
    suite: MetricSuite,
    out: Path,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """The benchmark protocol: per scale, upscale each LR of ``data.benchmark_dataset(scale)``
    once, round to 8 bits, compare with its HR (``scale`` pixels shaved).

    Rows are appended to ``out/results.jsonl`` as they are computed; images already there are
    skipped, so an interrupted evaluation resumes. Returns the rows of ``scales``.
    """
    results = ResultLog(out / "results.jsonl")
    for scale in scales:
        dataset = data.benchmark_dataset(scale)
        todo = [i for i, f in enumerate(dataset.files) if not results.done(scale, f.stem)]
        if not todo:
            continue
        backbone = make_backbone(scale).to(device)
        for i in tqdm(todo, desc=f"x{scale}", unit="img", dynamic_ncols=True):
            item = dataset[i]
            lr, hr = item["lr"][None].to(device), item["hr"][None].to(device)
            with torch.no_grad():
                # Outputs are rounded to 8 bits, as when saved to PNG for the published tables.
                sr = quantize(_upscale(backbone, lr))
            values = suite(sr, hr, shave=scale)
            row = {"scale": scale, "image": item["name"]}
            results.add(row | {k: v[0] for k, v in values.items()})
    return [r for r in results.rows if r["scale"] in scales]


def _log_to_loggers(cfg: DictConfig, out, summary: dict, rows: list[dict], metrics: list[str]):
    loggers = build_loggers(cfg, out)
    flat = {f"eval/{scale}/{m}": v for scale, entry in summary.items() for m, v in entry.items()}
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        lg.log_metrics(flat)
        if hasattr(lg, "log_table"):
            lg.log_table(
                key="eval/per_image",
                columns=["scale", "image", *metrics],
                data=[[r["scale"], r["image"], *(r[m] for m in metrics)] for r in rows],
            )
        lg.finalize("success")
    close_wandb(loggers)
