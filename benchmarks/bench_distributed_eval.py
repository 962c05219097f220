"""Distributed evaluation throughput: the same evaluation with 1 and with N CPU processes.

    .venv/bin/python benchmarks/bench_distributed_eval.py [--set Set14] [--ranks 2] [--repeats 2]

Per configuration a fresh run folder, ``evaluate.run`` in-process (``backbone=bicubic``,
benchmark protocol at x2, x3, x4, Y-PSNR and SSIM), one torch thread per rank; wall time from
the call to the written reports, so the ranks' start (spawn: a fresh interpreter importing torch)
and the gather are included. A rerun over a finished folder (every row done) measures that fixed
overhead alone. Results must be equal to the single process's, or the benchmark fails. Appends
(or replaces) its section in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MARK = "bench_distributed_eval"


def evaluate(bench: Path, name: str, out: Path, devices: int, strategy: str) -> tuple[float, dict]:
    from hydra import compose, initialize_config_dir

    from zoomsr.tasks import evaluate as task

    overrides = [
        "backbone=bicubic",
        f"data.hr_dir={bench / name / 'HR'}",
        "scales=[2,3,4]",
        "metrics.names=[psnr_y,ssim_y]",
        "logger=csv",
        f"out_dir={out}",
        f"devices={devices}",
        f"strategy={strategy}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides)
    start = time.perf_counter()
    result = task.run(cfg)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="Set14")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = Path(os.environ.get("ZOOMSR_BENCH_DIR", ROOT.parent / "shared" / "datasets"))
    configs = [(1, "auto"), (args.ranks, "ddp_spawn"), (args.ranks, "ddp_fork")]
    best: dict[tuple, float] = {}
    overhead: dict[tuple, float] = {}
    reference = None
    n_rows = 0
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for devices, strategy in configs:
                out = Path(tmp) / f"{devices}-{strategy}-{rep}"
                seconds, result = evaluate(bench, args.set, out, devices, strategy)
                n_rows = sum(v["n_images"] for k, v in result.items() if k[:1] == "x")
                reference = reference or result
                if result != reference:
                    sys.exit(f"{devices} x {strategy}: results differ from one process")
                best[(devices, strategy)] = min(best.get((devices, strategy), 1e9), seconds)
                again, _ = evaluate(bench, args.set, out, devices, strategy)  # nothing left to do
                overhead[(devices, strategy)] = min(overhead.get((devices, strategy), 1e9), again)
                print(f"{devices} x {strategy}: {seconds:.2f} s, rerun {again:.2f} s", flush=True)
    base = best[(1, "auto")]
    load = os.getloadavg()[0]
    lines = [
        f"<!-- {MARK}:start -->",
        "## Distributed evaluation: 1 vs N CPU processes",
        "",
        f"- command: `.venv/bin/python benchmarks/bench_distributed_eval.py --set {args.set} "
        f"--ranks {args.ranks} --repeats {args.repeats}`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()}-core CPU, no GPU; torch {torch.__version__}, 1 thread per "
        f"rank, Python {platform.python_version()}; 1-min load average {load:.1f} at the end "
        "(other jobs shared the CPU when it is above the rank count)",
        f"- work: `evaluate.py backbone=bicubic data.hr_dir={args.set}/HR scales=[2,3,4] "
        f"metrics=[psnr_y,ssim_y]`, {n_rows} rows (image x scale); wall time of `evaluate.run`, "
        "best of the repeats, rank start and gather included; 'fixed cost' = the same command "
        "again over the finished folder (start, gather, reports; no image computed). Every run's "
        "metrics.json equals the single process's.",
        "",
        "| processes | start | wall (s) | rows/s | vs 1 process | fixed cost (s) |",
        "|---|---|---|---|---|---|",
    ]
    for devices, strategy in configs:
        seconds = best[(devices, strategy)]
        start = "-" if devices == 1 else strategy
        lines.append(
            f"| {devices} | {start} | {seconds:.2f} | {n_rows / seconds:.1f} | "
            f"{base / seconds:.2f}x | {overhead[(devices, strategy)]:.2f} |"
        )
    lines += [
        "",
        f"The CPU ({os.cpu_count()} cores) was shared with other jobs (load average above), so "
        "the ratio shows the distributed path's overhead rather than a speed-up: a spawned rank "
        "starts a fresh interpreter that imports torch and the metrics ('fixed cost'), a forked "
        "rank does not. No GPU run yet (one GPU per rank, a learned backbone): none was lent.",
        f"<!-- {MARK}:end -->",
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if args.no_write:
        return
    text = RESULTS.read_text()
    pattern = re.compile(rf"<!-- {MARK}:start -->.*?<!-- {MARK}:end -->\n", re.S)
    text = (
        pattern.sub(section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    )
    RESULTS.write_text(text)
    print(json.dumps({"written": str(RESULTS)}))


if __name__ == "__main__":
    main()
