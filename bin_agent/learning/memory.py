"""The training memory: embeddings of the model's training photos, shipped beside it.

``bin-agent learn`` refits the head on the bin's own labels *mixed with* this
memory, so classes the bin has not been told about yet are not forgotten.
``<name>.memory.npz`` lies beside ``<name>.tflite`` (``scripts/build_memory.py``
builds it for any model, from the training split of its datasets).

The file (NumPy ``.npz``, no pickles):

``embeddings``
    ``uint8`` (photos × features): each photo's embedding, the mean over the
    model's views (as the classifier computes it), stored as
    ``round(value / scale)`` with ``scale`` = the largest value / 255 (the
    embedding of a ReLU6 network lies in [0, 6]); 1.3 KB a photo.
``labels``
    ``int16`` class index of each photo.
``meta``
    a JSON string: ``format``, ``classes``, ``scale``, ``backbone_sha256`` (the
    ``.tflite`` the embeddings came from: a memory of another backbone is
    refused), ``model_version``, ``views``, ``sources`` (photos per dataset and
    subset) and ``per_class``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..classify.head import UNREADABLE_NPZ

MEMORY_SUFFIX = ".memory.npz"
MEMORY_FORMAT = 1


class TrainingMemoryError(ValueError):
    """A memory file is missing, corrupt or belongs to another backbone."""


def memory_path(model: str | Path) -> Path:
    """``x.memory.npz`` beside ``x.tflite``."""
    return Path(model).with_suffix(MEMORY_SUFFIX)


@dataclass
class Memory:
    """Embeddings and class indexes of training photos (see the module doc)."""

    embeddings: np.ndarray  # float32 (n, features)
    labels: np.ndarray  # int (n,)
    classes: list[str]
    backbone_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def class_means(self) -> np.ndarray:
        """(classes × features) float64: each class's mean embedding (zeros for a class with
        no photo), computed once per memory (a learn aligns with it once per fold)."""
        means = np.zeros((len(self.classes), self.embeddings.shape[1]), np.float64)
        for c in np.unique(self.labels):
            means[c] = self.embeddings[self.labels == c].mean(axis=0)
        return means

    @classmethod
    def load(cls, path: str | Path) -> Memory:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                quantized = np.asarray(data["embeddings"])
                labels = np.asarray(data["labels"]).astype(np.int64)
                meta = json.loads(str(data["meta"]))
        except FileNotFoundError:
            raise TrainingMemoryError(
                f"{path}: no training memory beside the model (scripts/build_memory.py)"
            ) from None
        except UNREADABLE_NPZ as exc:
            raise TrainingMemoryError(f"{path}: not a readable training memory ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != MEMORY_FORMAT:
            raise TrainingMemoryError(f"{path}: unknown memory format")
        if quantized.ndim != 2 or labels.shape != (quantized.shape[0],):
            raise TrainingMemoryError(f"{path}: embeddings {quantized.shape} and labels {labels.shape} do not agree")
        classes, scale = meta.get("classes"), meta.get("scale")
        if not isinstance(classes, list) or not classes:
            raise TrainingMemoryError(f"{path}: its meta lists no classes")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise TrainingMemoryError(f"{path}: its meta's scale {scale!r} is not a positive number")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise TrainingMemoryError(
                f"{path}: class indexes {labels.min()}..{labels.max()} outside its {len(classes)} classes"
            )
        return cls(
            embeddings=quantized.astype(np.float32) * float(scale),
            labels=labels,
            classes=[str(c) for c in classes],
            backbone_sha256=str(meta.get("backbone_sha256", "")),
            meta=meta,
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        top = float(self.embeddings.max()) if self.embeddings.size else 1.0
        scale = (top if top > 0 else 1.0) / 255.0
        quantized = np.clip(np.round(self.embeddings / scale), 0, 255).astype(np.uint8)
        meta = dict(self.meta) | {
            "format": MEMORY_FORMAT,
            "classes": list(self.classes),
            "scale": scale,
            "backbone_sha256": self.backbone_sha256,
            "per_class": {c: int(np.sum(self.labels == i)) for i, c in enumerate(self.classes)},
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez_compressed(
                f, embeddings=quantized, labels=self.labels.astype(np.int16), meta=np.array(json.dumps(meta))
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path


def spread(members: Sequence[int], count: int) -> list[int]:
    """``count`` of ``members`` spread evenly over them in their order (all if fewer)."""
    if len(members) <= count:
        return list(members)
    return [members[int(k * len(members) / count)] for k in range(count)]


def pick_per_class(labels: Sequence[int], per_class: int, sources: Sequence[str] | None = None) -> list[int]:
    """Indexes of at most ``per_class`` items of each class, spread evenly over each
    class's items in their given order (deterministic: the same photos every build).

    With ``sources`` (the dataset of each item), each class's quota is shared evenly
    between the datasets that have it, a dataset with fewer photos of the class than
    its share giving the rest to the others: a dataset with few photos of a class is
    still represented instead of being outnumbered by a larger one."""
    chosen: list[int] = []
    for c in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == c]
        if sources is None:
            chosen += spread(members, per_class)
            continue
        by_source: dict[str, list[int]] = {}
        for i in members:
            by_source.setdefault(sources[i], []).append(i)
        left = per_class
        groups = sorted(by_source.values(), key=len)  # the smallest first: what they cannot use goes on
        for n, group in enumerate(groups):
            take = min(len(group), left // (len(groups) - n))
            chosen += spread(group, take)
            left -= take
    return sorted(chosen)


def build(
    embed: Callable[[Path], np.ndarray],
    photos: Sequence[tuple[Path, int]],
    classes: Sequence[str],
    backbone_sha256: str,
    meta: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> Memory:
    """The memory of ``photos`` (path, class index), each embedded by ``embed``."""
    embeddings = []
    for done, (path, _) in enumerate(photos, 1):
        embeddings.append(embed(path))
        if progress is not None:
            progress(done, len(photos))
    return Memory(
        embeddings=np.asarray(embeddings, np.float32),
        labels=np.asarray([label for _, label in photos], np.int64),
        classes=list(classes),
        backbone_sha256=backbone_sha256,
        meta=meta,
    )
