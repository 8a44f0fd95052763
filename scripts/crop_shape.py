#!/usr/bin/env python3
"""Which region of a dropped item classifies best: how much margin, and which shape.

Held-out photos of each dataset folder are laid in the synthetic bin's look
(``scripts/synthetic_bin.py``: the dark ribbed floor, the warm LED, the cheap camera), two ways:
the whole plain-board photo (as ``synthetic_bin.py`` and ``scripts/measure_learning.py`` do) and
the item cut out of its board (as an item lies in a real bin). Each is cropped around its known
box (no motion trigger: this is about the crop alone) grown by each margin and

* ``square``: widened to the model input's shape (what the agent did before 2026-12-06);
* ``own``: the box as it is, squashed into the input as the training photos were;
* ``within S``: widened only as far as needed to come within S times the input's shape
  (the agent now: ``bin_agent.classify.preprocess.ITEM_STRETCH``);

each region made by the agent's own ``bin_agent.geometry.crop_box`` (moved, not cut, at
the frame's edges) and classified by the model (all its views) as the agent classifies a region. Prints the share
right per source, way of laying, shape and margin.

    BIN_AGENT_SHARED=../shared python scripts/crop_shape.py ../shared/data/trashnet data/wcnn \\
        --split models/waste_split.json --subset val

Choose on ``val``; ``test`` is for reading once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from bin_agent.errors import run_script


def stretch_of(shape: str) -> float:
    """``crop_box``'s ``stretch`` for a shape named on the command line."""
    if shape == "square":
        return 1.0
    if shape == "own":
        return float("inf")
    return float(shape.split()[1])


def main() -> int:
    import synthetic_bin as sb  # beside this script: its directory is on sys.path

    from bin_agent.classify.classifier import Classifier
    from bin_agent.classify.preprocess import load_image
    from bin_agent.geometry import crop_box
    from bin_agent.training import dataset as ds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb.held_out_arguments(parser)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.0, 0.05, 0.15])
    parser.add_argument("--shapes", nargs="+", default=["square", "own", "within 2"], help="square, own, 'within S'")
    parser.add_argument(
        "--board-height",
        type=float,
        nargs=2,
        default=[0.55, 0.75],
        metavar=("LOW", "HIGH"),
        help="the board's height as a share of the frame's, drawn between these (default 0.55 0.75)",
    )
    args = parser.parse_args()

    size = (sb.WIDTH, sb.HEIGHT)
    classifier = Classifier.from_model_path(args.model, num_threads=2)
    document = ds.read_split(args.split)
    for root in args.datasets:
        items = ds.select(ds.list_dataset(root), ds.split_for(document, root, args.split), args.subset)
        rng = np.random.default_rng(args.seed)
        floor = sb.bin_floor(rng)
        right: dict[tuple[str, str, float], int] = {}
        studio = 0
        for number, item in enumerate(items, 1):
            photo = load_image(item.path)
            truth = ds.CLASSES[item.label]
            studio += classifier.classify(photo).label == truth
            # The board 55-75 % of the frame high by default, as synthetic_bin.bin_photo lays it.
            board = sb.scaled_board(photo, rng, tuple(args.board_height))
            cut, alpha = sb.cut_out(board)
            for way, layer, layer_alpha in (
                ("board", board, np.ones(board.shape[:2], np.float32)),
                ("cut out", cut, alpha),
            ):
                frame, box = lay(sb, floor, layer.astype(np.float32), layer_alpha, rng)
                for shape in args.shapes:
                    for margin in args.margins:
                        left, top, right_px, bottom = crop_box(size, box, margin, stretch=stretch_of(shape))
                        label = classifier.classify(np.ascontiguousarray(frame[top:bottom, left:right_px])).label
                        key = (way, shape, margin)
                        right[key] = right.get(key, 0) + (label == truth)
            if number % 100 == 0:
                print(f"  {root.name}: {number}/{len(items)}", file=sys.stderr, flush=True)
        n = len(items)
        low, high = args.board_height
        print(
            f"{root.name}, {args.subset} ({n} photos), boards {low:g}-{high:g} of the frame high: "
            f"the photos themselves {studio / n:.3f}"
        )
        print("  laid as   shape      " + "  ".join(f"margin {m:<5g}" for m in args.margins))
        for way in ("board", "cut out"):
            for shape in args.shapes:
                cells = "  ".join(f"{right[(way, shape, m)] / n:<12.3f}" for m in args.margins)
                print(f"  {way:<8}  {shape:<9}  {cells}")
    return 0


def lay(sb: Any, floor: np.ndarray, layer: np.ndarray, alpha: np.ndarray, rng: np.random.Generator) -> tuple:
    """``layer`` (with ``alpha``) at a random place on the floor, under the bin's light, through
    its camera; and the box of what is opaque, as fractions of the frame."""
    out = floor.copy()
    h, w = layer.shape[:2]
    x, y = int(rng.uniform(0, sb.WIDTH - w)), int(rng.uniform(0, sb.HEIGHT - h))
    lit = layer * sb.LED_CAST * sb.light_on_item(out[y : y + h, x : x + w])
    a = alpha[..., None]
    out[y : y + h, x : x + w] = a * lit + (1 - a) * out[y : y + h, x : x + w]
    rows, cols = np.flatnonzero(alpha.max(axis=1) > 0.5), np.flatnonzero(alpha.max(axis=0) > 0.5)
    box = (x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1)
    return sb.camera(out, rng), (box[0] / sb.WIDTH, box[1] / sb.HEIGHT, box[2] / sb.WIDTH, box[3] / sb.HEIGHT)


if __name__ == "__main__":
    run_script(main)
