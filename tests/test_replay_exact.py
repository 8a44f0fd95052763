"""Replays are exact: the same files give the same events, frame for frame, on every run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bin_agent import preflight
from bin_agent.agent import build_agent, build_source
from bin_agent.cli import main
from bin_agent.config import ConfigError, TriggerSection
from bin_agent.sources.base import Frame
from bin_agent.sources.replay import ReplaySource
from bin_agent.store import Store
from bin_agent.triggers import MotionTrigger
from tests.helpers import base_config, tmpfs, write_toml
from tests.test_replay import write_photo

FPS = 10.0
EMPTY_FRAMES, ITEM_FRAMES, SCENES = 10, 15, 30


def scene_frames() -> list[np.ndarray]:
    """``SCENES`` times: empty bin, then an item lying still; then empty again."""
    empty = np.full((24, 32), 100, np.uint8)
    item = empty.copy()
    item[5:15, 5:20] = 200
    return ([empty] * EMPTY_FRAMES + [item] * ITEM_FRAMES) * SCENES + [empty] * EMPTY_FRAMES


def fired_frames(clock_start: float, settle_seconds: float, idle_look_seconds: float) -> list[int]:
    section = TriggerSection(mode="motion", settle_seconds=settle_seconds)
    section.motion.idle_look_seconds = idle_look_seconds
    trigger = MotionTrigger.from_config(section, max_width=8)
    fired = []
    for index, lores in enumerate(scene_frames()):
        frame = Frame(image=lores, lores=lores, timestamp=clock_start + index / FPS, index=index)
        if trigger.update(frame):
            fired.append(index)
    return fired


@pytest.mark.parametrize("settle_seconds", [0.3, 0.6, 0.7])
@pytest.mark.parametrize("clock_start", [0.0, 987.6543, 123456.789])
def test_settle_fires_on_the_same_frame_wherever_the_clock_starts(clock_start, settle_seconds):
    # The item appears on frame 25k+10 and lies still: it has lain still for
    # settle_seconds on frame 25k+10+settle*fps, in every scene and for any clock start.
    settle_frames = round(settle_seconds * FPS)
    expected = [k * (EMPTY_FRAMES + ITEM_FRAMES) + EMPTY_FRAMES + settle_frames for k in range(SCENES)]
    assert fired_frames(clock_start, settle_seconds, idle_look_seconds=0.0) == expected
    # Looking at a quiet empty bin every other frame: the item is first seen on its
    # first frame or the next, and the looks fall on the same frames for any clock start.
    idle = fired_frames(clock_start, settle_seconds, idle_look_seconds=2 / FPS)
    assert idle == fired_frames(0.0, settle_seconds, idle_look_seconds=2 / FPS)
    assert all(0 <= late - exact <= 1 for exact, late in zip(expected, idle)) and len(idle) == SCENES, idle


# --------------------------------------------------------------------------- replay end to end


def photo_folder(tmp_path, n=6):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(n):
        write_photo(folder / f"{i:02d}.png", tuple(int(c) for c in rng.integers(0, 150, 3)), size=(160, 120))
    return folder


def trigger_events(config, source=None) -> list[tuple[int, str]]:
    """(frame index, file) of every frame the configured trigger fires on."""
    agent = build_agent(config, source=source)  # the trigger exactly as the agent builds it
    agent.source.start()
    fired = []
    while (frame := agent.source.read()) is not None:
        if agent.trigger.update(frame):
            fired.append((frame.index, frame.name))
    agent.close()
    return fired


def test_virtual_clock_starts_at_zero_in_whole_frame_ticks(tmp_path):
    source = ReplaySource(photo_folder(tmp_path, 2), fps=30.0, realtime=False, item_seconds=0.5, empty_seconds=0.5)
    source.start()
    stamps = [source.read().timestamp for _ in range(40)]
    assert stamps == [n / 30.0 for n in range(40)]


def test_two_replays_of_the_same_files_give_the_same_events(tmp_path):
    photos = photo_folder(tmp_path, 30)
    data = base_config(tmp_path, photos, mqtt=False)
    data["trigger"]["settle_seconds"] = 0.6  # 6 frames at 10 fps: the case float rounding flipped
    config = preflight.load_dict(data, base_dir=tmp_path)
    first, second = trigger_events(config), trigger_events(config)
    assert len(first) == 30 and first == second
    # Whatever the process's monotonic clock says when the replay starts.
    for clock_start in (0.0, 987.6543, 123456.789):
        source = ReplaySource(
            photos, fps=10.0, realtime=False, item_seconds=1.5, empty_seconds=1.0, clock=lambda start=clock_start: start
        )
        assert trigger_events(config, source) == first
    # The same through the whole agent: the outbox holds the same items in the same order.
    runs = []
    for run in ("a", "b"):
        data["agent"]["state_dir"] = str(tmp_path / run)
        assert build_agent(preflight.load_dict(data, base_dir=tmp_path)).run() == 0
        outbox = Store(tmp_path / run / "bin-agent.db").pending(0, 100)
        runs.append([(json.loads(e.payload)["class"], json.loads(e.payload)["source"]) for e in outbox])
    assert len(runs[0]) == 30 and runs[0] == runs[1]


def test_a_recording_replays_as_it_is_and_fires_on_the_same_frames(tmp_path):
    photos = photo_folder(tmp_path, 3)
    items = base_config(tmp_path, photos, mqtt=False)
    items_config = preflight.load_dict(items, base_dir=tmp_path)
    config_file = write_toml(tmp_path / "items.toml", items)
    recording = tmp_path / "recording"

    # 3 scenes of 1.0 s empty + 1.5 s item, and 1.0 s empty at the end: 8.5 s, 85 frames.
    assert main(["record", str(recording), "--seconds", "60", "--config", str(config_file)]) == 0
    files = sorted(p.name for p in recording.iterdir())
    assert files == [f"frame-{n:06d}.png" for n in range(85)]

    sequence = base_config(tmp_path, recording, mqtt=False)
    sequence["camera"]["replay"]["mode"] = "sequence"
    sequence_config = preflight.load_dict(sequence, base_dir=tmp_path)
    # Nothing added: one frame per file, in name order.
    source = build_source(sequence_config)
    source.start()
    names = []
    while (frame := source.read()) is not None:
        names.append(frame.name.rsplit("/", 1)[-1])
    assert names == files
    replayed = [index for index, _ in trigger_events(sequence_config)]
    assert replayed == [index for index, _ in trigger_events(items_config)] and len(replayed) == 3


def test_record_stops_after_the_given_frame_time_and_refuses_a_used_folder(tmp_path, capsys):
    config_file = write_toml(tmp_path / "c.toml", base_config(tmp_path, photo_folder(tmp_path, 2), mqtt=False))
    assert main(["record", str(tmp_path / "rec"), "--seconds", "1.2", "--config", str(config_file)]) == 0
    assert len(list((tmp_path / "rec").iterdir())) == 12
    assert main(["record", str(tmp_path / "rec"), "--seconds", "1", "--config", str(config_file)]) == 1
    assert "already holds images" in capsys.readouterr().err


def test_record_stops_before_the_disk_is_full_and_keeps_whole_frames(tmp_path, capsys, monkeypatch):
    """A recording on a small file system of its own (a real 4 MB tmpfs) stops before the
    free space falls below the reserve (5 % of it here), with one line saying so; every
    frame it kept is whole, and the disk was never filled."""
    from PIL import Image

    from bin_agent.sources import record as record_module
    from bin_agent.sources.base import SourceError

    with tmpfs(tmp_path / "rec", "size=4m") as folder:
        photos = tmp_path / "photos"  # noisy, as a camera's: a PNG frame of some 230 KB
        photos.mkdir()
        rng = np.random.default_rng(5)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(photos / f"{i}.png")
        config_file = write_toml(tmp_path / "c.toml", base_config(tmp_path, photos, mqtt=False))
        assert main(["record", str(folder), "--seconds", "60", "--config", str(config_file)]) == 1
        err = capsys.readouterr().err
        assert "record: stopped after" in err and "the frames saved are kept" in err, err
        frames = sorted(folder.iterdir())
        assert 0 < len(frames) < 85, "the recording neither stopped early nor saved a frame"
        for path in frames:
            with Image.open(path) as image:
                image.load()  # a frame cut short by a full disk fails here
        usage = shutil.disk_usage(folder)
        assert usage.free >= 0.05 * usage.total

        # Filled by another writer between the check and the frame (the check told of room
        # that was gone): the real ENOSPC, one line, and no frame left cut short.
        for path in frames:
            path.unlink()
        config = preflight.load(config_file)
        plenty = shutil.disk_usage(folder)._replace(free=1 << 40)
        monkeypatch.setattr(record_module.shutil, "disk_usage", lambda path: plenty)
        with pytest.raises(SourceError, match="cannot write .*: No space left on device"):
            record_module.record(build_source(config), folder, 60.0)
        kept = sorted(folder.iterdir())
        assert kept, "nothing was written before the disk was full"
        for path in kept:
            with Image.open(path) as image:
                image.load()


@pytest.mark.parametrize(
    "replay, trigger, expected",
    [
        ({"realtime": False}, {"mode": "gpio"}, "camera.replay.realtime: a gpio trigger"),
        ({"mode": "sequence", "shuffle": True}, {}, "camera.replay.shuffle: a recorded sequence"),
        ({"mode": "film"}, {}, "camera.replay.mode: 'film' is not one of"),
    ],
)
def test_replay_settings_that_cannot_work_are_config_errors(tmp_path, replay, trigger, expected):
    data = base_config(tmp_path, mqtt=False)
    data["camera"]["replay"].update(replay)
    data["trigger"].update(trigger)
    with pytest.raises(ConfigError) as info:
        preflight.load_dict(data, base_dir=tmp_path)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
