"""Durable state: the event outbox and the counts, in one SQLite database.

Every sorted item is written here before anyone tries to publish it: the event
goes into the ``outbox`` table and the counts are incremented in the same
transaction, so after a crash (even SIGKILL or a power cut) the counts always
agree with the events and no committed event is lost. The MQTT side deletes an
event from the outbox only when the broker has acknowledged it (PUBACK).

The database runs in WAL mode with ``synchronous=FULL``: a committed
transaction survives a power cut, which is what an SD card in a bin needs.

What happens when storage fails (docs/failures.md lists it too):

* **Another agent holds the database**: an exclusive ``flock`` on
  ``<db>.lock``, taken before anything else and held until :meth:`Store.close`
  (the kernel drops it when the process dies, even by SIGKILL) — the second
  agent gets :class:`StoreLockedError`.
* **Corrupt database** (``PRAGMA quick_check`` fails at start, or the file is
  not a database at all): the file and its ``-wal``/``-shm`` are moved aside
  as ``<db>.corrupt-<UTC time>`` and a fresh database is started.
* **Database deleted, truncated, replaced or rolled back while stopped**: the
  marker ``<db>.marker`` (the database's id and highest event number, written
  atomically after each commit) no longer matches; the remains are moved aside
  as ``<db>.missing-<UTC time>`` / ``<db>.truncated-<UTC time>`` and the
  incident is logged and kept in :meth:`Store.health`.
* **Disk full (or any write error)**: nothing is lost from the running agent:
  the item stays in memory (up to ``max_memory_events`` events; its counts
  always), is offered to the MQTT pump from there, and is written to the
  database, together with everything else held back, as soon as a write
  succeeds again. The first failure is logged as an error, then a reminder
  every :data:`REMINDER_SECONDS`.
* **Outbox bound**: beyond ``max_outbox_events`` events (or, if set, events
  older than ``max_outbox_age_days``) the oldest are dropped, in the same
  transaction as the new event, and counted (``outbox_dropped``).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BinAgentError

if TYPE_CHECKING:
    from .config import StoreSection

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

REMINDER_SECONDS = 600.0
"""While storage stays unwritable, how often the log says so again."""

RETRY_SECONDS = 5.0
"""While storage is unwritable, how often :meth:`Store.retry_if_due` tries again."""

_AGE_DROP_BATCH = 500
"""Most events one transaction drops for age (keeps each commit short)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic    TEXT NOT NULL,
    payload  TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Every sorted item (for reports), kept for history.retention_days.
CREATE TABLE IF NOT EXISTS items (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    time        TEXT NOT NULL,
    created     REAL NOT NULL,
    class       TEXT NOT NULL,
    confidence  REAL NOT NULL,
    compartment TEXT NOT NULL,
    fallback    INTEGER NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_created ON items(created);
CREATE INDEX IF NOT EXISTS items_time ON items(time);
-- Items per class in each compartment since it was last emptied (fill estimate).
CREATE TABLE IF NOT EXISTS fill_counts (
    compartment TEXT NOT NULL,
    class       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (compartment, class)
);
CREATE TABLE IF NOT EXISTS emptied (
    compartment TEXT PRIMARY KEY,
    time        TEXT NOT NULL
);
"""

# SQLite result codes (primary code = extended code & 0xff) that mean the file
# is damaged, not that the disk refused a write.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class StoreError(BinAgentError, RuntimeError):
    """The state database cannot be opened."""

    exit_code = os.EX_IOERR


class StoreLockedError(StoreError):
    """Another process (a second agent) holds the database."""


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    event_id: str
    topic: str
    payload: str


@dataclass(frozen=True)
class Counts:
    """Items sorted since the last reset, by class and by compartment."""

    by_class: dict[str, int]
    by_compartment: dict[str, int]
    total: int
    fallback: int
    since: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "classes": self.by_class,
            "compartments": self.by_compartment,
            "total": self.total,
            "fallback": self.fallback,
            "since": self.since,
        }


@dataclass(frozen=True)
class HistoryItem:
    """One sorted item from the history table."""

    time: str
    created: float
    label: str
    confidence: float
    compartment: str
    fallback: bool
    payload: dict[str, Any]


@dataclass
class _HeldEvent:
    seq: int
    event_id: str
    topic: str
    payload: str
    created: float


@dataclass
class _Unsaved:
    """Changes the database has not taken yet (storage full or failing)."""

    events: collections.OrderedDict[int, _HeldEvent] = field(default_factory=collections.OrderedDict)
    count_deltas: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    reset_since: str | None = None
    last_item: str | None = None
    dropped: int = 0
    acknowledged: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.events or self.count_deltas or self.reset_since or self.last_item or self.dropped or self.acknowledged
        )


class Store:
    """The agent's SQLite database (thread-safe; one connection behind a lock).

    :param path: database file; its directory is created if missing.
    :param max_outbox_events: the outbox keeps at most this many events; the
        oldest are dropped (and counted) beyond it.
    :param max_outbox_age_days: events older than this are dropped; 0: no age limit.
    :param max_memory_events: while the database cannot be written, at most
        this many events wait in memory (the oldest are dropped beyond it).
    :raises StoreLockedError: another process holds the database.
    :raises StoreError: the database cannot be opened for another reason than
        a full disk (a full disk starts the store in memory).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_outbox_events: int = 50_000,
        max_outbox_age_days: float = 0.0,
        max_memory_events: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_outbox_events = max_outbox_events
        self.max_outbox_age_days = max_outbox_age_days
        self.max_memory_events = max_memory_events
        self._clock = clock
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._unsaved = _Unsaved()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._counts_since = _now_iso()
        self._last_item: str | None = None
        self._db_pending = 0  # outbox rows in the database
        self._last_seq = 0  # highest event number handed out (database or memory)
        self._dropped_saved = 0  # outbox_dropped as stored in the database
        self._database_id = ""
        self._failing_since: float | None = None
        self._failure = ""
        self._failure_kind = ""
        self._last_reminder: float | None = None  # monotonic time of the last storage error line
        self._episode_logged = False
        self._last_retry = float("-inf")
        self._marker_warned = False
        self.incident: dict[str, str] | None = None  # what this start's checks found
        self._saved_incident: dict[str, str] | None = None  # the last one, from the database
        self.reopened = 0  # bumped when a database kept closed by a full disk opens later
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the state directory ({exc})") from None
        self._lock_file = _lock_exclusively(self.lock_path)
        try:
            self._open()
        except BaseException:
            self._lock_file.close()
            raise

    @classmethod
    def from_config(cls, section: StoreSection, path: str | Path) -> Store:
        """The store of the ``[store]`` config section, its database at ``path``."""
        return cls(
            path,
            max_outbox_events=section.max_outbox_events,
            max_outbox_age_days=section.max_outbox_age_days,
            max_memory_events=section.max_memory_events,
        )

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def marker_path(self) -> Path:
        return self.path.with_name(self.path.name + ".marker")

    # ------------------------------------------------------------------ start-up checks

    def _open(self) -> None:
        """Check the marker and the file, move a damaged database aside, open, load."""
        marker = self._read_marker()
        if marker is not None:
            problem = self._missing_or_truncated()
            if problem is not None:
                kind, detail = problem
                self._set_aside(
                    kind,
                    f"{detail}; the agent last wrote event #{marker.get('last_seq', '?')} "
                    f"to database {marker.get('database_id', '?')}",
                )
        try:
            db = self._connect_checked()
        except _Corrupt as exc:
            self._set_aside("corrupt", f"the database is corrupt ({exc})")
            try:
                db = self._connect_checked()
            except _Corrupt as again:  # pragma: no cover - a fresh file cannot be corrupt
                raise StoreError(f"{self.path}: cannot start a fresh database ({again})") from None
        except sqlite3.Error as exc:
            if not _is_storage_failure(exc):
                raise StoreError(f"{self.path}: cannot open the state database ({exc})") from None
            # A full disk cannot even create the -shm file: sort on, in memory.
            self._start_in_memory(exc, marker)
            return
        self._db = db
        try:
            self._load()
        except sqlite3.Error as exc:
            self._db = None
            db.close()
            if not _is_storage_failure(exc):
                raise StoreError(f"{self.path}: cannot read the state database ({exc})") from None
            self._start_in_memory(exc, marker)
            return
        if marker is not None and self.incident is None:
            self._compare_with_marker(marker)
        if self.incident is not None:
            self._save_incident()
        self._write_marker(sync_directory=True)

    def _start_in_memory(self, exc: BaseException, marker: dict[str, Any] | None) -> None:
        # The database's highest event number is unknown: number the held
        # events far above it (the marker's, plus 2**32) so that writing them
        # later can never collide with a row already there.
        known = marker.get("last_seq") if marker else None
        self._last_seq = (known if isinstance(known, int) else 0) + (1 << 32)
        self._storage_failed(exc)

    def _missing_or_truncated(self) -> tuple[str, str] | None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return "missing", "the database was deleted while the agent was stopped"
        except OSError:
            return None
        if size < 100:  # shorter than SQLite's header: truncated
            return "truncated", f"the database was truncated to {size} bytes while the agent was stopped"
        return None

    def _connect_checked(self) -> sqlite3.Connection:
        """Open the file, check it (``quick_check``), set WAL and the schema."""
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            try:
                rows = db.execute("PRAGMA quick_check").fetchall()
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise _Corrupt(str(exc)) from None
                raise
            problems = [str(row[0]) for row in rows if row[0] != "ok"]
            if problems:
                raise _Corrupt("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('counts_since', ?)", (_now_iso(),))
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('database_id', ?)", (uuid.uuid4().hex,))
        except BaseException:
            db.close()
            raise
        return db

    def _load(self) -> None:
        """Read what the in-memory view needs: counts, ids, outbox size."""
        assert self._db is not None
        db = self._db
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for kind, key, n in db.execute("SELECT kind, key, n FROM counts"):
            counts[(kind, key)] = n
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._db_pending = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._last_seq = max(self._last_seq, self._db_sequence())
        self._database_id = meta.get("database_id", "")
        self._dropped_saved = int(meta.get("outbox_dropped", "0"))
        # Held-back changes (a retry after a full disk) stay on top of the database's.
        unsaved = self._unsaved
        if unsaved.reset_since is not None:
            counts = collections.Counter()
            self._counts_since = unsaved.reset_since
        else:
            self._counts_since = meta.get("counts_since", _now_iso())
        counts.update(unsaved.count_deltas)
        self._counts = counts
        self._last_item = unsaved.last_item or meta.get("last_item")
        with contextlib.suppress(ValueError):
            self._saved_incident = json.loads(meta.get("last_incident", "null"))

    def _db_sequence(self) -> int:
        assert self._db is not None
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return int(row[0]) if row else 0

    def _compare_with_marker(self, marker: dict[str, Any]) -> None:
        expected_id = marker.get("database_id")
        last_seq = marker.get("last_seq")
        if expected_id and expected_id != self._database_id:
            self._report_incident(
                "replaced",
                f"{self.path} is not the database this agent last wrote (id {self._database_id or 'none'}, "
                f"expected {expected_id}); using it",
            )
        elif isinstance(last_seq, int) and self._db_sequence() < last_seq:
            lost = last_seq - self._db_sequence()
            self._report_incident(
                "rolled_back",
                f"{self.path} lost its last {lost} event(s) while the agent was stopped (it ends at "
                f"#{self._db_sequence()}, the agent had written #{last_seq}: its -wal file deleted or an "
                "older copy restored?)",
            )

    def _set_aside(self, kind: str, detail: str) -> None:
        """Move the database, its -wal and -shm (and the marker) aside; log and remember it."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.{kind}-{stamp}")
        moved = []
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                target = Path(f"{aside}{suffix}")
                try:
                    source.rename(target)
                except OSError as exc:
                    raise StoreError(f"{source}: cannot move the damaged database aside ({exc})") from None
                moved.append(target.name)
        if self.marker_path.exists():
            with contextlib.suppress(OSError):
                self.marker_path.rename(Path(f"{aside}.marker"))
        _fsync_directory(self.path.parent)
        where = f"moved aside as {', '.join(moved)}" if moved else "nothing left to move aside"
        self._report_incident(kind, f"{self.path}: {detail}; {where}; starting a fresh database")

    def _report_incident(self, kind: str, detail: str) -> None:
        log.error("state database: %s", detail)
        self.incident = {"kind": kind, "detail": detail, "time": _now_iso()}

    def _save_incident(self) -> None:
        text = json.dumps(self.incident, sort_keys=True)
        with contextlib.suppress(sqlite3.Error), self._lock:
            assert self._db is not None
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_incident', ?)", (text,))

    # ------------------------------------------------------------------ the marker

    def _read_marker(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.marker_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable (%s); the database is not checked against it", self.marker_path, exc)
            return None
        return data if isinstance(data, dict) else None

    def _write_marker(self, *, sync_directory: bool = False) -> None:
        """Atomically record the database's id and highest event number (after a commit).

        The file is fsynced before the rename; the directory only when asked
        (start, close): after a power cut without it the previous marker may
        come back, which is harmless — an older marker only asks for less.
        """
        if self._db is None:
            return
        data = {"database_id": self._database_id, "last_seq": self._db_sequence(), "updated": _now_iso()}
        temporary = self.marker_path.with_name(self.marker_path.name + ".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(json.dumps(data, sort_keys=True))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.marker_path)
            if sync_directory:
                _fsync_directory(self.path.parent)
        except OSError as exc:
            # Not fatal: a stale marker only weakens the next start's check.
            level = logging.DEBUG if self._marker_warned else logging.WARNING
            self._marker_warned = True
            log.log(level, "%s: cannot write the marker (%s)", self.marker_path, exc)
            with contextlib.suppress(OSError):
                temporary.unlink()

    # ------------------------------------------------------------------ writing

    def record_event(
        self,
        *,
        event_id: str,
        topic: str,
        payload: dict[str, Any],
        label: str,
        compartment: str,
        fallback: bool,
        finalize: Callable[[float], dict[str, Any]] | None = None,
    ) -> None:
        """Queue an event and count it, atomically (one transaction).

        Never fails for a full disk or a failing database: the event and its
        counts are then held in memory and written with the next commit that
        succeeds. A duplicate ``event_id`` raises :class:`sqlite3.IntegrityError`.

        :param finalize: called with the seconds the durable write took, once
            it is committed (or held); returns the payload that replaces
            ``payload`` (an event that reports its own recording time). The
            replacement is made before the lock is released, so no reader ever
            sees the first payload, unless the process dies between the two
            commits: then the committed first payload is what gets published.
        """
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        deltas = collections.Counter({("class", label): 1, ("compartment", compartment): 1, ("total", ""): 1})
        if fallback:
            deltas[("fallback", "")] += 1
        with self._lock:
            started = time.perf_counter()
            self._last_seq += 1
            event = _HeldEvent(self._last_seq, event_id, topic, text, self._clock())
            if self._db is not None and not self._unsaved:
                try:
                    with self._transaction():
                        self._insert(event)
                        self._insert_deltas(deltas)
                        self._db_execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_item', ?)", (text,))
                        self._record_history(event_id, payload, text, label, compartment, fallback)
                        dropped = self._apply_bounds(self._db_pending + 1)
                except sqlite3.IntegrityError:
                    self._last_seq -= 1
                    raise
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                else:
                    self._db_pending += 1 - dropped
                    self._count_dropped(dropped)
                    self._counts.update(deltas)
                    self._last_item = text
                    self._write_marker()
                    self._finalize(event, finalize, started)
                    return
            # The database cannot take it now: hold it, then try everything held in one go.
            # (History and fill counts are not held: they miss the items of a full disk.)
            self._hold(event, deltas, text)
            self._flush()
            self._finalize(event, finalize, started)

    def _finalize(self, event: _HeldEvent, finalize: Callable[[float], dict[str, Any]] | None, started: float) -> None:
        """Replace the payload of a just-recorded event by ``finalize``'s (under the lock)."""
        if finalize is None:
            return
        final = json.dumps(finalize(time.perf_counter() - started), separators=(",", ":"), sort_keys=True)
        self._last_item = final
        held = self._unsaved.events.get(event.seq)
        if held is not None:
            held.payload = final
            self._unsaved.last_item = final
            return
        if self._db is None:
            return
        try:
            with self._transaction():
                self._db_execute("UPDATE outbox SET payload = ? WHERE seq = ?", (final, event.seq))
                self._db_execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_item', ?)", (final,))
        except sqlite3.Error as exc:  # the first payload (without its record time) stays
            log.debug("cannot complete event %s (%s)", event.event_id, exc)

    def adjust_counts(self, changes: dict[tuple[str, str], int]) -> None:
        """Add ``delta`` to each ``(kind, key)`` count in one transaction, never below 0
        (a corrected item moves from one class/compartment to another). Held in
        memory, like an item's counts, while the database takes no writes."""
        with self._lock:
            deltas: collections.Counter[tuple[str, str]] = collections.Counter()
            for count_key, delta in changes.items():
                current = self._counts.get(count_key, 0)
                deltas[count_key] = max(current + delta, 0) - current
            if self._db is not None and not self._unsaved:
                try:
                    with self._transaction():
                        self._insert_deltas(deltas)
                        self._db_execute("DELETE FROM counts WHERE n <= 0")
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                    self._unsaved.count_deltas.update(deltas)
            else:
                self._unsaved.count_deltas.update(deltas)
                self._flush()
            self._counts.update(deltas)
            for count_key in [k for k, n in self._counts.items() if n <= 0]:
                del self._counts[count_key]

    def acknowledge(self, seq: int) -> None:
        """The broker has the event: drop it from the outbox."""
        with self._lock:
            if self._unsaved.events.pop(seq, None) is not None:
                return
            if self._db is not None and not self._unsaved:
                try:
                    deleted = self._db_execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                else:
                    self._db_pending -= deleted
                    return
            self._unsaved.acknowledged.add(seq)

    def reset_counts(self) -> None:
        """Zero the counts (the bin was emptied). Pending events are kept."""
        with self._lock:
            since = _now_iso()
            self._counts = collections.Counter()
            self._counts_since = since
            self._unsaved.count_deltas.clear()
            self._unsaved.reset_since = since
            self._flush()

    def retry_if_due(self) -> bool:
        """While storage is failing, try to write what is held (at most every
        :data:`RETRY_SECONDS`). Returns whether storage works now."""
        with self._lock:
            if not self.degraded:
                return True
            now = time.monotonic()
            if now - self._last_retry < RETRY_SECONDS:
                return False
            self._last_retry = now
            self._flush()
            return not self.degraded

    # ------------------------------------------------------------------ reading

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Unacknowledged events after ``after_seq``, oldest first (held ones last:
        they are always the newest)."""
        with self._lock:
            entries: list[OutboxEntry] = []
            if self._db is not None:
                skip = self._unsaved.acknowledged
                try:
                    rows = self._db_execute(
                        "SELECT seq, event_id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                        (after_seq, limit + len(skip)),
                    ).fetchall()
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                    rows = []
                entries = [OutboxEntry(*row) for row in rows if row[0] not in skip][:limit]
            for held in self._unsaved.events.values():
                if len(entries) >= limit:
                    break
                if held.seq > after_seq:
                    entries.append(OutboxEntry(held.seq, held.event_id, held.topic, held.payload))
            return entries

    def pending_count(self) -> int:
        with self._lock:
            in_database = max(0, self._db_pending - len(self._unsaved.acknowledged))
            return in_database + len(self._unsaved.events)

    def counts(self) -> Counts:
        with self._lock:
            by_kind: dict[str, dict[str, int]] = {"class": {}, "compartment": {}, "total": {}, "fallback": {}}
            for (kind, key), n in self._counts.items():
                by_kind.setdefault(kind, {})[key] = n
            since = self._counts_since
        return Counts(
            by_class=dict(sorted(by_kind["class"].items())),
            by_compartment=dict(sorted(by_kind["compartment"].items())),
            total=by_kind["total"].get("", 0),
            fallback=by_kind["fallback"].get("", 0),
            since=since,
        )

    def last_item(self) -> dict[str, Any] | None:
        with self._lock:
            text = self._last_item
        return json.loads(text) if text else None

    @property
    def degraded(self) -> bool:
        """Whether the database is not taking writes right now."""
        return self._failing_since is not None

    @property
    def outbox_dropped(self) -> int:
        """Events dropped by the outbox bounds, ever (saved plus held)."""
        with self._lock:
            return self._dropped_saved + self._unsaved.dropped

    def health(self) -> dict[str, Any]:
        """The storage part of the ``state`` payload."""
        with self._lock:
            return {
                "status": "ok" if self._failing_since is None else self._failure_kind,
                "since": None if self._failing_since is None else _iso(self._failing_since),
                "error": self._failure or None,
                "held_in_memory": len(self._unsaved.events),
                "incident": self.incident or self._saved_incident,
            }

    def integrity_check(self) -> str:
        with self._lock:
            if self._db is None:
                return "not open"
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Write what is held if possible, close the database, release the lock."""
        with self._lock:
            if self._unsaved:
                self._flush()
                if self._unsaved:
                    log.error(
                        "storage still failing at shutdown: %d held event(s) and the counts of %d item(s) are lost",
                        len(self._unsaved.events),
                        self._unsaved.count_deltas[("total", "")],
                    )
            if self._db is not None:
                self._write_marker(sync_directory=True)
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            self._lock_file.close()

    # ------------------------------------------------------------------ history and fill

    def _record_history(
        self, event_id: str, payload: dict[str, Any], text: str, label: str, compartment: str, fallback: bool
    ) -> None:
        # Inside record_event's transaction: history and fill agree with the counts.
        self._db_execute(
            "INSERT INTO items(event_id, time, created, class, confidence, compartment, fallback, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                str(payload.get("time") or _now_iso()),
                time.time(),
                label,
                float(payload.get("confidence") or 0.0),
                compartment,
                int(fallback),
                text,
            ),
        )
        self._db_execute(
            "INSERT INTO fill_counts(compartment, class, n) VALUES (?, ?, 1) "
            "ON CONFLICT(compartment, class) DO UPDATE SET n = n + 1",
            (compartment, label),
        )

    def history(self, since: str, until: str | None = None) -> list[HistoryItem]:
        """Sorted items whose event time (ISO-8601 UTC, as in the events) is at or after ``since``
        and before ``until``, oldest first."""
        with self._lock:
            if self._db is None:
                return []
            return _history(self._db, since, until)

    def prune_history(self, older_than: float) -> int:
        """Drop history items recorded before ``older_than`` (epoch seconds); returns how many."""
        with self._lock:
            if self._db is None:
                return 0
            try:
                with self._transaction():
                    cursor = self._db.execute("DELETE FROM items WHERE created < ?", (older_than,))
            except sqlite3.Error as exc:  # a full disk: pruned another time
                log.debug("cannot prune the history (%s)", exc)
                return 0
        return cursor.rowcount

    def fill_counts(self) -> dict[str, dict[str, int]]:
        """Compartment → class → items since the compartment was last emptied."""
        with self._lock:
            if self._db is None:
                return {}
            rows = self._db.execute("SELECT compartment, class, n FROM fill_counts").fetchall()
        result: dict[str, dict[str, int]] = {}
        for compartment, label, n in rows:
            result.setdefault(compartment, {})[label] = n
        return result

    def mark_emptied(self, compartment: str) -> str:
        """The compartment was emptied: its fill count starts again. Returns the time."""
        now = _now_iso()
        with self._lock:
            if self._db is None:
                raise StoreError("the database is not open (storage full or failing)")
            try:
                with self._transaction():
                    self._db.execute("DELETE FROM fill_counts WHERE compartment = ?", (compartment,))
                    self._db.execute(
                        "INSERT OR REPLACE INTO emptied(compartment, time) VALUES (?, ?)", (compartment, now)
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot record the emptying ({exc})") from None
        return now

    def emptied_times(self) -> dict[str, str]:
        """Compartment → when it was last emptied (ISO-8601 UTC)."""
        with self._lock:
            if self._db is None:
                return {}
            return dict(self._db.execute("SELECT compartment, time FROM emptied").fetchall())

    # ------------------------------------------------------------------ helpers

    def _db_execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        assert self._db is not None
        return self._db.execute(sql, params)

    def _insert(self, event: _HeldEvent) -> None:
        self._db_execute(
            "INSERT INTO outbox(seq, event_id, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
            (event.seq, event.event_id, event.topic, event.payload, event.created),
        )

    def _apply_bounds(self, rows: int) -> int:
        """Drop the oldest events beyond the bounds, inside the caller's
        transaction, with ``rows`` events in the outbox; count them in
        ``outbox_dropped``. Returns how many were dropped."""
        dropped = 0
        if self.max_outbox_age_days > 0:
            cutoff = self._clock() - self.max_outbox_age_days * 86400.0
            dropped += self._db_execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?) AND created < ?",
                (_AGE_DROP_BATCH, cutoff),
            ).rowcount
        excess = rows - dropped - self.max_outbox_events
        if excess > 0:
            dropped += self._db_execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
            ).rowcount
        if dropped:
            self._db_execute(
                "INSERT INTO meta(key, value) VALUES ('outbox_dropped', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                (str(dropped),),
            )
        return dropped

    def _count_dropped(self, dropped: int) -> None:
        """After the commit that dropped them."""
        if dropped:
            self._dropped_saved += dropped
            log.warning(
                "outbox bound reached: dropped the %d oldest undelivered event(s) (%d in all)",
                dropped,
                self._dropped_saved + self._unsaved.dropped,
            )

    def _hold(self, event: _HeldEvent, deltas: collections.Counter[tuple[str, str]], text: str) -> None:
        unsaved = self._unsaved
        unsaved.events[event.seq] = event
        unsaved.count_deltas.update(deltas)
        unsaved.last_item = text
        self._counts.update(deltas)
        self._last_item = text
        while len(unsaved.events) > self.max_memory_events:
            unsaved.events.popitem(last=False)
            unsaved.dropped += 1

    def _flush(self) -> None:
        """Write everything held back in one transaction; on success storage is healthy again."""
        if self._db is None:
            self._reopen()
            if self._db is None:
                return
        unsaved = self._unsaved
        if self.degraded:
            # Copying the WAL into the database and truncating it can free
            # enough room by itself (on a small disk the WAL is most of it).
            with contextlib.suppress(sqlite3.Error):
                self._db_execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not unsaved:
            self._storage_recovered()
            return
        try:
            with self._transaction():
                if unsaved.reset_since is not None:
                    self._db_execute("DELETE FROM counts")
                    self._db_execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('counts_since', ?)", (unsaved.reset_since,)
                    )
                deleted = 0
                for seq in unsaved.acknowledged:
                    deleted += self._db_execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
                for event in unsaved.events.values():
                    self._insert(event)
                self._insert_deltas(unsaved.count_deltas)
                if unsaved.last_item is not None:
                    self._db_execute(
                        "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_item', ?)", (unsaved.last_item,)
                    )
                if unsaved.dropped:
                    self._db_execute(
                        "INSERT INTO meta(key, value) VALUES ('outbox_dropped', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
                        (str(unsaved.dropped),),
                    )
                rows = self._db_pending - deleted + len(unsaved.events)
                dropped = self._apply_bounds(rows)
        except sqlite3.Error as exc:
            self._storage_failed(exc)
            return
        saved = len(unsaved.events)
        self._db_pending = rows - dropped
        self._dropped_saved += unsaved.dropped
        self._unsaved = _Unsaved()
        self._count_dropped(dropped)
        self._write_marker()
        self._storage_recovered(saved)

    def _insert_deltas(self, deltas: collections.Counter[tuple[str, str]]) -> None:
        for (kind, key), n in deltas.items():
            self._db_execute(
                "INSERT INTO counts(kind, key, n) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, key) DO UPDATE SET n = n + excluded.n",
                (kind, key, n),
            )

    def _reopen(self) -> None:
        """Open the database that a full disk kept closed at start."""
        try:
            try:
                db = self._connect_checked()
            except _Corrupt as exc:
                self._set_aside("corrupt", f"the database is corrupt ({exc})")
                db = self._connect_checked()
        except (_Corrupt, StoreError, sqlite3.Error) as exc:
            self._storage_failed(exc)
            return
        self._db = db
        held_counts = self._counts
        try:
            self._load()
        except sqlite3.Error as exc:
            self._db = None
            db.close()
            self._counts = held_counts
            self._storage_failed(exc)
            return
        self.reopened += 1
        if self.incident is not None:
            self._save_incident()
        self._write_marker(sync_directory=True)

    def _storage_failed(self, exc: BaseException) -> None:
        if _is_corruption(exc) and self._db is not None:
            self._set_aside_while_running(exc)
            return
        # A full disk shows as SQLITE_FULL, or as an I/O error creating the -shm file.
        full = _is_full(exc) or _no_room(self.path.parent)
        now = time.monotonic()
        self._failure = str(exc)
        if self._failing_since is None:
            self._failing_since = self._clock()
            self._failure_kind = "full" if full else "failing"
            # A disk at the edge flaps between full and not: one line per
            # REMINDER_SECONDS for all of it, not one per flap.
            self._episode_logged = self._last_reminder is None or now - self._last_reminder >= REMINDER_SECONDS
            if self._episode_logged:
                self._last_reminder = now
                log.error(
                    "storage %s: cannot write %s (%s); sorting goes on, events are kept in memory "
                    "(up to %d) and published directly until it can be written again",
                    self._failure_kind,
                    self.path,
                    exc,
                    self.max_memory_events,
                )
            return
        if self._last_reminder is None or now - self._last_reminder >= REMINDER_SECONDS:
            self._last_reminder = now
            self._episode_logged = True
            log.error(
                "storage still %s since %s (%s): %d event(s) held in memory, %d dropped",
                self._failure_kind,
                _iso(self._failing_since),
                exc,
                len(self._unsaved.events),
                self._unsaved.dropped,
            )

    def _set_aside_while_running(self, exc: BaseException) -> None:
        """The database turned out corrupt after the start-up check: move it
        aside now; the next write starts a fresh one with the counts (and the
        held events) from memory. Its undelivered events stay in the moved file."""
        db, self._db = self._db, None
        assert db is not None
        with contextlib.suppress(sqlite3.Error):
            db.close()
        undelivered = max(0, self._db_pending - len(self._unsaved.acknowledged))
        self._unsaved.acknowledged.clear()
        self._db_pending = 0
        self._unsaved.reset_since = self._counts_since
        self._unsaved.count_deltas = collections.Counter(self._counts)
        self._unsaved.last_item = self._last_item
        self._unsaved.dropped += self._dropped_saved
        self._dropped_saved = 0
        try:
            self._set_aside(
                "corrupt",
                f"the database turned out corrupt while running ({exc}); "
                f"its {undelivered} undelivered event(s) stay in the moved file",
            )
        except StoreError as error:
            log.error("%s", error)
        if self._failing_since is None:
            self._failing_since = self._clock()
            self._failure_kind = "failing"
        self._failure = str(exc)
        self._last_retry = float("-inf")  # start the fresh database at the next chance

    def _storage_recovered(self, saved: int = 0) -> None:
        if self._failing_since is None:
            return
        log.log(
            logging.WARNING if self._episode_logged else logging.DEBUG,
            "storage writable again after %.0f s: %d held event(s) saved to %s",
            self._clock() - self._failing_since,
            saved,
            self.path,
        )
        self._failing_since = None
        self._failure = ""
        self._failure_kind = ""

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception.

        SQLite may already have rolled back by itself (a full disk does that):
        then there is nothing left to roll back.
        """
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise


class _Corrupt(Exception):
    """The database file is damaged (quick_check failed or not a database)."""


def _history(db: sqlite3.Connection, since: str, until: str | None) -> list[HistoryItem]:
    rows = db.execute(
        "SELECT time, created, class, confidence, compartment, fallback, payload FROM items "
        "WHERE time >= ? AND time < ? ORDER BY seq",
        (since, until if until is not None else "\uffff"),
    ).fetchall()
    return [
        HistoryItem(
            time=r[0],
            created=r[1],
            label=r[2],
            confidence=r[3],
            compartment=r[4],
            fallback=bool(r[5]),
            payload=json.loads(r[6]),
        )
        for r in rows
    ]


class StoreReader:
    """The state database opened read-only, for the tools that only read it (``report``,
    ``snapshot``): it takes neither the agent's lock nor writes a marker or anything else, so it
    works while ``bin-agent run`` holds the database (SQLite's WAL lets a reader see the last
    committed items beside the writer).

    :param path: the database file.
    :raises StoreError: it cannot be opened or is not a bin-agent database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # mode=ro: nothing is created or written, not even a -journal; a WAL database still
        # needs its -shm (the running agent's, or one SQLite makes where the folder is writable).
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("SELECT 1 FROM items LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            raise StoreError(f"{self.path}: cannot read the state database ({exc})") from None

    def history(self, since: str, until: str | None = None) -> list[HistoryItem]:
        """As :meth:`Store.history`."""
        return _history(self._db, since, until)

    def last_item(self) -> dict[str, Any] | None:
        """The last sorted item's event as the agent last saved it (None: none yet)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_item'").fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def close(self) -> None:
        self._db.close()


def _lock_exclusively(path: Path) -> Any:
    """Open ``path`` and take an exclusive ``flock`` without waiting; write our pid into it."""
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open: the lock lives with it
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the lock file ({exc})") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()[:20]
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreLockedError(
            f"{path.with_suffix('')}: another bin-agent{who} is using this database; "
            "stop it first, or give this one its own agent.state_dir"
        ) from None
    except OSError as exc:
        handle.close()
        raise StoreError(f"{path}: cannot lock ({exc})") from None
    with contextlib.suppress(OSError):  # a full disk may refuse even these bytes
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
    return handle


def _error_code(exc: BaseException) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_corruption(exc: BaseException) -> bool:
    return _error_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _is_full(exc: BaseException) -> bool:
    return _error_code(exc) == 13 or "full" in str(exc)  # SQLITE_FULL


def _is_storage_failure(exc: BaseException) -> bool:
    """Errors of the disk rather than of the file: full, I/O, cannot open, read-only."""
    return _error_code(exc) in (8, 10, 13, 14)  # READONLY, IOERR, FULL, CANTOPEN


def _no_room(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 64 * 1024


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _now_iso() -> str:
    return _iso(time.time())
