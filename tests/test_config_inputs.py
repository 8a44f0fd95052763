"""Broken configs, one fault each: ``check-config`` and ``run`` both exit 78 with
one line that names the key, never a traceback.

Each case is a valid test config with one value changed. Both commands run as
real subprocesses (``python -m bin_agent``), as systemd and a person would run
them. Values starting with ``@`` name a file or folder made by the ``env`` fixture.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bin_agent.config import EX_CONFIG
from tests.helpers import TINY_MODELS, base_config, write_toml

LONG = "x" * 70_000
ANGLES = {"paper": -60.0, "glass": -20.0, "packaging": 20.0, "residual": 60.0}
COMPARTMENTS = {
    "cardboard": "paper",
    "paper": "paper",
    "glass": "glass",
    "metal": "packaging",
    "plastic": "packaging",
    "trash": "residual",
}

CASES: list[tuple[str, dict[str, Any], str]] = [
    # ---- the faults of issue 15
    ("host-empty", {"mqtt.host": ""}, "mqtt.host"),
    ("host-empty-label", {"mqtt.host": "a..b"}, "mqtt.host"),
    ("client-id-70k", {"mqtt.client_id": LONG}, "mqtt.client_id"),
    ("topic-prefix-nul", {"mqtt.topic_prefix": "smart\x00bin"}, "mqtt.topic_prefix"),
    ("views-true", {"model.views": True}, "model.views"),
    ("password-file-binary", {"mqtt.username": "u", "mqtt.password_file": "@binary"}, "mqtt.password_file"),
    ("empty-frame-missing", {"camera.replay.empty_frame": "@missing"}, "camera.replay.empty_frame"),
    ("replay-folder-without-images", {"camera.replay.path": "@empty_dir"}, "camera.replay.path"),
    # ---- wrong types: bool vs number, number vs string, table vs value
    ("bin-id-int", {"agent.bin_id": 5}, "agent.bin_id"),
    ("print-events-int", {"agent.print_events": 1}, "agent.print_events"),
    ("drain-bool", {"agent.drain_seconds": True}, "agent.drain_seconds"),
    ("drain-string", {"agent.drain_seconds": "5"}, "agent.drain_seconds"),
    ("drain-nan", {"agent.drain_seconds": float("nan")}, "agent.drain_seconds"),
    ("drain-inf", {"agent.drain_seconds": float("inf")}, "agent.drain_seconds"),
    ("log-level-lowercase", {"agent.log_level": "debug"}, "agent.log_level"),
    ("source-bool", {"camera.source": True}, "camera.source"),
    ("main-size-bool-item", {"camera.main_size": [640, True]}, "camera.main_size[1]"),
    ("main-size-string", {"camera.main_size": "640x480"}, "camera.main_size"),
    ("main-size-three", {"camera.main_size": [640, 480, 3]}, "camera.main_size"),
    ("replay-table-as-string", {"camera.replay": "photos"}, "camera.replay"),
    ("seed-float", {"camera.replay.seed": 1.5}, "camera.replay.seed"),
    ("views-three", {"model.views": 3}, "model.views"),
    ("views-float", {"model.views": 1.0}, "model.views"),
    ("num-threads-float", {"model.num_threads": 2.0}, "model.num_threads"),
    ("mode-bool", {"trigger.mode": False}, "trigger.mode"),
    ("compartment-int", {"router.compartments.glass": 5}, "router.compartments.glass"),
    ("angle-string", {"actuator.servo.angles.paper": "left"}, "actuator.servo.angles.paper"),
    ("mqtt-enabled-string", {"mqtt.enabled": "yes"}, "mqtt.enabled"),
    ("port-string", {"mqtt.port": "1883"}, "mqtt.port"),
    ("port-bool", {"mqtt.port": True}, "mqtt.port"),
    ("keepalive-float", {"mqtt.keepalive": 30.5}, "mqtt.keepalive"),
    ("section-as-value", {"mqtt": 5}, "mqtt"),
    # ---- out of range
    ("drain-negative", {"agent.drain_seconds": -1}, "agent.drain_seconds"),
    ("camera-fps-zero", {"camera.fps": 0}, "camera.fps"),
    ("replay-fps-huge", {"camera.replay.fps": 1e9}, "camera.replay.fps"),
    ("limit-negative", {"camera.replay.limit": -1}, "camera.replay.limit"),
    ("max-pixels-zero", {"camera.replay.max_pixels": 0}, "camera.replay.max_pixels"),
    ("lores-larger-than-main", {"camera.lores_size": [1600, 1200]}, "camera.lores_size"),
    ("settle-too-long", {"trigger.settle_seconds": 31}, "trigger.settle_seconds"),
    ("max-motion-above-min-area", {"trigger.motion.max_motion": 0.5}, "trigger.motion.max_motion"),
    ("gpio-pin-28", {"trigger.gpio.pin": 28}, "trigger.gpio.pin"),
    ("num-threads-zero", {"model.num_threads": 0}, "model.num_threads"),
    ("threshold-above-one", {"router.confidence_threshold": 1.5}, "router.confidence_threshold"),
    ("dwell-too-long", {"actuator.dwell_seconds": 61}, "actuator.dwell_seconds"),
    ("servo-pin-negative", {"actuator.servo.pin": -1}, "actuator.servo.pin"),
    ("angle-outside-range", {"actuator.servo.angles": {**ANGLES, "residual": 120.0}}, "actuator.servo.angles.residual"),
    ("buzzer-pin-28", {"actuator.buzzer_pin": 28}, "actuator.buzzer_pin"),
    ("status-led-clash", {"actuator.status_led_pin": 18}, "actuator.status_led_pin"),
    ("port-70000", {"mqtt.port": 70000}, "mqtt.port"),
    ("keepalive-zero", {"mqtt.keepalive": 0}, "mqtt.keepalive"),
    ("max-inflight-zero", {"mqtt.max_inflight": 0}, "mqtt.max_inflight"),
    (
        "reconnect-min-above-max",
        {"mqtt.reconnect_min_seconds": 5.0, "mqtt.reconnect_max_seconds": 2.0},
        "mqtt.reconnect_min_seconds",
    ),
    # ---- unknown names
    ("unknown-key", {"agent.bin_idd": "b"}, "agent.bin_idd"),
    ("unknown-section", {"camra.fps": 10}, "camra"),
    ("unknown-nested-key", {"camera.replay.pth": "x"}, "camera.replay.pth"),
    ("key-in-wrong-section", {"agent.host": "broker"}, "agent.host"),
    ("unknown-literal", {"actuator.pin_factory": "wiringpi"}, "actuator.pin_factory"),
    ("literal-trailing-space", {"actuator.kind": "servo "}, "actuator.kind"),
    ("unknown-class", {"router.compartments": {**COMPARTMENTS, "wood": "residual"}}, "router.compartments.wood"),
    (
        "class-name-with-nul",
        {"router.compartments": {**COMPARTMENTS, "gla\x00ss": "glass"}},
        'router.compartments."gla\\u0000ss"',
    ),
    # ---- empty strings, control characters
    ("bin-id-empty", {"agent.bin_id": ""}, "agent.bin_id"),
    ("bin-id-newline", {"agent.bin_id": "bin\n01"}, "agent.bin_id"),
    ("bin-id-too-long", {"agent.bin_id": "b" * 65}, "agent.bin_id"),
    ("bin-id-wildcard", {"agent.bin_id": "bin+"}, "agent.bin_id"),
    ("state-dir-empty", {"agent.state_dir": ""}, "agent.state_dir"),
    ("state-dir-nul", {"agent.state_dir": "/tmp/a\x00b"}, "agent.state_dir"),
    ("fallback-tab", {"router.fallback": "resi\tdual"}, "router.fallback"),
    ("fallback-empty", {"router.fallback": ""}, "router.fallback"),
    ("compartment-empty", {"router.compartments": {**COMPARTMENTS, "cardboard": ""}}, "router.compartments.cardboard"),
    (
        "compartment-name-escape",
        {"router.compartments": {**COMPARTMENTS, "glass": "gl\x1bass"}},
        "router.compartments.glass",
    ),
    ("username-newline", {"mqtt.username": "u\nv"}, "mqtt.username"),
    ("model-path-empty", {"model.path": ""}, "model.path"),
    ("model-path-del", {"model.path": "model\x7f.tflite"}, "model.path"),
    # ---- host names (RFC 1123) and IP literals
    ("host-leading-hyphen", {"mqtt.host": "-broker.example"}, "mqtt.host"),
    ("host-trailing-hyphen", {"mqtt.host": "broker-.example"}, "mqtt.host"),
    ("host-label-64", {"mqtt.host": "b" * 64 + ".example"}, "mqtt.host"),
    ("host-254-chars", {"mqtt.host": ".".join(["b" * 50] * 5) + "bbbb"}, "mqtt.host"),
    ("host-space", {"mqtt.host": "bro ker"}, "mqtt.host"),
    ("host-url", {"mqtt.host": "mqtt://broker"}, "mqtt.host"),
    ("host-with-port", {"mqtt.host": "broker:1883"}, "mqtt.host"),
    ("host-underscore", {"mqtt.host": "my_broker"}, "mqtt.host"),
    ("host-nul", {"mqtt.host": "broker\x00"}, "mqtt.host"),
    ("host-unicode", {"mqtt.host": "brøker"}, "mqtt.host"),
    ("host-bad-ipv6", {"mqtt.host": "::1::2"}, "mqtt.host"),
    # ---- MQTT topic and client id rules
    ("prefix-hash", {"mqtt.topic_prefix": "smartbin/#"}, "mqtt.topic_prefix"),
    ("prefix-plus", {"mqtt.topic_prefix": "smart+bin"}, "mqtt.topic_prefix"),
    ("prefix-leading-slash", {"mqtt.topic_prefix": "/smartbin"}, "mqtt.topic_prefix"),
    ("prefix-trailing-slash", {"mqtt.topic_prefix": "smartbin/"}, "mqtt.topic_prefix"),
    ("prefix-dollar", {"mqtt.topic_prefix": "$SYS"}, "mqtt.topic_prefix"),
    ("prefix-empty", {"mqtt.topic_prefix": ""}, "mqtt.topic_prefix"),
    ("prefix-over-65535-bytes", {"mqtt.topic_prefix": "é" * 33_000}, "mqtt.topic_prefix"),
    ("client-id-129-bytes", {"mqtt.client_id": "c" * 129}, "mqtt.client_id"),
    ("client-id-slash", {"mqtt.client_id": "bin/01"}, "mqtt.client_id"),
    ("client-id-control", {"mqtt.client_id": "bin\x0101"}, "mqtt.client_id"),
    ("default-client-id-too-long", {"agent.bin_id": "é" * 64}, "mqtt.client_id"),
    # ---- paths and files
    ("state-dir-is-a-file", {"agent.state_dir": "@text_file"}, "agent.state_dir"),
    ("state-dir-below-a-file", {"agent.state_dir": "@text_file/state"}, "agent.state_dir"),
    ("replay-path-missing", {"camera.replay.path": "@missing"}, "camera.replay.path"),
    ("replay-path-not-an-image", {"camera.replay.path": "@text_file"}, "camera.replay.path"),
    ("empty-frame-not-an-image", {"camera.replay.empty_frame": "@binary_jpg"}, "camera.replay.empty_frame"),
    ("empty-frame-a-folder", {"camera.replay.empty_frame": "@empty_dir"}, "camera.replay.empty_frame"),
    ("empty-frame-too-large", {"camera.replay.empty_frame": "@huge_png"}, "camera.replay.empty_frame"),
    ("model-missing", {"model.path": "@missing"}, "model.path"),
    ("model-labels-binary", {"model.path": "@model_binary_labels"}, "model.path"),
    ("model-metadata-garbage", {"model.path": "@model_bad_metadata"}, "model.path"),
    ("model-file-garbage", {"model.path": "@model_garbage"}, "model.path"),
    ("password-file-missing", {"mqtt.username": "u", "mqtt.password_file": "@missing"}, "mqtt.password_file"),
    ("password-file-a-folder", {"mqtt.username": "u", "mqtt.password_file": "@empty_dir"}, "mqtt.password_file"),
    ("password-file-huge", {"mqtt.username": "u", "mqtt.password_file": "@huge_text"}, "mqtt.password_file"),
    ("password-file-nul", {"mqtt.username": "u", "mqtt.password_file": "@nul_password"}, "mqtt.password_file"),
    ("password-file-without-username", {"mqtt.password_file": "@password"}, "mqtt.username"),
    # /proc/self/mem exists but cannot be read from its start (EIO), even by root.
    ("password-file-unreadable", {"mqtt.username": "u", "mqtt.password_file": "/proc/self/mem"}, "mqtt.password_file"),
    ("empty-frame-unreadable", {"camera.replay.empty_frame": "/proc/self/mem"}, "camera.replay.empty_frame"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """The files the cases point at."""
    root = tmp_path_factory.mktemp("inputs")
    photos = root / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(photos / "red.jpg")
    files = {"photos": photos, "missing": root / "missing.jpg", "empty_dir": root / "empty"}
    files["empty_dir"].mkdir()
    files["text_file"] = root / "notes.txt"
    files["text_file"].write_text("not an image\n")
    files["binary"] = root / "secret.bin"
    files["binary"].write_bytes(bytes(range(256)) * 4)
    files["binary_jpg"] = root / "fake.jpg"
    files["binary_jpg"].write_bytes(bytes(range(256)) * 4)
    files["huge_png"] = root / "huge.png"
    write_blank_png(files["huge_png"], 6000, 6000)
    files["huge_text"] = root / "huge.txt"
    files["huge_text"].write_text("p" * 70_000)
    files["nul_password"] = root / "nul.txt"
    files["nul_password"].write_bytes(b"pass\x00word\n")
    files["password"] = root / "password.txt"
    files["password"].write_text("s3cret\n")
    for name, change in (
        ("model_binary_labels", ".labels.txt"),
        ("model_bad_metadata", ".json"),
        ("model_garbage", ".tflite"),
    ):
        folder = root / name
        folder.mkdir()
        for suffix in (".tflite", ".labels.txt", ".json"):
            shutil.copy(TINY_MODELS / f"tiny_uint8{suffix}", folder / f"m{suffix}")
        target = folder / f"m{change}"
        target.write_bytes(b"\xff\xfe\x00garbage" * 20 if change != ".json" else b"{not json")
        files[name] = folder / "m.tflite"
    return files


def write_blank_png(path: Path, width: int, height: int) -> None:
    """A grey PNG of any size written row by row: a few KB on disk, never the whole picture in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width  # filter byte + one grey byte per pixel
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def broken_config(tmp_path: Path, env: dict[str, Path], changes: dict[str, Any]) -> Path:
    data = base_config(tmp_path, env["photos"], port=1, mqtt=True)
    for dotted, value in changes.items():
        if isinstance(value, str) and value.startswith("@"):
            name, _, rest = value[1:].partition("/")
            value = str(env[name] / rest) if rest else str(env[name])
        node = data
        *parents, key = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value
    return write_toml(tmp_path / "broken.toml", data)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, timeout=120, check=False
    )


# The interpreter's own banner (C++, on stderr) when check-config loads a model.
NOISE = ("INFO: Created TensorFlow Lite",)


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("changes, key", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_config_exits_78_with_one_line_naming_the_key(tmp_path, env, changes, key, command):
    path = broken_config(tmp_path, env, changes)
    args = ["check-config", str(path)] if command == "check-config" else ["run", "--config", str(path)]
    result = run_cli(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(NOISE)]
    assert result.returncode == EX_CONFIG, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, lines
    assert f" {key}: " in lines[0], lines[0]
    assert len(lines[0]) < 400, "the line quotes too much of the value"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x00\x01\x02binary", "not valid TOML"),
        (b"\xff\xfe[agent]\n", "cannot read the file"),
        (b"[agent]\nbin_id = 'a'\n[agent]\n", "not valid TOML"),
        (b'[mqtt]\nhost = "a\x00b"\n', "not valid TOML"),
    ],
)
def test_unreadable_config_files_give_one_line(tmp_path, content, expected):
    path = tmp_path / "broken.toml"
    path.write_bytes(content)
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = run_cli(*args)
        assert result.returncode == EX_CONFIG
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_config_path_is_a_folder(tmp_path):
    for args in (["check-config", str(tmp_path)], ["run", "--config", str(tmp_path)]):
        result = run_cli(*args)
        assert result.returncode == EX_CONFIG
        assert result.stderr.count("\n") == 1 and "cannot read the file" in result.stderr


def test_accepted_edge_values(tmp_path, env):
    """What the rules must still let through: IP literals, a 63-character label,
    a trailing dot, a 128-byte client id, a password file of one line."""
    from bin_agent import preflight

    for changes in (
        {"mqtt.host": "::1"},
        {"mqtt.host": "192.168.1.20"},
        {"mqtt.host": "broker.local."},
        {"mqtt.host": "b" * 63 + ".example"},
        {"mqtt.client_id": "c" * 128},
        {"mqtt.username": "bin-01", "mqtt.password_file": "@password"},
        {"mqtt.topic_prefix": "site/hall-2/bins"},
        {"agent.bin_id": "küche-1"},
    ):
        preflight.load(broken_config(tmp_path, env, changes))


@pytest.mark.parametrize("command", [["check-config", "bin.toml"], ["doctor", "--config", "bin.toml"]])
def test_a_relative_config_path_is_made_absolute_before_lgpio_can_move_the_working_directory(
    tmp_path, monkeypatch, command
):
    """lgpio's import chdirs to $LG_WD (issue 23, item 11): the config is read by its absolute path."""
    from bin_agent import cli, preflight

    seen: list[Path] = []

    def load(path: Path, **_: Any) -> Any:
        seen.append(path)
        raise SystemExit(0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "load", load)
    with pytest.raises(SystemExit):
        cli.main(command)
    assert seen == [tmp_path / "bin.toml"]
