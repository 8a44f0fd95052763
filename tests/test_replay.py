"""The replay frame source, on real image files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bin_agent.sources import SourceError
from bin_agent.sources.replay import ReplaySource


def write_photo(path, colour, size=(64, 48)):
    image = np.full((size[1], size[0], 3), 230, np.uint8)
    image[10:38, 20:44] = colour
    Image.fromarray(image).save(path)
    return path


def frames(source):
    source.start()
    out = []
    while (frame := source.read()) is not None:
        out.append(frame)
        if len(out) > 10_000:
            raise AssertionError("replay did not end")
    return out


def test_folder_plays_scenes_of_empty_then_photo_and_ends(tmp_path):
    write_photo(tmp_path / "a.png", (200, 0, 0))
    write_photo(tmp_path / "b.jpg", (0, 0, 200))
    (tmp_path / "notes.txt").write_text("not an image")
    out = frames(
        ReplaySource(tmp_path, fps=10, realtime=False, item_seconds=0.5, empty_seconds=0.3, lores_size=(32, 24))
    )
    names = [f.name.rsplit("/", 1)[-1] for f in out]
    assert names == ["empty"] * 3 + ["a.png"] * 5 + ["empty"] * 3 + ["b.jpg"] * 5 + ["empty"] * 3
    assert out[0].lores.shape == (24, 32) and out[0].lores.dtype == np.uint8
    assert out[3].image.shape == (48, 64, 3)
    # The virtual clock runs at fps.
    assert [round(f.timestamp - out[0].timestamp, 3) for f in out[:3]] == [0.0, 0.1, 0.2]
    # The empty frame is the photo's border colour: plain, no item.
    assert np.all(out[0].image == 230)


def test_single_image_and_loop(tmp_path):
    photo = write_photo(tmp_path / "one.png", (0, 200, 0))
    source = ReplaySource(photo, fps=10, realtime=False, item_seconds=0.2, empty_seconds=0.1, loop=True)
    source.start()
    names = [source.read().name for _ in range(12)]
    assert names.count(str(photo)) >= 6  # it went round several times


def test_unreadable_image_is_skipped_with_a_warning(tmp_path):
    write_photo(tmp_path / "good.png", (0, 0, 200))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    source = ReplaySource(tmp_path, fps=10, realtime=False, item_seconds=0.1, empty_seconds=0.1)
    out = frames(source)
    assert {f.name for f in out if f.name != "empty"} == {str(tmp_path / "good.png")}
    assert source.skipped == [str(tmp_path / "bad.jpg")]


def test_empty_folder_and_missing_path_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        ReplaySource(tmp_path).start()
    with pytest.raises(SourceError, match="neither an image nor a folder"):
        ReplaySource(tmp_path / "missing").start()


def test_realtime_paces_frames_with_the_injected_clock(tmp_path):
    write_photo(tmp_path / "a.png", (200, 0, 0))
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds

    source = ReplaySource(
        tmp_path, fps=4, realtime=True, item_seconds=0.5, empty_seconds=0.5, clock=lambda: now[0], sleep=sleep
    )
    source.start()
    for _ in range(4):
        source.read()
    assert slept == [0.25, 0.25, 0.25]
