"""SR3 sampling time per image against the number of denoising steps, DDPM and DDIM.

The small SR3 of ``bench_train_overhead.py`` (inner 32, mults [1, 2, 2], 2 res blocks, built
for 64 px crops, so attention on its 16x16 level; seeded weights) super-resolves a 16x16 LR to
64x64 (x4; ``--hr 64 128`` adds 128x128 from 32x32 with the same network, as at inference)
with ``sample_steps`` in {10, 25, 50, 100, 250} (``--long`` adds 1000 and 2000, SR3's own
setting). Each step is one U-Net call, so the time should be ``fixed + steps * per_step``.
Two checks of that:

- each run is split into the time inside the denoising steps (``SR3._denoise_step``, timed
  per call) and the rest of ``upscale`` (the fixed part: bicubic conditioning, the schedule,
  the first noise draw), so ms/step and the fixed cost are measured, not inferred;
- a least-squares line through the medians of the whole runs, per sampler and size.

Repeats are interleaved (every configuration once, then again, DDPM and DDIM alternating), so
a change in the load of a shared machine spreads over all of them; the table gives medians and
the min–max spread. Wall and process-CPU clocks are both kept: with one thread the CPU clock
leaves out the time other jobs hold the core. On CUDA every step ends with a synchronisation
so that its time is the GPU's (a few microseconds of idle GPU per step).

    python benchmarks/bench_sampler.py                 # CPU, 64 px, 2 repeats: ~3 minutes
    python benchmarks/bench_sampler.py --device cuda --hr 64 128 --long --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from zoomsr.backbones.sr3 import SR3

STEPS = [10, 25, 50, 100, 250]
LONG_STEPS = [1000, 2000]
SAMPLERS: tuple[Literal["ddpm", "ddim"], ...] = ("ddpm", "ddim")
CLOCKS = ("wall", "cpu")


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def build_sr3(args: argparse.Namespace) -> SR3:
    """The small SR3 (weights seeded, eval mode), with its denoising step timed per call into
    ``model.step_times`` (wall, CPU seconds)."""
    mults = [int(m) for m in args.channel_mults.split(",")]
    model = SR3(
        scale=4,
        inner_channel=args.inner_channel,
        channel_mults=mults,
        res_blocks=args.res_blocks,
        image_size=args.image_size,  # where attention goes; other sizes keep the same levels
        seed=0,
    )
    model = model.to(args.device).eval()
    model.step_times = []
    model._denoise_step = _timed_step(model._denoise_step, model.step_times, args.device)
    return model


def _timed_step(step: Callable, out: list, device: str) -> Callable:
    def timed(*a, **k):
        start = _now()
        x = step(*a, **k)
        if device == "cuda":
            torch.cuda.synchronize()
        end = _now()
        out.append((end[0] - start[0], end[1] - start[1]))
        return x

    return timed


def time_upscale(model: SR3, lr: torch.Tensor, sampler: str, steps: int) -> dict[str, float]:
    """Seconds of one ``upscale`` of ``lr`` ``(B, 3, h, w)``: whole call and inside the steps."""
    model.sampler, model.sample_steps = sampler, steps
    model.step_times.clear()
    generator = torch.Generator(lr.device).manual_seed(0)
    if lr.is_cuda:
        torch.cuda.synchronize(lr.device)
    start = _now()
    model.upscale(lr, generator=generator)
    if lr.is_cuda:
        torch.cuda.synchronize(lr.device)
    end = _now()
    out = {}
    for k, clock in enumerate(CLOCKS):
        out[clock] = end[k] - start[k]
        out[f"{clock}_steps"] = sum(t[k] for t in model.step_times)
    return out


def measure(args: argparse.Namespace) -> list[dict]:
    """Every (size, sampler, steps) ``args.repeats`` times, interleaved; seconds per image.

    Within a repeat DDPM and DDIM alternate at each step count, and odd repeats run the list
    backwards, so a drift in the machine's load does not line up with either axis."""
    steps = STEPS + (LONG_STEPS if args.long else [])
    model, inputs = build_sr3(args), {}
    for hr in args.hr:
        g = torch.Generator().manual_seed(0)
        inputs[hr] = torch.rand(args.batch, 3, hr // 4, hr // 4, generator=g).to(args.device)
        time_upscale(model, inputs[hr], "ddpm", 3)  # warm-up: allocator, kernels
    configs = list(itertools.product(args.hr, steps, SAMPLERS))
    runs: dict[tuple, list[dict[str, float]]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for hr, n, sampler in configs if r % 2 == 0 else configs[::-1]:
            runs[(hr, n, sampler)].append(time_upscale(model, inputs[hr], sampler, n))
        print(f"  repeat {r + 1}/{args.repeats} done", flush=True)
    rows = []
    for hr, sampler, n in itertools.product(args.hr, SAMPLERS, steps):
        times = runs[(hr, n, sampler)]
        row = {"hr": hr, "sampler": sampler, "steps": n}
        for key in times[0]:
            row[key] = [t[key] / args.batch for t in times]
        rows.append(row)
    return rows


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``; returns ``a``, ``b`` and the largest |residual| / y."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    return a, b, max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))


def _cell(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} ({min(times):.3f}–{max(times):.3f})"


def report_runs(rows: list[dict]) -> None:
    """Seconds per image, and each run split into ms per denoising step and the fixed rest."""
    print("\ns/image: median (min–max) over repeats; ms/step: time inside the denoising steps")
    print("/ steps; fixed: the rest of the call (medians over repeats)\n")
    print(
        "| HR | sampler | steps | wall s/image | CPU s/image | wall ms/step | CPU ms/step "
        "| CPU fixed ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n, med = r["steps"], statistics.median
        fixed = med(c - s for c, s in zip(r["cpu"], r["cpu_steps"]))
        print(
            f"| {r['hr']} | {r['sampler']} | {n} | {_cell(r['wall'])} | {_cell(r['cpu'])} | "
            f"{1e3 * med(r['wall_steps']) / n:.1f} | {1e3 * med(r['cpu_steps']) / n:.1f} | "
            f"{1e3 * fixed:.1f} |"
        )


def report_fits(rows: list[dict]) -> list[dict]:
    """Least-squares lines through the median run times, per (size, sampler) and clock."""
    fits = []
    print("\nline time = fixed + steps * per_step through the median run times\n")
    print("| HR | sampler | clock | per_step ms | fixed s | largest residual / time |")
    print("|---|---|---|---:|---:|---:|")
    for (hr, sampler), group in itertools.groupby(rows, key=lambda r: (r["hr"], r["sampler"])):
        group = list(group)
        xs = [float(r["steps"]) for r in group]
        for clock in CLOCKS:
            a, b, dev = fit_line(xs, [statistics.median(r[clock]) for r in group])
            fit = {"hr": hr, "sampler": sampler, "clock": clock, "ms_per_step": 1e3 * b}
            fits.append(fit | {"fixed_s": a, "max_rel_residual": dev})
            print(f"| {hr} | {sampler} | {clock} | {1e3 * b:.1f} | {a:.3f} | {100 * dev:.1f}% |")
    return fits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--hr", type=int, nargs="+", default=[64], help="HR sides (LR = HR / 4)")
    p.add_argument("--long", action="store_true", help="also 1000 and 2000 steps (slow on CPU)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration")
    p.add_argument("--batch", type=int, default=1, help="images per upscale call")
    p.add_argument("--inner-channel", type=int, default=32)
    p.add_argument("--channel-mults", default="1,2,2", help="comma-separated")
    p.add_argument("--res-blocks", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64, help="training crop: attention at 16")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 keeps torch's default (default 1: steady on a shared CPU)",
    )
    p.add_argument("--json", type=Path, help="also write every run's times here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(
        f"SR3 inner={args.inner_channel} mults=[{args.channel_mults}] res_blocks={args.res_blocks}"
        f" | x4 to {args.hr} px, batch {args.batch} | {args.device} "
        f"threads={torch.get_num_threads()} | {args.repeats} repeats",
        flush=True,
    )
    rows = measure(args)
    report_runs(rows)
    out = {"rows": rows, "fits": report_fits(rows)}
    if args.json:
        args.json.write_text(json.dumps(out | {"args": vars(args) | {"json": None}}, indent=1))
    return out


if __name__ == "__main__":
    main()
