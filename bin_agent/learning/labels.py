"""The label store: what a person says a captured item really is.

Labels live beside the photos, in ``labels.jsonl`` of the capture folder (one
JSON object per line, the last line of an event wins), so copying the capture
folder off the bin carries the photos and their labels together. Every label
says who gave it and when (``source``, ``time``):

* ``button``: a person answered at the bin (:mod:`bin_agent.ask`);
* ``mqtt``: ``cmd/correct`` (Home Assistant's select, a script), see
  :func:`correct_event`, which also corrects the counts in ``state``;
* ``cli``: ``bin-agent label`` in a terminal.

A label equal to the predicted class is a *confirmation*: the bin was right.
A label from a compartment button carries ``exact: false`` when that
compartment takes several classes (the person said where the item goes; the
class is the model's most probable one among that compartment's).

``bin-agent label --export DIR`` writes the labelled photos as one folder per
class, which ``bin-agent train`` and ``bin-agent evaluate`` read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BinAgentError
from ..events import utc_now_iso
from .capture import SIDECAR_SUFFIX, CapturedItem, captured_items, read_captured

LABELS_FILE = "labels.jsonl"
EVENT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class LabelError(BinAgentError, ValueError):
    """A label cannot be set (unknown class, unknown event); the message says why."""

    exit_code = os.EX_DATAERR


class LabelStore:
    """``labels.jsonl`` in a capture folder. Appends are one ``write()`` each and
    fsynced, so the agent (MQTT) and a terminal may add labels at the same time."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LABELS_FILE
        self._lock = threading.Lock()

    def all(self) -> dict[str, dict[str, Any]]:
        """The latest label of each event id.

        Read line by line, so one damaged line costs only itself: a line cut by a power cut,
        the zeros a power cut can leave where an append did not reach the card (stripped: a
        label appended after them is read), bytes that are not UTF-8, an entry without a
        string ``label``. The file is never rewritten here.

        :raises LabelError: the file exists but cannot be read (not a file, no permission).
        """
        labels: dict[str, dict[str, Any]] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return labels
        except OSError as exc:
            raise LabelError(f"{self.path}: cannot read the labels ({exc.strerror or exc})") from None
        for raw in data.split(b"\n"):
            try:
                entry = json.loads(raw.strip(b"\x00 \t\r").decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # a damaged line: its label is lost, the others are not
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("event_id"), str)
                and isinstance(entry.get("label"), str)
            ):
                if "source" not in entry:  # written before labels said "source" ("by": mqtt/terminal)
                    by = entry.pop("by", "")
                    entry["source"] = "cli" if by == "terminal" else by
                entry.setdefault("confirmed", entry["label"] == entry.get("predicted"))
                labels[entry["event_id"]] = entry
        return labels

    def get(self, event_id: str) -> dict[str, Any] | None:
        return self.all().get(event_id)

    def add(
        self, event_id: str, label: str, predicted: str, source: str, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Append a label of ``event_id``.

        :param source: who gave it: ``button``, ``mqtt`` or ``cli``.
        :param extra: more keys for the entry (e.g. ``exact``).
        """
        entry = {
            "event_id": event_id,
            "label": label,
            "predicted": predicted,
            "confirmed": label == predicted,
            "source": source,
            "time": utc_now_iso(),
            **(extra or {}),
        }
        data = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # The last line was cut by a power cut: on its own line, this label is not
                    # glued to it and lost with it.
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry


def find_captured(folder: str | Path, event_id: str) -> CapturedItem | None:
    """The captured item of an event id (its files end with ``_<event id>``)."""
    if not EVENT_ID.match(event_id):
        return None
    for path in Path(folder).glob(f"*_{event_id}{SIDECAR_SUFFIX}"):
        item = read_captured(path)
        if item is not None:
            return item
    return None


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)  # Python 3.11 reads the "Z"
    except (AttributeError, ValueError):
        return None


def correct_event(
    args: dict[str, Any],
    *,
    folder: Path,
    store: Any,
    compartments: dict[str, str],
    classes: Sequence[str],
    source: str = "mqtt",
) -> dict[str, Any]:
    """``cmd/correct {"event_id": …, "label": …}``: record the label and move the
    item in the counts (its class, and its compartment if the class maps
    elsewhere) when it was counted since the last reset; ``repeated``: the item already had
    this label (nothing written, nothing moved). Raises :class:`LabelError`."""
    event_id, label = args.get("event_id"), args.get("label")
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise LabelError("'event_id' must be the id of an event (a string)")
    if not isinstance(label, str) or label not in classes:
        raise LabelError(f"'label' must be one of {', '.join(classes)}")
    item = find_captured(folder, event_id)
    if item is None:
        raise LabelError(f"event {event_id} was not captured (see [capture]) or its photo was deleted")
    labels = LabelStore(folder)
    earlier = labels.get(event_id)
    predicted = str(item.info["class"])
    was = str(earlier["label"]) if earlier else predicted
    was_compartment = compartments.get(was, "") if earlier else str(item.info.get("compartment", ""))
    # The same answer again (a dashboard's select chosen twice, a retry after a lost reply) is
    # no new label: not written again, and not counted towards the next learn.
    repeated = earlier is not None and earlier.get("label") == label
    entry = earlier if earlier is not None and repeated else labels.add(event_id, label, predicted, source)
    counted = _counted_since_reset(item.info.get("time", ""), store.counts().since)
    changes: dict[tuple[str, str], int] = {}
    if counted and label != was:
        changes[("class", was)] = -1
        changes[("class", label)] = 1
        new_compartment = compartments.get(label, "")
        if was_compartment and new_compartment and new_compartment != was_compartment:
            changes[("compartment", was_compartment)] = -1
            changes[("compartment", new_compartment)] = 1
        store.adjust_counts(changes)
    return {
        "ok": True,
        "event_id": event_id,
        "label": label,
        "was": was,
        "confirmed": bool(entry.get("confirmed", label == predicted)),
        "counts_changed": bool(changes),
        "repeated": repeated,
    }


def _counted_since_reset(event_time: str, since: str) -> bool:
    event, reset = _parse_time(event_time), _parse_time(since)
    return event is not None and (reset is None or event >= reset)


# --------------------------------------------------------------------------- terminal and export


def review_order(
    items: Sequence[CapturedItem], labels: dict[str, dict[str, Any]], include_labelled: bool = False
) -> list[CapturedItem]:
    """Items to review, most unsure first (lowest confidence)."""
    todo = [i for i in items if include_labelled or i.event_id not in labels]
    return sorted(todo, key=lambda i: float(i.info.get("confidence", 0.0)))


def describe_item(item: CapturedItem) -> str:
    info = item.info
    top3 = info.get("top3")
    top = ", ".join(
        f"{t.get('class')} {t['confidence']:.2f}"
        for t in (top3 if isinstance(top3, list) else [])
        if isinstance(t, dict) and isinstance(t.get("confidence"), (int, float))
    )
    return (
        f"{item.image}\n  predicted: {info['class']} {float(info.get('confidence', 0)):.2f}   "
        f"top-3: {top}\n  {info.get('time', '')}  model {info.get('model_version', '?')}  "
        f"-> {info.get('compartment', '?')}{' (fallback)' if info.get('fallback') else ''}"
    )


def export(folder: Path, out: Path, classes: Sequence[str]) -> dict[str, int]:
    """Copy every labelled captured photo to ``out/<label>/``; count per class."""
    labels = LabelStore(folder).all()
    counts: dict[str, int] = {}
    for item in captured_items(folder):
        entry = labels.get(item.event_id)
        if entry is None or entry.get("label") not in classes:
            continue
        for name in classes:  # relabelled since an earlier export: not in two classes
            (out / name / item.image.name).unlink(missing_ok=True)
        target = out / entry["label"] / item.image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.image, target)
        counts[entry["label"]] = counts.get(entry["label"], 0) + 1
    return counts
