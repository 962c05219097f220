"""Every YAML of every config group composes, and instantiates as the tasks instantiate it."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR
from zoomsr.backbones.interp import Bicubic
from zoomsr.prompts import PromptSource
from zoomsr.tasks.train import build_callbacks, build_datamodule, build_module
from zoomsr.zoom.engine import build_engine

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, y.stem) for g in GROUPS for y in sorted((CONF_DIR / g).glob("*.yaml"))]
# Options whose defaults load pretrained weights CI does not have: composed with their tiny or
# random stand-ins (the missing-weights errors are tested in tests/integration/test_coz_lora.py).
NEEDS_WEIGHTS = {
    ("backbone", "sd3_lora"): ["backbone.pretrained=tiny"],
    ("experiment", "coz_lora"): ["debug=tiny"],
    ("loss", "coz"): ["loss.lpips.random_backbone=true"],
    # ITER's stage 2 needs stage 1's VQGAN (errors: tests/integration/test_vq_refiner_train.py).
    ("backbone", "vq_refiner"): ["backbone.vqgan_ckpt=null", "backbone.seed=0"],
    ("experiment", "vq_refiner_x4"): ["debug=tiny_vq_refiner"],
    ("debug", "tiny_vq_refiner"): ["experiment=vq_refiner_x4"],  # sizes for vq_refiner_x4*
    # ITER as published: the frozen Swin-VQGAN of stage 1, LPIPS's VGG weights.
    ("backbone", "iter"): ["backbone.vqgan_ckpt=null"],
    ("loss", "iter_hq"): ["loss.lpips.random_backbone=true"],
    ("loss", "iter_lq"): ["loss.lpips.random_backbone=true"],
    ("experiment", "iter_hq_vqgan"): ["debug=tiny_iter"],
    ("experiment", "iter_x2"): ["debug=tiny_iter"],
    ("experiment", "iter_x4"): ["debug=tiny_iter"],
    ("experiment", "iter_x4_var"): ["debug=tiny_vq_refiner"],
    ("debug", "tiny_iter"): ["experiment=iter_x4"],
    # GRPO of the prompt VLM: the tiny policy and critic (tests/integration/test_coz_grpo.py).
    ("experiment", "coz_grpo"): ["debug=tiny"],
    ("experiment", "coz_lora_gan"): ["debug=tiny"],
}


def test_every_group_of_style_guide_exists():
    expected = {
        "data",
        "backbone",
        "loss",
        "optim",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
        "debug",
        "paths",
        "hydra",
        "module",
        "degradation",
        "metrics",
    }
    assert expected <= set(GROUPS)


@pytest.mark.parametrize(("group", "name"), OPTIONS, ids=[f"{g}/{n}" for g, n in OPTIONS])
def test_option_composes_and_instantiates(compose_cfg, tmp_path, group, name):
    overrides = [f"{group}={name}", f"out_dir={tmp_path}", *NEEDS_WEIGHTS.get((group, name), [])]
    if group == "debug_experiment":  # <debug>-<experiment>, picked by those two choices
        debug, experiment = name.split("-", 1)
        overrides = [f"debug={debug}", f"experiment={experiment}", f"out_dir={tmp_path}"]
    if (group, name) == ("backbone", "spandrel"):  # a weight file: a tiny random RRDBNet
        from spandrel.architectures.ESRGAN import ESRGAN

        torch.save(ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict(), tmp_path / "m.pth")
        overrides.append(f"backbone.path={tmp_path / 'm.pth'}")
    if group == "zoom":  # composed by infer.yaml, not train.yaml
        cfg = compose_cfg("infer", [*overrides, f"input={tmp_path}"])
        build_engine(cfg.zoom, Bicubic(4))  # the task passes the backbone
        return
    if group == "prompt":  # tags/vlm need weights: built in test_prompts_wiring.py
        cfg = compose_cfg("train", [f"prompt='{name}'", f"out_dir={tmp_path}"])
        assert issubclass(get_class(cfg.prompt._target_), PromptSource)
        return
    if group == "protocol":  # composed by evaluate.yaml
        cfg = compose_cfg("evaluate", overrides)
        assert hasattr(instantiate(cfg.protocol), "run")
        return
    if group == "metrics":  # composed by evaluate.yaml; learned metrics need weights
        _metric_suite(compose_cfg, overrides, tmp_path)
        return
    if group == "hparams_search":  # sets the sweeper and the metric it optimizes
        cfg = compose_cfg("train", [*overrides, "experiment=quickstart"])
        assert cfg.optimized_metric.startswith("val/")
        return
    if (group, name) == ("trainer", "fsdp"):  # Lightning's FSDP needs a GPU: test_clusters.py
        cfg = compose_cfg("train", [*overrides, "experiment=coz_lora", "debug=tiny"])
        assert type(instantiate(cfg.trainer.strategy)).__name__ == "FSDPStrategy"
        return
    if group == "hydra" or group == "paths":
        cfg = compose_cfg("train", overrides)
        assert cfg.out_dir == str(tmp_path) and cfg.paths.log_dir
        return
    cfg = compose_cfg("train", overrides)
    if OmegaConf.is_missing(cfg.data, "hr_dir"):  # the one required value of data=folder
        cfg = compose_cfg("train", [*overrides, f"data.hr_dir={tmp_path}"])
    if OmegaConf.is_missing(cfg.data, "root"):  # the StableSR test crops' folder
        for sub in ("test_LR", "test_HR"):
            (tmp_path / "crops" / sub).mkdir(parents=True)
        cfg = compose_cfg("train", [*overrides, f"data.root={tmp_path / 'crops'}"])
    node = cfg if group in ("experiment", "debug", "debug_experiment") else cfg[group]
    {
        "data": lambda: build_datamodule(cfg),
        "backbone": lambda: instantiate(node),
        "degradation": lambda: instantiate(node),
        "loss": lambda: [instantiate(term) for term in node.values()],
        "optim": lambda: instantiate(node)([torch.nn.Parameter(torch.zeros(2))]),
        "scheduler": lambda: instantiate(node)(
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))])
        ),
        "module": lambda: build_module(cfg),
        "trainer": lambda: instantiate(node, accelerator="cpu", devices=1, logger=False),
        "callbacks": lambda: build_callbacks(cfg, tmp_path),
        "logger": lambda: [instantiate(lg, save_dir=str(tmp_path)) for lg in node.values()],
        "experiment": lambda: _whole_pipeline(cfg),
        "debug": lambda: _whole_pipeline(cfg),
        "debug_experiment": lambda: _whole_pipeline(cfg),
    }[group]()


def _metric_suite(compose_cfg, overrides, tmp_path):
    """Every suite builds; without weight files one line names each missing file."""
    from zoomsr.errors import ZoomSRError
    from zoomsr.metrics.suite import FULL_REFERENCE, suite_from_config, weight_key
    from zoomsr.metrics.weights import METRIC_WEIGHTS

    names = list(compose_cfg("evaluate", overrides).metrics.names)
    fidelity = [n for n in names if n in FULL_REFERENCE]
    learned = [n for n in names if n not in FULL_REFERENCE]
    if fidelity:
        cfg = compose_cfg("evaluate", [*overrides, f"metrics.only=[{','.join(fidelity)}]"])
        assert suite_from_config(cfg.metrics).names == fidelity
    if learned:
        cfg = compose_cfg("evaluate", [*overrides, f"metrics.only=[{','.join(learned)}]"])
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TORCH_HOME", str(tmp_path / "empty"))
            with pytest.raises(ZoomSRError) as err:
                suite_from_config(cfg.metrics)
        lines = str(err.value).splitlines()
        for metric in learned:
            for f in METRIC_WEIGHTS[weight_key(metric, cfg.metrics.fid)]:
                assert sum(f"'{f.name}' not found at" in line for line in lines) == 1, metric


def _whole_pipeline(cfg):
    build_datamodule(cfg)
    module = build_module(cfg)
    if cfg.get("grpo") is None:  # GRPO trains the prompt VLM, no SR backbone
        assert module.backbone.scale == cfg.scale
    instantiate(cfg.trainer, accelerator="cpu", devices=1, logger=False)


def test_evaluate_config_composes_with_each_backbone_baseline(compose_cfg, tmp_path):
    for backbone in ("bicubic", "nearest"):
        cfg = compose_cfg("evaluate", [f"backbone={backbone}", f"data.hr_dir={tmp_path}"])
        assert instantiate(cfg.backbone, scale=3).scale == 3
