"""Fine-tune MobileNetV2 on folder-per-class photos and export TFLite models.

With ``qat.py`` (which it imports only for phase 3), the only module of
bin-agent that imports TensorFlow, inside the functions, so that even
importing it stays cheap.

The method, chosen on validation and on a leave-one-source-out run (models/README.md):

1. MobileNetV2 (alpha 1.0, ImageNet weights) is cut at ``cut_layer``
   (default ``block_5_add``). Every BatchNormalization layer is frozen
   (inference mode): the provided weights have batch-norm folded into the
   convolutions, and batch-statistics training would destroy the features.
   The lower part (stem .. the cut) stays frozen throughout.
2. The frozen lower part runs once per cached view: ``copies`` random views of
   each training photo (:func:`bin_agent.training.dataset.augment`: a
   plain-background photo's item pasted on a new background, else a random
   crop through ``preprocess.crop_resize``; then the camera effects of
   :mod:`bin_agent.training.backgrounds`) and one view of each validation
   photo (``preprocess.fit_to_input``, as the agent does).
3. Phase 1 trains the new 6-class head (dropout + dense softmax) on the pooled
   features of those cached views. Phase 2 unfreezes the blocks above the cut
   (BN still frozen) and fine-tunes them with the head at a low rate, by
   default on the cached activations (``online``: on fresh augmented views
   every epoch instead, slower per epoch). Both phases use balanced class
   weights and label smoothing, and keep the weights of the best validation
   epoch, or the last epoch with ``include_val``.
4. Phase 3 (``qat_epochs``) fine-tunes the same blocks through a simulation
   of the int8 model (:mod:`bin_agent.training.qat`: weights and activations
   rounded as the converter will round them), on fresh views, so that the
   weights learn to work with the int8 rounding.
5. A temperature fitted on the validation photos (all ``views`` of each,
   averaged as the agent does) is folded into the head, so the exported
   probabilities are calibrated (:func:`calibrate_temperature`).
6. The full model (raw 0..255 RGB in, MobileNetV2's ``x / 127.5 - 1`` as a
   ``Rescaling`` layer inside, probabilities out) is exported as float32 and as
   full-integer int8 TFLite with uint8 input/output, calibrated on training
   photos prepared by ``fit_to_input``; the uint8 input then takes camera
   pixels as they are (scale 1, zero point 0). The metadata records how many
   views per item the agent should average (``views``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import CLASSES, DEFAULT_MODEL, __version__
from ..classify.preprocess import PreprocessSpec
from ..errors import BinAgentError
from . import dataset as ds

Progress = Callable[[str], None]


SHIPPED_FLOAT_WEIGHTS = DEFAULT_MODEL.with_name("waste_mobilenetv2_float.weights.h5")
"""The float weights of the shipped model (rebuilt from its int8 file by
``scripts/float_weights_from_tflite.py``), stored as float16 to halve the file, shipped
beside it so a retrain starts from it (``bin-agent train --init-weights shipped``);
:func:`load_run_weights` turns them into float32."""


class TrainingSetupError(BinAgentError, ValueError):
    """A training setting that cannot work (unknown layer, unusable weights file)."""

    exit_code = os.EX_USAGE


@dataclass
class TrainConfig:
    datasets: list[Path]
    out: Path
    split: Path | None = None
    weights: str | None = "imagenet"  # None: random init (init_weights replaces every layer)
    input_size: int = 160
    copies: int = 6
    cut_layer: str = "block_5_add"
    head_epochs: int = 6
    head_lr: float = 1e-3
    fine_epochs: int = 12
    fine_lr: float = 1e-4
    batch_size: int = 32
    label_smoothing: float = 0.1
    dropout: float = 0.3
    seed: int = 1234
    calibration: int = 800
    max_per_class: int | None = None  # for smoke tests: a few photos per class
    include_val: bool = False  # final model: train on train + val, keep the last epoch
    # Keep the last epoch, not the best on validation: for a change whose aim the validation
    # photos (clean, full-size) cannot see, e.g. small noisy crops; judge the run afterwards.
    keep_last: bool = False
    online: bool = False  # phase 2 on the cached views; True: fresh augmented views every epoch
    views: int = 4  # views per item the agent averages (metadata "views"; see classifier.py)
    qat_epochs: int = 2  # phase 3: quantization-aware fine-tuning epochs (see qat.py)
    qat_lr: float = 2e-5
    init_weights: Path | None = None  # start from a run's best.weights.h5
    class_factors: dict[str, float] = field(default_factory=dict)  # e.g. {"trash": 2.0} on top of balanced
    balance_sources: float = 0.0  # within a class, weight a photo by (its source's photo count) ** -this
    name: str = "waste_mobilenetv2_int8"
    version: str = ""
    threads: int | None = None
    augmentation: ds.Augmentation = field(default_factory=ds.Augmentation)

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(input_size=(self.input_size, self.input_size))


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_models(config: TrainConfig):
    """``(full, lower, upper_head, pooled, head)`` sharing one set of layers.

    - ``full``: raw pixels -> probabilities (the exported model);
    - ``lower``: raw pixels -> ``cut_layer`` activations (frozen, cached);
    - ``upper_head``: cut activations -> probabilities (phase 2);
    - ``pooled``: cut activations -> pooled 1280 features (phase 1 input);
    - ``head``: pooled features -> probabilities (phase 1).
    """
    _quiet_tensorflow()
    import keras

    size = config.input_size
    weights = config.weights
    if weights not in ("imagenet", None) and not Path(weights).is_file():
        raise FileNotFoundError(f"{weights}: no such weights file")
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=weights)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    try:
        cut = base.get_layer(config.cut_layer).output
    except ValueError:
        raise TrainingSetupError(f"MobileNetV2 has no layer {config.cut_layer!r}") from None
    lower_base = keras.Model(base.input, cut, name="lower")
    upper = keras.Model(cut, base.output, name="upper")

    gap = keras.layers.GlobalAveragePooling2D(name="pool")
    drop = keras.layers.Dropout(config.dropout, name="dropout")
    dense = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")

    pixels = keras.Input((size, size, 3), name="pixels")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_scaling")(pixels)
    full = keras.Model(pixels, dense(drop(gap(base(scaled)))), name=config.name)
    lower = keras.Model(pixels, lower_base(scaled), name="lower_pixels")

    cut_in = keras.Input(tuple(cut.shape[1:]), name="cut")
    upper_head = keras.Model(cut_in, dense(drop(gap(upper(cut_in)))), name="upper_head")
    pooled = keras.Model(cut_in, gap(upper(cut_in)), name="pooled")
    feat_in = keras.Input((int(base.output.shape[-1]),), name="features")
    head = keras.Model(feat_in, dense(drop(feat_in)), name="head")
    return full, lower, upper, upper_head, pooled, head


def weights_file_dtypes(path: Path) -> set[str]:
    """The dtypes of the arrays in a Keras ``.weights.h5`` file (``{"float16"}`` for the
    shipped float weights, ``{"float32"}`` for a run's)."""
    import h5py

    found: set[str] = set()
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda _, obj: found.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    return found


def convert_weights_file(source: Path, target: Path, dtype: str) -> None:
    """Copy a Keras ``.weights.h5`` file with every floating-point array cast to ``dtype``;
    groups, attributes and names stay as they are, so Keras loads the copy as it would
    the original. Refuses a cast that would turn a finite value infinite (float16 ends
    at 65504)."""
    import h5py

    want = np.dtype(dtype)
    with h5py.File(source, "r") as src, h5py.File(target, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(obj.attrs)
                return
            values = obj[()]
            if np.issubdtype(values.dtype, np.floating) and values.dtype != want:
                cast = values.astype(want)
                if not np.array_equal(np.isfinite(cast), np.isfinite(values)):
                    raise ValueError(f"{source}: {name} does not fit in {dtype}")
                values = cast
            dst.create_dataset(name, data=values).attrs.update(obj.attrs)

        src.visititems(copy)


def load_run_weights(full, path: Path) -> None:
    """Load a run's ``best.weights.h5`` (or the shipped float16 weights) into ``full``;
    any other file is one clear error. (The cut and the input size do not change the
    weights, so a run with another cut or size loads too.)

    A file not all float32 is converted to a float32 copy first, so the model trains
    from float32 weights without relying on the backend: Keras 3.15's own loader does
    cast (``Variable.assign`` converts to the variable's dtype), an unwritten promise.
    float16 -> float32 is exact, so the model holds exactly the stored values."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with tempfile.TemporaryDirectory(prefix="bin-agent-weights-") as tmp:
            readable = path
            if weights_file_dtypes(path) != {"float32"}:
                readable = Path(tmp) / "float32.weights.h5"
                convert_weights_file(path, readable, "float32")
            full.load_weights(readable)
    except (ValueError, OSError) as exc:
        raise TrainingSetupError(
            f"{path}: not the weights of a bin-agent MobileNetV2 run ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:200]})"
        ) from None


def train_above_cut(lower, upper) -> None:
    """Make the layers above the cut trainable, except batch-norm (inference
    mode, see the module doc), and freeze everything below it."""
    import keras

    for layer in lower.layers:
        layer.trainable = False
    for layer in upper.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def cache_activations(
    lower,
    n: int,
    make_view: Callable[[int], np.ndarray],
    batch_size: int,
    progress: Progress,
    what: str,
) -> np.ndarray:
    """Run ``lower`` on views ``make_view(0..n-1)`` (uint8) and stack the outputs."""
    out: np.ndarray | None = None
    started = time.perf_counter()

    def views_of(span: tuple[int, int]) -> list[np.ndarray]:
        return [make_view(i) for i in range(*span)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        spans = list(_batches(n, batch_size))
        next_batch = pool.submit(views_of, spans[0])
        for index, (start, stop) in enumerate(spans):
            views = next_batch.result()
            if index + 1 < len(spans):
                next_batch = pool.submit(views_of, spans[index + 1])
            acts = lower.predict_on_batch(ds.keras_batch(views))
            acts = np.asarray(acts)
            if out is None:
                out = np.empty((n,) + acts.shape[1:], dtype=np.float32)
            out[start:stop] = acts
            if index % 20 == 0 or stop == n:
                rate = stop / max(time.perf_counter() - started, 1e-9)
                progress(f"  {what}: {stop}/{n} views ({rate:.1f}/s)")
    assert out is not None, "no views to cache"
    return out


def online_batches(
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    sample_weights: np.ndarray,
    make_view: Callable[[int, int], np.ndarray],
    batch_size: int,
    seed: int,
):
    """Endless ``(pixels, one-hot, weights)`` batches of fresh augmented views.

    Epoch ``e`` visits the photos in a seeded permutation and asks
    ``make_view(e, i)`` for each: no view is ever repeated, so the fine-tuned
    blocks cannot memorise a fixed set of views. Two threads prepare the next
    batches while TensorFlow trains on the current one (Pillow and NumPy
    release the GIL).
    """
    n = len(images)
    targets = _one_hot(labels)

    def work(epoch: int, index: np.ndarray):
        views = ds.keras_batch([make_view(epoch, int(i)) for i in index])
        return views, targets[index], sample_weights[index]

    def plan():
        epoch = 0
        while True:
            order = np.random.default_rng([seed, 7919, epoch]).permutation(n)
            for start, stop in _batches(n, batch_size):
                yield epoch, order[start:stop]
            epoch += 1

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        for epoch, index in plan():
            pending.append(pool.submit(work, epoch, index))
            if len(pending) > 3:
                yield pending.pop(0).result()


def selects_best(config: TrainConfig) -> bool:
    """Whether each phase keeps its best epoch on validation (else its last): not when the
    validation photos are trained on (``include_val``) or cannot judge the change (``keep_last``)."""
    return not (config.include_val or config.keep_last)


class _EpochLog:
    """Per-epoch progress line + best-epoch tracking (keeps the best weights)."""

    def __init__(self, phase: str, progress: Progress, models: Sequence[Any], select_best: bool = True):
        import keras

        parent = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                parent.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                parent.end(epoch, logs or {})

        self.callback = Callback()
        self.phase = phase
        self.progress = progress
        self.models = models
        self.select_best = select_best
        self.history: list[dict[str, float]] = []
        self.best: tuple[float, float] | None = None
        self.best_epoch = -1
        self.best_weights: list[Any] | None = None
        self.started = time.perf_counter()

    def end(self, epoch: int, logs: dict[str, Any]) -> None:
        row = {k: float(v) for k, v in logs.items() if np.isscalar(v) or np.ndim(v) == 0}
        row = {"epoch": epoch + 1, **row, "seconds": round(time.perf_counter() - self.started, 1)}
        self.history.append(row)
        score = (row.get("val_accuracy", 0.0), -row.get("val_loss", 0.0))
        marker = ""
        if not self.select_best:
            self.best_epoch = epoch + 1  # the last epoch is kept
        elif self.best is None or score > self.best:
            self.best, self.best_epoch, marker = score, epoch + 1, "  *best"
            self.best_weights = [m.get_weights() for m in self.models]
        self.progress(
            f"  {self.phase} epoch {epoch + 1}: loss {row.get('loss', float('nan')):.4f} "
            f"acc {row.get('accuracy', float('nan')):.4f} | val loss {row.get('val_loss', float('nan')):.4f} "
            f"val acc {row.get('val_accuracy', float('nan')):.4f} ({row['seconds']:.0f}s){marker}"
        )

    def restore(self) -> None:
        if self.best_weights is not None:
            for model, weights in zip(self.models, self.best_weights):
                model.set_weights(weights)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[labels]


def _converted(converter) -> bytes:
    """Run a TFLite converter without its print-out of every captured tensor
    (thousands of lines that would bury the training progress)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def convert_float(model) -> bytes:
    import tensorflow as tf

    return _converted(tf.lite.TFLiteConverter.from_keras_model(model))


def convert_int8(model, calibration: Sequence[np.ndarray]) -> bytes:
    """Full-integer int8 model with uint8 input and output.

    The first calibration view gets one pixel at 0 and one at 255 so the
    calibrated input range is exactly 0..255: the uint8 input then has scale
    1.0 and zero point 0 and takes camera pixels unchanged.
    """
    import tensorflow as tf

    views = list(ds.keras_batch(calibration))
    views[0] = views[0].copy()
    views[0][0, 0, :] = 0.0
    views[0][0, 1, :] = 255.0

    def representative():
        for view in views:
            yield [view[np.newaxis]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return _converted(converter)


def model_metadata(config: TrainConfig, content: bytes, name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "version": config.version or f"{name}-{datetime.now(UTC):%Y%m%d}",
        **config.spec.to_metadata(),
        "classes": list(CLASSES),
        "output_is_probability": True,
        "views": config.views,
        "architecture": "MobileNetV2 alpha 1.0, ImageNet weights, new 6-class head",
        "sha256": hashlib.sha256(content).hexdigest(),
        "size_bytes": len(content),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "bin_agent_version": __version__,
        **extra,
    }


def write_model(path: Path, content: bytes, metadata: dict[str, Any]) -> None:
    from ..classify.classifier import ModelFiles

    files = ModelFiles.beside(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.model.write_bytes(content)
    files.labels.write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    files.metadata.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def gather(config: TrainConfig, progress: Progress) -> tuple[list[ds.Item], list[ds.Item], dict[str, Any]]:
    """Training and validation items of every dataset folder, per the split."""
    document = ds.read_split(config.split) if config.split else None
    if document is None:
        document = ds.split_document(config.datasets, seed=config.seed)
        progress(f"no --split given: made a new split with seed {config.seed}")
    train_items: list[ds.Item] = []
    val_items: list[ds.Item] = []
    used: dict[str, Any] = {}
    for root in config.datasets:
        items = ds.list_dataset(root)
        entry = ds.split_for(document, root, config.split or "split")
        extra = ds.unsplit(items, entry)
        if extra:
            progress(f"{root}: {len(extra)} photos are not in the split file and are ignored")
        train = ds.select(items, entry, "train")
        val = ds.select(items, entry, "val")
        if config.max_per_class:
            train = _first_per_class(train, config.max_per_class)
            val = _first_per_class(val, max(1, config.max_per_class // 2))
        train_items += train + (val if config.include_val else [])
        val_items += val
        val_use = "trained on" if config.include_val else "for model selection"
        used[str(root)] = {
            "train": len(train),
            "val": len(val),
            "val use": val_use,
            "test (not used)": len(entry["test"]),
        }
        progress(
            f"{root}: {len(train)} train, {len(val)} val ({val_use}), {len(entry['test'])} test photos (test unused)"
        )
    if not train_items:
        raise ds.DatasetError("no training photos")
    return train_items, val_items, {"split": document if not config.split else str(config.split), "datasets": used}


def _first_per_class(items: Sequence[ds.Item], n: int) -> list[ds.Item]:
    out: list[ds.Item] = []
    seen: dict[int, int] = {}
    for item in items:
        if seen.get(item.label, 0) < n:
            out.append(item)
            seen[item.label] = seen.get(item.label, 0) + 1
    return out


def fresh_views(config: TrainConfig, images: Sequence[np.ndarray], first_epoch: int = 0):
    """``make_view(epoch, item)`` for :func:`online_batches`: a new augmented
    view of photo ``item`` per epoch; epochs from ``first_epoch`` on, so a later
    phase continues the sequence instead of repeating its views."""
    spec = config.spec

    def make_view(epoch: int, item: int) -> np.ndarray:
        rng = np.random.default_rng([config.seed, 104729, first_epoch + epoch, item])
        return ds.augment(images[item], spec, rng, config.augmentation)

    return make_view


def online_fit_data(
    config: TrainConfig,
    images: Sequence[np.ndarray],
    labels: np.ndarray,
    sample_weights: np.ndarray,
    first_epoch: int,
    seed: int,
) -> dict[str, Any]:
    """``Model.fit`` arguments for fresh augmented views of every photo each epoch
    (``sample_weights``: one per photo)."""
    batches = online_batches(
        images, labels, sample_weights, fresh_views(config, images, first_epoch), config.batch_size, seed
    )
    steps_per_epoch = int(np.ceil(len(images) / config.batch_size))
    return dict(x=batches, steps_per_epoch=steps_per_epoch, shuffle=False)  # the batches come shuffled


def fine_tune(
    model,
    phase: str,
    learning_rate: float,
    epochs: int,
    fit_data: dict[str, Any],
    steps_per_epoch: int,
    val_x: np.ndarray,
    y_val: np.ndarray,
    loss,
    select_best: bool,
    progress: Progress,
    callbacks: Sequence[Any] = (),
) -> _EpochLog:
    """Adam with cosine decay over ``epochs``; the model as it starts is epoch 0
    of the log; keeps the best validation epoch (or the last, without
    ``select_best``)."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps_per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
    log = _EpochLog(phase, progress, [model], select_best)
    val_loss, val_acc = model.evaluate(val_x, _one_hot(y_val), verbose=0, batch_size=64)
    log.end(-1, {"val_loss": val_loss, "val_accuracy": val_acc})
    model.fit(
        **fit_data,
        epochs=epochs,
        validation_data=(val_x, _one_hot(y_val)),
        validation_batch_size=64,
        callbacks=[*callbacks, log.callback],
        verbose=0,
    )
    log.restore()
    return log


def quantization_aware_phase(
    config: TrainConfig,
    full,
    lower,
    upper,
    train_images: Sequence[np.ndarray],
    y_train: np.ndarray,
    photo_weights: np.ndarray,
    val_views: Sequence[np.ndarray],
    y_val: np.ndarray,
    calibration: Sequence[np.ndarray],
    loss,
    select_best: bool,
    progress: Progress,
) -> _EpochLog:
    """Phase 3: fine-tune the blocks above the cut through the int8 simulation
    of ``full`` (shared weights, so ``full`` is changed in place); activation
    ranges re-measured on half the calibration views before every epoch.
    Epoch 0 of the log is post-training quantization alone."""
    from .qat import QuantizationAware

    train_above_cut(lower, upper)
    simulated = QuantizationAware(full)
    calibrate_on = list(ds.keras_batch(calibration[::2]))
    fit_data = online_fit_data(config, train_images, y_train, photo_weights, config.fine_epochs, config.seed + 1)
    progress(
        f"phase 3: quantization-aware fine-tuning of {config.cut_layer}+ blocks and head "
        f"(int8 rounding simulated, {len(simulated.mode.measured)} activation ranges measured)"
    )
    simulated.calibrate(calibrate_on)
    return fine_tune(
        simulated.model,
        "qat",
        config.qat_lr,
        config.qat_epochs,
        fit_data,
        fit_data["steps_per_epoch"],
        ds.keras_batch(val_views),
        y_val,
        loss,
        select_best,
        progress,
        callbacks=[simulated.calibrate_each_epoch(calibrate_on)],
    )


def view_stack(pixels: np.ndarray, views: int) -> list[np.ndarray]:
    """The views the agent averages (``Classifier.view_tensors``' order): the
    fitted pixels, mirrored, turned 180°, turned and mirrored."""
    turned = pixels[::-1, ::-1]
    return [np.ascontiguousarray(v) for v in (pixels, pixels[:, ::-1], turned, turned[:, ::-1])[:views]]


def views_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Negative log-likelihood of ``labels`` under the mean over views of
    ``softmax(logits / temperature)``; ``logits`` is ``(photos, views, classes)``."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=-1, keepdims=True)
    mean = probs.mean(axis=1)
    return float(-np.log(np.clip(mean[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` that minimises :func:`views_nll`: the agent
    averages the probabilities of its views, so the temperature is fitted to
    exactly that. A golden-section search over ``log T`` in [-3, 3] (the NLL is
    unimodal in T for one view and, in practice, for an average of a few)."""
    low, high = -3.0, 3.0
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = views_nll(logits, labels, np.exp(a)), views_nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = views_nll(logits, labels, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = views_nll(logits, labels, np.exp(b))
    return float(np.exp((low + high) / 2))


def calibrate_temperature(
    full, val_views: Sequence[np.ndarray], y_val: np.ndarray, views: int, progress: Progress
) -> dict[str, Any]:
    """Fit a temperature on the validation photos (all ``views`` of each, as the
    agent averages them) and fold it into the head (kernel and bias divided by
    ``T``): the exported model's softmax then gives calibrated probabilities at
    no run-time cost."""
    import keras

    dense = full.get_layer("probabilities")
    features = keras.Model(full.input, dense.input)
    kernel, bias = dense.get_weights()
    stacked = [view for pixels in val_views for view in view_stack(pixels, views)]
    feats = np.asarray(features.predict(ds.keras_batch(stacked), batch_size=64, verbose=0))
    logits = (feats @ kernel + bias).reshape(len(val_views), views, -1)
    labels = np.asarray(y_val)
    temperature = fit_temperature(logits, labels)
    before, after = views_nll(logits, labels, 1.0), views_nll(logits, labels, temperature)
    dense.set_weights([kernel / temperature, bias / temperature])
    progress(
        f"temperature scaling on {len(val_views)} validation photos x {views} views: T = {temperature:.3f} "
        f"(validation NLL {before:.4f} -> {after:.4f}), folded into the head"
    )
    return {
        "T": round(temperature, 4),
        "fitted_on": f"{len(val_views)} validation photos, {views} views averaged",
        "val_nll_before": round(before, 4),
        "val_nll_after": round(after, 4),
    }


def train(config: TrainConfig, progress: Progress = print) -> dict[str, Any]:
    """Train, export, and return the training report (also written to ``out``)."""
    _quiet_tensorflow()
    import keras
    import tensorflow as tf

    from .evaluate import evaluate_items

    t0 = time.perf_counter()
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    class_factors = ds.class_factor_indices(config.class_factors)  # a bad entry fails before any work
    keras.utils.set_random_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = config.spec

    train_items, val_items, data_info = gather(config, progress)
    if isinstance(data_info["split"], dict):
        ds.write_split(data_info["split"], out / "split.json")
        data_info["split"] = str(out / "split.json")
    progress(f"decoding {len(train_items)} training and {len(val_items)} validation photos")
    train_images, train_items, bad_train = ds.load_items(train_items, progress)
    val_images, val_items, bad_val = ds.load_items(val_items, progress)
    y_train = np.array([i.label for i in train_items])
    y_val = np.array([i.label for i in val_items])
    weights = ds.class_weights(y_train, factors=class_factors)
    progress("class weights: " + ", ".join(f"{CLASSES[c]} {w:.2f}" for c, w in weights.items()))
    photo_weights = np.array([weights[int(c)] for c in y_train], dtype=np.float32)
    if config.balance_sources:
        roots = [Path(root).resolve() for root in config.datasets]
        sources = [
            next(i for i, r in enumerate(roots) if item.path.resolve().is_relative_to(r)) for item in train_items
        ]
        photo_weights *= ds.source_balance(y_train, sources, config.balance_sources)
        for c in range(len(CLASSES)):
            shares = {
                Path(config.datasets[s]).name: float(photo_weights[(y_train == c) & (np.array(sources) == s)].sum())
                for s in range(len(roots))
            }
            total = sum(shares.values())
            if total:
                progress(
                    f"  {CLASSES[c]}: weight per source "
                    + ", ".join(f"{k} {v / total:.0%}" for k, v in shares.items() if v)
                )

    # Weights to start from replace every layer: the ImageNet file is then not needed
    # (a fresh clone has none), so the base is built without it.
    full, lower, upper, upper_head, pooled, head = build_models(
        dataclasses.replace(config, weights=None) if config.init_weights else config
    )
    progress(
        f"MobileNetV2 {config.input_size}x{config.input_size}, cut at {config.cut_layer}: "
        f"{upper.count_params():,} upper parameters trainable in phase 2"
    )
    if config.init_weights:
        load_run_weights(full, Path(config.init_weights))
        progress(f"starting from {config.init_weights}")

    # ---- cache the frozen lower part (phase 1; phase 2 too unless online)
    n, k = len(train_images), config.copies
    t_cache = time.perf_counter()
    val_views = [ds.fit_to_input(image, spec) for image in val_images]
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    select_best = selects_best(config)
    if config.include_val:
        progress(
            "training on train + val: no model selection, the last epoch is kept; "
            "the val figures below are not a held-out estimate"
        )
    needs_cache = config.head_epochs > 0 or (config.fine_epochs > 0 and not config.online)
    x_train: np.ndarray | None = None
    x_val: np.ndarray | None = None
    y_train_k: np.ndarray | None = None
    sw_train: np.ndarray | None = None

    def train_view(index: int) -> np.ndarray:
        copy, item = divmod(index, n)
        rng = np.random.default_rng([config.seed, copy, item])
        return ds.augment(train_images[item], spec, rng, config.augmentation)

    if needs_cache:
        x_train = cache_activations(lower, n * k, train_view, 64, progress, f"train cache ({k} views/photo)")
        y_train_k = np.tile(y_train, k)
        x_val = cache_activations(lower, len(val_views), val_views.__getitem__, 64, progress, "val cache")
        sw_train = np.tile(photo_weights, k)
    cache_seconds = time.perf_counter() - t_cache

    # ---- phase 1: head on pooled features of the frozen upper part
    log1 = None
    if config.head_epochs > 0:
        progress("phase 1: new head on frozen features")
        assert x_train is not None and x_val is not None and y_train_k is not None
        f_train = np.asarray(pooled.predict(x_train, batch_size=128, verbose=0))
        f_val = np.asarray(pooled.predict(x_val, batch_size=128, verbose=0))
        head.compile(optimizer=keras.optimizers.Adam(config.head_lr), loss=loss, metrics=["accuracy"])
        log1 = _EpochLog("head", progress, [head], select_best)
        head.fit(
            f_train,
            _one_hot(y_train_k),
            sample_weight=sw_train,
            batch_size=config.batch_size,
            epochs=config.head_epochs,
            validation_data=(f_val, _one_hot(y_val)),
            callbacks=[log1.callback],
            verbose=0,
            shuffle=True,
        )
        log1.restore()
        del f_train, f_val
        # the linear probe on the frozen backbone: the other end of weight-space
        # ensembling (WiSE-FT) with the fine-tuned weights saved at the end
        full.save_weights(out / "probe.weights.h5")

    # ---- phase 2: upper blocks + head, BN frozen
    log2 = None
    val_x: Any = None
    fit_data: dict[str, Any] | None = None
    if config.fine_epochs > 0:
        train_above_cut(lower, upper)
        if config.online:
            # the whole network on pixels: fresh views each epoch, the frozen lower part run per batch
            x_train = None
            model, val_x = full, ds.keras_batch(val_views)
            fit_data = online_fit_data(config, train_images, y_train, photo_weights, 0, config.seed)
            steps_per_epoch = fit_data["steps_per_epoch"]
            what = "on fresh views every epoch"
        else:
            assert x_train is not None and y_train_k is not None
            model, val_x = upper_head, x_val
            steps_per_epoch = int(np.ceil(len(x_train) / config.batch_size))
            fit_data = dict(
                x=x_train, y=_one_hot(y_train_k), sample_weight=sw_train, batch_size=config.batch_size, shuffle=True
            )
            what = "on the cached views"
        progress(f"phase 2: fine-tune {config.cut_layer}+ blocks and head {what} (BN frozen)")
        # the head's phase-1 result is epoch 0 of phase 2
        log2 = fine_tune(
            model,
            "fine",
            config.fine_lr,
            config.fine_epochs,
            fit_data,
            steps_per_epoch,
            val_x,
            y_val,
            loss,
            select_best,
            progress,
        )
    x_train = x_val = val_x = fit_data = None  # the cached activations: freed before phase 3 and the export
    rng = np.random.default_rng(config.seed)
    calib_index = rng.permutation(len(train_images))[: config.calibration]
    calibration = [ds.fit_to_input(train_images[i], spec) for i in calib_index]

    # ---- phase 3: the same blocks through the int8 simulation
    log3 = None
    if config.qat_epochs > 0:
        log3 = quantization_aware_phase(
            config,
            full,
            lower,
            upper,
            train_images,
            y_train,
            photo_weights,
            val_views,
            y_val,
            calibration,
            loss,
            select_best,
            progress,
        )
    # ---- calibration: temperature scaling on validation, folded into the head
    temperature = calibrate_temperature(full, val_views, y_val, config.views, progress)
    if config.include_val:
        temperature["note"] = "fitted on validation photos that were also trained on: optimistic"
    train_seconds = time.perf_counter() - t0
    full.save_weights(out / "best.weights.h5")

    # ---- export
    progress("exporting float and int8 TFLite models")
    float_bytes = convert_float(full)
    int8_bytes = convert_int8(full, calibration)
    float_name = config.name.replace("_int8", "") + "_float"
    base_extra = {
        "trained_on": {
            "datasets": [str(p) for p in config.datasets],
            "split_file": data_info["split"],
            "photos": data_info["datasets"],
            "augmented_views_per_photo": (
                f"fresh every epoch ({config.fine_epochs} epochs); {config.copies} cached for the head"
                if config.online
                else config.copies
            ),
            "validation_photos_trained_on": config.include_val,
        },
        "calibration": {
            "photos": len(calibration),
            "from": ("train + val" if config.include_val else "training")
            + " photos (seeded permutation), fit_to_input",
        },
        "quantization_aware_epochs": config.qat_epochs,
        "temperature": temperature,
    }
    float_path = out / f"{float_name}.tflite"
    int8_path = out / f"{config.name}.tflite"
    write_model(float_path, float_bytes, model_metadata(config, float_bytes, float_name, dict(base_extra)))
    write_model(int8_path, int8_bytes, model_metadata(config, int8_bytes, config.name, dict(base_extra)))
    progress(f"  {float_path} {len(float_bytes) / 1e6:.2f} MB, {int8_path} {len(int8_bytes) / 1e6:.2f} MB")

    # ---- validation metrics of the exported models, through the agent's Classifier
    val_eval = {}
    recommended: dict[str, Any] | None = None
    for label, path in (("float", float_path), ("int8", int8_path)):
        result = evaluate_items(path, val_items, progress=progress, what=f"val {label}")
        if label == "int8":
            recommended = recommended_threshold_entry(result["predictions"], result["views"])
        val_eval[label] = {
            key: result[key]
            for key in ("accuracy", "macro_f1", "per_class", "confusion_matrix", "latency_ms", "input_quantization")
        }
        progress(
            f"  val {label}: accuracy {result['accuracy']:.4f} macro-F1 {result['macro_f1']:.4f} "
            f"trash recall {result['per_class']['trash']['recall']:.3f} "
            f"latency mean {result['latency_ms']['mean']:.1f} ms"
        )

    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "datasets"}
        | {"datasets": [str(p) for p in config.datasets]},
        "data": data_info | {"unreadable": bad_train + bad_val},
        "class_weights": {CLASSES[c]: w for c, w in weights.items()},
        "phase1_head": {"history": log1.history if log1 else [], "best_epoch": log1.best_epoch if log1 else None},
        "phase2_finetune": {"history": log2.history if log2 else [], "best_epoch": log2.best_epoch if log2 else None},
        "phase3_quantization_aware": {
            "history": log3.history if log3 else [],
            "best_epoch": log3.best_epoch if log3 else None,
        },
        "temperature": temperature,
        "seconds": {
            "cache": round(cache_seconds, 1),
            "train_total": round(train_seconds, 1),
            "all": round(time.perf_counter() - t0, 1),
        },
        "models": {
            "float": {"path": str(float_path), "bytes": len(float_bytes)},
            "int8": {"path": str(int8_path), "bytes": len(int8_bytes)},
        },
        "validation": val_eval,
    }
    for path in (float_path, int8_path):
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        kind = "int8" if path == int8_path else "float"
        meta["metrics"] = {"validation": {k: val_eval[kind][k] for k in ("accuracy", "macro_f1")}}
        if kind == "int8" and recommended is not None:
            # The router takes it unless router.confidence_threshold pins one (router.py).
            meta["recommended_confidence_threshold"] = recommended
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    (out / "training_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    progress(f"done in {report['seconds']['all']:.0f}s; report: {out / 'training_report.json'}")
    return report


THRESHOLD_TARGET_ACCURACY = 0.97
"""The model card's rule: the recommended threshold is the lowest at which the validation
items the router would sort (confidence at or above it) are at least this share right."""


def recommended_threshold_entry(predictions: list[dict[str, Any]], views: int) -> dict[str, Any] | None:
    """The metadata's ``recommended_confidence_threshold`` from per-photo validation
    predictions (``evaluate_items``'s ``predictions``), by :data:`THRESHOLD_TARGET_ACCURACY`;
    None when no threshold reaches it (the router then keeps its default)."""
    from .evaluate import threshold_for_accuracy

    conf = np.array([row["confidence"] for row in predictions], dtype=float)
    correct = np.array([row["true"] == row["pred"] for row in predictions])
    row = threshold_for_accuracy(conf, correct, THRESHOLD_TARGET_ACCURACY) if len(conf) else None
    if row is None:
        return None
    return {
        "value": round(float(row["threshold"]), 4),
        "rule": f"lowest threshold whose sorted items are >= {THRESHOLD_TARGET_ACCURACY:.0%} right on the "
        f"validation photos (int8, {views} views)",
        "validation": {
            "sorted_share": round(float(row["sorted_share"]), 4),
            "sorted_accuracy": round(float(row["sorted_accuracy"]), 4),
        },
    }
