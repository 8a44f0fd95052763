"""Train on a tiny TrashNet subset, export int8, load it through the agent's Classifier.

About 35 s on the 2-core development machine (measured: 33.4 s in pytest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bin_agent import CLASSES
from bin_agent.classifier import Classifier
from bin_agent.preprocess import load_image
from bin_agent.training import dataset as ds


def _needs_tensorflow() -> None:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("TensorFlow is not installed (pip install -e '.[train]')")
        pytest.skip("TensorFlow is not installed")


def test_train_tiny_subset_and_export_int8(trashnet_dir: Path, imagenet_weights: Path, tmp_path: Path) -> None:
    _needs_tensorflow()
    from bin_agent.training.train import TrainConfig, train

    split = tmp_path / "split.json"
    ds.write_split(ds.split_document([trashnet_dir]), split)
    messages: list[str] = []
    config = TrainConfig(
        datasets=[trashnet_dir], out=tmp_path / "run", split=split, weights=str(imagenet_weights),
        input_size=96, copies=1, head_epochs=1, fine_epochs=1, max_per_class=3, calibration=8,
    )
    report = train(config, progress=messages.append)

    assert any("head epoch 1" in m for m in messages) and any("fine epoch 1" in m for m in messages)
    int8 = tmp_path / "run" / "trashnet_mobilenetv2_int8.tflite"
    clf = Classifier.from_model_path(int8)
    assert clf.input_dtype == np.uint8
    assert clf._input["quantization"] == (1.0, 0), "camera pixels must go straight into the int8 model"
    photo = sorted((trashnet_dir / "glass").glob("*.jpg"))[0]
    result = clf.classify(load_image(photo))
    assert result.label in CLASSES
    assert sum(result.probabilities) == pytest.approx(1.0, abs=0.03)

    meta = json.loads(int8.with_suffix(".json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["input_size"] == [96, 96]
    assert meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0] and meta["output_is_probability"] is True
    import hashlib

    assert meta["sha256"] == hashlib.sha256(int8.read_bytes()).hexdigest()
    saved = json.loads((tmp_path / "run" / "training_report.json").read_text())
    assert saved["phase2_finetune"]["history"] and saved["validation"]["int8"]["accuracy"] >= 0.0
    assert report["data"]["datasets"][str(trashnet_dir)]["train"] == 3 * len(CLASSES)
