#!/usr/bin/env python3
"""Time :meth:`MotionTrigger.update` on 320x240 grayscale frames, against a baseline.

Prints microseconds per frame for an empty scene (the common case: the
background and noise map adapt) and an occupied one (the still-reference
comparison and the running mean run), for this tree's trigger and for the
trigger of another git revision (``--baseline``, default ``main``), measured in
the same run, interleaved, best of ``--repeat``: on a shared machine only the
ratio means much. At 10 frames/s the budget is 100 000 us per frame, shared
with capture and, on trigger, classification; the idle cost is given as the
share of one core the empty-scene cost takes at ``--fps``.

    python scripts/bench_trigger.py [--frames 500] [--width 320 --height 240] [--baseline main]
                                    [--drops 20] [--folder DIR ...]

It also times the frame an item fires on (the trigger's part of the item's path, which
``bin-agent bench`` counts): ``--drops`` items dropped as ``bin-agent bench`` drops them
(``bin_agent.tools.bench.drop_frames``), each into a fresh trigger, and the frames of each
``--folder`` (a recorded or ``scripts/synthetic_bin.py --sequence`` folder, replayed as the
agent replays ``mode = "sequence"``): the median milliseconds of ``update()`` on the frames
that fire, for both trees, the drops taking turns.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bin_agent.config import MotionSection, TriggerSection
from bin_agent.errors import run_script
from bin_agent.sources.base import Frame
from bin_agent.sources.replay import ReplaySource
from bin_agent.tools.bench import drop_frames
from bin_agent.triggers import MotionTrigger

REPO = Path(__file__).resolve().parent.parent


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


def bench(trigger: Any, sequence: list[Frame]) -> float:
    """Mean microseconds per ``update`` over ``sequence``."""
    start = time.perf_counter()
    for frame in sequence:
        trigger.update(frame)
    return (time.perf_counter() - start) / len(sequence) * 1e6


def baseline_class(revision: str) -> Any:
    """``MotionTrigger`` of ``bin_agent/triggers/motion.py`` at ``revision``, loaded
    beside this tree's package (its relative imports resolve to this tree)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{revision}:bin_agent/triggers/motion.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "motion_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("bin_agent.triggers._motion_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MotionTrigger


def measure(build: Any, empty: list[Frame], occupied: list[Frame]) -> tuple[float, float, str]:
    """(us per empty frame, us per occupied frame, state after) of a fresh trigger."""
    trigger = build()
    bench(trigger, empty[:20])  # initialise the background, warm caches
    us_empty = bench(trigger, empty)
    # Same trigger: the item appears, settles, fires; then it stays.
    shift = empty[-1].timestamp + 0.1
    us_occupied = bench(trigger, [Frame(f.image, f.lores, f.timestamp + shift, f.index) for f in occupied])
    return us_empty, us_occupied, trigger.state


def fire_ms(build: Any, sequence: list[Frame]) -> list[float]:
    """Milliseconds of each ``update()`` that fires, a fresh trigger over ``sequence``."""
    trigger = build()
    times = []
    for frame in sequence:
        started = time.perf_counter()
        if trigger.update(frame):
            times.append((time.perf_counter() - started) * 1000.0)
    return times


def folder_frames(folder: Path) -> list[Frame]:
    """The frames of ``folder`` replayed as the agent replays ``mode = "sequence"`` (virtual
    clock, 10 fps); only their lores views are kept (the trigger reads nothing else)."""
    source = ReplaySource(folder, mode="sequence", realtime=False, fps=10.0)
    source.start()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(Frame(frame.image[:1, :1], frame.lores, frame.timestamp, frame.index))
    source.close()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="git revision to compare with ('' for none)")
    today = MotionSection()
    parser.add_argument(
        "--baseline-areas",
        default=f"{today.min_area},{today.max_motion}",
        help="min_area,max_motion the baseline runs with, as its config held them (default: this tree's, "
        f"{today.min_area},{today.max_motion}; 0.004,0.002 before 2026-12-07's small items; 0.02,0.01 before "
        "issue 25); the costs depend on them (when a change starts a look)",
    )
    parser.add_argument("--drops", type=int, default=20, help="items dropped to time the frame each fires on")
    parser.add_argument("--folder", type=Path, action="append", default=[], help="a frame sequence to fire on")
    args = parser.parse_args()

    empty = frames(args.width, args.height, item=False, count=args.frames)
    occupied = frames(args.width, args.height, item=True, count=args.frames, seed=1)
    builders = {"this tree": lambda: MotionTrigger.from_config(TriggerSection())}
    if args.baseline:
        old = baseline_class(args.baseline)
        # The baseline with its own defaults, as its config held them.
        min_area, max_motion = (float(v) for v in args.baseline_areas.split(","))
        section = TriggerSection(motion=MotionSection(min_area=min_area, max_motion=max_motion))
        builders[args.baseline] = lambda: old.from_config(section)
    best: dict[str, list[float]] = {name: [float("inf"), float("inf")] for name in builders}
    states = {}
    for _ in range(args.repeat):
        for name, build in builders.items():
            us_empty, us_occupied, states[name] = measure(build, empty, occupied)
            best[name] = [min(best[name][0], us_empty), min(best[name][1], us_occupied)]
    print(
        f"MotionTrigger.update on {args.width}x{args.height} uint8, {args.frames} frames each, best of {args.repeat}:"
    )
    for name, (us_empty, us_occupied) in best.items():
        idle = us_empty * args.fps / 1e6 * 100
        print(
            f"  {name:10s} empty {us_empty:8.1f} us/frame  occupied {us_occupied:8.1f} us/frame  "
            f"idle CPU at {args.fps:g} fps {idle:.2f} % of a core  (state {states[name]!r})"
        )
    if args.baseline:
        mine, base = best["this tree"], best[args.baseline]
        print(f"  ratio this tree / {args.baseline}: empty {mine[0] / base[0]:.2f}, occupied {mine[1] / base[1]:.2f}")

    groups = {"dropped items": [drop_frames(seed, (args.width, args.height)) for seed in range(args.drops)]}
    groups.update({folder.name: [folder_frames(folder)] for folder in args.folder})
    for label, sequences in groups.items():
        fired: dict[str, list[float]] = {name: [] for name in builders}
        for sequence in sequences:
            for name, build in builders.items():  # the trees take turns, sequence by sequence
                fired[name] += fire_ms(build, sequence)
        line = ", ".join(f"{name} {np.median(ms):.3f} ms (n {len(ms)})" for name, ms in fired.items() if ms)
        print(f"frame that fires, median, {label}: {line}")
        if args.baseline and fired["this tree"] and fired[args.baseline]:
            ratio = np.median(fired["this tree"]) / np.median(fired[args.baseline])
            print(f"  ratio this tree / {args.baseline}: {ratio:.2f}")


if __name__ == "__main__":
    run_script(main)
