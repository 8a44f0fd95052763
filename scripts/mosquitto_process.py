"""A real mosquitto broker on a free loopback port, for the tests and the soak run.

It lives outside the package (the agent never starts a broker) and outside the test package
(``scripts/soak.py`` is no test): ``tests/conftest.py`` imports it as
``scripts.mosquitto_process`` (pytest puts the checkout on ``sys.path``), ``scripts/soak.py`` as
``mosquitto_process`` (Python puts the script's own folder there).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class MosquittoMissing(RuntimeError):
    """No mosquitto binary on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """A mosquitto on a loopback port, started, stopped (SIGTERM), killed (SIGKILL) and restarted
    at will; its output goes to ``workdir/mosquitto.log``.

    :param workdir: where its config, log and (with ``persistence``) database go.
    :param port: its port (default: a free one).
    :param persistence: keep sessions across restarts; a clean :meth:`stop` saves them, a
        :meth:`kill` loses what came after the last save.
    :param save_every_change: with ``persistence``, save after every change (``autosave_on_changes``,
        ``autosave_interval 1``) instead of every 1,800 s: a :meth:`kill` then loses at most the
        message acknowledged just before it, not every one queued since the last save, at several
        times the cost per message (``scripts/broker_ack_loss.py``).
    :raises MosquittoMissing: mosquitto is not installed.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistence: bool = False, save_every_change: bool = False
    ) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise MosquittoMissing("mosquitto not installed (apt-get install -y mosquitto)")
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.conf = workdir / "mosquitto.conf"
        # A test's subscriber (paho, sharing the GIL with the agent under test) can fall more
        # than mosquitto's default 1,000 QoS 1 messages behind a fast flush: the broker would
        # then drop what the agent delivered (PUBACK'd) and the test would blame the agent.
        text = f"listener {self.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
        if persistence:
            text += f"persistence true\npersistence_location {workdir}/\n"
            if save_every_change:
                text += "autosave_on_changes true\nautosave_interval 1\n"
            if os.geteuid() == 0:
                # Started as root, mosquitto would become the mosquitto user, which cannot write here.
                text += "user root\n"
        else:
            text += "persistence false\n"
        self.conf.write_text(text)
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        """Start it and wait (10 s at most) until it accepts connections and has set up its
        signal handlers.

        mosquitto opens its listeners *before* it installs its handlers (``listeners__start``
        then ``signal__setup`` in its ``main``), so a SIGHUP sent as soon as the port answers
        can still meet the default action and end the broker. Its "running" line is logged
        after the handlers, so that line, not the open port, means ready.
        """
        logged_before = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if self._says_running(logged_before):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")

    def _says_running(self, offset: int) -> bool:
        """Whether the log, from ``offset`` on, has mosquitto's "version X running" line."""
        with self.log.open("rb") as log:
            log.seek(offset)
            return b" running\n" in log.read()

    def stop(self) -> None:
        """A clean stop (SIGTERM): with ``persistence`` the broker saves its sessions."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would stop it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1
        self.proc = None

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
