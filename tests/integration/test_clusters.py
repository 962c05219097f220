"""Beyond one machine: the submitit launchers, SLURM requeue, ckpt_path=auto, Optuna searches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import ROOT
from tests.integration.test_train import SGD, photos, tiny  # noqa: F401 (photos: a fixture)
from zoomsr.checkpoint import read_checkpoint
from zoomsr.tasks import train

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def run_train(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_submitit_local_sweep_gives_one_complete_run_per_point(tmp_path):
    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=quickstart",
        "debug=fast",
        "optim.lr=1e-4,2e-4",
        f"out_dir={sweep}",
    )
    for job, lr in [("0", 1e-4), ("1", 2e-4)]:
        run = sweep / job
        ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
        assert ckpt["global_step"] == 1  # debug=fast: one training step
        assert ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == lr
        assert OmegaConf.load(run / "config.yaml").optim.lr == lr
    # each point ran as its own submitit job (its own process, log and result)
    assert len(list((sweep / ".submitit").glob("*/*_0_result.pkl"))) == 2


def test_slurm_launcher_writes_a_multi_gpu_requeueable_job(compose_cfg, tmp_path, monkeypatch):
    """The sbatch script submitit would submit, rendered by submitit itself from the launcher
    config (nothing is submitted; `srun` exists only to pass submitit's cluster check)."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from tests.conftest import CONF_DIR

    # The trainer built below sets the process-wide rank to its SLURM rank (3): put it back after
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            ["hydra/launcher=submitit_slurm", f"out_dir={tmp_path}", "hydra.launcher.nodes=2"],
            return_hydra_config=True,
        )
    params = dict(instantiate(cfg.hydra.launcher).params)
    assert params["tasks_per_node"] == params["gpus_per_node"] == 8
    # the launcher's own mapping of its keys onto submitit's executor
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -m submitit", "uid")
    flags = {line for line in sbatch.splitlines() if line.startswith("#SBATCH")}
    assert {
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=2880",
        "#SBATCH --signal=USR1@120",  # Lightning's requeue signal, not submitit's USR2
    } <= flags, sbatch
    assert sum("--signal" in f for f in flags) == 1


def test_lightning_takes_ranks_and_requeue_from_slurm(compose_cfg, tmp_path, monkeypatch):
    """Inside one srun task of a 2-node x 2-task job, trainer=ddp reads the node count from
    SLURM and Lightning selects SLURMEnvironment with auto-requeue on SIGUSR1."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it: undo

    slurm = {
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NNODES": "2",
        "SLURM_NTASKS": "4",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_NODELIST": "gpu[01-02]",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    cfg = compose_cfg(
        "train",
        ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", f"out_dir={tmp_path}"],
    )
    assert cfg.trainer.num_nodes == 2
    trainer = instantiate(cfg.trainer, logger=False, precision="32-true")
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1
    assert (trainer.num_nodes, trainer.global_rank, trainer.local_rank) == (2, 3, 1)
    assert torch.distributed.is_available()


def _losses(csv_file) -> dict[int, float]:
    import csv

    with open(csv_file) as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]
        }


def test_ckpt_path_auto_starts_fresh_then_continues_in_the_same_folder(
    compose_cfg, request, tmp_path, capsys
):
    hr = request.getfixturevalue("photos")
    run = tmp_path / "run"
    first = train.run(
        compose_cfg("train", tiny(hr, run, *SGD, "trainer.max_steps=2", "ckpt_path=auto"))
    )
    assert (
        f"[zoomsr] ckpt_path=auto: no checkpoint in {run}, starting fresh"
        in capsys.readouterr().out
    )
    assert read_checkpoint(first["last_ckpt"])["global_step"] == 2
    # the same command again with a longer schedule: it picks up at step 2, not at 0
    second = train.run(
        compose_cfg("train", tiny(hr, run, *SGD, "trainer.max_steps=4", "ckpt_path=auto"))
    )
    out = capsys.readouterr().out
    assert f"[zoomsr] ckpt_path=auto: resuming from {run}/checkpoints/last.ckpt (step 2)" in out
    assert read_checkpoint(second["last_ckpt"])["global_step"] == 4
    resumed = _losses(run / "csv" / "version_1" / "metrics.csv")
    assert sorted(resumed) == [2, 3]
    # ...and continues the uninterrupted run's loss curve exactly
    whole = train.run(
        compose_cfg("train", tiny(hr, tmp_path / "whole", *SGD, "trainer.max_steps=4"))
    )
    full = _losses(tmp_path / "whole" / "csv" / "version_0" / "metrics.csv")
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], abs=1e-6), step
    torch.testing.assert_close(
        read_checkpoint(whole["last_ckpt"])["state_dict"],
        read_checkpoint(second["last_ckpt"])["state_dict"],
        atol=1e-6,
        rtol=1e-5,
    )


def test_ckpt_path_auto_takes_the_newest_of_last_and_preemption_checkpoints(tmp_path, capsys):
    from zoomsr.tasks.resume import resolve_ckpt_path

    (tmp_path / "checkpoints").mkdir()
    torch.save({"global_step": 10}, tmp_path / "checkpoints" / "last.ckpt")
    torch.save({"global_step": 13}, tmp_path / "hpc_ckpt_1.ckpt")  # Lightning, on SIGUSR1
    os.utime(tmp_path / "checkpoints" / "last.ckpt", ns=(1, 1))
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    assert "(step 13)" in capsys.readouterr().out
    assert resolve_ckpt_path("some/file.ckpt", tmp_path) == "some/file.ckpt"
    assert resolve_ckpt_path(None, tmp_path) is None


def test_optuna_search_records_every_trial_and_the_best_run_folder(tmp_path):
    from zoomsr.tasks.search import read_trials

    sweep = tmp_path / "search"
    run_train(
        "hparams_search=quickstart_optuna",
        "experiment=quickstart",
        "debug=fast",
        "logger=csv",
        "hydra.sweeper.n_trials=2",
        f"out_dir={sweep}",
    )
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    trials = read_trials(sweep)
    assert [t["run_dir"] for t in trials] == [str(sweep / "0"), str(sweep / "1")]
    assert all(t["status"] == "COMPLETED" for t in trials)
    # val/psnr_y is maximized: the best value is the larger of the two trials' PSNR
    assert results.best_value == max(t["value"] for t in trials)
    best = next(t for t in trials if t["value"] == results.best_value)
    assert results.best_run_dir == best["run_dir"]
    run_cfg = OmegaConf.load(f"{results.best_run_dir}/config.yaml")
    assert run_cfg.optim.lr == results.best_params["optim.lr"]
    assert 3e-4 <= run_cfg.optim.lr <= 6e-3 and run_cfg.ckpt_path == "auto"
    assert (sweep / "0" / "checkpoints" / "last.ckpt").exists()
    assert (sweep / "1" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("val/psnr_y", "maximize"),
        ("val/ssim_y", "maximize"),
        ("eval/x16/clipiqa", "maximize"),
        ("val/lpips", "minimize"),
        ("x4/fid", "minimize"),
        ("niqe", "minimize"),
        ("train/loss", "minimize"),
        ("train/loss_vsd", "minimize"),
    ],
)
def test_search_direction_follows_the_metric(compose_cfg, tmp_path, metric, direction):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR
    from zoomsr.tasks import search  # noqa: F401 (registers the resolver, as train.py does)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "hparams_search=quickstart_optuna",
                f"optimized_metric={metric}",
                f"out_dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.direction == direction


def test_search_names_an_unknown_metric_and_direction(tmp_path):
    from zoomsr.errors import ZoomSRError
    from zoomsr.tasks.search import metric_direction, optimized_value

    with pytest.raises(ZoomSRError, match=r"set hydra.sweeper.direction=maximize"):
        metric_direction("val/sharpness")
    with pytest.raises(ZoomSRError, match=r"optimized_metric=val/psnr_y is not among .*train/loss"):
        optimized_value({"train/loss": 0.5, "out_dir": "x"}, "val/psnr_y")
    assert optimized_value({"val/psnr_y": 21}, "val/psnr_y") == 21.0
    assert optimized_value({"val/psnr_y": 21}, None) is None


def _fsdp_cfg(compose_cfg, tmp_path, *extra):
    return compose_cfg(
        "train",
        [
            "experiment=coz_lora",
            "debug=tiny",
            "trainer=fsdp",
            "backbone.weight_dtype=float32",
            "backbone.vae_dtype=float32",
            "backbone.text_encoders=keep",
            f"out_dir={tmp_path}",
            *extra,
        ],
    )


def test_fsdp_wraps_each_sd3_block_and_trains_only_the_adapters(compose_cfg, tmp_path):
    """trainer=fsdp on the tiny SD3 of the real classes: the strategy Lightning gets, the units
    its wrap policy makes, which parameters train (FSDP itself needs a GPU: see the gpu test)."""
    from diffusers.models.attention import JointTransformerBlock
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.t5.modeling_t5 import T5Block

    from zoomsr.tasks.train import build_module

    cfg = _fsdp_cfg(compose_cfg, tmp_path)
    assert cfg.trainer.precision == "32-true"  # debug=tiny's; a GPU run keeps fsdp's bf16-mixed
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    module = build_module(cfg)
    # the modules FSDP would make units of (the policy's own selection, as FSDP runs it)
    units = strategy.kwargs["auto_wrap_policy"]._run_policy(module, set(), {})
    blocks = [m for m in module.modules() if isinstance(m, JointTransformerBlock)]
    assert len(blocks) == len(module.backbone.transformer.transformer_blocks) == 2
    assert set(blocks) <= set(units)
    wrapped_types = {type(m) for m in units if m is not module}
    assert wrapped_types == {JointTransformerBlock, T5Block, CLIPEncoderLayer}
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    # one dtype per unit, as FSDP's flat parameters need
    for unit in units:
        assert len({p.dtype for p in unit.parameters()}) == 1
    # Lightning's FSDPStrategy itself refuses a CPU, with its own message
    with pytest.raises(Exception, match="strategy `fsdp` requires a GPU accelerator"):
        instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False)


@pytest.mark.gpu
def test_fsdp_trains_a_step_of_the_tiny_sd3_on_a_gpu(tmp_path):
    run = tmp_path / "fsdp"
    run_train(
        "experiment=coz_lora",
        "debug=tiny",
        "trainer=fsdp",
        "trainer.devices=1",
        "trainer.precision=bf16-mixed",
        "backbone.weight_dtype=float32",
        "backbone.vae_dtype=float32",
        "backbone.text_encoders=keep",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "logger=csv",
        f"out_dir={run}",
    )
    ckpt = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"] and all(".lora_" in k for k in ckpt["state_dict"])


class Preempt(pl.Callback):
    """What SLURM does to a job at its time limit, in-process: SIGUSR1 at step ``at`` (the
    launcher's --signal), then the kill (an exception) once Lightning's handler has returned."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
            raise RuntimeError("killed by SLURM after the signal")


def test_preempted_slurm_job_requeues_and_resumes_from_lightnings_checkpoint(
    compose_cfg, request, tmp_path, monkeypatch, capsys
):
    """Lightning's SLURM auto-requeue on SIGUSR1 writes hpc_ckpt_1.ckpt and calls
    `scontrol requeue <job>`; the requeued job (same command, same folder) resumes from it."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    hr = request.getfixturevalue("photos")
    calls = tmp_path / "scontrol.calls"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (tmp_path / "bin" / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1",
                       "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    run = tmp_path / "run"
    job = tiny(hr, run, *SGD, "trainer.max_steps=4", "trainer.val_check_interval=100",
               "ckpt_path=auto")  # fmt: skip
    with pytest.raises(RuntimeError, match="killed by SLURM"):
        train.run(compose_cfg("train", [*job, "+callbacks.preempt._target_="
                                        "tests.integration.test_clusters.Preempt",
                                        "+callbacks.preempt.at=2"]))  # fmt: skip
    assert calls.read_text().split() == ["requeue", "4242"]
    assert read_checkpoint(run / "hpc_ckpt_1.ckpt")["global_step"] == 2
    assert not (run / "checkpoints" / "last.ckpt").exists()  # nothing else was saved
    capsys.readouterr()
    result = train.run(compose_cfg("train", job))  # the requeued job
    assert (
        f"ckpt_path=auto: resuming from {run}/hpc_ckpt_1.ckpt (step 2)" in capsys.readouterr().out
    )
    assert read_checkpoint(result["last_ckpt"])["global_step"] == 4
