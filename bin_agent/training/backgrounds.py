"""Break the studio shortcut: new backgrounds for plain-board photos, and camera effects.

TrashNet photographs every item on the same white board in the same light. A
model fine-tuned on it learns the board: on photos of waste on a floor or in a
bin it does worse than frozen ImageNet features. Two remedies live here, both
NumPy + Pillow, used by :func:`bin_agent.training.dataset.augment`:

- :func:`item_mask` finds the item on a plain background (the colour of the
  photo's border, shadows allowed) and :func:`composite` pastes it, scaled and
  shifted, with a soft edge and sometimes a shadow, on a procedural background
  (:func:`random_background`: floors, concrete, wood, tiles, dark bin liners,
  blurred clutter, other boards). The item's size on the canvas (``scale``, its
  longer side over the canvas side) matches what the agent classifies: the
  item's bounding box plus a margin (``bin_agent.geometry``), or the drop zone.
- :func:`camera_effects` adds what a cheap camera in a bin adds: colour
  temperature, exposure, sensor noise and JPEG compression.

Photos that do not have a plain border (the added public sets: items in hands,
on tables, outdoors) keep their own background and get the camera effects only.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..classify.preprocess import crop_resize

MASK_SIDE = 128  # the mask is found on a copy this long: cheap, and precise enough at 160 px


@dataclass(frozen=True)
class ItemMask:
    """Where the item is in a photo: a soft alpha and its bounding box (pixels of the photo)."""

    alpha: np.ndarray  # float32 0..1 at mask resolution
    box: tuple[int, int, int, int]  # left, top, right, bottom in photo pixels


def _small(image: np.ndarray) -> tuple[np.ndarray, float]:
    height, width = image.shape[:2]
    factor = MASK_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR), np.float32), factor


def item_mask(
    image: np.ndarray,
    plain_share: float = 0.8,
    min_area: float = 0.03,
    max_area: float = 0.85,
    min_solidity: float = 0.4,
) -> ItemMask | None:
    """The item of a photo taken on a plain background, or None when the
    photo's border is not plain (or nothing item-sized stands out).

    The background colour is the median of a 3-pixel border; a pixel belongs to
    the item when its colour differs from it by more than the border's own
    spread allows. Lightness differences count 0.3 of their size, so soft shadows on
    the board stay background. Holes inside the item (a label the colour of the
    board, the board seen through glass) are filled: only what is connected
    to the border is background.
    """
    small, factor = _small(image)
    height, width = small.shape[:2]
    border = np.concatenate(
        [small[:3].reshape(-1, 3), small[-3:].reshape(-1, 3), small[:, :3].reshape(-1, 3), small[:, -3:].reshape(-1, 3)]
    )
    background = np.median(border, axis=0)

    def distance(pixels: np.ndarray) -> np.ndarray:
        diff = pixels - background
        light = diff.mean(axis=-1, keepdims=True)
        chroma = diff - light
        # the lightness part of the difference counts 0.3 of its length: a soft shadow (the
        # board at 0.8 of its brightness) stays background, a black item (0.15 of it) does not
        return np.sqrt((chroma**2).sum(axis=-1) + 3 * (0.3 * light[..., 0]) ** 2)

    border_distance = distance(border)
    spread = float(np.median(border_distance))
    threshold = max(28.0, 4.0 * spread)
    if (border_distance < threshold).mean() < plain_share:
        return None
    raw = (distance(small) > threshold).astype(np.uint8) * 255
    mask = Image.fromarray(raw).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.MinFilter(3))
    # fill holes: flood the background from a 1-pixel frame around the photo
    framed = Image.new("L", (width + 2, height + 2), 0)
    framed.paste(mask, (1, 1))
    ImageDraw.floodfill(framed, (0, 0), 128)
    filled = np.asarray(framed)[1:-1, 1:-1] != 128
    area = filled.mean()
    if not (min_area <= area <= max_area):
        return None
    rows, cols = np.nonzero(filled.any(axis=1))[0], np.nonzero(filled.any(axis=0))[0]
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if filled.sum() < min_solidity * (bottom - top) * (right - left):
        return None  # scattered fragments (a white item on the white board): no item found
    box = (int(left / factor), int(top / factor), int(np.ceil(right / factor)), int(np.ceil(bottom / factor)))
    alpha = (
        np.asarray(Image.fromarray(filled.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
        / 255.0
    )
    return ItemMask(alpha=alpha, box=box)


# ------------------------------------------------------------------ backgrounds


def _value_noise(side: int, rng: np.random.Generator, octaves=(2, 4, 8, 16, 32), falloff: float = 0.6) -> np.ndarray:
    """Smooth noise in 0..1: random grids of several sizes, upsampled and summed."""
    total = np.zeros((side, side), np.float32)
    weight, weights = 1.0, 0.0
    for cells in octaves:
        grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((side, side), Image.Resampling.BICUBIC), np.float32) / 255
        total += weight * layer
        weights += weight
        weight *= falloff
    total /= weights
    span = total.max() - total.min()
    return (total - total.min()) / (span if span > 1e-6 else 1.0)


def _ramp(value: np.ndarray, dark: np.ndarray, light: np.ndarray) -> np.ndarray:
    return dark + value[..., None] * (light - dark)


def _colour(rng: np.random.Generator, lightness: tuple[float, float], saturation: float) -> np.ndarray:
    grey = rng.uniform(*lightness)
    tint = rng.normal(0, saturation, 3)
    return np.clip(grey * (1 + tint), 0, 255)


def random_background(side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` RGB float32 background: one of floor/concrete
    noise, a dark bin liner, wood, tiles, blurred clutter or another board."""
    kind = rng.choice(["noise", "liner", "wood", "tiles", "clutter", "board"], p=[0.3, 0.2, 0.12, 0.12, 0.13, 0.13])
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if kind == "noise":  # concrete, asphalt, carpet, soil, cardboard bottom
        dark = _colour(rng, (20, 140), 0.25)
        light = np.clip(dark + rng.uniform(20, 110), 0, 255)
        octaves = (2, 4, 8, 16, 32, 64) if rng.random() < 0.5 else (4, 16, 64)
        out = _ramp(_value_noise(side, rng, octaves, rng.uniform(0.4, 0.9)), dark, light)
    elif kind == "liner":  # black / grey / green / blue bin bag or plastic wall, lit from one side
        base = _colour(rng, (10, 80), 0.35)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) * rng.uniform(0.3, 1.2)
        folds = _value_noise(side, rng, (3, 6, 12), 0.7) - 0.5
        vignette = 1 - rng.uniform(0.2, 0.6) * ((xs - 0.5) ** 2 + (ys - 0.5) ** 2) * 2
        light = (1 + gradient + folds * rng.uniform(0.4, 1.5)) * vignette
        out = base * np.clip(light, 0.2, 3.0)[..., None]
    elif kind == "wood":
        dark = np.array([rng.uniform(60, 120), rng.uniform(35, 80), rng.uniform(10, 50)])
        light = np.clip(dark * rng.uniform(1.3, 2.0), 0, 255)
        warp = _value_noise(side, rng, (2, 4, 8), 0.6)
        frequency = rng.uniform(8, 30)
        along = xs if rng.random() < 0.5 else ys
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (along * frequency + warp * rng.uniform(1, 4)))
        out = _ramp(grain, dark, light)
    elif kind == "tiles":
        tile = int(rng.integers(side // 6, side // 2))
        grout = max(1, int(rng.integers(1, 4)))
        base = _colour(rng, (60, 220), 0.2)
        yy, xx = np.mgrid[0:side, 0:side]
        index = (yy // tile) * 97 + (xx // tile)
        variation = rng.normal(0, rng.uniform(3, 15), (int(index.max()) + 1, 1))
        out = base + variation[index.reshape(-1)].reshape(side, side, 1)
        lines = ((yy % tile) < grout) | ((xx % tile) < grout)
        out[lines] = _colour(rng, (30, 200), 0.1)
        out = out + (_value_noise(side, rng, (16, 64), 0.7)[..., None] - 0.5) * 20
    elif kind == "clutter":  # other things underneath, out of focus
        canvas = Image.fromarray(np.full((side, side, 3), _colour(rng, (20, 160), 0.3), np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(4, 12))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * side
            w, h = rng.uniform(0.1, 0.6, 2) * side
            fill = tuple(int(v) for v in _colour(rng, (20, 230), 0.5))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x0 + w, y0 + h), fill=fill)
        out = np.asarray(canvas.filter(ImageFilter.GaussianBlur(rng.uniform(2, 8))), np.float32)
    else:  # another plain board or table, unevenly lit
        base = _colour(rng, (40, 240), 0.3)
        angle = rng.uniform(0, 2 * np.pi)
        gradient = (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5)) * rng.uniform(0, 0.5)
        out = base * (1 + gradient)[..., None]
    return np.clip(out, 0, 255).astype(np.float32)


def composite(
    image: np.ndarray, mask: ItemMask, side: int, rng: np.random.Generator, scale: tuple[float, float] = (0.45, 0.9)
) -> np.ndarray:
    """The item of ``image`` pasted on a new background: ``side`` x ``side``
    uint8, the item's longer side ``scale`` of the canvas, at a random place
    (up to a tenth of it may leave the canvas), sometimes with a soft shadow."""
    return composite_placed(image, mask, side, rng, scale)[0]


def composite_placed(
    image: np.ndarray, mask: ItemMask, side: int, rng: np.random.Generator, scale: tuple[float, float] = (0.45, 0.9)
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """:func:`composite`, and where the item landed: ``(left, top, right,
    bottom)`` canvas pixels of its box (the mask's box, cut at the canvas)."""
    left, top, right, bottom = mask.box
    pad_x, pad_y = max(2, (right - left) // 30), max(2, (bottom - top) // 30)
    height, width = image.shape[:2]
    left, top = max(0, left - pad_x), max(0, top - pad_y)
    right, bottom = min(width, right + pad_x), min(height, bottom + pad_y)
    item_w, item_h = right - left, bottom - top
    factor = rng.uniform(*scale) * side / max(item_w, item_h)
    size = (max(2, round(item_w * factor)), max(2, round(item_h * factor)))
    item = np.asarray(
        Image.fromarray(image[top:bottom, left:right]).resize(size, Image.Resampling.BILINEAR), np.float32
    )
    mask_h, mask_w = mask.alpha.shape
    scale_x, scale_y = mask_w / width, mask_h / height
    alpha_crop = mask.alpha[
        int(top * scale_y) : max(int(top * scale_y) + 1, int(np.ceil(bottom * scale_y))),
        int(left * scale_x) : max(int(left * scale_x) + 1, int(np.ceil(right * scale_x))),
    ]
    alpha = (
        np.asarray(
            Image.fromarray((alpha_crop * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR), np.float32
        )[..., None]
        / 255.0
    )
    out = random_background(side, rng)
    slack_x, slack_y = side - size[0], side - size[1]
    x = int(rng.uniform(min(0, slack_x) - size[0] * 0.05, max(0, slack_x) + size[0] * 0.05))
    y = int(rng.uniform(min(0, slack_y) - size[1] * 0.05, max(0, slack_y) + size[1] * 0.05))

    def paste(layer: np.ndarray, layer_alpha: np.ndarray, at_x: int, at_y: int) -> None:
        x0, y0 = max(0, at_x), max(0, at_y)
        x1, y1 = min(side, at_x + layer_alpha.shape[1]), min(side, at_y + layer_alpha.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        region = (slice(y0 - at_y, y1 - at_y), slice(x0 - at_x, x1 - at_x))
        a = layer_alpha[region]
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + layer[region] * a

    if rng.random() < 0.5:  # a soft shadow, offset away from the light
        blur = rng.uniform(2, 6)
        shadow = (
            np.asarray(
                Image.fromarray((alpha[..., 0] * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur)),
                np.float32,
            )[..., None]
            / 255.0
            * rng.uniform(0.3, 0.7)
        )
        dx, dy = (rng.uniform(-0.08, 0.08, 2) * side).astype(int)
        paste(np.zeros_like(item), shadow, x + dx, y + dy)  # black, through the shadow's alpha
    paste(item, alpha, x, y)
    placed = (max(0, x), max(0, y), min(side, x + size[0]), min(side, y + size[1]))
    return np.clip(np.round(out), 0, 255).astype(np.uint8), placed


# --------------------------------------------------------------- camera effects


@dataclass(frozen=True)
class CameraEffects:
    """How far the camera effects go (all applied to the model-sized view)."""

    temperature: float = 0.15  # red/blue gain shift, +-
    exposure: tuple[float, float] = (0.65, 1.4)  # overall gain
    gamma: float = 0.25  # log-gamma spread
    noise_p: float = 0.5
    noise_sigma: tuple[float, float] = (2.0, 9.0)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 92)
    # One lamp over a dark bin lights an item unevenly (brighter under it, falling off
    # towards the bin's walls), which an even exposure change does not imitate: this share
    # of views is multiplied by a smooth light field (:func:`uneven_light`) whose darkest
    # part gets ``uneven_light_low`` of its brightest part's light. The shipped model (v6l)
    # was trained with half of its views so lit (models/README.md, "This model: v6l").
    uneven_light_p: float = 0.5
    uneven_light_low: tuple[float, float] = (0.35, 0.8)
    # An item the camera sees small (a 640x480 frame, an item a fifth of it high: ~100 px)
    # reaches the model as a crop upscaled by the agent's resize, with the sensor's noise and
    # the JPEG at the small size, blurred and blotchy; a training photo is 3-4x sharper. This
    # share of views is made so: shrunk to ``low_res_scale`` of its side (as a sensor samples
    # it), given its noise and JPEG there, then upscaled back as the agent upscales a crop.
    low_res_p: float = 0.0
    low_res_scale: tuple[float, float] = (0.3, 0.8)


def uneven_light(height: int, width: int, rng: np.random.Generator, low: tuple[float, float]) -> np.ndarray:
    """A smooth light field (``height`` x ``width`` x 1, at most 1): a spot of light of
    random centre (possibly outside the view), size and elongation, falling off to a floor
    drawn from ``low`` (:attr:`CameraEffects.uneven_light_low`) of its peak."""
    floor = rng.uniform(*low)
    cx, cy = rng.uniform(-0.25, 1.25, size=2) * np.array([width, height])
    sx = rng.uniform(0.3, 1.0) * max(height, width)
    sy = sx * math.exp(rng.uniform(-0.4, 0.4))
    y, x = np.ogrid[0:height, 0:width]
    spot = np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2).astype(np.float32)
    return (floor + (1.0 - floor) * spot)[..., None]


def camera_effects(
    pixels: np.ndarray, rng: np.random.Generator, effects: CameraEffects = CameraEffects()
) -> np.ndarray:
    """``pixels`` (uint8 RGB) as a different camera in different light would see them."""
    out = pixels.astype(np.float32) / 255.0
    shift = rng.uniform(-effects.temperature, effects.temperature)
    out *= np.array([1 + shift, 1.0, 1 - shift], np.float32)
    # Drawn only when enabled, so a run without it sees the same random numbers as before.
    if effects.uneven_light_p and rng.random() < effects.uneven_light_p:
        out *= uneven_light(out.shape[0], out.shape[1], rng, effects.uneven_light_low)
    out = np.clip(out * rng.uniform(*effects.exposure), 0, 1) ** np.exp(rng.uniform(-effects.gamma, effects.gamma))
    out *= 255.0
    height, width = out.shape[:2]
    # Drawn only when enabled, as above.
    small = bool(effects.low_res_p) and rng.random() < effects.low_res_p
    if small:
        scale = rng.uniform(*effects.low_res_scale)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        shrunk = Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
        out = np.asarray(shrunk, np.float32)
    if rng.random() < effects.noise_p:
        out += rng.normal(0, rng.uniform(*effects.noise_sigma), out.shape).astype(np.float32)
    result = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if rng.random() < effects.jpeg_p:
        buffer = io.BytesIO()
        Image.fromarray(result).save(buffer, format="JPEG", quality=int(rng.integers(*effects.jpeg_quality)))
        result = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    if small:  # back to the view's size, as the agent's crop_resize upscales a small crop
        result = crop_resize(result, (0.0, 0.0, float(result.shape[1]), float(result.shape[0])), (height, width))
    return result
