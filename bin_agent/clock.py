"""Whether the wall clock can be trusted: set by NTP since boot, or not.

A Raspberry Pi 4 (a Pi 5 without its battery) has no clock that runs while the power is off.
At boot Raspberry Pi OS sets the clock to the last time it saved (fake-hwclock, hourly and at
shutdown; systemd-timesyncd's ``/var/lib/systemd/timesync/clock``, every minute), so after a
power cut or weeks in storage the bin runs hours, days or months behind until NTP answers, and
then the clock jumps forward. The agent never orders or times anything by the wall clock where
a jump would break it (timeouts, schedules and rate limits are monotonic; the counts' reset is
compared by the store's row numbers; undelivered events and history stamped before the jump are
aged from the moment the clock is synchronised, :class:`~bin_agent.store.Store`); what is left
are times shown to people (an event's ``time``, ``counts.since``), and for those this module says
whether they can be believed: ``state.clock_synced``, ``clock_synced: false`` on an event stamped
by an unsynchronised clock, and a ``doctor`` line.

Two signs, either is enough:

* ``/run/systemd/timesync/synchronized``: systemd-timesyncd creates it at its first
  synchronisation after boot (``/run`` is emptied at boot). Once NTP has set the clock in this
  boot it is no longer the restored one, even if the network goes away afterwards.
* the kernel's NTP status (``adjtimex()``): ``TIME_ERROR`` while ``STA_UNSYNC`` is set, which
  every clock set by hand or by fake-hwclock has until an NTP client (timesyncd, chrony, ntpd)
  disciplines it; the kernel sets it again after hours without an NTP update.

No Python wrapper exists for ``adjtimex``: it is called through ``ctypes`` on the C library.
Elsewhere than Linux (a laptop on macOS) neither sign exists and the answer is None (unknown).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from pathlib import Path
from typing import Any

TIMESYNCD_SYNCHRONIZED = Path("/run/systemd/timesync/synchronized")
"""Created by systemd-timesyncd once it has synchronised the clock since boot."""

TIME_ERROR = 5
"""``adjtimex()``'s return value while the clock is not synchronised (``STA_UNSYNC``)."""

_TIMEX_BYTES = 512
"""Room for ``struct timex`` (208 bytes on 64-bit Linux): zeroed, so ``modes`` is 0 and the
call only reads."""


@functools.cache
def _adjtimex() -> Any:
    """libc's ``adjtimex``, or None where there is none (not Linux, no C library found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.adjtimex
    except (OSError, AttributeError):
        return None


def kernel_synchronised() -> bool | None:
    """The kernel's NTP status: True when an NTP client keeps the clock synchronised, False
    while ``STA_UNSYNC`` is set, None where ``adjtimex`` cannot be called."""
    call = _adjtimex()
    if call is None:
        return None
    state = call(ctypes.create_string_buffer(_TIMEX_BYTES))
    if state < 0:  # refused (a seccomp filter: the shipped unit must allow it): unknown, not unsynchronised
        return None
    return bool(state != TIME_ERROR)


def synchronised() -> bool | None:
    """Whether the wall clock was set by NTP (see the module doc): True when timesyncd has
    synchronised it since boot or the kernel says it is synchronised, False when the kernel
    says it is not (and timesyncd has not), None when neither can be asked (not Linux, or a
    sandbox that refuses ``adjtimex``: ``systemd/bin-agent.service`` allows it for this)."""
    try:
        if TIMESYNCD_SYNCHRONIZED.exists():
            return True
    except OSError:
        pass
    return kernel_synchronised()


def describe(synced: bool | None) -> str:
    """Words for a person (``doctor``, ``bin-agent status``)."""
    if synced is None:
        return (
            "cannot tell whether the clock is synchronised: no sign from systemd-timesyncd, and the kernel's NTP "
            "status cannot be read here (not Linux, or a sandbox that refuses adjtimex)"
        )
    if synced:
        return "synchronised by NTP"
    return (
        "NOT synchronised: times shown (events, counts since) may be hours to months behind until NTP answers "
        "(a Pi without a battery-backed clock starts from the last time it saved)"
    )
