"""The device's commands: ``run``, ``check-config``, ``doctor``, ``classify``, ``record``, ``snapshot``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from .. import DEFAULT_MODEL
from ..classify.limits import DEFAULT_MAX_PIXELS
from ..errors import EX_CONFIG
from .common import DEFAULT_CONFIG, fail, load_config_or_exit, setup_logging

# ---------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, host=True)
    if args.print_events:
        config.agent.print_events = True
    setup_logging(args.log_level or config.agent.log_level)

    from ..agent import StartupError, build_agent

    try:
        agent = build_agent(config)
    except StartupError as exc:
        return fail(str(exc), exc.exit_code)

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("%s received: shutting down", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # SIGHUP (systemctl reload): switch to the deployed model before the next item.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: agent.request_reload())
    code = agent.run()
    logging.getLogger(__name__).info("stopped after %d item(s), %d frame(s)", agent.items_sorted, agent.frames_seen)
    return code


# ---------------------------------------------------------------------- check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, host=True)
    from ..agent import build_classifier
    from ..classify.classifier import ModelFilesError

    try:
        classifier = build_classifier(config, num_threads=1)
    except ModelFilesError as exc:
        return fail(f"config error: {args.config}: model.path: {exc}", EX_CONFIG)
    if config.camera.source == "picamera2":
        # What run would fail on first (not installed, numpy 2 against the apt picamera2).
        from ..sources import SourceError
        from ..sources.picamera import import_picamera2

        try:
            import_picamera2()
        except SourceError as exc:
            return fail(f"config error: {args.config}: camera.source: {exc}", exc.exit_code)
    print(
        f"{args.config}: OK (bin {config.agent.bin_id}, {config.camera.source} source, "
        f"{config.trigger.mode} trigger, {config.actuator.kind} actuator, "
        f"model {classifier.files.model.name} v{classifier.version} ({classifier.views} view(s) per item), "
        f"compartments: {', '.join(config.compartments)})"
    )
    return 0


# ---------------------------------------------------------------------- doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..tools.doctor import run_checks

    checks = run_checks(args.config)
    if args.json:
        print(
            json.dumps(
                {"ok": all(c.status != "fail" for c in checks), "checks": [c.as_dict() for c in checks]}, indent=2
            )
        )
    else:
        for check in checks:
            print(check.line(), flush=True)
    return 1 if any(c.status == "fail" for c in checks) else 0


# ---------------------------------------------------------------------- classify


def cmd_classify(args: argparse.Namespace) -> int:
    from ..classify.classifier import Classifier, ModelFiles, ModelFilesError
    from ..classify.preprocess import ImageError, load_image

    model = args.model
    max_pixels = args.max_pixels
    if args.config is not None and (model is None or max_pixels is None):
        config = load_config_or_exit(args.config, model=False)
        model = model if model is not None else config.model.path
        max_pixels = max_pixels if max_pixels is not None else config.camera.replay.max_pixels
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    model = Path(model) if model is not None else DEFAULT_MODEL
    try:
        classifier = Classifier(ModelFiles.beside(model), num_threads=args.threads)
    except ModelFilesError as exc:
        return fail(str(exc), EX_CONFIG)
    failures = 0
    results = []
    for path in args.images:
        try:
            result = classifier.classify(load_image(path, max_pixels))
        except ImageError as exc:
            failures += 1
            print(f"bin-agent: {exc}", file=sys.stderr)
            if args.json:
                results.append({"image": str(path), "error": str(exc)})
            continue
        if args.json:
            results.append({"image": str(path), **result.as_dict()})
        else:
            top = ", ".join(f"{label} {p:.3f}" for label, p in result.top[:3])
            print(
                f"{path}: {result.label} {result.confidence:.3f}  (top-3: {top})  "
                f"{result.preprocess_ms + result.inference_ms:.1f} ms"
            )
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


# ---------------------------------------------------------------------- record


def cmd_record(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, model=False)
    setup_logging(config.agent.log_level)

    from ..agent import StartupError, build_source
    from ..sources import SourceError
    from ..sources.record import record

    try:
        source = build_source(config)
        saved = record(source, args.folder, args.seconds, args.format)
    except StartupError as exc:
        return fail(str(exc), exc.exit_code)
    except SourceError as exc:
        return fail(str(exc), getattr(exc, "exit_code", 1))
    print(
        f'{args.folder}: {saved} frame(s); replay them with [camera.replay] mode = "sequence", '
        f'path = "{args.folder}", fps = {config.camera.fps:g}'
    )
    return 0


# ---------------------------------------------------------------------- snapshot


def cmd_snapshot(args: argparse.Namespace) -> int:
    if args.frames < 1:
        return fail(f"--frames: {args.frames} must be at least 1", 2)
    config = load_config_or_exit(args.config, model=False)
    from ..agent import StartupError, build_source
    from ..sources import SourceError
    from ..tools.snapshot import describe, draw, take_snapshot

    try:
        source = build_source(config)
    except StartupError as exc:
        return fail(str(exc), exc.exit_code)
    try:
        source.start()
        snapshot = take_snapshot(config, source, args.frames)
    except SourceError as exc:
        return fail(str(exc), 1)
    finally:
        source.close()
    try:
        draw(snapshot).save(args.out)
    except (OSError, ValueError) as exc:  # no such folder, unknown extension
        return fail(f"{args.out}: cannot save the snapshot ({exc})", 1)
    print(describe(snapshot, args.out))
    return 0


# ---------------------------------------------------------------------- arguments


def register(sub: Any) -> None:
    """Add the device's commands to the ``bin-agent`` parser's subcommands."""
    run = sub.add_parser("run", help="run the bin (until SIGTERM/SIGINT or the replay ends)")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    run.add_argument("--print-events", action="store_true", help="print one line per sorted item")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], default=None)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (exit 78 if wrong)")
    check.add_argument("config", type=Path)
    check.set_defaults(func=cmd_check_config)

    doctor = sub.add_parser(
        "doctor", help="check this machine: Python, camera, model, pins, state dir, broker (exit 1 on a fail)"
    )
    doctor.add_argument(
        "--config", "-c", type=Path, default=DEFAULT_CONFIG, help=f"TOML config file (default: {DEFAULT_CONFIG})"
    )
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=cmd_doctor)

    classify = sub.add_parser("classify", help="classify photos and print class, confidence, top-3")
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    classify.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"model .tflite (default: the config's, else the shipped {DEFAULT_MODEL.name})",
    )
    classify.add_argument("--config", "-c", type=Path, default=None, help="take the model from this config")
    classify.add_argument("--threads", type=int, default=None, help="interpreter threads")
    classify.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="largest image decoded (larger JPEGs are decoded reduced, others refused; "
        f"default: the config's camera.replay.max_pixels, else {DEFAULT_MAX_PIXELS:,})",
    )
    classify.add_argument("--json", action="store_true", help="print JSON")
    classify.set_defaults(func=cmd_classify)

    rec = sub.add_parser("record", help="save the configured camera's frames for a sequence replay")
    rec.add_argument("folder", type=Path, metavar="DIR", help="an empty or new folder")
    rec.add_argument("--seconds", type=float, required=True, help="how long to record (frame time)")
    rec.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    rec.add_argument("--format", choices=["png", "jpg"], default="png", help="png (lossless, default) or jpg (smaller)")
    rec.set_defaults(func=cmd_record)

    snapshot = sub.add_parser(
        "snapshot",
        help="save a frame with the drop zone and the detection drawn (camera set-up; stop the service first)",
    )
    snapshot.add_argument("out", type=Path, metavar="OUT.jpg", help="image to write (.jpg or .png)")
    snapshot.add_argument(
        "--config",
        "-c",
        type=Path,
        default=DEFAULT_CONFIG,
        help="TOML config file (default: %(default)s)",
    )
    snapshot.add_argument(
        "--frames",
        type=int,
        default=30,
        help="frames to read; the motion trigger watches them and the frame it "
        "fires on is saved, else the last one (default: %(default)s)",
    )
    snapshot.set_defaults(func=cmd_snapshot)
