"""``bin-agent monitor``: a live view of one bin or a fleet, from any machine on the broker.

It only reads what the bins already publish: the retained ``state`` (counts,
fill, last item, outbox backlog, and what needs a person: ``camera_error``,
``actuator_error``, a full or failing disk) and ``status`` (``online``, or
``offline`` from a clean stop or the Last Will) under ``<topic_prefix>/<bin_id>/``. So it
needs no access to the bins themselves, and a monitor started later sees every
bin at once from the retained messages.

The view redraws in place (plain ANSI: cursor home, clear, table) once a second;
``--once`` prints the table once and ``--json`` prints every bin's status and
state as one JSON object, both after all retained messages have arrived.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from ..mqtt.client import Message
from ..mqtt.discovery import PROBLEM_STATUSES

CLEAR = "\x1b[H\x1b[2J"


@dataclass
class BinView:
    """What the monitor knows about one bin."""

    bin_id: str
    status: str = "?"
    state: dict[str, Any] | None = None
    received: float | None = None
    """When its last message arrived (None: nothing heard from it yet)."""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "state": self.state}


class Fleet:
    """Bins seen under ``prefix``, updated from MQTT messages (thread-safe).

    :param bin_ids: watch only these bins; empty: every bin under the prefix.
    """

    def __init__(self, prefix: str, bin_ids: list[str] | None = None) -> None:
        self.prefix = prefix
        self.bin_ids = list(bin_ids or [])
        self.bins: dict[str, BinView] = {bin_id: BinView(bin_id) for bin_id in self.bin_ids}
        self._lock = threading.Lock()
        self.changed = threading.Event()

    @property
    def filters(self) -> list[str]:
        names = self.bin_ids or ["+"]
        return [f"{self.prefix}/{name}/{kind}" for name in names for kind in ("state", "status")]

    def handle(self, message: Message) -> None:
        rest = message.topic[len(self.prefix) + 1 :] if message.topic.startswith(self.prefix + "/") else ""
        bin_id, _, kind = rest.rpartition("/")
        if not bin_id or kind not in ("state", "status"):
            return
        with self._lock:
            view = self.bins.setdefault(bin_id, BinView(bin_id))
            view.received = time.time()
            if kind == "status":
                view.status = message.payload.decode("utf-8", "replace")[:16] or "?"
            else:
                try:
                    state = json.loads(message.payload)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    return
                view.state = state if isinstance(state, dict) else None
        self.changed.set()

    def silent(self) -> list[str]:
        """The bins asked for by name that nothing was heard from (no such bin under the
        prefix, or one that never published its retained state)."""
        with self._lock:
            return [bin_id for bin_id in self.bin_ids if self.bins[bin_id].received is None]

    def snapshot(self) -> dict[str, BinView]:
        with self._lock:
            return {k: BinView(v.bin_id, v.status, v.state, v.received) for k, v in sorted(self.bins.items())}

    def as_json(self) -> dict[str, Any]:
        bins = self.snapshot()
        return {"summary": summary(bins), "bins": {k: v.as_dict() for k, v in bins.items()}}


def problem(state: dict[str, Any] | None) -> str | None:
    """What needs a person at this bin, from its last state: its error status, a
    disk that is full or failing (``storage full``), or a deployed model that cannot run
    (``model fallback``: ``state.model_problem``), or a capture folder that cannot be used
    (``capture off``: ``state.capture_problem``); None when nothing does. The rule of
    Home Assistant's "Problem" sensor (:mod:`bin_agent.mqtt.discovery`)."""
    state = state or {}
    if state.get("status") in PROBLEM_STATUSES:
        return str(state["status"])
    storage = (state.get("storage") or {}).get("status", "ok")
    if storage != "ok":
        return f"storage {storage}"
    if state.get("model_problem"):
        return "model fallback"
    return "capture off" if state.get("capture_problem") else None


def summary(bins: dict[str, BinView]) -> dict[str, Any]:
    full = sorted(f"{b.bin_id}/{c}" for b in bins.values() for c in (b.state or {}).get("full", []))
    problems = {b.bin_id: p for b in bins.values() if (p := problem(b.state)) is not None}
    return {
        "bins": len(bins),
        "online": sum(b.status == "online" for b in bins.values()),
        "offline": sum(b.status == "offline" for b in bins.values()),
        "items": sum(((b.state or {}).get("counts") or {}).get("total", 0) for b in bins.values()),
        "outbox_pending": sum((b.state or {}).get("outbox_pending") or 0 for b in bins.values()),
        "full": full,
        "problems": dict(sorted(problems.items())),
    }


def _abbrev(name: str) -> str:
    return name[:3]


def _row(view: BinView, now: float) -> list[str]:
    state = view.state or {}
    counts = state.get("counts") or {}
    classes = counts.get("classes") or {}
    fill = state.get("fill") or {}
    full = set(state.get("full") or [])
    last = state.get("last_item") or {}
    share = state.get("fallback_share")
    trouble = problem(state)
    return [
        view.bin_id,
        view.status if trouble is None else f"{view.status}: {trouble}",
        str(counts.get("total", "-")),
        " ".join(f"{_abbrev(k)} {v}" for k, v in sorted(classes.items())) or "-",
        "-" if share is None else f"{share:.0f}%",
        " ".join(f"{_abbrev(k)} {v:.0f}{'!' if k in full else ''}" for k, v in fill.items()) or "-",
        f"{last['class']} {last.get('confidence', 0):.2f} {str(last.get('time', ''))[11:19]}" if last else "-",
        str(state.get("outbox_pending", "-")),
        "-" if view.received is None else _age(now - _published(state, view.received)),
    ]


def _published(state: dict[str, Any], received: float) -> float:
    """When the bin published its state: its own ``updated`` time, unless its clock is not
    synchronised (``clock_synced: false``: a Pi without an RTC may run months behind, which
    would read as a state months old), or it has none; then when it arrived here."""
    return received if state.get("clock_synced") is False else _epoch(state.get("updated"), received)


def _epoch(stamp: Any, default: float) -> float:
    """An ISO-8601 time as epoch seconds, else ``default``."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


HEADER = ["bin", "status", "items", "by class", "unsure", "fill % (! full)", "last item (UTC)", "outbox", "updated"]


def render_table(fleet: Fleet, now: float | None = None) -> str:
    """The fleet as a text table with a summary line."""
    now = time.time() if now is None else now
    bins = fleet.snapshot()
    rows = [HEADER] + [_row(view, now) for view in bins.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    s = summary(bins)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    lines = [
        f"{s['bins']} bins: {s['online']} online, {s['offline']} offline; {s['items']} items; "
        f"outbox {s['outbox_pending']}; full: {', '.join(s['full']) or 'none'}; "
        f"problems: {', '.join(f'{k} ({v})' for k, v in s['problems'].items()) or 'none'}   ({stamp} UTC)",
        "",
    ]
    lines += ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def live(fleet: Fleet, out: TextIO, stop: threading.Event, refresh_seconds: float = 1.0) -> int:
    """Redraw the table in place until ``stop`` is set; returns the number of redraws."""
    frames = 0
    while not stop.is_set():
        fleet.changed.clear()
        out.write(CLEAR + render_table(fleet) + "\n")
        out.flush()
        frames += 1
        # Redraw at once on news, else once per refresh_seconds (the "seen" ages move).
        fleet.changed.wait(refresh_seconds)
        if stop.wait(0.1):  # at most ~10 redraws a second with 100 busy bins
            break
    return frames
