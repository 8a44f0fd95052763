"""Where the outbox flush spends its time: ``bench_flush`` (one bare-paho/agent pair of N
events) with paho's network thread (``Client._thread_main``) and the agent's pump
(``MqttLink._pump``) each under their own ``cProfile.Profile``, and the CPU time of each
thread (``time.thread_time()``). For whichever ``bin_agent`` is first on the path.

    python scripts/profile_flush.py [EVENTS] [--cpu-only]   # --cpu-only: no cProfile, CPU per thread alone
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from bin_agent import preflight
from bin_agent.errors import run_script
from bin_agent.mqtt import link
from bin_agent.tools.bench import bench_config_data, bench_flush, loopback_broker, toml_text

profiles: dict[str, list[cProfile.Profile]] = {}
thread_cpu: dict[str, list[float]] = {}


def measured(name: str, run: Callable[..., Any], profile: bool) -> Callable[..., Any]:
    """``run`` (a thread's whole body) timed in CPU seconds of its thread, and profiled."""

    def body(self: Any, *args: Any, **kwargs: Any) -> Any:
        profiler = cProfile.Profile() if profile else None
        started = time.thread_time()
        try:
            return profiler.runcall(run, self, *args, **kwargs) if profiler else run(self, *args, **kwargs)
        finally:
            thread_cpu.setdefault(name, []).append(time.thread_time() - started)
            if profiler:
                profiles.setdefault(name, []).append(profiler)

    return body


def top(profiler: cProfile.Profile, lines: int) -> str:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(lines)
    return "\n".join(line for line in text.getvalue().splitlines() if line.strip())


def main() -> int:
    profile = "--cpu-only" not in sys.argv
    numbers = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    events = int(numbers[0]) if numbers else 10_000
    link.MqttLink._pump = measured("pump", link.MqttLink._pump, profile)  # type: ignore[method-assign]
    paho.Client._thread_main = measured("paho", paho.Client._thread_main, profile)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="bin-agent-profile-") as tmp:
        workdir = Path(tmp)
        with loopback_broker(workdir) as port:
            if port is None:
                print("no mosquitto", file=sys.stderr)
                return 1
            (workdir / "bench.toml").write_text(toml_text(bench_config_data(None, workdir, port, quick=False)))
            print(bench_flush(preflight.load(workdir / "bench.toml"), workdir, events, pairs=1))
    # paho's thread ran twice (bare paho, then the agent), the pump once.
    bare, agent = thread_cpu["paho"]
    print(
        f"thread CPU: bare paho's network thread {bare:.3f} s; agent: paho's thread {agent:.3f} s, pump {thread_cpu['pump'][0]:.3f} s"
    )
    if profile:
        print("===== the agent's paho thread\n" + top(profiles["paho"][1], 18))
        print("===== the pump\n" + top(profiles["pump"][0], 18))
        print("===== bare paho's network thread\n" + top(profiles["paho"][0], 10))
    return 0


if __name__ == "__main__":
    run_script(main)
