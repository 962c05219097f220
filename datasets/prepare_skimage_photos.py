"""Export scikit-image's bundled photos to the folders the quickstart trains on.

    python datasets/prepare_skimage_photos.py [--root data/skimage_photos] [--overwrite]

Writes ``ROOT/train`` (11 photos) and ``ROOT/val`` (3 held-out photos) as PNGs; the split and
the choice of photos are documented in ``zoomsr.data.photos``. No download: the photos ship
inside the scikit-image package. Training does the same export itself when the folder is
missing (``data=skimage_photos``), so this script is only for using the folders elsewhere, e.g.
``python evaluate.py backbone=bicubic data=folder data.hr_dir=ROOT/val scales=[4]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from zoomsr.data.photos import export_photos, photo_names


def main() -> None:
    default_root = Path(os.environ.get("ZOOMSR_ROOT", ".")) / "data" / "skimage_photos"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(default_root), help=f"default: {default_root}")
    parser.add_argument("--overwrite", action="store_true", help="rewrite existing files")
    args = parser.parse_args()
    folders = export_photos(args.root, overwrite=args.overwrite)
    for split, folder in folders.items():
        names = photo_names(split)
        print(f"{split}: {len(names)} photos in {folder} ({', '.join(names)})")


if __name__ == "__main__":
    main()
