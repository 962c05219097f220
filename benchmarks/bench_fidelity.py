"""Torch vs the NumPy reference: speed and agreement of imresize, PSNR and SSIM.

On Set5 and Set14 at x2, x3 and x4, for every image: LR = MATLAB-bicubic(HR, 1/s) and
SR = MATLAB-bicubic(LR, s), both with MATLAB's uint8 rounding after each pass, then Y-PSNR and
SSIM with ``shave = s``. The torch path (``zoomsr``) and the per-image NumPy reference
(``benchmarks/reference_numpy.py``) each do the whole thing; this script times both (best of
``--repeats``, image loading excluded), compares their uint8 outputs and dataset-mean scores,
prints a Markdown table and writes it into ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_fidelity.py [--threads 1] [--repeats 3] [--bench-dir DIR]
        [--no-write]

``--threads`` sets torch's intra-op threads (the NumPy reference is effectively
single-threaded). One thread gives a per-core comparison that holds up when other jobs share
the machine; on a busy 2-core box, two OpenMP threads can be slower than one.

Exits with status 1 when the dataset-mean PSNR differs by more than 1e-4 dB or SSIM by more
than 1e-6.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image
from zoomsr.metrics import psnr, ssim
from zoomsr.metrics.fidelity import PUBLISHED_BICUBIC

HERE = Path(__file__).resolve().parent
PSNR_TOL, SSIM_TOL = 1e-4, 1e-6


def _load_reference():
    spec = importlib.util.spec_from_file_location("reference_numpy", HERE / "reference_numpy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest wall time (s) of ``repeats`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


@dataclass
class Row:
    """Totals of one (set, scale) over its images."""

    name: str
    scale: int
    times: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("torch_resize", "numpy_resize", "torch_metrics", "numpy_metrics"), 0.0
        )
    )
    scores: dict[str, list[float]] = field(
        default_factory=lambda: {
            "torch_psnr": [],
            "numpy_psnr": [],
            "torch_ssim": [],
            "numpy_ssim": [],
        }
    )
    pixels: int = 0
    pixels_differing: int = 0
    max_level_diff: int = 0

    def mean(self, key: str) -> float:
        return float(np.mean(self.scores[key]))


def _to_levels(img: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> ``(H, W[, C])`` integer levels, the reference's layout."""
    arr = np.rint(img[0].permute(1, 2, 0).double().numpy() * 255)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def run_torch(hr: torch.Tensor, s: int, repeats: int, row: Row) -> tuple[torch.Tensor, ...]:
    """The zoomsr path on one modcropped HR ``(1, C, H, W)``; returns (LR, SR)."""

    def resize():
        lr = imresize(hr, 1 / s, quantize_passes=True)
        return lr, imresize(lr, s, quantize_passes=True)

    t, (lr, sr) = best_of(resize, repeats)
    row.times["torch_resize"] += t
    t, (p, q) = best_of(lambda: (psnr(sr, hr, s).item(), ssim(sr, hr, s).item()), repeats)
    row.times["torch_metrics"] += t
    row.scores["torch_psnr"].append(p)
    row.scores["torch_ssim"].append(q)
    return lr, sr


def run_numpy(hr: np.ndarray, s: int, repeats: int, row: Row) -> tuple[np.ndarray, ...]:
    """The NumPy reference on one modcropped HR ``(H, W[, C])``; returns (LR, SR)."""
    t, (lr, sr) = best_of(lambda: ref.bicubic_baseline(hr, s), repeats)
    row.times["numpy_resize"] += t
    t, (p, q) = best_of(lambda: (ref.psnr(sr, hr, s), ref.ssim(sr, hr, s)), repeats)
    row.times["numpy_metrics"] += t
    row.scores["numpy_psnr"].append(p)
    row.scores["numpy_ssim"].append(q)
    return lr, sr


def run_set(folder: Path, s: int, repeats: int) -> Row:
    """Both paths on every image of a set at scale ``s``.

    Each path runs over the whole set on its own: interleaving them call by call makes
    torch's OpenMP threads and NumPy's BLAS threads fight over the cores and distorts both.
    """
    row = Row(folder.name, s)
    paths = sorted((folder / "HR").glob("*.png"))
    hrs_np = [ref.modcrop(ref.load_png(p), s) for p in paths]
    hrs = [
        load_image(p, keep_gray=True)[None, :, : a.shape[0], : a.shape[1]]
        for p, a in zip(paths, hrs_np)
    ]
    ours = [run_torch(hr, s, repeats, row) for hr in hrs]
    theirs = [run_numpy(hr, s, repeats, row) for hr in hrs_np]
    for pair, pair_np in zip(ours, theirs):
        for img, arr in zip(pair, pair_np):
            diff = np.abs(_to_levels(img) - np.rint(arr * 255))
            row.pixels += diff.size
            row.pixels_differing += int((diff > 0).sum())
            row.max_level_diff = max(row.max_level_diff, int(diff.max()))
    return row


def markdown(rows: list[Row]) -> str:
    lines = [
        "| set | x | resize torch / numpy (s) | speed-up | PSNR+SSIM torch / numpy (s) "
        "| speed-up | uint8 px differing | mean PSNR (published) | dPSNR | mean SSIM (published) "
        "| dSSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    tot = dict.fromkeys(rows[0].times, 0.0)
    for r in rows:
        for k in tot:
            tot[k] += r.times[k]
        tp, ts = r.mean("torch_psnr"), r.mean("torch_ssim")
        pub_p, pub_s = PUBLISHED_BICUBIC[r.name, r.scale]
        lines.append(
            f"| {r.name} | {r.scale}"
            f" | {r.times['torch_resize']:.3f} / {r.times['numpy_resize']:.3f}"
            f" | {r.times['numpy_resize'] / r.times['torch_resize']:.1f}x"
            f" | {r.times['torch_metrics']:.3f} / {r.times['numpy_metrics']:.3f}"
            f" | {r.times['numpy_metrics'] / r.times['torch_metrics']:.1f}x"
            f" | {r.pixels_differing} of {r.pixels} (max {r.max_level_diff})"
            f" | {tp:.4f} ({pub_p:.2f}) | {abs(tp - r.mean('numpy_psnr')):.1e}"
            f" | {ts:.5f} ({pub_s:.4f}) | {abs(ts - r.mean('numpy_ssim')):.1e} |"
        )
    lines.append(
        f"| **all** | | {tot['torch_resize']:.3f} / {tot['numpy_resize']:.3f}"
        f" | **{tot['numpy_resize'] / tot['torch_resize']:.1f}x**"
        f" | {tot['torch_metrics']:.3f} / {tot['numpy_metrics']:.3f}"
        f" | **{tot['numpy_metrics'] / tot['torch_metrics']:.1f}x** | | | | | |"
    )
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        models = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    return (
        f"{os.cpu_count()}-core CPU ({cpu}), no GPU used; torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), numpy {np.__version__}, "
        f"Python {platform.python_version()}; 1-min load average {os.getloadavg()[0]:.1f} at "
        "the end (this benchmark alone gives about its thread count; more means other jobs "
        "shared the CPU)"
    )


def write_results(table: str, command: str, threads: int) -> Path:
    """Replace this script's section for ``threads`` in RESULTS.md (or append it)."""
    path = HERE / "RESULTS.md"
    start = f"<!-- bench_fidelity threads={threads}:start -->"
    end = f"<!-- bench_fidelity threads={threads}:end -->"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    plural = "s" if threads > 1 else ""
    section = "\n".join(
        [
            start,
            f"## Fidelity metrics: torch ({threads} thread{plural}) vs NumPy reference",
            "",
            f"- command: `{command}`",
            f"- date: {now}",
            f"- machine: {machine()}",
            "- work: per image, MATLAB-bicubic down then up (uint8 rounding per pass), then Y-PSNR "
            "and SSIM with shave = scale; times are sums over images of the best of the repeats, "
            "image loading excluded. dPSNR / dSSIM: |torch - numpy| of the dataset means.",
            "",
            table,
            end,
        ]
    )
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("ZOOMSR_BENCH_DIR", HERE.parent.parent / "shared" / "datasets")
    parser.add_argument("--bench-dir", type=Path, default=Path(default_dir))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    if not (args.bench_dir / "Set5" / "HR").is_dir():
        print(
            f"benchmark images not found at {args.bench_dir}; pass --bench-dir or set "
            "ZOOMSR_BENCH_DIR",
            file=sys.stderr,
        )
        return 2

    torch.set_num_threads(args.threads)
    rows = []
    for name in ("Set5", "Set14"):
        for s in (2, 3, 4):
            rows.append(run_set(args.bench_dir / name, s, args.repeats))
            print(f"{name} x{s}: done", file=sys.stderr)

    table = markdown(rows)
    print(table)
    dp = max(abs(r.mean("torch_psnr") - r.mean("numpy_psnr")) for r in rows)
    ds = max(abs(r.mean("torch_ssim") - r.mean("numpy_ssim")) for r in rows)
    ok = dp <= PSNR_TOL and ds <= SSIM_TOL
    print(
        f"\nmax |dPSNR| = {dp:.2e} dB (limit {PSNR_TOL}), max |dSSIM| = {ds:.2e} "
        f"(limit {SSIM_TOL}): {'OK' if ok else 'FAILED'}"
    )
    if not args.no_write:
        python = os.path.relpath(sys.executable, HERE.parent)  # .venv/bin/python in the repo
        command = f"{python} benchmarks/bench_fidelity.py " + " ".join(sys.argv[1:])
        print(f"wrote {write_results(table, command.strip(), args.threads)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
