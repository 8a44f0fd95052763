"""The composition report from the store's history: table, CSV, PNG, --since, retention."""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from bin_agent.cli import main
from bin_agent.store import Store
from bin_agent.tools.report import ReportError, iso, parse_since
from tests.helpers import base_config, write_toml

NOW = datetime.now(UTC)


def add(
    store: Store,
    when: datetime,
    label: str,
    compartment: str,
    confidence: float = 0.9,
    fallback: bool = False,
    **extra: Any,
) -> None:
    """One recorded item; ``extra``: more keys of its event (e.g. ``clock_synced``)."""
    payload = {
        "time": iso(when),
        "class": label,
        "confidence": confidence,
        "top3": [
            {"class": label, "confidence": confidence},
            {"class": "trash", "confidence": 0.05},
            {"class": "metal", "confidence": 0.01},
        ],
        **extra,
    }
    store.record_event(
        event_id=f"e{time.monotonic_ns()}",
        topic="t",
        payload=payload,
        label=label,
        compartment=compartment,
        fallback=fallback,
    )


@pytest.fixture
def bin_with_history(tmp_path):
    data = base_config(tmp_path)
    config_file = write_toml(tmp_path / "bin.toml", data)
    store = Store(tmp_path / "state" / "bin-agent.db")
    two_days_ago, yesterday = NOW - timedelta(days=2), NOW - timedelta(days=1)
    add(store, NOW - timedelta(days=10), "glass", "glass")  # outside --since 7d
    for _ in range(3):
        add(store, two_days_ago, "glass", "glass")
    add(store, two_days_ago, "paper", "paper")
    add(store, yesterday, "plastic", "packaging")
    add(store, yesterday, "metal", "residual", confidence=0.41, fallback=True)
    add(store, NOW - timedelta(minutes=1), "cardboard", "paper")
    store.close()
    return config_file, {
        "two": two_days_ago.date().isoformat(),
        "one": yesterday.date().isoformat(),
        "today": NOW.date().isoformat(),
    }


def test_report_table_csv_and_png(bin_with_history, tmp_path, capsys):
    config_file, days = bin_with_history
    out_csv, out_png = tmp_path / "r.csv", tmp_path / "r.png"
    assert (
        main(["report", "--config", str(config_file), "--since", "7d", "--csv", str(out_csv), "--png", str(out_png)])
        == 0
    )
    text = capsys.readouterr().out
    assert "7 items, 1 unsure (14.3 %)" in text
    lines = {
        line.split()[0]: line.split() for line in text.splitlines() if line[:4].isdigit() or line.startswith("total")
    }
    # columns: 6 classes | 4 compartments | items unsure
    assert lines[days["two"]][1:7] == ["0", "3", "0", "1", "0", "0"]
    assert lines[days["two"]][8:12] == ["1", "3", "0", "0"] and lines[days["two"]][-2:] == ["4", "0"]
    assert lines[days["one"]][-2:] == ["2", "1"]
    assert lines["total"][-2:] == ["7", "1"]
    assert "metal     0.41 -> residual" in text and "top3: metal 0.41, trash 0.05" in text

    rows = list(csv.DictReader(out_csv.open()))
    assert {(r["day"], r["class"], r["compartment"], r["items"], r["unsure"]) for r in rows} == {
        (days["two"], "glass", "glass", "3", "0"),
        (days["two"], "paper", "paper", "1", "0"),
        (days["one"], "plastic", "packaging", "1", "0"),
        (days["one"], "metal", "residual", "1", "1"),
        (days["today"], "cardboard", "paper", "1", "0"),
    }
    with Image.open(out_png) as image:
        assert image.format == "PNG" and image.size[0] >= 600


def test_since_a_date_and_a_short_span(bin_with_history, capsys):
    config_file, days = bin_with_history
    assert main(["report", "--config", str(config_file), "--since", "2h"]) == 0
    assert "1 items, 0 unsure" in capsys.readouterr().out
    assert main(["report", "--config", str(config_file), "--since", days["one"]]) == 0
    assert "3 items, 1 unsure" in capsys.readouterr().out


def test_bad_since_and_missing_database_are_one_line(tmp_path, capsys):
    config_file = write_toml(tmp_path / "bin.toml", base_config(tmp_path))
    assert main(["report", "--config", str(config_file)]) == 66
    assert capsys.readouterr().err.startswith("bin-agent: ")
    Store(tmp_path / "state" / "bin-agent.db").close()
    assert main(["report", "--config", str(config_file), "--since", "last week"]) == 64
    assert "--since: 'last week' is neither" in capsys.readouterr().err


def test_parse_since():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 11, 17, 12, 0, tzinfo=UTC)
    assert parse_since("2w", now) == datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ReportError):
        parse_since("7x", now)


def test_history_is_kept_beside_the_outbox_and_pruned_by_age(tmp_path):
    store = Store(tmp_path / "s.db")
    add(store, NOW, "glass", "glass")
    store.acknowledge(store.pending()[0].seq)  # delivered: gone from the outbox ...
    assert store.pending_count() == 0
    assert len(store.history(iso(NOW - timedelta(hours=1)))) == 1  # ... but kept in the history
    assert store.prune_history(time.time() - 3600) == 0
    assert store.prune_history(time.time() + 1) == 1
    assert store.history(iso(NOW - timedelta(days=1))) == []


def test_report_reads_a_running_agents_database_without_its_lock(tmp_path, trashnet_dir):
    """`bin-agent report` beside `bin-agent run` on the same config: the database opened
    read-only (no lock, no marker, nothing written), the agent undisturbed."""
    import os
    import signal
    import subprocess
    import sys

    from bin_agent.store import StoreReader
    from tests.helpers import REPO, wait_for

    photo = sorted((trashnet_dir / "glass").glob("*.jpg"))[0]
    data = base_config(tmp_path, photo, mqtt=False)
    data["camera"]["replay"].update(
        {"realtime": True, "loop": True, "fps": 20.0, "item_seconds": 0.8, "empty_seconds": 0.6}
    )
    config_file = write_toml(tmp_path / "bin.toml", data)
    db = tmp_path / "state" / "bin-agent.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )

    def items() -> int:
        try:
            reader = StoreReader(db)
        except Exception:
            return 0
        try:
            return len(reader.history(iso(NOW - timedelta(days=1))))
        finally:
            reader.close()

    try:
        assert wait_for(lambda: items() >= 1, 60), "the agent sorted nothing"
        lock_before = (db.parent / "bin-agent.db.lock").read_bytes()
        report = subprocess.run(
            [sys.executable, "-m", "bin_agent", "report", "--config", str(config_file), "--since", "1d"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert report.returncode == 0, report.stderr
        assert "another bin-agent" not in report.stderr
        assert "test-bin" in report.stdout and "glass" in report.stdout, report.stdout
        assert (db.parent / "bin-agent.db.lock").read_bytes() == lock_before, "the report touched the agent's lock"
        assert agent.poll() is None, "the agent stopped while the report read its database"
        assert wait_for(lambda: items() >= 2, 60), "the agent stopped sorting after the report"
    finally:
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=60)
    assert agent.returncode == 0, stderr[-2000:]


def test_a_year_is_drawn_by_week_in_one_colour_per_name(tmp_path, capsys):
    from bin_agent.tools.report import build_report, series_colours, time_bins

    data = base_config(tmp_path)
    config_file = write_toml(tmp_path / "bin.toml", data)
    store = Store(tmp_path / "state" / "bin-agent.db")
    for n in range(0, 360, 3):
        add(store, NOW - timedelta(days=n), "paper" if n % 2 else "glass", "paper" if n % 2 else "glass")
    store.close()
    out_png = tmp_path / "year.png"
    assert main(["report", "--config", str(config_file), "--since", "365d", "--png", str(out_png)]) == 0
    assert f"wrote {out_png} (items per week)" in capsys.readouterr().out
    with Image.open(out_png) as image:
        assert image.size[0] <= 1600, "a readable picture, not one bar per day"
    report = build_report([], "b", NOW - timedelta(days=365), NOW, ["paper"], ["paper", "rest"])
    assert time_bins(report)[0] == "week" and len(time_bins(report)[1]) <= 62
    assert series_colours(report)["paper"] == series_colours(report)["paper"]  # one entry: both panels
    assert len(set(series_colours(report).values())) == 2
    longer = build_report([], "b", NOW - timedelta(days=3 * 365), NOW, [], [])
    assert time_bins(longer)[0] == "month"


def test_a_png_name_that_is_no_picture_is_one_line(bin_with_history, tmp_path, capsys):
    config_file, _ = bin_with_history
    code = main(["report", "--config", str(config_file), "--png", str(tmp_path / "out.txt")])
    out, err = capsys.readouterr()
    assert code == 64 and out == ""
    assert err.startswith("bin-agent: --png ") and ".png" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "top3",
    ["glass", [["glass", 0.5]], [{"class": "glass"}], [{"class": "glass", "confidence": "high"}], {"class": "x"}, None],
    ids=["text", "pairs", "no-confidence", "confidence-text", "a-dict", "null"],
)
def test_a_damaged_top3_in_valid_payload_json_is_shown_as_unknown_not_a_traceback(tmp_path, capsys, top3):
    """Before: one unsure item whose top3 was not a list of {class, confidence} gave a traceback."""
    config_file = write_toml(tmp_path / "bin.toml", base_config(tmp_path))
    store = Store(tmp_path / "state" / "bin-agent.db")
    add(store, NOW - timedelta(hours=1), "metal", "residual", confidence=0.41, fallback=True)
    store.record_event(
        event_id="damaged",
        topic="t",
        payload={"time": iso(NOW - timedelta(minutes=30)), "class": "glass", "confidence": 0.4, "top3": top3},
        label="glass",
        compartment="residual",
        fallback=True,
    )
    store.close()
    assert main(["report", "--config", str(config_file), "--since", "1d"]) == 0
    out = capsys.readouterr().out
    assert "2 items, 2 unsure" in out and "top3: metal 0.41, trash 0.05, metal 0.01" in out, out
    damaged = next(line for line in out.splitlines() if "glass" in line and "top3:" in line)
    assert damaged.endswith("top3: " + ("" if top3 is None else "?")), damaged  # its one entry, or the whole


def test_the_report_says_how_many_items_a_clock_not_synchronised_stamped(tmp_path, capsys):
    """Events stamped before NTP answered (``"clock_synced": false``) are counted in the day
    their time says, and the table says how many they are: their days may be wrong."""
    config_file = write_toml(tmp_path / "bin.toml", base_config(tmp_path))
    store = Store(tmp_path / "state" / "bin-agent.db")
    add(store, NOW - timedelta(days=1), "glass", "glass")
    for _ in range(2):
        add(store, NOW - timedelta(hours=2), "paper", "paper", clock_synced=False)
    store.close()
    assert main(["report", "--config", str(config_file), "--since", "7d"]) == 0
    out = capsys.readouterr().out
    assert "3 items" in out and "2 of them stamped while the bin's clock was not synchronised" in out
