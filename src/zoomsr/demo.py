"""``python -m zoomsr.demo`` (what ``make demo`` runs): the CPU quickstart, end to end.

1. Compose ``conf/train.yaml`` with ``experiment=quickstart`` and any ``key=value`` overrides
   given on the command line (``python -m zoomsr.demo trainer.max_steps=50``).
2. Train it (:func:`zoomsr.tasks.train.run`): a small SR3 on scikit-image's bundled photos
   (:mod:`zoomsr.data.photos`), validated on the held-out ones, logged to W&B offline and CSV.
3. Evaluate with the benchmark protocol (:func:`zoomsr.tasks.evaluate.benchmark`: whole images,
   MATLAB-bicubic LR, outputs rounded to 8 bits, Y channel, ``scale`` pixels shaved) on the
   held-out photos: the trained SR3 (EMA weights of ``last.ckpt``), bicubic, and the same SR3
   untrained (the initial weights of the run, rebuilt from the same seed).
4. Write into one folder, ``runs/demo/<time>/`` unless ``--out DIR`` or ``$ZOOMSR_DEMO_DIR``:

   - ``metrics.json``: ``{"sr3": {"x4": {"psnr_y", "ssim_y", "n_images"}}, "bicubic": {...},
     "untrained": {...}, "meta": {"scale", "images", "checkpoint", "wandb_run", "train_seconds",
     "eval_seconds", "overrides"}}``;
   - ``per_image.csv`` (method, image, metrics), ``comparison.md`` (a row per method, with the
     difference to bicubic), ``comparison.png`` (bars per method);
   - ``samples.png``: LR | bicubic | SR3 | HR on centre crops of the held-out photos;
   - ``train/``: the training run (``checkpoints/last.ckpt``, ``config.yaml``, ``csv/``,
     ``wandb/offline-run-*``, which also receives the evaluation numbers and the grid);
   - ``eval/<method>/results.jsonl``: the benchmark's per-image rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from zoomsr.backbones.base import Backbone
from zoomsr.backbones.interp import Bicubic
from zoomsr.checkpoint import load_backbone
from zoomsr.data.bicubic import BicubicDegradation
from zoomsr.data.datasets import center_crop, modcrop
from zoomsr.data.io import quantize
from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.metrics.suite import MetricSuite
from zoomsr.reporting import summarize
from zoomsr.tasks import train
from zoomsr.tasks.common import resolve_device, set_offline_defaults
from zoomsr.tasks.evaluate import benchmark

log = logging.getLogger("zoomsr")

METHODS = ("sr3", "bicubic", "untrained")
LABELS = {"sr3": "SR3 (trained, EMA)", "bicubic": "bicubic", "untrained": "SR3 untrained"}
METRICS = ["psnr_y", "ssim_y"]


def find_conf_dir() -> Path:
    """The repository's ``conf/``: next to the source tree (editable install), else in cwd."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "conf" / "train.yaml").is_file():
            return root / "conf"
    raise ZoomSRError(
        "conf/train.yaml not found: run the demo from the zoomsr repository root (make demo)."
    )


def compose_config(overrides: Sequence[str], out: Path | None) -> DictConfig:
    """``train`` + ``experiment=quickstart`` + ``overrides``; the run goes to ``<demo>/train``."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    demo_dir = str(out) if out is not None else "${paths.log_dir}/demo/" + stamp
    with initialize_config_dir(config_dir=str(find_conf_dir()), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=["experiment=quickstart", f"out_dir={demo_dir}/train", *overrides],
        )


def untrained_backbone(cfg: DictConfig) -> Backbone:
    """The network as training started: ``cfg.backbone`` built under the run's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return instantiate(cfg.backbone).eval()


def evaluate_methods(
    backbones: dict[str, Backbone], data, scale: int, out: Path, device: torch.device
) -> tuple[dict[str, dict], list[dict]]:
    """The benchmark protocol for each backbone; returns summaries and per-image rows.

    Rows go to ``out/eval/<name>/results.jsonl``. Rows left there by an earlier run into the
    same folder are removed first: the benchmark would skip their images as already done.
    """
    suite, summaries, rows = MetricSuite(METRICS), {}, []
    for name, net in backbones.items():
        (out / "eval" / name / "results.jsonl").unlink(missing_ok=True)
        log.info("evaluating %s on the held-out photos", name)
        got = benchmark(lambda s, net=net: net, data, [scale], suite, out / "eval" / name, device)
        summaries[name] = summarize(got, suite.names)
        rows += [{"method": name} | r for r in got]
    return summaries, rows


@torch.no_grad()
def sample_grid(
    backbones: dict[str, Backbone], data, scale: int, path: Path, crop: int = 192
) -> Path:
    """LR | bicubic | SR3 | HR on a centre crop of every held-out photo, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, degrade = data.benchmark_dataset(scale), BicubicDegradation(scale)
    sr3 = backbones["sr3"]
    device, multiple = next(sr3.parameters()).device, math.lcm(scale, getattr(sr3, "multiple", 1))
    fig, axes = plt.subplots(len(dataset), 4, figsize=(12, 3.1 * len(dataset)), squeeze=False)
    for row in range(len(dataset)):
        item = dataset[row]
        hr = modcrop(center_crop(item["hr"].expand(3, -1, -1), crop), multiple)[None]
        lr = degrade(hr)
        panels = {
            "LR": torch.nn.functional.interpolate(lr, scale_factor=scale, mode="nearest"),
            "bicubic": quantize(backbones["bicubic"].upscale(lr)),
            "SR3": quantize(sr3.upscale(lr.to(device)).cpu()),
            "HR": hr,
        }
        for col, (title, img) in enumerate(panels.items()):
            ax = axes[row][col]
            ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_title(title if row else f"{title} (x{scale})")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(item["name"])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def comparison_table(summaries: dict[str, dict], scale: int) -> str:
    """Markdown: a row per method, Y-PSNR / SSIM and the Y-PSNR difference to bicubic."""
    key, ref = f"x{scale}", summaries["bicubic"][f"x{scale}"]["psnr_y"]
    lines = [
        f"| method (x{scale}, held-out photos) | Y-PSNR (dB) | SSIM (Y) | vs bicubic (dB) |",
        "|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        entry = summary[key]
        lines.append(
            f"| {LABELS.get(name, name)} | {entry['psnr_y']:.2f} | {entry['ssim_y']:.4f} "
            f"| {entry['psnr_y'] - ref:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(summaries: dict[str, dict], scale: int, path: Path) -> Path:
    """Bars of Y-PSNR and SSIM per method, values printed on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.4))
    for ax, metric in zip(axes, METRICS):
        values = [summaries[n][f"x{scale}"][metric] for n in names]
        bars = ax.bar([LABELS.get(n, n) for n in names], values, color=["C0", "C7", "C3"])
        ax.bar_label(bars, fmt="%.2f" if metric.startswith("psnr") else "%.3f")
        if metric == "psnr_y":  # the quickstart's bar: within 1 dB of bicubic
            bar = summaries["bicubic"][f"x{scale}"][metric] - 1.0
            ax.axhline(bar, color="k", linestyle="--", linewidth=0.8, label="bicubic - 1 dB")
            ax.legend(loc="lower right", fontsize=8)
        ax.margins(y=0.12)
        ax.set_title(f"{metric} at x{scale}, held-out photos")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(
    out: Path, summaries: dict[str, dict], rows: list[dict], meta: dict, scale: int
) -> dict[str, Path]:
    """metrics.json, per_image.csv, comparison.md and comparison.png in ``out``."""
    paths = {
        "metrics": out / "metrics.json",
        "per_image": out / "per_image.csv",
        "table": out / "comparison.md",
        "plot": out / "comparison.png",
    }
    paths["metrics"].write_text(json.dumps(summaries | {"meta": meta}, indent=2) + "\n")
    with paths["per_image"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "scale", "image", *METRICS])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    paths["table"].write_text(comparison_table(summaries, scale))
    plot_comparison(summaries, scale, paths["plot"])
    return paths


def log_to_wandb(
    summaries: dict[str, dict], rows: list[dict], grid: Path, save_dir: Path
) -> str | None:
    """Log the evaluation (summary numbers, per-image table, sample grid) to an offline W&B run
    of its own in ``save_dir`` (training closed its run when it finished).

    Returns the run's offline folder (``.../wandb/offline-run-*``).
    """
    import wandb

    run = wandb.init(
        project="zoomsr",
        name="quickstart-eval",
        job_type="eval",
        dir=str(save_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    run_dir = str(Path(run.dir).parent)
    for name, summary in summaries.items():
        for scale, entry in summary.items():
            for metric in METRICS:
                run.summary[f"eval/{name}/{scale}/{metric}"] = entry[metric]
    table = wandb.Table(columns=["method", "scale", "image", *METRICS])
    for r in rows:
        table.add_data(r["method"], r["scale"], r["image"], *(r[m] for m in METRICS))
    run.log({"eval/per_image": table, "eval/samples": wandb.Image(str(grid))})
    run.finish()
    return run_dir


def run(overrides: Sequence[str] = (), out: str | Path | None = None) -> dict:
    """Train the quickstart, evaluate it against bicubic and its untrained self, report.

    Returns:
        The content of ``metrics.json`` plus ``"paths"`` (every file written, as strings).
    """
    set_offline_defaults()
    os.environ.setdefault("WANDB_MODE", "offline")
    cfg = compose_config(overrides, Path(out) if out is not None else None)
    demo_dir = Path(cfg.out_dir).parent
    start = time.perf_counter()
    result = train.run(cfg)
    train_seconds = time.perf_counter() - start
    if result["last_ckpt"] is None:
        raise ZoomSRError(f"training wrote no checkpoint under {result['out_dir']}.")

    start, device = time.perf_counter(), resolve_device("auto")
    data = instantiate(cfg.data, seed=cfg.seed)
    backbones = {
        "sr3": load_backbone(result["last_ckpt"], device=device),
        "bicubic": Bicubic(cfg.scale),
        "untrained": untrained_backbone(cfg).to(device),
    }
    summaries, rows = evaluate_methods(backbones, data, cfg.scale, demo_dir, device)
    grid = sample_grid(backbones, data, cfg.scale, demo_dir / "samples.png")
    eval_seconds = time.perf_counter() - start

    meta = {
        "scale": int(cfg.scale),
        "images": sorted({r["image"] for r in rows}),
        "checkpoint": result["last_ckpt"],
        # W&B when training logged there too (not with logger=csv)
        "wandb_run": log_to_wandb(summaries, rows, grid, demo_dir)
        if "wandb" in (cfg.get("logger") or {})
        else None,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "overrides": list(overrides),
    }
    paths = write_outputs(demo_dir, summaries, rows, meta, cfg.scale) | {"samples": grid}
    print_summary(demo_dir, summaries, meta, paths)
    return summaries | {"meta": meta, "paths": {k: str(v) for k, v in paths.items()}}


def print_summary(demo_dir: Path, summaries: dict, meta: dict, paths: dict[str, Path]) -> None:
    key = f"x{meta['scale']}"
    print(f"\n[zoomsr demo] x{meta['scale']} on the held-out photos {', '.join(meta['images'])}:")
    for name, summary in summaries.items():
        entry = summary[key]
        print(f"  {LABELS[name]:<20} Y-PSNR {entry['psnr_y']:6.2f} dB   SSIM {entry['ssim_y']:.4f}")
    print(f"  train {meta['train_seconds']:.0f} s, evaluation {meta['eval_seconds']:.0f} s")
    print(f"  results:    {demo_dir}/")
    for name in ("metrics", "table", "plot", "samples"):
        print(f"    {paths[name].name:<16} {paths[name]}")
    print(f"  checkpoint: {meta['checkpoint']}")
    if meta["wandb_run"]:
        print(f"  W&B run:    {meta['wandb_run']}  (upload: wandb sync {meta['wandb_run']})")


@exit_on_user_error
def busy_cores(seconds: float = 1.0) -> float | None:
    """How many cores other work keeps busy now: ``/proc/stat`` sampled over ``seconds``
    (None where there is no ``/proc/stat``)."""

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user nice system idle iowait irq softirq steal

    try:
        total0, idle0 = times()
        time.sleep(seconds)
        total1, idle1 = times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def idle_cores() -> int:
    """Cores not busy with other work right now, at least 1.

    The quickstart's steps are thousands of small ops: on an idle 2-core machine two threads
    train 1.5x faster than one (4.2 vs 2.7 steps/s), but two threads that wait on each other
    at every op ran up to 10x slower while another process held one of the cores. So take what
    is idle at start: sampled from ``/proc/stat`` (the 1-minute load average lags a minute
    behind, e.g. the install that ``make demo`` runs just before), else the load average.
    """
    cores = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except OSError:  # not available on this platform
            busy = 0.0
    return max(1, min(cores, round(cores - busy)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m zoomsr.demo",
        description="Train the CPU quickstart (experiment=quickstart) and compare it with "
        "bicubic on held-out photos. Extra key=value arguments are Hydra overrides.",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("ZOOMSR_DEMO_DIR"),
        help="demo folder (default: $ZOOMSR_DEMO_DIR, else runs/demo/<time>)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("ZOOMSR_THREADS", 0)),
        help="torch intra-op threads; 0 (default, or $ZOOMSR_THREADS): the idle cores",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    threads = args.threads or idle_cores()
    log.info("torch threads: %d", threads)
    torch.set_num_threads(threads)
    run(args.overrides, args.out)


if __name__ == "__main__":
    main()
