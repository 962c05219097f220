"""Distributed evaluation: one evaluation's images sharded over N processes (torch.distributed).

``python evaluate.py … devices=N`` starts N ranks on this machine (``strategy=ddp_spawn``, the
default, or ``ddp_fork``; the calling process is rank 0 and starts ranks 1..N-1, as Lightning's
``ddp_spawn`` does, without re-running the command). ``strategy=ddp`` joins ranks started by
someone else: ``torchrun --nproc-per-node N evaluate.py …`` or the N srun tasks of a SLURM job.
The process group is gloo (only rows travel through it), on CPUs and GPUs alike; rank ``r``
computes on ``cuda:<local rank>`` when the device is CUDA.

What each rank does, and why the result equals one process exactly:

- **Sharding** (:class:`Shard`): every rank walks the protocol's images in the same order and
  asks ``done(scale, name)`` of each before computing it; the ``i``-th distinct image name asked
  about belongs to rank ``i mod N`` (round robin: balanced, the same on every rank, and one
  image's whole zoom chain stays on one rank). The others' images count as done.
- **Rows**: each rank appends its rows to its own ``results.rank{r}.jsonl`` (no two processes
  write one file); FID features and panels are per-image files written by the image's rank.
- **Gather**: at the end the rows of every rank go to rank 0 (``gather_object``), which writes
  ``results.jsonl`` once, in the order ``(scale, image)``, and removes the rank files; the summary,
  FID (from every image's feature file, in name order) and the reports are then made by rank 0
  alone, by the same code and from the same rows as a single process, which orders its rows the
  same way.
- **Resume**: a rerun (any N, 1 included) first folds the rank files a killed run left into
  ``results.jsonl`` (a line cut short is dropped), so every finished image is skipped.

The run folder must be shared by all ranks (as Lightning's checkpoints need on a cluster).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zoomsr.errors import ZoomSRError
from zoomsr.reporting import ResultLog

Strategy = Literal["auto", "ddp_spawn", "ddp_fork", "ddp"]
STRATEGIES = ("auto", "ddp_spawn", "ddp_fork", "ddp")
RANK_FILES = "results.rank*.jsonl"
TIMEOUT = timedelta(minutes=30)  # a rank that dies leaves the others waiting this long at most

# Set in a rank this module started (ranks 1..N-1), read by :func:`begin`.
_joined: dict[str, Any] = {}


@dataclass
class Shard:
    """Rank ``rank`` of ``world`` evaluation processes (``local_rank`` on its machine)."""

    rank: int
    world: int
    local_rank: int = 0
    workers: list = field(default_factory=list, repr=False)
    rendezvous: str | None = field(default=None, repr=False)
    _order: dict[str, int] = field(default_factory=dict, repr=False)

    def owns(self, name: str) -> bool:
        """Whether this rank computes image ``name`` (the i-th distinct name asked: rank i % N)."""
        index = self._order.setdefault(name, len(self._order))
        return index % self.world == self.rank

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:<local rank>`` (modulo the visible GPUs) for CUDA."""
        if device.type == "cuda" and torch.cuda.device_count() > 0:
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return device

    def result_log(self, out: Path) -> ResultLog:
        return ShardLog(out, self.rank)


class ShardLog(ResultLog):
    """The rows of earlier runs (``results.jsonl``, read only) and this rank's new rows, which
    go to ``results.rank{r}.jsonl``."""

    def __init__(self, out: Path, rank: int) -> None:
        super().__init__(out / f"results.rank{rank}.jsonl")
        merged = out / "results.jsonl"
        if merged.exists():  # made whole by rank 0 (:func:`consolidate`) before the ranks start
            earlier = [json.loads(line) for line in merged.read_text().splitlines() if line]
            self.rows = earlier + self.rows
            self._done = {(r["scale"], r["image"]) for r in self.rows}

    def _rewrite(self, lines: list[str]) -> None:
        """Rows dropped by ``keep`` are forgotten here only: rank 0 rewrites results.jsonl."""


def world_of(cfg) -> tuple[int, Strategy]:
    """``(devices, strategy)`` of an evaluation config, checked."""
    devices, strategy = cfg.get("devices", 1), cfg.get("strategy", "auto")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ZoomSRError(
            f"devices={devices}: the number of evaluation processes, an integer >= 1."
        )
    if strategy not in STRATEGIES:
        raise ZoomSRError(f"strategy={strategy}: one of {list(STRATEGIES)}.")
    return devices, strategy


def begin(cfg, out: Path, device: torch.device) -> Shard | None:
    """Set up this process's part of an evaluation in ``out``: None for a single process,
    else its :class:`Shard` (rank 0 first starts ranks 1..N-1 when they are its to start).

    Either way the rank files a killed distributed run left are first folded into
    ``results.jsonl`` (by rank 0, before any rank reads it)."""
    devices, strategy = world_of(cfg)
    if _joined:  # a rank started by :func:`_start_workers`
        shard = Shard(_joined["rank"], _joined["world"], _joined["rank"])
        _init_group(shard, _joined["init"])
    elif strategy == "ddp" or (strategy == "auto" and _launched_externally()):
        shard = _from_environment()
    elif devices > 1:
        consolidate(out)
        shard = Shard(0, devices)
        shard.rendezvous = tempfile.mkdtemp(prefix="zoomsr-dist-")
        init = f"file://{shard.rendezvous}/store"
        method = "fork" if strategy == "ddp_fork" else "spawn"
        shard.workers = _start_workers(cfg, out, devices, init, method)
        _init_group(shard, init)
    else:
        consolidate(out)
        return None
    if shard.rank == 0 and not shard.workers:
        consolidate(out)
    dist.barrier()  # nobody reads results.jsonl before rank 0 has folded the rank files in
    return shard


def gather_rows(shard: Shard | None, out: Path, rows: list[dict]) -> list[dict] | None:
    """Every rank's rows on rank 0, in the order ``(scale, image)`` (None on the other ranks).

    Rank 0 also writes ``results.jsonl`` once with every row (of earlier scales too) and
    removes the rank files. One process: its rows, in the same order."""
    key = _row_order
    if shard is None:
        return sorted(rows, key=key)
    parts: list | None = [None] * shard.world if shard.rank == 0 else None
    dist.gather_object(rows, parts, dst=0)
    if shard.rank != 0:
        return None
    gathered = {(r["scale"], r["image"]): r for part in parts for r in part}
    earlier = ResultLog(out / "results.jsonl").rows  # rows of scales not asked for this time
    every = {(r["scale"], r["image"]): r for r in earlier} | gathered
    from zoomsr.runfolder import write_text

    lines = "".join(json.dumps(r) + "\n" for r in sorted(every.values(), key=key))
    computed = [_count_lines(out / f"results.rank{r}.jsonl") for r in range(shard.world)]
    write_text(out / "results.jsonl", lines)
    for path in out.glob(RANK_FILES):
        path.unlink()
    print(
        f"[zoomsr] {shard.world} ranks computed {' + '.join(map(str, computed))} rows", flush=True
    )
    return sorted(gathered.values(), key=key)


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def end(shard: Shard | None, failed: bool) -> None:
    """Leave the process group; rank 0 waits for the ranks it started (or stops them when the
    evaluation failed) and reports a rank that did not finish."""
    if shard is None:
        return
    if dist.is_initialized():
        dist.destroy_process_group()
    bad = []
    for rank, proc in enumerate(shard.workers, start=1):
        if failed:
            proc.terminate()
        proc.join()
        if proc.exitcode != 0 and not failed:
            bad.append(f"rank {rank} exited with {proc.exitcode}")
    if shard.rendezvous:
        shutil.rmtree(shard.rendezvous, ignore_errors=True)
    if bad:
        raise ZoomSRError(f"distributed evaluation: {', '.join(bad)} (its error is printed above).")


def consolidate(out: Path) -> None:
    """Fold ``results.rank*.jsonl`` (left by a killed distributed run) into ``results.jsonl``:
    whole rows only, each ``(scale, image)`` once; then remove them. Rank 0 only."""
    parts = sorted(out.glob(RANK_FILES))
    if not parts:
        ResultLog(out / "results.jsonl")  # drops a line cut short, so every rank can read it
        return
    rows = {}
    for path in [out / "results.jsonl", *parts]:
        if path.exists():
            for r in ResultLog(path).rows:  # drops a line cut short by the kill
                rows.setdefault((r["scale"], r["image"]), r)
    from zoomsr.runfolder import write_text

    write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows.values()))
    for path in parts:
        path.unlink()


def _row_order(row: dict) -> tuple:
    return row["scale"], row["image"]


def _init_group(shard: Shard, init_method: str) -> None:
    if not dist.is_initialized():
        dist.init_process_group(
            "gloo", init_method=init_method, rank=shard.rank, world_size=shard.world,
            timeout=TIMEOUT,
        )  # fmt: skip


def _launched_externally() -> bool:
    """torchrun (its variables), or the tasks of one srun step."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ


def _from_environment() -> Shard:
    """The rank torchrun or srun gave this process (Lightning's cluster environments read it)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        env, init = TorchElasticEnvironment(), "env://"  # torchrun's store and variables
    elif SLURMEnvironment.detect():
        env = SLURMEnvironment()
        init = f"tcp://{env.main_address}:{env.main_port}"
    else:
        raise ZoomSRError(
            "strategy=ddp joins ranks started by torchrun or srun, and none is set here; "
            "use devices=N (strategy=ddp_spawn) to start N processes on this machine."
        )
    shard = Shard(env.global_rank(), env.world_size(), env.local_rank())
    _init_group(shard, init)
    return shard


def _start_workers(cfg, out: Path, world: int, init: str, method: str) -> list:
    """Ranks 1..world-1 as processes of this machine, each running the same evaluation."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain |= {"out_dir": str(out), "overwrite": False}  # rank 0 owns the folder and its lock
    threads = torch.get_num_threads()
    ctx = mp.get_context(method)
    workers = []
    for rank in range(1, world):
        proc = ctx.Process(target=_worker, args=(rank, world, init, plain, threads), daemon=False)
        proc.start()
        workers.append(proc)
    return workers


def _worker(rank: int, world: int, init: str, plain: dict, threads: int) -> None:
    """One started rank: the evaluation of ``plain`` (a resolved config) as rank ``rank``."""
    from omegaconf import OmegaConf

    from zoomsr.tasks import evaluate

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    _joined.update(rank=rank, world=world, init=init)
    evaluate.run(OmegaConf.create(plain))
