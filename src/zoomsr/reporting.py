"""Evaluation reports: per-image rows (JSONL, CSV), metrics.json, a Markdown table, plots, and
``zoomsr compare`` (several runs in one table and plot)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


class ResultLog:
    """Per-image results appended as JSON lines as they are computed, so an interrupted
    evaluation resumes where it stopped.

    Each row: ``{"scale": int, "image": str, "<metric>": float | None, ...}`` (None: not
    computed for that image, e.g. no reference at that zoom).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.exists():
            text = self.path.read_text()
            # A line cut short by a kill is dropped (its image is computed again) and removed
            # from the file, so the next row does not get glued to it.
            # A duplicate of an earlier row (two runs appending at once) is dropped too.
            good, seen = [], set()
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                key = _row_key(row)
                if key is None or key in seen:
                    continue
                seen.add(key)
                self.rows.append(row)
                good.append(line)
            if len(good) != len(text.splitlines()) or (text and not text.endswith("\n")):
                self._rewrite(good)
        self._done = {(r["scale"], r["image"]) for r in self.rows}

    def _rewrite(self, lines: list[str]) -> None:
        from zoomsr.runfolder import write_text

        write_text(self.path, "".join(f"{line}\n" for line in lines))

    def keep(self, predicate) -> None:
        """Drop the rows for which ``predicate(row)`` is false (their images are computed
        again), from memory and from the file."""
        kept = [r for r in self.rows if predicate(r)]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._done = {(r["scale"], r["image"]) for r in kept}
            self._rewrite([json.dumps(r) for r in kept])

    def done(self, scale: int, image: str) -> bool:
        return (scale, image) in self._done

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._done.add((row["scale"], row["image"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


def _row_key(row) -> tuple | None:
    """``(scale, image)`` of a well-formed row, None for anything else."""
    if not isinstance(row, dict):
        return None
    scale, image = row.get("scale"), row.get("image")
    if isinstance(scale, bool) or not isinstance(scale, int) or not isinstance(image, str):
        return None
    return scale, image


def _mean(values: list) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


def summarize(rows: list[dict], metrics: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each metric per scale: ``{"x4": {"psnr_y": …, "n_images": N}, …}``.

    Means are over images (per-image PSNR first, then averaged, as the literature does); an
    image without a value for a metric (None) is left out of that metric's mean.
    """
    by_scale: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_scale[r["scale"]].append(r)
    out: dict[str, dict[str, float]] = {}
    for scale in sorted(by_scale):
        group = by_scale[scale]
        entry: dict[str, float] = {m: _mean([r.get(m) for r in group]) for m in metrics}
        entry["n_images"] = len(group)
        out[f"x{scale}"] = entry
    return out


def with_images(summary: dict, rows: list[dict], metrics: list[str]) -> dict:
    """``summary`` with each scale's per-image values under ``"images"`` (metrics.json)."""
    out = {k: dict(v) for k, v in summary.items()}
    for r in sorted(rows, key=lambda r: (r["scale"], r["image"])):
        images = out[f"x{r['scale']}"].setdefault("images", {})
        images[r["image"]] = {m: r.get(m) for m in metrics}
    return out


def scale_entries(summary: dict) -> dict:
    """The per-scale entries (``"x4"``, ...) of a metrics.json, without ``"suite"`` (how the
    numbers were computed) or any other record."""
    return {k: v for k, v in summary.items() if k[:1] == "x" and k[1:].isdigit()}


def _json_safe(obj):
    """NaN / inf -> None so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_reports(out_dir: Path, rows: list[dict], summary: dict, metrics: list[str]) -> dict:
    """Write metrics.json, per_image.csv, metrics.md and metrics.png; return their paths.

    ``metrics`` are the columns (per-image metrics then set metrics such as FID, which appear
    in the summary only).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "metrics.json",
        "csv": out_dir / "per_image.csv",
        "markdown": out_dir / "metrics.md",
        "plot": out_dir / "metrics.png",
    }
    from zoomsr.runfolder import write_text

    write_text(paths["json"], json.dumps(_json_safe(summary), indent=2) + "\n")
    image_metrics = [m for m in metrics if any(m in r for r in rows)]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=["scale", "image", *image_metrics])
    writer.writeheader()
    for r in sorted(rows, key=lambda r: (r["scale"], r["image"])):
        writer.writerow({k: r.get(k) for k in ["scale", "image", *image_metrics]})
    write_text(paths["csv"], buffer.getvalue())
    write_text(paths["markdown"], markdown_table(summary, metrics))
    plot_metrics(summary, metrics, paths["plot"])
    return paths


def markdown_table(summary: dict, metrics: list[str], label: str | None = None) -> str:
    """A row per scale, a column per metric (PSNR to 2 decimals, others to 4).

    With ``label`` a first column names the run (``zoomsr compare`` stacks several)."""
    head = ("| run " if label is not None else "") + "| scale | " + " | ".join(metrics)
    lines = [head + " | images |", "|---" * (len(metrics) + 2 + (label is not None)) + "|"]
    for scale, entry in scale_entries(summary).items():
        cells = [_fmt(m, entry.get(m)) for m in metrics]
        first = f"| {label} " if label is not None else ""
        lines.append(f"{first}| {scale} | " + " | ".join(cells) + f" | {entry['n_images']} |")
    return "\n".join(lines) + "\n"


def _fmt(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if metric.startswith("psnr") or metric == "fid" else f"{value:.4f}"


def plot_metrics(summary: dict, metrics: list[str], path: Path) -> Path:
    """One panel per metric against zoom scale (log2 axis)."""
    return plot_runs({"": summary}, metrics, path)


def plot_runs(runs: dict[str, dict], metrics: list[str], path: Path) -> Path:
    """One panel per metric against zoom scale, one line per run (``{label: summary}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        ax.set_xscale("log", base=2)  # before the ticks: setting the scale resets their labels
        for label, summary in runs.items():
            summary = scale_entries(summary)
            scales = sorted(int(k[1:]) for k in summary)
            values = [summary[f"x{s}"].get(m) for s in scales]
            values = [np.nan if v is None else v for v in values]
            ax.plot(scales, values, marker="o", label=label or None)
            ax.set_xticks(scales, [f"x{s}" for s in scales])
        ax.minorticks_off()
        ax.set_xlabel("scale")
        ax.set_title(m)
        ax.grid(alpha=0.3)
        if any(runs):
            ax.legend(fontsize=7)
    fig.tight_layout()
    from zoomsr.runfolder import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def _run_dirs(paths: list[str]) -> list[Path]:
    """Each path with a metrics.json, or the job folders of a multirun sweep under it."""
    found = []
    for p in map(Path, paths):
        if (p / "metrics.json").is_file():
            found.append(p)
        else:
            jobs = sorted(q.parent for q in p.glob("*/metrics.json"))
            if not jobs:
                from zoomsr.errors import ZoomSRError

                raise ZoomSRError(f"no metrics.json in '{p}' or its sub-folders.")
            found.extend(jobs)
    return found


def run_label(run_dir: Path) -> str:
    """A run's name: its Hydra overrides that pick the model (ckpt, backbone, protocol), else
    the folder name."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        import yaml

        keys = ("ckpt=", "backbone=", "protocol=", "zoom")
        try:
            listed = yaml.safe_load(overrides.read_text())  # plain YAML: tags are refused
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            listed = None
        listed = listed if isinstance(listed, list) else []
        picked = [o for o in listed if isinstance(o, str) and o.startswith(keys)]
        if picked:
            return " ".join(picked)
    return run_dir.name


def read_summary(path: Path) -> dict:
    """A metrics.json as plain numbers: ``{"x4": {"psnr_y": float | None, "n_images": int,
    "align": "none" | "adain" | "wavelet", "images": {...}}}`` (its ``"suite"`` record left
    out); anything else (a mapping where a number belongs, a ``_target_``) is refused with one
    line naming the file.

    Raises:
        ZoomSRError: unreadable, or not the layout evaluate.py writes.
    """
    from zoomsr.errors import ZoomSRError

    def bad(why: str) -> ZoomSRError:
        return ZoomSRError(f"'{path}' is not a zoomsr metrics.json ({why}); pass folders "
                           "that evaluate.py wrote.")  # fmt: skip

    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise bad(f"unreadable: {err}") from None
    if not isinstance(summary, dict) or not summary:
        raise bad("not a mapping of scales")
    number = (int, float, type(None))
    suite = summary.pop("suite", {})  # how the numbers were computed (metric suites)
    from zoomsr.checkpoint import plain_value

    try:  # plain data at every depth (no _target_ anywhere)
        plain_value(suite, "suite")
    except ZoomSRError:
        raise bad("'suite' is not a record of conventions") from None
    if not isinstance(suite, dict):
        raise bad("'suite' is not a record of conventions")
    for scale, entry in summary.items():
        if not (isinstance(scale, str) and scale[:1] == "x" and scale[1:].isdigit()):
            raise bad(f"key '{scale}' is not a scale such as 'x4'")
        if not isinstance(entry, dict):
            raise bad(f"'{scale}' is not a mapping of metrics")
        for name, value in entry.items():
            if name == "images":
                continue
            if name == "align":  # the colour fix the outputs were scored with (a setting)
                if value not in ("none", "adain", "wavelet"):
                    raise bad(f"'{scale}.align' is {value!r}, not none | adain | wavelet")
                continue
            if isinstance(value, bool) or not isinstance(value, number):
                raise bad(f"'{scale}.{name}' is a {type(value).__name__}, not a number")
        if not isinstance(entry.get("n_images", 0), int):
            raise bad(f"'{scale}.n_images' is not a count")
    return summary


def compare(paths: list[str], out: Path, labels: list[str] | None = None) -> dict[str, Path]:
    """Merge the metrics.json of several runs: compare.md (one table), compare.png (one line
    per run in each metric's panel) and compare.json, written to ``out``."""
    dirs = _run_dirs(paths)
    labels = labels or [run_label(d) for d in dirs]
    runs = {lab: read_summary(d / "metrics.json") for lab, d in zip(labels, dirs)}
    skip = {"n_images", "images", "align"}  # align: the colour fix, a setting
    metrics = list(dict.fromkeys(k for s in runs.values() for e in s.values() for k in e))
    metrics = [m for m in metrics if m not in skip]
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table({}, metrics, label="")
    for lab, summary in runs.items():
        table += "".join(markdown_table(summary, metrics, label=lab).splitlines(True)[2:])
    paths = {"markdown": out / "compare.md", "plot": out / "compare.png"}
    from zoomsr.runfolder import write_text

    write_text(paths["markdown"], table)
    plot_runs(runs, metrics, paths["plot"])
    merged = {lab: {k: {m: v for m, v in e.items() if m != "images"} for k, e in s.items()}
              for lab, s in runs.items()}  # fmt: skip
    write_text(out / "compare.json", json.dumps(merged, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    """``zoomsr compare RUN_DIR... [--out DIR] [--labels A B ...] [--published ROW]``."""
    parser = argparse.ArgumentParser(
        prog="zoomsr compare",
        description="Put several evaluation runs (folders with metrics.json, or a multirun "
        "folder) in one Markdown table and one plot of each metric against scale; with "
        "--published, each run beside a published row, differences marked.",
    )
    parser.add_argument("runs", nargs="*", help="evaluation output folders")
    parser.add_argument("--out", default=".", help="where compare.md/png/json go (default .)")
    parser.add_argument("--labels", nargs="+", help="a name per run (default: its overrides)")
    parser.add_argument("--published", metavar="ROW", help="a published row, e.g. osediff_drealsr")
    parser.add_argument("--published-file", metavar="YAML", help="rows of your own (same layout)")
    parser.add_argument("--list-published", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    from zoomsr.errors import ZoomSRError
    from zoomsr.metrics import published

    try:
        if args.list_published:
            for name, row in published.load_rows(args.published_file).items():
                print(f"{name}: {row['method']}, x{row['scale']}, suite {row.get('suite')}")
            return 0
        if not args.runs:
            parser.error("give at least one evaluation output folder")
        if args.published:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            tables = [published.compare_row(run, args.published, args.published_file)
                      for run in args.runs]  # fmt: skip
            (out / "published.md").write_text("\n".join(tables))
            print("\n".join(tables) + f"\n[zoomsr] {out / 'published.md'}")
            return 0
        paths = compare(args.runs, Path(args.out), args.labels)
    except ZoomSRError as err:
        print(f"zoomsr error: {err}")
        return 2
    print(paths["markdown"].read_text())
    print(f"[zoomsr] {paths['markdown']} and {paths['plot']}")
    return 0
