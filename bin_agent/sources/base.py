"""The frame-source seam: what every camera or replay delivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import BinAgentError


class SourceError(BinAgentError, RuntimeError):
    """A frame source cannot start or has stopped delivering frames.

    :param exit_code: what the agent exits with: 1 (systemd restarts it: a
        camera that may come back), or 78 for what a person must fix (a
        camera library that cannot be imported).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Frame:
    """One capture of the drop zone.

    :param image: the main stream, ``(H, W, 3)`` RGB ``uint8``: what gets classified.
    :param lores: the low-resolution stream as grayscale ``(h, w)`` ``uint8``
        (the Y plane of the camera's YUV420 stream): what the trigger watches.
    :param timestamp: capture time in seconds on the monotonic clock. Triggers
        measure settle times with it, never with the wall clock, so synthetic
        sequences in tests are deterministic.
    :param index: running frame number from the source's start.
    :param name: where the frame came from (file name for replay), for logs.
    """

    image: np.ndarray
    lores: np.ndarray
    timestamp: float
    index: int
    name: str = ""


class FrameSource(Protocol):
    """A camera or a replay. ``read`` blocks until the next frame is due.

    ``read`` returns ``None`` once a finite source is exhausted and raises
    :class:`SourceError` when a camera fails.
    """

    def start(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...
