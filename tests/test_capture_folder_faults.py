"""The capture folder after months unattended: power cuts in the middle of an append, zeros
or foreign bytes on the SD card, sidecars damaged or edited by hand. A person's labels are
never lost to a neighbouring damaged line; a damaged item is skipped with a line naming it;
``bin-agent label`` and ``bin-agent learn`` give no traceback."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bin_agent import preflight
from bin_agent.learning import deploy
from bin_agent.learning.capture import captured_items
from bin_agent.learning.labels import LabelError, LabelStore
from bin_agent.learning.learn import embedding_classifier, labelled_captures
from tests.helpers import SHIPPED_MODEL, base_config, tmpfs, write_toml
from tests.learning_helpers import write_captures


def label_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bin_agent", "label", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "tail",
    [b'{"event_id": "a2", "label": "gl', b"\x00" * 512, b"\xff\xfe garbage"],
    ids=["cut-line", "zeros", "not-utf8"],
)
def test_a_label_added_after_a_damaged_last_line_is_kept_and_the_earlier_ones_too(tmp_path, tail):
    store = LabelStore(tmp_path)
    store.add("a1", "paper", "paper", "cli")
    with store.path.open("ab") as f:  # the power cut: the last append reached the card in part
        f.write(tail)
    store.add("a3", "glass", "metal", "mqtt")
    labels = LabelStore(tmp_path).all()
    assert set(labels) == {"a1", "a3"}, "the label after the damaged line was glued to it and lost"
    assert labels["a3"]["label"] == "glass" and labels["a3"]["confirmed"] is False


def test_labels_after_zeros_or_foreign_bytes_already_on_the_card_are_read(tmp_path):
    """A file damaged before this fix: a label after a zero-filled stretch on the same line,
    a line that is not UTF-8, an entry without a label; the readable labels all count."""
    good = [json.dumps({"event_id": f"b{n}", "label": "paper", "predicted": "glass"}) for n in range(3)]
    (tmp_path / "labels.jsonl").write_bytes(
        good[0].encode() + b"\n" + b"\x00" * 300 + good[1].encode() + b"\n\xff\xfe\x00\x01\n"
        b'{"event_id": "b9"}\n' + good[2].encode() + b"\n"
    )
    labels = LabelStore(tmp_path).all()
    assert set(labels) == {"b0", "b1", "b2"}
    assert labels["b1"]["confirmed"] is False, "an entry without 'confirmed' gets it (label --list read it)"


def test_a_labels_path_that_cannot_be_read_is_one_label_error(tmp_path):
    (tmp_path / "labels.jsonl").mkdir()
    with pytest.raises(LabelError, match="cannot read the labels"):
        LabelStore(tmp_path).all()
    result = label_cli("--folder", str(tmp_path), "--list")
    assert result.returncode == 65 and "Traceback" not in result.stderr, result.stderr
    assert "labels.jsonl: cannot read the labels" in result.stderr


@pytest.fixture
def captured(tmp_path, trashnet_dir):
    """A config with [capture] and four labelled captures (with embeddings) of TrashNet photos."""
    from bin_agent.classify.preprocess import load_image

    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["capture"] = {"enabled": True}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    classifier = embedding_classifier(deploy.active_model_path(config), config)
    photos = [(load_image(min((trashnet_dir / c).iterdir())), i) for i, c in enumerate(["cardboard", "glass"] * 2)]
    folder = Path(config.agent.state_dir) / config.capture.folder
    write_captures(folder, photos, classifier)
    sidecars = sorted(folder.glob("2*.json"))
    for path in sidecars:  # as capture keeps them: the embedding the classifier read
        info = json.loads(path.read_text())
        embedding = classifier.embed(load_image(path.with_suffix(".jpg")))
        info["embedding"] = {
            "backbone_sha256": classifier.backbone_sha256,
            "float16": base64.b64encode(embedding.astype("<f2").tobytes()).decode(),
        }
        path.write_text(json.dumps(info))
    return config, classifier, folder, sidecars


@pytest.mark.parametrize(
    "change",
    [{"confidence": "high"}, {"class": None}, {"event_id": ["x"]}],
    ids=["confidence-text", "class-null", "event-id-list"],
)
def test_label_list_skips_a_sidecar_with_bad_values_naming_it(captured, change):
    _, _, folder, sidecars = captured
    info = json.loads(sidecars[0].read_text()) | change
    sidecars[0].write_text(json.dumps(info))
    result = label_cli("--folder", str(folder), "--list")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert sidecars[0].name in result.stderr and "skipped" in result.stderr
    assert "3 captured" in result.stdout


@pytest.mark.parametrize("bad", ["nan", "width"])
def test_learn_recomputes_an_embedding_kept_not_finite_or_of_the_wrong_width(captured, bad):
    config, classifier, _, sidecars = captured
    info = json.loads(sidecars[0].read_text())
    vector = np.full(1280, np.nan) if bad == "nan" else np.ones(100)
    info["embedding"]["float16"] = base64.b64encode(vector.astype("<f2").tobytes()).decode()
    sidecars[0].write_text(json.dumps(info))
    data, cache = labelled_captures(config, classifier)
    assert len(data.labels) == 4 and cache.computed == 1, "embedded again from its photo"
    assert np.all(np.isfinite(data.embeddings)), "a NaN would make every refitted head NaN"


def test_learn_recomputes_from_a_damaged_embedding_cache(captured, caplog):
    config, classifier, folder, sidecars = captured
    for path in sidecars:  # photos captured before embeddings were kept: the cache holds them
        info = json.loads(path.read_text())
        del info["embedding"]
        path.write_text(json.dumps(info))
    labelled_captures(config, classifier)
    (cache_file,) = folder.glob("embeddings-*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:300])  # cut by a power cut
    data, cache = labelled_captures(config, classifier)
    assert len(data.labels) == 4 and cache.computed == 4
    assert any("unreadable embedding cache" in r.getMessage() for r in caplog.records)
    assert len(list(captured_items(folder))) == 4, "no photo was deleted"


def test_capture_starts_past_an_entry_the_card_cannot_stat_and_leaves_it_alone(tmp_path, caplog):
    """Before: one dangling sidecar link (or an I/O error on one file) made Capture.start raise,
    and the agent exit 73 at every restart: the whole bin down for one capture entry."""
    from bin_agent.learning.capture import Capture

    (tmp_path / "20261201T000000000Z_e1.json").write_text("{}")
    (tmp_path / "20261201T000000000Z_e1.jpg").write_bytes(b"x" * 30_000)
    (tmp_path / "20261201T000001000Z_dead.json").symlink_to(tmp_path / "gone")
    capture = Capture(tmp_path, max_bytes=10_000_000)
    capture.start()
    try:
        assert capture.stats()["folder_mb"] > 0, "the readable item is counted"
        assert any("cannot read this capture entry" in r.getMessage() for r in caplog.records)
    finally:
        capture.close()
    assert (tmp_path / "20261201T000001000Z_dead.json").is_symlink(), "left alone"


@pytest.mark.parametrize("body", [b'{"version": "v-bin.2026', b"\x00" * 64, b'{"since": "x"}'])
def test_a_damaged_watch_file_ends_the_watch_once_and_says_so(tmp_path, body, caplog):
    from bin_agent.learning.learn import WATCH_FILE, learning_dir, read_watch

    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    data["capture"] = {"enabled": True}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    path = learning_dir(config) / WATCH_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    assert read_watch(config) is None
    warnings = [r.getMessage() for r in caplog.records if "no longer watched" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert (path.parent / f"{WATCH_FILE}.damaged").read_bytes() == body, "kept to look at"
    assert read_watch(config) is None
    assert len([r for r in caplog.records if "no longer watched" in r.getMessage()]) == 1, "said once"


def test_a_captured_item_is_on_the_card_before_its_sidecar_is_listed(tmp_path, monkeypatch):
    """Nothing lost on a power cut: the photo's and the sidecar's data are fsynced before each
    rename, and the folder after them (a rename written before the data leaves an empty file)."""
    import os as real_os

    from bin_agent.learning import capture as capture_module
    from bin_agent.learning.capture import Capture
    from tests.test_capture import make_item, noise

    synced: list[str] = []
    real_fsync, real_replace = real_os.fsync, real_os.replace  # the os module itself is patched

    def fsync(fd: int) -> None:
        synced.append(real_os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    renames: list[tuple[str, int]] = []

    def replace(source, target) -> None:
        renames.append((Path(target).name, len(synced)))
        real_replace(source, target)

    monkeypatch.setattr(capture_module.os, "fsync", fsync)
    monkeypatch.setattr(capture_module.os, "replace", replace)
    capture = Capture(tmp_path)
    capture.start()
    capture.offer(noise(0), make_item())
    capture.close()
    probe = synced.pop(0)  # start's probe that the folder takes a write, not an item's file
    assert probe.endswith(capture_module.PROBE_NAME), probe
    renames = [(name, count - 1) for name, count in renames]
    (jpg_rename, synced_before_jpg), (json_rename, synced_before_json) = renames
    assert jpg_rename.endswith(".jpg") and json_rename.endswith(".json")
    assert synced[0].endswith(".jpg.tmp") and synced_before_jpg == 1, synced
    assert synced[1].endswith(".json.tmp") and synced_before_json == 2, synced
    assert synced[2:] == [str(tmp_path)], "the folder, for the renames"


@pytest.mark.parametrize("kind", ["a-file", "dangling-link", "no-permission", "read-only-card"])
def test_a_capture_folder_that_cannot_be_used_does_not_stop_the_bin_from_sorting_and_is_said(
    tmp_path, trashnet_dir, monkeypatch, caplog, kind
):
    """Before: Capture.start raised and bin-agent run exited 73 at every restart until systemd's
    start limit: a capture problem kept the bin from sorting. Now it sorts without capture and
    learning, and says so (log once, status line, state.capture_problem; cmd/learn one line)."""
    import errno
    import logging

    from bin_agent.agent import build_agent
    from bin_agent.learning import capture as capture_module

    photos = tmp_path / "photos"
    photos.mkdir()
    for label in ("glass", "paper"):
        first = min((trashnet_dir / label).iterdir())
        (photos / first.name).symlink_to(first)
    data = base_config(tmp_path, photos, mqtt=False, model=SHIPPED_MODEL)
    data["capture"] = {"enabled": True}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    folder = Path(config.agent.state_dir) / config.capture.folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    if kind == "a-file":
        folder.write_text("not a folder")
    elif kind == "dangling-link":
        folder.symlink_to(tmp_path / "card-gone")
    elif kind == "no-permission":  # the tests run as root: os.access is what a service user meets
        monkeypatch.setattr(capture_module.os, "access", lambda *_a, **_k: False)
    else:  # EROFS: root cannot write either, which only the probe write finds
        real_open = Path.open

        def read_only(self, *args, **kwargs):
            if self.name == capture_module.PROBE_NAME:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", read_only)
    with caplog.at_level(logging.ERROR):
        agent = build_agent(config)  # before: StartupError, exit 73
    state, status_line = agent.state(), agent._status_line()
    learn = agent.handle_command("learn", b"{}")
    assert agent.run() == 0 and agent.items_sorted == 2, "it sorts"
    assert agent.capture is None and agent.learning is None
    problem = state["capture_problem"]
    assert problem is not None and str(folder) in problem and "learning" in problem, problem
    assert "THE CAPTURE FOLDER CANNOT BE USED" in status_line
    assert learn is not None and not learn["ok"] and learn["reason"].startswith("cannot learn: capture.folder: ")
    said = [r for r in caplog.records if "capture.folder: " in r.getMessage()]
    refused = [r for r in said if r.getMessage().startswith("MQTT command learn not run: ")]
    assert len(said) == 2 and len(refused) == 1, "said once at the start, once for the refused cmd/learn"
    assert not any(r.exc_info for r in said), "no traceback"


def test_check_config_and_doctor_say_a_capture_folder_that_cannot_be_used(tmp_path):
    """run sorts without capture then: check-config passes with a warning, doctor fails its capture check."""
    from bin_agent.tools.doctor import check_capture_folder
    from tests.test_deploy import run_cli

    data = base_config(tmp_path, mqtt=False)
    data["capture"] = {"enabled": True}
    config_file = write_toml(tmp_path / "bin.toml", data)
    config = preflight.load(config_file)
    assert check_capture_folder(config).status == "ok"
    folder = Path(config.agent.state_dir) / config.capture.folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(tmp_path / "card-gone")
    check = check_capture_folder(config)
    assert check.status == "fail" and "which is not there" in check.detail, check
    result = run_cli("check-config", str(config_file))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "warning: capture.folder: " in result.stderr and "without capture" in result.stderr


def test_a_power_cuts_temporary_files_are_removed_at_start_and_no_longer_eat_the_size_cap(tmp_path, caplog):
    """Before: .<name>.tmp files of the writer and of the embedding cache stayed forever and
    counted against max_mb (every non-photo file does): the cap deleted real captures for them."""
    import os
    import time

    from bin_agent.learning.capture import Capture

    (tmp_path / "20261201T000000000Z_e1.json").write_text("{}")
    (tmp_path / "20261201T000000000Z_e1.jpg").write_bytes(b"x" * 30_000)
    leftovers = [".20261201T000001000Z_e2.jpg.tmp", ".20261201T000001000Z_e2.json.tmp", ".embeddings-0a1b2c.npz.tmp"]
    for name in leftovers:
        (tmp_path / name).write_bytes(b"\0" * 100_000)
    hour_ago = time.time() - 3600
    os.utime(tmp_path / ".embeddings-0a1b2c.npz.tmp", (hour_ago, hour_ago))
    being_written = tmp_path / ".embeddings-3d4e5f.npz.tmp"  # a bin-agent learn beside may write it now
    being_written.write_bytes(b"\0" * 10)
    theirs = ["notes.tmp", ".hidden.txt", "photo.jpg.tmp", "labels.jsonl"]  # not the owner's naming
    for name in theirs:
        (tmp_path / name).write_text("a person's")
    capture = Capture(tmp_path, max_bytes=150_000)
    capture.start()
    capture.close()
    assert capture.deleted == 0 and (tmp_path / "20261201T000000000Z_e1.jpg").exists(), "the capture is kept"
    assert not any((tmp_path / name).exists() for name in leftovers)
    assert being_written.exists() and all((tmp_path / name).exists() for name in theirs)
    said = [r.getMessage() for r in caplog.records if "leftover" in r.getMessage()]
    assert len(said) == 2 and leftovers[0] in said[0] and leftovers[2] in said[1], said


def test_a_photo_whose_sidecar_a_power_cut_never_wrote_is_removed_at_start_not_left_outside_the_cap(tmp_path, caplog):
    """Before: the writer renames the photo into place, then writes its sidecar; a power cut or
    SIGKILL in between (``scripts/soak.py --learning`` left one in about four agent kills) left a
    photo that is no item, is not counted against max_mb and was never deleted: one more on
    the card per power cut, for as long as the bin runs."""
    from bin_agent.learning.capture import Capture
    from tests.test_capture import make_item, noise

    capture = Capture(tmp_path)
    capture.start()
    capture.offer(noise(0), make_item())
    capture.offer(noise(1), make_item())
    capture.close()
    whole = sorted(tmp_path.glob("*.jpg"))
    # The power cut: the second item's photo renamed into place, its sidecar never written.
    whole[1].with_suffix(".json").unlink()
    theirs = ["holiday.jpg", "20261201T000002000Z_e3.jpg.bak", "20261201T000003000Z_e4.jpeg"]  # not its naming
    for name in theirs:
        (tmp_path / name).write_text("a person's")
    capture = Capture(tmp_path)
    capture.start()
    capture.close()
    assert not whole[1].exists(), "the photo without its sidecar stayed, outside the size cap"
    assert whole[0].exists() and whole[0].with_suffix(".json").exists(), "the whole item is kept"
    assert all((tmp_path / name).exists() for name in theirs)
    said = [r.getMessage() for r in caplog.records if "without" in r.getMessage() or "sidecar" in r.getMessage()]
    assert len(said) == 1 and whole[1].name in said[0], said


def test_an_item_the_size_cap_deletes_while_a_learn_reads_the_folder_is_skipped_without_a_warning(tmp_path, caplog):
    """Before: a learn listing the folder while the writer deleted the oldest item (sidecar
    first, then photo) logged "unreadable capture sidecar" for it, as if the card had damaged
    it (``scripts/soak.py --learning`` logged one in a 40000-item run)."""
    from bin_agent.learning.capture import Capture, read_captured
    from tests.test_capture import make_item, noise

    capture = Capture(tmp_path)
    capture.start()
    capture.offer(noise(0), make_item())
    capture.close()
    (sidecar,) = tmp_path.glob("*.json")
    sidecar.unlink()  # the cap's first deletion; the photo goes next
    assert read_captured(sidecar) is None
    assert not [r for r in caplog.records if r.levelname == "WARNING"], [r.getMessage() for r in caplog.records]


def test_label_show_on_a_photo_cut_short_says_one_line_and_goes_on(tmp_path, monkeypatch, capsys):
    """Before: a JPEG a power cut left short gave a PIL traceback and ended the labelling."""
    import builtins

    from PIL import Image

    from bin_agent import cli
    from bin_agent.learning.capture import Capture
    from tests.test_capture import make_item, noise

    capture = Capture(tmp_path)
    capture.start()
    capture.offer(noise(0), make_item())
    capture.close()
    (photo,) = tmp_path.glob("*.jpg")
    photo.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    shown: list[tuple[int, int]] = []
    # A viewer saves the image to a file first, which reads all of it (PIL's ImageShow).
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.load() and self.size))
    monkeypatch.setattr(builtins, "input", lambda *_a: "q")
    assert cli.main(["label", "--folder", str(tmp_path), "--show"]) == 0
    err = capsys.readouterr().err
    assert f"{photo}: cannot show this photo" in err and "Traceback" not in err, err
    assert not shown


def _record_fsyncs(monkeypatch) -> list[str]:
    """The paths fsynced from now on (the os module itself is patched: every caller's)."""
    import os as real_os

    synced: list[str] = []
    real_fsync = real_os.fsync

    def fsync(fd: int) -> None:
        synced.append(real_os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(real_os, "fsync", fsync)
    return synced


def test_the_watch_file_and_the_embedding_cache_are_on_the_card_before_their_rename(tmp_path, monkeypatch):
    """Before: both were written and renamed without a sync; a power cut soon after could leave
    an empty watch.json (the watch of a deploy ended) or an empty cache (every photo embedded again)."""
    from bin_agent.learning.learn import WATCH_FILE, EmbeddingCache, learning_dir, read_watch, start_watch

    data = base_config(tmp_path, mqtt=False, model=SHIPPED_MODEL)
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    synced = _record_fsyncs(monkeypatch)
    start_watch(config, "v-two", "v-one")
    folder = learning_dir(config)
    assert synced == [str(folder / f".{WATCH_FILE}.tmp"), str(folder)], synced
    assert read_watch(config)["version"] == "v-two"
    synced.clear()
    cache = EmbeddingCache(tmp_path, "ab" * 32)
    cache.vectors = {"e1": np.ones(8, np.float32), "gone": np.zeros(8, np.float32)}
    cache.save({"e1"})
    assert synced == [str(tmp_path / f".{cache.path.name}.tmp"), str(tmp_path)], synced
    assert list(EmbeddingCache(tmp_path, "ab" * 32).vectors) == ["e1"], "the cache reads back"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def capture_card(tmp_path):
    """The capture folder on its own real 1 MB tmpfs (a card that can be remounted read-only or
    filled); skipped where mount is not permitted."""
    with tmpfs(tmp_path / "state" / "capture", "size=1m") as folder:
        yield folder


def _break(kind: str, folder: Path) -> None:
    import subprocess

    if kind == "remounted-read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    elif kind == "full":
        with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as out:
            while True:  # all the room there is
                out.write(b"\0" * 4096)
    else:  # the folder moved away and a file put in its place
        folder.rename(folder.with_name("moved"))
        folder.write_text("not a folder")


def _mend(kind: str, folder: Path) -> None:
    import subprocess

    if kind == "remounted-read-only":
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
    elif kind == "full":
        (folder / "filler").unlink()
    else:
        folder.unlink()
        folder.with_name("moved").rename(folder)


@pytest.mark.parametrize("kind", ["remounted-read-only", "full", "replaced-by-a-file"])
def test_a_capture_folder_that_fails_while_running_is_said_and_clears_itself_and_sorting_goes_on(
    request, tmp_path, mosquitto, subscriber_factory, caplog, kind
):
    """Before: the writer only counted `failed` and logged a traceback per item; nothing reached
    the state, the Problem sensor or the status line. Now: after FAILURES_TO_REPORT items in a row
    state.capture_problem (republished), one error line; the next item written clears it."""
    import json
    import logging

    from bin_agent.agent import build_agent
    from bin_agent.learning.capture import FAILURES_TO_REPORT
    from tests.helpers import wait_for
    from tests.test_capture import noise

    data = base_config(tmp_path, port=mosquitto.port)
    data["capture"] = {"enabled": True}
    config = preflight.load(write_toml(tmp_path / "bin.toml", data))
    folder = Path(config.agent.state_dir) / config.capture.folder  # a mount point cannot be moved:
    if kind != "replaced-by-a-file":  # a plain folder for that one
        assert request.getfixturevalue("capture_card") == folder
    sub = subscriber_factory(mosquitto.port)
    states = lambda: [json.loads(m.payload) for m in sub.on("/state")]  # noqa: E731
    with caplog.at_level(logging.INFO):
        agent = build_agent(config)
        try:
            capture = agent.capture
            assert capture is not None and agent.mqtt is not None
            assert wait_for(lambda: agent.mqtt.connected, 10)
            # The writer is done with an item once it says so (after the size cap's pass, which
            # comes after `saved` is counted): the folder is broken only then, or that pass
            # would count the first item as failed too.
            done: list[str] = []
            tell_pending = capture.on_photo_done

            def photo_done(event_id: str) -> None:
                done.append(event_id)
                if tell_pending is not None:
                    tell_pending(event_id)

            capture.on_photo_done = photo_done
            agent.handle_item(noise(0))
            assert wait_for(lambda: capture.saved == 1 and len(done) == 1, 10)
            _break(kind, folder)
            for n in range(1, FAILURES_TO_REPORT + 1):
                agent.handle_item(noise(n))
                assert wait_for(lambda n=n: capture.failed == n, 10), (n, capture.failed)
                if n < FAILURES_TO_REPORT:
                    assert agent.capture_problem is None, "one failure is not yet the folder's"
            problem, status_line = agent.capture_problem, agent._status_line()
            assert wait_for(lambda: any(s.get("capture_problem") for s in states()), 10), "republished"
            for n in range(2):  # a card that stays broken: counted, not said again
                agent.handle_item(noise(10 + n))
            assert wait_for(lambda: capture.failed == FAILURES_TO_REPORT + 2, 10)
            assert agent.items_sorted == FAILURES_TO_REPORT + 3, "sorting never stopped"
            _mend(kind, folder)
            agent.handle_item(noise(20))
            assert wait_for(lambda: capture.saved == 2, 10), "the next item is written again"
            assert wait_for(lambda: states()[-1].get("capture_problem", "") is None, 10), "cleared, republished"
            cleared_line = agent._status_line()
        finally:
            agent.close()
    assert problem is not None and problem.startswith(f"capture.folder: cannot write in {folder} ("), problem
    assert f"for {FAILURES_TO_REPORT} items in a row" in problem
    assert "CAPTURE FAILS" in status_line and "CAPTURE" not in cleared_line
    assert agent.capture_problem is None and agent.learning is not None
    said = [r for r in caplog.records if r.name == "bin_agent.learning.capture" and r.levelno >= logging.WARNING]
    assert not any(r.exc_info for r in said), "no traceback per item"
    assert [r.levelname for r in said] == ["WARNING", "ERROR"], [r.getMessage() for r in said]
    assert said[1].getMessage() == problem
    assert any("capture writes work again" in r.getMessage() for r in caplog.records)
    assert len(list(captured_items(folder))) == 2
    assert not list(folder.glob(".*.tmp")) and len(list(folder.glob("*.jpg"))) == 2, "no half item left"
