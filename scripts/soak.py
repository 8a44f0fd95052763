#!/usr/bin/env python3
"""Soak: many items through the running agent while the broker flaps and the agent is killed.

What runs, all real:

* ``bin-agent run`` as a subprocess on a virtual-clock replay of small synthetic
  photos (motion trigger, actuator ``none`` on mock pins): as many items per
  second as the machine gives;
* a real ``mosquitto`` that is SIGKILLed and restarted every few seconds;
* one SIGKILL of the agent per ``--kill-every`` items, restarted on the same
  database (and at the end a clean SIGTERM, then a run without new items that
  drains the outbox);
* a dashboard (paho, QoS 1) with a persistent session the broker reloads after
  each restart, so it misses nothing the broker acknowledged to the agent.

Then it reports sorted (the counts in the database), delivered (distinct event
ids the dashboard got), lost (sorted - delivered: must be 0), duplicates
(at-least-once delivery re-sends what was in flight at a kill), the peak outbox,
and the agent's RSS at the start (after 50 items; with ``--learning``, once the capture folder
has reached ``max_mb`` and the life's first learn is done: what they hold stays, bounded by
``max_mb``) and end of each life. Exit 0 only if nothing
was lost and no life grew by 10 MB or more.

``--learning`` adds the learning side: ``[capture] mode = "all"`` under a small ``max_mb``,
a dashboard that answers a share of the events on ``cmd/correct`` (see :class:`LearningSoak`),
and a learn every ``--after-labels`` labels. Each life's open files and threads are sampled
from ``/proc`` as well (a leak: more at the end of a life than at its start), and at the end the
state dir is checked: the capture folder within ``max_mb`` (plus one item), no writer ``.tmp``
left after a start, at most ``keep_models`` model versions with whole links, every line of
``labels.jsonl`` readable, and each class count equal to the items sorted as it moved by their
latest label.

    nice python scripts/soak.py --items 500          # a quick check, about a minute
    nice python scripts/soak.py --items 10000 | tee soak.log
    nice python scripts/soak.py --learning --items 2000 --kill-every 700  # about 30 learns
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from mosquitto_process import Mosquitto, MosquittoMissing, free_port  # scripts/, beside this file
from PIL import Image

from bin_agent import CLASSES
from bin_agent.learning.capture import CACHE_LEFTOVER, WRITER_LEFTOVER
from bin_agent.learning.labels import LABELS_FILE
from bin_agent.learning.leftovers import MIN_AGE_SECONDS

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "tests" / "data" / "models" / "tiny_uint8.tflite"
BIN_ID = "soak"
RSS_GROWTH_LIMIT_MB = 10.0
FD_GROWTH_LIMIT = 3
"""Open files a life may hold more at its end than at its start (the floor of its last third)."""
THREAD_GROWTH_LIMIT = 1
MIN_SAMPLES = 9
"""Samples (one a second) a life needs before its growth is judged."""
"""Threads likewise (the held corrections' worker starts with the first held correction)."""


def make_photos(folder: Path, count: int, seed: int, textured: bool = False) -> Path:
    """Small photos of one coloured block on a light background: a clear item for
    the motion trigger, and colours that the model sorts into several classes.
    ``textured``: blocks of coloured noise, whose embeddings differ from photo to photo
    (plain blocks all embed alike: no refitted head could tell them apart, and no learn deploys)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = np.full((72, 96, 3), 225, np.uint8)
        top, left = rng.integers(8, 28), rng.integers(8, 44)
        block = np.broadcast_to(rng.integers(0, 160, size=3), (36, 44, 3))
        if textured:
            block = np.clip(block + rng.integers(-60, 60, size=(36, 44, 3)), 0, 200)
        image[top : top + 36, left : left + 44] = block
        Image.fromarray(image).save(folder / f"item{index:03d}.png")
    return folder


def write_config(
    path: Path, *, photos: Path, state_dir: Path, port: int, trigger: str, learning: LearningSoak | None = None
) -> Path:
    # empty_seconds: the motion trigger re-arms after 0.5 s of an empty view, looking at a frame
    # every 0.2 s while idle; with less than about a second between photos it fired only on the
    # first photo of each round (a longer gap before it), so every item was the same photo.
    path.write_text(
        f"""\
[agent]
bin_id = "{BIN_ID}"
state_dir = "{state_dir}"
drain_seconds = 30.0

[camera]
source = "replay"
lores_size = [64, 48]

[camera.replay]
path = "{photos}"
loop = true
realtime = false
fps = 10.0
item_seconds = 0.5
empty_seconds = 1.2

[trigger]
mode = "{trigger}"
settle_seconds = 0.2

[model]
path = "{TINY_MODEL}"
num_threads = 1

[actuator]
kind = "none"
pin_factory = "mock"

[mqtt]
host = "127.0.0.1"
port = {port}
keepalive = 10
reconnect_min_seconds = 0.5
reconnect_max_seconds = 2.0
"""
        + (learning.config() if learning is not None else "")
    )
    return path


def make_broker(workdir: Path, port: int) -> Mosquitto:
    """A mosquitto on a loopback port, killed (SIGKILL) and restarted at will. Persistence holds
    the dashboard's session (see Dashboard), saved after every change: with mosquitto's default
    (every 1,800 s and at a clean stop) a SIGKILL loses events it had acknowledged (PUBACK) and
    not yet passed on (``scripts/broker_ack_loss.py``), and the soak would blame the agent, whose
    promise ends at the PUBACK. (What remains: an event acknowledged in the broker's last loop
    turn before a SIGKILL, which the flapper's random moments make rare.)"""
    try:
        return Mosquitto(workdir, port, persistence=True, save_every_change=True)
    except MosquittoMissing as exc:
        raise SystemExit(f"soak: {exc}") from None


class Flapper(threading.Thread):
    """Up for 2-4 s, down (SIGKILLed) for 0.5-1.5 s, until stopped; leaves it up."""

    def __init__(self, broker: Mosquitto, rng: random.Random) -> None:
        super().__init__(name="flapper", daemon=True)
        self.broker, self.rng = broker, rng
        self.halt = threading.Event()
        self.kill_times: list[float] = []  # epoch s

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(2.0, 4.0)):
            self.broker.kill()
            self.kill_times.append(time.time())
            self.halt.wait(self.rng.uniform(0.5, 1.5))
            self.broker.start()


class Dashboard:
    """A QoS 1 subscriber to the bin's events with a persistent session.

    The broker has the session (and its subscription) from its persistence file
    after each restart, so events the agent publishes before the dashboard has
    reconnected are queued for it, not dropped: what the dashboard misses is
    then what the agent lost, not a race between two clients reconnecting.
    """

    def __init__(self, port: int, on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.ids: dict[str, int] = {}
        self.on_event = on_event  # called with each event the first time it comes
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-dashboard", clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]  # seconds; floats work
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"smartbin/{BIN_ID}/event", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the dashboard could not subscribe")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        event = json.loads(message.payload)
        with self._lock:
            first = event["id"] not in self.ids
            self.ids[event["id"]] = self.ids.get(event["id"], 0) + 1
        if first and self.on_event is not None:
            self.on_event(event)

    def tally(self) -> tuple[int, int]:
        """(distinct events, duplicate receptions)."""
        with self._lock:
            return len(self.ids), sum(self.ids.values()) - len(self.ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LearningSoak:
    """``--learning``: capture, corrections and learns on, and the dashboard answering.

    The agent keeps every photo (``[capture] mode = "all"``) under a small ``max_mb``, and
    learns after ``after_labels`` labels. The dashboard answers a share of the events with
    ``cmd/correct``: a confirmation (the predicted class), the photo's "true" class (a class per
    replay photo that moves on by one every ``phase_labels`` answers, so each learn finds the
    bin's labels unlike what the deployed head says, and deploys again), the same answer again,
    or an answer for an event so old that the size cap has deleted its photo. It tallies the
    replies on ``cmd/result``, and :meth:`check` reads the state dir afterwards.
    """

    def __init__(self, args: argparse.Namespace, rng: random.Random) -> None:
        self.share, self.after_labels = args.answer_share, args.after_labels
        self.max_bytes = int(args.max_mb * 1024 * 1024)
        self.max_mb, self.keep_models, self.phase_labels = args.max_mb, args.keep_models, args.phase_labels
        self.rng = rng
        self._lock = threading.Lock()
        self.seen: list[str] = []  # event ids, first reception order
        self.sent: list[dict[str, str]] = []  # corrections sent, for the repeats
        self.kinds: dict[str, int] = {"confirm": 0, "true class": 0, "repeat": 0, "photo deleted": 0}
        self.replies: dict[str, int] = {}
        self.client: Any = None

    def config(self) -> str:
        return f"""
[mqtt.commands]
rate_per_minute = 60000
burst = 1000

[capture]
enabled = true
mode = "all"
max_mb = {self.max_mb}

[learning]
after_labels = {self.after_labels}
min_labels = 20
watch_labels = 10
keep_models = {self.keep_models}
"""

    def connect(self, port: int) -> None:
        """A second client: publishes the corrections and reads their replies."""
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="soak-corrector", clean_session=True)
        self.client.reconnect_delay_set(0.05, 0.05)  # seconds; floats work
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"smartbin/{BIN_ID}/cmd/result", qos=1)
        self.client.on_message = self._on_result
        self.client.connect("127.0.0.1", port, 10)
        self.client.loop_start()

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def true_class(self, source: str) -> str:
        """The class the dashboard says the photo is: by the replay photo's number, moving on by
        one class every ``phase_labels`` answers (the bin's world changes: the next learns deploy)."""
        found = re.search(r"item(\d+)", source)
        index = int(found.group(1)) if found else 0
        return CLASSES[(index // 4 + len(self.sent) // self.phase_labels) % len(CLASSES)]

    def on_event(self, event: dict[str, Any]) -> None:
        """The dashboard got an event for the first time: maybe answer it (paho's thread)."""
        with self._lock:
            self.seen.append(event["id"])
            if self.rng.random() >= self.share:
                return
            draw = self.rng.random()
            # Items are about 3 KB: one per KB of max_mb back is three times what the cap keeps.
            old = self.seen[: max(0, len(self.seen) - self.max_bytes // 1024)]
            if draw < 0.1 and self.sent:
                kind, correction = "repeat", self.rng.choice(self.sent[-50:])
            elif draw < 0.2 and old:
                kind, correction = "photo deleted", {"event_id": self.rng.choice(old), "label": CLASSES[0]}
            elif draw < 0.45:
                kind, correction = "confirm", {"event_id": event["id"], "label": event["class"]}
            else:
                kind = "true class"
                correction = {"event_id": event["id"], "label": self.true_class(str(event.get("source", "")))}
            self.kinds[kind] += 1
            if kind != "repeat":
                self.sent.append(correction)
        self.client.publish(f"smartbin/{BIN_ID}/cmd/correct", json.dumps(correction), qos=1)

    def _on_result(self, client: Any, userdata: Any, message: Any) -> None:
        reply = json.loads(message.payload)
        if reply.get("command") != "correct":
            return
        if reply.get("ok"):
            what = (
                "repeated" if reply.get("repeated") else "moved counts" if reply.get("counts_changed") else "labelled"
            )
        else:
            reason = str(reply.get("reason", ""))
            what = "not captured" if "not captured" in reason else f"refused: {reason[:60]}"
        with self._lock:
            self.replies[what] = self.replies.get(what, 0) + 1

    def check(self, state_dir: Path, agent_log: Path, kills: list[float]) -> tuple[list[str], list[str]]:
        """Read the state dir after the last clean stop: (lines to print, broken invariants).
        ``kills``: when (epoch s) the agent was SIGKILLed."""
        lines: list[str] = []
        broken: list[str] = []
        capture = state_dir / "capture"
        files = [p for p in capture.iterdir() if p.is_file()] if capture.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        sidecars = [p for p in files if p.suffix == ".json" and not p.name.startswith(".")]
        item_sizes = [
            p.stat().st_size + p.with_suffix(".jpg").stat().st_size for p in sidecars if p.with_suffix(".jpg").exists()
        ]
        largest = max(item_sizes, default=0)
        # The writer brings the folder under max_mb after each photo; labels and a learn's embedding
        # cache written since the last photo wait for the next one (and count against it then).
        last_write = max((p.stat().st_mtime for p in sidecars), default=0.0)
        late = sum(
            p.stat().st_size for p in files if p.name.startswith("embeddings-") and p.stat().st_mtime > last_write
        )
        if (capture / LABELS_FILE).exists():
            for line in (capture / LABELS_FILE).read_bytes().split(b"\n"):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    late += (datetime.fromisoformat(json.loads(line)["time"]).timestamp() > last_write) * (
                        len(line) + 1
                    )
        over = size - self.max_bytes
        lines.append(
            f"  capture     {size / 1024:.0f} KB in {len(item_sizes)} items (max_mb {self.max_mb}: "
            f"{self.max_bytes / 1024:.0f} KB; largest item {largest / 1024:.1f} KB; over by {max(over, 0) / 1024:.1f} KB, "
            f"labels and embedding cache written after the last photo {late / 1024:.1f} KB)"
        )
        if over > largest + late:
            broken.append(f"the capture folder is {over} bytes over max_mb, more than one item ({largest}) + {late}")
        now = time.time()
        writer_left = [p.name for p in files if WRITER_LEFTOVER.fullmatch(p.name)]
        cache_left = [p for p in files if CACHE_LEFTOVER.fullmatch(p.name)]
        stale_cache = [p.name for p in cache_left if now - p.stat().st_mtime >= MIN_AGE_SECONDS]
        lines.append(f"  .tmp        {len(writer_left)} capture writer leftovers, {len(cache_left)} embedding cache")
        if writer_left or stale_cache:
            broken.append(f"leftovers a start should have removed: {writer_left + stale_cache}")
        lines += self._check_models(state_dir / "models", broken, now)
        labels = capture / LABELS_FILE
        raw = labels.read_bytes().split(b"\n") if labels.exists() else []
        damaged = 0
        latest: dict[str, str] = {}
        cut_by_kill = 0  # labels appended in the second before a SIGKILL
        kill_times = [datetime.fromtimestamp(t, UTC) for t in kills]
        for line in raw:
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                damaged += 1
                continue
            latest[entry["event_id"]] = entry["label"]
            written = datetime.fromisoformat(entry["time"])
            cut_by_kill += any(timedelta(0) <= kill - written < timedelta(seconds=0.3) for kill in kill_times)
        lines.append(
            f"  labels      {sum(1 for line in raw if line.strip())} lines, {len(latest)} events labelled, "
            f"{damaged} damaged (a SIGKILL mid-append may cut one: {len(kills)} SIGKILLs)"
        )
        if damaged > len(kills):
            broken.append(f"labels.jsonl has {damaged} damaged lines for {len(kills)} SIGKILLs")
        lines += self._check_counts(state_dir / "bin-agent.db", latest, broken)
        if broken and broken[-1].startswith("counts"):
            lines.append(
                f"              {cut_by_kill} label(s) appended less than 0.3 s before a SIGKILL: one cut between its "
                "label and its counts is moved by the next start (bin_agent/learning/labels.py reconcile_counts)"
            )
        log_text = agent_log.read_text()
        learns = re.findall(r"learning\.service: learn: .*", log_text)
        deployed = sum(1 for line in learns if ": deployed " in line)
        lines.append(
            f"  learns      {len(learns)} ({deployed} deployed, {log_text.count('rolled back to')} rolled back by the "
            f"watch, {log_text.count('learning failed')} failed)"
        )
        with self._lock:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.kinds.items())
            replies = ", ".join(f"{n} {what}" for what, n in sorted(self.replies.items()))
        lines.append(f"  corrections sent {kinds}")
        lines.append(f"  replies     {replies or 'none'}")
        if not learns:
            broken.append("no learn ran")
        return lines, broken

    def _check_models(self, models: Path, broken: list[str], now: float) -> list[str]:
        """At most keep_models installed versions (current and previous among them), both links
        whole, and no leftover of a deploy older than a start leaves it."""
        if not models.is_dir():
            return ["  models      none deployed"]
        entries = list(models.iterdir())
        versions = [p.name for p in entries if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
        hidden = [p for p in entries if p.name.startswith(".")]
        stale = [p.name for p in hidden if now - p.lstat().st_mtime >= MIN_AGE_SECONDS]
        links = {name: models / name for name in ("current", "previous") if (models / name).is_symlink()}
        dangling = [name for name, link in links.items() if not link.exists()]
        if len(versions) > self.keep_models:
            broken.append(f"models/ holds {len(versions)} versions, keep_models is {self.keep_models}")
        if dangling or stale:
            broken.append(f"models/: dangling {dangling}, old leftovers {stale}")
        return [
            f"  models      {len(versions)} versions (keep_models {self.keep_models}), links "
            f"{', '.join(links) or 'none'}{' DANGLING ' + str(dangling) if dangling else ''}, "
            f"{len(hidden)} hidden leftovers ({len(stale)} older than {MIN_AGE_SECONDS:.0f} s)"
        ]

    @staticmethod
    def _check_counts(db: Path, latest: dict[str, str], broken: list[str]) -> list[str]:
        """Each class count = the items sorted as it, moved by their latest label; the total and
        the compartments add up to the items."""
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            items = connection.execute("SELECT event_id, class FROM items").fetchall()
            counts = connection.execute("SELECT kind, key, n FROM counts").fetchall()
        finally:
            connection.close()
        expected: dict[str, int] = {}
        for event_id, predicted in items:
            label = latest.get(event_id, predicted)
            expected[label] = expected.get(label, 0) + 1
        by_class = {key: n for kind, key, n in counts if kind == "class" and n}
        total = sum(n for kind, key, n in counts if kind == "total")
        compartments = sum(n for kind, key, n in counts if kind == "compartment")
        relabelled = sum(1 for event_id, predicted in items if latest.get(event_id, predicted) != predicted)
        line = (
            f"  counts      {total} total, {len(items)} items ({relabelled} relabelled), per class "
            f"{'as expected' if by_class == expected else f'{by_class} != expected {expected}'}, "
            f"compartments add up to {compartments}"
        )
        if by_class != expected or total != len(items) or compartments != total:
            broken.append(f"counts: {by_class} (total {total}, compartments {compartments}) for expected {expected}")
        return [line]


class Life:
    """What /proc says of one agent life: samples of (items, RSS MB, open fds, threads)."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float, int, int]] = []

    def sample(self, pid: int, items: int) -> None:
        try:
            rss = 0.0
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) / 1024
            fds, threads = len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            return
        self.samples.append((items, rss, fds, threads))

    def growth(self, column: int) -> float | None:
        """The floor of the last third of the life (a learn's files and threads come and go)
        minus the first sample: what stays with the items. None for a life of under
        :data:`MIN_SAMPLES` seconds: its floor would be one or two samples."""
        if len(self.samples) < MIN_SAMPLES:
            return None
        tail = self.samples[len(self.samples) * 2 // 3 :]
        return min(s[column] for s in tail) - self.samples[0][column]


class Agent:
    """One life of ``bin-agent run``."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.log_start = log.stat().st_size if log.exists() else 0  # where this life's lines begin
        self.learnt = False
        with log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
            )
        self.rss_start_mb: float | None = None
        self.life = Life()

    def has_learnt(self) -> bool:
        """Whether this life has finished a learn: its learning modules, and what a learn and a
        watch keep (LiteRT, the head's NumPy code), are loaded for good."""
        if not self.learnt:
            with self.log.open("rb") as log:
                log.seek(self.log_start)
                self.learnt = b"learning.service: learn: " in log.read()
        return self.learnt

    def rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def folder_bytes(folder: Path) -> int:
    """The bytes of the files in ``folder`` (0 when it is not there yet)."""
    total = 0
    try:
        for entry in os.scandir(folder):
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:  # deleted by the cap meanwhile
                continue
    except OSError:
        return 0
    return total


def database_state(db: Path) -> tuple[int, int]:
    """(items counted, events pending in the outbox), read-only, beside the running agent."""
    if not db.exists():
        return 0, 0
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            total = connection.execute("SELECT n FROM counts WHERE kind = 'total' AND key = ''").fetchone()
            pending = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return -1, -1
    return (int(total[0]) if total else 0), int(pending)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="items to sort (default 10000)")
    parser.add_argument(
        "--kill-every", type=int, default=1000, help="SIGKILL the agent after this many items of each life (0: never)"
    )
    parser.add_argument("--no-flap", action="store_true", help="keep the broker up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temp dir, removed)")
    group = parser.add_argument_group("learning", "--learning: capture, corrections over MQTT and learns on")
    group.add_argument("--learning", action="store_true", help="capture every item, answer events, learn")
    group.add_argument("--answer-share", type=float, default=0.4, help="share of the events answered (default 0.4)")
    group.add_argument("--after-labels", type=int, default=20, help="[learning] after_labels (default 20)")
    group.add_argument("--max-mb", type=float, default=1.0, help="[capture] max_mb (default 1: about 350 items)")
    group.add_argument("--keep-models", type=int, default=3, help="[learning] keep_models (default 3)")
    group.add_argument(
        "--phase-labels", type=int, default=60, help="answers after which each photo's true class moves on (default 60)"
    )
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bin-agent-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    port = free_port()
    photos = make_photos(workdir / "photos", 24, args.seed, textured=args.learning)
    state_dir = workdir / "state"
    if state_dir.exists():  # its items would count as sorted and never delivered, its photos as captured
        raise SystemExit(f"soak: {workdir} holds the state of an earlier run; give a new --workdir")
    db = state_dir / "bin-agent.db"
    learning = LearningSoak(args, random.Random(args.seed + 1)) if args.learning else None
    sorting = write_config(
        workdir / "soak.toml", photos=photos, state_dir=state_dir, port=port, trigger="motion", learning=learning
    )
    draining = write_config(
        workdir / "drain.toml", photos=photos, state_dir=state_dir, port=port, trigger="manual", learning=learning
    )
    agent_log = workdir / "agent.log"

    broker = make_broker(workdir, port)
    broker.start()
    dashboard = Dashboard(port, on_event=learning.on_event if learning is not None else None)
    if learning is not None:
        learning.connect(port)
    broker.stop()  # saves the dashboard's session for every restart to come
    broker.start()
    flapper = Flapper(broker, rng)
    if not args.no_flap:
        flapper.start()

    print(
        f"soak: {args.items} items, agent SIGKILL every {args.kill_every or 'never'}, "
        f"broker {'steady' if args.no_flap else 'SIGKILLed every 2-4 s for 0.5-1.5 s'}"
        f"{'; learning: capture all, answers, learns' if learning is not None else ''}; work dir {workdir}",
        flush=True,
    )
    started = time.monotonic()
    lives: list[dict[str, Any]] = []
    agent = Agent(sorting, agent_log)
    life_first_item = 0
    next_kill = args.kill_every or None
    peak_outbox = 0
    last_progress = last_sample = 0.0
    peak_capture_bytes = 0
    kill_times: list[float] = []
    capture_full, last_full_check = False, 0.0
    total = 0
    try:
        while True:
            time.sleep(0.1)
            total, pending = database_state(db)
            if total < 0:
                continue
            peak_outbox = max(peak_outbox, pending)
            if learning is not None and not capture_full and time.monotonic() - last_full_check >= 1.0:
                last_full_check = time.monotonic()
                capture_full = folder_bytes(state_dir / "capture") >= 0.95 * learning.max_bytes
            if (
                agent.rss_start_mb is None
                and total - life_first_item >= 50
                and (learning is None or (capture_full and agent.has_learnt()))
            ):
                # After start-up and the first items; with learning, once what the agent holds for
                # the capture folder (its items, labels, a learn's embeddings) has reached max_mb,
                # which bounds it, and a learn has loaded what stays.
                agent.rss_start_mb = agent.rss_mb()
            if agent.proc.poll() is not None:
                raise SystemExit(f"soak: the agent exited by itself ({agent.proc.returncode}); see {agent_log}")
            now = time.monotonic()
            if agent.rss_start_mb is not None and now - last_sample >= 1.0:
                last_sample = now
                agent.life.sample(agent.proc.pid, total - life_first_item)
                if learning is not None:
                    peak_capture_bytes = max(peak_capture_bytes, folder_bytes(state_dir / "capture"))
            if now - last_progress >= 5.0:
                last_progress = now
                delivered, duplicates = dashboard.tally()
                rss = agent.rss_mb()
                print(
                    f"  {now - started:6.0f} s  sorted {total:6d}  delivered {delivered:6d}  "
                    f"duplicates {duplicates:4d}  outbox {pending:5d} (peak {peak_outbox})  "
                    f"broker {'up  ' if broker.up else 'DOWN'} kills {broker.kills:3d}  "
                    f"agent kills {len(lives):2d}  rss {rss or 0:5.1f} MB"
                    + (
                        f"  fds {agent.life.samples[-1][2]} threads {agent.life.samples[-1][3]}"
                        if agent.life.samples
                        else ""
                    ),
                    flush=True,
                )
            if total >= args.items:
                break
            if next_kill is not None and total >= next_kill:
                agent.life.sample(agent.proc.pid, total - life_first_item)
                lives.append(
                    {
                        "items": total - life_first_item,
                        "rss_start": agent.rss_start_mb,
                        "rss_end": agent.rss_mb(),
                        "end": "SIGKILL",
                        "proc": agent.life,
                    }
                )
                agent.kill()
                kill_times.append(time.time())
                agent = Agent(sorting, agent_log)
                life_first_item, next_kill = total, total + args.kill_every
        rss_end = agent.rss_mb()
        agent.life.sample(agent.proc.pid, total - life_first_item)
        code = agent.terminate()
        lives.append(
            {
                "items": total - life_first_item,
                "rss_start": agent.rss_start_mb,
                "rss_end": rss_end,
                "end": f"SIGTERM, exit {code}",
                "proc": agent.life,
            }
        )
        flapper.halt.set()
        if flapper.is_alive():
            flapper.join()
        if not broker.up:
            broker.start()
        # A life that sorts nothing new: it only empties what the flapping left in the outbox.
        drain_started = time.monotonic()
        drainer = Agent(draining, agent_log)
        while database_state(db)[1] != 0 and time.monotonic() - drain_started < 120:
            time.sleep(0.2)
        drainer.terminate()
        drain_seconds = time.monotonic() - drain_started
        recorded, pending = database_state(db)
        # The dashboard gets what the broker acknowledged within moments.
        settle = time.monotonic()
        while dashboard.tally()[0] < recorded and time.monotonic() - settle < 15:
            time.sleep(0.2)
        delivered, duplicates = dashboard.tally()
    finally:
        flapper.halt.set()
        agent.kill()
        dashboard.close()
        if learning is not None:
            learning.close()
        broker.kill()

    elapsed = time.monotonic() - started
    tracebacks = agent_log.read_text().count("Traceback")
    growths = [
        life["rss_end"] - life["rss_start"]
        for life in lives
        if life["rss_start"] is not None and life["rss_end"] is not None
    ]
    lost = recorded - delivered
    print(f"\nsoak done in {elapsed:.0f} s ({recorded / elapsed:.0f} items/s)")
    print(f"  sorted      {recorded}  (counted in the database; {len(lives)} agent lives, {len(lives) - 1} SIGKILL)")
    print(f"  delivered   {delivered}  distinct event ids at the dashboard")
    print(f"  lost        {lost}")
    if lost > 0:  # which, and when: what a broker or agent kill next to them may explain
        with dashboard._lock:
            got = set(dashboard.ids)
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            missing = [(e, t) for e, t in connection.execute("SELECT event_id, time FROM items") if e not in got]
        finally:
            connection.close()
        for event_id, when in missing[:10]:
            at = datetime.fromisoformat(when).timestamp()
            broker_kill = min((k - at for k in flapper.kill_times if k >= at), default=None)
            agent_kill = min((k - at for k in kill_times if k >= at), default=None)
            print(
                f"              {event_id} at {when}: next broker SIGKILL "
                f"{'-' if broker_kill is None else f'{broker_kill:.2f} s'} later, next agent SIGKILL "
                f"{'-' if agent_kill is None else f'{agent_kill:.2f} s'} later"
            )
    print(f"  duplicates  {duplicates}  (at-least-once: re-sent after a kill)")
    print(f"  outbox      peak {peak_outbox}, left {pending} (drained in {drain_seconds:.1f} s after the end)")
    print(f"  broker      SIGKILLed {broker.kills} times")
    for index, life in enumerate(lives, 1):
        start = f"{life['rss_start']:.1f}" if life["rss_start"] is not None else "-"
        end = f"{life['rss_end']:.1f}" if life["rss_end"] is not None else "-"
        proc: Life = life["proc"]
        handles = ""
        if proc.samples:
            first, last = proc.samples[0], proc.samples[-1]
            handles = (
                f", fds {first[2]} -> {last[2]} (floor growth {proc.growth(2)}), "
                f"threads {first[3]} -> {last[3]} (floor growth {proc.growth(3)})"
            )
        print(f"  life {index:2d}    {life['items']:5d} items, RSS {start} -> {end} MB{handles}, {life['end']}")
    if growths:
        first_start = next(life["rss_start"] for life in lives if life["rss_start"] is not None)
        print(
            f"  RSS         start {first_start:.1f} MB, end {lives[-1]['rss_end'] or 0:.1f} MB, "
            f"largest growth in one life {max(growths):+.1f} MB"
            + (" (from each life's first learn with the capture folder full)" if learning is not None else "")
        )
    print(f"  agent log   {tracebacks} traceback(s) in {agent_log}")
    broken: list[str] = []
    for index, life in enumerate(lives, 1):
        fds, threads = life["proc"].growth(2), life["proc"].growth(3)
        if fds is not None and fds > FD_GROWTH_LIMIT:
            broken.append(f"life {index}: {fds} more open files at its end than at its start")
        if threads is not None and threads > THREAD_GROWTH_LIMIT:
            broken.append(f"life {index}: {threads} more threads at its end than at its start")
    if learning is not None:
        lines, found = learning.check(state_dir, agent_log, kills=kill_times)
        print("\n".join(lines))
        print(f"  capture     peak {peak_capture_bytes / 1024:.0f} KB while sorting")
        # The writer deletes the oldest items right after each write: at most one item over.
        if peak_capture_bytes > learning.max_bytes + 64 * 1024:
            found.append(f"the capture folder reached {peak_capture_bytes} bytes while sorting")
        broken += found
    for problem in broken:
        print(f"  BROKEN      {problem}")
    ok = lost == 0 and pending == 0 and (not growths or max(growths) < RSS_GROWTH_LIMIT_MB) and not broken
    print("PASS" if ok else "FAIL")
    if args.workdir is None and ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
