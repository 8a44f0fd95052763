"""Builders for the learning tests: a bin's captured, labelled items made from TrashNet
test photos laid on the synthetic bin floor of ``scripts/synthetic_bin.py``."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from bin_agent import CLASSES
from bin_agent.classify.classifier import Classifier
from bin_agent.classify.preprocess import load_image
from bin_agent.learning.labels import LabelStore
from tests.helpers import REPO, SHIPPED_MODEL


def synthetic_bin():
    """``scripts/synthetic_bin.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("synthetic_bin", REPO / "scripts" / "synthetic_bin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def bin_photos(trashnet_dir: Path, per_class: int, seed: int = 3, offset: int = 0) -> list[tuple[np.ndarray, int]]:
    """``per_class`` TrashNet test-split photos per class (the shipped model never trained
    on them), as the synthetic bin's camera sees them: (image, class index)."""
    split = json.loads((SHIPPED_MODEL.parent / "waste_split.json").read_text())["datasets"]["trashnet"]["test"]
    module = synthetic_bin()
    rng = np.random.default_rng(seed)
    photos = []
    for index, label in enumerate(CLASSES):
        keys = [k for k in sorted(split) if k.startswith(f"{label}/")][offset : offset + per_class]
        photos += [(module.bin_photo(load_image(trashnet_dir / key), rng), index) for key in keys]
    order = np.random.default_rng(seed).permutation(len(photos))  # items come in any order
    return [photos[i] for i in order]


def write_captures(
    folder: Path,
    photos: Sequence[tuple[np.ndarray, int]],
    classifier: Classifier,
    *,
    labels: Sequence[str | None] | None = None,
    start: datetime | None = None,
    prefix: str = "e",
) -> list[dict]:
    """Capture ``photos`` as the agent does (JPEG + sidecar, what ``classifier`` said), and
    label them (``labels``: the class names to give, None to leave one unlabelled;
    default: the true class). Returns the sidecars."""
    folder.mkdir(parents=True, exist_ok=True)
    store = LabelStore(folder)
    start = start or datetime(2026, 12, 1, tzinfo=UTC)
    sidecars = []
    for n, (image, true_index) in enumerate(photos):
        time = (start + timedelta(seconds=10 * n)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        event_id = f"{prefix}{n:04d}"
        stem = f"{time.replace('-', '').replace(':', '').replace('.', '')}_{event_id}"
        Image.fromarray(image).save(folder / f"{stem}.jpg", quality=90)
        result = classifier.classify(image)
        sidecar = {
            "event_id": event_id,
            "time": time,
            "bin_id": "test-bin",
            "class": result.label,
            "confidence": round(result.confidence, 4),
            "top3": [{"class": c, "confidence": round(p, 4)} for c, p in result.top[:3]],
            "model_version": classifier.version,
            "compartment": "x",
            "fallback": False,
            "image": f"{stem}.jpg",
            "source": "",
        }
        (folder / f"{stem}.json").write_text(json.dumps(sidecar))
        label = CLASSES[true_index] if labels is None else labels[n]
        if label is not None:
            store.add(event_id, label, result.label, "test")
        sidecars.append(sidecar)
    return sidecars
