"""A classifier head refitted on the bin: a dense layer applied in NumPy.

A model's backbone (the ``.tflite``) ends in a pooled embedding (1,280 numbers
for MobileNetV2), then a dense layer and a softmax. ``bin-agent learn`` keeps
the backbone and refits only that last layer; the new layer lives in a small
file beside the model, ``<name>.head.npz``. When it is there the
:class:`~bin_agent.classify.classifier.Classifier` reads the embedding of each
view, averages the views' embeddings, and applies the head here: logits =
embedding · Wᵀ + b, divided by the head's temperature, then softmax.

The file (NumPy ``.npz``, no pickles) holds ``weights`` (classes × features,
float32), ``bias`` (classes), and ``meta``, a JSON string: ``version`` (the
model version the agent reports), ``classes``, ``temperature``, ``threshold``
(the router's confidence threshold fitted on the bin's labels, or null: the
config's), ``backbone_sha256`` (the ``.tflite`` it was fitted on) and what the
learn measured.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HEAD_SUFFIX = ".head.npz"
HEAD_FORMAT = 1

UNREADABLE_NPZ: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
"""What ``np.load`` of a damaged ``.npz`` raises (truncated by a power cut, a flipped bit on
the SD card: the zip's own checks, zlib, a file cut before its header): the readers of the
head, the training memory and the embedding cache turn them into their own one-line error."""


class HeadError(ValueError):
    """A head file is missing, corrupt, or does not fit its model."""


def head_path(model: str | Path) -> Path:
    """``x.head.npz`` beside ``x.tflite``."""
    return Path(model).with_suffix(HEAD_SUFFIX)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` (any leading shape)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass
class Head:
    """A dense layer over the embedding, with its calibration.

    :param weights: ``(classes, features)``.
    :param bias: ``(classes,)``.
    :param classes: class names in the order of the rows.
    :param version: the model version while this head is in use.
    :param temperature: logits are divided by it before the softmax.
    :param threshold: the router's confidence threshold for this head (None: the config's).
    :param backbone_sha256: sha256 of the ``.tflite`` whose embedding it reads.
    :param info: anything else worth keeping (what the learn measured).
    """

    weights: np.ndarray
    bias: np.ndarray
    classes: list[str]
    version: str
    temperature: float = 1.0
    threshold: float | None = None
    backbone_sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """Uncalibrated logits of ``(n, features)`` embeddings (temperature not applied)."""
        return np.asarray(embeddings, np.float32) @ self.weights.T + self.bias

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of ``(n, features)`` (or one ``(features,)``) embeddings."""
        return softmax(self.logits(embeddings) / self.temperature)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """The class index of each embedding."""
        return np.argmax(self.logits(embeddings), axis=-1)

    def save(self, path: str | Path) -> Path:
        """Write the head to ``path`` in one rename (a crash leaves the old file or none)."""
        path = Path(path)
        meta = {
            "format": HEAD_FORMAT,
            "version": self.version,
            "classes": list(self.classes),
            "temperature": float(self.temperature),
            "threshold": None if self.threshold is None else float(self.threshold),
            "backbone_sha256": self.backbone_sha256,
            "info": self.info,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez(
                f,
                weights=self.weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
                meta=np.array(json.dumps(meta)),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """Read a head file; raises :class:`HeadError`."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                weights = np.asarray(data["weights"], np.float32)
                bias = np.asarray(data["bias"], np.float32)
                meta = json.loads(str(data["meta"]))
        except UNREADABLE_NPZ as exc:
            raise HeadError(f"{path}: not a readable head file ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
            raise HeadError(f"{path}: unknown head format {meta.get('format') if isinstance(meta, dict) else None!r}")
        classes = meta.get("classes")
        if (
            weights.ndim != 2
            or bias.shape != (weights.shape[0],)
            or not isinstance(classes, list)
            or len(classes) != weights.shape[0]
        ):
            raise HeadError(f"{path}: weights {weights.shape}, bias {bias.shape} and classes do not agree")
        temperature = _number(meta.get("temperature", 1.0))
        if temperature is None or temperature <= 0 or not (np.all(np.isfinite(weights)) and np.all(np.isfinite(bias))):
            raise HeadError(
                f"{path}: temperature {meta.get('temperature')!r} is not a positive number, or its weights or "
                "bias are not finite"
            )
        threshold = meta.get("threshold")
        if threshold is not None and (_number(threshold) is None or not 0 <= float(threshold) <= 1):
            raise HeadError(f"{path}: threshold {threshold!r} is not a number from 0 to 1")
        info = meta.get("info") or {}
        return cls(
            weights=weights,
            bias=bias,
            classes=[str(c) for c in classes],
            version=str(meta.get("version", "unknown")),
            temperature=temperature,
            threshold=None if threshold is None else float(threshold),
            backbone_sha256=str(meta.get("backbone_sha256", "")),
            info=dict(info) if isinstance(info, dict) else {},
        )


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None when it is not a finite number (a string, a bool, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


# --------------------------------------------------------------------------- fitting


def class_balanced_weights(labels: np.ndarray, n_classes: int, extra: np.ndarray | None = None) -> np.ndarray:
    """Sample weights giving every present class the same total weight (times ``extra``
    per sample, e.g. a bin's own labels counting more than the memory's); mean 1."""
    extra = np.ones(len(labels), np.float64) if extra is None else np.asarray(extra, np.float64)
    weights = np.zeros(len(labels), np.float64)
    present = [c for c in range(n_classes) if np.any(labels == c)]
    for c in present:
        mask = labels == c
        weights[mask] = extra[mask] / extra[mask].sum()
    return (weights * len(labels) / max(weights.sum(), 1e-12)).astype(np.float32)


def fit_dense(
    features: np.ndarray,
    labels: np.ndarray,
    sample_weights: np.ndarray,
    init: Head,
    *,
    l2: float = 1e-3,
    steps: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression, warm-started from ``init`` and pulled towards
    it by an L2 penalty (``l2`` · ‖W − W₀‖²/2): what the bin's labels do not speak
    about stays as it was. Full-batch accelerated gradient descent (Nesterov) with
    the step 1/L, L the loss's smoothness bound (½ λmax(Xᵀ diag(w) X)/n + l2, the
    largest eigenvalue by power iteration): no learning rate to tune, no overshoot
    on 1,280 features. Returns (weights, bias)."""
    x = np.asarray(features, np.float32)
    n = x.shape[0]
    k = init.weights.shape[0]
    onehot = np.zeros((n, k), np.float32)
    onehot[np.arange(n), labels] = 1.0
    sw = (np.asarray(sample_weights, np.float32) / n)[:, None]
    # The bias is the weight of a constant feature 1: one matrix, one step size.
    xb = np.concatenate([x, np.ones((n, 1), np.float32)], axis=1)
    theta0 = np.concatenate([init.weights, init.bias[:, None]], axis=1).astype(np.float32)
    v = np.ones(xb.shape[1], np.float32)
    for _ in range(30):  # power iteration: λmax of Xᵀ diag(w) X
        v = xb.T @ (sw[:, 0] * (xb @ v))
        top = float(np.linalg.norm(v))
        v /= max(top, 1e-12)
    step = 1.0 / (0.5 * top + l2 + 1e-6)
    penalty = np.ones_like(theta0)
    penalty[:, -1] = 0.0  # the bias is not pulled
    theta = theta0.copy()
    previous = theta0.copy()
    for t in range(1, steps + 1):
        look = theta + (t - 1) / (t + 2) * (theta - previous)
        delta = (softmax(xb @ look.T) - onehot) * sw  # dLoss/dlogits
        grad = delta.T @ xb + l2 * penalty * (look - theta0)
        previous, theta = theta, look - step * grad
    return theta[:, :-1].copy(), theta[:, -1].copy()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``labels``
    (a grid of 61 values from 0.5 to 4, log-spaced: one number needs no optimiser)."""
    best, best_nll = 1.0, np.inf
    rows = np.arange(len(labels))
    for t in np.exp(np.linspace(np.log(0.5), np.log(4.0), 61)):
        probs = softmax(logits / t)
        nll = -float(np.mean(np.log(probs[rows, labels] + 1e-12)))
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def fit_threshold(
    confidences: np.ndarray, right: np.ndarray, target: float, *, lowest: float = 0.3, highest: float = 0.95
) -> float | None:
    """The lowest confidence threshold (a 0.05 grid in [``lowest``, ``highest``]) at which
    the items sorted (confidence ≥ it) are right at least ``target`` of the time; None
    when no threshold reaches it (then the config's stays)."""
    for t in np.arange(lowest, highest + 1e-9, 0.05):
        sorted_mask = confidences >= t
        if sorted_mask.sum() >= 5 and float(np.mean(right[sorted_mask])) >= target:
            return round(float(t), 2)
    return None


def accuracy(head: Head, features: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    labels = np.asarray(labels)
    return float(np.mean(head.predict(features) == labels)) if len(labels) else float("nan")
