"""Command checks (schema, depth, size, rate limit, disabled reset) and the log throttle."""

from __future__ import annotations

import logging

import pytest

from bin_agent.mqtt.commands import CommandGate, CommandRejected, nesting_depth
from bin_agent.mqtt.ratelimit import LogThrottle, TokenBucket


def reason(gate: CommandGate, name: str, payload: bytes) -> str:
    with pytest.raises(CommandRejected) as info:
        gate.check(name, payload)
    return info.value.reason


def test_valid_commands_pass_with_their_id():
    gate = CommandGate(allow_reset=True)
    assert gate.check("ping", b"").args == {}
    assert gate.check("classify", b' {"id": "c1"} ').request_id == "c1"
    assert gate.check("reset_counts", b'{"id": 42}').request_id == "42"
    assert gate.rejected == 0


@pytest.mark.parametrize(
    "name, payload, expected",
    [
        (
            "format_disk",
            b"{}",
            "unknown command; known: classify, reset_counts, ping, emptied, trigger_mode, reload_model, correct, learn",
        ),
        ("ping", b'{"id": 1, "force": true}', "unknown key 'force' for ping; allowed: id"),
        ("ping", b'{"id": true}', "id must be a string or a whole number"),
        ("ping", b'{"id": 1.5}', "id must be a string or a whole number"),
        ("ping", b'{"id": {"a": 1}}', "id must be a string or a whole number"),
        ("ping", b'{"id": "' + b"x" * 65 + b'"}', "id longer than 64 characters"),
        ("ping", b"[1, 2]", "payload must be empty or a JSON object"),
        ("ping", b'{"id": NaN}', "payload must be empty or a JSON object"),
        ("ping", b"\xff\xfe", "payload must be empty or a JSON object (UTF-8)"),
        ("ping", b"[" * 5, "JSON nested deeper than 4 levels"),
        ("ping", b"x" * 5000, "payload larger than 4096 bytes"),
    ],
)
def test_invalid_commands_are_rejected_with_a_reason(name, payload, expected):
    gate = CommandGate()
    assert reason(gate, name, payload) == expected
    assert gate.rejected == 1


def test_2000_deep_json_gives_a_reason_not_a_recursion_error(caplog):
    gate = CommandGate()
    deep = b"[" * 2000 + b"]" * 2000
    assert len(deep) < gate.max_bytes
    assert reason(gate, "ping", deep) == "JSON nested deeper than 4 levels"
    deep_object = b'{"id": ' * 500 + b"1" + b"}" * 500
    assert reason(gate, "classify", deep_object) == "JSON nested deeper than 4 levels"
    assert all(not r.exc_info for r in caplog.records)


def test_nesting_depth_skips_brackets_inside_strings():
    assert nesting_depth('{"id": "[[[[[[{{{{"}', 4) == 1
    assert nesting_depth('{"id": "a\\"[[[[[["}', 4) == 1
    assert nesting_depth("[[[]]]", 10) == 3
    assert nesting_depth("[" * 100, 4) == 5, "stops counting past the limit"


def test_reset_counts_is_refused_unless_allowed():
    """Off by default: zeroing the counts is not something a secured install hands to
    every client that may write a command topic."""
    gate = CommandGate()
    assert reason(gate, "reset_counts", b"") == (
        "reset_counts is disabled on this bin (mqtt.commands.allow_reset = false)"
    )
    assert gate.check("ping", b"").name == "ping"


def test_rate_limit_drops_without_reply_and_counts(caplog):
    gate = CommandGate(rate_per_minute=60, burst=3)
    for _ in range(3):
        gate.check("ping", b"")
    with pytest.raises(CommandRejected) as info:
        gate.check("ping", b"")
    assert not info.value.reply, "a command over the rate limit gets no reply"
    for _ in range(100):
        with pytest.raises(CommandRejected):
            gate.check("ping", b"")
    assert gate.rejected == 101
    warnings = [r for r in caplog.records if r.name == "bin_agent.mqtt.commands"]
    assert len(warnings) == 1, "rejections are logged at most once a minute"
    assert "over the rate limit" in warnings[0].getMessage()


def test_a_flood_of_one_command_does_not_starve_the_others():
    """One bucket per command name (and one for all unknown names): 1,000 classify
    commands and 1,000 garbage names in a row, and a ping still passes."""
    gate = CommandGate(rate_per_minute=60, burst=3)
    for _ in range(1000):
        try:
            gate.check("classify", b"")
        except CommandRejected:
            pass
        try:
            gate.check("x" * 8, b"")
        except CommandRejected:
            pass
    assert gate.check("ping", b"").name == "ping"
    assert gate.rejected == 2 * 1000 - 3, "3 classify passed (the burst); every garbage name was rejected"
    with pytest.raises(CommandRejected) as info:
        gate.check("classify", b"")
    assert not info.value.reply, "classify itself is still over its limit"


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=2, clock=lambda: now[0])
    assert bucket.take() and bucket.take() and not bucket.take()
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    now[0] = 100.0
    assert bucket.take() and bucket.take() and not bucket.take(), "never more than the burst"


def test_log_throttle_says_how_many_were_held_back(caplog):
    now = [0.0]
    throttle = LogThrottle(logging.getLogger("test.throttle"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttle"):
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
        for second in range(1, 60):
            now[0] = second
            assert not throttle.log(logging.WARNING, "down", "broker %s down", "b")
        now[0] = 61
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
        throttle.clear("down")
        assert throttle.log(logging.WARNING, "down", "broker %s down", "b")
    assert [r.getMessage() for r in caplog.records] == [
        "broker b down",
        "broker b down (59 more like this in the last 60 s)",
        "broker b down",
    ]
