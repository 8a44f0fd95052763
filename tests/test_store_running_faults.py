"""Storage damage while the agent runs (issue 24 items 1-3), made for real: the
database files unlinked, truncated or overwritten under an open store, a small
tmpfs filled by the store's own writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from bin_agent.store import Store
from tests.helpers import tmpfs
from tests.test_store_faults import make_database, record


def unlink_all(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()


@pytest.mark.parametrize("noticed_by", ["next write", "periodic check"])
def test_database_deleted_while_running_is_saved_from_the_open_file(tmp_path, caplog, noticed_by):
    """db, -wal and -shm unlinked under a running store with 300 undelivered events:
    said once, and the open file's content is saved into a fresh database at the path."""
    path = tmp_path / "bin-agent.db"
    make_database(path, 200)  # some in the file ...
    store = Store(path)
    for n in range(200, 300):  # ... and some only in the WAL
        record(store, n)
    store.acknowledge(store.pending(0, 1)[0].seq)  # one delivered, its delete not yet committed
    unlink_all(path)
    with caplog.at_level(logging.ERROR, logger="bin_agent.store"):
        if noticed_by == "next write":
            record(store, 300)
        else:
            store._next_check = 0.0
            store.retry_if_due()
    said = [r.getMessage() for r in caplog.records if "deleted" in r.getMessage()]
    assert len(said) == 2 and "copying what the open file still holds" in said[0], said  # the find, the rescue
    assert not any(r.exc_info for r in caplog.records)
    assert path.exists() and not store.degraded
    expected = 299 + (noticed_by == "next write")
    assert store.pending_count() == expected
    store.close()
    again = Store(path)
    try:
        assert again.incident is None, "the fresh database is the known one at the next start"
        assert again.pending_count() == expected
        assert again.counts().total == expected + 1, "the counts were saved too"
        assert again.health()["incident"]["kind"] == "deleted", "the incident is kept in the database"
    finally:
        again.close()


@pytest.mark.parametrize("how", ["moved over it", "the database moved away first"])
def test_an_old_copy_put_at_the_databases_path_while_running_is_kept_aside_and_the_open_one_saved(
    tmp_path, caplog, how
):
    """A person restores yesterday's copy at the running bin's database path (``mv`` over it,
    or the database moved aside first: another inode at the path either way). Noticed at the
    next write: the copy is kept as ``bin-agent.db.replaced-<time>`` (not lost, not mistaken
    for the bin's), and every event the open database holds (its file's and its WAL's) goes
    into a fresh database at the path."""
    path = tmp_path / "bin-agent.db"
    copy = tmp_path / "yesterday.db"
    make_database(copy, 20)
    make_database(path, 100)
    store = Store(path)
    for n in range(100, 150):
        record(store, n)
    stranger = copy.read_bytes()
    if how == "the database moved away first":
        os.rename(path, tmp_path / "moved-away.db")  # still linked: only its inode tells
    os.replace(copy, path)
    with caplog.at_level(logging.ERROR, logger="bin_agent.store"):
        record(store, 150)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "another file put at its path" in said and "copying what the open file still holds" in said, said
    kept = list(tmp_path.glob("bin-agent.db.replaced-*Z"))
    assert len(kept) == 1 and kept[0].read_bytes() == stranger, "the copy put there is kept, as it was"
    assert not store.degraded and store.pending_count() == 151
    store.close()
    again = Store(path)
    try:
        assert again.pending_count() == 151 and again.counts().total == 151
        assert again.health()["incident"]["kind"] == "replaced"
    finally:
        again.close()


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_database_damaged_while_running_is_noticed_at_the_next_write_and_its_events_delivered(tmp_path, caplog, damage):
    """Truncated to half or its header overwritten while open: noticed at the next
    write (not 13 s later by a reader's traceback), the events still readable through
    the open connection go to a fresh database, the exact number lost is said."""
    path = tmp_path / "bin-agent.db"
    make_database(path, 2016)
    store = Store(path)
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        with open(path, "r+b") as out:
            out.write(os.urandom(100))
    with caplog.at_level(logging.ERROR, logger="bin_agent.store"):
        record(store, 2016)
        assert store.fill_counts() is not None  # a reader: no traceback
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "while running" in said and "moved aside" in said, said
    assert not any(r.exc_info for r in caplog.records)
    assert list(tmp_path.glob("bin-agent.db.corrupt-*Z")), "the damaged file is kept"
    delivered = store.pending_count()
    lost = 2017 - delivered
    if lost:
        assert f"{lost} of 2016 undelivered event(s) could not be read back" in said, said
    print(f"{damage}: {delivered - 1} of 2016 undelivered events read back, {lost} lost")
    if damage == "header":
        assert lost == 0, "only the header is damaged: every event is read back through the open connection"

    assert store.counts().total == 2017
    store.close()
    again = Store(path)
    try:
        assert again.pending_count() == delivered and again.counts().total == 2017
    finally:
        again.close()


@pytest.fixture
def small_disk(tmp_path: Path):
    with tmpfs(tmp_path / "small", "size=1m,mode=0700") as mount:
        yield mount


def test_a_small_partition_is_not_filled_by_the_store_itself_and_the_counts_stay(small_disk, caplog):
    """A 1 MB state partition and 3,000 items of 1.5 KB, every event delivered at
    once: only the store's own history and WAL could fill it. The WAL is bounded
    and checkpointed before the disk is full, the oldest history gives way (said
    once); storage never fails, and the counts of every item are in the database."""
    path = small_disk / "bin-agent.db"
    store = Store(path, max_memory_events=100)
    items = 3000
    with caplog.at_level(logging.WARNING, logger="bin_agent.store"):
        for n in range(items):
            seq = store.record_event(
                event_id=f"id-{n}",
                topic="t/event",
                payload={"n": n, "pad": "x" * 1500},
                label="glass",
                compartment="glass",
                fallback=False,
            )
            store.acknowledge(seq)
            assert not store.degraded, f"storage failed at item {n}: {store.health()}"
        history = len(store.history("0"))
        store.close()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "dropped the 25 oldest history item(s)" in said[0], said
    assert history >= 50, f"only {history} history items kept"
    again = Store(path)
    try:
        assert again.counts().total == items, "the counts of every item are in the database"
    finally:
        again.close()
    print(f"1 MB partition, {items} items: {history} newest kept in the history, counts complete")
