"""``ckpt_path=auto``: resume a run from its own folder when it has a checkpoint there.

A run folder that is reused (a fixed ``out_dir`` or ``hydra.run.dir``, a SLURM job requeued
after preemption, an Optuna trial started again) continues where it stopped; a new folder starts
fresh. The candidates are ``<run>/checkpoints/last.ckpt`` (saved every
``trainer.val_check_interval`` steps and at the end) and Lightning's preemption checkpoints
``<run>/hpc_ckpt_N.ckpt`` (written by SLURMEnvironment's auto-requeue on SIGUSR1); the newest
file wins.
"""

from __future__ import annotations

from pathlib import Path

from zoomsr.checkpoint import read_checkpoint
from zoomsr.runfolder import is_rank_zero


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``ckpt_path`` as Lightning's ``fit`` takes it: ``auto`` becomes the run folder's newest
    checkpoint, or None (a fresh start); any other value is returned unchanged. With ``auto``
    one line says which (on rank 0)."""
    if ckpt_path != "auto":
        return ckpt_path
    candidates = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    found = [p for p in candidates if p.is_file()]
    if not found:
        _say(f"ckpt_path=auto: no checkpoint in {run_dir}, starting fresh")
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    step = read_checkpoint(newest).get("global_step")  # also refuses an unsafe file
    _say(f"ckpt_path=auto: resuming from {newest} (step {step})")
    return str(newest)


def _say(line: str) -> None:
    if is_rank_zero():
        print(f"[zoomsr] {line}", flush=True)
