"""The trigger seam: what every trigger offers the main loop."""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

from ..geometry import NormBox
from ..sources.base import Frame


@runtime_checkable
class Trigger(Protocol):
    """When is there a new item to classify?

    ``update`` is called by the main loop for every frame, in order, from one
    thread. ``request`` may be called from any thread. ``state`` is a short
    lower-case word for status reports. ``item_boxes`` are where the items lie
    that the frame that fired shows for the first time, one box per item (two
    items dropped a moment apart: two), largest first, as ``(x0, y0, x1, y1)``
    fractions of the full frame; none when the trigger cannot see them (GPIO
    sensors, manual requests): the agent then classifies the drop zone as one item.
    """

    @property
    def state(self) -> str: ...

    @property
    def item_boxes(self) -> tuple[NormBox, ...]: ...

    def update(self, frame: Frame) -> bool:
        """Return ``True`` if ``frame`` is the one to classify (once per item)."""
        ...

    def request(self) -> None:
        """Make the next :meth:`update` return ``True`` (thread-safe)."""
        ...

    def item_taken_away(self) -> None:
        """The sorter is taking the item that fired out of view (a tray tilting, a flap
        opening): the main loop says so when it starts a sort that does, between two
        updates. A camera trigger watches the floor that moves; a sensor ignores it."""
        ...

    def close(self) -> None:
        """Release whatever the trigger holds (GPIO pins, callbacks)."""
        ...


class Request:
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
