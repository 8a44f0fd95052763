#!/usr/bin/env python3
"""Memory of the agent's MQTT side when someone publishes a huge command.

Starts a plain mosquitto on a free loopback port (no broker-side size limit, so
only the agent's own guard counts), connects the agent's :class:`MqttLink` with
the real :class:`CommandGate`, publishes ``--megabytes`` MB to ``cmd/ping`` with
``mosquitto_pub`` and then a small ping, and prints what reached the command
handler and this process's RSS before, after and at its peak (VmHWM).

With the MQTT 5 Maximum Packet Size the broker never sends the big command;
``--no-guard`` leaves that property out to show what paho would otherwise hold.

    python scripts/big_command_rss.py [--megabytes 200] [--no-guard]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bin_agent.config import MqttSection
from bin_agent.errors import run_script
from bin_agent.mqtt.commands import CommandGate, CommandRejected
from bin_agent.mqtt.link import MqttLink, Topics
from bin_agent.store import Store


def kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--no-guard", action="store_true", help="leave out the Maximum Packet Size")
    args = parser.parse_args()
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen([broker, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            gate = CommandGate()
            calls: list[tuple[str, int]] = []

            def handler(name: str, payload: bytes, retained: bool) -> dict[str, Any] | None:
                calls.append((name, len(payload)))
                try:
                    gate.check(name, payload, retained)
                except CommandRejected as exc:
                    return {"command": name, "ok": False, "reason": exc.reason}
                return {"command": name, "ok": True}

            store = Store(Path(tmp) / "agent.db")
            link = MqttLink(
                MqttSection(host="127.0.0.1", port=port),
                Topics.for_bin("smartbin", "big"),
                store,
                handler,
                lambda: {},
                client_id="big-command-agent",
            )
            if args.no_guard:
                del link._connect_properties.MaximumPacketSize  # the experiment's point
            link.start()
            if not link.wait_connected(10):
                raise SystemExit("could not connect to the test broker")
            before = kib("VmRSS")
            big = Path(tmp) / "big"
            with big.open("wb") as out:
                out.truncate(args.megabytes * 1_000_000)
            topic = "smartbin/big/cmd/ping"
            subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-f", str(big)], check=True)
            subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-m", "{}"], check=True)
            deadline = time.monotonic() + 60
            while ("ping", 2) not in calls and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"guard: {'off' if args.no_guard else f'Maximum Packet Size {link.max_packet_size} bytes'}")
            print(f"command payload sizes that reached the handler: {[size for _, size in calls]}")
            print(
                f"connected: {link.connected}; RSS before {before} KiB, after {kib('VmRSS')} KiB, "
                f"peak {kib('VmHWM')} KiB"
            )
            link.stop()
        finally:
            proc.kill()
            proc.wait()
    return 0


if __name__ == "__main__":
    run_script(main)
