#!/usr/bin/env python3
"""Which photos of an added folder are TrashNet photos turned or mirrored, and where they sit.

    .venv/bin/python scripts/turned_trashnet_copies.py DATA_DIR SPLIT [--json OUT]

For every photo under ``DATA_DIR`` (a folder-per-class dataset such as
``data/wcnn``), the guard's difference hash is taken in all 8 turns and mirrors
(``build_training_data.dihedral_dhash``) and compared with the hashes of all
2,527 TrashNet photos; a photo within 34 bits of one (in a turn or mirror, not as
it is: the guard already sees those) is a copy. Each copy is counted by the
subset its own key has in ``SPLIT`` and by the subset of the TrashNet photo it
copies (``train``/``val``/``test`` of ``../shared/data/trashnet`` in ``SPLIT``, or
``held-back``: one of the TrashNet photos not in ``../shared``, which judge the
model independently). models/README.md ("A leak in the previous data build")
reports this for the data the shipped model was trained on.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_training_data import DIHEDRAL, GUARD_MARGIN_BITS, dihedral_dhash  # noqa: E402

SHARED = Path(os.environ.get("BIN_AGENT_SHARED", ROOT.parent / "shared"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("split", type=Path)
    parser.add_argument("--json", type=Path, help="write {copy subset -> original subset: [TrashNet keys]}")
    args = parser.parse_args(argv)
    lines = (SHARED / "tools" / "trashnet-dhash.txt").read_text().split()
    known = np.array([np.unpackbits(np.frombuffer(bytes.fromhex(line), np.uint8)).astype(bool) for line in lines])
    split = json.loads(args.split.read_text())["datasets"]
    trashnet_subset = {key: s for s in ("train", "val", "test") for key in split["trashnet"][s]}
    own = split.get(args.data.resolve().name, {})
    own_subset = {key: s for s in ("train", "val", "test") for key in own.get(s, [])}
    owner: dict[int, str] = {}  # hash index -> key of the TrashNet photo in ../shared
    for path in sorted((SHARED / "data" / "trashnet").rglob("*.jpg")):
        with Image.open(path) as image:
            distance = (known != dihedral_dhash(image, None)).sum(1)
        if distance.min() <= 16:
            owner[int(distance.argmin())] = f"{path.parent.name}/{path.name}"
    copies: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(args.data.rglob("*.jpg")):
        with Image.open(path) as image:
            image.load()
            best = min(
                (int(d.min()), int(d.argmin()))
                for d in ((known != dihedral_dhash(image, t)).sum(1) for t in DIHEDRAL[1:])
            )
        if best[0] <= GUARD_MARGIN_BITS:
            key = f"{path.parent.name}/{path.name}"
            original = owner.get(best[1])
            where = trashnet_subset.get(original, "?") if original else "held-back"
            copies[f"{own_subset.get(key, 'unsplit')} -> {where}"].append(original or f"#{best[1]}")
    for name, keys in sorted(copies.items()):
        print(f"{name}: {len(keys)}")
    print(f"{sum(len(v) for v in copies.values())} turned or mirrored TrashNet copies under {args.data}")
    if args.json:
        args.json.write_text(json.dumps(copies, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
