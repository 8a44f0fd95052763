"""MQTT commands to the bin: what each accepts, checked before anything runs.

A command arrives on ``<prefix>/<bin_id>/cmd/<name>`` with an empty payload or a
JSON object. :class:`CommandGate` decides, in this order:

1. the rate limit: one token bucket (``rate_per_minute``, ``burst``) per command
   name, and one shared by every unknown name; over it the command is dropped
   without a reply, so a flood cannot make the bin flood back, and a flood of one
   command (or of garbage) does not starve the others: a ``cmd/ping`` during a
   ``cmd/classify`` flood is still answered;
2. the name: one of :data:`SCHEMAS`;
3. the payload: at most ``max_bytes``, UTF-8, nested at most :data:`MAX_DEPTH`
   deep (checked before parsing, so a 2,000-deep array is a reason, not a
   RecursionError), empty or a JSON object;
4. not a disabled destructive command;
5. not retained: the broker sends a retained command again on every reconnect of
   the bin (its subscription is made anew), so it would run again each time (a
   ``reset_counts`` zeroing the counts, a ``correct`` counted as a new label);
   the link subscribes with MQTT 5 Retain As Published, so the flag says how the
   command was published, live or replayed;
6. the object's keys and value types: those the command's schema allows.

From step 4 on, the reply carries the command's ``id`` when it has a usable one.

Every rejection is counted (``commands_rejected`` in ``state``) and logged at
most once a minute. The broker is also told not to send commands bigger than
``max_bytes`` at all (MQTT 5 Maximum Packet Size, see :mod:`bin_agent.mqtt`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BinAgentError
from .ratelimit import LogThrottle, TokenBucket

if TYPE_CHECKING:
    from ..config import MqttCommandsSection

log = logging.getLogger(__name__)

MAX_DEPTH = 4
"""Deepest nesting of arrays/objects looked at; the schemas need 1 (a flat object)."""
MAX_ID_CHARS = 64

ID_FIELD = {"id": (str, int)}
"""Every command takes an optional ``id`` that the reply carries back."""

SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "classify": dict(ID_FIELD),  # take a picture and sort what lies there now
    "reset_counts": dict(ID_FIELD),  # zero the counts (destructive)
    "ping": dict(ID_FIELD),  # reply with the time and the agent's status
    "emptied": {**ID_FIELD, "compartment": (str,)},  # a compartment was emptied: its fill level to 0
    "trigger_mode": {**ID_FIELD, "mode": (str,)},  # switch the trigger until the next start
    "reload_model": dict(ID_FIELD),  # switch to the deployed model before the next item
    "correct": {**ID_FIELD, "event_id": (str,), "label": (str,)},  # a captured item really is `label`
    "learn": dict(ID_FIELD),  # refit the head on the bin's labels now (bin-agent learn); result on cmd/result
}
"""Command name → allowed keys and the types of their values."""

DESTRUCTIVE = ("reset_counts",)
RETAINED_REASON = (
    "a retained command is not run (the broker would send it again at every reconnect): publish it "
    "with retain off, and clear the retained one (an empty retained message on this topic)"
)
UNKNOWN = ""
"""The rate-limit class of every name not in :data:`SCHEMAS` (no command is named "")."""


@dataclass(frozen=True)
class Command:
    """A command that passed every check."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        value = self.args.get("id")
        return None if value is None else str(value)


class CommandRejected(BinAgentError):
    """Why a command is not run; ``reply`` is False when none must be sent (rate limit)."""

    exit_code = os.EX_DATAERR

    def __init__(self, reason: str, *, reply: bool = True, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
        self.request_id = request_id  # the command's own "id", when it could be read


class CommandGate:
    """Checks each incoming command against the ``[mqtt.commands]`` settings.

    :param allow_reset: accept ``reset_counts``.
    :param max_bytes: the largest payload.
    :param rate_per_minute: average commands of one name accepted per minute.
    :param burst: commands of one name accepted in a row before the rate applies.
    """

    def __init__(
        self, *, allow_reset: bool = False, max_bytes: int = 4096, rate_per_minute: float = 60.0, burst: int = 10
    ) -> None:
        self.allow_reset = allow_reset
        self.max_bytes = max_bytes
        # One bucket per command class: each known name, and UNKNOWN for the rest.
        self._buckets = {name: TokenBucket(rate_per_minute / 60.0, burst) for name in (*SCHEMAS, UNKNOWN)}
        self._throttle = LogThrottle(log)
        self._lock = threading.Lock()
        self.rejected = 0

    @classmethod
    def from_config(cls, section: MqttCommandsSection) -> CommandGate:
        """From the ``[mqtt.commands]`` section."""
        return cls(
            allow_reset=section.allow_reset,
            max_bytes=section.max_bytes,
            rate_per_minute=section.rate_per_minute,
            burst=section.burst,
        )

    def check(self, name: str, payload: bytes, retained: bool = False) -> Command:
        """The validated command; ``retained``: it was published with the retain flag.

        :raises CommandRejected: with the reason; the rejection is counted and logged.
        """
        try:
            return self._check(name, payload, retained)
        except CommandRejected as exc:
            with self._lock:
                self.rejected += 1
            self._throttle.log(logging.WARNING, "rejected", "rejected MQTT command %r: %s", name[:64], exc.reason)
            raise

    def _check(self, name: str, payload: bytes, retained: bool) -> Command:
        bucket = self._buckets[name if name in SCHEMAS else UNKNOWN]
        if not bucket.take():
            raise CommandRejected("over the rate limit (mqtt.commands.rate_per_minute)", reply=False)
        schema = SCHEMAS.get(name)
        if schema is None:
            raise CommandRejected(f"unknown command; known: {', '.join(SCHEMAS)}")
        args = self._read(payload)
        try:
            if name in DESTRUCTIVE and not self.allow_reset:
                raise CommandRejected(f"{name} is disabled on this bin (mqtt.commands.allow_reset = false)")
            if retained:
                raise CommandRejected(RETAINED_REASON)
            return Command(name, _check_args(name, schema, args))
        except CommandRejected as exc:
            # The reply carries the request's id back where it is a usable one, so a
            # client waiting for its answer gets the reason instead of a time-out.
            request_id = args.get("id")
            if (
                isinstance(request_id, (str, int))
                and not isinstance(request_id, bool)
                and len(str(request_id)) <= MAX_ID_CHARS
            ):
                exc.request_id = str(request_id)
            raise

    def _read(self, payload: bytes) -> dict[str, Any]:
        """The payload's JSON object (empty: none); its keys are not checked yet."""
        if len(payload) > self.max_bytes:
            raise CommandRejected(f"payload larger than {self.max_bytes} bytes")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandRejected("payload must be empty or a JSON object (UTF-8)") from None
        if not text.strip():
            return {}
        if nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
            raise CommandRejected(f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            args = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            raise CommandRejected("payload must be empty or a JSON object") from None
        if not isinstance(args, dict):
            raise CommandRejected("payload must be empty or a JSON object")
        return args


def _check_args(name: str, schema: dict[str, tuple[type, ...]], args: dict[str, Any]) -> dict[str, Any]:
    for key, value in args.items():
        types = schema.get(key)
        if types is None:
            allowed = ", ".join(schema) or "none"
            raise CommandRejected(f"unknown key {key[:32]!r} for {name}; allowed: {allowed}")
        if isinstance(value, bool) or not isinstance(value, types):
            kinds = " or ".join("a string" if t is str else "a whole number" for t in types)
            raise CommandRejected(f"{key} must be {kinds}")
    request_id = args.get("id")
    if request_id is not None and len(str(request_id)) > MAX_ID_CHARS:
        raise CommandRejected(f"id longer than {MAX_ID_CHARS} characters")
    return args


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def nesting_depth(text: str, limit: int) -> int:
    """How deep arrays and objects nest in JSON ``text`` (strings skipped); stops
    counting once past ``limit``, so it is cheap for any input."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest
