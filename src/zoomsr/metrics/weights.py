"""Where each metric's pretrained files live, checked before any library is imported.

Every learned metric reads files its library would normally download. Here each metric lists
those files at the exact place its library looks, so that ``evaluate.py`` fails at start-up,
in well under a second, with the file's name and folder when one is missing (never a download
attempt or a hang), and ``zoomsr weights`` shows what is present and what is missing.

The places (``$TORCH_HOME`` defaults to ``~/.cache/torch``; set it before running to move them):

- ``lpips`` / ``lpips_vgg``: torchvision's ImageNet trunk in ``$TORCH_HOME/hub/checkpoints``
  (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``); the LPIPS linear heads ship inside
  the ``lpips`` package.
- ``fid``: torch-fidelity's TF-Inception port ``weights-inception-2015-12-05-6726825d.pth`` in
  ``$TORCH_HOME/hub/checkpoints`` (the file torchmetrics' FID uses too).
- ``niqe``, ``musiq``, ``maniqa``, ``maniqa_pipal``, ``topiq_nr``, ``topiq_fr``, ``dists`` (its
  alpha/beta; its VGG16 trunk is torchvision's ``vgg16-397923af.pth`` in ``checkpoints``) and
  ``fid_pyiqa`` (pyiqa's / clean-fid's Inception, ``metrics.fid=pyiqa``): pyiqa's files in
  ``$TORCH_HOME/hub/pyiqa`` (pyiqa fixes this folder when it is imported). NIQE's
  ``niqe_modelparameters.mat`` can be made from BasicSR's ``niqe_pris_params.npz``:
  ``zoomsr weights --niqe-npz path/to/niqe_pris_params.npz``.
- ``clipiqa``: OpenAI's CLIP ``RN50.pt`` in ``$TORCH_HOME/hub/clip`` (pyiqa's CLIP loader,
  checked against the SHA-256 in its URL).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from zoomsr.errors import ZoomSRError


def hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch: ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "torch" / "hub"


@dataclass(frozen=True)
class WeightFile:
    """One file a metric needs.

    Args:
        name: file name, as the library expects it.
        folder: sub-folder of ``$TORCH_HOME/hub`` the library reads it from.
        url: where the library would download it from (fetch it there on a connected machine).
    """

    name: str
    folder: str
    url: str

    @property
    def path(self) -> Path:
        return hub_dir() / self.folder / self.name

    def present(self) -> bool:
        return self.path.is_file()


_PYIQA_HF = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_TV = "https://download.pytorch.org/models/"

#: metric name -> the files it reads. Metrics not listed (psnr, ssim, ...) need none.
METRIC_WEIGHTS: dict[str, list[WeightFile]] = {
    "lpips": [
        WeightFile("alexnet-owt-7be5be79.pth", "checkpoints", _TV + "alexnet-owt-7be5be79.pth")
    ],
    "lpips_vgg": [WeightFile("vgg16-397923af.pth", "checkpoints", _TV + "vgg16-397923af.pth")],
    "fid": [
        WeightFile(
            "weights-inception-2015-12-05-6726825d.pth",
            "checkpoints",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
        )
    ],
    "niqe": [
        WeightFile("niqe_modelparameters.mat", "pyiqa", _PYIQA_HF + "niqe_modelparameters.mat")
    ],
    "musiq": [
        WeightFile(
            "musiq_koniq_ckpt-e95806b9.pth", "pyiqa", _PYIQA_HF + "musiq_koniq_ckpt-e95806b9.pth"
        )
    ],
    "maniqa": [WeightFile("ckpt_koniq10k.pt", "pyiqa", _PYIQA_HF + "ckpt_koniq10k.pt")],
    "maniqa_pipal": [
        WeightFile("MANIQA_PIPAL-ae6d356b.pth", "pyiqa", _PYIQA_HF + "MANIQA_PIPAL-ae6d356b.pth")
    ],
    "topiq_nr": [
        WeightFile(
            "cfanet_nr_koniq_res50-9a73138b.pth",
            "pyiqa",
            _PYIQA_HF + "cfanet_nr_koniq_res50-9a73138b.pth",
        )
    ],
    "topiq_fr": [
        WeightFile(
            "cfanet_fr_kadid_res50-2c4cc61d.pth",
            "pyiqa",
            _PYIQA_HF + "cfanet_fr_kadid_res50-2c4cc61d.pth",
        )
    ],
    # DISTS: torchvision's VGG16 trunk (what pyiqa's DISTS loads first), then its alpha/beta
    "dists": [
        WeightFile("vgg16-397923af.pth", "checkpoints", _TV + "vgg16-397923af.pth"),
        WeightFile("DISTS_weights-f5e65c96.pth", "pyiqa", _PYIQA_HF + "DISTS_weights-f5e65c96.pth"),
    ],
    # FID the way pyiqa / clean-fid compute it (metrics.fid=pyiqa): the same TF-Inception
    # weights, in pytorch-fid's layout
    "fid_pyiqa": [
        WeightFile(
            "pt_inception-2015-12-05-6726825d.pth",
            "pyiqa",
            _PYIQA_HF + "pt_inception-2015-12-05-6726825d.pth",
        )
    ],
    "clipiqa": [
        WeightFile(
            "RN50.pt",
            "clip",
            "https://openaipublic.azureedge.net/clip/models/"
            "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
        )
    ],
}


def weight_path(metric: str, index: int = 0) -> Path:
    """The path of the ``index``-th file of ``metric``."""
    return METRIC_WEIGHTS[metric][index].path


def missing(metrics: list[str]) -> list[tuple[str, WeightFile]]:
    """``(metric, file)`` for every file of ``metrics`` that is not in place."""
    return [(m, f) for m in metrics for f in METRIC_WEIGHTS.get(m, []) if not f.present()]


def check_weights(metrics: list[str]) -> None:
    """Raise one :class:`ZoomSRError` naming every missing file and where it goes.

    Only looks at paths (no library import, no network), so it answers in milliseconds.
    """
    gone = missing(metrics)
    if not gone:
        return
    lines = [f"  {m}: '{f.name}' not found at {f.path} (download: {f.url})" for m, f in gone]
    hint = "Place each file there (or set TORCH_HOME); `zoomsr weights` lists them all."
    if any(f.name == "niqe_modelparameters.mat" for _, f in gone):
        hint += " NIQE: `zoomsr weights --niqe-npz niqe_pris_params.npz` writes its file."
    head = f"missing metric weights, {len(gone)} file(s), one per line:"
    raise ZoomSRError("\n".join([head, *lines, hint]))


def place_niqe(npz: str | Path) -> Path:
    """Write pyiqa's ``niqe_modelparameters.mat`` from BasicSR's ``niqe_pris_params.npz``.

    Both hold the pristine multivariate Gaussian of the original NIQE release (Mittal et al.
    2013, eq. 10): a 36-d mean and 36x36 covariance; pyiqa reads them with
    ``scipy.io.loadmat`` under the keys ``mu_prisparam`` and ``cov_prisparam``.
    """
    import numpy as np
    import scipy.io

    npz = Path(npz).expanduser()
    if not npz.is_file():
        raise ZoomSRError(f"NIQE parameters not found: '{npz}'.")
    with np.load(npz, allow_pickle=False) as params:
        if not {"mu_pris_param", "cov_pris_param"} <= set(params.files):
            raise ZoomSRError(
                f"'{npz}' has {params.files}; expected BasicSR's mu_pris_param and cov_pris_param."
            )
        mu = np.asarray(params["mu_pris_param"], dtype=np.float64).reshape(1, -1)
        cov = np.asarray(params["cov_pris_param"], dtype=np.float64)
    target = weight_path("niqe")
    target.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(target, {"mu_prisparam": mu, "cov_prisparam": cov})
    return target


def report() -> str:
    """A table: metric, file, present or missing, the exact path."""
    rows = [f"weights folder: {hub_dir()}  (TORCH_HOME={os.environ.get('TORCH_HOME', '')!r})"]
    for metric, files in METRIC_WEIGHTS.items():
        for f in files:
            state = "present" if f.present() else "MISSING"
            rows.append(f"  {metric:<12} {state:<8} {f.path}")
            if not f.present():
                rows.append(f"  {'':<12} {'':<8} from {f.url}")
    rows.append("  psnr, psnr_y, ssim, ssim_y: no weights")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """``zoomsr weights [--niqe-npz FILE] [--check METRIC ...]``."""
    parser = argparse.ArgumentParser(
        prog="zoomsr weights",
        description="List the metric weight files, present or missing, with the exact path "
        "each library reads (set TORCH_HOME to move them).",
    )
    parser.add_argument(
        "--niqe-npz",
        metavar="FILE",
        help="write pyiqa's NIQE parameters from BasicSR's niqe_pris_params.npz",
    )
    parser.add_argument("--check", nargs="+", metavar="METRIC", help="exit 2 if any is missing")
    args = parser.parse_args(argv)
    try:
        if args.niqe_npz:
            print(f"wrote {place_niqe(args.niqe_npz)}")
        print(report())
        if args.check:
            check_weights(args.check)
    except ZoomSRError as err:
        print(f"zoomsr error: {err}")
        return 2
    return 0
