"""The shipped float weights (``models/waste_mobilenetv2_float.weights.h5``, made by
``scripts/float_weights_from_tflite.py`` from the shipped int8 model) are the shipped
model: loaded into the model ``train.py`` builds, they classify TrashNet validation
photos as the shipped int8 model does. ImageNet weights with a new head would not.

They are stored as float16 (half of 9.5 MB) and ``--init-weights`` turns them into
float32 itself (``train.load_run_weights``), so a retrain starts from float32 weights
holding exactly the stored values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bin_agent import DEFAULT_MODEL
from tests.helpers import needs_tensorflow

REPO = Path(__file__).resolve().parent.parent
PHOTOS = 24


def _shipped_model_loaded_as_init_weights_does(monkeypatch: pytest.MonkeyPatch | None = None):
    """The model ``train.py`` builds, with the shipped file loaded by ``load_run_weights``;
    with ``monkeypatch``, also the dtypes of every file Keras itself was given to read."""
    import keras

    from bin_agent.training.train import (
        SHIPPED_FLOAT_WEIGHTS,
        TrainConfig,
        build_models,
        load_run_weights,
        weights_file_dtypes,
    )

    read_by_keras: list[set[str]] = []
    if monkeypatch is not None:
        keras_load = keras.Model.load_weights

        def spy(self, filepath, *args, **kwargs):
            read_by_keras.append(weights_file_dtypes(Path(filepath)))
            return keras_load(self, filepath, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "load_weights", spy)
    full = build_models(TrainConfig(datasets=[], out=Path("."), weights=None))[0]
    load_run_weights(full, SHIPPED_FLOAT_WEIGHTS)  # what --init-weights shipped does
    return full, read_by_keras


def test_the_shipped_float_weights_classify_as_the_shipped_int8_model(trashnet_dir: Path) -> None:
    needs_tensorflow()
    from bin_agent.training import dataset as ds
    from scripts.float_weights_from_tflite import agreement, int8_probabilities, photos

    full, _ = _shipped_model_loaded_as_init_weights_does()
    views, _ = photos(trashnet_dir, REPO / "models" / "waste_split.json", "val", PHOTOS)
    assert len(views) == PHOTOS
    shipped = int8_probabilities(DEFAULT_MODEL, views)
    mine = np.asarray(full.predict(ds.keras_batch(views), verbose=0))
    figures = agreement(mine, shipped)
    assert figures["top1_agreement"] >= 0.9, figures
    # int8 rounding moves a probability by a few points, not a class's worth
    assert figures["mean_abs_diff"] < 0.02, figures


def test_the_shipped_float_weights_are_stored_as_float16() -> None:
    needs_tensorflow()  # h5py comes with the [train] extra
    from bin_agent.training.train import SHIPPED_FLOAT_WEIGHTS, weights_file_dtypes

    assert SHIPPED_FLOAT_WEIGHTS.is_file(), f"{SHIPPED_FLOAT_WEIGHTS} is not committed"
    assert weights_file_dtypes(SHIPPED_FLOAT_WEIGHTS) == {"float16"}
    # 2,265,670 values x 2 bytes, plus the file's structure (as float32: 9,492,960 bytes)
    assert SHIPPED_FLOAT_WEIGHTS.stat().st_size < 5_000_000


def test_init_weights_turns_the_float16_file_into_float32_before_keras_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    needs_tensorflow()
    import h5py

    from bin_agent.training.train import SHIPPED_FLOAT_WEIGHTS

    full, read_by_keras = _shipped_model_loaded_as_init_weights_does(monkeypatch)
    # the conversion is ours, not a cast the backend may or may not make
    assert read_by_keras == [{"float32"}]
    assert {w.dtype for w in full.weights} == {"float32"}
    # float16 -> float32 is exact: the model holds the stored values themselves
    with h5py.File(SHIPPED_FLOAT_WEIGHTS, "r") as h5:
        stored = h5["layers/dense/vars/0"][()]
    assert stored.dtype == np.float16
    kernel = full.get_layer("probabilities").get_weights()[0]
    assert kernel.dtype == np.float32 and np.array_equal(kernel, stored.astype(np.float32))


def test_the_committed_weights_are_what_the_script_reconstructs(tmp_path: Path) -> None:
    needs_tensorflow()
    from scripts.float_weights_from_tflite import reconstruct

    rebuilt = reconstruct(DEFAULT_MODEL).get_weights()
    committed, _ = _shipped_model_loaded_as_init_weights_does()
    assert len(rebuilt) == len(committed.get_weights())
    for mine, theirs in zip(rebuilt, committed.get_weights()):
        # stored as float16: the rebuilt float32 values rounded to it, then read back
        assert np.array_equal(mine.astype(np.float16).astype(np.float32), theirs)


def test_a_weight_too_large_for_float16_is_refused_not_stored_as_infinity(tmp_path: Path) -> None:
    needs_tensorflow()  # h5py comes with the [train] extra
    import h5py

    from bin_agent.training.train import convert_weights_file, weights_file_dtypes

    wide = tmp_path / "wide.weights.h5"
    with h5py.File(wide, "w") as h5:
        h5["layers/dense/vars/0"] = np.array([1.0, 70_000.0], dtype=np.float32)  # float16 ends at 65504
    with pytest.raises(ValueError, match="does not fit in float16"):
        convert_weights_file(wide, tmp_path / "narrow.weights.h5", "float16")
    with h5py.File(wide, "a") as h5:
        h5["layers/dense/vars/0"][1] = 60_000.0
    convert_weights_file(wide, tmp_path / "narrow.weights.h5", "float16")
    assert weights_file_dtypes(tmp_path / "narrow.weights.h5") == {"float16"}


def test_a_missing_trashnet_folder_is_named_before_any_weights_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    needs_tensorflow()  # the script imports the trainer
    from scripts.float_weights_from_tflite import main

    out = tmp_path / "float.weights.h5"
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "no-trashnet"), "--out", str(out)])
    assert exit_info.value.code == 2
    assert "no-trashnet: no such folder" in capsys.readouterr().err
    assert not out.exists()
