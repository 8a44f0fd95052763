"""A bin whose wall clock is wrong or jumps: a Raspberry Pi 4 has no battery-backed clock and
boots at the last time it saved (fake-hwclock, systemd-timesyncd's clock file), hours to months
behind after a power cut or storage, then jumps forward when NTP answers.

This machine's clock cannot be set from a test: the wall clock is injected where the code reads
it (the store's ``clock`` and ``clock_synced``, :func:`bin_agent.clock.synchronised` for the
agent), and everything else is real: SQLite files, capture sidecars and photos, restarts,
libc's ``adjtimex``, a file where timesyncd puts its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from bin_agent import clock, preflight
from bin_agent.agent import build_agent
from bin_agent.learning.labels import LabelStore, correct_event, reconcile_counts
from bin_agent.store import Store
from bin_agent.tools import doctor
from tests.helpers import base_config

DAY = 86400.0
MARCH = 1_772_000_000.0  # 2026-02-25: the time the bin last saw before the power cut
COMPARTMENTS = {"paper": "paper", "glass": "glass", "metal": "metal", "plastic": "plastic", "trash": "rest"}
CLASSES = sorted(COMPARTMENTS)


class WallClock:
    """The bin's wall clock: its time and whether NTP has set it."""

    def __init__(self, now: float, synced: bool | None) -> None:
        self.now, self.synced = now, synced

    def store(self, path: Path, **bounds: float) -> Store:
        return Store(path, clock=lambda: self.now, clock_synced=lambda: self.synced, **bounds)


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def sort_item(store: Store, folder: Path, n: int, label: str = "glass", *, when: float) -> str:
    """An item recorded by the store and captured (photo and sidecar), stamped ``when``."""
    event_id = f"item-{n}"
    stamp = iso(when)
    payload = {"id": event_id, "time": stamp, "class": label, "compartment": COMPARTMENTS[label]}
    store.record_event(
        event_id=event_id,
        topic="smartbin/test-bin/event",
        payload=payload,
        label=label,
        compartment=COMPARTMENTS[label],
        fallback=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    stem = stamp.replace("-", "").replace(":", "").replace(".", "") + f"_{event_id}"
    Image.new("RGB", (8, 8)).save(folder / f"{stem}.jpg")
    sidecar = {"event_id": event_id, "time": stamp, "class": label, "compartment": COMPARTMENTS[label]}
    (folder / f"{stem}.json").write_text(json.dumps(sidecar))
    return event_id


def correct(store: Store, folder: Path, event_id: str, label: str) -> dict:
    return correct_event(
        {"event_id": event_id, "label": label}, folder=folder, store=store, compartments=COMPARTMENTS, classes=CLASSES
    )


# --------------------------------------------------------------------------- counted since the reset


def test_a_correction_of_an_item_stamped_before_the_reset_by_a_clock_that_booted_behind_still_moves_the_counts(
    tmp_path,
):
    """The bin is emptied (counts reset) on the 25th; the power goes and it boots a day behind
    (the clock restored from an old save): its next item is stamped before ``counts.since``,
    yet it is counted, and a correction of it moves the counts."""
    wall, folder = WallClock(MARCH, synced=True), tmp_path / "capture"
    store = wall.store(tmp_path / "bin-agent.db")
    sort_item(store, folder, 1, when=wall.now - 60)
    wall.now += 60
    store.reset_counts()
    store.close()
    wall.now, wall.synced = MARCH - DAY, False  # the power cut: boots a day behind, no network
    store = wall.store(tmp_path / "bin-agent.db")
    item = sort_item(store, folder, 2, when=wall.now)
    assert iso(wall.now) < store.counts().since, "stamped before the reset"
    result = correct(store, folder, item, "paper")
    assert result["counts_changed"] and result["was"] == "glass"
    assert store.counts().by_class == {"paper": 1} and store.counts().total == 1
    store.close()


def test_a_correction_of_an_item_counted_before_the_reset_moves_no_count_though_a_clock_ahead_stamped_it_after(
    tmp_path,
):
    """The other way round: an item stamped by a clock a day ahead (a wrong NTP answer, a date
    set by hand), the clock put right, then the reset: the item is not counted any more, and its
    correction moves nothing, whatever the stamps say."""
    wall, folder = WallClock(MARCH + DAY, synced=True), tmp_path / "capture"
    store = wall.store(tmp_path / "bin-agent.db")
    item = sort_item(store, folder, 1, when=wall.now)
    wall.now = MARCH
    store.reset_counts()
    assert iso(MARCH + DAY) > store.counts().since, "stamped after the reset"
    result = correct(store, folder, item, "paper")
    assert not result["counts_changed"] and store.counts().total == 0
    store.close()


def test_the_next_start_moves_the_counts_of_a_label_whose_item_a_clock_behind_stamped_before_the_reset(tmp_path):
    """``bin-agent label`` (or a correction a kill cut before its counts) is brought into the
    counts at the next start: also for an item stamped before the reset by a clock that booted
    behind, and not for an item recorded before the reset."""
    wall, folder = WallClock(MARCH, synced=True), tmp_path / "capture"
    store = wall.store(tmp_path / "bin-agent.db")
    before = sort_item(store, folder, 1, when=wall.now)
    wall.now += 60
    store.reset_counts()
    store.close()
    wall.now, wall.synced = MARCH - DAY, False
    store = wall.store(tmp_path / "bin-agent.db")
    after = sort_item(store, folder, 2, when=wall.now)
    store.close()
    labels = LabelStore(folder)
    labels.add(before, "metal", "glass", "cli")
    labels.add(after, "paper", "glass", "cli")
    store = wall.store(tmp_path / "bin-agent.db")
    assert reconcile_counts(folder, store, COMPARTMENTS) == 1
    assert store.counts().by_class == {"paper": 1} and store.counted_as_rows() == {after: ("paper", "paper")}
    store.close()


# --------------------------------------------------------------------------- ages of undelivered events, history


def test_a_clock_jumping_months_ahead_drops_no_undelivered_event(tmp_path):
    """Offline after a power cut, the bin sorts with its clock three months behind; NTP answers
    (across a restart of the agent) and the clock jumps forward: no event is dropped for
    ``max_outbox_age_days`` at once. Their age counts from the sync: a week later they go."""
    wall = WallClock(MARCH, synced=False)
    store = wall.store(tmp_path / "bin-agent.db", max_outbox_age_days=7)
    for n in range(5):
        sort_item(store, tmp_path / "capture", n, when=wall.now)
        wall.now += 600
    store.close()
    wall.now, wall.synced = MARCH + 90 * DAY, True
    store = wall.store(tmp_path / "bin-agent.db", max_outbox_age_days=7)
    sort_item(store, tmp_path / "capture", 5, when=wall.now)
    assert len(store.pending()) == 6 and store.outbox_dropped == 0
    wall.now += 8 * DAY
    sort_item(store, tmp_path / "capture", 6, when=wall.now)
    assert [e.event_id for e in store.pending()] == ["item-6"] and store.outbox_dropped == 6
    store.close()


def test_a_clock_that_never_syncs_keeps_the_age_bound_by_its_own_stamps(tmp_path):
    """No network ever (or an RTC and no NTP): the stamps agree with each other and the bound
    applies to them as always."""
    wall = WallClock(MARCH, synced=False)
    store = wall.store(tmp_path / "bin-agent.db", max_outbox_age_days=1)
    sort_item(store, tmp_path / "capture", 1, when=wall.now)
    wall.now += 2 * DAY
    sort_item(store, tmp_path / "capture", 2, when=wall.now)
    assert [e.event_id for e in store.pending()] == ["item-2"] and store.outbox_dropped == 1
    store.close()


def test_a_clock_jumping_months_ahead_prunes_none_of_the_history_it_stamped(tmp_path):
    """``history.retention_days`` counts from the sync for items a clock behind stamped: the
    hourly prune after a jump of 400 days keeps them (for ``bin-agent report``), and drops the
    items a synchronised clock stamped longer ago than the retention."""
    wall = WallClock(MARCH, synced=True)
    store = wall.store(tmp_path / "bin-agent.db")
    sort_item(store, tmp_path / "capture", 1, when=wall.now)
    wall.synced = False  # (a power cut) booted at the saved time, offline
    sort_item(store, tmp_path / "capture", 2, when=wall.now + 60)
    wall.now, wall.synced = MARCH + 400 * DAY, True
    assert store.prune_history(wall.now - 365 * DAY) == 1
    assert [item.payload["id"] for item in store.history("")] == ["item-2"]
    store.close()


# --------------------------------------------------------------------------- telling people


@pytest.fixture
def two_photos(tmp_path: Path, trashnet_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for label in ("glass", "paper"):
        first = min((trashnet_dir / label).iterdir())
        (folder / first.name).symlink_to(first)
    return folder


def test_events_stamped_by_an_unsynchronised_clock_say_so_and_the_state_says_it(tmp_path, two_photos, monkeypatch):
    """A real agent sorting a replay: with the clock not synchronised each event carries
    ``"clock_synced": false`` and the state ``clock_synced: false``; synchronised, the events
    carry nothing more than before and the state says true; where nobody can tell (a laptop
    off Linux), the events carry nothing either and the state says null."""
    for synced in (False, True, None):
        monkeypatch.setattr(clock, "synchronised", lambda synced=synced: synced)
        run_dir = tmp_path / str(synced)
        run_dir.mkdir()
        config = preflight.load_dict(base_config(run_dir, two_photos, mqtt=False), base_dir=run_dir)
        agent = build_agent(config)
        assert agent.run() == 0
        assert agent.state()["clock_synced"] is synced
        store = Store(Path(config.agent.state_dir) / "bin-agent.db")
        events = [json.loads(e.payload) for e in store.pending()]
        store.close()
        assert events, "the replay sorted an item"
        for event in events:
            assert ("clock_synced" in event) is (synced is False) and event.get("clock_synced", False) is False


def test_the_clock_is_synchronised_once_timesyncd_says_so_or_the_kernel_does(tmp_path, monkeypatch):
    """timesyncd's ``synchronized`` file is enough; without it the kernel's NTP status decides
    (libc's ``adjtimex``, called for real); elsewhere than Linux nobody can tell."""
    flag = tmp_path / "synchronized"
    monkeypatch.setattr(clock, "TIMESYNCD_SYNCHRONIZED", flag)
    kernel = clock.kernel_synchronised()
    assert kernel in (True, False), "Linux answers"
    assert clock.synchronised() is kernel
    flag.touch()
    assert clock.synchronised() is True
    flag.unlink()
    clock._adjtimex.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert clock.synchronised() is None
    finally:
        clock._adjtimex.cache_clear()


@pytest.mark.parametrize(("returned", "synced"), [(0, True), (clock.TIME_ERROR, False), (-1, None)])
def test_the_kernels_answer_is_read_and_a_sandbox_refusing_it_is_unknown_not_unsynchronised(
    tmp_path, monkeypatch, returned, synced
):
    """libc's ``adjtimex`` returns the clock state (0: synchronised, ``TIME_ERROR``: not), or
    -1 where a seccomp filter refuses the call (systemd's ``SystemCallErrorNumber=EPERM``: the
    shipped unit allows it, ``tests/test_systemd_unit.py``): then nobody can tell, which must
    not read as "not synchronised" (every event would say so) nor as synchronised."""
    monkeypatch.setattr(clock, "TIMESYNCD_SYNCHRONIZED", tmp_path / "synchronized")
    monkeypatch.setattr(clock, "_adjtimex", lambda: lambda timex: returned)
    assert clock.kernel_synchronised() is synced
    assert clock.synchronised() is synced
    assert ("cannot tell" in clock.describe(clock.synchronised())) is (synced is None)


@pytest.mark.parametrize(("synced", "status"), [(True, "ok"), (False, "warn"), (None, "ok")])
def test_doctor_says_whether_the_clock_is_synchronised(monkeypatch, synced, status):
    monkeypatch.setattr(clock, "synchronised", lambda: synced)
    check = doctor.check_clock()
    assert (check.name, check.status) == ("clock", status)
    assert ("NOT synchronised" in check.detail) is (synced is False)
