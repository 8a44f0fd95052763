"""The ``bin-agent`` command.

``bin-agent run --config PATH``        run the bin until SIGTERM/SIGINT
``bin-agent check-config PATH``        validate a config, exit 78 if it is wrong
``bin-agent classify IMAGE...``        classify photos, print class + top-3
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
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import EX_CONFIG, ConfigError, load_config

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "trashnet_mobilenetv2_int8.tflite"


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
    logging.getLogger(__name__).info("stopped after %d item(s), %d frame(s)", agent.items_sorted,
                                     agent.frames_seen)
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
    print(f"{args.config}: OK (bin {config.agent.bin_id}, {config.camera.source} source, "
          f"{config.trigger.mode} trigger, {config.actuator.kind} actuator, "
          f"model {classifier.files.model.name} v{classifier.version} ({classifier.views} view(s) per item), "
          f"compartments: {', '.join(config.compartments)})")
    return 0


# ---------------------------------------------------------------------- classify


def cmd_classify(args: argparse.Namespace) -> int:
    from .classifier import Classifier, ModelFiles, ModelFilesError
    from .preprocess import ImageError, load_image

    model = args.model
    if model is None and args.config is not None:
        try:
            model = load_config(args.config, check_model=False).model.path
        except ConfigError as exc:
            return _fail(exc.describe(), EX_CONFIG)
    model = Path(model) if model is not None else DEFAULT_MODEL
    try:
        classifier = Classifier(ModelFiles.beside(model), num_threads=args.threads)
    except ModelFilesError as exc:
        return _fail(str(exc), EX_CONFIG)
    failures = 0
    results = []
    for path in args.images:
        try:
            result = classifier.classify(load_image(path))
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
            print(f"{path}: {result.label} {result.confidence:.3f}  (top-3: {top})  "
                  f"{result.preprocess_ms + result.inference_ms:.1f} ms")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


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

    classify = sub.add_parser("classify", help="classify photos and print class, confidence, top-3")
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    classify.add_argument("--model", type=Path, default=None,
                          help=f"model .tflite (default: the config's, else {DEFAULT_MODEL.name})")
    classify.add_argument("--config", "-c", type=Path, default=None, help="take the model from this config")
    classify.add_argument("--threads", type=int, default=None, help="interpreter threads")
    classify.add_argument("--json", action="store_true", help="print JSON")
    classify.set_defaults(func=cmd_classify)

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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
