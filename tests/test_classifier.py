"""Classifier on the tiny test models (tests/data/models, made by make_tiny_models.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bin_agent import CLASSES
from bin_agent.classify.classifier import Classification, Classifier, ModelFiles, ModelFilesError
from bin_agent.classify.preprocess import load_image

MODELS = Path(__file__).resolve().parent / "data" / "models"
NAMES = ("tiny_float", "tiny_uint8", "tiny_int8")


def model_path(name: str) -> Path:
    return MODELS / f"{name}.tflite"


def copy_model(name: str, dest: Path) -> Path:
    """Copy a tiny model's three files into ``dest``; return the .tflite path."""
    files = ModelFiles.beside(model_path(name))
    for path in (files.model, files.labels, files.metadata):
        shutil.copy(path, dest / path.name)
    return dest / files.model.name


@pytest.mark.parametrize("name", NAMES)
def test_each_dtype_gives_a_valid_classification(name: str) -> None:
    clf = Classifier.from_model_path(model_path(name))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    result = clf.classify(frame)
    assert isinstance(result, Classification)
    assert result.label in CLASSES
    assert len(result.probabilities) == len(CLASSES)
    assert sum(result.probabilities) == pytest.approx(1.0, abs=0.02)
    assert all(0.0 <= p <= 1.0 for p in result.probabilities)
    probs = [p for _, p in result.top]
    assert len(result.top) == 3
    assert probs == sorted(probs, reverse=True)
    assert result.top[0] == (result.label, result.confidence)
    assert result.confidence == pytest.approx(max(result.probabilities))


@pytest.mark.parametrize("name", NAMES)
def test_input_dtype_and_pass_through(name: str) -> None:
    clf = Classifier.from_model_path(model_path(name))
    expected = {"tiny_float": np.float32, "tiny_uint8": np.uint8, "tiny_int8": np.int8}[name]
    assert clf.input_dtype == expected
    pixels = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3) % 256
    tensor = clf.model_input(pixels.astype(np.uint8))
    assert tensor.shape == (1, 32, 32, 3) and tensor.dtype == expected
    if name == "tiny_uint8":  # scale 1 / zero point 0: camera pixels go straight in
        assert np.array_equal(tensor[0], pixels)
    if name == "tiny_int8":
        assert np.array_equal(tensor[0].astype(np.int64), pixels - 128)


def test_quantized_models_agree_with_float_on_real_photos(trashnet_dir: Path) -> None:
    photos = [sorted((trashnet_dir / c).glob("*.jpg"))[20] for c in CLASSES]
    photos += [sorted((trashnet_dir / c).glob("*.jpg"))[21] for c in CLASSES]
    images = [load_image(p) for p in photos]
    reference = [Classifier.from_model_path(model_path("tiny_float")).classify(i).label for i in images]
    for name in ("tiny_uint8", "tiny_int8"):
        clf = Classifier.from_model_path(model_path(name))
        labels = [clf.classify(i).label for i in images]
        agree = sum(a == b for a, b in zip(labels, reference))
        assert agree >= len(images) - 2, f"{name} agrees with float on {agree}/{len(images)}"


def test_truncated_model_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFilesError, match="tiny_uint8.tflite"):
        Classifier.from_model_path(path)


def test_random_bytes_are_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelFilesError, match="not a TensorFlow Lite model"):
        Classifier.from_model_path(path)


def test_missing_model_file_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    path.unlink()
    with pytest.raises(ModelFilesError, match="no such model file"):
        Classifier.from_model_path(path)


def test_wrong_label_count_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    files = ModelFiles.beside(path)
    files.labels.write_text("\n".join(CLASSES[:5]) + "\n", encoding="utf-8")
    meta = json.loads(files.metadata.read_text())
    meta["classes"] = list(CLASSES[:5])
    files.metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelFilesError, match="6 outputs .* lists 5 classes"):
        Classifier.from_model_path(path)


def test_labels_and_metadata_class_mismatch_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    files = ModelFiles.beside(path)
    swapped = list(CLASSES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    files.labels.write_text("\n".join(swapped) + "\n", encoding="utf-8")
    with pytest.raises(ModelFilesError, match="says"):
        Classifier.from_model_path(path)


def test_missing_metadata_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    ModelFiles.beside(path).metadata.unlink()
    with pytest.raises(ModelFilesError, match="cannot read metadata"):
        Classifier.from_model_path(path)


def test_metadata_without_input_size_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_uint8", tmp_path)
    files = ModelFiles.beside(path)
    meta = json.loads(files.metadata.read_text())
    del meta["input_size"]
    files.metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelFilesError, match="no 'input_size'"):
        Classifier.from_model_path(path)


def test_input_size_mismatch_is_rejected(tmp_path: Path) -> None:
    path = copy_model("tiny_int8", tmp_path)
    files = ModelFiles.beside(path)
    meta = json.loads(files.metadata.read_text())
    meta["input_size"] = [64, 64]
    files.metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelFilesError, match=r"does not match the metadata input_size \[64, 64\]"):
        Classifier.from_model_path(path)


def test_sidecars_match_the_convention() -> None:
    for name in NAMES:
        files = ModelFiles.beside(model_path(name))
        assert files.labels.read_text().split() == list(CLASSES)
        meta = json.loads(files.metadata.read_text())
        assert meta["classes"] == list(CLASSES)
        assert meta["input_size"] == [32, 32]
        assert meta["output_is_probability"] is True
        assert files.model.stat().st_size < 20_000


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("views", [1, 2, 4])
def test_views_average_the_mirrored_and_turned_frame(name: str, views: int) -> None:
    single = Classifier.from_model_path(model_path(name), views=1)
    several = Classifier.from_model_path(model_path(name), views=views)
    frame = np.random.default_rng(7).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    pixels = np.random.default_rng(8).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    tensors = several.view_tensors(pixels)
    expected = [pixels, pixels[:, ::-1], pixels[::-1, ::-1], pixels[::-1, :]][:views]
    assert [t[0].tobytes() for t in tensors] == [
        single.model_input(np.ascontiguousarray(v))[0].tobytes() for v in expected
    ]
    from bin_agent.classify.preprocess import fit_to_input

    mean = np.mean([single.run(t) for t in several.view_tensors(fit_to_input(frame, several.spec))], axis=0)
    result = several.classify(frame)
    assert result.views == views and result.as_dict()["views"] == views
    assert np.allclose(result.probabilities, mean, atol=1e-6)
    assert result.label == several.labels[int(np.argmax(mean))]


def test_views_come_from_the_metadata_unless_given(tmp_path: Path) -> None:
    path = copy_model("tiny_int8", tmp_path)
    meta_path = path.with_suffix(".json")
    assert Classifier.from_model_path(path).views == 1  # no "views" in the metadata
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"views": 4}))
    assert Classifier.from_model_path(path).views == 4
    assert Classifier.from_model_path(path, views=2).views == 2
    with pytest.raises(ValueError, match="views must be one of"):
        Classifier.from_model_path(path, views=3)
    meta_path.write_text(json.dumps(meta | {"views": "all"}))
    with pytest.raises(ModelFilesError, match="'views' is 'all'"):
        Classifier.from_model_path(path)


def test_the_shipped_model_takes_its_views_as_one_batch_with_the_same_probabilities() -> None:
    """One invoke() of [4, 160, 160, 3] instead of four (issue 23, speed): bit-identical outputs."""
    from bin_agent import DEFAULT_MODEL
    from bin_agent.classify.preprocess import fit_to_input

    batched = Classifier.from_model_path(DEFAULT_MODEL, num_threads=1)
    assert batched.views == 4 and batched.batched
    frame = np.random.default_rng(3).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    tensors = batched.view_tensors(fit_to_input(frame, batched.spec))
    one_by_one = Classifier.from_model_path(DEFAULT_MODEL, num_threads=1)
    per_view = np.mean([one_by_one.run(t) for t in tensors], axis=0)
    assert np.array_equal(np.asarray(batched.classify(frame).probabilities, np.float32), per_view)


def test_a_model_that_refuses_a_batch_is_run_view_by_view(monkeypatch) -> None:
    from bin_agent import DEFAULT_MODEL
    from bin_agent.classify import classifier as module

    real = module.load_interpreter

    def fixed_to_batch_1(path, threads=None, **kwargs):
        interpreter = real(path, threads, **kwargs)
        resize = interpreter.resize_tensor_input

        def refuse(index, shape, *args, **kwargs):
            if shape[0] != 1:
                raise RuntimeError("tensorflow/lite/kernels/reshape.cc: num_input_elements != num_output_elements")
            return resize(index, shape, *args, **kwargs)

        interpreter.resize_tensor_input = refuse
        return interpreter

    monkeypatch.setattr(module, "load_interpreter", fixed_to_batch_1)
    classifier = Classifier.from_model_path(DEFAULT_MODEL, num_threads=1)
    assert not classifier.batched
    result = classifier.classify(np.full((480, 640, 3), 120, np.uint8))
    assert result.views == 4 and abs(sum(result.probabilities) - 1.0) < 0.01


def test_the_embedding_of_a_batched_item_is_the_one_read_view_by_view() -> None:
    """``bin-agent learn`` refits on embeddings: batching the views must not change them."""
    from bin_agent import DEFAULT_MODEL

    classifier = Classifier(ModelFiles.beside(DEFAULT_MODEL), num_threads=1, embeddings=True)
    assert classifier.batched
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    batched = classifier.classify(image).embedding
    classifier.batched = False
    one_by_one = classifier.classify(image).embedding
    assert batched is not None and one_by_one is not None
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"output_is_probability": "false"}, "output_is_probability"),
        ({"output_is_probability": 0}, "output_is_probability"),
        ({"preprocessing": {"keep_aspect": "false"}}, "preprocessing.keep_aspect"),
        ({"preprocessing": {"crop_fraction": "0.8"}}, "preprocessing.crop_fraction"),
        ({"preprocessing": {"mean": [0, "0", 0]}}, "preprocessing.mean"),
        ({"input_size": [32.7, 32]}, "input_size"),
        ({"views": 4.0}, "views"),
    ],
    ids=["probability-text", "probability-0", "keep-aspect-text", "crop-text", "mean-text", "size-float", "views-4.0"],
)
def test_a_metadata_value_of_the_wrong_type_is_refused_naming_the_key_and_the_file(tmp_path: Path, change, key) -> None:
    """Before: bool("false") is true, so "output_is_probability": "false" skipped the softmax of a
    model whose output is logits, and "keep_aspect": "false" centre-cropped every item."""
    path = copy_model("tiny_uint8", tmp_path)
    files = ModelFiles.beside(path)
    meta = json.loads(files.metadata.read_text())
    for name, value in change.items():
        meta[name] = meta[name] | value if isinstance(value, dict) else value
    files.metadata.write_text(json.dumps(meta))
    with pytest.raises(ModelFilesError, match=f"'{key}' is ") as refused:
        Classifier.from_model_path(path)
    assert str(files.metadata) in str(refused.value)


def test_run_exits_78_on_a_metadata_flag_that_is_text(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import base_config, write_toml

    path = copy_model("tiny_uint8", tmp_path)
    files = ModelFiles.beside(path)
    files.metadata.write_text(json.dumps(json.loads(files.metadata.read_text()) | {"output_is_probability": "false"}))
    config = write_toml(tmp_path / "bin.toml", base_config(tmp_path, mqtt=False, model=path))
    for command in ("check-config", "run"):
        args = [command, str(config)] if command == "check-config" else [command, "--config", str(config)]
        result = subprocess.run([sys.executable, "-m", "bin_agent", *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 78, (command, result.stderr)
        assert "'output_is_probability' is 'false'" in result.stderr and "Traceback" not in result.stderr
