"""A short-lived MQTT client for the command-line tools (``monitor``, ``ha-remove``).

Unlike the agent's :class:`~bin_agent.mqtt.MqttLink` it has no outbox and no
Last Will: it connects, subscribes, reads what the broker holds and leaves.

:meth:`CliClient.sync` answers "has every retained message arrived yet?"
without guessing a delay: it publishes a marker to a topic of its own after
subscribing; the broker handles one client's packets in order, so when the
marker comes back every retained message of the earlier subscriptions has
been delivered.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BinAgentError

if TYPE_CHECKING:
    from ..config import Config


class BrokerError(BinAgentError, RuntimeError):
    """The broker cannot be reached or refused us; the message says which."""

    exit_code = os.EX_UNAVAILABLE


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class CliClient:
    """A connected paho client (use as a context manager)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str | None = None,
        tls: Any = None,
        purpose: str = "cli",
        connect_timeout: float = 10.0,
    ) -> None:
        import paho.mqtt.client as paho

        self.host, self.port = host, port
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._subacks: dict[int, threading.Event] = {}
        self._marker_topic = f"bin-agent/_sync/{uuid.uuid4().hex}"
        self._marker_seen = threading.Event()
        self._on_message: Callable[[Message], None] | None = None
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"bin-agent-{purpose}-{uuid.uuid4().hex[:8]}"
        )
        if username:
            self.client.username_pw_set(username, password)
        if tls is not None:  # an ssl.SSLContext, as the agent's (config.broker_tls_context)
            self.client.tls_set_context(tls)
        self.client.on_connect = self._handle_connect
        self.client.on_subscribe = self._handle_subscribe
        self.client.on_message = self._handle_message

    @classmethod
    def from_config(cls, config: Config, purpose: str) -> CliClient:
        """The broker, credentials and TLS of a config's ``[mqtt]`` section.

        :raises ConfigError: naming the key of a missing password or certificate file.
        """
        from .credentials import broker_password, broker_tls_context

        settings = config.mqtt
        return cls(
            settings.host,
            settings.port,
            username=settings.username,
            password=broker_password(config),
            tls=broker_tls_context(config),
            purpose=purpose,
        )

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> CliClient:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(f"cannot reach the broker {self.host}:{self.port} ({exc})") from None
        self.client.loop_start()
        if not self._connected.wait(self._connect_timeout):
            self.close()
            raise BrokerError(self._refused or f"no answer from the broker {self.host}:{self.port}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ reading

    def subscribe(self, filters: list[str], on_message: Callable[[Message], None], timeout: float = 10.0) -> None:
        """Subscribe (QoS 1) and wait for the broker's SUBACK."""
        self._on_message = on_message
        result, mid = self.client.subscribe([(f, 1) for f in filters] + [(self._marker_topic, 1)])
        if mid is None:
            raise BrokerError(f"cannot subscribe at the broker {self.host}:{self.port} (rc={result})")
        done = self._subacks.setdefault(mid, threading.Event())
        if not done.wait(timeout):
            raise BrokerError(f"the broker {self.host}:{self.port} did not confirm the subscription")

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until everything the broker queued for us so far (retained messages) has arrived."""
        self._marker_seen.clear()
        self.client.publish(self._marker_topic, b"", qos=1)
        return self._marker_seen.wait(timeout)

    def collect_retained(self, filters: list[str], timeout: float = 10.0) -> list[Message]:
        """The retained messages under ``filters``."""
        found: list[Message] = []
        self.subscribe(filters, found.append, timeout)
        if not self.sync(timeout):
            raise BrokerError(f"the broker {self.host}:{self.port} did not return our marker in {timeout:g} s")
        with self._lock:
            return [m for m in found if m.retain]

    # ------------------------------------------------------------------ writing

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the broker acknowledged everything published (the marker comes back last)."""
        if not self.sync(timeout):
            raise BrokerError(f"the broker {self.host}:{self.port} did not acknowledge in {timeout:g} s")

    # ------------------------------------------------------------------ callbacks (paho's thread)

    def _handle_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = f"the broker {self.host}:{self.port} refused the connection: {reason_code}"
            return
        self._connected.set()

    def _handle_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._subacks.setdefault(mid, threading.Event()).set()

    def _handle_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self._marker_topic:
            self._marker_seen.set()
            return
        callback = self._on_message
        if callback is not None:
            with self._lock:
                callback(Message(message.topic, bytes(message.payload), bool(message.retain)))
