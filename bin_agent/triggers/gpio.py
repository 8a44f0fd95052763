"""The GPIO trigger: a sensor at the drop opening sees the item fall in.

A gpiozero input device (IR break-beam, button or lid switch, PIR, HC-SR04
ultrasonic distance sensor) calls back when an item passes; the trigger fires
on the first frame ``settle_seconds`` later, when the item has landed.

A falling item is fast: dropped from 10-20 cm above the opening it passes a
beam in a few tens of milliseconds (a 5 cm item at 2 m/s: 25 ms). The
defaults are chosen so that it is still seen:

* **No debounce on beams** (``bounce_seconds = 0``). lgpio, gpiozero's pin
  factory on Bookworm, only reports an edge after the level has been stable
  for the whole debounce time, and a level change that returns within it is
  never reported (``xDebWatEvt`` in lg's ``lgPthAlerts.c``: "Only report
  stable edges"). With gpiozero's usual 0.05 s, a 35 ms interruption vanishes.
  Chatter is handled here instead: activations while an item is waiting, or
  within ``cooldown_seconds`` after one fired, are the same item.
* **Either polarity** (``active_state``): some receivers pull the line low
  while the beam is broken, others drive it high.
* **A quick distance sensor**: gpiozero's ``DistanceSensor`` takes the median
  of 9 readings 60 ms apart, which smooths a falling item away; here few
  readings (``queue_len``) a short time apart (``sample_wait_seconds``), and
  events from the first reading on (``partial``).

Hardware libraries are imported only when a device is built.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..geometry import NormBox
from ..sources.base import Frame
from .base import Request

if TYPE_CHECKING:
    from ..config import TriggerSection

log = logging.getLogger(__name__)

GPIO_KINDS = ("beam", "button", "pir", "distance")


class GpioTrigger:
    """Fires ``settle_seconds`` after a gpiozero input device reports an item.

    The device's ``event`` callback (run in gpiozero's thread) records the
    time with ``clock`` (``time.monotonic``, the clock frames are stamped
    with). :meth:`update` returns ``True`` on the first frame whose
    ``timestamp`` is at least that time + ``settle_seconds``, giving the item
    time to land. Reports while one is already waiting are ignored, and so
    are reports less than ``cooldown_seconds`` after an item fired: a
    chattering edge, an item that breaks a beam twice or bounces back through
    it gives one event. Later reports are a new item.

    ``state`` is ``"idle"``, ``"waiting"`` (an item seen, settle time running)
    or ``"requested"``. ``item_boxes`` is always empty: a sensor does not
    know where in the frame the item lies.

    :param device: a gpiozero input device.
    :param event: the device's callback attribute that means "an item is
        coming", e.g. ``"when_activated"``, or ``"when_deactivated"`` when the
        device's active level is the beam's intact one, ``"when_in_range"``
        for :class:`gpiozero.DistanceSensor`.
    :param settle_seconds: seconds from the report to the frame to classify.
    :param cooldown_seconds: seconds after an item fired during which the
        sensor's reports are taken for the same item.
    :param owns_device: close ``device`` in :meth:`close`.
    :param clock: monotonic clock in seconds; must match ``Frame.timestamp``.
    """

    def __init__(
        self,
        device: Any,
        *,
        event: str,
        settle_seconds: float,
        cooldown_seconds: float,
        owns_device: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, got {settle_seconds}")
        if cooldown_seconds < 0:
            raise ValueError(f"cooldown_seconds must be >= 0, got {cooldown_seconds}")
        self.device = device
        self.event = event
        self.settle_seconds = float(settle_seconds)
        self.cooldown_seconds = float(cooldown_seconds)
        self._owns_device = owns_device
        self._clock = clock
        self._lock = threading.Lock()
        self._seen_at: float | None = None
        self._fired_at: float | None = None
        self._request = Request()
        setattr(device, event, self._on_item)

    @classmethod
    def from_config(
        cls, section: TriggerSection, pin_factory: Any = None, clock: Callable[[], float] = time.monotonic
    ) -> GpioTrigger:
        """Build the sensor of a ``[trigger]`` section (``config.TriggerSection``):
        its ``settle_seconds`` and its ``gpio`` table; ``gpio.kind`` picks the
        device (see :func:`build_device`).

        :param pin_factory: a gpiozero pin factory (``MockFactory()`` in
            tests); ``None`` uses gpiozero's default (lgpio on Bookworm).
        :raises ValueError: an unknown ``kind``.
        :raises gpiozero.GPIOZeroError: the pin cannot be set up.
        """
        gpio = section.gpio
        device, event = build_device(gpio, pin_factory)
        return cls(
            device,
            event=event,
            settle_seconds=section.settle_seconds,
            cooldown_seconds=gpio.cooldown_seconds,
            owns_device=True,
            clock=clock,
        )

    @property
    def state(self) -> str:
        if self._request.pending:
            return "requested"
        return "waiting" if self._seen_at is not None else "idle"

    @property
    def item_boxes(self) -> tuple[NormBox, ...]:
        return ()

    def _on_item(self) -> None:
        t = self._clock()
        with self._lock:
            if self._seen_at is not None:
                return  # the item already waiting
            if self._fired_at is not None and t - self._fired_at < self.cooldown_seconds:
                return  # the item that just fired, again
            self._seen_at = t

    def request(self) -> None:
        self._request.set()

    def item_taken_away(self) -> None:
        pass  # the sensor sees items fall in, not the tray they lie on

    def update(self, frame: Frame) -> bool:
        """``True`` on the first frame at least ``settle_seconds`` after the
        sensor saw an item, or on the first frame after a :meth:`request`."""
        fired = False
        with self._lock:
            if self._seen_at is not None and frame.timestamp >= self._seen_at + self.settle_seconds:
                self._seen_at = None
                self._fired_at = self._clock()
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


def build_device(gpio: Any, pin_factory: Any) -> tuple[Any, str]:
    """The gpiozero device of a ``[trigger.gpio]`` table (``config.GpioTriggerSection``)
    and the name of its callback that means "an item is coming".

    * ``"beam"`` (:class:`gpiozero.DigitalInputDevice`) and ``"button"``
      (:class:`gpiozero.Button`) on ``pin``: ``pull_up``, ``bounce_seconds``
      (0: none) and ``active_state``, the level while the beam is broken or
      the button pressed. gpiozero ties a device's active level to its pull
      (pulled up: active low), so for the other polarity the trigger listens
      to ``when_deactivated``.
    * ``"pir"`` (:class:`gpiozero.MotionSensor`) on ``pin``: PIR modules drive
      their output high on motion; pulled down, no debounce.
    * ``"distance"`` (:class:`gpiozero.DistanceSensor`): trigger on ``pin``,
      echo on ``echo_pin`` (through a 5 V → 3.3 V divider), in range below
      ``threshold_distance``; ``queue_len`` readings, ``sample_wait_seconds``
      apart, events from the first one.

    A device already active when built does not fire (gpiozero takes the
    first reading as the initial state).
    """
    import gpiozero  # hardware lib: only where a device is really built

    if gpio.kind in ("beam", "button"):
        device_class = gpiozero.DigitalInputDevice if gpio.kind == "beam" else gpiozero.Button
        # gpiozero: None is "no debounce"; some pin factories reject 0.
        bounce = gpio.bounce_seconds if gpio.bounce_seconds > 0 else None
        device = device_class(gpio.pin, pull_up=gpio.pull_up, bounce_time=bounce, pin_factory=pin_factory)
        active_level = "low" if gpio.pull_up else "high"
        return device, "when_activated" if gpio.active_state == active_level else "when_deactivated"
    if gpio.kind == "pir":
        return gpiozero.MotionSensor(gpio.pin, pull_up=False, pin_factory=pin_factory), "when_activated"
    if gpio.kind == "distance":
        device = gpiozero.DistanceSensor(
            echo=gpio.echo_pin,
            trigger=gpio.pin,
            queue_len=gpio.queue_len,
            max_distance=gpio.max_distance,
            threshold_distance=gpio.threshold_distance,
            partial=True,
            pin_factory=pin_factory,
        )
        set_sample_wait(device, gpio.sample_wait_seconds)
        # DistanceSensor's "active" is out of range; an item near is "in range".
        return device, "when_in_range"
    raise ValueError(f"unknown GPIO trigger kind {gpio.kind!r}; expected one of {GPIO_KINDS}")


def set_sample_wait(sensor: Any, seconds: float) -> None:
    """Set the pause between a smoothed gpiozero device's readings.

    ``DistanceSensor`` fixes it at 60 ms in its constructor (the HC-SR04
    datasheet's cycle, to keep a late echo of one ping out of the next). Its
    reading thread (``GPIOQueue.fill``) reads ``sample_wait`` before every
    pause, so changing it on the running queue takes effect from the next
    reading. ``_queue`` is gpiozero's (2.0) own attribute: if a release drops
    it the sensor keeps 60 ms, and says so.
    """
    queue = getattr(sensor, "_queue", None)
    if queue is None or not hasattr(queue, "sample_wait"):
        log.warning(
            "this gpiozero has no DistanceSensor._queue.sample_wait: the distance "
            "sensor keeps gpiozero's own pause between readings"
        )
        return
    queue.sample_wait = float(seconds)
