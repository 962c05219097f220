"""Finding pretrained weights on disk (a folder, or the Hugging Face cache), never the network.

A missing model must fail in seconds with a message naming what is missing and how to get it,
instead of a download attempt or a traceback from deep inside ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from zoomsr.errors import ZoomSRError

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")


def _has_weights(folder: Path) -> bool:
    return any(any(folder.glob(p)) for p in WEIGHT_PATTERNS)


def resolve_pretrained(name: str, what: str, key: str) -> Path:
    """The local folder of ``name``: a path, or a Hub id already in the Hugging Face cache.

    Args:
        name: a folder with ``config.json`` and weights, or a Hub id
            (``Qwen/Qwen2.5-VL-3B-Instruct``).
        what: what the model is, for messages ("VLM", "image tagger").
        key: the config key that sets it, for messages ("prompt.model").

    Raises:
        ZoomSRError: not found, or a folder without ``config.json`` or weight files.
    """
    path = Path(name).expanduser()
    if not path.exists() and name.count("/") == 1 and not name.startswith((".", "/", "~")):
        path = _cached_snapshot(name, what, key)
    if not path.is_dir():
        raise ZoomSRError(
            f"{what} weights not found: '{name}' is not a folder. Pass {key}=<folder with "
            "config.json and *.safetensors> or a Hugging Face id that is in the local cache."
        )
    if not (path / "config.json").is_file() or not _has_weights(path):
        raise ZoomSRError(
            f"{what} folder '{path}' lacks config.json or weight files (*.safetensors): "
            f"download the whole model there, or pass {key}=<complete folder>."
        )
    return path


def _cached_snapshot(repo_id: str, what: str, key: str) -> Path:
    """The cached snapshot folder of ``repo_id`` (``local_files_only``: no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        raise ZoomSRError(
            f"{what} weights '{repo_id}' are not in the Hugging Face cache ($HF_HOME, "
            f"default ~/.cache/huggingface) and zoomsr does not download: run "
            f"`HF_HUB_OFFLINE=0 hf download {repo_id}` on a machine with a network, or pass "
            f"{key}=/path/to/{repo_id.split('/')[-1]} ({type(err).__name__})."
        ) from None
