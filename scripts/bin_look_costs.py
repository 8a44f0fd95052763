#!/usr/bin/env python3
"""What of the synthetic bin's look costs accuracy: each part of it taken away in turn.

Held-out photos of each dataset folder are laid in the synthetic bin (``scripts/synthetic_bin.py``:
the dark ribbed floor, the warm LED, the cheap camera) as ``scripts/crop_shape.py`` lays them, the
whole board and the item cut out of it, and the item's own box (no margin, within 2:1, the agent's
``bin_agent.geometry.crop_box``) is classified by the model with all its views. The same frame is
then rendered again without one part of the look (the same place, the same noise):

* ``no cast``: the LED's warm colour (``synthetic_bin``'s red 1.1, blue 0.8 gains) left out;
* ``no dim``: the item gets the full light everywhere, instead of the floor's light under it
  (0.5-1.2 of it, uneven: the spot, the floor's ribs);
* ``no cast, no dim``: both;
* ``no noise/JPEG``: the camera's sensor noise and JPEG 75 left out;
* ``white floor``: an even white floor, no cast, no dim (the crop and the camera alone);

and two corrections of the whole look's crop are tried at classification time: ``gain`` (the crop
brightened until its 97th luminance percentile reaches 200, at most 2.5 times) and ``grey 0.5``
(half of a grey-world white balance). Prints the share right per way of laying and variant.

    BIN_AGENT_SHARED=../shared python scripts/bin_look_costs.py ../shared/data/trashnet data/wcnn \\
        --split models/waste_split.json --subset val [--model M] [--per-class] [--save-misses DIR]

``--per-class`` adds the share right per class on the white floor (where only the crop and the
cut-out differ from the photo); ``--save-misses`` writes the photos whose cut-out it got wrong,
to look at what the cut-out did to them.

Choose on ``val``; ``test`` is for reading once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bin_agent.errors import run_script

VARIANTS = ("whole look", "no cast", "no dim", "no cast, no dim", "no noise/JPEG", "white floor", "gain", "grey 0.5")


def gain(crop: np.ndarray, target: float = 200.0, most: float = 2.5) -> np.ndarray:
    """The crop brightened until its 97th luminance percentile reaches ``target`` (at most ``most`` x)."""
    level = float(np.percentile(crop.astype(np.float32).mean(axis=2), 97))
    factor = min(most, max(1.0, target / max(level, 1.0)))
    return np.clip(crop.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def grey_world(crop: np.ndarray, strength: float = 0.5) -> np.ndarray:
    """``strength`` of a grey-world white balance (each channel's mean towards the crop's grey)."""
    values = crop.astype(np.float32)
    means = values.reshape(-1, 3).mean(axis=0)
    gains = (means.mean() / np.maximum(means, 1.0)) ** strength
    return np.clip(values * gains, 0, 255).astype(np.uint8)


def main() -> int:
    import synthetic_bin as sb  # beside this script: its directory is on sys.path

    from bin_agent.classify.classifier import Classifier
    from bin_agent.classify.preprocess import load_image
    from bin_agent.geometry import crop_box
    from bin_agent.training import dataset as ds

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb.held_out_arguments(parser)
    parser.add_argument(
        "--per-class", action="store_true", help="also the share right per class, for the photos and the white floor"
    )
    parser.add_argument(
        "--save-misses",
        type=Path,
        metavar="DIR",
        help="write up to 24 items whose photo is right and whose cut-out on the white floor is wrong: "
        "the photo beside the crop classified (PNG; never commit them: they are dataset photos)",
    )
    args = parser.parse_args()
    if args.save_misses is not None:
        args.save_misses.mkdir(parents=True, exist_ok=True)

    size = (sb.WIDTH, sb.HEIGHT)
    classifier = Classifier.from_model_path(args.model, num_threads=2)
    document = ds.read_split(args.split)
    white = np.full((sb.HEIGHT, sb.WIDTH, 3), 235.0, np.float32)
    for root in args.datasets:
        items = ds.select(ds.list_dataset(root), ds.split_for(document, root, args.split), args.subset)
        rng = np.random.default_rng(args.seed)
        floor = sb.bin_floor(rng)
        right: dict[tuple[str, str], int] = {}
        by_class: dict[tuple[str, str], int] = {}  # (class, "photo" | way) -> right, on the white floor
        counts: dict[str, int] = {}
        studio = saved = 0
        for number, item in enumerate(items, 1):
            photo = load_image(item.path)
            truth = ds.CLASSES[item.label]
            photo_right = classifier.classify(photo).label == truth
            studio += photo_right
            counts[truth] = counts.get(truth, 0) + 1
            by_class[(truth, "photo")] = by_class.get((truth, "photo"), 0) + photo_right
            board = sb.scaled_board(photo, rng)
            cut, alpha = sb.cut_out(board)
            for way, layer, layer_alpha in (
                ("board", board, np.ones(board.shape[:2], np.float32)),
                ("cut out", cut, alpha),
            ):
                crops = look_variants(sb, floor, white, layer.astype(np.float32), layer_alpha, rng, size, crop_box)
                for variant, crop in crops.items():
                    label = classifier.classify(np.ascontiguousarray(crop)).label
                    right[(way, variant)] = right.get((way, variant), 0) + (label == truth)
                    if variant != "white floor":
                        continue
                    by_class[(truth, way)] = by_class.get((truth, way), 0) + (label == truth)
                    if args.save_misses and way == "cut out" and photo_right and label != truth and saved < 24:
                        side = [np.asarray(Image.fromarray(view).resize((240, 180))) for view in (photo, crop)]
                        name = f"{saved:02d}-{Path(item.path).stem}-as-{label}.png"
                        Image.fromarray(np.concatenate(side, axis=1)).save(args.save_misses / name)
                        saved += 1
            if number % 100 == 0:
                print(f"  {root.name}: {number}/{len(items)}", file=sys.stderr, flush=True)
        n = len(items)
        print(f"{root.name}, {args.subset} ({n} photos): the photos themselves {studio / n:.3f}")
        for way in ("board", "cut out"):
            print(f"  {way:<8} " + ", ".join(f"{v} {right[(way, v)] / n:.3f}" for v in VARIANTS), flush=True)
        if args.per_class:
            print("  per class: photos / board on the white floor / cut out on the white floor")
            for name in sorted(counts):
                shares = [by_class.get((name, key), 0) / counts[name] for key in ("photo", "board", "cut out")]
                print(f"    {name:<10} {counts[name]:4d}  " + " / ".join(f"{share:.2f}" for share in shares))
    return 0


def look_variants(
    sb: Any,
    floor: np.ndarray,
    white: np.ndarray,
    layer: np.ndarray,
    alpha: np.ndarray,
    rng: np.random.Generator,
    size: tuple[int, int],
    crop_box: Callable[..., tuple[int, int, int, int]],
) -> dict[str, np.ndarray]:
    """The item's crop under the whole look and under each variant (the same place and noise)."""
    height, width = layer.shape[:2]
    x, y = int(rng.uniform(0, size[0] - width)), int(rng.uniform(0, size[1] - height))
    noise_seed = int(rng.integers(1 << 30))
    rows, cols = np.flatnonzero(alpha.max(axis=1) > 0.5), np.flatnonzero(alpha.max(axis=0) > 0.5)
    box = (
        (x + cols[0]) / size[0],
        (y + rows[0]) / size[1],
        (x + cols[-1] + 1) / size[0],
        (y + rows[-1] + 1) / size[1],
    )
    left, top, right, bottom = crop_box(size, box, 0.0, stretch=2.0)

    def render(cast: bool = True, dim: bool = True, noisy: bool = True, under: np.ndarray = floor) -> np.ndarray:
        out = under.copy()
        lit = layer * sb.LED_CAST if cast else layer.copy()
        if dim:  # synthetic_bin.bin_photo: the floor's light under the item
            lit *= sb.light_on_item(out[y : y + height, x : x + width])
        a = alpha[..., None]
        out[y : y + height, x : x + width] = a * lit + (1 - a) * out[y : y + height, x : x + width]
        frame = sb.camera(out, np.random.default_rng(noise_seed), noisy)
        return frame[top:bottom, left:right]

    whole = np.ascontiguousarray(render())
    return {
        "whole look": whole,
        "no cast": render(cast=False),
        "no dim": render(dim=False),
        "no cast, no dim": render(cast=False, dim=False),
        "no noise/JPEG": render(noisy=False),
        "white floor": render(cast=False, dim=False, under=white),
        "gain": gain(whole),
        "grey 0.5": grey_world(whole),
    }


if __name__ == "__main__":
    run_script(main)
