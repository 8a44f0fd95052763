"""Classify a frame with a TensorFlow Lite image model.

A model is three files side by side: ``<name>.tflite``, a labels file (one
class per line) and a metadata JSON sidecar (input size, preprocessing, class
names, version; see ``models/README.md``). :class:`Classifier` loads them once,
checks that they agree, and then turns an RGB frame into a
:class:`Classification`.

float32, uint8 and int8 inputs and outputs are handled through the tensors'
own quantization parameters, so a float model and its full-integer twin are
used the same way.

A classifier can look at an item more than once (``views``): the fitted frame,
its mirror image, and both turned half around, each through the model, with
the probabilities averaged. Items in a bin have no "up" or "left", the model
was trained on such turned views, and the average of several int8 passes
smooths out much of the rounding error of full-integer arithmetic. The
model's metadata says how many views it was measured with (``"views"``).

The views go through the model as one batch (one ``invoke()`` on an input
resized to ``[views, height, width, 3]``) where the model allows it: the
outputs are the same as view by view (each image in a batch is computed on its
own), and the interpreter's threads share the work of the batch, where a
single 160x160 image leaves a second thread little to do. A model whose graph
is fixed to batch 1 is run view by view.

A head refitted on the bin (``bin-agent learn``, :mod:`.head`) lies beside the
model as ``<name>.head.npz``. With it, the classifier reads the embedding
before the model's own dense layer for each view, averages the views'
embeddings and applies the refitted head in NumPy; the model version is then
the head's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BinAgentError
from .head import Head, HeadError, head_path
from .preprocess import PreprocessSpec, fit_to_input
from .runtime import ModelLoadError, load_interpreter

VIEWS = (1, 2, 4)
"""Allowed views per item: the frame; + its mirror image; + both turned 180°."""


class ModelFilesError(BinAgentError, ValueError):
    """The model, labels and metadata files are missing, corrupt or disagree."""

    exit_code = os.EX_CONFIG


@dataclass(frozen=True)
class Classification:
    """The result for one frame.

    :param label: the most probable class.
    :param confidence: its probability in [0, 1].
    :param top: the best classes as ``(label, probability)``, best first.
    :param probabilities: every class's probability, in the model's order.
    :param preprocess_ms: crop/resize/quantize time.
    :param inference_ms: ``invoke()`` time, all views together.
    :param views: how many views of the frame were averaged.
    :param embedding: the views' mean embedding (float32), when the classifier
        reads it (a refitted head, or ``embeddings=True``); else None.
    """

    label: str
    confidence: float
    top: tuple[tuple[str, float], ...]
    probabilities: tuple[float, ...]
    preprocess_ms: float
    inference_ms: float
    views: int = 1
    embedding: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "class": self.label,
            "confidence": round(self.confidence, 4),
            "top3": [{"class": c, "confidence": round(p, 4)} for c, p in self.top[:3]],
            "preprocess_ms": round(self.preprocess_ms, 2),
            "inference_ms": round(self.inference_ms, 2),
            "views": self.views,
        }


@dataclass(frozen=True)
class ModelFiles:
    """Paths of a model's three files."""

    model: Path
    labels: Path
    metadata: Path

    @classmethod
    def beside(cls, model: str | Path) -> ModelFiles:
        """The conventional layout: ``x.tflite``, ``x.labels.txt``, ``x.json``."""
        model = Path(model)
        return cls(model, model.with_suffix(".labels.txt"), model.with_suffix(".json"))

    @property
    def head(self) -> Path:
        """The optional refitted head, ``x.head.npz`` (:mod:`.head`)."""
        return head_path(self.model)


def read_labels(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{path}: cannot read labels ({exc})") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelFilesError(f"{path}: labels file is empty")
    if len(set(labels)) != len(labels):
        raise ModelFilesError(f"{path}: labels file repeats a class")
    return labels


def recommended_threshold(metadata: Mapping[str, Any], path: Path) -> float | None:
    """The metadata's ``recommended_confidence_threshold`` (``{"value": 0.8, "rule": ...}`` as
    ``bin-agent train`` writes it, or a bare number); None when it has none.

    :raises ModelFilesError: it is there but not a number from 0 to 1.
    """
    entry = metadata.get("recommended_confidence_threshold")
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    if entry is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ModelFilesError(f"{path}: 'recommended_confidence_threshold' is {entry!r}, expected a number from 0 to 1")
    return float(value)


def metadata_flag(metadata: Mapping[str, Any], key: str, default: bool, path: Path) -> bool:
    """The metadata's true/false ``key`` (``default`` when it has none).

    :raises ModelFilesError: it is there but not true or false: ``bool("false")`` is true.
    """
    value = metadata.get(key, default)
    if not isinstance(value, bool):
        raise ModelFilesError(f"{path}: {key!r} is {value!r}, expected true or false")
    return value


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{path}: cannot read metadata ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelFilesError(f"{path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict) or "input_size" not in metadata:
        raise ModelFilesError(f"{path}: metadata has no 'input_size'")
    return metadata


class Classifier:
    """A loaded model, ready to classify frames.

    :param files: the model's three files.
    :param num_threads: interpreter threads (``None``: the runtime's choice).
    :param top_k: how many classes :attr:`Classification.top` holds.
    :param views: views averaged per frame (1, 2 or 4, see the module doc);
        ``None`` takes the metadata's ``"views"`` (1 if it has none).
    :param embeddings: also read the embedding (:attr:`Classification.embedding`)
        when no refitted head needs it.
    :param embeddings_if_readable: with ``embeddings``, a model without a
        readable embedding (no dense layer) is not refused: it classifies
        without one (what capture wants: photos, with embeddings when it can).
    """

    def __init__(
        self,
        files: ModelFiles,
        num_threads: int | None = None,
        top_k: int = 3,
        views: int | None = None,
        embeddings: bool = False,
        embeddings_if_readable: bool = False,
    ) -> None:
        self.files = files
        self.labels = read_labels(files.labels)
        self.metadata = read_metadata(files.metadata)
        try:
            self.spec = PreprocessSpec.from_metadata(self.metadata)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFilesError(f"{files.metadata}: bad preprocessing ({exc})") from None
        meta_classes = self.metadata.get("classes")
        if meta_classes is not None and list(meta_classes) != self.labels:
            raise ModelFilesError(f"{files.labels} lists {self.labels} but {files.metadata} says {meta_classes}")
        self.num_threads = num_threads
        self.head: Head | None = None
        if files.head.is_file():
            try:
                self.head = Head.load(files.head)
            except HeadError as exc:
                raise ModelFilesError(str(exc)) from None
            if self.head.classes != self.labels:
                raise ModelFilesError(f"{files.head} has the classes {self.head.classes}, the model {self.labels}")
        self.reads_embedding = embeddings or self.head is not None
        self.backbone_sha256 = hashlib.sha256(files.model.read_bytes()).hexdigest() if self.reads_embedding else ""
        """The model file's sha256 when the classifier reads embeddings (they are only
        comparable between classifiers of the same backbone); else empty."""
        try:
            self._interpreter = load_interpreter(files.model, num_threads, keep_tensors=self.reads_embedding)
        except ModelLoadError as exc:
            raise ModelFilesError(str(exc)) from None
        self.top_k = top_k
        self.views = self._views(views)
        # The router's threshold unless router.confidence_threshold is set (None: none recommended).
        self.recommended_threshold = recommended_threshold(self.metadata, files.metadata)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._check_shapes()
        in_scale, in_zero = self._input["quantization"]
        self._in_dtype = np.dtype(self._input["dtype"])
        self._in_scale, self._in_zero = float(in_scale), int(in_zero)
        # Raw pixels can go straight in when the input quantization maps
        # 0..255 onto itself: the int8 models we ship are built that way.
        self._pixels_pass_through = (
            self._in_dtype == np.uint8
            and self._in_scale == 1.0
            and self._in_zero == 0
            and self.spec.is_identity_normalization
        )
        out_scale, out_zero = self._output["quantization"]
        self._out_dtype = np.dtype(self._output["dtype"])
        self._out_scale, self._out_zero = float(out_scale), int(out_zero)
        self._outputs_probabilities = metadata_flag(self.metadata, "output_is_probability", True, files.metadata)
        self._batch_size = 1  # the input's batch dimension as currently allocated
        self.batched = self.views > 1 and self._resize_batch(self.views)
        """Whether the views go through one ``invoke()`` as a batch (module docstring)."""
        self._embedding: dict[str, Any] | None = None
        if self.reads_embedding:
            try:
                self._embedding = self._embedding_tensor()
            except ModelFilesError:
                if self.head is not None or not embeddings_if_readable:
                    raise
                self.reads_embedding, self.backbone_sha256 = False, ""
        if self.head is not None and self._embedding is not None:
            features = int(self._embedding["shape"][-1])
            if self.head.weights.shape[1] != features:
                raise ModelFilesError(
                    f"{files.head} reads {self.head.weights.shape[1]} features, the model's embedding has {features}"
                )

    def _dense_op(self) -> dict[str, Any]:
        """The last FULLY_CONNECTED op: its inputs are (embedding, weights, bias)."""
        try:
            ops = self._interpreter._get_ops_details()  # the runtimes' only op listing
        except AttributeError:
            ops = []
        dense = [op for op in ops if op.get("op_name") == "FULLY_CONNECTED"]
        if not dense:
            raise ModelFilesError(f"{self.files.model}: no dense layer found, so no embedding to read")
        return dict(dense[-1])

    def _embedding_tensor(self) -> dict[str, Any]:
        """The tensor details of the embedding: the metadata's ``"embedding_tensor"`` (a
        name), else the input of the last dense layer."""
        details = self._interpreter.get_tensor_details()
        name = self.metadata.get("embedding_tensor")
        if name is not None:
            for detail in details:
                if detail["name"] == name:
                    return dict(detail)
            raise ModelFilesError(f"{self.files.model}: no tensor {name!r} (the metadata's embedding_tensor)")
        index = int(self._dense_op()["inputs"][0])
        return dict(next(d for d in details if d["index"] == index))

    @property
    def embedding_width(self) -> int:
        """Features of the embedding (0 when the classifier does not read it)."""
        return int(self._embedding["shape"][-1]) if self._embedding is not None else 0

    def builtin_head(self) -> Head:
        """The model's own dense layer as a :class:`~.head.Head` (dequantized;
        the temperature is already folded into it), versioned as the model."""
        if not self.reads_embedding:
            raise ModelFilesError("builtin_head needs a classifier built with embeddings=True")
        details = {d["index"]: d for d in self._interpreter.get_tensor_details()}
        inputs = [int(i) for i in self._dense_op()["inputs"]]
        arrays = []
        for index in inputs[1:3]:
            q = details[index]["quantization_parameters"]
            values = self._interpreter.get_tensor(index).astype(np.float32)
            scales = np.asarray(q["scales"], np.float32)
            zeros = np.asarray(q["zero_points"], np.float32)
            if scales.size:  # per tensor (1 scale) or per output channel (axis 0)
                shape = (-1,) + (1,) * (values.ndim - 1) if scales.size > 1 else ()
                values = (values - zeros.reshape(shape)) * scales.reshape(shape)
            arrays.append(values)
        weights, bias = arrays
        return Head(
            weights=weights,
            bias=bias,
            classes=list(self.labels),
            version=str(self.metadata.get("version", "unknown")),
            temperature=1.0,
            threshold=None,
            backbone_sha256=str(self.metadata.get("sha256", "")),
            info={"builtin": True},
        )

    @classmethod
    def from_model_path(cls, model: str | Path, num_threads: int | None = None, views: int | None = None) -> Classifier:
        return cls(ModelFiles.beside(model), num_threads=num_threads, views=views)

    def _views(self, views: int | None) -> int:
        if views is None:
            views = self.metadata.get("views", 1)
            if isinstance(views, bool) or not isinstance(views, int) or views not in VIEWS:
                raise ModelFilesError(f"{self.files.metadata}: 'views' is {views!r}, expected one of {list(VIEWS)}")
        elif views not in VIEWS:
            raise ValueError(f"views must be one of {list(VIEWS)}, got {views!r}")
        return int(views)

    @property
    def version(self) -> str:
        """The head's version when a refitted head is in use, else the metadata's."""
        if self.head is not None:
            return self.head.version
        return str(self.metadata.get("version", "unknown"))

    @property
    def threshold(self) -> float | None:
        """The confidence threshold fitted with the head (None: the config's)."""
        return self.head.threshold if self.head is not None else None

    @property
    def input_dtype(self) -> np.dtype:
        return self._in_dtype

    def _check_shapes(self) -> None:
        shape = tuple(int(d) for d in self._input["shape"])
        height, width = self.spec.input_size
        if len(shape) != 4 or shape[1:] != (height, width, 3):
            raise ModelFilesError(
                f"{self.files.model}: input shape {shape} does not match the metadata "
                f"input_size {[height, width]} (expected [1, {height}, {width}, 3])"
            )
        n_out = int(self._output["shape"][-1])
        if n_out != len(self.labels):
            raise ModelFilesError(
                f"{self.files.model} has {n_out} outputs but {self.files.labels} lists {len(self.labels)} classes"
            )

    def model_input(self, pixels: np.ndarray) -> np.ndarray:
        """Turn fitted ``uint8`` pixels (``fit_to_input``) into the input tensor."""
        if self._pixels_pass_through:
            return pixels[np.newaxis]
        values = pixels.astype(np.float32)
        if not self.spec.is_identity_normalization:
            mean, std = np.asarray(self.spec.mean, np.float32), np.asarray(self.spec.std, np.float32)
            values = ((values - mean) / std).astype(np.float32)
        if self._in_dtype == np.float32:
            return values[np.newaxis]
        info = np.iinfo(self._in_dtype)
        quantized = np.round(values / self._in_scale + self._in_zero)
        return np.clip(quantized, info.min, info.max).astype(self._in_dtype)[np.newaxis]

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Dequantize the output tensor and, if it holds logits, apply softmax: one row
        of class probabilities per image of the batch (a batch of 1: one flat row)."""
        rows = raw.shape[0] if raw.ndim > 1 else 1
        values = raw.astype(np.float32).reshape(rows, -1)
        if self._out_dtype != np.float32:
            values = (values - self._out_zero) * self._out_scale
        if not self._outputs_probabilities:
            values = np.exp(values - values.max(axis=1, keepdims=True))
            values /= values.sum(axis=1, keepdims=True)
        return values[0] if rows == 1 else values

    def _resize_batch(self, size: int) -> bool:
        """Allocate the input for batches of ``size``; False where the model does not allow it."""
        if size == self._batch_size:
            return True
        height, width = self.spec.input_size
        try:
            self._interpreter.resize_tensor_input(self._input["index"], [size, height, width, 3])
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError):
            # A graph fixed to batch 1 (a Reshape to [1, ...]): back to what it was.
            self._interpreter.resize_tensor_input(self._input["index"], [self._batch_size, height, width, 3])
            self._interpreter.allocate_tensors()
            return False
        self._batch_size = size
        return True

    def view_tensors(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The input tensors of the first :attr:`views` views of fitted pixels:
        as they are, mirrored, turned 180°, turned 180° and mirrored."""
        # The same views, with one column-reversing copy instead of three: turned 180° is
        # the mirror image upside down, turned and mirrored is the frame upside down, and
        # reversing rows copies whole rows (0.13 instead of 0.26-0.34 ms for 4 views here).
        mirrored = np.ascontiguousarray(pixels[:, ::-1]) if self.views > 1 else pixels
        views = (pixels, mirrored, mirrored[::-1], pixels[::-1])[: self.views]
        return [self.model_input(np.ascontiguousarray(view)) for view in views]

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """One ``invoke()`` on an input tensor of one image or a batch; the class
        probabilities (one row per image of a batch)."""
        if not self._resize_batch(int(tensor.shape[0])):
            raise ValueError(f"{self.files.model.name} takes one image per invoke(), not {tensor.shape[0]}")
        self._interpreter.set_tensor(self._input["index"], tensor)
        self._interpreter.invoke()
        # get_tensor of the output after a resize: the output index may be re-read.
        return self.probabilities(self._interpreter.get_tensor(self._output["index"]))

    def read_embeddings(self) -> np.ndarray:
        """The embeddings of the last ``invoke()``, one row per image of its batch, dequantized to float32."""
        assert self._embedding is not None
        raw = self._interpreter.get_tensor(self._embedding["index"]).astype(np.float32)
        raw = raw.reshape(raw.shape[0], -1)
        scale, zero = self._embedding["quantization"]
        return (raw - float(zero)) * float(scale) if scale else raw

    def read_embedding(self) -> np.ndarray:
        """The embedding of the last single-image ``invoke()``, dequantized to float32."""
        return self.read_embeddings()[0]

    def embed(self, image: np.ndarray) -> np.ndarray:
        """The views' mean embedding of one RGB ``uint8`` frame (needs ``embeddings=True`` or a head)."""
        tensors = self.view_tensors(fit_to_input(image, self.spec))
        if self.batched:
            self.run(np.concatenate(tensors))
            return self.read_embeddings().mean(axis=0)
        embeddings = []
        for tensor in tensors:
            self.run(tensor)
            embeddings.append(self.read_embedding())
        return np.mean(embeddings, axis=0)

    def classify(self, image: np.ndarray) -> Classification:
        """Classify one RGB ``uint8`` frame of any size (all views averaged)."""
        started = time.perf_counter()
        tensors = self.view_tensors(fit_to_input(image, self.spec))
        prepared = time.perf_counter()
        embedding = None
        if self.batched:
            probs = self.run(np.concatenate(tensors)).mean(axis=0)
            if self.reads_embedding:
                embedding = self.read_embeddings().mean(axis=0)
        else:
            outputs, embeddings = [], []
            for tensor in tensors:
                outputs.append(self.run(tensor))
                if self.reads_embedding:
                    embeddings.append(self.read_embedding())
            probs = np.mean(outputs, axis=0)
            if embeddings:
                embedding = np.mean(embeddings, axis=0)
        if self.head is not None and embedding is not None:
            probs = self.head.probabilities(embedding)
        finished = time.perf_counter()
        order = np.argsort(probs)[::-1][: self.top_k]
        top = tuple((self.labels[i], float(probs[i])) for i in order)
        return Classification(
            label=top[0][0],
            confidence=top[0][1],
            top=top,
            probabilities=tuple(float(p) for p in probs),
            preprocess_ms=(prepared - started) * 1000.0,
            inference_ms=(finished - prepared) * 1000.0,
            views=self.views,
            embedding=embedding,
        )


def describe(classifier: Classifier) -> Mapping[str, Any]:
    """A short summary for logs and ``state``: model name, version, sizes."""
    return {
        "model": classifier.files.model.name,
        "version": classifier.version,
        "input_size": list(classifier.spec.input_size),
        "input_dtype": str(classifier.input_dtype),
        "views": classifier.views,
        "classes": list(classifier.labels),
    }
