"""The training/evaluation pipeline feeds a model the same tensor as the agent, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bin_agent import CLASSES, DEFAULT_MODEL_NAME
from bin_agent.classify.classifier import Classifier
from bin_agent.classify.preprocess import PreprocessSpec, fit_to_input, load_image
from bin_agent.training import dataset as ds
from bin_agent.training.backgrounds import CameraEffects

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "models"
SHIPPED = REPO / "models" / DEFAULT_MODEL_NAME


def photos(trashnet_dir: Path) -> list[Path]:
    return [sorted((trashnet_dir / c).glob("*.jpg"))[3] for c in CLASSES]


@pytest.mark.parametrize(
    "model",
    [TINY / "tiny_float.tflite", TINY / "tiny_uint8.tflite", SHIPPED],
    ids=["tiny_float", "tiny_uint8", "shipped_int8"],
)
def test_training_tensor_equals_agent_tensor(trashnet_dir: Path, model: Path) -> None:
    clf = Classifier.from_model_path(model)
    for path in photos(trashnet_dir):
        agent = clf.model_input(fit_to_input(load_image(path), clf.spec))
        pipeline_pixels = ds.eval_pixels(path, clf.spec)  # val / test / calibration views
        pipeline_tensor = ds.keras_batch([pipeline_pixels])  # what Keras and the calibrator get
        if clf.input_dtype == np.float32:
            assert agent.dtype == pipeline_tensor.dtype == np.float32
            assert agent.tobytes() == pipeline_tensor.tobytes()
        else:
            # full-integer model: uint8 input with scale 1 / zero point 0, so the
            # agent's tensor holds the very pixel values the float pipeline used
            assert clf.input_dtype == np.uint8
            assert clf._input["quantization"] == (1.0, 0)
            assert agent.tobytes() == pipeline_pixels[np.newaxis].tobytes()
            assert np.array_equal(agent.astype(np.float32), pipeline_tensor)


def test_augmented_view_is_a_crop_resize_of_the_photo(trashnet_dir: Path) -> None:
    image = load_image(photos(trashnet_dir)[0])
    spec = PreprocessSpec(input_size=(96, 96))
    no_jitter = ds.Augmentation(
        min_area=1.0,
        max_aspect_change=0.0,
        small_rotation_p=0.0,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        channel_gain=0.0,
        blur_p=0.0,
        background_p=0.0,
        camera=CameraEffects(
            temperature=0.0, exposure=(1.0, 1.0), gamma=0.0, noise_p=0.0, jpeg_p=0.0, uneven_light_p=0.0
        ),
    )
    views = {ds.augment(image, spec, np.random.default_rng(s), no_jitter).tobytes() for s in range(40)}
    # without jitter the only freedom left is the 8 rotations/mirrors of exactly
    # what the agent feeds the model: the view is turned after the squash, so
    # the item keeps the proportions it has at run time
    agent_view = fit_to_input(image, spec)
    expected = set()
    for k in range(4):
        for flip in (False, True):
            turned = np.rot90(agent_view, k)
            expected.add(np.ascontiguousarray(turned[:, ::-1] if flip else turned).tobytes())
    assert views <= expected and len(views) >= 6
    assert agent_view.tobytes() in views


def test_augment_keeps_a_non_square_input_size(trashnet_dir: Path) -> None:
    image = load_image(photos(trashnet_dir)[0])
    spec = PreprocessSpec(input_size=(90, 120))
    shapes = {ds.augment(image, spec, np.random.default_rng(s)).shape for s in range(16)}
    assert shapes == {(90, 120, 3)}


def test_augment_is_deterministic_and_sized(trashnet_dir: Path) -> None:
    image = load_image(photos(trashnet_dir)[1])
    spec = PreprocessSpec(input_size=(120, 120))
    a = ds.augment(image, spec, np.random.default_rng([1, 2, 3]))
    b = ds.augment(image, spec, np.random.default_rng([1, 2, 3]))
    c = ds.augment(image, spec, np.random.default_rng([1, 2, 4]))
    assert a.shape == (120, 120, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
