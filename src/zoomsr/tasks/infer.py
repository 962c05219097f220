"""``infer.py``: Chain-of-Zoom (``zoom=chain``) or whole-image SR (``zoom=full``) of an image or
a folder of images, with a trained backbone or a baseline.

``zoom=chain`` writes one folder per image, ``<out_dir>/<name>/``: ``step0.png`` (the
preprocessed input), ``step<k>_input.png`` and ``step<k>_output.png`` per step,
``prompts.json`` (per step: the ``prompt`` source's texts, box, magnification), ``strip.png``
(all scales side by side) and ``overview.png`` (each step's box on the input). The folder is
written under a temporary name and renamed when complete. ``zoom=full`` writes
``<name>_x<total scale>.png`` per step. Finished images are skipped on a rerun, so an
interrupted job resumes; an image that fails does not stop the others (the run reports it at
the end); unreadable files are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from zoomsr import runfolder
from zoomsr.backbones.base import Backbone
from zoomsr.data.io import IMAGE_EXTENSIONS, check_size, list_images, load_image, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.prompts import build_prompt_source
from zoomsr.tasks import preflight
from zoomsr.tasks.common import output_dir, resolve_device, set_offline_defaults
from zoomsr.zoom.engine import ChainEngine, Engine, ZoomResult, build_engine, needs_backbone
from zoomsr.zoom.panels import overview, strip

log = logging.getLogger("zoomsr")


def load_inference_backbone(cfg: DictConfig, device: torch.device) -> Backbone:
    """The checkpoint's backbone (``ckpt=``), or the configured non-learned one."""
    if cfg.get("ckpt"):
        from zoomsr.checkpoint import load_backbone

        return load_backbone(cfg.ckpt, device=device)
    backbone = instantiate(cfg.backbone)
    if backbone.is_learned:
        raise ZoomSRError(
            "a learned backbone needs its weights: pass ckpt=<run>/checkpoints/last.ckpt"
        )
    return backbone.to(device).eval()


def input_files(path: str) -> list[Path]:
    """The image file, or the images of the folder (other files skipped with a warning)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for other in sorted(p.iterdir()):
            if other.is_file() and other.suffix.lower() not in IMAGE_EXTENSIONS:
                log.warning("skipping '%s': not an image file", other)
        return list_images(p, "input folder")
    if not p.exists():
        raise ZoomSRError(f"input not found: '{p}'. Pass input=<image file or folder>.")
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ZoomSRError(f"input '{p}' is not an image ({', '.join(IMAGE_EXTENSIONS)}).")
    return [p]


def write_chain(result: ZoomResult, folder: Path, meta: dict) -> None:
    """The files of one chained image, into ``folder`` (created)."""
    save_image(result.steps[0].output, folder / "step0.png")
    for step in result.steps[1:]:
        save_image(step.input, folder / f"step{step.index}_input.png")
        save_image(step.output, folder / f"step{step.index}_output.png")
    strip(result).save(folder / "strip.png")
    overview(result).save(folder / "overview.png")
    (folder / "prompts.json").write_text(json.dumps({**meta, "steps": result.prompts}, indent=2))


def chain_image(engine: ChainEngine, image: torch.Tensor, target: Path, name: str) -> list[str]:
    """Run the chain on one image and write its folder atomically (temporary name, rename)."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        steps = tqdm(engine.iter_steps(image, name), desc="zoom", leave=False,
                     total=engine.steps + 1)  # fmt: skip
        write_chain(ZoomResult(list(steps)), partial, engine.settings())
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    runfolder.replace_folder(partial, target)
    return [str(target)]


def full_image(engine: Engine, image: torch.Tensor, out: Path, stem: str, name: str) -> list[str]:
    """Whole-image SR: ``<stem>_x<u**k>.png`` for every step k."""
    return [
        str(save_image(s.output, out / f"{stem}_x{s.magnification}.png"))
        for s in engine.iter_steps(image, name)
        if s.index > 0
    ]


def targets(engine: Engine, out: Path, stem: str) -> list[Path]:
    """What one image's run writes (all present: done by an earlier run)."""
    if isinstance(engine, ChainEngine):
        return [out / stem]
    return [out / f"{stem}_x{engine.upscale**k}.png" for k in range(1, engine.steps + 1)]


def run(cfg: DictConfig) -> dict:
    """Zoom into / upscale ``cfg.input`` (file or folder) with the ``zoom`` group's engine.

    Returns:
        ``{"outputs": [per-image folder (chain) or files (full)], "out_dir": …,
        "skipped": [unreadable files], "prompt_model_calls": views the prompt model described
        (cache misses; 0 without a model-backed ``prompt``)}``.

    Raises:
        ZoomSRError: bad input or config; or, after every other image is done, the images that
            failed (their finished neighbours stay written).
    """
    set_offline_defaults()
    preflight.check_values(cfg, "infer")  # zoom.upscale/steps/process_size, scale (i11)
    files = input_files(cfg.input)
    out = output_dir(cfg)
    with runfolder.open_run(  # lock + fingerprint of the job (i11)
        out, runfolder.infer_job(cfg), bool(cfg.get("overwrite")), has_outputs(out, cfg)
    ) as redo:
        return _infer(cfg, files, out, redo)


def has_outputs(out: Path, cfg: DictConfig) -> bool:
    """True when ``out`` holds anything but zoomsr's and Hydra's own files."""
    reserved = set(runfolder.reserved_names(str(cfg.get("task_name", "infer"))))
    return any(p.name not in reserved for p in out.iterdir())


def _infer(cfg: DictConfig, files: list[Path], out: Path, redo: bool) -> dict:
    device = resolve_device(cfg.device)
    model = needs_backbone(cfg.zoom)
    backbone = load_inference_backbone(cfg, device) if model else None
    prompt_source = build_prompt_source(cfg.get("prompt")) if model else None
    engine = build_engine(cfg.zoom, backbone, prompt_source, device)
    outputs, skipped, failed = [], [], []
    # Output names: unique even for x.png + x.jpg, never Hydra's or zoomsr's own (i11).
    stems = runfolder.unique_names(files, runfolder.reserved_names(str(cfg.task_name)))
    for path, stem in tqdm(list(zip(files, stems)), desc="images", unit="img"):
        done = targets(engine, out, stem)
        if not redo and all(runfolder.output_ok(t) for t in done):  # done by an earlier run
            outputs += [str(t) for t in done]
            continue
        try:
            image = load_image(path)
            if not isinstance(engine, ChainEngine):
                m = engine.upscale**engine.steps
                check_size(path, (image.shape[-1] * m, image.shape[-2] * m), "output of")
        except ZoomSRError as err:
            if len(files) == 1 and not Path(cfg.input).expanduser().is_dir():
                raise  # the one input given: an error, not a skip
            log.warning("skipping %s", err)
            skipped.append(str(path))
            continue
        try:  # the per-image user prompt file is looked up by the input's stem
            if isinstance(engine, ChainEngine):
                outputs += chain_image(engine, image, out / stem, path.stem)
            else:
                outputs += full_image(engine, image, out, stem, path.stem)
        except ZoomSRError as err:
            log.error("%s: %s", path.name, err)
            failed.append(f"{path.name}: {err}")
    print(f"[zoomsr] {len(outputs)} output(s) in {out}")
    if failed:
        raise ZoomSRError(
            f"{len(failed)} image(s) failed ({'; '.join(failed)}); the others are in {out}."
        )
    calls = prompt_source.model_calls if prompt_source is not None else 0
    return {
        "outputs": outputs,
        "out_dir": str(out),
        "skipped": skipped,
        "prompt_model_calls": calls,
    }
