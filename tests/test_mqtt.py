"""The MQTT link against a real mosquitto, with a real paho subscriber."""

from __future__ import annotations

import time

from bin_agent.config import MqttSection
from bin_agent.mqtt.link import MqttLink, Topics
from bin_agent.store import Store
from tests.conftest import Subscriber

TOPICS = Topics.for_bin("smartbin", "b1")


def settings(port: int) -> MqttSection:
    return MqttSection(
        host="127.0.0.1", port=port, keepalive=5, reconnect_min_seconds=0.1, reconnect_max_seconds=0.5, max_inflight=5
    )


def add_events(store: Store, first: int, count: int) -> list[str]:
    ids = []
    for n in range(first, first + count):
        event_id = f"ev-{n:04d}"
        store.record_event(
            event_id=event_id,
            topic=TOPICS.event,
            payload={"id": event_id, "n": n},
            label="glass",
            compartment="glass",
            fallback=False,
        )
        ids.append(event_id)
    return ids


def make_link(store: Store, port: int, on_command=None) -> MqttLink:
    def default_handler(name, payload, retained):
        return {"command": name, "ok": True}

    return MqttLink(
        settings(port),
        TOPICS,
        store,
        on_command or default_handler,
        state=lambda: {"counts": store.counts().as_dict()},
        client_id="agent-under-test",
    )


def received_ids(sub) -> list[str]:
    return [m["id"] for m in sub.json_on("/event")]


def test_events_reach_the_broker_in_order_and_leave_the_outbox(tmp_path, mosquitto, subscriber_factory):
    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto.port)
    link.start()
    ids = add_events(store, 0, 30)
    link.wake()
    assert sub.wait_for(lambda: len(received_ids(sub)) >= 30)
    assert received_ids(sub) == ids
    assert sub.wait_for(lambda: store.pending_count() == 0, 5)
    assert any(m.payload == b"online" for m in sub.on("/status"))
    link.stop()
    assert sub.wait_for(lambda: sub.on("/status")[-1].payload == b"offline", 5)


def with_dashboard_session(broker, tmp_path) -> None:
    """Make ``broker`` keep sessions across restarts (a persistence file saved once,
    by a clean stop, and loaded by every later start, even after a SIGKILL) and
    give it the session of a "dashboard" subscribed to the events. Whatever the
    agent sends while the dashboard is away is then queued for it, however late
    it reconnects: what the dashboard misses, the agent lost.

    (`user root`: a broker started as root would otherwise drop to the mosquitto
    user, which cannot write in tmp_path; as any other user the line has no effect.)"""
    broker.conf.write_text(
        broker.conf.read_text().replace(
            "persistence false", f"persistence true\npersistence_location {tmp_path}/\nuser root"
        )
    )
    broker.start()
    Subscriber(broker.port, TOPICS.event, client_id="dashboard", clean_session=False).close()
    broker.stop()


def dashboard(subscriber_factory, broker):
    return subscriber_factory(broker.port, TOPICS.event, client_id="dashboard", clean_session=False)


def test_broker_down_at_start_then_up_delivers_everything(tmp_path, mosquitto_stopped, subscriber_factory):
    broker = mosquitto_stopped
    with_dashboard_session(broker, tmp_path)
    store = Store(tmp_path / "s.db")
    link = make_link(store, broker.port)
    link.start()
    ids = add_events(store, 0, 12)
    link.wake()
    time.sleep(0.5)
    assert store.pending_count() == 12
    broker.start()
    assert link.wait_connected(15)
    sub = dashboard(subscriber_factory, broker)
    assert sub.wait_for(lambda: len(received_ids(sub)) >= 12, 20), received_ids(sub)
    assert received_ids(sub) == ids
    assert all(m.qos == 1 for m in sub.on("/event")), "events must be published at QoS 1"
    assert sub.wait_for(lambda: store.pending_count() == 0, 10), "outbox never drained"
    link.stop()


def test_broker_killed_and_restarted_loses_nothing(tmp_path, mosquitto_stopped, subscriber_factory):
    broker = mosquitto_stopped
    with_dashboard_session(broker, tmp_path)
    broker.start()
    store = Store(tmp_path / "s.db")
    link = make_link(store, broker.port)
    link.start()
    assert link.wait_connected(10)
    add_events(store, 0, 10)
    link.wake()
    assert link.drain(10)
    broker.kill()
    assert_eventually(lambda: not link.connected, 10)
    second = add_events(store, 10, 10)
    link.wake()
    time.sleep(0.3)
    assert store.pending_count() == 10
    broker.start()  # from the saved file: the dashboard's session, nothing of what the killed one held
    assert link.wait_connected(15)
    sub = dashboard(subscriber_factory, broker)
    assert sub.wait_for(lambda: set(second) <= set(received_ids(sub)), 20), received_ids(sub)
    assert sub.wait_for(lambda: store.pending_count() == 0, 10)
    ordered = [i for i in received_ids(sub) if i in second]
    assert ordered == sorted(ordered)
    link.stop()


def test_retained_state_and_commands(tmp_path, mosquitto, subscriber_factory):
    store = Store(tmp_path / "s.db")
    calls = []

    def handler(name, payload, retained):
        calls.append((name, payload))
        if name == "boom":
            raise RuntimeError("handler bug")
        return {"command": name, "ok": True}

    link = make_link(store, mosquitto.port, handler)
    link.start()
    assert link.wait_connected(10)
    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    assert sub.wait_for(lambda: sub.on("/state"), 5), "retained state missing"
    assert sub.on("/state")[0].retain
    sub.publish(f"{TOPICS.base}/cmd/boom", b"{}")
    sub.publish(f"{TOPICS.base}/cmd/ping", b'{"id": 7}')
    assert sub.wait_for(lambda: len(sub.json_on("/cmd/result")) >= 2, 10)
    results = sub.json_on("/cmd/result")
    assert results[0] == {"command": "boom", "ok": False, "reason": "internal error: RuntimeError"}
    assert results[1]["command"] == "ping" and results[1]["ok"]
    # Our own replies on cmd/result are not taken for a command named "result".
    assert [c[0] for c in calls] == ["boom", "ping"]
    link.stop()


def assert_eventually(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_callback_that_raises_does_not_stop_delivery(tmp_path, mosquitto, subscriber_factory, caplog):
    """A command handler whose reply is not JSON-serialisable makes paho's on_message
    raise. paho re-raises in its network thread unless ``suppress_exceptions``, which
    ends that thread: no PUBACK, no reconnect, no command, ever again. It is logged once,
    with its traceback; the next events and commands go through."""
    import logging

    def handler(name, payload, retained):
        if name == "classify":
            return {"command": name, "ok": True, "detail": object()}
        return {"command": name, "ok": True}

    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto.port, handler)
    link.start()
    try:
        assert link.wait_connected(10)
        sub.publish(f"{TOPICS.base}/cmd/classify", b"")
        assert sub.wait_for(lambda: any("Caught exception in on_message" in r.getMessage() for r in caplog.records))
        ids = add_events(store, 0, 5)
        link.wake()
        assert sub.wait_for(lambda: received_ids(sub) == ids), received_ids(sub)
        assert sub.wait_for(lambda: store.pending_count() == 0, 10)
        sub.publish(f"{TOPICS.base}/cmd/ping", b"")
        assert sub.wait_for(lambda: [r["command"] for r in sub.json_on("/cmd/result")] == ["ping"], 10)
    finally:
        link.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and errors[0].exc_info[0] is TypeError, errors


class FailingReads(Store):
    """An outbox whose first reads fail as a database does on an I/O error (a failing SD
    card, a locked file); the pump must retry, not end."""

    failures = 3

    def pending(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            import sqlite3

            raise sqlite3.OperationalError("disk I/O error")
        return super().pending(*args, **kwargs)


def test_the_outbox_pump_retries_after_a_store_error(tmp_path, mosquitto, subscriber_factory, caplog):
    import logging

    sub = subscriber_factory(mosquitto.port, "smartbin/#")
    store = FailingReads(tmp_path / "s.db")
    link = make_link(store, mosquitto.port)
    link.start()
    try:
        assert link.wait_connected(10)
        ids = add_events(store, 0, 5)
        link.wake()
        assert sub.wait_for(lambda: received_ids(sub) == ids, 20), received_ids(sub)
        assert sub.wait_for(lambda: store.pending_count() == 0, 10)
    finally:
        link.stop()
    assert store.failures == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "outbox pump failed; retrying" in errors[0].getMessage(), errors
    assert errors[0].exc_info, "with its traceback"


def test_a_ping_during_a_command_flood_is_answered(tmp_path, mosquitto, subscriber_factory):
    """500 cmd/classify and 500 unknown commands through a real broker, then one
    cmd/ping: classify's and the unknown names' buckets are empty, ping's is not."""
    from bin_agent.mqtt.commands import CommandGate, CommandRejected

    gate = CommandGate()
    ran: list[str] = []

    def handler(name, payload, retained):  # as Agent.handle_command: no reply over the rate limit
        try:
            command = gate.check(name, payload, retained)
        except CommandRejected as exc:
            return {"command": name, "ok": False, "reason": exc.reason} if exc.reply else None
        ran.append(command.name)
        return {"command": command.name, "ok": True, **command.args}

    sub = subscriber_factory(mosquitto.port, f"{TOPICS.base}/cmd/result")
    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto.port, handler)
    link.start()
    try:
        assert link.wait_connected(10)
        for n in range(500):
            sub.client.publish(f"{TOPICS.base}/cmd/classify", b"", qos=1)
            sub.client.publish(f"{TOPICS.base}/cmd/junk{n}", b"", qos=1)
        sub.publish(f"{TOPICS.base}/cmd/ping", b'{"id": "during-flood"}')
        assert sub.wait_for(lambda: any(r.get("id") == "during-flood" for r in sub.json_on("/cmd/result")), 20)
    finally:
        link.stop()
    assert ran.count("classify") <= gate._buckets["classify"].burst + 2, "classify itself stays limited"
    print(f"\n1,000 flood commands: {ran.count('classify')} classify ran, {gate.rejected} rejected; the ping answered")


def test_paho_holds_a_bounded_number_of_messages_for_a_silent_broker(tmp_path, mosquitto, caplog):
    """Whatever asks to publish (results, alerts, discovery) while the broker is
    SIGSTOPped: paho holds at most max_inflight + MAX_QUEUED_OTHER messages, the rest is
    refused at once and said in one line, not queued without end."""
    import logging
    import signal

    from bin_agent.mqtt.link import MAX_QUEUED_OTHER

    store = Store(tmp_path / "s.db")
    link = make_link(store, mosquitto.port)
    link.start()
    assert mosquitto.proc is not None
    try:
        assert link.wait_connected(10)
        mosquitto.proc.send_signal(signal.SIGSTOP)
        try:
            for n in range(2000):
                link.publish_retained(f"{TOPICS.base}/alert/{n % 7}", {"n": n, "pad": "x" * 500})
            held = len(link.client._out_messages)
        finally:
            mosquitto.proc.send_signal(signal.SIGCONT)
    finally:
        link.stop()
    cap = link.settings.max_inflight + MAX_QUEUED_OTHER
    assert held <= cap, held
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"not sent: {TOPICS.base}/alert/"), warnings
    print(f"\n2,000 retained publishes to a SIGSTOPped broker: paho held {held} (cap {cap})")


def count_outbox_reads(store: Store) -> list[str]:
    """Every query the store's connection runs that reads undelivered events (SQLite's trace
    callback: what really reaches the database, whichever method sends it)."""
    reads: list[str] = []
    assert store._db is not None
    store._db.set_trace_callback(lambda sql: reads.append(sql) if "FROM outbox WHERE seq >" in sql else None)
    return reads


def test_a_backlog_is_read_from_the_outbox_in_batches_delivered_in_order(tmp_path, mosquitto, subscriber_factory):
    """2,000 events recorded during an outage: the pump reads them 200 at a time (not one
    query per PUBACK: ~2,300 for 10,000 events before) and every one reaches the broker
    once, in order."""
    sub = subscriber_factory(mosquitto.port, TOPICS.event)
    store = Store(tmp_path / "s.db")
    ids = add_events(store, 0, 2000)
    reads = count_outbox_reads(store)
    link = make_link(store, mosquitto.port)
    link.start()
    try:
        assert sub.wait_for(lambda: len(received_ids(sub)) >= len(ids), 60), len(received_ids(sub))
        assert sub.wait_for(lambda: store.pending_count() == 0, 10), "outbox never drained"
        time.sleep(0.3)  # anything sent twice would be here by now
    finally:
        link.stop()
    assert received_ids(sub) == ids, "every event once, oldest first"
    assert link.delivered == len(ids)
    assert len(reads) <= len(ids) // 200 + 2, f"{len(reads)} outbox queries for {len(ids)} events"
    print(f"\n{len(ids)} events: {len(reads)} outbox queries")


def take_over_client_id(port: int, link: MqttLink) -> None:
    """Another login with the bin's client id: the broker drops the bin (a real drop
    mid-backlog); the intruder leaves once the bin has noticed."""
    import paho.mqtt.client as paho

    thief = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="agent-under-test", protocol=paho.MQTTv5)
    thief.connect("127.0.0.1", port, 5)
    thief.loop_start()
    assert_eventually(lambda: link.disconnects >= 1, 10)
    thief.disconnect()
    thief.loop_stop()


def test_events_recorded_while_a_backlog_drains_and_a_dropped_connection_lose_nothing(
    tmp_path, mosquitto, subscriber_factory
):
    """While a backlog drains, more events are recorded and the broker drops the bin mid-batch
    (another login with its client id): every event arrives, first copies in order; only what
    was in flight at the drop may come twice."""
    import threading

    sub = subscriber_factory(mosquitto.port, TOPICS.event)
    store = Store(tmp_path / "s.db")
    backlog = add_events(store, 0, 3000)
    link = make_link(store, mosquitto.port)
    recorded: list[str] = []
    recorder = threading.Thread(target=lambda: recorded.extend(add_events(store, 3000, 400)))
    link.start()
    try:
        assert sub.wait_for(lambda: len(received_ids(sub)) >= 200, 30)
        recorder.start()
        at_drop = len(received_ids(sub))
        take_over_client_id(mosquitto.port, link)
        recorder.join(60)
        ids = backlog + recorded
        assert len(ids) == 3400
        assert sub.wait_for(lambda: set(received_ids(sub)) >= set(ids), 60), len(set(received_ids(sub)))
        assert sub.wait_for(lambda: store.pending_count() == 0, 10), "outbox never drained"
    finally:
        link.stop()
    got = received_ids(sub)
    first_copies = list(dict.fromkeys(got))
    assert first_copies == ids, "nothing skipped, oldest first"
    assert len(got) - len(ids) <= link.settings.max_inflight * link.disconnects, "only in-flight events twice"
    assert at_drop < len(ids), "the connection dropped mid-backlog"
    print(f"\n{len(ids)} events, dropped at {at_drop}: {len(got) - len(ids)} sent twice")


def test_an_event_acknowledged_while_a_reconnect_reads_the_outbox_again_is_not_sent_again(
    tmp_path, mosquitto, subscriber_factory
):
    """After a reconnect the pump reads the outbox again from the oldest pending event, which
    includes what paho still holds and re-sends itself. PUBACKs of those re-sent events that
    arrive while that read is under way must not make the pump hand them over a second time:
    only what was in flight at the drop may come twice."""
    import collections
    import json

    sub = subscriber_factory(mosquitto.port, TOPICS.event)
    store = Store(tmp_path / "s.db")
    ids = add_events(store, 0, 3000)
    link = make_link(store, mosquitto.port)
    read_pending = store.pending
    slowed = []

    def slow_read_after_the_reconnect(after: int, limit: int):
        # The read of a rewind, slowed (as on a busy Pi's SD card): the re-sent events'
        # PUBACKs arrive before the pump has applied them.
        if link.connects >= 2 and not slowed:
            slowed.append(after)
            time.sleep(0.5)
        return read_pending(after, limit)

    store.pending = slow_read_after_the_reconnect  # type: ignore[method-assign]
    handed: collections.Counter[str] = collections.Counter()
    publish = link.client.publish

    def count_handed_events(topic, payload=None, qos=0, retain=False, properties=None):
        if topic == TOPICS.event:
            handed[json.loads(payload)["id"]] += 1
        return publish(topic, payload, qos, retain, properties)

    link.client.publish = count_handed_events
    link.start()
    try:
        assert sub.wait_for(lambda: len(received_ids(sub)) >= 300, 30)
        take_over_client_id(mosquitto.port, link)
        assert sub.wait_for(lambda: set(received_ids(sub)) >= set(ids), 60), len(set(received_ids(sub)))
        assert sub.wait_for(lambda: store.pending_count() == 0, 10), "outbox never drained"
    finally:
        link.stop()
    got = received_ids(sub)
    assert slowed, "the outbox was never read again after the reconnect"
    # paho re-sends what it held at the drop by itself; the link hands each event over once.
    assert [event_id for event_id, times in handed.items() if times > 1] == [], "handed to paho twice"
    assert list(dict.fromkeys(got)) == ids, "nothing skipped, oldest first"
    assert len(got) - len(ids) <= link.settings.max_inflight * link.disconnects, "only in-flight events twice"
    print(f"\n{len(ids)} events: {len(got) - len(ids)} sent twice")


def test_paho_s_thread_keeps_the_window_full_and_a_drop_mid_backlog_loses_or_doubles_nothing(
    tmp_path, mosquitto, subscriber_factory
):
    """paho's thread hands over the next read-ahead event on each event PUBACK (``_refill``):
    most of a backlog goes out that way; paho never holds more than ``max_inflight`` events,
    nor one event twice at once; the broker drops the bin mid-backlog (another login with its
    client id) and every event still arrives, first copies in order, only what was in flight
    at the drop twice, and the outbox empties."""
    import json
    import threading

    sub = subscriber_factory(mosquitto.port, TOPICS.event)
    store = Store(tmp_path / "s.db")
    ids = add_events(store, 0, 3000)
    link = make_link(store, mosquitto.port)
    held_most = [0]
    held_twice: list[list[str]] = []
    sampling = threading.Event()

    def sample() -> None:
        # What paho holds, under paho's own lock (the one it holds while calling on_publish).
        client = link.client
        while not sampling.is_set():
            with client._out_message_mutex:
                held = [json.loads(m.payload)["id"] for m in client._out_messages.values() if m.topic == TOPICS.event]
            held_most[0] = max(held_most[0], len(held))
            if len(held) != len(set(held)):
                held_twice.append(held)
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    link.start()
    sampler.start()
    try:
        assert sub.wait_for(lambda: len(received_ids(sub)) >= 300, 30)
        assert link.refilled > 0, "paho's thread refilled nothing before the drop"
        at_drop = len(received_ids(sub))
        take_over_client_id(mosquitto.port, link)
        assert sub.wait_for(lambda: set(received_ids(sub)) >= set(ids), 60), len(set(received_ids(sub)))
        assert sub.wait_for(lambda: store.pending_count() == 0, 10), "outbox never drained"
    finally:
        sampling.set()
        sampler.join(5)
        link.stop()
    got = received_ids(sub)
    assert list(dict.fromkeys(got)) == ids, "nothing skipped, oldest first"
    assert len(got) - len(ids) <= link.settings.max_inflight * link.disconnects, "only in-flight events twice"
    assert at_drop < len(ids), "the connection dropped mid-backlog"
    assert held_most[0] <= link.settings.max_inflight, f"paho held {held_most[0]} events at once"
    assert not held_twice, f"paho held an event twice at once: {held_twice[0]}"
    assert link.delivered >= len(ids)
    assert link.refilled >= len(ids) // 2, f"paho's thread refilled only {link.refilled} of {len(ids)}"
    print(
        f"\n{len(ids)} events, dropped at {at_drop}: {link.refilled} refilled by paho's thread, "
        f"{len(got) - len(ids)} sent twice, at most {held_most[0]} held by paho"
    )
