"""Build the tiny test models in ``tests/data/models/`` (needs TensorFlow).

A very small 6-class conv net (input 32x32x3 raw 0..255 pixels, scaling inside
the model) is trained for a few steps on a few TrashNet photos (or on random
pixels when the photos are not there) and exported three ways:

- ``tiny_float.tflite``: float32 in / out;
- ``tiny_uint8.tflite``: full-integer, uint8 input and output;
- ``tiny_int8.tflite``: full-integer, int8 input and output;

each with its ``.labels.txt`` and ``.json`` sidecars (``ModelFiles.beside``).
The models are not meant to be accurate; they exist so the agent's unit tests
run the real interpreter on real files in milliseconds.

Usage::

    python tests/data/make_tiny_models.py [--data ../shared/data/trashnet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from bin_agent import CLASSES
from bin_agent.classify.preprocess import PreprocessSpec, fit_to_input, load_image

SIZE = 32
SEED = 7
SPEC = PreprocessSpec(input_size=(SIZE, SIZE))


def training_pixels(data: Path | None, per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A few photos per class fitted to 32x32, or random pixels without data."""
    rng = np.random.default_rng(SEED)
    images, labels = [], []
    if data is not None and (data / CLASSES[0]).is_dir():
        for index, name in enumerate(CLASSES):
            for path in sorted((data / name).glob("*.jpg"))[:per_class]:
                images.append(fit_to_input(load_image(path), SPEC))
                labels.append(index)
    if not images:
        images = list(rng.integers(0, 256, size=(6 * per_class, SIZE, SIZE, 3), dtype=np.uint8))
        labels = [i % len(CLASSES) for i in range(len(images))]
    return np.stack(images).astype(np.float32), np.asarray(labels, dtype=np.int64)


def build_and_train(x: np.ndarray, y: np.ndarray):
    import keras

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    return model


def convert(model, x: np.ndarray, io_type=None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if io_type is not None:
        ramp = np.zeros((1, SIZE, SIZE, 3), np.float32)
        ramp[0, :, :, :] = np.linspace(0, 255, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3)

        def representative():
            yield [ramp]  # spans 0..255 exactly: the uint8 input gets scale 1, zero point 0
            for sample in x:
                yield [sample[np.newaxis]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    return converter.convert()


def write_model(out: Path, name: str, content: bytes) -> Path:
    model = out / f"{name}.tflite"
    model.write_bytes(content)
    model.with_suffix(".labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    metadata = {
        "name": name,
        "version": "tiny-1",
        **SPEC.to_metadata(),
        "classes": list(CLASSES),
        "output_is_probability": True,
        "note": "test fixture made by tests/data/make_tiny_models.py; not accurate",
    }
    model.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return model


def main(argv: list[str] | None = None) -> int:
    default_data = Path(os.environ.get("BIN_AGENT_SHARED", REPO.parent / "shared")) / "data" / "trashnet"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--out", type=Path, default=HERE / "models")
    args = parser.parse_args(argv)

    import tensorflow as tf

    x, y = training_pixels(args.data)
    model = build_and_train(x, y)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, io_type in (("tiny_float", None), ("tiny_uint8", tf.uint8), ("tiny_int8", tf.int8)):
        path = write_model(args.out, name, convert(model, x, io_type))
        print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")

    from bin_agent.classify.classifier import Classifier

    for name in ("tiny_float", "tiny_uint8", "tiny_int8"):
        clf = Classifier.from_model_path(args.out / f"{name}.tflite")
        result = clf.classify(x[0].astype(np.uint8))
        quant = clf._input["quantization"]
        print(f"{name}: input {clf.input_dtype} {quant} -> {result.label} {result.confidence:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
