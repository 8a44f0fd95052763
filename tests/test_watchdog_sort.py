"""The systemd watchdog across a long sort: pings go on while the chute holds
(a real notify socket, a real gpiozero servo on MockFactory), stop when a step
overruns its time, and a sort the watchdog and the stop timeout cannot cover
is a config error."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.config import EX_CONFIG, ConfigError
from bin_agent.notify import Notifier
from tests.helpers import TINY_MODELS, base_config, write_toml

TINY = TINY_MODELS / "tiny_uint8.tflite"


@pytest.fixture
def listener(tmp_path: Path):
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:
        pytest.skip("tmp path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield sock, str(path)
    sock.close()


def drain(sock: socket.socket, wait: float) -> list[bytes]:
    got = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096))
        except TimeoutError:
            pass
    return got


def test_keepalive_pings_while_blocked_and_stops_at_its_deadline(listener):
    sock, path = listener
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}, clock=lambda: now[0])
    with notifier.keepalive(10.0):
        assert sock.recv(4096) == b"WATCHDOG=1"  # at once
        now[0] = 100.3  # half the interval passed: the helper pings
        assert sock.recv(4096) == b"WATCHDOG=1"
        now[0] = 110.5  # the step overran its 10 s: no more pings, systemd may act
        time.sleep(0.2)
        drain(sock, 0.3)
        now[0] = 111.0
        assert drain(sock, 0.5) == [], "pinged past the keepalive's deadline"
    # Without systemd watching, it is a plain block.
    with Notifier({}).keepalive(5.0):
        pass


def test_watchdog_keeps_being_fed_during_a_long_sort(tmp_path, listener, trashnet_dir):
    """WatchdogSec=3 s against a 6 s dwell on a real (mock-pin) servo. Before:
    no ping for the whole sort (6.4 s), systemd would have killed the agent."""
    sock, path = listener
    photos = tmp_path / "photos"
    photos.mkdir()
    first = min((trashnet_dir / "glass").iterdir())
    (photos / first.name).symlink_to(first)
    data = base_config(tmp_path, photos, model=TINY, mqtt=False)
    data["camera"]["replay"].update({"realtime": True, "fps": 20.0, "item_seconds": 1.0, "empty_seconds": 0.5})
    data["actuator"].update({"dwell_seconds": 6.0, "servo": {"travel_seconds": 0.2}})
    config = preflight.load_dict(data, base_dir=tmp_path)
    watchdog_seconds = 3.0
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(watchdog_seconds * 1e6))})
    agent = build_agent(config, notifier=notifier)
    pings: list[float] = []
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                if sock.recv(4096) == b"WATCHDOG=1":
                    pings.append(time.monotonic())
            except TimeoutError:
                pass

    reader = threading.Thread(target=listen)
    reader.start()
    sort_started = []
    real_sort = agent.sorter.sort

    def timed_sort(compartment: str) -> None:
        sort_started.append(time.monotonic())
        real_sort(compartment)
        sort_started.append(time.monotonic())

    agent.sorter.sort = timed_sort  # type: ignore[method-assign]  # timing only; the real servo moves
    try:
        assert agent.run() == 0
    finally:
        done.set()
        reader.join(5)
    assert agent.items_sorted == 1 and len(sort_started) == 2
    start, end = sort_started
    assert end - start >= 6.0, "the sort really held for its dwell"
    during = [t for t in pings if start <= t <= end]
    assert len(during) >= 2, f"only {len(during)} ping(s) during a {end - start:.1f} s sort"
    around = [t for t in pings if start - watchdog_seconds <= t <= end + watchdog_seconds]
    gaps = [b - a for a, b in itertools.pairwise(around)]
    assert max(gaps) < watchdog_seconds, f"a {max(gaps):.1f} s gap without a ping"


def test_sort_longer_than_the_stop_timeout_is_a_config_error(tmp_path):
    data = base_config(tmp_path)
    data["actuator"].update({"dwell_seconds": 60.0, "servo": {"travel_seconds": 5.0}})
    with pytest.raises(ConfigError) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith("actuator.dwell_seconds: one sort") and "70 s" in p for p in info.value.problems)
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "check-config", str(write_toml(tmp_path / "slow.toml", data))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG and "actuator.dwell_seconds" in result.stderr
    assert "Traceback" not in result.stderr
    data["actuator"].update({"dwell_seconds": 14.0, "servo": {"travel_seconds": 0.5}})
    preflight.load_dict(data, base_dir=tmp_path)  # 15 s: allowed
