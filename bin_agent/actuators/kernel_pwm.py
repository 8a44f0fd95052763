"""Hardware PWM through the kernel's sysfs interface (``/sys/class/pwm``).

Enable it with ``dtoverlay=pwm-2chan`` in ``/boot/firmware/config.txt`` and a
reboot: GPIO18 and GPIO19 then carry the PWM block's outputs (``pin=12,func=4,
pin2=13,func2=4`` moves them to GPIO12 and 13). Which channel drives which pin
depends on the block, told apart by its channel count (``npwm``):

* Pi 5 (RP1, 4 channels): GPIO12 → 0, GPIO13 → 1, GPIO18 → 2, GPIO19 → 3;
* Pi 4 and older (2 channels): GPIO12 and GPIO18 → 0, GPIO13 and GPIO19 → 1.

The chip is found by its device, not its number: ``pwmchipN`` numbers follow
probe order and change between kernels (raspberrypi/linux #6818: ``pwmchip2``
on a Pi 5 before 6.12, ``pwmchip0`` after), and a Pi 5 has a second 4-channel
block driving the fan (``1f0009c000.pwm``) that takes the servo's channel
without complaint while the servo never moves. Each ``pwmchipN`` links to its
device (``pwmchipN/device``); the servo's block is ``1f00098000.pwm`` on a
Pi 5 (RP1's PWM0), ``fe20c000.pwm`` on a Pi 4, ``3f20c000.pwm`` on a Pi 3.

Per channel: ``export`` it, write ``period`` and ``duty_cycle`` in
nanoseconds, then ``enable``. The kernel refuses a duty cycle longer than the
period at any moment, so the order of the writes matters; every write is
logged at DEBUG level. Raspberry Pi OS's udev rules give the ``gpio`` group
write access to the files, a moment after the export: that moment is waited for.

A small writer rather than a library: ``rpi-hardware-pwm`` fixes the sysfs
root (untestable off a Pi), takes duty cycles in percent of a float period,
and does not wait for udev after the export.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from ..errors import BinAgentError

log = logging.getLogger(__name__)

SYSFS_PWM = Path("/sys/class/pwm")
SERVO_PERIOD_NS = 20_000_000  # 50 Hz
CHANNEL_OF_PIN: dict[int, dict[int, int]] = {
    4: {12: 0, 13: 1, 18: 2, 19: 3},  # Pi 5: RP1's PWM0
    2: {12: 0, 18: 0, 13: 1, 19: 1},  # Pi 4 and older: PWM0 and PWM1
}
PWM_DEVICES = ("1f00098000.pwm", "fe20c000.pwm", "3f20c000.pwm", "20c000.pwm")
"""The block dtoverlay=pwm-2chan enables: Pi 5 (RP1 PWM0), Pi 4, Pi 3, Pi Zero/1."""
OVERLAY_FIX = "add 'dtoverlay=pwm-2chan' to /boot/firmware/config.txt and reboot"
ACCESS_FIX = (
    "the agent needs write access to /sys/class/pwm: run it in group gpio, and under "
    "systemd with ProtectKernelTunables=no: scripts/install-pi.sh adds that drop-in when the config selects kernel_pwm"
)


class KernelPwmError(BinAgentError, RuntimeError):
    """The PWM chip or channel is missing or cannot be written; the message says the fix."""

    exit_code = os.EX_UNAVAILABLE


def device_of(chip: Path) -> str:
    """The device a ``pwmchipN`` belongs to (``1f00098000.pwm``), or ``""``."""
    try:
        return (chip / "device").resolve(strict=True).name
    except OSError:
        return ""


def describe_chips(root: Path = SYSFS_PWM) -> str:
    """``pwmchip0 (1f00098000.pwm, 4 channels), …`` or ``none``: what this machine offers."""
    chips = []
    for chip in sorted(root.glob("pwmchip*")):
        what = [device_of(chip) or "device unknown"]
        try:
            what.append(f"{int((chip / 'npwm').read_text())} channels")
        except (OSError, ValueError):
            pass
        chips.append(f"{chip.name} ({', '.join(what)})")
    return ", ".join(chips) or "none"


def find_chip(setting: str, root: Path = SYSFS_PWM) -> Path:
    """The ``pwmchipN`` directory ``actuator.kernel_pwm.chip`` names.

    :param setting: ``"auto"`` (the first of :data:`PWM_DEVICES` present), a
        device name (``"1f00098000.pwm"``), or ``"pwmchipN"`` (by number:
        numbers change between kernels).
    :raises KernelPwmError: no such chip; the message lists the chips there are.
    """
    if setting.startswith("pwmchip"):
        return root / setting
    wanted = PWM_DEVICES if setting == "auto" else (setting,)
    by_device = {device_of(chip): chip for chip in sorted(root.glob("pwmchip*"))}
    for device in wanted:
        if device in by_device:
            return by_device[device]
    looked_for = "the Raspberry Pi's PWM block (" + ", ".join(PWM_DEVICES) + ")" if setting == "auto" else setting
    raise KernelPwmError(
        f"no PWM chip of {looked_for} in {root}: {OVERLAY_FIX} "
        f"(PWM chips here: {describe_chips(root)}; actuator.kernel_pwm.chip names one)"
    )


def channel_for_pin(chip: Path, pin: int) -> int:
    """The channel of ``chip`` whose output the overlay puts on GPIO ``pin``."""
    if not chip.is_dir():
        raise KernelPwmError(f"{chip} does not exist: {OVERLAY_FIX} (PWM chips here: {describe_chips(chip.parent)})")
    try:
        npwm = int((chip / "npwm").read_text())
    except (OSError, ValueError) as exc:
        raise KernelPwmError(f"{chip}/npwm cannot be read ({exc})") from None
    channels = CHANNEL_OF_PIN.get(npwm)
    if channels is None:
        raise KernelPwmError(
            f"{chip} has {npwm} channels: not a Raspberry Pi PWM block; "
            f"choose another actuator.kernel_pwm.chip ({describe_chips(chip.parent)})"
        )
    if pin not in channels:
        raise KernelPwmError(
            f"GPIO{pin} has no hardware PWM; use GPIO18 or 19 "
            "(dtoverlay=pwm-2chan), or 12 or 13 (pin=12,func=4,pin2=13,func2=4)"
        )
    return channels[pin]


class KernelPwmOutput:
    """One channel of a sysfs PWM chip sending servo pulses.

    :param chip: the ``/sys/class/pwm/pwmchipN`` directory.
    :param channel: the channel to export and drive.
    :param period_ns: the pulse period (20 ms: 50 Hz).
    :param access_wait_seconds: how long to wait after the export for the
        channel's files to appear and become writable (udev).
    """

    def __init__(
        self, chip: Path, channel: int, *, period_ns: int = SERVO_PERIOD_NS, access_wait_seconds: float = 2.0
    ) -> None:
        self.chip = Path(chip)
        self.channel = channel
        self.period_ns = period_ns
        self.dir = self.chip / f"pwm{channel}"
        self._exported = False
        if not self.dir.is_dir():
            self._write(self.chip / "export", channel)
            self._exported = True
        self._wait_for_access(access_wait_seconds)
        # The kernel refuses a period shorter than the current duty cycle.
        if self._read("duty_cycle") > period_ns:
            self._write(self.dir / "duty_cycle", 0)
        self._write(self.dir / "period", period_ns)
        self._enabled = self._read("enable") == 1

    @classmethod
    def for_pin(cls, chip: Path, pin: int) -> KernelPwmOutput:
        """The channel that drives GPIO ``pin`` (see :func:`channel_for_pin`)."""
        return cls(chip, channel_for_pin(Path(chip), pin))

    def set_pulse(self, seconds: float | None) -> None:
        if seconds is None:
            self._write(self.dir / "duty_cycle", 0)
            if self._enabled:
                self._write(self.dir / "enable", 0)
                self._enabled = False
            return
        duty_ns = round(seconds * 1e9)
        if not 0 <= duty_ns <= self.period_ns:
            raise ValueError(f"pulse of {seconds} s does not fit a {self.period_ns} ns period")
        # Duty cycle first: the first pulse after enabling is already the right one.
        self._write(self.dir / "duty_cycle", duty_ns)
        if not self._enabled:
            self._write(self.dir / "enable", 1)
            self._enabled = True

    def close(self) -> None:
        try:
            self.set_pulse(None)
        finally:
            if self._exported:
                self._write(self.chip / "unexport", self.channel)

    # ------------------------------------------------------------------ internals

    def _read(self, name: str) -> int:
        try:
            return int((self.dir / name).read_text().strip() or 0)
        except (OSError, ValueError) as exc:
            raise KernelPwmError(f"{self.dir / name} cannot be read ({exc}); {ACCESS_FIX}") from None

    def _write(self, path: Path, value: int) -> None:
        log.debug("pwm: %s = %d", path, value)
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            fix = ACCESS_FIX if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else OVERLAY_FIX
            raise KernelPwmError(f"cannot write {value} to {path} ({exc.strerror}); {fix}") from None

    def _wait_for_access(self, seconds: float) -> None:
        """Right after an export, udev has not yet made the new files ours."""
        import os

        deadline = time.monotonic() + seconds
        period = self.dir / "period"
        while not (period.exists() and os.access(period, os.W_OK)):
            if time.monotonic() >= deadline:
                raise KernelPwmError(
                    f"{period} did not become writable within {seconds:.1f} s "
                    f"after exporting channel {self.channel}; {ACCESS_FIX}"
                )
            time.sleep(0.02)
