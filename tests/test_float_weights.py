"""The shipped float weights (``models/waste_mobilenetv2_float.weights.h5``, made by
``scripts/float_weights_from_tflite.py`` from the shipped int8 model) are the shipped
model: loaded into the model ``train.py`` builds, they classify TrashNet validation
photos as the shipped int8 model does. ImageNet weights with a new head would not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bin_agent import DEFAULT_MODEL
from tests.helpers import needs_tensorflow

REPO = Path(__file__).resolve().parent.parent
PHOTOS = 24


def test_the_shipped_float_weights_classify_as_the_shipped_int8_model(trashnet_dir: Path) -> None:
    needs_tensorflow()
    from bin_agent.training import dataset as ds
    from bin_agent.training.train import SHIPPED_FLOAT_WEIGHTS, TrainConfig, build_models, load_run_weights
    from scripts.float_weights_from_tflite import agreement, int8_probabilities, photos

    assert SHIPPED_FLOAT_WEIGHTS.is_file(), f"{SHIPPED_FLOAT_WEIGHTS} is not committed"
    assert SHIPPED_FLOAT_WEIGHTS.stat().st_size <= 10_000_000
    full = build_models(TrainConfig(datasets=[], out=Path("."), weights=None))[0]
    load_run_weights(full, SHIPPED_FLOAT_WEIGHTS)  # what --init-weights shipped does
    views, _ = photos(trashnet_dir, REPO / "models" / "waste_split.json", "val", PHOTOS)
    assert len(views) == PHOTOS
    shipped = int8_probabilities(DEFAULT_MODEL, views)
    mine = np.asarray(full.predict(ds.keras_batch(views), verbose=0))
    figures = agreement(mine, shipped)
    assert figures["top1_agreement"] >= 0.9, figures
    # int8 rounding moves a probability by a few points, not a class's worth
    assert figures["mean_abs_diff"] < 0.02, figures


def test_the_committed_weights_are_what_the_script_reconstructs(tmp_path: Path) -> None:
    needs_tensorflow()
    from bin_agent.training.train import SHIPPED_FLOAT_WEIGHTS, TrainConfig, build_models
    from scripts.float_weights_from_tflite import reconstruct

    rebuilt = reconstruct(DEFAULT_MODEL).get_weights()
    committed = build_models(TrainConfig(datasets=[], out=tmp_path, weights=None))[0]
    committed.load_weights(SHIPPED_FLOAT_WEIGHTS)
    assert len(rebuilt) == len(committed.get_weights())
    for mine, theirs in zip(rebuilt, committed.get_weights()):
        assert np.array_equal(mine, theirs)
