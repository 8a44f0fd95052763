"""Where in the frame: the drop zone, the item's box, the region classified.

Boxes travel between the parts as ``(x0, y0, x1, y1)`` *fractions* of the
full frame (:data:`NormBox`: 0 is the left/top edge, 1 the right/bottom), so
the low-resolution stream the trigger watches and the main stream that is
classified share them whatever their sizes (both show the same field of view).
Only :func:`crop_box` turns them into pixels.

:func:`crop_box` is the one definition of "the region of a frame that is
classified": the agent uses it on every item, and training can use it to cut
the same crops from its photos. It is a pure function of its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence

NormBox = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` as fractions (0-1) of the frame's width and height."""

PixelBox = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in pixels; right and bottom are exclusive,
so ``image[top:bottom, left:right]`` is the region."""

FULL_FRAME: NormBox = (0.0, 0.0, 1.0, 1.0)

MIN_ZONE_SIDE = 0.05
"""The smallest drop zone side, as a fraction of the frame (a typo guard)."""


def box_problem(values: Sequence[float]) -> str | None:
    """Why ``values`` is not a usable :data:`NormBox`, or ``None`` if it is."""
    if len(values) != 4:
        return f"expected [x0, y0, x1, y1], got {len(values)} value(s)"
    x0, y0, x1, y1 = values
    if not all(0.0 <= v <= 1.0 for v in values):
        return "every value is a fraction of the frame, between 0 and 1"
    if x1 - x0 < MIN_ZONE_SIDE or y1 - y0 < MIN_ZONE_SIDE:
        return (
            f"x1 must exceed x0 and y1 must exceed y0 by at least {MIN_ZONE_SIDE} "
            f"(x0, y0 is the top-left corner), got {list(values)}"
        )
    return None


def to_pixels(box: NormBox, frame_size: tuple[int, int]) -> PixelBox:
    """``box`` in pixels of a ``(width, height)`` frame, at least 1 px wide and high."""
    width, height = frame_size
    left = min(max(round(box[0] * width), 0), width - 1)
    top = min(max(round(box[1] * height), 0), height - 1)
    right = min(max(round(box[2] * width), left + 1), width)
    bottom = min(max(round(box[3] * height), top + 1), height)
    return (left, top, right, bottom)


def to_normalised(box: PixelBox, frame_size: tuple[int, int]) -> NormBox:
    """The inverse of :func:`to_pixels`."""
    width, height = frame_size
    return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)


def crop_box(
    frame_size: tuple[int, int],
    box: NormBox | None,
    margin: float,
    zone: NormBox = FULL_FRAME,
    aspect: float = 1.0,
    stretch: float = 1.0,
) -> PixelBox:
    """The pixel region of a ``(width, height)`` frame to classify.

    With no ``box`` (the trigger does not know where the item is) it is the
    drop ``zone`` as it is. With a ``box`` (the item's bounding box) it is
    that box grown by ``margin`` times its width and height on each side, then
    widened or heightened around its centre until its aspect (width / height)
    lies within ``stretch`` times the ``aspect`` of the model input (with
    ``stretch = 1``: exactly that aspect, so resizing to the input does not
    distort the item; above 1 the resize may squash it by up to that factor,
    as a model trained on squashed photos saw its items); then moved, without
    resizing, to lie inside the zone; and only cut at the zone's edges if it
    is larger than the zone (then its aspect is only near the one wanted).

    :param frame_size: ``(width, height)`` of the frame in pixels.
    :param box: the item's :data:`NormBox`, or ``None``.
    :param margin: added on each side, as a fraction of the box's size (>= 0).
    :param zone: the drop zone (:data:`NormBox`); the result never leaves it.
    :param aspect: width / height of the model input (> 0).
    :param stretch: how far (a factor >= 1) the region's aspect may stay from ``aspect``.
    :returns: ``(left, top, right, bottom)`` pixels, at least 1x1.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if aspect <= 0:
        raise ValueError(f"aspect must be > 0, got {aspect}")
    if stretch < 1:
        raise ValueError(f"stretch must be >= 1, got {stretch}")
    width, height = frame_size
    zx0, zy0, zx1, zy1 = (zone[0] * width, zone[1] * height, zone[2] * width, zone[3] * height)
    if box is None:
        return to_pixels(zone, frame_size)
    bx0, by0, bx1, by1 = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
    # The item box from a coarse motion mask can lie partly outside the zone.
    bx0, bx1 = max(bx0, zx0), min(bx1, zx1)
    by0, by1 = max(by0, zy0), min(by1, zy1)
    if bx1 <= bx0 or by1 <= by0:  # nothing of the item inside the zone
        return to_pixels(zone, frame_size)
    box_w, box_h = bx1 - bx0, by1 - by0
    w, h = box_w * (1 + 2 * margin), box_h * (1 + 2 * margin)
    if w / h < aspect / stretch:
        w = h * aspect / stretch
    elif w / h > aspect * stretch:
        h = w / (aspect * stretch)
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    x0, x1 = _fit(cx - w / 2, cx + w / 2, zx0, zx1)
    y0, y1 = _fit(cy - h / 2, cy + h / 2, zy0, zy1)
    return to_pixels((x0 / width, y0 / height, x1 / width, y1 / height), frame_size)


def _fit(low: float, high: float, lowest: float, highest: float) -> tuple[float, float]:
    """Shift ``[low, high]`` into ``[lowest, highest]``; cut it only if longer."""
    if high - low >= highest - lowest:
        return lowest, highest
    if low < lowest:
        return lowest, lowest + (high - low)
    if high > highest:
        return highest - (high - low), highest
    return low, high
