"""``train.py``: build data, backbone, losses and module from the config; fit with Lightning."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from zoomsr.checkpoint import check_resume, read_checkpoint
from zoomsr.errors import ZoomSRError
from zoomsr.prompts import build_prompt_source
from zoomsr.runfolder import RunLock, is_rank_zero, remove_outputs, write_text
from zoomsr.tasks.common import build_loggers, close_wandb, output_dir, set_offline_defaults
from zoomsr.tasks.preflight import check_values
from zoomsr.tasks.resume import resolve_ckpt_path

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
    """Train ``cfg.backbone`` on ``cfg.data``; resume from ``cfg.ckpt_path`` when set
    (``auto``: from the run folder's last checkpoint if it has one).

    Returns:
        The last logged metrics (``train/loss``, ``val/psnr_y``, …) as floats, plus
        ``out_dir`` and ``last_ckpt`` paths.
    """
    set_offline_defaults()
    check_values(cfg, "train")
    out = output_dir(cfg)
    lock = RunLock(out) if is_rank_zero() else None
    try:
        return _fit(cfg, out)
    finally:
        if lock is not None:
            lock.release()


def claim_fresh_start(out: Path, overwrite: bool) -> None:
    """A fresh run into a folder holding another run's checkpoints would mix the two (its
    best-k bookkeeping, its last.ckpt): refuse, or with ``overwrite=true`` remove them."""
    folder = out / "checkpoints"
    if not any(folder.glob("*.ckpt")):
        return
    if not overwrite:
        raise ZoomSRError(
            f"out_dir '{out}' already holds a training run ({folder}): resume it with "
            "ckpt_path=auto, pass overwrite=true to start over there, or choose a new out_dir."
        )
    remove_outputs(out, ["checkpoints"])


def _fit(cfg: DictConfig, out: Path) -> dict:
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
        # nn.Module.compile() compiles in place and returns None (torch.compile(m) would
        # return a wrapper whose state-dict keys gain an "_orig_mod." prefix).
        module.backbone.compile()
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out)  # `auto`: the run folder's own
    if ckpt_path is None and trainer.is_global_zero:
        claim_fresh_start(out, bool(cfg.get("overwrite")))
    if ckpt_path is not None and cfg.get("grpo") is not None:  # the VLM adapter's checkpoint
        read_checkpoint(ckpt_path)
    elif ckpt_path is not None:
        # A clear error for a missing or unsafe file, another architecture, or callback state
        # naming files outside this run, before Lightning reads it.
        check_resume(read_checkpoint(ckpt_path), module.backbone, cfg.backbone._target_,
                     ckpt_path, out / "checkpoints")  # fmt: skip
    if trainer.is_global_zero:
        write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
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
