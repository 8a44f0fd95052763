"""The frame-source seam: what every camera or replay delivers."""

from __future__ import annotations

from collections.abc import Callable
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


class Frame:
    """One capture of the drop zone.

    :param image: the main stream, ``(H, W, 3)`` RGB ``uint8``: what gets
        classified. A source may give instead a function that returns it, called
        the first time :attr:`image` is read: a camera then copies its main
        stream only for the frames that are classified, not for every frame the
        trigger looks at (see :class:`~bin_agent.sources.picamera.PiCameraSource`).
    :param lores: the low-resolution stream as grayscale ``(h, w)`` ``uint8``
        (the Y plane of the camera's YUV420 stream): what the trigger watches.
    :param timestamp: capture time in seconds on the monotonic clock. Triggers
        measure settle times with it, never with the wall clock, so synthetic
        sequences in tests are deterministic.
    :param index: running frame number from the source's start.
    :param name: where the frame came from (file name for replay), for logs.
    """

    __slots__ = ("_image", "index", "lores", "name", "timestamp")

    def __init__(
        self,
        image: np.ndarray | Callable[[], np.ndarray],
        lores: np.ndarray,
        timestamp: float,
        index: int,
        name: str = "",
    ) -> None:
        self._image = image
        self.lores = lores
        self.timestamp = timestamp
        self.index = index
        self.name = name

    @property
    def image(self) -> np.ndarray:
        """The main stream (read from the source the first time, if it gave a function)."""
        image = self._image
        if not isinstance(image, np.ndarray):
            image = self._image = image()
        return image

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, timestamp={self.timestamp!r}, name={self.name!r})"


class FrameSource(Protocol):
    """A camera or a replay. ``read`` blocks until the next frame is due.

    ``read`` returns ``None`` once a finite source is exhausted and raises
    :class:`SourceError` when a camera fails. ``close`` is called after
    ``start``, also when ``start`` raised (a camera may be open by then).
    """

    def start(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...
