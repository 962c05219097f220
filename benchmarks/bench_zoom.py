"""Zoom-chain time and peak memory per number of steps, bicubic and a small SR3; swap vs plain.

Each configuration runs in a fresh subprocess (so one run's allocator state cannot hide
another's peak): build the backbone, one warm-up chain of 1 step, then ``--repeats`` timed
chains of ``steps`` steps. Peak memory is the resident set size (RSS, ``/proc/self/statm``)
sampled every millisecond by a thread during the first timed chain, minus the RSS just before
it: what the chain itself adds (glibc's mmap threshold is fixed at 64 KiB in the workers so
that freed tensors leave the RSS). It includes the per-step outputs the result keeps (step
inputs and outputs on the CPU; 2 x 3 x P^2 float32 per step) besides the working set of one
step. On a GPU, ``torch.cuda.max_memory_allocated`` is reported too.

A chain of ``n`` steps should take ``n`` times one step's time (every step processes the same
``P/u -> P`` size) and its working memory should not grow with ``n``.

    python benchmarks/bench_zoom.py                       # CPU, ~2-4 min on 2 shared cores
    python benchmarks/bench_zoom.py --device cuda --size-sr3 256 --sample-steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak RSS above the starting RSS while the block runs, sampled every ``period`` s."""

    def __init__(self, period: float = 0.001, enabled: bool = True) -> None:
        self.period, self.peak, self._stop = period, 0, threading.Event()
        self.enabled = enabled

    def __enter__(self) -> PeakRSS:
        self.base = rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._watch, daemon=True)
        if self.enabled:
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.period)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def added_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def build(backbone: str, args: argparse.Namespace):
    from zoomsr.backbones.interp import Bicubic
    from zoomsr.backbones.sr3 import SR3

    if backbone == "bicubic":
        return Bicubic(4), args.size_bicubic
    model = SR3(
        scale=4,
        inner_channel=32,
        channel_mults=[1, 2, 2],
        attn_res=[],
        res_blocks=1,
        norm_groups=8,
        n_timestep=1000,
        sampler="ddim",
        sample_steps=args.sample_steps,
        seed=0,
    )
    return model.eval(), args.size_sr3


def worker(args: argparse.Namespace) -> None:
    """One configuration; prints one JSON line."""
    from zoomsr.zoom.engine import ChainEngine

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, size = build(args.backbone, args)
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))

    def once(steps: int) -> None:
        chain = ChainEngine("recursive", steps=steps, process_size=size, memory=args.memory,
                            backbone=model, device=device)  # fmt: skip
        if args.keep:  # run(): every step's input and output kept (what infer.py writes)
            chain.run(image, "bench")
        else:  # iter_steps(): each step dropped once seen, as a streaming writer would
            for _ in chain.iter_steps(image, "bench"):
                pass

    once(1)  # warm-up: first-call allocations and caches
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for r in range(args.repeats):
        with PeakRSS(enabled=r == 0) as peak_r:
            t, c = time.perf_counter(), time.process_time()
            once(args.steps)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        if r == 0:
            peak = peak_r
    cuda_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "memory": args.memory,
                "keep": args.keep,
                "steps": args.steps,
                "size": size,
                "time_s": statistics.median(times),
                "min_s": min(times),
                "max_s": max(times),
                "cpu_s": statistics.median(cpu),
                "rss_added_mib": peak.added_mib,
                "cuda_peak_mib": cuda_mib,
            }
        )
    )


def spawn(args: argparse.Namespace, backbone: str, memory: str, steps: int, keep: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--backbone", backbone, "--memory", memory]
    cmd += ["--steps", str(steps), "--device", args.device, "--repeats", str(args.repeats)]
    cmd += ["--threads", str(args.threads), "--sample-steps", str(args.sample_steps)]
    cmd += ["--size-bicubic", str(args.size_bicubic), "--size-sr3", str(args.size_sr3)]
    cmd += ["--keep"] if keep else []
    # A fixed mmap threshold: glibc then maps every tensor-sized block and unmaps it when freed,
    # so RSS follows the live tensors (with its default dynamic threshold, freed blocks stay in
    # the heap and RSS only ever grows).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| backbone | P | memory | outputs | steps | wall (s), median [min-max] | CPU (s) "
        "| CPU s / step | peak RSS added (MiB) | CUDA peak (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cuda = "-" if r["cuda_peak_mib"] is None else f"{r['cuda_peak_mib']:.1f}"
        lines.append(
            f"| {r['backbone']} | {r['size']} | {r['memory']} | "
            f"{'kept' if r['keep'] else 'streamed'} | {r['steps']} | "
            f"{r['time_s']:.3f} [{r['min_s']:.3f}-{r['max_s']:.3f}] | "
            f"{r['cpu_s']:.3f} | {r['cpu_s'] / r['steps']:.3f} | "
            f"{r['rss_added_mib']:.1f} | {cuda} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backbone", default="bicubic")
    p.add_argument("--memory", default="plain")
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size-bicubic", type=int, default=512)
    p.add_argument("--size-sr3", type=int, default=64)
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    rows = []
    configs = [
        ("bicubic", "plain", False),
        ("bicubic", "plain", True),
        ("sr3", "plain", False),
        ("sr3", "swap", False),
    ]
    for backbone, memory, keep in configs:
        for steps in range(1, args.max_steps + 1):
            rows.append(spawn(args, backbone, memory, steps, keep))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
