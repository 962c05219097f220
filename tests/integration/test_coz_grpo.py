"""experiment=coz_grpo debug=tiny end to end: GRPO on a tiny Qwen2.5-VL policy with a tiny
critic -> a peft adapter in CoZ's VLM_LoRA layout -> prompt=vlm prompt.adapter=... uses it."""

from __future__ import annotations

import csv
import functools
import json

import numpy as np
import torch
from PIL import Image

from zoomsr.checkpoint import read_checkpoint
from zoomsr.data.zoom_views import ZoomViewPairs
from zoomsr.prompts.tiny import ensure_tiny_vlm
from zoomsr.prompts.vlm import VLMPrompt
from zoomsr.tasks import infer, train
from zoomsr.zoom.chain import ChainEngine


def _photos(folder):
    from skimage import data

    folder.mkdir()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:256, :256])).save(folder / "a.png")
    Image.fromarray(np.ascontiguousarray(data.coffee()[:256, :256])).save(folder / "b.png")
    return folder


def test_grpo_trains_an_adapter_that_prompt_vlm_loads_and_uses(compose_cfg, tmp_path):
    hr = _photos(tmp_path / "hr")
    cfg = compose_cfg(
        "train",
        [
            "experiment=coz_grpo",
            "debug=tiny",
            "trainer.max_steps=3",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            f"grpo.data.hr_dir={hr}",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    assert cfg.grpo.module.policy == "tiny" and cfg.grpo.data.zoom.process_size == 56
    result = train.run(cfg)
    for key in ("train/reward", "train/reward/critic", "train/reward/phrase",
                "train/reward/repetition", "train/kl", "train/clip_frac"):  # fmt: skip
        assert np.isfinite(result[key]), key
    assert 0 <= result["train/reward/critic"] <= 1 and result["train/reward/phrase"] in (0, 1)
    with open(next((tmp_path / "run" / "csv").rglob("metrics.csv"))) as f:
        steps = {r["step"] for r in csv.DictReader(f) if r.get("train/reward")}
    assert len(steps) == 3

    adapter = tmp_path / "run" / "VLM_LoRA" / "checkpoint-3"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (adapter / "adapter_model.safetensors").is_file()
    assert config["peft_type"] == "LORA" and set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj"
    }  # fmt: skip
    keys = set(read_checkpoint(result["last_ckpt"])["state_dict"])
    assert keys and all(".lora_" in k for k in keys)  # the adapter only, never the VLM

    # prompt=vlm prompt.adapter=<run>/VLM_LoRA/checkpoint-3 loads it and prompts change.
    g = torch.Generator().manual_seed(0)
    views = [torch.rand(1, 3, 56, 56, generator=g), torch.rand(1, 3, 14, 14, generator=g)]
    kw = {"model": str(ensure_tiny_vlm()), "max_new_tokens": 8, "max_pixels": 56 * 56}
    base = VLMPrompt(**kw)(views, step=1)
    aligned = VLMPrompt(**kw, adapter=str(adapter))(views, step=1)
    assert aligned != base
    # ... and so does infer.py, with the policy's name `tiny` as prompt.model
    chains = {}
    for name, extra in (("base", []), ("aligned", [f"prompt.adapter={adapter}"])):
        out = tmp_path / f"infer_{name}"
        infer.run(compose_cfg("infer", [
            "backbone=bicubic", f"input={hr / 'a.png'}", f"out_dir={out}", "zoom.steps=2",
            "zoom.process_size=56", "prompt=vlm", "prompt.model=tiny", "prompt.max_new_tokens=8",
            "prompt.cache=null", *extra,
        ]))  # fmt: skip
        steps = json.loads((out / "a" / "prompts.json").read_text())["steps"]
        chains[name] = [s["prompts"] for s in steps[1:]]
        assert all(len(p) == 1 and p[0] for p in chains[name])  # one prompt per step
    assert chains["aligned"] != chains["base"]

    # Resumable: ckpt_path=auto continues from step 3 (adapter and optimizer state).
    more = compose_cfg(
        "train",
        ["experiment=coz_grpo", "debug=tiny", "trainer.max_steps=4", "logger=csv",
         "trainer.enable_progress_bar=false", f"grpo.data.hr_dir={hr}",
         f"out_dir={tmp_path / 'run'}", "ckpt_path=auto"],
    )  # fmt: skip
    train.run(more)
    assert (tmp_path / "run" / "VLM_LoRA" / "checkpoint-4" / "adapter_model.safetensors").is_file()

    # The views were cached: a second build runs no chain.
    chain = functools.partial(
        ChainEngine, rec_type="recursive_multiscale", upscale=4, steps=2, process_size=56
    )
    again = ZoomViewPairs(str(hr), chain, cache_dir=str(tmp_path / "run" / "zoom_views"))
    assert again.computed == 0 and len(again) == 4  # 2 images x 2 steps
    # CoZ's views: the previous output and the zoomed crop upsampled to P x P
    assert again[0]["wide"].shape == (3, 56, 56) and again[0]["zoom"].shape == (3, 56, 56)
