"""Servo drives: what makes the 50 Hz pulses a hobby servo follows.

A servo holds still only if every pulse has the same width. Three drives:

* ``gpiozero`` — gpiozero's ``AngularServo`` on the configured pin factory.
  With ``pigpio`` (Pi 4 and older; needs the ``pigpiod`` daemon) the pulses are
  timed by DMA, i.e. by hardware: no jitter. With ``lgpio`` (gpiozero's choice
  on Bookworm, and the only GPIO factory on a Pi 5) they are timed by software
  and the servo twitches now and then.
* ``kernel_pwm`` — the SoC's PWM block through the kernel's sysfs interface
  (``dtoverlay=pwm-2chan``): hardware-timed on a Pi 4 and a Pi 5, GPIO12, 13,
  18 or 19 only (:mod:`.kernel_pwm`).
* ``pca9685`` — a PCA9685 16-channel PWM board on I²C: hardware-timed on any
  Pi, 16 servos, the board's own clock (:mod:`.pca9685`).

The last two give a :class:`~.servo.PulseServo`, which moves, detaches and
closes like gpiozero's ``AngularServo``, so the sorters do not care which drive
turns them. Hardware libraries are imported only where a drive is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .servo import PulseOutput, PulseServo

if TYPE_CHECKING:
    from ..config import ActuatorSection, ServoSection

__all__ = [
    "HARDWARE_TIMED",
    "NO_PWM_FACTORIES",
    "PulseOutput",
    "PulseServo",
    "ServoDrive",
    "SOFTWARE_TIMED_FACTORIES",
    "pulse_timer",
]

SOFTWARE_TIMED_FACTORIES = frozenset({"lgpio", "rpigpio", "default"})
"""gpiozero pin factories whose servo pulses are timed by software (they jitter); ``default``
is lgpio on Bookworm and on a Pi 5."""
HARDWARE_TIMED = frozenset({"pigpio", "kernel_pwm", "pca9685"})
"""What times servo pulses in hardware: pigpio's DMA (Pi 4 and older, a pin factory), the
kernel's PWM (``dtoverlay=pwm-2chan``) and a PCA9685 board over I2C (servo drives)."""
NO_PWM_FACTORIES = frozenset({"native"})
"""gpiozero pin factories with no PWM at all: a servo cannot move."""


def pulse_timer(actuator: ActuatorSection) -> str:
    """What times the servo pulses of ``[actuator]``: its ``servo_drive``, or for the
    ``gpiozero`` drive its ``pin_factory``. Look it up in the tables above."""
    return actuator.pin_factory if actuator.servo_drive == "gpiozero" else actuator.servo_drive


class ServoDrive:
    """Makes the servos of ``[actuator]`` with the drive it names (``servo_drive``).

    :param kind: ``"gpiozero"``, ``"kernel_pwm"`` or ``"pca9685"``.
    :param pin_factory: the gpiozero pin factory (``gpiozero`` drive).
    :param pwm_chip: ``kernel_pwm``: the ``pwmchipN`` directory to use (found
        by its device: :func:`.kernel_pwm.find_chip`).
    :param board: ``pca9685``: the opened board, shared by all its servos (its
        I²C bus closes with the last servo).
    """

    def __init__(self, kind: str, *, pin_factory: Any = None, pwm_chip: Path | None = None, board: Any = None) -> None:
        self.kind = kind
        self.pin_factory = pin_factory
        self.pwm_chip = pwm_chip
        self.board = board

    @classmethod
    def from_config(cls, actuator: ActuatorSection, pin_factory: Any) -> ServoDrive:
        """The drive of an ``[actuator]`` section; opens the PCA9685 board if it is the one."""
        if actuator.servo_drive == "kernel_pwm":
            from . import kernel_pwm

            return cls("kernel_pwm", pwm_chip=kernel_pwm.find_chip(actuator.kernel_pwm.chip, kernel_pwm.SYSFS_PWM))
        if actuator.servo_drive == "pca9685":
            from .pca9685 import Pca9685

            board = actuator.pca9685
            return cls("pca9685", board=Pca9685.open(board.i2c_bus, board.address, oscillator_hz=board.oscillator_hz))
        return cls("gpiozero", pin_factory=pin_factory)

    def servo(self, pin: int, channel: int, settings: ServoSection, initial_angle: float | None) -> Any:
        """A servo with ``settings``' range (``[actuator.servo]``) at ``initial_angle``
        (``None``: no pulses until the first move).

        :param pin: its GPIO (``gpiozero`` and ``kernel_pwm`` drives).
        :param channel: its PCA9685 output (``pca9685`` drive).
        """
        pulse_range = (settings.min_pulse_width_ms / 1000.0, settings.max_pulse_width_ms / 1000.0)
        if self.kind == "gpiozero":
            from gpiozero import AngularServo

            return AngularServo(
                pin,
                initial_angle=initial_angle,
                min_angle=settings.min_angle,
                max_angle=settings.max_angle,
                min_pulse_width=pulse_range[0],
                max_pulse_width=pulse_range[1],
                pin_factory=self.pin_factory,
            )
        output: PulseOutput
        if self.kind == "kernel_pwm":
            from .kernel_pwm import KernelPwmOutput

            assert self.pwm_chip is not None
            output = KernelPwmOutput.for_pin(self.pwm_chip, pin)
        else:
            output = self.board.output(channel)
        return PulseServo(
            output,
            min_angle=settings.min_angle,
            max_angle=settings.max_angle,
            min_pulse_width=pulse_range[0],
            max_pulse_width=pulse_range[1],
            initial_angle=initial_angle,
        )
