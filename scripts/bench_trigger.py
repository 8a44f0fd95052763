#!/usr/bin/env python3
"""Time :meth:`MotionTrigger.update` on 320x240 grayscale frames.

Prints microseconds per frame for an empty scene (the common case: background
adaptation runs) and an occupied one (no adaptation, but the still-reference
comparison runs). At 10 frames/s the budget is 100 000 us per frame, shared
with capture and, on trigger, classification; the trigger should take a few
per cent of it on a Pi 4.

    python scripts/bench_trigger.py [--frames 500] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bin_agent.config import TriggerSection
from bin_agent.sources.base import Frame
from bin_agent.triggers import MotionTrigger


def frames(width: int, height: int, item: bool, count: int, seed: int = 0) -> list[Frame]:
    """``count`` noisy frames of a gradient floor, with a bright square if ``item``."""
    rng = np.random.default_rng(seed)
    xx = np.linspace(60, 160, width, dtype=np.float32)[None, :]
    yy = np.linspace(0, 30, height, dtype=np.float32)[:, None]
    floor = xx + yy
    if item:
        floor[height // 3 : height // 3 + 60, width // 3 : width // 3 + 60] = 220
    image = np.zeros((4, 4, 3), np.uint8)
    out = []
    for k in range(count):
        noisy = np.clip(floor + rng.normal(0, 5, floor.shape), 0, 255).astype(np.uint8)
        out.append(Frame(image=image, lores=noisy, timestamp=k / 10, index=k))
    return out


def bench(trigger: MotionTrigger, sequence: list[Frame]) -> float:
    """Mean microseconds per ``update`` over ``sequence``."""
    start = time.perf_counter()
    for frame in sequence:
        trigger.update(frame)
    return (time.perf_counter() - start) / len(sequence) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()

    empty = frames(args.width, args.height, item=False, count=args.frames)
    occupied = frames(args.width, args.height, item=True, count=args.frames, seed=1)
    trigger = MotionTrigger.from_config(TriggerSection())
    bench(trigger, empty[:20])  # initialise the background, warm caches
    us_empty = bench(trigger, empty)
    # Same trigger: the item appears, settles, fires; then it stays.
    us_occupied = bench(
        trigger, [Frame(f.image, f.lores, f.timestamp + empty[-1].timestamp + 0.1, f.index) for f in occupied]
    )
    print(f"MotionTrigger.update on {args.width}x{args.height} uint8, {args.frames} frames each:")
    print(f"  empty scene:    {us_empty:8.1f} us/frame")
    print(f"  occupied scene: {us_occupied:8.1f} us/frame  (state now {trigger.state!r})")


if __name__ == "__main__":
    main()
