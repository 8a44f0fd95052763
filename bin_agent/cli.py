"""The ``bin-agent`` command.

``bin-agent run --config PATH``        run the bin until SIGTERM/SIGINT
``bin-agent check-config PATH``        validate a config, exit 78 if it is wrong
``bin-agent doctor [--config PATH]``   check this machine: camera, model, pins, broker ...
``bin-agent classify IMAGE...``        classify photos, print class + top-3
``bin-agent record DIR --seconds N``   save the configured source's frames for a sequence replay
``bin-agent snapshot OUT.jpg``         a frame with the drop zone and the detection drawn
``bin-agent train`` / ``evaluate``     the model pipeline (``bin_agent.training``)

Errors a user can fix are printed as one line (or one line per problem) on
standard error, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import DEFAULT_MODEL, __version__
from .config import EX_CONFIG, ConfigError, load_config
from .doctor import ONLY_64BIT, python_is_64bit
from .preprocess import DEFAULT_MAX_PIXELS

DEFAULT_CONFIG = Path("/etc/bin-agent/bin-agent.toml")
"""Where scripts/install-pi.sh puts the config and the systemd unit reads it."""


def _setup_logging(level: str) -> None:
    # journald stamps each line itself; a terminal wants the time.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, stream=sys.stderr)


def _fail(message: str, code: int) -> int:
    print(f"bin-agent: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    if args.print_events:
        config.agent.print_events = True
    _setup_logging(args.log_level or config.agent.log_level)

    from .agent import StartupError, build_agent

    try:
        agent = build_agent(config)
    except StartupError as exc:
        return _fail(str(exc), exc.exit_code)

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
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    from .agent import build_classifier
    from .classifier import ModelFilesError

    try:
        classifier = build_classifier(config, num_threads=1)
    except ModelFilesError as exc:
        return _fail(f"config error: {args.config}: model.path: {exc}", EX_CONFIG)
    if config.camera.source == "picamera2":
        # What run would fail on first (not installed, numpy 2 against the apt picamera2).
        from .sources import SourceError
        from .sources.picamera import import_picamera2

        try:
            import_picamera2()
        except SourceError as exc:
            return _fail(f"config error: {args.config}: camera.source: {exc}", exc.exit_code)
    print(
        f"{args.config}: OK (bin {config.agent.bin_id}, {config.camera.source} source, "
        f"{config.trigger.mode} trigger, {config.actuator.kind} actuator, "
        f"model {classifier.files.model.name} v{classifier.version} ({classifier.views} view(s) per item), "
        f"compartments: {', '.join(config.compartments)})"
    )
    return 0


# ---------------------------------------------------------------------- doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

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
    from .classifier import Classifier, ModelFiles, ModelFilesError
    from .preprocess import ImageError, load_image

    model = args.model
    max_pixels = args.max_pixels
    if args.config is not None and (model is None or max_pixels is None):
        try:
            config = load_config(args.config, check_model=False)
        except ConfigError as exc:
            return _fail(exc.describe(), EX_CONFIG)
        model = model if model is not None else config.model.path
        max_pixels = max_pixels if max_pixels is not None else config.camera.replay.max_pixels
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_PIXELS
    model = Path(model) if model is not None else DEFAULT_MODEL
    try:
        classifier = Classifier(ModelFiles.beside(model), num_threads=args.threads)
    except ModelFilesError as exc:
        return _fail(str(exc), EX_CONFIG)
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
    try:
        config = load_config(args.config, check_model=False)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    _setup_logging(config.agent.log_level)

    from .agent import StartupError, build_source
    from .sources import SourceError
    from .sources.record import record

    try:
        source = build_source(config)
        saved = record(source, args.folder, args.seconds, args.format)
    except StartupError as exc:
        return _fail(str(exc), exc.exit_code)
    except SourceError as exc:
        return _fail(str(exc), getattr(exc, "exit_code", 1))
    print(
        f'{args.folder}: {saved} frame(s); replay them with [camera.replay] mode = "sequence", '
        f'path = "{args.folder}", fps = {config.camera.fps:g}'
    )
    return 0


# ---------------------------------------------------------------------- snapshot


def cmd_snapshot(args: argparse.Namespace) -> int:
    if args.frames < 1:
        return _fail(f"--frames: {args.frames} must be at least 1", 2)
    try:
        config = load_config(args.config, check_model=False)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    from .agent import StartupError, build_source
    from .snapshot import describe, draw, take_snapshot
    from .sources import SourceError

    try:
        source = build_source(config)
    except StartupError as exc:
        return _fail(str(exc), exc.exit_code)
    try:
        source.start()
        snapshot = take_snapshot(config, source, args.frames)
    except SourceError as exc:
        return _fail(str(exc), 1)
    finally:
        source.close()
    try:
        draw(snapshot).save(args.out)
    except (OSError, ValueError) as exc:  # no such folder, unknown extension
        return _fail(f"{args.out}: cannot save the snapshot ({exc})", 1)
    print(describe(snapshot, args.out))
    return 0


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bin-agent", description="Smart waste bin agent.")
    parser.add_argument("--version", action="version", version=f"bin-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

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
        default=Path("/etc/bin-agent/bin-agent.toml"),
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

    from .dashboard_commands import register as register_dashboards

    register_dashboards(sub)

    from .loop_commands import register as register_loop

    register_loop(sub)
    try:
        from .training.commands import register
    except ImportError:
        pass
    else:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # doctor reports it among its checks; everything else stops here, before a
    # confusing failure deep in numpy or LiteRT.
    if args.command != "doctor" and not python_is_64bit():
        return _fail(ONLY_64BIT, EX_CONFIG)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
