"""Durable state: the event outbox and the counts, in one SQLite database.

Every sorted item is written here before the mechanics move and before anyone
tries to publish it: the event goes into the ``outbox`` table and the counts
are incremented in the same transaction, so after a crash (even SIGKILL or a
power cut) the counts always agree with the events and no committed event is
lost. The MQTT side deletes an event from the outbox only when the broker has
acknowledged it (PUBACK). A correction moves an item in the counts and records what it is
now counted as (``counted_as``) in one transaction (:meth:`Store.adjust_counts`).

**One sync per item.** The database runs in WAL mode. The transaction that
records an item is committed with ``synchronous=FULL`` (the WAL is fsynced: it
survives a power cut), or, for the agent, committed first and synced by
:meth:`Store.sync` right after the mechanics are commanded (``durable=False``):
the servo then waits for the commit, not for the card, and the pump hands out
no event before its sync. Everything whose loss costs nothing is committed without
a sync (``synchronous=NORMAL``) and becomes durable with the next synced commit:
the "sorted" mark after the mechanics moved (:meth:`Store.mark_actuated`) and the
deletes of acknowledged events, which are also grouped (one transaction per
:data:`ACK_BATCH` acknowledgements or :data:`ACK_DELAY_SECONDS`, whichever comes
first). A crash loses at most the last deletes: those events are published again
and carry the same unique ``id``, so a consumer drops the duplicates. The marker
(below) is rewritten after each commit without a sync.

What happens when storage fails (``docs/failures.md`` lists it with counts):

* **Another agent holds the database**: an exclusive ``flock`` on the state
  directory itself (``<db>.lock`` only names the holder's pid), taken before
  anything else and held until :meth:`Store.close` (the kernel drops it when the
  process dies, even by SIGKILL). Deleting any file cannot release it; the
  second agent gets :class:`StoreLockedError`.
* **Corrupt database at start** (``PRAGMA quick_check`` fails, or the file is
  not a database at all): the file and its ``-wal``/``-shm`` are moved aside
  as ``<db>.corrupt-<UTC time>`` and a fresh database is started.
* **Corrupt or truncated while running**: checked before every write (the
  file's size never shrinks, its header stays SQLite's) and by SQLite's own
  errors. The undelivered events that can still be read through the open
  connection are copied into a fresh database and delivered; the log says
  exactly how many could not be read. The damaged file is moved aside.
* **Deleted (or replaced) while running**: the open file's link count and
  inode are compared with the path before every write and every
  :data:`CHECK_SECONDS`; the log says so once and what the open handle still
  holds is copied (SQLite's backup) into a fresh database at the path.
* **Deleted, truncated, replaced or rolled back while stopped**: the marker
  ``<db>.marker`` (the database's id and highest event number) no longer
  matches; the remains are moved aside as ``<db>.missing-<UTC time>`` /
  ``<db>.truncated-<UTC time>`` and the incident is logged and kept in
  :meth:`Store.health`.
* **Disk full (or any write error)**: nothing is lost from the running agent:
  the item stays in memory (up to ``max_memory_events`` events; its counts
  always), is offered to the MQTT pump from there, and is written to the
  database, together with everything else held back, as soon as a write
  succeeds again. The first failure is logged as an error, then a reminder
  every :data:`REMINDER_SECONDS`; after a "writable again" line a new failure
  is always said. A small partition cannot be filled for good by the WAL:
  ``journal_size_limit`` and a smaller auto-checkpoint bound it, the WAL is
  checkpointed when free space runs low, and a reserve file (``<db>.reserve``)
  is given up on a full disk so that the checkpoint that empties the WAL has
  room to run.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clock import synchronised as clock_synchronised
from .errors import BinAgentError
from .mqtt.ratelimit import LogThrottle

if TYPE_CHECKING:
    from .config import StoreSection

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: the ``counted_as`` table (version 1 databases get it when opened)."""

REMINDER_SECONDS = 600.0
"""While storage stays unwritable, how often the log says so again."""

RETRY_SECONDS = 5.0
"""While storage is unwritable, how often :meth:`Store.retry_if_due` tries again."""

_AGE_DROP_BATCH = 500
"""Most events one transaction drops for age (keeps each commit short)."""

_HISTORY_PRUNE_BATCH = 25
"""History items one transaction drops to make room on a full disk."""

ACK_BATCH = 256
"""Acknowledged events deleted from the outbox in one (unsynced) transaction."""

ACK_DELAY_SECONDS = 0.5
"""An acknowledgement waits at most this long for its delete to be committed
(by the next :meth:`Store.acknowledge`, :meth:`Store.record_event` or
:meth:`Store.retry_if_due`)."""

CHECK_SECONDS = 2.0
"""Between writes, how often :meth:`Store.retry_if_due` checks that the database
file is still the one at the path (not deleted, replaced or truncated)."""

WAL_LIMIT_BYTES = 1 << 20
"""The WAL is checkpointed (``wal_autocheckpoint``) at about this size, or 1/32
of the file system if that is less, and cut back to it (``journal_size_limit``):
a small state partition is never filled by the WAL alone."""

RESERVE_MAX_BYTES = 2 << 20
"""The reserve file kept beside the database: room for the checkpoint that
empties the WAL when the disk is full (at most this, at most 1/16 of the file
system)."""

_SQLITE_HEADER = b"SQLite format 3\x00"

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
    payload     TEXT NOT NULL,
    actuated    REAL            -- when the mechanics finished (epoch s); NULL: not (yet)
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
-- What the counts count an item as, for the items counted since the last reset as another class
-- than their event's (predicted) one: answered at the bin, or corrected (cmd/correct, or a label
-- brought in at start). Written in the transaction that moves the counts, cleared with them.
CREATE TABLE IF NOT EXISTS counted_as (
    event_id    TEXT PRIMARY KEY,
    class       TEXT NOT NULL,
    compartment TEXT NOT NULL
);
"""

# SQLite result codes (primary code = extended code & 0xff) that mean the file
# is damaged, not that the disk refused a write.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def consecutive_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """``seqs`` as (first, last) runs of consecutive numbers, in order: {1, 2, 3, 7} -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


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
    synced: bool = True  # ``created`` read from a clock synchronised by NTP (or that cannot tell)


@dataclass
class _Unsaved:
    """Changes the database has not taken yet (storage full or failing)."""

    events: collections.OrderedDict[int, _HeldEvent] = field(default_factory=collections.OrderedDict)
    count_deltas: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    # Rows of counted_as that go with count_deltas (written in the same transaction).
    counted_as: dict[str, tuple[str, str]] = field(default_factory=dict)
    counted_as_complete: bool | None = None  # None: unchanged
    reset_since: str | None = None
    last_item: str | None = None
    dropped: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.events
            or self.count_deltas
            or self.counted_as
            or self.counted_as_complete is not None
            or self.reset_since
            or self.last_item
            or self.dropped
        )


class Store:
    """The agent's SQLite database (thread-safe; one connection behind a lock).

    :param path: database file; its directory is created if missing.
    :param max_outbox_events: the outbox keeps at most this many events; the
        oldest are dropped (and counted) beyond it.
    :param max_outbox_age_days: events older than this are dropped; 0: no age limit.
    :param max_memory_events: while the database cannot be written, at most
        this many events wait in memory (the oldest are dropped beyond it).
    :param clock: the wall clock (epoch seconds) that stamps events and history.
    :param clock_synced: whether that clock is synchronised by NTP (None: cannot tell), see
        :mod:`bin_agent.clock`: what it stamps while not is aged from the moment it is.
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
        clock_synced: Callable[[], bool | None] = clock_synchronised,
    ) -> None:
        self.path = Path(path)
        self.max_outbox_events = max_outbox_events
        self.max_outbox_age_days = max_outbox_age_days
        self.max_memory_events = max_memory_events
        self._clock = clock
        self._clock_synced = clock_synced
        # (outbox seq, history row) after which rows were stamped by an unsynchronised clock.
        self._unsynced_after: tuple[int, int] | None = None
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._unsaved = _Unsaved()
        self._counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._counts_since = self._now_iso()
        # The counted_as table, all of it (only items counted since the last reset as another class).
        self._counted_as: dict[str, tuple[str, str]] = {}
        self._counted_as_complete = True
        self._last_item: str | None = None
        self._db_pending = 0  # outbox rows in the database
        self._last_seq = 0  # highest event number handed out (database or memory)
        # The highest event number the pump may be handed: committed and synced (or held in
        # memory); set under the lock, read without it (last_seq). Events above it and up to
        # _last_seq are committed without their sync (record_event(durable=False)).
        self._readable_seq = 0
        self._sync_failures = LogThrottle(log, REMINDER_SECONDS)
        self._dropped_saved = 0  # outbox_dropped as stored in the database
        self._database_id = ""
        self._failing_since: float | None = None  # wall clock, shown in health()
        self._failing_since_monotonic = 0.0
        self._failure = ""
        self._failure_kind = ""
        self._last_reminder: float | None = None  # monotonic time of the last storage error line
        self._episode_logged = False
        self._last_retry = float("-inf")
        self._marker_warned = False
        # Acknowledged events whose delete is not committed yet (grouped, or the disk failing).
        self._acked: set[int] = set()
        self._acked_since: float | None = None  # monotonic time of the oldest of them
        # The database file as opened: compared with the path to see it deleted or replaced.
        self._file_fd: int | None = None
        self._file_ino = 0
        self._file_size = 0
        self._next_check = 0.0
        self._said_recovered = False  # the last storage line was "writable again"
        self._item_rows: dict[int, int] = {}  # event seq -> its history row, until mark_actuated
        self._reserve_bytes = 0
        self._history_pruned = 0  # history items given up for room since start
        self.incident: dict[str, str] | None = None  # what this start's checks found
        self._saved_incident: dict[str, str] | None = None  # the last one, from the database
        self.reopened = 0  # bumped when a database kept closed by a full disk opens later
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path.parent}: cannot create the state directory ({exc})") from None
        self._lock_file = _lock_exclusively(self.path.parent, self.lock_path)
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

    def _now_iso(self) -> str:
        """Now on the store's wall clock, as the events write times (whole seconds)."""
        return _iso(self._clock())

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def marker_path(self) -> Path:
        return self.path.with_name(self.path.name + ".marker")

    @property
    def reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

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
        self._adopt(db)
        try:
            self._load()
        except sqlite3.Error as exc:
            self._drop_db()
            if not _is_storage_failure(exc):
                raise StoreError(f"{self.path}: cannot read the state database ({exc})") from None
            self._start_in_memory(exc, marker)
            return
        if marker is not None and self.incident is None:
            self._compare_with_marker(marker)
        if self.incident is not None:
            self._save_incident()
        self._write_marker(sync_directory=True)
        self._make_reserve()

    def _start_in_memory(self, exc: BaseException, marker: dict[str, Any] | None) -> None:
        # The database's highest event number is unknown: number the held
        # events far above it (the marker's, plus 2**32) so that writing them
        # later can never collide with a row already there.
        known = marker.get("last_seq") if marker else None
        self._last_seq = (known if isinstance(known, int) else 0) + (1 << 32)
        self._readable_seq = self._last_seq
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
                if is_corruption(exc):
                    raise _Corrupt(str(exc)) from None
                raise
            problems = [str(row[0]) for row in rows if row[0] != "ok"]
            if problems:
                raise _Corrupt("; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            # A WAL that cannot outgrow a small state partition (see the module's notes).
            wal_bytes = _wal_bytes(self.path.parent)
            db.execute(f"PRAGMA journal_size_limit={wal_bytes}")
            db.execute(f"PRAGMA wal_autocheckpoint={max(16, wal_bytes // 4096)}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            db.executescript(_SCHEMA)
            # A database of version 1 has counts but no counted_as rows for the items corrected
            # before it was opened by this version: incomplete until the agent adopts the labels
            # (bin_agent.learning.labels.reconcile_counts) or the counts are reset.
            complete = "counts" not in tables or "counted_as" in tables
            db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('counted_as_complete', ?)", (str(int(complete)),)
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
            if "actuated" not in columns:  # databases of earlier versions
                db.execute("ALTER TABLE items ADD COLUMN actuated REAL")
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('counts_since', ?)", (self._now_iso(),))
            if "items" not in tables:
                # A new database counts from its first history row on. One made by an earlier
                # version gets the mark at its next reset (until then: compared by times).
                db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('counts_since_item', '0')")
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
        self._readable_seq = self._last_seq
        self._database_id = meta.get("database_id", "")
        self._dropped_saved = int(meta.get("outbox_dropped", "0"))
        # Held-back changes (a retry after a full disk) stay on top of the database's.
        unsaved = self._unsaved
        if unsaved.reset_since is not None:
            counts = collections.Counter()
            self._counts_since = unsaved.reset_since
        else:
            self._counts_since = meta.get("counts_since", self._now_iso())
        counts.update(unsaved.count_deltas)
        self._counts = counts
        counted_as = {} if unsaved.reset_since is not None else self._read_counted_as()
        counted_as.update(unsaved.counted_as)
        self._counted_as = counted_as
        complete = unsaved.counted_as_complete
        self._counted_as_complete = complete if complete is not None else meta.get("counted_as_complete") != "0"
        self._last_item = unsaved.last_item or meta.get("last_item")
        self._unsynced_after = _seq_pair(meta.get("clock_unsynced_after"))
        with contextlib.suppress(ValueError):
            self._saved_incident = json.loads(meta.get("last_incident", "null"))

    def _read_counted_as(self) -> dict[str, tuple[str, str]]:
        assert self._db is not None
        rows = self._db.execute("SELECT event_id, class, compartment FROM counted_as").fetchall()
        return {str(event_id): (str(label), str(compartment)) for event_id, label, compartment in rows}

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
        self.incident = {"kind": kind, "detail": detail, "time": self._now_iso()}

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

        After each commit the file is replaced without a sync (the item's one
        sync is its commit); at start and close (``sync_directory``) the file
        and the directory are synced. After a power cut an older marker (or an
        unreadable one, which is ignored) may come back: harmless, an older
        marker only asks for less.
        """
        if self._db is None:
            return
        try:
            last_seq = self._db_sequence()
        except sqlite3.Error:  # a damaged file: its check happens at the next write
            return
        data = {"database_id": self._database_id, "last_seq": last_seq, "updated": self._now_iso()}
        temporary = self.marker_path.with_name(self.marker_path.name + ".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(json.dumps(data, sort_keys=True))
                if sync_directory:
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
        durable: bool = True,
    ) -> int:
        """Queue an event and count it, atomically: one transaction, one sync.

        Called before the mechanics move: an item that is inside the servo when
        the power goes is counted and published. ``durable=False`` commits it
        without the sync (a crash of the process keeps it; a power cut may not):
        :meth:`sync` syncs it, and until then :meth:`pending` does not hand it
        out, so no event leaves the bin before it is on the card. Never fails for a full disk or
        a failing database: the event and its counts are then held in memory and
        written with the next commit that succeeds. A duplicate ``event_id``
        raises :class:`sqlite3.IntegrityError`.

        An item counted as another class than the payload's ``class`` (the prediction; a
        person answered at the bin) gets its ``counted_as`` row in the same transaction.

        :returns: the event's number, for :meth:`mark_actuated`.
        """
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        deltas = collections.Counter({("class", label): 1, ("compartment", compartment): 1, ("total", ""): 1})
        if fallback:
            deltas[("fallback", "")] += 1
        predicted = payload.get("class")
        rows = {event_id: (label, compartment)} if isinstance(predicted, str) and predicted != label else {}
        with self._lock:
            self._last_seq += 1
            synced = self._clock_synced() is not False
            event = _HeldEvent(self._last_seq, event_id, topic, text, self._clock(), synced)
            if self._writable() and not self._unsaved:
                try:
                    with self._transaction(durable=durable):
                        # Deletes of acknowledged events ride along (no extra commit).
                        deleted = self._delete_acknowledged()
                        unsynced_after = self._mind_the_clock([event], synced)
                        self._insert(event)
                        self._insert_deltas(deltas)
                        self._insert_counted_as(rows)
                        self._db_execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_item', ?)", (text,))
                        item_row = self._record_history(event_id, payload, text, label, compartment, fallback)
                        dropped = self._apply_bounds(self._db_pending - deleted + 1)
                except sqlite3.IntegrityError:
                    self._last_seq -= 1
                    raise
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                else:
                    self._unsynced_after = unsynced_after
                    self._acknowledged_deleted(deleted)
                    self._db_pending += 1 - dropped
                    self._count_dropped(dropped)
                    self._counts.update(deltas)
                    self._counted_as.update(rows)
                    self._last_item = text
                    self._item_rows[event.seq] = item_row
                    if durable:  # its sync covered every earlier commit too
                        self._readable_seq = event.seq
                        self._write_marker()
                    self._keep_room()
                    return event.seq
            # The database cannot take it now: hold it, then try everything held in one go.
            # (History and fill counts are not held: they miss the items of a full disk.)
            self._sync_through(event.seq - 1)  # held events are handed out at once: earlier ones first
            self._hold(event, deltas, text)
            self._readable_seq = event.seq
            self._unsaved.counted_as.update(rows)
            self._counted_as.update(rows)
            self._flush()
            return event.seq

    def sync(self) -> None:
        """Make the events recorded with ``durable=False`` survive a power cut (one
        ``fsync`` of the WAL, then the marker) and let the pump have them. Nothing to do
        when every commit was synced. The lock is not held while the card syncs (the
        pump's acknowledgements go on). A failed sync is logged: the events are
        published anyway (the process holds them), but a power cut may lose them here."""
        with self._lock:
            covered = self._last_seq
        self._sync_through(covered)

    def _sync_through(self, covered: int) -> None:
        """:meth:`sync` for the events numbered up to ``covered``."""
        with self._lock:
            if self._readable_seq >= covered:
                return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # one line per REMINDER_SECONDS on a card that keeps failing
            self._sync_failures.log(
                logging.ERROR,
                "sync",
                "%s: the recorded items could not be synced (%s): a power cut may lose them",
                self.path,
                exc,
            )
        with self._lock:
            self._readable_seq = max(self._readable_seq, covered)
            self._write_marker()

    def mark_actuated(self, seq: int) -> None:
        """The mechanics finished sorting event ``seq``: say so in its history item.

        Committed without a sync: the next item's commit makes it durable, and
        losing it (a power cut in between) only leaves the item marked unsorted.
        """
        with self._lock:
            row = self._item_rows.pop(seq, None)
            if row is None or not self._writable() or self._unsaved:
                return
            try:
                with self._transaction(durable=False):
                    self._db_execute("UPDATE items SET actuated = ? WHERE seq = ?", (self._clock(), row))
            except sqlite3.Error as exc:
                self._storage_failed(exc)

    def adjust_counts(
        self,
        changes: dict[tuple[str, str], int],
        counted_as: dict[str, tuple[str, str]] | None = None,
        *,
        complete: bool = False,
    ) -> None:
        """Add ``delta`` to each ``(kind, key)`` count, never below 0 (a corrected item moves
        from one class/compartment to another), and record what the moved items are now
        counted as (``counted_as``: event id -> (class, compartment)), in one transaction: a
        kill cannot leave the counts moved and the rows not, or the reverse. ``complete``: the
        ``counted_as`` rows now cover every item counted since the last reset (see
        :attr:`counted_as_complete`). Held in memory, like an item's counts, while the
        database takes no writes."""
        rows = dict(counted_as or {})
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
                        self._insert_counted_as(rows)
                        if complete:
                            self._db_execute(
                                "INSERT OR REPLACE INTO meta(key, value) VALUES ('counted_as_complete', '1')"
                            )
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                    self._hold_adjustment(deltas, rows, complete)
            else:
                self._hold_adjustment(deltas, rows, complete)
                self._flush()
            self._counts.update(deltas)
            for count_key in [k for k, n in self._counts.items() if n <= 0]:
                del self._counts[count_key]
            self._counted_as.update(rows)
            if complete:
                self._counted_as_complete = True

    def _hold_adjustment(
        self, deltas: collections.Counter[tuple[str, str]], rows: dict[str, tuple[str, str]], complete: bool
    ) -> None:
        self._unsaved.count_deltas.update(deltas)
        self._unsaved.counted_as.update(rows)
        if complete:
            self._unsaved.counted_as_complete = True

    def counted_as(self, event_id: str) -> tuple[str, str] | None:
        """What the counts count item ``event_id`` as, ``(class, compartment)``, when it was
        counted since the last reset as another class than its event's; None otherwise (then
        it is counted as its event says, if it was counted since the last reset)."""
        with self._lock:
            return self._counted_as.get(event_id)

    def counted_as_rows(self) -> dict[str, tuple[str, str]]:
        """Every :meth:`counted_as` row (a copy)."""
        with self._lock:
            return dict(self._counted_as)

    @property
    def counted_as_complete(self) -> bool:
        """False for a database made by a version without ``counted_as``, until the agent has
        adopted the labels of the items it counted since the last reset (that version moved
        the counts by them) or the counts are reset."""
        with self._lock:
            return self._counted_as_complete

    def counted_since_reset(self, event_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each item of ``event_ids`` that the history holds was counted since the last
        reset of the counts: its history row comes after the row the reset was made at. Row
        numbers never go back; the wall clock does (a Pi without a battery-backed clock boots at
        the last time it saved), so an item stamped before ``counts.since`` by a clock that
        booted behind is still found counted. Items the history lacks (pruned after
        ``history.retention_days``, recorded while the disk was full) and every item of a
        database whose counts were last reset by an earlier version are left out: the caller
        compares times for those. Empty while a reset waits to be written."""
        wanted = list(dict.fromkeys(event_ids))
        with self._lock:
            if not wanted or self._unsaved.reset_since is not None:
                return {}
            mark = self._read("SELECT value FROM meta WHERE key = 'counts_since_item'")
            if not mark:
                return {}
            since_item = int(mark[0][0])
            found: dict[str, bool] = {}
            for start in range(0, len(wanted), 500):  # SQLite's limit on bound parameters
                chunk = wanted[start : start + 500]
                rows = self._read(
                    f"SELECT event_id, MAX(seq) FROM items WHERE event_id IN ({', '.join('?' * len(chunk))}) "
                    "GROUP BY event_id",
                    tuple(chunk),
                )
                found.update((str(event_id), int(seq) > since_item) for event_id, seq in rows)
            return found

    def acknowledge(self, seq: int) -> None:
        """The broker has the event: drop it from the outbox.

        It is gone from :meth:`pending` at once; the delete is committed with
        others (:data:`ACK_BATCH`, :data:`ACK_DELAY_SECONDS`), without a sync.
        """
        self.acknowledge_many((seq,))

    def acknowledge_many(self, seqs: Iterable[int]) -> None:
        """:meth:`acknowledge` for each of ``seqs``, under one lock: the pump applies the
        PUBACKs of a wake-up together (tens of them), not one lock and clock read each."""
        with self._lock:
            added = False
            for seq in seqs:
                if self._unsaved.events.pop(seq, None) is None:
                    self._acked.add(seq)
                    added = True
            if not added:
                return
            now = time.monotonic()
            if self._acked_since is None:
                self._acked_since = now
            if len(self._acked) >= ACK_BATCH or now - self._acked_since >= ACK_DELAY_SECONDS:
                self._commit_acknowledged()

    def _commit_acknowledged(self) -> None:
        """Delete the acknowledged events in one unsynced transaction."""
        if not self._acked or not self._writable() or self._unsaved:
            return  # a failing disk: written by the next flush
        try:
            with self._transaction(durable=False):
                deleted = self._delete_acknowledged()
        except sqlite3.Error as exc:
            self._storage_failed(exc)
            return
        self._acknowledged_deleted(deleted)

    def _delete_acknowledged(self) -> int:
        """Inside the caller's transaction; returns how many rows went."""
        if not self._acked:
            return 0
        # One statement per run of consecutive seqs (PUBACKs come in order, so a flush's batch
        # is one or a few runs), not one per seq: each statement is a sqlite3_step that lets go
        # of the GIL and takes it back, a hand-off that paho's thread, sending, pays for too.
        # Every seq inside a run was acknowledged, so the range deletes nothing else.
        cursor = self._db_execute_many("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", consecutive_runs(self._acked))
        return max(cursor.rowcount, 0)

    def _acknowledged_deleted(self, deleted: int) -> None:
        """After the commit that deleted ``self._acked``."""
        if self._acked:
            self._db_pending -= deleted
            self._acked.clear()
        self._acked_since = None

    def reset_counts(self) -> None:
        """Zero the counts (the bin was emptied). Pending events are kept."""
        with self._lock:
            since = self._now_iso()
            self._counts = collections.Counter()
            self._counts_since = since
            self._counted_as = {}
            self._counted_as_complete = True
            self._unsaved.count_deltas.clear()
            self._unsaved.counted_as.clear()
            self._unsaved.counted_as_complete = True
            self._unsaved.reset_since = since
            self._flush()

    def retry_if_due(self) -> bool:
        """Called for every frame. While storage is failing, try to write what is
        held (at most every :data:`RETRY_SECONDS`); otherwise commit the deletes
        of acknowledged events that waited :data:`ACK_DELAY_SECONDS`, and every
        :data:`CHECK_SECONDS` check the file (deleted, replaced, truncated?) and
        the free space (checkpoint the WAL while there is room). Returns whether
        storage works now."""
        with self._lock:
            now = time.monotonic()
            if not self.degraded:
                if self._acked_since is not None and now - self._acked_since >= ACK_DELAY_SECONDS:
                    self._commit_acknowledged()
                if now >= self._next_check and self._db is not None:
                    self._next_check = now + CHECK_SECONDS
                    if self._writable():
                        self._keep_room()
                return not self.degraded
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
            after = after_seq
            # Nothing beyond last_seq: not yet synced (record_event(durable=False)) until sync().
            below = self._readable_seq + 1
            while self._db is not None and len(entries) < limit:
                want = limit - len(entries)
                try:
                    rows = self._db_execute(
                        "SELECT seq, event_id, topic, payload FROM outbox WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                        (after, below, want),
                    ).fetchall()
                except sqlite3.Error as exc:
                    self._storage_failed(exc)
                    break
                # Acknowledged but not yet deleted: already gone for the pump.
                entries.extend(OutboxEntry(*row) for row in rows if row[0] not in self._acked)
                if len(rows) < want:
                    break
                after = rows[-1][0]
            for held in self._unsaved.events.values():
                if len(entries) >= limit:
                    break
                if held.seq > after_seq:
                    entries.append(OutboxEntry(held.seq, held.event_id, held.topic, held.payload))
            return entries

    @property
    def last_seq(self) -> int:
        """The highest event number the pump may have (:meth:`pending` hands out none
        above it): an event numbered after the last one the pump read is new to it
        (without a query). It counts once committed and synced, or held in memory: one
        recorded without its sync counts from :meth:`sync` on, one being committed not yet."""
        return self._readable_seq

    def pending_count(self) -> int:
        with self._lock:
            in_database = max(0, self._db_pending - len(self._acked))
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
        return _json_object(text)

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
            self.sync()
            if self._unsaved or self._acked:
                self._flush()
                if self._unsaved:
                    log.error(
                        "storage still failing at shutdown: %d held event(s) and the counts of %d item(s) are lost",
                        len(self._unsaved.events),
                        self._unsaved.count_deltas[("total", "")],
                    )
            if self._db is not None:
                self._write_marker(sync_directory=True)
            self._drop_db()
            self._lock_file.close()

    # ------------------------------------------------------------------ history and fill

    def _record_history(
        self, event_id: str, payload: dict[str, Any], text: str, label: str, compartment: str, fallback: bool
    ) -> int:
        """Inside record_event's transaction (history and fill agree with the counts);
        returns the history row."""
        cursor = self._db_execute(
            "INSERT INTO items(event_id, time, created, class, confidence, compartment, fallback, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event_id,
                str(payload.get("time") or self._now_iso()),
                self._clock(),
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
        return int(cursor.lastrowid or 0)

    def history(self, since: str, until: str | None = None) -> list[HistoryItem]:
        """Sorted items whose event time (ISO-8601 UTC, as in the events) is at or after ``since``
        and before ``until``, oldest first."""
        with self._lock:
            rows = self._read(_HISTORY_QUERY, (since, until if until is not None else "\uffff"))
        return _history_items(rows)

    def prune_history(self, older_than: float) -> int:
        """Drop history items recorded before ``older_than`` (epoch seconds); returns how many.
        Items recorded while the clock was not synchronised are aged from when it was (so a
        clock that booted months behind and then jumped forward prunes none of them at once)."""
        with self._lock:
            if self._db is None:
                return 0
            try:
                with self._transaction():
                    unsynced_after = self._mind_the_clock((), self._clock_synced() is not False)
                    cursor = self._db.execute("DELETE FROM items WHERE created < ?", (older_than,))
            except sqlite3.Error as exc:  # a full disk: pruned another time
                log.debug("cannot prune the history (%s)", exc)
                return 0
            self._unsynced_after = unsynced_after
        return cursor.rowcount

    def fill_counts(self) -> dict[str, dict[str, int]]:
        """Compartment → class → items since the compartment was last emptied."""
        with self._lock:
            rows = self._read("SELECT compartment, class, n FROM fill_counts")
        result: dict[str, dict[str, int]] = {}
        for compartment, label, n in rows:
            result.setdefault(compartment, {})[label] = n
        return result

    def mark_emptied(self, compartment: str) -> str:
        """The compartment was emptied: its fill count starts again. Returns the time."""
        now = self._now_iso()
        with self._lock:
            if not self._writable():
                raise StoreError("the database is not open (storage full or failing)")
            try:
                with self._transaction():
                    self._db_execute("DELETE FROM fill_counts WHERE compartment = ?", (compartment,))
                    self._db_execute(
                        "INSERT OR REPLACE INTO emptied(compartment, time) VALUES (?, ?)", (compartment, now)
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot record the emptying ({exc})") from None
        return now

    def emptied_times(self) -> dict[str, str]:
        """Compartment → when it was last emptied (ISO-8601 UTC)."""
        with self._lock:
            return dict(self._read("SELECT compartment, time FROM emptied"))

    # ------------------------------------------------------------------ helpers

    def _db_execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        assert self._db is not None
        return self._db.execute(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a query for a reader (fill levels, reports): none while the
        database is not open; a damaged database is set aside, not raised."""
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self._storage_failed(exc)
            return []

    def _db_execute_many(self, sql: str, params: list[tuple[Any, ...]]) -> sqlite3.Cursor:
        assert self._db is not None
        return self._db.executemany(sql, params)

    def _insert(self, event: _HeldEvent) -> None:
        self._db_execute(
            "INSERT INTO outbox(seq, event_id, topic, payload, created) VALUES (?, ?, ?, ?, ?)",
            (event.seq, event.event_id, event.topic, event.payload, event.created),
        )

    def _items_sequence(self) -> int:
        """The last history row number handed out (rows pruned since included)."""
        row = self._db_execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        return int(row[0]) if row else 0

    def _mind_the_clock(self, events: Iterable[_HeldEvent], synced: bool) -> tuple[int, int] | None:
        """Inside the transaction that writes ``events``, before they are inserted; ``synced``:
        whether the clock is synchronised now. Returns the marker to keep once it commits.

        While the clock is not synchronised (a Pi without a battery-backed clock starts from the
        last time it saved: hours to months behind after a power cut or storage) the first event
        stamped by it marks where such rows start (``clock_unsynced_after``: outbox seq and
        history row, kept across restarts). The first write once the clock is synchronised
        re-stamps every row after the mark, and any held event stamped before, with now: their
        age then counts from the sync, not from a stamp months behind, so a forward jump drops
        none of them for ``max_outbox_age_days`` or ``history.retention_days`` (they are kept at
        most the unsynchronised time longer). A clock that never syncs (no network, an RTC) keeps
        its stamps: they are consistent with each other."""
        marker = self._unsynced_after
        if synced:
            now = self._clock()
            for event in events:
                if not event.synced:
                    event.created, event.synced = now, True
            if marker is None:
                return None
            after_seq, after_item = marker
            events_restamped = self._db_execute(
                "UPDATE outbox SET created = ? WHERE seq > ?", (now, after_seq)
            ).rowcount
            items_restamped = self._db_execute("UPDATE items SET created = ? WHERE seq > ?", (now, after_item)).rowcount
            self._db_execute("DELETE FROM meta WHERE key = 'clock_unsynced_after'")
            log.info(
                "the clock is synchronised: %d undelivered event(s) and %d history item(s) stamped before it was "
                "are aged from now",
                max(events_restamped, 0),
                max(items_restamped, 0),
            )
            return None
        first = min((event.seq for event in events if not event.synced), default=None)
        if marker is not None or first is None:
            return marker
        marker = (first - 1, self._items_sequence())
        self._db_execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('clock_unsynced_after', ?)", (json.dumps(list(marker)),)
        )
        return marker

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
        if not self._writable():
            return
        unsaved = self._unsaved
        if self.degraded:
            # Copying the WAL into the database and truncating it can free
            # enough room by itself (on a small disk the WAL is most of it);
            # the reserve gives the copy room to run on a disk that is full.
            self._release_reserve()
            with contextlib.suppress(sqlite3.Error):
                self._db_execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not unsaved and not self._acked:
            self._storage_recovered()
            return
        for attempt in range(2):
            try:
                deleted, rows, dropped = self._write_unsaved()
                break
            except sqlite3.Error as exc:
                # A partition full of the store's own history: the counts and the
                # outbox matter more than the oldest history items (reports).
                if attempt == 0 and _is_full(exc) and self._prune_history_for_room():
                    continue
                self._storage_failed(exc)
                return
        saved = len(unsaved.events)
        self._acknowledged_deleted(deleted)
        self._db_pending = rows - dropped
        self._dropped_saved += unsaved.dropped
        self._unsaved = _Unsaved()
        self._count_dropped(dropped)
        self._write_marker()
        self._storage_recovered(saved)

    def _write_unsaved(self) -> tuple[int, int, int]:
        """Everything held back, in one transaction; returns (acknowledged rows
        deleted, outbox rows, rows dropped by the bounds)."""
        unsaved = self._unsaved
        with self._transaction():
            if unsaved.reset_since is not None:
                self._db_execute("DELETE FROM counts")
                self._db_execute("DELETE FROM counted_as")
                self._db_execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('counts_since', ?)", (unsaved.reset_since,)
                )
                # Items are counted since the reset when their history row comes after this one:
                # row numbers never go back, the wall clock may (see counted_since_reset).
                self._db_execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('counts_since_item', ?)",
                    (str(self._items_sequence()),),
                )
            deleted = self._delete_acknowledged()
            unsynced_after = self._mind_the_clock(unsaved.events.values(), self._clock_synced() is not False)
            for event in unsaved.events.values():
                self._insert(event)
            self._insert_deltas(unsaved.count_deltas)
            self._insert_counted_as(unsaved.counted_as)
            if unsaved.counted_as_complete is not None:
                self._db_execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('counted_as_complete', ?)",
                    (str(int(unsaved.counted_as_complete)),),
                )
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
        self._unsynced_after = unsynced_after
        return deleted, rows, dropped

    def _prune_history_for_room(self, *, quarter: bool = True) -> bool:
        """Short of room: drop the oldest quarter of the history (or one batch;
        in small transactions, the WAL emptied after each) so that its pages are
        reused. Returns whether anything went."""
        try:
            total = int(self._db_execute("SELECT COUNT(*) FROM items").fetchone()[0])
        except sqlite3.Error:
            return False
        goal, dropped = min(total, max(total // 4, _HISTORY_PRUNE_BATCH) if quarter else _HISTORY_PRUNE_BATCH), 0
        while dropped < goal:
            try:
                with self._transaction(durable=False):
                    batch = self._db_execute(
                        "DELETE FROM items WHERE seq IN (SELECT seq FROM items ORDER BY seq LIMIT ?)",
                        (min(_HISTORY_PRUNE_BATCH, goal - dropped),),
                    ).rowcount
                dropped += batch  # committed
                self._db_execute("PRAGMA wal_checkpoint(TRUNCATE)")
                if batch <= 0:
                    break
            except sqlite3.Error:
                break
        if dropped:
            log.log(
                logging.DEBUG if self._history_pruned else logging.WARNING,
                "storage short of room: dropped the %d oldest history item(s) (reports) to keep the counts "
                "and the outbox; said once, see bin-agent report for what history is left",
                dropped,
            )
            self._history_pruned += dropped
        return dropped > 0

    def _insert_counted_as(self, rows: dict[str, tuple[str, str]]) -> None:
        if rows:
            self._db_execute_many(
                "INSERT OR REPLACE INTO counted_as(event_id, class, compartment) VALUES (?, ?, ?)",
                [(event_id, label, compartment) for event_id, (label, compartment) in rows.items()],
            )

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
        self._adopt(db)
        held_counts, held_counted_as, held_complete = self._counts, self._counted_as, self._counted_as_complete
        try:
            self._load()
        except sqlite3.Error as exc:
            self._drop_db()
            self._counts, self._counted_as, self._counted_as_complete = held_counts, held_counted_as, held_complete
            self._storage_failed(exc)
            return
        self.reopened += 1
        if self.incident is not None:
            self._save_incident()
        self._write_marker(sync_directory=True)

    def _storage_failed(self, exc: BaseException) -> None:
        if is_corruption(exc) and self._db is not None:
            self._set_aside_while_running(exc)
            return
        # A full disk shows as SQLITE_FULL, or as an I/O error creating the -shm file.
        full = _is_full(exc) or _no_room(self.path.parent)
        now = time.monotonic()
        self._failure = str(exc)
        if self._failing_since is None:
            self._failing_since = self._clock()
            self._failing_since_monotonic = time.monotonic()  # the log's duration: no clock jump in it
            self._failure_kind = "full" if full else "failing"
            # A disk at the edge flaps between full and not: one error line per
            # REMINDER_SECONDS for all of it, not one per flap; but the log's last
            # storage line must stay true, so after "writable again" it is said.
            self._episode_logged = self._last_reminder is None or now - self._last_reminder >= REMINDER_SECONDS
            if not self._episode_logged and self._said_recovered:
                self._episode_logged = True
                log.warning(
                    "storage %s again: cannot write %s (%s); events are kept in memory",
                    self._failure_kind,
                    self.path,
                    exc,
                )
            elif self._episode_logged:
                self._last_reminder = now
                log.error(
                    "storage %s: cannot write %s (%s); sorting goes on, events are kept in memory "
                    "(up to %d) and published directly until it can be written again",
                    self._failure_kind,
                    self.path,
                    exc,
                    self.max_memory_events,
                )
            if self._episode_logged:
                self._said_recovered = False
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
        """The database turned out corrupt (or truncated) after the start-up
        check: read back what the open connection still gives of its undelivered
        events, move the file aside, and write those events, the counts and the
        held events into a fresh database at once. The log says how many
        undelivered events could not be read."""
        db = self._db
        assert db is not None
        expected = max(0, self._db_pending - len(self._acked))
        salvaged = [row for row in _read_outbox(db, self._last_seq) if row[0] not in self._acked]
        self._drop_db()
        unreadable = max(0, expected - len(salvaged))
        self._acked.clear()
        self._acked_since = None
        self._item_rows.clear()
        self._db_pending = 0
        unsaved = self._unsaved
        unsaved.reset_since = self._counts_since
        unsaved.count_deltas = collections.Counter(self._counts)
        unsaved.counted_as = dict(self._counted_as)
        unsaved.counted_as_complete = self._counted_as_complete
        unsaved.last_item = self._last_item
        unsaved.dropped += self._dropped_saved
        self._dropped_saved = 0
        # Oldest first: the salvaged events come before the ones held in memory.
        events = {row[0]: _HeldEvent(*row) for row in salvaged}
        events.update(unsaved.events)
        unsaved.events = collections.OrderedDict(sorted(events.items()))
        if unreadable:
            log.error(
                "state database: %d of %d undelivered event(s) could not be read back from the damaged file; "
                "they are lost (the moved file keeps what is left of them)",
                unreadable,
                expected,
            )
        try:
            self._set_aside(
                "corrupt",
                f"the database turned out corrupt while running ({exc}); "
                f"{len(salvaged)} of its {expected} undelivered event(s) were read back and go to the fresh "
                f"database, {unreadable} could not be read",
            )
        except StoreError as error:
            log.error("%s", error)
        if self._failing_since is None:
            self._failing_since = self._clock()
            self._failing_since_monotonic = time.monotonic()  # the log's duration: no clock jump in it
            self._failure_kind = "failing"
            self._episode_logged = True
        self._failure = str(exc)
        self._last_retry = time.monotonic()
        self._flush()  # the fresh database, now

    def _rescue(self, kind: str, detail: str) -> None:
        """The database file was deleted (or another file put at its path) while
        open: copy what the open connection holds into a fresh database at the
        path (SQLite's online backup), then continue on it."""
        db = self._db
        assert db is not None
        log.error(
            "state database: %s %s; copying what the open file still holds into a fresh database", self.path, detail
        )
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        if kind == "replaced":  # keep the stranger's file, out of the way
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{self.path}{suffix}").rename(Path(f"{self.path}.replaced-{stamp}{suffix}"))
        temporary = self.path.with_name(self.path.name + ".rescue")
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(f"{temporary}{suffix}").unlink()
        try:
            target = sqlite3.connect(temporary)
            try:
                db.backup(target)
            finally:
                target.close()
            with open(temporary, "rb") as copied:
                os.fsync(copied.fileno())
        except (sqlite3.Error, OSError) as exc:
            log.error("state database: cannot save the open database to %s (%s)", temporary, exc)
            self._file_fd_close()  # do not look again: the failure is handled as a write error
            self._storage_failed(exc)
            return
        # Closed only now: on close SQLite removes "<db>-wal" by name, and nothing
        # of the fresh database is there yet.
        self._drop_db()
        try:
            os.replace(temporary, self.path)
            _fsync_directory(self.path.parent)
            self._adopt(self._connect_checked())
            self._load()
        except (OSError, sqlite3.Error, _Corrupt) as exc:
            self._drop_db()
            log.error("state database: cannot start the saved copy at %s (%s)", self.path, exc)
            self._storage_failed(exc)
            return
        self._report_incident(
            "deleted" if kind == "deleted" else kind,
            f"{self.path} {detail}; what the open file held ({self._db_pending} undelivered event(s), "
            f"the counts of {self._counts.get(('total', ''), 0)} item(s)) was saved into a fresh database",
        )
        self._save_incident()
        self._write_marker(sync_directory=True)
        self._make_reserve()

    def _storage_recovered(self, saved: int = 0) -> None:
        if self._failing_since is None:
            return
        self._said_recovered = self._episode_logged
        self._make_reserve()
        log.log(
            logging.WARNING if self._episode_logged else logging.DEBUG,
            "storage writable again after %.0f s: %d held event(s) saved to %s",
            time.monotonic() - self._failing_since_monotonic,
            saved,
            self.path,
        )
        self._failing_since = None
        self._failure = ""
        self._failure_kind = ""

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception.

        ``durable``: the commit syncs the WAL (``synchronous=FULL``); otherwise
        it is not synced (``NORMAL``) and becomes durable with the next synced
        commit, which syncs the same WAL file after it.

        SQLite may already have rolled back by itself (a full disk does that):
        then there is nothing left to roll back.
        """
        db = self._db
        assert db is not None
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        finally:
            if not durable:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA synchronous=FULL")

    # ------------------------------------------------------------------ the file under the connection

    def _adopt(self, db: sqlite3.Connection) -> None:
        """Use ``db``; remember the file it opened (to see it deleted or replaced)."""
        self._db = db
        self._file_fd_close()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        stat = os.fstat(fd)
        self._file_fd, self._file_ino, self._file_size = fd, stat.st_ino, stat.st_size

    def _drop_db(self) -> None:
        db, self._db = self._db, None
        self._file_fd_close()
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def _file_fd_close(self) -> None:
        fd, self._file_fd = self._file_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _file_problem(self) -> tuple[str, str] | None:
        """What happened to the open database file, if anything: ``(kind, detail)``."""
        fd = self._file_fd
        if fd is None:
            return None
        try:
            stat = os.fstat(fd)
        except OSError:
            return None
        try:
            on_path = os.stat(self.path)
        except FileNotFoundError:
            return "deleted", "was deleted while the agent runs"
        except OSError:
            return None
        if stat.st_nlink == 0 or (on_path.st_ino, on_path.st_dev) != (stat.st_ino, stat.st_dev):
            return "replaced", "was deleted (or moved) and another file put at its path while the agent runs"
        # Without VACUUM a database file never shrinks, and its header never changes.
        if stat.st_size < self._file_size:
            return "truncated", f"was truncated from {self._file_size} to {stat.st_size} bytes while the agent runs"
        if stat.st_size >= len(_SQLITE_HEADER):
            try:
                header = os.pread(fd, len(_SQLITE_HEADER), 0)
            except OSError:
                header = _SQLITE_HEADER
            if header != _SQLITE_HEADER:
                return "corrupt", "had its header overwritten while the agent runs"
        self._file_size = stat.st_size
        return None

    def _writable(self) -> bool:
        """Before a write: the database is open and still the file at the path.
        A file found deleted is saved again, a damaged one set aside (then the
        caller writes to the fresh one, or holds in memory)."""
        if self._db is None:
            return False
        problem = self._file_problem()
        if problem is None:
            return True
        kind, detail = problem
        if kind in ("deleted", "replaced"):
            self._rescue(kind, detail)
        else:
            self._set_aside_while_running(_Damaged(f"{self.path} {detail}"))
        return self._db is not None

    # ------------------------------------------------------------------ room for the WAL

    def _make_reserve(self) -> None:
        """Keep :data:`RESERVE_MAX_BYTES` (at most 1/16 of the file system) in
        ``<db>.reserve``, if there is room for twice that."""
        try:
            stat = os.statvfs(self.path.parent)
            size = min(RESERVE_MAX_BYTES, stat.f_blocks * stat.f_frsize // 16)
            if self.reserve_path.exists():
                self._reserve_bytes = self.reserve_path.stat().st_size
                return
            if stat.f_bavail * stat.f_frsize < 4 * size:
                return
            with open(self.reserve_path, "wb") as out:
                out.write(b"\0" * size)
            self._reserve_bytes = size
        except OSError:
            with contextlib.suppress(OSError):
                self.reserve_path.unlink()

    def _release_reserve(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.reserve_path.unlink()
            log.warning("storage: gave up the %d byte reserve so the WAL can be checkpointed", self._reserve_bytes)

    def _keep_room(self) -> None:
        """After a commit: while free space is short of twice the WAL's bound,
        empty the WAL (checkpoint before the disk is full), then give up the
        oldest history items, so that the store's own growth never fills the
        partition (undelivered events still can: they are never given up here)."""
        need = 4 * _wal_bytes(self.path.parent)  # the WAL, its checkpoint, and the next items
        if self._room() >= need:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db_execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if self._room() < need:
                self._prune_history_for_room(quarter=False)

    def _room(self) -> int:
        """Bytes the database can still grow by: free space on its file system
        plus the free pages inside it (reused before the file grows)."""
        try:
            stat = os.statvfs(self.path.parent)
            free = stat.f_bavail * stat.f_frsize
            if free >= 4 * WAL_LIMIT_BYTES:  # the common case: no query
                return free
            free_pages = int(self._db_execute("PRAGMA freelist_count").fetchone()[0])
            page = int(self._db_execute("PRAGMA page_size").fetchone()[0])
        except (OSError, sqlite3.Error):
            return 1 << 62
        return free + free_pages * page


class _Corrupt(Exception):
    """The database file is damaged (quick_check failed or not a database)."""


_HISTORY_QUERY = (
    "SELECT time, created, class, confidence, compartment, fallback, payload FROM items "
    "WHERE time >= ? AND time < ? ORDER BY seq"
)


def _history(db: sqlite3.Connection, since: str, until: str | None) -> list[HistoryItem]:
    return _history_items(db.execute(_HISTORY_QUERY, (since, until if until is not None else "\uffff")).fetchall())


def _history_items(rows: list[Any]) -> list[HistoryItem]:
    return [
        HistoryItem(
            time=r[0],
            created=r[1],
            label=r[2],
            confidence=r[3],
            compartment=r[4],
            fallback=bool(r[5]),
            payload=_json_object(r[6]) or {},
        )
        for r in rows
    ]


def _json_object(text: Any) -> dict[str, Any] | None:
    """A JSON object kept in a cell, or None when there is none or it is damaged: a bit flipped
    inside one cell's text passes SQLite's checks, and must cost that item's details only (the
    history's other columns, the counts and the outbox do not depend on it)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        log.warning("state database: a damaged JSON value ignored: %.60r", text)
        return None
    return value if isinstance(value, dict) else None


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
        return _json_object(row[0]) if row else None

    def close(self) -> None:
        self._db.close()


class _Damaged(Exception):
    """The database file was truncated or overwritten while open (our own check)."""


def _read_outbox(db: sqlite3.Connection, last_seq: int) -> list[tuple[int, str, str, str, float]]:
    """The outbox rows a damaged database still gives: all at once, else by
    ranges of event numbers, else one by one within a range that fails."""
    query = "SELECT seq, event_id, topic, payload, created FROM outbox"
    try:
        return db.execute(query + " ORDER BY seq").fetchall()
    except sqlite3.Error:
        pass
    rows: list[tuple[int, str, str, str, float]] = []
    step = 256
    for high in range(last_seq, max(0, last_seq - 4096 * step), -step):
        low = max(0, high - step)
        try:
            rows.extend(db.execute(query + " WHERE seq > ? AND seq <= ?", (low, high)).fetchall())
        except sqlite3.Error:
            for seq in range(low + 1, high + 1):
                with contextlib.suppress(sqlite3.Error):
                    rows.extend(db.execute(query + " WHERE seq = ?", (seq,)).fetchall())
    return sorted(rows)


class _DirectoryLock:
    """An exclusive ``flock`` on the state directory, held while open.

    The directory, not a file in it: a file can be deleted from under a running
    agent (and a second agent would then lock a new one), an open directory
    cannot be replaced while it holds the database. ``<db>.lock`` only says
    which pid holds it.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # releases the lock


def _lock_exclusively(directory: Path, pid_file: Path) -> _DirectoryLock:
    """Take an exclusive ``flock`` on ``directory`` without waiting; write our pid into ``pid_file``."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"{directory}: cannot open the state directory to lock it ({exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            holder = pid_file.read_text(encoding="utf-8").strip()[:20]
        except OSError:
            holder = ""
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreLockedError(
            f"{pid_file.with_suffix('')}: another bin-agent{who} is using this database (it holds a lock on "
            f"{directory}); stop it first, or give this one its own agent.state_dir"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(f"{directory}: cannot lock ({exc})") from None
    with contextlib.suppress(OSError):  # a full disk may refuse even these bytes
        pid_file.write_text(str(os.getpid()), encoding="utf-8")
    return _DirectoryLock(fd)


def _error_code(exc: BaseException) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_corruption(exc: BaseException) -> bool:
    """SQLite says the file is damaged (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``), not that the disk failed."""
    return _error_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _is_full(exc: BaseException) -> bool:
    return _error_code(exc) == 13 or "full" in str(exc)  # SQLITE_FULL


def _is_storage_failure(exc: BaseException) -> bool:
    """Errors of the disk rather than of the file: full, I/O, cannot open, read-only."""
    return _error_code(exc) in (8, 10, 13, 14)  # READONLY, IOERR, FULL, CANTOPEN


def _wal_bytes(directory: Path) -> int:
    """How big the WAL may grow before a checkpoint (see :data:`WAL_LIMIT_BYTES`)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return WAL_LIMIT_BYTES
    return max(64 * 1024, min(WAL_LIMIT_BYTES, stat.f_blocks * stat.f_frsize // 32))


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


def _seq_pair(text: str | None) -> tuple[int, int] | None:
    """A stored ``[outbox seq, history row]`` pair; None when absent or damaged."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(n, int) for n in value):
        return int(value[0]), int(value[1])
    return None
