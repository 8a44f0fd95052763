"""A PCA9685 16-channel PWM board on I²C, through ``smbus2``.

The board times its pulses with its own oscillator: no jitter whatever the
Pi does, any Pi model, 16 servos on two GPIOs (SDA GPIO2, SCL GPIO3). Enable
I²C (``sudo raspi-config nonint do_i2c 0``), check the board answers with
``i2cdetect -y 1`` (address 0x40 unless its A0-A5 pads are bridged).

Registers (NXP PCA9685 data sheet, rev. 4): ``MODE1`` 0x00 (bit 4 SLEEP, bit 5
AI auto-increment, bit 7 RESTART), ``PRE_SCALE`` 0xFE (writable only while
asleep), and per output *n* four bytes from ``0x06 + 4n``: ``ON_L, ON_H,
OFF_L, OFF_H``, the 12-bit counts (of 4096 per period) at which the output
goes high and low; bit 4 of ``OFF_H`` holds the output fully off.
``prescale = round(oscillator / (4096 * frequency)) - 1``: 121 for 50 Hz at
the nominal 25 MHz. Each output's four bytes are written in one I²C block
write, so a servo never sees half an update.

``smbus2`` rather than Adafruit's CircuitPython driver: it is pure Python with
no dependencies, where ``adafruit-circuitpython-pca9685`` needs the Blinka
compatibility layer and its board-detection and GPIO stack.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..errors import BinAgentError

log = logging.getLogger(__name__)

MODE1 = 0x00
PRE_SCALE = 0xFE
LED0_ON_L = 0x06
SLEEP = 0x10
AUTO_INCREMENT = 0x20
RESTART = 0x80
FULL_OFF = 0x10  # in OFF_H
COUNTS = 4096
NOMINAL_OSCILLATOR_HZ = 25_000_000.0
SERVO_FREQUENCY_HZ = 50.0


SMBUS2_FIX = (
    "smbus2 is not installed. Fix: sudo apt install python3-smbus2 (the agent's venv sees "
    "the OS's packages; scripts/install-pi.sh does this when the config selects pca9685), "
    "or <venv>/bin/pip install smbus2"
)


def _open_bus(i2c_bus: int) -> Any:
    """``smbus2.SMBus(i2c_bus)``; :class:`Pca9685Error` naming the fix when smbus2 or the bus is missing."""
    try:
        from smbus2 import SMBus
    except ImportError:
        raise Pca9685Error(SMBUS2_FIX) from None
    try:
        bus = SMBus(i2c_bus)
    except OSError as exc:
        raise Pca9685Error(
            f"/dev/i2c-{i2c_bus} cannot be opened ({exc.strerror}). Fix: "
            "sudo raspi-config nonint do_i2c 0, and run the agent in group i2c"
        ) from None
    return bus


def read_mode1(i2c_bus: int, address: int) -> int:
    """Open ``/dev/i2c-<i2c_bus>``, read the board's ``MODE1`` register, close: nothing is written.

    :raises Pca9685Error: smbus2 missing, the bus cannot be opened or no board answers.
    """
    bus = _open_bus(i2c_bus)
    try:
        return int(bus.read_byte_data(address, MODE1))
    except OSError as exc:
        raise Pca9685Error(
            f"no PCA9685 answers at 0x{address:02x} on /dev/i2c-{i2c_bus} ({exc.strerror}). "
            f"Fix: check SDA/SCL/3.3 V/GND and 'i2cdetect -y {i2c_bus}'"
        ) from None
    finally:
        bus.close()


class Pca9685Error(BinAgentError, RuntimeError):
    """The board cannot be reached; the message says the fix."""

    exit_code = os.EX_UNAVAILABLE


def prescale_for(frequency_hz: float, oscillator_hz: float = NOMINAL_OSCILLATOR_HZ) -> int:
    """The ``PRE_SCALE`` value for ``frequency_hz`` (data sheet, section 7.3.5)."""
    prescale = round(oscillator_hz / (COUNTS * frequency_hz)) - 1
    if not 3 <= prescale <= 255:
        raise ValueError(f"{frequency_hz} Hz is out of the PCA9685's range at {oscillator_hz} Hz")
    return prescale


class Pca9685:
    """The board: sets 50 Hz once, then hands out :class:`Pca9685Output` channels.

    :param bus: an ``smbus2.SMBus`` (or anything with its ``read_byte_data``,
        ``write_byte_data`` and ``write_i2c_block_data``).
    :param address: the board's 7-bit I²C address.
    :param oscillator_hz: the board's clock; the nominal 25 MHz is often a few
        per cent off: measure the pulse once and set it if angles are off.
    """

    def __init__(
        self,
        bus: Any,
        address: int = 0x40,
        *,
        frequency_hz: float = SERVO_FREQUENCY_HZ,
        oscillator_hz: float = NOMINAL_OSCILLATOR_HZ,
        sleep: Any = time.sleep,
    ) -> None:
        self.bus = bus
        self.address = address
        self.prescale = prescale_for(frequency_hz, oscillator_hz)
        # The period the board really runs at, after rounding the prescale.
        self.period_seconds = (self.prescale + 1) * COUNTS / oscillator_hz
        self._lock = threading.Lock()
        self._open_channels: set[int] = set()
        mode1 = bus.read_byte_data(address, MODE1)
        awake = mode1 & ~(SLEEP | RESTART)
        bus.write_byte_data(address, MODE1, awake | SLEEP)  # PRE_SCALE is written asleep
        bus.write_byte_data(address, PRE_SCALE, self.prescale)
        bus.write_byte_data(address, MODE1, awake)
        sleep(0.0005)  # the oscillator needs 500 us after waking
        bus.write_byte_data(address, MODE1, awake | RESTART | AUTO_INCREMENT)

    @classmethod
    def open(cls, i2c_bus: int, address: int, *, oscillator_hz: float = NOMINAL_OSCILLATOR_HZ) -> Pca9685:
        """The board on ``/dev/i2c-<i2c_bus>`` at ``address``."""
        bus = _open_bus(i2c_bus)
        try:
            return cls(bus, address, oscillator_hz=oscillator_hz)
        except OSError as exc:
            bus.close()
            raise Pca9685Error(
                f"no PCA9685 answers at 0x{address:02x} on /dev/i2c-{i2c_bus} "
                f"({exc.strerror}). Fix: check SDA/SCL/3.3 V/GND and 'i2cdetect -y "
                f"{i2c_bus}'"
            ) from None

    def output(self, channel: int) -> Pca9685Output:
        if not 0 <= channel <= 15:
            raise ValueError(f"PCA9685 channel {channel} is not 0-15")
        if channel in self._open_channels:
            raise ValueError(f"PCA9685 channel {channel} is already in use")
        self._open_channels.add(channel)
        return Pca9685Output(self, channel)

    def release(self, channel: int) -> None:
        """An output is closed; the bus closes with the last one."""
        self._open_channels.discard(channel)
        if not self._open_channels:
            self.close()

    def counts_for(self, seconds: float) -> int:
        """OFF count for a pulse ``seconds`` wide (ON at count 0)."""
        counts = round(seconds / self.period_seconds * COUNTS)
        if not 0 < counts < COUNTS:
            raise ValueError(f"pulse of {seconds} s does not fit a {self.period_seconds:.4f} s period")
        return counts

    def write_channel(self, channel: int, on: int, off: int, full_off: bool = False) -> None:
        data = [on & 0xFF, on >> 8, off & 0xFF, (off >> 8) | (FULL_OFF if full_off else 0)]
        with self._lock:
            self.bus.write_i2c_block_data(self.address, LED0_ON_L + 4 * channel, data)

    def close(self) -> None:
        self.bus.close()


class Pca9685Output:
    """One of the board's 16 outputs, as a servo pulse output."""

    def __init__(self, board: Pca9685, channel: int) -> None:
        self.board = board
        self.channel = channel

    def set_pulse(self, seconds: float | None) -> None:
        if seconds is None:
            self.board.write_channel(self.channel, 0, 0, full_off=True)
        else:
            self.board.write_channel(self.channel, 0, self.board.counts_for(seconds))

    def close(self) -> None:
        try:
            self.set_pulse(None)
        finally:
            self.board.release(self.channel)
