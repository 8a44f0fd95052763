"""MQTT: events out through the durable outbox, state and status retained, commands in.

Topics, under ``<prefix>/<bin_id>/``:

==================  =====  ========  ==============================================
topic               QoS    retained  what
==================  =====  ========  ==============================================
``event``           1      no        one message per sorted item (from the outbox)
``state``           1      yes       counts, last item, outbox size
``status``          1      yes       ``online`` / ``offline`` (also the Last Will)
``cmd/<name>``      —      —         commands to the bin (subscribed)
``cmd/result``      1      no        the reply to each command
==================  =====  ========  ==============================================

Delivery of events is at-least-once and survives broker outages and agent
crashes: the agent writes each event to the :class:`~bin_agent.store.Store`
first; a pump thread hands the oldest unacknowledged events to paho (at most
``max_inflight`` at a time, only while connected) and deletes each one when
its PUBACK arrives. paho itself re-sends what it was handed after a reconnect;
after a restart of the agent the pump starts again from the oldest event in
the outbox. Nothing here ever blocks the sorting loop.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], dict[str, Any]]
"""Called with (command name, raw payload) in paho's thread; returns the reply."""


@dataclass(frozen=True)
class Topics:
    """The agent's topic names for one bin."""

    base: str

    @classmethod
    def for_bin(cls, prefix: str, bin_id: str) -> "Topics":
        return cls(f"{prefix}/{bin_id}")

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd/+"

    @property
    def command_result(self) -> str:
        return f"{self.base}/cmd/result"

    def command_name(self, topic: str) -> str | None:
        prefix = f"{self.base}/cmd/"
        return topic[len(prefix):] if topic.startswith(prefix) else None


class MqttLink:
    """The agent's MQTT connection and its outbox pump.

    :param settings: the ``[mqtt]`` config section.
    :param topics: topic names of this bin.
    :param store: the outbox to drain.
    :param on_command: handles ``cmd/<name>`` messages.
    :param state: returns the current ``state`` payload.
    """

    def __init__(
        self,
        settings: Any,
        topics: Topics,
        store: Any,
        on_command: CommandHandler,
        state: Callable[[], dict[str, Any]],
        client_id: str,
        password: str | None = None,
    ) -> None:
        import paho.mqtt.client as paho

        self._paho = paho
        self.settings = settings
        self.topics = topics
        self.store = store
        self._on_command = on_command
        self._state = state
        self._connected = threading.Event()
        # Set on SUBACK: from then on commands sent to the bin reach it.
        self._subscribed = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        # mid → outbox seq for what paho holds; touched only by the pump thread.
        self._inflight: dict[int, int] = {}
        self._last_handed = 0
        self._pump_thread: threading.Thread | None = None
        self.delivered = 0

        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        # paho re-raises exceptions from callbacks by default, which kills its
        # network thread and with it every reconnect; log them instead.
        client.suppress_exceptions = True
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(settings.reconnect_min_seconds, settings.reconnect_max_seconds)
        client.will_set(topics.status, "offline", qos=1, retain=True)
        if settings.username:
            client.username_pw_set(settings.username, password)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        self.client = client

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; a missing broker is retried with backoff."""
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        self.client.loop_start()
        self._pump_thread = threading.Thread(target=self._pump, name="mqtt-outbox", daemon=True)
        self._pump_thread.start()

    def wake(self) -> None:
        """New events are in the outbox."""
        self._wake.set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected and subscribed to the command topics."""
        deadline = time.monotonic() + timeout
        return self._connected.wait(timeout) and self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the outbox to empty (only while connected)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.store.pending_count() == 0:
                return True
            if not self.connected:
                return False
            self.wake()
            time.sleep(0.05)
        return self.store.pending_count() == 0

    def stop(self) -> None:
        """Publish ``offline``, disconnect, stop the threads. The outbox keeps the rest."""
        self._stopping.set()
        self._wake.set()
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=5)
        if self.connected:
            info = self.client.publish(self.topics.status, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ publishing

    def publish_state(self) -> None:
        """Publish the retained ``state`` (skipped while offline: on_connect sends a fresh one)."""
        if not self.connected:
            return
        try:
            payload = json.dumps(self._state(), separators=(",", ":"), sort_keys=True)
        except Exception:
            log.exception("cannot build the state payload")
            return
        self.client.publish(self.topics.state, payload, qos=1, retain=True)

    def publish_result(self, reply: dict[str, Any]) -> None:
        payload = json.dumps(reply, separators=(",", ":"), sort_keys=True)
        self.client.publish(self.topics.command_result, payload, qos=1, retain=False)

    # ------------------------------------------------------------------ the pump

    def _pump(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._apply_acks()
                self._hand_over()
            except Exception:
                # A full disk or a locked database must not end delivery for good.
                log.exception("outbox pump failed; retrying")
                time.sleep(1.0)
        self._apply_acks()

    def _apply_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                self.store.acknowledge(seq)
                self.delivered += 1

    def _hand_over(self) -> None:
        if not self.connected:
            return
        room = self.settings.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for entry in self.store.pending(self._last_handed, room):
            info = self.client.publish(entry.topic, entry.payload, qos=1, retain=False)
            if info.rc not in (self._paho.MQTT_ERR_SUCCESS, self._paho.MQTT_ERR_NO_CONN):
                log.warning("publish of event %s refused (rc=%s); will retry", entry.event_id, info.rc)
                return
            # NO_CONN still queues a QoS 1 message inside paho: it goes out on reconnect.
            self._inflight[info.mid] = entry.seq
            self._last_handed = entry.seq

    # ------------------------------------------------------------------ callbacks (paho's thread)

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s",
                      self.settings.host, self.settings.port, reason_code)
            return
        log.info("connected to %s:%s", self.settings.host, self.settings.port)
        client.publish(self.topics.status, "online", qos=1, retain=True)
        self._subscribed.clear()
        client.subscribe(self.topics.commands, qos=1)
        self._connected.set()
        self.publish_state()
        self._wake.set()

    def _handle_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning("disconnected from the broker (%s); events stay in the outbox", reason_code)
        self._connected.clear()
        self._subscribed.clear()

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._subscribed.set()

    def _handle_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # paho calls this holding its message lock: only hand the mid to the pump.
        self._acks.put(mid)
        self._wake.set()

    def _handle_message(self, client: Any, userdata: Any, message: Any) -> None:
        name = self.topics.command_name(message.topic)
        if name is None or name == "result":
            return
        try:
            reply = self._on_command(name, message.payload)
        except Exception as exc:
            log.exception("command %r failed", name)
            reply = {"command": name, "ok": False, "reason": f"internal error: {type(exc).__name__}"}
        self.publish_result(reply)


def read_password(path: str | Path) -> str:
    """The broker password from its file (first line, without the newline)."""
    return Path(path).read_text(encoding="utf-8").splitlines()[0] if Path(path).stat().st_size else ""
