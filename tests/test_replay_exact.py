"""Replays are exact: the same files give the same events, frame for frame, on every run."""

from __future__ import annotations

import numpy as np
import pytest

from bin_agent.sources.base import Frame
from bin_agent.trigger import MotionTrigger

FPS = 10.0
EMPTY_FRAMES, ITEM_FRAMES, SCENES = 10, 15, 30


def scene_frames() -> list[np.ndarray]:
    """``SCENES`` times: empty bin, then an item lying still; then empty again."""
    empty = np.full((24, 32), 100, np.uint8)
    item = empty.copy()
    item[5:15, 5:20] = 200
    return ([empty] * EMPTY_FRAMES + [item] * ITEM_FRAMES) * SCENES + [empty] * EMPTY_FRAMES


def fired_frames(clock_start: float, settle_seconds: float) -> list[int]:
    trigger = MotionTrigger(settle_seconds=settle_seconds, max_width=8)
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
    assert fired_frames(clock_start, settle_seconds) == expected
