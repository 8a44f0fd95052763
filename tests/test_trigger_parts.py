"""The motion trigger's block arithmetic against plain reference implementations: the
shortcuts that make the frame an item fires on cheaper (flat-index sampling, the first
fit step taken on the background itself, groups found by label jumping) must give the
same values, to the bit, as the straightforward way."""

from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bin_agent.triggers import motion


def groups_by_search(mask: np.ndarray, gap: int) -> list[np.ndarray]:
    """Breadth-first search: blocks at most ``gap`` unchanged blocks apart (a square of
    reach ``gap + 1``) are of one group; largest first, then by their last block in
    reading order (the order ``_groups`` promises for groups of one size)."""
    rows, cols = mask.shape
    group_of = np.full(mask.shape, -1)
    found: list[np.ndarray] = []
    reach = gap + 1
    for start in zip(*np.nonzero(mask), strict=True):
        if group_of[start] >= 0:
            continue
        group = np.zeros(mask.shape, bool)
        queue = deque([start])
        group_of[start] = len(found)
        while queue:
            y, x = queue.popleft()
            group[y, x] = True
            for ny in range(max(0, y - reach), min(rows, y + reach + 1)):
                for nx in range(max(0, x - reach), min(cols, x + reach + 1)):
                    if mask[ny, nx] and group_of[ny, nx] < 0:
                        group_of[ny, nx] = len(found)
                        queue.append((ny, nx))
        found.append(group)
    last = [int(np.flatnonzero(group.ravel())[-1]) for group in found]
    order = sorted(range(len(found)), key=lambda k: (-int(found[k].sum()), last[k]))
    return [found[k] for k in order]


@settings(max_examples=150, deadline=None)
@given(
    mask=arrays(bool, st.tuples(st.integers(1, 14), st.integers(1, 18)), elements=st.booleans()),
    gap=st.sampled_from([0, 1, 2, 4]),
)
def test_groups_are_the_chains_of_blocks_within_the_gap_largest_first(mask: np.ndarray, gap: int) -> None:
    got = motion._groups(mask, gap)
    want = groups_by_search(mask, gap)
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert np.array_equal(mine, theirs)


def test_a_long_winding_chain_is_one_group() -> None:
    """A snake across the view (the longest way a label has to travel): one group."""
    mask = np.zeros((15, 40), bool)
    for row in range(0, 15, 2):
        mask[row, :] = True
        mask[row + 1 if row + 1 < 15 else row, 0 if row % 4 else 39] = True
    groups = motion._groups(mask, 0)
    assert len(groups) == 1 and np.array_equal(groups[0], mask)


def sample_by_hand(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear sampling one point at a time, in the same float32 steps: the nearest block
    at or before the point (clamped to the view, the last pair of blocks for a point at or
    beyond the last block), its right and lower neighbours, weighted by the point's
    fractions."""
    rows, cols = image.shape
    out = np.empty(xs.shape, np.float32)
    for index in np.ndindex(xs.shape):
        x = min(max(float(xs[index]), 0.0), cols - 1.0)
        y = min(max(float(ys[index]), 0.0), rows - 1.0)
        left = min(int(x), cols - 2) if cols > 1 else 0
        up = min(int(y), rows - 2) if rows > 1 else 0
        right, down = min(left + 1, cols - 1), min(up + 1, rows - 1)
        fx, fy = np.float32(x - left), np.float32(y - up)
        one = np.float32(1)
        top = image[up, left] * (one - fx) + image[up, right] * fx
        bottom = image[down, left] * (one - fx) + image[down, right] * fx
        out[index] = top * (one - fy) + bottom * fy
    return out


@settings(max_examples=100, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_the_floor_is_sampled_bilinearly_to_the_bit_and_beyond_its_edge_as_its_edge(
    rows: int, cols: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (rows, cols)).astype(np.float32)
    xs = rng.uniform(-3, cols + 2, (rows, cols))
    ys = rng.uniform(-3, rows + 2, (rows, cols))
    got = motion._sample(image, xs, ys)
    assert got.dtype == np.float32
    assert np.array_equal(got, sample_by_hand(image, xs, ys))
    # At the blocks themselves the image comes back as it is: the floor fit's first step.
    grid_xs, grid_ys, _, _ = motion._block_grid(rows, cols)
    assert np.array_equal(motion._sample(image, grid_xs + 0.0 * grid_xs, grid_ys), image)


def textured_floor(rows: int = 60, cols: int = 80, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 200, (rows // 6 + 2, cols // 6 + 2)).astype(np.float32)
    grid_xs, grid_ys, _, _ = motion._block_grid(rows, cols)
    return motion._sample(coarse, grid_xs / 6.0, grid_ys / 6.0).astype(np.float32)


THRESHOLD = 4.0


def only_the_item_is_left(floor: np.ndarray, scene: np.ndarray, item: tuple[slice, slice], share: float) -> int:
    """Fit ``floor`` to ``scene``: every block of the ``item`` still differs beyond the
    threshold, and at most ``share`` of the others; returns how many others do."""
    threshold = np.full(floor.shape, THRESHOLD, np.float32)
    moved = motion._floor_where_it_lies(floor, scene, threshold)
    assert moved is not None
    left = np.abs(scene - moved) > threshold
    assert left[item].all(), "the item is what is left"
    left[item] = False
    assert np.count_nonzero(left) <= share * left.size, np.count_nonzero(left)
    return int(np.count_nonzero(left))


def test_a_floor_moved_by_a_fraction_of_a_block_is_found_where_it_lies() -> None:
    """A tray home 0.7 block right and 0.4 up, turned a little: the fitted floor matches the
    scene within its noise, and an item on it is left over, not fitted away."""
    floor = textured_floor()
    rows, cols = floor.shape
    grid_xs, grid_ys, u, v = motion._block_grid(rows, cols)
    scene = motion._sample(floor, grid_xs + 0.7 + 0.05 * v, grid_ys - 0.4 - 0.05 * u)
    scene[20:30, 30:42] += 60.0  # an item lying there
    # Bilinear resampling twice is not exact along the texture's steepest edges: a few blocks.
    left = only_the_item_is_left(floor, scene, (slice(20, 30), slice(30, 42)), share=0.02)
    # Without the move, the floor as it was differs from the scene in far more blocks.
    assert np.count_nonzero(np.abs(scene - floor) > THRESHOLD) > 10 * max(1, left)


def test_a_floor_that_stayed_put_is_found_where_it_was() -> None:
    floor = textured_floor()
    scene = floor.copy()
    scene[10:20, 10:20] += 50.0
    only_the_item_is_left(floor, scene, (slice(10, 20), slice(10, 20)), share=0.01)
