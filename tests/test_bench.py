"""``bin-agent bench --quick``: the short mode CI runs so the bench never rots. It runs the
agent's real parts (the shipped model, the motion trigger, the store, the MQTT link against a
mosquitto the bench starts itself on loopback, ``bin-agent run`` up to READY=1); the figures
are printed, never asserted against a speed (the machine's load decides those)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.skipif(
    shutil.which("mosquitto") is None and not os.path.exists("/usr/sbin/mosquitto"), reason="no mosquitto"
)
def test_bench_quick_reports_every_figure_of_the_item_path_the_idle_loop_and_the_outbox(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    print(json.dumps(report, indent=2))  # the figures, for the log
    assert report["mode"] == "quick" and report["views"] == 4
    for stage in ("trigger", "crop", "preprocess", "invoke", "route", "record", "servo", "sync", "publish"):
        assert stage in report["stages_ms"], stage
    for stage in ("crop", "preprocess", "invoke", "route", "record", "servo", "sync", "publish"):
        assert report["stages_ms"][stage]["n"] == 3, f"{stage}: timed for every item"
    assert report["path_ms"]["n"] == 3 and report["event_ms"]["n"] == 3, "every item's event reached MQTT"
    # settled -> servo command comes before settled -> event handed to MQTT, whatever their order in the agent
    assert report["path_ms"]["median"] > 0 and report["event_ms"]["median"] > 0
    assert report["path_ratio"] > 0 and report["flush_ratio"] > 0
    assert report["events"] == 200 and report["bare_paho_s"] > 0
    assert report["startup_to_ready_s"] is not None, "bin-agent run never said READY=1"
    assert report["idle_fps"] > 0 and report["rss_mb"] > 0
    # The machine's floor beside the agent's idle: waking alone, then waking to touch a frame.
    assert report["idle_floor_percent"] > 0 and report["idle_floor_frame_percent"] > 0
    assert report["best_num_threads"] in (1, 2, 4)
    # The trigger with the config's idle looks (per frame: its mean) and with every frame looked at.
    assert report["idle_look_seconds"] == 0.2
    for key in ("trigger_us_per_frame", "trigger_us_per_look"):
        assert report[key]["n"] == 50 and report[key]["mean"] > 0, key
    # The item's path starts with the trigger's update() on the frame an item fired on (a
    # dropped item, not an empty look), and classifies the item's box, not the whole view.
    assert report["drops_fired"] == 3 and report["stages_ms"]["trigger"]["n"] == 3
    # (The frame that fires does several times a look's work: the second look, the floor's
    # fit, the items' groups; here 2.6 ms against 0.06-0.09 ms. A bare ">" let the look's own
    # figure, rounded up to the stage's 3 decimals, pass for it.)
    assert report["stages_ms"]["trigger"]["median"] > 3 * report["trigger_us_per_look"]["median"] / 1000.0
    assert 0.2 < report["region_share"]["median"] < 0.6, report["region_share"]


def test_bench_table_names_the_figures():
    from bin_agent.tools.bench import table

    summary = {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    report = {
        "machine": "x86_64, 2 CPU(s)",
        "model": "m.tflite",
        "views": 4,
        "batched_views": True,
        "num_threads": 2,
        "bare_invoke_ms": summary,
        "trigger_us_per_frame": {**summary, "mean": 1.5},
        "trigger_us_per_look": summary,
        "idle_look_seconds": 0.2,
        "stages_ms": {"trigger": summary, "invoke": summary},
        "region_share": {**summary, "median": 0.3},
        "drops_fired": 3,
        "path_ms": summary,
        "path_ratio": 1.05,
        "event_ms": summary,
        "item_ms_by_threads": {"1": summary, "2": summary},
        "gap_seconds": 0.5,
        "best_num_threads": 1,
        "idle_cpu_percent": 0.5,
        "idle_fps": 10.0,
        "rss_mb": 90.0,
        "idle_floor_percent": 0.15,
        "idle_floor_frame_percent": 0.4,
        "startup_to_ready_s": 1.2,
        "events": 200,
        "flush_s": 0.4,
        "bare_paho_s": 0.1,
        "flush_ratio": 4.0,
    }
    text = table(report)
    for name in ("path_ratio", "settled -> servo", "settled -> MQTT", "flush_ratio 4.00", "start-up -> READY"):
        assert name in text
    # Per frame the mean (half the frames of a quiet bin are not looked at), and a look apart.
    assert "trigger / frame    mean 1.50 us (n 3, a quiet bin looked at every 0.2 s)" in text
    assert "trigger / look     2.00 us" in text
    assert "waking @10 fps     0.15 % of a core for a bare loop, 0.40 % summing a 320x240 frame each time" in text
    assert (
        "item region        0.30 of the frame classified (the trigger's box of a dropped item, 3 of 3 drops fired on)"
        in text
    )


def test_the_idle_floor_times_waking_alone_and_waking_to_read_a_frame():
    from bin_agent.tools.bench import bench_idle_floor

    # A frame big enough that reading it (milliseconds) stands out from waking (microseconds).
    floor = bench_idle_floor(0.5, fps=20.0, frame_shape=(2000, 2000))
    assert 0 < floor["idle_floor_percent"] < 1.0, floor
    assert floor["idle_floor_frame_percent"] > floor["idle_floor_percent"] + 1.0, floor
