"""Composition report: what a bin collected, per day, class and compartment.

Built from the store's history of sorted items (kept ``history.retention_days``).
``bin-agent report --since 7d`` prints it as a table; ``--csv`` writes one row
per day, class and compartment (what a recycling audit spreadsheet wants);
``--png`` draws items per day by class and by compartment (needs matplotlib,
the ``report`` extra). Days are UTC days, as the event times are UTC. Items stamped while
the bin's clock was not synchronised (a Pi without an RTC, before NTP answered: their events
say ``"clock_synced": false``) are counted in the day their time says, and the table says how
many they are.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import BinAgentError
from ..store import HistoryItem

_SPAN = re.compile(r"^(\d+)([hdw])$")


class ReportError(BinAgentError, ValueError):
    """A bad ``--since`` or an unwritable output; the message says which."""

    exit_code = os.EX_USAGE


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` (before ``now``) or a date/time ``2026-11-01[T08:00]`` (UTC)."""
    match = _SPAN.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(hours=amount) * {"h": 1, "d": 24, "w": 168}[unit]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"--since: {text!r} is neither a span like 7d, 12h, 2w nor a date like 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def iso(when: datetime) -> str:
    """The store's time format (ISO-8601 UTC with milliseconds and Z): comparable as text."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Report:
    """Items between ``since`` and ``until``, counted per UTC day."""

    bin_id: str
    since: datetime
    until: datetime
    classes: list[str]
    compartments: list[str]
    by_day: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # day → (class, compartment) → n
    unsure_by_day: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)
    unsure: list[HistoryItem] = field(default_factory=list)
    unsynced: int = 0
    """Items whose event says ``"clock_synced": false``: their time, so their day, may be wrong."""

    @property
    def days(self) -> list[str]:
        first, last = self.since.date(), self.until.date()
        return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.by_day.values())

    def per_class(self, day: str) -> dict[str, int]:
        counts = self.by_day.get(day, Counter())
        return {label: sum(n for (c, _), n in counts.items() if c == label) for label in self.classes}

    def per_compartment(self, day: str) -> dict[str, int]:
        counts = self.by_day.get(day, Counter())
        return {name: sum(n for (_, k), n in counts.items() if k == name) for name in self.compartments}

    def unsure_count(self, day: str | None = None) -> int:
        days = [day] if day else list(self.unsure_by_day)
        return sum(sum(self.unsure_by_day.get(d, Counter()).values()) for d in days)


def build_report(
    items: list[HistoryItem], bin_id: str, since: datetime, until: datetime, classes: list[str], compartments: list[str]
) -> Report:
    report = Report(bin_id, since, until, list(classes), list(compartments))
    for item in items:
        day = item.time[:10]
        key = (item.label, item.compartment)
        report.by_day.setdefault(day, Counter())[key] += 1
        if item.label not in report.classes:
            report.classes.append(item.label)
        if item.compartment not in report.compartments:
            report.compartments.append(item.compartment)
        if isinstance(item.payload, dict) and item.payload.get("clock_synced") is False:
            report.unsynced += 1
        if item.fallback:
            report.unsure_by_day.setdefault(day, Counter())[key] += 1
            report.unsure.append(item)
    return report


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def format_table(report: Report, max_unsure: int = 20) -> str:
    """The report as text: a row per day, classes | compartments | items, unsure; then the unsure items."""
    total, unsure = report.total, report.unsure_count()
    lines = [
        f"Bin {report.bin_id}: {iso(report.since)[:16]}Z to {iso(report.until)[:16]}Z: "
        f"{total} items, {unsure} unsure ({_share(unsure, total)}) sent to the fallback compartment",
        "",
    ]
    if report.unsynced:
        lines[1:1] = [
            f"{report.unsynced} of them stamped while the bin's clock was not synchronised (no RTC, NTP not "
            "reached yet): their days may be hours to months early"
        ]
    columns = report.classes + ["|"] + report.compartments + ["|", "items", "unsure"]
    widths = [1 if c == "|" else max(len(c), 5) for c in columns]
    lines.append("day         " + " ".join(c.rjust(w) for c, w in zip(columns, widths)))

    def row(label: str, classes: dict[str, int], compartments: dict[str, int], items: int, unsure_n: int) -> str:
        values = (
            [str(classes[c]) for c in report.classes]
            + ["|"]
            + [str(compartments[c]) for c in report.compartments]
            + ["|", str(items), str(unsure_n)]
        )
        return f"{label:<12}" + " ".join(v.rjust(w) for v, w in zip(values, widths))

    sums_class: Counter[str] = Counter()
    sums_compartment: Counter[str] = Counter()
    for day in report.days:
        classes, compartments = report.per_class(day), report.per_compartment(day)
        sums_class.update(classes)
        sums_compartment.update(compartments)
        lines.append(row(day, classes, compartments, sum(classes.values()), report.unsure_count(day)))
    lines.append(
        row(
            "total",
            {c: sums_class[c] for c in report.classes},
            {c: sums_compartment[c] for c in report.compartments},
            total,
            unsure,
        )
    )
    if report.unsure:
        shown = report.unsure[-max_unsure:]
        lines += ["", f"Unsure items ({len(report.unsure)}; the last {len(shown)}):"]
        for item in shown:
            top = top3_text(item.payload)
            lines.append(f"  {item.time}  {item.label:<9} {item.confidence:.2f} -> {item.compartment:<10}  top3: {top}")
    return "\n".join(lines)


def top3_text(payload: Any) -> str:
    """``glass 0.52, plastic 0.31, ...`` from an event's ``top3``; an entry that is damaged (a
    power cut, a hand edit, an older agent) shows as ``?`` instead of stopping the report."""
    top3 = payload.get("top3") if isinstance(payload, dict) else None
    if top3 is None:
        return ""
    if not isinstance(top3, list):
        return "?"
    parts = []
    for entry in top3:
        name = entry.get("class") if isinstance(entry, dict) else None
        confidence = entry.get("confidence") if isinstance(entry, dict) else None
        if isinstance(name, str) and isinstance(confidence, int | float) and not isinstance(confidence, bool):
            parts.append(f"{name} {confidence:.2f}")
        else:
            parts.append("?")
    return ", ".join(parts)


def write_csv(report: Report, path: Path) -> int:
    """One row per day, class and compartment with items; returns the number of rows."""
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["day", "bin_id", "class", "compartment", "items", "unsure"])
        for day in report.days:
            counts = report.by_day.get(day, Counter())
            unsure = report.unsure_by_day.get(day, Counter())
            for (label, compartment), n in sorted(counts.items()):
                writer.writerow([day, report.bin_id, label, compartment, n, unsure.get((label, compartment), 0)])
                rows += 1
    return rows


PICTURE_SUFFIXES = (".png", ".svg", ".pdf")
"""What ``--png`` can write (matplotlib picks the format from the suffix)."""

MAX_BARS = 62
"""At most this many bars per panel: days up to two months, then weeks, then months."""


def check_picture_path(path: Path) -> None:
    """:raises ReportError: ``path``'s suffix is not a picture format :func:`write_png` writes."""
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        raise ReportError(f"--png {path}: not a picture file name; end it in {', '.join(PICTURE_SUFFIXES)}")


def time_bins(report: Report) -> tuple[str, list[tuple[str, list[str]]]]:
    """The report's days grouped for a readable picture: ``(unit, [(label, days), ...])``,
    unit ``day``, ``week`` (labelled by its Monday) or ``month``, whichever keeps the bars
    at :data:`MAX_BARS` or fewer."""
    days = report.days
    if len(days) <= MAX_BARS:
        return "day", [(day, [day]) for day in days]
    unit = "week" if len(days) <= 7 * MAX_BARS else "month"
    groups: dict[str, list[str]] = {}
    for day in days:
        date = datetime.fromisoformat(day).date()
        label = (date - timedelta(days=date.weekday())).isoformat() if unit == "week" else day[:7]
        groups.setdefault(label, []).append(day)
    return unit, list(groups.items())


def series_colours(report: Report) -> dict[str, str]:
    """One colour per name across both panels ("paper" the class and "paper" the compartment
    look alike), from matplotlib's tab20 cycle."""
    names = list(dict.fromkeys([*report.classes, *report.compartments]))
    palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
        "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
    ]  # fmt: skip
    return {name: palette[n % len(palette)] for n, name in enumerate(names)}


def write_png(report: Report, path: Path) -> str:
    """Items per day, week or month (:func:`time_bins`), stacked by class (top) and by
    compartment (bottom); returns the unit.

    :raises ReportError: no matplotlib, or ``path`` is not a picture file name.
    """
    check_picture_path(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError(
            "--png needs matplotlib: pip install matplotlib in bin-agent's venv "
            "(a checkout's: .venv/bin/pip install -e '.[report]')"
        ) from None
    unit, bins = time_bins(report)
    colours = series_colours(report)
    positions = list(range(len(bins)))
    fig, axes = plt.subplots(2, 1, figsize=(min(16.0, max(6.0, 0.3 * len(bins) + 3)), 7), sharex=True)
    for ax, names, per_day, title in (
        (axes[0], report.classes, report.per_class, "by class"),
        (axes[1], report.compartments, report.per_compartment, "by compartment"),
    ):
        sums = [Counter[str]() for _ in bins]
        for counter, (_, days) in zip(sums, bins):
            for day in days:
                counter.update(per_day(day))
        bottom = [0] * len(bins)
        for name in names:
            values = [counter[name] for counter in sums]
            ax.bar(positions, values, bottom=bottom, label=name, color=colours[name])
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel("items")
        ax.set_title(f"Items per {unit} {title}")
        ax.legend(loc="upper left", fontsize="small", ncol=3)
    step = max(1, len(bins) // 31)  # at most about 31 labels
    axes[1].set_xticks(positions[::step], [label for label, _ in bins][::step])
    axes[1].tick_params(axis="x", labelrotation=45)
    total, unsure = report.total, report.unsure_count()
    fig.suptitle(f"Bin {report.bin_id}: {total} items, {_share(unsure, total)} unsure")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return unit


def report_from_store(
    store: Any, bin_id: str, since: datetime, until: datetime, classes: list[str], compartments: list[str]
) -> Report:
    return build_report(store.history(iso(since), iso(until)), bin_id, since, until, classes, compartments)
