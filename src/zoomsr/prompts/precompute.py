"""``zoomsr prompts``: precompute the prompts of a folder of images into the prompt cache.

    zoomsr prompts data/val/HR prompt=vlm prompt.adapter=ckpt/VLM_LoRA/checkpoint-10000
    zoomsr prompts data/val/HR --scale 4 prompt=tags prompt.cache=cache/prompts.jsonl

Each image is one view (``recursive``'s single-view instruction). With ``--scale s`` the view is
the image's MATLAB-bicubic LR, exactly as validation and ``evaluate.py`` make it, so their
``batch["prompt"]`` comes from the cache. The prompt source is the ``prompt`` group of
``conf/infer.yaml`` with any Hydra overrides; its ``cache`` file receives the prompts. A rerun
asks the model nothing for images already cached.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.prompts import PromptSource, build_prompt_source


def conf_dir() -> Path:
    """The repository's ``conf/``: beside the source tree (editable install), else in cwd."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / "conf" / "infer.yaml").is_file():
            return root / "conf"
    raise ZoomSRError("conf/infer.yaml not found: run zoomsr prompts from the repository root.")


def compose_source(overrides: Sequence[str]) -> PromptSource:
    """The ``prompt`` group of ``infer.yaml`` with ``overrides`` (``prompt=vlm``, ...)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="infer", overrides=["input=unused", *overrides])
    source = build_prompt_source(cfg.get("prompt"))
    if source is None or not source.uses_model or source.cache is None:
        raise ZoomSRError(
            "zoomsr prompts needs a model-backed prompt source with a cache: pass prompt=vlm "
            "(or tags, remote_vlm) and keep prompt.cache set."
        )
    return source


def images(folder: str, scale: int | None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, (3, h, w))`` of every image: as stored, or its benchmark LR at ``scale``."""
    from zoomsr.data.datasets import BenchmarkDataset
    from zoomsr.data.io import list_images, load_image

    if scale is None:
        for path in list_images(folder, "input folder"):
            yield path.stem, load_image(path)
        return
    dataset = BenchmarkDataset(folder, scale, keep_gray=False)
    for item in dataset:
        yield item["name"], item["lr"]


def batches(items: Iterator[tuple[str, torch.Tensor]], size: int):
    """Consecutive images of one shape, at most ``size`` at a time."""
    for _, group in itertools.groupby(items, key=lambda item: tuple(item[1].shape)):
        group = list(group)
        for i in range(0, len(group), size):
            chunk = group[i : i + size]
            yield [name for name, _ in chunk], torch.stack([img for _, img in chunk])


def run(folder: str, overrides: Sequence[str], scale=None, batch_size=8, device="cpu") -> dict:
    """Prompt every image of ``folder``; returns counts and the cache path."""
    source = compose_source(overrides).to(device)
    before, count = len(source.cache), 0
    stream = batches(images(folder, scale), batch_size)
    for names, batch in tqdm(stream, desc="prompts", unit="batch"):
        source([batch.to(device)], step=0, names=names)
        count += len(names)
    return {
        "images": count,
        "model_calls": source.model_calls,
        "new_entries": len(source.cache) - before,
        "cache": str(source.cache.path),
    }


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr prompts",
        description="Precompute the prompts of a folder of images into the prompt cache.",
    )
    parser.add_argument("input", help="folder of images")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: prompt=vlm prompt.cache=…")
    parser.add_argument("--scale", type=int, default=None, help="prompt the bicubic LR at ×s")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:1")
    args = parser.parse_args(argv)
    from zoomsr.tasks.common import resolve_device, set_offline_defaults

    set_offline_defaults()
    result = run(
        args.input, args.overrides, args.scale, args.batch_size, resolve_device(args.device)
    )
    print(
        f"[zoomsr] {result['images']} image(s): {result['model_calls']} described by the model, "
        f"{result['images'] - result['model_calls']} from the cache -> {result['cache']}"
    )
    return 0
