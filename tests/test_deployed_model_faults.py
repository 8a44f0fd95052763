"""The deployed models folder after months unattended: a power cut, a damaged SD card, a
folder deleted by hand. The bin keeps sorting (the previous model, else ``model.path``) and
says why; ``bin-agent deploy --rollback`` and ``--list`` still work; the damaged files
give one line, never a traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from bin_agent import preflight
from bin_agent.agent import build_agent
from bin_agent.classify.classifier import Classifier, ModelFiles
from bin_agent.classify.head import Head, HeadError
from bin_agent.learning import deploy
from tests.helpers import SHIPPED_MODEL, base_config, write_toml
from tests.test_deploy import copy_model, run_cli

SHIPPED_VERSION = Classifier(ModelFiles.beside(SHIPPED_MODEL), num_threads=1).version


def save_head(model: Path, version: str) -> Path:
    """A head beside ``model``: the model's own dense layer, under ``version``."""
    head = Classifier(ModelFiles.beside(model), num_threads=1, embeddings=True).builtin_head()
    head.version = version
    return head.save(ModelFiles.beside(model).head)


@pytest.fixture
def two_deployed(tmp_path, trashnet_dir):
    """A config replaying two TrashNet photos with v-one deployed, then v-two (current v-two,
    previous v-one)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for label in ("glass", "paper"):
        first = min((trashnet_dir / label).iterdir())
        (photos / first.name).symlink_to(first)
    config_file = write_toml(tmp_path / "bin.toml", base_config(tmp_path, photos, mqtt=False, model=SHIPPED_MODEL))
    config = preflight.load(config_file)
    for version in ("v-one", "v-two"):
        candidate = copy_model(SHIPPED_MODEL, tmp_path / version, version)
        deploy.install(candidate, config, deploy.validate(candidate, config))
    models = deploy.models_dir(config)
    return config_file, config, models / os.readlink(models / "current"), models / os.readlink(models / "previous")


def damage(kind: str, folder: Path) -> None:
    model = deploy.installed_model(folder)
    if kind == "folder-gone":  # current dangles
        shutil.rmtree(folder)
    elif kind == "tflite-gone":
        model.unlink()
    elif kind == "tflite-cut":
        model.write_bytes(model.read_bytes()[:1000])
    elif kind == "metadata-cut":
        model.with_suffix(".json").write_text('{"input_size": [16')
    elif kind == "head-cut":  # a head.npz a power cut left short: a zip without its directory
        head = save_head(model, "headed").read_bytes()
        model.with_suffix(".head.npz").write_bytes(head[: len(head) // 2])
    elif kind == "classes-renamed":  # labels and metadata agree, but [router] has no "rubbish"
        import json

        labels = model.with_suffix(".labels.txt")
        labels.write_text(labels.read_text().replace("trash", "rubbish"))
        meta = json.loads(model.with_suffix(".json").read_text())
        meta["classes"] = [c if c != "trash" else "rubbish" for c in meta["classes"]]
        model.with_suffix(".json").write_text(json.dumps(meta))
    elif kind == "head-nan":
        path = save_head(model, "headed")
        with np.load(path) as data:
            parts = dict(data)
        parts["bias"] = np.full_like(parts["bias"], np.nan)
        np.savez(path, **parts)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["folder-gone", "tflite-gone", "tflite-cut", "metadata-cut", "head-cut", "head-nan", "classes-renamed"]
)
def test_agent_with_a_broken_deployed_model_sorts_with_the_previous_one_and_says_why(two_deployed, kind):
    config_file, config, current, _ = two_deployed
    damage(kind, current)
    agent = build_agent(preflight.load(config_file))
    version, problem, status_line = agent.classifier.version, agent.state()["model_problem"], agent._status_line()
    assert agent.run() == 0 and agent.items_sorted == 2, "it sorts"
    assert version == "v-one", "the previous model, not a crash (exit 78) nor model.path"
    assert problem is not None and "the deployed model cannot run" in problem and "v-one" in problem, problem
    assert current.name in problem, "it names what is broken"
    assert "THE DEPLOYED MODEL CANNOT RUN" in status_line


def test_agent_falls_back_on_model_path_when_previous_is_broken_too_and_a_reload_takes_the_fixed_model(
    two_deployed,
):
    config_file, config, current, previous = two_deployed
    damage("tflite-gone", current)
    damage("folder-gone", previous)
    agent = build_agent(preflight.load(config_file))
    version, problem = agent.classifier.version, agent.state()["model_problem"]
    # A reload while current is still broken keeps the fallback (and the problem said).
    refused = agent.reload_model()
    # A person deploys a whole model: the reload takes it and the problem is gone.
    candidate = copy_model(SHIPPED_MODEL, current.parent.parent.parent / "v-three", "v-three")
    deploy.install(candidate, config, deploy.validate(candidate, config))
    assert agent.reload_model()["ok"]
    assert agent.run() == 0
    assert version == SHIPPED_VERSION and "model.path" in problem, problem
    assert not refused["ok"]
    assert agent.classifier.version == "v-three"
    assert agent.model_problem is None
    assert "CANNOT RUN" not in agent._status_line()


def test_a_dangling_current_link_is_not_silently_model_path(two_deployed):
    _, config, current, _ = two_deployed
    damage("folder-gone", current)
    with pytest.raises(deploy.DeployError, match="points at .*which is not there"):
        deploy.deployed_model(config)


def test_rollback_and_list_work_while_the_deployed_model_is_broken(two_deployed):
    config_file, config, current, previous = two_deployed
    damage("tflite-gone", current)
    listing = run_cli("deploy", "--list", "--config", str(config_file))
    assert listing.returncode == 1 and "Traceback" not in listing.stderr, listing.stderr
    assert previous.name in listing.stdout and "cannot run" in listing.stdout, listing.stdout
    back = run_cli("deploy", "--rollback", "--config", str(config_file))
    assert back.returncode == 0, back.stderr
    assert deploy.active_model_path(config).parent == previous


@pytest.mark.parametrize("cut", [0, 10, 200, -40])
def test_a_damaged_head_file_is_one_head_error(tmp_path, cut):
    model = copy_model(SHIPPED_MODEL, tmp_path, "m")
    data = save_head(model, "h").read_bytes()
    path = ModelFiles.beside(model).head
    path.write_bytes(data[:cut])
    with pytest.raises(HeadError, match="not a readable head file"):
        Head.load(path)


@pytest.mark.parametrize(
    "meta_change",
    [{"temperature": "warm"}, {"threshold": "high"}, {"threshold": 7.0}, {"info": [1, 2]}],
    ids=["temperature-text", "threshold-text", "threshold-7", "info-list"],
)
def test_a_head_with_bad_meta_values_is_a_head_error_or_read(tmp_path, meta_change):
    import json

    model = copy_model(SHIPPED_MODEL, tmp_path, "m")
    path = save_head(model, "h")
    with np.load(path) as data:
        parts = dict(data)
    meta = json.loads(str(parts["meta"])) | meta_change
    parts["meta"] = np.array(json.dumps(meta))
    np.savez(path, **parts)
    if "info" in meta_change:
        assert Head.load(path).info == {}
    else:
        with pytest.raises(HeadError):
            Head.load(path)


MEMORY = SHIPPED_MODEL.with_suffix(".memory.npz")


def _memory_damaged(path: Path, kind: str) -> None:
    import json

    data = MEMORY.read_bytes()
    if kind == "cut":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "flipped":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(flipped))
    else:
        with np.load(MEMORY) as stored:
            parts = dict(stored)
        meta = json.loads(str(parts["meta"]))
        if kind == "no-scale":
            del meta["scale"]
        elif kind == "labels-outside":
            parts["labels"] = parts["labels"] + 100
        parts["meta"] = np.array(json.dumps(meta))
        np.savez(path, **parts)


@pytest.mark.parametrize("kind", ["cut", "flipped", "no-scale", "labels-outside"])
def test_a_damaged_training_memory_is_one_error_and_learn_goes_on_without_it(tmp_path, kind, caplog):
    from bin_agent.learning.learn import load_memory
    from bin_agent.learning.memory import Memory, TrainingMemoryError

    path = tmp_path / "m.memory.npz"
    _memory_damaged(path, kind)
    with pytest.raises(TrainingMemoryError, match=str(path)):
        Memory.load(path)
    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["learning"] = {"memory": str(path)}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    assert load_memory(config, deploy.sha256(SHIPPED_MODEL)) is None
    assert any("learning from the bin's labels alone" in r.getMessage() for r in caplog.records)


def test_a_training_memory_of_another_width_is_left_out_not_a_crash_in_the_refit(tmp_path, caplog):
    from bin_agent.learning.learn import load_memory
    from bin_agent.learning.memory import Memory

    shipped = Memory.load(MEMORY)
    narrow = Memory(shipped.embeddings[:, :100], shipped.labels, shipped.classes, "", dict(shipped.meta))
    path = narrow.save(tmp_path / "narrow.memory.npz")
    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["learning"] = {"memory": str(path)}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    assert load_memory(config, deploy.sha256(SHIPPED_MODEL), 1280) is None
    assert any("100 features, the model's 1280" in r.getMessage() for r in caplog.records)
    assert load_memory(config, deploy.sha256(SHIPPED_MODEL), 100) is not None


def test_doctor_fails_the_model_line_naming_the_broken_deployed_model_and_the_fallback(two_deployed):
    from bin_agent.tools import doctor

    _, config, current, _ = two_deployed
    whole = doctor.check_model(config, None)
    assert whole.status == "ok" and f"{current.name}/candidate.tflite (deployed) (v-two)" in whole.detail, whole
    damage("tflite-gone", current)
    broken = doctor.check_model(config, None)
    assert broken.status == "fail", broken
    assert current.name in broken.detail and "sorting with the previous model" in broken.detail, broken


def test_check_config_on_a_broken_deployed_model_warns_and_names_the_fallback_not_a_config_error(two_deployed):
    config_file, _, current, _ = two_deployed
    damage("metadata-cut", current)
    result = run_cli("check-config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert "config error" not in result.stderr and "Traceback" not in result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and current.name in warning[0] and "previous model" in warning[0], result.stderr
    assert "model candidate.tflite v-one" in result.stdout, result.stdout


def test_check_config_prints_the_threshold_a_learnt_head_brings(two_deployed):
    config_file, config, current, _ = two_deployed
    path = save_head(deploy.installed_model(current), "v-two-bin")
    head = Head.load(path)
    head.threshold = 0.55
    head.save(path)
    result = run_cli("check-config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert "confidence threshold 0.55 from" in result.stdout, result.stdout


def test_rollback_onto_a_previous_model_that_is_gone_is_refused_and_changes_nothing(two_deployed):
    config_file, config, current, previous = two_deployed
    damage("folder-gone", previous)
    back = run_cli("deploy", "--rollback", "--config", str(config_file))
    assert back.returncode == 2 and "Traceback" not in back.stderr, back.stderr
    assert "cannot roll back onto" in back.stderr and "nothing changed" in back.stderr, back.stderr
    assert deploy.active_model_path(config).parent == current, "current still points at the whole model"
    (previous.parent / "previous").unlink()  # what the message says: back to model.path
    assert run_cli("deploy", "--rollback", "--config", str(config_file)).returncode == 0
    assert deploy.active_model_path(config) == config.model.path


def test_the_watch_ends_saying_why_when_the_previous_model_is_gone_not_judged_against_model_path(two_deployed, caplog):
    from bin_agent.learning.learn import WATCH_FILE, learning_dir, start_watch, watch

    config_file, _, _, previous = two_deployed
    data = preflight.load(config_file)
    start_watch(data, "v-two", "v-one")
    shutil.rmtree(previous)
    assert watch(data) == {"watching": None}
    assert any("no longer watched" in r.getMessage() and previous.name in r.getMessage() for r in caplog.records)
    assert not (learning_dir(data) / WATCH_FILE).exists(), "the watch ended (not an error at every label)"


def test_an_interrupted_deploys_partial_folder_is_removed_at_start_and_before_a_deploy(two_deployed, caplog):
    """Before: models/.<name>.partial of a deploy cut by a power cut sat there forever (only a
    deploy of the very same model removed it)."""
    import time

    config_file, config, current, _ = two_deployed
    models = deploy.models_dir(config)
    hour_ago = time.time() - 3600

    def partial(name: str, old: bool = True) -> Path:
        folder = models / name
        folder.mkdir()
        (folder / "m.tflite").write_bytes(b"\0" * 1000)
        if old:
            os.utime(folder, (hour_ago, hour_ago))
        return folder

    cut, being_copied, theirs = (
        partial(".v-old-0123abcd.partial"),
        partial(".v-new.partial", old=False),
        partial("mine"),
    )
    build_agent(preflight.load(config_file)).close()
    assert not cut.exists(), "removed when the agent starts"
    assert being_copied.exists() and theirs.exists() and current.exists()
    cut = partial(".v-old2-4567.partial")
    candidate = copy_model(SHIPPED_MODEL, current.parent.parent.parent / "v-three", "v-three")
    deploy.install(candidate, config, deploy.validate(candidate, config))
    assert not cut.exists(), "removed before a deploy"
    assert any(
        "interrupted deploy" in r.getMessage() and ".v-old-0123abcd.partial" in r.getMessage() for r in caplog.records
    )


def test_a_power_cuts_dangling_swap_link_is_removed_at_start_and_before_a_deploy(two_deployed, caplog):
    """Before: models/.current.tmp (the new link made before its rename, _point) that a power cut
    left dangling stayed until the next deploy of that very link."""
    import time

    config_file, config, current, _ = two_deployed
    models = deploy.models_dir(config)
    hour_ago = time.time() - 3600

    def link(name: str, target: str, old: bool = True) -> Path:
        path = models / name
        path.symlink_to(target)
        if old:
            os.utime(path, (hour_ago, hour_ago), follow_symlinks=False)
        return path

    cut = link(".current.tmp", "v-gone-0123abcd")  # dangling: its folder's copy never finished
    being_swapped = link(".previous.tmp", current.name, old=False)  # a deploy beside, between link and rename
    theirs = link("current.tmp", current.name)
    build_agent(preflight.load(config_file)).close()
    assert not cut.is_symlink(), "removed when the agent starts"
    assert being_swapped.is_symlink() and theirs.is_symlink()
    assert deploy.active_model_path(config).parent == current, "current untouched"
    said = [r.getMessage() for r in caplog.records if "interrupted deploy" in r.getMessage()]
    assert len(said) == 1 and ".current.tmp" in said[0] and "link" in said[0], said
    cut = link(".previous.tmp-x", "gone")  # not the swap's naming: stays
    os.utime(being_swapped, (hour_ago, hour_ago), follow_symlinks=False)
    assert deploy.remove_interrupted(config) == [".previous.tmp"], "before a deploy (install calls it)"
    assert cut.is_symlink()


@pytest.mark.parametrize("work", ["learn", "watch"])
def test_a_learn_or_a_watch_on_a_broken_deployed_model_is_one_log_line_and_one_result(
    two_deployed, tmp_path, mosquitto, subscriber_factory, caplog, work
):
    """The agent sorts with the fallback; a learn (cmd/learn) or the watch of the last learn's
    deploy cannot read the deployed model: one line saying what failed and why (before: a
    traceback), the one-line result on cmd/result as before, and the agent goes on."""
    import json
    import logging

    from bin_agent.learning.learn import start_watch

    config_file, config, current, _ = two_deployed
    data = base_config(tmp_path, tmp_path / "photos", port=mosquitto.port, model=SHIPPED_MODEL)
    data["capture"] = {"enabled": True}
    config = preflight.load(write_toml(tmp_path / "bin-mqtt.toml", data))
    damage("tflite-gone", current)
    sub = subscriber_factory(mosquitto.port)
    if work == "watch":
        start_watch(config, "v-two", "v-one")  # a learn deployed v-two before the card failed
    with caplog.at_level(logging.INFO):
        agent = build_agent(config)
        try:
            assert agent.model_problem is not None and agent.learning is not None
            if work == "learn":
                assert agent.handle_command("learn", b"{}") == {"command": "learn", "ok": True, "started": True}
            assert sub.wait_for(lambda: sub.json_on("/cmd/result"), 20), "a result"
        finally:
            agent.close()
    (result,) = sub.json_on("/cmd/result")
    assert result["ok"] is False and result["reason"].startswith("ModelFilesError: "), result
    assert "\n" not in result["reason"] and current.name in result["reason"], result
    said = [r for r in caplog.records if r.name == "bin_agent.learning.service" and r.levelno >= logging.WARNING]
    assert len(said) == 1 and not said[0].exc_info, [(r.getMessage(), r.exc_info) for r in said]
    line = said[0].getMessage()
    assert line.startswith(f"{'learning' if work == 'learn' else 'the watch of the deployed head'} failed: ")
    assert current.name in line and "\n" not in line, line
    assert not any(r.exc_info for r in caplog.records), "no traceback anywhere"
    assert json.loads(json.dumps(result))
