"""``zoomsr import-sr3``: Janspiry's released SR3 checkpoints -> a zoomsr checkpoint.

Janspiry's SR3 (github.com/Janspiry/Image-Super-Resolution-via-Iterative-Refinement) saves
``GaussianDiffusion.state_dict()`` as ``I<iter>_E<epoch>_gen.pth``: the U-Net under
``denoise_fn.`` and twelve float32 schedule buffers (``betas``, ``alphas_cumprod``, ...,
``posterior_mean_coef2``). The network is built from a JSON config with ``//`` comments
(``config/sr_sr3_16_128.json``, ``config/sr_sr3_64_512.json``).

The file is read with ``torch.load(weights_only=True)``. Every key is placed: each U-Net weight
goes to its place in :class:`~zoomsr.backbones.sr3.SR3UNet` (``variant="janspiry"``, see
:func:`janspiry_key`), and each schedule buffer is checked against the schedule recomputed
from the config (DDPM Eq. 6-7). A key that fits nowhere, a missing key, a shape or a schedule
that differs stops the import with one line naming the key. The output folder gets
``sr3.ckpt``, which ``evaluate.py ckpt=`` and ``infer.py ckpt=`` load.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoomsr.backbones.sr3 import SR3
from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.interop import is_tensor_dict, load_released

#: Janspiry's ``set_new_noise_schedule`` buffers, in the order it registers them.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)

# zoomsr name -> Janspiry name of the pieces of one ResnetBlocWithAttn. Janspiry's ``Block`` is
# Sequential(GroupNorm, Swish, Dropout|Identity, Conv2d), so its norm is ``.0`` and conv ``.3``.
_BLOCK_PARTS = {
    "res.norm1.": "res_block.block1.block.0.",
    "res.conv1.": "res_block.block1.block.3.",
    "res.noise_proj.1.": "res_block.noise_func.noise_func.0.",
    "res.norm2.": "res_block.block2.block.0.",
    "res.conv2.": "res_block.block2.block.3.",
    "res.skip.": "res_block.res_conv.",
    "attn.norm.": "attn.norm.",
    "attn.qkv.": "attn.qkv.",
    "attn.proj.": "attn.out.",
    "conv.": "conv.",  # Downsample / Upsample
}


def janspiry_key(key: str) -> str:
    """The key in Janspiry's ``_gen.pth`` of a key of ``SR3UNet.state_dict()``.

    ``noise_mlp.{0,2}`` are ``noise_level_mlp.{1,3}`` (index 0 is the positional encoding);
    ``init_conv`` is ``downs.0``, so zoomsr's ``downs.i`` is Janspiry's ``downs.(i+1)``;
    ``out_norm`` / ``out_conv`` are ``final_conv.block.0`` / ``.3``.
    """
    prefix = "denoise_fn."
    fixed = {
        "noise_mlp.0.": "noise_level_mlp.1.",
        "noise_mlp.2.": "noise_level_mlp.3.",
        "init_conv.": "downs.0.",
        "out_norm.": "final_conv.block.0.",
        "out_conv.": "final_conv.block.3.",
    }
    for ours, theirs in fixed.items():
        if key.startswith(ours):
            return prefix + theirs + key[len(ours) :]
    m = re.match(r"^(downs|mid|ups)\.(\d+)\.(.*)$", key)
    if m is None:
        raise KeyError(key)
    part, index, rest = m.group(1), int(m.group(2)), m.group(3)
    if part == "downs":
        index += 1
    for ours, theirs in _BLOCK_PARTS.items():
        if rest.startswith(ours):
            return f"{prefix}{part}.{index}.{theirs}{rest[len(ours) :]}"
    raise KeyError(key)


def janspiry_schedule(n_timestep: int, linear_start: float, linear_end: float) -> dict:
    """The twelve schedule buffers of a linear beta schedule, float64 ``(T,)`` each.

    With ``a_t = prod_{i<=t} (1 - beta_i)`` and ``a_{t-1}`` (``a_0 = 1``): the DDPM posterior
    ``q(x_{t-1} | x_t, x_0)`` has variance ``beta_t (1 - a_{t-1}) / (1 - a_t)`` and mean
    ``beta_t sqrt(a_{t-1}) / (1 - a_t) x_0 + (1 - a_{t-1}) sqrt(1 - beta_t) / (1 - a_t) x_t``
    (Ho et al. 2020, Eq. 6-7); its log variance is clipped at 1e-20 where it is 0.
    """
    betas = torch.linspace(linear_start, linear_end, n_timestep, dtype=torch.float64)
    a = torch.cumprod(1.0 - betas, 0)
    a_prev = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
    var = betas * (1.0 - a_prev) / (1.0 - a)
    return {
        "betas": betas,
        "alphas_cumprod": a,
        "alphas_cumprod_prev": a_prev,
        "sqrt_alphas_cumprod": a.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - a).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - a).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / a).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / a - 1.0).sqrt(),
        "posterior_variance": var,
        "posterior_log_variance_clipped": var.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * a_prev.sqrt() / (1.0 - a),
        "posterior_mean_coef2": (1.0 - a_prev) * (1.0 - betas).sqrt() / (1.0 - a),
    }


def read_janspiry_config(path: str | Path) -> dict:
    """Janspiry's JSON config: ``//`` comments dropped (outside strings), then parsed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZoomSRError(f"SR3 config not found: '{path}' (e.g. config/sr_sr3_16_128.json).")
    lines = []
    for line in path.read_text().splitlines():
        in_string, cut = False, len(line)
        for i, ch in enumerate(line):
            if ch == '"' and (i == 0 or line[i - 1] != "\\"):
                in_string = not in_string
            elif not in_string and line.startswith("//", i):
                cut = i
                break
        lines.append(line[:cut])
    try:
        return json.loads("\n".join(lines))
    except json.JSONDecodeError as err:
        raise ZoomSRError(f"cannot parse SR3 config '{path}' as JSON: {err}") from err


def backbone_config(opt: dict) -> dict:
    """The ``SR3`` backbone config (``_target_`` and every argument) of a Janspiry config."""
    try:
        model, unet = opt["model"], opt["model"]["unet"]
        schedule = model["beta_schedule"].get("val") or model["beta_schedule"]["train"]
        data = opt["datasets"].get("val") or opt["datasets"]["train"]
        scale, rem = divmod(int(data["r_resolution"]), int(data["l_resolution"]))
        config = {
            "_target_": "zoomsr.backbones.sr3.SR3",
            "scale": scale,
            "inner_channel": int(unet["inner_channel"]),
            "channel_mults": [int(m) for m in unet["channel_multiplier"]],
            "attn_res": [int(r) for r in unet["attn_res"]],
            "res_blocks": int(unet["res_blocks"]),
            "dropout": float(unet["dropout"]),
            # Janspiry's define_G: a missing or null norm_groups means 32
            "norm_groups": int(unet.get("norm_groups") or 32),
            "image_size": int(model["diffusion"]["image_size"]),
            "n_timestep": int(schedule["n_timestep"]),
            "linear_start": float(schedule["linear_start"]),
            "linear_end": float(schedule["linear_end"]),
            "sampler": "ddpm",
            "sample_steps": int(schedule["n_timestep"]),
            "ddim_eta": 0.0,
            "gradient_checkpointing": False,
            "seed": None,
            "residual": False,
            "residual_scale": 1.0,
            "variant": "janspiry",
            "condition": "pil_bicubic_8bit",
        }
    except (KeyError, TypeError, ValueError) as err:
        raise ZoomSRError(
            f"SR3 config lacks or mangles the entry {err} (see sr_sr3_16_128.json)"
        ) from err
    problems = []
    if model.get("which_model_G", "sr3") != "sr3":
        problems.append(f"which_model_G={model.get('which_model_G')!r} (only 'sr3' imports)")
    if (unet.get("in_channel"), unet.get("out_channel")) != (6, 3):
        problems.append(f"in/out channels {unet.get('in_channel')}/{unet.get('out_channel')}")
    if schedule.get("schedule") != "linear":
        problems.append(f"beta schedule {schedule.get('schedule')!r} (only 'linear' imports)")
    if rem or scale < 1 or not model["diffusion"].get("conditional", True):
        problems.append(f"resolutions {data['l_resolution']}->{data['r_resolution']}")
    if problems:
        raise ZoomSRError("SR3 config not supported: " + "; ".join(problems))
    return config


def convert_state(gen: dict, backbone: SR3, schedule: dict) -> dict[str, torch.Tensor]:
    """Janspiry's ``GaussianDiffusion`` state -> ``SR3UNet`` state; checks every key."""
    expected = backbone.unet.state_dict()
    unplaced = set(gen)
    state = {}
    for key, ours in expected.items():
        theirs = janspiry_key(key)
        if theirs not in gen:
            raise ZoomSRError(
                f"SR3 checkpoint lacks '{theirs}' (for zoomsr's unet.{key}): does the --config "
                "match the checkpoint?"
            )
        value = gen[theirs]
        if tuple(value.shape) != tuple(ours.shape):
            raise ZoomSRError(
                f"SR3 checkpoint '{theirs}' has shape {tuple(value.shape)}, the config's "
                f"network expects {tuple(ours.shape)}: does the --config match the checkpoint?"
            )
        state[key] = value.to(ours.dtype).contiguous()
        unplaced.discard(theirs)
    for name, want in schedule.items():
        if name not in gen:
            continue  # a bare denoiser file: the schedule comes from the config
        got = gen[name].double()
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-7):
            raise ZoomSRError(
                f"SR3 checkpoint buffer '{name}' is not the config's linear schedule "
                f"(T={len(want)}): pass the config the checkpoint was trained with."
            )
        unplaced.discard(name)
    if unplaced:
        names = ", ".join(sorted(unplaced)[:8])
        raise ZoomSRError(f"SR3 checkpoint keys that fit no place in the network: {names}")
    return state


def _load(path: str | Path) -> dict:
    gen = load_released(path, "SR3 checkpoint", " (Janspiry's I..._E.._gen.pth).")
    if not is_tensor_dict(gen):
        raise ZoomSRError(f"'{path}' is not a state dict of tensors (Janspiry's _gen.pth).")
    return gen


def import_sr3(
    ckpt: str | Path,
    config: str | Path,
    out: str | Path,
    sampler: str = "ddpm",
    sample_steps: int | None = None,
) -> Path:
    """Convert Janspiry's ``ckpt`` (built from ``config``) into ``out/sr3.ckpt``; returns it.

    ``sampler`` / ``sample_steps``: the inference of the written backbone (default Janspiry's:
    DDPM over all ``n_timestep`` levels).
    """
    gen = _load(ckpt)
    cfg = backbone_config(read_janspiry_config(config))
    cfg["sampler"] = sampler
    if sample_steps is not None:
        cfg["sample_steps"] = int(sample_steps)
    backbone = SR3(**{k: v for k, v in cfg.items() if k != "_target_"})
    schedule = janspiry_schedule(cfg["n_timestep"], cfg["linear_start"], cfg["linear_end"])
    state = convert_state(gen, backbone, schedule)
    backbone.unet.load_state_dict(state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sr3.ckpt"
    torch.save(
        {
            "state_dict": {f"backbone.unet.{k}": v for k, v in state.items()},
            "global_step": 0,
            "zoomsr": {
                "backbone_config": OmegaConf.to_yaml(OmegaConf.create(cfg)),
                "imported_from": str(Path(ckpt).name),
            },
        },
        path,
    )
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr import-sr3",
        description="Convert a checkpoint of Janspiry's SR3 (I..._E.._gen.pth) and its JSON "
        "config into a zoomsr checkpoint OUT/sr3.ckpt for evaluate.py / infer.py ckpt=.",
    )
    parser.add_argument("--ckpt", required=True, help="Janspiry's generator file, *_gen.pth")
    parser.add_argument("--config", required=True, help="its config, e.g. sr_sr3_16_128.json")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    parser.add_argument("--sample-steps", type=int, default=None, help="default: n_timestep")
    args = parser.parse_args(argv)
    path = import_sr3(args.ckpt, args.config, args.out, args.sampler, args.sample_steps)
    print(f"[zoomsr] wrote {path}; e.g. python infer.py ckpt={path} zoom=full input=...")
    return 0
