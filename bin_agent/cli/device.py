"""The device's commands: ``run``, ``check-config``, ``doctor``, ``classify``, ``record``, ``snapshot``, ``bench``."""

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
from ..errors import EX_CONFIG, EX_FAILURE, EX_REFUSED
from .common import DEFAULT_CONFIG, fail, load_config_or_exit, positive_int, setup_logging

# ---------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, host=True)
    if args.print_events:
        config.agent.print_events = True
    setup_logging(args.log_level or config.agent.log_level)

    from ..agent import build_agent

    agent = build_agent(config)  # a StartupError: main() prints it and exits with its status

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
    from ..agent import router_threshold, start_classifier
    from ..classify.classifier import ModelFilesError

    config.model.num_threads = 1
    try:
        # As run starts: a deployed model that cannot run is not a config error; run sorts with
        # a fallback, and this says so.
        classifier, model_problem = start_classifier(config)
    except ModelFilesError as exc:
        return fail(f"config error: {args.config}: model.path: {exc}", EX_CONFIG)
    if model_problem is not None:
        print(f"warning: {model_problem}", file=sys.stderr)
    if config.capture.enabled:  # as run starts: sorting goes on without capture, and this says so
        from ..learning.capture import capture_folder, folder_problem

        problem = folder_problem(capture_folder(config.agent.state_dir, config.capture.folder))
        if problem is not None:
            print(
                f"warning: capture.folder: {problem}; run sorts without capture, and [learning] cannot learn",
                file=sys.stderr,
            )
    if config.camera.source == "picamera2":
        # What run would fail on first (not installed, numpy 2 against the apt picamera2).
        from ..sources import SourceError
        from ..sources.picamera import import_picamera2

        try:
            import_picamera2()
        except SourceError as exc:
            return fail(f"config error: {args.config}: camera.source: {exc}", exc.exit_code)
    threshold, source = router_threshold(config, classifier)  # a learnt head's own threshold included
    print(
        f"{args.config}: OK (bin {config.agent.bin_id}, {config.camera.source} source, "
        f"{config.trigger.mode} trigger, {config.actuator.kind} actuator, "
        f"model {classifier.files.model.name} {classifier.version} ({classifier.views} view(s) per item, "
        f"confidence threshold {threshold:g} from {source}), compartments: {', '.join(config.compartments)})"
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
    return EX_FAILURE if any(c.status == "fail" for c in checks) else 0


# ---------------------------------------------------------------------- classify


def cmd_classify(args: argparse.Namespace) -> int:
    from ..classify.classifier import Classifier, ModelFiles
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
    classifier = Classifier(ModelFiles.beside(model), num_threads=args.threads)  # ModelFilesError: exit 78
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
    return EX_FAILURE if failures else 0


# ---------------------------------------------------------------------- record


def cmd_record(args: argparse.Namespace) -> int:
    config = load_config_or_exit(args.config, model=False)
    setup_logging(config.agent.log_level)

    from ..agent import build_source
    from ..sources.record import record

    # StartupError, SourceError: main() prints them and exits with their status.
    saved = record(build_source(config), args.folder, args.seconds, args.format)
    print(
        f'{args.folder}: {saved} frame(s); replay them with [camera.replay] mode = "sequence", '
        f'path = "{args.folder}", fps = {config.camera.fps:g}'
    )
    return 0


# ---------------------------------------------------------------------- snapshot


def cmd_snapshot(args: argparse.Namespace) -> int:
    if args.frames < 1:
        return fail(f"--frames: {args.frames} must be at least 1", EX_REFUSED)
    config = load_config_or_exit(args.config, model=False)
    from ..agent import build_source
    from ..sources import SourceError
    from ..tools.snapshot import describe, draw, draw_noise, noise_path, take_snapshot

    source = build_source(config)  # a StartupError: main() prints it and exits with its status
    try:
        source.start()
        snapshot = take_snapshot(config, source, args.frames)
    except SourceError as exc:
        return fail(str(exc), EX_FAILURE)
    finally:
        source.close()
    try:
        draw(snapshot).save(args.out)
        noise = draw_noise(snapshot)
        if noise is not None:
            noise.save(noise_path(args.out))
    except (OSError, ValueError) as exc:  # no such folder, unknown extension
        return fail(f"{args.out}: cannot save the snapshot ({exc})", EX_FAILURE)
    print(describe(snapshot, args.out))
    return 0


# ---------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from ..tools.bench import run_bench, table

    config = args.config if args.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if config is not None:
        load_config_or_exit(config, model=False)  # a broken config: one line, exit 78
    report = run_bench(config, quick=args.quick, items=args.items, batch_views=not args.views_one_by_one)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


# ---------------------------------------------------------------------- arguments


class ConfigOnce(argparse.Action):
    """Stores a config file given as a word or as ``--config`` in ``config``; both is an error."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        if values is None:  # the word left out
            return
        if getattr(namespace, "config_given", False):
            parser.error("give the config file once: as a word or with --config, not both")
        namespace.config_given = True
        namespace.config = values


def register(sub: Any) -> None:
    """Add the device's commands to the ``bin-agent`` parser's subcommands."""
    run = sub.add_parser("run", help="run the bin (until SIGTERM/SIGINT or the replay ends)")
    run.add_argument("--config", "-c", type=Path, required=True, help="TOML config file")
    run.add_argument("--print-events", action="store_true", help="print one line per sorted item")
    run.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="instead of the config's agent.log_level"
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (exit 78 if wrong)")
    # The file as a word (as documented) or as --config, as every other command takes it.
    check.add_argument(
        "config_word", nargs="?", type=Path, action=ConfigOnce, metavar="config", help="TOML config file"
    )
    check.add_argument(
        "--config",
        "-c",
        type=Path,
        action=ConfigOnce,
        default=DEFAULT_CONFIG,
        help=f"the same, as an option (default: {DEFAULT_CONFIG})",
    )
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
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos (JPEG, PNG ...)")
    classify.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"model .tflite (default: the config's, else the shipped {DEFAULT_MODEL.name})",
    )
    classify.add_argument("--config", "-c", type=Path, default=None, help="take the model from this config")
    classify.add_argument("--threads", type=positive_int, default=None, help="interpreter threads")
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
    rec.add_argument(
        "--format",
        choices=["png", "jpg"],
        default="png",
        help="png (lossless, default; about 2.2 MB a 1280x960 frame) or jpg (about 0.3 MB)",
    )
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

    bench = sub.add_parser(
        "bench",
        help="time the item path, trigger, idle CPU, start-up and outbox flush on this machine "
        "(mock pins, a replay source, a mosquitto of its own on loopback)",
    )
    bench.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help=f"take model, views, threads, trigger and servo timings from it (default: {DEFAULT_CONFIG} if present)",
    )
    bench.add_argument("--quick", action="store_true", help="a few seconds: few items, no servo cycle (what CI runs)")
    bench.add_argument("--items", type=int, default=None, help="items to time (default: 20; --quick: 3)")
    bench.add_argument("--json", action="store_true", help="print JSON (path_ratio, event_ms, flush_ratio ...)")
    bench.add_argument(
        "--views-one-by-one",
        action="store_true",
        help="run the views one invoke() each instead of as one batch (to compare)",
    )
    bench.set_defaults(func=cmd_bench)
