"""sd_notify against real AF_UNIX datagram sockets: the exact bytes systemd reads."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bin_agent.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in a temp dir, and its path for NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # unix socket paths are short; pytest's may not be
        pytest.skip("tmp path too long for a unix socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(2.0)
    return False


def test_exact_datagrams(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}
    with Notifier(env, pid=4242) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval == 30.0
        assert notifier.ready()
        assert received(sock) == b"READY=1"
        assert notifier.ready("camera, model and pins up")
        assert received(sock) == b"READY=1\nSTATUS=camera, model and pins up"
        assert notifier.status("12 items\nREADY=1")  # no injected assignment
        assert received(sock) == b"STATUS=12 items READY=1"
        assert notifier.watchdog()
        assert received(sock) == b"WATCHDOG=1"
        assert notifier.extend_timeout(20.5)
        assert received(sock) == b"EXTEND_TIMEOUT_USEC=20500000"
        assert notifier.stopping()
        assert received(sock) == b"STOPPING=1"
        assert notifier.stopping("bye")
        assert received(sock) == b"STOPPING=1\nSTATUS=bye"
        assert not notifier.status("")
        assert nothing_waiting(sock)


def test_abstract_namespace_socket() -> None:
    name = f"bin-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert received(sock) == b"READY=1\nSTATUS=up"
        notifier.close()
        assert notifier.stopping()  # reopens after close
        assert received(sock) == b"STOPPING=1"
    finally:
        sock.close()


def test_no_socket_is_a_noop() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.watchdog_if_due()
    assert not notifier.stopping()
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_default_reads_os_environ(monkeypatch: pytest.MonkeyPatch, listener) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    notifier = Notifier()
    monkeypatch.delenv("NOTIFY_SOCKET")  # read once, at construction
    assert notifier.ready()
    assert received(sock) == b"READY=1"


def test_send_failure_never_raises_and_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.DEBUG, logger="bin_agent.notify"):
        results = [notifier.ready(), notifier.status("x"), notifier.stopping()]
    assert results == [False, False, False]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("usec", "wpid", "expected"),
    [
        ("30000000", None, 30.0),
        ("30000000", "PID", 30.0),
        ("30000000", "1", None),  # meant for another process
        ("500000", None, 0.5),
        ("0", None, None),
        ("-5", None, None),
        ("abc", None, None),
        (None, None, None),
        ("30000000", "junk", None),
    ],
)
def test_watchdog_interval_rules(usec: str | None, wpid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/nothing-here.sock"}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if wpid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if wpid == "PID" else wpid
    assert Notifier(env).watchdog_interval == expected


def test_watchdog_if_due_pings_at_half_interval(listener) -> None:
    sock, path = listener
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, clock=lambda: now[0])
    pings = []
    for t in [100.0, 101.0, 104.9, 105.0, 106.0, 109.9, 110.0, 130.0]:
        now[0] = t
        pings.append(notifier.watchdog_if_due())
    assert pings == [True, False, False, True, False, False, True, True]
    assert [received(sock) for _ in range(4)] == [b"WATCHDOG=1"] * 4
    assert nothing_waiting(sock)
