"""Servo drives at their seams: the kernel's sysfs PWM files in a tree under tmp_path,
a PCA9685 behind an I²C bus object that records every register write, and gpiozero's
MockFactory for the gpiozero drive (the pigpio factory's pulses go the same way)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from gpiozero import AngularServo
from gpiozero.pins.mock import MockFactory, MockPWMPin

from bin_agent import preflight
from bin_agent.actuators.drives import PulseServo, ServoDrive
from bin_agent.actuators.kernel_pwm import KernelPwmError, KernelPwmOutput
from bin_agent.actuators.pca9685 import Pca9685, Pca9685Error, prescale_for
from bin_agent.actuators.sorter import ActuatorError, ChuteSorter, build_sorter, warn_if_software_timed
from bin_agent.config import ActuatorSection, ServoSection
from tests.helpers import base_config

ANGLES = {"paper": -60.0, "glass": -20.0, "packaging": 20.0, "residual": 60.0}


def pulse_ns(angle: float) -> int:
    """A 0.5-2.5 ms servo over -90..90 degrees."""
    return round((0.0005 + (angle + 90) / 180 * 0.002) * 1e9)


# --------------------------------------------------------------------------- kernel PWM


class FakePwmChip:
    """/sys/class/pwm/pwmchipN as files: writing a channel to ``export`` makes its
    directory appear a moment later (as the kernel and udev do)."""

    def __init__(self, root: Path, number: int = 0, npwm: int = 4, device: str = "1f00098000.pwm") -> None:
        self.dir = root / f"pwmchip{number}"
        self.dir.mkdir(parents=True)
        (self.dir / "npwm").write_text(f"{npwm}\n")
        # As sysfs: pwmchipN/device links to the platform device of the PWM block.
        platform = root.parent / "devices" / device
        platform.mkdir(parents=True, exist_ok=True)
        (self.dir / "device").symlink_to(platform)
        for name in ("export", "unexport"):
            (self.dir / name).write_text("")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._kernel, daemon=True)
        self._thread.start()

    def channel(self, n: int, period: int = 0, duty: int = 0, enable: int = 0) -> Path:
        # Made aside and renamed into place: the kernel creates a channel's files all at once.
        staging = self.dir / f".pwm{n}"
        staging.mkdir()
        for name, value in (("period", period), ("duty_cycle", duty), ("enable", enable)):
            (staging / name).write_text(f"{value}\n")
        return staging.rename(self.dir / f"pwm{n}")

    def _kernel(self) -> None:
        while not self._stop.is_set():
            text = (self.dir / "export").read_text().strip()
            if text and not (self.dir / f"pwm{text}").exists():
                time.sleep(0.05)  # udev takes a moment
                self.channel(int(text))
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def pwm_root(tmp_path):
    chips: list[FakePwmChip] = []

    def make(number: int = 0, npwm: int = 4, device: str = "1f00098000.pwm") -> FakePwmChip:
        chips.append(FakePwmChip(tmp_path / "pwm", number, npwm, device))
        return chips[-1]

    yield make
    for chip in chips:
        chip.close()


def sysfs_writes(caplog) -> list[tuple[str, int]]:
    """(file, value) of every sysfs write, in order, from the writer's DEBUG log."""
    writes = []
    for record in caplog.records:
        if record.name == "bin_agent.actuators.kernel_pwm" and record.msg.startswith("pwm: "):
            path, value = record.args
            writes.append((Path(path).name, value))
    return writes


def assert_kernel_would_accept(writes: list[tuple[str, int]]) -> None:
    """The kernel refuses duty > period, and enabling without a period."""
    state = {"period": 0, "duty_cycle": 0, "enable": 0}
    for name, value in writes:
        if name in state:
            state[name] = value
            assert state["duty_cycle"] <= state["period"] or state["period"] == 0 and value == 0, writes
            assert not state["enable"] or state["period"] > 0, writes


def test_kernel_pwm_exports_sets_50_hz_and_sends_pulses_in_nanoseconds(pwm_root, caplog):
    caplog.set_level(logging.DEBUG, logger="bin_agent.actuators.kernel_pwm")
    chip = pwm_root(npwm=4)  # a Pi 5: GPIO18 is channel 2
    output = KernelPwmOutput.for_pin(chip.dir, 18)
    servo = PulseServo(output, initial_angle=None)
    servo.angle = 0.0
    servo.angle = 60.0
    pwm = chip.dir / "pwm2"
    assert (pwm / "period").read_text() == "20000000\n"
    assert (pwm / "duty_cycle").read_text() == f"{pulse_ns(60.0)}\n"
    assert (pwm / "enable").read_text() == "1\n"
    servo.detach()
    assert servo.value is None
    servo.close()
    writes = sysfs_writes(caplog)
    assert writes == [
        ("export", 2),
        ("period", 20_000_000),
        ("duty_cycle", 0),  # initial_angle None: no pulses
        ("duty_cycle", pulse_ns(0.0)),
        ("enable", 1),  # duty first, then enable
        ("duty_cycle", pulse_ns(60.0)),
        ("duty_cycle", 0),
        ("enable", 0),  # detach
        ("duty_cycle", 0),
        ("unexport", 2),  # close
    ]
    assert_kernel_would_accept(writes)


def test_kernel_pwm_channel_of_a_pin_depends_on_the_board(pwm_root):
    pi4 = pwm_root(number=0, npwm=2, device="fe20c000.pwm")
    assert KernelPwmOutput.for_pin(pi4.dir, 18).channel == 0
    assert KernelPwmOutput.for_pin(pi4.dir, 19).channel == 1
    pi5 = pwm_root(number=2, npwm=4, device="1f00098000.pwm")
    assert KernelPwmOutput.for_pin(pi5.dir, 19).channel == 3
    assert KernelPwmOutput.for_pin(pi5.dir, 12).channel == 0


def test_kernel_pwm_takes_over_a_channel_left_with_a_longer_duty_cycle(pwm_root, caplog):
    caplog.set_level(logging.DEBUG, logger="bin_agent.actuators.kernel_pwm")
    chip = pwm_root()
    chip.channel(2, period=50_000_000, duty=30_000_000, enable=1)  # left by another program
    output = KernelPwmOutput(chip.dir, 2)
    output.set_pulse(0.0015)
    writes = sysfs_writes(caplog)
    assert writes[:2] == [("duty_cycle", 0), ("period", 20_000_000)]
    assert_kernel_would_accept([("period", 50_000_000), ("duty_cycle", 30_000_000)] + writes)
    output.close()
    assert (chip.dir / "unexport").read_text() == "", "a channel we did not export stays exported"


def test_kernel_pwm_errors_name_the_fix(pwm_root, tmp_path):
    chip = pwm_root(number=0, npwm=4)
    with pytest.raises(KernelPwmError, match=r"dtoverlay=pwm-2chan.*PWM chips here: pwmchip0 \(1f00098000.pwm, 4 ch"):
        KernelPwmOutput.for_pin(chip.dir.parent / "pwmchip2", 18)
    with pytest.raises(KernelPwmError, match="GPIO17 has no hardware PWM"):
        KernelPwmOutput.for_pin(chip.dir, 17)


def test_chute_on_kernel_pwm_from_the_config(pwm_root, tmp_path, monkeypatch):
    chip = pwm_root(number=0, npwm=4)
    monkeypatch.setattr("bin_agent.actuators.kernel_pwm.SYSFS_PWM", chip.dir.parent)
    data = base_config(tmp_path, mqtt=False)
    data["actuator"]["servo_drive"] = "kernel_pwm"
    config = preflight.load_dict(data, base_dir=tmp_path)
    sorter = build_sorter(config.actuator, None)
    duty = chip.dir / "pwm2" / "duty_cycle"
    assert duty.read_text() == "0\n" and (chip.dir / "pwm2" / "enable").read_text() == "0\n"
    assert isinstance(sorter, ChuteSorter)
    seen = []
    sorter._sleep = lambda seconds: seen.append(int(duty.read_text()))  # what the servo gets while it waits
    sorter.sort("residual")
    assert seen == [pulse_ns(60.0), pulse_ns(0.0)]
    assert duty.read_text() == "0\n", "detached after the move"
    sorter.close()


def test_the_servo_gets_the_pwm_block_of_the_overlay_not_the_fans_whatever_the_numbers(pwm_root, tmp_path, monkeypatch):
    # A Pi 5 on a kernel that probed the fan's block first: pwmchip0 is the fan's
    # 4 channels, pwmchip1 the servo's (raspberrypi/linux #6818).
    fan = pwm_root(number=0, npwm=4, device="1f0009c000.pwm")
    servo_block = pwm_root(number=1, npwm=4, device="1f00098000.pwm")
    monkeypatch.setattr("bin_agent.actuators.kernel_pwm.SYSFS_PWM", fan.dir.parent)
    data = base_config(tmp_path, mqtt=False)
    data["actuator"]["servo_drive"] = "kernel_pwm"
    config = preflight.load_dict(data, base_dir=tmp_path)
    assert config.actuator.kernel_pwm.chip == "auto"
    sorter = build_sorter(config.actuator, None)
    assert (servo_block.dir / "pwm2").is_dir() and not (fan.dir / "pwm2").exists()
    sorter.close()


def test_a_missing_pwm_block_names_the_chips_there_are(pwm_root):
    from bin_agent.actuators.kernel_pwm import find_chip

    fan = pwm_root(number=0, npwm=4, device="1f0009c000.pwm")
    with pytest.raises(KernelPwmError, match=r"dtoverlay=pwm-2chan.*pwmchip0 \(1f0009c000.pwm, 4 channels\)"):
        find_chip("auto", fan.dir.parent)
    assert find_chip("1f0009c000.pwm", fan.dir.parent) == fan.dir  # named explicitly: taken
    assert find_chip("pwmchip7", fan.dir.parent) == fan.dir.parent / "pwmchip7"


def test_kernel_pwm_config_rejects_pins_without_pwm(tmp_path):
    data = base_config(tmp_path, mqtt=False)
    data["actuator"]["servo_drive"] = "kernel_pwm"
    data["actuator"]["servo"]["pin"] = 17
    with pytest.raises(Exception) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith("actuator.servo.pin: GPIO17 has no hardware PWM") for p in info.value.problems)


# --------------------------------------------------------------------------- PCA9685


class RecordingBus:
    """An smbus2.SMBus-shaped object: a PCA9685's registers, every access recorded."""

    def __init__(self) -> None:
        self.registers = {0x00: 0x11, 0xFE: 0x1E}  # power-on: SLEEP | ALLCALL, prescale 30
        self.log: list[tuple] = []
        self.closed = False

    def read_byte_data(self, address, register):
        self.log.append(("read", address, register))
        return self.registers.get(register, 0)

    def write_byte_data(self, address, register, value):
        self.log.append(("write", address, register, value))
        self.registers[register] = value

    def write_i2c_block_data(self, address, register, data):
        self.log.append(("block", address, register, list(data)))
        for offset, value in enumerate(data):
            self.registers[register + offset] = value

    def close(self):
        self.closed = True


def test_pca9685_wakes_at_50_hz_with_prescale_121():
    bus = RecordingBus()
    board = Pca9685(bus, 0x40, sleep=lambda s: None)
    assert prescale_for(50.0) == 121
    assert bus.log == [
        ("read", 0x40, 0x00),
        ("write", 0x40, 0x00, 0x11),  # asleep (prescale is written only while asleep)
        ("write", 0x40, 0xFE, 121),
        ("write", 0x40, 0x00, 0x01),  # awake
        ("write", 0x40, 0x00, 0xA1),  # restart + register auto-increment
    ]
    assert board.period_seconds == pytest.approx(122 * 4096 / 25e6)


def test_pca9685_servo_counts_and_detach():
    bus = RecordingBus()
    board = Pca9685(bus, 0x40, sleep=lambda s: None)
    servo = PulseServo(board.output(3), initial_angle=0.0)
    # 1.5 ms of a 122 * 4096 / 25 MHz period: 307 of 4096 counts; output 3 at 0x06 + 12.
    assert bus.log[-1] == ("block", 0x40, 0x12, [0, 0, 307 & 0xFF, 307 >> 8])
    servo.angle = -90.0  # 0.5 ms: 102.4 -> 102 counts
    assert bus.log[-1] == ("block", 0x40, 0x12, [0, 0, 102, 0])
    servo.angle = 90.0  # 2.5 ms: 512 counts
    assert bus.log[-1] == ("block", 0x40, 0x12, [0, 0, 0, 2])
    servo.detach()
    assert bus.log[-1] == ("block", 0x40, 0x12, [0, 0, 0, 0x10])  # full off: no pulses
    other = PulseServo(board.output(4), initial_angle=None)
    servo.close()
    assert not bus.closed, "the bus stays open while a servo still uses it"
    other.close()
    assert bus.closed
    with pytest.raises(ValueError):
        Pca9685(RecordingBus(), sleep=lambda s: None).output(16)


def test_pca9685_flaps_each_need_their_own_output(tmp_path):
    data = base_config(tmp_path, mqtt=False)
    data["actuator"].update({"kind": "flaps", "servo_drive": "pca9685"})
    data["actuator"]["flaps"] = {name: {"channel": 0} for name in ANGLES}
    with pytest.raises(Exception) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any("PCA9685 output 0 is already used" in p for p in info.value.problems)
    data["actuator"]["flaps"] = {name: {"channel": n} for n, name in enumerate(ANGLES)}
    data["actuator"]["status_led_pin"] = 2
    with pytest.raises(Exception) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(
        p.startswith("actuator.status_led_pin: GPIO2 is already used by actuator.pca9685") for p in info.value.problems
    )


def test_pca9685_that_cannot_be_opened_is_a_one_line_error(tmp_path):
    with pytest.raises(Pca9685Error, match="Fix:"):
        Pca9685.open(31, 0x40)  # no /dev/i2c-31 here, or no smbus2
    data = base_config(tmp_path, mqtt=False)
    data["actuator"].update({"servo_drive": "pca9685", "pca9685": {"i2c_bus": 31}})
    with pytest.raises(ActuatorError, match=r"actuator.servo_drive = 'pca9685': .*Fix:"):
        build_sorter(preflight.load_dict(data, base_dir=tmp_path).actuator, None)


# --------------------------------------------------------------------------- gpiozero


def test_pulse_servo_sends_the_pulses_gpiozero_would():
    factory = MockFactory(pin_class=MockPWMPin)
    reference = AngularServo(
        18,
        initial_angle=None,
        min_angle=-90,
        max_angle=90,
        min_pulse_width=0.0005,
        max_pulse_width=0.0025,
        pin_factory=factory,
    )
    sent = []

    class Output:
        def set_pulse(self, seconds):
            sent.append(seconds)

        def close(self):
            pass

    servo = PulseServo(Output(), initial_angle=None)
    for angle in (-90.0, -60.0, 0.0, 20.0, 90.0):
        reference.angle = angle
        servo.angle = angle
        assert sent[-1] == pytest.approx(factory.pin(18).state * 0.02, abs=1e-9)
        assert servo.value == pytest.approx(reference.value)
    with pytest.raises(ValueError):
        servo.angle = 91.0


def test_gpiozero_drive_gives_gpiozeros_own_servo():
    factory = MockFactory(pin_class=MockPWMPin)
    drive = ServoDrive("gpiozero", pin_factory=factory)
    servo = drive.servo(18, 0, ServoSection(), initial_angle=0.0)
    assert isinstance(servo, AngularServo) and factory.pin(18).frequency == 50


@pytest.mark.parametrize(
    "factory, drive, warned",
    [
        ("lgpio", "gpiozero", True),
        ("default", "gpiozero", True),
        ("pigpio", "gpiozero", False),
        ("mock", "gpiozero", False),
        ("lgpio", "kernel_pwm", False),
        ("lgpio", "pca9685", False),
    ],
)
def test_software_timed_servo_pulses_are_warned_about(caplog, factory, drive, warned):
    warn_if_software_timed(ActuatorSection(pin_factory=factory, servo_drive=drive))
    assert any("timed by software" in r.getMessage() for r in caplog.records) == warned


# --------------------------------------------------------------------------- pigpio (issue 23, item 9)


def test_a_pigpiod_not_up_yet_is_a_failure_systemd_restarts(tmp_path):
    """pigpio.pi() without a daemon returns a disconnected object (its ``sl.s`` is None)
    and gpiozero raises IOError: the agent exits 75, not 78 (which the unit never restarts)."""
    import subprocess
    import sys

    from tests.helpers import REPO, write_toml

    site = tmp_path / "site"
    site.mkdir()
    (site / "pigpio.py").write_text(
        "import types\n"
        "INPUT, OUTPUT, ALT0, ALT1, ALT2, ALT3, ALT4, ALT5 = 0, 1, 4, 5, 6, 7, 3, 2\n"
        "PUD_OFF, PUD_DOWN, PUD_UP = 0, 1, 2\n"
        "RISING_EDGE, FALLING_EDGE, EITHER_EDGE = 0, 1, 2\n"
        "class pi:\n"
        "    def __init__(self, host='localhost', port=8888, show_errors=True):\n"
        "        self.sl = types.SimpleNamespace(s=None)  # as pigpio after a refused connect\n"
        "        self.connected = False\n"
    )
    data = base_config(tmp_path, mqtt=False)
    data["actuator"]["pin_factory"] = "pigpio"
    config = write_toml(tmp_path / "bin-agent.toml", data)
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 75, result.stderr
    assert "pigpiod daemon does not answer" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- the header's gpiochip (issue 23, item 10)


def fake_gpio_sysfs(root: Path, chips: dict[int, str]) -> Path:
    """/sys/bus/gpio/devices: gpiochipN links into its controller's device directory."""
    devices = root / "bus" / "gpio" / "devices"
    devices.mkdir(parents=True)
    for number, controller in chips.items():
        chip = root / "devices" / "platform" / controller / f"gpiochip{number}"
        chip.mkdir(parents=True)
        (devices / f"gpiochip{number}").symlink_to(chip)
    return devices


@pytest.fixture
def fake_lgpio(monkeypatch):
    """lgpio as gpiozero's LGPIOFactory uses it on construction: which chip it opens."""
    import sys
    import types

    opened: list[int] = []
    module = types.ModuleType("lgpio")
    module.gpiochip_open = lambda chip: opened.append(chip) or 100  # type: ignore[attr-defined]
    module.gpiochip_close = lambda handle: None  # type: ignore[attr-defined]
    for i, constant in enumerate(
        "SET_BIAS_DISABLE SET_BIAS_PULL_DOWN SET_BIAS_PULL_UP SET_PULL_DOWN SET_PULL_NONE SET_PULL_UP "
        "RISING_EDGE FALLING_EDGE BOTH_EDGES".split()
    ):
        setattr(module, constant, i)  # the names gpiozero.pins.lgpio reads at import
    monkeypatch.setitem(sys.modules, "lgpio", module)
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    # What /proc/device-tree/system/linux,revision says on a Pi 5 (4 GB, rev 1.0).
    monkeypatch.setattr("gpiozero.pins.local.LocalPiFactory._get_revision", lambda self: 0xD04170)
    return opened


def test_lgpio_opens_the_headers_chip_on_a_pi5_kernel_that_numbers_chips_from_11(tmp_path, monkeypatch, fake_lgpio):
    # Adafruit_Blinka #1119: recent Pi 5 kernels list gpiochip11-15; gpiozero would open 0 or 4.
    from bin_agent.actuators import sorter

    devices = fake_gpio_sysfs(
        tmp_path / "sys",
        {11: "1f000d0000.gpio", 12: "1f00084000.gpio", 13: "107d508500.gpio", 14: "107d517c00.gpio"},
    )
    monkeypatch.setattr(sorter, "SYSFS_GPIO", devices)
    assert sorter.find_header_gpiochip(devices) == 11
    sorter.make_pin_factory("lgpio")
    sorter.make_pin_factory("lgpio", 4)  # actuator.gpiochip set: taken as it is
    assert fake_lgpio == [11, 4]


def test_the_gpiochip_setting_is_in_the_config(tmp_path):
    data = base_config(tmp_path, mqtt=False)
    assert preflight.load_dict(data, base_dir=tmp_path).actuator.gpiochip is None
    data["actuator"]["gpiochip"] = 99
    with pytest.raises(Exception) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith("actuator.gpiochip") for p in info.value.problems)


def test_a_gpiochip_without_the_lgpio_factory_is_a_config_error(tmp_path):
    data = base_config(tmp_path, mqtt=False)  # pin_factory = "mock"
    data["actuator"]["gpiochip"] = 4
    with pytest.raises(Exception) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith('actuator.gpiochip: 4 applies to pin_factory = "lgpio" only') for p in info.value.problems)
