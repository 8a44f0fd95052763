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

With the motion trigger it also saves ``OUT-noise.png``: the frame with each
block of the drop zone coloured by the change threshold in force there (blue:
the trigger's lowest, red: ``pixel_threshold``), which the trigger set from the
noise it learned on the empty bin over the frames read (read at least 100, 10 s
at 10 fps, for a settled map). An item must differ from the empty bin by that
many grey levels (or, on the second look, by it over the square root of the
frames it lay still) over ``min_area`` of the zone: where the map is red a dark
item on a dark floor can be missed (``docs/trigger.md``).

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
    trigger: TriggerView | None = None


@dataclass
class TriggerView:
    """What the motion trigger learned of the empty bin: per block of the zone
    (rows x columns), its noise and the threshold in force, in grey levels."""

    noise: np.ndarray
    threshold: np.ndarray
    block: int  # pixels of the low-res frame per side of a block
    min_area_blocks: int  # changed blocks an item needs
    lores_size: tuple[int, int]  # (width, height) of the frame the trigger watched

    @classmethod
    def of(cls, trigger: Any, lores_shape: tuple[int, ...]) -> TriggerView | None:
        noise, threshold = trigger.noise_map, trigger.threshold_map
        if noise is None or threshold is None:
            return None
        return cls(
            noise,
            threshold,
            trigger.block_size,
            int(np.ceil(trigger.min_area_in_force * threshold.size)),
            (lores_shape[1], lores_shape[0]),
        )


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
        if trigger is not None and trigger.update(frame) and trigger.item_boxes:
            # The frame the agent would classify: show that one (its largest item).
            return Snapshot(
                frame.image,
                frame.index,
                config.camera.zone,
                item_box=trigger.item_boxes[0],
                classified_box=_classified(config, frame.image, trigger.item_boxes[0]),
                trigger=TriggerView.of(trigger, np.shape(frame.lores)),
            )
    if last is None:
        raise SourceError("the frame source delivered no frame")
    view = None if trigger is None else TriggerView.of(trigger, np.shape(last.lores))
    return Snapshot(last.image, last.index, config.camera.zone, last_item=last_sorted_item(config), trigger=view)


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
    region = region_to_classify(config.camera, spec, image.shape, item_box)
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


def noise_path(out: Path) -> Path:
    """Where ``bin-agent snapshot OUT`` saves the threshold map: ``OUT-noise.png``."""
    return out.with_name(f"{out.stem}-noise.png")


def draw_noise(snapshot: Snapshot) -> Image.Image | None:
    """The frame, dimmed, with each block of the zone coloured by the threshold
    in force (blue: lowest, red: highest; legend in grey levels), or ``None``
    without a motion trigger's map."""
    view = snapshot.trigger
    if view is None:
        return None
    picture = Image.fromarray(snapshot.image).convert("L").convert("RGB")
    size = picture.size
    threshold = view.threshold
    low, high = float(threshold.min()), float(threshold.max())
    share = (threshold - low) / max(high - low, 1e-6)
    colours = np.stack([255 * share, 60 * np.ones_like(share), 255 * (1 - share)], axis=-1).astype(np.uint8)
    # The blocks cover the zone of the low-res frame: scale them to the picture.
    lores_w, lores_h = view.lores_size
    left, top = to_pixels(snapshot.zone, (lores_w, lores_h))[:2]
    x0, y0 = left // view.block * view.block, top // view.block * view.block
    rows, cols = threshold.shape
    box = (
        round(x0 * size[0] / lores_w),
        round(y0 * size[1] / lores_h),
        round((x0 + cols * view.block) * size[0] / lores_w),
        round((y0 + rows * view.block) * size[1] / lores_h),
    )
    tiles = Image.fromarray(colours).resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.NEAREST)
    region = picture.crop(box)
    picture.paste(Image.blend(region, tiles, 0.6), box[:2])
    pen = ImageDraw.Draw(picture)
    pen.text((6, 6), f"threshold in force: {low:.1f} (blue) to {high:.1f} (red) grey levels", fill=(255, 255, 255))
    pen.text((6, 20), f"an item needs {view.min_area_blocks} blocks changed by that much", fill=(255, 255, 255))
    return picture


def describe_trigger(view: TriggerView) -> str:
    """The motion trigger's noise and threshold, in one clause."""
    return (
        f"motion trigger: noise {float(np.median(view.noise)):.1f} grey levels (median; max "
        f"{float(view.noise.max()):.1f}), threshold in force {float(np.median(view.threshold)):.1f} "
        f"(from {float(view.threshold.min()):.1f} to {float(view.threshold.max()):.1f}), an item needs "
        f"{view.min_area_blocks} changed blocks of {view.block}x{view.block} px"
    )


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
    if snapshot.trigger is not None:
        parts.append(f"{describe_trigger(snapshot.trigger)} (map: {noise_path(out)})")
    return "; ".join(parts)
