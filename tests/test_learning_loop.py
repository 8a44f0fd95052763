"""The whole learning loop on a few photos, through the commands a user types:
capture during a replay → correct two items over MQTT → label the rest in the
terminal → export → a tiny training run on TrashNet + the export → compare →
deploy → reload while the agent runs → roll back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent
from bin_agent.learning.capture import captured_items
from bin_agent.learning.labels import LabelStore, review_order
from bin_agent.training import dataset as ds
from tests.helpers import SHIPPED_MODEL, base_config, needs_tensorflow, write_toml

PER_CLASS = 2


def cli(*args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bin_agent", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


def true_class(source: str) -> str:
    return re.search(r"\d+_([a-z]+)\d+\.jpg", source).group(1)


def test_the_whole_loop(tmp_path, trashnet_dir, imagenet_weights, mosquitto, subscriber_factory):
    needs_tensorflow()
    # Photos of the bin: TrashNet test photos the shipped model never trained on.
    split = json.loads((SHIPPED_MODEL.parent / "waste_split.json").read_text())["datasets"]["trashnet"]
    photos = tmp_path / "photos"
    photos.mkdir()
    n = 0
    for label in CLASSES:
        for rel in [k for k in sorted(split["test"]) if k.startswith(f"{label}/")][-PER_CLASS:]:
            (photos / f"{n:02d}_{Path(rel).name}").symlink_to(trashnet_dir / rel)
            n += 1
    data = base_config(tmp_path, photos, port=mosquitto.port, model=SHIPPED_MODEL)
    data["agent"]["exit_when_source_ends"] = False
    data["capture"] = {"enabled": True, "mode": "all"}
    config_file = write_toml(tmp_path / "bin.toml", data)
    config = preflight.load(config_file)
    folder = Path(config.agent.state_dir) / "capture"
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")

    # 1. Capture during a replay, and correct two items over MQTT.
    agent = build_agent(config)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert sub.wait_for(lambda: len(sub.on("/event")) == n, 90)
        assert sub.wait_for(lambda: agent.capture.saved == n, 30)
        events = sub.json_on("/event")
        for number, event in enumerate(events[:2]):
            wanted = true_class(event["source"])
            if wanted == event["class"]:  # the model was right: "correct" it to another class
                wanted = next(c for c in CLASSES if c != event["class"])
            sub.publish(
                "smartbin/test-bin/cmd/correct",
                json.dumps({"id": f"fix{number}", "event_id": event["id"], "label": wanted}),
            )
        assert sub.wait_for(
            lambda: sum(r.get("ok", False) for r in sub.json_on("/cmd/result") if r.get("command") == "correct") == 2,
            20,
        )
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["counts"]["total"] == n, 10)
    finally:
        agent.stop()
        runner.join(60)
    assert len(list(captured_items(folder))) == n

    # 2. The rest labelled in the terminal (true class: a key per class), then exported.
    store = LabelStore(folder)
    todo = review_order(list(captured_items(folder)), store.all())
    assert len(todo) == n - 2
    keys = "".join(f"{CLASSES.index(true_class(item.info['source'])) + 1}\n" for item in todo)
    labelled = cli("label", "--config", str(config_file), stdin=keys)
    assert labelled.returncode == 0, labelled.stderr
    assert len(store.all()) == n
    mybin = tmp_path / "mybin"
    exported = cli("label", "--config", str(config_file), "--export", str(mybin))
    assert exported.returncode == 0 and f"exported {n} labelled" in exported.stdout, exported.stderr

    # 3. A split that keeps the shipped model's subsets and adds the bin's photos; a tiny run.
    bin_split = tmp_path / "bin_split.json"
    made = cli(
        "split",
        str(mybin),
        "--base",
        str(SHIPPED_MODEL.parent / "waste_split.json"),
        "--test",
        "0.5",
        "--val",
        "0.01",
        "--out",
        str(bin_split),
    )
    assert made.returncode == 0, made.stderr
    document = ds.read_split(bin_split)
    assert document["datasets"]["trashnet"]["test"] == split["test"], "the shipped test photos stay held out"
    assert document["datasets"]["mybin"]["counts"]["test"]["total"] == n // 2
    run = tmp_path / "run"
    trained = cli(
        "train",
        str(trashnet_dir),
        str(mybin),
        "--split",
        str(bin_split),
        "--out",
        str(run),
        "--weights",
        str(imagenet_weights),
        "--input-size",
        "96",
        "--copies",
        "1",
        "--head-epochs",
        "1",
        "--fine-epochs",
        "1",
        "--max-per-class",
        "2",
        "--calibration",
        "8",
        "--cut-layer",
        "block_12_add",
        "--views",
        "1",
        "--qat-epochs",
        "0",
        "--name",
        "mybin_model",
        "--version",
        "mybin-1",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    candidate = run / "mybin_model.tflite"
    assert candidate.is_file()

    # 4. Compare on the bin's held-out photos: both models, one verdict line.
    compared = cli(
        "compare",
        "--model",
        str(SHIPPED_MODEL),
        "--model",
        str(candidate),
        str(mybin),
        "--split",
        str(bin_split),
        "--subset",
        "test",
        "--config",
        str(config_file),
    )
    assert compared.returncode in (0, 1), compared.stderr
    verdict = compared.stdout.strip().splitlines()[-1]
    assert re.match(rf"verdict: B is (NOT )?better than A: B right on \d+ of {n // 2} photos, A on \d+", verdict)

    # 5. Deploy, reload while the agent runs, roll back.
    deployed = cli(
        "deploy", str(candidate), "--config", str(config_file), "--reference", str(next(mybin.glob("*/*.jpg")))
    )
    assert deployed.returncode == 0, deployed.stderr
    data["camera"]["replay"].update(
        {"loop": True, "realtime": True, "fps": 20.0, "item_seconds": 0.8, "empty_seconds": 0.6}
    )
    config = preflight.load(write_toml(config_file, data))
    agent = build_agent(config)
    assert agent.classifier.version == "mybin-1", "a restarted agent runs the deployed model"
    shipped_version = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())["version"]
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert sub.wait_for(lambda: sub.json_on("/event")[-1]["model_version"] == "mybin-1", 60)
        back = cli("deploy", "--rollback", "--config", str(config_file))
        assert back.returncode == 0, back.stderr
        sub.publish("smartbin/test-bin/cmd/reload_model", b'{"id": "back"}')
        assert sub.wait_for(lambda: any(r.get("id") == "back" and r["ok"] for r in sub.json_on("/cmd/result")), 30)
        assert sub.wait_for(lambda: sub.json_on("/event")[-1]["model_version"] == shipped_version, 60)
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["model"]["version"] == shipped_version, 10)
        forward = cli("deploy", "--rollback", "--config", str(config_file))
        assert forward.returncode == 0
        sub.publish("smartbin/test-bin/cmd/reload_model", b'{"id": "fwd"}')
        assert sub.wait_for(lambda: sub.json_on("/event")[-1]["model_version"] == "mybin-1", 60)
    finally:
        agent.stop()
        runner.join(60)
    assert not runner.is_alive()


def test_split_base_keeps_every_subset_and_splits_only_new_photos(tmp_path):
    def add_photos(root: Path, start: int, count: int) -> None:
        for name in CLASSES:
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(start, start + count):
                Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / name / f"{i}.jpg")

    base_root, mybin = tmp_path / "base", tmp_path / "mybin"
    add_photos(base_root, 0, 10)
    base = ds.split_document([base_root])
    add_photos(mybin, 0, 10)
    first = ds.extend_split(base, [mybin])
    assert first["datasets"]["base"] == base["datasets"]["base"]
    assert sum(len(first["datasets"]["mybin"][s]) for s in ds.SUBSETS) == 60
    add_photos(mybin, 10, 10)  # the next round's photos
    second = ds.extend_split(first, [mybin])
    for subset in ds.SUBSETS:
        assert set(first["datasets"]["mybin"][subset]) <= set(second["datasets"]["mybin"][subset]), (
            "a photo never changes subset"
        )
    assert sum(len(second["datasets"]["mybin"][s]) for s in ds.SUBSETS) == 120
    assert second["datasets"]["mybin"]["counts"]["test"]["total"] == len(second["datasets"]["mybin"]["test"])
