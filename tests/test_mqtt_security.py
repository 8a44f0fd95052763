"""MQTT locked down, against a real mosquitto running the shipped config/mosquitto/.

The broker is ``config/mosquitto/bin-agent.conf`` with only its port and file
paths changed: TLS on a test CA made with the shipped ``make-certs.sh``
(openssl), client certificates required and their CN the user name and the
client id, and the shipped ACL (per bin: ``smartbin/%u/#`` and its own Home
Assistant discovery configs). ``passwords_only`` runs the variant the config's
comment describes (no client certificates: the password file decides).
The agent's side is built from a config dict the way ``bin-agent run`` builds it.
Each refusal must give exactly one clear log line (no traceback), however often
paho retries meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bin_agent import preflight
from bin_agent.agent import make_mqtt, mqtt_credentials
from bin_agent.mqtt.link import MqttLink
from bin_agent.store import Store
from tests.conftest import Mosquitto
from tests.helpers import REPO, base_config

SHIPPED = REPO / "config" / "mosquitto"
BIN = "bin-01"
PASSWORD = "s3cret-for-bin-01"
OTHER = "bin-02"
OTHER_PASSWORD = "s3cret-for-bin-02"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def make_certs(*args: str) -> None:
    need("openssl")
    subprocess.run(
        ["bash", str(SHIPPED / "make-certs.sh"), *map(str, args)],
        check=True,
        env={**os.environ, "DAYS": "2"},
        capture_output=True,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA, a broker certificate for localhost/127.0.0.1, client certificates for
    the bin and a dashboard, a broker certificate naming only 'localhost', and a second,
    unrelated CA."""
    root = tmp_path_factory.mktemp("pki")
    make_certs("ca", root)
    make_certs("broker", root, "localhost", "127.0.0.1")
    make_certs("client", root, BIN)
    make_certs("client", root, OTHER)
    make_certs("client", root, "dashboard")
    named_only = root / "name-only"
    named_only.mkdir()
    shutil.copy(root / "ca.crt", named_only / "ca.crt")
    shutil.copy(root / "ca.key", named_only / "ca.key")
    make_certs("broker", named_only, "localhost")
    make_certs("ca", root / "other")
    return root


class SecureBroker(Mosquitto):
    """mosquitto running the shipped config (port and paths changed).

    :param passwords_only: ``require_certificate`` and ``use_identity_as_username``
        false, as the config's comment says for an install without client certificates.
    """

    def __init__(
        self, workdir: Path, pki: Path, broker_certs: Path | None = None, *, passwords_only: bool = False
    ) -> None:
        super().__init__(workdir)
        need("mosquitto_passwd")
        etc = workdir / "etc"
        etc.mkdir()
        passwd = etc / "passwd"
        passwd.touch(mode=0o600)
        for user, password in ((BIN, PASSWORD), (OTHER, OTHER_PASSWORD), ("dashboard", "dash-pw")):
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
        self.acl = etc / "acl"
        shutil.copy(SHIPPED / "acl", self.acl)
        certs = broker_certs or pki
        text = (SHIPPED / "bin-agent.conf").read_text()
        assert "listener 8883\n" in text and "/etc/mosquitto/certs/" in text
        if passwords_only:
            for option in ("require_certificate", "use_identity_as_username"):
                assert f"\n{option} true\n" in text, option
                text = text.replace(f"\n{option} true\n", f"\n{option} false\n")
        text = (
            text.replace("listener 8883\n", f"listener {self.port} 127.0.0.1\n")
            .replace("/etc/mosquitto/certs/ca.crt", str(pki / "ca.crt"))
            .replace("/etc/mosquitto/certs/", f"{certs}/")
            .replace("/etc/mosquitto/", f"{etc}/")
        )
        text += "\npersistence false\n"
        if os.geteuid() == 0:
            text += "user root\n"  # started as root, mosquitto would become 'mosquitto' and lose the files
        self.conf.write_text(text)

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its ACL (and password file) again; connections stay."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def secure_broker(tmp_path, pki):
    broker = SecureBroker(tmp_path, pki)
    broker.start()
    yield broker
    broker.kill()


class Dashboard:
    """A real paho client logged in as 'dashboard' over TLS, recording what it sees."""

    def __init__(
        self, port: int, pki: Path, topic: str | list[str] = "smartbin/#", *, user: str = "dashboard", **login
    ) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []
        # mid → PUBACK reason code (MQTT 5) of what this client published.
        self.acks: dict[int, Any] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=login.get("client_id", user), protocol=paho.MQTTv5
        )
        self.client.username_pw_set(login.get("username", user), login.get("password", "dash-pw"))
        self.client.tls_set(
            ca_certs=str(pki / "ca.crt"), certfile=str(pki / f"{user}.crt"), keyfile=str(pki / f"{user}.key")
        )
        if "will" in login:
            self.client.will_set(*login["will"], qos=1, retain=True)
        filters = [topic] if isinstance(topic, str) else topic

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe([(f, 1) for f in filters])

        def on_publish(client, userdata, mid, reason_code, properties):
            with self._lock:
                self.acks[mid] = reason_code

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            ready.set()

        def on_message(client, userdata, message):
            with self._lock:
                self.messages.append((message.topic, message.payload, bool(message.retain)))

        self.client.on_connect = on_connect
        self.client.on_publish = on_publish
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect("localhost", port, 30)
        self.client.loop_start()
        assert ready.wait(10), "dashboard could not connect"

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [payload for topic, payload, _ in self.messages if topic.endswith(suffix)]

    def topics(self, prefix: str) -> set[str]:
        with self._lock:
            return {topic for topic, _, _ in self.messages if topic.startswith(prefix)}

    def publish_acked(self, topic: str, payload: bytes | str, retain: bool = False) -> str:
        """Publish (QoS 1) and return the broker's PUBACK reason, e.g. "Not authorized"."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert wait_until(lambda: info.mid in self.acks, 10), f"no PUBACK for {topic}"
        return str(self.acks[info.mid])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def dashboard_factory(pki):
    made: list[Dashboard] = []

    def make(port: int, topic: str | list[str] = "smartbin/#", **login) -> Dashboard:
        made.append(Dashboard(port, pki, topic, **login))
        return made[-1]

    yield make
    for dashboard in made:
        dashboard.close()


def agent_config(
    tmp_path: Path,
    pki: Path,
    port: int,
    *,
    bin_id: str = BIN,
    password: str = PASSWORD,
    ca: Path | None = None,
    host: str = "localhost",
    **tls,
):
    secret = tmp_path / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    data = base_config(tmp_path, port=port)
    data["agent"]["bin_id"] = bin_id
    data["mqtt"].update(
        {
            "host": host,
            "username": BIN,
            "password_file": str(secret),
            "reconnect_min_seconds": 0.1,
            "reconnect_max_seconds": 1.0,
            "tls": {
                "enabled": True,
                "ca_file": str(ca or pki / "ca.crt"),
                "cert_file": str(pki / f"{BIN}.crt"),
                "key_file": str(pki / f"{BIN}.key"),
                **tls,
            },
        }
    )
    return preflight.load_dict(data, base_dir=tmp_path)


def start_link(config, store: Store, commands: list | None = None) -> MqttLink:
    def handler(name, payload, retained):
        if commands is not None:
            commands.append((name, len(payload)))
        return {"command": name, "ok": True}

    password, tls = mqtt_credentials(config)
    link = make_mqtt(config, store, handler, lambda: {"counts": store.counts().as_dict()}, password=password, tls=tls)
    link.start()
    return link


def add_events(store: Store, bin_id: str, count: int) -> list[str]:
    ids = [f"ev-{n:03d}" for n in range(count)]
    for event_id in ids:
        store.record_event(
            event_id=event_id,
            topic=f"smartbin/{bin_id}/event",
            payload={"id": event_id},
            label="glass",
            compartment="glass",
            fallback=False,
        )
    return ids


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def agent_lines(caplog) -> list[logging.LogRecord]:
    """What the agent logged at WARNING or above."""
    return [r for r in caplog.records if r.name.startswith("bin_agent") and r.levelno >= logging.WARNING]


def assert_one_clear_line(caplog, link: MqttLink, pattern: str, attempts: int = 4) -> str:
    """After at least ``attempts`` refused tries: one agent line at WARNING+, matching, no traceback."""
    assert wait_until(lambda: link.failed_attempts >= attempts, 30), f"only {link.failed_attempts} attempts"
    lines = agent_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert not lines[0].exc_info and "Traceback" not in lines[0].getMessage()
    assert re.search(pattern, lines[0].getMessage()), lines[0].getMessage()
    assert not link.connected
    return lines[0].getMessage()


# --------------------------------------------------------------------------- tests


def test_right_credentials_connect_over_tls_and_deliver(tmp_path, pki, secure_broker, dashboard_factory, caplog):
    caplog.set_level(logging.INFO)
    dashboard = dashboard_factory(secure_broker.port)
    store = Store(tmp_path / "s.db")
    commands: list = []
    link = start_link(agent_config(tmp_path, pki, secure_broker.port), store, commands)
    try:
        assert link.wait_connected(20), "the bin could not log in"
        ids = add_events(store, BIN, 5)
        link.wake()
        assert wait_until(lambda: len(dashboard.on("/event")) == 5)
        # In any order: the reload may land between two events of one round.
        assert sorted(json.loads(p)["id"] for p in dashboard.on("/event")) == ids
        assert wait_until(lambda: store.pending_count() == 0, 10)
        assert b"online" in dashboard.on(f"{BIN}/status")
        # A command from the dashboard reaches the bin; the reply reaches the dashboard.
        dashboard.client.publish(f"smartbin/{BIN}/cmd/ping", b"{}", qos=1)
        assert wait_until(lambda: dashboard.on("/cmd/result"))
        assert commands == [("ping", 2)], "its own cmd/result is not taken for a command"
    finally:
        link.stop()
    assert agent_lines(caplog) == []
    assert any("connected to localhost" in r.getMessage() and "TLS" in r.getMessage() for r in caplog.records)


def test_wrong_ca_is_refused_with_one_line(tmp_path, pki, secure_broker, caplog):
    store = Store(tmp_path / "s.db")
    link = start_link(agent_config(tmp_path, pki, secure_broker.port, ca=pki / "other" / "ca.crt"), store)
    try:
        message = assert_one_clear_line(
            caplog,
            link,
            r"TLS: the certificate of localhost:\d+ was rejected "
            r"\(.*\); check mqtt.tls.ca_file",
        )
    finally:
        link.stop()
    print("\nlogged once:", message)


def test_wrong_password_is_refused_with_one_line(tmp_path, pki, caplog):
    """Where bins log in with passwords alone (the shipped config's password variant)."""
    broker = SecureBroker(tmp_path, pki, passwords_only=True)
    broker.start()
    store = Store(tmp_path / "s.db")
    link = start_link(agent_config(tmp_path, pki, broker.port, password="guessed"), store)
    try:
        message = assert_one_clear_line(
            caplog,
            link,
            r"broker localhost:\d+ refused the connection: "
            r"(Bad user name or password|Not authorized) "
            r"\(check mqtt.username and the password",
        )
    finally:
        link.stop()
        broker.kill()
    print("\nlogged once:", message)


def test_missing_client_certificate_is_named_in_one_line(tmp_path, pki, secure_broker, caplog):
    """mosquitto (require_certificate true) drops a client without a certificate right
    after the TLS handshake, before any CONNACK: that too must be said, once."""
    store = Store(tmp_path / "s.db")
    config = agent_config(tmp_path, pki, secure_broker.port)
    config.mqtt.tls.cert_file = config.mqtt.tls.key_file = ""
    link = start_link(config, store)
    try:
        message = assert_one_clear_line(
            caplog,
            link,
            r"the broker localhost:\d+ closed the connection before "
            r"accepting the login .*mqtt.tls.cert_file, key_file",
        )
    finally:
        link.stop()
    print("\nlogged once:", message)


def test_plain_mqtt_to_the_tls_port_is_named_in_one_line(tmp_path, pki, secure_broker, caplog):
    store = Store(tmp_path / "s.db")
    config = agent_config(tmp_path, pki, secure_broker.port)
    config.mqtt.tls = type(config.mqtt.tls)()  # TLS off, no files
    link = start_link(config, store)
    try:
        message = assert_one_clear_line(
            caplog,
            link,
            r"closed the connection before accepting the login .*"
            r"if this port expects TLS, set \[mqtt.tls\] enabled = true",
        )
    finally:
        link.stop()
    print("\nlogged once:", message)


def test_host_name_is_verified_and_insecure_is_loud(tmp_path, pki, dashboard_factory, caplog):
    """A broker certificate naming only 'localhost', reached as 127.0.0.1: refused; with
    insecure = true it connects (the CA is still checked) and says so at start."""
    broker = SecureBroker(tmp_path, pki, broker_certs=pki / "name-only")
    broker.start()
    try:
        store = Store(tmp_path / "s.db")
        link = start_link(agent_config(tmp_path, pki, broker.port, host="127.0.0.1"), store)
        try:
            assert_one_clear_line(caplog, link, r"certificate of 127.0.0.1:\d+ was rejected \(IP address mismatch")
        finally:
            link.stop()
        caplog.clear()
        link = start_link(agent_config(tmp_path, pki, broker.port, host="127.0.0.1", insecure=True), store)
        try:
            assert link.wait_connected(20)
        finally:
            link.stop()
        lines = agent_lines(caplog)
        assert len(lines) == 1 and "mqtt.tls.insecure = true" in lines[0].getMessage(), lines
    finally:
        broker.kill()


def test_topics_outside_the_acl_are_refused_with_one_line_and_kept(
    tmp_path, pki, secure_broker, dashboard_factory, caplog
):
    """User bin-01 configured as bin-02: mosquitto accepts the login but refuses every
    publish under smartbin/bin-02/ (MQTT 5 PUBACK 0x87). The events stay in the outbox."""
    dashboard = dashboard_factory(secure_broker.port)
    store = Store(tmp_path / "s.db")
    link = start_link(agent_config(tmp_path, pki, secure_broker.port, bin_id="bin-02"), store)
    try:
        assert link.wait_connected(20)
        add_events(store, "bin-02", 3)
        link.wake()
        # The pump pauses reconnect_max_seconds (1 s) after a refusal, then tries again.
        assert wait_until(lambda: link.refused >= 4, 30), link.refused
        lines = agent_lines(caplog)
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert not lines[0].exc_info
        assert re.search(
            r"the broker refused the publish on smartbin/bin-02/\w+: Not authorized; "
            r"its ACL must let user bin-01 write smartbin/bin-02/#",
            lines[0].getMessage(),
        )
        assert store.pending_count() == 3, "a refused event must stay in the outbox"
        assert dashboard.on("bin-02/event") == []
        assert link.connected
    finally:
        link.stop()
    print("\nlogged once:", lines[0].getMessage())


def test_broker_unreachable_from_the_start_warns_once_then_delivers(tmp_path, mosquitto_stopped, caplog):
    from tests.test_mqtt import make_link

    caplog.set_level(logging.INFO, logger="bin_agent")
    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto_stopped.port)
    link.start()
    try:
        ids = add_events(store, "b1", 3)
        link.wake()
        message = assert_one_clear_line(
            caplog,
            link,
            r"cannot reach the broker 127.0.0.1:\d+ "
            r"\(Connection refused\); retrying .* \(attempt 1\)",
        )
        mosquitto_stopped.start()
        assert link.wait_connected(20)
        assert wait_until(lambda: store.pending_count() == 0, 20), ids
    finally:
        link.stop()
    assert len(agent_lines(caplog)) == 1
    assert any(
        re.search(r"connected to 127.0.0.1:\d+ after \d+ failed attempt", r.getMessage()) for r in caplog.records
    )
    print("\nlogged once:", message)


def test_oversized_command_never_reaches_the_agent(tmp_path, mosquitto):
    """A 1 MB publish to cmd/ping: the broker honours the agent's MQTT 5 Maximum Packet
    Size and never sends it, so paho never buffers it; the agent stays connected and
    answers the next ping."""
    from tests.test_mqtt import make_link

    need("mosquitto_pub")
    calls: list[tuple[str, int]] = []

    def handler(name, payload, retained):
        calls.append((name, len(payload)))
        return {"command": name, "ok": True}

    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto.port, handler)
    link.start()
    try:
        assert link.wait_connected(10)
        rss_before = rss_kib()
        big = tmp_path / "big"
        big.write_bytes(b"x" * 1_000_000)
        topic = "smartbin/b1/cmd/ping"
        subprocess.run(
            ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-V", "mqttv5", "-t", topic, "-f", str(big)],
            check=True,
            timeout=30,
        )
        subprocess.run(
            ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", topic, "-m", "{}"], check=True, timeout=30
        )
        assert wait_until(lambda: calls, 10), "the small ping never arrived"
        assert calls == [("ping", 2)], "the 1 MB command reached the agent"
        assert link.connected
        rss_after = rss_kib()
    finally:
        link.stop()
    print(
        f"\nagent process RSS before the 1 MB command {rss_before} KiB, after {rss_after} KiB "
        f"(max packet size told to the broker: {link.max_packet_size} bytes)"
    )


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_world_readable_secrets_are_warned_about(tmp_path, pki, caplog):
    config = agent_config(tmp_path, pki, 1)
    config.resolve(config.mqtt.password_file).chmod(0o644)
    mqtt_credentials(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("mqtt.password_file: ") and "chmod 600" in warnings[0]


# --------------------------------------------------------------------------- the shipped ACL, identity


def with_discovery(link: MqttLink, config) -> dict[str, dict]:
    """Publish the bin's Home Assistant discovery configs on every connect, as the agent does."""
    from bin_agent.mqtt.discovery import discovery_messages

    messages = discovery_messages(config, ["cardboard", "glass", "metal", "paper", "plastic", "trash"])

    def publish() -> None:
        for topic, payload in messages.items():
            link.publish_retained(topic, payload)

    link.connect_hooks.append(publish)
    return messages


def discovery_link(tmp_path: Path, pki, port: int) -> tuple[Store, MqttLink, dict[str, dict]]:
    """A bin's store and MQTT link with discovery on, as the agent builds them, and the
    discovery configs it will publish (topic -> payload)."""
    store = Store(tmp_path / "s.db")
    config = agent_config(tmp_path, pki, port)
    password, tls = mqtt_credentials(config)
    link = make_mqtt(config, store, lambda n, p: None, lambda: {"n": 1}, password=password, tls=tls)
    return store, link, with_discovery(link, config)


def test_home_assistant_discovery_passes_the_shipped_acl(tmp_path, pki, secure_broker, dashboard_factory, caplog):
    """Discovery is on by default: every config of the bin reaches Home Assistant (the
    dashboard user reads homeassistant/#), none is refused, nothing is logged."""
    dashboard = dashboard_factory(secure_broker.port, ["homeassistant/#", "smartbin/#"])
    store, link, expected = discovery_link(tmp_path, pki, secure_broker.port)
    link.start()
    try:
        assert link.wait_connected(20)
        assert wait_until(lambda: dashboard.topics("homeassistant/") == set(expected)), set(
            expected
        ) - dashboard.topics("homeassistant/")
        assert wait_until(lambda: dashboard.on(f"{BIN}/state"))
    finally:
        link.stop()
    assert link.refused == 0
    assert agent_lines(caplog) == []
    print(f"\n{len(expected)} discovery configs delivered through the shipped ACL, 0 refused")


def test_a_refused_discovery_config_is_named_in_the_log(tmp_path, pki, secure_broker, caplog):
    """An ACL without the discovery line (as shipped before): the one log line names the
    refused discovery topic, not the bin's status or state."""
    text = secure_broker.acl.read_text()
    secure_broker.acl.write_text(text.replace("pattern readwrite homeassistant/+/%u/#\n", ""))
    secure_broker.reload()
    store, link, expected = discovery_link(tmp_path, pki, secure_broker.port)
    link.start()
    try:
        assert link.wait_connected(20)
        assert wait_until(lambda: link.refused == len(expected)), link.refused
        add_events(store, BIN, 2)
        link.wake()
        assert wait_until(lambda: store.pending_count() == 0), "events are still allowed"
    finally:
        link.stop()
    lines = [r.getMessage() for r in agent_lines(caplog)]
    assert len(lines) == 1, lines
    assert re.fullmatch(
        rf"the broker refused the publish on homeassistant/\w+/{BIN}/\w+/config: Not authorized; "
        rf"its ACL must let user {BIN} write homeassistant/\w+/{BIN}/\w+/config",
        lines[0],
    ), lines[0]
    print("\nlogged once:", lines[0])


def test_a_bin_cannot_overwrite_another_bins_discovery_config_or_status(
    tmp_path, pki, secure_broker, dashboard_factory
):
    """bin-02, logged in with its own certificate (and bin-01's user name and password,
    which the certificate overrides), is refused everything of bin-01."""
    dashboard = dashboard_factory(secure_broker.port, ["homeassistant/#", "smartbin/#"])
    intruder = dashboard_factory(
        secure_broker.port, f"smartbin/{OTHER}/#", user=OTHER, username=BIN, password=PASSWORD, client_id=BIN
    )
    for topic in (
        f"homeassistant/sensor/{BIN}/total/config",
        f"homeassistant/sensor/{BIN}/new_entity/config",
        f"smartbin/{BIN}/status",
        f"smartbin/{BIN}/event",
    ):
        assert intruder.publish_acked(topic, b"forged", retain=True) == "Not authorized", topic
    assert intruder.publish_acked(f"homeassistant/sensor/{OTHER}/total/config", b"{}", retain=True) == "Success"
    time.sleep(0.5)
    assert dashboard.topics(f"homeassistant/sensor/{BIN}/") == set()
    assert dashboard.on(f"{BIN}/status") == []


def test_another_login_cannot_take_over_a_bins_session(tmp_path, pki, secure_broker, dashboard_factory, caplog):
    """Client ids are user names (use_username_as_clientid): the dashboard, and bin-02 20
    times, connecting with bin-01's client id (and a Last Will 'offline' on its status)
    neither knock bin-01 off nor make it look offline."""
    # The dashboard itself asks for bin-01's client id.
    watcher = dashboard_factory(
        secure_broker.port, f"smartbin/{BIN}/status", client_id=BIN, will=(f"smartbin/{BIN}/status", "offline")
    )
    store = Store(tmp_path / "s.db")
    link = start_link(agent_config(tmp_path, pki, secure_broker.port), store)
    try:
        assert link.wait_connected(20)
        assert link.client._client_id == BIN.encode(), "the agent's default client id is its user name"
        assert wait_until(lambda: watcher.on(f"{BIN}/status") == [b"online"])
        for _ in range(10):
            for client_id in (BIN, f"bin-agent-{BIN}"):
                intruder = Dashboard(
                    secure_broker.port,
                    pki,
                    f"smartbin/{OTHER}/#",
                    user=OTHER,
                    username=BIN,
                    password=PASSWORD,
                    client_id=client_id,
                    will=(f"smartbin/{BIN}/status", "offline"),
                )
                # Gone without DISCONNECT: the broker publishes the Will, if it took it.
                intruder.client.loop_stop()
                sock = intruder.client.socket()
                assert sock is not None, "the intruder itself was knocked off"
                sock.close()
        add_events(store, BIN, 3)
        link.wake()
        assert wait_until(lambda: store.pending_count() == 0)
        time.sleep(1.0)
    finally:
        link.stop()
    assert link.disconnects == 0 and link.connects == 1
    assert wait_until(lambda: len(watcher.on(f"{BIN}/status")) >= 2, 10), "the bin's own offline at stop"
    time.sleep(0.5)
    assert watcher.on(f"{BIN}/status") == [b"online", b"offline"], "only the bin's own clean stop says offline"
    assert agent_lines(caplog) == []
    print("\n21 logins with bin-01's client id: bin-01 disconnected 0 times, offline faked 0 times")


def test_the_dashboard_cannot_forge_a_command_result_and_may_send_every_command(
    tmp_path, pki, secure_broker, dashboard_factory
):
    from bin_agent.mqtt.commands import SCHEMAS

    dashboard = dashboard_factory(secure_broker.port)
    assert dashboard.publish_acked(f"smartbin/{BIN}/cmd/result", b'{"ok": true}') == "Not authorized"
    for topic in ("state", "status", "event", "cmd/format_disk"):
        assert dashboard.publish_acked(f"smartbin/{BIN}/{topic}", b"{}") == "Not authorized", topic
    for name in SCHEMAS:
        assert dashboard.publish_acked(f"smartbin/{BIN}/cmd/{name}", b"{}") in ("Success", "No matching subscribers")
    assert dashboard.publish_acked("homeassistant/status", b"online") in ("Success", "No matching subscribers")
    lines = (SHIPPED / "acl").read_text().splitlines()
    assert {line.rsplit("/", 1)[1] for line in lines if line.startswith("topic write smartbin/+/cmd/")} == set(SCHEMAS)


def test_events_refused_by_the_acl_wait_then_go_out_once_it_is_fixed(
    tmp_path, pki, secure_broker, dashboard_factory, caplog
):
    """An ACL that lets the bin read but not write its topics: each refused event waits
    reconnect_max_seconds (1 s) before it is tried again, not in a loop. Then the ACL is
    fixed and mosquitto reloaded (SIGHUP): every event goes out, same connection."""
    shipped = secure_broker.acl.read_text()
    secure_broker.acl.write_text(shipped.replace("pattern readwrite smartbin/%u/#", "pattern read smartbin/%u/#"))
    secure_broker.reload()
    dashboard = dashboard_factory(secure_broker.port)
    store = Store(tmp_path / "s.db")
    link = start_link(agent_config(tmp_path, pki, secure_broker.port), store)
    try:
        assert link.wait_connected(20)
        ids = add_events(store, BIN, 5)
        link.wake()
        assert wait_until(lambda: link.refused >= 5)
        started, refused_before = time.monotonic(), link.refused
        time.sleep(3.0)
        window, refused_in_window = time.monotonic() - started, link.refused - refused_before
        # A pause of 1 s: at most 4 rounds of 5 events (and states) in 3 s; a hot loop makes thousands.
        assert refused_in_window <= 5 * 2 * (window / 1.0 + 2), refused_in_window
        assert store.pending_count() == 5 and dashboard.on("/event") == []
        secure_broker.acl.write_text(shipped)
        secure_broker.reload()
        assert wait_until(lambda: store.pending_count() == 0, 20), store.pending_count()
        # In any order: the reload may land between two events of one round.
        assert sorted(json.loads(p)["id"] for p in dashboard.on("/event")) == ids
    finally:
        link.stop()
    assert link.connects == 1, "delivered without a reconnect, let alone a restart"
    print(
        f"\nrefused in {window:.1f} s of a wrong ACL: {refused_in_window} publishes (5 events); "
        f"after SIGHUP with the fixed ACL: {len(ids)} of {len(ids)} delivered"
    )


# --------------------------------------------------------------------------- a broker that stops answering


def test_a_broker_that_stops_answering_holds_one_state_not_one_per_item(
    tmp_path, pki, secure_broker, dashboard_factory, caplog
):
    """mosquitto SIGSTOPped: the TCP connection stays up, nothing is answered, and paho
    notices only after 1x-2x keepalive. 3,000 items sorted meanwhile (each: an event in
    the outbox and a state publish, as the agent does): paho holds at most max_inflight
    events and one state. The link is noticed dead without blaming TLS; after SIGCONT
    every event and the newest state arrive."""
    dashboard = dashboard_factory(secure_broker.port)
    store = Store(tmp_path / "s.db")
    config = agent_config(tmp_path, pki, secure_broker.port)
    config.mqtt.keepalive = 5
    detail = {"top3": [["glass", 0.9], ["plastic", 0.05], ["metal", 0.05]], "notes": "x" * 1500}
    password, tls = mqtt_credentials(config)
    link = make_mqtt(
        config,
        store,
        lambda n, p: None,
        lambda: {"counts": store.counts().as_dict(), "last_item": detail},
        password=password,
        tls=tls,
    )
    link.start()
    items = 3000
    try:
        assert link.wait_connected(20)
        assert secure_broker.proc is not None
        rss_before = rss_kib()
        secure_broker.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        queued = 0

        def sort_items() -> None:
            nonlocal queued
            for n in range(items):
                add_one_event(store, n)
                link.wake()
                link.publish_state()
                queued = max(queued, len(link.client._out_messages))

        sorter = threading.Thread(target=sort_items)
        sorter.start()
        try:
            assert wait_until(lambda: not link.connected, 60), "the dead link was never noticed"
            noticed = time.monotonic() - stopped
            sorter.join()
            sorted_in = time.monotonic() - stopped
            rss_after = rss_kib()
            time.sleep(6)  # reconnect attempts against the stopped broker
        finally:
            secure_broker.proc.send_signal(signal.SIGCONT)
        print(
            f"\nbroker SIGSTOPped, {items} items sorted in {sorted_in:.1f} s: paho held at most {queued} "
            f"messages; RSS {rss_before} -> {rss_after} KiB; dead link noticed after {noticed:.1f} s "
            f"(keepalive {config.mqtt.keepalive} s)"
        )
        assert queued <= config.mqtt.max_inflight + 2, queued  # the events in flight, one state, 'online'
        assert link.wait_connected(30)
        assert wait_until(lambda: store.pending_count() == 0, 60), store.pending_count()
        final = store.counts().as_dict()
        assert wait_until(
            lambda: dashboard.on(f"{BIN}/state") and json.loads(dashboard.on(f"{BIN}/state")[-1])["counts"] == final
        )
    finally:
        link.stop()
    lines = [r.getMessage() for r in agent_lines(caplog)]
    assert lines and "no answer to a keepalive ping within 5 s" in lines[0], lines
    assert not [line for line in lines if re.search(r"TLS|certificate", line)], lines
    print("logged:", *lines, sep="\n  ")


def add_one_event(store: Store, n: int) -> None:
    store.record_event(
        event_id=f"ev-{n:05d}",
        topic=f"smartbin/{BIN}/event",
        payload={"id": f"ev-{n:05d}"},
        label="glass",
        compartment="glass",
        fallback=False,
    )
