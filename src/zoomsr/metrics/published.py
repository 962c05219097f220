"""A run's numbers beside a published row (``zoomsr compare RUN --published osediff_drealsr``).

The rows live in ``published.yaml`` next to this file (or a file of the same layout): each names
its method, the data config and metric suite that reproduce its protocol, the scale, its source,
and its numbers under zoomsr's metric names. The table marks every metric whose difference is
beyond a tolerance (the last digits a paper prints and float noise, by metric) and says whether
the run used the row's suite: numbers under another suite's conventions are not comparable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from zoomsr.errors import ZoomSRError

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")

#: |run - published| within which a metric is marked as matching ("="); others by default 1e-3
TOLERANCE: dict[str, float] = {
    "psnr": 0.01, "psnr_y": 0.01, "niqe": 0.01, "musiq": 0.01, "fid": 0.01,
}  # fmt: skip
_DEFAULT_TOLERANCE = 1e-3
_LOWER_IS_BETTER = {"lpips", "lpips_vgg", "dists", "niqe", "fid"}


def load_rows(path: str | Path | None = None) -> dict[str, dict]:
    """The published rows of ``path`` (default: zoomsr's ``published.yaml``), checked."""
    path = Path(path) if path is not None else PUBLISHED_FILE
    try:
        rows = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ZoomSRError(f"cannot read published rows '{path}': {err}") from None
    if not isinstance(rows, dict):
        raise ZoomSRError(f"'{path}' is not a mapping of row names to rows.")
    for name, row in rows.items():
        ok = isinstance(row, dict) and isinstance(row.get("metrics"), dict)
        if not ok or not all(isinstance(v, int | float) for v in row["metrics"].values()):
            raise ZoomSRError(f"'{path}': row '{name}' needs 'metrics: {{name: number}}'.")
        for key in ("method", "source", "scale"):
            if key not in row:
                raise ZoomSRError(f"'{path}': row '{name}' has no '{key}'.")
    return rows


def compare_row(run_dir: str | Path, row_name: str, rows_file: str | Path | None = None) -> str:
    """A Markdown table: each metric of the row, the run's value, the published value, the
    difference, and a mark (``=`` within tolerance, ``better`` / ``worse`` otherwise, ``–``
    where the run lacks the metric); a header names the row's source and both suites."""
    rows = load_rows(rows_file)
    if row_name not in rows:
        raise ZoomSRError(f"no published row '{row_name}'; rows: {sorted(rows)}.")
    row = rows[row_name]
    path = Path(run_dir) / "metrics.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZoomSRError(f"cannot read '{path}': {err}") from None
    scale = f"x{row['scale']}"
    if scale not in saved:
        raise ZoomSRError(f"'{path}' has no {scale} entry (row '{row_name}' is at {scale}).")
    entry, suite = saved[scale], (saved.get("suite") or {}).get("name", "default")
    lines = [
        f"{row['method']} ({row_name}, {scale}) vs {run_dir}",
        f"source: {' '.join(str(row['source']).split())}",
        f"run suite: {suite}; row suite: {row.get('suite', '?')}"
        + ("" if suite == row.get("suite") else "  <- different conventions: not comparable"),
        "",
        "| metric | run | published | run - published | |",
        "|---|---|---|---|---|",
    ]
    for metric, published in row["metrics"].items():
        value = entry.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            lines.append(f"| {metric} | – | {published} | – | not in run |")
            continue
        diff = value - published
        if abs(diff) <= TOLERANCE.get(metric, _DEFAULT_TOLERANCE):
            mark = "="
        else:
            mark = "worse" if (diff > 0) == (metric in _LOWER_IS_BETTER) else "better"
        lines.append(f"| {metric} | {value:.4f} | {published} | {diff:+.4f} | {mark} |")
    return "\n".join(lines) + "\n"
