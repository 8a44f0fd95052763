"""The two scripts that stand behind the trigger's speed changes keep running: the
firing-frame timing of ``scripts/bench_trigger.py`` (figures printed, never asserted
against a speed) and ``scripts/trigger_ab.py``, which compares this tree's trigger with a
git revision's, frame by frame, to the bit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent.tools.bench import drop_frames

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_bench_trigger_times_the_frame_each_dropped_item_fires_on() -> None:
    result = run("scripts/bench_trigger.py", "--frames", "30", "--repeat", "1", "--drops", "3", "--baseline", "")
    assert result.returncode == 0, result.stderr[-2000:]
    print(result.stdout)
    assert re.search(r"frame that fires, median, dropped items: this tree [0-9.]+ ms \(n 3\)", result.stdout)


def test_trigger_ab_replays_a_folder_against_a_revision_frame_by_frame(tmp_path: Path) -> None:
    """This tree against its own last commit (a clean checkout's HEAD has the same
    motion.py unless the tree changed it; then the script says where they part)."""
    folder = tmp_path / "drop"
    folder.mkdir()
    for frame in drop_frames(0):
        Image.fromarray(np.repeat(frame.lores[:, :, None], 3, axis=2)).save(folder / f"frame-{frame.index:06d}.png")
    committed = subprocess.run(
        ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "bin_agent/triggers/motion.py"], check=False
    )
    result = run("scripts/trigger_ab.py", str(folder), "--baseline", "HEAD", "--no-synthetic")
    print(result.stdout)
    if committed.returncode == 0:  # motion.py as HEAD has it
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "drop, defaults: 52 frames, 1 fired, identical" in result.stdout
        assert re.search(r"all identical: 156 frames, \d+ fired, against HEAD", result.stdout)
    else:
        assert result.returncode in (0, 1), result.stderr[-2000:]
