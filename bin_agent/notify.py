"""systemd service notifications (``sd_notify``) and the watchdog, without libsystemd.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, a unix datagram
socket; the service sends newline-separated ``KEY=VALUE`` assignments to it:
``READY=1`` once it is up, ``STATUS=...`` for ``systemctl status``,
``WATCHDOG=1`` at least once per ``WatchdogSec=`` and ``STOPPING=1`` on the way
out. With ``WatchdogSec=`` systemd also sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``, the process meant to ping); if the pings stop, systemd
kills the service with ``SIGABRT`` and ``Restart=on-failure`` restarts it.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the agent
runs the same from a shell.

Typical main loop::

    notifier = Notifier()
    ...                       # camera, model, pins up
    notifier.ready("watching")
    while running:
        frame = source.read()
        notifier.watchdog_if_due()   # only while frames flow
        ...
        with notifier.keepalive(expected_seconds + margin):
            sorter.sort(compartment)   # blocks longer than the watchdog allows
    notifier.stopping()
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier"]


class Notifier:
    """Sends ``sd_notify`` messages to the socket systemd gave this process.

    The environment is read once, at construction: ``$NOTIFY_SOCKET`` (an
    absolute path, or ``@name`` for the abstract namespace), ``$WATCHDOG_USEC``
    and ``$WATCHDOG_PID``. Sending never raises: a failure is logged at
    warning level the first time and at debug level after that, and the
    method returns ``False``.

    Every sending method returns ``True`` if the datagram was sent, ``False``
    if notifications are disabled or sending failed. All are thread-safe.

    :param environ: the environment to read; ``None`` for :data:`os.environ`.
    :param pid: this process's id, compared with ``$WATCHDOG_PID``; ``None``
        for :func:`os.getpid`.
    :param clock: monotonic clock in seconds, for :meth:`watchdog_if_due`.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval = (
            _watchdog_interval(env, os.getpid() if pid is None else pid) if self._address is not None else None
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._warned = False
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether ``$NOTIFY_SOCKET`` names a usable socket address."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """``WatchdogSec=`` in seconds, or ``None`` if systemd does not watch
        this process (no socket, no or invalid ``$WATCHDOG_USEC``, or
        ``$WATCHDOG_PID`` naming another process). Ping at half of it."""
        return self._watchdog_interval

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (``"KEY=VALUE"`` strings) as one datagram."""
        if self._address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.sendto(data, self._address)
                return True
            except OSError as exc:
                # A fresh socket next time, in case this one is broken.
                self._close_socket()
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                log.log(level, "sd_notify to %r failed: %s", self._address, exc)
                return False

    def ready(self, status: str = "") -> bool:
        """``READY=1`` (plus ``STATUS=status`` if given): start-up finished.
        Send it once camera, model and pins are up; systemd holds units
        ordered after this one until then."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``
        (newlines are replaced by spaces)."""
        return self.notify(*_status(text)) if text else False

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: tell systemd the service is alive. A no-op (returns
        ``False``) when systemd does not watch this process."""
        if self._watchdog_interval is None:
            return False
        self._last_ping = self._clock()
        return self.notify("WATCHDOG=1")

    def watchdog_if_due(self) -> bool:
        """Send ``WATCHDOG=1`` if half the watchdog interval has passed since
        the last ping (or none was sent yet); call it every loop iteration.
        Returns whether a ping was sent."""
        if self._watchdog_interval is None:
            return False
        last = self._last_ping
        if last is not None and self._clock() - last < self._watchdog_interval / 2:
            return False
        return self.watchdog()

    @contextlib.contextmanager
    def keepalive(self, seconds: float) -> Iterator[None]:
        """Keep the watchdog fed while the caller blocks for at most ``seconds``.

        For a step that is healthy but keeps the main loop from pinging (a
        sort holding the chute for its dwell time): a helper thread pings when
        due, but only until ``seconds`` have passed, so a step that hangs
        still stops the pings and systemd restarts the service. A no-op when
        systemd does not watch this process.
        """
        interval = self._watchdog_interval
        if interval is None or seconds <= 0:
            yield
            return
        deadline = self._clock() + seconds
        done = threading.Event()

        def feed() -> None:
            # A quarter of the interval: a due ping (at half) is never late by more.
            while not done.wait(interval / 4):
                if self._clock() >= deadline:
                    return
                self.watchdog_if_due()

        self.watchdog_if_due()
        feeder = threading.Thread(target=feed, name="watchdog-keepalive", daemon=True)
        feeder.start()
        try:
            yield
        finally:
            done.set()
            feeder.join()

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more from now before
        systemd's start (or stop) timeout fires, e.g. while a slow model loads."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def stopping(self, status: str = "") -> bool:
        """``STOPPING=1`` (plus ``STATUS=status`` if given): shutting down."""
        return self.notify("STOPPING=1", *_status(status))

    def close(self) -> None:
        """Close the socket; later calls reopen it."""
        with self._lock:
            self._close_socket()

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status(text: str) -> tuple[str, ...]:
    # A newline would start a new assignment: systemd would read the rest of
    # the status text as commands.
    return (f"STATUS={' '.join(text.splitlines())}",) if text else ()


def _socket_address(value: str) -> str | bytes | None:
    """The ``sendto`` address for ``$NOTIFY_SOCKET``, or ``None`` if unset or
    not one systemd's ``sd_notify`` accepts (absolute path or ``@abstract``)."""
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL instead of the "@"; not NUL-terminated.
        address: bytes = b"\0" + os.fsencode(value[1:])
    elif value.startswith("/"):
        address = os.fsencode(value)
    else:
        log.warning("ignoring NOTIFY_SOCKET=%r: not an absolute path or @abstract name", value)
        return None
    if len(address) > 107:  # sizeof(sun_path) - 1
        log.warning("ignoring NOTIFY_SOCKET=%r: too long for a unix socket address", value)
        return None
    return address


def _watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """``$WATCHDOG_USEC`` in seconds, by ``sd_watchdog_enabled``'s rules:
    ``None`` if unset, not a positive integer, or if ``$WATCHDOG_PID`` is set
    to a process other than ``pid``."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    try:
        microseconds = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    if microseconds <= 0:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    if watchdog_pid:
        try:
            if int(watchdog_pid) != pid:
                return None  # the watchdog is meant for another process
        except ValueError:
            log.warning("ignoring WATCHDOG_PID=%r: not an integer", watchdog_pid)
            return None
    return microseconds / 1_000_000
