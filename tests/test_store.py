"""The SQLite outbox and counts, on a real file."""

from __future__ import annotations

import sqlite3

from bin_agent.store import Store


def record(store: Store, n: int, label: str = "glass", compartment: str = "glass", fallback: bool = False) -> None:
    store.record_event(
        event_id=f"id-{n}", topic="t/event", payload={"n": n}, label=label, compartment=compartment, fallback=fallback
    )


def test_outbox_is_oldest_first_and_acknowledged_one_by_one(tmp_path):
    store = Store(tmp_path / "s.db")
    for n in range(5):
        record(store, n)
    pending = store.pending()
    assert [e.event_id for e in pending] == [f"id-{n}" for n in range(5)]
    store.acknowledge(pending[1].seq)
    assert [e.event_id for e in store.pending()] == ["id-0", "id-2", "id-3", "id-4"]
    assert [e.event_id for e in store.pending(after_seq=pending[2].seq, limit=1)] == ["id-3"]
    assert store.pending_count() == 4


def test_counts_and_outbox_survive_reopening(tmp_path):
    store = Store(tmp_path / "s.db")
    record(store, 1, "glass", "glass")
    record(store, 2, "paper", "paper")
    record(store, 3, "trash", "residual", fallback=True)
    store.close()
    again = Store(tmp_path / "s.db")
    counts = again.counts()
    assert counts.by_class == {"glass": 1, "paper": 1, "trash": 1}
    assert counts.by_compartment == {"glass": 1, "paper": 1, "residual": 1}
    assert (counts.total, counts.fallback) == (3, 1)
    assert again.pending_count() == 3
    assert again.last_item() == {"n": 3}
    assert again.integrity_check() == "ok"


def test_reset_counts_keeps_pending_events(tmp_path):
    store = Store(tmp_path / "s.db")
    record(store, 1)
    store.reset_counts()
    assert store.counts().total == 0
    assert store.pending_count() == 1


def test_event_and_counts_are_one_transaction(tmp_path):
    store = Store(tmp_path / "s.db")
    record(store, 1)
    # A duplicate event id violates UNIQUE: the counts must not move either.
    try:
        record(store, 1)
    except sqlite3.IntegrityError:
        pass
    else:
        raise AssertionError("duplicate event id accepted")
    assert store.counts().total == 1
    assert store.pending_count() == 1


def test_database_is_in_wal_mode(tmp_path):
    Store(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_acknowledged_events_leave_the_outbox_and_the_unacknowledged_between_them_stay(tmp_path):
    """The acknowledged seqs are deleted as runs of consecutive numbers (one statement per
    run): a gap between two runs is an event without its PUBACK and must stay, in order."""
    store = Store(tmp_path / "s.db")
    for n in range(12):
        record(store, n)
    seqs = [entry.seq for entry in store.pending(limit=12)]
    acknowledged = {seqs[i] for i in (0, 1, 2, 4, 5, 8, 11)}
    store.acknowledge_many(sorted(acknowledged - {seqs[11]}, reverse=True))  # any order
    store.acknowledge(seqs[11])
    store.close()  # commits the deletes
    rows = sqlite3.connect(tmp_path / "s.db").execute("SELECT seq FROM outbox ORDER BY seq").fetchall()
    assert [seq for (seq,) in rows] == [seq for seq in seqs if seq not in acknowledged]
    again = Store(tmp_path / "s.db")
    assert [entry.event_id for entry in again.pending()] == ["id-3", "id-6", "id-7", "id-9", "id-10"]
    assert again.pending_count() == 5
