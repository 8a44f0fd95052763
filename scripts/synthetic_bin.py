"""Make "one particular bin" out of plain-board photos, to measure the learning loop.

Every photo (the board with its item) is laid on the same kind of scene: a
dark, ribbed plastic bin floor under a warm LED spot, seen by a cheap camera
(640x480, colour cast, under-exposure, sensor noise, JPEG 75), the board 55-75 %
of the frame high at a random place. The look is fixed, like one real bin; the
training augmentation's random backgrounds and camera effects only roughly
cover it.

    python scripts/synthetic_bin.py ../shared/data/trashnet --split models/waste_split.json \
        --subset test --out /tmp/exp/binsrc

Writes folder-per-class JPEGs (never commit them: they are TrashNet photos).

``--one-floor`` lays every photo on the *same* floor and light (one bin, as
``bin-agent run`` sees it: the motion trigger compares with the empty bin) and
writes that empty bin as ``empty.jpg`` beside the class folders (for
``camera.replay.empty_frame``); ``--flat`` writes ``<class>__<name>.jpg`` in
one folder, so an event's ``source`` names the true class.
With ``--sequence SCENARIO`` it writes instead the frames (320x240, 10 fps) of items cut
out of the photos and dropped one by one into a bin that is hard to see, with hands,
shadows, light drift and light steps between them, and ``truth.json`` (which frames each
item lies in), for ``scripts/trigger_scenarios.py`` (issue 25, ``docs/trigger.md``):

    python scripts/synthetic_bin.py ../shared/data/trashnet --split models/waste_split.json \
        --subset test --sequence dim-cheap --items 20 --out /tmp/exp/dim-cheap

``--removal tray`` takes each item away as the shipped sorter does instead of by a hand:
the tray the camera watches tilts, the item slides off, and the tray comes back a
fraction of a degree off (a hobby servo's deadband and backlash), wobbling; ``--pace
quick`` drops each item 0-1 s after the last one left (the hand gone, the tray still
after its wobble: 0.5-1.5 s after it is home), without transients
(:func:`make_sequence`). The hand's sequences stay the same, frame for frame.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from bin_agent.classify.preprocess import load_image
from bin_agent.errors import run_script
from bin_agent.training import dataset as ds

WIDTH, HEIGHT = 640, 480


def bin_floor(rng: np.random.Generator) -> np.ndarray:
    """The bin's floor: dark blue-grey plastic with ribs, a warm light spot, a vignette."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ribs = 0.5 + 0.5 * np.sin(x / 9.0 + rng.uniform(0, 6.28))
    base = np.array([52, 58, 66], np.float32) + 10 * ribs[..., None]
    cx, cy = WIDTH * rng.uniform(0.4, 0.6), HEIGHT * rng.uniform(0.35, 0.55)
    spot = np.exp(-(((x - cx) / 260) ** 2 + ((y - cy) / 200) ** 2))[..., None]
    floor = base * (0.55 + 0.8 * spot) + rng.normal(0, 3, (HEIGHT, WIDTH, 1))
    return floor


LED_CAST = np.array([1.1, 0.97, 0.8], np.float32)
"""The warm LED's colour: the red, green and blue gains of what it lights."""
REPO = Path(__file__).resolve().parent.parent


def light_on_item(under: np.ndarray) -> np.ndarray:
    """The LED's light on an item lying over ``under`` (the floor beneath it), per pixel:
    brighter under the spot, 0.5-1.2 of a white board's."""
    return np.clip(under.mean(axis=-1, keepdims=True) / 70.0, 0.5, 1.2)


def scaled_board(
    photo: np.ndarray, rng: np.random.Generator, heights: tuple[float, float] = (0.55, 0.75)
) -> np.ndarray:
    """The photo (its board and item) at the size it lies in the frame: ``heights`` (drawn)
    of the frame high, at most 95 % of it wide (a panorama-shaped photo is shrunk to fit)."""
    factor = min(rng.uniform(*heights) * HEIGHT / photo.shape[0], 0.95 * WIDTH / photo.shape[1])
    size = (round(photo.shape[1] * factor), round(photo.shape[0] * factor))
    return np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR))


def held_out_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of the scripts that lay held-out photos in this bin and classify them
    (``crop_shape.py``, ``bin_look_costs.py``)."""
    parser.add_argument("datasets", type=Path, nargs="+")
    parser.add_argument("--split", type=Path, default=REPO / "models" / "waste_split.json")
    parser.add_argument("--subset", default="val", choices=["val", "test"])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "waste_mobilenetv2_int8.tflite")
    parser.add_argument("--seed", type=int, default=7)


def camera(out: np.ndarray, rng: np.random.Generator, noisy: bool = True) -> np.ndarray:
    """The cheap camera: sensor noise, JPEG 75 (``noisy`` False: only the rounding to pixels)."""
    if noisy:
        out = out + rng.normal(0, 4.0, out.shape)
    pixels = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if not noisy:
        return pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def bin_photo(
    photo: np.ndarray, rng: np.random.Generator, floor: np.ndarray | None = None, cut: bool = False
) -> np.ndarray:
    """The photo as the bin's camera sees it: the board with its item lies on the bin's
    floor (``floor``, else a new one), 55-75 % of the frame high (at most 95 % wide), under the warm LED,
    through a cheap camera. ``cut``: only the item, cut out of its board (:func:`cut_out`) at
    the board's scale, lies on the floor, as an item lies in a real bin."""
    board = scaled_board(photo, rng)
    if cut:
        item, alpha = cut_out(board)
        tray, alpha = item.astype(np.float32), alpha[..., None]
    else:
        tray, alpha = board.astype(np.float32), np.ones((*board.shape[:2], 1), np.float32)
    height, width = tray.shape[:2]
    out = bin_floor(rng) if floor is None else floor.copy()
    x = int(rng.uniform(0, WIDTH - width))
    y = int(rng.uniform(0, HEIGHT - height))
    # The light falls on the tray too: warm cast, under-exposed, brighter under the spot.
    under = out[y : y + height, x : x + width]
    lit = tray * LED_CAST * light_on_item(under)
    out[y : y + height, x : x + width] = alpha * lit + (1 - alpha) * under
    return camera(out, rng)


def make_bin(
    items: list[ds.Item], out: Path, *, seed: int = 7, one_floor: bool = False, flat: bool = False, cut: bool = False
) -> int:
    """Write the bin's view of ``items`` under ``out`` (see the module doc); returns how many."""
    rng = np.random.default_rng(seed)
    floor = bin_floor(rng) if one_floor else None
    out.mkdir(parents=True, exist_ok=True)
    if floor is not None:
        Image.fromarray(camera(floor, rng)).save(out / "empty.jpg", quality=95)
    for item in items:
        made = bin_photo(load_image(item.path), rng, floor, cut)
        class_name, name = item.key.split("/", 1)
        target = out / f"{class_name}__{Path(name).stem}.jpg" if flat else (out / item.key).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(made).save(target, quality=95)
    return len(items)


# ---------------------------------------------------------------------------------------
# Frame sequences for the motion trigger (issue 25): items dropped into a bin that is hard
# to see, with the transients a bin sees, and the truth of what happened when.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """How a bin and its camera look. ``noise`` is the sensor noise (grey levels, 1 sigma)
    at a grey level of 64; it grows with the square root of the level (shot noise)."""

    floor: float = 1.0  # the floor's brightness, times the dark ribbed floor's
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the light's colour
    exposure: float = 1.0
    noise: float = 2.0
    blur: float = 0.0  # Gaussian blur radius in pixels of the 320x240 frame (soft lens)
    item_light: float = 0.8  # how much light falls on an item, times a white board's
    dark_items: bool = False  # only the darkest held-out photos
    jpeg: int = 90


SCENARIOS: dict[str, Look] = {
    # The dark, ribbed floor of the issue under a good camera.
    "dark-floor": Look(),
    # A dim bin under a cheap camera: warm LED cast, 75 % exposure, slight blur, 2.5x noise.
    "dim-cheap": Look(cast=(1.1, 0.97, 0.8), exposure=0.75, noise=5.0, blur=0.8, item_light=0.7, jpeg=80),
    # Dark items on a dark floor in the same dim bin.
    "dark-on-dark": Look(
        floor=0.8, cast=(1.1, 0.97, 0.8), exposure=0.75, noise=5.0, blur=0.8, item_light=0.5, dark_items=True, jpeg=80
    ),
}

SEQ_W, SEQ_H = 320, 240
SEQ_FPS = 10.0


def cut_out(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The item of a plain-board photo and its alpha (0-1), cropped to the item: the board
    is what is near the median colour of the photo's border."""
    board = np.median(np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]]), axis=0)
    diff = np.abs(photo.astype(np.float32) - board).max(axis=-1)
    mask = Image.fromarray(((diff > 30) * 255).astype(np.uint8))
    # Close holes (a white label on a white board), drop specks, soften the edge.
    mask = mask.filter(ImageFilter.MaxFilter(15)).filter(ImageFilter.MinFilter(15))
    mask = mask.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.MaxFilter(5))
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255.0
    rows, cols = np.flatnonzero(alpha.max(axis=1) > 0.5), np.flatnonzero(alpha.max(axis=0) > 0.5)
    if rows.size == 0 or cols.size == 0:
        return photo, np.ones(photo.shape[:2], np.float32)
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    return photo[box], alpha[box]


def bin_light(rng: np.random.Generator, look: Look) -> tuple[np.ndarray, np.ndarray]:
    """The empty bin's floor (RGB, before the camera) and the light on it (1 under the spot's edge)."""
    y, x = np.mgrid[0:SEQ_H, 0:SEQ_W].astype(np.float32)
    ribs = 0.5 + 0.5 * np.sin(x / 4.5 + rng.uniform(0, 6.28))
    stains = np.kron(rng.normal(0, 5, (SEQ_H // 16 + 1, SEQ_W // 16 + 1)), np.ones((16, 16)))[:SEQ_H, :SEQ_W]
    base = (np.array([52, 58, 66], np.float32) + 10 * ribs[..., None] + stains[..., None]) * look.floor
    cx, cy = SEQ_W * rng.uniform(0.4, 0.6), SEQ_H * rng.uniform(0.35, 0.55)
    light = 0.55 + 0.8 * np.exp(-(((x - cx) / 130) ** 2 + ((y - cy) / 100) ** 2))
    return base, light


@dataclass
class Drop:
    """One item: frames it falls, lands, and is gone again (taken out by a hand, or the
    frame the tray that tipped it off is home again)."""

    photo: str
    start: int
    land: int
    end: int
    x: int
    y: int
    height: int


def _hand(t: float, side: int, y: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """A hand and forearm reaching in from the left (side=0) or right (side=1) edge to
    ``t`` (0-1) of the width: (alpha, brightness) of 320x240."""
    yy, xx = np.mgrid[0:SEQ_H, 0:SEQ_W].astype(np.float32)
    reach = t * SEQ_W
    hx = reach if side == 0 else SEQ_W - reach
    palm = ((xx - hx) / 38) ** 2 + ((yy - y) / 30) ** 2 < 1
    arm = (np.abs(yy - y - 10) < 22) & ((xx < hx) if side == 0 else (xx > hx))
    alpha = (palm | arm).astype(np.float32)
    return alpha, np.full_like(alpha, level)


TRAVEL_SECONDS = 0.4
"""``[actuator.servo] travel_seconds`` shipped: the tray's travel each way."""
DWELL_SECONDS = 1.0
"""``[actuator] dwell_seconds`` shipped: how long the tilted tray holds."""
TILT_DEGREES = 35.0
"""How far the tray tilts towards a compartment (about the view's vertical centre line)."""
PIT = 15.0
"""What the camera sees beside a tilted tray: the dark compartments below (reflectance)."""
TRAY_MARGIN = 8.0
"""How far (px of 320x240) the tray reaches beyond the camera's view at home."""
REMOVALS = ("hand", "tray")
PACES = ("normal", "quick")
VARIANTS = ("none", "small", "pair", "roll", "aec", "flicker", "daylight", "tight-tray", "apart")
"""Conditions a real bin meets that the plain sequences leave out (``--variant``; "none": the
plain sequences, frame for frame): ``small`` items (a bottle cap, a tea bag, a battery: the
item's box 15-40 px at 320x240); a ``pair`` of items dropped together or 0.3-1 s apart; an
item that rolls or slides for 0.5-2 s after landing (``roll``); the camera's auto-exposure
(``aec``) answering a bright item; mains ``flicker`` bands rolling through the frames; a lid
gap letting ``daylight`` in from one side, changing over seconds and minutes; with ``--removal
tray``, items dropped while the tray still wobbles home (``tight-tray``); an item whose
middle looks like the floor, so that it changes the view at its two ends only (``apart``: a
dark bottle on a dark floor showing its label and cap, a clear item). See
:func:`make_sequence`."""

Placed = tuple[np.ndarray, np.ndarray, int, int]
"""An item as laid in a frame: its pixels (reflectance x 220), its alpha, x and y."""


@dataclass
class TrayPose:
    """Where the tray lies, as the camera sees it (pixels of the 320x240 frame).

    ``tilt`` (0-1 of :data:`TILT_DEGREES`, towards ``side`` -1 left or +1 right) is the sort;
    ``dx``, ``dy``, ``turn`` (radians) and ``scale`` are what a hobby servo leaves when it
    comes home: its deadband and gear backlash stop it a fraction of a degree off."""

    tilt: float = 0.0
    side: int = 1
    dx: float = 0.0
    dy: float = 0.0
    turn: float = 0.0
    scale: float = 1.0

    def is_home_exactly(self) -> bool:
        return self.tilt == 0.0 and (self.dx, self.dy, self.turn, self.scale) == (0.0, 0.0, 0.0, 1.0)


def tray_view(texture: np.ndarray, pose: TrayPose) -> np.ndarray:
    """``texture`` (the tray's floor with what lies on it, HxWx3, in tray coordinates; its
    edge goes on beyond the view) as the camera sees it in ``pose``: off by the servo's
    residual, tilted in perspective (camera about 400 px above), the pit where the tray no
    longer is; bilinear."""
    h, w = texture.shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = u - cx, v - cy
    angle = np.radians(TILT_DEGREES * pose.tilt) * pose.side
    sin, cos, k = np.sin(angle), np.cos(angle), 1.0 / 400.0
    # The tilt in perspective, inverted: image (u, v) -> point (x, y) of the home-pose tray.
    x = u / (cos - k * sin * u)
    y = v * (1.0 + k * x * sin)
    # The residual, inverted: the home-pose point -> the tray's own coordinates.
    x, y = x - pose.dx, y - pose.dy
    c, s = np.cos(-pose.turn) / pose.scale, np.sin(-pose.turn) / pose.scale
    x, y = c * x - s * y + cx, s * x + c * y + cy
    # The tray reaches TRAY_MARGIN px beyond the view on every side (the drop zone lies on
    # it): a tray home a little off shows no sliver of the pit at the view's edge.
    inside = (x >= -TRAY_MARGIN) & (x <= w - 1 + TRAY_MARGIN) & (y >= -TRAY_MARGIN) & (y <= h - 1 + TRAY_MARGIN)
    x0 = np.clip(np.floor(x), 0, w - 2).astype(np.intp)
    y0 = np.clip(np.floor(y), 0, h - 2).astype(np.intp)
    fx = np.clip(x - x0, 0.0, 1.0)[..., None].astype(np.float32)
    fy = np.clip(y - y0, 0.0, 1.0)[..., None].astype(np.float32)
    top = texture[y0, x0] * (1 - fx) + texture[y0, x0 + 1] * fx
    bottom = texture[y0 + 1, x0] * (1 - fx) + texture[y0 + 1, x0 + 1] * fx
    out = top * (1 - fy) + bottom * fy
    out[~inside] = PIT
    # A tilted tray faces the light less.
    return out * np.float32(1.0 - 0.25 * pose.tilt)


def next_home(pose: TrayPose, rng: np.random.Generator) -> TrayPose:
    """Where the tray comes home after a sort: the last residual plus a new one, within the
    bounds of a hobby servo's deadband and backlash (at 640x480: about 0.8 px a cycle, at
    most 2.5 px in all; 0.1 degree a cycle, at most 0.4; a slight change of scale)."""
    bound = 1.25  # px of 320x240 (2.5 at 640x480)
    dx = float(np.clip(pose.dx + rng.normal(0, 0.4), -bound, bound))
    dy = float(np.clip(pose.dy + rng.normal(0, 0.4), -bound, bound))
    turn = float(np.clip(pose.turn + np.radians(rng.normal(0, 0.1)), -np.radians(0.4), np.radians(0.4)))
    scale = float(np.clip(pose.scale + rng.normal(0, 0.001), 0.997, 1.003))
    return TrayPose(dx=dx, dy=dy, turn=turn, scale=scale)


def make_sequence(
    items: list[tuple[str, np.ndarray]],
    look: Look,
    out: Path,
    seed: int = 7,
    transients: bool = True,
    removal: str = "hand",
    pace: str = "normal",
    variant: str = "none",
) -> dict[str, Any]:
    """Write the frames of ``items`` (key, RGB photo) dropped one after another into one bin
    that looks like ``look``, as ``frame-NNNNNN.jpg`` in ``out``, with transients between them;
    return the truth (also written to ``out/truth.json``).

    Per item: 2.5 s of empty bin (a hand waving through, a shadow passing or a light step in
    it), the item falls in from above for 0.3 s and lies still 3 s somewhere in the frame,
    15-30 % of the frame high; a hand reaches in, takes it and leaves (1.2 s). The light
    drifts +-10 % over a minute throughout; a light step (x1.25 or x0.8) sometimes lasts
    through a whole item.

    ``removal="tray"``: no hand; the tray the camera looks at takes the item, as the shipped
    sorter does (``actuator.kind = "servo"``). 0.9-1.2 s after the item landed (the
    agent fires after ``settle_seconds``, classifies and sorts) the tray tilts towards a
    compartment (0.4 s), holds (1.0 s) while the item slides off, and comes back (0.4 s), a
    little off where it left (:func:`next_home`, kept and added to from sort to sort), and
    wobbles about it for 0.5 s, dying away. The item's ``end`` is the frame the tray is home.
    ``pace="quick"``: a person dropping one item after another: no transients, each item
    falls 0-1 s after the tray stopped wobbling, 0.5-1.5 s after it is home (0-1 s after the
    hand left with ``removal="hand"``).

    ``variant`` (:data:`VARIANTS`; its own random draws, so "none" leaves every frame as it
    was): ``small``: each item's longest side 15-40 px. ``pair``: the items go two by two, the
    second falling with the first (a third of the pairs) or 0.3-1 s after it, beside it;
    both are taken away together (a hand, or the tray). ``roll``: each item rolls or slides on
    after its bounce for 0.5-2 s, 15-60 px, slowing down, before it rests 3 s. ``aec``: the
    camera's auto-exposure meters the frame (centre-weighted) and brings it back to the empty
    bin's level with a time constant of 0.15-0.4 s (settled in 0.3-1 s): a bright item dims
    the whole frame, its leaving brightens it back. ``flicker``: the LED's 100 Hz ripple
    through a rolling shutter: 3 horizontal bands a frame, 2-6 % deep, rolling 0.01-0.1 of a
    band a frame (mains and frame rate not locked). ``daylight``: light from a lid gap on the
    left (falling off over 60 px, not a plane), up to +60 % there, fading out over 3 minutes
    with a cloud (+-30 % of it over 5-20 s) now and then. ``tight-tray`` (``removal="tray"``,
    quick pace): each item falls 0-0.4 s after the tray is home, while it still wobbles."""
    if removal not in REMOVALS or pace not in PACES or variant not in VARIANTS:
        raise ValueError(f"removal must be one of {REMOVALS}, pace one of {PACES}, variant one of {VARIANTS}")
    if variant == "tight-tray" and removal != "tray":
        raise ValueError("variant tight-tray needs removal tray")
    if variant == "tight-tray":
        pace = "quick"
    quick = pace == "quick"
    transients = transients and not quick
    rng = np.random.default_rng(seed)
    # The tray's own draws: the same photos, and the same transients, with either removal.
    tray_rng = np.random.default_rng([seed, 1])
    # The variant's own draws: with variant "none" nothing is drawn from it.
    var_rng = np.random.default_rng([seed, 2])
    yy, xx = np.mgrid[0:SEQ_H, 0:SEQ_W].astype(np.float32)
    flicker = (
        (float(var_rng.uniform(0.02, 0.06)), float(var_rng.uniform(0.01, 0.1)), float(var_rng.uniform(0, 1)))
        if variant == "flicker"
        else None
    )
    # Daylight: its strength (share of the lamp's light at the left edge) per second, and its falloff.
    day_fall = np.exp(-xx / 60.0) if variant == "daylight" else None
    clouds = var_rng.uniform(0, 1, 64) if variant == "daylight" else None
    # Auto-exposure: the exposure in force (1: the empty bin's) and its time constant.
    meter = np.exp(-(((xx - SEQ_W / 2) / (0.3 * SEQ_W)) ** 2 + ((yy - SEQ_H / 2) / (0.3 * SEQ_H)) ** 2))
    meter /= meter.sum()
    aec = {"exposure": 1.0, "level": 0.0, "tau": float(var_rng.uniform(0.15, 0.4))} if variant == "aec" else None
    pending_poses: list[TrayPose] = []  # tight-tray: the wobble the next frames show
    pose: TrayPose | None = None  # None: the tray has never moved (exactly home)
    homes: list[dict[str, Any]] = []  # where the tray came home after each sort
    floor, light = bin_light(rng, look)
    cast = np.array(look.cast, np.float32)
    out.mkdir(parents=True, exist_ok=True)
    drops: list[Drop] = []
    events: list[dict[str, Any]] = []  # transients, for the record
    n = 0

    def lay(img: np.ndarray, item: Placed, lit: np.ndarray | None) -> None:
        """Lay ``item`` (pixels, alpha, x, y) on ``img``, lit by ``lit`` (None: reflectance only)."""
        pixels, alpha, x, y = item
        h, w = alpha.shape
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + h, SEQ_H), min(x + w, SEQ_W)
        if y1 > y0 and x1 > x0:
            a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
            p = pixels[y0 - y : y1 - y, x0 - x : x1 - x] * look.item_light
            if lit is not None:
                p = p * lit[y0:y1, x0:x1, None]
            img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + p * a

    def scene(
        item: Placed | list[Placed] | None,
        hand: tuple[np.ndarray, np.ndarray] | None = None,
        shade: np.ndarray | None = None,
        step: float = 1.0,
        in_air: bool | list[bool] = False,
        tray: TrayPose | None = None,
    ) -> None:
        """One frame; ``item``: one item or several, ``in_air``: the item is falling (not on
        the tray; one flag per item for several), ``tray``: the tray's pose if not the current one."""
        nonlocal n
        t = n / SEQ_FPS
        gain = step * (1.0 + 0.1 * np.sin(2 * np.pi * t / 60.0)) * look.exposure
        lit = light * gain if shade is None else light * gain * shade
        if day_fall is not None and clouds is not None:  # a lid gap on the left, fading out
            knot = t / 10.0
            k0 = min(int(knot), clouds.size - 2)
            w = 0.5 - 0.5 * np.cos(np.pi * (knot - k0))
            cloud = 0.3 * (2 * ((1 - w) * clouds[k0] + w * clouds[k0 + 1]) - 1)
            lit = lit * (1.0 + 0.6 * max(0.0, 1.0 - t / 240.0) * (1.0 + cloud) * day_fall)
        if flicker is not None:  # the LED's ripple through the rolling shutter: bands down the frame
            depth, roll, phase = flicker
            lit = lit * (1.0 + depth * np.sin(2 * np.pi * (yy / 80.0 + phase + roll * n)))
        if tray is None and pending_poses:
            tray = pending_poses.pop(0)
        tray = tray if tray is not None else pose
        placed = [] if item is None else (item if isinstance(item, list) else [item])
        falling = in_air if isinstance(in_air, list) else [in_air] * len(placed)
        if tray is None:  # the tray never moved: the frames of the hand's sequences, bit for bit
            img = floor * lit[..., None]
            for one in placed:
                lay(img, one, lit)
        else:  # the tray's floor and what lies on it go where the tray goes; the light stays
            texture = floor.copy()
            for one, air in zip(placed, falling):
                if not air:
                    lay(texture, one, None)
            img = tray_view(texture, tray) * lit[..., None]
            for one, air in zip(placed, falling):
                if air:
                    lay(img, one, lit)
        if hand is not None:
            a, level = hand
            img = img * (1 - a[..., None]) + (level * lit * a)[..., None] * np.array([1.0, 0.8, 0.7], np.float32)
        if aec is not None:  # the exposure in force; the camera meters this frame for the next
            img = img * aec["exposure"]
            level = float((img.mean(axis=-1) * meter).sum())
            if n == 0:
                aec["level"] = level
            target = aec["exposure"] * aec["level"] / max(level, 1.0)
            aec["exposure"] *= (target / aec["exposure"]) ** (1.0 - np.exp(-1.0 / (SEQ_FPS * aec["tau"])))
        img = img * cast
        if look.blur:
            img = np.asarray(
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(look.blur)),
                np.float32,
            )
        sigma = look.noise * np.sqrt(np.maximum(img.mean(axis=-1, keepdims=True), 1.0) / 64.0)
        img = img + sigma * rng.normal(0, 1, (SEQ_H, SEQ_W, 1)) + 0.3 * sigma * rng.normal(0, 1, img.shape)
        pixels8 = np.clip(np.round(img), 0, 255).astype(np.uint8)
        Image.fromarray(pixels8).save(out / f"frame-{n:06d}.jpg", quality=look.jpeg)
        n += 1

    def empty(seconds: float, step: float = 1.0) -> None:
        for _ in range(round(seconds * SEQ_FPS)):
            scene(None, step=step)

    def tip_off(home: TrayPose | None, placed: list[Placed], step: float) -> TrayPose:
        """The items lie still until the agent sorts them; the tray tilts, holds while they
        slide off, and comes back a little off; returns where it came home."""
        start = home or TrayPose()
        for _ in range(round((0.6 + float(tray_rng.uniform(0.3, 0.6))) * SEQ_FPS)):
            scene(placed, step=step)
        side = int(tray_rng.choice([-1, 1]))
        travel, dwell = round(TRAVEL_SECONDS * SEQ_FPS), round(DWELL_SECONDS * SEQ_FPS)
        new_home = next_home(start, tray_rng)
        homes.append(dataclasses.asdict(new_home))
        tilts = (
            [(k + 1) / travel for k in range(travel)]
            + [1.0] * dwell
            + [1 - (k + 1) / travel for k in range(travel - 1)]
        )
        sliding = 0.0  # seconds the items have been sliding down the tilted tray
        for k, tilt in enumerate(tilts):
            if tilt >= 0.5:
                sliding += 1 / SEQ_FPS
            shift = int(round(side * 0.5 * 1500.0 * sliding**2))  # 1500 px/s^2 down the slope
            on_tray = [(pixels, alpha, x + shift, y) for pixels, alpha, x, y in placed] if abs(shift) < SEQ_W else None
            was = start if k < travel + dwell else new_home
            scene(on_tray, step=step, tray=dataclasses.replace(was, tilt=tilt, side=side))
        return new_home

    def home_wobble(home: TrayPose) -> list[TrayPose]:
        """The tray home, wobbling about its new rest along its tilt axis, dying away over
        0.5 s: its pose in each frame."""
        amplitude = float(tray_rng.uniform(0.5, 1.5))  # px of 320x240
        poses = []
        for k in range(round(0.5 * SEQ_FPS)):
            tau = k / SEQ_FPS
            wobble = amplitude * np.exp(-tau / 0.15) * np.cos(2 * np.pi * 4.0 * tau)
            poses.append(dataclasses.replace(home, dx=home.dx + wobble))
        return poses

    def sized(photo: np.ndarray, height: int, longest: float | None) -> tuple[np.ndarray, np.ndarray]:
        """The item cut out of ``photo`` (pixels, alpha) ``height`` px high (at most 45 % of the
        frame wide), or with its longest side ``longest`` px."""
        pixels, alpha = cut_out(photo)
        if longest is not None:
            factor = longest / max(alpha.shape)
            width = max(4, int(round(alpha.shape[1] * factor)))
            height = max(4, int(round(alpha.shape[0] * factor)))
        else:
            width = max(4, int(round(alpha.shape[1] * height / alpha.shape[0])))
            if width > SEQ_W * 0.45:
                width = int(SEQ_W * 0.45)
                height = max(4, int(round(alpha.shape[0] * width / alpha.shape[1])))
        pix = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR), np.float32)
        alp = (
            np.asarray(
                Image.fromarray((alpha * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR),
                np.float32,
            )
            / 255.0
        )
        return pix / 255.0 * 220.0, alp  # the photo's white board is about 220: reflectance 0-1 times the light

    for _ in range(10):  # the agent's trigger learns the empty bin first
        scene(None)
    groups = [items[k : k + 2] for k in range(0, len(items), 2)] if variant == "pair" else [[one] for one in items]
    for index, group in enumerate(groups):
        step = 1.0
        if transients and index % 5 == 4:
            step = 1.25 if index % 10 == 4 else 0.8
            events.append({"kind": f"light step x{step}", "frame": n})
        kind = ["hand", "shadow", "step", "hand-pause", "none"][index % 5] if transients else "none"
        if not quick:
            empty(0.5, step)
        if kind in ("hand", "hand-pause"):
            events.append({"kind": kind, "frame": n})
            side = int(rng.integers(0, 2))
            y = float(rng.uniform(60, 180))
            path = (
                list(np.linspace(0.1, 0.6, 5))
                + ([0.6] * 3 if kind == "hand-pause" else [])
                + list(np.linspace(0.6, 0.0, 5))
            )
            for reach in path:
                scene(None, _hand(float(reach), side, y, float(rng.uniform(0.9, 1.1)) * 110), step=step)
        elif kind == "shadow":  # someone leaning over the bin: a soft dark edge sweeps across
            events.append({"kind": kind, "frame": n})
            cols = np.arange(SEQ_W, dtype=np.float32)[None, :]
            for edge in np.linspace(-80, SEQ_W + 80, 15):
                shade = 1.0 - 0.45 / (1.0 + np.exp(-(edge - cols) / 25.0))
                scene(None, shade=np.broadcast_to(shade, (SEQ_H, SEQ_W)), step=step)
        elif kind == "step":  # a step and back while empty (the lid opened and closed)
            events.append({"kind": "light step x1.3 and back", "frame": n})
            empty(0.7, step * 1.3)
        if not quick:
            empty(1.0, step)
        # The item: 15-30 % of the frame high (small: its longest side 15-40 px), lying
        # somewhere wholly in view.
        height = int(round(SEQ_H * rng.uniform(0.15, 0.30)))
        longest = float(var_rng.uniform(15, 40)) if variant == "small" else None
        pix, alp = sized(group[0][1], height, longest)
        height, width = alp.shape
        if variant == "apart":  # its middle 40 % along its longer side shows the floor: two ends
            if height >= width:
                alp[int(height * 0.3) : int(height * 0.7), :] = 0.0
            else:
                alp[:, int(width * 0.3) : int(width * 0.7)] = 0.0
        x = int(rng.integers(10, SEQ_W - width - 10))
        y = int(rng.integers(10, SEQ_H - height - 10))
        # (pixels, alpha, x, y, frames after the first one's fall that it falls)
        falls: list[tuple[np.ndarray, np.ndarray, int, int, int]] = [(pix, alp, x, y, 0)]
        for _key, photo in group[1:]:  # a pair: the second beside the first, with it or 0.3-1 s after
            pix2, alp2 = sized(photo, int(round(SEQ_H * var_rng.uniform(0.15, 0.30))), None)
            h2, w2 = alp2.shape
            for _ in range(50):  # beside the first, not on it
                x2 = int(var_rng.integers(10, SEQ_W - w2 - 10))
                y2 = int(var_rng.integers(10, SEQ_H - h2 - 10))
                if x2 > x + width + 8 or x2 + w2 + 8 < x or y2 > y + height + 8 or y2 + h2 + 8 < y:
                    break
            delay = 0 if var_rng.uniform() < 1 / 3 else int(var_rng.integers(3, 11))
            falls.append((pix2, alp2, x2, y2, delay))
        start = n
        rest: list[Placed] = []
        for k in range(max(f[4] for f in falls) + 4):
            now: list[Placed] = []
            air: list[bool] = []
            for pixels, alpha, fx, fy, delay in falls:
                j = k - delay
                if j < 0:
                    continue
                h = alpha.shape[0]
                if j < 3:  # falling in from above the frame
                    now.append((pixels, alpha, fx, -h + (fy + h) * (j + 1) // 4))
                else:  # a small bounce, then at rest
                    now.append((pixels, alpha, fx + 2, fy - 2) if j == 3 else (pixels, alpha, fx, fy))
                air.append(j < 3)
            scene(now, step=step, in_air=air)
        rest = [(pixels, alpha, fx, fy) for pixels, alpha, fx, fy, _ in falls]
        if variant == "roll":  # it rolls or slides on, slowing down, before it rests
            frames = int(var_rng.integers(5, 21))
            angle = float(var_rng.uniform(0, 2 * np.pi))
            distance = float(var_rng.uniform(15, 60))
            to_x = int(np.clip(x + distance * np.cos(angle), 10, SEQ_W - width - 10))
            to_y = int(np.clip(y + distance * np.sin(angle), 10, SEQ_H - height - 10))
            for r in range(1, frames + 1):
                done = 1 - (1 - r / frames) ** 2
                scene((pix, alp, int(round(x + (to_x - x) * done)), int(round(y + (to_y - y) * done))), step=step)
            x, y = to_x, to_y
            rest = [(pix, alp, x, y)]
        lands = [start + f[4] + 4 for f in falls]
        if removal == "tray":
            pose = tip_off(pose, rest, step)
            for (key, _), (_, alpha, fx, fy), fell, land in zip(group, rest, falls, lands):
                drops.append(Drop(key, start + fell[4], land, n, fx, fy, alpha.shape[0]))
            if variant == "tight-tray":  # the next item falls 0-0.4 s after the tray is home, as it wobbles
                pending_poses[:] = home_wobble(pose)
                empty(float(var_rng.integers(0, 5)) / SEQ_FPS, step)
                continue
            for wobbling in home_wobble(pose):
                scene(None, step=step, tray=wobbling)
            if quick:
                empty(float(rng.uniform(0.0, 1.0)), step)
            else:
                empty(0.5, step)
            continue
        for _ in range(30):
            scene(rest, step=step)
        # A hand takes it (a pair: both): reaches in over it (0.4 s), holds (0.3 s), leaves with it (0.5 s).
        left = min(fx for _, _, fx, _ in rest)
        right = max(fx + alpha.shape[1] for _, alpha, fx, _ in rest)
        top = min(fy for _, _, _, fy in rest)
        bottom = max(fy + alpha.shape[0] for _, alpha, _, fy in rest)
        side = 0 if (left + right) / 2 > SEQ_W / 2 else 1
        cy = (top + bottom) / 2
        reach_to = (left + right) / 2 / SEQ_W if side == 0 else 1 - (left + right) / 2 / SEQ_W
        for reach in np.linspace(0.2, reach_to, 4):
            scene(rest, _hand(float(reach), side, cy, 110), step=step)
        for _ in range(3):
            scene(rest, _hand(float(reach_to), side, cy, 110), step=step)
        for reach in np.linspace(reach_to, 0.0, 5):
            scene(None, _hand(float(reach), side, cy, 110), step=step)
        for (key, _), (_, alpha, fx, fy), fell, land in zip(group, rest, falls, lands):
            drops.append(Drop(key, start + fell[4], land, n, fx, fy, alpha.shape[0]))
        empty(float(rng.uniform(0.0, 1.0)) if quick else 1.0, step)
    empty(2.0)
    truth = {
        "fps": SEQ_FPS,
        "frames": n,
        "look": dataclasses.asdict(look),
        "removal": removal,
        "pace": pace,
        "variant": variant,
        "tray_homes": homes,
        "items": [dataclasses.asdict(d) for d in drops],
        "transients": events,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def darkest(items: list[Any], count: int) -> list[Any]:
    """The ``count`` items whose cut-out is darkest (mean grey of the item itself)."""
    scored = []
    for item in items:
        pixels, alpha = cut_out(np.asarray(Image.open(item.path).convert("RGB").reduce(4)))
        grey = pixels.mean(axis=-1)
        scored.append((float((grey * alpha).sum() / max(alpha.sum(), 1.0)), item.key, item))
    return [item for _, _, item in sorted(scored)[:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--one-floor", action="store_true", help="one floor and light for all (and empty.jpg)")
    parser.add_argument("--flat", action="store_true", help="<class>__<name>.jpg in one folder")
    parser.add_argument("--sequence", choices=sorted(SCENARIOS), help="write a frame sequence of this bin")
    parser.add_argument("--items", type=int, default=20, help="--sequence: items dropped")
    parser.add_argument("--no-transients", action="store_true", help="--sequence: no hands, shadows, light steps")
    parser.add_argument(
        "--removal", choices=REMOVALS, default="hand", help="--sequence: who takes each item away (tray: the sort)"
    )
    parser.add_argument(
        "--pace", choices=PACES, default="normal", help="--sequence: quick: items one after another, no transients"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="none",
        help="--sequence: a condition the plain sequences leave out (small items, pairs, rolling, auto-exposure, "
        "flicker, daylight, tight-tray, an item changing the view at its two ends only); none: the plain "
        "sequence, frame for frame",
    )
    args = parser.parse_args()
    items = ds.list_dataset(args.dataset)
    if args.split:
        items = ds.select(items, ds.split_for(ds.read_split(args.split), args.dataset, args.split), args.subset)
    rng = np.random.default_rng(args.seed)
    if args.sequence:
        look = SCENARIOS[args.sequence]
        if look.dark_items:
            chosen = darkest(items, args.items)
        else:
            chosen = [items[int(k)] for k in rng.choice(len(items), size=min(args.items, len(items)), replace=False)]
        photos = [(item.key, load_image(item.path)) for item in chosen]
        truth = make_sequence(
            photos,
            look,
            args.out,
            seed=args.seed,
            transients=not args.no_transients,
            removal=args.removal,
            pace=args.pace,
            variant=args.variant,
        )
        print(f"wrote {truth['frames']} frames with {len(truth['items'])} items to {args.out}")
        return
    written = make_bin(items, args.out, seed=args.seed, one_floor=args.one_floor, flat=args.flat)
    print(f"wrote {written} photos to {args.out}")


if __name__ == "__main__":
    run_script(main)
