"""What a dashboard sees after the agent stops, and the latencies each event promises."""

from __future__ import annotations

from bin_agent import preflight
from bin_agent.agent import build_agent
from tests.helpers import base_config
from tests.test_replay import write_photo


def test_clean_stop_leaves_state_stopped_with_an_empty_outbox(tmp_path, mosquitto, subscriber_factory):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.png", (200, 0, 0), size=(160, 120))
    write_photo(photos / "b.png", (0, 0, 200), size=(160, 120))
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    config = preflight.load_dict(base_config(tmp_path, photos, port=mosquitto.port), base_dir=tmp_path)
    agent = build_agent(config)
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)

    assert agent.run() == 0

    assert sub.wait_for(lambda: len(sub.on("/event")) == 2, 20)
    for event in sub.json_on("/event"):
        latency = event["latency_ms"]
        # total spans trigger to decision (recorded before the mechanics move):
        # at least the stages it contains, and no actuation in it.
        parts = sum(latency[k] for k in ("trigger", "preprocess", "inference", "route"))
        assert latency["total"] >= parts - 0.05, latency
        assert "actuate" not in latency and "record" not in latency
    late = subscriber_factory(mosquitto.port, "smartbin/test-bin/state")
    assert late.wait_for(lambda: late.on("/state"), 10), "no retained state"
    message = late.on("/state")[-1]
    state = late.json_on("/state")[-1]
    assert message.retain
    assert state["status"] == "stopped"
    assert state["outbox_pending"] == 0
    assert state["counts"]["total"] == 2
    assert state["last_item"]["latency_ms"]["total"] == sub.json_on("/event")[-1]["latency_ms"]["total"]
