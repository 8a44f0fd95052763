"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scripts.mosquitto_process import Mosquitto as MosquittoProcess
from scripts.mosquitto_process import MosquittoMissing
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """``../shared`` beside the checkout, or ``$BIN_AGENT_SHARED``."""
    return Path(os.environ.get("BIN_AGENT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def trashnet_dir() -> Path:
    """The TrashNet photos. Missing data fails in CI and skips elsewhere."""
    path = shared_dir() / "data" / "trashnet"
    if not (path / "cardboard").is_dir():
        message = f"TrashNet photos not found at {path} (set BIN_AGENT_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    path = shared_dir() / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    if not path.is_file():
        message = f"MobileNetV2 weights not found at {path} (set BIN_AGENT_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------- MQTT


class Mosquitto(MosquittoProcess):
    """A real mosquitto broker on a free loopback port (``scripts/mosquitto_process.py``, which
    ``scripts/soak.py`` uses too); a missing mosquitto fails in CI and skips elsewhere."""

    def __init__(self, workdir: Path) -> None:
        try:
            super().__init__(workdir)
        except MosquittoMissing as exc:
            if os.environ.get("CI"):
                pytest.fail(str(exc))
            pytest.skip(str(exc))


@pytest.fixture
def mosquitto(tmp_path: Path):
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.kill()


@pytest.fixture
def mosquitto_stopped(tmp_path: Path):
    """A broker that is configured but not running yet (the test starts it)."""
    broker = Mosquitto(tmp_path)
    yield broker
    broker.kill()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int = 0


@dataclass
class Subscriber:
    """A real paho client that records everything under a topic filter."""

    port: int
    topic: str = "#"
    client_id: str | None = None
    clean_session: bool = True
    messages: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        import paho.mqtt.client as paho

        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.client_id or f"test-sub-{id(self)}",
            clean_session=self.clean_session,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port, 30)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber could not connect"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(self.topic, qos=1)
        # Give the broker a moment to register the subscription before tests publish.
        threading.Timer(0.2, self._ready.set).start()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain), message.qos))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict]:
        import json

        return [json.loads(m.payload) for m in self.on(suffix)]

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:
        return wait_for(predicate, timeout)

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory():
    made: list[Subscriber] = []

    def make(port: int, topic: str = "#", **options) -> Subscriber:
        sub = Subscriber(port, topic, **options)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()
