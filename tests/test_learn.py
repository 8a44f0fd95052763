"""``bin-agent learn``: the head refitted on the bin's labels is deployed only when heads
refitted without each fold of the labels beat the current one on it, the agent learns on cmd/learn over a real mosquitto and
switches to the new head, and rolls a worse head back by itself.

The bin: TrashNet test-split photos (never trained on) laid on the synthetic bin floor
of ``scripts/synthetic_bin.py`` (dark plastic, a warm LED, a cheap camera); the real
shipped model, the real LiteRT interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bin_agent import CLASSES, preflight
from bin_agent.agent import build_agent, build_classifier, router_threshold
from bin_agent.classify.classifier import Classifier
from bin_agent.classify.head import Head
from bin_agent.classify.preprocess import load_image
from bin_agent.learning import deploy
from bin_agent.learning.capture import captured_items
from bin_agent.learning.labels import LabelStore
from bin_agent.learning.learn import (
    EmbeddingCache,
    alignment,
    embedding_classifier,
    install_head,
    labelled_captures,
    start_watch,
    verdict_folds,
)
from bin_agent.learning.memory import Memory
from tests.helpers import SHIPPED_MODEL, base_config, write_toml
from tests.learning_helpers import bin_photos, write_captures

PER_CLASS = 24  # TrashNet's test split has 17 trash photos: 137 items


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def labelled_bin(tmp_path_factory, trashnet_dir) -> Path:
    """A capture folder of the synthetic bin: every item labelled with its true class,
    embeddings cached (the copies of it that tests use embed nothing again)."""
    folder = tmp_path_factory.mktemp("bin") / "capture"
    classifier = Classifier.from_model_path(SHIPPED_MODEL, num_threads=1)
    write_captures(folder, bin_photos(trashnet_dir, PER_CLASS), classifier)
    return folder


def make_config(
    tmp_path: Path,
    capture: Path | None = None,
    mqtt_port: int | None = None,
    replay: Path | None = None,
    stays: bool = True,
    confidence_threshold: float | None = None,
    **learning,
) -> Path:
    data = base_config(tmp_path, replay, model=SHIPPED_MODEL, port=mqtt_port or 1883, mqtt=mqtt_port is not None)
    data["agent"]["exit_when_source_ends"] = not stays  # stays: up for the commands
    data["mqtt"]["commands"] = {"rate_per_minute": 6000, "burst": 200}  # a person answering a dozen items
    data["capture"] = {"enabled": True, "mode": "all"}
    data["learning"] = {"after_labels": 0, **learning}
    if confidence_threshold is not None:
        data.setdefault("router", {})["confidence_threshold"] = confidence_threshold
    if capture is not None:
        shutil.copytree(capture, tmp_path / "state" / "capture")
    return write_toml(tmp_path / "bin.toml", data)


def test_learn_deploys_a_head_better_on_the_bins_labels_judged_out_of_fold(tmp_path, labelled_bin):
    config_file = make_config(tmp_path, labelled_bin)
    done = cli("learn", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["deployed"], result
    # Every label judged by a head refitted without its fold; the memory covers both sources.
    assert result["held_out"] == result["labels"] == result["used"] and result["folds"] == 5
    assert result["memory"] > 1700
    assert result["accuracy_after"] > result["accuracy_before"] and result["p_value"] <= 0.05
    config = preflight.load(config_file)
    # The next `bin-agent run` uses it: its classifier is the deployed head.
    classifier = build_classifier(config)
    assert classifier.head is not None and classifier.version == result["version"] != result["previous_version"]
    # ... and the router its threshold, fitted on the bin's labels.
    assert classifier.threshold == result["threshold"]
    assert router_threshold(config, classifier)[0] == (result["threshold"] or classifier.recommended_threshold)
    assert deploy.active_model_path(config).parent.name.startswith(result["version"])
    # Versioned like any deploy: a rollback returns to the shipped model.
    deploy.rollback(config)
    assert build_classifier(config).version == result["previous_version"]


def test_a_later_learn_judges_the_learnt_head_only_on_labels_it_was_not_fitted_on(tmp_path, labelled_bin, trashnet_dir):
    # A learnt head is right on nearly all the labels it was fitted on: judged on them, no
    # later refit could ever look better, and the bin would stop learning after one learn.
    config_file = make_config(tmp_path, labelled_bin)
    first = json.loads(cli("learn", "--config", str(config_file), "--json").stdout)
    assert first["deployed"] and first["held_out"] == first["labels"] == PER_CLASS * 6 - 7, first
    again = cli("learn", "--config", str(config_file), "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert not result["deployed"] and result["held_out"] == 0 and "fitted on all" in result["reason"], result
    # Items answered since are what the next learn judges the learnt head on.
    config = preflight.load(config_file)
    learnt = build_classifier(config)
    answered = bin_photos(trashnet_dir, 5, seed=8, offset=PER_CLASS + 8)  # TrashNet's test trash is used up
    write_captures(
        tmp_path / "state" / "capture", answered, learnt, start=datetime(2026, 12, 2, tzinfo=UTC), prefix="n"
    )
    result = json.loads(cli("learn", "--config", str(config_file), "--json").stdout)
    assert len(answered) == 25 and result["labels"] == first["labels"] + 25 and result["held_out"] == 25, result
    assert result["accuracy_before"] < 1.0  # the learnt head, on items it never saw


def test_learn_refuses_a_refitted_head_that_is_not_better(tmp_path, trashnet_dir):
    # The person confirms what the shipped model said, except on a fifth of the items,
    # where the answer is a random other class (a child pressing buttons): nothing a
    # refit can learn, and what it learns from the noise costs it labels it had right.
    classifier = Classifier.from_model_path(SHIPPED_MODEL, num_threads=1)
    photos = bin_photos(trashnet_dir, 8, seed=5, offset=PER_CLASS)
    said = [classifier.classify(image).label for image, _ in photos]
    rng = np.random.default_rng(7)
    labels = [
        CLASSES[(CLASSES.index(c) + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)] if rng.random() < 0.2 else c
        for c in said
    ]
    # A threshold set in the config wins over a fitted one: only the refit can be deployed.
    config_file = make_config(tmp_path, min_labels=20, confidence_threshold=0.5)
    write_captures(tmp_path / "state" / "capture", photos, classifier, labels=labels)
    done = cli("learn", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr  # a refusal is a verdict, not an error
    result = json.loads(done.stdout)
    assert not result["deployed"] and result["held_out"] == len(photos), result
    assert result["p_value"] > 0.05 and "not better" in result["reason"]
    config = preflight.load(config_file)
    assert deploy.deployed_model(config) is None
    assert build_classifier(config).version == classifier.version


def test_learn_redeploys_the_current_head_with_the_threshold_the_bins_labels_support(tmp_path, trashnet_dir):
    # The person confirms everything the shipped model said: no refit can be better (a refit
    # may still differ on an item or two, the captures being JPEGs and the head applied to the
    # views' mean embedding, but not by enough to pass the verdict), and its answers were right
    # even below its threshold, where items went to the fallback.
    classifier = Classifier.from_model_path(SHIPPED_MODEL, num_threads=1)
    photos = bin_photos(trashnet_dir, 8, seed=5, offset=PER_CLASS)
    said = [classifier.classify(image).label for image, _ in photos]
    config_file = make_config(tmp_path, min_labels=20)
    write_captures(tmp_path / "state" / "capture", photos, classifier, labels=said)
    done = cli("learn", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["deployed"] and result["p_value"] > 0.05, result
    assert result["reason"].startswith("threshold only") and result["threshold_only"]
    assert result["threshold"] < classifier.recommended_threshold
    config = preflight.load(config_file)
    deployed = build_classifier(config)
    # The same weights as the shipped dense layer: only the calibration moved.
    builtin = embedding_classifier(SHIPPED_MODEL, config).builtin_head()
    assert deployed.head is not None and np.array_equal(deployed.head.weights, builtin.weights)
    assert np.array_equal(deployed.head.bias, builtin.bias)
    assert deployed.threshold == result["threshold"] and deployed.version == result["version"]
    assert router_threshold(config, deployed)[0] == result["threshold"]
    deploy.rollback(config)  # versioned like any deploy
    assert build_classifier(config).version == classifier.version


def test_every_verdict_fold_holds_every_class_in_time_order():
    labels = np.array([0, 1, 2] * 10 + [0] * 5 + [2, 1] * 3)  # oldest first, an uneven mix
    folds = verdict_folds(labels, 5)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(labels)))  # each label judged once
    for c in (0, 1, 2):
        members = np.flatnonzero(labels == c)
        stretches = [np.intersect1d(fold, members) for fold in folds]
        assert all(len(s) > 0 for s in stretches), c  # every fold has every class
        # ... and fold k holds stretch k of that class: its labels in time order, contiguous.
        assert np.array_equal(np.concatenate(stretches), members), c
        assert max(len(s) for s in stretches) - min(len(s) for s in stretches) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(folds, verdict_folds(labels, 5)))  # deterministic


def test_alignment_shifts_the_bin_onto_the_memory_over_the_bins_class_mix():
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 4, (3, 16))
    memory_labels = np.repeat(np.arange(3), 50)
    spread = rng.normal(0, 0.3, (150, 16))
    memory = Memory(centres[memory_labels] + spread, memory_labels, ["a", "b", "c"], "")
    # A bin that has seen mostly class 0, its camera adding the same offset to everything
    # and squeezing the spread of what it sees (a dim light).
    offset = rng.uniform(-1, 1, 16)
    bin_labels = np.array([0] * 40 + [1] * 8 + [2] * 2)
    bin_x = centres[bin_labels] + 0.5 * rng.normal(0, 0.3, (50, 16)) + offset
    shift = alignment(bin_x, bin_labels, memory)
    assert shift.shape == (16,)
    # It undoes the camera's offset, not the bin's mix of classes (the memory's plain mean
    # would pull this paper-heavy bin towards the average item) ...
    assert np.abs(shift + offset).max() < 0.25
    assert np.abs((memory.embeddings.mean(axis=0) - bin_x.mean(axis=0)) + offset).max() > 0.5
    # ... and is a pure shift: the differences between the bin's items stay as they were.
    aligned = bin_x + shift
    assert np.allclose(aligned[1:] - aligned[:-1], bin_x[1:] - bin_x[:-1])


def test_an_installed_config_with_the_retired_holdout_share_still_runs_and_says_so(tmp_path):
    # The installer keeps /etc/bin-agent/bin-agent.toml on an upgrade: a key this release
    # no longer has must not stop the bin (exit 78 and never restarted); it is named.
    config_file = make_config(tmp_path, holdout_share=0.3)
    done = cli("check-config", str(config_file), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "learning.holdout_share: no longer used" in done.stderr
    assert "delete this line" in done.stderr
    # A mistyped key next to it is still an error naming its key.
    text = config_file.read_text().replace("holdout_share = 0.3", "holdout_share = 0.3\nmax_pp = 0.1")
    config_file.write_text(text)
    done = cli("check-config", str(config_file), timeout=60)
    assert done.returncode == 78 and "learning.max_pp: unknown key" in done.stdout + done.stderr


def test_embeddings_are_computed_once_per_captured_photo(tmp_path, trashnet_dir):
    config_file = make_config(tmp_path)
    config = preflight.load(config_file)
    folder = tmp_path / "state" / "capture"
    classifier = embedding_classifier(SHIPPED_MODEL, config)
    write_captures(folder, bin_photos(trashnet_dir, 2, seed=9), classifier)
    data, cache = labelled_captures(config, classifier)
    assert cache.computed == 12 and cache.path.is_file()
    # Cached as computed from the photo (float16 in the file).
    first = data.items[0]
    assert np.allclose(data.embeddings[0], classifier.embed(load_image(first.image)), atol=1e-2)
    again, cache = labelled_captures(config, classifier)
    assert cache.computed == 0 and np.allclose(again.embeddings, data.embeddings, atol=1e-2)
    # A photo deleted by the size cap leaves the cache at the next learn.
    first.image.with_suffix(".json").unlink()
    labelled_captures(config, classifier)
    assert first.event_id not in EmbeddingCache(folder, deploy.sha256(SHIPPED_MODEL)).vectors


def test_a_learn_after_run_with_capture_all_embeds_no_photo(tmp_path, trashnet_dir):
    # The bin sorts items through `bin-agent run` with [capture] mode = "all"; the
    # classifier read each item's embedding as it classified it and capture kept it, so
    # the learn that follows embeds nothing (on a Pi: 1.5-2 min saved per 1,000 items).
    replay = tmp_path / "replay"
    replay.mkdir()
    for n, (image, index) in enumerate(bin_photos(trashnet_dir, 4, seed=11)):
        Image.fromarray(image).save(replay / f"{n:02d}_{CLASSES[index]}.jpg", quality=95)
    config_file = make_config(tmp_path, replay=replay, stays=False, min_labels=8)
    data = preflight.load(config_file)
    done = cli("run", "--config", str(config_file), timeout=300)
    assert done.returncode == 0, done.stderr
    folder = Path(data.agent.state_dir) / "capture"
    items = list(captured_items(folder))
    assert len(items) == 24
    assert all("embedding" in item.info for item in items)
    store = LabelStore(folder)
    for item in items:  # every item answered, as cmd/correct or the buttons do
        truth = Path(item.info["source"]).stem.split("_")[-1]
        store.add(item.event_id, truth, item.info["class"], "test")
    done = cli("learn", "--config", str(config_file), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["labels"] == 24 and result["embedded"] == 0, result


def test_cmd_learn_over_mqtt_deploys_and_the_running_agent_switches(
    tmp_path, labelled_bin, mosquitto, subscriber_factory
):
    config = preflight.load(make_config(tmp_path, labelled_bin, mqtt_port=mosquitto.port))
    shipped = Classifier.from_model_path(SHIPPED_MODEL).version
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    agent = build_agent(config)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert sub.wait_for(lambda: sub.json_on("/state"), 30)
        sub.publish("smartbin/test-bin/cmd/learn", json.dumps({"id": "l1"}))
        assert sub.wait_for(lambda: [r for r in sub.json_on("/cmd/result") if r.get("id") == "l1"], 20)
        assert [r for r in sub.json_on("/cmd/result") if r.get("id") == "l1"][0]["started"]

        def learnt() -> list[dict]:
            return [r for r in sub.json_on("/cmd/result") if r.get("command") == "learn" and "deployed" in r]

        assert sub.wait_for(learnt, 300)
        result = learnt()[0]
        # Deployed, and loaded beside the running model (the loop switches before the next item).
        assert result["deployed"] and result["reload"]["model_version"] == result["version"], result
        assert sub.wait_for(lambda: sub.json_on("/state")[-1]["learning"]["last_learn"], 10)
        state = sub.json_on("/state")[-1]
        assert state["learning"]["labels"] == result["labels"] and state["learning"]["last_learn"]
        assert state["learning"]["held_out_accuracy"] == result["accuracy_after"]
        assert result["version"] != shipped
    finally:
        agent.stop()
        runner.join(60)


def test_the_agent_rolls_back_a_learnt_head_that_sorts_worse(tmp_path, trashnet_dir, mosquitto, subscriber_factory):
    # Glass and plastic photos from the studio, which the shipped head mostly gets right.
    replay = tmp_path / "replay"
    replay.mkdir()
    split = json.loads((SHIPPED_MODEL.parent / "waste_split.json").read_text())["datasets"]["trashnet"]["test"]
    for label in ("glass", "plastic"):
        for key in [k for k in sorted(split) if k.startswith(f"{label}/")][:6]:
            Image.open(trashnet_dir / key).convert("RGB").save(replay / f"{label}_{Path(key).stem}.jpg")
    config_file = make_config(tmp_path, mqtt_port=mosquitto.port, replay=replay, watch_labels=8)
    config = preflight.load(config_file)
    # A "learnt" head that swaps glass and plastic, deployed and watched as a learn does.
    classifier = embedding_classifier(SHIPPED_MODEL, config)
    builtin = classifier.builtin_head()
    order = list(range(len(CLASSES)))
    g, p = CLASSES.index("glass"), CLASSES.index("plastic")
    order[g], order[p] = p, g
    worse = Head(builtin.weights[order], builtin.bias[order], list(CLASSES), "shipped+bin.worse")
    install_head(config, classifier, worse)
    start_watch(config, worse.version, classifier.version)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    agent = build_agent(config)
    assert agent.classifier.version == worse.version
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert sub.wait_for(lambda: len(sub.json_on("/event")) >= 12, 120)
        folder = Path(config.agent.state_dir) / "capture"
        assert sub.wait_for(lambda: len(list(captured_items(folder))) >= 12, 30)
        # The person answers with the true class (as cmd/correct does from Home Assistant).
        for number, event in enumerate(sub.json_on("/event")[:12]):
            truth = "glass" if "glass_" in event["source"] else "plastic"
            sub.publish(
                "smartbin/test-bin/cmd/correct",
                json.dumps({"id": f"c{number}", "event_id": event["id"], "label": truth}),
            )

        def rolled_back() -> list[dict]:
            return [r for r in sub.json_on("/cmd/result") if r.get("command") == "rollback"]

        assert sub.wait_for(rolled_back, 120)
        report = rolled_back()[0]
        assert report["rolled_back"] and report["breaks"] > report["fixes"] and report["p_value"] < 0.05
        assert "rolled back" in report["reason"] and report["reload"]["model_version"] == classifier.version
        assert sub.wait_for(lambda: (sub.json_on("/state")[-1]["learning"]["watch"] or {}).get("rolled_back"), 10)
    finally:
        agent.stop()
        runner.join(60)
    assert build_classifier(config).version == classifier.version
    assert len(LabelStore(folder).all()) == 12
