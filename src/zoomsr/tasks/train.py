"""``train.py``: build data, backbone, losses and module from the config; fit with Lightning."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from zoomsr.checkpoint import read_checkpoint
from zoomsr.prompts import build_prompt_source
from zoomsr.tasks.common import build_loggers, close_wandb, output_dir, set_offline_defaults

log = logging.getLogger("zoomsr")


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of ``cfg``: backbone, loss terms, optimizer, scheduler and the
    optional prompt source (``prompt=``); with a ``grpo`` node (``experiment=coz_grpo``) the
    prompt VLM's GRPO module instead, which trains no SR backbone."""
    if cfg.get("grpo") is not None:
        scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
        return instantiate(cfg.grpo.module, optimizer=instantiate(cfg.optim), scheduler=scheduler)
    backbone = instantiate(cfg.backbone)
    losses = {name: instantiate(term) for name, term in cfg.loss.items()}
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return instantiate(
        cfg.module,
        backbone=backbone,
        losses=losses,
        optimizer=instantiate(cfg.optim),
        scheduler=scheduler,
        backbone_config=OmegaConf.to_yaml(cfg.backbone, resolve=True),
        prompt_source=build_prompt_source(cfg.get("prompt")),
    )


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    if cfg.get("grpo") is not None:  # view pairs of zoom chains (zoomsr.data.zoom_views)
        return instantiate(cfg.grpo.data, seed=cfg.seed)
    degradation = instantiate(cfg.degradation) if cfg.get("degradation") else None
    return instantiate(cfg.data, degradation=degradation, seed=cfg.seed)


def build_callbacks(cfg: DictConfig, out: Path) -> list[pl.Callback]:
    """Every entry of the ``callbacks`` group; checkpoints go to ``<out>/checkpoints``."""
    callbacks = []
    for cb_cfg in (cfg.get("callbacks") or {}).values():
        if cb_cfg is None:
            continue
        extra = {"dirpath": str(out / "checkpoints")} if cb_cfg.get("dirpath", 0) is None else {}
        callbacks.append(instantiate(cb_cfg, **extra))
    return callbacks


def run(cfg: DictConfig) -> dict:
    """Train ``cfg.backbone`` on ``cfg.data``; resume from ``cfg.ckpt_path`` when set.

    Returns:
        The last logged metrics (``train/loss``, ``val/psnr_y``, …) as floats, plus
        ``out_dir`` and ``last_ckpt`` paths.
    """
    set_offline_defaults()
    out = output_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    loggers = build_loggers(cfg, out)
    # No validation images: skip the validation loop instead of running an empty one.
    no_val = {} if getattr(datamodule, "val_hr_dir", None) else {"limit_val_batches": 0}
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=build_callbacks(cfg, out),
        logger=loggers or False,
        default_root_dir=str(out),
        **no_val,
    )
    if cfg.get("compile"):
        module.backbone = module.backbone.compile()
    if trainer.is_global_zero:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None:
        read_checkpoint(ckpt_path)  # a clear error for a missing or unsafe file, before Lightning
    # weights_only: resuming never unpickles arbitrary objects.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    close_wandb(loggers)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    last = out / "checkpoints" / "last.ckpt"
    result = metrics | {"out_dir": str(out), "last_ckpt": str(last) if last.exists() else None}
    if trainer.is_global_zero:
        log.info("finished at step %d: %s", trainer.global_step, result)
        print(f"[zoomsr] run folder: {out}")
    return result
