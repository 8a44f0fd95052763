"""labels.jsonl stays bounded (LabelStore.trim) without losing a label the bin still needs,
even when a crash cuts the rewrite; a state database of the version before ``counted_as``
keeps its counts when the labels are brought in."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from bin_agent import preflight
from bin_agent import store as store_module
from bin_agent.agent import HISTORY_PRUNE_SECONDS, build_agent
from bin_agent.learning.labels import (
    TRIM_MIN_BYTES,
    TRIM_TEMPORARY,
    LabelStore,
    correct_event,
    labels_at_start,
    reconcile_counts,
)
from bin_agent.store import Store
from tests.helpers import base_config, sigkill_when_it_says, wait_for
from tests.test_store_faults import record

ROUTES = {"cardboard": "paper", "paper": "paper", "glass": "glass", "metal": "metal", "plastic": "plastic"}


def captured(folder: Path, event_id: str, label: str, when: str = "2030-01-01T10:00:00.000Z") -> Path:
    """A captured item as the writer leaves it: ``<time>_<id>.jpg`` and its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{when.replace('-', '').replace(':', '').replace('.', '')}_{event_id}"
    (folder / f"{stem}.jpg").write_bytes(b"\xff\xd8 a photo")
    sidecar = folder / f"{stem}.json"
    info = {"event_id": event_id, "time": when, "class": label, "confidence": 0.9, "compartment": ROUTES[label]}
    sidecar.write_text(json.dumps(info))
    return sidecar


def delete_photo(sidecar: Path) -> None:
    """What the size cap does to an old item."""
    sidecar.unlink()
    sidecar.with_suffix(".jpg").unlink()


def test_a_trim_keeps_the_latest_label_of_each_photo_still_there_and_of_each_item_counted_as_another_class(tmp_path):
    folder = tmp_path / "capture"
    gone = captured(folder, "gone", "glass")
    counted = captured(folder, "counted", "glass")
    captured(folder, "kept", "paper")
    labels = LabelStore(folder)
    labels.add("gone", "metal", "glass", "mqtt")
    labels.add("counted", "paper", "glass", "mqtt")
    labels.add("kept", "glass", "paper", "mqtt")
    labels.add("kept", "metal", "paper", "mqtt")  # the latest line of "kept"
    with open(labels.path, "ab") as damaged:
        damaged.write(b'{"event_id": "cut", "lab\n')
    delete_photo(gone)
    delete_photo(counted)  # gone from the folder, but the counts count it as paper
    before = labels.all()

    os.chmod(labels.path, 0o640)
    trimmed = labels.trim(keep={"counted"})

    assert labels.path.stat().st_mode & 0o777 == 0o640, "who may read the labels stays the same"
    assert trimmed.rewritten and (trimmed.lines_before, trimmed.lines_after) == (5, 2)
    after = labels.all()
    assert after == {k: before[k] for k in ("counted", "kept")}
    assert after["kept"]["label"] == "metal", "the latest line of an event"
    assert labels.path.stat().st_size == trimmed.bytes_after
    assert not (folder / TRIM_TEMPORARY).exists()
    again = labels.trim(keep={"counted"})
    assert not again.rewritten and again.lines_after == 2, "nothing to drop: not rewritten"


def labels_of_deleted_photos(path: Path, first: int, at_least: int) -> None:
    """Append labels of items whose photos the size cap deleted (what a trim drops) until the file
    is ``at_least`` bytes; one write, as many appends would leave it."""
    lines = []
    size = path.stat().st_size
    n = first
    while size < at_least:
        entry = {"event_id": f"gone-{n}", "label": "paper", "predicted": "glass", "source": "cli", "time": "x"}
        lines.append(json.dumps(entry) + "\n")
        size += len(lines[-1])
        n += 1
    with open(path, "a") as out:
        out.write("".join(lines))


def test_the_running_agent_trims_the_labels_after_an_item_once_an_hour(tmp_path):
    """labels.jsonl is trimmed by the main loop, not only at the start: after an item, once
    HISTORY_PRUNE_SECONDS have passed on the loop's clock (the test's) since the last time, when it
    is at least TRIM_MIN_BYTES and twice what the last trim kept."""
    data = base_config(tmp_path, mqtt=False)
    data["camera"]["replay"] |= {"loop": True, "realtime": True}
    data["trigger"]["mode"] = "manual"  # an item when the test says
    data["capture"] = {"enabled": True}
    config = preflight.load_dict(data, base_dir=tmp_path)
    folder = Path(config.agent.state_dir) / "capture"
    captured(folder, "kept", "glass")
    labels = LabelStore(folder)
    labels.add("kept", "paper", "glass", "cli")  # its photo is there: every trim keeps it
    kept_size = labels.path.stat().st_size
    agent = build_agent(config)
    now = [1000.0]
    agent.monotonic = lambda: now[0]
    runner = threading.Thread(target=agent.run)
    runner.start()

    def item(n: int) -> None:
        """The n-th item sorted, and the loop past it (reading frames again)."""
        agent.trigger.request()
        assert wait_for(lambda: agent.items_sorted == n)
        frames = agent.frames_seen
        assert wait_for(lambda: agent.frames_seen > frames + 1)

    try:
        labels_of_deleted_photos(labels.path, 0, TRIM_MIN_BYTES)
        item(1)  # the first item after the start: due
        assert labels.path.stat().st_size == kept_size, "trimmed after the first item"
        assert set(labels.all()) == {"kept"}

        labels_of_deleted_photos(labels.path, 10_000, TRIM_MIN_BYTES)
        item(2)
        assert labels.path.stat().st_size >= TRIM_MIN_BYTES, "not again within the hour"

        now[0] += HISTORY_PRUNE_SECONDS
        item(3)
        assert labels.path.stat().st_size == kept_size, "trimmed again an hour later"
        assert set(labels.all()) == {"kept"}
    finally:
        agent.stop()
        runner.join(60)


TRIM_CUT_BY_KILL = """
import sys, time
from pathlib import Path
import bin_agent.learning.labels as labels

def half_then_killed(path, data):
    with open(path, "wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
    print("half written", flush=True)
    time.sleep(60)

labels.write_synced = half_then_killed
labels.LabelStore(Path(sys.argv[1])).trim()
"""


def test_a_trim_killed_mid_rewrite_loses_no_label_and_its_temporary_is_ignored_then_removed(tmp_path):
    """SIGKILL while the trim writes its temporary file: labels.jsonl is the whole old file, a
    reader never reads the half temporary, the next start's trim removes or overwrites it."""
    folder = tmp_path / "capture"
    for n in range(4):
        captured(folder, f"e{n}", "glass")
    labels = LabelStore(folder)
    for n in range(4):
        labels.add(f"e{n}", "paper", "glass", "mqtt")
    delete_photo(next(folder.glob("*_e0.json")))
    before = labels.all()
    original = labels.path.read_bytes()

    sigkill_when_it_says(TRIM_CUT_BY_KILL, [str(folder)], "half written")
    assert labels.path.read_bytes() == original and labels.all() == before, "nothing lost, the temporary unread"
    assert 0 < (folder / TRIM_TEMPORARY).stat().st_size < len(original), "a half-written temporary left"
    labels.add("e1", "metal", "glass", "mqtt")  # appends go on, to labels.jsonl

    store = Store(tmp_path / "state" / "bin-agent.db")
    try:
        labels_at_start(folder, store, ROUTES)
    finally:
        store.close()
    assert not (folder / TRIM_TEMPORARY).exists()
    assert labels.all() == {**{k: before[k] for k in ("e2", "e3")}, "e1": labels.all()["e1"]}
    assert labels.all()["e1"]["label"] == "metal"


def test_a_stale_trim_temporary_is_removed_at_start_even_when_nothing_is_trimmed(tmp_path):
    folder = tmp_path / "capture"
    captured(folder, "e0", "glass")
    LabelStore(folder).add("e0", "paper", "glass", "mqtt")
    (folder / TRIM_TEMPORARY).write_bytes(b'{"event_id": "e0", "label": "me')
    assert LabelStore(folder).all()["e0"]["label"] == "paper"
    trimmed = LabelStore(folder).trim()
    assert not trimmed.rewritten and not (folder / TRIM_TEMPORARY).exists()


TRIM_HELD = """
import sys, time
from pathlib import Path
import bin_agent.learning.labels as labels

real = labels.write_synced
def held(path, data):
    print("locked", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.01)
    real(path, data)

labels.write_synced = held
labels.LabelStore(Path(sys.argv[1])).trim()
"""


def test_a_label_appended_while_another_process_trims_goes_to_the_new_file(tmp_path):
    """bin-agent label in a terminal appends while the agent trims: the append waits for the
    trim's lock and then writes to the file the trim renamed into place, not to the replaced one."""
    folder = tmp_path / "capture"
    for n in range(3):
        captured(folder, f"e{n}", "glass")
    labels = LabelStore(folder)
    labels.add("e0", "paper", "glass", "cli")
    labels.add("gone", "paper", "glass", "cli")  # no photo: trimmed
    go = tmp_path / "go"
    process = subprocess.Popen(
        [sys.executable, "-c", TRIM_HELD, str(folder), str(go)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    appender = threading.Thread(target=LabelStore(folder).add, args=("e1", "metal", "glass", "cli"))
    appender.start()
    time.sleep(0.3)
    assert appender.is_alive(), "the append waits for the trim"
    go.touch()
    assert process.wait(30) == 0
    appender.join(10)
    assert set(LabelStore(folder).all()) == {"e0", "e1"}


def old_database(path: Path, counts: dict[tuple[str, str], int], since: str) -> None:
    """A state database as the version before ``counted_as`` made it (its CREATE statements)."""
    schema = store_module._SCHEMA
    start = schema.index("-- What the counts count an item as")
    old_schema = schema[:start] + schema[schema.index(");", start) + 2 :]
    assert "counted_as" not in old_schema
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [("schema_version", "1"), ("counts_since", since)])
    db.executemany("INSERT INTO counts(kind, key, n) VALUES (?, ?, ?)", [(*k, n) for k, n in counts.items()])
    db.commit()
    db.close()


def test_a_database_of_the_previous_version_opens_and_keeps_the_counts_its_labels_already_moved(tmp_path):
    """The previous version moved the counts by the label history and kept no counted_as rows:
    at the first start its labels are adopted as what the counts count (nothing moves twice),
    and a later correction moves the item from its label."""
    folder = tmp_path / "capture"
    captured(folder, "a", "glass")
    captured(folder, "b", "glass")
    LabelStore(folder).add("a", "paper", "glass", "mqtt")  # the previous version moved it: glass -> paper
    db = tmp_path / "bin-agent.db"
    old_database(
        db,
        {
            ("class", "paper"): 1,
            ("class", "glass"): 1,
            ("compartment", "paper"): 1,
            ("compartment", "glass"): 1,
            ("total", ""): 2,
        },
        "2029-12-31T00:00:00Z",
    )
    store = Store(db)
    try:
        assert not store.counted_as_complete and store.counts().by_class == {"paper": 1, "glass": 1}
        assert reconcile_counts(folder, store, ROUTES) == 0
        assert store.counts().by_class == {"paper": 1, "glass": 1}, "not moved a second time"
        assert store.counted_as_complete and store.counted_as("a") == ("paper", "paper")
        result = correct_event(
            {"event_id": "a", "label": "metal"}, folder=folder, store=store, compartments=ROUTES, classes=list(ROUTES)
        )
        assert result["was"] == "paper" and store.counts().by_class == {"metal": 1, "glass": 1}
    finally:
        store.close()
    again = Store(db)
    try:
        assert again.counted_as_complete and again.counted_as("a") == ("metal", "metal")
        row = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert row == ("2",)
    finally:
        again.close()


def test_a_label_of_an_item_whose_record_is_unreadable_moves_no_count_and_the_others_still_move(tmp_path):
    """``bin-agent label`` answered two items while the agent was stopped; one item's sidecar
    was then cut short (a damaged card). At the start the readable one moves (glass -> paper),
    the unreadable one is left as counted (its prediction cannot be read), and the start goes on."""
    folder = tmp_path / "capture"
    captured(folder, "id-0", "glass")
    damaged = captured(folder, "id-1", "glass")
    store = Store(tmp_path / "bin-agent.db")
    try:
        record(store, 0)  # both counted as glass
        record(store, 1)
        labels = LabelStore(folder)
        labels.add("id-0", "paper", "glass", "cli")
        labels.add("id-1", "paper", "glass", "cli")
        damaged.write_text('{"event_id": "id-1", "ti')
        assert reconcile_counts(folder, store, ROUTES) == 1
        assert store.counts().by_class == {"paper": 1, "glass": 1}
        assert store.counted_as_rows() == {"id-0": ("paper", "paper")}
    finally:
        store.close()
