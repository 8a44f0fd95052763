"""The shipped int8 model on the held-out test splits (never used in training or choice).

TrashNet comes from ``../shared`` (a failure in CI when it is missing). The added
public set (``data/wcnn``, rebuilt by ``scripts/build_training_data.py`` from a clone
of its repository, see models/README.md) is not in CI: its test is skipped, with
the reason, where the folder has not been built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bin_agent import CLASSES, DEFAULT_MODEL
from bin_agent.config import RouterSection
from bin_agent.training import dataset as ds
from bin_agent.training.evaluate import evaluate_items

REPO = Path(__file__).resolve().parent.parent
MODEL = DEFAULT_MODEL
SPLIT = REPO / "models" / "waste_split.json"
WCNN = REPO / "data" / "wcnn"
META = json.loads(MODEL.with_suffix(".json").read_text())

# The figures measured once on each test split (models/README.md); a test fails
# about 1 point (3 photos of the 321 or 388) below them. The model v6l (issue 22) was
# chosen on validation, then read once on both test splits (metrics "test_int8").
TRASHNET_TEST_MIN = 0.866  # measured 0.8754 (281 of 321)
WCNN_TEST_MIN = 0.901  # measured 0.9098 (353 of 388)


def test_shipped_files_agree() -> None:
    assert META["sha256"] == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert META["classes"] == list(CLASSES)
    assert MODEL.with_suffix(".labels.txt").read_text().split() == list(CLASSES)
    assert MODEL.stat().st_size <= 4 * 1024 * 1024
    assert META["views"] == 4 and META["temperature"]["T"] > 0


def test_default_threshold_is_the_one_chosen_on_validation() -> None:
    """Unset in the config, the router's threshold is the calibrated one the model card reports."""
    from bin_agent.classify.classifier import recommended_threshold
    from bin_agent.router import confidence_threshold

    assert RouterSection().confidence_threshold is None
    recommended = recommended_threshold(META, MODEL.with_suffix(".json"))
    assert recommended == META["recommended_confidence_threshold"]["value"]
    assert confidence_threshold(None, recommended) == (recommended, "the model's metadata")


def test_split_is_disjoint_and_complete(trashnet_dir: Path) -> None:
    entry = ds.split_for(ds.read_split(SPLIT), trashnet_dir)
    train, val, test = (set(entry[s]) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    keys = {item.key for item in ds.list_dataset(trashnet_dir)}
    assert train | val | test == keys
    assert len(test) >= 0.15 * len(keys) - len(CLASSES)


def _test_accuracy(root: Path) -> dict:
    entry = ds.split_for(ds.read_split(SPLIT), root)
    items = ds.select(ds.list_dataset(root), entry, "test")
    assert len(items) == len(entry["test"])
    return evaluate_items(MODEL, items)  # as the agent runs it: the metadata's 4 views


def test_shipped_model_on_the_trashnet_test_split(trashnet_dir: Path) -> None:
    result = _test_accuracy(trashnet_dir)
    assert result["input_quantization"] == {"dtype": "uint8", "scale": 1.0, "zero_point": 0}
    assert result["views"] == 4
    assert result["accuracy"] >= TRASHNET_TEST_MIN, f"test accuracy {result['accuracy']:.4f}"
    recorded = META["metrics"]["test_int8"]["trashnet"]["accuracy"]
    assert abs(result["accuracy"] - recorded) <= 2 / result["n"], "metadata and model disagree"


@pytest.mark.skipif(not WCNN.is_dir(), reason="data/wcnn not built (scripts/build_training_data.py, models/README.md)")
def test_shipped_model_on_the_added_sets_test_split() -> None:
    result = _test_accuracy(WCNN)
    assert result["accuracy"] >= WCNN_TEST_MIN, f"test accuracy {result['accuracy']:.4f}"
    recorded = META["metrics"]["test_int8"]["wcnn"]["accuracy"]
    assert abs(result["accuracy"] - recorded) <= 2 / result["n"], "metadata and model disagree"
