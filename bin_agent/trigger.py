"""Triggers: decide on which frame there is a new item to classify.

The main loop calls :meth:`Trigger.update` for **every** frame; it returns
``True`` exactly once per new item, on the frame that should be classified.
:meth:`Trigger.request` (thread-safe) forces the next ``update`` to return
``True`` whatever the mode, for ``cmd/classify`` over MQTT or the CLI.

Three implementations:

* :class:`MotionTrigger` watches the camera's low-resolution stream against a
  slowly adapting model of the empty bin.
* :class:`GpioTrigger` wraps a gpiozero input (break-beam, button, PIR,
  ultrasonic distance sensor) and fires a settle time after it activates.
* :class:`ManualTrigger` fires only on request.

:func:`build_trigger` constructs one from a mode name and keyword arguments
(the config's ``[trigger]`` table). Hardware libraries are imported only where
a GPIO device is actually built, so this module imports on any machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .sources.base import Frame

log = logging.getLogger(__name__)

__all__ = [
    "Trigger",
    "MotionTrigger",
    "GpioTrigger",
    "ManualTrigger",
    "build_trigger",
    "TRIGGER_MODES",
]


@runtime_checkable
class Trigger(Protocol):
    """When is there a new item to classify?

    ``update`` is called by the main loop for every frame, in order, from one
    thread. ``request`` may be called from any thread. ``state`` is a short
    lower-case word for status reports.
    """

    @property
    def state(self) -> str: ...

    def update(self, frame: Frame) -> bool:
        """Return ``True`` if ``frame`` is the one to classify (once per item)."""
        ...

    def request(self) -> None:
        """Make the next :meth:`update` return ``True`` (thread-safe)."""
        ...

    def close(self) -> None:
        """Release whatever the trigger holds (GPIO pins, callbacks)."""
        ...


class _Request:
    """A thread-safe one-shot flag: set by ``request``, consumed by ``take``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False

    def set(self) -> None:
        with self._lock:
            self._pending = True

    def take(self) -> bool:
        """Return whether a request was pending, and clear it."""
        with self._lock:
            pending, self._pending = self._pending, False
            return pending

    @property
    def pending(self) -> bool:
        return self._pending


# --------------------------------------------------------------------------
# Manual
# --------------------------------------------------------------------------


class ManualTrigger:
    """Fires only when asked: :meth:`update` returns ``True`` on the first frame
    after each :meth:`request` (several requests between two frames count once).

    ``state`` is ``"requested"`` while a request waits for a frame, else ``"idle"``.
    """

    def __init__(self) -> None:
        self._request = _Request()

    @property
    def state(self) -> str:
        return "requested" if self._request.pending else "idle"

    def update(self, frame: Frame) -> bool:
        return self._request.take()

    def request(self) -> None:
        self._request.set()

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------


TIME_TOLERANCE_SECONDS = 1e-6
"""Durations within a microsecond of a limit count as reaching it. Frame
timestamps are floats: at 10 fps, ``1.6 - 1.0`` is ``0.6000000000000001`` but
``4.1 - 3.5`` is ``0.5999999999999996``, so a plain ``>=`` fired the same
scene one frame apart depending on where the clock started."""


def _has_lasted(since: float, now: float, seconds: float) -> bool:
    """Whether ``now - since`` reaches ``seconds``, independent of float rounding."""
    return now - since >= seconds - TIME_TOLERANCE_SECONDS


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of a 2-D image into ``float32``.

    Edge rows/columns that do not fill a whole block are dropped. Averaging
    16 pixels cuts sensor noise by 4x, which is what makes a fixed per-pixel
    threshold usable.
    """
    if factor == 1:
        return image.astype(np.float32)
    h = image.shape[0] // factor * factor
    w = image.shape[1] // factor * factor
    blocks = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    # uint32 sums are exact and faster than a float mean on the Pi's NEON path.
    sums = blocks.sum(axis=(1, 3), dtype=np.uint32)
    return sums.astype(np.float32) * np.float32(1.0 / (factor * factor))


class MotionTrigger:
    """Fires once per item dropped into view, from the low-res grayscale stream.

    Each ``frame.lores`` (``(h, w)`` ``uint8``, e.g. 320x240) is block-averaged
    down to at most ``max_width`` columns and compared with a background model
    of the **empty** bin. Per frame it computes:

    * *gain*: the median of ``frame / background`` over pixels, i.e. the global
      brightness change (auto-exposure steps, a lid letting light in, slow
      drift). The frame is divided by it before any comparison, so a uniform
      brightness change of any size is not "change". The median ignores an
      item covering less than half the view.
    * *changed fraction*: the share of pixels whose gain-compensated value
      differs from the background by more than ``pixel_threshold``.
    * *motion fraction*: the same share measured against a reference frame
      taken when the scene last stopped moving. Comparing with that reference
      rather than with the previous frame also catches slow creeping (an item
      rolling, paper unfolding).

    States (:attr:`state`), and what moves between them:

    ``"initialising"``
        The first ``init_frames`` frames are averaged into the background. **The
        bin must be empty at start-up**; an item present then becomes part of
        the background and is not seen until it leaves (its leaving then looks
        like a new item; see ``absorb_seconds`` for the usual remedy).
    ``"empty"``
        Changed fraction below ``min_area``. Only here does the background
        adapt (exponentially, time constant ``background_seconds``), so slow
        non-uniform lighting drift is absorbed while nothing is in the bin.
    ``"settling"``
        Changed fraction reached ``min_area``: something is in view. The
        trigger fires, and moves to ``"occupied"``, on the first frame where
        the scene is still changed and has not moved (motion fraction at most
        ``max_motion``) for ``settle_seconds`` of frame time. If the scene
        returns to the background first (a hand waving through, a bag shaken
        over the opening) it goes back to ``"empty"`` without firing.
    ``"occupied"``
        Fired for the item in view. Nothing more fires, however long the item
        stays or however it is nudged, until the changed fraction has stayed
        below ``clear_area`` for ``rearm_seconds`` (the item was removed or
        sorted away); then back to ``"empty"``. An item removed and another
        dropped therefore gives two events; a second item dropped onto an
        uncleared first one gives none (use :meth:`request`).

    Behaviour worth knowing:

    * Anything that holds still, changed, for ``settle_seconds`` fires, a hand
      resting in view or covering the lens included: the trigger cannot tell
      a hand from an item. Global brightness changes beyond 4x (the gain is
      clamped to 0.25-4: lights failing, the camera covered) also count as
      change.
    * After ``absorb_seconds`` in ``"occupied"`` with a still scene, the scene
      is absorbed into the background and the trigger re-arms, so a stuck
      object, debris or a nudged camera cannot disable it for good. The old
      empty-bin background is remembered: when the scene later matches it
      again (the stuck item was taken out) that background is restored
      without an event. Set ``absorb_seconds=None`` to never absorb.
    * Time is ``frame.timestamp`` only, never the wall clock, so replayed and
      synthetic sequences behave exactly like live ones. Non-increasing
      timestamps are tolerated (treated as no time passing).
    * A change of ``lores`` size re-initialises the background.

    :param pixel_threshold: grey levels (0-255) by which a block-averaged,
        gain-compensated pixel must differ to count as changed. Default 20.
    :param min_area: fraction (0-1) of the view that must be changed for an
        item to be present. Default 0.02 (2 %: a 45x45 px item in 320x240).
    :param clear_area: fraction below which the scene counts as empty again
        (hysteresis). Default ``min_area / 2``.
    :param max_motion: fraction of the view that may change against the
        reference frame while the scene still counts as "not moving". Must be
        below ``min_area``. Default 0.01.
    :param settle_seconds: seconds (frame time) the changed scene must stay
        still before firing. Default 1.0.
    :param rearm_seconds: seconds the scene must look empty before the trigger
        re-arms after firing. Default 0.5.
    :param background_seconds: time constant, in seconds, of the background's
        adaptation while empty; longer absorbs less. Default 30.
    :param absorb_seconds: seconds a fired, still scene may persist before it
        is absorbed into the background (see above), or ``None`` for never.
        Default 300.
    :param init_frames: frames averaged into the initial background. Default 5.
    :param max_width: frames are block-averaged down to at most this many
        columns (by an integer factor). Default 80, which for 320x240 means
        4x4 blocks and an 80x60 working image.
    :param compensate_gain: divide each frame by its global gain against the
        background (see above). Default ``True``.
    """

    def __init__(
        self,
        *,
        pixel_threshold: float = 20.0,
        min_area: float = 0.02,
        clear_area: float | None = None,
        max_motion: float = 0.01,
        settle_seconds: float = 1.0,
        rearm_seconds: float = 0.5,
        background_seconds: float = 30.0,
        absorb_seconds: float | None = 300.0,
        init_frames: int = 5,
        max_width: int = 80,
        compensate_gain: bool = True,
    ) -> None:
        if clear_area is None:
            clear_area = min_area / 2
        if not 0 < pixel_threshold < 255:
            raise ValueError(f"pixel_threshold must be in (0, 255), got {pixel_threshold}")
        if not 0 < min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {min_area}")
        if not 0 < clear_area <= min_area:
            raise ValueError(f"clear_area must be in (0, min_area], got {clear_area}")
        if not 0 <= max_motion < min_area:
            raise ValueError(f"max_motion must be in [0, min_area), got {max_motion}")
        for name, value in (
            ("settle_seconds", settle_seconds),
            ("rearm_seconds", rearm_seconds),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if background_seconds <= 0:
            raise ValueError(f"background_seconds must be > 0, got {background_seconds}")
        if absorb_seconds is not None and absorb_seconds <= settle_seconds:
            raise ValueError("absorb_seconds must be > settle_seconds (or None)")
        if init_frames < 1:
            raise ValueError(f"init_frames must be >= 1, got {init_frames}")
        if max_width < 8:
            raise ValueError(f"max_width must be >= 8, got {max_width}")

        self.pixel_threshold = float(pixel_threshold)
        self.min_area = float(min_area)
        self.clear_area = float(clear_area)
        self.max_motion = float(max_motion)
        self.settle_seconds = float(settle_seconds)
        self.rearm_seconds = float(rearm_seconds)
        self.background_seconds = float(background_seconds)
        self.absorb_seconds = None if absorb_seconds is None else float(absorb_seconds)
        self.init_frames = int(init_frames)
        self.max_width = int(max_width)
        self.compensate_gain = bool(compensate_gain)

        self._request = _Request()
        self._reset()

    def _reset(self) -> None:
        self._state = "initialising"
        self._shape: tuple[int, ...] | None = None
        self._factor = 1
        self._init_sum: np.ndarray | None = None
        self._init_count = 0
        self._background: np.ndarray | None = None
        # The empty-bin background saved when an item was absorbed.
        self._empty_background: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._still_since = 0.0
        self._occupied_since = 0.0
        self._empty_since: float | None = None
        self._last_t: float | None = None
        self._changed = 0.0
        self._motion = 0.0
        self._gain = 1.0

    # -- public ------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"initialising"``, ``"empty"``, ``"settling"`` or ``"occupied"``."""
        return self._state

    @property
    def stats(self) -> dict[str, float]:
        """Last frame's measurements, for tuning and status reports:
        ``changed`` and ``motion`` fractions (0-1) and the global ``gain``."""
        return {"changed": self._changed, "motion": self._motion, "gain": self._gain}

    def request(self) -> None:
        """Make the next :meth:`update` return ``True``. If an item is
        currently settling it counts as handled (state ``"occupied"``), so the
        same item does not fire a second time when it settles."""
        self._request.set()

    def close(self) -> None:
        pass

    def update(self, frame: Frame) -> bool:
        """Feed one frame; ``True`` if it is the frame to classify."""
        fired = self._track(frame)
        if self._request.take():
            if self._state == "settling":
                self._fire(frame.timestamp)
            return True
        return fired

    # -- internals -----------------------------------------------------------

    def _fire(self, t: float) -> None:
        self._state = "occupied"
        self._occupied_since = t
        self._empty_since = None

    def _changed_fraction(
        self, small: np.ndarray, background: np.ndarray
    ) -> tuple[float, np.ndarray, float]:
        """Return (changed fraction, gain-compensated frame, gain) against ``background``."""
        gain = 1.0
        if self.compensate_gain:
            # Median of ratios: robust to an item covering < half the view.
            # Near-black background pixels give wild ratios, so skip them.
            valid = background > 8.0
            if np.count_nonzero(valid) >= small.size // 4:
                gain = float(np.median(small[valid] / background[valid]))
                gain = min(max(gain, 0.25), 4.0)
        comp = small / np.float32(gain) if gain != 1.0 else small
        changed = float(np.count_nonzero(np.abs(comp - background) > self.pixel_threshold))
        return changed / small.size, comp, gain

    def _track(self, frame: Frame) -> bool:
        lores = np.asarray(frame.lores)
        if lores.ndim != 2:
            raise ValueError(f"frame.lores must be 2-D grayscale, got shape {lores.shape}")
        t = float(frame.timestamp)

        if self._shape != lores.shape:
            if self._shape is not None:
                log.warning(
                    "lores size changed %s -> %s: re-initialising the background",
                    self._shape, lores.shape,
                )
            self._reset()
            self._shape = lores.shape
            self._factor = max(1, -(-lores.shape[1] // self.max_width))
        small = _block_mean(lores, self._factor)

        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t

        if self._state == "initialising":
            self._init_sum = small if self._init_sum is None else self._init_sum + small
            self._init_count += 1
            if self._init_count >= self.init_frames:
                self._background = self._init_sum / np.float32(self._init_count)
                self._init_sum = None
                self._state = "empty"
            return False

        background = self._background
        assert background is not None
        self._changed, comp, self._gain = self._changed_fraction(small, background)

        # Stillness: compare against the frame at which the scene last stopped.
        if self._reference is None:
            moved = 1.0
        else:
            moved = float(np.count_nonzero(np.abs(comp - self._reference) > self.pixel_threshold))
            moved /= small.size
        self._motion = moved
        if moved > self.max_motion:
            self._reference = comp
            self._still_since = t
        still = self._reference is not None and _has_lasted(self._still_since, t, self.settle_seconds)

        if self._state == "empty":
            if self._changed >= self.min_area:
                self._state = "settling"
                # Settling starts now even if the scene was "still" before.
                self._reference = comp
                self._still_since = t
            else:
                # Adapt towards the raw frame so the background follows the
                # light and the gain drifts back to 1.
                alpha = min(1.0, dt / self.background_seconds)
                if alpha > 0.0:
                    background += np.float32(alpha) * (small - background)
            return False

        if self._empty_background is not None and self._matches_empty(small):
            return False

        if self._state == "settling":
            if self._changed < self.clear_area:
                self._state = "empty"
                return False
            if still:
                self._fire(t)
                return True
            return False

        # occupied
        if self._changed < self.clear_area:
            if self._empty_since is None:
                self._empty_since = t
            if _has_lasted(self._empty_since, t, self.rearm_seconds):
                self._state = "empty"
                self._empty_since = None
            return False
        self._empty_since = None
        if (
            self.absorb_seconds is not None
            and still
            and _has_lasted(self._occupied_since, t, self.absorb_seconds)
        ):
            log.info(
                "scene unchanged for %.0f s with an item in view: absorbing it "
                "into the background and re-arming", t - self._occupied_since,
            )
            if self._empty_background is None:
                self._empty_background = background.copy()
            self._background = small.copy()
            self._state = "empty"
        return False

    def _matches_empty(self, small: np.ndarray) -> bool:
        """If the scene matches the empty bin saved before an absorb, restore
        that background, go to ``"empty"`` and return ``True``."""
        assert self._empty_background is not None
        changed, _, _ = self._changed_fraction(small, self._empty_background)
        if changed >= self.clear_area:
            return False
        log.info("absorbed item gone: restoring the empty-bin background")
        self._background = small.copy()
        self._empty_background = None
        self._state = "empty"
        self._empty_since = None
        return True


# --------------------------------------------------------------------------
# GPIO
# --------------------------------------------------------------------------

GPIO_KINDS = ("beam", "button", "pir", "distance")


class GpioTrigger:
    """Fires ``settle_seconds`` after a gpiozero input device activates.

    The device's ``event`` callback (run in gpiozero's thread) records
    the activation time with ``clock`` (``time.monotonic``, the clock frames
    are stamped with). :meth:`update` returns ``True`` on the first frame whose
    ``timestamp`` is at least activation + ``settle_seconds``, giving the item
    time to land. Activations while one is already waiting are ignored, so an
    item that breaks a beam several times, or a contact that bounces longer
    than ``bounce_time``, still gives one event. Activations after the event
    has fired count as a new item.

    ``state`` is ``"idle"``, ``"waiting"`` (activated, settle time running) or
    ``"requested"``.

    :param device: a gpiozero input device.
    :param event: the device's callback attribute that means "an item is
        coming": ``"when_activated"`` (default) for most devices,
        ``"when_in_range"`` for :class:`gpiozero.DistanceSensor`, whose
        *active* state is, confusingly, "out of range".
    :param settle_seconds: seconds from activation to the frame to classify.
        Default 0.5.
    :param owns_device: close ``device`` in :meth:`close`. Default ``True``.
    :param clock: monotonic clock in seconds; must match ``Frame.timestamp``.
    """

    def __init__(
        self,
        device: Any,
        *,
        event: str = "when_activated",
        settle_seconds: float = 0.5,
        owns_device: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, got {settle_seconds}")
        self.device = device
        self.event = event
        self.settle_seconds = float(settle_seconds)
        self._owns_device = owns_device
        self._clock = clock
        self._lock = threading.Lock()
        self._activated_at: float | None = None
        self._request = _Request()
        setattr(device, event, self._on_activated)

    @classmethod
    def from_pin(
        cls,
        kind: str,
        pin: int | str,
        *,
        pin_factory: Any = None,
        settle_seconds: float = 0.5,
        bounce_seconds: float | None = 0.05,
        pull_up: bool | None = None,
        active_state: bool | None = None,
        trigger_pin: int | str | None = None,
        threshold_distance: float = 0.3,
        max_distance: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> GpioTrigger:
        """Build the gpiozero device for ``kind`` on ``pin`` and wrap it.

        :param kind: ``"beam"`` (IR break-beam receiver:
            :class:`gpiozero.DigitalInputDevice`, active = beam broken),
            ``"button"`` (:class:`gpiozero.Button`, e.g. a lid switch),
            ``"pir"`` (:class:`gpiozero.MotionSensor`) or ``"distance"``
            (:class:`gpiozero.DistanceSensor`; fires when something comes
            nearer than ``threshold_distance``).
            A device already active when built does not fire (gpiozero takes
            the first reading as the initial state).
        :param pin: the input pin in any form gpiozero accepts (``17``,
            ``"GPIO17"``, ``"BOARD11"``); for ``"distance"`` the echo pin.
        :param pin_factory: a gpiozero pin factory, e.g. ``MockFactory()`` in
            tests; ``None`` uses gpiozero's default (lgpio on Bookworm).
        :param settle_seconds: seconds from activation to the frame to
            classify. Default 0.5.
        :param bounce_seconds: debounce time in seconds passed to gpiozero as
            ``bounce_time`` (``"beam"`` and ``"button"`` only; PIR and distance
            sensors smooth their readings instead). ``None`` disables. Default
            0.05.
        :param pull_up: ``True`` pull-up, ``False`` pull-down, ``None``
            floating (then ``active_state`` is required). Default: ``True``
            for ``"beam"`` and ``"button"`` (open-collector receivers and
            switches to ground read low when active), ``False`` for ``"pir"``.
            Ignored for ``"distance"``.
        :param active_state: with ``pull_up=None``, whether a high pin means
            active. Default ``None``.
        :param trigger_pin: ``"distance"`` only: the sensor's trigger pin.
        :param threshold_distance: ``"distance"`` only: metres under which
            the sensor is active. Default 0.3.
        :param max_distance: ``"distance"`` only: metres the sensor reports
            at most. Default 1.0.
        :param clock: monotonic clock; must match ``Frame.timestamp``.
        :raises ValueError: unknown ``kind`` or missing ``trigger_pin``.
        """
        import gpiozero  # hardware lib: only where a device is really built

        common: dict[str, Any] = {"pin_factory": pin_factory}
        device: Any
        event = "when_activated"
        if kind in ("beam", "button"):
            if pull_up is None and active_state is None:
                pull_up = True
            inputs = dict(pull_up=pull_up, active_state=active_state, bounce_time=bounce_seconds)
            cls_ = gpiozero.DigitalInputDevice if kind == "beam" else gpiozero.Button
            device = cls_(pin, **inputs, **common)
        elif kind == "pir":
            if pull_up is None and active_state is None:
                pull_up = False
            device = gpiozero.MotionSensor(pin, pull_up=pull_up, active_state=active_state, **common)
        elif kind == "distance":
            if trigger_pin is None:
                raise ValueError("kind 'distance' needs trigger_pin")
            device = gpiozero.DistanceSensor(
                echo=pin,
                trigger=trigger_pin,
                max_distance=max_distance,
                threshold_distance=threshold_distance,
                **common,
            )
            event = "when_in_range"
        else:
            raise ValueError(f"unknown GPIO trigger kind {kind!r}; expected one of {GPIO_KINDS}")
        return cls(device, event=event, settle_seconds=settle_seconds, owns_device=True, clock=clock)

    @property
    def state(self) -> str:
        if self._request.pending:
            return "requested"
        return "waiting" if self._activated_at is not None else "idle"

    def _on_activated(self) -> None:
        t = self._clock()
        with self._lock:
            if self._activated_at is None:
                self._activated_at = t

    def request(self) -> None:
        self._request.set()

    def update(self, frame: Frame) -> bool:
        """``True`` on the first frame at least ``settle_seconds`` after an
        activation, or on the first frame after a :meth:`request`."""
        fired = False
        with self._lock:
            if (
                self._activated_at is not None
                and frame.timestamp >= self._activated_at + self.settle_seconds
            ):
                self._activated_at = None
                fired = True
        return self._request.take() or fired

    def close(self) -> None:
        """Detach the callback and, if owned, close the device (frees the pin)."""
        try:
            setattr(self.device, self.event, None)
        except Exception:  # a closed device refuses attribute changes
            pass
        if self._owns_device:
            self.device.close()


# --------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------

TRIGGER_MODES = ("motion", "gpio", "manual")


def build_trigger(mode: str, **kwargs: Any) -> Trigger:
    """Construct the trigger for ``mode``.

    ``"motion"`` → :class:`MotionTrigger` (``kwargs`` are its arguments),
    ``"gpio"`` → :meth:`GpioTrigger.from_pin` (``kind``, ``pin`` and its
    keyword arguments), ``"manual"`` → :class:`ManualTrigger` (no arguments).

    :raises ValueError: unknown ``mode``, or arguments for ``"manual"``.
    :raises TypeError: an argument the chosen trigger does not take.
    """
    if mode == "motion":
        return MotionTrigger(**kwargs)
    if mode == "gpio":
        kwargs = dict(kwargs)
        try:
            kind = kwargs.pop("kind")
            pin = kwargs.pop("pin")
        except KeyError as exc:
            raise ValueError(f"gpio trigger needs {exc.args[0]!r}") from None
        return GpioTrigger.from_pin(kind, pin, **kwargs)
    if mode == "manual":
        if kwargs:
            raise ValueError(f"manual trigger takes no arguments, got {sorted(kwargs)}")
        return ManualTrigger()
    raise ValueError(f"unknown trigger mode {mode!r}; expected one of {TRIGGER_MODES}")
