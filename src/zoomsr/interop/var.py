"""``zoomsr import-var``: VAR's released tokenizer (``vae_ch160v4096z32.pth``) -> zoomsr files.

VAR (github.com/FoundationVision/VAR) releases its VQVAE as ``VQVAE.state_dict()``. The file is
read with ``torch.load(weights_only=True)``; the architecture is read off the tensors (``ch``
from ``encoder.conv_in``, the levels and their widths from ``encoder.down.i``, ``V`` and ``Cvae``
from the codebook, the phi sharing from the ``quant_resi`` keys) and built as
:class:`~zoomsr.backbones.var_vqvae.VARVQVAE`; every key must find its place (a missing or
unplaced key, or a shape that differs, stops the import and names it). Not in the file, so given
as options: ``patch_nums`` (default VAR's ten scales; must match the code-usage table's rows) and
the phi ratio 0.5.

The output folder gets ``var_vqvae.safetensors`` (the tokenizer's weights; the vq_refiner
backbone's ``vqgan_ckpt`` with ``tokenizer: var``, e.g. ``experiment=iter_x4_var``) and
``var_vqvae.json`` (its arguments, plain numbers), read back by :func:`load_var_vqvae`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path

import torch

from zoomsr.backbones.var_vqvae import VAR_PATCH_NUMS, VARVQVAE
from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.interop import is_tensor_dict, load_released

WEIGHTS, CONFIG = "var_vqvae.safetensors", "var_vqvae.json"


def _count(state: dict, pattern: str) -> int:
    """How many distinct indices ``i`` a key pattern with one ``(\\d+)`` group matches."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_config(
    state: dict[str, torch.Tensor],
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS,
    quant_resi: float = 0.5,
) -> dict:
    """The :class:`VARVQVAE` arguments of a VAR VQVAE state dict."""
    try:
        vocab, cvae = state["quantize.embedding.weight"].shape
        ch = int(state["encoder.conv_in.weight"].shape[0])
        levels = _count(state, r"^encoder\.down\.(\d+)\.")
        widths = [
            int(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)
        ]
        blocks = _count(state, r"^encoder\.down\.0\.block\.(\d+)\.")
        ks = int(state["quant_conv.weight"].shape[-1])
    except KeyError as err:
        raise ZoomSRError(f"not a VAR VQVAE state dict: no '{err.args[0]}'") from None
    if levels == 0 or any(w % ch for w in widths):
        raise ZoomSRError(f"VAR VQVAE: level widths {widths} are not multiples of ch={ch}")
    if "quantize.quant_resi.qresi_ls.0.weight" in state:
        share = _count(state, r"^quantize\.quant_resi\.qresi_ls\.(\d+)\.")
    elif "quantize.quant_resi.qresi.weight" in state:
        share = 1
    elif "quantize.quant_resi.0.weight" in state:
        share = 0
    else:
        share, quant_resi = 4, 0.0  # no phi convs: identity
    return {
        "vocab_size": int(vocab),
        "z_channels": int(cvae),
        "ch": ch,
        "ch_mult": [w // ch for w in widths],
        "num_res_blocks": blocks,
        "patch_nums": [int(p) for p in patch_nums],
        "quant_resi": float(quant_resi),
        "share_quant_resi": int(share),
        "beta": 0.25,
        "quant_conv_ks": ks,
        "dropout": 0.0,
        "using_sa": f"encoder.down.{levels - 1}.attn.0.qkv.weight" in state,
        "using_mid_sa": "encoder.mid.attn_1.qkv.weight" in state,
        "groups": 32,
    }


def check_keys(state: dict[str, torch.Tensor], model: VARVQVAE) -> None:
    """Every key of ``state`` has its place in ``model`` with the same shape, and back."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unplaced = sorted(set(state) - set(expected))
    if missing:
        raise ZoomSRError(f"VAR VQVAE file lacks {', '.join(missing[:6])} (is it a VQVAE?)")
    if unplaced:
        raise ZoomSRError(
            f"VAR VQVAE keys that fit no place in the model: {', '.join(unplaced[:6])}"
        )
    usage = "quantize.ema_vocab_hit_SV"
    for key, value in state.items():
        if key == usage and value.shape[0] != len(model.quantize.patch_nums):
            raise ZoomSRError(
                f"'{usage}' has {value.shape[0]} rows, one per scale of training; "
                f"--patch-nums gives {len(model.quantize.patch_nums)} scales."
            )
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ZoomSRError(
                f"VAR VQVAE '{key}' has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)}"
            )


def read_var_state(path: str | Path) -> dict[str, torch.Tensor]:
    state = load_released(path, "VAR VQVAE", " (vae_ch160v4096z32.pth).")
    if not is_tensor_dict(state):
        raise ZoomSRError(f"'{path}' is not a state dict of tensors (VAR's VQVAE.state_dict()).")
    return state


def import_var(
    vae: str | Path,
    out: str | Path,
    patch_nums: tuple[int, ...] = VAR_PATCH_NUMS,
    quant_resi: float = 0.5,
) -> Path:
    """Convert VAR's VQVAE file into ``out/var_vqvae.safetensors`` + ``.json``; returns the
    weights' path."""
    from safetensors.torch import save_file

    state = read_var_state(vae)
    config = infer_config(state, patch_nums, quant_resi)
    model = VARVQVAE(**config)
    check_keys(state, model)
    model.load_state_dict(state, strict=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out / WEIGHTS


def load_var_vqvae(folder: str | Path, device: torch.device | str = "cpu") -> VARVQVAE:
    """The tokenizer ``zoomsr import-var`` wrote to ``folder``, in eval mode.

    >>> vae = load_var_vqvae("weights/var")             # doctest: +SKIP
    >>> tokens = vae.encode_tokens(img * 2 - 1)  # img (B, 3, 256, 256) in [0, 1] -> 10 x (B, p*p)
    >>> recon = (vae.decode_tokens(tokens) + 1) / 2
    """
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise ZoomSRError(
            f"'{folder}' lacks {CONFIG} / {WEIGHTS}: run zoomsr import-var --vae "
            f"vae_ch160v4096z32.pth --out {folder}"
        )
    config = json.loads((folder / CONFIG).read_text())
    allowed = set(inspect.signature(VARVQVAE.__init__).parameters) - {"self"}
    if not isinstance(config, dict) or set(config) - allowed:
        raise ZoomSRError(f"'{folder / CONFIG}' is not a var_vqvae config")
    model = VARVQVAE(**config)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.to(device).eval()


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr import-var",
        description="Convert VAR's released VQVAE (vae_ch160v4096z32.pth) into OUT/"
        f"{WEIGHTS} (+ {CONFIG}): the tokenizer of experiment=iter_x4_var.",
    )
    parser.add_argument("--vae", required=True, help="VAR's VQVAE state dict, .pth")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--patch-nums",
        default=",".join(map(str, VAR_PATCH_NUMS)),
        help="scales, comma-separated (default VAR's: 1,2,3,4,5,6,8,10,13,16)",
    )
    parser.add_argument("--quant-resi", type=float, default=0.5, help="phi ratio (VAR: 0.5)")
    args = parser.parse_args(argv)
    try:
        patch_nums = tuple(int(p) for p in args.patch_nums.split(","))
    except ValueError:
        raise ZoomSRError(
            f"--patch-nums: comma-separated integers, got {args.patch_nums!r}"
        ) from None
    path = import_var(args.vae, args.out, patch_nums, args.quant_resi)
    print(
        f"[zoomsr] wrote {path} and {path.parent / CONFIG}; e.g. python train.py "
        f"experiment=iter_x4_var backbone.vqgan_ckpt={path} data.hr_dir=..."
    )
    return 0
