"""``zoomsr <command>``: the project's utility commands (training and evaluation are the root
scripts ``train.py``, ``evaluate.py`` and ``infer.py``).

Each command lives in its own module and exposes ``main(argv: list[str]) -> int | None``; it is
imported only when it runs, so ``zoomsr --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: name -> (module exposing ``main(argv)``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "weights": ("zoomsr.metrics.weights", "metric weight files: present, missing, where each goes"),
    "compare": ("zoomsr.reporting", "merge evaluation runs (metrics.json): one table and plot"),
    "import-coz": ("zoomsr.interop.coz", "Chain-of-Zoom's released SR LoRA -> a zoomsr checkpoint"),
    "import-iter": ("zoomsr.interop.iter", "ITER's released x2/x4 weights -> a zoomsr checkpoint"),
    "import-sr3": (
        "zoomsr.interop.sr3",
        "Janspiry's released SR3 checkpoint -> a zoomsr checkpoint",
    ),
    "import-spandrel": (
        "zoomsr.interop.spandrel",
        "a network spandrel detects -> a zoomsr checkpoint",
    ),
    "import-var": (
        "zoomsr.interop.var",
        "VAR's released VQVAE tokenizer -> zoomsr tokenizer files",
    ),
    "prompts": ("zoomsr.prompts.precompute", "precompute the prompts of an image folder (cache)"),
    "ui": ("zoomsr.ui.__main__", "web UI: Chain-of-Zoom in the browser (127.0.0.1:7860)"),
}


def usage() -> str:
    width = max((len(n) for n in COMMANDS), default=8)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in sorted(COMMANDS.items())]
    return "usage: zoomsr <command> [args...]   (zoomsr <command> --help)\n\ncommands:\n" + (
        "\n".join(lines) or "  (none)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"zoomsr: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
