"""``evaluate.py``: metrics per zoom scale with one of the protocols of
:mod:`zoomsr.tasks.protocols` (``benchmark``, ``zoom_full``, ``zoom_center``, ``paired``).

Writes, as it goes, ``results.jsonl`` (one row per image and scale; a rerun skips rows already
there) and ``features/`` (FID features per image), then ``metrics.json``, ``per_image.csv``,
``metrics.md``, ``metrics.png`` and the same numbers to the configured loggers (W&B offline by
default: a table per scale, each metric against scale, the best and worst images).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from zoomsr import runfolder
from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError
from zoomsr.metrics.suite import LOWER_IS_BETTER, MetricSuite, suite_from_config
from zoomsr.prompts import build_prompt_source
from zoomsr.reporting import scale_entries, summarize, with_images, write_reports
from zoomsr.tasks import distributed, preflight
from zoomsr.tasks.common import (
    build_loggers,
    close_wandb,
    output_dir,
    resolve_device,
    set_offline_defaults,
)
from zoomsr.tasks.protocols import Benchmark, EvalContext, set_metrics
from zoomsr.zoom.engine import Engine, build_engine, needs_backbone

log = logging.getLogger("zoomsr")


def backbone_factory(
    cfg: DictConfig,
    device: torch.device,
    trained: Backbone | None = None,
    scales: list[int] | None = None,
) -> Callable[[int], Backbone]:
    """A function ``scale -> backbone``. Non-learned backbones are built at every scale; a
    trained one (``ckpt=``, or ``trained`` when already loaded) exists at its own scale only."""
    if cfg.get("ckpt") or trained is not None:
        from zoomsr.checkpoint import load_backbone

        backbone = trained if trained is not None else load_backbone(cfg.ckpt, device=device)
        asked = scales if scales is not None else list(cfg.scales or [])

        def trained_at(scale: int) -> Backbone:
            if scale != backbone.scale:
                raise ZoomSRError(
                    f"the checkpoint '{cfg.ckpt}' is a x{backbone.scale} model; "
                    f"scales={asked} asks for x{scale}. Use scales=[{backbone.scale}] "
                    "(or leave scales out: a checkpoint's own scale is the default)."
                )
            return backbone

        return trained_at

    def baseline(scale: int) -> Backbone:
        net = instantiate(cfg.backbone, scale=scale)
        if net.is_learned:
            raise ZoomSRError(
                f"backbone={type(net).__name__} is learned: evaluate a trained checkpoint with "
                "ckpt=runs/<run>/checkpoints/last.ckpt (or use backbone=bicubic / nearest)."
            )
        return net.to(device).eval()

    return baseline


def engine_factory(
    cfg: DictConfig, device: torch.device, trained: Backbone | None, scales: list[int]
) -> Callable[..., Engine]:
    """A function ``(scale, **overrides) -> engine``: the ``zoom`` group's engine on the
    backbone of that step factor and the ``prompt`` source (built once)."""
    make_backbone = backbone_factory(cfg, device, trained, scales)
    prompt_source = build_prompt_source(cfg.get("prompt"))
    model = needs_backbone(cfg.zoom)

    def make(scale: int, **overrides) -> Engine:
        backbone = make_backbone(scale) if model else None
        return build_engine(cfg.zoom, backbone, prompt_source, device, **overrides)

    return make


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.backbone`` (or ``cfg.ckpt``) on ``cfg.data`` at ``cfg.scales`` with
    ``cfg.protocol`` (``benchmark`` | ``zoom_full`` | ``zoom_center`` | ``paired``).

    Returns:
        ``{"x4": {"psnr_y": …, "fid": …, "n_images": N, "images": {name: {...}}}, …}``, as
        in ``metrics.json``.
    """
    set_offline_defaults()
    preflight.check_values(cfg, "evaluate")  # scales, scale, protocol values (i11)
    device = resolve_device(cfg.device)
    # Metric names and weight files first: a missing file fails here, in milliseconds.
    suite = suite_from_config(cfg.metrics, device)
    protocol = instantiate(cfg.protocol)
    out = output_dir(cfg)
    with runfolder.open_run(  # lock + fingerprint of the job (i11)
        out, runfolder.evaluate_job(cfg), bool(cfg.get("overwrite")), has_results(out)
    ) as redo:
        if redo:
            runfolder.remove_outputs(out, EVAL_OUTPUTS)
        return _evaluate(cfg, device, suite, protocol, out)


#: what an evaluation writes into its folder (removed by ``overwrite=true``)
EVAL_OUTPUTS = ("results.jsonl", "features", "panels", "images", "metrics.json",
                "per_image.csv", "metrics.md", "metrics.png")  # fmt: skip


def has_results(out: Path) -> bool:
    return (out / "results.jsonl").exists() or (out / "metrics.json").exists()


def _evaluate(cfg: DictConfig, device, suite: MetricSuite, protocol, out: Path) -> dict:
    shard = distributed.begin(cfg, out, device)  # devices=N: this rank's share (else None)
    failed = True
    try:
        ctx = _context(cfg, shard.device(device) if shard else device, suite, out, shard)
        rows = distributed.gather_rows(shard, out, protocol.run(ctx))  # None on ranks > 0
        failed = False
    finally:
        distributed.end(shard, failed)
    if rows is None:
        return {}  # rank 0 writes the summary
    summary = summarize(rows, suite.names)
    for scale, values in set_metrics(ctx, rows).items():
        summary[f"x{scale}"].update(values)
    for entry in summary.values():  # the engine's colour fix of every output (zoom.align)
        entry["align"] = str(cfg.zoom.get("align", "none"))
    columns = suite.names + suite.set_names
    result = json.loads(json.dumps(with_images(summary, rows, suite.names)))
    result["suite"] = suite.conventions(cfg.get("align"))  # how every number was computed
    paths = write_reports(out, rows, result, columns)
    result = json.loads(paths["json"].read_text())  # NaN -> None, exactly as saved
    _log_to_loggers(cfg, out, result, rows, columns)
    log.info("metrics:\n%s", paths["markdown"].read_text())
    print(f"[zoomsr] results in {out} (metrics.json, per_image.csv, metrics.md, metrics.png)")
    return result


def _context(cfg: DictConfig, device, suite: MetricSuite, out: Path, shard) -> EvalContext:
    torch.manual_seed(cfg.seed)
    suite.device = device  # metric networks are built on first use, on this rank's device
    data = instantiate(cfg.data)
    trained = None
    if cfg.get("ckpt"):
        from zoomsr.checkpoint import load_backbone

        trained = load_backbone(cfg.ckpt, device=device)
    scales = preflight.default_scales(cfg, trained, data)
    return EvalContext(
        engine_factory(cfg, device, trained, scales),
        data,
        scales,
        suite,
        out,
        device,
        batch_size=int(cfg.get("batch_size", 8)),
        save_images=bool(cfg.get("save_images", False)),
        shard=shard,
    )


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

    def make_engine(scale: int, **overrides) -> Engine:
        zoom = {"_target_": "zoomsr.zoom.full.FullImageEngine"}
        return build_engine(zoom, make_backbone(scale), None, device, **overrides)

    return Benchmark().run(EvalContext(make_engine, data, scales, suite, out, device))


def _log_to_loggers(cfg: DictConfig, out: Path, summary: dict, rows: list[dict], metrics: list):
    """Scalars ``eval/x{s}/{metric}`` to every logger; to W&B also a table per scale, a line
    plot of each metric against scale and panels of the best and worst images."""
    loggers = build_loggers(cfg, out)
    flat = {
        f"eval/{scale}/{m}": v
        for scale, entry in scale_entries(summary).items()
        for m, v in entry.items()
        if isinstance(v, int | float)  # not the images, not a setting (align)
    }
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        lg.log_metrics(flat)
        if type(lg).__name__ == "WandbLogger":
            _wandb_panels(lg, out, summary, rows, [m for m in metrics if m != "fid"], metrics)
        lg.finalize("success")
    close_wandb(loggers)


def _wandb_panels(lg, out: Path, summary: dict, rows: list[dict], image_metrics, metrics):
    import wandb

    scales = sorted(int(k[1:]) for k in scale_entries(summary))
    for s in scales:
        group = [r for r in rows if r["scale"] == s]
        lg.log_table(
            key=f"eval/x{s}/per_image",
            columns=["image", *image_metrics],
            data=[[r["image"], *(r.get(m) for m in image_metrics)] for r in group],
        )
    by_scale = wandb.Table(
        columns=["scale", *metrics],
        data=[[s, *(summary[f"x{s}"].get(m) for m in metrics)] for s in scales],
    )
    plots = {f"eval/plot/{m}": wandb.plot.line(by_scale, "scale", m, title=f"{m} vs scale")
             for m in metrics}  # fmt: skip
    lg.experiment.log({"eval/by_scale": by_scale, **plots})
    if image_metrics:
        lg.experiment.log(_best_worst(out, rows, image_metrics[0], scales))


def _best_worst(out: Path, rows: list[dict], metric: str, scales: list[int]) -> dict:
    """``eval/x{s}/best`` and ``worst``: the SR | HR panels of the extreme images by ``metric``."""
    import wandb

    images = {}
    for s in scales:
        scored = [r for r in rows if r["scale"] == s and r.get(metric) is not None]
        if not scored:
            continue
        scored.sort(key=lambda r: r[metric], reverse=metric not in LOWER_IS_BETTER)
        for tag, r in (("best", scored[0]), ("worst", scored[-1])):
            panel = out / "panels" / f"x{s}" / f"{r['image']}.png"
            if panel.is_file():
                caption = f"{r['image']}: {metric} {r[metric]:.4g} (SR | HR)"
                images[f"eval/x{s}/{tag}"] = wandb.Image(str(panel), caption=caption)
    return images
