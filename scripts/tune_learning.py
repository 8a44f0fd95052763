"""Choose ``[learning]`` settings on the bin's own labels only (cross-validation).

    python scripts/tune_learning.py --config WORK/sort1.toml

Reads the labelled captures of the config's capture folder (what ``bin-agent
learn`` would learn from: in ``scripts/measure_learning.py``, set 1 only; set 2
is never looked at) and, for each variant of the refit, judges it as learn's
verdict does: each fold (``learning.verdict_blocks`` stretches of each class's
labels) predicted by a head refitted without it. Prints one line per variant:
the labels right out of fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bin_agent import preflight  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.learning import deploy, learn  # noqa: E402


def lda_head(
    x: np.ndarray, y: np.ndarray, memory: learn.Memory, shrink: float, prior: float
) -> tuple[np.ndarray, np.ndarray]:
    """A shrinkage-LDA dense layer (a variant tried, not what learn does): the bin aligned as
    learn aligns it; the within-class covariance of the memory and the bin, shrunk by
    ``shrink`` towards its mean variance; each class's mean of the bin pulled towards the
    memory's by ``prior`` pseudo-labels; equal class priors."""
    shift = learn.alignment(x, y, memory).astype(np.float64)
    aligned = x.astype(np.float64) + shift
    classes = len(memory.classes)
    memory_means = memory.class_means
    residuals = [memory.embeddings - memory_means[memory.labels]]
    means = memory_means.copy()
    for c in range(classes):
        members = aligned[y == c]
        if len(members):
            means[c] = (members.sum(axis=0) + prior * memory_means[c]) / (len(members) + prior)
            residuals.append(members - members.mean(axis=0))
    r = np.concatenate(residuals)
    cov = r.T @ r / len(r)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    weights = np.linalg.solve(cov, means.T).T
    bias = -0.5 * np.sum(weights * means, axis=1)
    return weights, bias + weights @ shift


def shift_only_head(
    classifier: Any, x: np.ndarray, y: np.ndarray, memory: learn.Memory
) -> tuple[np.ndarray, np.ndarray]:
    """The model's own dense layer with learn's alignment folded into its bias, nothing
    refitted (a variant tried, not what learn does): how much of a refit the shift alone is."""
    origin = classifier.builtin_head()
    return origin.weights, origin.bias + origin.weights @ learn.alignment(x, y, memory)


def bias_only_head(classifier: Any, x: np.ndarray, y: np.ndarray, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The model's own weights, only the bias refitted on the bin's labels (class-balanced
    cross-entropy, gradient descent; a variant tried, not what learn does): six numbers,
    so little to overfit, and enough to learn the bin's look shifting every class alike."""
    origin = classifier.builtin_head()
    logits = x @ origin.weights.T
    bias = origin.bias.astype(np.float64).copy()
    counts = np.bincount(y, minlength=len(bias)).astype(np.float64)
    weight = np.where(counts[y] > 0, 1.0 / np.maximum(counts[y], 1), 0.0)
    weight /= weight.sum()
    onehot = np.eye(len(bias))[y]
    for _ in range(steps):
        z = logits + bias
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        bias -= 1.0 * (weight[:, None] * (probs - onehot)).sum(axis=0)
    return origin.weights, bias.astype(np.float32)


def augmented_embeddings(classifier: Any, data: learn.Labelled) -> np.ndarray:
    """Each labelled capture's crop embedded again five ways (a variant tried, not what learn
    does): darker (x0.75), brighter (x1.3), its centre 85 %, and its top-right and bottom-left
    90 %; ``(items, 5, width)``, each the views' mean as the agent embeds."""
    from bin_agent.classify.preprocess import load_image

    def variants(image: np.ndarray) -> list[np.ndarray]:
        height, width = image.shape[:2]
        values = image.astype(np.float32)
        dy, dx = int(height * 0.075), int(width * 0.075)
        out = [np.clip(values * gain, 0, 255).astype(np.uint8) for gain in (0.75, 1.3)]
        out += [
            image[dy : height - dy, dx : width - dx],
            image[: int(height * 0.9), int(width * 0.1) :],
            image[int(height * 0.1) :, : int(width * 0.9)],
        ]
        return [np.ascontiguousarray(view) for view in out]

    return np.asarray(
        [[classifier.embed(view) for view in variants(load_image(item.image))] for item in data.items], np.float32
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--from-photos", action="store_true", help="embed the JPEGs instead of taking the embeddings capture kept"
    )
    args = parser.parse_args()
    if args.from_photos:
        learn.decode_embedding = lambda info, backbone: None  # type: ignore[assignment]
    config = preflight.load(args.config)
    classifier = learn.embedding_classifier(config.model.path, config)  # what the first learn starts from
    data, _ = learn.labelled_captures(config, classifier)
    memory = learn.load_memory(config, deploy.sha256(classifier.files.model))
    x, y = data.embeddings, data.labels
    folds = learn.verdict_folds(y, config.learning.verdict_blocks)
    print(f"{len(y)} labels, {len(folds)} folds; memory {0 if memory is None else len(memory.labels)}")
    current = learn.head_of(classifier).predict(x) == y
    print(f"{'shipped head (no refit)':44s} {current.mean():.3f} ({current.sum()}/{len(y)})")
    base = config.learning
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("defaults", {}, {}),
        ("steps 30", {"steps": 30}, {}),
        ("steps 50", {"steps": 50}, {}),
        ("steps 300", {"steps": 300}, {}),
        ("steps 1000", {"steps": 1000}, {}),
        ("l2 0.001", {"l2": 0.001}, {}),
        ("l2 0 (no pull)", {"l2": 0.0}, {}),
        ("l2 0.1", {"l2": 0.1}, {}),
        ("bin_weight 3", {"bin_weight": 3.0}, {}),
        ("bin_weight 30", {"bin_weight": 30.0}, {}),
        ("bin_weight 100", {"bin_weight": 100.0}, {}),
        ("no alignment", {}, {"align": False}),
        ("alignment without the class mix", {}, {"mix": False}),
        ("no memory", {}, {"memory": False}),
        ("defaults, fitted on 70 % of the other folds", {}, {"share": 0.7}),
        ("shrinkage-LDA head (shrink 0.5, prior 20)", {}, {"lda": True}),
        ("alignment shift only (no refit)", {}, {"shift_only": True}),
        ("bias only, fitted on the bin's labels", {}, {"bias_only": True}),
        ("+ 5 augmented crops per label, bin_weight / 6", {"bin_weight": base.bin_weight / 6}, {"augment": True}),
        ("+ 5 augmented crops per label, bin_weight as is", {}, {"augment": True}),
    ]
    augmented = augmented_embeddings(classifier, data) if data.items else np.zeros((0, 5, x.shape[1]), np.float32)
    original_alignment = learn.alignment
    for name, settings, how in variants:
        cfg = dataclasses.replace(config, learning=dataclasses.replace(base, **settings))
        if not how.get("align", True):
            learn.alignment = lambda x, y, m: np.zeros(x.shape[1], np.float32)
        if not how.get("mix", True):
            learn.alignment = lambda x, y, m: (m.embeddings.mean(axis=0) - x.mean(axis=0)).astype(np.float32)
        started = time.perf_counter()
        right = np.zeros(len(y), bool)
        for fold in folds:
            keep = np.setdiff1d(np.arange(len(y)), fold)
            keep = keep[: round(how.get("share", 1.0) * len(keep))]
            if how.get("lda") and memory is not None:
                weights, bias = lda_head(x[keep], y[keep], memory, shrink=0.5, prior=20)
            elif how.get("shift_only") and memory is not None:
                weights, bias = shift_only_head(classifier, x[keep], y[keep], memory)
            elif how.get("bias_only"):
                weights, bias = bias_only_head(classifier, x[keep], y[keep])
            else:
                used = memory if how.get("memory", True) else None
                fit_x, fit_y = x[keep], y[keep]
                if how.get("augment"):
                    extra = augmented[keep]
                    fit_x = np.concatenate([fit_x, extra.reshape(-1, extra.shape[-1])])
                    fit_y = np.concatenate([fit_y, np.repeat(fit_y, extra.shape[1])])
                weights, bias = learn.refit(classifier, fit_x, fit_y, used, cfg)
            right[fold] = (x[fold] @ weights.T + bias).argmax(axis=1) == y[fold]
        learn.alignment = original_alignment
        fixes, breaks = int(np.sum(right & ~current)), int(np.sum(current & ~right))
        print(
            f"{name:44s} {right.mean():.3f} ({right.sum()}/{len(y)}) {fixes:3d} fixes {breaks:3d} breaks "
            f"p {learn.one_sided_sign_test(fixes, breaks):.3f}  {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    run_script(main)
