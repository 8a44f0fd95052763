#!/usr/bin/env python3
"""Size and encode time of the unsure item's photo on ``<prefix>/<bin_id>/unsure/image``.

:func:`bin_agent.ask.small_jpeg` encodes the crop while the item starts to wait (in the
main loop, before the lamps' wait begins). This prints, for photos resized to the
camera's frame (640x480) and to the model's crop (224x224), the JPEG's median and
largest size against the ``image_max_bytes`` cap and the median and slowest encode
time.

    python scripts/bench_unsure_jpeg.py [PHOTO_FOLDER] [--photos 60] [--max-bytes 20000]

``PHOTO_FOLDER`` defaults to ``../shared/data/trashnet`` beside the checkout.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent.ask import small_jpeg
from bin_agent.errors import run_script

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=REPO.parent / "shared" / "data" / "trashnet")
    parser.add_argument("--photos", type=int, default=60, help="photos taken evenly from the folder")
    parser.add_argument("--max-bytes", type=int, default=20000, help="[ask] image_max_bytes")
    args = parser.parse_args()
    every = sorted(args.folder.rglob("*.jpg"))
    if not every:
        raise SystemExit(f"no .jpg under {args.folder}")
    photos = every[:: max(1, len(every) // args.photos)][: args.photos]
    for name, size in (("640x480 frame", (640, 480)), ("224x224 crop", (224, 224))):
        sizes, times = [], []
        for path in photos:
            image = np.asarray(Image.open(path).convert("RGB").resize(size))
            started = time.perf_counter()
            sizes.append(len(small_jpeg(image, args.max_bytes)))
            times.append((time.perf_counter() - started) * 1000.0)
        print(
            f"{name}: {len(photos)} photos, JPEG median {statistics.median(sizes) / 1000:.1f} kB, "
            f"largest {max(sizes) / 1000:.1f} kB (cap {args.max_bytes / 1000:.1f} kB); "
            f"encode median {statistics.median(times):.1f} ms, slowest {max(times):.1f} ms"
        )


if __name__ == "__main__":
    run_script(main)
