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
and the agent's RSS at the start and end of each life. Exit 0 only if nothing
was lost and no life grew by 10 MB or more.

    nice python scripts/soak.py --items 500          # a quick check, about a minute
    nice python scripts/soak.py --items 10000 | tee soak.log
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from mosquitto_process import Mosquitto, MosquittoMissing, free_port  # scripts/, beside this file
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "tests" / "data" / "models" / "tiny_uint8.tflite"
BIN_ID = "soak"
RSS_GROWTH_LIMIT_MB = 10.0


def make_photos(folder: Path, count: int, seed: int) -> Path:
    """Small photos of one coloured block on a light background: a clear item for
    the motion trigger, and colours that the model sorts into several classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = np.full((72, 96, 3), 225, np.uint8)
        top, left = rng.integers(8, 28), rng.integers(8, 44)
        image[top : top + 36, left : left + 44] = rng.integers(0, 160, size=3)
        Image.fromarray(image).save(folder / f"item{index:03d}.png")
    return folder


def write_config(path: Path, *, photos: Path, state_dir: Path, port: int, trigger: str) -> Path:
    path.write_text(f"""\
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
empty_seconds = 0.6

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
""")
    return path


def make_broker(workdir: Path, port: int) -> Mosquitto:
    """A mosquitto on a loopback port, killed (SIGKILL) and restarted at will. Persistence holds
    the dashboard's session (see Dashboard): saved once by a clean stop, reloaded after every
    SIGKILL."""
    try:
        return Mosquitto(workdir, port, persistence=True)
    except MosquittoMissing as exc:
        raise SystemExit(f"soak: {exc}") from None


class Flapper(threading.Thread):
    """Up for 2-4 s, down (SIGKILLed) for 0.5-1.5 s, until stopped; leaves it up."""

    def __init__(self, broker: Mosquitto, rng: random.Random) -> None:
        super().__init__(name="flapper", daemon=True)
        self.broker, self.rng = broker, rng
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(2.0, 4.0)):
            self.broker.kill()
            self.halt.wait(self.rng.uniform(0.5, 1.5))
            self.broker.start()


class Dashboard:
    """A QoS 1 subscriber to the bin's events with a persistent session.

    The broker has the session (and its subscription) from its persistence file
    after each restart, so events the agent publishes before the dashboard has
    reconnected are queued for it, not dropped: what the dashboard misses is
    then what the agent lost, not a race between two clients reconnecting.
    """

    def __init__(self, port: int) -> None:
        self.ids: dict[str, int] = {}
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
        event_id = json.loads(message.payload)["id"]
        with self._lock:
            self.ids[event_id] = self.ids.get(event_id, 0) + 1

    def tally(self) -> tuple[int, int]:
        """(distinct events, duplicate receptions)."""
        with self._lock:
            return len(self.ids), sum(self.ids.values()) - len(self.ids)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Agent:
    """One life of ``bin-agent run``."""

    def __init__(self, config: Path, log: Path) -> None:
        with log.open("a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=REPO,
            )
        self.rss_start_mb: float | None = None

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
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bin-agent-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    port = free_port()
    photos = make_photos(workdir / "photos", 24, args.seed)
    state_dir = workdir / "state"
    db = state_dir / "bin-agent.db"
    sorting = write_config(workdir / "soak.toml", photos=photos, state_dir=state_dir, port=port, trigger="motion")
    draining = write_config(workdir / "drain.toml", photos=photos, state_dir=state_dir, port=port, trigger="manual")
    agent_log = workdir / "agent.log"

    broker = make_broker(workdir, port)
    broker.start()
    dashboard = Dashboard(port)
    broker.stop()  # saves the dashboard's session for every restart to come
    broker.start()
    flapper = Flapper(broker, rng)
    if not args.no_flap:
        flapper.start()

    print(
        f"soak: {args.items} items, agent SIGKILL every {args.kill_every or 'never'}, "
        f"broker {'steady' if args.no_flap else 'SIGKILLed every 2-4 s for 0.5-1.5 s'}; work dir {workdir}",
        flush=True,
    )
    started = time.monotonic()
    lives: list[dict[str, Any]] = []
    agent = Agent(sorting, agent_log)
    life_first_item = 0
    next_kill = args.kill_every or None
    peak_outbox = 0
    last_progress = 0.0
    total = 0
    try:
        while True:
            time.sleep(0.1)
            total, pending = database_state(db)
            if total < 0:
                continue
            peak_outbox = max(peak_outbox, pending)
            if agent.rss_start_mb is None and total - life_first_item >= 50:
                agent.rss_start_mb = agent.rss_mb()  # after start-up and the first items
            if agent.proc.poll() is not None:
                raise SystemExit(f"soak: the agent exited by itself ({agent.proc.returncode}); see {agent_log}")
            now = time.monotonic()
            if now - last_progress >= 5.0:
                last_progress = now
                delivered, duplicates = dashboard.tally()
                rss = agent.rss_mb()
                print(
                    f"  {now - started:6.0f} s  sorted {total:6d}  delivered {delivered:6d}  "
                    f"duplicates {duplicates:4d}  outbox {pending:5d} (peak {peak_outbox})  "
                    f"broker {'up  ' if broker.up else 'DOWN'} kills {broker.kills:3d}  "
                    f"agent kills {len(lives):2d}  rss {rss or 0:5.1f} MB",
                    flush=True,
                )
            if total >= args.items:
                break
            if next_kill is not None and total >= next_kill:
                lives.append(
                    {
                        "items": total - life_first_item,
                        "rss_start": agent.rss_start_mb,
                        "rss_end": agent.rss_mb(),
                        "end": "SIGKILL",
                    }
                )
                agent.kill()
                agent = Agent(sorting, agent_log)
                life_first_item, next_kill = total, total + args.kill_every
        rss_end = agent.rss_mb()
        code = agent.terminate()
        lives.append(
            {
                "items": total - life_first_item,
                "rss_start": agent.rss_start_mb,
                "rss_end": rss_end,
                "end": f"SIGTERM, exit {code}",
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
    print(f"  duplicates  {duplicates}  (at-least-once: re-sent after a kill)")
    print(f"  outbox      peak {peak_outbox}, left {pending} (drained in {drain_seconds:.1f} s after the end)")
    print(f"  broker      SIGKILLed {broker.kills} times")
    for index, life in enumerate(lives, 1):
        start = f"{life['rss_start']:.1f}" if life["rss_start"] is not None else "-"
        end = f"{life['rss_end']:.1f}" if life["rss_end"] is not None else "-"
        print(f"  life {index:2d}    {life['items']:5d} items, RSS {start} -> {end} MB, {life['end']}")
    if growths:
        print(
            f"  RSS         start {lives[0]['rss_start']:.1f} MB, end {lives[-1]['rss_end']:.1f} MB, "
            f"largest growth in one life {max(growths):+.1f} MB"
        )
    print(f"  agent log   {tracebacks} traceback(s) in {agent_log}")
    ok = lost == 0 and pending == 0 and (not growths or max(growths) < RSS_GROWTH_LIMIT_MB)
    print("PASS" if ok else "FAIL")
    if args.workdir is None and ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
