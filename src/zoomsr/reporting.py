"""Evaluation reports: per-image rows (JSONL, CSV), metrics.json, a Markdown table, a plot."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path


class ResultLog:
    """Per-image results appended as JSON lines as they are computed, so an interrupted
    evaluation resumes where it stopped.

    Each row: ``{"scale": int, "image": str, "<metric>": float, ...}``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            with self.path.open() as f:
                # A line cut short by a kill is dropped; its image is computed again.
                for line in f:
                    try:
                        self.rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        self._done = {(r["scale"], r["image"]) for r in self.rows}

    def done(self, scale: int, image: str) -> bool:
        return (scale, image) in self._done

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._done.add((row["scale"], row["image"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def summarize(rows: list[dict], metrics: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each metric per scale: ``{"x4": {"psnr_y": …, "n_images": N}, …}``.

    Means are over images (per-image PSNR first, then averaged, as the literature does).
    """
    by_scale: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_scale[r["scale"]].append(r)
    out: dict[str, dict[str, float]] = {}
    for scale in sorted(by_scale):
        group = by_scale[scale]
        entry: dict[str, float] = {m: sum(r[m] for r in group) / len(group) for m in metrics}
        entry["n_images"] = len(group)
        out[f"x{scale}"] = entry
    return out


def write_reports(out_dir: Path, rows: list[dict], summary: dict, metrics: list[str]) -> dict:
    """Write metrics.json, per_image.csv, metrics.md and metrics.png; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "metrics.json",
        "csv": out_dir / "per_image.csv",
        "markdown": out_dir / "metrics.md",
        "plot": out_dir / "metrics.png",
    }
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scale", "image", *metrics])
        writer.writeheader()
        for r in sorted(rows, key=lambda r: (r["scale"], r["image"])):
            writer.writerow({k: r[k] for k in ["scale", "image", *metrics]})
    paths["markdown"].write_text(markdown_table(summary, metrics))
    plot_metrics(summary, metrics, paths["plot"])
    return paths


def markdown_table(summary: dict, metrics: list[str]) -> str:
    """A row per scale, a column per metric (PSNR to 2 decimals, others to 4)."""
    lines = [
        "| scale | " + " | ".join(metrics) + " | images |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for scale, entry in summary.items():
        cells = [_fmt(m, entry[m]) for m in metrics]
        lines.append(f"| {scale} | " + " | ".join(cells) + f" | {entry['n_images']} |")
    return "\n".join(lines) + "\n"


def _fmt(metric: str, value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if metric.startswith("psnr") else f"{value:.4f}"


def plot_metrics(summary: dict, metrics: list[str], path: Path) -> Path:
    """One panel per metric against zoom scale (log2 axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [int(k[1:]) for k in summary]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        ax.plot(scales, [summary[f"x{s}"][m] for s in scales], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xticks(scales, [f"x{s}" for s in scales])
        ax.set_xlabel("scale")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
