"""Replay image files as if a camera were watching the bin.

This is what a laptop and the tests use instead of the Pi camera. Two modes:

* ``items`` plays a scene per photo: ``empty_seconds`` of empty-bin frames,
  then the photo for ``item_seconds`` (an item lying in the bin), and finally a
  last stretch of empty frames so the last item is taken out again. The motion
  trigger thus sees what it would see on the Pi: empty → item → settled → empty.
* ``sequence`` plays the files as they are, one frame per file in name order,
  nothing added: a recording of a real bin (``bin-agent record``) replayed.

With ``realtime = false`` nothing sleeps: frames come as fast as the agent takes
them, stamped on a virtual clock that starts at 0 and advances exactly
``1 / fps`` per frame (frame ``n`` is stamped ``n / fps``), so every replay of
the same files gives the same events, frame for frame (tests, benchmarks).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from ..classify.preprocess import DEFAULT_MAX_PIXELS, ImageError, load_image
from .base import Frame, SourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def find_images(path: Path) -> list[Path]:
    """An image file, or every image below a folder, in a stable order."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise SourceError(f"replay: {path} is neither an image nor a folder")
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_lores(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grey ``(h, w)`` uint8 version of an RGB frame at ``size`` = (width, height):
    what the camera's YUV420 low-res stream's Y plane would show."""
    grey = Image.fromarray(image).convert("L")
    return np.asarray(grey.resize(size, resample=Image.Resampling.BILINEAR))


def plain_background(photo: np.ndarray) -> np.ndarray:
    """An empty-bin frame the size of ``photo``: the median colour of its border."""
    border = np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]])
    colour = np.median(border, axis=0).astype(np.uint8)
    return np.broadcast_to(colour, photo.shape).copy()


class ReplaySource:
    """Plays photos as a sequence of frames.

    :param path: an image file or a folder searched recursively.
    :param mode: ``"items"``: a scene of empty frames and the photo per file;
        ``"sequence"``: each file is one frame, as recorded (the options of
        the scenes, ``item_seconds`` to ``empty_frame``, do not apply).
    :param fps: frame rate (wall clock if ``realtime``, else the virtual clock).
    :param item_seconds: how long each photo is in view.
    :param empty_seconds: empty-bin frames before each photo (and after the last).
    :param empty_frame: photo of the empty bin; ``None``: :func:`plain_background`.
    :param lores_size: ``(width, height)`` of :attr:`Frame.lores`.
    :param loop: start again after the last photo.
    :param shuffle: seeded random order; ``limit`` keeps the first N.
    :param max_pixels: larger photos are decoded reduced (JPEG) or skipped
        with a warning (see :func:`~bin_agent.preprocess.load_image`).
    """

    def __init__(
        self,
        path: Path,
        *,
        mode: Literal["items", "sequence"] = "items",
        fps: float = 10.0,
        realtime: bool = True,
        item_seconds: float = 2.0,
        empty_seconds: float = 1.5,
        empty_frame: Path | None = None,
        lores_size: tuple[int, int] = (320, 240),
        loop: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        limit: int = 0,
        hflip: bool = False,
        vflip: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if mode not in ("items", "sequence"):
            raise ValueError(f"replay mode must be 'items' or 'sequence', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.fps = fps
        self.realtime = realtime
        self.item_frames = max(1, round(item_seconds * fps))
        self.empty_frames = max(0, round(empty_seconds * fps))
        self.empty_frame_path = empty_frame
        self.lores_size = lores_size
        self.loop = loop
        self.shuffle = shuffle
        self.seed = seed
        self.limit = limit
        self.hflip, self.vflip = hflip, vflip
        self.max_pixels = max_pixels
        self._clock, self._sleep = clock, sleep
        self.images: list[Path] = []
        self.skipped: list[str] = []
        self._frames: Iterator[tuple[np.ndarray, str]] | None = None
        # The same photo is shown for many frames: compute its lores view once.
        self._lores_of: np.ndarray | None = None
        self._lores: np.ndarray | None = None
        self._empty_photo: np.ndarray | None = None
        self._index = 0
        self._next_due = 0.0

    def start(self) -> None:
        images = find_images(self.path)
        if self.shuffle:
            random.Random(self.seed).shuffle(images)
        if self.limit:
            images = images[: self.limit]
        if not images:
            raise SourceError(f"replay: no images in {self.path}")
        self.images = images
        self._frames = self._scenes() if self.mode == "items" else self._sequence()
        self._index = 0
        self._next_due = self._clock()
        log.info("replaying %d image(s) from %s at %.1f fps (%s)", len(images), self.path, self.fps, self.mode)

    def read(self) -> Frame | None:
        if self._frames is None:
            raise SourceError("replay: read() before start()")
        try:
            image, name = next(self._frames)
        except StopIteration:
            return None
        if self.realtime:
            delay = self._next_due - self._clock()
            if delay > 0:
                self._sleep(delay)
            now = self._clock()
            # After a long actuation do not rush to catch up: a camera drops
            # the frames it could not deliver, it does not speed up.
            self._next_due = max(self._next_due, now) + 1.0 / self.fps
            timestamp = now
        else:
            # Integer frame ticks, not a running float sum and no wall-clock
            # start: frame n has the same timestamp on every run.
            timestamp = self._index / self.fps
        frame = Frame(image=image, lores=self._lores_view(image), timestamp=timestamp, index=self._index, name=name)
        self._index += 1
        return frame

    def close(self) -> None:
        self._frames = None

    # ------------------------------------------------------------------ internals

    def _lores_view(self, image: np.ndarray) -> np.ndarray:
        if self._lores_of is not image or self._lores is None:
            self._lores = to_lores(image, self.lores_size)
            self._lores_of = image
        return self._lores

    def _orient(self, image: np.ndarray) -> np.ndarray:
        if self.hflip:
            image = image[:, ::-1]
        if self.vflip:
            image = image[::-1]
        return np.ascontiguousarray(image) if (self.hflip or self.vflip) else image

    def _empty_for(self, photo: np.ndarray) -> np.ndarray:
        if self.empty_frame_path is not None:
            if self._empty_photo is None:
                try:
                    self._empty_photo = self._orient(load_image(self.empty_frame_path, self.max_pixels))
                except ImageError as exc:
                    raise SourceError(f"replay: empty frame {exc}") from None
            return self._empty_photo
        return plain_background(photo)

    def _photos(self) -> Iterator[tuple[np.ndarray, str]]:
        """Each readable image once, oriented; unreadable ones are skipped with a warning."""
        for path in self.images:
            try:
                yield self._orient(load_image(path, self.max_pixels)), str(path)
            except ImageError as exc:
                log.warning("replay: skipping %s", exc)
                if str(path) not in self.skipped:
                    self.skipped.append(str(path))

    def _sequence(self) -> Iterator[tuple[np.ndarray, str]]:
        while True:
            played = 0
            for photo, name in self._photos():
                yield photo, name
                played += 1
            if not self.loop or played == 0:
                return

    def _scenes(self) -> Iterator[tuple[np.ndarray, str]]:
        empty: np.ndarray | None = None
        while True:
            played = 0
            for photo, name in self._photos():
                if empty is None or (self.empty_frame_path is None and empty.shape != photo.shape):
                    empty = self._empty_for(photo)
                for _ in range(self.empty_frames):
                    yield empty, "empty"
                for _ in range(self.item_frames):
                    yield photo, name
                played += 1
            if empty is not None:
                for _ in range(max(self.empty_frames, 1)):
                    yield empty, "empty"
            if not self.loop or played == 0:
                return
