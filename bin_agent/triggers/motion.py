"""The motion trigger: the camera sees an item arrive in the drop zone and lie still."""

from __future__ import annotations

import functools
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


class _ZoneBlocks:
    """The ``factor`` x ``factor`` block means (``float32``) of the drop zone of
    ``uint8`` frames of one size. Averaging 16 pixels cuts sensor noise by 4x;
    edge rows and columns that do not fill a whole block are left out.

    Only the zone's pixels are summed (the blocks are those of the whole frame:
    the zone is cut at block edges), into integer buffers made once, since an
    idle bin does this for every frame. The rows of a block are summed by
    one reduction over the lines of each block row (memory read in order),
    the columns by ``factor`` strided adds: numpy's reduction over the two
    block axes of a reshaped array walks memory in small steps and took 10x
    longer at 320x240. Integer sums are exact in any order, and the one
    scaling to ``float32`` is exact too, so the means are the same whichever
    way they are summed.
    """

    def __init__(self, factor: int, rows: slice, cols: slice) -> None:
        self.factor = factor
        self._window = (slice(rows.start * factor, rows.stop * factor), slice(cols.start * factor, cols.stop * factor))
        height, width = rows.stop - rows.start, cols.stop - cols.start
        # 16-bit sums are exact up to 16x16 blocks (256 * 255 < 65536).
        dtype = np.uint16 if factor <= 16 else np.uint32
        self._row_sums = np.empty((height, width * factor), dtype)
        self._sums = np.empty((height, width), dtype)
        self._scale = np.float32(1.0 / (factor * factor))

    def __call__(self, lores: np.ndarray) -> np.ndarray:
        """A new ``float32`` array of the zone's block means (a new one each
        time: a frame may be kept as the reference of a still scene)."""
        window = lores[self._window]
        f = self.factor
        if f == 1:
            return window.astype(np.float32)
        lines = window.reshape(-1, f, window.shape[1])  # block row, line in the block, pixel
        row_sums, sums = self._row_sums, self._sums
        np.add.reduce(lines, axis=1, dtype=row_sums.dtype, out=row_sums)
        np.add(row_sums[:, 0::f], row_sums[:, 1::f], out=sums)
        for k in range(2, f):
            np.add(sums, row_sums[:, k::f], out=sums)
        return np.multiply(sums, self._scale, dtype=np.float32)


class _LightFit:
    """Weighted least squares ``ratio ~ a + b x + c y`` (``basis`` rows 1, x, y)
    on the blocks that ``weights`` (``bool``) selects.

    The normal equations depend on the blocks only, not on the frame: an idle
    bin fits on the same blocks frame after frame, so they are built once for
    a set of blocks and only the right-hand side is computed per frame.
    :meth:`solve` gives ``None`` when under a quarter of the blocks are
    selected or the system is singular.
    """

    def __init__(self, basis: np.ndarray, weights: np.ndarray) -> None:
        self.weights = weights
        self.count = int(np.count_nonzero(weights))
        self.usable = self.count >= weights.size // 4
        if not self.usable:
            return
        self._weighted = basis * weights
        # Python floats from here: a 3x3 system costs less by Cramer's rule on
        # lists than through numpy's per-call overhead (np.linalg.solve included).
        n: list[list[float]] = (self._weighted @ basis.T).tolist()
        self._n = n
        self._det = _det3(n)
        self.usable = abs(self._det) >= 1e-9 * max(1.0, abs(n[0][0])) ** 3
        # The 2x2 minors of Cramer's determinants that hold no right-hand side.
        self._minors = (
            n[1][1] * n[2][2] - n[1][2] * n[2][1],
            n[1][0] * n[2][2] - n[1][2] * n[2][0],
            n[1][0] * n[2][1] - n[1][1] * n[2][0],
        )

    def solve(self, ratio: np.ndarray) -> tuple[float, float, float] | None:
        if not self.usable:
            return None
        r0, r1, r2 = (self._weighted @ ratio).tolist()
        n, det, (m0, m1, m2) = self._n, self._det, self._minors
        # _det3 of n with column k replaced by r, written out (the same
        # products and sums in the same order: the same floats).
        d0 = r0 * m0 - n[0][1] * (r1 * n[2][2] - n[1][2] * r2) + n[0][2] * (r1 * n[2][1] - n[1][1] * r2)
        d1 = n[0][0] * (r1 * n[2][2] - n[1][2] * r2) - r0 * m1 + n[0][2] * (n[1][0] * r2 - r1 * n[2][0])
        d2 = n[0][0] * (n[1][1] * r2 - r1 * n[2][1]) - n[0][1] * (n[1][0] * r2 - r1 * n[2][0]) + r0 * m2
        return d0 / det, d1 / det, d2 / det


ROBUST_ROUNDS = 2
"""Rounds of :func:`_robust_plane`: the first keeps the blocks near the most common ratio,
the second those near the plane fitted on them (a light that really is uneven)."""

LEVEL_BIN = 0.02
"""Width of the bins (in natural log of the ratio: 2 %) in which :func:`_robust_plane` looks
for the most common ratio of frame to background: the floor's unchanged blocks agree to
about 1 % (a 4x4 block's noise on a dark floor), an item's spread over tens of per cent."""


_LOG_QUARTER = float(np.log(0.25))


def _common_level(ratio: np.ndarray) -> float:
    """The most common value of ``ratio`` (> 0) between the light's bounds (1/4 to 4, as
    the gain is clipped): the middle of the fullest :data:`LEVEL_BIN` in log ratio,
    counted with its two neighbours. The median when no ratio lies between them (a view
    that went dark or white)."""
    inside = ratio[(ratio > 0.25) & (ratio < 4.0)]
    if inside.size == 0:
        return float(np.median(ratio))
    counts = np.bincount(((np.log(inside) - _LOG_QUARTER) / LEVEL_BIN).astype(np.intp))
    smoothed = np.convolve(counts, np.ones(3, np.intp), mode="same")
    return float(np.exp(_LOG_QUARTER + (int(np.argmax(smoothed)) + 0.5) * LEVEL_BIN))


def _robust_plane(basis: np.ndarray, valid: np.ndarray, ratio: np.ndarray) -> tuple[float, float, float] | None:
    """The light plane of the blocks ``valid`` selects that agree with most of the view: it
    starts from their most common ratio of frame to background (:func:`_common_level`,
    even light) and, for :data:`ROBUST_ROUNDS`, keeps the blocks within 6x the lower
    quartile of their distances from the last plane (2 sigma of the floor's noise, as 3x
    the median would be, but the floor need only be a quarter of the view) and fits again
    on them. ``None`` when no round gives a plane.

    Started from a least-squares plane instead, a large bright item (a third of a dark
    bin's view, at twice the floor's brightness) pulls that plane up and tilts it towards
    itself, its median distance grows with it, and the cut that should leave the item out
    keeps nearly every block: the light is fitted to the item, the floor around it seen as
    changed, and the item's box is the whole view. From the median ratio, an item half the
    view (a board laid on the floor) still is: the median is then the item's. The floor's
    unchanged blocks agree closely, an item's ratios spread, so the most common ratio is
    the floor's while a quarter of the view or more shows it."""
    selected = ratio[valid]
    if selected.size == 0:
        return None
    a, b, c = _common_level(selected), 0.0, 0.0
    plane: tuple[float, float, float] | None = None
    for _ in range(ROBUST_ROUNDS):
        distance = np.abs(ratio - (a + b * basis[1] + c * basis[2]))
        cut = 6.0 * float(np.percentile(distance[valid], 25)) + 1e-3
        fitted = _LightFit(basis, valid & (distance <= cut)).solve(ratio)
        if fitted is None:
            break
        plane = a, b, c = fitted
    return plane


def _det3(m: list[list[float]]) -> float:
    return (
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    )


@functools.lru_cache(maxsize=4)
def _edge_padding(shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices that pad an array of ``shape`` by one element on each
    side with a copy of its edge (``np.pad``'s ``"edge"``), for ``take``."""
    rows = np.clip(np.arange(-1, shape[0] + 1), 0, shape[0] - 1)
    cols = np.clip(np.arange(-1, shape[1] + 1), 0, shape[1] - 1)
    return rows[:, None] * shape[1] + cols[None, :]


def _box3x3(image: np.ndarray) -> np.ndarray:
    """Mean of each element's 3x3 neighbourhood (edges: the neighbours that exist)."""
    # One take pads the edges: np.pad cost 15 us of Python per call here.
    padded = image.take(_edge_padding(image.shape))
    rows = padded[:-2] + padded[1:-1]
    rows += padded[2:]
    out = rows[:, :-2] + rows[:, 1:-1]
    out += rows[:, 2:]
    out *= np.float32(1.0 / 9.0)
    return out


def _median(values: np.ndarray) -> np.floating[Any]:
    """``np.median`` of a finite ``float32`` array, the same float: the middle
    one or two values by one partition, without np.median's 20 us of Python."""
    flat = values.ravel()
    half = flat.size // 2
    if flat.size % 2:
        return np.partition(flat, half)[half]
    part = np.partition(flat, (half - 1, half))
    # np.median's mean of the two: their float32 sum, halved.
    return (part[half - 1] + part[half]) / np.float32(2.0)


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


def _patches(mask: np.ndarray) -> np.ndarray:
    """The changed blocks of ``mask`` that belong to a patch: within one block of a
    changed 3x3 square (:func:`_open3x3` grown by one block, within ``mask``). A faint
    item keeps its ragged edge; thin lines of changed blocks, with no square, go."""
    return mask & _grow3x3(_open3x3(mask))


def _clustered(mask: np.ndarray) -> np.ndarray:
    """The blocks of ``mask`` with at least two of their eight neighbours in ``mask`` (none
    beyond the edge): an item's blocks, also a thin item's (a line has two), without the
    single blocks and pairs that noise scatters over a view."""
    h, w = mask.shape
    neighbours = np.zeros((h, w), np.uint8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                neighbours[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] += mask[
                    max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
                ]
    return mask & (neighbours >= 2)


def _grow3x3(mask: np.ndarray) -> np.ndarray:
    """``mask`` and every block next to one of its blocks (dilation with a 3x3 square)."""
    h, w = mask.shape
    grown = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] |= mask[
                max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
    return grown


def _grow(mask: np.ndarray, blocks: int) -> np.ndarray:
    """``mask`` grown by ``blocks`` blocks every way (a square of side ``2 blocks + 1``)."""
    for _ in range(blocks):
        mask = _grow3x3(mask)
    return mask


def _any(mask: np.ndarray) -> np.ndarray | None:
    """``mask``, or ``None`` when no block is set."""
    return mask if mask.any() else None


def _max_within(values: np.ndarray, reach: int) -> np.ndarray:
    """The largest of ``values`` within ``reach`` blocks of each block (a square window;
    rows, then columns: the square is separable)."""
    h, w = values.shape
    rows = values.copy()
    for d in range(1, min(reach, h - 1) + 1):
        np.maximum(rows[d:], values[:-d], out=rows[d:])
        np.maximum(rows[:-d], values[d:], out=rows[:-d])
    out = rows.copy()
    for d in range(1, min(reach, w - 1) + 1):
        np.maximum(out[:, d:], rows[:, :-d], out=out[:, d:])
        np.maximum(out[:, :-d], rows[:, d:], out=out[:, :-d])
    return out


def _groups(mask: np.ndarray, gap: int) -> list[np.ndarray]:
    """The blocks of ``mask`` in groups, largest first: two blocks are of one group when a
    chain of the mask's blocks joins them, each at most ``gap`` unchanged blocks from the
    next (``gap`` 0: 8-connected). Labels spread over the chains to their largest."""
    count = int(np.count_nonzero(mask))
    if count == 0:
        return []
    labels = np.zeros(mask.shape, np.int32)
    labels[mask] = np.arange(1, count + 1, dtype=np.int32)
    while True:
        spread = np.where(mask, _max_within(labels, gap + 1), 0)
        # A label is the number of a block of the same group (the blocks numbered in
        # order): each block also takes the label that block holds now, so a large label
        # crosses an item in a few rounds, not one reach per round (on 20 dropped items and
        # two scenarios' sequences: 4 rounds, at most 5, where 7, up to 21, were needed).
        # The same end: each group's largest number on all its blocks.
        held = spread[mask]
        spread[mask] = np.maximum(held, held[held - 1])
        if np.array_equal(spread, labels):
            break
        labels = spread
    found, sizes = np.unique(labels[mask], return_counts=True)
    return [labels == found[k] for k in np.argsort(-sizes, kind="stable")]


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


def _sample(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``image`` at the (fractional) columns ``xs`` and rows ``ys``, bilinear;
    beyond the edge, the edge."""
    rows, cols = image.shape
    xs = np.clip(xs, 0.0, cols - 1.0)
    ys = np.clip(ys, 0.0, rows - 1.0)
    x0 = np.minimum(xs.astype(np.intp), cols - 2) if cols > 1 else np.zeros(xs.shape, np.intp)
    y0 = np.minimum(ys.astype(np.intp), rows - 2) if rows > 1 else np.zeros(ys.shape, np.intp)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    x1, y1 = np.minimum(x0 + 1, cols - 1), np.minimum(y0 + 1, rows - 1)
    # The four neighbours by flat index (take): the same values as image[y, x] in about
    # 0.63 of the time (75 against 120 us on 80x60 blocks here); the floor fit samples
    # two to six times on every still scene the trigger judges.
    flat = image.ravel()
    upper, lower = y0 * cols, y1 * cols
    left_weight = 1 - fx
    top = flat.take(upper + x0) * left_weight + flat.take(upper + x1) * fx
    bottom = flat.take(lower + x0) * left_weight + flat.take(lower + x1) * fx
    out: np.ndarray = top * (1 - fy) + bottom * fy
    return out


@functools.cache
def _block_grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The blocks' columns and rows (``float32``), and the same centred and scaled to
    about +-1 (so the floor fit's six unknowns are of like size), for a view of ``rows``
    x ``cols`` blocks; made once per size (read-only: shared by every fit)."""
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    half = np.float32(max(rows, cols) / 2.0)
    u, v = (xs - (cols - 1) / 2.0) / half, (ys - (rows - 1) / 2.0) / half
    for array in (xs, ys, u, v):
        array.flags.writeable = False
    return xs, ys, u, v


FLOOR_SHIFT_BLOCKS = 2.0
"""The most the floor may have moved (blocks, at any point of the view: 8 px at
320x240) for :func:`_floor_where_it_lies` to find it: a tray a servo brought home a
fraction of a degree off, a camera nudged. Farther is a changed scene."""


FLOOR_SHARE = 0.5
"""A still scene that differs from the floor, moved where it fits best, over more than
this share of the view is not the floor come back (a tray held tilted, the camera
covered): the trigger does not take it for the empty bin, nor what differs for an item."""


def _floor_where_it_lies(background: np.ndarray, scene: np.ndarray, threshold: np.ndarray) -> np.ndarray | None:
    """The empty bin's ``background`` moved to where the floor lies in ``scene`` (both
    block means, gain-compensated), or ``None`` when no small move explains it.

    A tray that tilts to sort and comes back does not come back exactly (a servo's
    deadband and gear backlash): the floor the camera watches is off by a pixel or
    so and turned a little, and every edge of its texture differs from the
    background as if something new lay there. The move is fitted as an affine
    displacement of the view (shift, turn, scale, shear: six numbers) by
    Gauss-Newton on the block means, each block's residual weighted down beyond its
    ``threshold`` (Huber), so that an item lying there, which no move of the floor
    explains, barely pulls the fit."""
    rows, cols = background.shape
    if rows < 3 or cols < 3:
        return None
    xs, ys, u, v = _block_grid(rows, cols)
    params = np.zeros(6)  # dx, dy (blocks), and dx, dy per unit of u and of v
    for iteration in range(6):
        if iteration == 0:
            # Not moved yet: sampled at the blocks themselves, the background is itself
            # (weights 1 and 0, to the bit); one resampling less for every still scene.
            moved = background
        else:
            dx = params[0] + params[2] * u + params[3] * v
            dy = params[1] + params[4] * u + params[5] * v
            moved = _sample(background, xs + dx, ys + dy)
        gy, gx = np.gradient(moved)
        residual = scene - moved
        # Huber: full weight within the threshold, less beyond (an item, a shadow).
        weight = np.minimum(1.0, threshold / np.maximum(np.abs(residual), np.float32(1e-6)))
        jacobian = np.stack([gx, gy, gx * u, gx * v, gy * u, gy * v]).reshape(6, -1).astype(np.float64)
        weighted = jacobian * weight.ravel()
        normal = weighted @ jacobian.T
        if abs(np.linalg.det(normal)) < 1e-12 * max(1.0, float(np.trace(normal))) ** 6:
            return None  # a floor without texture: nothing to fit on (and nothing to fear)
        step = np.linalg.solve(normal, weighted @ residual.ravel().astype(np.float64))
        params += step
        if not np.all(np.isfinite(params)):
            return None
        if float(np.abs(step).max()) < 1e-3:
            break
    corners = np.abs(params[0]) + np.abs(params[2:4]).sum(), np.abs(params[1]) + np.abs(params[4:6]).sum()
    if max(corners) > FLOOR_SHIFT_BLOCKS:
        return None
    dx = params[0] + params[2] * u + params[3] * v
    dy = params[1] + params[4] * u + params[5] * v
    return _sample(background, xs + dx, ys + dy)


OUTLINE_FACTOR = 2.0
"""On a moved floor, a thin change (no 3x3 patch) still counts towards an item where it
differs by this many times the second look's threshold in a cluster: the outline of a
clear item (glass, clear plastic), not the thin lines that resampling the floor leaves
along its texture's edges (see :meth:`MotionTrigger._floor_moved_to`)."""


NOISE_SECONDS = 10.0
"""Time constant of the noise map's learning while the bin is empty."""

MIN_ENTRY_BLOCKS = 2
"""Changed blocks (at least; else ``min_area / 4`` of the view) that start a
look at what changed: one block alone is a noise spike more often than an item."""

MOTION_FACTOR = np.float32(1.5)
"""Motion compares two noisy frames, whose difference has sqrt(2) times one
frame's noise: the threshold times this (with a margin)."""

BOX_CONTRAST = 0.15
"""The item's box holds the blocks changed by at least this share of the
item's strong contrast (90th percentile of its changed blocks)."""

ITEM_GAP_BLOCKS = 4
"""A new change beside the items that fired (:meth:`MotionTrigger._new_item_beside`) is
looked at in groups parted by more than this many unchanged blocks (16 px at 320x240):
those of an item's area fire, together, as one item. A gap alone never parts items: one
item's changed blocks can lie far apart where its middle looks like the floor (a dark
bottle with a light label and cap on a dark floor; whole photos laid in the synthetic bin
were split into two items 15 times in 171 by a 4-block gap, docs/trigger.md), so what
comes to rest at once is one item."""

ARRIVAL_GAP_BLOCKS = 1
"""Groups of changed blocks with more than this many unchanged blocks between them (8 px)
are two items when one arrived after the other had come to rest: the second item of a
pair dropped 0.3-1 s after the first, beside it (:meth:`MotionTrigger._by_arrival`). The
parts of one item arrive together, also when it rolls or slides on."""

SMALL_ITEM_SHARE = 2.0 / 3.0
"""A still change smaller than an item's area (``min_area_in_force``) is still an item where
its largest patch has this share of the area or more and is clear in one frame
(:meth:`MotionTrigger._small_clear_item`): 5 blocks of the default 7.2 (a bottle cap, a
battery, a thin item seen in part, whose edge blocks the grid leaves faint). A crumb of 7x7 px
changes 4 blocks; with ``min_area`` 0.4 % (19.2 blocks) a 12x12 px crumb's 12 stay below."""

BESIDE_BLOCKS = 2
"""After firing, a new still change counts as a new item beside the ones that fired
only outside their blocks grown by this many blocks (their halo, their shadow, a
little settling)."""

BAND_MARKS_FLOOR = 1.0 / 16.0
"""A flicker band (a block row's median) is not taken out of a row where that would mark
more than this share of the row's blocks changed (5 of 80): there the median is an item's
that covers more than half the row, and the rest is the floor beside it (photos laid in the
validation bins were up to 90 % of the view wide: 8 floor blocks). A few blocks more or less
are a band's residue, and a row decided on them would come and go from look to look."""

FIT_STRIDE = 3
"""The light is fitted on every third block: as good a plane, a third of the work."""

LEARN_EVERY = 4
"""The background and the noise map learn from every fourth empty frame (with
the time of all four): they change over seconds, and learning is most of an
empty frame's cost."""

EVIDENCE_FACTOR = 0.5
"""The occupied scene is judged on a short running mean of the frames (each
new frame weighs half), whose noise is 0.58 times a frame's: threshold times this."""


class MotionTrigger:
    """Fires once per item dropped into view, from the low-res grayscale stream.

    Each ``frame.lores`` (``(h, w)`` ``uint8``, e.g. 320x240) is block-averaged
    down to at most ``max_width`` columns (4x4 blocks at 320x240), cut to the
    ``drop_zone`` (only what happens inside it counts; "the view" below means
    the zone) and compared with a background model of the **empty** bin.

    **The threshold follows the scene's noise.** While the bin is empty the
    trigger learns, per block, how much the frame wanders about the background
    by noise alone: the running mean absolute deviation (``noise_map``, grey
    levels; each frame's deviation is clipped at 3x the current estimate, so a
    spike or a passing crumb barely moves it). A block counts as *changed* when
    it differs from the background by ``noise_factor`` times its noise, but at
    least ``min_pixel_threshold`` and at most ``pixel_threshold`` grey levels
    (``threshold_map``). So in a dim bin under a noisy camera an item needs
    only the contrast that stands out of that bin's noise, and a dark item on a
    dark floor counts by its difference from the floor, not by its brightness.
    The area an item needs, ``min_area``, rises when noise alone keeps changing
    blocks of the empty bin (4x their running share, ``min_area_in_force``).

    Per frame it computes:

    * *gain*: the light against the background's, as a plane
      ``a + b x + c y`` fitted to frame / background over the blocks that
      were not changed in the previous frame (auto-exposure steps, a lid
      letting light in from one side, slow drift; see :meth:`_compensate`).
      The frame is divided by it before any comparison, so an even or evenly
      graded brightness change of any size is not "change"; ``stats["gain"]``
      is its value at the view's centre.
    * *changed fraction*: the share of blocks whose gain-compensated value
      differs from the background by more than their threshold.
    * *motion fraction*: the same share measured against a reference frame
      taken when the scene last stopped moving. Comparing with that reference
      rather than with the previous frame also catches slow creeping (an item
      rolling, paper unfolding).

    States (:attr:`state`), and what moves between them:

    ``"initialising"``
        The first ``init_frames`` frames are averaged into the background and
        give the first noise map. **The bin must be empty at start-up**; an
        item present then becomes part of the background and is not seen
        until it leaves (its leaving then looks like a new item; see
        ``absorb_seconds`` for the usual remedy).
    ``"empty"``
        Fewer than ``MIN_ENTRY_BLOCKS`` (or ``min_area / 4``) blocks changed.
        Only here do the background (time constant ``background_seconds``)
        and the noise map adapt, so slow non-uniform lighting drift is
        absorbed while nothing is in the bin.
    ``"settling"``
        Something changed, however little: the trigger takes a closer look.
        The changes of every still frame are summed; once the scene has not
        moved (motion fraction at most ``max_motion``, and at most a quarter
        of the changed blocks: a small item falling is moving) for ``settle_seconds``
        of frame time the decision is taken on their mean (**the second
        look**): ``n`` frames have ``sqrt(n)`` times less noise, so the
        threshold is divided by ``sqrt(n)`` and a dim item that flickered
        about its threshold frame by frame shows its whole area (against the
        floor where it lies now, if it moved a little and that explains a
        quarter of the change or more: a tray home a little off). If that area
        reaches ``min_area_in_force`` the trigger fires and moves to
        ``"occupied"``; so it does for a smaller patch of two thirds of that
        area or more that is clear, half its blocks changed by one frame's
        full threshold (a bottle cap, a thin item seen in part:
        :meth:`_small_clear_item`). If something is there but smaller, it is counted in
        :attr:`possible_items` (a crumb, or an item too faint to tell: what a
        dashboard shows as possible misses), taken into the background, and
        the state is ``"empty"`` again. If the scene returns to the
        background first (no changed block for 0.3 s: a hand waving through,
        a shadow passing, a bag shaken over the opening) it goes back to
        ``"empty"`` without firing.
    ``"occupied"``
        Fired for the item in view. Nothing more fires, however long the item
        stays or however it is nudged, until the changed fraction of the
        running mean of the last frames has stayed below ``clear_area`` for
        ``rearm_seconds`` (the item was removed or sorted away); then back to
        ``"empty"``. An item removed and another dropped therefore gives two
        events. A second item that comes to rest beside the first (a still
        change against the scene that fired, outside its blocks grown by
        ``BESIDE_BLOCKS``, of an item's area) fires again, with its own box
        only (:meth:`_new_item_beside`); one dropped onto the first, or that
        moves it, gives none (use :meth:`request`). Once per still scene that is not the empty bin
        the trigger also looks whether the floor itself moved a little (a tray
        the servo brought home a fraction of a degree off,
        :func:`_floor_where_it_lies`): if nothing compact (nor a clear item's
        strong rim) is left on the floor where it lies now, that floor is the empty
        bin and the trigger re-arms.
        After :meth:`item_taken_away` (the agent starts a sort that tilts the
        tray) what is left there fires, unless it is the item that fired, still
        where it lay.

    Behaviour worth knowing:

    * Anything that holds still, changed, for ``settle_seconds`` fires, a hand
      resting in view or covering the lens included: the trigger cannot tell
      a hand from an item. Global brightness changes beyond 4x (the gain is
      clamped to 0.25-4: lights failing, the camera covered) also count as
      change; so does a light step that is not uniform (a lamp lighting one
      side only) and lasts longer than ``settle_seconds``.
    * After ``absorb_seconds`` in ``"occupied"`` with a still scene, the scene
      is absorbed into the background and the trigger re-arms, so a stuck
      object, debris or a nudged camera cannot disable it for good. The old
      empty-bin background is remembered: when the scene later matches it
      again (the stuck item was taken out) that background is restored
      without an event. Set ``absorb_seconds=None`` to never absorb.
    * While the bin is empty and quiet (no block changed at the last look),
      only a frame every ``idle_look_seconds`` is looked at (an empty bin
      changes over seconds, and a frame not looked at is not even read).
      The skipped frames still count towards learning. Any changed block, and every state but ``"empty"``, brings back every
      frame; an item's first look comes at most ``idle_look_seconds`` later.
    * Time is ``frame.timestamp`` only, never the wall clock, so replayed and
      synthetic sequences behave exactly like live ones. Non-increasing
      timestamps are tolerated (treated as no time passing).
    * A change of ``lores`` size re-initialises the background and the noise map.
    * When it fires, :attr:`item_boxes` holds one box per item: the changed
      blocks of the second look in the parts that arrived apart (the second
      item of a pair dropped a moment after the first), each of an item's area
      (largest first; :meth:`_items_in`; two items that land at the same moment
      are one); each
      box is the bounding box of its blocks (the item and its shadow), as
      fractions of the full frame; stray changed blocks are removed first (a
      3x3 opening of the mask), so sensor noise does not stretch the box.

    The settings that the config holds (``[trigger]`` and ``[trigger.motion]``,
    where their defaults and meaning are documented) have no default here:
    build the trigger with :meth:`from_config`.

    :param pixel_threshold: the most grey levels (0-255) a block-averaged,
        gain-compensated block must differ by to count as changed, however
        noisy it is.
    :param noise_factor: a block is changed when it differs by this many times
        its learned noise (mean absolute deviation; about 0.8 sigma).
    :param min_pixel_threshold: the fewest grey levels that count as changed,
        however quiet the block (a noise-free replay, JPEG steps).
    :param min_area: fraction (0-1) of the view that must be changed for an
        item to be present (0.15 %: 8 blocks, a 12x12 px item in 320x240).
    :param max_motion: fraction of the view that may change against the
        reference frame while the scene still counts as "not moving". Must be
        below ``min_area``.
    :param settle_seconds: seconds (frame time) the changed scene must stay
        still before it is decided.
    :param rearm_seconds: seconds the scene must look empty before the trigger
        re-arms after firing.
    :param background_seconds: time constant, in seconds, of the background's
        adaptation while empty; longer absorbs less.
    :param absorb_seconds: seconds a fired, still scene may persist before it
        is absorbed into the background (see above), or ``None`` for never.
    :param idle_look_seconds: while the empty bin is quiet, the least frame
        time between two frames looked at (see above); 0 looks at every frame.
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
    :param noise_seconds: time constant of the noise map's learning. Default 10.
    """

    def __init__(
        self,
        *,
        pixel_threshold: float,
        noise_factor: float,
        min_pixel_threshold: float,
        min_area: float,
        max_motion: float,
        settle_seconds: float,
        rearm_seconds: float,
        background_seconds: float,
        absorb_seconds: float | None,
        idle_look_seconds: float,
        drop_zone: NormBox = FULL_FRAME,
        clear_area: float | None = None,
        init_frames: int = 5,
        max_width: int = 80,
        compensate_gain: bool = True,
        noise_seconds: float = NOISE_SECONDS,
    ) -> None:
        if clear_area is None:
            clear_area = min_area / 2
        if not 0 < pixel_threshold < 255:
            raise ValueError(f"pixel_threshold must be in (0, 255), got {pixel_threshold}")
        if not 0 < min_pixel_threshold <= pixel_threshold:
            raise ValueError(f"min_pixel_threshold must be in (0, pixel_threshold], got {min_pixel_threshold}")
        if not noise_factor > 0:
            raise ValueError(f"noise_factor must be > 0, got {noise_factor}")
        if not 0 < min_area <= 1:
            raise ValueError(f"min_area must be in (0, 1], got {min_area}")
        if not 0 < clear_area <= min_area:
            raise ValueError(f"clear_area must be in (0, min_area], got {clear_area}")
        if not 0 <= max_motion < min_area:
            raise ValueError(f"max_motion must be in [0, min_area), got {max_motion}")
        for name, value in (
            ("settle_seconds", settle_seconds),
            ("rearm_seconds", rearm_seconds),
            ("idle_look_seconds", idle_look_seconds),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if background_seconds <= 0:
            raise ValueError(f"background_seconds must be > 0, got {background_seconds}")
        if noise_seconds <= 0:
            raise ValueError(f"noise_seconds must be > 0, got {noise_seconds}")
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
        self.noise_factor = float(noise_factor)
        self.min_pixel_threshold = float(min_pixel_threshold)
        self.min_area = float(min_area)
        self.clear_area = float(clear_area)
        self.max_motion = float(max_motion)
        self.settle_seconds = float(settle_seconds)
        self.rearm_seconds = float(rearm_seconds)
        self.background_seconds = float(background_seconds)
        self.noise_seconds = float(noise_seconds)
        self.absorb_seconds = None if absorb_seconds is None else float(absorb_seconds)
        self.idle_look_seconds = float(idle_look_seconds)
        self.init_frames = int(init_frames)
        self.max_width = int(max_width)
        self.compensate_gain = bool(compensate_gain)
        self.drop_zone = drop_zone
        self.possible_items = 0
        """Changes that lay still for the settle time but were smaller than an
        item even on the second look (see ``"settling"``), since the trigger
        was built: possible items that were not classified."""

        self._request = Request()
        self._reset()

    @classmethod
    def from_config(cls, section: TriggerSection, drop_zone: NormBox = FULL_FRAME, **tuning: Any) -> MotionTrigger:
        """The trigger of a ``[trigger]`` section (``config.TriggerSection``):
        its ``settle_seconds`` and its ``motion`` table. ``tuning`` passes the
        settings the config does not hold (``clear_area``, ``init_frames``,
        ``max_width``, ``compensate_gain``, ``noise_seconds``), for tests and
        benchmarks."""
        motion = section.motion
        return cls(
            pixel_threshold=motion.pixel_threshold,
            noise_factor=motion.noise_factor,
            min_pixel_threshold=motion.min_pixel_threshold,
            min_area=motion.min_area,
            max_motion=motion.max_motion,
            settle_seconds=section.settle_seconds,
            rearm_seconds=motion.rearm_seconds,
            background_seconds=motion.background_seconds,
            absorb_seconds=motion.absorb_seconds or None,  # 0 in the config: never
            idle_look_seconds=motion.idle_look_seconds,
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
        self._item_boxes: tuple[NormBox, ...] = ()
        self._init_sum: np.ndarray | None = None
        self._init_squares: np.ndarray | None = None
        self._init_count = 0
        self._background: np.ndarray | None = None
        self._noise: np.ndarray | None = None
        self._threshold: np.ndarray | None = None
        # The blocks that count in the gain (bool, every FIT_STRIDE-th block):
        # not changed in the last frame, not near black.
        self._gain_weights: np.ndarray | None = None
        # The fit on the last weights, kept while the same array comes back.
        self._light_fit: _LightFit | None = None
        # _fit_sample of the background, until the background changes; the
        # last one's blocks above black, reused while they stay the same.
        self._sample: tuple[np.ndarray, np.ndarray] | None = None
        self._last_valid: np.ndarray | None = None
        self._blocks: _ZoneBlocks | None = None
        self._basis: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._basis_shape: tuple[int, ...] | None = None
        self._learn_dt = 0.0
        self._learn_count = 0
        # Share of the empty bin's blocks changed by noise alone (running mean).
        self._noise_area = 0.0
        # The empty-bin background saved when an item was absorbed.
        self._empty_background: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        # Settling: sum of the still frames' differences, and their number.
        self._evidence: np.ndarray | None = None
        self._evidence_frames = 0
        self._quiet_since: float | None = None
        # Settling: per block, the first frame time it differed from the empty bin (when
        # something arrived there; NaN: not yet) and the last one it moved (came to rest).
        self._arrived_at: np.ndarray | None = None
        self._rested_at: np.ndarray | None = None
        # Occupied: running mean of the differences (less noise than one frame).
        self._recent: np.ndarray | None = None
        # Occupied: the sorter is taking the item that fired away (item_taken_away),
        # and the still scene last looked at (when it became still).
        self._taken_away = False
        self._examined_since: float | None = None
        # What fired last: its changed blocks and their mean difference (second look).
        self._fired_seen: np.ndarray | None = None
        self._fired_mean: np.ndarray | None = None
        # Occupied: the blocks of the items that lie there (those that fired) and the still
        # scene they were last seen in (block means), to see a new item come to rest beside them.
        self._lying: np.ndarray | None = None
        self._lying_scene: np.ndarray | None = None
        self._still_since = 0.0
        self._occupied_since = 0.0
        self._empty_since: float | None = None
        self._last_t: float | None = None
        # Set after a look at a quiet empty bin: frames before it are not looked at.
        self._next_look: float | None = None
        self._changed = 0.0
        self._motion = 0.0
        self._gain = 1.0

    # -- public ------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"initialising"``, ``"empty"``, ``"settling"`` or ``"occupied"``."""
        return self._state

    @property
    def item_boxes(self) -> tuple[NormBox, ...]:
        """Where the items lie that the frame that last fired shows for the first time, as
        fractions ``(x0, y0, x1, y1)`` of the full frame, largest first: one box per item
        (two items dropped a moment apart give two); none when that frame showed nothing changed
        (a request with an empty zone)."""
        return self._item_boxes

    @property
    def stats(self) -> dict[str, float]:
        """Last frame's measurements, for tuning and status reports:
        ``changed`` and ``motion`` fractions (0-1), the global ``gain`` and
        ``min_area`` in force."""
        return {
            "changed": self._changed,
            "motion": self._motion,
            "gain": self._gain,
            "min_area": self.min_area_in_force,
        }

    @property
    def noise_map(self) -> np.ndarray | None:
        """The learned noise of the empty bin per block of the zone (grey
        levels, mean absolute deviation; rows x columns of blocks), or
        ``None`` while initialising."""
        return None if self._noise is None else self._noise.copy()

    @property
    def threshold_map(self) -> np.ndarray | None:
        """The change threshold in force per block of the zone (grey levels),
        or ``None`` while initialising."""
        return None if self._threshold is None else self._threshold.copy()

    @property
    def block_size(self) -> int:
        """Pixels of ``lores`` per side of a block."""
        return self._factor

    @property
    def min_area_in_force(self) -> float:
        """``min_area``, or more where noise alone changes blocks of the empty bin."""
        return max(self.min_area, 4.0 * self._noise_area)

    def request(self) -> None:
        """Make the next :meth:`update` return ``True``. If an item is
        currently settling it counts as handled (state ``"occupied"``), so the
        same item does not fire a second time when it settles."""
        self._request.set()

    def item_taken_away(self) -> None:
        """The sorter is taking the item that fired away and moves what the camera
        watches (the tray tilts, a flap opens): once the view is still again, what lies
        there is new (an item dropped as the tray came home fires), unless it is the
        item that fired, still where it lay. Nothing the move shows fires, also after a
        request that saw nothing (``"empty"``). Called by the main loop, between
        updates."""
        if self._state in ("empty", "settling"):
            self._state = "occupied"
            self._occupied_since = self._last_t if self._last_t is not None else 0.0
            self._empty_since = None
            self._recent = None
            self._fired_seen = self._fired_mean = None
            self._lying = self._lying_scene = None
            self._arrived_at = self._rested_at = None
            self._reference = None  # the still scene to look at starts after this
        if self._state == "occupied":
            self._taken_away = True

    def close(self) -> None:
        pass

    def update(self, frame: Frame) -> bool:
        """Feed one frame; ``True`` if it is the frame to classify."""
        fired = self._track(frame)
        if self._request.take():
            # Asked, not seen still: whatever changed is one region to classify.
            changed = [] if self._changed_mask is None else [self._changed_mask]
            if self._state == "settling":
                self._fire(frame.timestamp, changed)
            elif self._state != "occupied":
                self._item_boxes = ()
            else:
                self._item_boxes = self._boxes_of(changed)
            return True
        return fired

    # -- internals -----------------------------------------------------------

    def _fire(
        self,
        t: float,
        items: list[np.ndarray],
        seen: np.ndarray | None = None,
        mean: np.ndarray | None = None,
        scene: np.ndarray | None = None,
    ) -> None:
        """Fire for the items whose blocks ``items`` holds (one mask each, largest first);
        ``seen``, ``mean`` and ``scene``: the second look that saw them (its changed blocks,
        their mean difference and the still scene), to know them again."""
        self._state = "occupied"
        self._occupied_since = t
        self._empty_since = None
        self._recent = None
        self._taken_away = False
        self._fired_seen, self._fired_mean = seen, mean
        # When blocks arrived is known for a settling look only (a look from "occupied" has none).
        self._arrived_at = self._rested_at = None
        self._lying = _any(functools.reduce(np.logical_or, items)) if items else None
        self._lying_scene = scene
        # The still scene that fired is looked at: the next look is at the next one.
        self._examined_since = self._still_since
        self._item_boxes = self._boxes_of(items)

    def _boxes_of(self, items: list[np.ndarray]) -> tuple[NormBox, ...]:
        """The boxes of ``items`` (:meth:`_box_of_changes`), those that have one."""
        boxes = (self._box_of_changes(mask) for mask in items)
        return tuple(box for box in boxes if box is not None)

    def _items_in(self, seen: np.ndarray, mean: np.ndarray) -> list[np.ndarray]:
        """The separate items of the still change ``seen`` (mean difference ``mean``) that
        fires, largest first: its patch blocks (:func:`_clustered`) as the items that
        arrived apart (:meth:`_by_arrival`), each of an item's area (``min_area_in_force``);
        a smaller one is no item of its own (a crumb, a part of an item seen in pieces) and
        is in no box. What arrived together is one item, however far apart its blocks lie.
        Parts each smaller than an item that fired together are one item, all of it. Each
        item is its blocks of some contrast, not the faint halo of a low threshold (blocks
        its edge only touches, blur): :data:`BOX_CONTRAST` of its own strong contrast, so a
        faint item beside a strong one keeps its blocks."""
        strength = np.abs(mean)
        need = self.min_area_in_force * seen.size
        groups = [item for item in self._by_arrival(_clustered(seen)) if np.count_nonzero(item) >= need]
        if len(groups) <= 1:  # one item: all the blocks it changed
            groups = [seen]
        items = []
        for group in groups:
            strong = float(np.percentile(strength[group], 90))
            items.append(group & (strength >= np.float32(BOX_CONTRAST * strong)))
        return items

    def _box_of_changes(self, mask: np.ndarray | None) -> NormBox | None:
        """The bounding box of ``mask``'s changed blocks, as fractions of the
        full frame (see :attr:`item_boxes`)."""
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

    def _set_noise(self, noise: np.ndarray) -> None:
        """Take ``noise`` as the noise map and derive the thresholds from it.

        Each block's own estimate wanders (a running mean of some hundred
        frames is good to about 10 %), and a block whose estimate happens to
        be low would fire on its next spike; noise varies smoothly across the
        view (with the light), so the threshold takes the mean of each block's
        3x3 neighbourhood, and no less than half the view's median."""
        self._noise = noise
        smooth = _box3x3(noise)
        floor = np.float32(0.5) * _median(smooth)
        factor = np.float32(self.noise_factor)
        threshold = smooth * factor
        # max(smooth, floor) * factor, clipped: rounding keeps the order of
        # products, so it is max(smooth * factor, floor * factor), and the
        # floor and the clip's lower bound are one maximum (np.clip's Python
        # costs more than a ufunc).
        low = max(floor * factor, np.float32(self.min_pixel_threshold))
        np.maximum(threshold, low, out=threshold)
        np.minimum(threshold, np.float32(self.pixel_threshold), out=threshold)
        self._threshold = threshold

    def _compensate(self, small: np.ndarray, background: np.ndarray, robust: bool = False) -> tuple[np.ndarray, float]:
        """The frame divided by its light against ``background``, and the gain
        at the view's centre.

        The light is fitted as a plane, ``gain(x, y) = a + b x + c y``, to the
        ratio of frame to background over every third block among those that
        were not changed in the last frame (weighted least squares: two small
        matrix products and a 3x3 solve). A plane and not one number: the
        light of a bin changes unevenly (a lid opening on one side, daylight
        moving across), and a threshold set by the noise would see the uneven
        part as change. An item, a few per cent of the view and excluded once
        it lies still, does not move the fit. ``robust``: for a frame where
        something new came into view, fit on the blocks that agree with what
        most of the view says (:func:`_robust_plane`), not on all of them.
        """
        if not self.compensate_gain:
            return small, 1.0
        basis, x, y = self._plane_basis(small.shape)
        floor, valid = self._fit_sample(background)
        weights = self._gain_weights
        fit = None if weights is None or weights.shape != valid.shape else self._fit_on(basis, weights)
        if fit is None or fit.count < valid.size // 4:
            # Most of the view changed (a shadow over the bin, a light step
            # the last frame could not fit): fit on all of it, robustly.
            fit = self._fit_on(basis, valid)
            robust = True
        ratio = small.ravel()[::FIT_STRIDE] / floor
        plane = fit.solve(ratio)
        if plane is not None and robust:
            plane = _robust_plane(basis, valid, ratio) or plane
        if plane is None:
            return small, 1.0
        a, b, c = plane
        centre = float(min(max(a, 0.25), 4.0))
        if abs(b) < 1e-3 and abs(c) < 1e-3:  # even light: one division
            return (small / np.float32(centre) if centre != 1.0 else small), centre
        # a + b x over a row plus c y down a column: the same float32 sums as
        # over every block, with one pass over the view instead of three.
        gain = (np.float32(a) + np.float32(b) * x) + np.float32(c) * y
        np.maximum(gain, np.float32(0.25), out=gain)  # np.clip, for less Python
        np.minimum(gain, np.float32(4.0), out=gain)
        return small / gain, centre

    def _fit_on(self, basis: np.ndarray, weights: np.ndarray) -> _LightFit:
        """The light fit on ``weights``' blocks: the last one while the same
        array comes back (an idle bin's, see :meth:`_track`; weight arrays are
        never changed in place)."""
        if self._light_fit is None or self._light_fit.weights is not weights:
            self._light_fit = _LightFit(basis, weights)
        return self._light_fit

    def _fit_sample(self, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every ``FIT_STRIDE``-th block of ``background``: at least 1 (the
        divisor of the ratio), and whether above 8 grey levels (near-black
        blocks tell nothing of the light). Kept for the trigger's background
        until it changes (:meth:`_background_changed`), which is once in
        ``LEARN_EVERY`` frames while idle."""
        if background is self._background and self._sample is not None:
            return self._sample
        blocks = background.ravel()[::FIT_STRIDE]
        floor, valid = np.maximum(blocks, np.float32(1.0)), blocks > 8.0
        if background is self._background:
            # The same blocks above black as before (the usual case: learning
            # moves the background by a fraction of a grey level): the same
            # array, so the fit on them is kept.
            last = self._last_valid
            if last is not None and last.shape == valid.shape and np.array_equal(last, valid):
                valid = last
            self._sample, self._last_valid = (floor, valid), valid
        return floor, valid

    def _set_background(self, background: np.ndarray) -> None:
        self._background = background
        self._background_changed()

    def _background_changed(self) -> None:
        """Forget what was derived from the background: call after every change to it."""
        self._sample = None

    def _plane_basis(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(3, n)`` 1, x and y of every ``FIT_STRIDE``-th block, and x (-1 to
        1 across the view) of a row of blocks and y (-1 to 1 down it) of a column."""
        if self._basis is None or self._basis_shape != shape:
            y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
            x = 2 * x / max(shape[1] - 1, 1) - 1
            y = 2 * y / max(shape[0] - 1, 1) - 1
            xs, ys = x.ravel()[::FIT_STRIDE], y.ravel()[::FIT_STRIDE]
            self._basis = (np.stack([np.ones(xs.size, np.float32), xs, ys]), x[:1].copy(), y[:, :1].copy())
            self._basis_shape = shape
        return self._basis

    def _changed_fraction(self, small: np.ndarray, background: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(changed fraction, gain-compensated frame, changed mask) against ``background``."""
        comp, _ = self._compensate(small, background)
        assert self._threshold is not None
        mask = np.abs(comp - background) > self._threshold
        return float(np.count_nonzero(mask)) / small.size, comp, mask

    def _track(self, frame: Frame) -> bool:
        t = float(frame.timestamp)
        next_look = self._next_look
        if (
            next_look is not None
            and self._last_t is not None
            and self._last_t <= t < next_look - TIME_TOLERANCE_SECONDS
        ):
            # The empty bin was quiet at the last look: this frame is not even read (a size
            # change waits for the next look). A clock that went back is looked at.
            # It counts towards the next learning all the same: the empty bin is learnt
            # from as many frames a second as when every frame is looked at.
            self._learn_count += 1
            return False
        self._next_look = None
        lores = np.asarray(frame.lores)
        if lores.ndim != 2:
            raise ValueError(f"frame.lores must be 2-D grayscale, got shape {lores.shape}")

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
            self._blocks = _ZoneBlocks(self._factor, self._rows, self._cols)
        assert self._blocks is not None
        small = self._blocks(lores)

        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t

        if self._state == "initialising":
            self._initialise(small)
            return False

        background = self._background
        assert background is not None and self._threshold is not None
        comp, self._gain = self._compensate(small, background)
        diff = comp - background
        absdiff = np.abs(diff)
        mask = absdiff > self._threshold
        changed_blocks = int(np.count_nonzero(mask))
        weights = self._gain_weights
        # With no block changed, no block of the fit did: nothing to refit.
        if changed_blocks and self.compensate_gain and weights is not None:
            # Something new in view (an item arriving) was in the fit and
            # pulled the light towards it: fit again without it.
            if np.count_nonzero(weights & mask.ravel()[::FIT_STRIDE]) > max(2, weights.size // 100):
                comp, self._gain = self._compensate(small, background, robust=True)
                diff = comp - background
                absdiff = np.abs(diff)
                mask = absdiff > self._threshold
                changed_blocks = int(np.count_nonzero(mask))
        self._changed = changed_blocks / small.size
        self._changed_mask = mask
        if self.compensate_gain:
            valid = self._fit_sample(background)[1]
            # An idle bin changes no block: the next fit is on the same array
            # as this one, and its normal equations are kept (_fit_on).
            self._gain_weights = valid & ~mask.ravel()[::FIT_STRIDE] if changed_blocks else valid

        if self._state == "empty":
            if changed_blocks >= max(MIN_ENTRY_BLOCKS, self.min_area_in_force * small.size / 4):
                self._state = "settling"
                self._start_look(comp, t)
                self._arrived_at = np.where(mask, t, np.nan)
                return False
            self._motion = 0.0
            self._learn_empty(small, absdiff, dt)
            if not changed_blocks and self.idle_look_seconds > 0.0:
                self._next_look = t + self.idle_look_seconds
            return False

        # Stillness: compare against the frame at which the scene last stopped.
        if self._reference is None:
            moved, moving = 1.0, True
        else:
            # Two noisy frames differ by sqrt(2) times one frame's noise.
            moved_mask = np.abs(comp - self._reference) > self._threshold * MOTION_FACTOR
            moved_blocks = int(np.count_nonzero(moved_mask))
            moved = moved_blocks / small.size
            if self._state == "settling" and self._rested_at is not None and self._arrived_at is not None:
                self._rested_at[moved_mask] = t
                self._arrived_at[mask & np.isnan(self._arrived_at)] = t
            # A small item falling moves fewer blocks than max_motion of the
            # view: measured against its own size it is moving.
            moving = moved > self.max_motion or moved_blocks > max(MIN_ENTRY_BLOCKS, changed_blocks // 4)
        self._motion = moved
        if moving:
            self._reference = comp
            self._still_since = t
        still = self._reference is not None and _has_lasted(self._still_since, t, self.settle_seconds)

        if self._empty_background is not None and self._matches_empty(small):
            return False

        if self._state == "settling":
            return self._settle(diff, changed_blocks, moving, still, t)

        # occupied: judged on a running mean of the differences (a dim item
        # that flickers about its threshold must not look gone for a moment).
        self._gather(diff, moving)
        # Each difference is clipped at twice the threshold first, so a
        # high-contrast item taken out is gone from the mean in three frames.
        limit = self._threshold * np.float32(2.0)
        clipped = np.clip(diff, -limit, limit)
        if self._recent is None:
            self._recent = clipped
        else:
            self._recent += np.float32(0.5) * (clipped - self._recent)
        recent = np.abs(self._recent) > self._threshold * np.float32(EVIDENCE_FACTOR)
        if float(np.count_nonzero(recent)) / small.size < self.clear_area_in_force:
            if self._empty_since is None:
                self._empty_since = t
            if _has_lasted(self._empty_since, t, self.rearm_seconds):
                self._state = "empty"
                self._empty_since = None
                self._taken_away = False
            return False
        self._empty_since = None
        if still and self._examined_since != self._still_since:
            # Once per still scene: is it the floor, back a little off, and what lies on it?
            self._examined_since = self._still_since
            if self._look_at_the_floor(t):
                return True
            if self._state != "occupied":
                return False
            if self._only_the_light_is_left():
                return False
            if self._new_item_beside(t):
                return True
        if self.absorb_seconds is not None and still and _has_lasted(self._occupied_since, t, self.absorb_seconds):
            log.info(
                "scene unchanged for %.0f s with an item in view: absorbing it into the background and re-arming",
                t - self._occupied_since,
            )
            if self._empty_background is None:
                self._empty_background = background.copy()
            # The mean of the still frames, not one noisy frame: the noise of a
            # frame taken as background would add to every later comparison.
            assert self._evidence is not None
            self._set_background(background + self._evidence / np.float32(self._evidence_frames))
            self._gain_weights = None
            self._state = "empty"
        return False

    @property
    def clear_area_in_force(self) -> float:
        """``clear_area``, raised in proportion when ``min_area_in_force`` is."""
        return self.clear_area * self.min_area_in_force / self.min_area

    def _initialise(self, small: np.ndarray) -> None:
        """Average the first frames into the background; their spread is the first noise map."""
        if self._init_sum is None or self._init_squares is None:
            self._init_sum = small.astype(np.float64)
            self._init_squares = np.square(small, dtype=np.float64)
        else:
            self._init_sum += small
            self._init_squares += np.square(small, dtype=np.float64)
        self._init_count += 1
        if self._init_count < self.init_frames:
            return
        n = self._init_count
        mean = self._init_sum / n
        self._set_background(mean.astype(np.float32))
        if n > 1:
            spread = np.sqrt(np.maximum(self._init_squares / n - mean * mean, 0.0) * n / (n - 1))
            # Mean absolute deviation of a normal variable is 0.8 sigma. A few
            # frames give a rough, low-biased estimate per block: start no
            # lower than the view's median, with a margin of 1.5x, and let the
            # running estimate (time constant noise_seconds) refine it.
            noise = 0.8 * spread
            noise = (1.5 * np.maximum(noise, np.median(noise))).astype(np.float32)
        else:
            noise = np.full(small.shape, self.pixel_threshold / self.noise_factor, np.float32)
        self._set_noise(noise)
        self._init_sum = self._init_squares = None
        self._state = "empty"

    def _learn_empty(self, small: np.ndarray, absdiff: np.ndarray, dt: float) -> None:
        """Adapt the background and the noise map to the empty bin (every
        ``LEARN_EVERY``-th call, with the time of all)."""
        self._learn_dt += dt
        self._learn_count += 1
        if self._learn_count < LEARN_EVERY:
            return
        dt, self._learn_dt, self._learn_count = self._learn_dt, 0.0, 0
        background, noise = self._background, self._noise
        assert background is not None and noise is not None
        # Towards the raw frame, so the background follows the light and the gain drifts back to 1.
        alpha = min(1.0, dt / self.background_seconds)
        if alpha > 0.0:
            background += np.float32(alpha) * (small - background)
            self._background_changed()
        beta = min(1.0, dt / self.noise_seconds)
        if beta > 0.0:
            # Robust running mean absolute deviation: a deviation counts at
            # most 3x the current estimate (a spike moves it by little).
            clipped = np.minimum(absdiff, noise * np.float32(3.0))
            noise += np.float32(beta) * (clipped - noise)
            self._set_noise(noise)
            self._noise_area += beta * (self._changed - self._noise_area)

    def _start_look(self, comp: np.ndarray, t: float) -> None:
        # Settling starts now even if the scene was "still" before.
        self._reference = comp
        self._still_since = t
        self._rested_at = np.full(comp.shape, t)
        self._evidence = None
        self._evidence_frames = 0
        self._quiet_since = None

    def _gather(self, diff: np.ndarray, moving: bool) -> None:
        """Sum the differences of the frames since the scene last moved."""
        if moving or self._evidence is None:
            self._evidence = diff.copy()
            self._evidence_frames = 1
        else:
            self._evidence += diff
            self._evidence_frames += 1

    def _settle(self, diff: np.ndarray, changed_blocks: int, moving: bool, still: bool, t: float) -> bool:
        """One frame in ``"settling"``: gather evidence, decide once still (see the class doc)."""
        if changed_blocks == 0:
            # Nothing changed in this frame: a transient that left, or noise
            # that started the look. Back to empty once it stays so for 0.3 s.
            if self._quiet_since is None:
                self._quiet_since = t
            if _has_lasted(self._quiet_since, t, 0.3):
                self._state = "empty"
                return False
        else:
            self._quiet_since = None
        self._gather(diff, moving)
        if not still:
            return False
        assert self._threshold is not None and self._background is not None and self._evidence is not None
        mean, threshold, seen, scene = self._second_look()
        moved = self._floor_moved_to(scene, seen, threshold) if np.count_nonzero(seen) >= MIN_ENTRY_BLOCKS else None
        if moved is not None:
            # The floor itself moved (a tray home a little off): what changed is judged
            # against the floor where it lies now, which is the empty bin now.
            floor, mean, seen = moved
            self._set_background(floor)
        # An item is a patch: only changed blocks with changed neighbours count towards its
        # area. The second look's low threshold also finds blocks that the light's residual
        # or the noise of a few frames pushed over it, scattered over the view.
        patch = _clustered(seen)
        area = float(np.count_nonzero(patch)) / seen.size
        if area >= self.min_area_in_force:
            self._fire(t, self._items_in(seen, mean), seen, mean, scene)
            return True
        small = self._small_clear_item(patch, mean)
        if small is not None:
            self._fire(t, [seen & _grow3x3(small)], seen, mean, scene)
            return True
        if np.count_nonzero(patch) >= MIN_ENTRY_BLOCKS:
            self._possible_item(patch)
            # Take it into the background, or it would be counted again and again.
            self._background[seen] += mean[seen]
            self._background_changed()
        if moved is not None:
            # The mean of the still frames, not the resampled background: it is the
            # floor itself (resampling is not exact along the edges of its texture).
            self._set_background(scene)
            self._gain_weights = None
        self._state = "empty"
        return False

    def _small_clear_item(self, patch: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
        """The blocks of a small item in the still change ``patch`` (patch blocks of a second
        look whose mean difference is ``mean``) that is smaller than an item's area: its
        largest 8-connected group, where that has :data:`SMALL_ITEM_SHARE` of the area or
        more and half its blocks or more differ by the full threshold of one frame (not the
        second look's, ``sqrt(n)`` times lower); else ``None``.

        A bottle cap, a battery or a thin item seen in part changes 5-7 blocks of 4x4 px, and
        a clear one changes most of them by one frame's threshold, 2.6 times the second
        look's over 7 frames: the noise of a mean of still frames does not, and what the
        light leaves is spread thin, not a compact patch. A crumb changes 4 blocks or fewer,
        and a faint speck is a possible item, as before."""
        assert self._threshold is not None
        need = self.min_area_in_force * patch.size
        groups = _groups(patch, 0)
        if not groups:
            return None
        group = groups[0]
        count = int(np.count_nonzero(group))
        if count < SMALL_ITEM_SHARE * need:
            return None
        clear = int(np.count_nonzero(group & (np.abs(mean) > self._threshold)))
        if 2 * clear < count:
            return None
        log.info(
            "a small, clear change of %d block(s) lay still: an item (%d of them clear in one frame)", count, clear
        )
        return group

    def _second_look(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The still frames gathered since the scene settled, as one (the second look): their
        mean difference from the background, the threshold for that many frames (``sqrt(n)``
        less noise), the blocks it exceeds, and the scene they show. Flicker bands (a block
        row's median, where it stands out) are taken out of the mean first, except from the
        rows where that would mark the floor beside an item (:data:`BAND_MARKS_FLOOR`)."""
        assert self._threshold is not None and self._background is not None and self._evidence is not None
        frames = self._evidence_frames
        mean = self._evidence / np.float32(frames)
        threshold = np.maximum(self._threshold / np.float32(np.sqrt(frames)), self.min_pixel_threshold / 2)
        # An LED's ripple through a rolling shutter: bands across the whole width, rolling
        # slowly where mains and frame rate are not locked, which the plane does not follow
        # and the noise map learns only over seconds. A band is the median of its block
        # row (an item covers less than half of one); taken out where it stands out.
        bands = np.median(mean, axis=1, keepdims=True)
        if float(np.abs(bands).max()) > 0.5 * float(_median(threshold)):
            # Not from the rows where it would mark more blocks (BAND_MARKS_FLOOR of the
            # row): in a row that a large item covers more than half of (an item wider
            # than half the view), the median is the item's, and taking it out would mark
            # all the floor beside it. Everywhere else, as a band is: a row decided
            # differently on a few blocks' count would come and go from look to look
            # (weak bands, a view all changed), and the looks are compared.
            banded = mean - bands
            marks = np.count_nonzero(np.abs(banded) > threshold, axis=1) - np.count_nonzero(
                np.abs(mean) > threshold, axis=1
            )
            mean = np.where((marks > BAND_MARKS_FLOOR * mean.shape[1])[:, None], mean, banded)
        return mean, threshold, np.abs(mean) > threshold, self._background + mean

    def _possible_item(self, seen: np.ndarray) -> None:
        """Count a still change ``seen`` smaller than an item even on a second look."""
        self.possible_items += 1
        log.warning(
            "a change of %d block(s) lay still for %.1f s, below min_area (%d blocks) even on a second look: "
            "not classified (possible item %d)",
            int(np.count_nonzero(seen)),
            self.settle_seconds,
            int(np.ceil(self.min_area_in_force * seen.size)),
            self.possible_items,
        )

    def _floor_moved_to(
        self, scene: np.ndarray, seen: np.ndarray, threshold: np.ndarray, *, it_moved: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """If the floor moved a little (:func:`_floor_where_it_lies`) and that explains
        a quarter or more of the blocks ``seen`` changed in the still ``scene`` (a mean
        of still frames, changed beyond ``threshold``; ``it_moved``, the floor is known
        to have moved: unless it changes more blocks): the floor where it lies, the
        scene's difference from it and its blocks changed beyond ``threshold`` that
        belong to a patch (:func:`_patches`) or to a strong thin cluster
        (:data:`OUTLINE_FACTOR`). ``None``: the floor did not move, or its move explains
        little (an item lying on a floor that stayed put), or the scene is not the floor
        (:data:`FLOOR_SHARE`).

        Only patches count on a moved floor, and strong thin lines: the background moved
        by resampling its block means is not exact along the sharp edges of the floor's
        texture, and leaves faint thin lines of changed blocks there; an item is a patch,
        or a clear one a strong rim."""
        assert self._background is not None and self._threshold is not None
        floor = _floor_where_it_lies(self._background, scene, self._threshold)
        if floor is None:
            return None
        mean = scene - floor
        left = np.abs(mean) > threshold
        # Known to have moved, the floor is taken where the fit puts it unless that makes
        # things clearly worse (a fit pulled by an item): the rest is the item's noise.
        if np.count_nonzero(left) > (1.25 if it_moved else 0.75) * np.count_nonzero(seen):
            return None
        if np.count_nonzero(left) > FLOOR_SHARE * left.size:
            return None  # not the floor: the tray held tilted, the camera covered
        # A clear item shows only its outline, a thin line as the resampling's are, but a
        # strong one (2-4 times the threshold in the dim bin, 5-15 on the dark floor; the
        # resampling left no cluster beyond twice it on an empty tray, in 120 sorts of the
        # three scenarios). Counted as patches only, a clear item dropped as the tray came
        # home was too small to fire, was taken into the empty bin on re-arming, and its
        # ghost fired after a later sort.
        return floor, mean, _patches(left) | _clustered(np.abs(mean) > OUTLINE_FACTOR * threshold)

    def _look_at_the_floor(self, t: float) -> bool:
        """Occupied, the scene still for ``settle_seconds`` and not the empty bin: is it
        the floor come back a little off after the tray tilted? Then re-arm on it
        (``"empty"``), or, if the tray tipped the item off and something else lies
        there now (an item dropped as the tray came home), fire for that one. Returns
        whether it fired."""
        assert self._background is not None and self._threshold is not None and self._evidence is not None
        mean, threshold, seen, scene = self._second_look()
        moved = self._floor_moved_to(scene, seen, threshold, it_moved=self._taken_away)
        if moved is None:
            return False  # the item that fired still lies there, or the tray is still tilted
        floor, mean, seen = moved
        left = float(np.count_nonzero(seen)) / seen.size
        small = left < self.min_area_in_force
        if left < self.clear_area_in_force or (small and self._taken_away):
            log.info("the floor is back, a little off: re-arming on it")
            # The mean of the still frames, not the resampled background, is the floor
            # itself (resampling is not exact along the edges of its texture); but where
            # something small is left (a crumb, a faint item seen in part), the floor:
            # that is looked at as any change is (a second look, fired or counted as a
            # possible item), not taken into the empty bin unseen.
            self._set_background(np.where(_grow3x3(seen), floor, scene))
            self._gain_weights = None
            self._state = "empty"
            self._empty_since = None
            self._taken_away = False
            return False
        # The floor where it lies under what is left (and a block around), the mean of the
        # still frames elsewhere: the floor itself. The resampled floor everywhere blurred
        # the texture a little more at every sort that found an item on the tray (items
        # dropped as it comes home, sort after sort, never re-armed on the scene), until
        # its own edges fired after the last sort or looked like the item that fired (a
        # later item taken for it, and missed).
        self._set_background(np.where(_grow3x3(seen), floor, scene))
        self._gain_weights = None
        self._lying_scene = None  # the floor moved: what lies there is looked at anew from here
        if not self._taken_away or self._is_the_item_that_fired(seen, mean, threshold):
            # The item that fired, on a floor a little off (taken away: stuck on the
            # tray; it stays taken away, so something new beside it still fires).
            return False
        log.info("the floor moved and came back with something new on it")
        self._fire(t, self._items_in(seen, mean), seen, mean, scene)
        return True

    def _by_arrival(self, group: np.ndarray) -> list[np.ndarray]:
        """``group`` (the patch blocks of a still change) as the items that arrived apart
        in it: its parts parted by more than :data:`ARRIVAL_GAP_BLOCKS`,
        in the order they arrived; a part is a new item where three quarters of its blocks
        first changed after the parts before it had come to rest (the median of their
        blocks' last move) and stopped arriving (nine tenths of their blocks first changed),
        and joins them otherwise: the parts of one item arrive together, a rolling one's
        too (it covers new blocks until it rests). A faint part seen on the second look
        only came with the rest."""
        parts = _groups(group, ARRIVAL_GAP_BLOCKS)
        arrived_at, rested_at = self._arrived_at, self._rested_at
        if len(parts) == 1 or arrived_at is None or rested_at is None or arrived_at.shape != group.shape:
            return [group]
        timed = []
        for part in parts:
            arrived = arrived_at[part]
            arrived = arrived[~np.isnan(arrived)]
            # Seen on the second look only (too faint for one frame): it came with the rest.
            came = float(np.percentile(arrived, 25)) if arrived.size else -np.inf
            # Still arriving (a rolling item covers new blocks to its end) is not at rest.
            last = float(np.percentile(arrived, 90)) if arrived.size else -np.inf
            timed.append((came, max(float(np.median(rested_at[part])), last), part))
        timed.sort(key=lambda one: one[0])
        items = [timed[0][2].copy()]
        rested = timed[0][1]
        for came, rest, part in timed[1:]:
            if came > rested + TIME_TOLERANCE_SECONDS:
                items.append(part.copy())  # it came after what was there had come to rest
                rested = rest
            else:
                items[-1] |= part
                rested = max(rested, rest)
        return sorted(items, key=lambda item: -int(np.count_nonzero(item)))

    def _new_item_beside(self, t: float) -> bool:
        """Occupied, the scene still for ``settle_seconds``: has a new item come to rest
        beside the items that fired (a second one dropped a moment after the first)? Then
        fire for it, with its own box only.

        New is a still change against the still scene the items were last seen in, by the
        threshold in force (not the second look's: that scene is a mean of noisy frames
        too), in blocks that differ from the empty bin (the second look), outside the
        items' blocks grown by :data:`BESIDE_BLOCKS` (their halo and shadow), its groups
        (:data:`ITEM_GAP_BLOCKS`) of an item's area, fired as one item. Not new: a change where the items
        lie (a quarter of their blocks or more, :func:`_clustered`: they rolled or settled,
        a hand took them or rests there), which makes the still scene the one to compare
        with from now on. Light steps and drift are divided out before (the plane), flicker
        bands in the second look; what the light does unevenly is left to
        :meth:`_only_the_light_is_left` once the items are gone."""
        assert self._threshold is not None
        mean, _, seen, scene = self._second_look()
        lying, before = self._lying, self._lying_scene
        self._lying_scene = scene
        if before is None or before.shape != scene.shape:
            # Nothing to compare with (fired on request, the floor moved): from here on.
            if lying is None:
                self._lying = _any(_clustered(seen))
            return False
        against = np.abs(scene - before) > self._threshold
        if lying is not None:
            moved = np.count_nonzero(_clustered(against & lying))
            if 4 * moved >= np.count_nonzero(lying):
                log.debug("what lay there moved: %d of its %d blocks changed", moved, np.count_nonzero(lying))
                self._lying = _any(_clustered(seen))
                return False
            against &= ~_grow(lying, BESIDE_BLOCKS)
        need = self.min_area_in_force * seen.size
        new = [
            group for group in _groups(_clustered(against & seen), ITEM_GAP_BLOCKS) if np.count_nonzero(group) >= need
        ]
        if not new:
            return False
        strength = np.abs(scene - before)
        # What came to rest at once is one item, however far apart its blocks (ITEM_GAP_BLOCKS).
        item = functools.reduce(np.logical_or, new)
        items = [item & (strength >= np.float32(BOX_CONTRAST * float(np.percentile(strength[item], 90))))]
        log.info("a new item came to rest beside the %s that fired", "one" if lying is None else "items")
        self._fire(t, items, seen, mean, scene)
        if lying is not None and self._lying is not None:
            self._lying |= lying
        return True

    def _only_the_light_is_left(self) -> bool:
        """Occupied, the scene still for ``settle_seconds`` and not the empty bin to the
        running mean: if the item that fired no longer lies where it lay (its blocks differ
        from what fired by half its contrast or more) and the still frames differ from the
        empty bin by twice the threshold in fewer blocks than an item's area (no hand
        resting there, no item pushed aside: a strong change), what is left is the light,
        changed while the item lay there in a way the plane does not follow (daylight
        through a lid gap on one side, a cloud passing): the still scene is the empty bin
        now, and the trigger re-arms on it. Without this the trigger waited for
        ``absorb_seconds``, and missed every item meanwhile."""
        fired_seen, fired_mean = self._fired_seen, self._fired_mean
        if fired_seen is None or fired_mean is None or not fired_seen.any():
            return False
        assert self._threshold is not None
        mean, _, _, scene = self._second_look()
        if fired_seen.shape != mean.shape:
            return False
        strong = int(np.count_nonzero(np.abs(mean) > np.float32(2.0) * self._threshold))
        if strong >= self.min_area_in_force * mean.size:
            return False  # something is there: a hand resting, the item pushed aside
        was = fired_mean[fired_seen]
        if float(np.median(np.abs(mean[fired_seen] - was))) < 0.5 * float(np.median(np.abs(was))):
            return False  # the item that fired, still there (a faint one: no block over the threshold)
        log.info("the item is gone and the light changed unevenly while it lay there: re-arming on the bin as it is")
        self._set_background(scene)
        self._gain_weights = None
        self._state = "empty"
        self._empty_since = None
        self._taken_away = False
        return True

    def _is_the_item_that_fired(self, seen: np.ndarray, mean: np.ndarray, threshold: np.ndarray) -> bool:
        """Whether the change ``seen`` (mean difference ``mean``) is the item that fired
        last, still where it lay: most of its blocks, with about the same contrast (an
        item stuck on the tray, not a new one dropped on the same spot)."""
        fired_seen, fired_mean = self._fired_seen, self._fired_mean
        if fired_seen is None or fired_mean is None or fired_seen.shape != seen.shape:
            return False
        both = seen & fired_seen
        if 2 * np.count_nonzero(both) < max(np.count_nonzero(seen), np.count_nonzero(fired_seen)):
            return False
        return bool(np.median(np.abs(mean[both] - fired_mean[both]) / threshold[both]) < 2.0)

    def _matches_empty(self, small: np.ndarray) -> bool:
        """If the scene matches the empty bin saved before an absorb, restore
        that background, go to ``"empty"`` and return ``True``."""
        assert self._empty_background is not None
        changed, comp, _ = self._changed_fraction(small, self._empty_background)
        if changed >= self.clear_area_in_force:
            return False
        log.info("absorbed item gone: restoring the empty-bin background")
        # Saved under the old light: take this frame's light on it.
        self._set_background(self._empty_background * (small / np.maximum(comp, np.float32(1e-3))))
        self._gain_weights = None
        self._empty_background = None
        self._state = "empty"
        self._empty_since = None
        return True
