#!/usr/bin/env python3
"""What a mosquitto killed right after it acknowledged an event loses, and what saving after
every change costs it.

The bin deletes an event from its outbox once the broker acknowledges it (PUBACK); from then
on the event is the broker's. mosquitto keeps what it holds for a subscriber with a persistent
session (a dashboard that is away, or one the event is still on its way to) in memory and saves
it every ``autosave_interval`` (1,800 s by default) and at a clean stop. This measures it with
a real mosquitto on loopback:

    python scripts/broker_ack_loss.py [--dashboard away]                      # mosquitto's default saving
    python scripts/broker_ack_loss.py [--dashboard away] --save-every-change  # autosave_on_changes, interval 1
    python scripts/broker_ack_loss.py --flush 10000 [--dashboard away] [--save-every-change]

The first two publish ``--messages`` QoS 1 messages one by one to a broker with a QoS 1
subscriber of persistent session (connected, or ``--dashboard away`` until the end: a Home
Assistant restarting, the broker queues for it), SIGKILL the broker right after the PUBACK of every
``--kill-every``-th message (restarting it 0.3 s later, as systemd would), and count the messages acknowledged but
never received. ``--flush N`` instead times N QoS 1 messages from their publish to their last
PUBACK (no kill), with the subscriber connected or away: what the saving costs an outbox flush.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mosquitto_process import Mosquitto, MosquittoMissing  # noqa: E402

from bin_agent.errors import BinAgentError, run_script  # noqa: E402

TOPIC = "smartbin/loss-check/event"


class NoBroker(BinAgentError):
    exit_code = 69  # EX_UNAVAILABLE


class Dashboard:
    """A QoS 1 subscriber with a persistent session: the broker holds what it has not received."""

    def __init__(self, port: int) -> None:
        self.received: set[int] = set()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="loss-dashboard", clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]  # seconds; floats work
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(TOPIC, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise NoBroker("the dashboard could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.received.add(int(message.payload.split(b" ")[0]))

    def away(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Bin:
    """A QoS 1 publisher that remembers which messages the broker acknowledged."""

    def __init__(self, port: int) -> None:
        self._acknowledged_mids: set[int] = set()
        self._numbers: dict[int, int] = {}  # message id -> number (ids wrap at 65,535)
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="loss-bin", clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]
        self.client.max_inflight_messages_set(20)
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, properties: Any) -> None:
        # Called in paho's thread, which may hold paho's own lock: ours is never held around a
        # paho call (publish() would wait for paho's lock while paho waits for ours).
        with self._lock:
            self._acknowledged_mids.add(mid)

    def publish(self, number: int) -> None:
        # A payload of an event's size.
        payload = f'{number} {{"class": "paper", "confidence": 0.93, "compartment": "paper"}}'
        info = self.client.publish(TOPIC, payload, qos=1)
        with self._lock:
            self._numbers[info.mid] = number

    @property
    def acknowledged(self) -> set[int]:
        with self._lock:
            return {self._numbers[mid] for mid in self._acknowledged_mids if mid in self._numbers}

    def wait_acknowledged(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._acknowledged_mids) >= count:
                    return True
            time.sleep(0.0005)
        return False

    def stop(self) -> None:
        self.client.loop_stop()


def kill_after_acks(broker: Mosquitto, messages: int, kill_every: int, dashboard_away: bool) -> str:
    dashboard = Dashboard(broker.port)
    broker.stop()  # the dashboard's session saved once, as scripts/soak.py does
    broker.start()
    if dashboard_away:  # e.g. Home Assistant restarting: the broker queues for its session
        dashboard.away()
    sender, kills = Bin(broker.port), 0
    for number in range(messages):
        sender.publish(number)
        if number % kill_every == kill_every - 1:
            sender.wait_acknowledged(number + 1, 10)  # its PUBACK (and every one before it) came
            broker.kill()
            kills += 1
            time.sleep(0.3)
            broker.start()
        else:
            time.sleep(0.001)
    sender.wait_acknowledged(messages, 60)
    if dashboard_away:
        dashboard = Dashboard(broker.port)  # back: the broker hands it what it kept
    time.sleep(3)  # what is still on its way to the dashboard
    lost = sorted(sender.acknowledged - dashboard.received)
    sender.stop()
    dashboard.away()
    shown = ", ".join(map(str, lost[:8])) + (" ..." if len(lost) > 8 else "")
    where = "away until the end" if dashboard_away else "connected"
    return (
        f"{messages} published, {len(sender.acknowledged)} acknowledged, {len(dashboard.received)} received by a "
        f"dashboard {where}; {kills} broker SIGKILLs right after a PUBACK: {len(lost)} acknowledged and never received"
        + (f" ({shown})" if lost else "")
    )


def flush(broker: Mosquitto, messages: int, dashboard_away: bool) -> str:
    dashboard = Dashboard(broker.port)
    if dashboard_away:
        dashboard.away()
    sender = Bin(broker.port)
    started = time.perf_counter()
    for number in range(messages):
        sender.publish(number)
    done = sender.wait_acknowledged(messages, 600)
    seconds = time.perf_counter() - started
    sender.stop()
    if not dashboard_away:
        dashboard.away()
    where = "away" if dashboard_away else "connected"
    return f"{messages} messages{'' if done else ' (not all)'} acknowledged in {seconds:.2f} s, the dashboard {where}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="messages published (default 3000)")
    parser.add_argument("--save-every-change", action="store_true", help="autosave_on_changes, autosave_interval 1")
    parser.add_argument("--flush", type=int, metavar="N", help="time N messages to their PUBACK instead (no kill)")
    parser.add_argument("--dashboard", choices=["connected", "away"], default="connected")
    parser.add_argument("--kill-every", type=int, default=80, metavar="N", help="SIGKILL after every Nth PUBACK (80)")
    args = parser.parse_args()
    if max(args.messages, args.flush or 0) > 60_000:
        parser.error("at most 60000 messages (MQTT message ids wrap at 65535)")
    with tempfile.TemporaryDirectory(prefix="broker-ack-loss-") as folder:
        try:
            broker = Mosquitto(Path(folder), persistence=True, save_every_change=args.save_every_change)
        except MosquittoMissing as exc:
            raise NoBroker(str(exc)) from None
        broker.start()
        try:
            saving = "after every change" if args.save_every_change else "mosquitto's default (every 1800 s)"
            if args.flush:
                print(f"saving {saving}: {flush(broker, args.flush, args.dashboard == 'away')}")
            else:
                print(
                    f"saving {saving}: {kill_after_acks(broker, args.messages, args.kill_every, args.dashboard == 'away')}"
                )
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    run_script(main)
