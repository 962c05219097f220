"""The cost of ITER's refinement: a release-size ITER (Swin-VQGAN 512 x 128 codes, LQ encoder,
SwinModel refiner and evaluator of 4 x 6 Swin blocks; random weights, the same layers and sizes
as ITER_x2 / ITER_x4) on a 64 x 64 LR image, full sampling at T = 8 (``ITER.upscale``) against
the same model's single LQ-encoder pass (``stage=token_pred``'s inference: LQ tokens decoded).

The release sampling runs the evaluator once on the LQ tokens, then up to T passes of refiner
+ evaluator; with random weights the evaluator trusts few tokens at alpha = 0.7, so all 8
passes run (the most expensive case; a trained evaluator trusts more and skips early passes).

    python benchmarks/bench_iter.py --scale 4 --repeats 2 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def timed(fn, repeats: int) -> tuple[float, float, float, float]:
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), min(wall), max(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, choices=[2, 4])
    parser.add_argument("--size", type=int, default=64, help="LR side")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from zoomsr.backbones.iter import ITER

    model = ITER(scale=args.scale, seed=0).eval()  # release sizes, random weights
    lr = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.lq_logits(lr)
        passes = int(model.sample(logits)["passes"][0])

    def lq_only():
        with torch.no_grad():
            model.vqgan.decode_indices(model.lq_tokens(lr))

    def encoder_only():
        with torch.no_grad():
            model.lq_tokens(lr)

    def full():
        model.upscale(lr)

    rows = [
        ("LQ encoder pass (tokens only)", timed(encoder_only, args.repeats)),
        ("LQ encoder + VQGAN decode (stage token_pred)", timed(lq_only, args.repeats)),
        (f"ITER sampling T=8 ({passes} passes) + decode", timed(full, args.repeats)),
    ]
    base = rows[1][1][0]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"- command: `python benchmarks/bench_iter.py --scale {args.scale} --size {args.size} "
        f"--repeats {args.repeats} --threads {args.threads}`"
    )
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}; model x{args.scale}, {params:.1f} M parameters, "
        f"{args.size}x{args.size} LR -> {logits.shape[-1]}x{logits.shape[-2]} tokens"
    )
    print()
    print("| path | wall s (median) | min-max | CPU s | x LQ + decode |")
    print("|---|---|---|---|---|")
    for name, (med, lo, hi, cpu) in rows:
        print(f"| {name} | {med:.2f} | {lo:.2f}-{hi:.2f} | {cpu:.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
