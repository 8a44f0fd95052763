"""The one definition of image preprocessing.

Training, evaluation, calibration of the int8 model and the running agent all
turn a photo into a model input through this module, so a model never sees at
run time a tensor prepared differently from the ones it was trained on.

Two steps, both described by a :class:`PreprocessSpec` read from the model's
metadata sidecar:

1. :func:`fit_to_input` — crop a central region of the RGB frame and resize it
   (Pillow, bilinear with antialiasing) to the model's input size. The result
   is still ``uint8``; this is what the int8 model consumes directly.
2. :func:`normalize` — ``(pixel - mean) / std`` as ``float32``, for float
   models. The shipped models carry their own scaling layer, so their
   metadata says ``mean = 0, std = 1`` and step 2 is the identity.

Training-time augmentation picks its own (random) crop box and calls
:func:`crop_resize` with it; everything else is shared.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Box = tuple[float, float, float, float]
"""A crop box ``(left, top, right, bottom)`` in pixels of the source image."""


from ..errors import BinAgentError  # noqa: E402
from .limits import DEFAULT_MAX_PIXELS  # noqa: E402  (re-exported: one default)


class ImageError(BinAgentError, ValueError):
    """An image file cannot be read or is not a usable photo."""

    exit_code = os.EX_DATAERR


ITEM_STRETCH = 2.0
"""How far the region of an item may be squashed into the input of a model whose
preprocessing squashes (``keep_aspect`` false; see :func:`~bin_agent.geometry.crop_box`).
Such a model was trained on whole photos squashed to its input (TrashNet's 4:3 ones by
1.33), so it knows items squashed, and on held-out items laid in a synthetic bin the
item's own box classified better than the box widened to the input's shape
(``scripts/crop_shape.py``, validation: 0.81 against 0.74 right for cut-out TrashNet
items with no margin). The bound keeps a long thin item (a straw) from being squashed
further than that; up to it the result was the same as with no bound."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes a model input.

    :param input_size: ``(height, width)`` of the model input.
    :param crop_fraction: share of the frame, per side, kept around the
        centre before resizing (1.0 keeps the whole frame).
    :param keep_aspect: if true, the kept region is the largest centred box with
        the model's aspect ratio (a centre crop); if false, the whole kept
        region is resized to the input size (a squash), so nothing near the
        frame edges is cut away.
    :param mean: per-channel value subtracted by :func:`normalize`.
    :param std: per-channel divisor used by :func:`normalize`.
    """

    input_size: tuple[int, int] = (224, 224)
    crop_fraction: float = 1.0
    keep_aspect: bool = False
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        height, width = self.input_size
        if height < 8 or width < 8:
            raise ValueError(f"input_size {self.input_size} is too small")
        if not 0.1 <= self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in [0.1, 1.0], got {self.crop_fraction}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> PreprocessSpec:
        """Build the spec from a model metadata dict (see ``models/README.md``).

        Reads ``input_size`` and the optional ``preprocessing`` table:
        ``crop_fraction``, ``keep_aspect``, ``mean``, ``std``.
        Each value must be of its JSON type: a cast would read ``"keep_aspect": "false"`` as
        true (``bool("false")``) and ``"input_size": [160.7, 160]`` as 160.

        :raises ValueError: a value that is not of its type, naming its key.
        """
        size = metadata["input_size"]
        if _is_int(size):
            size = (size, size)
        if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_int(n) for n in size):
            raise ValueError(f"'input_size' is {size!r}, expected a whole number or [height, width]")
        prep = metadata.get("preprocessing", {})
        if not isinstance(prep, Mapping):
            raise ValueError(f"'preprocessing' is {prep!r}, expected a table")
        keep_aspect = prep.get("keep_aspect", False)
        if not isinstance(keep_aspect, bool):
            raise ValueError(f"'preprocessing.keep_aspect' is {keep_aspect!r}, expected true or false")
        return cls(
            input_size=(int(size[0]), int(size[1])),
            crop_fraction=_number(prep.get("crop_fraction", 1.0), "preprocessing.crop_fraction"),
            keep_aspect=keep_aspect,
            mean=_triple(prep.get("mean", 0.0), "preprocessing.mean"),
            std=_triple(prep.get("std", 1.0), "preprocessing.std"),
        )

    @property
    def item_stretch(self) -> float:
        """How far an item's region may be squashed into the input: 1 when the
        preprocessing keeps the aspect, else :data:`ITEM_STRETCH`."""
        return 1.0 if self.keep_aspect else ITEM_STRETCH

    def to_metadata(self) -> dict[str, Any]:
        """The inverse of :meth:`from_metadata` (``input_size`` + ``preprocessing``)."""
        return {
            "input_size": list(self.input_size),
            "preprocessing": {
                "crop_fraction": self.crop_fraction,
                "keep_aspect": self.keep_aspect,
                "mean": list(self.mean),
                "std": list(self.std),
                "resize": "pillow-bilinear",
                "channel_order": "RGB",
            },
        }

    @property
    def is_identity_normalization(self) -> bool:
        return self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, key: str) -> float:
    """A metadata number (not a string, not true/false, which float() would take)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'{key}' is {value!r}, expected a number")
    return float(value)


def _triple(value: Any, key: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)):
        return (_number(value, key),) * 3
    if len(value) != 3:
        raise ValueError(f"'{key}' is {value!r}, expected one number or three")
    return (_number(value[0], key), _number(value[1], key), _number(value[2], key))


JPEG_DRAFT_SCALES = (1, 2, 4, 8)
"""The scales libjpeg can decode at directly (``Image.draft``)."""


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo as an ``(H, W, 3)`` RGB ``uint8`` array, in bounded memory.

    The size in the file's header is checked before anything is decoded: a
    JPEG larger than ``max_pixels`` is decoded at 1/2, 1/4 or 1/8 scale
    (libjpeg's draft mode, the smallest reduction that fits); any other image
    larger than ``max_pixels`` is refused, and so is a progressive JPEG larger
    than ``max_pixels``: libjpeg keeps its full-resolution coefficients in
    memory whatever the draft scale, so only its full size bounds its cost.
    A small file can declare a huge picture (a 15,000 x 15,000 PNG compresses
    to 250 KB), so the file size says nothing. EXIF orientation is applied (phone photos in a retraining
    set are often stored rotated). Raises :class:`ImageError` with the path
    and the reason instead of Pillow's own exceptions.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # The limit below is ours; Pillow's own (89 MP) warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open(path) as img:
                _fit_decode_size(img, max_pixels, path)
                oriented = ImageOps.exif_transpose(img)
                return np.asarray(oriented.convert("RGB"))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def _open(path: Path) -> Image.Image:
    """``Image.open``, except for a JPEG over Pillow's own bomb limit (2 x MAX_IMAGE_PIXELS,
    179 MP), which Pillow refuses as it opens it, before a draft could reduce it: its plugin
    reads just the header, and :func:`_fit_decode_size` bounds what is decoded."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        with open(path, "rb") as head:
            if head.read(3) != b"\xff\xd8\xff":
                raise
        from PIL import JpegImagePlugin

        return JpegImagePlugin.JpegImageFile(path)


def _fit_decode_size(img: Image.Image, max_pixels: int, path: Path) -> None:
    """Make ``img`` decode at most ``max_pixels`` (JPEG draft) or raise :class:`ImageError`."""
    width, height = img.size
    if width * height <= max_pixels:
        return
    if img.format == "JPEG" and img.info.get("progressive"):
        raise ImageError(
            f"{path}: a progressive JPEG of {width}x{height} pixels is more than the limit of {max_pixels:,} "
            "(decoding one holds all of it in memory, reduced or not); scale it down or save it as a baseline JPEG"
        )
    if img.format == "JPEG":
        for scale in JPEG_DRAFT_SCALES[1:]:
            if -(-width // scale) * -(-height // scale) <= max_pixels:
                img.draft("RGB", (max(1, width // scale), max(1, height // scale)))
                break
    if img.size[0] * img.size[1] > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} pixels is more than the limit of {max_pixels:,}; scale the image down"
        )


def center_box(image_shape: tuple[int, ...], spec: PreprocessSpec) -> Box:
    """The deterministic crop box used at inference (and for validation)."""
    height, width = image_shape[0], image_shape[1]
    keep_w, keep_h = width * spec.crop_fraction, height * spec.crop_fraction
    if spec.keep_aspect:
        target_h, target_w = spec.input_size
        aspect = target_w / target_h
        if keep_w / keep_h > aspect:
            keep_w = keep_h * aspect
        else:
            keep_h = keep_w / aspect
    left = (width - keep_w) / 2.0
    top = (height - keep_h) / 2.0
    return (left, top, left + keep_w, top + keep_h)


def crop_resize(image: np.ndarray, box: Box, input_size: tuple[int, int]) -> np.ndarray:
    """Resize the ``box`` region of an RGB ``uint8`` image to ``input_size``.

    Pillow's bilinear filter widens its support when it shrinks, so a 640x480
    frame is properly antialiased down to 224x224 in one pass.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB uint8 image, got {image.dtype} {image.shape}")
    height, width = input_size
    pil = Image.fromarray(image)
    resized = pil.resize((width, height), resample=Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized)


def fit_to_input(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Centre-crop and resize an RGB ``uint8`` frame to the model input (``uint8``)."""
    return crop_resize(image, center_box(image.shape, spec), spec.input_size)


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """``(pixels - mean) / std`` as ``float32`` (works on one image or a batch)."""
    out = pixels.astype(np.float32)
    if not spec.is_identity_normalization:
        out -= np.asarray(spec.mean, dtype=np.float32)
        out /= np.asarray(spec.std, dtype=np.float32)
    return out


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The full inference transform: :func:`fit_to_input` then :func:`normalize`."""
    return normalize(fit_to_input(image, spec), spec)


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ITEM_STRETCH",
    "Box",
    "ImageError",
    "PreprocessSpec",
    "center_box",
    "crop_resize",
    "fit_to_input",
    "load_image",
    "normalize",
    "preprocess",
]
