"""Shared fixtures. Nothing here touches a network: the offline switches are set first."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def bench_dir() -> Path:
    """The shared benchmark images (Set5, Set14, ...): ``$ZOOMSR_BENCH_DIR`` or ../shared/datasets.

    Fails (never skips) when missing: CI always has them, so a skip would hide a broken setup.
    """
    path = Path(os.environ.get("ZOOMSR_BENCH_DIR", ROOT.parent / "shared" / "datasets"))
    if not (path / "Set5" / "HR").is_dir():
        pytest.fail(
            f"benchmark images not found at {path}: place the shared datasets folder there "
            "or set ZOOMSR_BENCH_DIR=/path/to/datasets"
        )
    return path


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py``: benchmarks/ is a folder of scripts, not a
    package, so it is loaded from its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench() -> Path:
    return bench_dir()


@pytest.fixture
def compose_cfg():
    """Compose a zoomsr config in-process: ``compose_cfg("evaluate", ["backbone=nearest"])``."""
    from hydra import compose, initialize_config_dir

    def _compose(name: str, overrides: list[str] | None = None):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=overrides or [])

    return _compose


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of many small tensor ops, restored afterwards: on a shared
    2-core machine two OpenMP threads per op made such tests 7x slower (89 s vs 12 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
