#!/usr/bin/env python3
"""Storage figures of issue 23, measured here and printed (no pass/fail).

``syncs``: fsync/fdatasync calls per recorded item (record + "sorted" mark +
the PUBACK delete), counted by ``strace -f`` around a child process that
records N items, minus a child that records none (open and close alone); and the
bytes it hands to ``write``/``pwrite`` per file of its state directory (the WAL's
pages, the database's at checkpoints, the marker): what an item costs the card.

``flush``: a backlog of N events flushed to a local mosquitto after an outage,
by the agent's MQTT link and store (until the outbox is empty and the deletes
are committed), against bare paho publishing the same N payloads at QoS 1 with
the same in-flight window; both in one run, from before the connection to the
last PUBACK; median of ``--rounds``.

    python scripts/bench_storage.py [--items 200] [--events 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PAYLOAD = {"class": "glass", "confidence": 0.93, "compartment": "glass", "pad": "x" * 500}


def child_record(directory: str, items: int) -> None:
    """Record ``items`` items the way the agent does, acknowledge each."""
    from bin_agent.store import Store

    Path(directory).mkdir(exist_ok=True)
    store = Store(Path(directory) / "bin-agent.db")
    for n in range(items):
        seq = store.record_event(
            event_id=f"id-{n}",
            topic="t/event",
            payload={**PAYLOAD, "id": f"id-{n}"},
            label="glass",
            compartment="glass",
            fallback=False,
        )
        store.mark_actuated(seq)
        store.acknowledge(seq)
        store.retry_if_due()
    store.close()


@dataclass
class Traced:
    """What a child that recorded some items asked of the card: sync calls, and bytes handed
    to ``write``/``pwrite`` per file of the state directory (by name: ``bin-agent.db-wal`` ...)."""

    syncs: int
    written: collections.Counter[str]


WRITE = re.compile(r"\b(?:write|pwrite64|pwritev2?|writev)\(\d+<([^>]*)>.*= (\d+)$")


def trace_child(items: int) -> Traced:
    with tempfile.TemporaryDirectory() as directory:
        trace = Path(directory) / "trace"
        subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-y",  # each fd with its path: bytes per file
                "-e",
                "trace=fsync,fdatasync,sync_file_range,write,pwrite64,pwritev,pwritev2,writev",
                "-o",
                str(trace),
                sys.executable,
                __file__,
                "--child",
                str(Path(directory) / "state"),
                str(items),
            ],
            check=True,
        )
        syncs, written = 0, collections.Counter[str]()
        for line in trace.read_text().splitlines():
            if re.search(r"\b(fsync|fdatasync|sync_file_range)\(", line):
                syncs += 1
            elif (found := WRITE.search(line)) and "/state/" in found[1]:
                written[Path(found[1]).name] += int(found[2])
        return Traced(syncs, written)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


def bare_paho(port: int, events: int, inflight: int) -> float:
    import paho.mqtt.client as paho

    text = json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True)
    done = threading.Event()
    acked = [0]

    def on_publish(client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        acked[0] += 1
        if acked[0] == events:
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    started = time.perf_counter()
    client.connect("127.0.0.1", port, 30, clean_start=True)
    client.loop_start()
    for _ in range(events):
        client.publish("bench/bare/event", text, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def agent_link(port: int, events: int, inflight: int, directory: Path) -> float:
    from bin_agent.config import MqttSection
    from bin_agent.mqtt.link import MqttLink, Topics
    from bin_agent.store import Store

    store = Store(directory / "bin-agent.db", max_outbox_events=events + 1)
    topics = Topics.for_bin("bench", "agent")
    for n in range(events):  # the outage: all of it waits in the outbox
        store.record_event(
            event_id=f"id-{n}",
            topic=topics.event,
            payload=PAYLOAD,
            label="glass",
            compartment="glass",
            fallback=False,
        )
    settings = MqttSection(host="127.0.0.1", port=port, keepalive=30, max_inflight=inflight)
    link = MqttLink(
        settings, topics, store, lambda name, payload, retained: None, state=lambda: {}, client_id="bench-agent"
    )
    started = time.perf_counter()
    link.start()
    while store.pending_count():
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    link.stop()
    closing = time.perf_counter()
    store.close()  # commits the deletes still grouped in memory: counted in
    return elapsed + time.perf_counter() - closing


def trigger_to_puback(port: int, directory: Path, items: int) -> list[float]:
    """Milliseconds from the trigger firing to the PUBACK of the item's event being
    applied, for an agent with a 1.8 s servo cycle (0.2 s travel, 1.4 s dwell, mock pins)."""
    import numpy as np
    from PIL import Image

    from bin_agent import preflight
    from bin_agent.agent import build_agent

    photos = directory / "photos"
    photos.mkdir()
    for name, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200)), ("c", (0, 160, 0))):
        image = np.full((120, 160, 3), 230, np.uint8)
        image[25:95, 50:110] = colour
        Image.fromarray(image).save(photos / f"{name}.png")
    repo = Path(__file__).resolve().parent.parent
    data = {
        "agent": {"bin_id": "bench", "state_dir": str(directory / "state")},
        "camera": {
            "source": "replay",
            "replay": {
                "path": str(photos),
                "realtime": True,
                "fps": 20.0,
                "item_seconds": 2.5,
                "empty_seconds": 0.6,
                "loop": True,
            },
        },
        "trigger": {"mode": "motion", "settle_seconds": 0.5},
        "model": {"path": str(repo / "tests" / "data" / "models" / "tiny_uint8.tflite"), "num_threads": 1},
        "actuator": {"kind": "servo", "pin_factory": "mock", "dwell_seconds": 1.4, "servo": {"travel_seconds": 0.2}},
        "mqtt": {"host": "127.0.0.1", "port": port},
    }
    agent = build_agent(preflight.load_dict(data, base_dir=directory))
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)
    fired: list[float] = []
    acked: list[float] = []
    update, acknowledge_many = agent.trigger.update, agent.store.acknowledge_many

    def timed_update(frame):  # noqa: ANN001, ANN202
        result = update(frame)
        if result:
            fired.append(time.perf_counter())
        return result

    def timed_acknowledge_many(seqs: Iterable[int]) -> None:
        # The pump tells the store a wake-up's PUBACKs together (one item's event here).
        seqs = list(seqs)
        acknowledge_many(seqs)
        acked.extend([time.perf_counter()] * len(seqs))
        if len(acked) >= items:
            agent.stop()

    agent.trigger.update = timed_update  # type: ignore[method-assign]
    agent.store.acknowledge_many = timed_acknowledge_many  # type: ignore[method-assign]
    agent.run()
    return [1000.0 * (a - f) for f, a in zip(fired, acked, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=20, help="[mqtt] max_inflight (the default: 20)")
    parser.add_argument("--latency-items", type=int, default=6, help="items for trigger -> PUBACK (0: skip)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_record(args.child[0], int(args.child[1]))
        return

    base, loaded = trace_child(0), trace_child(args.items)
    print(
        f"syncs per recorded item: {(loaded.syncs - base.syncs) / args.items:.2f} "
        f"({loaded.syncs} syncs for {args.items} items, {base.syncs} for open+close alone)"
    )
    per_item = {name: (n - base.written[name]) / args.items for name, n in loaded.written.most_common()}
    print(
        f"bytes written per recorded item: {sum(per_item.values()) / 1024:.1f} KiB ("
        + ", ".join(f"{name} {n / 1024:.1f}" for name, n in per_item.items() if n > 0)
        + "; what the card's controller makes of it only a card can tell)"
    )

    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        broker, port = start_broker(directory)
        try:
            ratios, bares, links = [], [], []
            if args.latency_items:
                latency = trigger_to_puback(port, directory, args.latency_items)
                print(
                    f"trigger fires -> event PUBACKed, 1.8 s servo cycle, {len(latency)} items: "
                    f"min {min(latency):.0f} / median {statistics.median(latency):.0f} / max {max(latency):.0f} ms"
                )
            for round_ in range(args.rounds):
                bare = bare_paho(port, args.events, args.inflight)
                state = directory / f"round{round_}"
                state.mkdir()
                link = agent_link(port, args.events, args.inflight, state)
                bares.append(bare)
                links.append(link)
                ratios.append(link / bare)
                print(
                    f"round {round_ + 1}: {args.events} events: agent {link:.2f} s, bare paho {bare:.2f} s = {link / bare:.2f}x"
                )
            if not ratios:
                return
            print(
                f"flush after an outage, median of {args.rounds}: agent {statistics.median(links):.2f} s vs "
                f"bare paho QoS 1 {statistics.median(bares):.2f} s = {statistics.median(ratios):.2f}x "
                f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x; cpus {os.cpu_count()})"
            )
        finally:
            broker.kill()
            broker.wait()


if __name__ == "__main__":
    main()
