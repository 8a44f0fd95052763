"""``bin-agent snapshot``: what the camera sees, for setting it up.

Reads a few frames from the configured source (the camera's exposure settles
over the first ones), feeds them to the motion trigger when ``trigger.mode``
is ``motion``, and draws on the picture:

* the drop zone (yellow, ``camera.drop_zone``);
* the item the motion trigger saw, if it fired (red), and the region the
  agent would classify for it (cyan) — the saved frame is then the one it
  fired on;
* else the box of the last sorted item from the state database (orange,
  labelled with its class), if there is one.

Run it with the service stopped: the camera serves one process at a time.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..config import Config
from ..geometry import NormBox, to_normalised, to_pixels
from ..sources import FrameSource

ZONE_COLOUR = (255, 215, 0)
ITEM_COLOUR = (255, 40, 40)
CLASSIFIED_COLOUR = (0, 220, 255)
LAST_ITEM_COLOUR = (255, 140, 0)


@dataclass
class Snapshot:
    """One frame and the boxes to draw on it (fractions of the frame)."""

    image: np.ndarray
    frame_index: int
    zone: NormBox
    item_box: NormBox | None = None
    classified_box: NormBox | None = None
    last_item: dict[str, Any] | None = field(default=None)


def take_snapshot(config: Config, source: FrameSource, frames: int) -> Snapshot:
    """Read up to ``frames`` frames from the started ``source``; see the module doc.

    :raises SourceError: the source delivers nothing.
    """
    from ..sources import SourceError

    trigger = None
    if config.trigger.mode == "motion":
        from ..triggers import MotionTrigger

        trigger = MotionTrigger.from_config(config.trigger, config.camera.zone)
    last = None
    for _ in range(frames):
        frame = source.read()
        if frame is None:
            break
        last = frame
        if trigger is not None and trigger.update(frame) and trigger.item_box is not None:
            # The frame the agent would classify: show that one.
            return Snapshot(
                frame.image,
                frame.index,
                config.camera.zone,
                item_box=trigger.item_box,
                classified_box=_classified(config, frame.image, trigger.item_box),
            )
    if last is None:
        raise SourceError("the frame source delivered no frame")
    return Snapshot(last.image, last.index, config.camera.zone, last_item=last_sorted_item(config))


def _classified(config: Config, image: np.ndarray, item_box: NormBox) -> NormBox | None:
    """The region the agent would classify for ``item_box`` (needs the model's input size)."""
    from ..agent import region_to_classify
    from ..classify.classifier import ModelFiles, ModelFilesError, read_metadata
    from ..classify.preprocess import PreprocessSpec

    try:
        spec = PreprocessSpec.from_metadata(read_metadata(ModelFiles.beside(config.model.path).metadata))
    except (ModelFilesError, KeyError, TypeError, ValueError):
        return None
    height, width = image.shape[:2]
    region = region_to_classify(config.camera, spec.input_size, image.shape, item_box)
    return to_normalised(region, (width, height))


def last_sorted_item(config: Config) -> dict[str, Any] | None:
    """The last sorted item's event from the state database, if there is one
    with a box; ``None`` if there is no database or it cannot be read."""
    from ..store import StoreError, StoreReader

    path = Path(config.agent.state_dir) / "bin-agent.db"
    if not path.is_file():
        return None
    try:
        store = StoreReader(path)  # read-only: the agent may be running
    except StoreError:
        return None
    try:
        item = store.last_item()
    except (sqlite3.Error, ValueError):  # a locked or damaged file: draw without it
        item = None
    finally:
        store.close()
    if not item or not isinstance(item.get("box"), list) or len(item["box"]) != 4:
        return None
    return item


def draw(snapshot: Snapshot) -> Image.Image:
    """The frame with the drop zone and the detection drawn on it."""
    picture = Image.fromarray(snapshot.image).convert("RGB")
    size = picture.size
    pen = ImageDraw.Draw(picture)
    line = max(2, size[0] // 200)
    placed: list[tuple[float, float, float, float]] = []  # the labels written so far

    def box(norm: NormBox, colour: tuple[int, int, int], label: str) -> None:
        left, top, right, bottom = to_pixels(norm, size)
        pen.rectangle((left, top, right - 1, bottom - 1), outline=colour, width=line)
        # Boxes often share a corner (the item fills the zone; the classified crop is the
        # item's): a label that would cover one already written goes below it instead.
        x, y = float(left + line + 2), float(top + line + 2)
        while True:
            area = pen.textbbox((x, y), label)
            below = [b for (l0, t0, r0, b) in placed if area[0] < r0 and l0 < area[2] and area[1] < b and t0 < area[3]]
            if not below:
                break
            y = max(below) + 2
        placed.append(area)
        pen.text((x, y), label, fill=colour)

    box(snapshot.zone, ZONE_COLOUR, "drop zone")
    if snapshot.classified_box is not None:
        box(snapshot.classified_box, CLASSIFIED_COLOUR, "classified")
    if snapshot.item_box is not None:
        box(snapshot.item_box, ITEM_COLOUR, "item")
    elif snapshot.last_item is not None:
        x0, y0, x1, y1 = (float(v) for v in snapshot.last_item["box"])
        label = f"last: {snapshot.last_item.get('class', '?')} {snapshot.last_item.get('time', '')}"
        box((x0, y0, x1, y1), LAST_ITEM_COLOUR, label)
    return picture


def describe(snapshot: Snapshot, out: Path) -> str:
    """The one line the command prints."""
    height, width = snapshot.image.shape[:2]

    def fmt(norm: NormBox) -> str:
        return json.dumps([round(v, 3) for v in norm])

    parts = [f"{out}: frame {snapshot.frame_index} ({width}x{height}), drop zone {fmt(snapshot.zone)}"]
    if snapshot.item_box is not None:
        parts.append(f"item seen at {fmt(snapshot.item_box)}")
        if snapshot.classified_box is not None:
            parts.append(f"classified region {fmt(snapshot.classified_box)}")
    elif snapshot.last_item is not None:
        parts.append(f"last sorted item ({snapshot.last_item.get('class')}) at {fmt(tuple(snapshot.last_item['box']))}")
    else:
        parts.append("no item seen")
    return "; ".join(parts)
