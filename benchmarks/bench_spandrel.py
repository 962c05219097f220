"""Framework overhead of backbone=spandrel: time per image through zoomsr vs bare spandrel.

For each network (random weights of spandrel's own architecture classes: the speed is real, the
pictures are not), the same ``P/u`` input goes through

- ``bare``: spandrel's ``ImageModelDescriptor(image)``, what a user of spandrel alone writes;
- ``step``: the zoom engine's step (``ChainEngine.run_model``: the memory placer, tiling
  check, and ``Backbone.upscale``'s padding, eval mode and clamp) around spandrel's call;
- ``chain``: a whole one-step ``ChainEngine`` (``rec_type=recursive``) on a ``P x P`` image:
  the view arithmetic, resize and crop of Chain-of-Zoom around the same step.

The ratio is each path's best time (of ``--repeats``, run round-robin) over ``bare``'s, in
the same run. The tiny RRDBNet costs almost nothing itself, so its row bounds the framework's
own cost per call (in ms) from above.

    python benchmarks/bench_spandrel.py                     # CPU, ~1-2 min
    python benchmarks/bench_spandrel.py --device cuda --size 512 --repeats 20
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch


def _random(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net


def build_models(folder: Path) -> dict[str, Path]:
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    rrdb = _random(ESRGAN(num_filters=32, num_blocks=4, scale=4), 0)
    swin = _random(
        SwinIR(img_size=48, embed_dim=60, depths=[4, 4], num_heads=[6, 6], window_size=8,
               mlp_ratio=2.0, upscale=4, upsampler="pixelshuffledirect"),
        1,
    )  # fmt: skip
    # a network that costs almost nothing: what is left of its time is the framework's
    tiny = _random(ESRGAN(num_filters=4, num_blocks=1, scale=4), 2)
    rrdb_path, swin_path = folder / "rrdb.pth", folder / "swinir.safetensors"
    torch.save(tiny.state_dict(), folder / "tiny.pth")
    torch.save(rrdb.state_dict(), rrdb_path)
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, str(swin_path))
    return {
        "RRDBNet, tiny (4 ch, 1 block, x4)": folder / "tiny.pth",
        "RRDBNet (32 ch, 4 blocks, x4)": rrdb_path,
        "SwinIR light (60 ch, 2x4 blocks, x4)": swin_path,
    }


def best_times(fns: dict, repeats: int, sync) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each function, run in turn (round-robin), so that
    load from other processes on a shared machine hits every path alike; the minimum is the
    time least disturbed by it."""
    for fn in fns.values():  # warm-up
        fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def bench(path: Path, size: int, repeats: int, device: str) -> dict[str, float]:
    import spandrel

    from zoomsr.backbones.spandrel import Spandrel
    from zoomsr.zoom.chain import ChainEngine

    net = Spandrel(str(path)).to(device).eval()
    u = net.scale
    bare = spandrel.ModelLoader().load_from_file(str(path)).to(device).eval()
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    view = torch.rand(1, 3, size // u, size // u, generator=torch.Generator().manual_seed(1))
    view = view.to(device)
    chain = ChainEngine(rec_type="recursive", steps=1, process_size=size, seed=0, backbone=net,
                        device=device)  # fmt: skip
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        fns = {
            "bare": lambda: bare(view),
            "step": lambda: chain.run_model(view, None, None, upsampled=False),
            "chain": lambda: chain.run(image, "bench"),
        }
        out = best_times(fns, repeats, sync)
        same = torch.equal(bare(view), chain.run_model(view, None, None, upsampled=False))
    out["same"] = float(same)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256, help="P: the chain's working square")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build_models(Path(tmp)).items():
            r = bench(path, args.size, args.repeats, args.device)
            rows.append(
                f"| {name} | {args.size // 4} -> {args.size} | {r['bare'] * 1e3:.1f} | "
                f"{r['step'] * 1e3:.1f} ({r['step'] / r['bare']:.3f}x) | "
                f"{r['chain'] * 1e3:.1f} ({r['chain'] / r['bare']:.3f}x) | "
                f"{'yes' if r['same'] else 'NO'} |"
            )
    threads = f" --threads {args.threads}" if args.threads else ""
    print(f"- command: `python benchmarks/bench_spandrel.py --size {args.size} --repeats "
          f"{args.repeats} --device {args.device}{threads}`")  # fmt: skip
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- machine: {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device `{args.device}`")  # fmt: skip
    print()
    print("| network | LR -> SR px | bare spandrel ms (best) | zoom step ms (ratio) | "
          "one-step chain ms (ratio) | step output == bare |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
