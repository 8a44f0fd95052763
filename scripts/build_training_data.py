#!/usr/bin/env python3
"""Rebuild the added training photos (never committed) from their public sources.

    .venv/bin/python scripts/build_training_data.py wcnn=SOURCE [--out data] [--max-side 512]

SOURCE is a clone of the source repository: a git directory (bare or with a work
tree; photos are read from the commit ``--rev``, default HEAD) or a plain folder
laid out as in the repository. Each source's classes are mapped onto the model's
six (``MAPPINGS`` below, also in ``models/README.md``); classes that fit none of
the six are left out. Every photo is re-encoded as JPEG with its longest side at
most ``--max-side`` pixels (training reads 160 px crops; this keeps the folder
small and decoding fast), then ``../shared/tools/trashnet_guard.py --remove``
deletes every photo that is a TrashNet photo (these sets merge TrashNet, and the
held-back TrashNet photos judge the model). ``OUT/<source>/manifest.json``
records the origin, the commit, the mapping and the counts.

The result is ``OUT/<source>/<class>/*.jpg``, a folder-per-class dataset that
``bin-agent split`` and ``bin-agent train`` take next to ``../shared/data/trashnet``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BIN_AGENT_SHARED", ROOT.parent / "shared"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class SourceSpec:
    """Where a public set comes from and how its classes map onto ours."""

    origin: str
    licence: str
    folder: str  # the folder inside the repository that holds one folder per class
    mapping: dict[str, str | None]  # source class folder -> our class (None: left out)
    # per-photo exceptions to ``mapping`` ("<class folder>/<file name>" -> our class or None),
    # from a review of every photo of a mixed folder (models/README.md, "Paper and Cardboard")
    overrides: dict[str, str | None] = field(default_factory=dict)
    # file names that are TrashNet's own ("cardboard12.jpg"): these sets merge TrashNet, often
    # turned or mirrored, which the guard's hash does not see; every such photo is left out
    trashnet_names: str = r"^(cardboard|glass|metal|paper|plastic|trash)\d+\.jpg$"


MAPPINGS: dict[str, SourceSpec] = {
    # 5,078 photos merged from several public sets (TrashNet among them): web photos,
    # items in hands, on tables, floors and in the open; varied light and cameras.
    "wcnn": SourceSpec(
        origin="github.com/cardstdani/WasteClassificationNeuralNetwork, folder WasteImagesDataset",
        licence="none stated by the repository (no LICENSE file); its README says it merges "
        "public sets listed in github.com/AgaMiko/waste-datasets-review",
        folder="WasteImagesDataset",
        mapping={
            "Aluminium": "metal",
            "Glass": "glass",
            "Plastic": "plastic",
            "Other Plastics": "plastic",
            # residual waste (`trash`): whatever none of the five material compartments takes.
            # For a household bin that is wrappers, film, tissues and mixed items (TrashNet's
            # trash) and equally food scraps, textiles and wood; so these stay `trash`, and
            # training balances the sources within a class (`bin-agent train
            # --balance-sources`) so that this set's 880 photos do not define the class.
            "Organic Waste": "trash",
            "Textiles": "trash",
            "Wood": "trash",
            # paper and cardboard mixed in one folder: every photo reviewed (PAPER_AND_CARDBOARD
            # below); what is left after the TrashNet copies is magazines, newspapers, office and
            # writing paper, crumpled and shredded paper (paper) and boxes, corrugated board (cardboard)
            "Paper and Cardboard": "paper",
            # beverage cartons: paperboard laminated with plastic film (and often aluminium foil).
            # No paper mill takes them with paper, and the bin has no carton compartment;
            # towns that collect them do so with packaging, not with any of the five materials
            # here, so the bin treats them as residual waste: `trash` (packaging like TrashNet's)
            "Carton": "trash",
        },
        overrides={},  # filled in below from PAPER_AND_CARDBOARD
    ),
}


def _numbers(text: str) -> list[int]:
    """``"4, 32-41"`` -> ``[4, 32, 33, ..., 41]``."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


# "Paper and Cardboard/paper (N).jpg": every one of the 401 photos was looked at (contact
# sheets, 2026-12-04). The rule: a box, a box's wall or corrugated board (brown or white) is
# cardboard; sheets, newspapers, magazines, notebooks, letters, crumpled or shredded paper,
# kraft wrapping paper are paper; photos that are both, or thick white boards that could be
# either, are left out. Photos not listed here are paper.
PAPER_AND_CARDBOARD = {
    "cardboard": "4, 26, 32-41, 43-46, 120-124, 131-133, 206-207, 235-236, 238, 240, 244, 255, 258-262, "
    "280, 282, 286-310, 351, 355-356, 360, 362, 366, 378, 388, 398, 400",
    None: "42, 127-130, 142, 145, 196, 199, 204, 249, 352-354, 357-359",
}
for _label, _text in PAPER_AND_CARDBOARD.items():
    for _n in _numbers(_text):
        MAPPINGS["wcnn"].overrides[f"Paper and Cardboard/paper ({_n}).jpg"] = _label


def git_listing(git_dir: Path, rev: str, folder: str) -> list[tuple[str, str]]:
    """(object id, path) of every file under ``folder`` at ``rev``."""
    out = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", rev, "--", folder],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, oid = meta.split()
        if kind == "blob":
            rows.append((oid, path))
    return rows


def git_blobs(git_dir: Path, oids: list[str]):
    """Yield (oid, bytes or None) for each object; None where the clone lacks it."""
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    try:
        for oid in oids:
            proc.stdin.write(oid.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().decode().split()
            if len(header) < 3 or header[1] == "missing":
                yield oid, None
                continue
            size = int(header[2])
            data = proc.stdout.read(size)
            proc.stdout.read(1)  # the newline after the content
            yield oid, data
    finally:
        proc.stdin.close()
        proc.wait()


def source_files(source: Path, spec: SourceSpec, rev: str):
    """Yield (relative path inside spec.folder, bytes or None)."""
    git_dir = None
    if (source / "objects").is_dir():
        git_dir = source
    elif (source / ".git").exists():
        git_dir = source / ".git"
    if git_dir is not None:
        rows = [
            (oid, path) for oid, path in git_listing(git_dir, rev, spec.folder) if path.lower().endswith(IMAGE_SUFFIXES)
        ]
        paths = dict(rows)
        for oid, data in git_blobs(git_dir, [oid for oid, _ in rows]):
            yield os.path.relpath(paths[oid], spec.folder), data
        return
    base = source / spec.folder
    if not base.is_dir():
        sys.exit(f"error: {source}: neither a git clone nor a folder containing {spec.folder}/")
    for path in sorted(base.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield str(path.relative_to(base)), path.read_bytes()


def source_commit(source: Path, rev: str) -> str | None:
    for git_dir in (source, source / ".git"):
        try:
            return subprocess.run(
                ["git", "--git-dir", str(git_dir), "rev-parse", rev],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            continue
    return None


GUARD_MARGIN_BITS = 34  # the guard removes <= 24; distinct photos lie >= 35 bits apart (its own doc)


# the 8 ways to turn and mirror a photo; the guard hashes photos as they are
DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


def remove_near_copies(target: Path, guard: Path) -> dict[str, int]:
    """Remove photos within GUARD_MARGIN_BITS of a TrashNet photo in any of the
    8 turns and mirrors: the guard cannot see a cropped, turned or mirrored copy
    (``wcnn`` holds 300 turned or mirrored TrashNet photos that its file names
    do not all give away), and a margin above its own threshold costs a few
    dozen distinct photos at most."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("trashnet_guard", guard)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    known = np.array(
        [
            np.unpackbits(np.frombuffer(bytes.fromhex(line), np.uint8)).astype(bool)
            for line in guard.with_name("trashnet-dhash.txt").read_text().split()
        ]
    )
    removed: dict[str, int] = {}
    for path in sorted(target.rglob("*.jpg")):
        with Image.open(path) as image:
            image.load()
            hashes = [dihedral_dhash(image, t) for t in DIHEDRAL]
        if min((known != h).sum(1).min() for h in hashes) <= GUARD_MARGIN_BITS:
            path.unlink()
            removed[path.parent.name] = removed.get(path.parent.name, 0) + 1
    return removed


def dihedral_dhash(image: Image.Image, transpose: Image.Transpose | None):
    """The guard's 256-bit difference hash (``trashnet_guard.dhash``) of ``image``
    turned or mirrored by ``transpose``."""
    import numpy as np

    turned = image if transpose is None else image.transpose(transpose)
    gray = turned.convert("L").resize((17, 16), Image.Resampling.LANCZOS)
    a = np.asarray(gray, np.int16)
    return (a[:, 1:] > a[:, :-1]).flatten()


def build(name: str, source: Path, out: Path, rev: str, max_side: int) -> dict:
    spec = MAPPINGS[name]
    target = out / name
    if target.exists():
        shutil.rmtree(target)
    counts: dict[str, int] = {}
    skipped = {
        "missing_in_clone": 0,
        "unreadable": 0,
        "class_left_out": 0,
        "left_out_on_review": 0,
        "trashnet_file_name": 0,
        "same_name_as_another": 0,
    }
    written: set[Path] = set()
    done = 0
    for relative, data in source_files(source, spec, rev):
        source_class = Path(relative).parts[0]
        if source_class not in spec.mapping:
            sys.exit(f"error: {name}: class folder {source_class!r} has no mapping; add it to MAPPINGS")
        if re.match(spec.trashnet_names, Path(relative).name, re.IGNORECASE):
            skipped["trashnet_file_name"] += 1
            continue
        key = Path(relative).as_posix()
        label = spec.overrides[key] if key in spec.overrides else spec.mapping[source_class]
        if label is None:
            skipped["class_left_out" if key not in spec.overrides else "left_out_on_review"] += 1
            continue
        if data is None:
            skipped["missing_in_clone"] += 1
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (max_side, max_side))
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            skipped["unreadable"] += 1
            continue
        rgb.thumbnail((max_side, max_side), Image.BILINEAR)
        folder = target / label
        folder.mkdir(parents=True, exist_ok=True)
        stem = Path(relative).as_posix().replace("/", "__").replace(" ", "_").replace(".", "_")
        out = folder / f"{stem}.jpg"
        rgb.save(out, quality=92)
        if out in written:  # "a (1).jpg" and "a_(1).jpg" share a name: the later one is kept
            skipped["same_name_as_another"] += 1
            continue
        written.add(out)
        counts[label] = counts.get(label, 0) + 1
        done += 1
        if done % 500 == 0:
            print(f"  {name}: {done} photos written", flush=True)
    print(f"  {name}: {done} photos written; running the TrashNet guard", flush=True)
    guard = SHARED / "tools" / "trashnet_guard.py"
    if not guard.is_file():
        sys.exit(f"error: {guard} not found: set BIN_AGENT_SHARED to the shared folder")
    result = subprocess.run(
        [sys.executable, str(guard), str(target), "--remove"], check=True, capture_output=True, text=True
    )
    removed: dict[str, int] = {}
    for line in result.stdout.splitlines()[:-1]:
        label = Path(line).parent.name
        removed[label] = removed.get(label, 0) + 1
    print(f"  {name}: guard: {result.stdout.splitlines()[-1]}", flush=True)
    near = remove_near_copies(target, guard)
    print(
        f"  {name}: {sum(near.values())} more photos removed as possible cropped TrashNet copies "
        f"(hash distance {GUARD_MARGIN_BITS} bits or less, turned or mirrored too)",
        flush=True,
    )
    kept = {folder.name: sum(1 for _ in folder.glob("*.jpg")) for folder in sorted(target.iterdir()) if folder.is_dir()}
    manifest = {
        "source": name,
        "origin": spec.origin,
        "licence": spec.licence,
        "commit": source_commit(source, rev),
        "mapping": spec.mapping,
        "overrides_after_review": {
            str(label): sum(1 for v in spec.overrides.values() if v == label) for label in set(spec.overrides.values())
        },
        "max_side": max_side,
        "written": counts,
        "skipped": skipped,
        "removed_as_trashnet": removed,
        "removed_as_near_trashnet": near,
        "kept": kept,
        "kept_total": sum(kept.values()),
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="NAME=PATH", help=f"NAME one of {sorted(MAPPINGS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "data", help="output folder (default: data/)")
    parser.add_argument("--rev", default="HEAD", help="commit to read from a git clone (default: HEAD)")
    parser.add_argument("--max-side", type=int, default=512)
    args = parser.parse_args(argv)
    for entry in args.sources:
        name, sep, path = entry.partition("=")
        if not sep or name not in MAPPINGS:
            parser.error(f"{entry!r}: expected NAME=PATH with NAME one of {sorted(MAPPINGS)}")
        source = Path(path)
        if not source.exists():
            parser.error(f"{entry!r}: {source} does not exist")
        manifest = build(name, source, args.out, args.rev, args.max_side)
        print(
            f"{name}: {manifest['kept_total']} photos kept {manifest['kept']}; "
            f"removed as TrashNet {manifest['removed_as_trashnet']}; skipped {manifest['skipped']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
