"""bin-agent deploy / --rollback, and the running agent switching models
(MQTT cmd/reload_model, SIGHUP) between two items without losing one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.classify.classifier import ModelFiles
from bin_agent.learning import deploy
from tests.helpers import SHIPPED_MODEL, base_config, write_toml


def copy_model(
    source: Path, folder: Path, version: str, name: str = "candidate", threshold: float | None = None
) -> Path:
    """The shipped model's three files under a new name, with another version (and, given
    ``threshold``, another recommended confidence threshold)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ModelFiles.beside(source)
    model = folder / f"{name}.tflite"
    shutil.copyfile(files.model, model)
    shutil.copyfile(files.labels, model.with_suffix(".labels.txt"))
    meta = json.loads(files.metadata.read_text())
    meta["version"] = version
    if threshold is not None:
        meta["recommended_confidence_threshold"]["value"] = threshold
    model.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return model


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    return write_toml(tmp_path / "bin.toml", data)


def test_deploy_installs_atomically_and_rollback_goes_back(tmp_path, config_file):
    from bin_agent import preflight

    config = preflight.load(config_file)
    shipped_version = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())["version"]
    candidate = copy_model(SHIPPED_MODEL, tmp_path / "cand", "bin-01-retrained-1")
    assert deploy.active_model_path(config) == config.model.path

    result = run_cli("deploy", str(candidate), "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert "deployed bin-01-retrained-1" in result.stdout and "systemctl reload" in result.stdout
    models = Path(config.agent.state_dir) / "models"
    active = deploy.active_model_path(config)
    assert active.parent.parent == models and active.name == "candidate.tflite"
    assert (models / "current").is_symlink() and not os.readlink(models / "current").startswith("/")
    assert not (models / "previous").exists(), "before the first deploy the configured model ran"
    assert active.read_bytes() == candidate.read_bytes()
    assert not list(models.glob(".*")), "no staging leftovers"
    from bin_agent.agent import build_classifier

    assert build_classifier(config).version == "bin-01-retrained-1"
    # Rolling back the first deploy returns to the configured model.path, and forward again.
    deploy.rollback(config)
    assert deploy.active_model_path(config) == config.model.path
    assert build_classifier(config).version == shipped_version
    deploy.rollback(config)
    assert build_classifier(config).version == "bin-01-retrained-1"

    second = copy_model(SHIPPED_MODEL, tmp_path / "cand2", "bin-01-retrained-2", name="other")
    assert run_cli("deploy", str(second), "--config", str(config_file)).returncode == 0
    assert build_classifier(config).version == "bin-01-retrained-2"
    listing = run_cli("deploy", "--list", "--config", str(config_file)).stdout
    assert "current" in listing and "previous" in listing

    back = run_cli("deploy", "--rollback", "--config", str(config_file))
    assert back.returncode == 0, back.stderr
    assert build_classifier(config).version == "bin-01-retrained-1"
    assert run_cli("deploy", "--rollback", "--config", str(config_file)).returncode == 0
    assert build_classifier(config).version == "bin-01-retrained-2", "a second rollback goes forward again"


@pytest.mark.parametrize("damage", ["truncated", "labels", "no-metadata", "router"])
def test_a_broken_candidate_is_refused_with_one_line(tmp_path, config_file, damage):
    candidate = copy_model(SHIPPED_MODEL, tmp_path / "cand", "broken")
    if damage == "truncated":
        data = candidate.read_bytes()
        candidate.write_bytes(data[: len(data) // 2])
    elif damage == "labels":
        labels = candidate.with_suffix(".labels.txt")
        labels.write_text(labels.read_text().replace("trash", "rubbish"))
    elif damage == "no-metadata":
        candidate.with_suffix(".json").unlink()
    elif damage == "router":
        meta = json.loads(candidate.with_suffix(".json").read_text())
        labels = candidate.with_suffix(".labels.txt")
        labels.write_text(labels.read_text().replace("trash", "textile"))
        meta["classes"] = [c if c != "trash" else "textile" for c in meta["classes"]]
        candidate.with_suffix(".json").write_text(json.dumps(meta))
    result = run_cli("deploy", str(candidate), "--config", str(config_file))
    assert result.returncode == 2
    # (LiteRT itself may note "INFO: Created TensorFlow Lite XNNPACK delegate" on stderr.)
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("INFO: ")]
    assert len(lines) == 1 and lines[0].startswith("bin-agent: deploy refused: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "models" / "current").exists(), "nothing was installed"


def test_reload_over_mqtt_while_the_agent_runs_loses_no_item(tmp_path, trashnet_dir, mosquitto, subscriber_factory):
    photos = tmp_path / "photos"
    photos.mkdir()
    for n, label in enumerate(["glass", "paper", "metal", "cardboard", "plastic", "glass", "paper", "metal"]):
        photo = sorted((trashnet_dir / label).glob("*.jpg"))[n]
        (photos / f"{n:02d}_{photo.name}").symlink_to(photo)
    data = base_config(tmp_path, photos, port=mosquitto.port, model=SHIPPED_MODEL)
    # Paced on the wall clock: the replay is still running when the reload comes.
    data["camera"]["replay"].update({"realtime": True, "fps": 20.0, "item_seconds": 1.0, "empty_seconds": 0.6})
    config = preflight.load_dict(data, base_dir=tmp_path)
    old_version = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())["version"]
    agent = build_agent(config)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    assert agent.mqtt is not None and agent.mqtt.wait_connected(10)
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert sub.wait_for(lambda: len(sub.on("/event")) >= 1, 30)
        candidate = copy_model(SHIPPED_MODEL, tmp_path / "cand", "reloaded-1")
        deploy.install(candidate, config, deploy.validate(candidate, config))
        sub.publish("smartbin/test-bin/cmd/reload_model", b'{"id": "r1"}')
        assert sub.wait_for(lambda: any(r.get("id") == "r1" for r in sub.json_on("/cmd/result")), 30)
        reply = [r for r in sub.json_on("/cmd/result") if r.get("id") == "r1"][0]
        assert reply["ok"] and reply["model_version"] == "reloaded-1"
        # A broken deployed model is refused and the running one stays.
        (Path(config.agent.state_dir) / "models" / "current" / "candidate.json").write_text("{")
        sub.publish("smartbin/test-bin/cmd/reload_model", b'{"id": "r2"}')
        assert sub.wait_for(lambda: any(r.get("id") == "r2" for r in sub.json_on("/cmd/result")), 30)
        bad = [r for r in sub.json_on("/cmd/result") if r.get("id") == "r2"][0]
        assert not bad["ok"] and "keeping model reloaded-1" in bad["reason"]
    finally:
        runner.join(120)
        agent.stop()
    assert not runner.is_alive()
    assert sub.wait_for(lambda: len(sub.on("/event")) >= 8, 20)
    events = sub.json_on("/event")
    assert len(events) == 8, "one event per photo: no item lost across the reload"
    versions = [e["model_version"] for e in events]
    first_new = versions.index("reloaded-1")
    assert 1 <= first_new < 8
    assert versions == [old_version] * first_new + ["reloaded-1"] * (8 - first_new)
    states = sub.json_on("/state")
    assert states[-1]["model"]["version"] == "reloaded-1"


def test_sighup_switches_the_running_agent(tmp_path, trashnet_dir, mosquitto, subscriber_factory):
    photo = sorted((trashnet_dir / "glass").glob("*.jpg"))[0]
    data = base_config(tmp_path, photo, port=mosquitto.port, model=SHIPPED_MODEL)
    data["camera"]["replay"].update(
        {"realtime": True, "loop": True, "fps": 20.0, "item_seconds": 0.8, "empty_seconds": 0.6}
    )
    config_file = write_toml(tmp_path / "bin.toml", data)
    sub = subscriber_factory(mosquitto.port, "smartbin/test-bin/#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bin_agent", "run", "--config", str(config_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.wait_for(lambda: len(sub.on("/event")) >= 1, 60), "the agent did not start sorting"
        candidate = copy_model(SHIPPED_MODEL, tmp_path / "cand", "hup-1")
        assert run_cli("deploy", str(candidate), "--config", str(config_file)).returncode == 0
        proc.send_signal(signal.SIGHUP)
        assert sub.wait_for(lambda: any(r.get("trigger") == "SIGHUP" for r in sub.json_on("/cmd/result")), 30)
        assert sub.wait_for(lambda: sub.json_on("/event")[-1]["model_version"] == "hup-1", 30)
        assert proc.poll() is None, "SIGHUP must not stop the agent"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr


@pytest.mark.parametrize("pinned", [None, 0.9], ids=["unset", "pinned"])
def test_a_deployed_model_brings_its_threshold_unless_the_config_pins_one(tmp_path, pinned):
    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    if pinned is not None:
        data.setdefault("router", {})["confidence_threshold"] = pinned
    config_file = write_toml(tmp_path / "bin.toml", data)
    shipped = json.loads(SHIPPED_MODEL.with_suffix(".json").read_text())["recommended_confidence_threshold"]["value"]
    agent = build_agent(preflight.load(config_file))
    assert agent.router.confidence_threshold == (shipped if pinned is None else pinned)

    candidate = copy_model(SHIPPED_MODEL, tmp_path / "cand", "strict-1", threshold=0.95)
    result = run_cli("deploy", str(candidate), "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    expected = (
        "confidence threshold in force: 0.95 (the model's metadata)"
        if pinned is None
        else "confidence threshold in force: 0.9 (router.confidence_threshold)"
    )
    assert expected in result.stdout, result.stdout

    assert agent.reload_model()["ok"]
    assert agent.run() == 0  # the replay's photo, then the end: the switch comes before the item
    assert agent.classifier.version == "strict-1"
    assert agent.router.confidence_threshold == (0.95 if pinned is None else pinned)


def test_deploys_keep_the_newest_keep_models_versions_and_never_current_or_previous(tmp_path):
    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["learning"] = {"keep_models": 3}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    models = Path(config.agent.state_dir) / "models"

    def deploy_version(n: int) -> None:
        candidate = copy_model(SHIPPED_MODEL, tmp_path / f"cand{n}", f"v{n}")
        deploy.install(candidate, config, deploy.validate(candidate, config))

    def kept() -> set[str]:
        return {row["folder"].split("-")[0] for row in deploy.installed(config)}

    def age(version: str) -> None:  # deployed long ago
        (folder,) = models.glob(f"{version}-*")
        os.utime(folder, (0, 0))

    for n in range(1, 6):
        deploy_version(n)
        assert len(kept()) == min(n, 3)
    assert kept() == {"v3", "v4", "v5"}
    assert not list(models.glob(".*")), "nothing half-deleted"
    # previous is kept even when it is the oldest ...
    deploy.rollback(config)  # current v4, previous v5
    age("v4")
    age("v5")
    deploy_version(6)  # current v6, previous v4 (the oldest)
    assert kept() == {"v6", "v4", "v3"}
    # ... and so is current: with room for no other version, only the two stay.
    age("v6")
    data["learning"] = {"keep_models": 2}
    tighter = preflight.load(write_toml(tmp_path / "bin2.toml", data))
    (oldest_other,) = models.glob("v3-*")
    assert deploy.prune(tighter) == [oldest_other.name]
    assert kept() == {"v6", "v4"}
    assert deploy.active_model_path(config).parent.name.startswith("v6-")
    # A redeployed old version is as new as its last deploy.
    deploy_version(7)  # current v7, previous v6, other v4
    deploy_version(4)  # the same version again: current v4, previous v7, other v6
    deploy_version(8)  # current v8, previous v4, others v7 (newer), v6
    assert kept() == {"v8", "v4", "v7"}
    deploy_version(9)  # current v9, previous v8, others v4 (deployed after v7), v7
    assert kept() == {"v9", "v8", "v4"}


def test_a_deploy_made_while_the_clock_is_months_behind_is_not_the_oldest_that_keep_models_deletes(
    tmp_path, monkeypatch
):
    """A Pi without an RTC booted three months behind after a power cut and deploys (learns)
    before NTP answers: its deploys are newer than those before the power cut, and prune keeps
    them over an older version, whatever the clock says."""
    import time

    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["learning"] = {"keep_models": 3}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))

    def deploy_version(n: int) -> None:
        candidate = copy_model(SHIPPED_MODEL, tmp_path / f"cand{n}", f"v{n}")
        deploy.install(candidate, config, deploy.validate(candidate, config))

    for n in range(1, 4):
        deploy_version(n)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 90 * 86400)  # booted behind
    for n in range(4, 7):  # current v6, previous v5; v4 deployed after v3
        deploy_version(n)
    assert {row["folder"].split("-")[0] for row in deploy.installed(config)} == {"v6", "v5", "v4"}
