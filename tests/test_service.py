"""`bin-agent` as a process: signals, Last Will, the classify command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bin_agent.store import Store
from tests.helpers import TINY_MODELS, base_config, write_toml

TINY = TINY_MODELS / "tiny_uint8.tflite"


@pytest.fixture
def few_photos(tmp_path: Path, trashnet_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("glass", "paper", "metal"):
        first = sorted((trashnet_dir / label).iterdir())[0]
        (folder / first.name).symlink_to(first)
    return folder


def start_agent(tmp_path: Path, photos: Path, port: int, **replay) -> subprocess.Popen[str]:
    data = base_config(tmp_path, photos, port=port, model=TINY)
    data["camera"]["replay"].update(
        {"realtime": True, "fps": 20.0, "loop": True, "item_seconds": 0.6, "empty_seconds": 0.4, **replay}
    )
    config = write_toml(tmp_path / "agent.toml", data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigterm_stops_cleanly_offline_published_outbox_intact(tmp_path, few_photos, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    agent = start_agent(tmp_path, few_photos, mosquitto.port)
    try:
        assert sub.wait_for(lambda: len(sub.on("/event")) >= 3, 60), agent.stderr and "no events"
        agent.send_signal(signal.SIGTERM)
        out, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert "Traceback" not in err
    assert sub.wait_for(lambda: sub.on("/status")[-1].payload == b"offline", 5)
    store = Store(tmp_path / "state" / "bin-agent.db")
    assert store.integrity_check() == "ok"
    received = {e["id"] for e in sub.json_on("/event")}
    # Every counted item was either delivered or is still waiting in the outbox.
    assert store.counts().total == len(received) + store.pending_count()


def test_sigkill_leaves_the_last_will(tmp_path, few_photos, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/status")
    agent = start_agent(tmp_path, few_photos, mosquitto.port)
    try:
        assert sub.wait_for(lambda: any(m.payload == b"online" for m in sub.messages), 30)
        agent.kill()
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert sub.wait_for(lambda: sub.messages[-1].payload == b"offline", 10), "no Last Will"


def test_classify_command_prints_class_and_top3(trashnet_dir, tmp_path):
    photo = sorted((trashnet_dir / "glass").iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "classify", "--model", str(TINY), "--json", str(photo), str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1  # one image failed
    assert "Traceback" not in result.stderr
    assert "broken.jpg: not a readable image" in result.stderr
    rows = json.loads(result.stdout)
    assert rows[0]["class"] in {"cardboard", "glass", "metal", "paper", "plastic", "trash"}
    assert len(rows[0]["top3"]) == 3 and rows[1]["error"]
    plain = subprocess.run(
        [sys.executable, "-m", "bin_agent", "classify", "--model", str(TINY), str(photo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode == 0 and "top-3:" in plain.stdout


def test_bad_model_file_refuses_to_start(tmp_path, few_photos):
    model = tmp_path / "m.tflite"
    model.write_bytes(TINY.read_bytes()[:200])
    for suffix in (".labels.txt", ".json"):
        (tmp_path / f"m{suffix}").write_bytes((TINY.parent / f"tiny_uint8{suffix}").read_bytes())
    data = base_config(tmp_path, few_photos, model=model, mqtt=False)
    config = write_toml(tmp_path / "agent.toml", data)
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 78
    assert "m.tflite" in result.stderr and "Traceback" not in result.stderr


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path, few_photos):
    """Run the agent as systemd would: a real notify socket and a watchdog."""
    import socket as socketlib

    address = str(tmp_path / "notify.sock")
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    data = base_config(tmp_path, few_photos, model=TINY, mqtt=False)
    data["camera"]["replay"].update({"realtime": True, "fps": 20.0, "loop": True})
    config = write_toml(tmp_path / "agent.toml", data)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    agent = subprocess.Popen(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 3:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
        agent.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(m.startswith("STOPPING=1") for m in messages):
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
        agent.wait(20)
    finally:
        if agent.poll() is None:
            agent.kill()
        listener.close()
    ready = [i for i, m in enumerate(messages) if m.startswith("READY=1")]
    pings = [i for i, m in enumerate(messages) if m == "WATCHDOG=1"]
    assert ready, messages
    assert len(pings) >= 3 and min(pings) > ready[0], "watchdog pings must follow READY"
    assert any(m.startswith("STOPPING=1") for m in messages)
    assert agent.returncode == 0


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"camera": {"source": "picamera2"}}, "picamera2 is not installed"),
        ({"actuator": {"pin_factory": "pigpio"}}, "pin factory 'pigpio' cannot load"),
    ],
)
def test_missing_hardware_libraries_fail_fast_with_the_fix(tmp_path, few_photos, patch, message):
    data = base_config(tmp_path, few_photos, model=TINY, mqtt=False)
    for section, values in patch.items():
        data[section].update(values)
    config = write_toml(tmp_path / "agent.toml", data)
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 78
    assert message in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr
    # One line from us; LiteRT's own "INFO: Created ... XNNPACK delegate" may precede it.
    ours = [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")]
    assert len(ours) == 1, result.stderr
