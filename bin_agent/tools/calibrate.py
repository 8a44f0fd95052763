"""``bin-agent calibrate``: find the servo's angles by moving it, then save them in the config.

Two ways, both with the agent stopped (the servo pin is the agent's):

* keys: ``a``/``d`` (or ``-``/``+``, ←/→) move by the step, ``[``/``]`` halve or
  double the step, ``h`` takes the current angle as the home angle, ``1``…``9``
  as the angle of the 1st…9th compartment, ``0`` goes back home, ``w`` writes
  the config and quits, ``q`` quits without writing;
* arguments: ``--set home=0 --set paper=-55`` moves to each angle in turn (so
  you see it) and writes them.

The config file is edited with ``tomlkit``, which keeps its comments, order and
layout; only ``actuator.servo.home_angle`` and ``actuator.servo.angles.<name>``
change. The edited file is validated with the agent's own schema before it
replaces the old one (atomically), so a calibration never leaves a config the
agent would refuse.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import preflight
from ..config import ConfigError
from ..errors import BinAgentError

HOME = "home"
KEYS_HELP = (
    "keys: a/d or -/+ or arrows move, [ ] step, h = home, 1-9 = compartment, 0 = go home, w = write and quit, q = quit"
)


class CalibrationError(BinAgentError, ValueError):
    """A wrong angle, name or config; the message says which."""

    exit_code = os.EX_CONFIG


@dataclass
class Calibrator:
    """Moves one servo and remembers the angles chosen.

    :param servo: a gpiozero ``AngularServo``.
    :param settings: the ``[actuator.servo]`` section (range, home angle, angles).
    :param compartments: the compartments in the config's order (keys 1-9).
    """

    servo: Any
    settings: Any
    compartments: list[str]
    step: float = 5.0
    chosen: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.angle = float(self.settings.home_angle)
        self.go(self.angle)

    def go(self, angle: float) -> float:
        low, high = self.settings.min_angle, self.settings.max_angle
        self.angle = round(min(high, max(low, angle)), 2)
        self.servo.angle = self.angle
        return self.angle

    def move(self, steps: int) -> float:
        return self.go(self.angle + steps * self.step)

    def choose(self, name: str, angle: float | None = None) -> None:
        """Take ``angle`` (default: the current one) for ``home`` or a compartment."""
        if name != HOME and name not in self.compartments:
            raise CalibrationError(f"{name!r} is neither 'home' nor a compartment ({', '.join(self.compartments)})")
        if angle is not None:
            low, high = self.settings.min_angle, self.settings.max_angle
            if not low <= angle <= high:
                raise CalibrationError(f"{name}={angle:g} is outside the servo's range [{low:g}, {high:g}]")
            self.go(angle)
        self.chosen[name] = self.angle

    def close(self) -> None:
        """Back home, then let go of the servo (no holding current, no jitter)."""
        try:
            self.go(self.chosen.get(HOME, self.settings.home_angle))
            self.servo.detach()
        finally:
            self.servo.close()


def run_keys(calibrator: Calibrator, keys: Iterable[str], out: TextIO) -> bool:
    """Apply keys until ``w`` (returns True: write) or ``q`` / the end of input (False)."""
    numbered = ", ".join(f"{n} {name}" for n, name in enumerate(calibrator.compartments[:9], 1))
    print(f"{KEYS_HELP}\ncompartments: {numbered}", file=out)
    for key in keys:
        if key in ("d", "+", "RIGHT"):
            calibrator.move(+1)
        elif key in ("a", "-", "LEFT"):
            calibrator.move(-1)
        elif key == "[":
            calibrator.step = max(0.5, calibrator.step / 2)
        elif key == "]":
            calibrator.step = min(45.0, calibrator.step * 2)
        elif key == "0":
            calibrator.go(calibrator.chosen.get(HOME, calibrator.settings.home_angle))
        elif key == "h":
            calibrator.choose(HOME)
        elif key.isdigit() and 1 <= int(key) <= min(9, len(calibrator.compartments)):
            calibrator.choose(calibrator.compartments[int(key) - 1])
        elif key == "w":
            return True
        elif key == "q":
            return False
        else:
            continue
        chosen = ", ".join(f"{k} {v:g}" for k, v in calibrator.chosen.items()) or "none"
        print(
            f"\rangle {calibrator.angle:7.2f}  step {calibrator.step:g}  chosen: {chosen}\x1b[K",
            end="",
            file=out,
            flush=True,
        )
    return False


def terminal_keys(stream: TextIO) -> Iterator[str]:
    """Single key presses from a terminal (raw mode, arrows as LEFT/RIGHT); other input char by char."""
    if not stream.isatty():
        while char := stream.read(1):
            yield char
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        while char := os.read(fd, 1).decode(errors="ignore"):
            if char == "\x1b":
                sequence = os.read(fd, 2).decode(errors="ignore")
                yield {"[C": "RIGHT", "[D": "LEFT"}.get(sequence, "")
            else:
                yield char
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def save_angles(path: Path, chosen: dict[str, float], angles_in_force: Mapping[str, float] | None = None) -> None:
    """Write ``home_angle`` and the compartment angles into the config, keeping its comments.

    :param angles_in_force: the config's ``actuator.servo.angles`` as loaded. A file without an
        ``angles`` table uses the defaults; they are written beside the chosen ones, or the new
        table would name only those and leave the other compartments without an angle.
    """
    try:
        import tomlkit
    except ImportError:
        raise CalibrationError(
            "saving needs tomlkit: pip install tomlkit in bin-agent's venv "
            "(a checkout's: .venv/bin/pip install -e '.[calibrate]')"
        ) from None
    text = path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    actuator = document.setdefault("actuator", tomlkit.table())
    servo = actuator.setdefault("servo", tomlkit.table())
    if "angles" not in servo and angles_in_force and any(name != HOME for name in chosen):
        defaults = tomlkit.table()
        for name, angle in angles_in_force.items():
            defaults[name] = float(angle)
        servo["angles"] = defaults
    for name, angle in chosen.items():
        if name == HOME:
            servo["home_angle"] = float(angle)
        else:
            servo.setdefault("angles", tomlkit.table())[name] = float(angle)
    new_text = tomlkit.dumps(document)
    try:  # the agent's own validation, before anything is replaced
        preflight.load_dict(tomllib.loads(new_text), base_dir=path.parent, source=path, model=False)
    except ConfigError as exc:
        raise CalibrationError(f"not saved: {exc.describe()}") from None
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(new_text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def parse_assignments(values: list[str]) -> list[tuple[str, float]]:
    """``["home=0", "paper=-55"]`` → ``[("home", 0.0), ("paper", -55.0)]``."""
    result = []
    for value in values:
        name, sep, number = value.partition("=")
        try:
            if not sep:
                raise ValueError
            result.append((name.strip(), float(number)))
        except ValueError:
            raise CalibrationError(f"--set {value!r}: expected NAME=ANGLE, e.g. home=0 or paper=-55") from None
    return result


def calibrate(
    config: Any,
    pin_factory: Any,
    *,
    assignments: list[tuple[str, float]] | None = None,
    keys: Iterable[str] | None = None,
    step: float = 5.0,
    out: TextIO | None = None,
) -> dict[str, float]:
    """Move the servo by ``assignments`` or ``keys``, save what was chosen; returns it."""
    from ..actuators.drives import ServoDrive

    out = out if out is not None else sys.stdout

    if config.actuator.kind != "servo":
        raise CalibrationError(
            f'calibrate moves the one servo of actuator.kind = "servo" (this config has {config.actuator.kind!r})'
        )
    settings = config.actuator.servo
    servo = ServoDrive.from_config(config.actuator, pin_factory).servo(
        settings.pin, settings.channel, settings, settings.home_angle
    )  # the drive the agent uses
    calibrator = Calibrator(servo, settings, config.compartments, step=step)
    try:
        if assignments is not None:
            for name, angle in assignments:
                calibrator.choose(name, angle)
                print(f"{name}: {angle:g}", file=out)
            write = True
        else:
            write = run_keys(calibrator, keys or [], out)
            print(file=out)
    finally:
        calibrator.close()
    if not write or not calibrator.chosen:
        print("nothing written", file=out)
        return {}
    if config.source_path is None:
        raise CalibrationError("the config has no file to write to")
    save_angles(config.source_path, calibrator.chosen, settings.angles)
    print(f"wrote {', '.join(f'{k} = {v:g}' for k, v in calibrator.chosen.items())} to {config.source_path}", file=out)
    return dict(calibrator.chosen)
