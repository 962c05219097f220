"""Prompt sources wired in: every conf/prompt YAML builds, infer.py's zoom chain gets CoZ's
two-view VLM prompts (cached: a rerun asks the VLM nothing), training gets batch prompts from
the source, and ``zoomsr prompts`` precomputes a folder."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import get_class

from tests.conftest import CONF_DIR
from tests.unit.test_prompts_tags import tiny_vit
from zoomsr.cli import main as zoomsr_main
from zoomsr.data.io import load_image, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.prompts import build_prompt_source
from zoomsr.prompts.tiny import write_tiny_vlm
from zoomsr.prompts.vlm import VLMPrompt
from zoomsr.tasks import infer, train

from .test_train import photos, tiny  # noqa: F401  (photos is a fixture)

PROMPT_YAMLS = sorted(p.stem for p in (CONF_DIR / "prompt").glob("*.yaml"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Path:
    return write_tiny_vlm(tmp_path_factory.mktemp("tiny_qwen"))


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


def test_one_yaml_per_source_keys_are_init_arguments():
    assert PROMPT_YAMLS == ["manual", "none", "remote_vlm", "tags", "vlm"]
    for name in PROMPT_YAMLS:
        node = yaml.safe_load((CONF_DIR / "prompt" / f"{name}.yaml").read_text())
        cls = get_class(node.pop("_target_"))
        assert set(node) == set(inspect.signature(cls.__init__).parameters) - {"self"}, name


@pytest.mark.parametrize("name", PROMPT_YAMLS)
def test_every_source_builds_from_its_yaml(compose_cfg, tmp_path, qwen, vit, name):
    extra = {
        "none": [],
        "manual": ["prompt.user_text=a photo"],
        "tags": [f"prompt.model={vit}"],
        "vlm": [f"prompt.model={qwen}"],
        "remote_vlm": ["prompt.base_url=http://127.0.0.1:9/v1"],
    }[name]
    cache = [f"prompt.cache={tmp_path}/c.jsonl"] if name in ("tags", "vlm", "remote_vlm") else []
    cfg = compose_cfg("infer", [f"input={tmp_path}", f"prompt='{name}'", *extra, *cache])
    source = build_prompt_source(cfg.prompt)
    assert type(source).__name__ == cfg.prompt._target_.rsplit(".", 1)[-1]
    if name in ("none", "manual", "tags", "vlm"):  # remote: nothing listens on port 9
        texts = source([torch.rand(2, 3, 32, 32)], step=1)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    train_cfg = compose_cfg("train", [f"prompt='{name}'", *extra, *cache])
    assert train_cfg.prompt._target_ == cfg.prompt._target_


def test_default_is_no_prompt_source(compose_cfg, tmp_path):
    assert compose_cfg("infer", [f"input={tmp_path}"]).get("prompt") is None
    assert compose_cfg("train").get("prompt") is None


def _images(folder: Path, n: int = 2) -> Path:
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        save_image(torch.rand(3, 40, 40, generator=g), folder / f"im{i}.png")
    return folder


def _vlm_chain(compose_cfg, src, out, qwen, cache, *extra):
    return compose_cfg(
        "infer",
        [
            f"input={src}",
            f"out_dir={out}",
            "backbone=bicubic",
            "zoom.rec_type=recursive_multiscale",
            "zoom.process_size=32",
            "zoom.steps=2",
            "prompt=vlm",
            f"prompt.model={qwen}",
            "prompt.max_new_tokens=4",
            f"prompt.cache={cache}",
            *extra,
        ],
    )


def test_infer_chain_prompts_come_from_both_views_and_are_cached(compose_cfg, tmp_path, qwen):
    src, cache = _images(tmp_path / "in"), tmp_path / "prompts.jsonl"
    first = infer.run(_vlm_chain(compose_cfg, src, tmp_path / "a", qwen, cache))
    assert first["prompt_model_calls"] == 2 * 2  # 2 images x 2 steps
    meta = json.loads((tmp_path / "a" / "im0" / "prompts.json").read_text())
    prompts = [s["prompts"] for s in meta["steps"]]
    assert prompts[0] is None and all(len(p) == 1 and p[0] for p in prompts[1:])
    # Step k's prompt is the VLM's answer for (step k-1's output, step k's input): the
    # written 8-bit files hold exactly the pixels the source saw.
    folder = tmp_path / "a" / "im0"
    direct = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=None)
    wider = [load_image(folder / "step0.png"), load_image(folder / "step1_output.png")]
    for k in (1, 2):
        views = [wider[k - 1][None], load_image(folder / f"step{k}_input.png")[None]]
        assert direct(views, step=k) == prompts[k]
    # A second run over the same images, swap memory mode: the VLM is asked nothing.
    again = infer.run(_vlm_chain(compose_cfg, src, tmp_path / "b", qwen, cache, "zoom.memory=swap"))
    assert again["prompt_model_calls"] == 0
    assert json.loads((tmp_path / "b" / "im0" / "prompts.json").read_text()) == meta


def test_infer_manual_prompt_per_image_file(compose_cfg, tmp_path):
    src = _images(tmp_path / "in")
    mapping = tmp_path / "prompts.json"
    mapping.write_text(json.dumps({"im0": "a red car"}))
    cfg = compose_cfg(
        "infer",
        [
            f"input={src}",
            f"out_dir={tmp_path / 'out'}",
            "backbone=bicubic",
            "zoom.rec_type=recursive",
            "zoom.process_size=32",
            "zoom.steps=2",
            "prompt=manual",
            "prompt.user_text=a photo",
            f"prompt.user_file={mapping}",
        ],
    )
    infer.run(cfg)
    for name, text in (("im0", "a red car"), ("im1", "a photo")):
        steps = json.loads((tmp_path / "out" / name / "prompts.json").read_text())["steps"]
        assert [s["prompts"] for s in steps[1:]] == [[text], [text]]


def test_infer_missing_vlm_is_one_clear_error(compose_cfg, tmp_path):
    src = _images(tmp_path / "in", 1)
    cfg = compose_cfg(
        "infer",
        [f"input={src}", f"out_dir={tmp_path / 'o'}", "zoom.rec_type=recursive", "prompt=vlm"],
    )
    cfg.prompt.model = "nobody/no-such-vlm"
    with pytest.raises(ZoomSRError, match="no-such-vlm' are not in the Hugging Face cache"):
        infer.run(cfg)


def test_training_prompts_come_from_the_source_and_its_cache(
    compose_cfg,
    photos,  # noqa: F811
    tmp_path,
    vit,
):
    cache = tmp_path / "tags.jsonl"
    overrides = ["trainer.max_steps=2", "prompt=tags", f"prompt.model={vit}"]
    overrides.append(f"prompt.cache={cache}")
    module = train.build_module(compose_cfg("train", tiny(photos, tmp_path / "m", *overrides)))
    lr = torch.rand(3, 3, 4, 4)
    assert module.prompts({"lr": lr}) == module.prompt_source([lr])
    assert module.prompts({"lr": lr, "prompt": ["x"] * 3}) == ["x"] * 3  # the data's own win
    cache.unlink()
    train.run(compose_cfg("train", tiny(photos, tmp_path / "r1", *overrides)))
    made = cache.read_text().splitlines()
    assert len(made) == 2 * 4  # 2 steps x batch 4, every LR crop prompted once
    # The same seed replays the same crops: the rerun finds all of them in the cache.
    train.run(compose_cfg("train", tiny(photos, tmp_path / "r2", *overrides)))
    assert cache.read_text().splitlines() == made


def test_zoomsr_prompts_precomputes_a_folder(tmp_path, qwen, capsys):
    src, cache = _images(tmp_path / "in", 3), tmp_path / "pre.jsonl"
    args = ["prompts", str(src), "prompt=vlm", f"prompt.model={qwen}", f"prompt.cache={cache}"]
    assert zoomsr_main([*args, "prompt.max_new_tokens=3"]) == 0
    assert "3 image(s): 3 described by the model, 0 from the cache" in capsys.readouterr().out
    assert len(cache.read_text().splitlines()) == 3
    assert zoomsr_main([*args, "prompt.max_new_tokens=3"]) == 0
    assert "0 described by the model, 3 from the cache" in capsys.readouterr().out
    # The cached prompt is what the source says for the image as one view.
    source = VLMPrompt(model=str(qwen), max_new_tokens=3, cache=str(cache))
    assert source([load_image(src / "im1.png")[None]])[0] != "" and source.model_calls == 0
    with pytest.raises(SystemExit) as err:  # no model behind null: nothing to precompute
        zoomsr_main(["prompts", str(src)])
    assert err.value.code == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("memory", ["plain", "swap"])
def test_swap_keeps_one_model_on_the_gpu(tmp_path, qwen, memory):
    """In swap mode the VLM is on the CPU while the backbone runs and the other way round
    (CoZ's efficient memory); in plain mode both stay on the GPU."""
    from zoomsr.backbones.sr3 import SR3
    from zoomsr.zoom.engine import ChainEngine

    source = VLMPrompt(model=str(qwen), max_new_tokens=4, cache=None)
    sr = SR3(
        inner_channel=8,
        channel_mults=[1, 2],
        attn_res=[],
        res_blocks=1,
        norm_groups=4,
        n_timestep=100,
        sampler="ddim",
        sample_steps=2,
    )
    seen = []
    refine, describe = sr.refine_upsampled, source.describe

    def where(module):
        return next(module.parameters()).device.type

    def spy_refine(up, prompts=None, generator=None):
        seen.append(("sr", where(sr), where(source.net) if source._net is not None else None))
        return refine(up, prompts, generator)

    def spy_describe(views, step):
        out = describe(views, step)  # loads the VLM on first use
        seen.append(("vlm", where(source.net), where(sr)))
        return out

    sr.refine_upsampled, source.describe = spy_refine, spy_describe
    zoom = ChainEngine("recursive_multiscale", steps=2, process_size=32, memory=memory,
                       backbone=sr, prompt_source=source, device="cuda")  # fmt: skip
    zoom.run(torch.rand(3, 32, 32), "im")
    other = "cpu" if memory == "swap" else "cuda"
    assert [s for s in seen if s[0] == "vlm"] == [("vlm", "cuda", other)] * 2
    assert [s for s in seen if s[0] == "sr"] == [("sr", "cuda", other)] * 2
