"""The full metric set, batched through :class:`~zoomsr.metrics.suite.MetricSuite` vs the
libraries' default per-image calls: images per second and the largest value difference.

Per-image baseline: one call per image of ``lpips.LPIPS(x, y, normalize=True)``, torch-fidelity's
``FeatureExtractorInceptionV3`` on a uint8 image, ``pyiqa`` inference models (``metric(img)``),
and zoomsr's PSNR/SSIM. Batched: the suite on ``--batch`` images at once (what evaluate.py runs).

Weights: nothing is downloaded. NIQE uses the real parameters (``../shared/weights``, placed as
``zoomsr weights --niqe-npz`` does, in a temporary ``TORCH_HOME``). LPIPS (AlexNet), FID
(Inception-v3), MUSIQ and MANIQA run their real, full-size architectures with random weights:
the speed is the real one, the values are not meaningful scores. CLIP-IQA is left out unless
its ``RN50.pt`` is in ``$TORCH_HOME/hub/clip`` (a JIT archive that cannot be built at random).

    .venv/bin/python benchmarks/bench_metrics.py [--images 16] [--size 128] [--batch 8]
        [--device cpu] [--maniqa] [--no-write]
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
MARK = ("<!-- bench_metrics:start -->", "<!-- bench_metrics:end -->")


def random_inception(path: Path) -> None:
    """A random-init state dict of torch-fidelity's Inception (same architecture, no download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    original = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *a, **k: None
    try:
        with torch.no_grad():
            cls = fe.FeatureExtractorInceptionV3
            load = cls.load_state_dict
            cls.load_state_dict = lambda self, sd, strict=True: None
            try:
                net = cls("inception-v3-compat", ["2048"])
            finally:
                cls.load_state_dict = load
    finally:
        fe.load_state_dict_from_url = original
    torch.save(net.state_dict(), path)


def build(device: torch.device, tmp: Path, maniqa: bool) -> tuple[dict, list[str]]:
    """The metric modules (random full-size nets where no weights exist) and the names."""
    from zoomsr.metrics.fid import FID, InceptionFeatures
    from zoomsr.metrics.iqa import PyiqaMetric, build_pyiqa
    from zoomsr.metrics.perceptual import LPIPS, build_lpips
    from zoomsr.metrics.weights import place_niqe

    place_niqe(ROOT.parent / "shared" / "weights" / "niqe_pris_params.npz")
    torch.manual_seed(0)
    inception = tmp / "inception_random.pth"
    random_inception(inception)
    models = {
        "lpips": LPIPS(model=build_lpips("alex", pretrained_trunk=False)).to(device),
        "fid": FID(InceptionFeatures(str(inception))).to(device),
        "niqe": PyiqaMetric("niqe", device=device),
        "musiq": PyiqaMetric("musiq", model=build_pyiqa("musiq", device, pretrained=False)),
    }
    names = ["psnr_y", "ssim_y", "lpips", "niqe", "musiq", "fid"]
    if maniqa:  # ViT-B/8 on 20 crops of 224 px per image: ~1.5 TFLOP an image, GPU only
        models["maniqa"] = PyiqaMetric(
            "maniqa", model=build_pyiqa("maniqa", device, pretrained=False)
        )
        names.insert(-1, "maniqa")
    return models, names


def per_image(models: dict, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, list[float]]:
    """The libraries' own calls, one image at a time."""
    from zoomsr.data.io import to_uint8
    from zoomsr.metrics.fidelity import psnr, ssim

    nr = [n for n in ("niqe", "musiq", "maniqa") if n in models]
    out = {k: [] for k in ("psnr_y", "ssim_y", "lpips", *nr)}
    feats = []
    lp, inception = models["lpips"].model, models["fid"].extractor.net
    for i in range(len(sr)):
        x, y = sr[i : i + 1], hr[i : i + 1]
        out["psnr_y"].append(psnr(x, y, shave=4).item())
        out["ssim_y"].append(ssim(x, y, shave=4).item())
        out["lpips"].append(lp(x[..., 4:-4, 4:-4], y[..., 4:-4, 4:-4], normalize=True).item())
        for name in nr:
            out[name].append(models[name].model(x).item())
        feats.append(inception(to_uint8(x))[0].double().cpu())
    out["fid_features"] = torch.cat(feats)
    return out


def batched(suite, sr: torch.Tensor, hr: torch.Tensor, batch: int) -> dict[str, list[float]]:
    out: dict[str, list] = {n: [] for n in suite.names}
    feats = []
    for i in range(0, len(sr), batch):
        values = suite(sr[i : i + batch], hr[i : i + batch], shave=4)
        for n in suite.names:
            out[n] += values[n]
        feats.append(suite.features(sr[i : i + batch])["fid"])
    out["fid_features"] = torch.cat(feats)
    return out


def timed(fn, device: torch.device, repeats: int = 1):
    result, best = None, float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--maniqa", action="store_true", help="add MANIQA (slow on a CPU)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp())
    os.environ["TORCH_HOME"] = str(tmp)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may wait on a network
    from zoomsr.data.io import quantize
    from zoomsr.metrics.suite import MetricSuite

    models, names = build(device, tmp, args.maniqa)
    suite = MetricSuite(names, device=device, models=models)
    g = torch.Generator().manual_seed(0)
    hr = quantize(torch.rand(args.images, 3, args.size, args.size, generator=g)).to(device)
    sr = quantize((hr + 0.05 * torch.randn(hr.shape, generator=g).to(device)).clamp(0, 1))
    one, t_one = timed(lambda: per_image(models, sr, hr), device)
    many, t_many = timed(lambda: batched(suite, sr, hr, args.batch), device)
    diffs = {n: float(np.max(np.abs(np.subtract(one[n], many[n])))) for n in suite.names}
    diffs["fid (features)"] = float((one["fid_features"] - many["fid_features"]).abs().max())
    fid_one = suite.distance("fid", one["fid_features"][::2], one["fid_features"][1::2])
    fid_many = suite.distance("fid", many["fid_features"][::2], many["fid_features"][1::2])
    diffs["fid (value)"] = abs(fid_one - fid_many)
    report = render(args, device, t_one, t_many, diffs, names)
    print(report)
    if not args.no_write:
        write(report)
    return 0


def render(args, device, t_one: float, t_many: float, diffs: dict, names: list[str]) -> str:
    n = args.images
    lines = [
        MARK[0],
        "## Metric set: batched suite vs per-image library calls",
        "",
        "`benchmarks/bench_metrics.py` (issue 7). " + ", ".join(names) + " (FID: its Inception",
        "features) on the same images, batched through `MetricSuite`",
        "vs one default library call per image. NIQE has its real parameters; LPIPS, Inception,",
        "MUSIQ (and MANIQA with `--maniqa`) are their full-size architectures with random",
        "weights (no weights are available offline here: the speed is real, the scores are",
        "not). CLIP-IQA is left out (its RN50 JIT file is not available).",
        "",
        f"- command: `python benchmarks/bench_metrics.py --images {n} --size {args.size} "
        f"--batch {args.batch} --device {args.device}" + (" --maniqa" if args.maniqa else "") + "`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, device `{device}`, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        "",
        "| path | images | time s | images/s |",
        "|---|---|---|---|",
        f"| per-image library calls | {n} | {t_one:.2f} | {n / t_one:.2f} |",
        f"| batched suite (batch {args.batch}) | {n} | {t_many:.2f} | {n / t_many:.2f} |",
        "",
        "Largest difference between the two paths, per metric: "
        + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
        + ".",
        "",
        "Reading: on one CPU thread the networks are compute-bound, so batching buys nothing",
        "here (NIQE is per image in both paths); its gain is on an accelerator, where one image",
        "per"
        " call leaves the device idle. No GPU was lent to this task, so that is not measured yet:",
        "rerun with `--device cuda --maniqa`. The values agree to float32 rounding.",
        MARK[1],
    ]
    return "\n".join(lines) + "\n"


def write(report: str) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(MARK[0]) + ".*?" + re.escape(MARK[1]) + "\n?", re.S)
    text = pattern.sub(lambda _: report, text) if pattern.search(text) else text + "\n" + report
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
