"""scripts/build_training_data.py: what the rebuild of the added photos keeps and leaves out."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def load_builder():
    spec = importlib.util.spec_from_file_location("build_training_data", REPO / "scripts" / "build_training_data.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def source(tmp_path: Path, trashnet_dir: Path) -> Path:
    """A folder laid out like the `wcnn` repository: TrashNet photos turned, mirrored
    and renamed (as that set holds them), a TrashNet-named copy, and distinct photos."""
    base = tmp_path / "repo" / "WasteImagesDataset"
    tn_glass = sorted((trashnet_dir / "glass").glob("*.jpg"))
    for folder in ("Glass", "Paper and Cardboard", "Carton", "Wood"):
        (base / folder).mkdir(parents=True)
    with Image.open(tn_glass[0]) as image:
        image.transpose(Image.Transpose.ROTATE_90).save(base / "Glass" / "glass (1).jpg")
    with Image.open(tn_glass[1]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(base / "Glass" / "glass (2).jpg")
    shutil.copy(tn_glass[2], base / "Glass" / "glass7.jpg")  # a TrashNet file name
    # distinct photos: random blobs, unlike any TrashNet photo in any turn
    rng = np.random.default_rng(7)
    for name, folder in (
        ("glass (3).jpg", "Glass"),
        ("paper (4).jpg", "Paper and Cardboard"),  # a box, on review
        ("paper (5).jpg", "Paper and Cardboard"),
        ("paper (42).jpg", "Paper and Cardboard"),  # left out on review
        ("cart (1).jpg", "Carton"),
        ("wood (1).jpg", "Wood"),
    ):
        blobs = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((320, 240), Image.BICUBIC)
        blobs.save(base / folder / name)
    return tmp_path / "repo"


def test_rebuild_leaves_out_turned_mirrored_and_named_trashnet_photos(source: Path, tmp_path: Path) -> None:
    builder = load_builder()
    manifest = builder.build("wcnn", source, tmp_path / "data", "HEAD", 512)
    out = tmp_path / "data" / "wcnn"
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert "glass/Glass__glass_(3)_jpg.jpg" in kept
    assert not any("glass_(1)" in k or "glass_(2)" in k or "glass7" in k for k in kept), kept
    assert manifest["skipped"]["trashnet_file_name"] == 1
    assert sum(manifest["removed_as_near_trashnet"].values()) == 2
    assert json.loads((out / "manifest.json").read_text())["kept_total"] == len(kept)


def test_rebuild_maps_reviewed_paper_and_cardboard_and_cartons_to_trash(source: Path, tmp_path: Path) -> None:
    builder = load_builder()
    manifest = builder.build("wcnn", source, tmp_path / "data", "HEAD", 512)
    out = tmp_path / "data" / "wcnn"
    assert (out / "cardboard" / "Paper_and_Cardboard__paper_(4)_jpg.jpg").is_file()
    assert (out / "paper" / "Paper_and_Cardboard__paper_(5)_jpg.jpg").is_file()
    assert not list(out.rglob("*paper_(42)*"))
    assert manifest["skipped"]["left_out_on_review"] == 1
    assert (out / "trash" / "Carton__cart_(1)_jpg.jpg").is_file()
    assert (out / "trash" / "Wood__wood_(1)_jpg.jpg").is_file()
