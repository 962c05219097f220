"""Peak memory and time of one ``experiment=coz_grpo`` training step at Qwen2.5-VL-3B-Instruct's
real shapes, the critic sharing the policy's weights (``rewards.critic.model=policy``).

  python benchmarks/bench_grpo_memory.py --folder /tmp/qwen25vl3b_random --group 2
  python benchmarks/bench_grpo_memory.py --arithmetic-only

1. ``write``: Qwen2.5-VL-3B-Instruct from its published ``config.json`` (random weights, bf16,
   3.75 B parameters), saved as a transformers folder with a processor of the published image
   settings (14 px patches merged 2 x 2, ``min_pixels`` 3136, ``max_pixels`` 12845056) and the
   tokenizer and chat template of zoomsr's tiny Qwen2.5-VL (:mod:`zoomsr.prompts.tiny`: byte
   level, 263 ids, all valid rows of the 151936-row embedding; its special-token ids are
   written into the config). Texts tokenize into more ids than with Qwen's BPE (one per byte).
2. ``measure`` (a fresh process): :class:`~zoomsr.modules.grpo_module.GRPOModule` loads that
   folder through its real path (bf16, LoRA r=8 on q/k/v/o, gradient checkpointing as
   ``coz_grpo``), rewards as ``coz_grpo`` with ``critic.model=policy``, and a Lightning
   ``Trainer`` runs one step on one (wide, zoom) pair of a ``recursive_multiscale`` bicubic
   zoom chain at ``--process-size`` over scikit-image's astronaut: sample the group, score it,
   the old and reference log-probabilities, loss + KL and backward, clip and AdamW. Each phase
   (the module's profiler sections) reports its seconds, the peak RSS of a 20 ms sampler
   thread within it, and the process's ``ru_maxrss`` at its end, as JSON.
3. ``--arithmetic-only``: the same step's memory from exact parameter counts (meta tensors),
   with a 7B critic (a second model) or a 3B one loaded as a second copy.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from lightning.pytorch.profilers import Profiler

GB = 1e9
PHASES = ("sample", "reward", "logprobs", "loss_backward", "optimizer")
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
# The rest of the 3B config.json that is not transformers' default.
QWEN_3B_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
QWEN_3B_VISION_REST = dict(window_size=112, tokens_per_second=2, hidden_act="silu")
QWEN_PIXELS = dict(min_pixels=3136, max_pixels=12845056)  # preprocessor_config.json


def write(folder: Path) -> int:
    """The random Qwen2.5-VL-3B folder; returns its parameter count."""
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )

    from zoomsr.prompts.tiny import ensure_tiny_vlm

    tiny = AutoProcessor.from_pretrained(ensure_tiny_vlm())
    tok = tiny.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>",
           "<|vision_start|>", "<|vision_end|>", "<|endoftext|>", "<|im_end|>")}  # fmt: skip
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**QWEN_PIXELS), tokenizer=tok,
        video_processor=tiny.video_processor, chat_template=tiny.chat_template,
    ).save_pretrained(folder)  # fmt: skip
    text = QWEN_3B["text"] | {"rope_parameters": QWEN_3B_ROPE}
    text |= dict(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                 pad_token_id=ids["<|endoftext|>"], rms_norm_eps=1e-6,
                 max_position_embeddings=128000)  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=QWEN_3B["vision"] | QWEN_3B_VISION_REST,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: never an fp32 copy of 3.75 B
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def rss_gb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``: all of it; ``RssAnon``: without the pages of
    mapped files, e.g. the safetensors weights transformers maps, which the kernel may evict)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / GB
    return float("nan")


def maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


class PhaseProfiler(Profiler):
    """Lightning profiler of the GRPO module's ``grpo/<phase>`` sections: per phase its seconds
    (summed over the pairs of a batch), the highest RSS (and anonymous RSS) a 20 ms sampler saw
    during it and ``ru_maxrss`` at its end. Each finished phase is also printed to stderr (a
    long run that is stopped still shows the phases it finished)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__()
        self.phases: dict[str, dict[str, float]] = {}
        self.interval, self._peak, self._anon, self._t0 = interval, 0.0, 0.0, 0.0
        self._done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self._peak = max(self._peak, rss_gb())
            self._anon = max(self._anon, rss_gb("RssAnon"))

    def start(self, action_name: str) -> None:
        if action_name.startswith("grpo/"):
            self._peak, self._anon, self._t0 = rss_gb(), rss_gb("RssAnon"), time.perf_counter()

    def stop(self, action_name: str) -> None:
        if action_name.startswith("grpo/"):
            self.record(action_name.removeprefix("grpo/"), time.perf_counter() - self._t0)

    def record(self, name: str, seconds: float) -> None:
        phase = self.phases.setdefault(name, {"s": 0.0, "peak_rss_gb": 0.0, "peak_anon_gb": 0.0})
        phase["s"] += seconds
        phase["peak_rss_gb"] = max(phase["peak_rss_gb"], self._peak, rss_gb())
        phase["peak_anon_gb"] = max(phase["peak_anon_gb"], self._anon, rss_gb("RssAnon"))
        phase["ru_maxrss_gb"] = maxrss_gb()
        print(json.dumps({name: phase}), file=sys.stderr, flush=True)

    def summary(self) -> str:
        return ""  # the JSON is the report

    def close(self) -> None:
        self._done.set()


def views_datamodule(folder: Path, process_size: int):
    """One (wide, zoom) pair: a ``recursive_multiscale`` bicubic zoom step over the astronaut."""
    import numpy as np
    from PIL import Image
    from skimage import data

    from zoomsr.data.zoom_views import ZoomViewsDataModule
    from zoomsr.zoom.chain import ChainEngine

    (folder / "hr").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(data.astronaut())).save(folder / "hr" / "a.png")
    zoom = functools.partial(ChainEngine, rec_type="recursive_multiscale", upscale=4, steps=1,
                             process_size=process_size, seed=0)  # fmt: skip
    return ZoomViewsDataModule(str(folder / "hr"), zoom, batch_size=1, max_images=1)


def measure(
    folder: Path, group: int, max_new_tokens: int, process_size: int,
    max_pixels: int | None = None, threads: int = 2,
) -> dict:  # fmt: skip
    """One ``coz_grpo`` step with the critic sharing the policy (see the module docstring)."""
    import lightning.pytorch as pl

    from zoomsr.modules.grpo_module import GRPOModule
    from zoomsr.prompts.rewards import CriticReward, PhraseExclusionReward, RepetitionPenalty

    torch.set_num_threads(threads)
    profiler = PhaseProfiler()
    t0 = time.perf_counter()
    critic = CriticReward(model="policy", max_pixels=max_pixels)
    module = GRPOModule(
        policy=str(folder), optimizer=functools.partial(torch.optim.AdamW, lr=1e-5),
        rewards={"critic": critic, "phrase": PhraseExclusionReward(),
                 "repetition": RepetitionPenalty()},
        group_size=group, max_new_tokens=max_new_tokens, max_pixels=max_pixels,
        gradient_checkpointing=True, samples_every=0,
    )  # fmt: skip
    profiler.record("build", time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        views = views_datamodule(Path(tmp), process_size)
        trainer = pl.Trainer(
            accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
            num_sanity_val_steps=0, profiler=profiler, default_root_dir=tmp,
        )  # fmt: skip
        trainer.fit(module, datamodule=views)
        pair = views.train_set[0]
    profiler.close()
    return {
        "settings": step_settings(module, pair, group, max_new_tokens, process_size, threads),
        "policy_params": sum(
            p.numel() for n, p in module.policy.named_parameters() if ".lora_" not in n
        ),
        "lora_params": sum(p.numel() for p in module.policy.parameters() if p.requires_grad),
        "critic_own_params": sum(p.numel() for p in critic.parameters()),
        "phases": profiler.phases,
        "peak_rss_gb": maxrss_gb(),
        "step_s": sum(v["s"] for k, v in profiler.phases.items() if k != "build"),
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
    }


def step_settings(module, pair: dict, group: int, max_new_tokens: int, process_size: int,
                  threads: int) -> dict:  # fmt: skip
    """What the step ran on: the views' sides as the processor saw them, the prompt's ids."""
    from zoomsr.prompts.base import to_pil
    from zoomsr.prompts.vlm import messages

    chat = module.processor.apply_chat_template(
        messages(module.instruction, 2), tokenize=False, add_generation_prompt=True
    )
    images = [to_pil(pair["wide"]), to_pil(pair["zoom"])]
    enc = module.processor(text=[chat], images=images, return_tensors="pt")
    image_ids = int((enc["input_ids"] == module.policy.config.image_token_id).sum())
    grid = enc["image_grid_thw"].tolist()  # (t, h, w) in 14 px patches, per view
    return {
        "group": group, "max_new_tokens": max_new_tokens, "process_size": process_size,
        "pairs": 1, "threads": threads, "view_px": [[h * 14, w * 14] for _, h, w in grid],
        "prompt_ids": enc["input_ids"].shape[1], "image_ids": image_ids,
    }  # fmt: skip


def qwen_params(cfg: dict) -> int:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=cfg["text"], vision_config=cfg["vision"])
        )
    return sum(p.numel() for p in model.parameters())


# Moved from benchmarks/bench_sd3_train_memory.py (same logic, same figures).
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
    ap.add_argument("--folder", type=Path, default=Path("/tmp/qwen25vl3b_random"))
    ap.add_argument("--group", type=int, default=8, help="G prompts per pair (coz_grpo: 8)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="coz_grpo: 32")
    ap.add_argument("--process-size", type=int, default=512, help="zoom views' side (512)")
    ap.add_argument("--max-pixels", type=int, default=None, help="processor cap (default: its)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--phase", choices=["all", "write", "measure"], default="all")
    ap.add_argument("--arithmetic-only", action="store_true")
    args = ap.parse_args()
    if args.arithmetic_only:
        print(json.dumps(grpo_arithmetic(), indent=1))
        return
    if args.phase == "write":
        print(json.dumps({"params": write(args.folder)}))
        return
    if args.phase == "measure":
        result = measure(args.folder, args.group, args.max_new_tokens, args.process_size,
                         args.max_pixels, args.threads)  # fmt: skip
        print(json.dumps(result))
        return
    me = [sys.executable, __file__, "--folder", str(args.folder)]
    if not (args.folder / "config.json").is_file():
        subprocess.run([*me, "--phase", "write"], check=True)
    flags = ["--group", str(args.group), "--max-new-tokens", str(args.max_new_tokens),
             "--process-size", str(args.process_size), "--threads", str(args.threads)]  # fmt: skip
    if args.max_pixels:
        flags += ["--max-pixels", str(args.max_pixels)]
    # stdout is the JSON; stderr (each phase as it ends) passes through
    run = subprocess.run([*me, *flags, "--phase", "measure"], check=True, stdout=subprocess.PIPE,
                         text=True)  # fmt: skip
    print(json.dumps(json.loads(run.stdout.strip().splitlines()[-1]), indent=1))


if __name__ == "__main__":
    main()
