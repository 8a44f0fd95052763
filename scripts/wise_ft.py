#!/usr/bin/env python3
"""Weight-space ensembling of a finished run (WiSE-FT, Wortsman et al. 2022).

    .venv/bin/python scripts/wise_ft.py scan   RUN DATASET_DIR... --split SPLIT [--alphas 0.5 0.7 0.85 1]
    .venv/bin/python scripts/wise_ft.py export RUN DATASET_DIR... --split SPLIT --alpha A --out DIR

A ``bin-agent train`` run leaves two sets of weights of the same network:
``probe.weights.h5`` (the ImageNet backbone with the phase-1 head: a linear
probe) and ``best.weights.h5`` (after fine-tuning, quantization-aware
training and the temperature folded into the head). WiSE-FT takes
``(1 - A) * probe + A * fine-tuned`` for every weight: A = 1 is the run, A = 0
the probe; in between keeps more of what ImageNet knew at a small cost in fit.

``scan`` scores each A on the validation photos (the agent's 4 views,
averaged; the Keras float model), pooled and per source, with TrashNet's trash
recall: choose A there. ``export`` writes the chosen A's model as the run
does: temperature fitted on validation and folded into the head, float and
int8 TFLite with their metadata, and the float weights
(``waste_mobilenetv2_float.weights.h5``) that on-device learning and a later
retrain start from. Test photos are never read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bin_agent import CLASSES  # noqa: E402
from bin_agent.errors import run_script  # noqa: E402
from bin_agent.training import dataset as ds  # noqa: E402


def load(args: argparse.Namespace):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bin_agent.training.train import TrainConfig, build_models

    report = json.loads((args.run / "training_report.json").read_text())
    config = TrainConfig(
        datasets=[Path(d) for d in args.datasets],
        out=args.run,
        weights="imagenet" if not args.weights else args.weights,
        input_size=int(report["config"]["input_size"]),
    )
    full, *_ = build_models(config)
    full.load_weights(args.run / "probe.weights.h5")
    probe = [w.copy() for w in full.get_weights()]
    full.load_weights(args.run / "best.weights.h5")
    tuned = [w.copy() for w in full.get_weights()]
    # undo the temperature folded into the fine-tuned head, so both ends are plain logits
    temperature = float(report["temperature"]["T"])
    dense = full.get_layer("probabilities")
    head_ids = {id(w) for w in dense.weights}
    head_index = [i for i, w in enumerate(full.weights) if id(w) in head_ids]
    for i in head_index:
        tuned[i] = tuned[i] * temperature
    return config, full, probe, tuned, report


def val_items(args: argparse.Namespace) -> tuple[list[ds.Item], list[int]]:
    document = ds.read_split(args.split)
    items: list[ds.Item] = []
    sources: list[int] = []
    for s, root in enumerate(args.datasets):
        entry = ds.split_for(document, Path(root), args.split)
        chosen = ds.select(ds.list_dataset(root), entry, "val")
        items += chosen
        sources += [s] * len(chosen)
    return items, sources


def mix(probe: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    return [(1 - alpha) * p + alpha * t for p, t in zip(probe, tuned)]


def view_logits(full, pixels: list[np.ndarray], views: int) -> np.ndarray:
    import keras

    from bin_agent.training.train import view_stack

    dense = full.get_layer("probabilities")
    features = keras.Model(full.input, dense.input)
    kernel, bias = dense.get_weights()
    stacked = [v for p in pixels for v in view_stack(p, views)]
    feats = np.asarray(features.predict(ds.keras_batch(stacked), batch_size=64, verbose=0))
    return (feats @ kernel + bias).reshape(len(pixels), views, -1)


def scan(args: argparse.Namespace) -> int:
    config, full, probe, tuned, _report = load(args)
    items, sources = val_items(args)
    images, items, _ = ds.load_items(items)
    pixels = [ds.fit_to_input(image, config.spec) for image in images]
    y = np.array([item.label for item in items])
    src = np.array(sources[: len(items)])
    names = [ds.dataset_name(Path(d)) for d in args.datasets]
    rows = []
    for alpha in args.alphas:
        started = time.perf_counter()
        full.set_weights(mix(probe, tuned, alpha))
        logits = view_logits(full, pixels, 4)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        pred = probs.mean(1).argmax(1)
        row: dict[str, Any] = {"alpha": alpha, "pooled": float((pred == y).mean())}
        for s, name in enumerate(names):
            row[name] = float((pred[src == s] == y[src == s]).mean())
        trash = CLASSES.index("trash")
        tn_trash = (src == 0) & (y == trash)
        row["trashnet_trash_recall"] = f"{int((pred[tn_trash] == trash).sum())}/{int(tn_trash.sum())}"
        rows.append(row)
        print(
            f"alpha {alpha:.2f}: val pooled {row['pooled']:.4f} "
            + " ".join(f"{n} {row[n]:.4f}" for n in names)
            + f" trashnet trash {row['trashnet_trash_recall']} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def training_calibration(config, args: argparse.Namespace) -> list[np.ndarray]:
    """The int8 calibration views, taken from the training photos as the run takes them."""
    document = ds.read_split(args.split)
    train: list[ds.Item] = []
    for root in args.datasets:
        train += ds.select(ds.list_dataset(root), ds.split_for(document, Path(root), args.split), "train")
    rng = np.random.default_rng(config.seed)
    chosen = [train[i] for i in rng.permutation(len(train))[: config.calibration]]
    calib_images, _, _ = ds.load_items(chosen)
    return [ds.fit_to_input(image, config.spec) for image in calib_images]


def export_alpha(
    args: argparse.Namespace,
    loaded: tuple[Any, Any, list[np.ndarray], list[np.ndarray], dict[str, Any]],
    alpha: float,
    out: Path,
    pixels: list[np.ndarray],
    y: np.ndarray,
    calibration: list[np.ndarray],
    formats: tuple[str, ...] = ("float", "int8"),
) -> dict[str, Path]:
    """Write alpha's model as a run does: temperature fitted on validation and
    folded into the head, float weights, TFLite models with their metadata."""
    from bin_agent.training.train import (
        calibrate_temperature,
        convert_float,
        convert_int8,
        model_metadata,
        write_model,
    )

    config, full, probe, tuned, report = loaded
    full.set_weights(mix(probe, tuned, alpha))
    temperature = calibrate_temperature(full, pixels, y, config.views, print)
    out.mkdir(parents=True, exist_ok=True)
    names = {"float": "waste_mobilenetv2_float", "int8": "waste_mobilenetv2_int8"}
    full.save_weights(out / f"{names['float']}.weights.h5")
    extra = {
        "trained_on": report["data"] | {"run": str(args.run)},
        "weight_space_ensemble": {
            "alpha": alpha,
            "rule": "(1 - alpha) * probe.weights.h5 + alpha * best.weights.h5 (temperature unfolded)",
            "probe": str(args.run / "probe.weights.h5"),
            "fine_tuned": str(args.run / "best.weights.h5"),
        },
        "calibration": {"photos": len(calibration), "from": "training photos (seeded permutation), fit_to_input"},
        "temperature": temperature,
    }
    written: dict[str, Path] = {}
    for kind in formats:
        content = convert_float(full) if kind == "float" else convert_int8(full, calibration)
        path = out / f"{names[kind]}.tflite"
        write_model(path, content, model_metadata(config, content, names[kind], dict(extra)))
        written[kind] = path
    return written


def scan_int8(args: argparse.Namespace) -> int:
    """Each alpha exported to int8 and scored as the agent runs it.

    The Keras float network of a run's quantization-aware weights is not what
    ships: v4a's scored 0.836 pooled in float against 0.897 as its int8 export
    (``scan`` without ``--int8`` measures the float network)."""
    from bin_agent.training.evaluate import evaluate_items

    loaded = load(args)
    config = loaded[0]
    items, sources = val_items(args)
    images, items, _ = ds.load_items(items)
    pixels = [ds.fit_to_input(image, config.spec) for image in images]
    y = np.array([item.label for item in items])
    src = np.array(sources[: len(items)])
    names = [ds.dataset_name(Path(d)) for d in args.datasets]
    calibration = training_calibration(config, args)
    rows = []
    for alpha in args.alphas:
        started = time.perf_counter()
        written = export_alpha(
            args, loaded, alpha, args.run / "wise" / f"alpha_{alpha:g}", pixels, y, calibration, ("int8",)
        )
        result = evaluate_items(written["int8"], items)
        pred = np.array([CLASSES.index(p["pred"]) for p in result["predictions"]])
        row: dict[str, Any] = {"alpha": alpha, "pooled": float((pred == y).mean()), "model": str(written["int8"])}
        for s, name in enumerate(names):
            row[name] = float((pred[src == s] == y[src == s]).mean())
        trash = CLASSES.index("trash")
        tn_trash = (src == 0) & (y == trash)
        row["trashnet_trash_recall"] = f"{int((pred[tn_trash] == trash).sum())}/{int(tn_trash.sum())}"
        row["ece"] = result["reliability"]["expected_calibration_error"]
        rows.append(row)
        print(
            f"alpha {alpha:.2f} int8: val pooled {row['pooled']:.4f} "
            + " ".join(f"{n} {row[n]:.4f}" for n in names)
            + f" trashnet trash {row['trashnet_trash_recall']} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def export(args: argparse.Namespace) -> int:
    from bin_agent.training.evaluate import evaluate_items

    loaded = load(args)
    config = loaded[0]
    items, _ = val_items(args)
    images, items, _ = ds.load_items(items)
    pixels = [ds.fit_to_input(image, config.spec) for image in images]
    y = np.array([item.label for item in items])
    written = export_alpha(args, loaded, args.alpha, args.out, pixels, y, training_calibration(config, args))
    for label, path in written.items():
        result = evaluate_items(path, items)
        print(
            f"val {label}: accuracy {result['accuracy']:.4f} macro-F1 {result['macro_f1']:.4f} "
            f"trash recall {result['per_class']['trash']['recall']:.3f}"
        )
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("scan", "export"):
        p = sub.add_parser(command)
        p.add_argument("run", type=Path)
        p.add_argument("datasets", nargs="+")
        p.add_argument("--split", type=Path, required=True)
        p.add_argument("--weights", help="the ImageNet weights file the run used (only to build the network)")
        if command == "scan":
            p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.7, 0.85, 1.0])
            p.add_argument("--json", type=Path)
            p.add_argument(
                "--int8",
                action="store_true",
                help="export each alpha to int8 (RUN/wise/alpha_A/) and score that, as the agent runs it",
            )
        else:
            p.add_argument("--alpha", type=float, required=True)
            p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not (args.run / "training_report.json").is_file():
        parser.error(f"{args.run}: not a `bin-agent train --out` folder (no training_report.json)")
    if args.command == "export":
        return export(args)
    return scan_int8(args) if args.int8 else scan(args)


if __name__ == "__main__":
    run_script(main)
