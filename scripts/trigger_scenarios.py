#!/usr/bin/env python3
"""Missed, double and false items per hard-to-see bin, through ``bin-agent run``.

For each scenario of ``scripts/synthetic_bin.py --sequence`` (dark floor, dim bin under a
cheap camera, dark items on a dark floor) it writes the frame sequence once (held-out
photos: the split file's ``--subset``), replays it through the real agent (``bin-agent run``,
``[camera.replay] mode = "sequence"``, ``realtime = false``: a virtual clock, the same events
on every run; the config's trigger defaults; the shipped model; no actuator (``--removal
tray``: the shipped servo on gpiozero's mock pins, so the agent tells the trigger of each
sort), no MQTT), reads the events from the agent's database and scores them against the
truth:

* an event on a frame from an item's fall to the hand taking it away (``--removal tray``:
  to the tray being home again) counts for that item; a second one for the same item is a
  *double*; an item with none is *missed*;
* an event anywhere else (hands waving through, shadows, light steps, drift, the tray back
  home) is *false*;
* an item whose first event has its photo's class is *right* (the shipped model on the
  region the agent classified: small items, a dim bin, a cheap camera).

    python scripts/trigger_scenarios.py ../shared/data/trashnet --split models/waste_split.json \\
        --subset test --items 20 --work /tmp/exp/scenarios

``--agent-tree DIR`` runs the agent of another checkout (e.g. a ``git worktree`` of main)
on the same frames: the "before" column of ``docs/trigger.md``. ``--removal tray`` and
``--pace quick`` choose how items leave and how fast they come (``synthetic_bin.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("dark-floor", "dim-cheap", "dark-on-dark")


def write_config(path: Path, frames: Path, state: Path, removal: str = "hand") -> None:
    """A config with every setting at its default but the replay, the actuator and MQTT
    (only keys every checkout knows, so ``--agent-tree`` can run an older agent). The
    actuator: none; with ``removal="tray"`` the shipped servo (its timings) on gpiozero's
    mock pins, so the agent sorts (and tells the trigger) as on a Pi; the frames show the
    tray at the shipped timings in frame time, the mock servo takes its own in wall time."""
    path.write_text(
        "\n".join(
            [
                "[agent]",
                'bin_id = "scenario"',
                f"state_dir = {json.dumps(str(state))}",
                "drain_seconds = 0.0",
                "[camera]",
                'source = "replay"',
                "[camera.replay]",
                f"path = {json.dumps(str(frames))}",
                'mode = "sequence"',
                "realtime = false",
                "fps = 10.0",
                "[model]",
                "num_threads = 1",
                "[actuator]",
                *(['kind = "servo"', 'pin_factory = "mock"'] if removal == "tray" else ['kind = "none"']),
                "[mqtt]",
                "enabled = false",
                "",
            ]
        )
    )


def fired_frames(state: Path) -> list[tuple[int, str]]:
    """The frame index (from its ``source``) and class of every event the agent recorded."""
    connection = sqlite3.connect(state / "bin-agent.db")
    try:
        rows = connection.execute("SELECT payload FROM outbox ORDER BY seq").fetchall()
    finally:
        connection.close()
    frames = []
    for (payload,) in rows:
        event = json.loads(payload)
        if "class" not in event:
            continue
        match = re.search(r"frame-(\d+)", str(event.get("source", "")))
        if match:
            frames.append((int(match.group(1)), str(event["class"])))
    return frames


def score(truth: dict[str, Any], fired: list[tuple[int, str]]) -> dict[str, int]:
    """Items, missed, double and false events (see the module doc), and the items whose
    first event has the class of the item's photo (``right``)."""
    hits = [0] * len(truth["items"])
    right = 0
    false = 0
    for frame, class_name in fired:
        # Items dropped as a pair lie in view together: an event counts for the first of
        # them that has none yet (for single items the windows never overlap).
        within = [k for k, item in enumerate(truth["items"]) if item["start"] <= frame < item["end"]]
        if not within:
            false += 1
            continue
        k = next((k for k in within if hits[k] == 0), within[0])
        hits[k] += 1
        right += hits[k] == 1 and class_name == truth["items"][k]["photo"].split("/", 1)[0]
    figures = {
        "items": len(hits),
        "missed": sum(h == 0 for h in hits),
        "double": sum(max(0, h - 1) for h in hits),
        "false": false,
        "events": len(fired),
        "right": right,
    }
    if truth.get("variant") == "pair":
        # Two items dropped together and both missed: the bin's count lost them all.
        figures["pairs_both_missed"] = sum(hits[k] == 0 and hits[k + 1] == 0 for k in range(0, len(hits) - 1, 2))
    return figures


def run_agent(frames: Path, work: Path, agent_tree: Path, removal: str = "hand") -> list[tuple[int, str]]:
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    config = work / "bin.toml"
    write_config(config, frames, state, removal)
    env = dict(os.environ, PYTHONPATH=str(agent_tree))
    result = subprocess.run(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config), "--log-level", "WARNING"],
        cwd=agent_tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"bin-agent run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return fired_frames(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--subset", default="test", choices=["val", "test"], help="held-out photos only")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="default: all")
    parser.add_argument("--work", type=Path, required=True, help="frames and agent state go here (kept)")
    parser.add_argument("--agent-tree", type=Path, default=REPO, help="checkout whose agent runs (default: this)")
    parser.add_argument(
        "--removal",
        choices=["hand", "tray"],
        default="hand",
        help="who takes each item away: a hand (default), or the tray tilting as the servo sorts",
    )
    parser.add_argument("--pace", choices=["normal", "quick"], default="normal", help="quick: items one after another")
    parser.add_argument(
        "--variant",
        default="none",
        help="a condition of synthetic_bin.py --variant (small, pair, roll, aec, flicker, daylight, tight-tray, apart)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    figures = {}
    for name in args.scenario or SCENARIOS:
        # The hand's normal pace keeps the folder name it always had.
        variant = "" if (args.removal, args.pace) == ("hand", "normal") else f"-{args.removal}-{args.pace}"
        if args.variant != "none":
            variant += f"-{args.variant}"
        frames = args.work / f"{name}{variant}-{args.subset}-{args.items}-{args.seed}"
        if not (frames / "truth.json").is_file():
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts" / "synthetic_bin.py"),
                    str(args.dataset),
                    "--split",
                    str(args.split),
                    "--subset",
                    args.subset,
                    "--sequence",
                    name,
                    "--items",
                    str(args.items),
                    "--seed",
                    str(args.seed),
                    "--removal",
                    args.removal,
                    "--pace",
                    args.pace,
                    "--variant",
                    args.variant,
                    "--out",
                    str(frames),
                ],
                check=True,
                env=dict(os.environ, PYTHONPATH=str(REPO)),
            )
        truth = json.loads((frames / "truth.json").read_text())
        run_dir = args.work / f"run-{name}{variant}"
        run_dir.mkdir(parents=True, exist_ok=True)
        fired = run_agent(frames, run_dir, args.agent_tree.resolve(), args.removal)
        figures[name] = score(truth, fired) | {"frames": truth["frames"], "fired": [frame for frame, _ in fired]}
        result = figures[name]
        both = f"  pairs both missed {result['pairs_both_missed']:2d}" if "pairs_both_missed" in result else ""
        print(
            f"{name:14s} items {result['items']:3d}  missed {result['missed']:2d}  double {result['double']:2d}  "
            f"false {result['false']:2d}  right class {result['right']:3d}{both}  ({truth['frames']} frames)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
