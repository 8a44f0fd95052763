"""The crop geometry: which region of a frame is classified."""

from __future__ import annotations

import numpy as np
import pytest

from bin_agent.geometry import FULL_FRAME, box_problem, crop_box, to_normalised, to_pixels

FRAME = (640, 480)  # width, height


def test_no_box_is_the_drop_zone_as_it_is() -> None:
    assert crop_box(FRAME, None, 0.15) == (0, 0, 640, 480)
    assert crop_box(FRAME, None, 0.15, zone=(0.25, 0.1, 0.75, 0.9)) == (160, 48, 480, 432)


def test_box_grows_by_the_margin_and_becomes_square_around_its_centre() -> None:
    # 64 x 48 px item centred at (288, 216): +15 % per side -> 83.2 x 62.4 -> square 83.2.
    assert crop_box(FRAME, (0.4, 0.4, 0.5, 0.5), 0.15) == (246, 174, 330, 258)
    # A tall item widens instead.
    left, top, right, bottom = crop_box(FRAME, (0.45, 0.2, 0.55, 0.8), 0.0)
    assert (top, bottom) == (96, 384) and right - left == bottom - top
    assert (left + right) / 2 == pytest.approx(320, abs=1)


def test_aspect_other_than_square() -> None:
    left, top, right, bottom = crop_box(FRAME, (0.4, 0.4, 0.5, 0.5), 0.0, aspect=4 / 3)
    assert (right - left, bottom - top) == (64, 48)


def test_margin_zero_and_matching_aspect_is_the_box_itself() -> None:
    assert crop_box(FRAME, (0.25, 0.25, 0.5, 0.5), 0.0, aspect=160 / 120) == (160, 120, 320, 240)


def test_stretch_keeps_the_box_shape_within_the_factor() -> None:
    # 64 x 48 px (aspect 1.33) lies within 2x of square: the box itself, no floor added.
    assert crop_box(FRAME, (0.4, 0.4, 0.5, 0.5), 0.0, stretch=2.0) == (256, 192, 320, 240)
    # A tall item, 64 x 288 px (aspect 0.22), is widened only to aspect 1/2: 144 px.
    left, top, right, bottom = crop_box(FRAME, (0.45, 0.2, 0.55, 0.8), 0.0, stretch=2.0)
    assert (top, bottom, right - left) == (96, 384, 144)
    assert (left + right) / 2 == pytest.approx(320, abs=1)
    # A wide one, 384 x 48 px, is heightened to aspect 2: 192 px.
    left, top, right, bottom = crop_box(FRAME, (0.2, 0.45, 0.8, 0.55), 0.0, stretch=2.0)
    assert (left, right, bottom - top) == (128, 512, 192)


def test_region_follows_the_models_preprocessing() -> None:
    """A model trained on squashed photos gets the item's own box (the margin added),
    one that keeps the aspect gets the box made its input's shape."""
    from bin_agent.agent import region_to_classify
    from bin_agent.classify.preprocess import ITEM_STRETCH, PreprocessSpec
    from bin_agent.config import CameraSection

    camera = CameraSection(crop_margin=0.0)
    item = (0.4, 0.3, 0.5, 0.5)  # 64 x 96 px in 640 x 480
    squashing = PreprocessSpec(input_size=(160, 160), keep_aspect=False)
    assert squashing.item_stretch == ITEM_STRETCH
    assert region_to_classify(camera, squashing, (480, 640, 3), item) == (256, 144, 320, 240)
    keeping = PreprocessSpec(input_size=(160, 160), keep_aspect=True)
    left, top, right, bottom = region_to_classify(camera, keeping, (480, 640, 3), item)
    assert (right - left, bottom - top) == (96, 96)


def test_a_box_at_the_edge_is_moved_inside_not_cut() -> None:
    left, top, right, bottom = crop_box(FRAME, (0.0, 0.0, 0.1, 0.1), 0.15)
    assert (left, top) == (0, 0)
    assert right - left == bottom - top  # still square
    zone = (0.2, 0.2, 0.8, 0.8)
    left, top, right, bottom = crop_box(FRAME, (0.7, 0.7, 0.8, 0.8), 0.15, zone)
    assert (right, bottom) == (512, 384) and right - left == bottom - top


def test_a_box_larger_than_the_zone_is_cut_to_it() -> None:
    zone = (0.3, 0.0, 0.7, 1.0)  # tall and narrow
    assert crop_box(FRAME, (0.3, 0.3, 0.7, 0.7), 0.15, zone) == (
        192,
        74,
        448,
        406,
    )  # 256 x 192 px +15 % -> 333 px square, cut to 256 wide
    assert crop_box(FRAME, (0.0, 0.0, 1.0, 1.0), 0.5, zone) == (192, 0, 448, 480)


def test_a_box_outside_the_zone() -> None:
    zone = (0.5, 0.0, 1.0, 1.0)
    # Partly outside: only the part inside counts.
    left, top, right, bottom = crop_box(FRAME, (0.4, 0.4, 0.6, 0.6), 0.0, zone)
    assert left >= 320 and right - left == bottom - top
    # Wholly outside: the zone.
    assert crop_box(FRAME, (0.0, 0.0, 0.2, 0.2), 0.15, zone) == (320, 0, 640, 480)
    # Touching the zone's edge from outside (nothing of it inside, a line of no width): the zone.
    assert crop_box(FRAME, (0.3, 0.4, 0.5, 0.6), 0.0, zone) == (320, 0, 640, 480)


def test_random_boxes_stay_in_the_zone_and_hold_the_item() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        zx = np.sort(rng.uniform(0, 1, 2))
        zy = np.sort(rng.uniform(0, 1, 2))
        if zx[1] - zx[0] < 0.05 or zy[1] - zy[0] < 0.05:
            continue
        zone = (zx[0], zy[0], zx[1], zy[1])
        bx = np.sort(rng.uniform(zx[0], zx[1], 2))
        by = np.sort(rng.uniform(zy[0], zy[1], 2))
        box = (bx[0], by[0], bx[1], by[1])
        size = (int(rng.integers(32, 2000)), int(rng.integers(32, 2000)))
        left, top, right, bottom = crop_box(size, box, float(rng.uniform(0, 0.5)), zone)
        zl, zt, zr, zb = to_pixels(zone, size)
        assert zl <= left < right <= zr and zt <= top < bottom <= zb
        il, it, ir, ib = to_pixels(box, size)
        assert left <= il + 1 and top <= it + 1 and right >= ir - 1 and bottom >= ib - 1


def test_bad_margin_or_aspect() -> None:
    with pytest.raises(ValueError):
        crop_box(FRAME, FULL_FRAME, -0.1)
    with pytest.raises(ValueError):
        crop_box(FRAME, FULL_FRAME, 0.1, aspect=0)
    with pytest.raises(ValueError):
        crop_box(FRAME, FULL_FRAME, 0.1, stretch=0.5)


def test_pixels_and_fractions_round_trip() -> None:
    assert to_pixels(FULL_FRAME, FRAME) == (0, 0, 640, 480)
    assert to_normalised((160, 120, 320, 240), FRAME) == (0.25, 0.25, 0.5, 0.5)
    assert to_pixels((0.5, 0.5, 0.5, 0.5), FRAME) == (320, 240, 321, 241)  # never empty


@pytest.mark.parametrize(
    "values, problem",
    [
        ([0.0, 0.0, 1.0, 1.0], None),
        ([0.1, 0.2, 0.9, 0.8], None),
        ([0.0, 0.0, 1.0], "expected [x0, y0, x1, y1]"),
        ([0.0, -0.1, 1.0, 1.0], "every value is a fraction"),
        ([0.6, 0.0, 0.4, 1.0], "x1 must exceed x0"),
        ([0.0, 0.0, 1.0, 0.01], "x1 must exceed x0 and y1 must exceed y0 by at least 0.05"),
    ],
)
def test_box_problem(values, problem) -> None:
    found = box_problem(values)
    assert found == problem if problem is None else found.startswith(problem)
