"""What the bin reports about each sorted item."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .classify.classifier import Classification
from .geometry import NormBox
from .router import Route


def utc_now_iso() -> str:
    """ISO-8601 UTC time with milliseconds, e.g. ``2026-11-23T10:04:05.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SortedItem:
    """One item seen, classified and routed: the payload of ``event``, recorded
    before the mechanics move (``time`` is the moment of the decision).

    ``id`` is unique per item: an event published again after a crash (its
    PUBACK came, the delete of it had not been committed yet) is a duplicate
    that a consumer drops by its ``id``.

    :param latency_ms: milliseconds per stage (``trigger``, ``preprocess``,
        ``inference``, ``route``) and ``total`` (the trigger to the decision); ``ask``,
        the wait for a person's answer, when the item was asked about.
    :param box: the region of the frame that was classified, as fractions
        ``(x0, y0, x1, y1)`` of the frame (``geometry.NormBox``).
    :param asked: why a person was asked about the item (``unsure``, ``confirm``;
        empty: not asked, see :mod:`bin_agent.ask`).
    :param answer: the person's answer (``label``, ``compartment``, ``source``,
        ``exact``), None when not asked or not answered.
    :param reason: why the item went where ``route`` says rather than where it was routed
        alone: ``"shared_tray"``, it lay on the tray with items routed to other
        compartments and one tilt took them all to the fallback compartment (``route`` is
        then the fallback). Empty: as routed alone; only a non-empty one is in the payload.
    :param clock_synced: whether ``time`` was read from a clock synchronised by NTP
        (:mod:`bin_agent.clock`); only False shows in the payload (``"clock_synced": false``:
        the time may be hours to months behind), so a synchronised bin's events stay as they were.
    """

    bin_id: str
    classification: Classification
    route: Route
    model_version: str
    latency_ms: dict[str, float]
    source: str = ""
    box: NormBox | None = None
    asked: str = ""
    answer: dict[str, Any] | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=utc_now_iso)
    clock_synced: bool | None = None
    reason: str = ""

    def payload(self) -> dict[str, Any]:
        c = self.classification
        return {
            "id": self.event_id,
            "time": self.time,
            "bin_id": self.bin_id,
            "class": c.label,
            "confidence": round(c.confidence, 4),
            "top3": [{"class": label, "confidence": round(p, 4)} for label, p in c.top[:3]],
            "compartment": self.route.compartment,
            "fallback": self.route.fallback,
            "latency_ms": {k: round(v, 2) for k, v in self.latency_ms.items()},
            "model_version": self.model_version,
            "source": self.source,
            "box": None if self.box is None else [round(v, 4) for v in self.box],
            "needs_label": self.needs_label,
            **({"asked": self.asked, "answer": self.answer} if self.asked else {}),
            **({"reason": self.reason} if self.reason else {}),
            **({"clock_synced": False} if self.clock_synced is False else {}),
        }

    @property
    def needs_label(self) -> bool:
        """Asked about and not answered: a person should still label it (``cmd/correct``)."""
        return bool(self.asked) and self.answer is None

    def line(self, number: int) -> str:
        """The one line the demo prints per item."""
        c = self.classification
        top = ", ".join(f"{label} {p:.2f}" for label, p in c.top[:3])
        fallback = (
            f" (fallback: {'shared the tray' if self.reason == 'shared_tray' else 'unsure'})"
            if self.route.fallback
            else ""
        )
        if self.answer is not None:
            fallback = f" (answered by {self.answer['source']}: {self.answer['label'] or self.answer['compartment']})"
        elif self.asked:
            fallback += " (asked, no answer)"
        source = f"  [{self.source}]" if self.source else ""
        return (
            f"#{number:<4} {self.time}  {c.label:<9} {c.confidence:5.2f} -> "
            f"{self.route.compartment:<10}{fallback}  top3: {top}  "
            f"{self.latency_ms.get('preprocess', 0) + self.latency_ms.get('inference', 0):.0f} ms{source}"
        )
