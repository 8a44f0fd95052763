"""The label store: what a person says a captured item really is.

Labels live beside the photos, in ``labels.jsonl`` of the capture folder (one
JSON object per line, the last line of an event wins), so copying the capture
folder off the bin carries the photos and their labels together. Every label
says who gave it and when (``source``, ``time``):

* ``button``: a person answered at the bin (:mod:`bin_agent.ask`);
* ``mqtt``: ``cmd/correct`` (Home Assistant's select, a script), see
  :func:`correct_event`, which also corrects the counts in ``state``;
* ``cli``: ``bin-agent label`` in a terminal (the running agent holds the state
  database: it sees the file change within :data:`~bin_agent.agent.LABELS_CHECK_SECONDS`
  and moves its counts then, :func:`reconcile_counts`).

**The counts follow the labels.** For an item counted since the last reset, the
counts in ``state`` count it as its latest label. Whether it was counted since the reset
is the store's history's to say (its rows are numbered, :meth:`Store.counted_since_reset`),
not the wall clock's, which a Pi without a battery-backed clock may set back at boot; only
for an item the history no longer holds are its time and the reset's compared. What they count it as is the
state database's (``Store.counted_as``, written in the transaction that moves the
counts), not the label history: a correction cut between its label and its counts
(a SIGKILL, a power cut) is moved by the same ``cmd/correct`` sent again, and by
:func:`reconcile_counts` at the agent's next start (and while it runs, once the file changes).

**The file stays bounded** (:meth:`LabelStore.trim`): at the agent's start, and
while it runs once the file has doubled, it is rewritten with the latest line of
each event whose photo is still in the capture folder or whose item the counts
count as another class (``counted_as``); the labels of photos the size cap
deleted go, as their photos went.

A label equal to the predicted class is a *confirmation*: the bin was right.
A label from a compartment button carries ``exact: false`` when that
compartment takes several classes (the person said where the item goes; the
class is the model's most probable one among that compartment's).

``bin-agent label --export DIR`` writes the labelled photos as one folder per
class, which ``bin-agent train`` and ``bin-agent evaluate`` read.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import BinAgentError
from ..events import utc_now_iso
from .capture import (
    SIDECAR_SUFFIX,
    CapturedItem,
    captured_items,
    named_before,
    read_captured,
    sidecars_by_event,
    write_synced,
)
from .deploy import fsync_directory

log = logging.getLogger(__name__)

LABELS_FILE = "labels.jsonl"
TRIM_TEMPORARY = f".{LABELS_FILE}.tmp"
"""What :meth:`LabelStore.trim` writes before renaming it over ``labels.jsonl``."""
TRIM_MIN_BYTES = 256 * 1024
"""While the agent runs, ``labels.jsonl`` is trimmed once it is twice what the last trim kept
and at least this big (about 1,400 labels of some 180 bytes)."""
EVENT_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


@dataclass(frozen=True)
class Trimmed:
    """What :meth:`LabelStore.trim` did: lines before and after (0 and 0 when there is no file),
    the file's size after, and whether it was rewritten."""

    lines_before: int
    lines_after: int
    bytes_after: int
    rewritten: bool


class LabelError(BinAgentError, ValueError):
    """A label cannot be set (unknown class, unknown event); the message says why."""

    exit_code = os.EX_DATAERR


class LabelStore:
    """``labels.jsonl`` in a capture folder. Appends are one ``write()`` each and
    fsynced, so the agent (MQTT) and a terminal may add labels at the same time. An append
    and a :meth:`trim` take an exclusive ``flock`` on the file: an append that waited for a
    trim goes to the file the trim put in place, never to the one it replaced."""

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
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise LabelError(f"{self.path}: cannot read the labels ({exc.strerror or exc})") from None
        return {event_id: entry for event_id, (entry, _) in _latest_lines(data).items()}

    def get(self, event_id: str) -> dict[str, Any] | None:
        return self.all().get(event_id)

    def change_stamp(self) -> tuple[int, int, int] | None:
        """The file's (inode, size, mtime in ns), None when there is none or it cannot be
        looked at: every append changes it (the size), and so does every trim (the inode). One
        ``stat``: what the running agent compares every few seconds to see labels another
        process (``bin-agent label``) appended."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

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
            fd = self._open_locked(os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # The last line was cut by a power cut: on its own line, this label is not
                    # glued to it and lost with it.
                    data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)  # and the flock with it
        return entry

    def _open_locked(self, flags: int) -> int:
        """The file, open and under an exclusive ``flock``: the one at the path once the lock is
        held (a trim that held it meanwhile renamed a new file over the path)."""
        while True:
            fd = os.open(self.path, flags | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                        return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def trim(self, keep: Collection[str] = ()) -> Trimmed:
        """Rewrite the file with the latest line of each event whose photo (and sidecar) is still
        in the folder or that is in ``keep`` (the items the counts count as another class, which
        :func:`reconcile_counts` and a resent ``cmd/correct`` still need), in their order; damaged
        lines go too. Atomic: written to :data:`TRIM_TEMPORARY`, fsynced, renamed over the file,
        the folder fsynced; a crash before the rename leaves the file whole (and the temporary,
        which the next trim overwrites or removes; no reader reads it). Not rewritten when nothing
        would go.

        :raises OSError: the folder or the file cannot be read or written.
        """
        temporary = self.folder / TRIM_TEMPORARY
        with self._lock:
            try:
                fd = self._open_locked(os.O_RDWR)
            except FileNotFoundError:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
                return Trimmed(0, 0, 0, False)
            try:
                data = _read_all(fd)
                latest = _latest_lines(data)
                lines_before = sum(1 for line in data.split(b"\n") if line.strip(b"\x00 \t\r"))
                present = set(sidecars_by_event(self.folder))
                kept = [line for event_id, (_, line) in latest.items() if event_id in present or event_id in keep]
                if len(kept) == lines_before:
                    with contextlib.suppress(FileNotFoundError):
                        temporary.unlink()
                    return Trimmed(lines_before, lines_before, len(data), False)
                # The order of the latest lines: oldest first, as appended.
                text = b"".join(line + b"\n" for line in kept)
                write_synced(temporary, text)
                os.chmod(temporary, os.fstat(fd).st_mode & 0o777)  # the file's own (0640), not the umask's
                os.replace(temporary, self.path)
                fsync_directory(self.folder)
            finally:
                os.close(fd)
        return Trimmed(lines_before, len(kept), len(text), True)


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _latest_lines(data: bytes) -> dict[str, tuple[dict[str, Any], bytes]]:
    """The latest entry of each event id in ``labels.jsonl``'s bytes, with its line (stripped),
    ordered by where that line is (oldest first).

    Read line by line, so one damaged line costs only itself: a line cut by a power cut,
    the zeros a power cut can leave where an append did not reach the card (stripped: a
    label appended after them is read), bytes that are not UTF-8, an entry without a
    string ``label``."""
    latest: dict[str, tuple[dict[str, Any], bytes]] = {}
    for raw in data.split(b"\n"):
        line = raw.strip(b"\x00 \t\r")
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a damaged line: its label is lost, the others are not
        if isinstance(entry, dict) and isinstance(entry.get("event_id"), str) and isinstance(entry.get("label"), str):
            if "source" not in entry:  # written before labels said "source" ("by": mqtt/terminal)
                by = entry.pop("by", "")
                entry["source"] = "cli" if by == "terminal" else by
            entry.setdefault("confirmed", entry["label"] == entry.get("predicted"))
            latest.pop(entry["event_id"], None)  # moved to the end: where its latest line is
            latest[entry["event_id"]] = (entry, line)
    return latest


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
    """``cmd/correct {"event_id": …, "label": …}``: record the label and, when the item was
    counted since the last reset, move it in the counts from what the store counts it as
    (its class, and its compartment if the class maps elsewhere) to ``label``;
    ``repeated``: the item already had this label (nothing written). The move does not
    depend on ``repeated``: a resend after a kill between the label and the counts moves
    them, once. Raises :class:`LabelError`."""
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
    # The same answer again (a dashboard's select chosen twice, a retry after a lost reply) is
    # no new label: not written again, and not counted towards the next learn.
    repeated = earlier is not None and earlier.get("label") == label
    entry = earlier if earlier is not None and repeated else labels.add(event_id, label, predicted, source)
    row = store.counted_as(event_id)
    counted = row is not None or store.counted_since_reset([event_id]).get(
        event_id, _counted_since_reset(item.info.get("time", ""), store.counts().since)
    )
    if row is None:
        row = counted_as_of(item.info)
    changes: dict[tuple[str, str], int] = {}
    if counted:
        was = row[0]
        if label != was:
            changes, moved = _move(row, label, compartments)
            store.adjust_counts(changes, {event_id: moved})
    else:
        was = str(earlier["label"]) if earlier else predicted
    return {
        "ok": True,
        "event_id": event_id,
        "label": label,
        "was": was,
        "confirmed": bool(entry.get("confirmed", label == predicted)),
        "counts_changed": bool(changes),
        "repeated": repeated,
    }


def counted_as_of(info: dict[str, Any]) -> tuple[str, str]:
    """What the counts count a captured item as when the store has no ``counted_as`` row for
    it: its sidecar's class and compartment (an item answered at the bin has a row)."""
    return str(info.get("class", "")), str(info.get("compartment", ""))


def _move(
    row: tuple[str, str], label: str, compartments: dict[str, str]
) -> tuple[dict[tuple[str, str], int], tuple[str, str]]:
    """The count changes that move an item counted as ``row`` (class, compartment) to
    ``label`` (which differs from its class), and what it is counted as then. The compartment
    moves too when ``label`` maps to another one (the counts then say what belongs in each
    compartment, not where the item physically fell)."""
    was, was_compartment = row
    changes: dict[tuple[str, str], int] = {("class", was): -1, ("class", label): 1}
    compartment = was_compartment
    new_compartment = compartments.get(label, "")
    if was_compartment and new_compartment and new_compartment != was_compartment:
        changes[("compartment", was_compartment)] = -1
        changes[("compartment", new_compartment)] = 1
        compartment = new_compartment
    return changes, (label, compartment)


def reconcile_counts(folder: Path, store: Any, compartments: dict[str, str], *, running: bool = False) -> int:
    """At the agent's start, before it sorts, and while it runs once ``labels.jsonl`` changed
    (``running``: only the log line differs): move in the counts every item counted since the
    last reset whose latest label is not what the store counts it as (a correction a SIGKILL
    or a power cut cut between its label and its counts, or a label from ``bin-agent label``),
    all in one transaction. Reads ``labels.jsonl`` once, and the sidecars of the labelled
    items the store has no ``counted_as`` row for. Returns how many items were moved. The
    caller keeps ``cmd/correct`` from moving the same counts meanwhile (the agent's lock).

    A database of the version before ``counted_as`` (:attr:`Store.counted_as_complete` false):
    that version moved the counts by the label history, so the labels are adopted as what the
    counts count (rows written, no count moved), once.
    """
    started = time.monotonic()
    labels = LabelStore(folder).all()
    adopt = not store.counted_as_complete
    since = store.counts().since
    rows = store.counted_as_rows()
    sidecars = sidecars_by_event(folder) if labels else {}
    # By the store's history rows where it has them: the wall clock may have gone back.
    in_history = store.counted_since_reset(
        event_id
        for event_id, entry in labels.items()
        if event_id not in rows and entry["label"] != entry.get("predicted")
    )
    changes: collections.Counter[tuple[str, str]] = collections.Counter()
    moved: dict[str, tuple[str, str]] = {}
    for event_id, entry in labels.items():
        label = entry["label"]
        if label not in compartments:  # a class the router does not know (another model's)
            continue
        row = rows.get(event_id)
        if row is None:
            if label == entry.get("predicted"):
                continue  # counted as its prediction (no row), which the label confirms: no sidecar to read
            sidecar = sidecars.get(event_id)
            counted = in_history.get(event_id)
            if sidecar is None or counted is False or (counted is None and named_before(sidecar.name, since)):
                continue
            item = read_captured(sidecar)
            if item is None or not (counted or _counted_since_reset(item.info.get("time", ""), since)):
                continue
            row = counted_as_of(item.info)
        if row[0] == label:
            continue
        if adopt:
            moved[event_id] = (label, compartments.get(label) or row[1])
            continue
        delta, moved[event_id] = _move(row, label, compartments)
        changes.update(delta)
    if moved or adopt:
        store.adjust_counts(dict(changes), moved, complete=True)
    seconds = time.monotonic() - started
    if adopt:
        log.info(
            "counts: %d label(s) of items counted since the last reset adopted as what the counts count "
            "(state database of the previous version; %.2f s)",
            len(moved),
            seconds,
        )
    elif moved and running:
        log.info(
            "counts: %d item(s) moved to their latest label in labels.jsonl, appended while the agent runs "
            "(bin-agent label; %d label(s) read in %.2f s)",
            len(moved),
            len(labels),
            seconds,
        )
    elif moved:
        log.warning(
            "counts: %d item(s) moved to their latest label in labels.jsonl (a correction cut before its counts, "
            "or labelled with bin-agent label; %d label(s) read in %.2f s)",
            len(moved),
            len(labels),
            seconds,
        )
    return 0 if adopt else len(moved)


def _counted_since_reset(event_time: str, since: str) -> bool:
    """By the wall clock, for an item the store's history does not hold
    (:meth:`Store.counted_since_reset`): wrong when the clock went back across the reset."""
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


def labels_at_start(folder: Path, store: Any, compartments: dict[str, str]) -> int:
    """The agent's start, before it sorts: :func:`reconcile_counts`, then :meth:`LabelStore.trim`
    (keeping the items of ``store.counted_as_rows()``). A folder or file that cannot be read is
    logged, not raised: the bin sorts on. Returns the size ``labels.jsonl`` has then (what the
    next trim while running is measured against)."""
    try:
        reconcile_counts(folder, store, compartments)
    except (LabelError, OSError) as exc:
        log.error("counts: cannot bring them in line with the labels in %s (%s)", folder, exc)
    return trim_labels(folder, store)


def trim_labels(folder: Path, store: Any) -> int:
    """:meth:`LabelStore.trim` of ``folder``'s labels, one log line when it dropped any; returns
    the file's size after it (0 when it cannot be trimmed: said in the log)."""
    started = time.monotonic()
    try:
        trimmed = LabelStore(folder).trim(store.counted_as_rows())
    except OSError as exc:
        log.error("labels: cannot trim %s (%s)", folder / LABELS_FILE, exc.strerror or exc)
        return 0
    if trimmed.rewritten:
        log.info(
            "labels: kept %d of %d line(s) of %s (the latest of each photo still captured, or counted as another "
            "class), %d bytes, in %.2f s",
            trimmed.lines_after,
            trimmed.lines_before,
            folder / LABELS_FILE,
            trimmed.bytes_after,
            time.monotonic() - started,
        )
    return trimmed.bytes_after
