"""The ``metrics=osediff`` suite batched through :class:`~zoomsr.metrics.suite.MetricSuite` vs
pyiqa's own per-image loop, the way OSEDiff's ``test_metrics.py`` runs it: time per 512x512
image and the largest value difference per metric.

Images: the RealSR x4 pairs of ``../shared/datasets/RealSR_subset`` (512 px HR), SR = bicubic.

Per-image loop (OSEDiff's script): for every image, every metric called on that image alone:
``pyiqa.create_metric('psnr'|'ssim', test_y_channel=True, color_space='ycbcr')``, LPIPS, DISTS,
CLIPIQA, NIQE, MUSIQ, MANIQA-pipal; then FID between the SR and HR *folders* through pyiqa's
clean-fid pipeline (``get_folder_features``: PNG files, PIL resize, its DataLoader).
Batched: the osediff suite on ``--batch`` images at once, FID from per-image clean-fid features
(what evaluate.py runs).

Weights: nothing is downloaded. Every learned metric is its real pyiqa class (full size) with
random weights, the same network object in both paths (NIQE has its real parameters from
``../shared/weights``); so the speed is real and the values are not meaningful scores. One
deviation from OSEDiff's loop: LPIPS is the ``lpips`` package (zoomsr's LPIPS) in both paths,
not pyiqa's re-implementation of it, whose heads cannot be built without its weight file.

    .venv/bin/python benchmarks/bench_metric_suites.py [--images 4] [--batch 2] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MARK = ("<!-- bench_metric_suites:start -->", "<!-- bench_metric_suites:end -->")
NAMES = ["psnr", "ssim", "lpips", "dists", "clipiqa", "niqe", "musiq", "maniqa_pipal", "fid"]


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` RealSR pairs: bicubic SR (8-bit) and HR, ``(n, 3, 512, 512)``."""
    from zoomsr.backbones.interp import Bicubic
    from zoomsr.data.io import load_image, quantize

    root = ROOT.parent / "shared" / "datasets" / "RealSR_subset"
    names = sorted(p.name for p in (root / "HR").glob("*.png"))[:n]
    hr = torch.stack([load_image(root / "HR" / f) for f in names]).float()
    lr = torch.stack([load_image(root / "LR_x4" / f) for f in names])
    return quantize(Bicubic(4).upscale(lr)).float(), hr


def build(names: list[str]) -> dict:
    """The suite's learned metrics: real classes, random weights (NIQE: real parameters)."""
    from zoomsr.metrics.fid import FID, CleanInceptionFeatures
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa
    from zoomsr.metrics.perceptual import LPIPS, build_lpips
    from zoomsr.metrics.weights import place_niqe

    place_niqe(ROOT.parent / "shared" / "weights" / "niqe_pris_params.npz")
    torch.manual_seed(0)
    models = {"lpips": LPIPS(model=build_lpips("alex", pretrained_trunk=False))}
    for name in [n for n in names if n not in ("psnr", "ssim", "lpips")]:
        model = build_pyiqa(name, pretrained=name == "niqe")
        models[name] = PyiqaMetric(name, model=model)
    models["fid"] = FID(CleanInceptionFeatures(pretrained=False), impl="pyiqa")
    return models


def pyiqa_loop(models: dict, sr: torch.Tensor, hr: torch.Tensor, tmp: Path, names) -> dict:
    """OSEDiff's test_metrics.py: one image at a time through pyiqa, FID over two folders."""
    import pyiqa
    from pyiqa.archs.fid_arch import frechet_distance, get_folder_features

    from zoomsr.data.io import save_image

    opts = {"test_y_channel": True, "color_space": "ycbcr", "device": "cpu"}
    calls = {n: pyiqa.create_metric(n, **opts) for n in ("psnr", "ssim")}
    calls["lpips"] = lambda x, y: models["lpips"].model(x, y, normalize=True)
    calls |= {n: models[n].model for n in names if n not in ("psnr", "ssim", "lpips", "fid")}
    out: dict[str, list[float]] = {n: [] for n in calls}
    for i in range(len(sr)):
        x, y = sr[i : i + 1], hr[i : i + 1]
        for name, metric in calls.items():
            no_ref = name in ("clipiqa", "niqe", "musiq", "maniqa_pipal")
            out[name].append(float(metric(x) if no_ref else metric(x, y)))
    for folder, batch in (("sr", sr), ("hr", hr)):
        for i, img in enumerate(batch):
            save_image(img, tmp / folder / f"{i:03d}.png")
    net, cpu = models["fid"].extractor.net, torch.device("cpu")
    feats = [get_folder_features(str(tmp / f), net, num_workers=0, device=cpu, verbose=False)
             for f in ("hr", "sr")]  # fmt: skip
    stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in feats]
    out["fid"] = [float(frechet_distance(*stats[0], *stats[1]))]
    out["fid features"] = feats[1].ravel().tolist()
    return out


def batched(suite, sr: torch.Tensor, hr: torch.Tensor, batch: int) -> dict:
    out: dict[str, list[float]] = {n: [] for n in suite.names}
    fs, fh = [], []
    for i in range(0, len(sr), batch):
        values = suite(sr[i : i + batch], hr[i : i + batch], shave=0)
        for n in suite.names:
            out[n] += values[n]
        fs.append(suite.features(sr[i : i + batch])["fid"])
        fh.append(suite.features(hr[i : i + batch])["fid"])
    out["fid"] = [suite.distance("fid", torch.cat(fh), torch.cat(fs))]
    out["fid features"] = torch.cat(fs).ravel().tolist()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--without",
        nargs="*",
        default=[],
        help="metrics left out (e.g. "
        "maniqa_pipal: a ViT-B/8 on 20 crops per image, minutes on a shared CPU)",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    os.environ["TORCH_HOME"] = str(tmp)  # nothing of the user's is read; nothing downloaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from zoomsr.metrics.suite import MetricSuite

    sr, hr = images(args.images)
    names = [n for n in NAMES if n not in args.without]
    models = build([n for n in names if n != "fid"])
    suite = MetricSuite(names, models=models, name="osediff", fidelity="pyiqa",
                        color_space="ycbcr", crop_border=0, fid="pyiqa")  # fmt: skip
    with torch.no_grad():
        start = time.perf_counter()
        loop = pyiqa_loop(models, sr, hr, tmp, names)
        t_loop = time.perf_counter() - start
        start = time.perf_counter()
        ours = batched(suite, sr, hr, args.batch)
        t_ours = time.perf_counter() - start
    diffs = {n: float(np.max(np.abs(np.subtract(loop[n], ours[n]))))
             for n in [*names, "fid features"]}  # fmt: skip
    report = render(args, t_loop, t_ours, diffs, loop)
    print(report)
    if not args.no_write:
        write(report)
    return 0


def render(args, t_loop: float, t_ours: float, diffs: dict, loop: dict) -> str:
    n = args.images
    return "\n".join([
        MARK[0],
        "## Metric suite `metrics=osediff`: batched vs pyiqa's per-image loop (OSEDiff's script)",
        "",
        "`benchmarks/bench_metric_suites.py` (issue 14). The osediff suite (PSNR, SSIM, LPIPS,",
        "DISTS, CLIPIQA, NIQE, MUSIQ, MANIQA-pipal, FID) on RealSR 512x512 pairs (SR = bicubic):",
        "pyiqa called image by image with FID over two PNG folders, as OSEDiff's",
        "`test_metrics.py` runs it, vs `MetricSuite` on batches (FID from per-image clean-fid",
        "features). Real pyiqa classes, full size, random weights, the same network objects in",
        "both paths (NIQE: real parameters); LPIPS is the `lpips` package in both.",
        "",
        f"- command: `python benchmarks/bench_metric_suites.py --images {n} --batch {args.batch}"
        f" --threads {args.threads}" + (f" --without {' '.join(args.without)}" if args.without
                                        else "") + "`",  # fmt: skip
        f"- left out: {', '.join(args.without) or 'nothing'}",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), "
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "",
        "| path | images | time s | s per 512x512 image |",
        "|---|---|---|---|",
        f"| pyiqa per-image loop (OSEDiff) | {n} | {t_loop:.1f} | {t_loop / n:.2f} |",
        f"| zoomsr suite, batch {args.batch} | {n} | {t_ours:.1f} | {t_ours / n:.2f} |",
        f"| ratio loop / suite | | | {t_loop / t_ours:.2f}x |",
        "",
        "Largest difference between the two paths, per metric: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        + f". (Bicubic PSNR of these images: {np.mean(loop['psnr']):.4f} dB by pyiqa.)",
        MARK[1],
    ])  # fmt: skip


def write(report: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    pattern = re.compile(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]), re.S)
    text = pattern.sub(lambda _: report, text) if pattern.search(text) else text + "\n" + report
    path.write_text(text if text.endswith("\n") else text + "\n")


if __name__ == "__main__":
    sys.exit(main())
