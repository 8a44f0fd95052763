"""A servo on a hardware pulse output, moving like gpiozero's ``AngularServo``."""

from __future__ import annotations

from typing import Protocol


class PulseOutput(Protocol):
    """One hardware-timed 50 Hz output."""

    def set_pulse(self, seconds: float | None) -> None:
        """Send pulses ``seconds`` wide from now on; ``None``: no pulses (signal low)."""

    def close(self) -> None:
        """Stop the pulses and release the output."""


class PulseServo:
    """An angle → pulse-width servo on a :class:`PulseOutput`.

    Behaves like the part of gpiozero's ``AngularServo`` the sorters use: set
    :attr:`angle` (linear between ``min_angle`` at ``min_pulse_width`` and
    ``max_angle`` at ``max_pulse_width``; outside the range is a ``ValueError``),
    :meth:`detach` (no more pulses: the servo goes limp, no jitter, no current),
    :attr:`value` (``None`` when detached, else -1..1 across the range), :meth:`close`.
    """

    def __init__(
        self,
        output: PulseOutput,
        *,
        min_angle: float = -90.0,
        max_angle: float = 90.0,
        min_pulse_width: float = 0.0005,
        max_pulse_width: float = 0.0025,
        initial_angle: float | None = 0.0,
    ) -> None:
        if min_angle >= max_angle:
            raise ValueError("min_angle must be below max_angle")
        if not 0 < min_pulse_width < max_pulse_width:
            raise ValueError("pulse widths must satisfy 0 < min_pulse_width < max_pulse_width")
        self.output = output
        self.min_angle, self.max_angle = min_angle, max_angle
        self.min_pulse_width, self.max_pulse_width = min_pulse_width, max_pulse_width
        self._angle: float | None = None
        self.closed = False
        if initial_angle is None:
            self.detach()
        else:
            self.angle = initial_angle

    @property
    def angle(self) -> float | None:
        return self._angle

    @angle.setter
    def angle(self, angle: float | None) -> None:
        if angle is None:
            self.detach()
            return
        if not self.min_angle <= angle <= self.max_angle:
            raise ValueError(f"angle {angle} is outside [{self.min_angle}, {self.max_angle}]")
        share = (angle - self.min_angle) / (self.max_angle - self.min_angle)
        self.output.set_pulse(self.min_pulse_width + share * (self.max_pulse_width - self.min_pulse_width))
        self._angle = float(angle)

    @property
    def pulse_width(self) -> float | None:
        """Seconds of the pulses being sent, ``None`` when detached."""
        if self._angle is None:
            return None
        share = (self._angle - self.min_angle) / (self.max_angle - self.min_angle)
        return self.min_pulse_width + share * (self.max_pulse_width - self.min_pulse_width)

    @property
    def value(self) -> float | None:
        if self._angle is None:
            return None
        return 2 * (self._angle - self.min_angle) / (self.max_angle - self.min_angle) - 1

    def detach(self) -> None:
        self.output.set_pulse(None)
        self._angle = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.output.close()
