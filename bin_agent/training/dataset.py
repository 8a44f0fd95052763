"""Folder-per-class datasets, the fixed split, and training-time augmentation.

No TensorFlow here: everything is NumPy + Pillow, and every model input is made
by :mod:`bin_agent.preprocess` — :func:`eval_pixels` (validation, test,
calibration: :func:`~bin_agent.preprocess.fit_to_input`, exactly what the agent
does) and :func:`augment` (training: a random box through
:func:`~bin_agent.preprocess.crop_resize`).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .. import CLASSES
from ..classify.preprocess import Box, ImageError, PreprocessSpec, crop_resize, fit_to_input, load_image
from ..errors import BinAgentError
from ..geometry import crop_box
from .backgrounds import CameraEffects, ItemMask, camera_effects, composite, composite_placed, item_mask

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
SUBSETS = ("train", "val", "test")
SPLIT_FORMAT = 1


class DatasetError(BinAgentError, ValueError):
    """A dataset folder or split file is missing or does not fit."""

    exit_code = os.EX_DATAERR


@dataclass(frozen=True)
class Item:
    """One photo: its path, its class index and its key in the split file."""

    path: Path
    label: int
    key: str  # "<class>/<file name>", relative to the dataset root


def dataset_name(root: Path) -> str:
    """The name a dataset folder has in a split file (its folder name)."""
    return Path(root).resolve().name


def list_dataset(root: str | Path, classes: Sequence[str] = CLASSES) -> list[Item]:
    """Every image of a folder-per-class dataset, sorted by key.

    Class folders must be among ``classes``; a dataset may lack some classes
    (a bin's own photos rarely cover all of them).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in classes]
    if unknown:
        raise DatasetError(
            f"{root}: folders {unknown} are not classes of this model (expected some of {list(classes)})"
        )
    items = []
    for folder in folders:
        label = classes.index(folder.name)
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                items.append(Item(path, label, f"{folder.name}/{path.name}"))
    if not items:
        raise DatasetError(f"{root}: no images found in folders named after the classes {list(classes)}")
    return items


def make_split(
    items: Sequence[Item], seed: int = 20261123, test: float = 0.15, val: float = 0.15
) -> dict[str, list[str]]:
    """A stratified split of one dataset's items into train / val / test keys.

    Within each class the keys are sorted, shuffled with ``seed`` and cut:
    ``round(n * test)`` test, ``round(n * val)`` validation, the rest train.
    """
    if not (0 < test < 1 and 0 <= val < 1 and test + val < 1):
        raise DatasetError(f"bad split fractions test={test} val={val}")
    by_class: dict[int, list[str]] = {}
    for item in items:
        by_class.setdefault(item.label, []).append(item.key)
    out: dict[str, list[str]] = {name: [] for name in SUBSETS}
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        random.Random(f"{seed}:{label}").shuffle(keys)
        n_test = round(len(keys) * test)
        n_val = round(len(keys) * val)
        out["test"] += keys[:n_test]
        out["val"] += keys[n_test : n_test + n_val]
        out["train"] += keys[n_test + n_val :]
    return {name: sorted(keys) for name, keys in out.items()}


def split_document(
    roots: Sequence[Path], seed: int = 20261123, test: float = 0.15, val: float = 0.15
) -> dict[str, Any]:
    """The split file's content for one or several dataset folders."""
    datasets = {}
    for root in roots:
        name = dataset_name(root)
        if name in datasets:
            raise DatasetError(f"two dataset folders are named {name!r}: rename one")
        subsets = make_split(list_dataset(root), seed=seed, test=test, val=val)
        counts = {
            subset: {c: sum(k.split("/")[0] == c for k in keys) for c in CLASSES} for subset, keys in subsets.items()
        }
        for subset in SUBSETS:
            counts[subset]["total"] = len(subsets[subset])
        datasets[name] = {"counts": counts, **subsets}
    return {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "fractions": {"test": test, "val": val, "train": round(1 - test - val, 4)},
        "rule": "per class: sort keys, shuffle with random.Random(f'{seed}:{class_index}'), "
        "first round(n*test) -> test, next round(n*val) -> val, rest -> train",
        "datasets": datasets,
    }


def extend_split(
    base: dict[str, Any], roots: Sequence[Path], seed: int = 20261123, test: float = 0.15, val: float = 0.15
) -> dict[str, Any]:
    """``base`` (a split document) with ``roots`` added: a folder it already has keeps
    its keys and only its new photos are split; a new folder is split whole. No photo
    ever changes subset, so a model's test photos stay unseen across retrains."""
    document = json.loads(json.dumps(base))
    for root in roots:
        name = dataset_name(root)
        items = list_dataset(root)
        entry = document["datasets"].get(name)
        if entry is None:
            entry = make_split(items, seed=seed, test=test, val=val)
        else:
            added = make_split(unsplit(items, entry), seed=seed, test=test, val=val) if unsplit(items, entry) else {}
            entry = {s: sorted(set(entry[s]) | set(added.get(s, []))) for s in SUBSETS}
        counts = {subset: {c: sum(k.split("/")[0] == c for k in entry[subset]) for c in CLASSES} for subset in SUBSETS}
        for subset in SUBSETS:
            counts[subset]["total"] = len(entry[subset])
        document["datasets"][name] = {"counts": counts, **{s: entry[s] for s in SUBSETS}}
    return document


def write_split(document: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def read_split(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such split file") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable split file ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("datasets"), dict):
        raise DatasetError(f"{path}: not a split file (no 'datasets' table)")
    return document


def split_for(document: dict[str, Any], root: Path, split_path: Path | str = "split") -> dict[str, Any]:
    """The split entry of the dataset folder ``root`` (matched by folder name;
    a split file with a single dataset applies to any folder)."""
    datasets = document["datasets"]
    name = dataset_name(root)
    if name in datasets:
        return datasets[name]
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    raise DatasetError(
        f"{split_path} has no split for dataset folder {name!r} (it has {sorted(datasets)}); "
        "make one with: bin-agent split DATASET_DIR... --out FILE"
    )


def select(items: Sequence[Item], entry: dict[str, Any], subset: str) -> list[Item]:
    """The items of ``subset`` ("train", "val", "test" or "all")."""
    if subset == "all":
        return list(items)
    if subset not in SUBSETS:
        raise DatasetError(f"unknown subset {subset!r} (expected one of {list(SUBSETS) + ['all']})")
    wanted = set(entry[subset])
    return [item for item in items if item.key in wanted]


def unsplit(items: Sequence[Item], entry: dict[str, Any]) -> list[Item]:
    """Items the split file does not know (photos added after the split was made)."""
    known = set(entry["train"]) | set(entry["val"]) | set(entry["test"])
    return [item for item in items if item.key not in known]


def class_weights(
    labels: Iterable[int], n_classes: int = len(CLASSES), factors: Mapping[int, float] | None = None
) -> dict[int, float]:
    """Balanced weights ``n / (k * n_c)`` (classes without photos get 0), each
    multiplied by its entry in ``factors`` (e.g. ``{5: 2.0}`` counts a trash
    photo twice as much again: a lever on one class's recall)."""
    counts = np.bincount(np.fromiter(labels, dtype=np.int64), minlength=n_classes)
    total = counts.sum()
    factors = factors or {}
    return {
        c: (float(total / (n_classes * counts[c])) * factors.get(c, 1.0) if counts[c] else 0.0)
        for c in range(n_classes)
    }


def source_balance(labels: Sequence[int] | np.ndarray, sources: Sequence[int] | np.ndarray, power: float) -> np.ndarray:
    """A factor per photo that shares each class's weight among the sources
    (dataset folders) that have photos of it, so that one large source does not
    define a class alone.

    A photo of class ``c`` from a source with ``n_sc`` photos of ``c`` gets a
    factor proportional to ``n_sc ** -power``, scaled so the factors of class
    ``c`` still sum to the class's photo count (the class weights are left as
    they are). ``power`` 0: every photo counts the same (factor 1); 1: every
    source counts the same within a class; 0.5 in between.
    """
    labels_a = np.asarray(labels, dtype=np.int64)
    sources_a = np.asarray(sources, dtype=np.int64)
    if labels_a.shape != sources_a.shape:
        raise ValueError("labels and sources differ in length")
    factors = np.ones(len(labels_a), dtype=np.float64)
    for c in np.unique(labels_a):
        in_class = labels_a == c
        per_source = {int(s): int(n) for s, n in zip(*np.unique(sources_a[in_class], return_counts=True))}
        raw = np.array([per_source[int(s)] ** -power for s in sources_a[in_class]])
        factors[in_class] = raw * in_class.sum() / raw.sum()
    return factors.astype(np.float32)


def parse_class_factors(texts: Iterable[str]) -> dict[str, float]:
    """``["trash=2"]`` -> ``{"trash": 2.0}``, checked by :func:`class_factor_indices`;
    a :class:`DatasetError` names the first entry that is not ``CLASS=FACTOR``."""
    factors: dict[str, float] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep:
            raise DatasetError(f"class weight {text!r}: expected CLASS=FACTOR with CLASS one of {', '.join(CLASSES)}")
        try:
            factors[name.strip()] = float(value)
        except ValueError:
            raise DatasetError(f"class weight {text!r}: the factor must be a positive number") from None
    class_factor_indices(factors)
    return factors


def class_factor_indices(factors: Mapping[str, float]) -> dict[int, float]:
    """``{"trash": 2.0}`` -> ``{5: 2.0}`` for :func:`class_weights`; a
    :class:`DatasetError` for an unknown class or a factor that is not a
    positive number."""
    indices: dict[int, float] = {}
    for name, factor in factors.items():
        if name not in CLASSES:
            raise DatasetError(
                f"class weight {name}={factor}: expected CLASS=FACTOR with CLASS one of {', '.join(CLASSES)}"
            )
        if not (factor > 0 and math.isfinite(factor)):
            raise DatasetError(f"class weight {name}={factor}: the factor must be a positive number")
        indices[CLASSES.index(name)] = float(factor)
    return indices


# --------------------------------------------------------------------- pixels


def eval_pixels(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """The model input for validation, test and calibration: exactly the agent's
    ``fit_to_input(load_image(path), spec)`` (``uint8``, ``(H, W, 3)``)."""
    return fit_to_input(load_image(path), spec)


def keras_batch(views: Sequence[np.ndarray]) -> np.ndarray:
    """The tensor the Keras model (and the int8 calibration) is fed: the
    ``uint8`` views as ``float32`` raw 0..255 pixels, the scaling being a layer
    inside the model."""
    return np.stack(views).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """Random changes that mimic a bin camera, applied to a full photo.

    A photo is sometimes turned by a small angle; then a random box (zoom and
    shift) goes through :func:`bin_agent.preprocess.crop_resize`, exactly as
    the agent squashes a whole frame to the model's input. Items in a bin have
    no "up", so the resized view is then turned by a random multiple of 90
    degrees and mirrored half the time. Turning *after* the resize matters for
    a non-square camera frame: a 3:4 photo turned first and squashed after
    would stretch the item by (4/3)² relative to what the model sees at run
    time. Last come brightness, contrast, colour and white-balance jitter and,
    sometimes, a slight blur.
    """

    min_area: float = 0.55
    max_aspect_change: float = 0.25  # log of the box's aspect ratio change
    small_rotation_p: float = 0.3
    small_rotation_deg: float = 20.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    channel_gain: float = 0.06
    blur_p: float = 0.25
    blur_radius: tuple[float, float] = (0.3, 1.2)
    # a plain-background photo's item pasted on a new background this often (backgrounds.py)
    background_p: float = 0.8
    item_scale: tuple[float, float] = (0.45, 0.9)  # the item's longer side over the view's side
    # this share of the pasted items is then seen as the agent sees an item in the bin: the item's
    # box as the motion trigger finds it, no margin, squashed into the input within the model's
    # item stretch (bin_agent.geometry.crop_box), instead of the whole canvas. Off by default: at
    # 0.5 (run v5c) the crops were classified better but less confidently, and the validation
    # bins sent more items to the fallback than without it (models/README.md, "The model before: v5n")
    item_crop_p: float = 0.0
    item_crop_scale: tuple[float, float] = (0.3, 0.7)  # the item's longer side over the floor's side
    # each edge of the trigger's box lies this far outside the item's (a share of its size; below
    # 0: inside): a block-wise motion box cuts a little off or takes a little floor and shadow
    item_crop_edge: tuple[float, float] = (-0.06, 0.12)
    camera: CameraEffects = field(default_factory=CameraEffects)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def random_box(height: int, width: int, aug: Augmentation, rng: np.random.Generator) -> Box:
    """A random crop box covering ``min_area``..1 of the photo."""
    area = rng.uniform(aug.min_area, 1.0)
    log_ratio = rng.uniform(-aug.max_aspect_change, aug.max_aspect_change)
    box_w = min(width, width * math.sqrt(area) * math.exp(log_ratio / 2))
    box_h = min(height, height * math.sqrt(area) * math.exp(-log_ratio / 2))
    left = rng.uniform(0, width - box_w)
    top = rng.uniform(0, height - box_h)
    return (left, top, left + box_w, top + box_h)


def augment(
    image: np.ndarray, spec: PreprocessSpec, rng: np.random.Generator, aug: Augmentation = Augmentation()
) -> np.ndarray:
    """One random training view of an RGB ``uint8`` photo, at the model's input size.

    A photo on a plain background (:func:`~bin_agent.training.backgrounds.item_mask`)
    has its item pasted on a new background ``background_p`` of the time; every
    view then gets the camera effects (colour temperature, exposure, noise, JPEG).
    """
    quarter_turns = int(rng.integers(4))
    mirror = bool(rng.random() < 0.5)
    height, width = spec.input_size
    if height == width and rng.random() < aug.background_p:
        mask = item_mask(image)
        if mask is not None:
            if rng.random() < aug.item_crop_p:
                pixels = _as_cropped_in_bin(image, mask, spec, rng, aug)
            else:
                pixels = composite(image, mask, width, rng, aug.item_scale)
            pixels = np.rot90(pixels, quarter_turns)
            if mirror:
                pixels = pixels[:, ::-1]
            return _jitter(np.ascontiguousarray(pixels), rng, aug)
    if rng.random() < aug.small_rotation_p:
        angle = rng.uniform(-aug.small_rotation_deg, aug.small_rotation_deg)
        corners = np.concatenate([image[:4, :4], image[-4:, -4:], image[:4, -4:], image[-4:, :4]])
        fill = tuple(int(v) for v in np.median(corners.reshape(-1, 3), axis=0))
        image = np.asarray(Image.fromarray(image).rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill))
    box = random_box(image.shape[0], image.shape[1], aug, rng)
    pixels = crop_resize(image, box, spec.input_size)
    if height != width:
        quarter_turns &= 2  # a quarter turn would not fit a non-square input
    pixels = np.rot90(pixels, quarter_turns)
    if mirror:
        pixels = pixels[:, ::-1]
    return _jitter(np.ascontiguousarray(pixels), rng, aug)


def _as_cropped_in_bin(
    image: np.ndarray, mask: ItemMask, spec: PreprocessSpec, rng: np.random.Generator, aug: Augmentation
) -> np.ndarray:
    """The item pasted on a floor twice the input's side, then cut out by the
    region the agent would classify (``bin_agent.agent.region_to_classify``
    with the trigger's box): a square input, the item filling it."""
    side = 2 * spec.input_size[1]
    floor, (left, top, right, bottom) = composite_placed(image, mask, side, rng, aug.item_crop_scale)
    item_w, item_h = right - left, bottom - top
    edges = rng.uniform(*aug.item_crop_edge, size=4) * np.array([item_w, item_h, item_w, item_h])
    box = (
        max(0.0, (left - edges[0]) / side),
        max(0.0, (top - edges[1]) / side),
        min(1.0, (right + edges[2]) / side),
        min(1.0, (bottom + edges[3]) / side),
    )
    region = crop_box((side, side), box, margin=0.0, stretch=spec.item_stretch)
    return crop_resize(floor, region, spec.input_size)


def _jitter(pixels: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Brightness, contrast, colour, blur, channel gains, then the camera effects."""
    pil = Image.fromarray(pixels)
    pil = ImageEnhance.Brightness(pil).enhance(rng.uniform(1 - aug.brightness, 1 + aug.brightness))
    pil = ImageEnhance.Contrast(pil).enhance(rng.uniform(1 - aug.contrast, 1 + aug.contrast))
    pil = ImageEnhance.Color(pil).enhance(rng.uniform(1 - aug.saturation, 1 + aug.saturation))
    if rng.random() < aug.blur_p:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(*aug.blur_radius)))
    out = np.asarray(pil).astype(np.float32)
    out *= rng.uniform(1 - aug.channel_gain, 1 + aug.channel_gain, size=3).astype(np.float32)
    return camera_effects(np.clip(np.round(out), 0, 255).astype(np.uint8), rng, aug.camera)


def load_items(items: Sequence[Item], on_error=None) -> tuple[list[np.ndarray], list[Item], list[str]]:
    """Decode photos; unreadable ones are skipped and reported (not raised)."""
    images, kept, errors = [], [], []
    for item in items:
        try:
            images.append(load_image(item.path))
            kept.append(item)
        except ImageError as exc:
            errors.append(str(exc))
            if on_error is not None:
                on_error(str(exc))
    return images, kept, errors
