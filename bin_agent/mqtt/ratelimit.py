"""Rate limits: a token bucket for what comes in, a throttle for what is logged.

A broker that stays down, a wrong password or a flood of commands must not
write thousands of identical log lines: :class:`LogThrottle` logs the first
occurrence at once, then at most one line per interval, saying how many were
held back. :class:`TokenBucket` bounds how often something may happen (MQTT
commands) while allowing a short burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` events per second on average, bursts of up to ``burst``.

    :param clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty (the event is over the limit)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


@dataclass
class _Seen:
    logged_at: float
    held_back: int = 0


class LogThrottle:
    """Log a kind of message at once the first time, then at most once per ``interval``.

    Each line after the first says how many like it were held back since the
    last one. :meth:`clear` forgets a kind (the condition ended), so the next
    occurrence is logged at once again.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, clock: Clock = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, message: str, *args: Any, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless a ``kind`` line was logged less than ``interval`` ago.

        Returns whether the line was written.
        """
        with self._lock:
            now = self._clock()
            seen = self._seen.get(kind)
            if seen is not None and now - seen.logged_at < self.interval:
                seen.held_back += 1
                return False
            held_back = seen.held_back if seen is not None else 0
            self._seen[kind] = _Seen(logged_at=now)
        if held_back:
            message += f" ({held_back} more like this in the last {self.interval:.0f} s)"
        self.logger.log(level, message, *args, exc_info=exc_info, stacklevel=2)
        return True

    def clear(self, kind: str) -> None:
        with self._lock:
            self._seen.pop(kind, None)
