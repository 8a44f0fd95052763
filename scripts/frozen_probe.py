#!/usr/bin/env python3
"""Cheap experiments on the frozen ImageNet backbone's features (models/README.md, "Method comparison").

    .venv/bin/python scripts/frozen_probe.py cache  DATASET_DIR... --split SPLIT --out runs/features
    .venv/bin/python scripts/frozen_probe.py report runs/features [--power 0 0.5 1]

``cache`` runs MobileNetV2 (ImageNet weights, 160 px, no training) once over
every photo: one view as the agent prepares it (``fit_to_input``) for every
photo of every subset, and ``--copies`` augmented training views
(:func:`bin_agent.training.dataset.augment`, the training recipe's) of every
training photo; it stores the 1280 pooled features, labels, sources and keys
in ``OUT/features.npz`` (a few tens of MB, under the git-ignored ``runs/``).

``report`` then fits linear probes (softmax regression on the cached
features, balanced class weights, optionally the source balance of
``bin-agent train --balance-sources``) in a second each and prints:

- the probe on all training photos, per source-balance power, scored on the
  validation photos (pooled, per source, TrashNet trash recall);
- leave one source out: trained on one source's training photos, scored on
  every photo of each other source (train, validation and test: none of them
  was seen), the cheap stand-in for "a bin nobody has photographed";
- the trash-mapping variants: the added set's residual-waste folders left out
  of training one at a time (scored on validation as above).

Test photos are read only by the leave-one-source-out rows (they score a
source the probe never saw); the validation rows never touch a test photo.
No figure here is a shipped model's: they compare choices cheaply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bin_agent import CLASSES  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.training import dataset as ds  # noqa: E402

SUBSET_CODE = {"train": 0, "val": 1, "test": 2}


def cache(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from bin_agent.training.train import TrainConfig, build_models

    config = TrainConfig(datasets=[Path(d) for d in args.datasets], out=args.out, weights=args.weights)
    full, *_ = build_models(config)
    features = keras.Model(full.input, full.get_layer("probabilities").input)
    document = ds.read_split(args.split)
    keys, labels, sources, subsets, plain, augmented = [], [], [], [], [], []
    names = [ds.dataset_name(Path(d)) for d in args.datasets]
    started = time.perf_counter()
    for source, root in enumerate(args.datasets):
        entry = ds.split_for(document, Path(root), args.split)
        items = ds.list_dataset(root)
        subset_of = {key: s for s in ds.SUBSETS for key in entry[s]}
        items = [item for item in items if item.key in subset_of]
        images, items, _bad = ds.load_items(items)
        for index in range(0, len(items), 64):
            batch_items = items[index : index + 64]
            batch_images = images[index : index + 64]
            views = [ds.fit_to_input(image, config.spec) for image in batch_images]
            plain.append(np.asarray(features.predict_on_batch(ds.keras_batch(views))))
            aug_views = []
            for offset, (item, image) in enumerate(zip(batch_items, batch_images)):
                if subset_of[item.key] != "train":
                    continue
                for copy in range(args.copies):
                    rng = np.random.default_rng([1234, copy, source, index + offset])
                    aug_views.append(ds.augment(image, config.spec, rng, config.augmentation))
            out = np.zeros((len(batch_items), args.copies, plain[-1].shape[1]), np.float32)
            if aug_views:
                feats = np.asarray(features.predict_on_batch(ds.keras_batch(aug_views)))
                train_rows = [i for i, item in enumerate(batch_items) if subset_of[item.key] == "train"]
                out[train_rows] = feats.reshape(len(train_rows), args.copies, -1)
            augmented.append(out)
            for item in batch_items:
                keys.append(item.key)
                labels.append(item.label)
                sources.append(source)
                subsets.append(SUBSET_CODE[subset_of[item.key]])
            done = len(keys)
            print(f"  {names[source]}: {done} photos ({done / (time.perf_counter() - started):.1f}/s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "features.npz",
        keys=np.array(keys),
        labels=np.array(labels),
        sources=np.array(sources),
        subsets=np.array(subsets),
        plain=np.concatenate(plain),
        augmented=np.concatenate(augmented),
        names=np.array(names),
        copies=np.array(args.copies),
    )
    print(f"wrote {args.out / 'features.npz'} in {time.perf_counter() - started:.0f}s")
    return 0


def fit_probe(x: np.ndarray, y: np.ndarray, w: np.ndarray, steps: int = 300, l2: float = 1e-4) -> np.ndarray:
    """Softmax regression (weights ``(features + 1, classes)``) by full-batch
    Adam on the weighted cross-entropy; deterministic."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1), np.float32)])
    theta = np.zeros((d + 1, len(CLASSES)), np.float32)
    onehot = np.eye(len(CLASSES), dtype=np.float32)[y]
    w = (w / w.sum()).astype(np.float32)[:, None]
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t in range(1, steps + 1):
        logits = xb @ theta
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        grad = xb.T @ ((p - onehot) * w) + l2 * theta
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        theta -= 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return theta


def predict(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (np.hstack([x, np.ones((len(x), 1), np.float32)]) @ theta).argmax(1)


def train_rows(data: dict[str, np.ndarray], mask: np.ndarray, power: float) -> tuple[np.ndarray, ...]:
    """The augmented views of the training photos in ``mask``, with balanced
    class weights times the source balance of ``power``."""
    copies = int(data["copies"])
    x = data["augmented"][mask].reshape(-1, data["augmented"].shape[-1])
    y = np.repeat(data["labels"][mask], copies)
    src = np.repeat(data["sources"][mask], copies)
    cw = ds.class_weights(y)
    w = np.array([cw[int(c)] for c in y], np.float32)
    if power:
        w *= ds.source_balance(y, src, power)
    return x, y, w


def scores(data: dict[str, np.ndarray], theta: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    pred = predict(theta, data["plain"][mask])
    y = data["labels"][mask]
    out = {"n": int(mask.sum()), "accuracy": float((pred == y).mean()) if len(y) else float("nan")}
    for c, name in enumerate(CLASSES):
        if (y == c).any():
            out[name] = float((pred[y == c] == c).mean())
    return out


def report(args: argparse.Namespace) -> int:
    data = dict(np.load(args.features / "features.npz"))
    names = list(data["names"])
    train = data["subsets"] == 0
    val = data["subsets"] == 1
    rows: dict[str, object] = {}

    def line(label: str, theta: np.ndarray, mask: np.ndarray) -> None:
        per_source = {names[s]: scores(data, theta, mask & (data["sources"] == s)) for s in range(len(names))}
        pooled = scores(data, theta, mask)
        rows[label] = {"pooled": pooled, **per_source}
        tn = per_source.get("trashnet", {})
        print(
            f"{label:52s} pooled {pooled['accuracy']:.3f} "
            + " ".join(f"{k} {v['accuracy']:.3f}" for k, v in per_source.items())
            + (f" | trashnet trash {tn.get('trash', float('nan')):.3f}" if tn else "")
            + " | "
            + " ".join(f"{c[:5]} {pooled.get(c, float('nan')):.2f}" for c in CLASSES)
        )

    print("== probe on both sources' training photos, scored on validation (one view)")
    for power in args.power:
        theta = fit_probe(*train_rows(data, train, power))
        line(f"balance-sources {power}", theta, val)
    print("== trash mapping: the added set's folders left out of training (balance 0.5), validation")
    keys = data["keys"]
    for prefix in ("Carton__", "Organic_Waste__", "Textiles__", "Wood__"):
        drop = np.array([k.split("/", 1)[1].startswith(prefix) for k in keys]) & (data["sources"] != 0)
        theta = fit_probe(*train_rows(data, train & ~drop, 0.5))
        line(f"without {prefix.rstrip('_')}", theta, val & ~drop)
    print("== leave one source out: trained on one source's training photos, scored on all of the other's")
    for s, name in enumerate(names):
        for power in (0.0,):
            theta = fit_probe(*train_rows(data, train & (data["sources"] == s), power))
            line(f"trained on {name} only", theta, data["sources"] != s)
    both = fit_probe(*train_rows(data, train, 0.5))
    line("both (balance 0.5), validation", both, val)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cache")
    c.add_argument("datasets", nargs="+")
    c.add_argument("--split", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--copies", type=int, default=2)
    c.add_argument("--weights", default="imagenet")
    r = sub.add_parser("report")
    r.add_argument("features", type=Path)
    r.add_argument("--power", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    r.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return cache(args) if args.command == "cache" else report(args)


if __name__ == "__main__":
    run_script(main)
