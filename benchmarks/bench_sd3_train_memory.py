"""Peak memory and time of one ``experiment=coz_lora`` training step at SD3-medium's real shapes,
against Chain-of-Zoom's design (a separate transformer copy for the generator, the real and
the fake score), and GRPO's memory at Qwen2.5-VL-3B's shapes.

  python benchmarks/bench_sd3_train_memory.py --size 256 --folder /tmp/sd3_random
  python benchmarks/bench_sd3_train_memory.py --arithmetic-only

1. ``write``: SD3-medium's transformer, VAE and both CLIP encoders from their published configs
   (random weights, transformer and CLIPs in bf16, VAE in fp32; no T5, ``use_t5=false``), saved
   as a diffusers folder (tokenizers and scheduler from zoomsr's tiny SD3 folder; the token ids
   they give are valid for the real vocabularies).
2. ``measure`` (a fresh process): ``SD3LoRA`` loads that folder through its real path
   (``vsd=true``, bf16, gradient checkpointing, adapters as ``coz_lora``), then one step: the
   generator, VSD with the guided real score (CFG 7.5, negative prompt), the regularizer's
   loss, L2 + LPIPS (random VGG: same shapes), backward and AdamW, under bf16 autocast as
   ``trainer.precision=bf16-mixed``. Reports the process's peak RSS (``ru_maxrss``) and times.
3. CoZ's design keeps two more transformer copies (``transformer_gen``, ``transformer_reg``
   deep-copied from ``transformer_org``, ``osediff_sd3.py``) in its fp16: the same step plus
   ``2 x n_transformer x 2`` bytes (exact parameter count), since the machine (24 GB, shared)
   cannot hold three real transformers next to the rest; printed as arithmetic.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from zoomsr.backbones.sd3_medium import CLIP_G, CLIP_L, TRANSFORMER, VAE

GB = 1e9
# Qwen2.5-VL-3B-Instruct's and -7B-Instruct's published config.json (text and vision parts).
QWEN_3B = dict(
    text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
              num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
              tie_word_embeddings=True),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31]),
)  # fmt: skip
QWEN_7B = dict(
    text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
              tie_word_embeddings=False),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                out_hidden_size=3584, fullatt_block_indexes=[7, 15, 23, 31]),
)  # fmt: skip


def write(folder: Path) -> None:
    """The random real-size SD3 folder (no T5)."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    from zoomsr.backbones.sd3_tiny import ensure_tiny_sd3

    tiny = ensure_tiny_sd3()
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("scheduler", "tokenizer", "tokenizer_2"):
        shutil.copytree(tiny / part, folder / part, dirs_exist_ok=True)
    tok = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    AutoencoderKL(**VAE).save_pretrained(folder / "vae")
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: never an fp32 copy of 2 B params
    for name, cfg in (("text_encoder", CLIP_L), ("text_encoder_2", CLIP_G)):
        model = CLIPTextModelWithProjection(CLIPTextConfig(**cfg, **ids))
        model.save_pretrained(folder / name)
        del model
    model = SD3Transformer2DModel(**TRANSFORMER)
    model.save_pretrained(folder / "transformer")
    print(json.dumps({"transformer_params": sum(p.numel() for p in model.parameters())}))


def rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / GB
    return float("nan")


def measure(folder: Path, size: int) -> None:
    """One coz_lora training step; prints JSON with peak RSS and times."""
    from zoomsr.backbones.sd3_lora import SD3LoRA
    from zoomsr.losses.lpips import LPIPSLoss
    from zoomsr.losses.pixel import PixelLoss
    from zoomsr.losses.vsd import RegularizerLoss, VSDLoss

    t0 = time.perf_counter()
    backbone = SD3LoRA(
        pretrained=str(folder), use_t5=False, max_sequence_length=77, vsd=True,
        weight_dtype="bfloat16", gradient_checkpointing=True,
    )  # fmt: skip
    vsd = VSDLoss()
    terms = [PixelLoss("l2", "sr", "hr"), LPIPSLoss(pred="sr", target="hr", weight=2.0,
             random_backbone=True), vsd, RegularizerLoss()]  # fmt: skip
    params = [p for p in backbone.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=1e-2)
    built, rss_built = time.perf_counter() - t0, rss_gb()
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, size // 4, size // 4, generator=g)
    hr = torch.rand(1, 3, size, size, generator=g)
    t1 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone.training_outputs(lr, hr, ["a photo of a brick wall"],
                                        seeds=torch.tensor([0]), vsd=vsd.settings)  # fmt: skip
        loss = torch.stack([t(out) for t in terms]).sum()
    forward = time.perf_counter() - t1
    loss.backward()
    opt.step()
    step = time.perf_counter() - t1
    n_tr = sum(p.numel() for n, p in backbone.transformer.named_parameters() if ".lora_" not in n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    print(json.dumps({
        "size": size, "loss": float(loss), "build_s": built, "forward_s": forward,
        "step_s": step, "rss_after_build_gb": rss_built, "peak_rss_gb": peak,
        "transformer_params": n_tr, "trained_params": sum(p.numel() for p in params),
    }))  # fmt: skip


def qwen_params(cfg: dict) -> int:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=cfg["text"], vision_config=cfg["vision"])
        )
    return sum(p.numel() for p in model.parameters())


def grpo_arithmetic(group: int = 8, tokens: int = 1300, new: int = 32) -> dict:
    """GRPO step memory at Qwen2.5-VL-3B (policy, reference = the same weights) with a 7B or a
    3B critic, bf16 weights; logits of ``group`` sequences of ``tokens`` (two 448 px views at
    the processor's default ~ 2 x 256 + chat) kept in fp32 for the ``new`` sampled tokens."""
    p3, p7 = qwen_params(QWEN_3B), qwen_params(QWEN_7B)
    logits = group * new * QWEN_3B["text"]["vocab_size"] * 4 * 2  # logp + softmax grad
    # Checkpointed layers: one (G, tokens, hidden) bf16 input per layer kept for backward.
    acts = (
        group * tokens * QWEN_3B["text"]["hidden_size"] * 2 * QWEN_3B["text"]["num_hidden_layers"]
    )
    return {
        "qwen3b_params": p3, "qwen7b_params": p7,
        "policy_bf16_gb": 2 * p3 / GB, "critic7b_bf16_gb": 2 * p7 / GB,
        "logits_gb": logits / GB, "ckpt_acts_gb": acts / GB,
        "total_7b_critic_gb": (2 * p3 + 2 * p7 + logits + acts) / GB,
        "total_3b_critic_gb": (4 * p3 + logits + acts) / GB,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/sd3_medium_random"))
    ap.add_argument("--size", type=int, default=512, help="HR crop side (coz_lora: 512)")
    ap.add_argument("--phase", choices=["all", "write", "measure"], default="all")
    ap.add_argument("--arithmetic-only", action="store_true")
    args = ap.parse_args()
    if args.arithmetic_only:
        print(json.dumps(grpo_arithmetic(), indent=1))
        return
    if args.phase == "write":
        return write(args.folder)
    if args.phase == "measure":
        return measure(args.folder, args.size)
    me = [sys.executable, __file__, "--folder", str(args.folder), "--size", str(args.size)]
    if not (args.folder / "transformer" / "config.json").is_file():
        subprocess.run([*me, "--phase", "write"], check=True)
    run = subprocess.run([*me, "--phase", "measure"], check=True, capture_output=True, text=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    extra = 2 * result["transformer_params"] * 2  # two more fp16 transformer copies (CoZ)
    result["coz_design_gb"] = result["peak_rss_gb"] + extra / GB
    result["ratio"] = result["peak_rss_gb"] / result["coz_design_gb"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
