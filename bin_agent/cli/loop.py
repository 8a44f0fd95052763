"""The commands of the learning loop: ``deploy``, ``label``, ``compare``.

``bin_agent.cli`` calls :func:`register`. Each command prints one line per
problem on stderr and exits 2 for a refused input (a broken model, an unknown
label), 78 for a bad config file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import Config
from ..errors import EX_REFUSED
from .common import DEFAULT_CONFIG, fail, load_config_or_exit, positive_int


def _fail(message: str) -> int:
    return fail(message, EX_REFUSED)


def _config(path: Path) -> Config:
    return load_config_or_exit(path, model=False)


# ---------------------------------------------------------------------- deploy


RELOAD_HINT = (
    "the running agent switches before its next item after `systemctl reload bin-agent` "
    "(SIGHUP) or MQTT cmd/reload_model"
)


def cmd_deploy(args: argparse.Namespace) -> int:
    from ..classify.classifier import ModelFilesError
    from ..learning import deploy

    config = _config(args.config)
    reload_hint = RELOAD_HINT
    try:
        if args.list:
            rows = deploy.installed(config)
            for row in rows:
                print(f"{row['folder']}  {row['role']}")
            try:
                print(f"in use: {deploy.active_model_path(config)}")
            except ModelFilesError as exc:  # the listing is how a person sees what to roll back to
                print(f"in use: none, the deployed model cannot run ({exc}); the agent falls back (see its log)")
                return 1
            return 0
        if args.rollback:
            before, now = deploy.rollback(config)
            print(f"rolled back: {before} -> {now}")
            print(_threshold_line(config))
            print(reload_hint)
            return 0
        if args.model is None:
            return _fail("deploy: give a MODEL .tflite, or --rollback, or --list")
        validation = deploy.validate(args.model, config, args.reference)
        for line in validation.checks:
            print(f"  ok: {line}")
        installed = deploy.install(args.model, config, validation)
    except deploy.DeployError as exc:
        return _fail(f"deploy refused: {exc}")
    except OSError as exc:
        return _fail(f"deploy: cannot write {deploy.models_dir(config)} ({exc}); run it as the agent's user")
    print(f"deployed {validation.classifier.version}: {installed}")
    print(_threshold_line(config))
    print(reload_hint)
    return 0


def _threshold_line(config: Config) -> str:
    from ..learning.deploy import threshold_in_force

    value, source = threshold_in_force(config)
    return f"confidence threshold in force: {value:g} ({source})"


# ---------------------------------------------------------------------- label


def _capture_folder(args: argparse.Namespace) -> Path:
    if args.folder is not None:
        return Path(args.folder)
    from ..learning.capture import capture_folder

    config = _config(args.config)
    return capture_folder(config.agent.state_dir, config.capture.folder)


def _show(path: Path) -> None:
    """Open the photo in the image viewer; one line instead when it cannot be read (cut short
    by a power cut, gone, not a JPEG): the person labels from its description, or skips it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # the whole photo now, not in the viewer's save: a cut JPEG fails here
            image.show()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        print(f"bin-agent: {path}: cannot show this photo ({exc})", file=sys.stderr)


def cmd_label(args: argparse.Namespace) -> int:
    from .. import CLASSES
    from ..learning.capture import captured_items
    from ..learning.labels import LabelStore, describe_item, export, review_order

    folder = _capture_folder(args)
    if not folder.is_dir():
        return _fail(f"{folder}: no capture folder (enable [capture], or give --folder)")
    store = LabelStore(folder)
    labels = store.all()
    items = list(captured_items(folder))
    if args.export is not None:
        counts = export(folder, args.export, CLASSES)
        if not counts:
            return _fail(f"{folder}: no labelled items to export; label some first (bin-agent label)")
        total = sum(counts.values())
        print(
            f"exported {total} labelled photo(s) to {args.export}: "
            + ", ".join(f"{c} {n}" for c, n in sorted(counts.items()))
        )
        return 0
    if args.list:
        for item in items:
            entry = labels.get(item.event_id)
            status = "-" if entry is None else ("confirmed" if entry["confirmed"] else f"-> {entry['label']}")
            if entry is not None and entry.get("source"):
                status += f" ({entry['source']})"  # who gave it: button, mqtt, cli
            print(
                f"{item.info.get('time', '')}  {item.event_id}  {item.info['class']:<9} "
                f"{float(item.info.get('confidence', 0)):.2f}  {status}"
            )
        print(f"{len(items)} captured, {sum(1 for i in items if i.event_id in labels)} labelled")
        return 0
    todo = review_order(items, labels, include_labelled=args.all)
    if not todo:
        print(f"nothing to label in {folder} ({len(items)} captured, all labelled)")
        return 0
    keys = {str(n): name for n, name in enumerate(CLASSES, start=1)}
    legend = "  ".join(f"{k} {name}" for k, name in keys.items())
    done = 0
    for n, item in enumerate(todo, start=1):
        print(f"\n[{n}/{len(todo)}] {describe_item(item)}")
        if args.show:
            _show(item.image)
        predicted = str(item.info["class"])
        print(f"  {legend}   Enter: confirm {predicted}   s: skip   q: quit")
        while True:
            try:
                answer = input("> ").strip().lower()
            except EOFError:
                answer = "q"
            if answer in ("", "y") or answer in keys or answer in ("s", "q"):
                break
            print(f"  ? type a number 1-{len(keys)}, Enter, s or q")
        if answer == "q":
            break
        if answer == "s":
            continue
        label = predicted if answer in ("", "y") else keys[answer]
        store.add(item.event_id, label, predicted, "cli")
        done += 1
        print(f"  {'confirmed' if label == predicted else 'corrected to'} {label}")
    print(f"{done} label(s) saved in {store.path}")
    return 0


# ---------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    from ..classify.classifier import ModelFiles, ModelFilesError, read_metadata, recommended_threshold
    from ..learning.compare import compare, format_comparison, items_of
    from ..router import confidence_threshold
    from ..training import dataset as ds

    if len(args.model) != 2:
        return _fail("compare: give exactly two models: --model A --model B")
    threshold = args.threshold
    if threshold is None and args.config is not None:
        threshold = _config(args.config).router.confidence_threshold
    try:
        items = items_of(args.datasets, args.split, args.subset)
        for model in args.model:
            if not Path(model).is_file():
                raise ModelFilesError(f"{model}: no such model file")
        if threshold is None:
            # Unset: the candidate's own, the threshold the agent would sort with after deploying it.
            files = ModelFiles.beside(args.model[1])
            threshold, _ = confidence_threshold(
                None, recommended_threshold(read_metadata(files.metadata), files.metadata)
            )
        result = compare(args.model[0], args.model[1], items, threshold, threads=args.threads)
    except (ds.DatasetError, ModelFilesError) as exc:
        return _fail(str(exc))
    print(format_comparison(result))
    if args.out is not None:
        import json

        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["b_better"] else 1


# ---------------------------------------------------------------------- learn


def cmd_learn(args: argparse.Namespace) -> int:
    from ..classify.classifier import ModelFilesError
    from ..learning import deploy
    from ..learning.learn import learn

    config = _config(args.config)
    try:
        result = learn(config).as_dict()
    except (ModelFilesError, deploy.DeployError, OSError) as exc:
        return _fail(f"learn: {exc}")
    if args.json:
        import json

        print(json.dumps(result, sort_keys=True))
        return 0
    before, after = result["accuracy_before"], result["accuracy_after"]
    print(
        f"{result['labels']} labels with {result['memory']} memory photos, each judged by a head refitted "
        f"without its fold ({result['folds']} folds; {result['embedded']} newly embedded, "
        f"{result['seconds']:.1f} s)"
    )
    if before is not None:
        print(
            f"current head {before:.3f} -> refit {after:.3f} on them "
            f"(+{result['fixes']} / -{result['breaks']}, one-sided sign test p = {result['p_value']:.3f})"
        )
    if result["deployed"]:
        kind = "the current head with the threshold fitted on this bin's labels" if result["threshold_only"] else ""
        print(f"deployed {result['version']}" + (f": {kind}" if kind else ""))
        print(RELOAD_HINT)
    else:
        print(f"not deployed: {result['reason']}")
    return 0


# ---------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the learning-loop commands to the bin-agent CLI."""
    p = subparsers.add_parser(
        "deploy", help="validate a model and install it for the agent (atomic; --rollback goes back)"
    )
    p.add_argument(
        "model",
        nargs="?",
        type=Path,
        metavar="MODEL",
        help="candidate .tflite with its .labels.txt and .json beside it",
    )
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"the agent's config (its state_dir and router; default {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--reference",
        action="append",
        type=Path,
        default=[],
        metavar="PHOTO",
        help="photo the candidate must classify (repeatable; default: a grey frame)",
    )
    p.add_argument("--rollback", action="store_true", help="return to the model before the last deploy")
    p.add_argument("--list", action="store_true", help="list the installed models and the one in use")
    p.set_defaults(func=cmd_deploy)

    p = subparsers.add_parser(
        "learn", help="refit the classifier head on the bin's labels; deploy it only if better (no TensorFlow)"
    )
    p.add_argument(
        "--config", "-c", type=Path, default=DEFAULT_CONFIG, help=f"the agent's config (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_learn)

    p = subparsers.add_parser(
        "label", help="label captured photos in a terminal (most unsure first); --list, --export DIR"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"take the capture folder from this config (default {DEFAULT_CONFIG})",
    )
    where.add_argument("--folder", type=Path, help="a capture folder (e.g. copied off the bin)")
    p.add_argument("--list", action="store_true", help="list every captured item and its label")
    p.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="copy the labelled photos to DIR/<class>/ (for bin-agent train / evaluate)",
    )
    p.add_argument("--all", action="store_true", help="also review items already labelled")
    p.add_argument("--show", action="store_true", help="open each photo in the image viewer")
    p.set_defaults(func=cmd_label)

    p = subparsers.add_parser(
        "compare", help="two models side by side on labelled photos, with a verdict (exit 0: B is better)"
    )
    p.add_argument(
        "datasets",
        nargs="+",
        type=Path,
        metavar="DATASET_DIR",
        help="folder-per-class photo folders, e.g. the bin's held-out labelled photos",
    )
    p.add_argument(
        "--model",
        action="append",
        type=Path,
        default=[],
        required=True,
        help="the current model (A), then the candidate (B)",
    )
    p.add_argument("--config", "-c", type=Path, help="take the confidence threshold from this config")
    p.add_argument(
        "--threshold",
        type=float,
        help="confidence threshold of the fallback compartment (default: the config's "
        "router.confidence_threshold, else model B's recommended_confidence_threshold)",
    )
    p.add_argument("--split", type=Path, help="split file; with --subset compares on e.g. its test photos")
    p.add_argument(
        "--subset",
        default="test",
        choices=["train", "val", "test", "all"],
        help="subset of the split (default test; 'all' = every photo)",
    )
    p.add_argument("--threads", type=positive_int, help="interpreter threads")
    p.add_argument("--out", type=Path, help="write the figures as JSON")
    p.set_defaults(func=cmd_compare)
