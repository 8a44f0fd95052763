"""Make "one particular bin" out of plain-board photos, to measure the learning loop.

Every photo (the board with its item) is laid on the same kind of scene: a
dark, ribbed plastic bin floor under a warm LED spot, seen by a cheap camera
(640x480, colour cast, under-exposure, sensor noise, JPEG 75), the board 55-75 %
of the frame high at a random place. The look is fixed, like one real bin; the
training augmentation's random backgrounds and camera effects only roughly
cover it.

    python scripts/synthetic_bin.py ../shared/data/trashnet --split models/waste_split.json \
        --subset test --out /tmp/exp/binsrc

Writes folder-per-class JPEGs (never commit them: they are TrashNet photos).

``--one-floor`` lays every photo on the *same* floor and light (one bin, as
``bin-agent run`` sees it: the motion trigger compares with the empty bin) and
writes that empty bin as ``empty.jpg`` beside the class folders (for
``camera.replay.empty_frame``); ``--flat`` writes ``<class>__<name>.jpg`` in
one folder, so an event's ``source`` names the true class.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent.classify.preprocess import load_image
from bin_agent.training import dataset as ds

WIDTH, HEIGHT = 640, 480


def bin_floor(rng: np.random.Generator) -> np.ndarray:
    """The bin's floor: dark blue-grey plastic with ribs, a warm light spot, a vignette."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ribs = 0.5 + 0.5 * np.sin(x / 9.0 + rng.uniform(0, 6.28))
    base = np.array([52, 58, 66], np.float32) + 10 * ribs[..., None]
    cx, cy = WIDTH * rng.uniform(0.4, 0.6), HEIGHT * rng.uniform(0.35, 0.55)
    spot = np.exp(-(((x - cx) / 260) ** 2 + ((y - cy) / 200) ** 2))[..., None]
    floor = base * (0.55 + 0.8 * spot) + rng.normal(0, 3, (HEIGHT, WIDTH, 1))
    return floor


def camera(out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The cheap camera: sensor noise, JPEG 75."""
    out = out + rng.normal(0, 4.0, out.shape)
    pixels = np.clip(np.round(out), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def bin_photo(photo: np.ndarray, rng: np.random.Generator, floor: np.ndarray | None = None) -> np.ndarray:
    """The photo as the bin's camera sees it: the board with its item lies on the bin's
    floor (``floor``, else a new one), 55-75 % of the frame high (at most 95 % wide), under the warm LED,
    through a cheap camera."""
    factor = rng.uniform(0.55, 0.75) * HEIGHT / photo.shape[0]
    # A panorama-shaped photo (other datasets than TrashNet's 4:3) is shrunk to fit the frame.
    factor = min(factor, 0.95 * WIDTH / photo.shape[1])
    size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    tray = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR), np.float32)
    out = bin_floor(rng) if floor is None else floor.copy()
    x = int(rng.uniform(0, WIDTH - size[0]))
    y = int(rng.uniform(0, HEIGHT - size[1]))
    # The light falls on the tray too: warm cast, under-exposed, brighter under the spot.
    light = out[y : y + size[1], x : x + size[0]].mean(axis=-1, keepdims=True) / 70.0
    out[y : y + size[1], x : x + size[0]] = tray * np.array([1.1, 0.97, 0.8], np.float32) * np.clip(light, 0.5, 1.2)
    return camera(out, rng)


def make_bin(items: list[ds.Item], out: Path, *, seed: int = 7, one_floor: bool = False, flat: bool = False) -> int:
    """Write the bin's view of ``items`` under ``out`` (see the module doc); returns how many."""
    rng = np.random.default_rng(seed)
    floor = bin_floor(rng) if one_floor else None
    out.mkdir(parents=True, exist_ok=True)
    if floor is not None:
        Image.fromarray(camera(floor, rng)).save(out / "empty.jpg", quality=95)
    for item in items:
        made = bin_photo(load_image(item.path), rng, floor)
        class_name, name = item.key.split("/", 1)
        target = out / f"{class_name}__{Path(name).stem}.jpg" if flat else (out / item.key).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(made).save(target, quality=95)
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one-floor", action="store_true", help="one floor and light for all (and empty.jpg)")
    parser.add_argument("--flat", action="store_true", help="<class>__<name>.jpg in one folder")
    args = parser.parse_args()
    items = ds.list_dataset(args.dataset)
    if args.split:
        items = ds.select(items, ds.split_for(ds.read_split(args.split), args.dataset, args.split), args.subset)
    written = make_bin(items, args.out, seed=args.seed, one_floor=args.one_floor, flat=args.flat)
    print(f"wrote {written} photos to {args.out}")


if __name__ == "__main__":
    main()
