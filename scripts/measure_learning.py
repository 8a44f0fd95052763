"""Measure the learning loop like a user: sort, answer, learn, sort again.

One synthetic bin (``scripts/synthetic_bin.py --one-floor``: one dark floor, one
warm LED, one cheap camera, none of them in the training data) and two disjoint
sets of items from the TrashNet *test* split (never trained on):

1. set 2 is sorted through ``bin-agent run`` with the shipped model (before);
2. set 1 is sorted through ``bin-agent run`` with ``[capture] mode = "all"``,
   and every item is answered over a real mosquitto with ``cmd/correct`` (the
   true class), as a person would from Home Assistant;
3. ``bin-agent learn --config FILE --json``;
4. set 2 is sorted again (after): accuracy and share sent to the fallback.

Set 2's studio photos (the originals, classified directly by the shipped
model) give the "same items' studio photos" figure.

    BIN_AGENT_SHARED=../shared python scripts/measure_learning.py --work /tmp/measure

``--source DIR`` takes the items from another folder-per-class dataset (e.g.
wcnn: ``--source ../h22/data/wcnn``): its ``--subset`` (default ``test``) in
the ``--split`` file's entry for that folder, only the photos the folder has.
A folder the split file does not know: a seeded ``--sample`` of it (say so:
the model may have trained on those photos).

Writes ``result.json`` in the work folder and prints a table. Never commit the
work folder (TrashNet photos).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bin_agent import CLASSES  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.training import dataset as ds  # noqa: E402
from scripts.mosquitto_process import Mosquitto  # noqa: E402

BIN_ID = "measure-bin"
PREFIX = "smartbin"


def synthetic_bin() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("synthetic_bin", REPO / "scripts" / "synthetic_bin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def config_text(
    work: Path, replay: Path, port: int, *, capture: bool, model: Path | None = None, crop_margin: float | None = None
) -> str:
    model_path = f'path = "{model.resolve()}"\n' if model else ""
    margin = "" if crop_margin is None else f"crop_margin = {crop_margin}\n"
    return f"""
[agent]
bin_id = "{BIN_ID}"
state_dir = "{work / "state"}"
exit_when_source_ends = {"false" if capture else "true"}
drain_seconds = 10.0

[camera]
source = "replay"
{margin}
[camera.replay]
path = "{replay}"
empty_frame = "{replay / "empty.jpg"}"
realtime = false

[model]
{model_path}num_threads = 2

[actuator]
pin_factory = "mock"
dwell_seconds = 0.0

[actuator.servo]
travel_seconds = 0.0

[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}

[mqtt.commands]
rate_per_minute = 6000.0
burst = 500

[capture]
enabled = {"true" if capture else "false"}
mode = "all"

[learning]
after_labels = 0
"""


def true_class(source: str) -> str:
    return Path(source).name.split("__", 1)[0]


class Broker:
    """A real mosquitto on a free port, and a paho client that records events and results."""

    def __init__(self, work: Path) -> None:
        import paho.mqtt.client as paho

        self.broker = Mosquitto(work)
        self.broker.start()
        self.port = self.broker.port
        self.events: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="measure-learning")
        self.client.on_message = self._on_message
        for _ in range(50):
            try:
                self.client.connect("127.0.0.1", self.port)
                break
            except OSError:
                time.sleep(0.1)
        self.client.subscribe(f"{PREFIX}/{BIN_ID}/event", qos=1)
        self.client.subscribe(f"{PREFIX}/{BIN_ID}/cmd/result", qos=1)
        self.client.loop_start()
        time.sleep(0.5)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        body = json.loads(message.payload)
        with self.lock:
            (self.events if message.topic.endswith("/event") else self.results).append(body)

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self.lock:
            events, results = self.events, self.results
            self.events, self.results = [], []
        return events, results

    def publish(self, name: str, body: dict[str, Any]) -> None:
        self.client.publish(f"{PREFIX}/{BIN_ID}/cmd/{name}", json.dumps(body), qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.broker.stop()


def agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )


def figures(events: list[dict[str, Any]]) -> dict[str, Any]:
    right = [e["class"] == true_class(e["source"]) for e in events]
    fallback = [bool(e["fallback"]) for e in events]
    sorted_right = [r for r, f in zip(right, fallback) if not f]
    return {
        "items": len(events),
        "accuracy": round(sum(right) / len(events), 3),
        "fallback_share": round(sum(fallback) / len(events), 3),
        "sorted_accuracy": round(sum(sorted_right) / len(sorted_right), 3) if sorted_right else None,
        "model_version": events[0]["model_version"] if events else None,
    }


def sort_set(broker: Broker, config: Path, log: Path, expected: int) -> list[dict[str, Any]]:
    broker.take()
    process = agent(config, log)
    if process.wait(1800) != 0:
        raise SystemExit(f"bin-agent run failed, see {log}")
    deadline = time.monotonic() + 30
    while len(broker.events) < expected and time.monotonic() < deadline:
        time.sleep(0.2)
    events, _ = broker.take()
    return events


def sort_and_answer(broker: Broker, config: Path, log: Path, expected: int) -> dict[str, Any]:
    """Sort set 1 and answer every item over MQTT as it comes (retrying while the
    capture writer has not written the photo yet)."""
    broker.take()
    process = agent(config, log)
    answered: dict[str, bool] = {}
    events: list[dict[str, Any]] = []
    asked: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline and (len(answered) < expected or not all(answered.values())):
        new_events, results = broker.take()
        events += new_events
        for event in new_events:
            answered[event["id"]] = False
        for result in results:
            if result.get("command") == "correct" and result.get("id") in answered:
                if result.get("ok"):
                    answered[result["id"]] = True
                else:
                    asked.pop(result["id"], None)  # not captured yet: ask again
        now = time.monotonic()
        for event in events:
            if not answered[event["id"]] and now - asked.get(event["id"], -1e9) > 2.0:
                asked[event["id"]] = now
                broker.publish(
                    "correct", {"id": event["id"], "event_id": event["id"], "label": true_class(event["source"])}
                )
        if process.poll() is not None:
            raise SystemExit(f"bin-agent run stopped, see {log}")
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    process.wait(60)
    return {"figures": figures(events), "answered": sum(answered.values())}


def studio(items: list[ds.Item], model: Path | None = None) -> dict[str, Any]:
    from bin_agent import DEFAULT_MODEL
    from bin_agent.classify.classifier import Classifier
    from bin_agent.classify.preprocess import load_image
    from bin_agent.router import confidence_threshold

    classifier = Classifier.from_model_path(model or DEFAULT_MODEL, num_threads=2)
    threshold, _ = confidence_threshold(None, classifier.recommended_threshold, classifier.threshold)
    results = [classifier.classify(load_image(item.path)) for item in items]
    right = [r.label == CLASSES[i.label] for r, i in zip(results, items)]
    return {
        "items": len(items),
        "accuracy": round(sum(right) / len(items), 3),
        "fallback_share": round(sum(r.confidence < threshold for r in results) / len(items), 3),
    }


def pick_items(source: Path, split_path: Path, subset: str, sample: int, seed: int) -> list[ds.Item]:
    """The ``subset`` of ``source`` in the split file (only the photos the folder has:
    a rebuilt folder may lack some), or, when the split file does not know the
    folder, a seeded sample of it (stratified by class)."""
    present = ds.list_dataset(source)
    document = ds.read_split(split_path)
    if ds.dataset_name(source) in document["datasets"] or len(document["datasets"]) == 1:
        items = ds.select(present, ds.split_for(document, source, split_path), subset)
        wanted = len(ds.split_for(document, source, split_path)[subset])
        print(f"{source}: {len(items)} of the {wanted} {subset} photos of {split_path.name}", flush=True)
        return items
    share = min(1.0, sample / len(present))
    rng = random.Random(seed)
    items = []
    for c in range(len(CLASSES)):
        members = [i for i in present if i.label == c]
        items += rng.sample(members, round(share * len(members)))
    print(f"{source}: not in {split_path.name}; a seeded sample of {len(items)} photos", flush=True)
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = Path(os.environ.get("BIN_AGENT_SHARED", REPO.parent / "shared"))
    parser.add_argument(
        "--source", "--trashnet", type=Path, default=shared / "data" / "trashnet", help="dataset folder of the items"
    )
    parser.add_argument("--split", type=Path, default=REPO / "models" / "waste_split.json")
    parser.add_argument("--subset", default="test", help="the split's part the items come from (default: test)")
    parser.add_argument("--sample", type=int, default=320, help="items taken from a folder the split does not know")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--answered", type=int, default=150, help="items of set 1 (answered)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument(
        "--model",
        type=Path,
        help="int8 model to measure (default: the shipped one); its training memory beside it (scripts/build_memory.py)",
    )
    parser.add_argument(
        "--cut-out",
        action="store_true",
        help="lay the items cut out of their boards (as in a real bin), not the boards",
    )
    parser.add_argument("--crop-margin", type=float, help="camera.crop_margin of both sorts (default: the config's)")
    args = parser.parse_args()
    if shutil.which("mosquitto") is None:
        raise SystemExit("needs mosquitto on PATH")
    started = time.perf_counter()
    items = pick_items(args.source, args.split, args.subset, args.sample, args.seed)  # a bad --source: work kept
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    random.Random(args.seed).shuffle(items)
    share = args.answered / len(items)
    set1: list[ds.Item] = []
    set2: list[ds.Item] = []
    for c in range(len(CLASSES)):  # stratified: both sets have every class in the same shares
        members = [i for i in items if i.label == c]
        cut = round(share * len(members))
        set1 += members[:cut]
        set2 += members[cut:]
    module = synthetic_bin()
    module.make_bin(set1, args.work / "set1", seed=args.seed, one_floor=True, flat=True, cut=args.cut_out)
    # The same seed: the same bin.
    module.make_bin(set2, args.work / "set2", seed=args.seed, one_floor=True, flat=True, cut=args.cut_out)
    studio_figures = studio(set2, args.model)  # first: the photos before they are laid in the bin
    print(f"set 2 studio photos, {args.model or 'shipped model'}: {studio_figures}", flush=True)
    sort1, sort2 = args.work / "sort1.toml", args.work / "sort2.toml"
    broker = Broker(args.work)
    try:
        sort1.write_text(
            config_text(
                args.work, args.work / "set1", broker.port, capture=True, model=args.model, crop_margin=args.crop_margin
            )
        )
        sort2.write_text(
            config_text(
                args.work,
                args.work / "set2",
                broker.port,
                capture=False,
                model=args.model,
                crop_margin=args.crop_margin,
            )
        )
        before = figures(sort_set(broker, sort2, args.work / "before.log", len(set2)))
        print(f"set 2 before: {before}", flush=True)
        taught = sort_and_answer(broker, sort1, args.work / "set1.log", len(set1))
        print(f"set 1 answered: {taught}", flush=True)
        learn = subprocess.run(
            [sys.executable, "-m", "bin_agent", "learn", "--config", str(sort1), "--json"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            check=True,
        )
        learnt = json.loads(learn.stdout)
        print(f"learn: {learnt}", flush=True)
        after = figures(sort_set(broker, sort2, args.work / "after.log", len(set2)))
        print(f"set 2 after: {after}", flush=True)
    finally:
        broker.close()
    result = {
        "source": str(args.source),
        "subset": args.subset,
        "cut_out": args.cut_out,
        "set1_items": len(set1),
        "set2_items": len(set2),
        "set2_studio_shipped_model": studio_figures,
        "set2_before": before,
        "set1_sorted_and_answered": taught,
        "learn": learnt,
        "set2_after": after,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.work / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    run_script(main)
