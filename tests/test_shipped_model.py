"""The shipped int8 model on the held-out test split (never used in training)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bin_agent import CLASSES
from bin_agent.training import dataset as ds
from bin_agent.training.evaluate import evaluate_items

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "trashnet_mobilenetv2_int8.tflite"
SPLIT = REPO / "models" / "trashnet_split.json"


def test_shipped_files_agree() -> None:
    meta = json.loads(MODEL.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert meta["classes"] == list(CLASSES)
    assert MODEL.with_suffix(".labels.txt").read_text().split() == list(CLASSES)
    assert MODEL.stat().st_size <= 4 * 1024 * 1024


def test_split_is_disjoint_and_complete(trashnet_dir: Path) -> None:
    entry = ds.split_for(ds.read_split(SPLIT), trashnet_dir)
    train, val, test = (set(entry[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    keys = {item.key for item in ds.list_dataset(trashnet_dir)}
    assert train | val | test == keys
    assert len(test) >= 0.15 * len(keys) - len(CLASSES)


def test_shipped_model_accuracy_on_test_split(trashnet_dir: Path) -> None:
    entry = ds.split_for(ds.read_split(SPLIT), trashnet_dir)
    items = ds.select(ds.list_dataset(trashnet_dir), entry, "test")
    assert len(items) == len(entry["test"])
    result = evaluate_items(MODEL, items)  # as the agent runs it: the metadata's 4 views
    assert result["input_quantization"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert result["views"] == 4
    # The target is 0.95; the test fails below 0.95 - 1 point. The shipped model
    # (quantization-aware fine-tuned) measured 0.9502 here (models/README.md).
    assert result["accuracy"] >= 0.94, f"test accuracy {result['accuracy']:.4f} < 0.94"
    recorded = json.loads(MODEL.with_suffix(".json").read_text())["metrics"]["test_int8"]
    assert abs(result["accuracy"] - recorded["accuracy"]) <= 2 / len(items), "metadata and model disagree"
