"""Where the idle agent's CPU goes at 10 fps (the bench's config: a replay of an empty bin,
mock pins, a mosquitto of its own on loopback).

    python scripts/bench_idle_profile.py [SECONDS] [--profile]   # CPU per thread; main-thread
                                                                 # CPU per frame by part
    python scripts/bench_idle_profile.py --trigger-gap           # update() back to back vs 100 ms apart,
                                                                 # and 100 ms apart with the frame read first;
                                                                 # by frame: looks that learn, other looks,
                                                                 # frames not read (idle looks)
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def thread_cpu() -> dict[str, float]:
    """Seconds of CPU of each thread of this process (``/proc``: 10 ms ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def idle(seconds: float, profile: bool) -> None:
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from bin_agent import preflight
    from bin_agent.agent import build_agent
    from bin_agent.tools.bench import bench_config_data, loopback_broker, toml_text

    with tempfile.TemporaryDirectory(prefix="bin-agent-idle-") as tmp:
        workdir = Path(tmp)
        with loopback_broker(workdir) as port:
            (workdir / "bench.toml").write_text(toml_text(bench_config_data(None, workdir, port, quick=True)))
            agent = build_agent(preflight.load(workdir / "bench.toml"), pin_factory=MockFactory(pin_class=MockPWMPin))
            assert agent.mqtt is None or agent.mqtt.wait_connected(15)
            spent = {"trigger": 0.0, "read": 0.0, "frames": 0}
            update, read = agent.trigger.update, agent.source.read

            def timed_update(frame: Any) -> bool:
                started = time.thread_time()
                try:
                    return update(frame)
                finally:
                    spent["trigger"] += time.thread_time() - started
                    spent["frames"] += 1

            def timed_read() -> Any:
                started = time.thread_time()
                try:
                    return read()
                finally:
                    spent["read"] += time.thread_time() - started

            agent.trigger.update, agent.source.read = timed_update, timed_read  # type: ignore[method-assign]
            result: dict[str, Any] = {}

            def measure() -> None:
                time.sleep(2.0)  # start-up and the trigger's first background
                cpu0, wall0, threads0, main0 = time.process_time(), time.monotonic(), thread_cpu(), dict(spent)
                time.sleep(seconds)
                wall = time.monotonic() - wall0
                result["cpu"] = 100.0 * (time.process_time() - cpu0) / wall
                result["threads"] = {
                    tid: 100.0 * (t - threads0.get(tid, 0.0)) / wall for tid, t in thread_cpu().items()
                }
                result["main"] = {key: spent[key] - main0[key] for key in spent}
                result["fps"] = result["main"]["frames"] / wall
                agent.stop()

            threading.Thread(target=measure, daemon=True).start()
            profiler = cProfile.Profile()
            if profile:
                profiler.enable()
            agent.run()
            if profile:
                profiler.disable()
    frames = max(1, result["main"]["frames"])
    print(f"idle CPU {result['cpu']:.2f} % of a core at {result['fps']:.1f} fps (process_time over {seconds:g} s)")
    print(
        f"main thread, CPU per frame: trigger.update {1e3 * result['main']['trigger'] / frames:.3f} ms, "
        f"source.read {1e3 * result['main']['read'] / frames:.3f} ms"
    )
    main_tid = str(os.getpid())
    for tid, share in sorted(result["threads"].items(), key=lambda item: -item[1]):
        print(f"  thread {tid}{' (main)' if tid == main_tid else ''}: {share:.2f} %")
    if profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


class _CountedLores:
    """A frame's ``lores`` that notes whether the trigger read it (looked at the frame)."""

    def __init__(self, pixels: Any) -> None:
        self.pixels, self.read = pixels, False

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        self.read = True
        return self.pixels


def trigger_gap() -> None:
    import numpy as np

    from bin_agent.config.schema import CameraSection, TriggerSection
    from bin_agent.sources.base import Frame
    from bin_agent.tools.bench import trigger_frames
    from bin_agent.triggers import build_trigger

    frames = trigger_frames(200)
    # "read first": the frame's bytes copied (outside the clock) just before update(), so
    # the frame is in the cache and update() pays only for its own code and arrays: how
    # much of the 100 ms figure is the frame coming from memory.
    for gap, read_first in ((0.0, False), (0.1, False), (0.1, True)) * 2:
        trigger = build_trigger(TriggerSection(), drop_zone=CameraSection().zone, pin_factory=None)
        spent: list[float] = []
        kinds: dict[str, list[float]] = {"learning": [], "other": [], "not read": []}
        for index, frame in enumerate(frames):
            time.sleep(gap)
            if read_first:
                frame.lores.tobytes()
            lores = _CountedLores(frame.lores)
            counted = Frame(frame.image, lores, frame.timestamp, frame.index)  # type: ignore[arg-type]
            noise = getattr(trigger, "noise_map", None)
            started = time.thread_time()
            trigger.update(counted)
            took = time.thread_time() - started
            if index < 20:  # the first background and noise map
                continue
            spent.append(took)
            after = getattr(trigger, "noise_map", None)
            learnt = noise is not None and after is not None and not np.array_equal(noise, after)
            kinds["learning" if learnt else "other" if lores.read else "not read"].append(took)
        trigger.close()
        how = ", the frame read first" if read_first else ""
        by_kind = ", ".join(
            f"{kind} {1e3 * float(np.median(times)):.3f} ms ({len(times)})" for kind, times in kinds.items() if times
        )
        # The mean, not the median: with idle looks half the frames are not read at all.
        print(
            f"frames {gap:.1f} s apart{how}: update() mean {1e3 * float(np.mean(spent)):.3f} ms CPU; medians: {by_kind}"
        )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--trigger-gap" in sys.argv:
        trigger_gap()
    else:
        idle(float(args[0]) if args else 20.0, "--profile" in sys.argv)
