"""Durable state: the event outbox and the counts, in one SQLite database.

Every sorted item is written here before anyone tries to publish it: the event
goes into the ``outbox`` table and the counts are incremented in the same
transaction, so after a crash (even SIGKILL or a power cut) the counts always
agree with the events and no committed event is lost. The MQTT side deletes an
event from the outbox only when the broker has acknowledged it (PUBACK).

The database runs in WAL mode with ``synchronous=FULL``: a committed
transaction survives a power cut, which is what an SD card in a bin needs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

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
"""


class StoreError(RuntimeError):
    """The state database cannot be opened or written."""


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


class Store:
    """The agent's SQLite database (thread-safe; one connection behind a lock).

    :param path: database file; its directory is created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('counts_since', ?)", (_now_iso(),)
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the state database ({exc})") from None
        self._lock = threading.Lock()

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
    ) -> None:
        """Queue an event and count it, atomically."""
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT INTO outbox(event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                (event_id, topic, text, time.time()),
            )
            self._increment("class", label)
            self._increment("compartment", compartment)
            self._increment("total", "")
            if fallback:
                self._increment("fallback", "")
            self._db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_item', ?)", (text,)
            )

    def adjust_counts(self, changes: dict[tuple[str, str], int]) -> None:
        """Add ``delta`` to each ``(kind, key)`` count in one transaction, never below 0
        (a corrected item moves from one class/compartment to another)."""
        with self._lock, self._transaction():
            for (kind, key), delta in changes.items():
                self._db.execute(
                    "INSERT INTO counts(kind, key, n) VALUES (?, ?, MAX(?, 0)) "
                    "ON CONFLICT(kind, key) DO UPDATE SET n = MAX(n + ?, 0)",
                    (kind, key, delta, delta),
                )
                self._db.execute("DELETE FROM counts WHERE kind = ? AND key = ? AND n = 0", (kind, key))

    def acknowledge(self, seq: int) -> None:
        """The broker has the event: drop it from the outbox."""
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def reset_counts(self) -> None:
        """Zero the counts (the bin was emptied). Pending events are kept."""
        with self._lock, self._transaction():
            self._db.execute("DELETE FROM counts")
            self._db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('counts_since', ?)", (_now_iso(),)
            )

    # ------------------------------------------------------------------ reading

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """Unacknowledged events after ``after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def counts(self) -> Counts:
        with self._lock:
            rows = self._db.execute("SELECT kind, key, n FROM counts").fetchall()
            since = self._meta("counts_since") or ""
        by_kind: dict[str, dict[str, int]] = {"class": {}, "compartment": {}, "total": {}, "fallback": {}}
        for kind, key, n in rows:
            by_kind.setdefault(kind, {})[key] = n
        return Counts(
            by_class=dict(sorted(by_kind["class"].items())),
            by_compartment=dict(sorted(by_kind["compartment"].items())),
            total=by_kind["total"].get("", 0),
            fallback=by_kind["fallback"].get("", 0),
            since=since,
        )

    def last_item(self) -> dict[str, Any] | None:
        with self._lock:
            text = self._meta("last_item")
        return json.loads(text) if text else None

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers

    def _increment(self, kind: str, key: str) -> None:
        self._db.execute(
            "INSERT INTO counts(kind, key, n) VALUES (?, ?, 1) "
            "ON CONFLICT(kind, key) DO UPDATE SET n = n + 1",
            (kind, key),
        )

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
