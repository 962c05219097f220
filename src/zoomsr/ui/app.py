"""The page: Chain-of-Zoom with any backbone (Zoom tab), a folder or zip of images (Batch tab),
an evaluation protocol on uploaded HR images (Evaluate tab). Every run goes through
:mod:`zoomsr.ui.engine`, so it is what ``infer.py`` / ``evaluate.py`` run.

Each request works in its own temporary folder under the server's root (one user never sees
another's files); models are kept between requests; the queue is bounded and one heavy run
goes at a time.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
import traceback
import uuid
import zipfile
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

from zoomsr.data.io import IMAGE_EXTENSIONS, load_image
from zoomsr.errors import ZoomSRError, user_message
from zoomsr.ui import engine
from zoomsr.ui.pictures import STITCH_LAYOUTS, stitch, to_pil, with_next_region, zoom_map
from zoomsr.zoom.region import preprocess

log = logging.getLogger("zoomsr.ui")

METRICS = ["psnr_y", "ssim_y", "psnr", "ssim", "lpips", "lpips_vgg", "niqe", "musiq"]
METRICS += ["maniqa", "clipiqa", "fid"]
#: Inputs of the ``zoom`` endpoint, in order (README: "Web UI").
ZOOM_PARAMS = [
    "image", "backbone", "rec_type", "process_size", "upscale", "steps", "prompt_type",
    "user_prompt", "align", "seed", "point", "memory", "precision", "tile_size", "stitch_layout",
    "vlm_model", "vlm_adapter", "remote_base_url", "remote_model", "remote_key",
]  # fmt: skip
MAX_UPLOAD_FILES = 500
KEEP_HOURS = 24  # request folders (and gradio's copies of their files) are kept this long
MAX_ZIP_BYTES = 2 << 30


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def oom_message(settings: engine.ZoomSettings | None) -> str:
    hint = "lower 'process size'"
    if settings is not None:
        hint = (
            f"lower 'process size' (now {settings.process_size}), set 'tile size' (e.g. "
            f"{max(64, settings.process_size // (2 * settings.step_factor))}), use memory mode "
            "'swap', or a lower VLM precision (bfloat16)"
        )
    return f"out of memory: {hint}, then press Start again."


#: config keys in messages -> the control of the page that sets them
PAGE_TERMS = {
    "zoom.process_size": "'process size'", "zoom.steps": "'steps'", "zoom.upscale": "'per-step "
    "upscale'", "zoom.rec_type": "'rec type'", "zoom.tile_size": "'tile size'", "zoom.align":
    "'colour fix'", "zoom.memory": "'memory mode'", "zoom.point": "'zoom point'",
    "prompt.base_url": "'remote VLM base URL'", "prompt.model": "'local VLM' (or 'remote VLM "
    "model')", "prompt.adapter": "'VLM LoRA adapter'", "prompt.user_text": "'custom prompt'",
}  # fmt: skip


def in_page_terms(message: str) -> str:
    """A task's message with its config keys named as the page's controls."""
    for key, label in PAGE_TERMS.items():
        message = message.replace(f"set {key}=", f"set {label} to ")
        message = message.replace(f"pass {key}=", f"set {label} to ")
        message = message.replace(key, label)
    return message


def shown_errors(fn):
    """Every error of a handler becomes a message in the page (``gr.Error``); the server goes on.
    User mistakes show their one line; a bug shows its type and message (traceback in the log)."""

    def convert(err: BaseException) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if is_oom(err):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return gr.Error(oom_message(None))
        message = user_message(err)
        if message is not None:
            return gr.Error(in_page_terms(message))
        log.error("unexpected error:\n%s", traceback.format_exc())
        return gr.Error(f"unexpected error ({type(err).__name__}: {err}); see the server log.")

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise convert(err) from None

        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise convert(err) from None

    return plain


def file_path(payload) -> str | None:
    """The server-side path of an uploaded file (a raw gradio ``FileData`` payload or a path)."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(getattr(payload, "path", payload))


def parse_point(text) -> tuple[float, float] | None:
    """``"x, y"`` (normalized, of the preprocessed square) or empty for the centre."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        if isinstance(text, list | tuple):
            values = [float(v) for v in text]
        else:
            values = [float(v) for v in str(text).replace("[", "").replace("]", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(0 <= v <= 1 for v in values):
        raise ZoomSRError(f"zoom point '{text}' must be 'x, y' with both in [0, 1] (or empty).")
    return values[0], values[1]


def point_text(point: tuple[float, float] | None) -> str:
    return "" if point is None else f"{point[0]:.4f}, {point[1]:.4f}"


class ZoomUI:
    """State shared by all requests: the backbones offered, the model cache, the work root."""

    def __init__(
        self,
        backbones: list[engine.BackboneChoice],
        root: str | Path | None = None,
        device: str = "auto",
    ) -> None:
        self.backbones = backbones
        self.models = engine.ModelCache()
        self.root = Path(root or tempfile.mkdtemp(prefix="zoomsr-ui-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.device = device
        self._preprocessed: OrderedDict = OrderedDict()

    # -- requests -------------------------------------------------------------------------
    def request_dir(self, kind: str) -> Path:
        """A fresh folder for one request (nothing else is written there); folders older than
        ``KEEP_HOURS`` go."""
        cutoff = time.time() - KEEP_HOURS * 3600
        for old in self.root.iterdir():
            try:
                if old.is_dir() and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:  # removed by a concurrent request
                pass
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.root))

    def choice(self, value) -> engine.BackboneChoice:
        value = str(value or "bicubic").strip()
        for c in self.backbones:
            if value in (c.value, c.label) or (
                c.is_ckpt and Path(value).expanduser().resolve() == Path(c.value).resolve()
            ):
                return c
        names = ", ".join(c.value for c in self.backbones)
        raise ZoomSRError(
            f"backbone '{value}' is not offered here (choose one of: {names}); start the UI "
            "with zoomsr ui --ckpt PATH to add a checkpoint."
        )

    def settings(self, **kw) -> engine.ZoomSettings:
        """The request's settings from the page's (or the API's) raw values."""
        backbone = self.choice(kw["backbone"])
        key_env = None
        if kw.get("remote_key"):
            # The key goes through a variable only this request names (RemoteVLMPrompt reads
            # the key from the environment); removed when the run ends.
            key_env = f"ZOOMSR_UI_KEY_{uuid.uuid4().hex}"
            os.environ[key_env] = str(kw["remote_key"])
        tile = kw.get("tile_size")
        s = engine.ZoomSettings(
            backbone=backbone,
            rec_type=str(kw.get("rec_type") or "recursive_multiscale"),
            process_size=_int(kw.get("process_size"), "process size"),
            upscale=_int(kw.get("upscale"), "per-step upscale"),
            steps=_int(kw.get("steps"), "steps"),
            prompt_type=str(kw.get("prompt_type") or "none"),
            user_prompt=str(kw.get("user_prompt") or ""),
            vlm_model=str(kw.get("vlm_model") or "Qwen/Qwen2.5-VL-3B-Instruct"),
            vlm_adapter=str(kw.get("vlm_adapter") or ""),
            precision=str(kw.get("precision") or "auto"),
            remote_base_url=str(kw.get("remote_base_url") or "http://127.0.0.1:8000/v1"),
            remote_model=str(kw.get("remote_model") or "Qwen/Qwen2.5-VL-3B-Instruct"),
            remote_key_env=key_env,
            align=str(kw.get("align") or "none"),
            memory=str(kw.get("memory") or "plain"),
            tile_size=None if tile in (None, "", 0) else _int(tile, "tile size"),
            seed=_int(kw.get("seed") or 0, "seed"),
            point=parse_point(kw.get("point")),
            device=self.device,
        )
        if backbone.is_ckpt and s.upscale != backbone.scale:
            s.warnings.append(
                f"per-step upscale {s.upscale} ignored: the checkpoint upscales by "
                f"{backbone.scale} per step."
            )
        return s

    def input_image(self, payload) -> Path:
        path = file_path(payload)
        if not path:
            raise ZoomSRError("no input image: upload one first.")
        load_image(path)  # an unreadable upload fails here with its one line
        return Path(path)

    def preprocessed(self, path: Path, size: int) -> torch.Tensor:
        key = (str(path), size)
        if key not in self._preprocessed:
            self._preprocessed[key] = preprocess(load_image(path), size)
            while len(self._preprocessed) > 8:
                self._preprocessed.popitem(last=False)
        return self._preprocessed[key]

    # -- handlers -------------------------------------------------------------------------
    def preview(self, image, backbone, rec_type, process_size, upscale, steps, point):
        """The zoom map and the regions of every step, from the geometry alone (no model)."""
        path = file_path(image)
        if not path:
            return None, ""
        s = self.settings(
            backbone=backbone, rec_type=rec_type, process_size=process_size, upscale=upscale,
            steps=steps, point=point,
        )  # fmt: skip
        s.validate()
        load_image(path)
        pre = self.preprocessed(Path(path), s.process_size)
        steps_ = engine.preview_steps(s, pre)
        out = self.request_dir("map") / "zoom_map.png"
        zoom_map(steps_, s.point).save(out)
        return str(out), regions_text(steps_)

    def click(self, evt: gr.SelectData, image, process_size):
        """A click on the zoom map: the point under the cursor, normalized."""
        if not file_path(image) or evt is None or evt.index is None:
            raise ZoomSRError("upload an image first, then click on the zoom map.")
        path = Path(file_path(image))
        side = _int(process_size, "process size")
        pre = self.preprocessed(path, side)
        h, w = pre.shape[-2:]
        scale = -(-384 // min(h, w)) if min(h, w) < 384 else 1  # zoom_map's enlargement
        x, y = (float(v) for v in evt.index[:2])
        px = min(max((x + 0.5) / (w * scale), 0.0), 1.0)
        return point_text((px, min(max((y + 0.5) / (h * scale), 0.0), 1.0)))

    def zoom(self, *args, fixed: dict[int, str] | None = None, progress=None):
        kw = dict(zip(ZOOM_PARAMS, args))
        s = self.settings(**kw)
        try:
            for w in s.warnings:
                gr.Warning(w)
            src = self.input_image(kw["image"])
            out = self.request_dir("zoom")
            started = time.time()
            n = s.steps
            try:
                for run in engine.iter_zoom(s, src, out, self.models, fixed_prompts=fixed):
                    done = len(run.steps) - 1
                    if progress is not None:
                        desc = f"step {done}/{n}" if done < n else "writing files"
                        progress(done / n, desc=desc)
                    if done < n or not run.folder.is_dir():
                        yield self._partial(run, n)
            except Exception as err:
                if is_oom(err):
                    raise ZoomSRError(oom_message(s)) from err
                raise
            yield self._outputs(run, s, src, out, time.time() - started, kw["stitch_layout"])
        finally:
            if s.remote_key_env:
                os.environ.pop(s.remote_key_env, None)

    def _partial(self, run: engine.ZoomRun, n: int):
        """What the page shows while the chain runs: the steps so far, the latest as "final"
        (every output gets a value: no output keeps a value of an earlier request)."""
        tmp = self.request_dir("steps")
        gallery = []
        for step in run.steps:
            path = tmp / f"step{step.index}.png"
            to_pil(step.output).save(path)
            gallery.append((str(path), caption(step)))
        status = f"running: {len(run.steps) - 1} of {n} steps finished"
        latest = gallery[-1][0]
        return (latest, gallery, None, None, None, table(run.steps), None, status, {})

    def _outputs(self, run, s, src: Path, out: Path, seconds: float, layout):
        folder = run.folder
        files = [folder / "step0.png"]
        files += [folder / f"step{k}_output.png" for k in range(1, s.steps + 1)]
        gallery = [(str(f), caption(step)) for f, step in zip(files, run.steps)]
        regions_dir = self.request_dir("regions")
        regions = []
        for step, img in zip(run.steps, with_next_region(run.result)):
            path = regions_dir / f"step{step.index}_regions.png"
            img.save(path)
            regions.append((str(path), caption(step)))
        layout = layout if layout in STITCH_LAYOUTS else "row"
        stitched = folder / "strip.png" if layout == "row" else regions_dir / f"{layout}.png"
        if layout != "row":
            stitch(run.result, layout).save(stitched)
        archive = shutil.make_archive(
            str(out / f"zoomsr_{folder.name}"), "zip", root_dir=out, base_dir=folder.name
        )
        prompts = json.loads((folder / "prompts.json").read_text())
        final = run.steps[-1]
        h, w = final.output.shape[-2:]
        command = " ".join(["python infer.py", *s.override_args(str(src), "OUT")])
        info = (
            f"**done** · final {w}x{h} px, x{final.magnification} magnification "
            f"({s.steps} steps of x{s.step_factor}), {seconds:.1f} s\n\n"
            f"same run from the shell: `{command}`"
        )
        state = {"prompts": [row[3] for row in table(run.steps)]}
        return (
            str(files[-1]), gallery, prompts, str(stitched), regions, table(run.steps),
            archive, info, state,
        )  # fmt: skip

    def rerun(self, *args, progress=None):
        """Zoom again with the prompts edited in the table: steps up to the last edited one take
        the table's text, later steps ask the prompt source again."""
        *zoom_args, edited, last = args
        rows = _rows(edited)
        before = (last or {}).get("prompts") or []
        changed = [i for i, row in enumerate(rows) if i >= len(before) or row[3] != before[i]]
        if not changed:
            gr.Warning("no prompt was edited: running the same chain again.")
            fixed = None
        else:
            fixed = {int(rows[i][0]): str(rows[i][3]) for i in range(max(changed) + 1)}
            steps = _int(dict(zip(ZOOM_PARAMS, zoom_args)).get("steps"), "steps")
            fixed = {k: v for k, v in fixed.items() if 1 <= k <= steps}
        yield from self.zoom(*zoom_args, fixed=fixed, progress=progress)

    def batch(self, files, *args):
        kw = dict(zip(ZOOM_PARAMS[1:], args))
        s = self.settings(**kw)
        try:
            req = self.request_dir("batch")
            inputs = gather_uploads(files, req / "input")
            result = engine.run_batch(s, inputs, req / "out")
            archive = shutil.make_archive(str(req / "zoomsr_batch"), "zip", root_dir=req / "out")
            outs = [Path(p) for p in result["outputs"]]
            rows = [[p.name, str(p.relative_to(req / "out"))] for p in outs]
            note = f"{len(outs)} image(s) done"
            if result["skipped"]:
                skipped = ", ".join(Path(p).name for p in result["skipped"])
                note += f"; skipped (unreadable): {skipped}"
            return archive, rows, note
        finally:
            if s.remote_key_env:
                os.environ.pop(s.remote_key_env, None)

    def evaluate(self, files, backbone, protocol, scales, metrics, process_size):
        req = self.request_dir("eval")
        hr = gather_uploads(files, req / "hr")
        try:
            scale_list = [int(v) for v in str(scales).replace("[", "").replace("]", "").split(",")]
        except ValueError:
            raise ZoomSRError(f"scales '{scales}' must be integers like '2, 3, 4'.") from None
        if not metrics:
            raise ZoomSRError("choose at least one metric.")
        result = engine.run_evaluation(
            self.choice(backbone), hr, req / "out", str(protocol), scale_list, list(metrics),
            _int(process_size, "process size"), self.device,
        )  # fmt: skip
        from zoomsr.reporting import scale_entries

        result = scale_entries(result)  # the per-scale rows, not the "suite" record
        names = [m for m in result[next(iter(result))] if m != "images"]
        rows = [[scale] + [_fmt(result[scale].get(m)) for m in names] for scale in result]
        archive = shutil.make_archive(str(req / "zoomsr_eval"), "zip", root_dir=req / "out")
        plot = req / "out" / "metrics.png"
        return (
            pd.DataFrame(rows, columns=["scale", *names]),
            str(plot) if plot.is_file() else None,
            archive,
        )


def regions_text(steps) -> str:
    return "\n".join(
        f"step {s.index} (x{s.magnification}): " + ", ".join(f"{v:.4f}" for v in s.box)
        for s in steps[1:]
    )


def caption(step) -> str:
    return f"step {step.index} · x{step.magnification}"


def table(steps) -> list[list]:
    """step / magnification / zoom box / prompt, one row per zoom step."""
    rows = []
    for s in steps[1:]:
        prompt = (s.prompts or [""])[0]
        rows.append([s.index, f"x{s.magnification}", ", ".join(f"{v:.4f}" for v in s.box), prompt])
    return rows


def _rows(value) -> list[list]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get("data") or []
    elif hasattr(value, "values") and hasattr(value, "columns"):  # a DataFrame
        value = value.values.tolist()
    return [list(r) for r in value if len(r) >= 4 and str(r[0]).strip() != ""]


def _int(value, name: str) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        raise ZoomSRError(f"{name} must be a number, got '{value}'.") from None


def _fmt(v):
    return round(v, 4) if isinstance(v, float) else v


def gather_uploads(files, folder: Path) -> Path:
    """Uploaded images and the images inside uploaded zips, flat into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [file_path(f) for f in (files or [])]
    paths = [p for p in paths if p]
    if not paths:
        raise ZoomSRError("no files: upload images or a .zip of images.")
    count = 0
    for path in paths:
        p = Path(path)
        if p.suffix.lower() == ".zip":
            count += _extract_images(p, folder)
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            shutil.copy(p, _unique(folder, p.name))
            count += 1
        else:
            gr.Warning(f"skipping '{p.name}': not an image or a .zip")
        if count > MAX_UPLOAD_FILES:
            raise ZoomSRError(f"more than {MAX_UPLOAD_FILES} images: split the upload.")
    if count == 0:
        raise ZoomSRError(f"no images in the upload ({', '.join(IMAGE_EXTENSIONS)} or a .zip).")
    return folder


def _extract_images(archive: Path, folder: Path) -> int:
    """The image members of a zip, by base name (no paths from the archive are trusted)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [
                m
                for m in zf.infolist()
                if not m.is_dir()
                and Path(m.filename).suffix.lower() in IMAGE_EXTENSIONS
                and not Path(m.filename).name.startswith(".")
                and "__MACOSX" not in m.filename
            ]
            if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
                raise ZoomSRError(f"'{archive.name}' unpacks to more than 2 GiB of images.")
            for m in members[: MAX_UPLOAD_FILES + 1]:
                with zf.open(m) as src, open(_unique(folder, Path(m.filename).name), "wb") as dst:
                    shutil.copyfileobj(src, dst)
            return len(members)
    except zipfile.BadZipFile:
        raise ZoomSRError(f"'{archive.name}' is not a readable zip file.") from None


def _unique(folder: Path, name: str) -> Path:
    target, k = folder / name, 1
    while target.exists():
        target = folder / f"{Path(name).stem}_{k}{Path(name).suffix}"
        k += 1
    return target
