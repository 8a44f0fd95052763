"""Triggers on synthetic frame sequences and gpiozero's MockFactory.

The scenes are built to look like a bin floor through a small camera: a
lit gradient with low-frequency texture, Gaussian sensor noise on every frame,
items as textured rectangles of a different brightness, a hand as a large
darker blob. Times are frame timestamps; nothing here sleeps except the PIR
and distance-sensor tests, whose gpiozero devices sample in their own threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pytest

from bin_agent.sources.base import Frame
from bin_agent.trigger import (
    GpioTrigger,
    ManualTrigger,
    MotionTrigger,
    Trigger,
    build_trigger,
)

H, W = 240, 320


@dataclass
class Item:
    """A textured rectangle at (y, x) (top-left), ``size`` px square."""

    y: float
    x: float
    size: int = 60
    level: float = 200.0
    seed: int = 1


class Scene:
    """Renders ``lores`` frames: textured gradient floor, items, gain, noise."""

    def __init__(self, seed: int = 0, noise: float = 5.0) -> None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        # Low-frequency texture: a coarse random grid upsampled by repetition
        # and smoothed, like stains and seams on a plastic bin floor.
        coarse = rng.normal(0, 12, (H // 16 + 1, W // 16 + 1)).astype(np.float32)
        texture = np.kron(coarse, np.ones((16, 16), np.float32))[:H, :W]
        texture = (texture + np.roll(texture, 8, 0) + np.roll(texture, 8, 1)) / 3
        self.floor = 70 + 50 * xx / W + 25 * yy / H + texture
        self.noise = rng.normal(0, noise, (16, H, W)).astype(np.float32)
        self.rng = rng
        self._textures: dict[tuple[int, int], np.ndarray] = {}

    def _texture(self, item: Item) -> np.ndarray:
        key = (item.seed, item.size)
        if key not in self._textures:
            r = np.random.default_rng(item.seed)
            self._textures[key] = item.level + r.normal(0, 15, (item.size, item.size)).astype(
                np.float32
            )
        return self._textures[key]

    def render(
        self,
        items: Iterable[Item] = (),
        gain: float | np.ndarray = 1.0,
    ) -> np.ndarray:
        img = self.floor.copy()
        for item in items:
            y, x, s = int(round(item.y)), int(round(item.x)), item.size
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + s, H), min(x + s, W)
            if y1 > y0 and x1 > x0:
                img[y0:y1, x0:x1] = self._texture(item)[y0 - y : y1 - y, x0 - x : x1 - x]
        img = img * gain + self.noise[self.rng.integers(0, len(self.noise))]
        return np.clip(img, 0, 255).astype(np.uint8)


Script = Callable[[float], "tuple[list[Item], float | np.ndarray]"]


def run(trigger: Trigger, scene: Scene, script: Script, seconds: float, fps: float) -> list[float]:
    """Feed ``seconds`` of frames at ``fps``; return the timestamps that fired."""
    fired = []
    image = np.zeros((4, 4, 3), np.uint8)  # the trigger never looks at it
    for k in range(int(round(seconds * fps))):
        t = 1000.0 + k / fps  # monotonic clocks do not start at zero
        items, gain = script(t - 1000.0)
        frame = Frame(image=image, lores=scene.render(items, gain), timestamp=t, index=k)
        if trigger.update(frame):
            fired.append(t - 1000.0)
    return fired


def falling(t: float, t0: float, y_end: float, x: float, fall: float = 0.4, **kw) -> list[Item]:
    """An item dropped at ``t0`` that falls from above the view and lands at
    ``t0 + fall`` at (``y_end``, ``x``)."""
    if t < t0:
        return []
    frac = min(1.0, (t - t0) / fall)
    return [Item(y=-60 + (y_end + 60) * frac, x=x, **kw)]


def hand(t: float, t0: float, duration: float, pause: float = 0.0) -> list[Item]:
    """A large dark blob crossing the view right to left from ``t0``; it holds
    still mid-way for ``pause`` seconds, then leaves."""
    if t < t0:
        return []
    travel = duration - pause
    half = travel / 2
    u = t - t0
    if u < half:
        frac = u / half * 0.5
    elif u < half + pause:
        frac = 0.5
    elif u < duration:
        frac = 0.5 + (u - half - pause) / half * 0.5
    else:
        return []
    return [Item(y=60, x=W - frac * (W + 120), size=120, level=40.0, seed=99)]


SETTLE = 1.0


def in_window(fired_at: float, landed: float, fps: float) -> bool:
    """Fired on a frame after the settle time, and no later than needed."""
    return landed + SETTLE - 1e-6 <= fired_at <= landed + SETTLE + 2.5 / fps


# ---------------------------------------------------------------------------
# MotionTrigger
# ---------------------------------------------------------------------------


def test_two_items_one_event_each_after_settle() -> None:
    """empty → item falls → settles → stays → removed by a hand → empty →
    second item: exactly one event per item, each after the settle time."""

    def script(t: float) -> tuple[list[Item], float]:
        if t < 15.0:
            return falling(t, 3.0, 100, 60), 1.0
        if t < 17.0:  # a hand comes in, the item goes with it
            return hand(t, 15.0, 2.0) + (falling(t, 3.0, 100, 60) if t < 16.0 else []), 1.0
        return falling(t, 20.0, 40, 200, seed=7, level=30.0), 1.0

    trigger = MotionTrigger(settle_seconds=SETTLE)
    fired = run(trigger, Scene(), script, seconds=30.0, fps=10)
    assert len(fired) == 2, fired
    assert in_window(fired[0], 3.4, 10), fired
    assert in_window(fired[1], 20.4, 10), fired
    assert trigger.state == "occupied"


def test_item_removed_and_replaced_in_place_gives_two_events() -> None:
    """Take the item out, then drop a different one on the same spot."""

    def script(t: float) -> tuple[list[Item], float]:
        if t < 10.0:
            return falling(t, 2.0, 90, 120), 1.0
        if t < 12.0:
            return [], 1.0
        return falling(t, 12.0, 90, 120, seed=5, level=150.0), 1.0

    fired = run(MotionTrigger(settle_seconds=SETTLE), Scene(seed=3), script, 20.0, 10)
    assert len(fired) == 2, fired
    assert in_window(fired[0], 2.4, 10) and in_window(fired[1], 12.4, 10), fired


def test_drift_and_noise_alone_never_fire() -> None:
    """±20 % global lighting over a minute, a slowly growing uneven light
    (+50 % on one side over two minutes) and heavy sensor noise: no events."""
    xx = np.linspace(0.0, 1.0, W, dtype=np.float32)[None, :]

    def script(t: float) -> tuple[list[Item], np.ndarray]:
        global_gain = 1.0 + 0.2 * np.sin(2 * np.pi * t / 60.0)
        uneven = 1.0 + 0.5 * xx * (t / 120.0)
        return [], global_gain * uneven

    trigger = MotionTrigger()
    fired = run(trigger, Scene(seed=4, noise=8.0), script, seconds=120.0, fps=5)
    assert fired == []
    assert trigger.state == "empty"
    assert trigger.stats["changed"] < trigger.clear_area


def test_sudden_exposure_step_does_not_fire() -> None:
    """An auto-exposure jump (+35 % at once, e.g. the lid opening) is global:
    the gain compensation removes it."""

    def script(t: float) -> tuple[list[Item], float]:
        return [], 1.35 if 5.0 <= t < 12.0 else 1.0

    trigger = MotionTrigger()
    assert run(trigger, Scene(seed=5), script, 20.0, 10) == []


def test_drift_while_occupied_then_removal_rearms() -> None:
    """Lighting changes while the item sits there; removal still re-arms and
    the next item fires."""

    def script(t: float) -> tuple[list[Item], float]:
        gain = 1.0 + 0.2 * np.sin(2 * np.pi * t / 60.0)
        if t < 40.0:
            return falling(t, 2.0, 100, 100), gain
        return falling(t, 45.0, 30, 30, seed=8, level=20.0), gain

    fired = run(MotionTrigger(), Scene(seed=6), script, 50.0, 5)
    assert len(fired) == 2, fired


@pytest.mark.parametrize("absorb", [300.0, None])
def test_item_staying_ten_minutes_fires_once(absorb: float | None) -> None:
    """One item for 10 minutes: one event. With absorption its removal must
    not look like a new item (the saved empty background is recognised);
    either way the next item fires."""

    def script(t: float) -> tuple[list[Item], float]:
        if t < 605.0:
            return falling(t, 5.0, 100, 100, fall=1.0), 1.0
        if t < 620.0:
            return [], 1.0
        return falling(t, 620.0, 50, 220, fall=1.0, seed=4, level=40.0), 1.0

    trigger = MotionTrigger(absorb_seconds=absorb)
    fired = run(trigger, Scene(seed=7), script, seconds=604.0, fps=2)
    assert len(fired) == 1 and in_window(fired[0], 6.0, 2), fired
    # Absorbed: looks empty though the item is still there.
    assert trigger.state == ("empty" if absorb else "occupied")

    fired = run_from(trigger, Scene(seed=7), script, start=604.0, seconds=26.0, fps=2)
    assert len(fired) == 1 and in_window(fired[0], 621.0, 2), fired


def run_from(
    trigger: Trigger, scene: Scene, script: Script, start: float, seconds: float, fps: float
) -> list[float]:
    """Like :func:`run`, continuing a sequence at ``start`` seconds."""
    return [start + t for t in run(trigger, scene, lambda t: script(start + t), seconds, fps)]


def test_hand_waving_through_never_fires() -> None:
    """A hand crossing the view, even pausing for less than the settle time,
    leaves nothing: no event. (One resting longer than the settle time would
    fire; the trigger cannot tell a hand from an item.)"""

    def script(t: float) -> tuple[list[Item], float]:
        return hand(t, 3.0, 1.5) + hand(t, 8.0, 2.0, pause=0.6), 1.0

    trigger = MotionTrigger(settle_seconds=SETTLE)
    fired = run(trigger, Scene(seed=8), script, 15.0, 10)
    assert fired == []
    assert trigger.state == "empty"


def test_hand_resting_longer_than_settle_fires_documented() -> None:
    """The documented limit: anything still and changed for the settle time fires."""
    fired = run(MotionTrigger(), Scene(seed=8), lambda t: (hand(t, 3.0, 4.0, pause=2.0), 1.0), 10.0, 10)
    assert len(fired) == 1


def test_small_crumb_below_min_area_never_fires() -> None:
    fired = run(
        MotionTrigger(), Scene(seed=9), lambda t: (falling(t, 2.0, 100, 100, size=20), 1.0), 10.0, 10
    )
    assert fired == []


def test_request_fires_once_and_consumes_settling_item() -> None:
    scene = Scene(seed=10)
    trigger = MotionTrigger()
    image = np.zeros((4, 4, 3), np.uint8)

    def frame(k: int, items: list[Item]) -> Frame:
        return Frame(image=image, lores=scene.render(items), timestamp=k / 10, index=k)

    results = [trigger.update(frame(k, [])) for k in range(10)]
    trigger.request()
    results += [trigger.update(frame(k, [])) for k in range(10, 13)]
    assert results == [False] * 10 + [True, False, False]
    assert trigger.state == "empty"

    # A request while an item is still moving: classified now, not again
    # when it settles.
    item = [Item(y=100, x=100)]
    results = [trigger.update(frame(13, [Item(y=50, x=100)]))]
    assert trigger.state == "settling"
    trigger.request()
    results += [trigger.update(frame(k, item)) for k in range(14, 40)]
    assert results == [False, True] + [False] * 25
    assert trigger.state == "occupied"


def test_initialisation_and_resize() -> None:
    trigger = MotionTrigger(init_frames=3)
    scene = Scene(seed=11)
    image = np.zeros((4, 4, 3), np.uint8)
    states = []
    for k in range(4):
        trigger.update(Frame(image, scene.render(), k / 10, k))
        states.append(trigger.state)
    assert states == ["initialising", "initialising", "empty", "empty"]
    trigger.update(Frame(image, np.zeros((120, 160), np.uint8), 1.0, 5))
    assert trigger.state == "initialising"


def test_motion_trigger_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MotionTrigger(max_motion=0.05, min_area=0.02)
    with pytest.raises(ValueError):
        MotionTrigger(absorb_seconds=0.5, settle_seconds=1.0)
    with pytest.raises(ValueError):
        MotionTrigger().update(Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), 0.0, 0))


# ---------------------------------------------------------------------------
# GpioTrigger (gpiozero MockFactory)
# ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def blank(t: float, k: int = 0) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8), np.uint8), t, k)


@pytest.fixture
def factory():
    from gpiozero.pins.mock import MockFactory

    f = MockFactory()
    yield f
    f.reset()


def test_gpio_beam_fires_once_after_settle(factory) -> None:
    clock = FakeClock(100.0)
    trigger = GpioTrigger.from_pin("beam", 17, pin_factory=factory, settle_seconds=0.5, clock=clock)
    pin = factory.pin(17)
    assert trigger.state == "idle"
    assert not trigger.update(blank(100.0))

    pin.drive_low()  # beam broken (open-collector receiver, pull-up)
    assert trigger.state == "waiting"
    assert [trigger.update(blank(t)) for t in (100.1, 100.49, 100.5, 100.6, 101.0)] == [
        False, False, True, False, False,
    ]
    assert trigger.state == "idle"
    trigger.close()
    assert trigger.device.closed


def test_gpio_bounce_and_repeated_activation_give_one_event(factory) -> None:
    clock = FakeClock(200.0)
    trigger = GpioTrigger.from_pin(
        "button", "GPIO27", pin_factory=factory, settle_seconds=0.3, bounce_seconds=0.02, clock=clock
    )
    pin = factory.pin(27)
    # gpiozero got the debounce time (MockPin stores but does not apply it,
    # so the chatter below reaches the trigger and must be absorbed there).
    assert pin.bounce == pytest.approx(0.02)
    for k in range(5):  # contact chatter and a second break of the beam
        clock.t = 200.0 + k * 0.05
        pin.drive_low()
        pin.drive_high()
    fired = [trigger.update(blank(200.0 + k * 0.05)) for k in range(20)]
    # Fires 0.3 s after the FIRST activation, once.
    assert fired.count(True) == 1 and fired.index(True) == 6
    # A new activation after the event is a new item.
    clock.t = 201.5
    pin.drive_low()
    assert [trigger.update(blank(t)) for t in (201.6, 201.8, 201.9)] == [False, True, False]
    trigger.close()


def test_gpio_active_high_without_pull(factory) -> None:
    clock = FakeClock(5.0)
    trigger = GpioTrigger.from_pin(
        "button", 22, pin_factory=factory, pull_up=None, active_state=True, settle_seconds=0.0, clock=clock
    )
    pin = factory.pin(22)
    pin.drive_low()
    assert not trigger.update(blank(5.0))
    pin.drive_high()
    assert trigger.update(blank(5.0))
    trigger.close()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_gpio_pir(factory) -> None:
    trigger = GpioTrigger.from_pin("pir", 4, pin_factory=factory, settle_seconds=0.2)
    try:
        # gpiozero's sampling thread takes the first reading as the initial
        # state without firing: let it, or the activation below is missed.
        assert trigger.device.wait_for_inactive(timeout=5)
        assert trigger.state == "idle"
        factory.pin(4).drive_high()
        assert wait_for(lambda: trigger.state == "waiting")
        now = time.monotonic()
        assert trigger.update(blank(now + 0.2))
    finally:
        trigger.close()


@pytest.mark.filterwarnings("ignore::gpiozero.PWMSoftwareFallback")
def test_gpio_distance_sensor(factory) -> None:
    from gpiozero.pins.mock import MockTriggerPin

    echo = factory.pin(17)
    # Echo 0.02 s: 3.4 m, out of range (max_distance 1 m).
    sonar = factory.pin(18, pin_class=MockTriggerPin, echo_pin=echo, echo_time=0.02)
    trigger = GpioTrigger.from_pin(
        "distance", 17, trigger_pin=18, pin_factory=factory, threshold_distance=0.5, settle_seconds=0.0
    )
    try:
        assert trigger.device.threshold_distance == pytest.approx(0.5)
        assert trigger.device.wait_for_out_of_range(timeout=5)
        assert trigger.state == "idle"
        sonar.echo_time = 0.0  # something right in front of the sensor
        assert wait_for(lambda: trigger.state == "waiting")
        assert trigger.update(blank(time.monotonic()))
    finally:
        trigger.close()


def test_gpio_bad_kind_and_missing_trigger_pin(factory) -> None:
    with pytest.raises(ValueError):
        GpioTrigger.from_pin("laser", 17, pin_factory=factory)
    with pytest.raises(ValueError):
        GpioTrigger.from_pin("distance", 17, pin_factory=factory)


# ---------------------------------------------------------------------------
# request() in every mode, build_trigger
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["motion", "gpio", "manual"])
def test_request_fires_once_in_every_mode(mode: str, factory) -> None:
    kwargs = {"kind": "beam", "pin": 17, "pin_factory": factory} if mode == "gpio" else {}
    trigger = build_trigger(mode, **kwargs)
    assert isinstance(trigger, Trigger)
    frames = [blank(k / 10, k) for k in range(20)]
    before = [trigger.update(f) for f in frames[:10]]
    # From another thread, twice: still one event.
    threads = [threading.Thread(target=trigger.request) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert trigger.state == "requested" or mode == "motion"
    after = [trigger.update(f) for f in frames[10:]]
    assert before == [False] * 10
    assert after == [True] + [False] * 9
    trigger.close()


def test_build_trigger_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        build_trigger("telepathy")
    with pytest.raises(ValueError):
        build_trigger("manual", settle_seconds=1.0)
    with pytest.raises(ValueError):
        build_trigger("gpio", pin=17)
    with pytest.raises(TypeError):
        build_trigger("motion", nonsense=1)
    assert isinstance(build_trigger("manual"), ManualTrigger)
