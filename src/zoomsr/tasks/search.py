"""Hyper-parameter searches (``hparams_search=…``, Hydra's Optuna sweeper).

The value a trial returns to the sweeper is one entry of the task's result dict, named by
``optimized_metric`` (``val/psnr_y``, ``train/loss``, …); whether higher or lower is better
follows from the metric's name (:func:`metric_direction`, the resolver
``${zoomsr.direction:${optimized_metric}}`` in ``conf/hparams_search/``).
:class:`RecordTrials` writes where each trial ran (``<sweep>/trials.jsonl``) and adds the best
trial's run folder to the sweeper's ``optimization_results.yaml``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from zoomsr.errors import ZoomSRError

# by the last part of a metric's name, without its variant suffix (psnr_y, lpips_vgg, fid)
HIGHER_IS_BETTER = ("psnr", "ssim", "clipiqa", "musiq", "maniqa", "acc")
LOWER_IS_BETTER = ("lpips", "fid", "niqe", "loss", "dists", "mse", "mae")
TRIALS_FILE = "trials.jsonl"


def metric_direction(name: str) -> Literal["maximize", "minimize"]:
    """``maximize`` for fidelity and quality scores (PSNR, SSIM, CLIP-IQA, MUSIQ, MANIQA),
    ``minimize`` for distances and losses (LPIPS, FID, NIQE, ``*/loss``)."""
    stem = str(name).rsplit("/", 1)[-1].lower()
    if stem.startswith(HIGHER_IS_BETTER):
        return "maximize"
    if stem.startswith(LOWER_IS_BETTER) or stem.endswith("loss"):
        return "minimize"
    raise ZoomSRError(
        f"optimized_metric={name}: cannot tell whether higher or lower is better; "
        "set hydra.sweeper.direction=maximize (or minimize)."
    )


def optimized_value(result: dict, name: str | None) -> float | None:
    """The entry ``name`` of a task's result as a float, for the sweeper (None: no search)."""
    if name is None:
        return None
    if name not in result:
        known = sorted(k for k, v in result.items() if isinstance(v, int | float))
        raise ZoomSRError(
            f"optimized_metric={name} is not among the run's metrics {known}: choose one of "
            "them (validation metrics need data.val_hr_dir)."
        )
    return float(result[name])


OmegaConf.register_new_resolver("zoomsr.direction", metric_direction, replace=True)


class RecordTrials(Callback):
    """A Hydra callback of ``hparams_search`` configs: each trial's run folder, overrides and
    value go to ``<sweep dir>/trials.jsonl`` when the trial ends (in the trial's own process,
    wherever the launcher runs it); at the end of the search ``best_run_dir`` is added to
    ``optimization_results.yaml``."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        completed = job_return.status == JobStatus.COMPLETED
        value = job_return.return_value if completed else None  # a failed trial: its exception
        record = {
            "job": int(config.hydra.job.num),
            "run_dir": str(config.hydra.runtime.output_dir),
            "overrides": list(config.hydra.overrides.task),
            "status": job_return.status.name,
            "value": float(value) if isinstance(value, int | float) else None,
        }
        # one write of one line in append mode: parallel trials do not interleave their lines
        line = json.dumps(record) + "\n"
        fd = os.open(
            Path(config.hydra.sweep.dir) / TRIALS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT
        )
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        results_file = sweep / "optimization_results.yaml"
        if not results_file.exists():  # not an Optuna search, or it stopped early
            return
        results = OmegaConf.to_container(OmegaConf.load(results_file))
        best = best_trial(
            read_trials(sweep), results.get("best_params", {}), results.get("best_value")
        )
        if best is None:
            return
        results |= {"best_run_dir": best["run_dir"], "trials": str(sweep / TRIALS_FILE)}
        tmp = results_file.with_suffix(".yaml.tmp")
        OmegaConf.save(OmegaConf.create(results), tmp)
        tmp.replace(results_file)


def read_trials(sweep_dir: str | Path) -> list[dict]:
    """The records :class:`RecordTrials` wrote, in the order the trials ended."""
    path = Path(sweep_dir) / TRIALS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def best_trial(trials: list[dict], best_params: dict, best_value: float | None) -> dict | None:
    """The record of the trial Optuna named best: its parameters among its overrides and its
    value equal to the best value (the latest such record, should a trial have run twice)."""
    wanted = {f"{k}={v}" for k, v in best_params.items()}
    for record in reversed(trials):
        value = record.get("value")
        same_value = (
            value is not None and best_value is not None and math.isclose(value, best_value)
        )
        if wanted <= set(record["overrides"]) and same_value:
            return record
    return None
