"""Checks a run can make before importing the heavy libraries (Lightning alone takes 5-8 s to
import on a small machine): a mistake in the config or a missing weight folder is reported in
the time it takes to import torch, not after the whole stack has loaded.
"""

from __future__ import annotations

import math

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from zoomsr.backbones.base import Backbone
from zoomsr.errors import ZoomSRError


def check(cfg: DictConfig) -> None:
    """Raise the user error a run would meet at start-up, cheaply.

    - Every mandatory value (``???``) is set: OmegaConf raises ``MissingMandatoryValue``, which
      :func:`zoomsr.errors.exit_on_user_error` reports as ``config value 'x' is required``.
    - The backbone's weights are where its config says: every backbone has
      ``check_weights(config)`` (a classmethod that raises ZoomSRError naming what is missing).
    """
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_values(cfg, str(cfg.get("task_name", "")))
    target = OmegaConf.select(cfg, "backbone._target_")
    if target:
        cls = get_class(target)  # imports the backbone's module only
        if issubclass(cls, Backbone):  # Backbone.check_weights: a no-op unless overridden
            cls.check_weights(cfg.backbone)


def _number(value, key: str, minimum: float, integer: bool):
    """``value`` as an int (``integer``) or float >= ``minimum``, else a ZoomSRError for ``key``."""
    kind = "an integer" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if not ok or value < minimum:
        example = int(minimum) if integer else minimum
        raise ZoomSRError(
            f"{key}={value!r} is not valid: it must be {kind} >= {example:g} "
            f"(e.g. {key}={max(example, 2) if integer else example})."
        )
    return int(value) if integer else float(value)


def scales_of(cfg: DictConfig) -> list[int] | None:
    """``cfg.scales`` as integers >= 1 (None when unset), or a ZoomSRError.

    ``scales=[2.5]`` is an error (it used to run as x2), as are ``scales=[x4]`` and ``[0]``."""
    raw = cfg.get("scales")
    if raw is None:
        return None
    values = list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise ZoomSRError("scales=[] is empty: pass scales=[2,3,4] (or leave it out).")
    try:
        return [_number(v, "scales", 1, True) for v in values]
    except ZoomSRError:
        raise ZoomSRError(
            f"scales={[v for v in values]} is not valid: scales are integers >= 1, e.g. "
            "scales=[2,3,4] (write 4, not x4)."
        ) from None


def check_values(cfg: DictConfig, task: str) -> None:
    """The config values a task would otherwise take silently or fail on with a traceback.

    - ``scale``: an integer >= 1; ``scales`` (evaluate): integers >= 1.
    - ``zoom`` (infer): ``upscale`` null or an integer >= 2, ``steps`` >= 1, ``process_size``
      >= 1, ``tile_size`` null or >= 1; with ``zoom=chain`` the stated rule
      ``upscale ** steps <= process_size``: beyond it the zoomed region is less than one pixel
      of the working square and the outputs are flat.
    - ``protocol`` (evaluate): ``upscale`` >= 2 and ``process_size`` >= 1 where it has them.
    - train: ``optim.lr`` >= 0, ``trainer.max_steps`` >= 1 (or -1 with ``max_epochs``).
    """
    if "scale" in cfg and cfg.get("scale") is not None:
        _number(cfg.scale, "scale", 1, True)
    for key, minimum in (("batch_size", 1), ("data.batch_size", 1), ("data.num_workers", 0)):
        value = OmegaConf.select(cfg, key)
        if value is not None:
            _number(value, key, minimum, True)
    if task == "evaluate":
        scales_of(cfg)
        _check_group(cfg.get("protocol"), "protocol")
        _check_group(cfg.get("zoom"), "zoom")  # the engine every protocol runs
    if task == "infer":
        _check_zoom(cfg.get("zoom"), cfg.get("scale"))
    if task == "train":
        lr = OmegaConf.select(cfg, "optim.lr")
        if lr is not None:
            _number(lr, "optim.lr", 0, False)
        steps = OmegaConf.select(cfg, "trainer.max_steps")
        if steps is not None and steps != -1:
            try:
                _number(steps, "trainer.max_steps", 1, True)
            except ZoomSRError:
                raise ZoomSRError(
                    f"trainer.max_steps={steps} trains nothing (and writes no checkpoint): "
                    "pass trainer.max_steps=N with N >= 1."
                ) from None


def _check_group(node, prefix: str) -> None:
    if node is None:
        return
    upscale = node.get("upscale")
    if upscale is not None:
        _number(upscale, f"{prefix}.upscale", 2, True)
    for key in ("process_size", "steps", "tile_size", "fid_patch"):
        if node.get(key) is not None:
            _number(node.get(key), f"{prefix}.{key}", 1, True)
    for key in ("tile_overlap", "shave"):
        if node.get(key) is not None:
            _number(node.get(key), f"{prefix}.{key}", 0, True)


def _check_zoom(zoom, scale: int | None) -> None:
    if zoom is None:
        return
    _check_group(zoom, "zoom")
    steps, size = zoom.get("steps"), zoom.get("process_size")
    if steps is None or size is None:  # zoom=full: the output's pixel limit applies instead
        return
    u = int(zoom.get("upscale") or scale or 4)
    largest = max(0, int(math.log(size, u) + 1e-9))
    if u ** int(steps) > size:
        raise ZoomSRError(
            f"zoom.steps={steps} zooms x{u}^{steps} into a {size} px working square, below one "
            f"pixel of it (the outputs would be flat): the largest zoom.steps for "
            f"zoom.process_size={size} and x{u} steps is {largest}; raise zoom.process_size "
            "for more."
        )


#: the evaluation scales of non-learned backbones when ``scales`` is left out
BASELINE_SCALES = [2, 3, 4]
#: zoom_full's default scales stop where the LR of the smallest image is this small (px)
MIN_LR_SIDE = 8


def default_scales(cfg: DictConfig, trained, data) -> list[int]:
    """``scales`` as given, else the stated default:

    - a non-learned backbone: ``[2, 3, 4]``;
    - a checkpoint (``trained``, a x``u`` model): ``[u]`` with ``protocol=benchmark``/``paired``;
      with ``protocol=zoom_full`` the powers ``u**k`` (k >= 1) whose LR of the smallest HR image
      is at least 8 px on its short side; with ``protocol=zoom_center`` the powers ``u**k``
      whose HR crop is at least ``zoom.process_size`` px in the largest image (full-reference
      exists); always at least ``[u]``.
    """
    given = scales_of(cfg)
    if given is not None:
        _check_center_scales(cfg, given)
        return given
    if trained is None:
        return list(BASELINE_SCALES)
    u = int(trained.scale)
    target = str(OmegaConf.select(cfg, "protocol._target_") or "")
    if not target.endswith(("ZoomFull", "ZoomCenter")) or u < 2:
        return [u]
    sides = _short_sides(getattr(data, "hr_dir", None))
    if not sides:
        return [u]
    if target.endswith("ZoomFull"):
        fits = lambda m: min(sides) // m >= MIN_LR_SIDE  # noqa: E731
    else:
        p = int(OmegaConf.select(cfg, "zoom.process_size") or 512)
        fits = lambda m: max(sides) // p * p // m >= p  # noqa: E731
    scales, m = [u], u * u
    while fits(m):
        scales.append(m)
        m *= u
    return scales


def _check_center_scales(cfg: DictConfig, scales: list[int]) -> None:
    """protocol=zoom_center: a magnification beyond ``process_size`` shows less than one pixel
    of the working square (flat outputs); the stated rule is ``max(scales) <= process_size``."""
    if not str(OmegaConf.select(cfg, "protocol._target_") or "").endswith("ZoomCenter"):
        return
    p = int(OmegaConf.select(cfg, "zoom.process_size") or 512)  # the chain's P (CoZ: 512)
    if max(scales) > p:
        raise ZoomSRError(
            f"scales={scales}: x{max(scales)} zooms below one pixel of the "
            f"zoom.process_size={p} square (flat outputs); the largest scale it allows is "
            f"x{p}: drop the larger scales or raise zoom.process_size."
        )


def _short_sides(folder) -> list[int]:
    """The short side of every image of ``folder`` (headers only), [] when unknown."""
    if folder is None:
        return []
    from PIL import Image

    from zoomsr.data.io import list_images

    sides = []
    for path in list_images(folder, "HR folder"):
        try:
            with Image.open(path) as img:
                sides.append(min(img.size))
        except Exception:  # unreadable: the protocol names it when it loads it
            continue
    return sides
