"""The one seam between the web UI and the zoom code: everything the UI runs goes through here.

A UI request becomes the same ``infer.yaml`` config that ``python infer.py`` composes (group
choices as Hydra overrides, values merged on top), and runs through the same zoom engine
``zoomsr.tasks.infer.run`` runs (:func:`zoomsr.zoom.engine.build_engine` on the same backbone
and prompt source, ``iter_steps`` with the page's edited prompts as per-step overrides,
``infer.write_chain``); the batch and evaluation tabs call ``infer.run`` and ``evaluate.run``
themselves. Only the models are kept between requests (:class:`ModelCache`).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoomsr.backbones.base import Backbone
from zoomsr.checkpoint import backbone_spec
from zoomsr.data.io import load_image, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.prompts import build_prompt_source
from zoomsr.tasks import evaluate, infer
from zoomsr.tasks.common import resolve_device, set_offline_defaults
from zoomsr.zoom.engine import (
    REC_TYPES,
    ChainEngine,
    ZoomResult,
    ZoomStep,
    build_engine,
    needs_backbone,
)

log = logging.getLogger("zoomsr.ui")

PROMPT_TYPES = ("none", "vlm", "tags", "remote_vlm")
ALIGNS = ("none", "wavelet", "adain")
MEMORY_MODES = ("plain", "swap")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
MODEL_FREE = ("bicubic", "nearest")


def conf_dir() -> Path:
    """The repository's ``conf/``: beside the source tree (editable install), else in cwd."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / "conf" / "infer.yaml").is_file():
            return root / "conf"
    raise ZoomSRError("conf/infer.yaml not found: start zoomsr ui from the repository root.")


def compose(name: str, groups: Sequence[str], values: dict) -> DictConfig:
    """``conf/<name>.yaml`` with the group choices ``groups`` (Hydra overrides) and ``values``
    merged on top (user text is never parsed as an override or an interpolation)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    for text in _strings(values):
        if "${" in text:
            raise ZoomSRError(f"'{text}': text fields may not contain '${{'.")
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name=name, overrides=list(groups))
    return OmegaConf.merge(cfg, OmegaConf.create(values))


def _strings(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list | tuple):
        for v in node:
            yield from _strings(v)


# ---------------------------------------------------------------------------------------------
# Backbones the UI offers


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone in the picker: a model-free one (``bicubic``/``nearest``) or a checkpoint."""

    value: str  # "bicubic" | "nearest" | checkpoint path
    label: str
    scale: int | None  # None: any factor (model-free)
    error: str | None = None  # why a listed checkpoint cannot be read

    @property
    def is_ckpt(self) -> bool:
        return self.value not in MODEL_FREE


def peek_checkpoint(path: str | Path) -> BackboneChoice:
    """A checkpoint's picker entry: its backbone class and scale, read without its weights."""
    path = Path(path).expanduser()
    in_run = path.parent.name == "checkpoints"
    name = f"{path.parent.parent.name}/{path.name}" if in_run else path.name
    try:
        if not path.is_file():
            raise ZoomSRError(f"checkpoint not found: '{path}'")
        try:  # mmap: only the config is read, not every tensor
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # an old-format file cannot be mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        text = (ckpt.get("zoomsr") or {}).get("backbone_config")
        if not isinstance(text, str):
            raise ZoomSRError(f"'{path}' is not a zoomsr training checkpoint (no backbone config)")
        # Parsed as plain data and checked like load_backbone does (nothing is resolved/built).
        cls, kwargs = backbone_spec(text, f"checkpoint '{path}'")
        kind = cls.__name__
        scale = int(kwargs.get("scale") or 0) or None
        return BackboneChoice(str(path), f"{name} ({kind}, x{scale} per step)", scale)
    except Exception as err:  # listed, but any run on it shows why it cannot be used
        message = str(err) if isinstance(err, ZoomSRError) else f"cannot read '{path}': {err}"
        return BackboneChoice(str(path), f"{name} (unreadable)", None, message)


def list_backbones(ckpts: Sequence[str] = (), runs_dir: str | Path | None = "runs") -> list:
    """Model-free backbones, then ``ckpts``, then every ``*.ckpt`` under ``runs_dir`` (newest
    first, at most 50)."""
    choices = [
        BackboneChoice("bicubic", "bicubic (model-free, any factor)", None),
        BackboneChoice("nearest", "nearest (model-free, any factor)", None),
    ]
    seen = set()
    found = []
    if runs_dir is not None and Path(runs_dir).is_dir():
        found = sorted(Path(runs_dir).rglob("*.ckpt"), key=lambda p: -p.stat().st_mtime)[:50]
    for path in [*ckpts, *found]:
        key = str(Path(path).expanduser().resolve())
        if key not in seen:
            seen.add(key)
            choices.append(peek_checkpoint(path))
    return choices


# ---------------------------------------------------------------------------------------------
# The settings of one zoom request


@dataclass
class ZoomSettings:
    """What a user sets in the Zoom tab (or the ``zoom`` API endpoint). Keys map one to one to
    ``infer.yaml`` values; see :meth:`infer_config`."""

    backbone: BackboneChoice
    rec_type: str = "recursive_multiscale"
    process_size: int = 512
    upscale: int = 4
    steps: int = 4
    prompt_type: str = "none"
    user_prompt: str = ""
    vlm_model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    vlm_adapter: str = ""
    precision: str = "auto"
    remote_base_url: str = "http://127.0.0.1:8000/v1"
    remote_model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    remote_key_env: str | None = None
    align: str = "none"
    memory: str = "plain"
    tile_size: int | None = None
    seed: int = 0
    point: tuple[float, float] | None = None
    device: str = "auto"
    warnings: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """One clear :class:`ZoomSRError` for a value out of range (API callers can send any)."""
        checks = [
            (self.rec_type in REC_TYPES, f"rec type must be one of {', '.join(REC_TYPES)}"),
            (self.prompt_type in PROMPT_TYPES, f"prompt type must be {' | '.join(PROMPT_TYPES)}"),
            (self.align in ALIGNS, f"colour fix must be {' | '.join(ALIGNS)}"),
            (self.memory in MEMORY_MODES, f"memory mode must be {' | '.join(MEMORY_MODES)}"),
            (self.precision in PRECISIONS, f"precision must be {' | '.join(PRECISIONS)}"),
            (16 <= self.process_size <= 2048, "process size must be in 16..2048 (UI: 256-1024)"),
            (1 <= self.steps <= 8, "steps must be in 1..8 (UI: 1-6)"),
            (2 <= self.upscale <= 8, "per-step upscale must be in 2..8"),
            (self.tile_size is None or self.tile_size >= 8, "tile size must be >= 8 or empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise ZoomSRError(message + ".")
        if self.backbone.error:
            raise ZoomSRError(self.backbone.error)

    @property
    def step_factor(self) -> int:
        """The factor each step really applies: a checkpoint's own scale, else ``upscale``."""
        return self.backbone.scale if self.backbone.is_ckpt else self.upscale

    def prompt_values(self) -> tuple[str | None, dict]:
        """The ``prompt`` group choice and its values (CoZ: the custom text after the generated
        one, or alone as a manual prompt when no source generates one)."""
        user = self.user_prompt.strip() or None
        if self.prompt_type == "none":
            return ("manual", {"user_text": user}) if user else ("none", {})
        values: dict = {"user_text": user}
        if self.prompt_type == "vlm":
            values |= {"model": self.vlm_model, "adapter": self.vlm_adapter or None}
            values["dtype"] = self.precision
        elif self.prompt_type == "remote_vlm":
            values |= {"base_url": self.remote_base_url, "model": self.remote_model}
            values["api_key_env"] = self.remote_key_env
        return self.prompt_type, values

    def infer_config(self, input_path: str | Path, out_dir: str | Path) -> DictConfig:
        """The ``infer.yaml`` config ``python infer.py`` would compose for these settings."""
        prompt, prompt_values = self.prompt_values()
        groups = [f"prompt={prompt}"]
        values: dict = {
            "input": str(input_path),
            "out_dir": str(out_dir),
            "device": self.device,
            "seed": int(self.seed),
            "zoom": {
                "rec_type": self.rec_type,
                "steps": int(self.steps),
                "process_size": int(self.process_size),
                "align": self.align,
                "memory": self.memory,
                "tile_size": self.tile_size,
                # infer.yaml's 32 px overlap, less for small tiles (it must stay below the tile)
                "tile_overlap": 32 if self.tile_size is None else min(32, self.tile_size // 4),
                "point": list(self.point) if self.point is not None else None,
                # a checkpoint brings its own factor; the model-free ones take the slider's
                "upscale": None if self.backbone.is_ckpt else int(self.upscale),
            },
            "prompt": prompt_values,
        }
        if self.backbone.is_ckpt:
            values["ckpt"] = self.backbone.value
        else:
            groups.append(f"backbone={self.backbone.value}")
            values["scale"] = int(self.upscale)
        return compose("infer", groups, values)

    def override_args(self, input_path: str, out_dir: str) -> list[str]:
        """The same run as ``python infer.py`` arguments (shown in the page, for the shell)."""
        cfg = self.infer_config(input_path, out_dir)
        args = [f"ckpt={cfg.ckpt}"] if cfg.get("ckpt") else [f"backbone={self.backbone.value}"]
        if not cfg.get("ckpt"):
            args.append(f"scale={cfg.scale}")
        args += [f"input={input_path}", f"out_dir={out_dir}", f"seed={cfg.seed}"]
        for key in ("rec_type", "steps", "process_size", "align", "memory", "upscale"):
            value = cfg.zoom[key]
            args.append(f"zoom.{key}={'null' if value is None else value}")
        if cfg.zoom.tile_size is not None:
            args.append(f"zoom.tile_size={cfg.zoom.tile_size}")
            args.append(f"zoom.tile_overlap={cfg.zoom.tile_overlap}")
        if cfg.zoom.point is not None:
            args.append(f"zoom.point=[{cfg.zoom.point[0]:.4f},{cfg.zoom.point[1]:.4f}]")
        prompt, values = self.prompt_values()
        args.append(f"prompt={prompt}")
        for key, value in values.items():
            if value is not None and key != "api_key_env":
                args.append(f"prompt.{key}={json.dumps(value)}")
        return args


# ---------------------------------------------------------------------------------------------
# Models, loaded once


class ModelCache:
    """Backbones and prompt models, built once per distinct config and kept for later requests
    (a run's memory mode still decides where they sit: ``swap`` moves them to the CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._backbones: dict[tuple, Backbone] = {}
        self._prompts: dict[str, nn.Module] = {}
        self.loads = 0  # models built so far (tests check that a second run builds none)

    def backbone(self, cfg: DictConfig, device: torch.device) -> Backbone:
        # resolved: `scale: ${scale}` must not make bicubic x2 and x4 one entry
        key = (cfg.get("ckpt") or OmegaConf.to_yaml(cfg.backbone, resolve=True), str(device))
        with self._lock:
            if key not in self._backbones:
                self._backbones[key] = infer.load_inference_backbone(cfg, device)
                self.loads += 1
                log.info("loaded backbone %s on %s (kept for later requests)", key[0], device)
            return self._backbones[key]

    def prompt_source(self, cfg: DictConfig):
        node = cfg.get("prompt")
        if node is None:
            return None
        key = OmegaConf.to_yaml(node, resolve=True)
        uses_weights = node._target_.rsplit(".", 1)[-1] in ("VLMPrompt", "TagPrompt")
        if not uses_weights:  # cheap ones (and a remote one, whose key varies) are rebuilt
            return build_prompt_source(node)
        with self._lock:
            if key not in self._prompts:
                self._prompts[key] = build_prompt_source(node)
                self.loads += 1
                log.info("built prompt source %s (kept for later requests)", node._target_)
            return self._prompts[key]


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class ZoomRun:
    """One request's run: its folder (``infer.py``'s layout once complete) and its steps."""

    folder: Path
    cfg: DictConfig
    steps: list[ZoomStep] = field(default_factory=list)

    @property
    def result(self) -> ZoomResult:
        return ZoomResult(list(self.steps))


def iter_zoom(
    settings: ZoomSettings,
    input_path: str | Path,
    work_dir: str | Path,
    models: ModelCache,
    fixed_prompts: dict[int, str] | None = None,
) -> Iterator[ZoomRun]:
    """Zoom into one image as ``infer.py`` does, yielding after every step; when the chain is
    done the run's folder holds what ``infer.py`` writes for the image (``step0.png``,
    ``step<k>_input.png``, ``step<k>_output.png``, ``prompts.json``, ``strip.png``,
    ``overview.png``), under ``work_dir/<stem>/``.

    Raises:
        ZoomSRError: a bad setting, an unreadable image, a missing checkpoint or model.
    """
    set_offline_defaults()
    settings.validate()
    input_path = Path(input_path)
    cfg = settings.infer_config(input_path, work_dir)
    image = load_image(input_path)
    device = resolve_device(cfg.device)
    model = needs_backbone(cfg.zoom)
    backbone = models.backbone(cfg, device) if model else None
    source = models.prompt_source(cfg) if model else None
    engine = build_engine(cfg.zoom, backbone, source, device)
    if not isinstance(engine, ChainEngine):
        raise ZoomSRError("the UI runs zoom=chain.")
    run = ZoomRun(Path(work_dir) / input_path.stem, cfg)
    # the page's edited texts replace the source's for their steps
    for step in engine.iter_steps(image, input_path.stem, prompts=fixed_prompts or None):
        run.steps.append(step)
        yield run
    meta = engine.settings()
    partial = run.folder.with_name(f".{run.folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    infer.write_chain(run.result, partial, meta)
    shutil.rmtree(run.folder, ignore_errors=True)
    partial.rename(run.folder)
    yield run


def preview_steps(settings: ZoomSettings, image: torch.Tensor) -> list[ZoomStep]:
    """The regions every step will show, without any model: the chain's own geometry run with
    pixel replication (``onestep`` crops the original, every other type the last output)."""
    u = settings.step_factor
    chain = ChainEngine(  # model-free: nearest crops the original, bicubic_iterated the last out
        rec_type="nearest" if settings.rec_type == "onestep" else "bicubic_iterated",
        upscale=u,
        steps=settings.steps,
        process_size=settings.process_size,
        point=settings.point,
        seed=None,
    )
    return list(chain.iter_steps(image, "preview"))


def run_batch(settings: ZoomSettings, input_dir: Path, out_dir: Path) -> dict:
    """``infer.run`` on a folder with these settings: the folder ``python infer.py`` writes."""
    set_offline_defaults()
    settings.validate()
    return infer.run(settings.infer_config(input_dir, out_dir))


def run_evaluation(
    backbone: BackboneChoice,
    hr_dir: Path,
    out_dir: Path,
    protocol: str,
    scales: Sequence[int],
    metrics: Sequence[str],
    process_size: int = 128,
    device: str = "auto",
) -> dict:
    """``evaluate.run`` on an HR folder: ``metrics.json``, ``metrics.md``, ``metrics.png`` in
    ``out_dir``."""
    set_offline_defaults()
    if backbone.error:
        raise ZoomSRError(backbone.error)
    if protocol not in ("benchmark", "zoom_full", "zoom_center"):
        raise ZoomSRError("protocol must be benchmark | zoom_full | zoom_center.")
    groups = ["data=folder", f"protocol={protocol}", "logger=csv"]
    values: dict = {
        "data": {"hr_dir": str(hr_dir), "num_workers": 0},
        "scales": [int(s) for s in scales],
        "metrics": {"names": list(metrics)},  # the default suite with these metrics
        "out_dir": str(out_dir),
        "device": device,
    }
    if protocol == "zoom_center":
        values["zoom"] = {"process_size": int(process_size)}  # the chain engine's P
    if backbone.is_ckpt:
        values["ckpt"] = backbone.value
        values["scale"] = backbone.scale
    else:
        groups.append(f"backbone={backbone.value}")
    return evaluate.run(compose("evaluate", groups, values))


def save_png(img: torch.Tensor, path: Path) -> str:
    return str(save_image(img, path))
