"""Pieces every task shares: offline switches, output folder, device, loggers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from zoomsr.errors import ZoomSRError

log = logging.getLogger("zoomsr")


def set_offline_defaults() -> None:
    """Keep libraries from waiting on a network: weights come from local paths or caches.

    Each switch is only a default; export ``HF_HUB_OFFLINE=0`` (etc.) to go online.
    """
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_SILENT": "true",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }.items():
        os.environ.setdefault(key, value)


def output_dir(cfg: DictConfig) -> Path:
    """The task's output folder: Hydra's job folder when run by Hydra (one per multirun job),
    otherwise ``cfg.out_dir`` (in-process calls, tests)."""
    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    elif cfg.get("out_dir"):
        path = Path(cfg.out_dir)
    else:
        raise ZoomSRError("out_dir is not set: pass out_dir=/path/to/results.")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cpu``, ``cuda``, ``cuda:1`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ZoomSRError(
            f"device={name} asked for, but no CUDA device is visible. Use device=cpu."
        )
    return torch.device(name)


def build_loggers(cfg: DictConfig, save_dir: Path) -> list:
    """Instantiate every entry of the ``logger`` group, writing under ``save_dir``."""
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        loggers.append(instantiate(lg_cfg, save_dir=str(save_dir)))
        log.info("logger %s -> %s", name, save_dir)
    return loggers


def close_wandb(loggers: list) -> None:
    """End the W&B run so the next job of a multirun (same process) starts its own run."""
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        wandb.finish()
