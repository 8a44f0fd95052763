"""``bin-agent snapshot``: a frame from the configured (replay) source with the
drop zone and the detection drawn, through the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent import preflight
from bin_agent.config import EX_CONFIG
from bin_agent.geometry import to_pixels
from bin_agent.store import Store
from bin_agent.tools.snapshot import ITEM_COLOUR, LAST_ITEM_COLOUR, ZONE_COLOUR
from tests.helpers import base_config, write_toml

W, H = 640, 480
ZONE = [0.1, 0.05, 0.9, 0.95]
ITEM = (300, 200, 400, 280)  # left, top, right, bottom of the item in the frame


def scene(tmp_path: Path) -> tuple[Path, Path]:
    """An empty bin and a frame with one item on it, as image files."""
    rng = np.random.default_rng(1)
    floor = np.clip(90 + rng.normal(0, 3, (H, W, 3)), 0, 255).astype(np.uint8)
    empty = tmp_path / "empty.png"
    Image.fromarray(floor).save(empty)
    with_item = floor.copy()
    left, top, right, bottom = ITEM
    with_item[top:bottom, left:right] = np.clip(
        200 + rng.normal(0, 15, (bottom - top, right - left, 3)), 0, 255
    ).astype(np.uint8)
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(with_item).save(frames / "item.png")
    return empty, frames


def config_file(tmp_path: Path, **trigger: object) -> Path:
    empty, frames = scene(tmp_path)
    data = base_config(tmp_path, frames, mqtt=False)
    data["camera"]["drop_zone"] = ZONE
    data["camera"]["replay"]["empty_frame"] = str(empty)
    data["trigger"].update(trigger)
    return write_toml(tmp_path / "bin.toml", data)


def snapshot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bin_agent", "snapshot", *args], capture_output=True, text=True, timeout=120, check=False
    )


def on_outline(picture: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> bool:
    """The left edge of ``box`` is drawn in ``colour`` half-way down."""
    left, top, _, bottom = box
    return tuple(picture[(top + bottom) // 2, left + 1]) == colour


def test_snapshot_draws_the_drop_zone_and_the_item_seen(tmp_path):
    out = tmp_path / "snap.png"
    result = snapshot(str(out), "--config", str(config_file(tmp_path)), "--frames", "40")
    assert result.returncode == 0, result.stderr
    assert "item seen at" in result.stdout and "classified region" in result.stdout, result.stdout
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (H, W, 3)
    assert on_outline(picture, to_pixels(tuple(ZONE), (W, H)), ZONE_COLOUR)
    # The item's box (from the motion mask, 4 px blocks of the low-res view) is drawn around it.
    rows = np.flatnonzero((picture == ITEM_COLOUR).all(axis=2).any(axis=1))
    cols = np.flatnonzero((picture == ITEM_COLOUR).all(axis=2).any(axis=0))
    left, top, right, bottom = ITEM
    assert abs(rows[0] - top) <= 8 and abs(rows[-1] - bottom) <= 8, (rows[0], rows[-1])
    assert abs(cols[0] - left) <= 8 and abs(cols[-1] - right) <= 8, (cols[0], cols[-1])
    # A JPEG works too.
    jpeg = tmp_path / "snap.jpg"
    assert snapshot(str(jpeg), "--config", str(tmp_path / "bin.toml"), "--frames", "40").returncode == 0
    assert Image.open(jpeg).format == "JPEG"


def test_snapshot_without_an_item_draws_the_last_sorted_one(tmp_path):
    path = config_file(tmp_path, mode="manual")  # a trigger that sees no box of its own
    config = preflight.load_dict(base_config(tmp_path), base_dir=tmp_path)
    store = Store(Path(config.agent.state_dir) / "bin-agent.db")
    store.record_event(
        event_id="e1",
        topic="t",
        label="glass",
        compartment="glass",
        fallback=False,
        payload={"class": "glass", "time": "2026-11-24T09:00:00.000Z", "box": [0.25, 0.25, 0.5, 0.75]},
    )
    store.close()
    out = tmp_path / "snap.png"
    result = snapshot(str(out), "--config", str(path), "--frames", "3")
    assert result.returncode == 0, result.stderr
    assert "last sorted item (glass)" in result.stdout, result.stdout
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert on_outline(picture, to_pixels((0.25, 0.25, 0.5, 0.75), (W, H)), LAST_ITEM_COLOUR)
    assert on_outline(picture, to_pixels(tuple(ZONE), (W, H)), ZONE_COLOUR)


def test_snapshot_errors_are_one_line(tmp_path):
    path = config_file(tmp_path)
    result = snapshot(str(tmp_path / "no" / "such" / "dir.jpg"), "--config", str(path), "--frames", "2")
    assert result.returncode == 1 and "cannot save the snapshot" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\ndrop_zone = [0.5, 0.5, 0.2, 0.9]\n")
    result = snapshot(str(tmp_path / "x.jpg"), "--config", str(bad))
    assert result.returncode == EX_CONFIG and "camera.drop_zone:" in result.stderr
    assert "Traceback" not in result.stderr


def test_labels_of_coinciding_boxes_do_not_overlap(monkeypatch):
    """Item, classified crop and drop zone on the same spot: three labels, none over another."""
    from PIL import ImageDraw

    from bin_agent.tools.snapshot import Snapshot, draw

    written: list[tuple[tuple[float, float], str]] = []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        written.append((xy, text))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    box = (0.2, 0.2, 0.8, 0.8)
    draw(Snapshot(np.zeros((240, 320, 3), np.uint8), 0, box, item_box=box, classified_box=box))
    assert [text for _, text in written] == ["drop zone", "classified", "item"]
    pen = ImageDraw.Draw(Image.new("RGB", (320, 240)))
    areas = [pen.textbbox(xy, text) for xy, text in written]
    for n, a in enumerate(areas):
        for b in areas[n + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_snapshot_shows_the_learned_noise_and_the_threshold_in_force(tmp_path):
    """An empty bin whose right half is noisy (a cheap camera's dark corner): the snapshot
    says what noise the motion trigger learned and what threshold is in force, and saves
    OUT-noise.png with the noisy half's blocks red and the quiet half's blue."""
    rng = np.random.default_rng(5)
    frames = tmp_path / "frames"
    frames.mkdir()
    sigma = np.where(np.arange(320) < 160, 2.0, 12.0)[None, :]
    for k in range(60):
        grey = np.clip(90 + sigma * rng.normal(0, 1, (240, 320)), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(frames / f"frame-{k:06d}.png")
    data = base_config(tmp_path, frames, mqtt=False)
    data["camera"]["replay"]["mode"] = "sequence"
    path = write_toml(tmp_path / "bin.toml", data)
    out = tmp_path / "snap.png"
    result = snapshot(str(out), "--config", str(path), "--frames", "60")
    assert result.returncode == 0, result.stderr
    assert "no item seen" in result.stdout and "threshold in force" in result.stdout, result.stdout
    assert f"map: {tmp_path / 'snap-noise.png'}" in result.stdout, result.stdout
    heat = np.asarray(Image.open(tmp_path / "snap-noise.png").convert("RGB")).astype(int)
    red_minus_blue = heat[60:, :, 0] - heat[60:, :, 2]  # below the legend
    assert red_minus_blue[:, 180:300].mean() > 50 > -50 > red_minus_blue[:, 20:140].mean()
