"""The ``train``, ``evaluate`` and ``split`` sub-commands.

``bin_agent.cli`` calls :func:`register`; each sub-command sets
``func=<callable(args) -> int exit code>``. Errors the user can fix (missing
folder, bad split file, bad model) are one line on stderr and exit code 2; no
traceback. TensorFlow is imported only when ``train`` runs; numpy and PIL only when one
of these commands is parsed (see :func:`register`), so ``bin-agent --help`` starts without them.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from ..errors import EX_REFUSED
from .common import fail, positive_int

HELP = {
    "split": "make the fixed train/val/test split file of dataset folders",
    "train": "fine-tune MobileNetV2 and export float + int8 TFLite models",
    "evaluate": "metrics of a .tflite model on labelled photos (runs the agent's Classifier)",
}
"""The one-line help of each command, shown by ``bin-agent --help``."""

TRAIN_EXTRA = "pip install -e '.[train]'"
"""What installs TensorFlow (setup.cfg's ``train`` extra)."""


def _print(message: str) -> None:
    print(message, flush=True)


def _fail(message: str) -> int:
    return fail(message, EX_REFUSED)


def cmd_split(args: argparse.Namespace) -> int:
    from ..training import dataset as ds

    try:
        if args.base is not None:
            document = ds.extend_split(
                ds.read_split(args.base), args.datasets, seed=args.seed, test=args.test, val=args.val
            )
        else:
            document = ds.split_document(args.datasets, seed=args.seed, test=args.test, val=args.val)
    except ds.DatasetError as exc:
        return _fail(str(exc))
    ds.write_split(document, args.out)
    for name, entry in document["datasets"].items():
        counts = {s: entry["counts"][s]["total"] for s in ds.SUBSETS}
        _print(f"{name}: {counts}")
    _print(f"wrote {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..classify.classifier import ModelFilesError
    from ..classify.preprocess import ImageError
    from ..training import dataset as ds
    from ..training.backgrounds import CameraEffects

    # Before any photo is read: without the extra the run would end in a traceback.
    for module in ("tensorflow", "keras"):
        if importlib.util.find_spec(module) is None:
            return fail(
                f"bin-agent train needs TensorFlow (no module named {module}): {TRAIN_EXTRA}", os.EX_UNAVAILABLE
            )
    for root in args.datasets:
        if not Path(root).is_dir():
            return _fail(f"{root}: no such dataset folder")
    if str(args.init_weights) == "shipped":
        from ..training.train import SHIPPED_FLOAT_WEIGHTS

        if not SHIPPED_FLOAT_WEIGHTS.is_file():
            return _fail(
                f"--init-weights shipped: {SHIPPED_FLOAT_WEIGHTS} is not there (the shipped model's float "
                "weights; give a run's best.weights.h5 instead)"
            )
        args.init_weights = SHIPPED_FLOAT_WEIGHTS
    if args.init_weights and not Path(args.init_weights).is_file():
        return _fail(f"{args.init_weights}: no such weights file")
    if not args.init_weights and args.weights != "imagenet" and not Path(args.weights).is_file():
        return _fail(f"{args.weights}: no such weights file")
    if not 0.0 <= args.balance_sources <= 1.0:
        return _fail(f"--balance-sources {args.balance_sources}: expected a power from 0 to 1")
    if not 0.0 <= args.background_p <= 1.0:
        return _fail(f"--background-p {args.background_p}: expected a share from 0 to 1")
    if not 0.0 <= args.item_crop_p <= 1.0:
        return _fail(f"--item-crop-p {args.item_crop_p}: expected a share from 0 to 1")
    if not 0.0 <= args.uneven_light_p <= 1.0:
        return _fail(f"--uneven-light-p {args.uneven_light_p}: expected a share from 0 to 1")
    if not 0.0 <= args.low_res_p <= 1.0:
        return _fail(f"--low-res-p {args.low_res_p}: expected a share from 0 to 1")
    if not 0.0 <= args.colour_temperature < 1.0:
        return _fail(f"--colour-temperature {args.colour_temperature}: expected a gain shift from 0 to below 1")
    try:
        class_factors = ds.parse_class_factors(args.class_weight)
    except ds.DatasetError as exc:
        return _fail(str(exc))
    from ..training.train import TrainConfig, TrainingSetupError, train

    config = TrainConfig(
        datasets=[Path(p) for p in args.datasets],
        out=Path(args.out),
        split=Path(args.split) if args.split else None,
        weights=str(args.weights),
        input_size=args.input_size,
        copies=args.copies,
        cut_layer=args.cut_layer,
        head_epochs=args.head_epochs,
        fine_epochs=args.fine_epochs,
        head_lr=args.head_lr,
        fine_lr=args.fine_lr,
        batch_size=args.batch_size,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        seed=args.seed,
        calibration=args.calibration,
        max_per_class=args.max_per_class,
        include_val=args.include_val,
        keep_last=args.keep_last,
        online=args.online,
        views=args.views,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        init_weights=Path(args.init_weights) if args.init_weights else None,
        class_factors=class_factors,
        balance_sources=args.balance_sources,
        augmentation=ds.Augmentation(
            background_p=args.background_p,
            item_crop_p=args.item_crop_p,
            camera=CameraEffects(
                temperature=args.colour_temperature, uneven_light_p=args.uneven_light_p, low_res_p=args.low_res_p
            ),
        ),
        name=args.name,
        version=args.version or "",
    )
    try:
        train(config, progress=_print)
    except (ds.DatasetError, ImageError, ModelFilesError, FileNotFoundError, TrainingSetupError) as exc:
        return _fail(str(exc))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..classify.classifier import ModelFilesError
    from ..training import dataset as ds
    from ..training.evaluate import format_summary, run

    try:
        result = run(
            Path(args.model),
            [Path(d) for d in args.datasets],
            Path(args.split) if args.split else None,
            args.subset,
            Path(args.out) if args.out else None,
            threads=args.threads,
            progress=_print,
            views=args.views,
            target_accuracy=args.target_accuracy,
        )
    except (ds.DatasetError, ModelFilesError) as exc:
        return _fail(str(exc))
    _print(format_summary(result))
    for path in result.get("written", []):
        _print(f"wrote {path}")
    return 0


def _train_defaults() -> dict[str, object]:
    """``TrainConfig``'s defaults (the shipped recipe), so the CLI has no second copy of them."""
    import dataclasses

    from ..training.train import TrainConfig

    return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def register(subparsers: argparse._SubParsersAction, *, arguments: bool = True) -> None:
    """Add ``split``, ``train`` and ``evaluate`` to the bin-agent CLI.

    :param arguments: also add their arguments. Their defaults are the training recipe's, which
        lives with numpy; without them each command is only its name and help line (enough for
        ``bin-agent --help`` and for parsing any other command).
    """
    if not arguments:
        for name, text in HELP.items():
            subparsers.add_parser(name, help=text)
        return
    from ..training import dataset as ds
    from ..training.backgrounds import CameraEffects

    p = subparsers.add_parser("split", help=HELP["split"])
    p.add_argument("datasets", nargs="+", type=Path, metavar="DATASET_DIR", help="folder-per-class photo folders")
    p.add_argument("--out", required=True, type=Path, help="split JSON to write, e.g. models/waste_split.json")
    p.add_argument("--seed", type=int, default=20261123, help="seed of the shuffle (default %(default)s)")
    p.add_argument("--test", type=float, default=0.15, help="test share per class (default 0.15)")
    p.add_argument("--val", type=float, default=0.15, help="validation share per class (default 0.15)")
    p.add_argument(
        "--base",
        type=Path,
        help="keep this split file's subsets and add the folders (or their new photos) to it, "
        "e.g. the bin's exported photos to the current model's split",
    )
    p.set_defaults(func=cmd_split)

    DEFAULTS = _train_defaults()
    p = subparsers.add_parser("train", help=HELP["train"])
    p.add_argument(
        "datasets",
        nargs="+",
        type=Path,
        metavar="DATASET_DIR",
        help="one or more folder-per-class photo folders, merged (e.g. TrashNet + the bin's own photos)",
    )
    p.add_argument("--split", type=Path, help="split file (bin-agent split); without it a new split is made and saved")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run folder (models, report, checkpoint)")
    p.add_argument(
        "--weights", default="imagenet", help="MobileNetV2 ImageNet weights .h5 (default: Keras's own 'imagenet')"
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=DEFAULTS["input_size"],
        help="model input side in pixels (default %(default)s)",
    )
    p.add_argument(
        "--copies",
        type=int,
        default=DEFAULTS["copies"],
        help="augmented views per training photo, cached (the head; phase 2 too unless --online)",
    )
    p.add_argument("--cut-layer", default=DEFAULTS["cut_layer"], help="frozen below, fine-tuned above")
    p.add_argument(
        "--head-epochs",
        type=int,
        default=DEFAULTS["head_epochs"],
        help="phase 1: epochs of the new head, the backbone frozen (default %(default)s)",
    )
    p.add_argument(
        "--fine-epochs",
        type=int,
        default=DEFAULTS["fine_epochs"],
        help="phase 2: epochs of fine-tuning above --cut-layer (default %(default)s)",
    )
    p.add_argument(
        "--head-lr", type=float, default=DEFAULTS["head_lr"], help="phase 1 learning rate (default %(default)s)"
    )
    p.add_argument(
        "--fine-lr", type=float, default=DEFAULTS["fine_lr"], help="phase 2 learning rate (default %(default)s)"
    )
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="(default %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=DEFAULTS["label_smoothing"], help="(default %(default)s)")
    p.add_argument(
        "--dropout", type=float, default=DEFAULTS["dropout"], help="before the head's dense layer (default %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS["seed"],
        help="seed of the new split (without --split), the shuffles and the augmentation (default %(default)s)",
    )
    p.add_argument(
        "--calibration", type=int, default=DEFAULTS["calibration"], help="training photos used to calibrate int8"
    )
    p.add_argument("--max-per-class", type=int, help="use only this many photos per class (smoke tests)")
    p.add_argument(
        "--online",
        action=argparse.BooleanOptionalAction,
        default=DEFAULTS["online"],
        help="--online: phase 2 trains on fresh augmented views every epoch (slower per epoch); "
        "--no-online (default): on the cached views",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=[1, 2, 4],
        default=DEFAULTS["views"],
        help="views per item the agent averages, written to the metadata (default 4: the "
        "photo, its mirror image, both turned half around)",
    )
    p.add_argument(
        "--qat-epochs",
        type=int,
        default=DEFAULTS["qat_epochs"],
        help="phase 3: epochs of quantization-aware fine-tuning through the simulated int8 "
        "model (default %(default)s; 0 = post-training quantization only)",
    )
    p.add_argument("--qat-lr", type=float, default=DEFAULTS["qat_lr"], help="phase 3 learning rate (cosine decay)")
    p.add_argument(
        "--init-weights",
        type=Path,
        help="start from a run's best.weights.h5 ('shipped': the shipped model's, "
        "models/waste_mobilenetv2_float.weights.h5; no ImageNet weights needed then), e.g. "
        "with --head-epochs 0 --fine-epochs 0 to add only phase 3 to a finished run",
    )
    p.add_argument(
        "--class-weight",
        action="append",
        default=[],
        metavar="CLASS=FACTOR",
        help="multiply a class's balanced weight, e.g. trash=2 (repeatable; choose it on validation)",
    )
    p.add_argument(
        "--balance-sources",
        type=float,
        default=0.0,
        metavar="POWER",
        help="within each class, weight a photo by its source folder's photo count to the power -POWER "
        "(0, the default: every photo the same; 1: every source the same; choose it on validation)",
    )
    p.add_argument(
        "--background-p",
        type=float,
        default=ds.Augmentation.background_p,
        help="share of views of a plain-background photo whose item is pasted on a new background "
        f"(default {ds.Augmentation.background_p}; 0 turns background replacement off)",
    )
    p.add_argument(
        "--item-crop-p",
        type=float,
        default=ds.Augmentation.item_crop_p,
        help="share of the pasted items then cut out as the agent cuts an item out of a bin frame: "
        f"its own box, squashed into the input (default {ds.Augmentation.item_crop_p}; 0: the whole canvas)",
    )
    p.add_argument(
        "--uneven-light-p",
        type=float,
        default=CameraEffects.uneven_light_p,
        help="share of views lit unevenly, as by one lamp over a dark bin "
        f"(default {CameraEffects.uneven_light_p}; 0: every view lit evenly)",
    )
    p.add_argument(
        "--low-res-p",
        type=float,
        default=CameraEffects.low_res_p,
        help="share of views made as a small item's crop reaches the model: shrunk to "
        f"{CameraEffects.low_res_scale[0]:g}-{CameraEffects.low_res_scale[1]:g} of their side, noise and JPEG "
        f"at that size, upscaled back (default {CameraEffects.low_res_p}; 0: every view at full sharpness)",
    )
    p.add_argument(
        "--colour-temperature",
        type=float,
        default=CameraEffects.temperature,
        help="how far the views' red and blue gains are shifted, one up and the other down, as by a warm or "
        f"cold light the camera's white balance did not correct (default +-{CameraEffects.temperature})",
    )
    p.add_argument(
        "--keep-last",
        action="store_true",
        help="keep each phase's last epoch instead of its best on validation (for changes the clean "
        "validation photos cannot judge; judge the run afterwards, e.g. with scripts/crop_shape.py)",
    )
    p.add_argument(
        "--include-val",
        action="store_true",
        help="final model: train on train + val with the epoch counts found before, keep the last epoch",
    )
    p.add_argument("--name", default=DEFAULTS["name"], help="file name of the int8 model")
    p.add_argument("--version", help="version string written in the metadata")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("evaluate", help=HELP["evaluate"])
    p.add_argument(
        "datasets",
        nargs="+",
        type=Path,
        metavar="DATASET_DIR",
        help="one or more folder-per-class photo folders (several: per-source and pooled figures)",
    )
    p.add_argument("--model", required=True, type=Path, help=".tflite with its .labels.txt and .json beside it")
    p.add_argument("--split", type=Path, help="split file; with --subset picks e.g. the held-out test photos")
    p.add_argument(
        "--subset",
        default="test",
        choices=["train", "val", "test", "all"],
        help="subset of the split (default test; 'all' = every photo)",
    )
    p.add_argument("--out", type=Path, help="folder for the JSON report and the PNG plots")
    p.add_argument("--threads", type=positive_int, help="interpreter threads (default: the runtime's choice)")
    p.add_argument(
        "--views",
        type=int,
        choices=[1, 2, 4],
        help="views averaged per photo (default: the model metadata's, as the agent does)",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=0.97,
        help="report the lowest confidence threshold whose sorted items are this right (default 0.97)",
    )
    p.set_defaults(func=cmd_evaluate)
