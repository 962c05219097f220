"""Loading a trained backbone from a zoomsr checkpoint, without running anything it names.

A checkpoint is read with ``torch.load(weights_only=True)`` (tensors, numbers, strings and
containers only). Its backbone config is never handed to Hydra's ``instantiate``, which would
build every nested ``_target_`` (any importable callable, at any depth). Instead
:func:`backbone_spec` parses it as plain YAML and accepts exactly:

- a top-level ``_target_`` that is a :class:`~zoomsr.backbones.base.Backbone` subclass defined
  in a ``zoomsr.backbones`` module, named by its exact ``module.Class`` path (no attribute
  chains such as ``zoomsr.backbones.sr3.os.system``);
- other keys that are arguments of that class's ``__init__``;
- values that are plain data at every depth: strings, numbers, booleans, null, and lists or
  mappings of those, with no key starting with ``_`` (``_target_``, ``_partial_``, ``_args_``…).

The backbone is then built by calling the class with those values.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf._utils import get_yaml_loader

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError

_PLAIN = (str, int, float, bool, type(None))


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``: tensors, numbers, strings and containers only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZoomSRError(
            f"checkpoint not found: '{path}'. Training runs keep theirs in "
            "runs/train/<run>/checkpoints/ (last.ckpt, best-*.ckpt)."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with foreign objects, or not a checkpoint at all
        raise ZoomSRError(f"cannot read checkpoint '{path}' safely: {err}") from err
    if not isinstance(ckpt, dict):
        raise ZoomSRError(
            f"'{path}' is not a zoomsr checkpoint (it holds a {type(ckpt).__name__})."
        )
    return ckpt


def plain_value(value: Any, where: str) -> Any:
    """``value`` if it is plain data at every depth, else a ZoomSRError naming ``where``."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise ZoomSRError(
                    f"{where}: key '{key}' is not allowed (a config read from a file may hold "
                    "plain values only, never a callable such as _target_)."
                )
            out[key] = plain_value(v, f"{where}.{key}")
        return out
    raise ZoomSRError(
        f"{where}: a {type(value).__name__} is not a plain value (strings, numbers, booleans, "
        "null, lists and mappings only)."
    )


def backbone_class(target: Any, where: str) -> type[Backbone]:
    """The zoomsr backbone class named exactly by ``target`` (``zoomsr.backbones.m.Class``)."""
    text = str(target)
    module_name, _, name = text.rpartition(".")
    refuse = ZoomSRError(
        f"{where}: _target_ '{text}' is not a zoomsr backbone class; a checkpoint may name only "
        "a class of zoomsr.backbones (e.g. zoomsr.backbones.sr3.SR3)."
    )
    if not isinstance(target, str) or not module_name.startswith("zoomsr.backbones."):
        raise refuse
    if not name.isidentifier() or not all(p.isidentifier() for p in module_name.split(".")):
        raise refuse
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise refuse from None
    cls = vars(module).get(name)
    if not (
        isinstance(cls, type)
        and issubclass(cls, Backbone)
        and cls.__module__ == module_name
        and cls.__qualname__ == name
    ):
        raise refuse
    return cls


def backbone_spec(text: Any, where: str) -> tuple[type[Backbone], dict[str, Any]]:
    """Parse a saved backbone config (YAML text) into ``(class, keyword arguments)``.

    Raises:
        ZoomSRError: not a mapping with ``_target_``, a class outside zoomsr's backbones, a
            key that is not an argument of that class, or a value that is not plain data.
    """
    if not isinstance(text, str):
        raise ZoomSRError(f"{where} is not a zoomsr training checkpoint (no backbone config).")
    try:
        # Plain YAML (a SafeLoader: no python tags; interpolations stay literal strings), read
        # with OmegaConf's number rules so 1e-6 is a float as when it was written.
        config = yaml.load(text, Loader=get_yaml_loader())  # noqa: S506
    except yaml.YAMLError as err:
        why = " ".join(str(err).split())  # one line
        raise ZoomSRError(f"{where}: the backbone config is not plain YAML ({why}).") from None
    if not isinstance(config, dict) or "_target_" not in config:
        raise ZoomSRError(f"{where} is not a zoomsr training checkpoint (no backbone config).")
    config = dict(config)
    cls = backbone_class(config.pop("_target_"), where)
    kwargs = plain_value(config, f"{where}: backbone config")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - allowed)
    if unknown and not takes_any:
        raise ZoomSRError(
            f"{where}: backbone config keys {unknown} are not arguments of {cls.__name__} "
            f"(it takes {sorted(allowed)}); the checkpoint was made by another zoomsr version "
            "or edited."
        )
    return cls, kwargs


def build_backbone(cls: type[Backbone], kwargs: dict[str, Any], where: str) -> Backbone:
    """``cls(**kwargs)``; a wrong value gives one line naming the checkpoint."""
    try:
        return cls(**kwargs)
    except ZoomSRError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise ZoomSRError(
            f"{where}: cannot build {cls.__name__} from its saved config: {err}"
        ) from None


def read_submodule_state(path: Path, prefix: str, none_found: str) -> dict[str, torch.Tensor]:
    """The ``prefix``-ed weights of a zoomsr checkpoint (its EMA shadow when kept), without the
    prefix; a ``.safetensors`` file is taken as that submodule's own state dict. A checkpoint
    holding none is one error: ``'<path>' <none_found>``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    ckpt = read_checkpoint(path)
    if "ema" in ckpt:
        state = ckpt["ema"]["shadow"]
    else:
        state = {k.removeprefix("backbone."): v for k, v in ckpt.get("state_dict", {}).items()}
    sub = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        raise ZoomSRError(f"'{path}' {none_found}")
    return sub


def load_backbone(
    path: str | Path, device: torch.device | str = "cpu", use_ema: bool = True
) -> Backbone:
    """Rebuild the backbone a training run saved, with its EMA weights by default.

    Raises:
        ZoomSRError: the file is missing or unreadable, is not a zoomsr training checkpoint,
            names anything but a zoomsr backbone, or holds weights of another architecture.
    """
    where = f"checkpoint '{path}'"
    ckpt = read_checkpoint(path)
    meta = ckpt.get("zoomsr")
    cls, kwargs = backbone_spec(
        meta.get("backbone_config") if isinstance(meta, dict) else None, where
    )
    backbone = build_backbone(cls, cls.inference_kwargs(kwargs), where)
    ema = ckpt.get("ema")
    if use_ema and isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
        state = ema["shadow"]
    else:
        prefix = "backbone."
        weights = ckpt.get("state_dict")
        if not isinstance(weights, dict):
            raise ZoomSRError(f"{where} holds no weights (no state_dict).")
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    load_weights(backbone, state, where)
    return backbone.to(device).eval()


def load_weights(backbone: Backbone, state: dict, where: str) -> None:
    """``backbone.load_trainable_state_dict(state)`` with one line for a mismatch."""
    expected = backbone.trainable_state_dict()
    bad = sorted(
        k
        for k, v in state.items()
        if k in expected and (not torch.is_tensor(v) or v.shape != expected[k].shape)
    )
    if bad:
        k = bad[0]
        got = tuple(state[k].shape) if torch.is_tensor(state[k]) else type(state[k]).__name__
        raise ZoomSRError(
            f"{where} holds weights of another architecture: '{k}' is {got}, "
            f"{type(backbone).__name__} expects {tuple(expected[k].shape)} ({len(bad)} such). "
            "Use the checkpoint with the backbone it was trained with."
        )
    try:
        backbone.load_trainable_state_dict(state)
    except (KeyError, RuntimeError) as err:
        raise ZoomSRError(
            f"{where} does not match {type(backbone).__name__}: {str(err).strip(chr(34))}. "
            "Use the checkpoint with the backbone it was trained with."
        ) from None


def saved_config(ckpt: dict) -> Any:
    """The backbone config text a zoomsr checkpoint keeps (None when absent)."""
    meta = ckpt.get("zoomsr")
    return meta.get("backbone_config") if isinstance(meta, dict) else None


def check_resume(
    ckpt: dict, backbone: Backbone, backbone_target: str, ckpt_path: str, dirpath: Path
) -> None:
    """Refuse a training resume from a checkpoint of another backbone, or whose saved callback
    state names files outside this run's checkpoint folder (Lightning deletes old best/last
    checkpoints by those paths)."""
    where = f"ckpt_path '{ckpt_path}'"
    cls, _ = backbone_spec(saved_config(ckpt), where)
    if f"{cls.__module__}.{cls.__qualname__}" != backbone_target:
        raise ZoomSRError(
            f"{where} is a {cls.__name__} checkpoint, this run's backbone is {backbone_target}: "
            "resume with the same backbone (or start a new run without ckpt_path)."
        )
    weights = ckpt.get("state_dict")
    if not isinstance(weights, dict):
        raise ZoomSRError(f"{where} holds no weights (no state_dict).")
    state = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
    expected = backbone.trainable_state_dict()
    if set(state) != set(expected) or any(
        not torch.is_tensor(v) or v.shape != expected[k].shape for k, v in state.items()
    ):
        raise ZoomSRError(
            f"{where} holds weights of another architecture than this run's "
            f"{type(backbone).__name__} (different layers or sizes): resume with the backbone "
            "settings it was trained with, or start a new run."
        )
    _check_callback_paths(ckpt.get("callbacks"), dirpath, where)


def _check_callback_paths(state: Any, dirpath: Path, where: str) -> None:
    root = os.path.realpath(dirpath)
    lexical_root = os.path.abspath(dirpath)

    def visit(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and "/" in k or key == "best_k_models":
                    visit(k, "path")
                visit(v, str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v, key)
        elif isinstance(value, str) and value and ("path" in key.lower() or key == "path"):
            lexical = os.path.abspath(value)
            if ".." in Path(value).parts or (
                lexical.startswith(lexical_root + os.sep)
                and not os.path.realpath(value).startswith(root + os.sep)
            ):
                raise ZoomSRError(
                    f"{where}: its callback state names the file '{value}', outside this run's "
                    "checkpoint folder; refusing to resume from it (start a new run)."
                )

    visit(state, "")
