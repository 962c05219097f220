"""An output folder belongs to one job (DESIGN.md, "Runs and their folders").

- :func:`claim`: the job's fingerprint (what determines its results: backbone or checkpoint
  file hash, data, protocol, metrics, zoom settings, seed) is stored in ``<out>/zoomsr_job.json``;
  a rerun into the same folder resumes only when the fingerprint is the same, and otherwise
  refuses with one line (``overwrite=true`` or a new ``out_dir``).
- :class:`RunLock`: an exclusive lock on ``<out>/.zoomsr.lock`` (``flock``; released by the
  system when the process dies, even by ``kill -9``), so a second concurrent run refuses.
- :func:`atomic_path` / :func:`write_text` / :func:`save_png_atomic`: every output is written
  to a temporary name in its folder and renamed, so a kill never leaves a truncated file under
  the final name; :func:`image_ok` checks that a file a resume skips decodes fully.
- :func:`unique_names`: the output name of each input file, unique even when several files
  share a stem (``x.png``, ``x.jpg``, ``x.PNG``), never a hidden/reserved name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoomsr.errors import ZoomSRError

JOB_FILE = "zoomsr_job.json"
LOCK_FILE = ".zoomsr.lock"


def is_rank_zero() -> bool:
    """True outside distributed runs and on global rank 0, by the variables the launchers set
    before the process starts (torchrun, Lightning's subprocess launcher, SLURM's srun)."""
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in keys)


# -- atomic writes ------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, no image suffix, so folder listings never
    take it for an input); on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_pil_atomic(img, path: str | Path) -> Path:
    """``PIL.Image.save`` to a temporary name, then rename (the format from ``path``'s suffix)."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)
    return path


def image_ok(path: str | Path) -> bool:
    """True when ``path`` is an image that decodes completely (a truncated PNG does not)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
        return True
    except Exception:  # truncated, corrupt, not an image, missing
        return False


# -- unique names -------------------------------------------------------------------------
def unique_names(files: Sequence[str | Path], reserved: Sequence[str] = ()) -> list[str]:
    """One output name per input file, in order. The rule:

    1. the name is the file's stem; a leading ``.`` becomes ``_`` (hidden names in an output
       folder belong to zoomsr and Hydra: ``.hydra.png`` -> ``_hydra``);
    2. when the name is already taken (names compare case-insensitively, as on macOS and
       Windows file systems) or is in ``reserved``, the suffix is appended (``x.jpg`` ->
       ``x_jpg``), then ``_2``, ``_3``… until it is free.

    Files are taken in sorted order of their names, so a folder always gives the same names.
    """
    taken = {r.casefold() for r in reserved}
    names: dict[int, str] = {}
    order = sorted(range(len(files)), key=lambda i: Path(files[i]).name)
    for i in order:
        p = Path(files[i])
        stem = "_" + p.stem[1:] if p.stem.startswith(".") else p.stem
        candidates = [stem, f"{stem}_{p.suffix[1:]}" if p.suffix else f"{stem}_"]
        name, n = next((c for c in candidates if c.casefold() not in taken), None), 2
        while name is None:
            name = (
                f"{candidates[1]}_{n}" if f"{candidates[1]}_{n}".casefold() not in taken else None
            )
            n += 1
        taken.add(name.casefold())
        names[i] = name
    return [names[i] for i in range(len(files))]


# -- fingerprint --------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(job: dict[str, Any]) -> str:
    """SHA-256 of the job description (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def claim(out: Path, job: dict[str, Any], overwrite: bool, has_results: bool) -> bool:
    """Bind ``out`` to ``job``; return True when earlier results must be discarded.

    Args:
        job: what determines the results (plain values); ``job["task"]`` names the task.
        overwrite: the user's ``overwrite=true``: replace whatever the folder holds.
        has_results: the folder already holds results of this task (rows, outputs).

    Raises:
        ZoomSRError: the folder holds results of another job (or of an unknown one).
    """
    path = out / JOB_FILE
    new = {"fingerprint": fingerprint(job), "job": job}
    old = None
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
    same = isinstance(old, dict) and old.get("fingerprint") == new["fingerprint"]
    if not same and not overwrite and (has_results or old is not None):
        differs = _differences(old.get("job") if isinstance(old, dict) else None, job)
        raise ZoomSRError(
            f"output folder '{out}' holds results of another job ({differs}); resuming would "
            "mix them. Pass overwrite=true to replace them, or choose a new out_dir."
        )
    write_text(path, json.dumps(new, indent=2, sort_keys=True, default=str) + "\n")
    return overwrite or (not same and has_results)


def _differences(old: Any, new: dict) -> str:
    if not isinstance(old, dict):
        return f"no readable {JOB_FILE}"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "different " + ", ".join(keys) if keys else "a different job"


# -- lock ---------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on ``<out>/.zoomsr.lock`` for the life of a run.

    Raises:
        ZoomSRError: another process holds it (its pid is named).
    """

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out) / LOCK_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no lock
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise ZoomSRError(
                f"output folder '{out}' is in use by another run (pid {other}); wait for it to "
                "finish, or choose a new out_dir."
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def open_run(out: Path, job: dict[str, Any], overwrite: bool, has_results: bool) -> Iterator[bool]:
    """Lock ``out`` (:class:`RunLock`) and :func:`claim` it for ``job`` for the ``with`` block;
    yields True when earlier results must be recomputed (``overwrite=true``, or none valid).
    Only global rank 0 locks in a distributed run (the other ranks write into the same folder)."""
    if not is_rank_zero():
        yield overwrite
        return
    with RunLock(out):
        yield claim(out, job, overwrite, has_results)


def config_part(cfg, key: str, drop: Sequence[str] = ()) -> Any:
    """``cfg[key]`` resolved to plain values, without the keys ``drop`` (None when unset)."""
    from omegaconf import OmegaConf

    node = cfg.get(key)
    if node is None:
        return None
    value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in drop}
    return value


def model_part(cfg) -> dict[str, Any]:
    """What identifies the model: the checkpoint file's SHA-256, else the backbone config."""
    if cfg.get("ckpt"):
        path = Path(str(cfg.ckpt)).expanduser()
        if path.is_file():
            return {"ckpt_sha256": file_sha256(path)}
        return {"ckpt": str(path)}
    return {"backbone": config_part(cfg, "backbone")}


def evaluate_job(cfg) -> dict[str, Any]:
    """The fingerprinted part of an evaluation: model, data, protocol, metrics, prompt, seed.

    ``scales`` is left out (rows are per scale, so a rerun may add scales), as are settings
    that do not change results (device, batch sizes, workers, loggers)."""
    return {
        "task": "evaluate",
        **model_part(cfg),
        "data": config_part(cfg, "data", ("batch_size", "num_workers")),
        "protocol": config_part(cfg, "protocol"),
        "metrics": config_part(cfg, "metrics"),
        "prompt": config_part(cfg, "prompt"),
        "seed": cfg.get("seed"),
    }


def infer_job(cfg) -> dict[str, Any]:
    """The fingerprinted part of an inference: model, input, zoom settings, prompt, seed."""
    return {
        "task": "infer",
        **model_part(cfg),
        "input": str(Path(str(cfg.input)).expanduser().absolute()),
        "zoom": config_part(cfg, "zoom"),
        "prompt": config_part(cfg, "prompt"),
        "scale": cfg.get("scale"),
        "seed": cfg.get("seed"),
    }


def reserved_names(task_name: str) -> list[str]:
    """Names in an output folder that belong to zoomsr or Hydra, never given to an output."""
    return [".hydra", JOB_FILE, LOCK_FILE, f"{task_name}.log"]


def remove_outputs(out: Path, names: Sequence[str]) -> None:
    """Delete ``out/<name>`` (file or folder) for each of zoomsr's own output names."""
    import shutil

    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def save_npz(path: str | Path, arrays: dict) -> Path:
    """``np.savez`` to a temporary file, then renamed (a kill leaves no half-written file)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def features_ok(path: str | Path) -> bool:
    """True when ``path`` is a complete ``.npz`` (every array readable)."""
    import numpy as np

    try:
        with np.load(path) as f:
            for key in f.files:
                f[key]
        return True
    except Exception:  # missing, truncated, not an npz
        return False


def check_shave(name: str, hr, shave: int) -> None:
    """One line naming the image when ``hr`` ``(C, H, W)`` has nothing left after removing
    ``shave`` border pixels on each side (the full-reference metrics would be empty)."""
    if hr is None or shave <= 0:
        return
    h, w = hr.shape[-2:]
    if min(h, w) <= 2 * shave:
        raise ZoomSRError(
            f"image '{name}' is {w}x{h}, too small for the metrics' border of {shave} px on each "
            f"side (shave): remove it from the folder, or pass protocol.shave=0."
        )


def output_ok(path: Path) -> bool:
    """A finished output a resume may skip: an image file that decodes fully, or a chain folder
    whose ``prompts.json`` parses and whose images all decode."""
    if path.is_dir():
        try:
            json.loads((path / "prompts.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return all(image_ok(p) for p in path.glob("*.png"))
    return path.is_file() and image_ok(path)


def replace_folder(partial: Path, target: Path) -> None:
    """Rename the finished folder ``partial`` to ``target``, replacing an older ``target``
    (an incomplete one, or ``overwrite=true``); ``partial`` never stays behind."""
    import shutil

    try:
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
