#!/usr/bin/env python3
"""This tree's motion trigger against another revision's, frame by frame, to the bit.

For a change that promises the trigger decides exactly as before (a faster idle path, a
tidier module): both triggers see the same frames, and after every frame their return
value, state, item boxes, stats, possible items, noise and threshold maps and background
must be identical (floats compared bit for bit). The frames: each FOLDER given (a
recorded or ``scripts/synthetic_bin.py --sequence`` folder, replayed as the agent replays
``mode = "sequence"``: virtual clock, 10 fps), with the config's defaults, a drop zone
and an absorb time with requests; and synthetic scenes at several lores sizes (block
sizes 1-8), drop zones, ``max_width`` and gain settings (light steps, an uneven light,
items dropped, staying and taken out, a hand, a crumb, requests, a resize).

    python scripts/trigger_ab.py [FOLDER ...] [--baseline main] [--no-synthetic] [--idle-look-seconds S]

Both triggers get ``[trigger.motion] idle_look_seconds`` = S (default: the config's). A
revision before idle looks (before 44d44b7) looks at every frame: compare with it at
``--idle-look-seconds 0``.

Prints one line per run and exits 1 at the first difference, naming the frame and what
differed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bin_agent.config import MotionSection, TriggerSection
from bin_agent.errors import run_script
from bin_agent.geometry import FULL_FRAME, NormBox
from bin_agent.sources.base import Frame
from bin_agent.triggers import MotionTrigger

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_trigger import baseline_class, folder_frames  # noqa: E402  (the revision's motion.py beside this tree's package; its replay of a folder)


class Differs(Exception):
    pass


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b)
        )
    return bool(a == b)


def boxes(trigger: Any) -> tuple[Any, ...]:
    """The item boxes of the last fire, of a trigger with ``item_boxes`` or one ``item_box``."""
    if hasattr(trigger, "item_boxes"):
        return tuple(trigger.item_boxes)
    return () if trigger.item_box is None else (trigger.item_box,)


def compare(new: Any, old: Any, fired: tuple[bool, bool], frame: Frame) -> None:
    """Raise :class:`Differs` naming the first thing that is not identical."""
    checks = {
        "fired": fired,
        "state": (new.state, old.state),
        # One box per item now; a revision before item_boxes had one item_box (or none).
        "item_boxes": (boxes(new), boxes(old)),
        "stats": (new.stats, old.stats),
        "possible_items": (new.possible_items, old.possible_items),
        "noise_map": (new.noise_map, old.noise_map),
        "threshold_map": (new.threshold_map, old.threshold_map),
        # The empty-bin model itself (not public; what every later frame is compared with).
        "background": (getattr(new, "_background", None), getattr(old, "_background", None)),
    }
    for name, (a, b) in checks.items():
        if (a is None) != (b is None) or (a is not None and not same(a, b)):
            raise Differs(f"frame {frame.index} (t={frame.timestamp:.2f}): {name} differs: {a!r} vs {b!r}")


def replay(
    old_class: Any,
    frames: Iterable[Frame],
    section: TriggerSection,
    zone: NormBox = FULL_FRAME,
    request_every: int = 0,
    **tuning: Any,
) -> tuple[int, int]:
    """(frames, fires) of one run of both triggers."""
    new, old = MotionTrigger.from_config(section, zone, **tuning), old_class.from_config(section, zone, **tuning)
    count = fires = 0
    for frame in frames:
        if request_every and count % request_every == request_every - 1:
            new.request()
            old.request()
        fired = (new.update(frame), old.update(frame))
        compare(new, old, fired, frame)
        count += 1
        fires += fired[0]
    return count, fires


def scene(height: int, width: int, count: int, seed: int) -> list[Frame]:
    """A lit gradient floor with sensor noise; light drift, a step and an uneven light; an
    item dropped, taken out, another staying; a hand passing; a crumb."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    floor = 60 + 60 * xx / width + 30 * yy / height
    image = np.zeros((1, 1, 3), np.uint8)
    side = max(4, height // 5)
    frames = []
    for k in range(count):
        t = k / 10
        picture = floor.copy()
        gain: float | np.ndarray = 1.0 + 0.05 * np.sin(t / 3)
        if 20 < t < 24:
            gain = 1.3
        if 30 < t < 36:
            gain = 1.0 + 0.3 * xx / width
        if 8 < t < 18 or 40 < t < 70:
            top = min(height - side, int(height * 0.3 + (0 if t > 8.4 else (t - 8) * 40)))
            picture[top : top + side, width // 3 : width // 3 + side] = 200
        if 26 < t < 28:
            right = int((t - 26) / 2 * width)
            picture[: height // 2, max(0, right - width // 4) : right] = 30
        if t > 75:
            picture[height // 2 : height // 2 + 3, width // 2 : width // 2 + 3] = 180
        noisy = picture * gain + rng.normal(0, 4, picture.shape)
        frames.append(Frame(image, np.clip(noisy, 0, 255).astype(np.uint8), 50.0 + t, k))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="*", help="frame folders (replayed as a sequence)")
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--no-synthetic", action="store_true", help="only the folders")
    parser.add_argument(
        "--idle-look-seconds",
        type=float,
        default=MotionSection().idle_look_seconds,
        help="for both triggers (0 against a revision before idle looks)",
    )
    args = parser.parse_args()
    old_class = baseline_class(args.baseline)
    total = [0, 0]

    def run(label: str, frames: Iterable[Frame], section: TriggerSection, **kw: Any) -> None:
        section = replace(section, motion=replace(section.motion, idle_look_seconds=args.idle_look_seconds))
        try:
            count, fires = replay(old_class, frames, section, **kw)
        except Differs as exc:
            print(f"{label}: {exc}")
            raise SystemExit(1) from None
        total[0] += count
        total[1] += fires
        print(f"{label}: {count} frames, {fires} fired, identical", flush=True)

    for folder in args.folders:
        frames = folder_frames(folder)
        run(f"{folder.name}, defaults", frames, TriggerSection())
        run(f"{folder.name}, a drop zone", frames, TriggerSection(), zone=(0.1, 0.05, 0.93, 0.9))
        absorbing = TriggerSection(motion=MotionSection(absorb_seconds=4.0))
        run(f"{folder.name}, absorb 4 s, requests", frames, absorbing, request_every=97)
    if not args.no_synthetic:
        for case, ((height, width), zone, max_width, gain, absorb) in enumerate(
            itertools.product(
                [(240, 320), (120, 160), (60, 80), (480, 640), (90, 250)],
                [FULL_FRAME, (0.13, 0.07, 0.71, 0.95)],
                [80, 40],
                [True, False],
                [0.0, 5.0],
            )
        ):
            section = TriggerSection(settle_seconds=1.0, motion=MotionSection(absorb_seconds=absorb))
            run(
                f"synthetic {width}x{height} zone {zone} max_width {max_width} gain {gain} absorb {absorb}",
                scene(height, width, 900, seed=case),
                section,
                zone=zone,
                request_every=113 if case % 3 == 0 else 0,
                max_width=max_width,
                compensate_gain=gain,
            )
        resized = scene(240, 320, 150, 1) + [
            Frame(f.image, f.lores, f.timestamp + 15, f.index + 150) for f in scene(120, 160, 150, 2)
        ]
        run("synthetic, resized mid-run", resized, TriggerSection())
    print(f"all identical: {total[0]} frames, {total[1]} fired, against {args.baseline}")


if __name__ == "__main__":
    run_script(main)
