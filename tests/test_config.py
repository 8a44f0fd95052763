"""The one config schema: shipped files validate, every mistake is named."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib

import pytest

from bin_agent import DEFAULT_MODEL_NAME, preflight
from bin_agent.config import EX_CONFIG, ConfigError, describe_options
from tests.helpers import REPO, base_config, write_toml


def problems_of(data, tmp_path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    return info.value.problems


# Options whose default depends on where bin-agent is installed, or is "unset" (TOML has no
# null): documented as a commented-out example line, so the shipped file keeps the default.
COMMENTED_OUT = {
    "model.path",
    "router.confidence_threshold",
    "actuator.gpiochip",
    "actuator.status_led_pin",
    "actuator.buzzer_pin",
    "ask.yes_pin",
    "ask.next_pin",
}

# Options whose "none" (or "find it") was -1 before they became "int | None".
WAS_MINUS_ONE = ["actuator.gpiochip", "actuator.status_led_pin", "actuator.buzzer_pin", "ask.yes_pin", "ask.next_pin"]


def test_shipped_config_documents_every_option():
    text = (REPO / "config" / "bin-agent.toml").read_text()
    parsed = tomllib.loads(text)
    for key, default, _help in describe_options():
        section, _, name = key.rpartition(".")
        node = parsed
        for part in section.split(".") if section else []:
            node = node[part]
        if key in COMMENTED_OUT:
            assert name not in node and f"\n# {name} = " in text, key
            continue
        assert name in node, f"{key} is not in config/bin-agent.toml"
        # Tables too (router.compartments, actuator.servo.angles): a default changed in
        # the code alone would leave the file documenting something else.
        assert node[name] == (str(default) if hasattr(default, "parts") else default) or key in {
            "agent.state_dir",
            "model.path",
            "camera.replay.path",
            "actuator.pin_factory",
        }, key


def test_shipped_configs_validate():
    config = preflight.load(REPO / "config" / "bin-agent.toml")
    assert config.camera.source == "picamera2"
    # The default, the model inside the package: in a checkout, the link to models/.
    assert config.model.path.resolve() == (REPO / "models" / DEFAULT_MODEL_NAME).resolve()
    demo = (
        preflight.load(REPO / "config" / "demo.toml", model=True)
        if (REPO.parent / "shared" / "data" / "trashnet").is_dir()
        else None
    )
    if demo is not None:
        assert demo.actuator.pin_factory == "mock"


def test_valid_dict_builds(tmp_path):
    config = preflight.load_dict(base_config(tmp_path), base_dir=tmp_path)
    assert config.compartments == ["paper", "glass", "packaging", "residual"]


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"camera": {"fsp": 3}}, "camera.fsp: unknown key; did you mean 'fps'?"),
        ({"camera": {"fps": "fast"}}, "camera.fps: expected a number"),
        ({"camera": {"fps": 500}}, "camera.fps: 500.0 is above the maximum 60"),
        ({"model": {"num_threads": 1.5}}, "model.num_threads: expected a whole number"),
        ({"model": {"views": 3}}, "model.views: 3 is not one of"),
        ({"trigger": {"mode": "laser"}}, "trigger.mode: 'laser' is not one of"),
        ({"actuator": {"pin_factory": "wiringpi"}}, "actuator.pin_factory: 'wiringpi' is not one of"),
        ({"mqtt": {"port": 0}}, "mqtt.port: 0 is below the minimum 1"),
        ({"agent": {"bin_id": "a/b"}}, "agent.bin_id: 'a/b' must be"),
        ({"actuator": {"buzzer_pin": 18}}, "actuator.buzzer_pin: GPIO18 is already used by actuator.servo.pin"),
        ({"router": {"compartments": {"glass": "glass"}}}, "router.compartments: class 'paper' has no compartment"),
        (
            {
                "router": {
                    "compartments": {
                        "cardboard": "paper",
                        "paper": "paper",
                        "glass": "glass",
                        "metal": "packaging",
                        "plastic": "packaging",
                        "trash": "residual",
                        "wood": "residual",
                    }
                }
            },
            "router.compartments.wood: the model has no class 'wood'",
        ),
        (
            {"actuator": {"servo": {"angles": {"paper": -60.0, "glass": -20.0, "packaging": 20.0}}}},
            "actuator.servo.angles: compartment 'residual' has none",
        ),
        (
            {"actuator": {"servo": {"angles": {"paper": -60.0, "glass": -20.0, "packaging": 20.0, "residual": 120.0}}}},
            "actuator.servo.angles.residual: 120.0 is outside [-90.0, 90.0]",
        ),
        (
            {"actuator": {"kind": "leds", "leds": {"paper": 5, "glass": 5, "packaging": 6, "residual": 7}}},
            "actuator.leds.glass: GPIO5 is already used by actuator.leds.paper",
        ),
        (
            {"model": {"path": "/nonexistent/model.tflite"}},
            "model.path: model file /nonexistent/model.tflite not found",
        ),
        (
            {"camera": {"replay": {"path": "/nonexistent/photos"}}},
            "camera.replay.path: /nonexistent/photos does not exist",
        ),
        ({"camera": {"main_size": [640]}}, "camera.main_size: expected [width, height]"),
        ({"camera": {"drop_zone": [0.5, 0.0, 0.4, 1.0]}}, "camera.drop_zone: x1 must exceed x0"),
        ({"camera": {"drop_zone": [0, 0, 1]}}, "camera.drop_zone: expected [x0, y0, x1, y1]"),
        ({"camera": {"drop_zone": [0, 0, 1.5, 1]}}, "camera.drop_zone: every value is a fraction"),
        ({"camera": {"drop_zone": "all"}}, "camera.drop_zone: expected a list"),
        ({"camera": {"crop_margin": -0.1}}, "camera.crop_margin: -0.1 is below the minimum 0"),
        ({"trigger": {"gpio": {"active_state": "up"}}}, "trigger.gpio.active_state: 'up' is not one of"),
        (
            {"trigger": {"gpio": {"threshold_distance": 1.5}}},
            "trigger.gpio.threshold_distance: 1.5 must be below max_distance (1.0)",
        ),
    ],
)
def test_each_mistake_is_named_with_its_key(tmp_path, patch, expected):
    data = base_config(tmp_path)
    for section, values in patch.items():
        node = data.setdefault(section, {})
        for key, value in values.items():
            if (
                isinstance(value, dict)
                and isinstance(node.get(key), dict)
                and key not in ("compartments", "angles", "leds")
            ):
                node[key].update(value)
            else:
                node[key] = value
    problems = problems_of(data, tmp_path)
    assert any(p.startswith(expected) for p in problems), problems


def test_all_problems_are_reported_together(tmp_path):
    data = base_config(tmp_path)
    data["camera"]["fps"] = "x"
    data["mqtt"]["port"] = 70000
    data["bogus"] = {}
    problems = problems_of(data, tmp_path)
    assert len(problems) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli_exit_78_and_no_traceback(tmp_path):
    data = base_config(tmp_path)
    data["camera"]["fsp"] = 3
    data["mqtt"]["port"] = "1883"
    path = write_toml(tmp_path / "bad.toml", data)
    result = run_cli("check-config", str(path))
    assert result.returncode == EX_CONFIG
    assert "Traceback" not in result.stderr
    assert "camera.fsp: unknown key" in result.stderr
    assert "mqtt.port: expected a whole number" in result.stderr
    # Relations between sections are checked once every value has the right type.
    data = base_config(tmp_path)
    data["actuator"]["buzzer_pin"] = 18
    result = run_cli("check-config", str(write_toml(tmp_path / "clash.toml", data)))
    assert result.returncode == EX_CONFIG
    assert "actuator.buzzer_pin: GPIO18 is already used by actuator.servo.pin" in result.stderr


def test_check_config_takes_the_file_as_a_word_or_with_config_as_every_command_does(tmp_path):
    data = base_config(tmp_path)
    data["mqtt"]["port"] = "1883"
    bad = str(write_toml(tmp_path / "bad.toml", data))
    for args in ([bad], ["--config", bad], ["-c", bad]):
        result = run_cli("check-config", *args)
        assert result.returncode == EX_CONFIG, args
        assert f"{bad}: mqtt.port: expected a whole number" in result.stderr, args
    # Given both ways it is refused, not one of them checked in silence.
    result = run_cli("check-config", bad, "--config", str(tmp_path / "other.toml"))
    assert result.returncode == 2 and "give the config file once" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_installed_config_with_the_old_crop_margin_keeps_it_and_says_so(tmp_path, caplog):
    """The installer keeps /etc/bin-agent/bin-agent.toml, whose template said crop_margin =
    0.15 before the default became 0: the value is kept (someone may have chosen it) and named."""
    data = base_config(tmp_path)
    assert preflight.load_dict(data, base_dir=tmp_path).camera.crop_margin == 0.0
    data["camera"]["crop_margin"] = 0.15
    with caplog.at_level(logging.WARNING):
        assert preflight.load_dict(data, base_dir=tmp_path).camera.crop_margin == 0.15
    assert "camera.crop_margin = 0.15: the config template's value before 2026-12-06" in caplog.text
    assert "delete this line" in caplog.text
    caplog.clear()
    data["camera"]["crop_margin"] = 0.1
    with caplog.at_level(logging.WARNING):
        assert preflight.load_dict(data, base_dir=tmp_path).camera.crop_margin == 0.1
    assert "crop_margin" not in caplog.text


@pytest.mark.parametrize("key", WAS_MINUS_ONE)
def test_an_old_minus_one_for_none_is_read_as_unset_and_named(tmp_path, key, caplog):
    section, name = key.split(".")
    data = base_config(tmp_path)
    assert getattr(getattr(preflight.load_dict(data, base_dir=tmp_path), section), name) is None, "unset by default"
    data.setdefault(section, {})[name] = -1
    with caplog.at_level(logging.WARNING):
        config = preflight.load_dict(data, base_dir=tmp_path)
    assert getattr(getattr(config, section), name) is None
    assert f"{key}: -1 meant none in earlier releases; read as unset, delete this line" in caplog.text
    # Other values below the range are still errors naming the key.
    data[section][name] = -2
    assert problems_of(data, tmp_path) == [f"{key}: -2 is below the minimum 0"]


def test_an_installed_config_with_minus_ones_still_runs_and_names_each_key(tmp_path):
    """An upgrade keeps the bin's config (the installer never overwrites it): the old
    "none" must not stop the bin with exit 78; check-config names each line to delete."""
    data = base_config(tmp_path)
    for key in WAS_MINUS_ONE:
        section, name = key.split(".")
        data.setdefault(section, {})[name] = -1
    data["ask"].update(enabled=False)
    result = run_cli("check-config", str(write_toml(tmp_path / "old.toml", data)))
    assert result.returncode == 0, result.stdout + result.stderr
    for key in WAS_MINUS_ONE:
        assert f"{key}: -1 meant none in earlier releases" in result.stderr, key


def test_yes_next_without_its_pins_names_both_and_no_clash(tmp_path):
    """Unset pins are not pins: yes_next asks for both, and two unset ones do not "clash"."""
    data = base_config(tmp_path)
    data["ask"] = {"enabled": True, "mode": "yes_next"}
    problems = problems_of(data, tmp_path)
    assert problems == [
        'ask.yes_pin: mode = "yes_next" needs the BCM pin of its button',
        'ask.next_pin: mode = "yes_next" needs the BCM pin of its button',
    ], problems
    data["ask"].update(yes_pin=5, next_pin=5)
    assert problems_of(data, tmp_path) == [
        "ask.next_pin: GPIO5 is already used by ask.yes_pin; give each device its own pin"
    ]


@pytest.mark.parametrize("content", ["[camera\nsource=", "\x00\x01binary", ""])
def test_broken_toml_files_give_one_line(tmp_path, content):
    path = tmp_path / "broken.toml"
    path.write_text(content)
    result = run_cli("check-config", str(path))
    if content == "":
        # An empty file is a valid config full of defaults, except the default model path.
        assert result.returncode in (0, EX_CONFIG)
    else:
        assert result.returncode == EX_CONFIG
        assert "not valid TOML" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_missing_config_file_exits_78(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == EX_CONFIG
    assert "no such file" in result.stderr and "Traceback" not in result.stderr


def test_good_config_passes_check(tmp_path):
    path = write_toml(tmp_path / "good.toml", base_config(tmp_path))
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    # The version as the metadata writes it (no stray "v" before it), and the threshold in force.
    assert (
        "model tiny_uint8.tflite tiny-1 (1 view(s) per item, confidence threshold 0.8 from the default" in result.stdout
    )


def test_check_config_reports_values_files_and_relations_at_once(tmp_path):
    """One run shows every problem: a wrong value, a clash between sections and two missing
    files, not the values first and the rest after they are fixed."""
    data = base_config(tmp_path, model=tmp_path / "gone.tflite")
    data["mqtt"]["port"] = "1883"
    data["mqtt"]["password_file"] = str(tmp_path / "no-password")
    data["actuator"]["buzzer_pin"] = 18
    problems = problems_of(data, tmp_path)
    assert any(p.startswith("mqtt.port: expected a whole number") for p in problems), problems
    assert any(p.startswith("actuator.buzzer_pin: GPIO18 is already used") for p in problems), problems
    assert any(p.startswith("model.path: model file") for p in problems), problems
    assert any(p.startswith("mqtt.password_file:") for p in problems), problems
    # The default standing in for the refused port is not reported as a problem of its own.
    assert sum("mqtt.port" in p for p in problems) == 1, problems
