"""``bin-agent calibrate`` on gpiozero's MockFactory: the servo moves, the config keeps its comments."""

from __future__ import annotations

import io
import sys
import tomllib

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from bin_agent import preflight
from bin_agent.cli import main
from bin_agent.tools.calibrate import CalibrationError, calibrate
from tests.helpers import REPO
from tests.test_actuators import duty_for


@pytest.fixture
def shipped_copy(tmp_path):
    """config/bin-agent.toml with mock pins (the model: the shipped default): every comment of the real file."""
    text = (REPO / "config" / "bin-agent.toml").read_text()
    text = text.replace('pin_factory = "lgpio"', 'pin_factory = "mock"')
    path = tmp_path / "bin-agent.toml"
    path.write_text(text)
    return path


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def test_keys_move_the_servo_and_save_home_and_compartments(shipped_copy):
    before = shipped_copy.read_text()
    config = preflight.load(shipped_copy, model=False)
    factory = MockFactory(pin_class=MockPWMPin)
    pin = factory.pin(config.actuator.servo.pin)
    out = io.StringIO()
    # d d d: +15 → paper(1); ] a a: step 10, -5 → home; [ [ a: step 2.5, -7.5 → residual(4); w
    chosen = calibrate(config, factory, keys=list("ddd1]aah[[a4w"), out=out)
    assert chosen == {"paper": 15.0, "home": -5.0, "residual": -7.5}
    duties = [round(s.state, 5) for s in pin.states if s.state]
    for angle in (5.0, 10.0, 15.0, 5.0, -5.0, -7.5):
        assert round(duty_for(angle), 5) in duties
    assert pin.frequency is None, "servo left attached"

    after = shipped_copy.read_text()
    assert comments(after) == comments(before), "a comment was lost"
    reloaded = preflight.load(shipped_copy, model=False)
    assert reloaded.actuator.servo.home_angle == -5.0
    assert reloaded.actuator.servo.angles == {"paper": 15.0, "glass": -20.0, "packaging": 20.0, "residual": -7.5}
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [
        ("home_angle = 0.0", "home_angle = -5.0"),
        ("paper = -60.0", "paper = 15.0"),
        ("residual = 60.0", "residual = -7.5"),
    ]


def test_quit_writes_nothing(shipped_copy):
    before = shipped_copy.read_text()
    config = preflight.load(shipped_copy, model=False)
    assert calibrate(config, MockFactory(pin_class=MockPWMPin), keys=list("dd1q"), out=io.StringIO()) == {}
    assert shipped_copy.read_text() == before


def test_set_arguments_through_the_command(shipped_copy, capsys):
    assert main(["calibrate", "--config", str(shipped_copy), "--set", "home=2.5", "--set", "glass=-25"]) == 0
    assert "wrote home = 2.5, glass = -25" in capsys.readouterr().out
    config = preflight.load(shipped_copy, model=False)
    assert config.actuator.servo.home_angle == 2.5 and config.actuator.servo.angles["glass"] == -25.0


@pytest.mark.parametrize(
    "setting, message",
    [
        ("paper=120", "paper=120 is outside the servo's range [-90, 90]"),
        ("kitchen=3", "'kitchen' is neither 'home' nor a compartment"),
        ("paper", "--set 'paper': expected NAME=ANGLE"),
    ],
)
def test_wrong_settings_are_one_line_and_change_nothing(shipped_copy, capsys, setting, message):
    before = shipped_copy.read_text()
    assert main(["calibrate", "--config", str(shipped_copy), "--set", setting]) == 78
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert shipped_copy.read_text() == before


def test_keys_from_standard_input(shipped_copy, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("aa2w"))
    assert main(["calibrate", "--config", str(shipped_copy), "--step", "4"]) == 0
    assert preflight.load(shipped_copy, model=False).actuator.servo.angles["glass"] == -8.0


def test_only_a_servo_is_calibrated(shipped_copy):
    config = preflight.load(shipped_copy, model=False)
    config.actuator.kind = "leds"
    with pytest.raises(CalibrationError, match="actuator.kind"):
        calibrate(config, MockFactory(pin_class=MockPWMPin), keys=[], out=io.StringIO())


def test_set_on_a_config_without_an_angles_table_keeps_the_default_angles(tmp_path, capsys):
    """The documented example (`--set home=0 --set paper=-55`) on config/demo.toml, whose servo
    has no [actuator.servo.angles]: the other compartments keep their default angles."""
    from PIL import Image

    from bin_agent.config import ServoSection

    text = (REPO / "config" / "demo.toml").read_text()
    assert "[actuator.servo.angles]" not in text
    (tmp_path / "replay").mkdir()  # the photos of ../shared, which a test does not need
    Image.new("RGB", (64, 48)).save(tmp_path / "replay" / "item.png")
    text = text.replace('state_dir = "../state/demo"', 'state_dir = "state"')
    path = tmp_path / "demo.toml"
    path.write_text(text.replace('path = "../../shared/data/trashnet"', 'path = "replay"'))
    assert main(["calibrate", "--config", str(path), "--set", "home=0", "--set", "paper=-55"]) == 0, capsys.readouterr()
    saved = tomllib.loads(path.read_text())["actuator"]["servo"]
    assert saved["home_angle"] == 0.0
    assert saved["angles"] == {**ServoSection().angles, "paper": -55.0}
