"""Memory of SD3-medium for zoomsr's sd3_lora backbone, computed from parameter counts.

Every component is built on PyTorch's ``meta`` device from SD3-medium's published configs (no
weights, no download), so the counts are exact; the table in docs/memory_sd3.md is this
script's output:  python scripts/sd3_memory.py
"""

from __future__ import annotations

import torch
from torch import nn

from zoomsr.backbones.sd3_medium import CLIP_G, CLIP_L, T5_XXL, TRANSFORMER, VAE

GB = 1e9


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_count(module: nn.Module, names: list[str], rank: int) -> int:
    """Parameters of rank-``rank`` LoRA on the named Linear/Conv2d modules: r * (fan_in + out)."""
    total = 0
    for name in names:
        m = module.get_submodule(name)
        if isinstance(m, nn.Conv2d):
            total += rank * (m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels)
        else:
            total += rank * (m.in_features + m.out_features)
    return total


def main() -> None:
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from zoomsr.backbones.sd3_lora import ATTENTION_TARGETS, adaln_targets

    with torch.device("meta"):
        tr = SD3Transformer2DModel(**TRANSFORMER)
        vae = AutoencoderKL(**VAE)
        clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
        t5 = T5EncoderModel(T5Config(**T5_XXL))
    n = {"transformer": count(tr), "vae": count(vae), "clip_l": count(clip_l),
         "clip_g": count(clip_g), "t5": count(t5)}  # fmt: skip
    attn = [k for k, _ in tr.named_modules() if any(k.endswith(t) for t in ATTENTION_TARGETS)]
    enc = [f"encoder.{k}" for k, m in vae.encoder.named_modules()
           if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip
    lora = {
        "adaln r4": lora_count(tr, adaln_targets(tr), 4),
        "attention r4": lora_count(tr, attn, 4),
        "vae encoder r4": lora_count(vae, enc, 4),
    }
    print("| component | parameters | bf16 weights |\n|---|---|---|")
    for k, v in n.items():
        print(f"| {k} | {v / 1e6:,.1f} M | {2 * v / GB:.2f} GB |")
    for k, v in lora.items():
        print(f"| LoRA {k} | {v / 1e6:,.3f} M | (fp32 + AdamW: {16 * v / 1e6:.1f} MB) |")
    frozen = {"with T5": sum(n.values()), "without T5": sum(n.values()) - n["t5"]}
    # Adapters in fp32 with grads and AdamW's two moments: 16 bytes each. Training trains the
    # generator (adaLN r4), the regularizer (adaLN r4) and the VAE-encoder LoRA.
    trained = 2 * lora["adaln r4"] + lora["vae encoder r4"]
    # Checkpointed transformer: one (B, tokens, 1536) bf16 input kept per block, batch 2 at
    # 512 px: 1024 image tokens + 77 CLIP + 512 T5 (or 77 zero) text tokens.
    print("\n| setting | frozen weights (bf16) | adapters+AdamW | ckpt block inputs (B=2) |")
    print("|---|---|---|---|")
    for label, total in frozen.items():
        text = 77 + (512 if label == "with T5" else 77)
        acts = 2 * (1024 + text) * 1536 * 2 * TRANSFORMER["num_layers"]
        print(f"| inference, {label} | {2 * total / GB:.2f} GB | - | - |")
        print(f"| training, {label} | {2 * total / GB:.2f} GB | {16 * trained / GB:.3f} GB "
              f"| {acts / GB:.2f} GB per transformer pass with grad |")  # fmt: skip
    coz, one = 3 * n["transformer"], n["transformer"]
    print(f"\nCoZ keeps 3 transformers (frozen, generator, regularizer): {coz / 1e9:.2f} B params "
          f"= {2 * coz / GB:.1f} GB in its float16 (osediff_sd3.py loads the pipeline in float16 "
          "and deep-copies it; the copies' `.float()` is commented out). One shared transformer "
          f"with two adapters: {2 * one / GB:.1f} GB in bf16; saved "
          f"{4 * one / GB:.1f} GB.")  # fmt: skip


if __name__ == "__main__":
    main()
