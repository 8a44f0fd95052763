"""The store's promises that a mutation run found unguarded (issue 24), each made
for real: a child process under strace, a real SIGKILL, a full tmpfs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bin_agent.store import Store
from tests.test_store_faults import fill, make_database, record, tiny_disk  # noqa: F401 - the fixture

RECORD_ITEMS = """
import sys, time
from bin_agent.store import Store
store = Store(sys.argv[1])
first, count = int(sys.argv[2]), int(sys.argv[3])
durable = sys.argv[5] == "durable"
for n in range(first, first + count):
    seq = store.record_event(event_id=f"id-{n}", topic="t/event", payload={"n": n, "pad": "x" * 400},
                             label="glass", compartment="glass", fallback=False, durable=durable)
    if sys.argv[5] == "commit, then sync()":
        store.sync()  # as the agent does, once the servo has its command
    store.mark_actuated(seq)
print("recorded", flush=True)
if sys.argv[4] == "wait":
    time.sleep(60)
store.close()
"""


def run_child(path: Path, first: int, count: int, then: str = "close", how: str = "durable") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RECORD_ITEMS, str(path), str(first), str(count), then, how],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def record_then_sync(store: Store, n: int, *, durable: bool = False) -> None:
    """Item ``n`` as the agent records it: committed (without its sync), then synced."""
    store.record_event(
        event_id=f"id-{n}",
        topic="t/event",
        payload={"n": n},
        label="glass",
        compartment="glass",
        fallback=False,
        durable=durable,
    )
    store.sync()


def sigkill_once_recorded(child: subprocess.Popen[str]) -> None:
    """SIGKILL a ``run_child(..., then="wait")`` once it has said its items are recorded."""
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()


def syncs_of(path: Path, first: int, count: int, how: str = "durable") -> int:
    trace = path.with_name("strace.out")
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace), sys.executable, "-c", RECORD_ITEMS]
        + [str(path), str(first), str(count), "close", how],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    return sum(1 for line in trace.read_text().splitlines() if re.search(r"\b(fsync|fdatasync)\(", line))


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
@pytest.mark.parametrize("how", ["durable", "commit, then sync()"])
def test_every_recorded_item_is_synced_once(tmp_path, how):
    """Each item's commit reaches the disk (``synchronous=FULL``: a power cut keeps
    it), and costs one sync, not three (no synced marker, no second commit); the same
    when the agent commits it first and syncs it once the servo has its command."""
    path = tmp_path / "bin-agent.db"
    make_database(path, 1)
    base = syncs_of(path, 100, 0, how)
    items = 60
    loaded = syncs_of(path, 200, items, how)
    per_item = (loaded - base) / items
    print(f"syncs per item: {per_item:.2f} ({loaded} for {items} items, {base} for open+close)")
    assert per_item >= 1.0, "an item's commit was not synced: a power cut loses it"
    assert per_item < 1.5, f"{per_item:.2f} syncs per item (one is the promise)"


def test_an_item_committed_before_its_sync_is_not_handed_out_until_synced_and_a_sigkill_keeps_it(tmp_path):
    """``record_event(durable=False)``: the pump sees nothing of it (``pending``,
    ``last_seq``) until :meth:`Store.sync`, and a SIGKILL before the sync keeps it
    (the commit is the kernel's, only a power cut may lose it)."""
    store = Store(tmp_path / "bin-agent.db")
    try:
        record(store, 1)
        first = store.last_seq
        seq = store.record_event(
            event_id="id-2",
            topic="t/event",
            payload={"n": 2},
            label="glass",
            compartment="glass",
            fallback=False,
            durable=False,
        )
        assert [e.event_id for e in store.pending()] == ["id-1"] and store.last_seq == first
        store.sync()
        assert [e.event_id for e in store.pending()] == ["id-1", "id-2"] and store.last_seq == seq
    finally:
        store.close()
    path = tmp_path / "killed.db"
    sigkill_once_recorded(run_child(path, 0, 3, then="wait", how="commit, no sync"))
    again = Store(path)
    try:
        assert [e.event_id for e in again.pending()] == ["id-0", "id-1", "id-2"]
        assert again.counts().total == 3 and again.incident is None
    finally:
        again.close()


@pytest.mark.parametrize("durable", [True, False])
def test_last_seq_never_names_an_event_pending_does_not_hand_out(tmp_path, durable):
    """What the MQTT pump relies on: it reads ``last_seq`` without the lock, then
    ``pending()``, and takes everything up to ``last_seq`` as read. Read while another
    thread records and syncs, ``last_seq`` must never name an event that ``pending()``
    then leaves out (one committed but not yet synced), or that event waits in the
    outbox until the next one comes."""
    import threading

    store = Store(tmp_path / "bin-agent.db")
    done = threading.Event()
    missed: list[int] = []

    def pump() -> None:
        while not done.is_set():
            newest = store.last_seq
            handed = {entry.seq for entry in store.pending(0, 100_000)}
            missed.extend(seq for seq in range(1, newest + 1) if seq not in handed)

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        for n in range(300):
            record_then_sync(store, n, durable=durable)
    finally:
        done.set()
        reader.join(10)
        store.close()
    assert not missed, f"last_seq named {len(set(missed))} event(s) pending() did not hand out"


def test_a_card_that_fails_the_sync_still_gets_the_events_out_and_says_so_once(tmp_path, monkeypatch, caplog):
    """``fsync`` of the WAL fails (EIO, a worn card): the events committed before it are
    still handed to the pump (the process holds them; holding them back would lose them
    for good), and the log says once that a power cut may lose them, not once per item."""
    import errno
    import logging

    real_fsync = os.fsync

    def failing_card(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("-wal"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    store = Store(tmp_path / "bin-agent.db")
    monkeypatch.setattr(os, "fsync", failing_card)
    try:
        with caplog.at_level(logging.ERROR, logger="bin_agent.store"):
            for n in range(3):
                record_then_sync(store, n)
        assert [e.event_id for e in store.pending()] == ["id-0", "id-1", "id-2"]
        said = [r.getMessage() for r in caplog.records if "could not be synced" in r.getMessage()]
        assert len(said) == 1 and "a power cut may lose them" in said[0], said
    finally:
        monkeypatch.setattr(os, "fsync", real_fsync)
        store.close()


def test_a_database_rolled_back_after_a_sigkill_is_detected(tmp_path):
    """The marker is rewritten after every commit: events committed just before a
    SIGKILL and then lost with the -wal (deleted, or an older copy put back) are
    noticed at the next start, not taken for a normal restart."""
    path = tmp_path / "bin-agent.db"
    make_database(path, 3)  # closed: checkpointed into the file
    sigkill_once_recorded(run_child(path, 3, 5, then="wait"))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink()  # the last 5 events were only in the WAL
    store = Store(path)
    try:
        assert store.incident is not None and store.incident["kind"] == "rolled_back", store.incident
        assert "lost its last 5 event(s)" in store.incident["detail"]
    finally:
        store.close()


def test_close_writes_the_events_held_in_memory(tiny_disk):  # noqa: F811 - the fixture
    """Events held in memory while the disk was full are written by close() once
    there is room, without waiting for the next retry."""
    filler = fill(tiny_disk, 120_000)
    store = Store(tiny_disk / "bin-agent.db", max_memory_events=500)
    n = 0
    while not store.degraded:
        record(store, n)
        n += 1
    for extra in range(5):
        record(store, n + extra)
    total = n + 5
    held = store.health()["held_in_memory"]
    assert held >= 5
    filler.unlink()  # room again; no retry_if_due() before the stop
    store.close()
    again = Store(tiny_disk / "bin-agent.db")
    try:
        assert again.counts().total == total, "the counts held in memory were written at close"
        assert again.pending_count() == total, "the events held in memory were written at close"
        assert [e.event_id for e in again.pending(0, 10_000)][-1] == f"id-{total - 1}"
    finally:
        again.close()


def test_events_held_from_a_full_start_never_collide_with_rows_the_marker_did_not_know(tiny_disk, tmp_path):  # noqa: F811
    """A full disk at start: the highest event number in the database is unknown
    (the marker lags behind it, or is gone), so held events are numbered far above
    any possible row; when the database opens they are all written, none collides."""
    make_database(tmp_path / "bin-agent.db", 3)
    shutil.copy(tmp_path / "bin-agent.db", tiny_disk / "bin-agent.db")  # no marker: it lags (power cut)
    filler = fill(tiny_disk, 0)
    full = Store(tiny_disk / "bin-agent.db")
    assert full.degraded
    for n in range(3, 6):
        record(full, n)
    filler.unlink()
    full._last_retry = 0.0
    assert full.retry_if_due(), f"the held events could not be written: {full.health()['error']}"
    assert [e.event_id for e in full.pending()] == [f"id-{n}" for n in range(6)]
    assert full.counts().total == 6
    full.close()
