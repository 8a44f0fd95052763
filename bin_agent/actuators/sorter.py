"""The bin's mechanics: servos, LEDs and a buzzer.

A :class:`Sorter` puts an item into a compartment. Three mechanics exist:

* :class:`ChuteSorter` — a rotating chute or tilting tray on one servo: one
  angle per compartment and a home angle.
* :class:`FlapSorter` — one servo per compartment flap: open, dwell, close.
* :class:`GuidanceSorter` — no moving parts: the compartment's LED lights and
  the person drops the item there.

Every servo move follows the same cycle: move, wait for the travel time,
hold for the dwell time, return home, wait, then ``detach()`` so the servo
gets no more pulses (no jitter, no heat, no current). A lock makes sure only
one actuation runs at a time; the next item waits for the chute.

The pin factory is chosen in the config and created here, once, by
:func:`make_pin_factory`; all devices share it. The servos' pulses come from
the configured :class:`~bin_agent.drives.ServoDrive` (gpiozero on that pin
factory, the kernel's hardware PWM, or a PCA9685 board). Tests use gpiozero's
own ``MockFactory`` with ``MockPWMPin``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BinAgentError
from .drives import SOFTWARE_TIMED_FACTORIES, ServoDrive
from .kernel_pwm import KernelPwmError
from .pca9685 import Pca9685Error

if TYPE_CHECKING:
    from ..config import ActuatorSection, ServoSection

log = logging.getLogger(__name__)

PIN_FACTORIES: dict[str, tuple[str, str, str]] = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "sudo apt install python3-lgpio (or pip install lgpio)"),
    "pigpio": (
        "gpiozero.pins.pigpio",
        "PiGPIOFactory",
        "sudo apt install pigpio python3-pigpio && sudo systemctl enable --now pigpiod",
    ),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory", "sudo apt install python3-rpi.gpio"),
    "native": ("gpiozero.pins.native", "NativeFactory", "run on a Raspberry Pi"),
}


class ActuatorError(BinAgentError, RuntimeError):
    """A pin factory or a device cannot be set up."""

    exit_code = os.EX_CONFIG


class PinDaemonUnreachable(ActuatorError):
    """The pigpio factory finds no ``pigpiod`` (not started yet, or restarting): it may
    answer in a moment, so the agent exits with a status systemd restarts on (not 78)."""

    exit_code = os.EX_TEMPFAIL


def warn_if_software_timed(actuator: ActuatorSection) -> None:
    """Say so when servo pulses will be timed by software (the servo twitches)."""
    if actuator.servo_drive == "gpiozero" and actuator.pin_factory in SOFTWARE_TIMED_FACTORIES:
        log.warning(
            "servo pulses from pin factory %r are timed by software: the servo may twitch. "
            'Hardware-timed: pin_factory = "pigpio" (Pi 4), servo_drive = "kernel_pwm" or '
            '"pca9685" (Pi 4 and 5)',
            actuator.pin_factory,
        )


SYSFS_GPIO = Path("/sys/bus/gpio/devices")
HEADER_GPIO_DEVICES = ("1f000d0000.gpio", "fe200000.gpio", "3f200000.gpio", "20200000.gpio")
"""The GPIO controller of the 40-pin header, by device: Pi 5 (RP1, gpiod label
``pinctrl-rp1``), Pi 4 (``pinctrl-bcm2711``), Pi 3 and Pi Zero/1 (``pinctrl-bcm2835``)."""


def find_header_gpiochip(root: Path | None = None) -> int | None:
    """The N of the ``/dev/gpiochipN`` that drives the 40-pin header, or ``None``.

    Found by the controller each ``gpiochipN`` belongs to (sysfs links it below
    its device: ``…/1f000d0000.gpio/gpiochip13``), not by number: gpiozero's
    lgpio factory opens 0 (4 on a Pi 5 with an old kernel), and recent Pi 5
    kernels list only gpiochip10 and up (Adafruit_Blinka #1119), so it opens none.
    """
    chips = []
    for link in (SYSFS_GPIO if root is None else root).glob("gpiochip*"):
        try:
            chips.append((int(link.name.removeprefix("gpiochip")), link.resolve(strict=True).parent.name))
        except (OSError, ValueError):
            continue
    for device in HEADER_GPIO_DEVICES:
        for number, parent in sorted(chips):
            if parent == device:
                return number
    return None


def make_pin_factory(name: str, gpiochip: int | None = None) -> Any:
    """Create the gpiozero pin factory named in the config.

    ``mock`` gives gpiozero's ``MockFactory`` with PWM-capable mock pins;
    ``default`` lets gpiozero choose (``$GPIOZERO_PIN_FACTORY`` or its own order).
    Returns ``None`` for ``default``: gpiozero then uses its global factory.

    :param gpiochip: ``lgpio``: the ``/dev/gpiochipN`` to open; ``None``: the
        header's, found by :func:`find_header_gpiochip` (else gpiozero's guess).

    :raises ActuatorError: the factory's library is missing or cannot reach
        the GPIO hardware; the message says how to fix it.
    """
    if name == "default":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    try:
        module_name, class_name, fix = PIN_FACTORIES[name]
    except KeyError:
        raise ActuatorError(f"unknown pin factory {name!r}") from None
    kwargs: dict[str, Any] = {}
    if name == "lgpio":
        chip = gpiochip if gpiochip is not None else find_header_gpiochip()
        if chip is not None:
            kwargs["chip"] = chip
            log.info(
                "lgpio pin factory: /dev/gpiochip%d%s", chip, "" if gpiochip is not None else " (the header's, found)"
            )
    try:
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)(**kwargs)
    except OSError as exc:
        if name != "pigpio":
            raise ActuatorError(f"pin factory {name!r} cannot load ({type(exc).__name__}: {exc}). Fix: {fix}") from None
        # gpiozero: IOError('failed to connect to localhost:8888') when pigpio.pi() is not connected.
        raise PinDaemonUnreachable(
            f"pin factory 'pigpio': the pigpiod daemon does not answer ({exc}). "
            "Fix: sudo systemctl enable --now pigpiod (the agent is restarted meanwhile)"
        ) from None
    except Exception as exc:  # gpiozero raises many kinds (ImportError, OSError, PinFactoryFallback…)
        raise ActuatorError(
            f"pin factory {name!r} cannot load ({type(exc).__name__}: {exc}). "
            f'Fix: {fix}; or set actuator.pin_factory = "mock" to run without GPIO'
        ) from None


class Sorter(Protocol):
    """Something that puts an item into a compartment.

    ``takes_the_item``: whether a sort moves the item out of the drop zone itself (a
    tray tilting, a flap opening), and with it what the camera watches; the agent
    tells the trigger (``Trigger.item_taken_away``). False where a person takes it
    (guidance LEDs) or nothing does.
    """

    takes_the_item: bool

    def sort(self, compartment: str) -> None:
        """Actuate for ``compartment`` and return when the mechanics are home again."""

    def close(self) -> None:
        """Return home, release the pins."""


class ChuteSorter:
    """One servo turns a chute (or tilts a tray) towards the compartment.

    :param servo: a gpiozero ``AngularServo`` or a :class:`~bin_agent.drives.PulseServo`.
    :param angles: compartment → angle.
    :param home_angle: rest position, also taken at start-up.
    :param travel_seconds: how long the servo needs to get anywhere.
    :param dwell_seconds: how long it holds so the item slides off.
    :param sleep: injectable for tests that must not wait.
    """

    takes_the_item = True  # the tray tilts and the item slides off

    def __init__(
        self,
        servo: Any,
        angles: Mapping[str, float],
        home_angle: float,
        travel_seconds: float,
        dwell_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.servo = servo
        self.angles = dict(angles)
        self.home_angle = home_angle
        self.travel_seconds = travel_seconds
        self.dwell_seconds = dwell_seconds
        self._sleep = sleep
        self._lock = threading.Lock()
        self.home()

    @classmethod
    def from_config(cls, settings: ServoSection, dwell_seconds: float, drive: ServoDrive) -> ChuteSorter:
        servo = drive.servo(settings.pin, settings.channel, settings, settings.home_angle)
        return cls(servo, settings.angles, settings.home_angle, settings.travel_seconds, dwell_seconds)

    def sort(self, compartment: str) -> None:
        with self._lock:
            self.servo.angle = self.angles[compartment]
            self._sleep(self.travel_seconds + self.dwell_seconds)
            self._home_unlocked()

    def home(self) -> None:
        with self._lock:
            self._home_unlocked()

    def _home_unlocked(self) -> None:
        self.servo.angle = self.home_angle
        self._sleep(self.travel_seconds)
        self.servo.detach()

    def close(self) -> None:
        try:
            self.home()
        finally:
            self.servo.close()


class FlapSorter:
    """One servo per compartment opens its flap, holds, and closes it.

    :param flaps: compartment → ``(servo, open_angle, closed_angle)``.
    """

    takes_the_item = True  # the flap opens under the item

    def __init__(
        self,
        flaps: Mapping[str, tuple[Any, float, float]],
        travel_seconds: float,
        dwell_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.flaps = dict(flaps)
        self.travel_seconds = travel_seconds
        self.dwell_seconds = dwell_seconds
        self._sleep = sleep
        self._lock = threading.Lock()
        with self._lock:
            for compartment in self.flaps:
                self._close_flap(compartment)

    @classmethod
    def from_config(cls, actuator: ActuatorSection, drive: ServoDrive) -> FlapSorter:
        servo_settings = actuator.servo
        flaps = {
            name: (
                drive.servo(flap.pin, flap.channel, servo_settings, flap.closed_angle),
                flap.open_angle,
                flap.closed_angle,
            )
            for name, flap in actuator.flaps.items()
        }
        return cls(flaps, servo_settings.travel_seconds, actuator.dwell_seconds)

    def sort(self, compartment: str) -> None:
        with self._lock:
            servo, open_angle, _ = self.flaps[compartment]
            servo.angle = open_angle
            self._sleep(self.travel_seconds + self.dwell_seconds)
            self._close_flap(compartment)

    def _close_flap(self, compartment: str) -> None:
        servo, _, closed_angle = self.flaps[compartment]
        servo.angle = closed_angle
        self._sleep(self.travel_seconds)
        servo.detach()

    def close(self) -> None:
        with self._lock:
            for compartment, (servo, _, _) in self.flaps.items():
                try:
                    self._close_flap(compartment)
                finally:
                    servo.close()


class GuidanceSorter:
    """One LED per compartment: light the right one for the dwell time.

    :param leds: compartment → gpiozero ``LED``.
    """

    takes_the_item = False  # a person takes it where the LED says

    def __init__(
        self,
        leds: Mapping[str, Any],
        dwell_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.leds = dict(leds)
        self.dwell_seconds = dwell_seconds
        self._sleep = sleep
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, actuator: ActuatorSection, pin_factory: Any) -> GuidanceSorter:
        from gpiozero import LED

        leds = {name: LED(pin, pin_factory=pin_factory) for name, pin in actuator.leds.items()}
        return cls(leds, actuator.dwell_seconds)

    def sort(self, compartment: str) -> None:
        with self._lock:
            led = self.leds[compartment]
            led.on()
            try:
                self._sleep(self.dwell_seconds)
            finally:
                led.off()

    def close(self) -> None:
        for led in self.leds.values():
            led.off()
            led.close()


class NoSorter:
    """Sorts nothing (a camera-only counting bin, or a dry run)."""

    takes_the_item = False

    def sort(self, compartment: str) -> None:
        pass

    def close(self) -> None:
        pass


class Indicators:
    """Optional status LED and buzzer.

    The LED is steady while ready, blinks while an item is handled and
    blinks fast on error; the buzzer beeps once per sorted item.
    """

    def __init__(self, status_led: Any = None, buzzer: Any = None) -> None:
        self.status_led = status_led
        self.buzzer = buzzer

    @classmethod
    def from_config(cls, actuator: ActuatorSection, pin_factory: Any) -> Indicators:
        status_led = buzzer = None
        if actuator.status_led_pin is not None:
            from gpiozero import LED

            status_led = LED(actuator.status_led_pin, pin_factory=pin_factory)
        if actuator.buzzer_pin is not None:
            from gpiozero import Buzzer

            buzzer = Buzzer(actuator.buzzer_pin, pin_factory=pin_factory)
        return cls(status_led, buzzer)

    def ready(self) -> None:
        if self.status_led is not None:
            self.status_led.on()

    def busy(self) -> None:
        if self.status_led is not None:
            self.status_led.blink(on_time=0.2, off_time=0.2)

    def error(self) -> None:
        if self.status_led is not None:
            self.status_led.blink(on_time=0.05, off_time=0.05)

    def sorted_item(self) -> None:
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.08, off_time=0.0, n=1)

    def close(self) -> None:
        for device in (self.status_led, self.buzzer):
            if device is not None:
                device.off()
                device.close()


def build_sorter(actuator: ActuatorSection, pin_factory: Any) -> Sorter:
    """The sorter the config asks for (``actuator.kind``), its servos on ``actuator.servo_drive``."""
    try:
        if actuator.kind in ("servo", "flaps"):
            warn_if_software_timed(actuator)
            drive = ServoDrive.from_config(actuator, pin_factory)
            if actuator.kind == "servo":
                return ChuteSorter.from_config(actuator.servo, actuator.dwell_seconds, drive)
            return FlapSorter.from_config(actuator, drive)
        if actuator.kind == "leds":
            return GuidanceSorter.from_config(actuator, pin_factory)
        return NoSorter()
    except ActuatorError:
        raise
    except (KernelPwmError, Pca9685Error) as exc:
        raise ActuatorError(f"actuator.servo_drive = {actuator.servo_drive!r}: {exc}") from None
    except Exception as exc:  # gpiozero: BadPinFactory, PinInvalidPin, GPIOPinInUse, PinPWMUnsupported…
        raise ActuatorError(f"actuator.{actuator.kind}: cannot set up ({type(exc).__name__}: {exc})") from None
