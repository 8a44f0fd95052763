"""Train on a tiny TrashNet subset, export int8, load it through the agent's Classifier.

One run per phase-2 mode: fresh views with a quantization-aware phase 3, and cached
views followed by phase 3 alone from the saved weights (``--init-weights``). On the
2-core development machine they took 98 s and 131 s in pytest (`pytest --durations=6`,
while another job shared the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bin_agent import CLASSES
from bin_agent.classify.classifier import Classifier
from bin_agent.classify.preprocess import load_image
from bin_agent.training import dataset as ds
from tests.helpers import needs_tensorflow


@pytest.mark.parametrize("online", [True, False], ids=["fresh-views+qat", "cached-views"])
def test_train_tiny_subset_and_export_int8(
    trashnet_dir: Path, imagenet_weights: Path, tmp_path: Path, online: bool
) -> None:
    needs_tensorflow()
    from bin_agent.training.train import TrainConfig, train

    split = tmp_path / "split.json"
    ds.write_split(ds.split_document([trashnet_dir]), split)
    messages: list[str] = []
    config = TrainConfig(
        datasets=[trashnet_dir],
        out=tmp_path / "run",
        split=split,
        weights=str(imagenet_weights),
        input_size=96,
        copies=1,
        head_epochs=1,
        fine_epochs=1,
        max_per_class=3,
        calibration=8,
        online=online,
        cut_layer="block_12_add",
        views=2,
        qat_epochs=1 if online else 0,
    )
    report = train(config, progress=messages.append)

    assert any("head epoch 1" in m for m in messages) and any("fine epoch 1" in m for m in messages)
    assert any("qat epoch 1" in m for m in messages) == online
    int8 = tmp_path / "run" / "waste_mobilenetv2_int8.tflite"
    clf = Classifier.from_model_path(int8)
    assert clf.input_dtype == np.uint8
    assert clf.views == 2, "the agent averages the views the model was trained to be run with"
    assert clf._input["quantization"] == (1.0, 0), "camera pixels must go straight into the int8 model"
    photo = sorted((trashnet_dir / "glass").glob("*.jpg"))[0]
    result = clf.classify(load_image(photo))
    assert result.label in CLASSES
    assert sum(result.probabilities) == pytest.approx(1.0, abs=0.03)

    meta = json.loads(int8.with_suffix(".json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["input_size"] == [96, 96] and meta["views"] == 2
    assert meta["preprocessing"]["mean"] == [0.0, 0.0, 0.0] and meta["output_is_probability"] is True
    import hashlib

    assert meta["sha256"] == hashlib.sha256(int8.read_bytes()).hexdigest()
    saved = json.loads((tmp_path / "run" / "training_report.json").read_text())
    assert saved["phase2_finetune"]["history"] and saved["validation"]["int8"]["accuracy"] >= 0.0
    assert report["data"]["datasets"][str(trashnet_dir)]["train"] == 3 * len(CLASSES)
    assert len(saved["phase3_quantization_aware"]["history"]) == (2 if online else 0)  # epoch 0 = PTQ alone
    # temperature scaling fitted on the validation photos and folded into the exported head
    assert saved["temperature"]["T"] > 0 and meta["temperature"]["T"] == saved["temperature"]["T"]
    assert saved["temperature"]["val_nll_after"] <= saved["temperature"]["val_nll_before"] + 1e-9
    # the router's threshold by the card's rule (a tiny run's validation may reach none)
    assert "recommended_confidence_threshold" not in meta or 0 < meta["recommended_confidence_threshold"]["value"] < 1

    if not online:
        # phase 3 alone, added to the finished run
        messages.clear()
        again = TrainConfig(
            datasets=[trashnet_dir],
            out=tmp_path / "qat",
            split=split,
            weights=str(imagenet_weights),
            input_size=96,
            head_epochs=0,
            fine_epochs=0,
            qat_epochs=1,
            max_per_class=3,
            calibration=8,
            cut_layer="block_12_add",
            init_weights=tmp_path / "run" / "best.weights.h5",
        )
        train(again, progress=messages.append)
        assert any("starting from" in m for m in messages) and any("qat epoch 1" in m for m in messages)
        assert not any("cache" in m or "head epoch" in m or "fine epoch" in m for m in messages)
        Classifier.from_model_path(tmp_path / "qat" / "waste_mobilenetv2_int8.tflite")


def test_unusable_init_weights_are_one_clear_error(tmp_path: Path) -> None:
    needs_tensorflow()
    from bin_agent.training.train import TrainConfig, TrainingSetupError, build_models, load_run_weights

    full = build_models(TrainConfig(datasets=[], out=tmp_path, weights=None, input_size=96))[0]
    garbage = tmp_path / "best.weights.h5"
    garbage.write_bytes(b"not an HDF5 file")
    with pytest.raises(TrainingSetupError, match="not the weights of a bin-agent MobileNetV2 run"):
        load_run_weights(full, garbage)
    with pytest.raises(FileNotFoundError):
        load_run_weights(full, tmp_path / "missing.h5")


def test_include_val_trains_on_train_and_val_but_never_test(trashnet_dir: Path, tmp_path: Path) -> None:
    from bin_agent.training.train import TrainConfig, gather

    split = tmp_path / "split.json"
    ds.write_split(ds.split_document([trashnet_dir]), split)
    entry = ds.split_for(ds.read_split(split), trashnet_dir)
    plain, val_plain, _ = gather(TrainConfig(datasets=[trashnet_dir], out=tmp_path, split=split), print)
    final, val_final, info = gather(
        TrainConfig(datasets=[trashnet_dir], out=tmp_path, split=split, include_val=True), print
    )

    keys = lambda items: {item.key for item in items}  # noqa: E731
    assert keys(plain) == set(entry["train"])
    assert keys(final) == set(entry["train"]) | set(entry["val"])
    assert keys(val_final) == keys(val_plain) == set(entry["val"])
    assert not keys(final) & set(entry["test"])
    assert info["datasets"][str(trashnet_dir)]["val use"] == "trained on"


def test_phase_two_trains_only_the_blocks_above_the_cut(tmp_path: Path) -> None:
    needs_tensorflow()
    from bin_agent.training.train import TrainConfig, build_models, train_above_cut

    config = TrainConfig(datasets=[], out=tmp_path, weights=None, input_size=96, cut_layer="block_5_add")
    full, lower, upper, _, _, _ = build_models(config)
    train_above_cut(lower, upper)
    trained = {w.path.split("/")[0] for w in full.trainable_weights}
    assert "probabilities" in trained and "Conv_1" in trained and "block_6_expand" in trained
    assert not any(name.startswith(("block_5_", "block_1_", "Conv1", "expanded_conv")) for name in trained)
    assert not any("BN" in name or "bn" in name for name in trained), "batch-norm must stay frozen"
    below = {layer.name for layer in lower.layers[-1].layers}
    assert not trained & below


def test_temperature_is_folded_into_the_head(tmp_path: Path) -> None:
    """The fitted temperature divides the head's kernel and bias: the exported
    softmax is the calibrated one, at no run-time cost."""
    from bin_agent.training.train import TrainConfig, build_models, calibrate_temperature, view_stack

    config = TrainConfig(datasets=[], out=tmp_path, weights=None, input_size=32)
    full = build_models(config)[0]
    dense = full.get_layer("probabilities")
    rng = np.random.default_rng(0)
    kernel, bias = dense.get_weights()
    # An untrained backbone gives near-constant features: the bias decides, and it is
    # sure of class 0 while every label is another class, so a softer softmax fits better.
    bias = np.array([6.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
    dense.set_weights([kernel, bias])
    views = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(24)]
    labels = rng.integers(1, len(CLASSES), 24)
    before = np.asarray(full.predict(np.stack(view_stack(views[0], 1)).astype(np.float32), verbose=0))
    report = calibrate_temperature(full, views, labels, 2, lambda _: None)
    new_kernel, new_bias = dense.get_weights()
    t = report["T"]
    assert t > 1.0 and report["val_nll_after"] <= report["val_nll_before"]
    assert np.allclose(new_kernel * t, kernel, rtol=1e-3, atol=1e-6)
    assert np.allclose(new_bias * t, bias, rtol=1e-3, atol=1e-6)
    after = np.asarray(full.predict(np.stack(view_stack(views[0], 1)).astype(np.float32), verbose=0))
    assert after.max() < before.max()  # softer probabilities out of the exported model


def test_a_trained_model_recommends_the_lowest_threshold_whose_sorted_items_are_97_percent_right() -> None:
    """bin-agent train writes the router's threshold into the model's metadata (the router takes
    it unless the config pins one): the lowest whose sorted validation items are >= 97 % right."""
    from bin_agent.training.train import recommended_threshold_entry

    rows = [{"true": "glass", "pred": "glass", "confidence": 0.99}] * 60
    rows += [{"true": "glass", "pred": "metal", "confidence": 0.62}] * 3  # wrong, fairly sure
    rows += [{"true": "paper", "pred": "paper", "confidence": 0.55}] * 20
    rows += [{"true": "paper", "pred": "trash", "confidence": 0.4}] * 10  # wrong, unsure
    entry = recommended_threshold_entry(rows, 4)
    assert entry is not None
    # 0.65: only the 60 right items are sorted (100 %); 0.60 would sort 3 wrong of 63 (95.2 %)
    assert entry["value"] == 0.65 and entry["validation"]["sorted_accuracy"] == 1.0
    assert "4 views" in entry["rule"]
    assert recommended_threshold_entry([{"true": "a", "pred": "b", "confidence": 0.99}], 4) is None
