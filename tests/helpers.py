"""Small builders shared by tests."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bin_agent import DEFAULT_MODEL_NAME

REPO = Path(__file__).resolve().parent.parent
TINY_MODELS = REPO / "tests" / "data" / "models"
SHIPPED_MODEL = REPO / "models" / DEFAULT_MODEL_NAME


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, poll: float = 0.05) -> bool:
    """Whether ``predicate()`` comes true within ``timeout`` seconds (asked every ``poll``
    seconds, and once more at the end: a slow machine gets its last chance)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def sigkill_when_it_says(code: str, args: list[str], said: str) -> None:
    """Run ``code`` in a Python of its own and SIGKILL it as soon as it prints ``said`` (the
    point a power cut is to hit), as a crash would end it."""
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == said
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
    assert process.returncode == -signal.SIGKILL


def base_config(
    tmp_path: Path,
    replay_path: Path | None = None,
    *,
    port: int = 1883,
    model: Path = TINY_MODELS / "tiny_uint8.tflite",
    mqtt: bool = True,
) -> dict[str, Any]:
    """A valid config dict: replay source, mock pins, fast virtual-clock replay.

    Without ``replay_path`` the replay plays one small photo made in ``tmp_path/replay``
    (a replay folder without images is a config error)."""
    if replay_path is None:
        from PIL import Image

        replay_path = tmp_path / "replay"
        replay_path.mkdir(exist_ok=True)
        Image.new("RGB", (64, 48), (30, 120, 200)).save(replay_path / "item.png")
    return copy.deepcopy(
        {
            "agent": {"bin_id": "test-bin", "state_dir": str(tmp_path / "state"), "drain_seconds": 5.0},
            "camera": {
                "source": "replay",
                "replay": {
                    "path": str(replay_path),
                    "realtime": False,
                    "fps": 10.0,
                    "item_seconds": 1.5,
                    "empty_seconds": 1.0,
                },
            },
            "trigger": {"mode": "motion", "settle_seconds": 0.5},
            "model": {"path": str(model), "num_threads": 1},
            "actuator": {
                "kind": "servo",
                "pin_factory": "mock",
                "dwell_seconds": 0.0,
                "servo": {"travel_seconds": 0.0},
            },
            "mqtt": {
                "enabled": mqtt,
                "host": "127.0.0.1",
                "port": port,
                "reconnect_min_seconds": 0.2,
                "reconnect_max_seconds": 1.0,
            },
        }
    )


def toml_string(text: str) -> str:
    """A TOML basic string; control characters (NUL included) as \\u escapes."""
    return json.dumps(text).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    """Minimal TOML writer for test configs (tables, strings, numbers, bools, lists)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return toml_string(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{toml_key(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(f"{prefix}.{toml_key(k)}" if prefix else toml_key(k), v)

    table("", data)
    path.write_text("\n".join(lines) + "\n")
    return path


def check_with_home_assistant(capture: dict[str, Any], tmp_path: Path) -> None:
    """Run Home Assistant's own discovery schemas and templates on what a bin published.

    ``capture`` is what ``scripts/ha_check_discovery.py`` reads (the retained configs and the
    states seen). It needs a Python with ``homeassistant`` installed, named by
    ``BIN_AGENT_HA_PYTHON`` (docs/dashboards.md); without one the calling test is skipped.
    """
    import pytest

    python = os.environ.get("BIN_AGENT_HA_PYTHON")
    if not python:
        pytest.skip("BIN_AGENT_HA_PYTHON is not set (a python with homeassistant installed; see docs/dashboards.md)")
    capture_file = tmp_path / "capture.json"
    capture_file.write_text(json.dumps(capture))
    result = subprocess.run(
        [python, str(REPO / "scripts" / "ha_check_discovery.py"), str(capture_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout


def needs_tensorflow() -> None:
    """Skip the calling test where TensorFlow (the ``[train]`` extra) is missing; fail it in CI,
    which installs it, so a broken install cannot pass as a skip."""
    import pytest

    try:
        import tensorflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("TensorFlow is not installed (pip install -e '.[train]')")
        pytest.skip("TensorFlow is not installed")


def notify_listener(address: Path, timeout: float = 0.2) -> socket.socket:
    """A datagram socket at ``address`` playing systemd's side of ``NOTIFY_SOCKET``
    (READY=1, WATCHDOG=1, STATUS=...), with ``timeout`` on each ``recv``."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(timeout)
    return listener


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real tmpfs of its own at ``folder`` (made if missing), mounted with ``options``
    (``"size=1m"``, ``"ro,size=64k"`` ...): a small card to fill or make read-only. Unmounted
    (lazily: a test's open file does not keep it) afterwards; the test is skipped where
    mounting is not allowed (it needs root or CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
