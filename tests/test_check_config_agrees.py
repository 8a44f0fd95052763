"""``check-config`` agrees with ``run`` (issue 24 item 6), with the real commands:
a FIFO where an image should be, a fill sensor without its echo pin, a pin factory
whose library is missing, a state directory on a read-only file system."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_MODELS, base_config, tmpfs, write_toml
from tests.test_replay import write_photo

REPO = Path(__file__).resolve().parent.parent


def bin_agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bin_agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def both(config: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    return bin_agent("check-config", str(config)), bin_agent("run", "--config", str(config))


def config_with(tmp_path: Path, **sections: dict) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    write_photo(photos / "a.png", (200, 0, 0), size=(160, 120))
    data = base_config(tmp_path, photos, model=TINY_MODELS / "tiny_uint8.tflite", mqtt=False)
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return write_toml(tmp_path / "agent.toml", data)


def test_a_fifo_as_empty_frame_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "empty.png"
    os.mkfifo(fifo)
    photos = tmp_path / "photos"
    config = config_with(tmp_path)
    text = config.read_text().replace(f'path = "{photos}"', f'path = "{photos}"\nempty_frame = "{fifo}"')
    config.write_text(text)
    checked, ran = both(config)  # before: both hung until killed (the timeout raises)
    for result in (checked, ran):
        assert result.returncode == 78, result.stderr
        assert "camera.replay.empty_frame" in result.stderr and "not a regular file" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_fill_sensor_without_its_echo_pin_is_refused(tmp_path):
    config = config_with(tmp_path, fill={"sensors": {"paper": {"trigger_pin": 23}}})
    checked = bin_agent("check-config", str(config))
    assert checked.returncode == 78
    assert "fill.sensors.paper.echo_pin: required" in checked.stderr, checked.stderr


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio is installed here")
def test_a_pin_factory_without_its_library_fails_check_config_as_it_fails_run(tmp_path):
    config = config_with(tmp_path, actuator={"pin_factory": "lgpio"})
    checked, ran = both(config)
    assert ran.returncode == 78 and "lgpio" in ran.stderr
    assert checked.returncode == 78, "check-config said OK where run refuses"
    assert "actuator.pin_factory" in checked.stderr and "python3-lgpio" in checked.stderr


def test_a_state_dir_that_cannot_be_written_fails_check_config_as_it_fails_run(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as mount:
        config = config_with(tmp_path, agent={"state_dir": str(mount / "state")})
        checked, ran = both(config)
    assert ran.returncode != 0, "run must refuse a read-only state directory"
    assert checked.returncode == 78, f"check-config said OK where run exits {ran.returncode}"
    assert "agent.state_dir: cannot write" in checked.stderr and "Read-only file system" in checked.stderr
