"""``zoomsr ui`` / ``python -m zoomsr.ui``: the web UI on http://127.0.0.1:7860."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="zoomsr ui",
        description="Chain-of-Zoom in the browser with any zoomsr backbone (gradio).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio share link (off)"
    )
    p.add_argument(
        "--ckpt", action="append", default=[], metavar="PATH",
        help="a checkpoint to offer (repeatable); *.ckpt under --runs are offered too",
    )  # fmt: skip
    p.add_argument("--runs", default="runs", help="folder searched for *.ckpt (default runs/)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (16)")
    p.add_argument("--workdir", default=None, help="where requests write (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    from zoomsr.tasks.common import set_offline_defaults

    set_offline_defaults()
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from zoomsr.errors import ZoomSRError
    from zoomsr.ui import engine
    from zoomsr.ui.app import ZoomUI
    from zoomsr.ui.page import THEME, build

    try:
        from zoomsr.tasks.common import resolve_device

        resolve_device(args.device)
        engine.conf_dir()
    except ZoomSRError as err:
        print(f"zoomsr error: {err}", file=sys.stderr)
        return 2
    backbones = engine.list_backbones(args.ckpt, args.runs)
    for c in backbones:
        print(f"[zoomsr ui] backbone: {c.label}" + (f"  ({c.error})" if c.error else ""))
    ui = ZoomUI(backbones, root=args.workdir, device=args.device)
    demo = build(ui)
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
    print(f"[zoomsr ui] requests write under {ui.root}")
    try:
        demo.launch(
            server_name=args.host, server_port=args.port, share=args.share, show_error=True,
            theme=THEME, ssr_mode=False, max_file_size="200mb", allowed_paths=[str(ui.root)],
            footer_links=["api"],
        )  # fmt: skip
    except OSError as err:  # port in use
        print(f"zoomsr error: cannot serve on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    finally:
        if args.workdir is None:
            shutil.rmtree(ui.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
