"""Evaluate a ``.tflite`` model on labelled photos, exactly as the agent runs it.

Every photo goes through :class:`bin_agent.classifier.Classifier` — the same
LiteRT interpreter, the same ``fit_to_input`` preprocessing, the same
quantization handling as the running bin. No TensorFlow is imported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import CLASSES
from ..classify.classifier import Classifier
from ..classify.preprocess import ImageError, load_image
from . import dataset as ds

THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


def evaluate_items(
    model: str | Path,
    items: Sequence[ds.Item],
    progress: Progress = _silent,
    what: str = "evaluate",
    threads: int | None = None,
    views: int | None = None,
) -> dict[str, Any]:
    """Classify every item; return metrics (see :func:`metrics`) plus raw results.

    ``views``: views averaged per photo (``None``: the model metadata's, as the agent does)."""
    clf = Classifier.from_model_path(model, num_threads=threads, views=views)
    if list(clf.labels) != list(CLASSES):
        # evaluation maps folder names to indices of CLASSES
        label_index = {name: i for i, name in enumerate(clf.labels)}
    else:
        label_index = {name: i for i, name in enumerate(CLASSES)}
    y_true, y_pred, conf, latency, inference, unreadable, keys = [], [], [], [], [], [], []
    started = time.perf_counter()
    for index, item in enumerate(items):
        try:
            image = load_image(item.path)
        except ImageError as exc:
            unreadable.append(str(exc))
            continue
        result = clf.classify(image)
        true_name = CLASSES[item.label]
        if true_name not in label_index:
            unreadable.append(f"{item.path}: class {true_name} is not among the model's labels")
            continue
        y_true.append(label_index[true_name])
        y_pred.append(label_index[result.label])
        conf.append(result.confidence)
        latency.append(result.preprocess_ms + result.inference_ms)
        inference.append(result.inference_ms)
        keys.append(item.key)
        done = index + 1
        if done % 100 == 0 or done == len(items):
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress(f"  {what}: {done}/{len(items)} photos ({rate:.1f}/s)")
    if not y_true:
        raise ds.DatasetError("no readable photos to evaluate")
    out = metrics(np.array(y_true), np.array(y_pred), np.array(conf), list(clf.labels))
    out["latency_ms"] = {
        "mean": float(np.mean(latency)),
        "p95": float(np.percentile(latency, 95)),
        "inference_mean": float(np.mean(inference)),
        "inference_p95": float(np.percentile(inference, 95)),
        "threads": threads,
        "note": "per image: fit_to_input + quantize + invoke of every view, after decoding the JPEG",
    }
    out["views"] = clf.views
    scale, zero = clf._input["quantization"]
    out["input_quantization"] = {"dtype": str(clf.input_dtype), "scale": float(scale), "zero_point": int(zero)}
    out["unreadable"] = unreadable
    out["model"] = str(model)
    out["model_bytes"] = Path(model).stat().st_size
    out["predictions"] = [
        {"key": k, "true": clf.labels[t], "pred": clf.labels[p], "confidence": round(float(c), 4)}
        for k, t, p, c in zip(keys, y_true, y_pred, conf)
    ]
    return out


def metrics(y_true: np.ndarray, y_pred: np.ndarray, conf: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro-F1, confusion matrix,
    a reliability table and a confidence-threshold table."""
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    per_class = {}
    f1s = []
    for c, name in enumerate(labels):
        tp = int(cm[c, c])
        support = int(cm[c].sum())
        predicted = int(cm[:, c].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "recall_interval_95": list(wilson_interval(tp, support)),
        }
        if support:
            f1s.append(f1)
    correct = y_true == y_pred
    return {
        "n": int(len(y_true)),
        "accuracy": float(correct.mean()),
        "accuracy_interval_95": list(wilson_interval(int(correct.sum()), len(correct))),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
        "thresholds": threshold_table(conf, correct),
        "reliability": reliability_table(conf, correct),
    }


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``successes / n``: how far a
    figure measured on ``n`` photos may be from the model's true rate (with
    17 trash photos, one photo is 6 points of recall)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def threshold_table(conf: np.ndarray, correct: np.ndarray, thresholds=THRESHOLDS) -> list[dict[str, float]]:
    """For each threshold: share of items sorted (confidence >= t), accuracy of
    those, share sent to the fallback compartment."""
    rows = []
    for t in thresholds:
        sorted_mask = conf >= t
        share = float(sorted_mask.mean())
        acc = float(correct[sorted_mask].mean()) if sorted_mask.any() else float("nan")
        rows.append({"threshold": t, "sorted_share": share, "sorted_accuracy": acc, "fallback_share": 1 - share})
    return rows


FINE_THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95


def threshold_for_accuracy(conf: np.ndarray, correct: np.ndarray, target: float) -> dict[str, float] | None:
    """The lowest threshold of ``FINE_THRESHOLDS`` at which the sorted items
    (confidence >= threshold) are at least ``target`` right, with its share
    sorted; None if none reaches it."""
    for row in threshold_table(conf, correct, FINE_THRESHOLDS):
        if row["sorted_share"] > 0 and row["sorted_accuracy"] >= target:
            return row | {"target": target}
    return None


def reliability_table(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict[str, Any]:
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if not mask.any():
            continue
        acc, mean_conf = float(correct[mask].mean()), float(conf[mask].mean())
        rows.append(
            {
                "from": float(lo),
                "to": float(hi),
                "count": int(mask.sum()),
                "mean_confidence": mean_conf,
                "accuracy": acc,
            }
        )
        ece += mask.mean() * abs(acc - mean_conf)
    return {"bins": rows, "expected_calibration_error": float(ece)}


def plot_confusion(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result["confusion_matrix"])
    labels = result["labels"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=10,
                )
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{title}\naccuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}, n={result['n']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = result["reliability"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110)
    bins = rel["bins"]
    centers = [(b["from"] + b["to"]) / 2 for b in bins]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(centers, [b["accuracy"] for b in bins], width=0.09, alpha=0.7, label="accuracy in bin")
    ax.plot(
        [b["mean_confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o-",
        color="C3",
        label="(mean confidence, accuracy)",
    )
    for c, b in zip(centers, bins):
        ax.text(c, 0.02, str(b["count"]), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence of the top class")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {rel['expected_calibration_error']:.3f}; counts at bottom)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    rows = result["thresholds"]
    ts = [r["threshold"] for r in rows]
    ax2.plot(ts, [r["sorted_accuracy"] for r in rows], "o-", label="accuracy of items sorted")
    ax2.plot(ts, [r["fallback_share"] for r in rows], "s-", label="share sent to fallback")
    ax2.set_xlabel("confidence threshold")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    ax2.set_title("confidence threshold trade-off", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_summary(result: dict[str, Any]) -> str:
    lines = [
        f"model {result['model']} ({result['model_bytes'] / 1e6:.2f} MB), {result['n']} photos, "
        f"{result['views']} view(s) per photo"
        + (f", {len(result['unreadable'])} unreadable (skipped)" if result["unreadable"] else ""),
        f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   "
        "(accuracy 95 % interval {:.3f}-{:.3f})".format(*result["accuracy_interval_95"]),
        f"latency per image: mean {result['latency_ms']['mean']:.1f} ms, p95 {result['latency_ms']['p95']:.1f} ms "
        f"(invoke only, all views: mean {result['latency_ms']['inference_mean']:.1f} ms)",
        "",
        f"{'class':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'n':>5}   recall 95 % interval",
    ]
    for name, row in result["per_class"].items():
        low, high = row["recall_interval_95"]
        lines.append(
            f"{name:<10} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>5}"
            f"   {low:.3f}-{high:.3f}"
        )
    labels = result["labels"]
    lines += [
        "",
        "confusion matrix (rows true, columns predicted):",
        " " * 10 + "".join(f"{name[:8]:>9}" for name in labels),
    ]
    for name, row in zip(labels, result["confusion_matrix"]):
        lines.append(f"{name:<10}" + "".join(f"{v:>9}" for v in row))
    lines += ["", "threshold  sorted  accuracy-of-sorted  to-fallback"]
    for row in result["thresholds"]:
        lines.append(
            f"{row['threshold']:>9.2f}  {row['sorted_share']:>6.3f}  {row['sorted_accuracy']:>18.4f}"
            f"  {row['fallback_share']:>11.3f}"
        )
    lines.append(
        f"expected calibration error {result['reliability']['expected_calibration_error']:.4f}; "
        + _threshold_text(result.get("threshold_for_target"))
    )
    if "sources" in result:
        lines += [
            "",
            "per source:",
            f"{'source':<12} {'n':>5} {'accuracy':>8} {'macro-F1':>8} {'ECE':>6}  threshold for target",
        ]
        for name, source in result["sources"].items():
            lines.append(
                f"{name:<12} {source['n']:>5} {source['accuracy']:>8.4f} {source['macro_f1']:>8.4f} "
                f"{source['reliability']['expected_calibration_error']:>6.3f}  "
                + _threshold_text(source.get("threshold_for_target"))
            )
    return "\n".join(lines)


def _threshold_text(row: dict[str, float] | None) -> str:
    if row is None:
        return "no threshold up to 0.95 reaches the target accuracy"
    return (
        f"threshold {row['threshold']:.2f} sorts {row['sorted_share']:.3f} of items, "
        f"{row['sorted_accuracy']:.4f} of them right (target {row['target']:.2f})"
    )


def _selected(dataset_dir: Path, split: Path | None, subset: str) -> list[ds.Item]:
    items = ds.list_dataset(dataset_dir)
    if split is not None:
        entry = ds.split_for(ds.read_split(split), Path(dataset_dir), split)
        items = ds.select(items, entry, subset)
        if not items:
            raise ds.DatasetError(f"{split}: subset {subset!r} has no photos in {dataset_dir}")
    elif subset not in ("all", "test"):
        raise ds.DatasetError(f"--subset {subset} needs --split")
    return items


def pooled(results: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """Metrics of several evaluations of one model taken together (from their
    per-photo predictions)."""
    labels = results[0]["labels"]
    index = {name: i for i, name in enumerate(labels)}
    rows = [row for result in results for row in result["predictions"]]
    y_true = np.array([index[row["true"]] for row in rows])
    y_pred = np.array([index[row["pred"]] for row in rows])
    conf = np.array([row["confidence"] for row in rows])
    out = metrics(y_true, y_pred, conf, labels)
    out["threshold_for_target"] = threshold_for_accuracy(conf, y_true == y_pred, target)
    weights = np.array([r["n"] for r in results], dtype=float)
    out["latency_ms"] = {
        key: float(np.average([r["latency_ms"][key] for r in results], weights=weights))
        for key in ("mean", "p95", "inference_mean", "inference_p95")
    }
    out["latency_ms"]["note"] = results[0]["latency_ms"]["note"] + "; weighted mean over the sources"
    for key in ("views", "input_quantization", "model", "model_bytes"):
        out[key] = results[0][key]
    out["unreadable"] = [line for r in results for line in r["unreadable"]]
    return out


def run(
    model: Path,
    dataset_dirs: Path | Sequence[Path],
    split: Path | None,
    subset: str,
    out: Path | None,
    threads: int | None = None,
    progress: Progress = print,
    views: int | None = None,
    target_accuracy: float = 0.97,
) -> dict[str, Any]:
    """The ``evaluate`` command's work: metrics, JSON, PNGs. With several
    dataset folders, the top level holds the pooled metrics and ``sources``
    each folder's own. ``threshold_for_target``: the lowest confidence
    threshold at which the sorted items are ``target_accuracy`` right. Raises
    :class:`~bin_agent.training.dataset.DatasetError` or
    :class:`~bin_agent.classifier.ModelFilesError` with a one-line message."""
    from ..classify.classifier import ModelFilesError

    dirs = [Path(dataset_dirs)] if isinstance(dataset_dirs, (str, Path)) else [Path(d) for d in dataset_dirs]
    selections = [(d, _selected(d, split, subset)) for d in dirs]  # every folder checked before any work
    if not Path(model).is_file():
        raise ModelFilesError(f"{model}: no such model file")
    sources = {}
    for dataset_dir, items in selections:
        progress(
            f"evaluating {model} on {len(items)} photos from {dataset_dir}"
            + (f" ({subset} subset of {split})" if split else "")
        )
        result = evaluate_items(model, items, progress=progress, threads=threads, views=views)
        conf = np.array([row["confidence"] for row in result["predictions"]])
        correct = np.array([row["true"] == row["pred"] for row in result["predictions"]])
        result["threshold_for_target"] = threshold_for_accuracy(conf, correct, target_accuracy)
        result["dataset"] = str(dataset_dir)
        sources[ds.dataset_name(dataset_dir)] = result
    if len(sources) == 1:
        result = next(iter(sources.values()))
    else:
        result = pooled(list(sources.values()), target_accuracy)
        result["dataset"] = [str(d) for d in dirs]
        result["sources"] = sources
    result["split"] = str(split) if split else None
    result["subset"] = subset if split else "all"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = Path(model).stem
        (out / f"{stem}_eval.json").write_text(json.dumps(result, indent=1) + "\n")
        title = f"{stem} on {' + '.join(d.name for d in dirs)} ({result['subset']})"
        result["written"] = [str(out / f"{stem}_eval.json")]
        try:
            import matplotlib  # noqa: F401  (an optional extra: [report])
        except ImportError:
            progress("plots skipped: matplotlib is not installed (pip install -e '.[report]' in the checkout)")
        else:
            plot_confusion(result, out / f"{stem}_confusion.png", title)
            plot_reliability(result, out / f"{stem}_reliability.png", title)
            result["written"] += [str(out / f"{stem}_{s}") for s in ("confusion.png", "reliability.png")]
    return result
