"""``zoomsr import-coz``: Chain-of-Zoom's released SR weights -> a zoomsr checkpoint.

CoZ (Kim et al. 2025, github.com/bryanswkim/Chain-of-Zoom) releases two files:

- the transformer LoRA (``ckpt/SR_LoRA/model_20001.pkl``): ``torch.save`` of a flat list
  ``[up_0, down_0, up_1, down_1, ...]``, one pair per ``nn.Linear`` inside each
  ``AdaLayerNormZero`` in module order; ``up`` is ``(out, r)``, ``down`` ``(r, in)``, and the layer
  adds ``up @ down @ x`` (scale 1). In peft terms ``lora_B = up``, ``lora_A = down``, alpha = r.
- the VAE encoder (``ckpt/SR_VAE/vae_encoder_20001.pt``): the whole ``vae.encoder.state_dict()``
  in fp16 after peft injected the adapter ``default_encoder`` (keys ``….lora_A.default_encoder.
  weight``, ``….base_layer.weight``); peft's default alpha 8 with r = 4.

Both are read with ``torch.load(weights_only=True)``: tensors and containers only, nothing is
unpickled as code. The output folder gets ``coz.ckpt`` (loadable by ``evaluate.py ckpt=…`` and
``infer.py ckpt=…``) and ``lora/`` (diffusers' ``load_lora_weights`` layout).

Note: CoZ's own inference script encodes without the VAE's ``shift_factor`` but decodes with it;
zoomsr applies it in both, so outputs differ slightly from that script's.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoomsr.backbones.sd3_lora import ENCODER, GENERATOR, SD3LoRA, adaln_targets
from zoomsr.errors import ZoomSRError, exit_on_user_error
from zoomsr.interop import load_released


def _load(path: str | Path, what: str):
    return load_released(path, f"CoZ {what}", ".")


def transformer_state(loras: list[torch.Tensor], targets: list[str]) -> dict[str, torch.Tensor]:
    """CoZ's flat ``[up, down, ...]`` list -> SD3LoRA trainable-state keys (generator adapter)."""
    if not isinstance(loras, (list, tuple)) or len(loras) != 2 * len(targets):
        n = len(loras) if isinstance(loras, (list, tuple)) else type(loras).__name__
        raise ZoomSRError(
            f"CoZ transformer LoRA: expected a list of {2 * len(targets)} tensors (up, down for "
            f"each of the {len(targets)} adaLN-Zero linears), got {n}. Is the base model the "
            "same SD3 variant?"
        )
    state = {}
    for i, name in enumerate(targets):
        up, down = loras[2 * i].float(), loras[2 * i + 1].float()
        state[f"transformer.{name}.lora_B.{GENERATOR}.weight"] = up
        state[f"transformer.{name}.lora_A.{GENERATOR}.weight"] = down
    return state


def vae_state(encoder_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CoZ's VAE-encoder state dict -> SD3LoRA keys of the ``encoder`` adapter (LoRA only)."""
    pattern = re.compile(r"^(.*)\.(lora_[AB])\.[^.]+\.weight$")
    state = {}
    for key, value in encoder_sd.items():
        m = pattern.match(key)
        if m:
            state[f"vae.encoder.{m.group(1)}.{m.group(2)}.{ENCODER}.weight"] = value.float()
    if not state:
        raise ZoomSRError("CoZ VAE encoder file holds no LoRA weights (keys '….lora_A.….weight').")
    return state


def import_coz(
    lora: str | Path,
    pretrained: str,
    out: str | Path,
    vae: str | Path | None = None,
    scale: int = 4,
    use_t5: bool = True,
    max_sequence_length: int = 512,
) -> Path:
    """Convert CoZ's files into ``out/coz.ckpt`` and ``out/lora/``; returns the checkpoint path."""
    loras = _load(lora, "transformer LoRA")
    encoder_sd = _load(vae, "VAE encoder") if vae is not None else None
    # Tensors only, at every depth: anything else (a config, a _target_) is not CoZ's file.
    if not isinstance(loras, (list, tuple)) or not all(torch.is_tensor(t) for t in loras):
        raise ZoomSRError(f"CoZ LoRA '{lora}' is not a list of tensors (not CoZ's file).")
    if encoder_sd is not None and not (
        isinstance(encoder_sd, dict)
        and all(isinstance(k, str) and torch.is_tensor(v) for k, v in encoder_sd.items())
    ):
        raise ZoomSRError(f"CoZ VAE encoder '{vae}' holds more than tensors (not CoZ's file).")
    rank = int(loras[1].shape[0]) if isinstance(loras, (list, tuple)) and len(loras) > 1 else 4
    vae_rank = 4
    if encoder_sd is not None:
        a = next((v for k, v in encoder_sd.items() if ".lora_A." in k), None)
        vae_rank = int(a.shape[0]) if a is not None else 4
    config = {
        "_target_": "zoomsr.backbones.sd3_lora.SD3LoRA",
        "pretrained": str(pretrained),
        "scale": scale,
        "use_t5": use_t5,
        "max_sequence_length": max_sequence_length,
        "lora_targets": "adaln",
        "lora_rank": rank,
        "lora_alpha": None,  # = rank: CoZ's LoRA layers add up @ down unscaled
        "vae_lora": encoder_sd is not None,
        "vae_lora_rank": vae_rank,
        "vae_lora_alpha": 8.0,  # peft's default, which CoZ's inject_lora_vae used
        "vsd": False,
        "latent": "sample",
        "weight_dtype": "float32",
        "gradient_checkpointing": False,
        "seed": 0,
    }
    backbone = SD3LoRA(**{k: v for k, v in config.items() if k != "_target_"})
    state = transformer_state(loras, adaln_targets(backbone.transformer))
    if encoder_sd is not None:
        state |= vae_state(encoder_sd)
    expected = backbone.trainable_state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise ZoomSRError(
                f"CoZ weight for '{key}' has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)}: a different base model or rank?"
            )
    try:
        backbone.load_trainable_state_dict(state)
    except KeyError as err:
        raise ZoomSRError(f"CoZ weights do not match the model: {err}") from err
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "coz.ckpt"
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v.contiguous() for k, v in state.items()},
            "global_step": 0,
            "zoomsr": {"backbone_config": OmegaConf.to_yaml(OmegaConf.create(config))},
        },
        ckpt,
    )
    backbone.export_lora(out / "lora")
    return ckpt


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoomsr import-coz",
        description="Convert Chain-of-Zoom's released SR LoRA (and VAE encoder) into a zoomsr "
        "checkpoint (OUT/coz.ckpt) and a diffusers LoRA folder (OUT/lora/).",
    )
    parser.add_argument("--lora", required=True, help="CoZ transformer LoRA, e.g. model_20001.pkl")
    parser.add_argument("--vae", help="CoZ VAE encoder, e.g. vae_encoder_20001.pt")
    parser.add_argument(
        "--pretrained",
        default="stabilityai/stable-diffusion-3-medium-diffusers",
        help="the SD3 base: a diffusers folder, a cached Hub id, or 'tiny'",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--no-t5", action="store_true", help="zeros instead of T5 embeddings")
    parser.add_argument("--max-sequence-length", type=int, default=512)
    args = parser.parse_args(argv)
    from zoomsr.tasks.common import set_offline_defaults

    set_offline_defaults()
    ckpt = import_coz(
        args.lora, args.pretrained, args.out, args.vae, args.scale, not args.no_t5,
        args.max_sequence_length,
    )  # fmt: skip
    print(
        f"[zoomsr] wrote {ckpt} and {ckpt.parent / 'lora'}; "
        f"e.g. python infer.py ckpt={ckpt} input=…"
    )
    return 0
