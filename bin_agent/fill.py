"""How full each compartment is: estimated from what was sorted into it, measured where a sensor is fitted.

The estimate adds up ``fill.item_litres[class]`` for every item sorted into a
compartment since it was last emptied (the counts live in the SQLite store, so
they survive restarts) and divides by ``fill.capacity_litres[compartment]``.
A compartment with an ultrasonic sensor (:class:`gpiozero.DistanceSensor`
looking down from the lid) also gets a measured level: the distance to the
waste between ``empty_distance`` (0 %) and ``full_distance`` (100 %). Where both
exist the measurement is the level reported; the estimate stays in the details.

``cmd/emptied {"compartment": "paper"}`` (or the Home Assistant button) starts
a compartment's estimate again.

Level sensors ping rarely: :data:`READINGS` pings per
``sensor_interval_seconds`` (a level changes over hours), not gpiozero's one
every 60 ms. Every ``DistanceSensor`` reading holds a class-wide lock
(``DistanceSensor.ECHO_LOCK``, so sensors do not hear each other's pings) for
up to 100 ms; fill sensors pinging every 60 ms would hold it most of the time,
and an ultrasonic *drop* sensor (``trigger.gpio.kind = "distance"``) waiting
for it would miss an item that is under it for 25-50 ms. Now a fill sensor
takes the lock at most 100 ms every ``sensor_interval_seconds / 3`` (10 s by
default): a drop in those moments can still be missed (see docs/pi-notes.md);
a break-beam drop sensor takes no lock and misses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import FillSection, FillSensorSection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FillLevel:
    """One compartment's level in percent (0-100)."""

    compartment: str
    percent: float
    estimated: float
    measured: float | None
    full: bool
    emptied: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "estimated": self.estimated,
            "measured": self.measured,
            "full": self.full,
            "emptied": self.emptied,
        }


def estimated_percent(counts: Mapping[str, int], item_litres: Mapping[str, float], capacity: float) -> float:
    """Percent of ``capacity`` litres taken by ``counts`` (class → items), capped at 100."""
    litres = sum(n * item_litres.get(label, 0.0) for label, n in counts.items())
    return round(min(100.0, 100.0 * litres / capacity), 1)


def measured_percent(distance: float, empty_distance: float, full_distance: float) -> float:
    """Percent full from the sensor's distance to the waste, clamped to 0-100."""
    share = (empty_distance - distance) / (empty_distance - full_distance)
    return round(100.0 * min(1.0, max(0.0, share)), 1)


READINGS = 3
"""Pings per ``sensor_interval_seconds``; the level is their median."""
MIN_SAMPLE_WAIT_SECONDS = 0.2


class LevelSensor:
    """An HC-SR04-style ultrasonic sensor above one compartment (gpiozero ``DistanceSensor``).

    :param interval_seconds: the level is the median of the last :data:`READINGS`
        pings, one every ``interval_seconds / READINGS`` (module docstring).
    """

    def __init__(self, settings: FillSensorSection, pin_factory: Any = None, interval_seconds: float = 30.0) -> None:
        from gpiozero import DistanceSensor  # hardware lib: only where a sensor is really built

        from .triggers.gpio import set_sample_wait

        self.settings = settings
        # Readings are clamped to max_distance: leave room beyond the empty floor.
        self.device = DistanceSensor(
            echo=settings.echo_pin,
            trigger=settings.trigger_pin,
            max_distance=settings.empty_distance * 1.5,
            queue_len=READINGS,
            pin_factory=pin_factory,
        )
        self.sample_wait = max(MIN_SAMPLE_WAIT_SECONDS, interval_seconds / READINGS)
        set_sample_wait(self.device, self.sample_wait)

    def ready(self) -> bool:
        """Whether :data:`READINGS` pings are in: before, reading the level would block
        (gpiozero waits for a full queue) for up to ``interval_seconds``."""
        queue = getattr(self.device, "_queue", None)
        full = getattr(queue, "full", None)
        return full.is_set() if full is not None else True

    def percent(self) -> float | None:
        """The measured level, or ``None`` until the first :data:`READINGS` pings are in."""
        if not self.ready():
            return None
        return measured_percent(self.device.distance, self.settings.empty_distance, self.settings.full_distance)

    def close(self) -> None:
        self.device.close()


class FillMonitor:
    """Fill levels of every compartment, from the store's counts and the level sensors.

    :param section: the ``[fill]`` config section.
    :param compartments: every compartment the router names.
    :param store: the agent's :class:`~bin_agent.store.Store` (fill counts, emptied times).
    :param sensors: compartment → :class:`LevelSensor`.
    """

    def __init__(
        self,
        section: FillSection,
        compartments: list[str],
        store: Any,
        sensors: Mapping[str, LevelSensor] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.section = section
        self.compartments = list(compartments)
        self.store = store
        self.sensors = dict(sensors or {})
        self._clock = clock
        self._last_poll = clock()
        self._last_measured: dict[str, float] = {}
        self._published_full: list[str] | None = None

    @classmethod
    def from_config(
        cls, section: FillSection, compartments: list[str], store: Any, pin_factory: Any = None
    ) -> FillMonitor:
        sensors: dict[str, LevelSensor] = {}
        try:
            for compartment, settings in section.sensors.items():
                sensors[compartment] = LevelSensor(settings, pin_factory, section.sensor_interval_seconds)
        except Exception:
            for sensor in sensors.values():
                sensor.close()
            raise
        return cls(section, compartments, store, sensors)

    # ------------------------------------------------------------------ levels

    def levels(self) -> dict[str, FillLevel]:
        counts = self.store.fill_counts()
        emptied = self.store.emptied_times()
        result = {}
        for compartment in self.compartments:
            estimated = estimated_percent(
                counts.get(compartment, {}), self.section.item_litres, self.section.capacity_litres[compartment]
            )
            measured = self._measure(compartment)
            percent = measured if measured is not None else estimated
            result[compartment] = FillLevel(
                compartment,
                percent,
                estimated,
                measured,
                percent >= self.section.full_threshold,
                emptied.get(compartment),
            )
        return result

    def _measure(self, compartment: str) -> float | None:
        sensor = self.sensors.get(compartment)
        if sensor is None:
            return None
        try:
            value = sensor.percent()
        except Exception as exc:  # a broken sensor must not stop sorting
            log.warning("fill sensor of %s: %s", compartment, exc)
            return None
        if value is None:  # no level yet: the estimate stands in
            return None
        self._last_measured[compartment] = value
        return value

    def state(self) -> dict[str, Any]:
        """The ``fill``, ``fill_detail`` and ``full`` keys of the retained ``state``."""
        levels = self.levels()
        return {
            "fill": {name: level.percent for name, level in levels.items()},
            "fill_detail": {name: level.as_dict() for name, level in levels.items()},
            "full": [name for name, level in levels.items() if level.full],
        }

    def full_alert(self, full: list[str]) -> dict[str, Any] | None:
        """The retained ``full`` payload when the set of full compartments changed, else ``None``."""
        if full == self._published_full:
            return None
        self._published_full = list(full)
        return {"full": list(full), "threshold_percent": self.section.full_threshold}

    def forget_published(self) -> None:
        """After a reconnect the ``full`` topic is published again."""
        self._published_full = None

    def sensors_changed(self) -> bool:
        """Every ``sensor_interval_seconds``: whether a measured level moved by 1 % or more."""
        if not self.sensors:
            return False
        now = self._clock()
        if now - self._last_poll < self.section.sensor_interval_seconds:
            return False
        self._last_poll = now
        before = dict(self._last_measured)
        changed = False
        for compartment in self.sensors:
            value = self._measure(compartment)
            if value is not None and abs(value - before.get(compartment, -100.0)) >= 1.0:
                changed = True
        return changed

    # ------------------------------------------------------------------ commands

    def emptied(self, compartment: str) -> str:
        """Start the compartment's estimate again; raises ``KeyError`` for an unknown one."""
        if compartment not in self.compartments:
            raise KeyError(compartment)
        return self.store.mark_emptied(compartment)

    def close(self) -> None:
        for sensor in self.sensors.values():
            try:
                sensor.close()
            except Exception:
                log.exception("closing a fill sensor failed")
