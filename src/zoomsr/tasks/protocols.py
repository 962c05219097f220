"""Evaluation protocols (DESIGN.md): what is upscaled, against which reference, at which scale.

- :class:`Benchmark`: single-step SR at each scale ``s``; LR = MATLAB bicubic of the HR (or the
  official LR files); full-reference metrics with ``s`` pixels shaved.
- :class:`ZoomFull`: per total scale ``s = u**k``, the same LR as the benchmark at ``s``, reached
  in ``k`` chained whole-image steps of the backbone's factor ``u`` (the zoom engine's full-image
  mode); compared with the HR. At ``s = u`` it is the benchmark.
- :class:`ZoomCenter`: Chain-of-Zoom's centre chain; no-reference metrics at every step,
  full-reference where the HR holds the detail, FID per scale over patches.
- :class:`Paired`: real LR/HR pairs (RealSR-style folders).

Every protocol hands ``(scale, image, sr, hr)`` to a :class:`Recorder`, which scores batches of
equal-sized images, stores FID features, and appends one row per image to ``results.jsonl``:
an interrupted evaluation resumes and skips what is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from zoomsr.data.imresize import imresize
from zoomsr.data.io import load_image, quantize, save_image
from zoomsr.errors import ZoomSRError
from zoomsr.metrics.suite import MetricSuite
from zoomsr.reporting import ResultLog
from zoomsr.runfolder import check_shave, features_ok, save_npz
from zoomsr.zoom.engine import ChainEngine, Engine, FullImageEngine

if TYPE_CHECKING:
    from zoomsr.tasks.distributed import Shard


@dataclass
class EvalContext:
    """What every protocol gets. ``make_engine(scale, **overrides)`` returns the ``zoom`` group's
    engine (:mod:`zoomsr.zoom.engine`) on a backbone of that step factor, with the prompt source;
    ``data`` is the ``data`` config's module (``SRDataModule``)."""

    make_engine: Callable[..., Engine]
    data: Any
    scales: list[int]
    suite: MetricSuite
    out: Path
    device: torch.device | str = "cpu"
    batch_size: int = 8
    save_images: bool = False
    #: this process's share of the images in a distributed evaluation (None: all of them)
    shard: Shard | None = None


def _engine(ctx: EvalContext, kind: type, protocol: str, scale: int, **overrides) -> Engine:
    """The protocol's engine, of the ``zoom`` mode it composes (``kind``)."""
    engine = ctx.make_engine(scale, **overrides)
    if not isinstance(engine, kind):
        mode = "chain" if kind is ChainEngine else "full"
        raise ZoomSRError(f"protocol={protocol} runs zoom={mode}; drop the zoom= override.")
    return engine


def _last_step(engine: Engine, image: torch.Tensor, name: str) -> torch.Tensor:
    """The last step's output of ``image`` ``(C, h, w)``, rounded to 8 bits as when saved to
    PNG for the published tables."""
    *_, last = engine.iter_steps(image, name)
    return quantize(last.output)


def _one_step_each(
    ctx: EvalContext,
    rec: Recorder,
    scale: int,
    dataset,
    names: list[str],
    shave: int,
    protocol: str,
) -> None:
    """One engine step (``zoom=full``, ``steps=1``) on each image of ``dataset`` not yet recorded
    at ``scale`` (``names`` are their unique row names, in order), scored against its HR with
    ``shave`` border pixels left out."""
    todo = [i for i, name in enumerate(names) if not rec.done(scale, name)]
    if not todo:
        return
    engine = _engine(ctx, FullImageEngine, protocol, scale, steps=1)
    for i in tqdm(todo, desc=f"x{scale}", unit="img", dynamic_ncols=True):
        item = dataset[i]
        lr = item["lr"][None].to(ctx.device)
        *_, last = engine.iter_steps(lr[0], item["name"])
        # the suite's colour fix and 8-bit rounding (metrics.align, metrics.round_8bit)
        sr = ctx.suite.prepare(last.output[None].to(ctx.device), lr)[0]
        rec.add(scale, item["name"], sr, item["hr"].to(ctx.device), shave)
    rec.flush()


@dataclass
class _Item:
    scale: int
    name: str
    sr: torch.Tensor  # (C, H, W)
    hr: torch.Tensor | None
    shave: int
    fid_sr: torch.Tensor | None  # (N, C, h, w) images whose features enter FID
    fid_hr: torch.Tensor | None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        hr = None if self.hr is None else tuple(self.hr.shape)
        return (self.scale, tuple(self.sr.shape), hr, self.shave)


class Recorder:
    """Scores images in batches of equal size (a queue per size and scale) and writes each
    image's row as soon as it is scored. FID features go to ``features/x{scale}/{image}.npz``
    before the row, so a resumed run has every finished image's features; a thumbnail SR | HR
    goes to ``panels/``. Images of many different sizes (whole-image protocols) cannot share a
    batch: beyond ``max_queues`` sizes every queue is scored at once, holding little memory."""

    max_queues = 4

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        shard = ctx.shard  # distributed: this rank's rows go to its own file (tasks.distributed)
        self.results = (
            ResultLog(ctx.out / "results.jsonl") if shard is None else shard.result_log(ctx.out)
        )
        if ctx.suite.set_names:  # a row counts as done only with its features (i11)
            self.results.keep(lambda r: features_ok(self._features_path(r["scale"], r["image"])))
        self.pending: dict[tuple, list[_Item]] = {}  # one queue per image size and scale

    def done(self, scale: int, name: str) -> bool:
        """Whether ``(scale, name)`` needs no work here: recorded, or another rank's image.
        Protocols ask this of every image, in their order, before computing it."""
        other_rank = self.ctx.shard is not None and not self.ctx.shard.owns(name)
        return other_rank or self.results.done(scale, name)

    def add(
        self,
        scale: int,
        name: str,
        sr: torch.Tensor,
        hr: torch.Tensor | None,
        shave: int = 0,
        fid_sr: torch.Tensor | None = None,
        fid_hr: torch.Tensor | None = None,
        **extra,
    ) -> None:
        """Queue one image: ``sr``/``hr`` ``(C, H, W)`` in [0, 1] (``hr`` None: no reference).
        FID uses ``fid_sr``/``fid_hr`` ``(N, C, h, w)`` when given (patches), else the images."""
        check_shave(name, hr, shave)  # one line naming the image (i11)
        item = _Item(scale, name, sr, hr, shave, fid_sr, fid_hr, extra)
        queue = self.pending.setdefault(item.key, [])
        queue.append(item)
        if len(queue) >= self.ctx.batch_size:
            self._score(self.pending.pop(item.key))
        elif len(self.pending) > self.max_queues:
            self.flush()

    def flush(self) -> None:
        """Score every queued image and write their rows."""
        while self.pending:
            self._score(self.pending.pop(next(iter(self.pending))))

    def _score(self, items: list[_Item]) -> None:
        """Score one batch of equal-sized images and write their rows."""
        first = items[0]
        sr = torch.stack([i.sr for i in items])
        hr = None if first.hr is None else torch.stack([i.hr for i in items])
        values = self.ctx.suite(sr, hr, first.shave)
        if self.ctx.suite.set_names:
            self._save_features(items)
        for n, item in enumerate(items):
            self._save_panel(item)
            row = {"scale": item.scale, "image": item.name, **item.extra}
            row |= {m: values[m][n] if m in values else None for m in self.ctx.suite.names}
            self.results.add(row)

    def _features(self, group: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Set-metric features of one image's group (its patches, or the image), in chunks of
        32. One image's group is always one batch, whatever else is queued: a resumed run then
        extracts exactly the same features (a conv's float rounding depends on the batch)."""
        if group is None or not len(group):
            return {}
        chunks = [self.ctx.suite.features(group[i : i + 32]) for i in range(0, len(group), 32)]
        return {n: torch.cat([c[n] for c in chunks]) for n in self.ctx.suite.set_names}

    def _save_features(self, items: list[_Item]) -> None:
        as_set = [i.fid_sr if i.fid_sr is not None else i.sr[None] for i in items]
        refs = [
            i.fid_hr if i.fid_hr is not None else (None if i.hr is None else i.hr[None])
            for i in items
        ]
        for item, group, ref in zip(items, as_set, refs):
            fs, fh = self._features(group), self._features(ref)
            arrays = {f"sr_{n}": v.numpy() for n, v in fs.items()}
            arrays |= {f"hr_{n}": v.numpy() for n, v in fh.items()}
            save_npz(self._features_path(item.scale, item.name), arrays)

    def _features_path(self, scale: int, name: str) -> Path:
        return self.ctx.out / "features" / f"x{scale}" / f"{name}.npz"

    def _save_panel(self, item: _Item) -> None:
        """``panels/x{s}/{image}.png``: SR | HR (SR alone without reference), 192 px high."""
        views = [item.sr] if item.hr is None else [item.sr, item.hr]
        views = [v.expand(3, -1, -1) for v in views]
        h = views[0].shape[-2]
        if h > 192:
            size = (192, max(1, round(views[0].shape[-1] * 192 / h)))
            views = [imresize(v, out_size=size).clamp(0, 1) for v in views]
        save_image(torch.cat(views, dim=-1), self.ctx.out / "panels" / f"x{item.scale}" /
                   f"{item.name}.png")  # fmt: skip
        if self.ctx.save_images:
            save_image(item.sr, self.ctx.out / "images" / f"x{item.scale}" / f"{item.name}.png")


def set_metrics(ctx: EvalContext, rows: list[dict]) -> dict[int, dict[str, float]]:
    """FID per scale from the stored features of ``rows``' images."""
    out: dict[int, dict[str, float]] = {}
    for scale in sorted({r["scale"] for r in rows}):
        names = sorted(r["image"] for r in rows if r["scale"] == scale)
        out[scale] = {}
        for metric in ctx.suite.set_names:
            sr, hr = [], []
            for name in names:
                with np.load(ctx.out / "features" / f"x{scale}" / f"{name}.npz") as f:
                    sr.append(f[f"sr_{metric}"])
                    if f"hr_{metric}" in f.files:
                        hr.append(f[f"hr_{metric}"])
            a, b = np.concatenate(sr), np.concatenate(hr) if hr else np.zeros((0, 1))
            out[scale][metric] = ctx.suite.distance(metric, a, b)
    return out


def _steps(scale: int, u: int) -> int:
    """``k`` with ``u**k == scale``, or a ZoomSRError."""
    k = round(math.log(scale, u)) if scale >= 1 else -1
    if k < 0 or u**k != scale:
        raise ZoomSRError(f"scale x{scale} is not a power of the step factor x{u}.")
    return k


class Benchmark:
    """Single-step SR at each scale (the published tables' protocol).

    Args:
        shave: border pixels left out of the full-reference metrics; None (default): the scale.
    """

    def __init__(self, shave: int | None = None) -> None:
        self.shave = shave

    def run(self, ctx: EvalContext) -> list[dict]:
        rec = Recorder(ctx)
        for scale in ctx.scales:
            dataset = ctx.data.benchmark_dataset(scale)
            shave = self.shave if self.shave is not None else scale
            _one_step_each(ctx, rec, scale, dataset, dataset.names, shave, "benchmark")
        return [r for r in rec.results.rows if r["scale"] in ctx.scales]


class ZoomFull:
    """Whole-image zoom to each total scale ``s = u**k`` in ``k`` chained steps.

    LR = the benchmark's LR at ``s`` (HR cropped to a multiple of ``s``, MATLAB bicubic, 8-bit);
    the ``zoom=full`` engine chains ``k`` tiled steps of the backbone's factor ``u``; the 8-bit
    output is compared with the HR, ``s`` pixels shaved (the benchmark's convention).

    Args:
        upscale: the step factor ``u`` (the backbone's own factor for a checkpoint).
        shave: border pixels left out of the full-reference metrics; None (default): ``s``.
    """

    def __init__(self, upscale: int = 4, shave: int | None = None) -> None:
        self.upscale, self.shave = upscale, shave

    def run(self, ctx: EvalContext) -> list[dict]:
        rec = Recorder(ctx)
        for scale in ctx.scales:
            steps = _steps(scale, self.upscale)
            dataset = ctx.data.benchmark_dataset(scale)
            todo = [i for i, n in enumerate(dataset.names) if not rec.done(scale, n)]
            if not todo:
                continue
            engine = _engine(ctx, FullImageEngine, "zoom_full", self.upscale, steps=max(steps, 1))
            for i in tqdm(todo, desc=f"x{scale}", unit="img", dynamic_ncols=True):
                item = dataset[i]
                lr = item["lr"]
                sr = _last_step(engine, lr, item["name"]) if steps else quantize(lr)
                shave = self.shave if self.shave is not None else scale
                rec.add(scale, item["name"], sr.to(ctx.device), item["hr"].to(ctx.device), shave)
            rec.flush()
        return [r for r in rec.results.rows if r["scale"] in ctx.scales]


class Paired:
    """Real LR/HR pairs (RealSR-style: ``data.hr_dir`` and ``data.lr_dir`` with the same file
    names, or ``X{s}`` sub-folders); one backbone step at each scale of ``scales``.

    Args:
        shave: border pixels left out of the full-reference metrics (default 0, as the
            real-SR papers' pyiqa-based evaluations do).
        scale: the pairs' factor, the one scale evaluated (the StableSR/OSEDiff test crops:
            4); None evaluates every entry of ``scales``.
    """

    def __init__(self, shave: int = 0, scale: int | None = None) -> None:
        self.shave, self.scale = shave, scale

    def run(self, ctx: EvalContext) -> list[dict]:
        from zoomsr.data.datasets import PairedFolderDataset

        if ctx.data.lr_dir is None:
            raise ZoomSRError("protocol=paired needs data.lr_dir (the real LR images).")
        rec = Recorder(ctx)
        scales = ctx.scales if self.scale is None else [self.scale]
        for scale in scales:
            dataset = PairedFolderDataset(ctx.data.hr_dir, ctx.data.lr_dir, scale)
            _one_step_each(ctx, rec, scale, dataset, dataset.names, self.shave, "paired")
        return [r for r in rec.results.rows if r["scale"] in scales]


def patches(img: torch.Tensor, size: int) -> torch.Tensor | None:
    """Non-overlapping ``size`` patches of ``(C, H, W)`` on a grid from the top left:
    ``(N, C, size, size)``, or None when the image is smaller than one patch."""
    c, h, w = img.shape
    rows, cols = h // size, w // size
    if not rows or not cols:
        return None
    grid = img[:, : rows * size, : cols * size].reshape(c, rows, size, cols, size)
    return grid.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, size, size)


class ZoomCenter:
    """Chain-of-Zoom's centre chain (Kim et al. 2025, Sec. 4), run by the ``zoom=chain`` engine:
    step ``k`` shows the centre ``1/u**k`` of the input at ``P x P`` (``P = zoom.process_size``).

    The input is the HR's centre square (side ``S``: the short side rounded down to a multiple
    of ``P``) brought to ``P x P`` by MATLAB bicubic, 8-bit (the engine's own preprocessing then
    leaves it as it is). At magnification ``m = u**k``:

    - no-reference metrics of the output, always;
    - full-reference metrics against the HR crop the output shows (``S/m`` px), brought to
      ``P x P``, only where that crop is at least ``P`` px (the HR then holds the detail);
    - FID features of the output's ``fid_patch`` patches and of the HR's patches at the same
      magnification (the whole HR resized by ``P*m/S``), where ``S/m >= P``.

    ``scales`` are the magnifications reported (powers of ``u``; 1 is the input itself); the
    engine runs as many steps as the largest needs.

    Args:
        upscale: step factor ``u``.
        fid_patch: FID patch side in output pixels (default 32).
    """

    def __init__(self, upscale: int = 4, fid_patch: int = 32) -> None:
        self.upscale, self.fid_patch = upscale, fid_patch

    def _square(self, hr: torch.Tensor, name: str, p: int) -> torch.Tensor:
        side = min(hr.shape[-2:]) // p * p
        if side < p:
            raise ZoomSRError(f"'{name}' is {hr.shape[-1]}x{hr.shape[-2]}, smaller than "
                              f"zoom.process_size={p}: pass a smaller zoom.process_size "
                              "(e.g. zoom.process_size=128).")  # fmt: skip
        top, left = (hr.shape[-2] - side) // 2, (hr.shape[-1] - side) // 2
        return hr[:, top : top + side, left : left + side]

    @staticmethod
    def _to_p(img: torch.Tensor, p: int) -> torch.Tensor:
        return img if img.shape[-2:] == (p, p) else quantize(imresize(img, out_size=(p, p)))

    def _reference(self, square: torch.Tensor, box, p: int) -> torch.Tensor | None:
        side = square.shape[-1]
        x0, y0, x1, y1 = (round(v * side) for v in box)
        if min(y1 - y0, x1 - x0) < p:
            return None
        return self._to_p(square[:, y0:y1, x0:x1], p)

    def _hr_patches(self, hr: torch.Tensor, side: int, mag: int, p: int) -> torch.Tensor | None:
        d = side / (p * mag)  # HR pixels per output pixel
        if d < 1:
            return None
        img = hr if d == 1 else quantize(imresize(hr, scale=1 / d))
        return patches(img, self.fid_patch)

    def run(self, ctx: EvalContext) -> list[dict]:
        steps = max(_steps(s, self.upscale) for s in ctx.scales)
        rec = Recorder(ctx)
        listing = ctx.data.benchmark_dataset(1)
        engine = None
        for f, name in tqdm(zip(listing.files, listing.names), desc="zoom_center", unit="img",
                            total=len(listing.files), dynamic_ncols=True):  # fmt: skip
            if all(rec.done(s, name) for s in ctx.scales):
                continue
            engine = engine or _engine(ctx, ChainEngine, "zoom_center", self.upscale,
                                       steps=max(steps, 1))  # fmt: skip
            p = engine.process_size
            hr = load_image(f).to(ctx.device)
            square = self._square(hr, f.name, p)
            for step in engine.iter_steps(self._to_p(square, p), f.stem):
                mag = self.upscale**step.index
                if mag not in ctx.scales or rec.done(mag, name):
                    continue
                sr = quantize(step.output.to(ctx.device))
                sets = bool(ctx.suite.set_names)
                fid_hr = self._hr_patches(hr, square.shape[-1], mag, p) if sets else None
                fid_sr = patches(sr, self.fid_patch) if sets else None
                rec.add(mag, name, sr, self._reference(square, step.box, p), 0, fid_sr, fid_hr)
        rec.flush()
        return [r for r in rec.results.rows if r["scale"] in ctx.scales]
