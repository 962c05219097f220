"""Crafted files never run code: a family of nested ``_target_`` payloads (file writes, deletes,
copies, ``torch.save``, ``os.system``) at several depths, also inside lists, through every
command that reads a checkpoint or a saved config. Each command refuses with one line, and no
file outside its run folder changes.

The payloads are checked to be live first (Hydra's ``instantiate`` does run them), so a test
here fails if a command builds any part of a file's config with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra._internal.utils import _locate
from PIL import Image

from zoomsr.backbones.sr3 import SR3
from zoomsr.checkpoint import load_backbone, read_checkpoint
from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.prompts.cache import PromptCache
from zoomsr.reporting import main as compare_main
from zoomsr.tasks import evaluate, infer, train

TINY = dict(scale=4, inner_channel=8, channel_mults=[1, 2], attn_res=[], res_blocks=1,
            norm_groups=4, n_timestep=100, sampler="ddim", sample_steps=4)  # fmt: skip
TINY_OVERRIDES = [f"backbone.{k}={json.dumps(v)}" for k, v in TINY.items() if k != "scale"]
KINDS = ["write_text", "unlink", "open", "shutil_copy", "torch_save", "os_system"]
REFUSED = r"not allowed|not a zoomsr backbone class|not a plain value|not arguments of"


def payload(kind: str, outside: Path) -> dict:
    """A config node that, built by Hydra, changes a file in ``outside``."""
    keep = str(outside / "keep.txt")
    path = {"_target_": "pathlib.Path", "_args_": [str(outside / f"{kind}.out")]}
    return {
        "write_text": {"_target_": "pathlib.Path.write_text", "_args_": [path, "pwned"]},
        "unlink": {"_target_": "pathlib.Path.unlink",
                   "_args_": [{"_target_": "pathlib.Path", "_args_": [keep]}]},
        "open": {"_target_": "builtins.open", "file": str(outside / "open.out"), "mode": "w"},
        "shutil_copy": {"_target_": "shutil.copy", "src": keep, "dst": str(outside / "cp.out")},
        "torch_save": {"_target_": "torch.save", "obj": [1], "f": str(outside / "t.out")},
        "os_system": {"_target_": "os.system", "command": f"touch '{outside / 'sys.out'}'"},
    }[kind]  # fmt: skip


def placed(kind: str, depth: int, outside: Path) -> dict:
    """A SR3 backbone config with the payload at ``depth`` (1: a value; 2: in a list;
    3: in a mapping in a list; 4: the top-level target itself, through an attribute chain)."""
    p = payload(kind, outside)
    config = {"_target_": "zoomsr.backbones.sr3.SR3", **TINY}
    if depth == 1:
        config["seed"] = p
    elif depth == 2:
        config["channel_mults"] = [1, p]
    elif depth == 3:
        config["attn_res"] = [{"res": [p]}]
    else:
        module = {"os_system": "os.system", "torch_save": "torch.save", "open": "builtins.open"}
        chain = module.get(kind, "shutil.copy")
        config = {**{k: v for k, v in p.items() if k != "_target_"}}
        config["_target_"] = f"zoomsr.backbones.sr3.{chain}"
    return config


# Every kind at one depth and every depth of one kind by default; the whole family is `slow`.
FAST = sorted({(k, 1 + i % 4) for i, k in enumerate(KINDS)} | {("open", 3), ("open", 4)})
CASES = [
    c if c in FAST else pytest.param(*c, marks=pytest.mark.slow)
    for c in [(k, d) for k in KINDS for d in (1, 2, 3, 4)]
]


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file and folder under ``root`` (outside ``skip``) with a hash of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        if any(p == s or s in p.parents for s in skip):
            continue
        out[str(p.relative_to(root))] = (
            "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        )
    return out


@pytest.fixture
def world(tmp_path):
    """``outside/keep.txt`` (a victim), a folder of two images, and a clean SR3 checkpoint."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (60 * i, 90, 200)).save(images / f"im{i}.png")
    return tmp_path, outside, images


def write_ckpt(path: Path, config: dict, base: dict | None = None) -> Path:
    """A checkpoint with a real tiny SR3's weights and ``config`` as its backbone config."""
    if base is None:
        net = SR3(**TINY)
        base = {"state_dict": {f"backbone.{k}": v for k, v in net.trainable_state_dict().items()},
                "global_step": 0}  # fmt: skip
    torch.save({**base, "zoomsr": {"backbone_config": yaml.safe_dump(config)}}, path)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_the_payloads_are_live(tmp_path, kind):
    """Built the way the old load_backbone built a config, each payload changes a file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me")
    before = snapshot(outside)
    result = build(payload(kind, outside))
    if hasattr(result, "close"):
        result.close()
    assert snapshot(outside) != before


def build(node):
    """What building a config means: call each ``_target_`` with its built arguments (Hydra's
    ``instantiate`` does this; its newest versions also block a few targets like os.system)."""
    if isinstance(node, list):
        return [build(v) for v in node]
    if not isinstance(node, dict):
        return node
    kwargs = {k: build(v) for k, v in node.items() if k not in ("_target_", "_args_")}
    if "_target_" not in node:
        return kwargs
    return _locate(node["_target_"])(*build(node.get("_args_", [])), **kwargs)


def test_a_clean_checkpoint_still_loads(world):
    tmp, _, _ = world
    ckpt = write_ckpt(tmp / "clean.ckpt", {"_target_": "zoomsr.backbones.sr3.SR3", **TINY})
    backbone = load_backbone(ckpt)
    assert isinstance(backbone, SR3) and backbone.scale == 4


@pytest.mark.parametrize(("kind", "depth"), CASES)
def test_evaluate_and_infer_refuse_a_crafted_checkpoint(compose_cfg, world, kind, depth):
    tmp, outside, images = world
    ckpt = write_ckpt(tmp / "evil.ckpt", placed(kind, depth, outside))
    before = snapshot(tmp, (tmp / "run",))
    with pytest.raises(ZoomSRError, match=REFUSED):
        args = [f"ckpt={ckpt}", f"data.hr_dir={images}", f"out_dir={tmp / 'run' / 'e'}"]
        evaluate.run(compose_cfg("evaluate", [*args, "logger=csv"]))
    with pytest.raises(ZoomSRError, match=REFUSED):
        infer.run(compose_cfg("infer", [f"ckpt={ckpt}", f"input={images}",
                                        f"out_dir={tmp / 'run' / 'i'}"]))  # fmt: skip
    assert snapshot(tmp, (tmp / "run",)) == before


def test_a_python_tag_in_the_saved_config_is_refused(compose_cfg, world):
    tmp, outside, images = world
    net = SR3(**TINY)
    touch = f"touch '{outside / 'sys.out'}'"
    tag = f'!!python/object/apply:os.system ["{touch}"]'
    text = f"_target_: zoomsr.backbones.sr3.SR3\nseed: {tag}\n"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in net.trainable_state_dict().items()},
                "zoomsr": {"backbone_config": text}}, tmp / "tag.ckpt")  # fmt: skip
    before = snapshot(tmp, (tmp / "run",))
    with pytest.raises(ZoomSRError, match=r"is not plain YAML \(could not determine a constructor"):
        infer.run(compose_cfg("infer", [f"ckpt={tmp / 'tag.ckpt'}", f"input={images}",
                                        f"out_dir={tmp / 'run'}"]))  # fmt: skip
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.mark.parametrize("task", ["evaluate", "infer"])
def test_the_entry_points_print_one_line_and_exit_2(compose_cfg, world, capsys, task):
    """Through the entry points' own wrapper (``exit_on_user_error``): exit 2, one line."""
    tmp, outside, images = world
    ckpt = write_ckpt(tmp / "evil.ckpt", placed("os_system", 2, outside))
    arg = f"data.hr_dir={images}" if task == "evaluate" else f"input={images}"
    run = exit_on_user_error({"evaluate": evaluate.run, "infer": infer.run}[task])
    before = snapshot(tmp, (tmp / "run",))
    with pytest.raises(SystemExit) as exit_info:
        run(compose_cfg(task, [f"ckpt={ckpt}", arg, f"out_dir={tmp / 'run'}"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("zoomsr error:")]
    assert len(lines) == 1 and "channel_mults[1]" in lines[0] and "_target_" in lines[0], err
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real Lightning checkpoint of a tiny SR3 (one training step)."""
    root = tmp_path_factory.mktemp("trained")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (60 * i, 90, 200)).save(images / f"im{i}.png")
    return images, _train_cfg_args(images, root / "run")


def _train_cfg_args(images: Path, out: Path, *extra) -> list[str]:
    return [f"data.hr_dir={images}", "data.crop_size=16", "data.batch_size=2",
            "data.num_workers=0", *TINY_OVERRIDES, "trainer=cpu", "trainer.max_steps=1",
            "trainer.enable_progress_bar=false", "logger=csv", f"out_dir={out}",
            *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "depth"),
    [(k, 1 + i % 4) if i % 2 == 0 else pytest.param(k, 1 + i % 4, marks=pytest.mark.slow)
     for i, k in enumerate(KINDS)],
)  # fmt: skip
def test_train_resume_refuses_a_crafted_checkpoint(compose_cfg, world, trained, kind, depth):
    tmp, outside, _ = world
    images, args = trained
    base = read_checkpoint(_last_ckpt(compose_cfg, args))
    ckpt = write_ckpt(tmp / "evil.ckpt", placed(kind, depth, outside), base)
    before = snapshot(tmp, (tmp / "run",))
    cfg = compose_cfg("train", _train_cfg_args(images, tmp / "run", f"ckpt_path={ckpt}",
                                               "trainer.max_steps=2"))  # fmt: skip
    with pytest.raises(ZoomSRError, match=REFUSED):
        train.run(cfg)
    assert snapshot(tmp, (tmp / "run",)) == before


def _last_ckpt(compose_cfg, args) -> Path:
    last = Path(args[-1].split("=", 1)[1]) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        train.run(compose_cfg("train", args))
    return last


def test_train_resume_refuses_callback_state_naming_outside_files(compose_cfg, world, trained):
    """Lightning deletes an older best/last checkpoint by the path its saved state names: a
    crafted ``../`` path inside the run's checkpoint folder would delete any file."""
    tmp, outside, _ = world
    images, args = trained
    ckpt = read_checkpoint(_last_ckpt(compose_cfg, args))
    run = tmp / "run"
    escape = str(run / "checkpoints" / ".." / ".." / "outside" / "keep.txt")
    for state in ckpt["callbacks"].values():
        if "best_k_models" in state:
            state.update(dirpath=str(run / "checkpoints"), best_k_models={escape: 0.0},
                         kth_best_model_path=escape, last_model_path=escape,
                         best_model_path=escape)  # fmt: skip
    torch.save(ckpt, tmp / "evil.ckpt")
    before = snapshot(tmp, (run,))
    cfg = compose_cfg("train", _train_cfg_args(images, run, f"ckpt_path={tmp / 'evil.ckpt'}",
                                               "trainer.max_steps=3"))  # fmt: skip
    with pytest.raises(ZoomSRError, match=r"names the file .*keep\.txt.*outside this run"):
        train.run(cfg)
    assert snapshot(tmp, (run,)) == before


@pytest.mark.parametrize("kind", KINDS[:2])
def test_import_iter_and_var_refuse_crafted_files(world, kind):
    from zoomsr.interop.iter import main as import_iter_main
    from zoomsr.interop.var import main as import_var_main

    tmp, outside, _ = world
    p = payload(kind, outside)
    torch.save({"params_ema": {"w": torch.zeros(1), "evil": p}, "params": [p]}, tmp / "iter.pth")
    torch.save({"w": torch.zeros(1), "evil": {"x": [p]}}, tmp / "var.pth")
    before = snapshot(tmp, (tmp / "run",))
    for main, argv in [(import_iter_main, ["--ckpt", str(tmp / "iter.pth")]),
                       (import_var_main, ["--vae", str(tmp / "var.pth")])]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", str(tmp / "run")])
        assert exit_info.value.code == 2
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.mark.parametrize("kind", KINDS)
def test_import_coz_refuses_a_crafted_lora_file(world, kind):
    from zoomsr.interop.coz import main as import_coz_main

    tmp, outside, _ = world
    torch.save([torch.zeros(4, 2), payload(kind, outside), [payload(kind, outside)]],
               tmp / "lora.pkl")  # fmt: skip
    before = snapshot(tmp, (tmp / "run",))
    with pytest.raises(SystemExit) as exit_info:
        import_coz_main(["--lora", str(tmp / "lora.pkl"), "--pretrained", "tiny",
                         "--out", str(tmp / "run")])  # fmt: skip
    assert exit_info.value.code == 2
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.mark.parametrize("kind", KINDS[:3])
def test_import_sr3_refuses_a_crafted_config_or_checkpoint(world, kind):
    from zoomsr.interop.sr3 import main as import_sr3_main

    tmp, outside, _ = world
    p = payload(kind, outside)
    unet = {"in_channel": 6, "out_channel": 3, "inner_channel": p, "channel_multiplier": [1, p],
            "attn_res": [[p]], "res_blocks": 1, "dropout": 0}  # fmt: skip
    config = {"model": {"which_model_G": "sr3", "unet": unet, "diffusion": {"image_size": 16},
                        "beta_schedule": {"train": {"schedule": "linear", "n_timestep": 10,
                                                    "linear_start": 1e-6, "linear_end": 1e-2}}},
              "datasets": {"train": {"l_resolution": 16, "r_resolution": 128}}}  # fmt: skip
    (tmp / "sr3.json").write_text(json.dumps(config))
    torch.save({"w": torch.zeros(1), "evil": p}, tmp / "gen.pth")  # a crafted checkpoint
    torch.save({"w": torch.zeros(1)}, tmp / "clean.pth")  # a clean one: the config is refused
    before = snapshot(tmp, (tmp / "run",))
    for ckpt in ("gen.pth", "clean.pth"):
        with pytest.raises(SystemExit) as exit_info:
            import_sr3_main(["--ckpt", str(tmp / ckpt), "--config", str(tmp / "sr3.json"),
                             "--out", str(tmp / "run")])  # fmt: skip
        assert exit_info.value.code == 2
    assert snapshot(tmp, (tmp / "run",)) == before


def test_prompt_cache_keeps_plain_prompts_only(world, caplog):
    tmp, outside, _ = world
    cache = tmp / "run" / "prompts.jsonl"
    cache.parent.mkdir()
    lines = [{"key": "good", "prompt": "a cat"}]
    for kind in KINDS:
        p = payload(kind, outside)
        lines += [{"key": f"{kind}1", "prompt": p}, {"key": p, "prompt": "x"},
                  {"key": f"{kind}2", "prompt": [p]}, p]  # fmt: skip
    cache.write_text("".join(json.dumps(x) + "\n" for x in lines))
    before = snapshot(tmp, (tmp / "run",))
    loaded = PromptCache(cache)
    assert len(loaded) == 1 and loaded.get("good") == "a cat"
    assert all(loaded.get(f"{k}1") is None for k in KINDS)
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.mark.parametrize("kind", KINDS)
def test_compare_refuses_a_crafted_metrics_json(world, kind, capsys):
    tmp, outside, _ = world
    p = payload(kind, outside)
    runs = []
    for i, summary in enumerate(
        [
            {"x4": {"psnr_y": p, "n_images": 2}},
            {"x4": {"psnr_y": 30.0, "n_images": [p]}},
            {"x4": p},
            [p],
        ]
    ):
        run = tmp / "run" / f"r{i}"
        (run / ".hydra").mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(summary))
        runs.append(run)
    before = snapshot(tmp, (tmp / "run",))
    for run in runs:
        assert compare_main([str(run), "--out", str(tmp / "run" / "cmp")]) == 2
        assert "is not a zoomsr metrics.json" in capsys.readouterr().out
    assert snapshot(tmp, (tmp / "run",)) == before


def test_compare_reads_overrides_as_plain_yaml(world, capsys):
    tmp, outside, _ = world
    run = tmp / "run" / "r0"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"x4": {"psnr_y": 30.0, "n_images": 2}}))
    (run / ".hydra" / "overrides.yaml").write_text(
        f"- !!python/object/apply:os.system [\"touch '{outside / 'sys.out'}'\"]\n"
    )
    before = snapshot(tmp, (tmp / "run",))
    assert compare_main([str(run), "--out", str(tmp / "run" / "cmp")]) == 0
    assert "| r0 | x4 | 30.00 | 2 |" in capsys.readouterr().out  # labelled by its folder
    assert snapshot(tmp, (tmp / "run",)) == before


@pytest.mark.parametrize(
    "kind", [k if k in KINDS[::2] else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]
)
def test_a_crafted_run_folder_job_file_is_data_only(compose_cfg, world, kind):
    """The run folder's job file (and a Hydra config beside it) are read as data: a rerun
    refuses the folder as another job's, and ``overwrite=true`` replaces it."""
    tmp, outside, images = world
    run = tmp / "run"
    (run / ".hydra").mkdir(parents=True)
    p = payload(kind, outside)
    (run / "zoomsr_job.json").write_text(json.dumps({"fingerprint": p, "job": {"data": [p]}}))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"backbone": p, "data": [p]}))
    before = snapshot(tmp, (run,))
    args = [f"data.hr_dir={images}", "scales=[2]", f"out_dir={run}", "logger=csv"]
    with pytest.raises(ZoomSRError, match=r"holds results of another job.*overwrite=true"):
        evaluate.run(compose_cfg("evaluate", args))
    result = evaluate.run(compose_cfg("evaluate", [*args, "overwrite=true"]))
    assert result["x2"]["n_images"] == 2
    assert snapshot(tmp, (run,)) == before
