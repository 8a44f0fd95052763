"""The motion trigger: the camera sees an item arrive in the drop zone and lie still."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ..geometry import FULL_FRAME, NormBox, box_problem
from ..sources.base import Frame
from .base import Request

if TYPE_CHECKING:
    from ..config import TriggerSection

log = logging.getLogger(__name__)


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


def _open3x3(mask: np.ndarray) -> np.ndarray:
    """Morphological opening with a 3x3 square: drops changed pixels that are
    not part of a 3x3 changed block (noise), keeps the shape of larger ones."""
    h, w = mask.shape
    if h < 3 or w < 3:
        return mask
    core = np.ones((h - 2, w - 2), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            core &= mask[dy : dy + h - 2, dx : dx + w - 2]
    opened = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            opened[dy : dy + h - 2, dx : dx + w - 2] |= core
    return opened


def _zone_slices(zone: NormBox, lores_shape: tuple[int, ...], factor: int) -> tuple[slice, slice]:
    """Rows and columns of the block-averaged image (``factor`` x ``factor``
    blocks of a ``lores_shape`` frame) that cover the zone, at least one each."""
    rows, cols = lores_shape[0] // factor, lores_shape[1] // factor
    height, width = lores_shape[0], lores_shape[1]
    top = min(int(zone[1] * height / factor), rows - 1)
    left = min(int(zone[0] * width / factor), cols - 1)
    bottom = max(min(-int(-zone[3] * height // factor), rows), top + 1)
    right = max(min(-int(-zone[2] * width // factor), cols), left + 1)
    return slice(top, bottom), slice(left, right)


class MotionTrigger:
    """Fires once per item dropped into view, from the low-res grayscale stream.

    Each ``frame.lores`` (``(h, w)`` ``uint8``, e.g. 320x240) is block-averaged
    down to at most ``max_width`` columns, cut to the ``drop_zone`` (only what
    happens inside it counts; "the view" below means the zone) and compared
    with a background model of the **empty** bin. Per frame it computes:

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
    * When it fires, :attr:`item_box` is the bounding box of the changed
      pixels (the item and its shadow) in that frame, as fractions of the
      full frame; stray changed pixels are removed first (a 3x3 opening of
      the mask), so sensor noise does not stretch the box.

    The settings that the config holds (``[trigger]`` and ``[trigger.motion]``,
    where their defaults and meaning are documented) have no default here:
    build the trigger with :meth:`from_config`.

    :param pixel_threshold: grey levels (0-255) by which a block-averaged,
        gain-compensated pixel must differ to count as changed.
    :param min_area: fraction (0-1) of the view that must be changed for an
        item to be present (2 %: a 45x45 px item in 320x240).
    :param max_motion: fraction of the view that may change against the
        reference frame while the scene still counts as "not moving". Must be
        below ``min_area``.
    :param settle_seconds: seconds (frame time) the changed scene must stay
        still before firing.
    :param rearm_seconds: seconds the scene must look empty before the trigger
        re-arms after firing.
    :param background_seconds: time constant, in seconds, of the background's
        adaptation while empty; longer absorbs less.
    :param absorb_seconds: seconds a fired, still scene may persist before it
        is absorbed into the background (see above), or ``None`` for never.
    :param drop_zone: the part of the frame watched, as fractions
        ``(x0, y0, x1, y1)`` of the full frame. Default: the whole frame.
    :param clear_area: fraction below which the scene counts as empty again
        (hysteresis). Default ``min_area / 2``.
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
        pixel_threshold: float,
        min_area: float,
        max_motion: float,
        settle_seconds: float,
        rearm_seconds: float,
        background_seconds: float,
        absorb_seconds: float | None,
        drop_zone: NormBox = FULL_FRAME,
        clear_area: float | None = None,
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
        problem = box_problem(drop_zone)
        if problem is not None:
            raise ValueError(f"drop_zone: {problem}")

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
        self.drop_zone = drop_zone

        self._request = Request()
        self._reset()

    @classmethod
    def from_config(cls, section: TriggerSection, drop_zone: NormBox = FULL_FRAME, **tuning: Any) -> MotionTrigger:
        """The trigger of a ``[trigger]`` section (``config.TriggerSection``):
        its ``settle_seconds`` and its ``motion`` table. ``tuning`` passes the
        settings the config does not hold (``clear_area``, ``init_frames``,
        ``max_width``, ``compensate_gain``), for tests and benchmarks."""
        motion = section.motion
        return cls(
            pixel_threshold=motion.pixel_threshold,
            min_area=motion.min_area,
            max_motion=motion.max_motion,
            settle_seconds=section.settle_seconds,
            rearm_seconds=motion.rearm_seconds,
            background_seconds=motion.background_seconds,
            absorb_seconds=motion.absorb_seconds or None,  # 0 in the config: never
            drop_zone=drop_zone,
            **tuning,
        )

    def _reset(self) -> None:
        self._state = "initialising"
        self._shape: tuple[int, ...] | None = None
        self._factor = 1
        # The drop zone in rows and columns of the block-averaged image.
        self._rows = slice(0, 0)
        self._cols = slice(0, 0)
        self._changed_mask: np.ndarray | None = None
        self._item_box: NormBox | None = None
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
    def item_box(self) -> NormBox | None:
        """Where the item lies in the frame that last fired, as fractions
        ``(x0, y0, x1, y1)`` of the full frame, or ``None`` when that frame
        showed nothing changed (a request with an empty zone)."""
        return self._item_box

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
            elif self._state != "occupied":
                self._item_box = None
            else:
                self._item_box = self._box_of_changes()
            return True
        return fired

    # -- internals -----------------------------------------------------------

    def _fire(self, t: float) -> None:
        self._state = "occupied"
        self._occupied_since = t
        self._empty_since = None
        self._item_box = self._box_of_changes()

    def _box_of_changes(self) -> NormBox | None:
        """The bounding box of the last frame's changed pixels, as fractions
        of the full frame (see :attr:`item_box`)."""
        mask = self._changed_mask
        if mask is None or not mask.any():
            return None
        opened = _open3x3(mask)
        if opened.any():  # else only thin or tiny changes: keep them all
            mask = opened
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        assert self._shape is not None
        height, width = self._shape[0], self._shape[1]
        f = self._factor
        top, left = self._rows.start + rows[0], self._cols.start + cols[0]
        bottom, right = self._rows.start + rows[-1] + 1, self._cols.start + cols[-1] + 1
        return (left * f / width, top * f / height, min(right * f / width, 1.0), min(bottom * f / height, 1.0))

    def _changed_fraction(
        self, small: np.ndarray, background: np.ndarray
    ) -> tuple[float, np.ndarray, float, np.ndarray]:
        """Return (changed fraction, gain-compensated frame, gain, changed
        mask) against ``background``."""
        gain = 1.0
        if self.compensate_gain:
            # Median of ratios: robust to an item covering < half the view.
            # Near-black background pixels give wild ratios, so skip them.
            valid = background > 8.0
            if np.count_nonzero(valid) >= small.size // 4:
                gain = float(np.median(small[valid] / background[valid]))
                gain = min(max(gain, 0.25), 4.0)
        comp = small / np.float32(gain) if gain != 1.0 else small
        mask = np.abs(comp - background) > self.pixel_threshold
        return float(np.count_nonzero(mask)) / small.size, comp, gain, mask

    def _track(self, frame: Frame) -> bool:
        lores = np.asarray(frame.lores)
        if lores.ndim != 2:
            raise ValueError(f"frame.lores must be 2-D grayscale, got shape {lores.shape}")
        t = float(frame.timestamp)

        if self._shape != lores.shape:
            if self._shape is not None:
                log.warning(
                    "lores size changed %s -> %s: re-initialising the background",
                    self._shape,
                    lores.shape,
                )
            self._reset()
            self._shape = lores.shape
            self._factor = max(1, -(-lores.shape[1] // self.max_width))
            self._rows, self._cols = _zone_slices(self.drop_zone, lores.shape, self._factor)
        small = _block_mean(lores, self._factor)[self._rows, self._cols]

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
        self._changed, comp, self._gain, self._changed_mask = self._changed_fraction(small, background)

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
        if self.absorb_seconds is not None and still and _has_lasted(self._occupied_since, t, self.absorb_seconds):
            log.info(
                "scene unchanged for %.0f s with an item in view: absorbing it into the background and re-arming",
                t - self._occupied_since,
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
        changed, _, _, _ = self._changed_fraction(small, self._empty_background)
        if changed >= self.clear_area:
            return False
        log.info("absorbed item gone: restoring the empty-bin background")
        self._background = small.copy()
        self._empty_background = None
        self._state = "empty"
        self._empty_since = None
        return True
