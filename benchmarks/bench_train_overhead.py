"""Training-step overhead of zoomsr (SRModule + Lightning) against a plain PyTorch loop.

Both sides train the same SR3 built from ``conf/`` (``backbone=sr3``, ``loss=eps_l1``,
``optim=adam``, ``module=sr``: EMA 0.9999) on the same pre-generated batch, with per-sample
seeds as the real data stream gives them (``zoomsr.data.sampler``):

- **A, plain**: ``training_outputs`` + the loss terms, ``zero_grad``, ``backward``, ``step`` and
  the EMA lerp written out by hand, timed around each iteration.
- **B, zoomsr**: ``SRModule`` driven by a real ``lightning.pytorch.Trainer`` (``logger=False``,
  no checkpointing, progress bar and model summary off) over a DataLoader that hands out the
  cached batch. A callback stamps ``on_train_batch_start``/``end``: ``in-step`` is start to end,
  ``period`` is start to next start (it adds Lightning's loop and the DataLoader's fetch).

Every step is timed on two clocks: wall (``perf_counter``) and this process's CPU time
(``process_time``). On a shared machine the wall clock also counts the time other jobs hold
the core; with one torch thread (the default here) the CPU clock counts only our own work, so
it is the steadier measure of overhead.

A and B run interleaved, alternating which goes first (A B, B A, A B, ...), so that a change
in the load of a shared machine hits both. Each run starts from the same seeded weights, and
the first pair checks that both end at the same weights (they do the same arithmetic).

    python benchmarks/bench_train_overhead.py                       # CPU, ~2 minutes
    python benchmarks/bench_train_overhead.py --preset gpu --device cuda --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from zoomsr.backbones.sr3 import SR3  # noqa: E402
from zoomsr.losses.pixel import PixelLoss  # noqa: E402
from zoomsr.modules.ema import EMA  # noqa: E402
from zoomsr.modules.sr_module import SRModule  # noqa: E402
from zoomsr.tasks.train import build_module  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
RNG_SEED = 0
#: ``--preset`` defaults: a U-Net that trains at ~1 s/step on one CPU core, and SR3's x4 setting.
PRESETS = {
    "cpu": {"inner_channel": 32, "channel_mults": "1,2,2", "res_blocks": 2, "crop": 64, "batch": 4},
    "gpu": {
        "inner_channel": 64,
        "channel_mults": "1,2,4,8,8",
        "res_blocks": 2,
        "crop": 128,
        "batch": 16,
    },
}
Batch = dict[str, torch.Tensor]
Stamp = tuple[float, float]  # (time.perf_counter(), time.process_time()), or (start, seconds)
Timings = dict[str, list[float]]  # "wall" / "cpu": seconds per timed step; "window": [t0, t1]
#: What ``--breakdown`` times inside the steps: (label, owner, attribute). An indented label is
#: part of the one above it, so it is left out of the sum that gives the rest.
PROBES = [
    ("forward: SR3.training_outputs", SR3, "training_outputs"),
    ("  of which per-sample seeded draws", SR3, "_seeded_draws"),
    ("loss: PixelLoss", PixelLoss, "forward"),
    ("backward", torch.autograd, "backward"),
    ("optimizer.zero_grad", torch.optim.Optimizer, "zero_grad"),
    ("Adam update", importlib.import_module("torch.optim.adam"), "adam"),  # Adam.step calls it
    ("SRModule.log (self.log)", SRModule, "log"),
    ("EMA.update", EMA, "update"),
]


def compose_cfg(args: argparse.Namespace) -> DictConfig:
    """``conf/train.yaml`` with the benchmark's model size; weights seeded (same init in A, B)."""
    mults = "[" + args.channel_mults + "]"
    overrides = [
        "scale=4",
        f"backbone.inner_channel={args.inner_channel}",
        f"backbone.channel_mults={mults}",
        f"backbone.res_blocks={args.res_blocks}",
        f"backbone.image_size={args.crop}",
        "backbone.seed=0",
        f"module.ema_decay={args.ema_decay}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def make_batch(args: argparse.Namespace, device: torch.device) -> Batch:
    """A fixed batch: ``lr`` ``(B, 3, crop/4, crop/4)``, ``hr`` ``(B, 3, crop, crop)`` in [0, 1],
    and ``seed`` ``(B,)`` int64 (dropped with ``--no-seeds``: the global RNG draws instead)."""
    g = torch.Generator().manual_seed(0)
    batch = {
        "hr": torch.rand(args.batch, 3, args.crop, args.crop, generator=g),
        "lr": torch.rand(args.batch, 3, args.crop // 4, args.crop // 4, generator=g),
        "seed": torch.arange(args.batch, dtype=torch.int64) * 7919 + 1,
    }
    if not args.seeds:
        del batch["seed"]
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """What Lightning's ``bf16-mixed`` plugin does around the training step."""
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_plain(cfg: DictConfig, batch: Batch, args: argparse.Namespace) -> tuple[Timings, dict]:
    """A: the hand-written loop. Returns per-step seconds (after warm-up) and the final weights."""
    device = torch.device(args.device)
    backbone = instantiate(cfg.backbone).to(device).train()
    losses = {name: instantiate(term).to(device) for name, term in cfg.loss.items()}
    params = [p for p in backbone.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optim)(params)
    decay = float(cfg.module.ema_decay)
    shadow = [p.detach().clone().float() for p in params]
    seeds = batch.get("seed")
    torch.manual_seed(RNG_SEED)  # with --no-seeds, A and B then draw the same levels and noise
    stamps = []
    for step in range(args.warmup + args.steps + 1):  # as many steps as B (see run_lightning)
        _sync(device)
        stamps.append((time.perf_counter(), time.process_time()))
        with _autocast(device, args.precision):
            outputs = backbone.training_outputs(batch["lr"], batch["hr"], seeds=seeds)
            loss = torch.stack([term(outputs) for term in losses.values()]).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if decay > 0:  # zoomsr.modules.ema.EMA's rule, warm-up included
            d = min(decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for s, p in zip(shadow, params):
                    s.lerp_(p.detach().float(), 1.0 - d)
        # Free this step's tensors before the next forward, as Lightning's loop does: kept alive
        # into the next step they cost A 3-8% more CPU time here (4 interleaved pairs; page
        # faults of fresh allocations), which would flatter B.
        del outputs, loss
    _sync(device)
    stamps.append((time.perf_counter(), time.process_time()))
    ema = shadow if decay > 0 else params
    state = {"params": [p.detach().cpu() for p in params], "ema": [s.detach().cpu() for s in ema]}
    return _durations(stamps[:-1], stamps[1:], args), state


def _durations(starts: list[Stamp], ends: list[Stamp], args: argparse.Namespace) -> Timings:
    """Wall and process-CPU seconds of the timed steps (warm-up dropped)."""
    timed = slice(args.warmup, args.warmup + args.steps)
    pairs = list(zip(starts[timed], ends[timed]))
    return {
        "wall": [e[0] - s[0] for s, e in pairs],
        "cpu": [e[1] - s[1] for s, e in pairs],
        "window": [pairs[0][0][0], pairs[-1][1][0]],  # wall clock from first start to last end
    }


class StepTimer(pl.Callback):
    """Stamps (wall, process CPU) at the start and end of every training batch, after a CUDA
    sync when on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.starts: list[Stamp] = []
        self.ends: list[Stamp] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            torch.manual_seed(RNG_SEED)  # as A does: the same global draws without seeds
        _sync(self.device)
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        self.ends.append((time.perf_counter(), time.process_time()))


class CachedBatches(torch.utils.data.Dataset):
    """``length`` times the same batch, already on its device (no collation, no copies)."""

    def __init__(self, batch: Batch, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        return self.batch


def _identity(item: Batch) -> Batch:
    return item


def make_trainer(
    args: argparse.Namespace, cfg: DictConfig, max_steps: int, callback: pl.Callback, root: str
) -> pl.Trainer:
    """A real Trainer with everything that is not the training loop switched off."""
    return pl.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        benchmark=False,
        use_distributed_sampler=False,
        log_every_n_steps=int(cfg.trainer.log_every_n_steps),  # conf/trainer/default.yaml
        callbacks=[callback],
        default_root_dir=root,
    )


def run_lightning(
    cfg: DictConfig, batch: Batch, args: argparse.Namespace
) -> tuple[Timings, Timings, dict]:
    """B: SRModule under a Trainer. Returns in-step and period timings and the final weights."""
    module = build_module(cfg)
    timer = StepTimer(torch.device(args.device))
    n = args.warmup + args.steps + 1  # one more batch gives the last timed step its period
    loader = DataLoader(CachedBatches(batch, n), batch_size=None, collate_fn=_identity)
    with tempfile.TemporaryDirectory() as root:
        make_trainer(args, cfg, n, timer, root).fit(module, train_dataloaders=loader)
    in_step = _durations(timer.starts, timer.ends, args)
    period = _durations(timer.starts[:-1], timer.starts[1:], args)
    params = [p for p in module.backbone.parameters() if p.requires_grad]
    ema = module.ema.shadow.values() if module.ema is not None else params
    state = {"params": [p.detach().cpu() for p in params], "ema": [s.detach().cpu() for s in ema]}
    return in_step, period, state


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest |A - B| over all trainable weights and EMA shadows."""
    pairs = list(zip(a["params"], b["params"])) + list(zip(a["ema"], b["ema"]))
    return max(float((x.float() - y.float()).abs().max()) for x, y in pairs)


def interleave(
    run_a: Callable[[], tuple], run_b: Callable[[], tuple], repeats: int
) -> list[tuple[tuple, tuple]]:
    """``repeats`` pairs (result A, result B), the order alternating: A B, B A, A B, ..."""
    pairs = []
    for r in range(repeats):
        if r % 2 == 0:
            a = run_a()
            b = run_b()
        else:
            b = run_b()
            a = run_a()
        pairs.append((a, b))
        print(f"  repeat {r + 1}/{repeats} done", flush=True)
    return pairs


def ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def summarise(pairs: list[tuple[tuple, tuple]]) -> dict:
    """Per loop (A; B in-step; B period) and clock (wall; cpu): the median ms/step pooled over
    all repeats, each repeat's median, and the ratio to A of the pooled medians."""
    loops = {
        "A": [a for (a, _), _ in pairs],
        "B in-step": [b for _, (b, _, _) in pairs],
        "B period": [p for _, (_, p, _) in pairs],
    }
    out: dict = {"max_abs_weight_diff": max_abs_diff(pairs[0][0][1], pairs[0][1][2])}
    for clock in ("wall", "cpu"):
        base = ms([t for run in loops["A"] for t in run[clock]])
        for name, runs in loops.items():
            pooled = ms([t for run in runs for t in run[clock]])
            per_repeat = [ms(run[clock]) for run in runs]
            out[f"{name} {clock}"] = {
                "median_ms": pooled,
                "per_repeat_ms": per_repeat,
                "ratio": pooled / base,
                "pair_ratios": [r / ms(a[clock]) for r, a in zip(per_repeat, loops["A"])],
            }
    return out


def report(s: dict, args: argparse.Namespace) -> None:
    """A Markdown table (paste into RESULTS) and the verdict against the 1.05 goal."""
    steps = args.steps * args.repeats
    print(
        f"\n| loop | clock | median ms/step ({steps} steps) | per-repeat medians | ratio to A "
        "| per-repeat ratios: median (min–max) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for clock in ("wall", "cpu"):
        for name in ("A", "B in-step", "B period"):
            r = s[f"{name} {clock}"]
            lo, hi = min(r["per_repeat_ms"]), max(r["per_repeat_ms"])
            pr = r["pair_ratios"]
            print(
                f"| {LOOP_NAMES[name]} | {clock} | {r['median_ms']:.1f} | {lo:.1f}–{hi:.1f} | "
                f"{r['ratio']:.3f} | {statistics.median(pr):.3f} ({min(pr):.3f}–{max(pr):.3f}) |"
            )
    print(f"\nA and B end at the same weights: max |A - B| = {s['max_abs_weight_diff']:.2e}")
    for clock in ("wall", "cpu"):
        ratio = s[f"B period {clock}"]["ratio"]
        verdict = "within" if ratio <= 1.05 else "ABOVE"
        print(f"overhead B period / A ({clock}): {ratio:.3f}, {verdict} the 1.05 goal")


@contextlib.contextmanager
def probes(calls: dict[str, list[Stamp]]) -> Iterator[None]:
    """Wrap every :data:`PROBES` function to append (start, seconds) of each call to
    ``calls[label]``; the originals are put back on exit."""
    saved = []
    for label, owner, name in PROBES:
        original, own = getattr(owner, name), name in vars(owner)
        saved.append((owner, name, original, own))
        setattr(owner, name, _timed(original, calls.setdefault(label, [])))
    try:
        yield
    finally:
        for owner, name, original, own in saved:
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def _timed(fn: Callable, out: list[Stamp]) -> Callable:
    """``fn``, appending (wall start, process-CPU seconds) of every call to ``out``."""

    def timed(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            out.append((start, time.process_time() - cpu))

    return timed


def _probed_run(run: Callable[[], Timings], steps: int) -> dict[str, float]:
    """CPU ms per timed step inside each :data:`PROBES` function, the rest, and the step."""
    calls: dict[str, list[Stamp]] = {}
    with probes(calls):
        timings = run()
    t0, t1 = timings["window"]
    parts = {
        label: 1e3 * sum(dt for start, dt in c if t0 <= start < t1) / steps
        for label, c in calls.items()
    }
    step = 1e3 * sum(timings["cpu"]) / steps
    top = sum(v for label, v in parts.items() if not label.startswith(" "))
    return parts | {"rest": step - top, "step": step}


def breakdown(cfg: DictConfig, batch: Batch, args: argparse.Namespace) -> dict:
    """Where a step's CPU time goes: ``--repeats`` more interleaved runs of A and B with
    :data:`PROBES` in place; medians over the runs of the ms per step in each probed function and
    in the rest (A: the loop and its hand-written EMA; B: Lightning's loop and hooks). Kept out
    of the headline timings (a probe costs a few microseconds per call). On CUDA these are host
    times: launches, and any wait for the GPU lands where it happens (mostly in the rest)."""
    pairs = interleave(
        lambda: _probed_run(lambda: run_plain(cfg, batch, args)[0], args.steps),
        lambda: _probed_run(lambda: run_lightning(cfg, batch, args)[1], args.steps),
        args.repeats,
    )
    out = {}
    for k, name in enumerate(("A", "B")):
        labels = {label for pair in pairs for label in pair[k]}
        out[name] = {
            label: statistics.median(pair[k].get(label, 0.0) for pair in pairs) for label in labels
        }
    return out


def report_breakdown(parts: dict) -> None:
    print("\n| part of a step (CPU clock) | A ms/step | B ms/step | B - A |")
    print("|---|---:|---:|---:|")
    for label in [label for label, _, _ in PROBES] + ["rest", "step"]:
        a, b = parts["A"].get(label, 0.0), parts["B"].get(label, 0.0)
        print(f"| {label.replace('  ', '- ')} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")


LOOP_NAMES = {
    "A": "A plain PyTorch",
    "B in-step": "B SRModule+Trainer, in-step",
    "B period": "B SRModule+Trainer, period",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    known, _ = pre.parse_known_args(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[pre])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    # Many short runs rather than a few long ones: the load of a shared machine drifts over
    # tens of seconds, and more A/B alternations cancel more of it.
    p.add_argument("--steps", type=int, default=8, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of a run")
    p.add_argument("--repeats", type=int, default=5, help="runs of A and of B, interleaved")
    p.add_argument("--inner-channel", type=int)
    p.add_argument("--channel-mults", help="comma-separated, e.g. 1,2,2")
    p.add_argument("--res-blocks", type=int)
    p.add_argument("--crop", type=int, help="HR side; LR is crop / 4")
    p.add_argument("--batch", type=int)
    p.add_argument("--ema-decay", type=float, default=0.9999, help="0 disables the EMA in both")
    p.add_argument("--no-seeds", dest="seeds", action="store_false", help="global RNG draws")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, 0 keeps torch's default (default 1: on a shared machine more "
        "threads than free cores make OpenMP spin-wait, and steps get 3-10x slower and erratic)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="then --repeats more (probed) runs of each, splitting a step into forward, "
        "backward, Adam, self.log, EMA and the rest",
    )
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.set_defaults(**PRESETS[known.preset])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False  # what the Trainer sets with benchmark=False
    warnings.filterwarnings("ignore", module="lightning")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    device = torch.device(args.device)
    cfg = compose_cfg(args)
    batch = make_batch(args, device)
    print(
        f"SR3 inner={args.inner_channel} mults=[{args.channel_mults}] res_blocks={args.res_blocks}"
        f" | batch {args.batch} x {args.crop}px | {args.device} {args.precision} "
        f"threads={torch.get_num_threads()} | seeds={'per-sample' if args.seeds else 'none'} "
        f"ema={args.ema_decay} | {args.repeats} x ({args.warmup} + {args.steps}) steps each",
        flush=True,
    )
    pairs = interleave(
        lambda: run_plain(cfg, batch, args), lambda: run_lightning(cfg, batch, args), args.repeats
    )
    summary = summarise(pairs)
    report(summary, args)
    if args.breakdown:
        print("breakdown (probed runs):", flush=True)
        summary["breakdown"] = breakdown(cfg, batch, args)
        report_breakdown(summary["breakdown"])
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None}} | summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
