"""``zoomsr import-iter``: ITER's released weights -> a zoomsr checkpoint.

ITER (Chen et al., AAAI 2024, github.com/chaofengc/ITER) releases ``ITER_x2.pth``,
``ITER_x4.pth`` and ``ITER_swinvqgan.pth``: ``torch.save({"params": state_dict})`` of its
``ITER`` / ``VQModel`` networks (``params_ema`` where an EMA was kept). zoomsr's ITER backbone
has the same module names, so the keys map 1:1; the only extra entries are the Swin-VQGAN's
``generator.*``, an alias ITER registers for its decoder, which must equal ``decoder.*``.

Every entry of the file is consumed: parameters load into the model, the stored buffers (Swin's
``relative_position_index`` and shift ``attn_mask``) must equal the ones zoomsr builds, and any
key left over is named in the error. Files are read with ``torch.load(weights_only=True)``.

Writes ``OUT/vqgan.safetensors`` (the frozen Swin-VQGAN, referenced by path) and
``OUT/iter_x<s>.ckpt`` (the LQ encoder, refiner and evaluator with the backbone config), which
``evaluate.py ckpt=…`` and ``infer.py ckpt=…`` load.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.interop import is_tensor_dict, load_released

GENERATOR = "generator."


def read_iter_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict inside an ITER release file (``params_ema``, else ``params``, else the
    file itself when it is a flat state dict)."""
    data = load_released(
        path,
        f"ITER {what}",
        ". ITER's releases: github.com/chaofengc/ITER/releases (ITER_x2.pth, ITER_x4.pth, "
        "ITER_swinvqgan.pth).",
    )
    for key in ("params_ema", "params"):
        if isinstance(data, dict) and is_tensor_dict(data.get(key)):
            return data[key]
    if is_tensor_dict(data):
        return data
    keys = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
    raise ZoomSRError(f"'{path}' is not an ITER checkpoint (no 'params' state dict): {keys}")


def split_vqgan(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The Swin-VQGAN entries under ``prefix`` without it; the ``generator.*`` alias is checked
    against ``decoder.*`` and dropped."""
    vq = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for key in [k for k in vq if k.startswith(GENERATOR)]:
        twin = "decoder." + key[len(GENERATOR) :]
        if twin not in vq or not torch.equal(vq[twin], vq[key]):
            raise ZoomSRError(
                f"ITER file: '{prefix}{key}' should equal '{prefix}{twin}' (ITER's generator is "
                "its decoder); the file is inconsistent."
            )
        del vq[key]
    return vq


def infer_config(state: dict[str, torch.Tensor], vq: dict[str, torch.Tensor]) -> dict:
    """The backbone config the tensors imply (release defaults for what shapes cannot tell)."""
    downs = {int(m.group(1)) for k in state if (m := re.match(r"lq_encoder\.model\.(\d+)\.0\.", k))}
    n_embed, embed_dim = vq["quantize.embedding.weight"].shape

    def count(pattern: str, keys) -> int:
        return len({m.group(1) for k in keys if (m := re.match(pattern, k))})

    crit = "token_refine_net.token_crit_net.swin_layers."
    group = r"swin_blks\.0\.residual_group\.blocks\.(\d+)"
    return {
        "_target_": "zoomsr.backbones.iter.ITER",
        "scale": 8 // 2 ** len(downs),
        "stage": "refine",
        "nf": int(vq["encoder.blocks.0.weight"].shape[0]),
        **_levels(vq),
        "n_embed": int(n_embed),
        "embed_dim": int(embed_dim),
        "swin_dim": _swin_dim(vq),
        **_window(vq),
        "swin_blocks": count(r"encoder\.blocks\.\d+\.swin_blks\.(\d+)\.", vq),
        "swin_depth": count(r"encoder\.blocks\.\d+\." + group, vq),
        "lq_channels": int(state["lq_encoder.model.0.weight"].shape[0]),
        "lq_swin_blocks": count(r"lq_encoder\.model\.\d+\.swin_blks\.(\d+)\.", state),
        "lq_swin_depth": count(r"lq_encoder\.model\.\d+\." + group, state),
        "demask_dim": int(state["token_refine_net.token_crit_net.code_emb.weight"].shape[0]),
        "demask_blocks": count(re.escape(crit) + r"swin_blks\.(\d+)\.", state),
        "demask_depth": count(re.escape(crit) + group, state),
    }


def _levels(vq: dict[str, torch.Tensor]) -> dict:
    """``ch_mult`` and ``res_blocks`` from the encoder's ResBlock / Downsample sequence."""
    nf = int(vq["encoder.blocks.0.weight"].shape[0])
    levels: list[list[int]] = [[]]
    i = 1
    while f"encoder.blocks.{i}.conv_in.weight" not in vq:
        if f"encoder.blocks.{i}.conv1.weight" in vq:
            levels[-1].append(int(vq[f"encoder.blocks.{i}.conv1.weight"].shape[0]))
        elif f"encoder.blocks.{i}.conv.weight" in vq:
            levels.append([])
        else:
            raise ZoomSRError(f"ITER file: unexpected Swin-VQGAN encoder block {i}")
        i += 1
    levels[-1].pop()  # the middle ResBlock before the Swin layers
    return {"ch_mult": [lv[-1] // nf for lv in levels], "res_blocks": len(levels[0])}


def _swin_dim(vq: dict[str, torch.Tensor]) -> int:
    key = next((k for k in vq if re.match(r"encoder\.blocks\.\d+\.conv_in\.weight$", k)), None)
    if key is None:
        raise ZoomSRError("ITER file: no Swin layers in the VQGAN encoder (not a Swin-VQGAN?)")
    return int(vq[key].shape[0])


def _window(vq: dict[str, torch.Tensor]) -> dict[str, int]:
    """Window, heads and built-for grid from the first Swin blocks' bias table and shift mask."""
    pre = next(
        (k[: -len("0.attn.relative_position_bias_table")] for k in vq
         if k.endswith("residual_group.blocks.0.attn.relative_position_bias_table")),
        None,
    )  # fmt: skip
    if pre is None:
        raise ZoomSRError("ITER file: no Swin blocks in the VQGAN (not a Swin-VQGAN?)")
    table = vq[pre + "0.attn.relative_position_bias_table"]
    window = (int(round(table.shape[0] ** 0.5)) + 1) // 2
    mask = vq.get(pre + "1.attn_mask")
    grid = window * int(round(mask.shape[0] ** 0.5)) if mask is not None else window
    return {"window": window, "heads": int(table.shape[1]), "resolution": grid}


def load_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` consuming every key: parameters are copied, buffers must
    equal the built ones; missing, left-over or mis-shaped keys raise, named."""
    own = module.state_dict()
    missing, leftover = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or leftover:
        raise ZoomSRError(
            f"ITER {what} does not match the model: missing {missing[:8]} "
            f"({len(missing)} in all), left over {leftover[:8]} ({len(leftover)} in all)"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ZoomSRError(
            f"ITER {what}: '{k}' has shape {tuple(state[k].shape)}, the model expects "
            f"{tuple(own[k].shape)} ({len(bad)} such keys): a different release config?"
        )
    buffers = {n for n, _ in module.named_buffers()}
    differ = [k for k in buffers if k in own and not torch.equal(own[k], state[k].to(own[k]))]
    if differ:
        raise ZoomSRError(f"ITER {what}: stored buffers differ from ITER's layout: {differ[:5]}")
    module.load_state_dict(state, strict=True)


def import_iter(ckpt: str | Path, out: str | Path, vqgan: str | Path | None = None) -> Path:
    """Convert an ITER release file into ``out/iter_x<s>.ckpt`` + ``out/vqgan.safetensors``."""
    from safetensors.torch import save_file

    from zoomsr.backbones.iter import ITER

    state = dict(read_iter_file(ckpt, "checkpoint"))
    if not any(k.startswith("lq_encoder.") for k in state):
        raise ZoomSRError(
            f"'{ckpt}' has no LQ encoder (lq_encoder.*): is it ITER_swinvqgan.pth? Pass the x2 / "
            "x4 model as --ckpt and the Swin-VQGAN as --vqgan."
        )
    if any(k.startswith("vqgan.") for k in state):
        vq = split_vqgan(state, "vqgan.")
        state = {k: v for k, v in state.items() if not k.startswith("vqgan.")}
    elif vqgan is not None:
        vq = split_vqgan(read_iter_file(vqgan, "Swin-VQGAN"), "")
    else:
        raise ZoomSRError(
            f"'{ckpt}' holds no Swin-VQGAN (vqgan.*): pass ITER_swinvqgan.pth with --vqgan."
        )
    config = infer_config(state, vq)
    model = ITER(**{k: v for k, v in config.items() if k != "_target_"}, seed=0)
    load_exactly(model, {**state, **{f"vqgan.{k}": v for k, v in vq.items()}}, "checkpoint")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    vq_path = (out / "vqgan.safetensors").resolve()
    save_file({k: v.contiguous() for k, v in model.vqgan.state_dict().items()}, str(vq_path))
    config |= {"vqgan_ckpt": str(vq_path), "seed": 0}
    path = out / f"iter_x{config['scale']}.ckpt"
    torch.save(
        {
            "state_dict": {
                f"backbone.{k}": v.contiguous() for k, v in model.trainable_state_dict().items()
            },
            "global_step": 0,
            "zoomsr": {"backbone_config": OmegaConf.to_yaml(OmegaConf.create(config))},
        },
        path,
    )
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr import-iter",
        description="Convert ITER's released weights (ITER_x2.pth / ITER_x4.pth) into a zoomsr "
        "checkpoint OUT/iter_x<s>.ckpt and its Swin-VQGAN OUT/vqgan.safetensors.",
    )
    parser.add_argument("--ckpt", required=True, help="ITER_x2.pth or ITER_x4.pth")
    parser.add_argument(
        "--vqgan", help="ITER_swinvqgan.pth, needed when --ckpt holds no vqgan.* weights"
    )
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    path = import_iter(args.ckpt, args.out, args.vqgan)
    print(f"[zoomsr] wrote {path}; e.g. python infer.py ckpt={path} input=…")
    return 0
