"""The ``bin-agent`` subcommands for watching and setting up bins.

``ha-remove``   clear a bin's Home Assistant discovery configs (the device disappears)
``monitor``     live view of one or many bins from any machine on the broker
``report``      composition report (items per day, class, compartment) from the store
``calibrate``   move the servo step by step and save its angles into the config file

Each one's work lives in its own module; this file only parses arguments and
turns errors into one line and an exit code.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

from .. import preflight
from ..config import EX_CONFIG, ConfigError


def _fail(message: str, code: int) -> int:
    print(f"bin-agent: {message}", file=sys.stderr)
    return code


def _labels(config: Any) -> list[str]:
    from ..classify.classifier import ModelFiles, read_labels

    return read_labels(ModelFiles.beside(config.model.path).labels)


# ---------------------------------------------------------------------- ha-remove


def cmd_ha_remove(args: argparse.Namespace) -> int:
    from ..mqtt.client import BrokerError
    from ..mqtt.discovery import remove_from_home_assistant

    try:
        config = preflight.load(args.config)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    try:
        topics = remove_from_home_assistant(config, _labels(config), timeout=args.timeout)
    except ConfigError as exc:  # the password or certificate files of [mqtt]
        return _fail(exc.describe(), EX_CONFIG)
    except BrokerError as exc:
        return _fail(str(exc), 69)  # EX_UNAVAILABLE
    for topic in topics:
        print(f"cleared {topic}")
    print(
        f"bin {config.agent.bin_id}: {len(topics)} discovery config(s) cleared; "
        "Home Assistant removes the device (it comes back on the agent's next connect "
        "unless homeassistant.enabled = false)"
    )
    return 0


# ---------------------------------------------------------------------- monitor


def cmd_monitor(args: argparse.Namespace) -> int:
    import json
    import threading

    from ..mqtt.client import BrokerError, CliClient
    from ..mqtt.credentials import broker_password, broker_tls_context
    from ..tools.monitor import Fleet, live, render_table

    host, port, prefix, username, password, tls = "localhost", 1883, "smartbin", "", None, None
    if args.config is not None:
        try:
            config = preflight.load(args.config, model=False)
            password, tls = broker_password(config), broker_tls_context(config)
        except ConfigError as exc:
            return _fail(exc.describe(), EX_CONFIG)
        settings = config.mqtt
        host, port, prefix, username = settings.host, settings.port, settings.topic_prefix, settings.username
    host, port, prefix = args.host or host, args.port or port, args.prefix or prefix
    username = args.username or username
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            return _fail(f"--password-file: {args.password_file}: not a readable password file ({exc})", 66)
    fleet = Fleet(prefix, args.bins)
    try:
        with CliClient(host, port, username=username, password=password, tls=tls, purpose="monitor") as client:
            client.subscribe(fleet.filters, fleet.handle, args.timeout)
            if not client.sync(args.timeout):
                return _fail(f"the broker {host}:{port} did not answer in {args.timeout:g} s", 69)
            if args.json:
                print(json.dumps(fleet.as_json(), indent=1, sort_keys=True))
                return 0
            if args.once or not sys.stdout.isatty():
                print(render_table(fleet))
                return 0
            stop = threading.Event()
            try:
                live(fleet, sys.stdout, stop, args.refresh)
            except KeyboardInterrupt:
                stop.set()
            return 0
    except BrokerError as exc:
        return _fail(str(exc), 69)


# ---------------------------------------------------------------------- report


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import datetime

    from ..store import Store, StoreError
    from ..tools.report import ReportError, format_table, parse_since, report_from_store, write_csv, write_png

    try:
        config = preflight.load(args.config, model=False)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    db = args.db or Path(config.agent.state_dir) / "bin-agent.db"
    if not db.is_file():
        return _fail(f"{db}: no state database (has the bin run? --db names another)", 66)  # EX_NOINPUT
    now = datetime.now(UTC)
    try:
        since = parse_since(args.since, now)
        store = Store(db)
    except (ReportError, StoreError) as exc:
        return _fail(str(exc), 64 if isinstance(exc, ReportError) else 74)
    try:
        report = report_from_store(
            store, config.agent.bin_id, since, now, sorted(config.router.compartments), config.compartments
        )
    finally:
        store.close()
    print(format_table(report, args.unsure))
    try:
        if args.csv:
            rows = write_csv(report, args.csv)
            print(f"\nwrote {args.csv} ({rows} rows)")
        if args.png:
            write_png(report, args.png)
            print(f"wrote {args.png}")
    except ReportError as exc:
        return _fail(str(exc), 69)
    except BrokenPipeError:
        raise
    except OSError as exc:
        return _fail(f"cannot write: {exc}", 73)  # EX_CANTCREAT
    return 0


# ---------------------------------------------------------------------- calibrate


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..actuators.sorter import ActuatorError, make_pin_factory
    from ..tools.calibrate import CalibrationError, calibrate, parse_assignments, terminal_keys

    try:
        config = preflight.load(args.config, model=False)
    except ConfigError as exc:
        return _fail(exc.describe(), EX_CONFIG)
    try:
        assignments = parse_assignments(args.set) if args.set else None
        pin_factory = make_pin_factory(config.actuator.pin_factory, config.actuator.gpiochip)
        calibrate(
            config,
            pin_factory,
            assignments=assignments,
            keys=None if assignments is not None else terminal_keys(sys.stdin),
            step=args.step,
        )
    except (CalibrationError, ActuatorError) as exc:
        return _fail(str(exc), EX_CONFIG)
    return 0


# ---------------------------------------------------------------------- registration


def register(sub: Any) -> None:
    """Add the subcommands to ``bin-agent``'s parser."""
    remove = sub.add_parser("ha-remove", help="remove this bin from Home Assistant (clear its discovery configs)")
    remove.add_argument("--config", "-c", type=Path, required=True, help="the bin's TOML config file")
    remove.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    remove.set_defaults(func=cmd_ha_remove)

    monitor = sub.add_parser("monitor", help="live view of one or many bins (counts, fill, last item, status)")
    monitor.add_argument("bins", nargs="*", metavar="BIN_ID", help="bins to watch (default: every bin)")
    monitor.add_argument("--config", "-c", type=Path, default=None, help="take broker and topic prefix from it")
    monitor.add_argument("--host", default=None, help="broker (default: the config's, else localhost)")
    monitor.add_argument("--port", type=int, default=None, help="broker port (default: the config's, else 1883)")
    monitor.add_argument("--prefix", default=None, help="topic prefix (default: the config's, else smartbin)")
    monitor.add_argument("--username", default=None, help="broker user")
    monitor.add_argument("--password-file", type=Path, default=None, help="file holding the broker password")
    monitor.add_argument("--json", action="store_true", help="print every bin's status and state as JSON, then exit")
    monitor.add_argument("--once", action="store_true", help="print the table once, then exit")
    monitor.add_argument("--refresh", type=float, default=1.0, help="seconds between redraws (default 1)")
    monitor.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    monitor.set_defaults(func=cmd_monitor)

    report = sub.add_parser("report", help="composition report: items per day, class and compartment")
    report.add_argument("--config", "-c", type=Path, required=True, help="the bin's TOML config file")
    report.add_argument("--since", default="7d", help="7d, 12h, 2w or a date like 2026-11-01 (UTC); default 7d")
    report.add_argument(
        "--db", type=Path, default=None, help="state database (default: agent.state_dir/bin-agent.db of the config)"
    )
    report.add_argument("--csv", type=Path, default=None, help="also write one row per day, class and compartment")
    report.add_argument("--png", type=Path, default=None, help="also draw items per day (needs matplotlib)")
    report.add_argument("--unsure", type=int, default=20, metavar="N", help="list at most N unsure items")
    report.set_defaults(func=cmd_report)

    calibrate = sub.add_parser("calibrate", help="move the servo step by step; save home and compartment angles")
    calibrate.add_argument("--config", "-c", type=Path, required=True, help="the TOML config file to update")
    calibrate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=ANGLE",
        help="move to ANGLE and save it as home or a compartment's angle (repeatable); "
        "without --set: keys (a/d move, h home, 1-9 compartment, w write, q quit)",
    )
    calibrate.add_argument("--step", type=float, default=5.0, help="degrees per key press (default 5)")
    calibrate.set_defaults(func=cmd_calibrate)
