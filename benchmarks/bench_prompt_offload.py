"""Prompt-model offload: what a zoom chain with VLM prompts moves and keeps on the accelerator.

A ``recursive_multiscale`` chain (SR3 backbone, VLM prompts from a random-initialized
Qwen2.5-VL of the real class, ``zoomsr.prompts.tiny``) runs in four configurations: memory
``plain`` (every model resident) and ``swap`` (only the running model on the device; CoZ's
``efficient_memory``), each with a cold prompt cache (the VLM describes every view) and a warm
one (a second run over the same images). The chain's :class:`ModelPlacer` is replaced by a
subclass that records each placement it makes, so the counts are the placer's own decisions:

- ``VLM calls``: views the VLM described (cache misses).
- ``moves in/out``: placements that moved weights to / from the device (a lazily loaded VLM
  counts as moved in when it first lands there); ``MiB moved``: their weight bytes.
- ``peak resident``: the largest sum of weight bytes on the device at any time; the proxy for
  peak accelerator memory on a CPU run (activations excluded). With ``--device cuda`` the real
  ``torch.cuda.max_memory_allocated`` is reported too.

    python benchmarks/bench_prompt_offload.py                 # CPU, ~1 min
    python benchmarks/bench_prompt_offload.py --device cuda --vlm-hidden 1024 --vlm-layers 8
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import zoomsr.zoom.step as step_module
from zoomsr.backbones.sr3 import SR3
from zoomsr.prompts.tiny import write_tiny_vlm
from zoomsr.prompts.vlm import VLMPrompt
from zoomsr.zoom.engine import ChainEngine
from zoomsr.zoom.memory import ModelPlacer

HERE = Path(__file__).resolve().parent
MiB = 2**20


def weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class RecordingPlacer(ModelPlacer):
    """A :class:`ModelPlacer` that records the weight moves its placements make.

    What is on the device is tracked across placers (the chain makes one per image, and a
    model left on the device by one image is still there for the next), by model identity and
    weight bytes: a placement of a model already there moves nothing, and a lazily loaded VLM
    moves its weights in when it first lands on the device.
    """

    moves: list[tuple[str, str, int]] = []  # (model class, "in" | "out", bytes)
    on_device: dict[int, int] = {}  # id(model) -> weight bytes on the device
    peak = 0

    @classmethod
    def reset(cls) -> None:
        cls.moves, cls.on_device, cls.peak = [], {}, 0

    def _place(self, model: nn.Module, on: bool) -> None:
        cls, size = type(self), weight_bytes(model)
        was = cls.on_device.get(id(model), 0)
        if on and size > was:
            cls.moves.append((type(model).__name__, "in", size - was))
            cls.on_device[id(model)] = size
        elif not on and was:
            cls.moves.append((type(model).__name__, "out", was))
            del cls.on_device[id(model)]
        cls.peak = max(cls.peak, sum(cls.on_device.values()))

    def setup(self, *models) -> None:
        super().setup(*models)
        for model in models:
            if model is not None:
                self._place(model, on=self.mode == "plain")

    @contextmanager
    def running(self, model):
        with super().running(model):
            yield
            if model is not None:  # at the block's end: a lazily loaded VLM is there now
                self._place(model, on=True)
        if model is not None and self.mode == "swap":
            self._place(model, on=False)


def backbone() -> SR3:
    return SR3(
        inner_channel=32,
        channel_mults=[1, 2, 2],
        attn_res=[],
        res_blocks=1,
        norm_groups=8,
        image_size=64,
        n_timestep=100,
        sampler="ddim",
        sample_steps=2,
        seed=0,
    ).eval()


def run_config(args, vlm_dir: Path, cache: Path, memory: str, images: list[torch.Tensor]):
    source = VLMPrompt(model=str(vlm_dir), max_new_tokens=args.tokens, cache=str(cache))
    sr = backbone()
    zoom = ChainEngine(
        "recursive_multiscale", steps=args.steps, process_size=args.size, memory=memory,
        backbone=sr, prompt_source=source, device=args.device,
    )  # fmt: skip
    RecordingPlacer.reset()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i, image in enumerate(images):
        zoom.run(image, f"image{i}")
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    moves = RecordingPlacer.moves
    row = {
        "memory": memory,
        "vlm_calls": source.model_calls,
        "moves_in": sum(d == "in" for _, d, _ in moves),
        "moves_out": sum(d == "out" for _, d, _ in moves),
        "vlm_moves": sum(name != "SR3" for name, _, _ in moves),
        "mib_moved": sum(b for _, _, b in moves) / MiB,
        "peak_mib": RecordingPlacer.peak / MiB,
        "seconds": seconds,
        "sr_mib": weight_bytes(sr) / MiB,
        "vlm_mib": (weight_bytes(source._net) if source._net is not None else 0) / MiB,
    }
    if args.device.startswith("cuda"):
        row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / MiB
    return row


def table(rows: list[dict], cuda: bool) -> str:
    head = (
        "| memory | prompt cache | VLM calls | moves in / out (VLM) | MiB moved | peak resident MiB"
    )
    head += " | CUDA peak MiB |" if cuda else " |"
    head += " time s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [
            r["memory"],
            r["cache"],
            str(r["vlm_calls"]),
            f"{r['moves_in']} / {r['moves_out']} ({r['vlm_moves']})",
            f"{r['mib_moved']:.2f}",
            f"{r['peak_mib']:.2f}",
        ]
        if cuda:
            cells.append(f"{r['cuda_peak_mib']:.1f}")
        cells.append(f"{r['seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(text: str, command: str) -> None:
    """Replace this script's section of RESULTS.md (or append it)."""
    path = HERE / "RESULTS.md"
    start, end = "<!-- bench_prompt_offload:start -->", "<!-- bench_prompt_offload:end -->"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([start, text.replace("{command}", command).replace("{date}", now), end])
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in old and end in old:
        head, rest = old.split(start, 1)
        new = head + section + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n---\n\n" + section + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="zoom steps per image")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="process_size")
    parser.add_argument("--tokens", type=int, default=16, help="VLM max_new_tokens")
    parser.add_argument("--vlm-hidden", type=int, default=256)
    parser.add_argument("--vlm-layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    step_module.ModelPlacer = RecordingPlacer  # the engine builds its placer by this name
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=g) for _ in range(args.images)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vlm_dir = write_tiny_vlm(
            Path(tmp) / "vlm",
            hidden=args.vlm_hidden,
            layers=args.vlm_layers,
            vision_hidden=args.vlm_hidden // 2,
            max_pixels=112 * 112,
        )
        for memory in ("plain", "swap"):
            cache = Path(tmp) / f"{memory}.jsonl"
            for label in ("cold", "warm (2nd run)"):
                row = run_config(args, vlm_dir, cache, memory, images)
                rows.append(row | {"cache": label})
                print(rows[-1])
    cuda = args.device.startswith("cuda")
    result = table(rows, cuda)
    print(result)
    views = args.images * args.steps
    text = "\n".join(
        [
            "## Prompt-model offload: plain vs swap memory, cold vs warm prompt cache",
            "",
            "`benchmarks/bench_prompt_offload.py` (issue: prompt sources). A",
            f"`recursive_multiscale` chain, {args.images} images x {args.steps} steps"
            f" (P = {args.size}), SR3 backbone ({rows[0]['sr_mib']:.2f} MiB of weights) and",
            f"VLM prompts from a random-initialized Qwen2.5-VL ({rows[0]['vlm_mib']:.2f} MiB;",
            f"hidden {args.vlm_hidden}, {args.vlm_layers} layers, {args.tokens} new tokens).",
            "The counts are the chain's ModelPlacer's own placements (a recording subclass).",
            "",
            "- command: `{command}`",
            "- date: {date}",
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, device `{args.device}`,"
            f" torch {torch.__version__}, {args.threads} thread(s)",
            "",
            result,
            "",
            "Reading:",
            f"- A cold cache asks the VLM once per step's pair of views ({views} = images x",
            "  steps); the warm",
            "  second run asks it nothing, never loads it and so never moves it.",
            "- `plain` puts both models on the device once: peak = SR3 + VLM weights. `swap`",
            "  moves each model in for its call and out after it (2 moves per model per step),",
            "  so the peak is the larger of the two models, not their sum: the VLM and the SR",
            "  backbone need not fit the accelerator together. The price is the bytes moved",
            "  (PCIe copies on a GPU; free on this CPU run, where the device is the host).",
        ]
    )
    if not args.no_write:
        command = "python benchmarks/bench_prompt_offload.py " + " ".join(
            a for a in os.sys.argv[1:] if a != "--no-write"
        )
        write_results(text, command.strip())


if __name__ == "__main__":
    main()
