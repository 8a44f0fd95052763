"""MQTT: events out through the durable outbox, state and status retained, commands in.

Topics, under ``<prefix>/<bin_id>/``:

==================  =====  ========  ==============================================
topic               QoS    retained  what
==================  =====  ========  ==============================================
``event``           1      no        one message per sorted item (from the outbox)
``state``           1      yes       counts, last item, outbox size
``status``          1      yes       ``online`` / ``offline`` (also the Last Will)
``cmd/<name>``      —      —         commands to the bin (subscribed; a retained one is not run)
``cmd/result``      1      no        the reply to each command
==================  =====  ========  ==============================================

Delivery of events is at-least-once and survives broker outages and agent
crashes: the agent writes each event to the :class:`~bin_agent.store.Store`
first; a pump thread hands the oldest unacknowledged events to paho (at most
``max_inflight`` at a time, only while connected; read from the outbox
:data:`READ_AHEAD` at a time, so a backlog costs one query per batch, not one
per PUBACK) and deletes each one when its PUBACK arrives. While a backlog drains,
paho's own thread hands over the next event already read ahead on each event
PUBACK (one in for one out), so the window refills without a hop to the pump
thread; the pump, woken only when needed, deletes what was acknowledged and
reads on. paho itself re-sends what it was handed after a reconnect;
after a restart of the agent the pump starts again from the oldest event in
the outbox. Nothing here ever blocks the sorting loop.

The link speaks MQTT 5, for two things MQTT 3.1.1 cannot do: a PUBACK carries
a reason code, so a publish the broker refuses (0x87 Not authorized: its ACL)
is seen, logged and kept in the outbox instead of being deleted as delivered
(mosquitto acknowledges and silently drops it under 3.1.1); and CONNECT carries
a Maximum Packet Size, so the broker never sends a command bigger than
``[mqtt.commands] max_bytes`` (paho would read all of it into memory first).
TLS (``[mqtt.tls]``) checks the broker's certificate and host name. Whatever
keeps failing (broker unreachable, login or certificate refused, ACL) is logged
at once and then at most once a minute (:class:`~bin_agent.ratelimit.LogThrottle`).

A refused event is tried again, from the oldest still in the outbox, after a
pause of ``reconnect_max_seconds`` (not in a loop): once the ACL is fixed and
the broker reloaded (SIGHUP), the outbox drains without restarting the agent.
The pump also starts again from the oldest event after every reconnect.

Memory stays bounded while the broker does not answer (stopped, or a link that
died without a FIN, which paho notices only after up to 2x ``keepalive``): the
outbox pump hands paho at most ``max_inflight`` events; ``state`` is retained,
so only the newest matters and at most one is waiting for its PUBACK at a time
(a newer one is sent when it is acknowledged); and paho's queue is capped
(:data:`MAX_QUEUED_OTHER` besides the events), whatever else asks to publish.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BinAgentError
from .ratelimit import LogThrottle

if TYPE_CHECKING:
    from ..config import MqttSection

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes, bool], dict[str, Any] | None]
"""Called with (command name, raw payload, retained) in paho's thread; returns the reply (None: none)."""

LOG_INTERVAL_SECONDS = 60.0
"""A failure that repeats (broker down, refused login, ACL) is logged at most this often."""
PACKET_HEADROOM_BYTES = 512
"""Room for the PUBLISH fixed header, topic length, packet id and properties of a command."""
READ_AHEAD = 200
"""Undelivered events the pump reads from the outbox per query: a backlog of 10,000
events after an outage costs ~50 queries instead of one per PUBACK."""
READ_AGAIN_BELOW = 100
"""The pump reads on once fewer events than this wait in the read-ahead."""
ACKS_PER_WAKE = 50
"""While paho's thread keeps the window full itself, it wakes the pump once this many
event PUBACKs wait to be applied (deleted from the outbox)."""
MAX_TRACKED_PUBLISHES = 256
MAX_QUEUED_OTHER = MAX_TRACKED_PUBLISHES
"""paho holds at most ``max_inflight`` events plus this many other QoS 1 messages
(state, status, results, discovery configs, alerts); beyond it a publish is
refused at once (``MQTT_ERR_QUEUE_SIZE``) instead of growing memory."""


@dataclass(frozen=True)
class Topics:
    """The agent's topic names for one bin."""

    base: str

    @classmethod
    def for_bin(cls, prefix: str, bin_id: str) -> Topics:
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
    def unsure(self) -> str:
        """Retained: the item the bin asks about (or last asked about), see :mod:`bin_agent.ask`."""
        return f"{self.base}/unsure"

    @property
    def unsure_image(self) -> str:
        """Retained: that item's crop as a small JPEG (raw bytes)."""
        return f"{self.base}/unsure/image"

    @property
    def command_result(self) -> str:
        return f"{self.base}/cmd/result"

    def command_name(self, topic: str) -> str | None:
        prefix = f"{self.base}/cmd/"
        return topic[len(prefix) :] if topic.startswith(prefix) else None


def default_client_id(settings: Any, bin_id: str) -> str:
    """``mqtt.client_id``, else the user name, else ``bin-agent-<bin_id>``.

    The shipped broker config (``use_username_as_clientid``) gives every client
    its user name as client id whatever it asks for; asking for the same keeps
    the two one thing in the broker's log too.
    """
    return settings.client_id or settings.username or f"bin-agent-{bin_id}"


class MqttLink:
    """The agent's MQTT connection (MQTT 5) and its outbox pump.

    :param settings: the ``[mqtt]`` config section.
    :param topics: topic names of this bin.
    :param store: the outbox to drain.
    :param on_command: handles ``cmd/<name>`` messages.
    :param state: returns the current ``state`` payload.
    :param password: the broker password (from ``password_file`` or ``password_env``).
    :param tls: the TLS context of ``[mqtt.tls]`` (None: plain TCP).
    """

    def __init__(
        self,
        settings: MqttSection,
        topics: Topics,
        store: Any,
        on_command: CommandHandler,
        state: Callable[[], dict[str, Any]],
        client_id: str,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

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
        # Set while a wake-up waits in _wakes: at most one waits at a time.
        self._wake_queued = False
        # (mid, refusal reason or None) from on_publish, applied by the pump thread.
        self._acks: collections.deque[tuple[int, str | None]] = collections.deque()
        # The pump blocks on this queue alone; paho's thread wakes it only when it is needed
        # (see _handle_publish), not on every PUBACK: a wake-up per PUBACK cost paho's thread
        # a futex wake and then the GIL, taken back and forth with the pump, on every send.
        self._wakes: queue.SimpleQueue[None] = queue.SimpleQueue()
        # The hand-over state, shared by the pump and paho's thread (which hands over one
        # read-ahead event per event PUBACK, see _refill): changed only under _hand_lock.
        # mid → outbox seq for what paho holds, until the pump has applied its PUBACK.
        self._inflight: dict[int, int] = {}
        self._last_handed = 0
        # Events read from the outbox, oldest first, not yet handed to paho. Every event after
        # _last_handed up to _read_to is in it (or was acknowledged meanwhile): the store is
        # asked again only once it runs low and the store has numbered an event after _read_to.
        self._ahead: collections.deque[Any] = collections.deque()
        self._read_to = 0
        self._hand_lock = threading.Lock()
        # Event PUBACKs that paho's thread answered with the next event (for the figures and tests).
        self.refilled = 0
        # Set by a (re)connect and by the end of a refusal pause: hand over from the oldest pending event.
        self._rewind = False
        # After the broker refused an event (ACL), handing over pauses until this time.
        self._refused_until: float | None = None
        # mid → topic of the other QoS 1 publishes (status, state, results), to name a refusal.
        self._other_topics: dict[int, str] = {}
        self._other_lock = threading.Lock()
        # The retained state waiting for its PUBACK (None: none), and whether a newer one
        # was asked for meanwhile: then it goes out when that PUBACK arrives.
        self._state_lock = threading.Lock()
        self._state_mid: int | None = None
        self._state_stale = False
        self._throttle = LogThrottle(log, LOG_INTERVAL_SECONDS)
        self._store_reopened = 0
        self._pump_thread: threading.Thread | None = None
        # Connection attempts that failed since the last success (logged at most once a minute).
        self.failed_attempts = 0
        self._login_refused = False
        self.delivered = 0
        # Publishes the broker refused (MQTT 5 PUBACK reason code >= 0x80, e.g. the ACL).
        self.refused = 0
        # Connections made and lost (a bin knocked off by another login shows here).
        self.connects = 0
        self.disconnects = 0
        self.tls = tls
        # Called (in paho's thread) on every connect, after ``online`` and before the state.
        self.connect_hooks: list[Callable[[], None]] = []

        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        # paho re-raises exceptions from callbacks by default, which kills its
        # network thread and with it every reconnect and all delivery; it then only
        # reports them to on_log, which logs them with their traceback.
        client.suppress_exceptions = True
        client.on_log = self._handle_paho_log
        client.max_inflight_messages_set(settings.max_inflight)
        # Bounded: a broker that stopped answering must not make paho hold one
        # message per sorted item (0 would be unbounded).
        client.max_queued_messages_set(settings.max_inflight + MAX_QUEUED_OTHER)
        # paho annotates whole seconds, but its _reconnect_wait only adds the delay to a monotonic
        # time and doubles it: fractional seconds (reconnect_min_seconds = 0.5) work as given.
        client.reconnect_delay_set(settings.reconnect_min_seconds, settings.reconnect_max_seconds)  # type: ignore[arg-type]
        client.will_set(topics.status, "offline", qos=1, retain=True)
        if settings.username:
            client.username_pw_set(settings.username, password)
        if tls is not None:
            client.tls_set_context(tls)
        # MQTT 5 Maximum Packet Size: the broker drops anything bigger meant for this
        # client, so an oversized command never reaches (nor fills) paho's buffers.
        self._connect_properties = Properties(PacketTypes.CONNECT)
        self._connect_properties.MaximumPacketSize = self.max_packet_size
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        self.client = client

    @property
    def max_packet_size(self) -> int:
        """The largest packet the broker may send us: a command of ``commands.max_bytes``
        plus its topic and room for the PUBLISH header and properties."""
        return self.settings.commands.max_bytes + len(self.topics.base.encode()) + PACKET_HEADROOM_BYTES

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; a missing broker is retried with backoff."""
        if self.tls is not None and not self.tls.check_hostname:
            log.warning(
                "mqtt.tls.insecure = true: the broker's certificate is NOT checked against "
                "the host name %s; whoever can redirect that name can read and command this "
                "bin. For a lab only.",
                self.settings.host,
            )
        if self.tls is None and self.settings.host not in ("localhost", "127.0.0.1", "::1"):
            log.warning(
                "MQTT to %s:%s without TLS: the password and all messages cross the network in clear; see [mqtt.tls]",
                self.settings.host,
                self.settings.port,
            )
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            self.settings.keepalive,
            clean_start=True,
            properties=self._connect_properties,
        )
        self.client.loop_start()
        self._pump_thread = threading.Thread(target=self._pump, name="mqtt-outbox", daemon=True)
        self._pump_thread.start()

    def wake(self) -> None:
        """New events are in the outbox."""
        if not self._wake_queued:
            self._wake_queued = True
            self._wakes.put(None)

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
            if not self.connected or self._refused_until is not None:
                return False
            self.wake()
            time.sleep(0.05)
        return self.store.pending_count() == 0

    def stop(self) -> None:
        """Publish the final ``state`` and ``offline``, disconnect, stop the threads.
        The outbox keeps the rest."""
        self._stopping.set()
        self._wakes.put(None)
        if self._pump_thread is not None:
            self._pump_thread.join(timeout=5)
        if self.connected:
            # The pump has applied its last acks: the state says what stays in the outbox.
            sent = [
                self.publish_state(final=True),
                self.client.publish(self.topics.status, "offline", qos=1, retain=True),
            ]
            for info in sent:
                if info is None:
                    continue
                try:
                    info.wait_for_publish(timeout=2.0)
                except (RuntimeError, ValueError):
                    pass
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ publishing

    def publish_state(self, *, final: bool = False) -> Any:
        """Publish the retained ``state`` (skipped while offline: on_connect sends a fresh one).

        While an earlier state still waits for its PUBACK, nothing is queued: the
        newest state is sent when that PUBACK arrives (a broker that stopped
        answering gets one state, not one per item). ``final`` sends it anyway
        (at stop). Returns paho's message info, or ``None`` when nothing was sent.
        """
        if not self.connected:
            return None
        with self._state_lock:
            if self._state_mid is not None and not final:
                self._state_stale = True
                return None
            self._state_stale = False
            try:
                payload = json.dumps(self._state(), separators=(",", ":"), sort_keys=True)
            except Exception:
                log.exception("cannot build the state payload")
                return None
            info = self._publish_other(self.topics.state, payload, retain=True)
            if info.rc in (self._paho.MQTT_ERR_SUCCESS, self._paho.MQTT_ERR_NO_CONN):
                self._state_mid = info.mid
            return info

    def publish_retained(self, topic: str, payload: dict[str, Any] | str | bytes) -> Any:
        """Publish a retained QoS 1 message (JSON for a dict, bytes as they are; ``""`` clears the topic).
        Returns paho's message info."""
        data = (
            payload if isinstance(payload, (str, bytes)) else json.dumps(payload, separators=(",", ":"), sort_keys=True)
        )
        return self._publish_other(topic, data, retain=True)

    def publish_result(self, reply: dict[str, Any]) -> None:
        payload = json.dumps(reply, separators=(",", ":"), sort_keys=True)
        self._publish_other(self.topics.command_result, payload, retain=False)

    def _publish_other(self, topic: str, payload: str | bytes, *, retain: bool) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == self._paho.MQTT_ERR_QUEUE_SIZE:
            self._throttle.log(
                logging.WARNING,
                "queue-full",
                "not sent: %s; paho already holds %d messages the broker has not acknowledged",
                topic,
                self.settings.max_inflight + MAX_QUEUED_OTHER,
            )
            return info
        with self._other_lock:
            # Bounded: entries of messages lost with a connection are never acknowledged.
            if len(self._other_topics) >= MAX_TRACKED_PUBLISHES:
                self._other_topics.pop(next(iter(self._other_topics)))
            self._other_topics[info.mid] = topic
        return info

    # ------------------------------------------------------------------ the pump

    def _pump(self) -> None:
        while not self._stopping.is_set():
            # Also every second unwoken: acknowledgements left waiting (fewer than
            # ACKS_PER_WAKE when the connection dropped) are applied within a second.
            try:
                self._wakes.get(timeout=1.0)
            except queue.Empty:
                pass
            try:
                self._apply_acks()
                self._hand_over()
            except Exception:
                # A full disk or a locked database must not end delivery for good;
                # logged with its traceback at most once a minute.
                self._throttle.log(
                    logging.ERROR, "pump-failed", "outbox pump failed; retrying every second", exc_info=True
                )
                time.sleep(1.0)
        self._apply_acks()

    def _apply_acks(self) -> None:
        """Apply every acknowledgement received so far."""
        # Cleared before the acknowledgements are taken and the hand-over reads the store:
        # a wake-up skipped because one was queued is for what they will see.
        self._wake_queued = False
        # Told to the store together (one lock), before anything this thread does next reads
        # it: a rewind (_hand_over) or a state (publish_state) comes only after that.
        acknowledged: list[int] = []
        delivered_before = self.delivered
        try:
            while self._acks:
                self._apply_ack(*self._acks.popleft(), acknowledged)
        finally:
            # Even if a refusal's log line failed: these left _inflight, so the store must know.
            if acknowledged:
                self.store.acknowledge_many(acknowledged)
                self.delivered += len(acknowledged)
        # The state went out with the new event still queued: say when the backlog is gone,
        # so dashboards do not show a backlog of 1 after every item.
        if self.delivered > delivered_before and self.store.pending_count() == 0:
            self.publish_state()

    def _apply_ack(self, mid: int, refusal: str | None, acknowledged: list[int]) -> None:
        """Apply one acknowledgement; an event's seq is appended to ``acknowledged`` for the
        caller to tell the store."""
        with self._hand_lock:
            # Only now does an acknowledged event leave _inflight: until the store knows,
            # a rewind must skip it (or it would be read again and sent a second time);
            # _apply_acks tells the store before this thread reads it again.
            seq = self._inflight.pop(mid, None)
            if seq is not None and self._ahead and self._ahead[0].seq <= seq:
                # Read again by a rewind while paho still held it (_hand_first skips such
                # events only while they are in flight): acknowledged now, it must not be
                # handed over a second time. The read-ahead holds older events only after a rewind.
                self._forget_read_ahead(seq)
        if seq is None:
            with self._other_lock:
                topic = self._other_topics.pop(mid, None)
            if refusal is not None:
                self.refused += 1
                self._log_refusal(topic or "a status/state/result topic", refusal)
            with self._state_lock:
                stale = mid == self._state_mid and self._state_stale
                if mid == self._state_mid:
                    self._state_mid = None
            if stale:
                # The state reports the backlog: tell the store what was acknowledged first.
                self.store.acknowledge_many(acknowledged)
                self.delivered += len(acknowledged)
                acknowledged.clear()
                self.publish_state()
        elif refusal is None:
            acknowledged.append(seq)
        else:
            # Kept in the outbox; tried again (oldest first) after a pause.
            self._refused_until = time.monotonic() + self.settings.reconnect_max_seconds
            self.refused += 1
            self._log_refusal(self.topics.event, refusal)

    def _log_refusal(self, topic: str, reason: str) -> None:
        if self.settings.username:
            user = f"user {self.settings.username}"
        elif self.tls is not None and self.settings.tls.cert_file:
            user = "this bin's user (the CN of mqtt.tls.cert_file)"
        else:
            user = "anonymous clients"
        if topic.startswith(self.topics.base + "/"):
            allow = f"{self.topics.base}/#"
            kept = " (events stay in the outbox and are retried)"
        else:
            allow, kept = topic, ""
        # One line a minute per topic tree: a refused discovery config does not hide
        # refused events, nor 30 refused configs flood the log.
        self._throttle.log(
            logging.ERROR,
            "refused:" + topic.split("/", 1)[0],
            "the broker refused the publish on %s: %s; its ACL must let %s write %s%s",
            topic,
            reason,
            user,
            allow,
            kept,
        )

    def _hand_over(self) -> None:
        if not self.connected:
            return
        if self._refused_until is not None:
            # Resume only once nothing is in flight, from the oldest event still pending.
            if self._inflight or time.monotonic() < self._refused_until:
                return
            self._refused_until = None
            self._rewind = True
        with self._hand_lock:
            if self._rewind:
                # The refused events (or those a lost connection left unacknowledged) are
                # older than the last one handed over: start again from the oldest pending.
                # Those paho still holds are skipped below; it re-sends them itself.
                self._rewind = False
                self._read_again()
            if self.store.reopened != self._store_reopened:
                # A database that a full disk kept closed at start has opened:
                # its older events come after the ones held in memory.
                self._store_reopened = self.store.reopened
                self._read_again()
            room = self.settings.max_inflight - len(self._inflight)
            while room > 0:
                if not self._ahead:
                    self._read_more()
                if not self._hand_first():
                    break
                room -= 1
            if len(self._ahead) < READ_AGAIN_BELOW:
                # Read on before paho's thread, refilling per PUBACK, finds the read-ahead empty.
                self._read_more()

    def _hand_first(self) -> bool:
        """Hand paho the oldest read-ahead event not in flight yet (under _hand_lock).
        Returns whether one was handed over."""
        inflight = self._inflight
        ahead = self._ahead
        while ahead:
            entry = ahead[0]
            if entry.seq in inflight.values():
                # Read again after a rewind while paho still holds it: paho re-sends it itself.
                ahead.popleft()
                self._last_handed = entry.seq
                continue
            info = self.client.publish(entry.topic, entry.payload, qos=1, retain=False)
            if info.rc not in (self._paho.MQTT_ERR_SUCCESS, self._paho.MQTT_ERR_NO_CONN):
                self._throttle.log(
                    logging.WARNING,
                    "event-not-queued",
                    "paho did not take event %s (%s); it stays in the outbox and is tried again",
                    entry.event_id,
                    self._paho.error_string(info.rc),
                )
                return False  # it stays first in the read-ahead
            # NO_CONN still queues a QoS 1 message inside paho: it goes out on reconnect.
            ahead.popleft()
            inflight[info.mid] = entry.seq
            self._last_handed = entry.seq
            return True
        return False

    def _read_again(self) -> None:
        """Forget the read-ahead: the next hand-over reads from the oldest pending event."""
        self._ahead.clear()
        self._last_handed = 0
        self._read_to = 0

    def _forget_read_ahead(self, seq: int) -> None:
        """Drop the event ``seq`` from the read-ahead, if it is there (under _hand_lock)."""
        for index, entry in enumerate(self._ahead):
            if entry.seq == seq:
                del self._ahead[index]
                return
            if entry.seq > seq:
                return

    def _read_more(self) -> None:
        """Append the next :data:`READ_AHEAD` pending events to the read-ahead (under _hand_lock;
        no query while nothing was numbered since the last read)."""
        newest = self.store.last_seq
        if newest <= self._read_to:
            return
        after = self._ahead[-1].seq if self._ahead else self._last_handed
        batch = self.store.pending(after, READ_AHEAD)
        # A short batch holds every event numbered up to ``newest``; a full one may
        # have left newer ones behind: read on after its last one.
        self._read_to = batch[-1].seq if len(batch) >= READ_AHEAD else newest
        self._ahead.extend(batch)

    def _refill(self, mid: int) -> bool:
        """In paho's thread, on the PUBACK of ``mid``: if it was an event, hand paho the next
        read-ahead event at once, so the window stays full without waking the pump first.

        paho calls this holding its message lock, which the pump needs to publish while it
        holds _hand_lock: only try that lock; the pump, busy handing over, fills the room."""
        if not self._hand_lock.acquire(blocking=False):
            return False
        try:
            if (
                mid in self._inflight
                and not self._rewind
                and self._refused_until is None
                and not self._stopping.is_set()
                and self._hand_first()
            ):
                # One in for one out: paho still counts ``mid`` in flight until this returns
                # (it queues the new one and sends it right after), and the pump counts it
                # until it has applied its PUBACK, so neither window grows.
                self.refilled += 1
                return True
            return False
        finally:
            self._hand_lock.release()

    # ------------------------------------------------------------------ callbacks (paho's thread)

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._login_refused = True
            self.failed_attempts += 1
            hint = AUTH_HINT if reason_code.value in (0x86, 0x87, 0x8C) else ""
            self._throttle.log(
                logging.ERROR,
                "connect",
                "broker %s refused the connection: %s%s; retrying (attempt %d)",
                self._where(),
                reason_code,
                hint,
                self.failed_attempts,
            )
            return
        log.info(
            "connected to %s%s%s",
            self._where(),
            " (TLS)" if self.tls is not None else "",
            f" after {self.failed_attempts} failed attempt(s)" if self.failed_attempts else "",
        )
        self.failed_attempts = 0
        self.connects += 1
        self._rewind = True
        self._throttle.clear("connect")
        self._publish_other(self.topics.status, "online", retain=True)
        self._subscribed.clear()
        from paho.mqtt.subscribeoptions import SubscribeOptions

        # noLocal: our own replies on cmd/result do not come back to us. retainAsPublished: a
        # command published retained keeps its flag when it is forwarded live too (else only its
        # replays at each new subscription carry it), so the command gate refuses it either way.
        client.subscribe(self.topics.commands, options=SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True))
        self._connected.set()
        for hook in self.connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("a connect hook failed")
        self.publish_state()
        self.wake()

    def _handle_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` around the connection attempt,
        # so the exception being handled is the reason.
        self.failed_attempts += 1
        self._throttle.log(
            logging.WARNING,
            "connect",
            "%s; retrying every %g s at most, sorting goes on and events stay in the outbox (attempt %d)",
            describe_connect_error(sys.exc_info()[1], self._where()),
            self.settings.reconnect_max_seconds,
            self.failed_attempts,
        )

    def _handle_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._stopping.is_set():
            pass
        elif self._connected.is_set():
            self.disconnects += 1
            log.warning(
                "disconnected from the broker %s (%s); events stay in the outbox",
                self._where(),
                describe_disconnect(reason_code, self.settings.keepalive),
            )
        elif self._login_refused:
            self._login_refused = False  # _handle_connect said why
        elif str(reason_code) == "Keep alive timeout":
            # paho gave up waiting for the CONNACK: the broker accepts connections (the
            # kernel does that) but does not answer, e.g. a stopped or overloaded
            # broker. Nothing to do with certificates.
            self.failed_attempts += 1
            self._throttle.log(
                logging.WARNING,
                "connect",
                "the broker %s accepted the connection but did not answer the login within %d s "
                "(stopped or overloaded?); retrying (attempt %d)",
                self._where(),
                self.settings.keepalive,
                self.failed_attempts,
            )
        else:
            # Closed before any CONNACK: e.g. mosquitto with require_certificate drops a
            # TLS client that sent no (or an unknown) certificate right after the handshake.
            self.failed_attempts += 1
            if self.tls is not None:
                hint = (
                    "; a broker that requires client certificates does this when it gets none "
                    "or one its CA did not sign (mqtt.tls.cert_file, key_file)"
                )
            else:
                hint = "; if this port expects TLS, set [mqtt.tls] enabled = true"
            self._throttle.log(
                logging.WARNING,
                "connect",
                "the broker %s closed the connection before accepting the login (%s)%s; retrying (attempt %d)",
                self._where(),
                reason_code,
                hint,
                self.failed_attempts,
            )
        self._connected.clear()
        self._subscribed.clear()

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            self._throttle.log(
                logging.ERROR,
                "subscribe",
                "the broker refused the subscription to %s: %s; commands will not reach this bin",
                self.topics.commands,
                refused[0],
            )
        self._subscribed.set()

    def _handle_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        # paho calls this holding its message lock: hand the next event over if one was
        # read ahead (_refill), leave the rest to the pump and wake it only when needed.
        # MQTT 5 PUBACK reason codes >= 0x80 (e.g. 0x87 Not authorized: the ACL) mean
        # the broker did NOT take the message; "No matching subscribers" is a success.
        if reason_code.is_failure:
            if mid in self._inflight:
                # A refused event: no refill from here until the pump has paused and resumed.
                self._refused_until = time.monotonic() + self.settings.reconnect_max_seconds
            self._acks.append((mid, str(reason_code)))
            self.wake()
            return
        refilled = self._refill(mid)
        self._acks.append((mid, None))
        # Woken when the window is not full again (a state's PUBACK, the last events, the
        # pump busy), the read-ahead runs low, or enough acknowledgements wait to be applied.
        if (
            not refilled
            or len(self._acks) >= ACKS_PER_WAKE
            or (len(self._ahead) < READ_AGAIN_BELOW and self.store.last_seq > self._read_to)
        ):
            self.wake()

    def _handle_paho_log(self, client: Any, userdata: Any, level: int, text: str) -> None:
        # paho reports an exception in one of our callbacks here (suppress_exceptions),
        # from inside its except block; everything else it says is debugging detail.
        if text.startswith("Caught exception in "):
            self._throttle.log(logging.ERROR, "callback-failed", "%s (MQTT delivery goes on)", text, exc_info=True)

    def _handle_message(self, client: Any, userdata: Any, message: Any) -> None:
        name = self.topics.command_name(message.topic)
        if name is None or name == "result":
            return
        if message.retain and not message.payload:
            return  # a retained command being cleared (the broker's delete): nothing to run or answer
        try:
            reply = self._on_command(name, message.payload, bool(message.retain))
        except Exception as exc:
            # With its traceback, but at most once a minute: a command repeated in a loop
            # against a broken part (e.g. a full disk) must not flood the log.
            self._throttle.log(logging.ERROR, "command-failed", "command %r failed", name[:64], exc_info=True)
            reply = {"command": name[:64], "ok": False, "reason": f"internal error: {type(exc).__name__}"}
        if reply is not None:
            self.publish_result(reply)


def describe_disconnect(reason_code: Any, keepalive: int) -> str:
    """Why a connection ended, in words (paho's "Keep alive timeout" made concrete)."""
    text = str(reason_code)
    if text == "Keep alive timeout":
        return (
            f"no answer to a keepalive ping within {keepalive} s: the broker stopped answering or the network dropped"
        )
    return text


AUTH_HINT = " (check mqtt.username and the password in mqtt.password_file / mqtt.password_env)"


def describe_connect_error(exc: BaseException | None, where: str) -> str:
    """One line saying why a connection attempt to ``where`` failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the certificate of {where} was rejected ({exc.verify_message}); "
            "check mqtt.tls.ca_file and that mqtt.host is a name the certificate carries"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc.reason or exc}); check [mqtt.tls] and the broker's listener"
    if isinstance(exc, OSError):
        detail = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot reach the broker {where} ({detail})"
    return f"cannot connect to the broker {where} ({type(exc).__name__ if exc else 'unknown reason'})"


class TlsSetupError(BinAgentError, ValueError):
    """A TLS file cannot be used; ``key`` is its option in ``[mqtt.tls]``."""

    exit_code = os.EX_CONFIG

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, *, insecure: bool = False
) -> ssl.SSLContext:
    """A client TLS context: TLS 1.2 or later, the broker's certificate checked against
    ``ca_file`` (None: the system's CA store) and, unless ``insecure``, its host name.

    :raises TlsSetupError: a file is missing, unreadable, not PEM, or the key does not
        match the certificate.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        _readable("ca_file", ca_file)
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except ssl.SSLError as exc:
            raise TlsSetupError("ca_file", f"{ca_file} holds no PEM certificate ({exc.reason or 'not PEM'})") from None
    if cert_file is not None and key_file is not None:
        _readable("cert_file", cert_file)
        if b"ENCRYPTED" in _readable("key_file", key_file):
            raise TlsSetupError(
                "key_file",
                f"{key_file} is encrypted and the agent cannot ask for its "
                "passphrase; store it unencrypted, mode 0600 (openssl pkey -in KEY -out KEY2)",
            )
        try:
            # A password callback, so OpenSSL never prompts on a terminal.
            context.load_cert_chain(str(cert_file), str(key_file), password=lambda: b"")
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise TlsSetupError("key_file", f"{key_file} is not the key of {cert_file}") from None
            raise TlsSetupError(
                "cert_file",
                f"{cert_file} and {key_file} must be a PEM certificate "
                f"and its PEM private key ({exc.reason or 'not PEM'})",
            ) from None
    # Only the host name check is switched off: the certificate must still be signed by the CA.
    context.check_hostname = not insecure
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _readable(key: str, path: Path) -> bytes:
    """The file's first 64 KiB (certificates and keys are far smaller)."""
    try:
        with open(path, "rb") as file:
            return file.read(65536)
    except FileNotFoundError:
        raise TlsSetupError(key, f"{path} not found") from None
    except OSError as exc:
        raise TlsSetupError(key, f"cannot read {path} ({exc.strerror or exc})") from None
