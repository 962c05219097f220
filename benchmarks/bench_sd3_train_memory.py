"""Peak memory and time of one ``experiment=coz_lora`` training step at SD3-medium's real shapes,
zoomsr's design against Chain-of-Zoom's (a separate transformer copy for the generator, the real
and the fake score), both measured.

  python benchmarks/bench_sd3_train_memory.py --size 512 --repeats 3
  python benchmarks/bench_sd3_train_memory.py --size 512 --text-encoders keep

1. ``write``: SD3-medium's transformer, VAE and both CLIP encoders from their published configs
   (random weights, transformer and CLIPs in bf16, VAE in fp32; no T5, ``use_t5=false``), saved
   as a diffusers folder (tokenizers and scheduler from zoomsr's tiny SD3 folder; the token ids
   they give are valid for the real vocabularies).
2. ``measure`` (a fresh process per run): ``SD3LoRA`` loads that folder through its real path
   with coz_lora's settings (``vsd=true``, bf16 weights, ``vae_dtype=bfloat16``, gradient
   checkpointing of the transformer and the VAE, ``text_encoders=on_demand``, its adapters),
   then one step: the generator, VSD with the guided real score (CFG 7.5, negative prompt), the
   regularizer's loss, L2 + LPIPS (random VGG: same shapes), backward and AdamW, under bf16
   autocast as ``trainer.precision=bf16-mixed``. Reports the peak RSS (``ru_maxrss``), the peak
   of each phase (a 20 ms sampler) and the times.
3. ``--design coz`` runs the same step on CoZ's layout (``osediff_sd3.py``): ``transformer_gen``
   and ``transformer_reg`` deep-copied from the frozen ``transformer_org``, each pass on its own
   copy. ``both`` (default) alternates the two designs, ``--repeats`` times each, and prints the
   ratio of the median peaks and whether the losses agree bit for bit.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from zoomsr.backbones.sd3_medium import CLIP_G, CLIP_L, TRANSFORMER, VAE

GB = 1e9


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


class PhasePeaks:
    """Peak resident memory per phase of the step, sampled every 20 ms by a thread
    (``ru_maxrss`` gives only the process's overall peak); ``stop()`` ends the sampling."""

    def __init__(self) -> None:
        self.phase, self.peaks = "build", {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss_gb())

    def _watch(self) -> None:
        while not self._stopped.wait(0.02):
            self._record()

    def enter(self, phase: str) -> None:
        self._record()
        self.phase = phase

    def stop(self) -> dict[str, float]:
        self._record()
        self._stopped.set()
        self._thread.join()
        return {k: round(v, 3) for k, v in self.peaks.items()}


def coz_design(backbone):
    """CoZ's design on zoomsr's step: ``transformer_gen`` and ``transformer_reg`` deep-copied from
    the frozen ``transformer_org`` (``osediff_sd3.py``), each pass on its own copy: the
    generator on ``gen`` (generator adapter), the real score on ``org`` (adapters off), the fake
    score and the regularizer's loss on ``reg`` (regularizer adapter). Same math, 2 more copies."""
    from zoomsr.backbones.sd3_lora import GENERATOR, REGULARIZER

    org = backbone.transformer
    # memo: the checkpoint function is a method of the backbone; copy the blocks, not it.
    gen, reg = (copy.deepcopy(org, memo={id(backbone): backbone}) for _ in range(2))
    for net, keep in ((gen, GENERATOR), (reg, REGULARIZER)):
        for module in net.modules():
            if hasattr(module, "_active_adapter") and hasattr(module, "_disable_adapters"):
                module._active_adapter, module._disable_adapters = [keep], False
        for name, p in net.named_parameters():
            p.requires_grad_(f".{keep}." in name)
    for p in org.parameters():
        p.requires_grad_(False)
    copies = {GENERATOR: gen, REGULARIZER: reg, None: org}
    plain_velocity = type(backbone).velocity

    def velocity(z, t, emb, pooled):
        backbone._modules["transformer"] = copies[backbone._adapter_state]
        try:
            return plain_velocity(backbone, z, t, emb, pooled)
        finally:
            backbone._modules["transformer"] = org

    backbone.velocity = velocity
    return [p for net in (gen, reg) for p in net.parameters() if p.requires_grad] + [
        p for n, p in backbone.vae.named_parameters() if p.requires_grad
    ]


def measure(
    folder: Path,
    size: int,
    text_encoders: str,
    vae_checkpointing: bool,
    design: str,
    vae_dtype: str,
) -> None:
    """One coz_lora training step; prints JSON with peak RSS (per phase and overall) and times."""
    from zoomsr.backbones.sd3_lora import SD3LoRA
    from zoomsr.losses.lpips import LPIPSLoss
    from zoomsr.losses.pixel import PixelLoss
    from zoomsr.losses.vsd import RegularizerLoss, VSDLoss

    peaks = PhasePeaks()
    t0 = time.perf_counter()
    backbone = SD3LoRA(
        pretrained=str(folder), use_t5=False, max_sequence_length=77, vsd=True,
        weight_dtype="bfloat16", vae_dtype=vae_dtype, gradient_checkpointing=True,
        text_encoders=text_encoders,
    )  # fmt: skip
    if not vae_checkpointing:  # the transformer's checkpointing only (zoomsr before issue 17)
        backbone.vae.disable_gradient_checkpointing()
    vsd = VSDLoss()
    terms = [PixelLoss("l2", "sr", "hr"), LPIPSLoss(pred="sr", target="hr", weight=2.0,
             random_backbone=True), vsd, RegularizerLoss()]  # fmt: skip
    params = [p for p in backbone.parameters() if p.requires_grad]
    if design == "coz":
        params = coz_design(backbone)
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=1e-2)
    built, rss_built = time.perf_counter() - t0, rss_gb()
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, size // 4, size // 4, generator=g)
    hr = torch.rand(1, 3, size, size, generator=g)
    t1 = time.perf_counter()
    peaks.enter("forward")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = backbone.training_outputs(lr, hr, ["a photo of a brick wall"],
                                        seeds=torch.tensor([0]), vsd=vsd.settings)  # fmt: skip
        loss = torch.stack([t(out) for t in terms]).sum()
    forward = time.perf_counter() - t1
    peaks.enter("backward")
    loss.backward()
    peaks.enter("optimizer")
    opt.step()
    phase_peaks = peaks.stop()
    step = time.perf_counter() - t1
    n_tr = sum(p.numel() for n, p in backbone.transformer.named_parameters() if ".lora_" not in n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    print(json.dumps({
        "design": design, "size": size, "text_encoders": text_encoders, "vae_dtype": vae_dtype,
        "vae_checkpointing": vae_checkpointing,
        "loss": float(loss), "build_s": built, "forward_s": forward,
        "step_s": step, "rss_after_build_gb": rss_built, "peak_rss_gb": peak,
        "phase_peak_rss_gb": phase_peaks,
        "transformer_params": n_tr, "trained_params": sum(p.numel() for p in params),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=Path("/tmp/sd3_medium_random"))
    ap.add_argument("--size", type=int, default=512, help="HR crop side (coz_lora: 512)")
    ap.add_argument("--phase", choices=["all", "write", "measure"], default="all")
    ap.add_argument(
        "--text-encoders",
        choices=["keep", "on_demand"],
        default="on_demand",
        help="backbone.text_encoders (on_demand: CLIPs freed once prompts are cached)",
    )
    ap.add_argument(
        "--design",
        choices=["zoomsr", "coz", "both"],
        default="both",
        help="coz: three transformer copies (gen, org, reg) as CoZ's osediff_sd3.py; "
        "both: each in a fresh process, and their ratio",
    )
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per design (median)")
    ap.add_argument(
        "--vae-dtype",
        choices=["float32", "bfloat16"],
        default="bfloat16",
        help="backbone.vae_dtype (coz_lora: bfloat16)",
    )
    ap.add_argument(
        "--no-vae-checkpointing",
        dest="vae_checkpointing",
        action="store_false",
        help="checkpoint the transformer only (zoomsr before issue 17)",
    )
    args = ap.parse_args()
    if args.phase == "write":
        return write(args.folder)
    if args.phase == "measure":
        return measure(args.folder, args.size, args.text_encoders, args.vae_checkpointing,
                       args.design, args.vae_dtype)  # fmt: skip
    me = [sys.executable, __file__, "--folder", str(args.folder), "--size", str(args.size),
          "--text-encoders", args.text_encoders, "--vae-dtype", args.vae_dtype]  # fmt: skip
    if not args.vae_checkpointing:
        me.append("--no-vae-checkpointing")
    if not (args.folder / "transformer" / "config.json").is_file():
        subprocess.run([*me, "--phase", "write"], check=True)
    runs: dict[str, list[dict]] = {}
    designs = ["zoomsr", "coz"] if args.design == "both" else [args.design]
    for _ in range(args.repeats):  # designs alternate: a slow drift of the machine hits both
        for design in designs:
            cmd = [*me, "--design", design, "--phase", "measure"]
            run = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs.setdefault(design, []).append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[design][-1], indent=1), flush=True)
    summary = {}
    for design, results in runs.items():
        peaks = [r["peak_rss_gb"] for r in results]
        summary[design] = {
            "median_peak_rss_gb": statistics.median(peaks),
            "min_gb": min(peaks),
            "max_gb": max(peaks),
            "median_step_s": statistics.median(r["step_s"] for r in results),
        }
    if len(runs) == 2:
        summary["ratio_zoomsr_over_coz"] = (
            summary["zoomsr"]["median_peak_rss_gb"] / summary["coz"]["median_peak_rss_gb"]
        )
        # The same step bit for bit: the designs differ only in where the weights live.
        summary["same_loss"] = len({r["loss"] for rs in runs.values() for r in rs}) == 1
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
